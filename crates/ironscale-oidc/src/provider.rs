//! The relying party: discovery and JWKS from the issuer (again when a token
//! names a key id the cached set lacks: the provider rotated its key), the
//! authorization request (state, nonce, PKCE), and at the callback the code
//! exchange and the ID token's checks (signature, `iss`, `aud`, `exp`,
//! `nonce`), with userinfo filling claims the ID token left out.

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreGenderClaim, CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AccessToken, AdditionalClaims, AuthorizationCode, ClaimsVerificationError, ClientId,
    ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdToken, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl,
    RequestTokenError, Scope, TokenResponse, UserInfoClaims,
};
use serde::{Deserialize, Serialize};

use crate::flows::{Flows, Purpose};
use crate::settings::{OidcSettings, PkceMethod};
use crate::{Identity, Refusal};

/// How long one request to the provider may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// A forced re-discovery (unknown key id) happens at most this often.
const REDISCOVER_GAP: Duration = Duration::from_secs(5);

type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

/// The claims beyond the standard ones that ironscale reads: `groups`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub(crate) struct ExtraClaims {
    #[serde(default, deserialize_with = "groups_claim")]
    groups: Option<Vec<String>>,
}
impl AdditionalClaims for ExtraClaims {}

/// `groups` as a list of strings; a single string is one group (some
/// providers send that when there is one); anything else is no groups.
fn groups_claim<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Array(a) => Some(
            a.into_iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect(),
        ),
        serde_json::Value::String(s) => Some(vec![s]),
        _ => None,
    })
}

type GroupsIdToken = IdToken<
    ExtraClaims,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;

/// What discovery found (replaced whole on re-discovery).
struct Discovered {
    client: Client,
    has_userinfo: bool,
    at: Instant,
}

/// The OIDC relying party of one issuer, shared by the login pages.
pub struct Oidc {
    pub(crate) settings: OidcSettings,
    http: reqwest::Client,
    discovered: tokio::sync::RwLock<Option<Arc<Discovered>>>,
    /// Held while fetching discovery; the last failure and when it happened.
    fetching: tokio::sync::Mutex<Option<(Instant, String)>>,
    pub(crate) flows: parking_lot::Mutex<Flows>,
    /// Logins completed, and refused by reason code (for `/metrics`).
    outcomes: parking_lot::Mutex<std::collections::BTreeMap<&'static str, u64>>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Oidc")
            .field("issuer", &self.settings.issuer)
            .field("client_id", &self.settings.client_id)
            .finish_non_exhaustive()
    }
}

/// An HTTP client for talking to the provider: no redirects followed (a
/// provider's answer is used as it is; following redirects would let a
/// metadata document steer us anywhere), a timeout on every request.
pub(crate) fn http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(HTTP_TIMEOUT)
        .user_agent(concat!("ironscale/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// A random URL-safe token of `n` bytes (state, nonce, PKCE verifier, cookie).
pub(crate) fn random_token(n: usize) -> Result<String, Refusal> {
    use base64::Engine as _;
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).map_err(|_| Refusal::Internal("no randomness".into()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

impl Oidc {
    /// A relying party that discovers the issuer on first use.
    pub fn new_lazy(settings: OidcSettings) -> Result<Arc<Oidc>, String> {
        Ok(Arc::new(Oidc {
            settings,
            http: http_client()?,
            discovered: tokio::sync::RwLock::new(None),
            fetching: tokio::sync::Mutex::new(None),
            flows: parking_lot::Mutex::new(Flows::default()),
            outcomes: parking_lot::Mutex::new(Default::default()),
        }))
    }

    /// A relying party whose issuer answered discovery now
    /// (`oidc.only_start_if_oidc_is_available`).
    pub async fn new(settings: OidcSettings) -> Result<Arc<Oidc>, String> {
        let o = Self::new_lazy(settings)?;
        o.discover(false).await.map_err(|r| r.to_string())?;
        Ok(o)
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Count a finished login: `"ok"` or a refusal's reason code.
    pub(crate) fn count(&self, outcome: &'static str) {
        *self.outcomes.lock().entry(outcome).or_default() += 1;
    }

    /// Logins so far by outcome (`ok`, or the refusal's reason code as on its
    /// page: `group`, `domain`, `state`, `replayed`…), for `/metrics`.
    pub fn login_counts(&self) -> Vec<(&'static str, u64)> {
        self.outcomes.lock().iter().map(|(k, v)| (*k, *v)).collect()
    }

    /// The discovered provider; fetched when there is none yet, or when
    /// `force` and the last fetch is older than [`REDISCOVER_GAP`]. Fetches
    /// are serialised by `fetching`, never under the lock readers take, and a
    /// failed fetch is not retried for [`REDISCOVER_GAP`] (a provider that is
    /// down is not asked again by every page view).
    async fn discover(&self, force: bool) -> Result<Arc<Discovered>, Refusal> {
        let fresh = |d: &Arc<Discovered>| !force || d.at.elapsed() < REDISCOVER_GAP;
        if let Some(d) = self.discovered.read().await.clone() {
            if fresh(&d) {
                return Ok(d);
            }
        }
        let mut last_failure = self.fetching.lock().await;
        if let Some(d) = self.discovered.read().await.clone() {
            // Someone else fetched while we waited.
            if fresh(&d) {
                return Ok(d);
            }
        }
        if let Some((at, why)) = last_failure.as_ref() {
            if at.elapsed() < REDISCOVER_GAP {
                return Err(Refusal::Unreachable(why.clone()));
            }
        }
        match discover(&self.http, &self.settings).await {
            Ok(d) => {
                let d = Arc::new(d);
                tracing::info!(issuer = %self.settings.issuer, "OIDC discovery and signing keys loaded");
                *self.discovered.write().await = Some(d.clone());
                *last_failure = None;
                Ok(d)
            }
            Err(e) => {
                if let Refusal::Unreachable(why) = &e {
                    *last_failure = Some((Instant::now(), why.clone()));
                }
                // A stale but working key set beats none (a forced refresh failed).
                match self.discovered.read().await.clone() {
                    Some(d) if force => {
                        tracing::warn!(issuer = %self.settings.issuer, "refreshing the provider's keys failed: {e}");
                        Ok(d)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// Start a login: the provider's authorization URL for `purpose`, bound
    /// to the browser whose login cookie is `browser`.
    pub async fn start(&self, purpose: Purpose, browser: &str) -> Result<String, Refusal> {
        let d = self.discover(false).await?;
        let state = random_token(24)?;
        let nonce = random_token(24)?;
        let s = &self.settings;
        let st = state.clone();
        let n = nonce.clone();
        let mut req = d.client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(st),
            move || Nonce::new(n),
        );
        for sc in s.scope.iter().filter(|sc| *sc != "openid") {
            req = req.add_scope(Scope::new(sc.clone()));
        }
        let verifier = match s.pkce {
            Some(PkceMethod::S256) => {
                let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
                req = req.set_pkce_challenge(challenge);
                Some(verifier.secret().clone())
            }
            Some(PkceMethod::Plain) => {
                let v = random_token(48)?;
                req = req
                    .add_extra_param("code_challenge", v.clone())
                    .add_extra_param("code_challenge_method", "plain");
                Some(v)
            }
            None => None,
        };
        for (k, v) in &s.extra_params {
            req = req.add_extra_param(k.clone(), v.clone());
        }
        let (url, _, _) = req.url();
        self.flows
            .lock()
            .insert(&state, browser, purpose, nonce, verifier, Instant::now());
        Ok(url.to_string())
    }

    /// The callback: check `state` against the browser, exchange the code,
    /// verify the ID token, read userinfo. Returns what the login was for and
    /// who logged in; the allow rules are the caller's next step.
    pub async fn finish(
        &self,
        state: &str,
        code: &str,
        browser: Option<&str>,
    ) -> Result<(Purpose, Identity), Refusal> {
        let flow = self.flows.lock().take(state, browser, Instant::now())?;
        let d = self.discover(false).await?;
        let mut exchange = d
            .client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| Refusal::Provider(format!("the provider has no token endpoint: {e}")))?;
        if let Some(v) = &flow.pkce_verifier {
            exchange = exchange.set_pkce_verifier(PkceCodeVerifier::new(v.clone()));
        }
        let token = exchange
            .request_async(&self.http)
            .await
            .map_err(token_error)?;
        let raw = token
            .id_token()
            .ok_or_else(|| Refusal::InvalidToken("the provider returned no ID token".into()))?
            .to_string();
        let id_token = GroupsIdToken::from_str(&raw)
            .map_err(|e| Refusal::InvalidToken(format!("the ID token does not parse: {e}")))?;
        let nonce = Nonce::new(flow.nonce.clone());
        let client_id = self.settings.client_id.clone();
        let verify = |d: &Discovered| -> Result<
            openidconnect::IdTokenClaims<ExtraClaims, CoreGenderClaim>,
            ClaimsVerificationError,
        > {
            // Other audiences beside ours are allowed (Zitadel adds its project
            // id, as go-oidc accepts); then `azp` must name us (OIDC Core 3.1.3.7).
            let verifier = d
                .client
                .id_token_verifier()
                .set_other_audience_verifier_fn(|_| true);
            let c = id_token.claims(&verifier, &nonce)?.clone();
            if c.audiences().len() > 1
                && c.authorized_party().map(|p| p.as_str()) != Some(client_id.as_str())
            {
                return Err(ClaimsVerificationError::InvalidAudience(
                    "several audiences and no azp naming this client".into(),
                ));
            }
            Ok(c)
        };
        let (claims, d) = match verify(&d) {
            Ok(c) => (c, d),
            Err(ClaimsVerificationError::SignatureVerification(_)) => {
                // A key we do not have (or a token without a key id that the
                // old key does not verify): the provider may have rotated its
                // signing key. Fetch discovery and the key set again, check again.
                tracing::info!(issuer = %self.settings.issuer, "ID token not verified by the cached keys; refreshing the provider's keys");
                let d = self.discover(true).await?;
                let c = verify(&d).map_err(claims_error)?;
                (c, d)
            }
            Err(e) => return Err(claims_error(e)),
        };
        let mut id = Identity {
            issuer: claims.issuer().to_string(),
            subject: claims.subject().to_string(),
            email: claims.email().map(|e| e.to_string()).unwrap_or_default(),
            email_verified: claims.email_verified(),
            name: claims
                .name()
                .and_then(|n| n.get(None))
                .map(|n| n.to_string())
                .unwrap_or_default(),
            preferred_username: claims
                .preferred_username()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            picture: claims
                .picture()
                .and_then(|p| p.get(None))
                .map(|p| p.to_string())
                .unwrap_or_default(),
            groups: claims
                .additional_claims()
                .groups
                .clone()
                .unwrap_or_default(),
            groups_claimed: claims.additional_claims().groups.is_some(),
            expires: claims.expiration(),
        };
        if d.has_userinfo {
            self.merge_userinfo(&d, token.access_token(), &mut id).await;
        }
        Ok((flow.purpose, id))
    }

    /// Claims the ID token lacked, from userinfo (as Headscale does; some
    /// providers put groups or e-mail only there). A failing userinfo
    /// endpoint is logged and the ID token's claims stand.
    async fn merge_userinfo(&self, d: &Discovered, access: &AccessToken, id: &mut Identity) {
        let req = match d.client.user_info(
            access.clone(),
            Some(openidconnect::SubjectIdentifier::new(id.subject.clone())),
        ) {
            Ok(r) => r,
            Err(_) => return,
        };
        let info: UserInfoClaims<ExtraClaims, CoreGenderClaim> = match req
            .request_async(&self.http)
            .await
        {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(issuer = %self.settings.issuer, "userinfo request failed, using the ID token's claims only: {e}");
                return;
            }
        };
        if id.email.is_empty() {
            if let Some(e) = info.email() {
                id.email = e.to_string();
                id.email_verified = info.email_verified();
            }
        } else if id.email_verified.is_none()
            && info.email().is_some_and(|e| e.as_str() == id.email)
        {
            // The token said nothing about verification; userinfo may.
            id.email_verified = info.email_verified();
        }
        if id.name.is_empty() {
            if let Some(n) = info.name().and_then(|n| n.get(None)) {
                id.name = n.to_string();
            }
        }
        if id.preferred_username.is_empty() {
            if let Some(u) = info.preferred_username() {
                id.preferred_username = u.to_string();
            }
        }
        if id.picture.is_empty() {
            if let Some(p) = info.picture().and_then(|p| p.get(None)) {
                id.picture = p.to_string();
            }
        }
        if !id.groups_claimed {
            if let Some(g) = &info.additional_claims().groups {
                id.groups = g.clone();
                id.groups_claimed = true;
            }
        }
    }
}

/// Fetch the issuer's discovery document and key set.
async fn discover(http: &reqwest::Client, s: &OidcSettings) -> Result<Discovered, Refusal> {
    let issuer = IssuerUrl::new(s.issuer.clone())
        .map_err(|e| Refusal::Config(format!("oidc.issuer {:?} is not a URL: {e}", s.issuer)))?;
    let meta = CoreProviderMetadata::discover_async(issuer, http)
        .await
        .map_err(|e| Refusal::Unreachable(discovery_error(&e)))?;
    let has_userinfo = meta.userinfo_endpoint().is_some();
    let secret = (!s.client_secret.is_empty())
        .then(|| ClientSecret::new(s.client_secret.expose().to_string()));
    let redirect = RedirectUrl::new(s.redirect_url.clone())
        .map_err(|e| Refusal::Config(format!("server_url gives no valid redirect URL: {e}")))?;
    let client =
        CoreClient::from_provider_metadata(meta, ClientId::new(s.client_id.clone()), secret)
            .set_redirect_uri(redirect);
    Ok(Discovered {
        client,
        has_userinfo,
        at: Instant::now(),
    })
}

/// A discovery failure in words, with the error chain (the outer message
/// alone is often just "request failed").
pub(crate) fn discovery_error(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let m = s.to_string();
        if !out.contains(&m) {
            out.push_str(": ");
            out.push_str(&m);
        }
        src = s.source();
    }
    out
}

fn token_error<E: std::error::Error + 'static>(
    e: RequestTokenError<
        E,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> Refusal {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let code = r.error().to_string();
            let desc = r.error_description().cloned().unwrap_or_default();
            if code == "invalid_client" {
                Refusal::Provider(format!(
                    "the provider refused ironscale's client credentials (invalid_client: {desc}); check oidc.client_id and oidc.client_secret"
                ))
            } else {
                Refusal::Provider(format!(
                    "the provider refused the code exchange ({code}: {desc})"
                ))
            }
        }
        RequestTokenError::Request(e) => Refusal::Unreachable(discovery_error(&e)),
        other => Refusal::Provider(format!(
            "the code exchange failed: {}",
            discovery_error(&other)
        )),
    }
}

fn claims_error(e: ClaimsVerificationError) -> Refusal {
    Refusal::InvalidToken(match e {
        ClaimsVerificationError::InvalidNonce(m) => {
            format!("the nonce does not match this login ({m})")
        }
        other => other.to_string(),
    })
}
