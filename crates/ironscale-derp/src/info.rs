//! The NaCl-boxed JSON messages of the handshake: ClientInfo and ServerInfo.
//!
//! Sealed form: `nonce (24) || crypto_box(plaintext)` with X25519 +
//! XSalsa20-Poly1305 between the client's node key and the server's DERP key.

use std::fmt;

use bytes::Bytes;
use crypto_box::aead::Aead;
use crypto_box::{PublicKey, SalsaBox, SecretKey};
use ironscale_keys::{NodePublic, PrivateKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DerpError;
use crate::frame::{Frame, NONCE_LEN, PROTOCOL_VERSION};

/// Seal `plaintext` from `own` to `peer` with the given nonce: `nonce || box`.
pub fn seal(
    own: &PrivateKey,
    peer: &NodePublic,
    nonce: [u8; NONCE_LEN],
    plaintext: &[u8],
) -> Vec<u8> {
    let b = SalsaBox::new(
        &PublicKey::from(*peer.as_bytes()),
        &SecretKey::from(*own.secret_bytes()),
    );
    let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    out.extend_from_slice(&nonce);
    // Encrypting into a Vec cannot fail for XSalsa20-Poly1305 (no length limit we can hit).
    if let Ok(ct) = b.encrypt(&nonce.into(), plaintext) {
        out.extend_from_slice(&ct);
    }
    out
}

/// Open `nonce || box` sent by `peer` to `own`.
pub fn open(own: &PrivateKey, peer: &NodePublic, sealed: &[u8]) -> Result<Vec<u8>, DerpError> {
    if sealed.len() < NONCE_LEN {
        return Err(DerpError::BoxOpen);
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let mut n = [0u8; NONCE_LEN];
    n.copy_from_slice(nonce);
    let b = SalsaBox::new(
        &PublicKey::from(*peer.as_bytes()),
        &SecretKey::from(*own.secret_bytes()),
    );
    b.decrypt(&n.into(), ct).map_err(|_| DerpError::BoxOpen)
}

/// A fresh random nonce from the OS RNG (`None` only if the OS RNG is broken).
pub fn random_nonce() -> Option<[u8; NONCE_LEN]> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n).ok()?;
    Some(n)
}

/// The pre-shared key of a DERP mesh (64 hex digits in text form). Redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshKey(pub [u8; 32]);

impl MeshKey {
    /// Parse the 64-hex-digit text form (surrounding whitespace ignored, as key files have).
    pub fn from_hex(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.len() != 64 {
            return None;
        }
        let mut b = [0u8; 32];
        hex::decode_to_slice(s, &mut b).ok()?;
        Some(Self(b))
    }
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
    /// Constant-time comparison.
    pub fn ct_eq(&self, other: &MeshKey) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(<redacted>)")
    }
}

fn ser_mesh_key<S: Serializer>(k: &Option<MeshKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.serialize_str(&k.to_hex()),
        None => s.serialize_none(),
    }
}

/// Lenient: anything that is not 64 hex digits of a non-zero key means "no mesh
/// key" (tailscale-rs' client sends `"mesh_key":"none"`, under another name, but
/// a bad value must never fail an ordinary client's handshake).
fn de_mesh_key<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MeshKey>, D::Error> {
    let v: Option<serde_json::Value> = Option::deserialize(d)?;
    let Some(serde_json::Value::String(s)) = v else {
        return Ok(None);
    };
    Ok(MeshKey::from_hex(&s).filter(|k| k.0 != [0u8; 32]))
}

/// JSON sent (boxed) by the client in the ClientInfo frame.
///
/// Field names follow Go's tags; a few case variants are accepted as aliases
/// because Go decodes case-insensitively and some clients differ in case.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    #[serde(rename = "version", alias = "Version", default)]
    pub version: u32,
    #[serde(
        rename = "meshKey",
        alias = "MeshKey",
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "ser_mesh_key",
        deserialize_with = "de_mesh_key"
    )]
    pub mesh_key: Option<MeshKey>,
    #[serde(rename = "CanAckPings", alias = "canAckPings", default)]
    pub can_ack_pings: bool,
    #[serde(
        rename = "IsProber",
        alias = "isProber",
        default,
        skip_serializing_if = "is_false"
    )]
    pub is_prober: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Default for ClientInfo {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            mesh_key: None,
            can_ack_pings: true,
            is_prober: false,
        }
    }
}

/// JSON sent (boxed) by the server in the ServerInfo frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    #[serde(rename = "version", alias = "Version", default)]
    pub version: u32,
    /// Client-side send rate limit, bytes per second (0 = none).
    #[serde(
        rename = "TokenBucketBytesPerSecond",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_per_second: u64,
    /// Burst of that limit (0 = none).
    #[serde(
        rename = "TokenBucketBytesBurst",
        default,
        skip_serializing_if = "is_zero"
    )]
    pub token_bucket_bytes_burst: u64,
}

impl Default for ServerInfo {
    fn default() -> Self {
        Self {
            version: PROTOCOL_VERSION,
            token_bucket_bytes_per_second: 0,
            token_bucket_bytes_burst: 0,
        }
    }
}

impl ClientInfo {
    /// Build the ClientInfo frame: the client's key and the boxed JSON.
    pub fn seal(&self, client: &PrivateKey, server: &NodePublic, nonce: [u8; NONCE_LEN]) -> Frame {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Frame::ClientInfo {
            key: client.node_public(),
            sealed: Bytes::from(seal(client, server, nonce, &json)),
        }
    }

    /// Open the box of a ClientInfo frame on the server side and parse the JSON.
    pub fn open(
        server: &PrivateKey,
        client: &NodePublic,
        sealed: &[u8],
    ) -> Result<ClientInfo, DerpError> {
        let plain = open(server, client, sealed)?;
        serde_json::from_slice(&plain).map_err(|e| DerpError::Json {
            what: "ClientInfo",
            detail: e.to_string(),
        })
    }
}

impl ServerInfo {
    /// Build the ServerInfo frame, boxed from the server to the client.
    pub fn seal(&self, server: &PrivateKey, client: &NodePublic, nonce: [u8; NONCE_LEN]) -> Frame {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Frame::ServerInfo {
            sealed: Bytes::from(seal(server, client, nonce, &json)),
        }
    }

    /// Open a ServerInfo box on the client side and parse the JSON.
    pub fn open(
        client: &PrivateKey,
        server: &NodePublic,
        sealed: &[u8],
    ) -> Result<ServerInfo, DerpError> {
        let plain = open(client, server, sealed)?;
        serde_json::from_slice(&plain).map_err(|e| DerpError::Json {
            what: "ServerInfo",
            detail: e.to_string(),
        })
    }
}
