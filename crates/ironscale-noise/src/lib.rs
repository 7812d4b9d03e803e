//! Sans-IO implementation of Tailscale's `ts2021` control transport
//! (protocol reference §2.2–2.6).
//!
//! * Handshake: `Noise_IK_25519_ChaChaPoly_BLAKE2s`, prologue
//!   `"Tailscale Control Protocol v" + decimal(client version)`, done with `snow`
//!   ([`parse_initiation`], [`respond`], [`Initiator`]).
//! * Records: `0x04 || u16 BE len || ciphertext`, at most 4096 bytes each, with a
//!   **big-endian** nonce counter — our own record layer ([`Transport`],
//!   [`RecordEncoder`], [`RecordDecoder`]).
//! * Early payload: [`early_payload`].
//!
//! No IO, no clock: callers move the bytes. Key material never appears in `Debug`.

mod error;
mod handshake;
mod record;

pub use error::NoiseError;
pub use handshake::{error_message, parse_initiation, prologue, respond, Initiation, Initiator};
pub use record::{record_nonce, RecordDecoder, RecordEncoder, Transport};

use ironscale_keys::ChallengePublic;

/// The Noise protocol name.
pub const PROTOCOL_NAME: &str = "Noise_IK_25519_ChaChaPoly_BLAKE2s";
/// The prologue is this followed by the decimal protocol version.
pub const PROLOGUE_PREFIX: &str = "Tailscale Control Protocol v";

/// Message type of the client's handshake initiation.
pub const MSG_TYPE_INITIATION: u8 = 0x01;
/// Message type of the server's handshake response.
pub const MSG_TYPE_RESPONSE: u8 = 0x02;
/// Message type of a server error message sent instead of a response.
pub const MSG_TYPE_ERROR: u8 = 0x03;
/// Message type of a transport record.
pub const MSG_TYPE_RECORD: u8 = 0x04;

/// Noise IK message 1 size.
pub const INITIATION_PAYLOAD_LEN: usize = 96;
/// Whole initiation message: version (2) + type (1) + length (2) + payload.
pub const INITIATION_LEN: usize = 5 + INITIATION_PAYLOAD_LEN;
/// Noise IK message 2 size.
pub const RESPONSE_PAYLOAD_LEN: usize = 48;
/// Whole response message: type (1) + length (2) + payload.
pub const RESPONSE_LEN: usize = 3 + RESPONSE_PAYLOAD_LEN;

/// Record header: type (1) + length (2).
pub const HEADER_LEN: usize = 3;
/// ChaCha20-Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Largest record on the wire, header included.
pub const MAX_RECORD_LEN: usize = 4096;
/// Largest ciphertext a record header may announce.
pub const MAX_CIPHERTEXT_LEN: usize = MAX_RECORD_LEN - HEADER_LEN;
/// Largest plaintext one record carries.
pub const MAX_PLAINTEXT_LEN: usize = MAX_CIPHERTEXT_LEN - TAG_LEN;

/// Magic that starts the early payload.
pub const EARLY_PAYLOAD_MAGIC: [u8; 5] = *b"\xff\xff\xffTS";
/// Magic plus the u32 BE JSON length.
pub const EARLY_PAYLOAD_HEADER_LEN: usize = EARLY_PAYLOAD_MAGIC.len() + 4;
/// Clients reject early payloads whose JSON is longer than this.
pub const MAX_EARLY_PAYLOAD_JSON_LEN: usize = 10 << 20;

/// The early payload the server sends (inside Noise, before any HTTP/2 byte):
/// `"\xff\xff\xffTS" || u32 BE len || {"nodeKeyChallenge":"chalpub:<hex>"}`.
pub fn early_payload(challenge: &ChallengePublic) -> Vec<u8> {
    // The key's text form is prefix + hex: nothing in it needs JSON escaping.
    let json = format!("{{\"nodeKeyChallenge\":\"{challenge}\"}}");
    let mut out = Vec::with_capacity(EARLY_PAYLOAD_HEADER_LEN + json.len());
    out.extend_from_slice(&EARLY_PAYLOAD_MAGIC);
    // A ~90-byte JSON object always fits in a u32.
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json.as_bytes());
    out
}

/// Client side: given the first 9 decrypted bytes, return the length of the early
/// payload's JSON if they are an early-payload header, or `None` if they are the
/// start of something else (the HTTP/2 server preface).
pub fn early_payload_json_len(first: &[u8; EARLY_PAYLOAD_HEADER_LEN]) -> Option<u32> {
    if first[..EARLY_PAYLOAD_MAGIC.len()] != EARLY_PAYLOAD_MAGIC {
        return None;
    }
    let n = EARLY_PAYLOAD_MAGIC.len();
    Some(u32::from_be_bytes([
        first[n],
        first[n + 1],
        first[n + 2],
        first[n + 3],
    ]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod spec_ik;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
