//! Who may log in (pure): Headscale's `allowed_groups`, then the e-mail
//! checks (`allowed_domains`, `allowed_users`) that need a verified e-mail
//! when `email_verified_required` is on.

use crate::settings::AllowRules;
use crate::{Identity, Refusal};

/// Whether the e-mail the provider gave can be trusted (verified, or
/// verification not required).
pub(crate) fn email_trusted(rules: &AllowRules, id: &Identity) -> bool {
    !rules.email_verified_required || id.email_verified == Some(true)
}

/// `Ok` when the rules let `id` in; otherwise the refusal that says why.
pub fn check(rules: &AllowRules, id: &Identity) -> Result<(), Refusal> {
    if !rules.allowed_groups.is_empty()
        && !id.groups.iter().any(|g| rules.allowed_groups.contains(g))
    {
        return Err(Refusal::GroupNotAllowed);
    }
    let email_tests = !rules.allowed_domains.is_empty() || !rules.allowed_users.is_empty();
    if email_tests && !email_trusted(rules, id) {
        return Err(Refusal::EmailNotVerified);
    }
    let email = id.email.to_ascii_lowercase();
    if !rules.allowed_domains.is_empty() {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        if domain.is_empty()
            || !rules
                .allowed_domains
                .iter()
                .any(|d| d.trim_start_matches('@').eq_ignore_ascii_case(domain))
        {
            return Err(Refusal::DomainNotAllowed);
        }
    }
    if !rules.allowed_users.is_empty()
        && (email.is_empty()
            || !rules
                .allowed_users
                .iter()
                .any(|u| u.eq_ignore_ascii_case(&email)))
    {
        return Err(Refusal::UserNotAllowed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(email: &str, verified: Option<bool>, groups: &[&str]) -> Identity {
        Identity {
            email: email.into(),
            email_verified: verified,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Identity::test("sub")
        }
    }

    fn rules() -> AllowRules {
        AllowRules {
            email_verified_required: true,
            ..Default::default()
        }
    }

    #[test]
    fn no_rules_let_everyone_in_even_unverified() {
        assert_eq!(
            check(&rules(), &id("c@example.com", Some(false), &[])),
            Ok(())
        );
    }

    #[test]
    fn domains_users_and_groups_are_checked_as_headscale_does() {
        let r = AllowRules {
            allowed_domains: vec!["example.com".into()],
            ..rules()
        };
        assert_eq!(check(&r, &id("a@Example.COM", Some(true), &[])), Ok(()));
        assert_eq!(
            check(&r, &id("b@other.org", Some(true), &[])),
            Err(Refusal::DomainNotAllowed)
        );
        assert_eq!(
            check(&r, &id("c@example.com", Some(false), &[])),
            Err(Refusal::EmailNotVerified)
        );
        assert_eq!(
            check(&r, &id("c@example.com", None, &[])),
            Err(Refusal::EmailNotVerified),
            "a missing email_verified claim is not a verification"
        );
        let lax = AllowRules {
            email_verified_required: false,
            ..r.clone()
        };
        assert_eq!(check(&lax, &id("c@example.com", Some(false), &[])), Ok(()));

        let u = AllowRules {
            allowed_users: vec!["alice@example.com".into()],
            ..rules()
        };
        assert_eq!(check(&u, &id("alice@example.com", Some(true), &[])), Ok(()));
        assert_eq!(
            check(&u, &id("mallory@example.com", Some(true), &[])),
            Err(Refusal::UserNotAllowed)
        );

        let g = AllowRules {
            allowed_groups: vec!["admins".into()],
            ..rules()
        };
        assert_eq!(
            check(&g, &id("x@y.z", Some(false), &["staff", "admins"])),
            Ok(())
        );
        assert_eq!(
            check(&g, &id("x@y.z", Some(true), &["staff"])),
            Err(Refusal::GroupNotAllowed)
        );
    }
}
