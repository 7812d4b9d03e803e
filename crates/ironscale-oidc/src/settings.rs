//! What the relying party needs from the configuration (`oidc.*`, `server_url`).

use std::collections::BTreeMap;

use ironscale_config::{Config, Secret};

/// `oidc.*` resolved for use: the client secret read from
/// `client_secret_path`, the redirect URL made from `server_url`.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    /// Never logged (`Secret`'s `Debug` redacts it).
    pub client_secret: Secret,
    /// `<server_url>/oidc/callback`: register this at the provider.
    pub redirect_url: String,
    /// Scopes asked for (`openid` always first).
    pub scope: Vec<String>,
    pub extra_params: BTreeMap<String, String>,
    pub rules: AllowRules,
    pub use_expiry_from_token: bool,
    /// `oidc.pkce.enabled` with `oidc.pkce.method`.
    pub pkce: Option<PkceMethod>,
    /// `server_url` starts with `https://`: the login cookie is `Secure`.
    pub secure_cookies: bool,
}

/// `oidc.pkce.method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PkceMethod {
    S256,
    Plain,
}

/// Who may log in: `oidc.allowed_domains`, `allowed_users`, `allowed_groups`,
/// `email_verified_required` (Headscale's rules, in Headscale's order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowRules {
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
}

impl OidcSettings {
    /// `None` when OIDC is off (`oidc.issuer` empty). Errors name the key.
    pub fn from_config(cfg: &Config) -> Result<Option<OidcSettings>, String> {
        let o = &cfg.oidc;
        if !o.enabled() {
            return Ok(None);
        }
        let client_secret = match &o.client_secret_path {
            Some(p) => {
                // As Headscale: environment variables in the path are expanded
                // (`${CREDENTIALS_DIRECTORY}/oidc_client_secret` under systemd).
                let p = expand_env(&p.to_string_lossy(), |k| std::env::var(k).ok());
                let s = std::fs::read_to_string(&p)
                    .map_err(|e| format!("oidc.client_secret_path: cannot read {p}: {e}"))?;
                Secret::new(s.trim())
            }
            None => o.client_secret.clone(),
        };
        let mut scope: Vec<String> = vec!["openid".into()];
        for s in &o.scope {
            if !scope.contains(s) {
                scope.push(s.clone());
            }
        }
        let server = cfg.server_url.trim_end_matches('/');
        Ok(Some(OidcSettings {
            issuer: o.issuer.clone(),
            client_id: o.client_id.clone(),
            client_secret,
            redirect_url: format!("{server}/oidc/callback"),
            scope,
            extra_params: o.extra_params.clone(),
            rules: AllowRules {
                allowed_domains: o.allowed_domains.clone(),
                allowed_users: o.allowed_users.clone(),
                allowed_groups: o.allowed_groups.clone(),
                email_verified_required: o.email_verified_required,
            },
            use_expiry_from_token: o.use_expiry_from_token,
            pkce: o.pkce.enabled.then(|| {
                if o.pkce.method == "plain" {
                    PkceMethod::Plain
                } else {
                    PkceMethod::S256
                }
            }),
            secure_cookies: server.starts_with("https://"),
        }))
    }
}

/// `$VAR` and `${VAR}` replaced by `var(VAR)` (unset: empty), as Go's `os.ExpandEnv`.
fn expand_env(s: &str, var: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(j) => (&braced[..j], j + 2),
                // Bad syntax: Go's os.Expand drops the `${`.
                None => ("", 1),
            }
        } else {
            let n = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..n], n)
        };
        if len == 0 {
            out.push('$');
            rest = after;
            continue;
        }
        out.push_str(&var(name).unwrap_or_default());
        rest = &after[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn secret_paths_expand_environment_variables_as_headscale() {
        let var =
            |k: &str| (k == "CREDENTIALS_DIRECTORY").then(|| "/run/credentials/x".to_string());
        assert_eq!(
            expand_env("${CREDENTIALS_DIRECTORY}/oidc_client_secret", var),
            "/run/credentials/x/oidc_client_secret"
        );
        assert_eq!(
            expand_env("$CREDENTIALS_DIRECTORY/s", var),
            "/run/credentials/x/s"
        );
        assert_eq!(
            expand_env("/etc/headscale/oidc_secret", var),
            "/etc/headscale/oidc_secret"
        );
        assert_eq!(expand_env("/a/$UNSET/b", var), "/a//b");
        assert_eq!(expand_env("/a/${open", var), "/a/open");
    }
}
