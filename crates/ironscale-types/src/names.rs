//! Validated names: user names, tags and DNS labels. Each is a newtype whose
//! constructor is the only place its rules live, so a value of the type is
//! valid wherever it travels (API, CLI, state, store).

use std::fmt;

use crate::UserId;

/// Why a name was refused; the message is meant for the person who typed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameError(pub String);

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NameError {}

macro_rules! string_newtype {
    ($t:ident) => {
        impl $t {
            pub fn as_str(&self) -> &str {
                &self.0
            }
            pub fn into_string(self) -> String {
                self.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }
        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }
        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }
    };
}

/// A user name (Headscale's `name`): letters (any script), digits, `-`, `_`,
/// `.`, `@`, `+`; not starting with `-`; 1 to 63 characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserName(String);
string_newtype!(UserName);

impl UserName {
    pub fn parse(name: &str) -> Result<UserName, NameError> {
        let ok = !name.is_empty()
            && name.chars().count() <= 63
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
            && !name.starts_with('-');
        if ok {
            Ok(UserName(name.to_string()))
        } else {
            Err(NameError(format!(
                "{name:?} is not a valid user name (letters, digits, '-', '_', '.', '@', '+'; at most 63 characters)"
            )))
        }
    }
}

/// A Tailscale tag: `tag:` + an ASCII letter, then ASCII letters, digits,
/// `-` or `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);
string_newtype!(Tag);

impl Tag {
    pub fn parse(tag: &str) -> Result<Tag, NameError> {
        let Some(name) = tag.strip_prefix("tag:") else {
            return Err(NameError(format!("tag {tag:?} must start with \"tag:\"")));
        };
        let mut chars = name.chars();
        let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Tag(tag.to_string()))
        } else {
            Err(NameError(format!(
                "tag {tag:?} is invalid: after \"tag:\" use a letter, then letters, digits or '-'"
            )))
        }
    }
}

/// One DNS label as MagicDNS uses it: lowercase ASCII letters, digits and
/// `-`, not starting or ending with `-`, 1 to 63 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DnsLabel(String);
string_newtype!(DnsLabel);

impl DnsLabel {
    /// Accept `s` only if it already is a valid label (admin renames).
    pub fn parse(s: &str) -> Result<DnsLabel, NameError> {
        let ok = !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !s.starts_with('-')
            && !s.ends_with('-');
        if ok {
            Ok(DnsLabel(s.to_string()))
        } else {
            Err(NameError(format!(
                "{s:?} is not a valid DNS label (use lowercase letters, digits and '-', at most 63 characters)"
            )))
        }
    }

    /// Derive a label from a client's hostname, as Tailscale does: only the
    /// first label of an FQDN counts; ASCII letters are lowercased, digits
    /// and `-` kept, the separators space, `.`, `@` and `_` become `-`, and
    /// every other character (non-ASCII letters included) is dropped; `-` is
    /// trimmed from both ends and the result cut to 63 bytes. `None` when
    /// nothing is left.
    pub fn sanitize(host: &str) -> Option<DnsLabel> {
        let first = host.split('.').next().unwrap_or("");
        let mut s = String::with_capacity(first.len());
        for c in first.chars() {
            match c {
                'a'..='z' | '0'..='9' | '-' => s.push(c),
                'A'..='Z' => s.push(c.to_ascii_lowercase()),
                ' ' | '@' | '_' => s.push('-'),
                _ => {}
            }
        }
        let s = s.trim_matches('-');
        let mut s = s[..s.len().min(63)].to_string();
        while s.ends_with('-') {
            s.pop();
        }
        (!s.is_empty()).then_some(DnsLabel(s))
    }

    /// `self` with `-N` appended, cut so that the whole stays within 63 bytes.
    pub fn with_suffix(&self, n: u64) -> DnsLabel {
        let suffix = format!("-{n}");
        let keep = 63usize.saturating_sub(suffix.len()).min(self.0.len());
        let base = self.0[..keep].trim_end_matches('-');
        DnsLabel(format!("{base}{suffix}"))
    }
}

/// A reference to a user, by id or by name. The API names users by id
/// (Headscale's paths and fields); the CLI accepts either, and says which.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum UserRef {
    Id(UserId),
    Name(String),
}

impl UserRef {
    /// For the CLI's `--user NAME|ID` words: digits are an id, anything else a
    /// name. (The API never guesses: its paths carry ids.)
    pub fn guess(s: &str) -> UserRef {
        match s.parse::<u64>() {
            Ok(id) => UserRef::Id(UserId(id)),
            Err(_) => UserRef::Name(s.to_string()),
        }
    }
}

impl fmt::Display for UserRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserRef::Id(id) => write!(f, "id {}", id.0),
            UserRef::Name(n) => write!(f, "{n:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_from_hostnames() {
        let s = |h: &str| DnsLabel::sanitize(h).map(|l| l.into_string());
        assert_eq!(s("My Laptop").as_deref(), Some("my-laptop"));
        assert_eq!(s("db1.corp.example").as_deref(), Some("db1"));
        assert_eq!(s("--x--").as_deref(), Some("x"));
        assert_eq!(s("web_01").as_deref(), Some("web-01"));
        // Non-ASCII letters are dropped (as Tailscale's SanitizeLabel does),
        // and the FQDN is cut at its first dot, not at a byte offset.
        assert_eq!(s("Ünïcode-host.lan").as_deref(), Some("ncode-host"));
        assert_eq!(s("żółw.example").as_deref(), Some("w"));
        assert_eq!(s("日本語"), None);
        assert_eq!(s(""), None);
        let long = "a".repeat(70);
        assert_eq!(s(&long).map(|l| l.len()), Some(63));
        assert_eq!(
            s(&format!("{}-b", "a".repeat(62))).as_deref(),
            Some(&*"a".repeat(62))
        );
    }

    #[test]
    fn strict_labels_and_suffixes() {
        assert!(DnsLabel::parse("web-1").is_ok());
        for bad in ["", "Web", "-x", "x-", "a.b", "ü", &"a".repeat(64)] {
            assert!(DnsLabel::parse(bad).is_err(), "{bad:?}");
        }
        let l = DnsLabel::parse(&"a".repeat(63)).unwrap();
        let s = l.with_suffix(12);
        assert_eq!(s.len(), 63);
        assert!(s.ends_with("-12"));
        assert!(DnsLabel::parse(&s).is_ok());
    }

    #[test]
    fn tags_and_user_names() {
        assert!(Tag::parse("tag:server").is_ok());
        assert!(Tag::parse("tag:web_1-a").is_ok());
        for bad in ["server", "tag:", "tag:1x", "tag:ü"] {
            assert!(Tag::parse(bad).is_err(), "{bad:?}");
        }
        assert!(UserName::parse("alice@example.com").is_ok());
        assert!(UserName::parse("jürgen").is_ok());
        for bad in ["", "-bob", "a b", &"x".repeat(64)] {
            assert!(UserName::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(UserRef::guess("5"), UserRef::Id(UserId(5)));
        assert_eq!(UserRef::guess("bob"), UserRef::Name("bob".into()));
    }
}
