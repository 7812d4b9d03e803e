//! Typed 32-byte Curve25519 keys with Tailscale's text forms (`mkey:`, `nodekey:`,
//! `discokey:`, `privkey:`, `chalpub:`, `nlpub:`).
//!
//! Public keys print their full text form in `Debug`; private keys never do
//! (their `Debug` and `Display` are redacted) and have no serde impls at all, so a
//! private key cannot end up in a log line or a JSON document by accident.

use std::fmt;
use std::str::FromStr;

/// Error parsing a key's text form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("key {got:?} lacks the prefix {want:?}")]
    Prefix { want: &'static str, got: String },
    #[error("key must be exactly 64 hex digits after its prefix")]
    Hex,
}

fn parse_hex32(prefix: &'static str, s: &str) -> Result<[u8; 32], KeyError> {
    let Some(rest) = s.strip_prefix(prefix) else {
        let shown: String = s.chars().take(12).collect();
        return Err(KeyError::Prefix {
            want: prefix,
            got: shown,
        });
    };
    if rest.len() != 64 {
        return Err(KeyError::Hex);
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(rest, &mut out).map_err(|_| KeyError::Hex)?;
    Ok(out)
}

macro_rules! public_key {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub const PREFIX: &'static str = $prefix;
            pub const ZERO: $name = $name([0u8; 32]);
            pub fn from_bytes(b: [u8; 32]) -> Self { Self(b) }
            pub fn as_bytes(&self) -> &[u8; 32] { &self.0 }
            pub fn is_zero(&self) -> bool { self.0 == [0u8; 32] }
            /// Text form without the prefix (64 lowercase hex digits).
            pub fn hex(&self) -> String { hex::encode(self.0) }
            /// Parse the bare 64-hex-digit form (no prefix), as used in some headers.
            pub fn from_hex(s: &str) -> Result<Self, KeyError> {
                if s.len() != 64 { return Err(KeyError::Hex); }
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| KeyError::Hex)?;
                Ok(Self(out))
            }
            /// A short form for logs: prefix plus the first 8 hex digits.
            pub fn short(&self) -> String { format!("{}{}", $prefix, &hex::encode(&self.0[..4])) }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, hex::encode(self.0))
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { write!(f, "{}", self.short()) }
        }
        impl FromStr for $name {
            type Err = KeyError;
            fn from_str(s: &str) -> Result<Self, KeyError> { parse_hex32($prefix, s).map(Self) }
        }
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                // Go clients may send null or "" for an unset key: both mean zero.
                let s: Option<String> = serde::Deserialize::deserialize(d)?;
                match s.as_deref() {
                    None | Some("") => Ok(Self::ZERO),
                    Some(s) => s.parse().map_err(serde::de::Error::custom),
                }
            }
        }
    };
}

public_key!(
    /// A machine's long-lived identity; the Noise static key of client and server.
    MachinePublic, "mkey:");
public_key!(
    /// A node's WireGuard public key, which is also its DERP address.
    NodePublic, "nodekey:");
public_key!(
    /// A node's disco (NAT traversal) key; new every time the client starts.
    DiscoPublic, "discokey:");
public_key!(
    /// A challenge key sent in the Noise early payload.
    ChallengePublic, "chalpub:");

/// A Curve25519 private key. `Debug`/`Display` are redacted; no serde.
#[derive(Clone)]
pub struct PrivateKey([u8; 32]);

impl PrivateKey {
    pub const PREFIX: &'static str = "privkey:";

    /// A fresh random key from the OS RNG, clamped.
    pub fn generate() -> Self {
        let mut b = [0u8; 32];
        getrandom::fill(&mut b).expect("OS random number generator unavailable");
        Self::from_bytes(b)
    }
    /// Build from raw bytes (clamped as Curve25519 requires).
    pub fn from_bytes(mut b: [u8; 32]) -> Self {
        b[0] &= 248;
        b[31] = (b[31] & 127) | 64;
        Self(b)
    }
    pub fn secret_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    fn public_bytes(&self) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        x25519_dalek::PublicKey::from(&secret).to_bytes()
    }
    pub fn machine_public(&self) -> MachinePublic {
        MachinePublic(self.public_bytes())
    }
    pub fn node_public(&self) -> NodePublic {
        NodePublic(self.public_bytes())
    }
    pub fn disco_public(&self) -> DiscoPublic {
        DiscoPublic(self.public_bytes())
    }
    pub fn challenge_public(&self) -> ChallengePublic {
        ChallengePublic(self.public_bytes())
    }
    /// The text form `privkey:<hex>`, for writing key files only.
    pub fn to_file_text(&self) -> String {
        format!("{}{}", Self::PREFIX, hex::encode(self.0))
    }
    /// Parse the text form of a key file (`privkey:<hex>`; surrounding whitespace ignored).
    pub fn from_file_text(s: &str) -> Result<Self, KeyError> {
        parse_hex32(Self::PREFIX, s.trim()).map(Self::from_bytes)
    }
    /// X25519 Diffie-Hellman with a peer public key.
    pub fn shared_secret(&self, peer: &[u8; 32]) -> [u8; 32] {
        let secret = x25519_dalek::StaticSecret::from(self.0);
        secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(*peer))
            .to_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip_and_prefix_checked() {
        let k = PrivateKey::generate().node_public();
        let s = k.to_string();
        assert!(s.starts_with("nodekey:") && s.len() == 8 + 64);
        assert_eq!(s.parse::<NodePublic>().unwrap(), k);
        assert!(matches!(
            s.parse::<MachinePublic>(),
            Err(KeyError::Prefix { .. })
        ));
        assert_eq!("nodekey:abc".parse::<NodePublic>(), Err(KeyError::Hex));
    }

    #[test]
    fn zero_key_serialises_in_full_and_null_parses_as_zero() {
        let j = serde_json::to_string(&DiscoPublic::ZERO).unwrap();
        assert_eq!(j, format!("\"discokey:{}\"", "0".repeat(64)));
        let k: DiscoPublic = serde_json::from_str("null").unwrap();
        assert!(k.is_zero());
    }

    #[test]
    fn private_key_is_redacted_and_clamped() {
        let k = PrivateKey::from_bytes([0xff; 32]);
        assert_eq!(format!("{k:?}"), "PrivateKey(<redacted>)");
        assert_eq!(k.secret_bytes()[0] & 7, 0);
        let back = PrivateKey::from_file_text(&k.to_file_text()).unwrap();
        assert_eq!(back.secret_bytes(), k.secret_bytes());
    }

    #[test]
    fn dh_agrees() {
        let a = PrivateKey::generate();
        let b = PrivateKey::generate();
        assert_eq!(
            a.shared_secret(b.node_public().as_bytes()),
            b.shared_secret(a.node_public().as_bytes())
        );
    }
}
