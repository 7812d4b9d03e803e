//! OIDC login (OpenID Connect authorization code flow) for ironscale, the
//! second provider behind the registration seam (`Credential::Approved`):
//!
//! - [`OidcSettings`]: Headscale's `oidc.*` keys resolved (secret file read,
//!   redirect URL `<server_url>/oidc/callback`).
//! - [`Oidc`]: the relying party on `openidconnect` (discovery, JWKS,
//!   re-fetched when a token names an unknown key id; PKCE S256 or plain;
//!   ID token signature, `iss`, `aud`, `exp` and `nonce` checked).
//! - [`router`]: `GET /register/<id>` sends the browser to the provider,
//!   `GET /oidc/callback` checks the answer, applies the allow rules, finds
//!   or creates the user and approves the waiting registration; every
//!   refusal is a page that says why and registers nothing.
//!   `GET /ssh/check/<id>` does the same for a Tailscale SSH connection held
//!   by a `check` rule: the callback passes the check when the person who
//!   logged in owns the source device, and denies it otherwise.
//! - [`check`]: `ironscale oidc check`, what is wrong with the setup.

mod allow;
mod check;
mod flows;
mod provider;
mod settings;
mod web;

pub use allow::check as check_allowed;
pub use check::{check, CheckItem, CheckReport, Verdict};
pub use flows::Purpose;
pub use provider::Oidc;
pub use settings::{AllowRules, OidcSettings, PkceMethod};
pub use web::{router, LOGIN_COOKIE};

use ironscale_types::Timestamp;

/// Who logged in, as the provider's verified ID token (and userinfo) says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: String,
    /// `email_verified` (absent: `None`, which is not verified).
    pub email_verified: Option<bool>,
    pub name: String,
    pub preferred_username: String,
    pub picture: String,
    pub groups: Vec<String>,
    /// The token carried a `groups` claim (else userinfo may supply one).
    pub groups_claimed: bool,
    /// The ID token's `exp`.
    pub expires: Timestamp,
}

impl Identity {
    /// The stable id of this person at this provider, as Headscale stores it
    /// (`provider_identifier`, Go's `url.JoinPath(iss, sub)`): the issuer
    /// without a trailing `/`, `/`, the subject escaped as a URL path
    /// (`auth0|123` is `auth0%7C123`), so an imported Headscale user matches.
    pub fn provider_id(&self) -> String {
        let mut sub = String::with_capacity(self.subject.len());
        for b in self.subject.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
                sub.push(char::from(b));
            } else {
                sub.push_str(&format!("%{b:02X}"));
            }
        }
        format!(
            "{}/{}",
            self.issuer.trim_end_matches('/'),
            sub.trim_start_matches('/')
        )
    }

    #[cfg(test)]
    pub(crate) fn test(sub: &str) -> Identity {
        Identity {
            issuer: "http://idp.test".into(),
            subject: sub.into(),
            email: String::new(),
            email_verified: None,
            name: String::new(),
            preferred_username: String::new(),
            picture: String::new(),
            groups: Vec::new(),
            groups_claimed: false,
            expires: chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap_or_default(),
        }
    }
}

/// Why a login was refused. Each is shown to the person as a page (title,
/// explanation, HTTP status) and logged once; none registers anything.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the login response names no login in progress (state unknown, tampered with or expired)"
    )]
    UnknownState,
    #[error("this login response was already used (a replayed callback)")]
    Replayed,
    #[error("the login was started in another browser (login cookie missing or different)")]
    OtherBrowser,
    #[error("the identity provider refused the login: {error}{}", if description.is_empty() { String::new() } else { format!(" ({description})") })]
    ProviderDenied { error: String, description: String },
    #[error("the identity provider cannot be reached: {0}")]
    Unreachable(String),
    #[error("{0}")]
    Provider(String),
    #[error("the ID token is not valid: {0}")]
    InvalidToken(String),
    #[error("OIDC is misconfigured: {0}")]
    Config(String),
    #[error("the e-mail address is not verified at the identity provider")]
    EmailNotVerified,
    #[error("the e-mail domain is not allowed (oidc.allowed_domains)")]
    DomainNotAllowed,
    #[error("the user is not allowed (oidc.allowed_users)")]
    UserNotAllowed,
    #[error("the user is in none of the allowed groups (oidc.allowed_groups)")]
    GroupNotAllowed,
    #[error("the machine's registration expired or is unknown")]
    RegistrationGone,
    #[error("the registration was refused: {0}")]
    Approval(String),
    #[error("the SSH check is unknown, expired or already decided")]
    SshCheckGone,
    #[error("logged in as {user}, who does not own the device the SSH connection comes from")]
    SshCheckNotOwner { user: String },
    #[error("internal error: {0}")]
    Internal(String),
}

#[cfg(test)]
mod tests {
    use super::Identity;

    #[test]
    fn provider_ids_are_made_as_headscale_makes_them() {
        let mut id = Identity::test("alice");
        id.issuer = "https://sso.example.com/realms/corp/".into();
        assert_eq!(
            id.provider_id(),
            "https://sso.example.com/realms/corp/alice"
        );
        id.subject = "auth0|65f0 1".into();
        assert_eq!(
            id.provider_id(),
            "https://sso.example.com/realms/corp/auth0%7C65f0%201"
        );
        id.subject = "248289761001".into();
        assert_eq!(
            id.provider_id(),
            "https://sso.example.com/realms/corp/248289761001"
        );
    }
}
