//! `ironscale oidc check`: contact the issuer as a login would and say what
//! is wrong: unreachable, wrong issuer URL, no signing keys, a scope or PKCE
//! method the provider does not offer, client credentials refused.

use base64::Engine as _;
use openidconnect::core::CoreProviderMetadata;
use openidconnect::IssuerUrl;
use serde_json::Value;

use crate::provider::{discovery_error, http_client};
use crate::settings::{OidcSettings, PkceMethod};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckItem {
    pub what: &'static str,
    pub verdict: Verdict,
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    fn push(&mut self, what: &'static str, verdict: Verdict, detail: impl Into<String>) {
        self.items.push(CheckItem {
            what,
            verdict,
            detail: detail.into(),
        });
    }
    pub fn failed(&self) -> bool {
        self.items.iter().any(|i| i.verdict == Verdict::Fail)
    }
}

fn strings(v: &Value, key: &str) -> Option<Vec<String>> {
    v.get(key)?.as_array().map(|a| {
        a.iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    })
}

/// Check `s` against its issuer. Never fails itself: every problem is an item.
pub async fn check(s: &OidcSettings) -> CheckReport {
    let mut r = CheckReport::default();
    let http = match http_client() {
        Ok(h) => h,
        Err(e) => {
            r.push("http client", Verdict::Fail, e);
            return r;
        }
    };
    let url = format!(
        "{}/.well-known/openid-configuration",
        s.issuer.trim_end_matches('/')
    );
    let doc: Value = match http.get(&url).send().await {
        Err(e) => {
            r.push(
                "discovery",
                Verdict::Fail,
                format!(
                    "{url} cannot be reached: {}; check oidc.issuer",
                    discovery_error(&e)
                ),
            );
            return r;
        }
        Ok(resp) if !resp.status().is_success() => {
            r.push(
                "discovery",
                Verdict::Fail,
                format!(
                    "{url} answered HTTP {}; oidc.issuer must be the URL whose /.well-known/openid-configuration is the provider's metadata",
                    resp.status()
                ),
            );
            return r;
        }
        Ok(resp) => match resp.json().await {
            Ok(v) => v,
            Err(e) => {
                r.push(
                    "discovery",
                    Verdict::Fail,
                    format!("{url} is not a JSON metadata document: {e}"),
                );
                return r;
            }
        },
    };
    let their_issuer = doc.get("issuer").and_then(Value::as_str).unwrap_or("");
    if their_issuer != s.issuer {
        r.push(
            "issuer",
            Verdict::Fail,
            format!(
                "the provider calls itself {their_issuer:?} but oidc.issuer is {:?}; they must be identical (mind a trailing slash)",
                s.issuer
            ),
        );
        return r;
    }
    r.push(
        "discovery",
        Verdict::Ok,
        format!("{url} names issuer {their_issuer}"),
    );

    match IssuerUrl::new(s.issuer.clone()) {
        Ok(iss) => match CoreProviderMetadata::discover_async(iss, &http).await {
            Ok(m) => {
                let n = m.jwks().keys().len();
                if n == 0 {
                    r.push(
                        "signing keys",
                        Verdict::Fail,
                        "the provider's JWKS has no keys",
                    );
                } else {
                    r.push(
                        "signing keys",
                        Verdict::Ok,
                        format!("{n} key(s) in the JWKS"),
                    );
                }
            }
            Err(e) => r.push(
                "signing keys",
                Verdict::Fail,
                format!(
                    "the metadata or its JWKS is not usable: {}",
                    discovery_error(&e)
                ),
            ),
        },
        Err(e) => r.push(
            "issuer",
            Verdict::Fail,
            format!("oidc.issuer is not a URL: {e}"),
        ),
    }

    if !strings(&doc, "response_types_supported")
        .unwrap_or_default()
        .iter()
        .any(|t| t == "code")
    {
        r.push(
            "response type",
            Verdict::Fail,
            "the provider does not offer response_type=code (the authorization code flow)",
        );
    }
    match strings(&doc, "scopes_supported") {
        Some(offered) => {
            let missing: Vec<&String> = s.scope.iter().filter(|sc| !offered.contains(sc)).collect();
            if missing.is_empty() {
                r.push(
                    "scopes",
                    Verdict::Ok,
                    format!("offered: {}", s.scope.join(" ")),
                );
            } else {
                r.push(
                    "scopes",
                    Verdict::Warn,
                    format!(
                        "oidc.scope asks for {missing:?}, which the provider does not list in scopes_supported (offered: {})",
                        offered.join(" ")
                    ),
                );
            }
        }
        None => r.push(
            "scopes",
            Verdict::Warn,
            "the provider lists no scopes_supported",
        ),
    }
    if let Some(claims) = strings(&doc, "claims_supported") {
        if !claims.iter().any(|c| c == "groups") {
            r.push(
                "groups claim",
                if s.rules.allowed_groups.is_empty() { Verdict::Warn } else { Verdict::Fail },
                "the provider does not list a groups claim: oidc.allowed_groups and oidc-group: policy members need one (add the provider's groups scope to oidc.scope)",
            );
        }
    }
    if let Some(m) = s.pkce {
        let want = match m {
            PkceMethod::S256 => "S256",
            PkceMethod::Plain => "plain",
        };
        match strings(&doc, "code_challenge_methods_supported") {
            Some(v) if v.iter().any(|x| x == want) => {
                r.push("pkce", Verdict::Ok, format!("{want} offered"))
            }
            Some(v) => r.push(
                "pkce",
                Verdict::Fail,
                format!(
                    "oidc.pkce.method {want} is not offered (offered: {})",
                    v.join(" ")
                ),
            ),
            None => r.push(
                "pkce",
                Verdict::Warn,
                "the provider does not list code_challenge_methods_supported",
            ),
        }
    }
    match doc.get("token_endpoint").and_then(Value::as_str) {
        Some(token_url) => r.items.push(client_credentials(&http, s, token_url).await),
        None => r.push(
            "token endpoint",
            Verdict::Fail,
            "the metadata has no token_endpoint",
        ),
    }
    r
}

/// Present the client credentials with a code that cannot be valid: a
/// provider answers `invalid_client` to wrong credentials and
/// `invalid_grant` to right credentials with a bad code.
async fn client_credentials(
    http: &reqwest::Client,
    s: &OidcSettings,
    token_url: &str,
) -> CheckItem {
    let form = [
        ("grant_type", "authorization_code"),
        ("code", "ironscale-oidc-check-not-a-code"),
        ("redirect_uri", s.redirect_url.as_str()),
    ];
    let enc = |x: &str| url::form_urlencoded::byte_serialize(x.as_bytes()).collect::<String>();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        enc(&s.client_id),
        enc(s.client_secret.expose())
    ));
    let item = |verdict, detail: String| CheckItem {
        what: "client credentials",
        verdict,
        detail,
    };
    let resp = match http
        .post(token_url)
        .header("authorization", format!("Basic {basic}"))
        .form(&form)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => {
            return item(
                Verdict::Fail,
                format!(
                    "the token endpoint cannot be reached: {}",
                    discovery_error(&e)
                ),
            )
        }
    };
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let err = body.get("error").and_then(Value::as_str).unwrap_or("");
    match err {
        "invalid_client" | "unauthorized_client" => item(
            Verdict::Fail,
            format!(
                "the provider rejected client {:?} ({err}): check oidc.client_id and oidc.client_secret",
                s.client_id
            ),
        ),
        "invalid_grant" => item(
            Verdict::Ok,
            format!("client {:?} accepted by the token endpoint", s.client_id),
        ),
        other => item(
            Verdict::Warn,
            format!("the token endpoint answered HTTP {status} {other:?}; could not tell whether the client secret is right"),
        ),
    }
}
