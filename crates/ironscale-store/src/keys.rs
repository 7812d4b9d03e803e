//! Pre-auth key text: `hskey-auth-<prefix>-<secret>`.
//!
//! * prefix: 12 random alphanumeric characters, stored in clear (it is the lookup key
//!   and is shown in listings);
//! * secret: 64 random alphanumeric characters (~381 bits);
//! * stored: the prefix and the SHA-256 (hex) of the whole key text.
//!
//! The alphabet has no `-`, so a key never contains `--TL` (which Tailscale
//! clients read as a tailnet-lock wrapped key) and never starts with
//! `tskey-client-` (which they read as an OAuth client secret).
//!
//! Legacy Headscale keys (48 hex digits) are looked up by their first 12
//! characters, should such keys ever be imported with that prefix.

use sha2::{Digest, Sha256};

use crate::StoreError;

pub const AUTH_KEY_PREFIX: &str = "hskey-auth-";
pub const PREFIX_LEN: usize = 12;
pub const SECRET_LEN: usize = 64;
const LEGACY_LEN: usize = 48;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

pub(crate) struct Generated {
    pub prefix: String,
    pub text: String,
}

/// `n` uniformly random characters from [`ALPHABET`] (rejection sampling).
fn random_chars(n: usize) -> Result<String, StoreError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(|e| StoreError::Rng(e.to_string()))?;
        for b in buf {
            // 248 = 4 * 62: accept only bytes that map uniformly.
            if b < 248 && out.len() < n {
                out.push(ALPHABET[usize::from(b % 62)] as char);
            }
        }
    }
    Ok(out)
}

pub(crate) fn generate() -> Result<Generated, StoreError> {
    let prefix = random_chars(PREFIX_LEN)?;
    let secret = random_chars(SECRET_LEN)?;
    let text = format!("{AUTH_KEY_PREFIX}{prefix}-{secret}");
    Ok(Generated { prefix, text })
}

pub(crate) fn hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The lookup prefix of a key text, if it is well-formed.
pub(crate) fn parse_prefix(text: &str) -> Option<&str> {
    let alnum = |s: &str| s.bytes().all(|b| b.is_ascii_alphanumeric());
    if let Some(rest) = text.strip_prefix(AUTH_KEY_PREFIX) {
        if rest.len() != PREFIX_LEN + 1 + SECRET_LEN || rest.as_bytes()[PREFIX_LEN] != b'-' {
            return None;
        }
        let (prefix, secret) = (&rest[..PREFIX_LEN], &rest[PREFIX_LEN + 1..]);
        return (alnum(prefix) && alnum(secret)).then_some(prefix);
    }
    if text.len() == LEGACY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(&text[..PREFIX_LEN]);
    }
    None
}

/// Constant-time comparison of the key's hash with the stored one.
pub(crate) fn hash_matches(text: &str, stored_hex: &str) -> bool {
    let got = hash(text);
    let (a, b) = (got.as_bytes(), stored_hex.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_documented_shape() {
        for _ in 0..200 {
            let g = generate().expect("rng");
            assert_eq!(
                g.text.len(),
                AUTH_KEY_PREFIX.len() + PREFIX_LEN + 1 + SECRET_LEN
            );
            assert!(g.text.starts_with("hskey-auth-"));
            assert!(!g.text.contains("--TL"));
            assert!(!g.text.starts_with("tskey-client-"));
            assert_eq!(parse_prefix(&g.text), Some(g.prefix.as_str()));
            assert!(hash_matches(&g.text, &hash(&g.text)));
        }
    }

    #[test]
    fn random_chars_cover_the_alphabet() {
        let s = random_chars(20_000).expect("rng");
        for c in ALPHABET {
            assert!(s.as_bytes().contains(c), "{} never drawn", *c as char);
        }
    }

    #[test]
    fn malformed_keys_have_no_prefix() {
        let good = format!("hskey-auth-{}-{}", "a".repeat(12), "b".repeat(64));
        assert!(parse_prefix(&good).is_some());
        for bad in [
            "",
            "hskey-auth-",
            &format!("hskey-auth-{}-{}", "a".repeat(11), "b".repeat(65)),
            &format!("hskey-auth-{}_{}", "a".repeat(12), "b".repeat(64)),
            &format!("hskey-auth-{}-{}", "a".repeat(12), "b".repeat(63)),
            &format!("hskey-auth-{}-{}-", "a".repeat(12), "b".repeat(63)),
            &format!("tskey-auth-{}-{}", "a".repeat(12), "b".repeat(64)),
        ] {
            assert_eq!(parse_prefix(bad), None, "{bad:?}");
        }
        let legacy = "0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(parse_prefix(legacy), Some("0123456789ab"));
    }

    #[test]
    fn hash_mismatch() {
        assert!(!hash_matches("x", &hash("y")));
        assert!(!hash_matches("x", "short"));
    }
}
