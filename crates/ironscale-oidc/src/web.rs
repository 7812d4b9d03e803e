//! The pages of an OIDC login: `GET /register/<id>` (from `tailscale up`)
//! and `GET /ssh/check/<id>` (from a Tailscale SSH connection a `check` rule
//! holds) send the browser to the provider; `GET /oidc/callback` is where
//! the provider sends it back.

use std::sync::Arc;

use axum::extract::{Path, Query, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ironscale_http::page::{escape, html_page as page};
use ironscale_state::{
    Approval, ProviderIdentity, RegistrationId, SshCheckError, SshCheckId, State,
};
use ironscale_types::{RegisterMethod, UserRef};
use serde::Deserialize;

use crate::flows::{Purpose, FLOW_TTL};
use crate::provider::random_token;
use crate::{allow, Identity, Oidc, Refusal};

/// The cookie that binds a login to the browser that started it. Named so
/// it never clashes with a provider's own cookies on the same host (cookies
/// ignore ports: oidc-provider uses `_session`, `_interaction`…). Over https
/// it is `__Host-ironscale_oidc_login` (`Secure`, `Path=/`, no `Domain`: a
/// sibling subdomain cannot plant it).
pub const LOGIN_COOKIE: &str = "ironscale_oidc_login";
const LOGIN_COOKIE_SECURE: &str = "__Host-ironscale_oidc_login";

struct Web {
    oidc: Arc<Oidc>,
    state: State,
}

/// `/register/{id}`, `/ssh/check/{id}` and `/oidc/callback` for `oidc`.
/// Merged into the control listener instead of the administrator-approval
/// page when OIDC is on.
pub fn router(oidc: Arc<Oidc>, state: State) -> Router {
    Router::new()
        .route("/register/{id}", get(register_page))
        .route("/ssh/check/{id}", get(ssh_check_page))
        .route("/oidc/callback", get(callback))
        .with_state(Arc::new(Web { oidc, state }))
}

fn browser_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == LOGIN_COOKIE || *k == LOGIN_COOKIE_SECURE)
        .map(|(_, v)| v.to_string())
        .filter(|v| {
            v.len() >= 32
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

async fn register_page(
    AxState(w): AxState<Arc<Web>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) =
        RegistrationId::parse(&id).filter(|id| w.state.pending_registration(id).is_some())
    else {
        return refusal_page(&Refusal::RegistrationGone);
    };
    start_login(&w, Purpose::Register(id), &headers).await
}

/// `GET /ssh/check/<id>`: the URL a Tailscale SSH user is shown while a
/// `check` rule holds the connection.
async fn ssh_check_page(
    AxState(w): AxState<Arc<Web>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let Some(id) = SshCheckId::parse(&id).filter(|id| w.state.pending_ssh_check(id).is_some())
    else {
        return ssh_refusal_page(&Refusal::SshCheckGone);
    };
    start_login(&w, Purpose::SshCheck(id), &headers).await
}

/// Send the browser to the provider for `purpose`, binding the login to it
/// with the login cookie.
async fn start_login(w: &Web, purpose: Purpose, headers: &HeaderMap) -> Response {
    let refused = |r: &Refusal| {
        if matches!(purpose, Purpose::SshCheck(_)) {
            ssh_refusal_page(r)
        } else {
            refusal_page(r)
        }
    };
    let cookie = match browser_cookie(headers) {
        Some(c) => c,
        None => match random_token(32) {
            Ok(c) => c,
            Err(r) => return refused(&r),
        },
    };
    match w.oidc.start(purpose.clone(), &cookie).await {
        Ok(url) => {
            // Path=/: `/register/<id>` must see it too, so a second login in
            // the same browser keeps the first one's cookie (and a server_url
            // with a path prefix changes nothing).
            let (name, secure) = if w.oidc.settings.secure_cookies {
                (LOGIN_COOKIE_SECURE, "; Secure")
            } else {
                (LOGIN_COOKIE, "")
            };
            let set = format!(
                "{name}={cookie}; Path=/; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
                FLOW_TTL.as_secs()
            );
            let mut r = (StatusCode::FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response();
            if let (Ok(loc), Ok(set)) = (HeaderValue::from_str(&url), HeaderValue::from_str(&set)) {
                r.headers_mut().insert(header::LOCATION, loc);
                r.headers_mut().insert(header::SET_COOKIE, set);
                r
            } else {
                refused(&Refusal::Internal(
                    "the authorization URL is not a header".into(),
                ))
            }
        }
        Err(r) => {
            tracing::warn!("OIDC login could not start: {r}");
            refused(&r)
        }
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    AxState(w): AxState<Arc<Web>>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let result = login(&w, q, browser_cookie(&headers).as_deref()).await;
    w.oidc.count(match &result {
        Ok(_) => "ok",
        Err(Failed::Login(r) | Failed::SshCheck(r)) => reason_code(r),
    });
    // A callback that names no login of this browser (unknown, replayed or
    // foreign state) is anyone's request: counted and debug-logged only, so
    // it cannot flood the log or the audit table. Every login that got as
    // far as the provider's answer is audited, accepted or refused.
    let anonymous = matches!(
        &result,
        Err(Failed::Login(
            Refusal::UnknownState | Refusal::Replayed | Refusal::OtherBrowser
        ))
    );
    if anonymous {
        if let Err(Failed::Login(r) | Failed::SshCheck(r)) = &result {
            tracing::debug!("OIDC callback refused: {r}");
        }
    } else {
        // SSH checks are audited as `oidc.ssh_check`, registrations as `oidc.login`.
        let (actor, action, target, outcome) = match &result {
            Ok(Outcome::Registered { user, node }) => (
                format!("oidc:{user}"),
                "oidc.login",
                node.clone(),
                "ok".to_string(),
            ),
            Ok(Outcome::SshCheck { user, node }) => (
                format!("oidc:{user}"),
                "oidc.ssh_check",
                node.clone(),
                "ok".to_string(),
            ),
            Err(Failed::Login(r)) => (
                "oidc".to_string(),
                "oidc.login",
                String::new(),
                r.to_string(),
            ),
            Err(Failed::SshCheck(r)) => (
                "oidc".to_string(),
                "oidc.ssh_check",
                String::new(),
                r.to_string(),
            ),
        };
        match &result {
            Err(Failed::Login(r)) => tracing::warn!("OIDC login refused: {r}"),
            Err(Failed::SshCheck(r)) => tracing::warn!("OIDC login for an SSH check refused: {r}"),
            Ok(_) => {}
        }
        if let Err(e) = w
            .state
            .record_audit(&actor, action, &target, &outcome, "")
            .await
        {
            tracing::warn!("could not record the OIDC login in the audit log: {e}");
        }
    }
    match result {
        Ok(Outcome::SshCheck { user, node }) => page(
            StatusCode::OK,
            "SSH check passed",
            &format!(
                "<p id=\"result\" data-outcome=\"ssh-check-passed\">Logged in as <b>{}</b>. The SSH connection from <b>{}</b> may proceed.</p>\
                 <p>You can close this window.</p>",
                escape(&user),
                escape(&node)
            ),
        ),
        Err(Failed::SshCheck(r)) => ssh_refusal_page(&r),
        Ok(Outcome::Registered { user, node }) => page(
            StatusCode::OK,
            "Logged in",
            &format!(
                "<p id=\"result\" data-outcome=\"registered\">Logged in as <b>{}</b>. The machine <b>{}</b> has joined the tailnet.</p>\
                 <p>You can close this window.</p>",
                escape(&user),
                escape(&node)
            ),
        ),
        Err(Failed::Login(r)) => refusal_page(&r),
    }
}

/// What a login did.
enum Outcome {
    /// The machine joined: user name, node name.
    Registered { user: String, node: String },
    /// The SSH check passed: user name, source node name.
    SshCheck { user: String, node: String },
}

/// Why a login did nothing; an SSH check's refusals get their own page.
enum Failed {
    Login(Refusal),
    SshCheck(Refusal),
}

impl From<Refusal> for Failed {
    fn from(r: Refusal) -> Failed {
        Failed::Login(r)
    }
}

/// What the provider says in an error answer, as RFC 6749 allows it
/// (printable ASCII without `"` and `\\`), at most 200 characters.
fn provider_text(s: Option<String>) -> String {
    s.unwrap_or_default()
        .chars()
        .filter(|c| (' '..='~').contains(c) && *c != '"' && *c != '\\')
        .take(200)
        .collect()
}

/// The callback's work: check the provider's answer, then do what the
/// login was for.
async fn login(w: &Web, q: CallbackQuery, browser: Option<&str>) -> Result<Outcome, Failed> {
    let state = q
        .state
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::UnknownState)?;
    if let Some(error) = q.error {
        // The provider said no; the login is over. Only the browser that
        // started it hears what the provider said.
        let flow = w
            .oidc
            .flows
            .lock()
            .take(&state, browser, std::time::Instant::now())?;
        let r = Refusal::ProviderDenied {
            error: provider_text(Some(error)),
            description: provider_text(q.error_description),
        };
        return Err(match flow.purpose {
            Purpose::SshCheck(_) => Failed::SshCheck(r),
            Purpose::Register(_) => Failed::Login(r),
        });
    }
    let code = q
        .code
        .filter(|c| !c.is_empty())
        .ok_or_else(|| Refusal::Provider("the provider's answer has no code".into()))?;
    let (purpose, id) = w.oidc.finish(&state, &code, browser).await?;
    match purpose {
        Purpose::Register(reg) => {
            let (user, node) = register(w, &reg, &id).await?;
            Ok(Outcome::Registered { user, node })
        }
        Purpose::SshCheck(check) => {
            let (user, node) = ssh_check(w, &check, &id).await.map_err(Failed::SshCheck)?;
            Ok(Outcome::SshCheck { user, node })
        }
    }
}

/// An SSH check's login: the allow rules, then the user, who must own the
/// source device. A refusal for who logged in (not allowed, not the owner)
/// denies the check too, so the held connection ends with the reason; a
/// user made for a refused login goes again.
async fn ssh_check(
    w: &Web,
    check: &SshCheckId,
    id: &Identity,
) -> Result<(String, String), Refusal> {
    if w.state.pending_ssh_check(check).is_none() {
        return Err(Refusal::SshCheckGone);
    }
    if let Err(r) = allow::check(&w.oidc.settings.rules, id) {
        w.state.deny_ssh_check(check, &r.to_string());
        return Err(r);
    }
    let (user, created) = w
        .state
        .upsert_provider_user(&provider_identity(&w.oidc, id))
        .await
        .map_err(|e| Refusal::Internal(format!("storing the user: {e}")))?;
    match w.state.approve_ssh_check(check, user.id) {
        Ok(p) => {
            let node = w
                .state
                .get_node(p.src)
                .map(|n| n.given_name.clone())
                .unwrap_or_default();
            tracing::info!(user = %user.name, src = p.src.0, dst = p.dst.0, "SSH check passed by OIDC login");
            Ok((user.name.clone(), node))
        }
        Err(e) => {
            if created {
                if let Err(d) = w.state.delete_user(&UserRef::Id(user.id)).await {
                    tracing::warn!(user = %user.name, "could not remove the user of a refused login: {d}");
                }
            }
            Err(match e {
                SshCheckError::NotOwner => {
                    let r = Refusal::SshCheckNotOwner {
                        user: user.name.clone(),
                    };
                    w.state.deny_ssh_check(check, &r.to_string());
                    r
                }
                SshCheckError::NotFound | SshCheckError::Decided => Refusal::SshCheckGone,
            })
        }
    }
}

/// A registration's login; returns (user name, node name) once registered.
async fn register(
    w: &Web,
    reg: &RegistrationId,
    id: &Identity,
) -> Result<(String, String), Refusal> {
    allow::check(&w.oidc.settings.rules, id)?;
    if w.state.pending_registration(reg).is_none() {
        return Err(Refusal::RegistrationGone);
    }
    let (user, created) = w
        .state
        .upsert_provider_user(&provider_identity(&w.oidc, id))
        .await
        .map_err(|e| Refusal::Internal(format!("storing the user: {e}")))?;
    let approval = Approval {
        user: Some(user.id),
        tags: Vec::new(),
        method: RegisterMethod::Oidc,
        expiry: w.oidc.settings.use_expiry_from_token.then_some(id.expires),
    };
    let node = match w.state.approve_registration(reg, approval).await {
        Ok(n) => n,
        Err(e) => {
            // Refused after all (tags the user does not own, a lost race for
            // the registration): a user made for this login goes again.
            if created {
                if let Err(d) = w.state.delete_user(&UserRef::Id(user.id)).await {
                    tracing::warn!(user = %user.name, "could not remove the user of a refused login: {d}");
                }
            }
            return Err(match e {
                ironscale_state::StateError::RegistrationNotFound(_) => Refusal::RegistrationGone,
                other => Refusal::Approval(other.to_string()),
            });
        }
    };
    tracing::info!(user = %user.name, node = node.id.0, name = %node.given_name, "node registered by OIDC login");
    Ok((user.name.clone(), node.given_name.clone()))
}

/// The user record a login names. The e-mail is kept only when it can be
/// trusted (verified, or verification not required), as Headscale does.
fn provider_identity(oidc: &Oidc, id: &Identity) -> ProviderIdentity {
    let email = if allow::email_trusted(&oidc.settings.rules, id) {
        id.email.clone()
    } else {
        String::new()
    };
    // An untrusted name must not look like an e-mail address: peers show a
    // user's name as their login when there is no e-mail.
    let preferred = if !id.preferred_username.is_empty() {
        if email.is_empty() {
            id.preferred_username
                .split('@')
                .next()
                .unwrap_or_default()
                .to_string()
        } else {
            id.preferred_username.clone()
        }
    } else {
        email.clone()
    };
    ProviderIdentity {
        provider: "oidc".into(),
        provider_id: id.provider_id(),
        preferred_name: preferred,
        email,
        display_name: id.name.clone(),
        profile_pic_url: id.picture.clone(),
        groups: id.groups.clone(),
    }
}

/// What a visitor is told: the refusal itself, except for errors whose
/// details (provider URLs, token contents, internal errors) stay in the log.
fn public_text(r: &Refusal) -> String {
    match r {
        Refusal::Unreachable(_) => "the identity provider cannot be reached".into(),
        Refusal::Provider(_) => "the identity provider refused the server's request".into(),
        Refusal::InvalidToken(_) => {
            "the identity provider's ID token did not pass the checks".into()
        }
        Refusal::Config(_) | Refusal::Internal(_) => {
            "the server could not complete the login".into()
        }
        other => other.to_string(),
    }
}

fn refusal_page(r: &Refusal) -> Response {
    refusal_page_with(
        r,
        "Nothing was registered. Run <code>tailscale up</code> again to start over, or ask your administrator.",
    )
}

/// A refusal on the way to passing an SSH check.
fn ssh_refusal_page(r: &Refusal) -> Response {
    refusal_page_with(
        r,
        "The SSH connection was not let through. Connect again to get a new check link, or ask your administrator.",
    )
}

fn refusal_page_with(r: &Refusal, next: &str) -> Response {
    let (status, title, why) = explain(r);
    page(
        status,
        title,
        &format!(
            "<p id=\"result\" data-outcome=\"refused\" data-reason=\"{}\">{}</p><p>{}</p>\
             <p>{next}</p>",
            reason_code(r),
            escape(&public_text(r)),
            why
        ),
    )
}

/// A short machine-readable code for each refusal (tests and scripts).
fn reason_code(r: &Refusal) -> &'static str {
    match r {
        Refusal::UnknownState => "state",
        Refusal::Replayed => "replayed",
        Refusal::OtherBrowser => "browser",
        Refusal::ProviderDenied { .. } => "provider-denied",
        Refusal::Unreachable(_) => "unreachable",
        Refusal::Provider(_) => "provider",
        Refusal::InvalidToken(_) => "token",
        Refusal::Config(_) => "config",
        Refusal::EmailNotVerified => "email-unverified",
        Refusal::DomainNotAllowed => "domain",
        Refusal::UserNotAllowed => "user",
        Refusal::GroupNotAllowed => "group",
        Refusal::RegistrationGone => "registration",
        Refusal::Approval(_) => "approval",
        Refusal::SshCheckGone => "ssh-check",
        Refusal::SshCheckNotOwner { .. } => "ssh-owner",
        Refusal::Internal(_) => "internal",
    }
}

fn explain(r: &Refusal) -> (StatusCode, &'static str, &'static str) {
    use Refusal::*;
    match r {
        UnknownState | Replayed | OtherBrowser => (
            StatusCode::BAD_REQUEST,
            "Login not accepted",
            "Each login link works once, in the browser that opened it, for ten minutes.",
        ),
        ProviderDenied { .. } => (
            StatusCode::FORBIDDEN,
            "Login refused by the identity provider",
            "The identity provider did not authenticate you.",
        ),
        Unreachable(_) | Provider(_) => (
            StatusCode::BAD_GATEWAY,
            "Identity provider error",
            "The server could not complete the login with the identity provider. The administrator can run <code>ironscale oidc check</code>.",
        ),
        InvalidToken(_) => (
            StatusCode::BAD_REQUEST,
            "Login not accepted",
            "The identity provider's answer did not pass the server's checks.",
        ),
        Config(_) | Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "Server error",
            "The administrator can run <code>ironscale oidc check</code>.",
        ),
        EmailNotVerified => (
            StatusCode::FORBIDDEN,
            "E-mail not verified",
            "Verify your e-mail address at your identity provider, then log in again.",
        ),
        DomainNotAllowed | UserNotAllowed | GroupNotAllowed => (
            StatusCode::FORBIDDEN,
            "Not allowed",
            "This tailnet does not admit this account. Ask your administrator for access.",
        ),
        RegistrationGone => (
            StatusCode::NOT_FOUND,
            "Unknown registration",
            "This login link is unknown or has expired.",
        ),
        Approval(_) => (
            StatusCode::FORBIDDEN,
            "Registration refused",
            "The server refused to register the machine.",
        ),
        SshCheckGone => (
            StatusCode::NOT_FOUND,
            "Unknown SSH check",
            "This check link is unknown, has expired (ten minutes) or was already used.",
        ),
        SshCheckNotOwner { .. } => (
            StatusCode::FORBIDDEN,
            "SSH check failed",
            "Only the person who owns the device the SSH connection comes from can pass its check. The connection was refused.",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_cookie_is_read_among_others_and_junk_is_ignored() {
        let mut h = HeaderMap::new();
        let good = "A".repeat(43);
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!(
                "_session=x; {LOGIN_COOKIE}={good}; _interaction=y"
            ))
            .expect("header"),
        );
        assert_eq!(browser_cookie(&h), Some(good));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("ironscale_oidc_login=short"),
        );
        assert_eq!(browser_cookie(&h), None);
    }

    #[tokio::test]
    async fn refusal_pages_escape_what_the_provider_said() {
        let r = Refusal::ProviderDenied {
            error: "access_denied".into(),
            description: "<script>x</script>".into(),
        };
        let resp = refusal_page(&r);
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("body");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("&lt;script&gt;x&lt;/script&gt;"), "{body}");
        assert!(!body.contains("<script>"), "{body}");
        assert!(body.contains("data-reason=\"provider-denied\""), "{body}");
    }
}
