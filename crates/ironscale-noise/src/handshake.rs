//! The ts2021 Noise IK handshake (protocol reference §2.3), done with `snow`.
//!
//! The two handshake messages are byte-identical to standard Noise IK messages 1
//! and 2; only the framing around them and the prologue are Tailscale's.

use std::fmt;

use ironscale_keys::{MachinePublic, PrivateKey};

use crate::{
    NoiseError, Transport, INITIATION_LEN, INITIATION_PAYLOAD_LEN, MSG_TYPE_ERROR,
    MSG_TYPE_INITIATION, MSG_TYPE_RESPONSE, PROLOGUE_PREFIX, PROTOCOL_NAME, RESPONSE_LEN,
    RESPONSE_PAYLOAD_LEN,
};

/// Largest error-message text: the length field is a u16.
const MAX_ERROR_TEXT: usize = u16::MAX as usize;

/// The prologue for protocol `version`: `"Tailscale Control Protocol v" + decimal(version)`.
pub fn prologue(version: u16) -> String {
    format!("{PROLOGUE_PREFIX}{version}")
}

/// A parsed initiation message (client → server, 101 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct Initiation {
    /// The client's protocol version (its capability version); goes into the prologue.
    pub version: u16,
    /// The 96-byte Noise IK message 1 (`e`, encrypted `s`, empty-payload tag).
    pub payload: [u8; INITIATION_PAYLOAD_LEN],
}

impl fmt::Debug for Initiation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nothing secret in here, but 96 bytes of noise help no one in a log.
        f.debug_struct("Initiation")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Initiation {
    /// The 101-byte wire form.
    pub fn to_bytes(&self) -> [u8; INITIATION_LEN] {
        let mut b = [0u8; INITIATION_LEN];
        b[..2].copy_from_slice(&self.version.to_be_bytes());
        b[2] = MSG_TYPE_INITIATION;
        b[3..5].copy_from_slice(&(INITIATION_PAYLOAD_LEN as u16).to_be_bytes());
        b[5..].copy_from_slice(&self.payload);
        b
    }
}

/// Parse the 101-byte initiation message
/// `[u16 BE version][0x01][u16 BE 96][96 bytes]`.
///
/// Errors are checked in wire order: header present, type byte, announced length,
/// total size. [`NoiseError::peer_hint`] gives the text to answer them with.
pub fn parse_initiation(buf: &[u8]) -> Result<Initiation, NoiseError> {
    const WHAT: &str = "handshake initiation";
    if buf.len() < 5 {
        return Err(NoiseError::Truncated {
            what: WHAT,
            need: 5,
            got: buf.len(),
        });
    }
    let version = u16::from_be_bytes([buf[0], buf[1]]);
    if buf[2] != MSG_TYPE_INITIATION {
        return Err(NoiseError::UnexpectedType {
            what: WHAT,
            expected: MSG_TYPE_INITIATION,
            got: buf[2],
        });
    }
    let announced = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if announced != INITIATION_PAYLOAD_LEN {
        return Err(NoiseError::BadPayloadLength {
            what: WHAT,
            expected: INITIATION_PAYLOAD_LEN,
            got: announced,
        });
    }
    let mut payload = [0u8; INITIATION_PAYLOAD_LEN];
    match buf.get(5..) {
        Some(rest) if rest.len() == INITIATION_PAYLOAD_LEN => payload.copy_from_slice(rest),
        _ => {
            return Err(NoiseError::WrongSize {
                what: WHAT,
                expected: INITIATION_LEN,
                got: buf.len(),
            })
        }
    }
    Ok(Initiation { version, payload })
}

/// The error message `0x03 || u16 BE length || text` a server sends instead of a
/// response. The text is cut (at a character boundary) to fit the u16 length.
pub fn error_message(text: &str) -> Vec<u8> {
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let text = &text.as_bytes()[..end];
    let mut out = Vec::with_capacity(3 + text.len());
    out.push(MSG_TYPE_ERROR);
    // `end` <= u16::MAX by construction.
    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
    out.extend_from_slice(text);
    out
}

fn params() -> Result<snow::params::NoiseParams, NoiseError> {
    Ok(PROTOCOL_NAME.parse()?)
}

/// A clamped Curve25519 scalar is a multiple of the cofactor, so a DH with any
/// clamped private key yields all zeros exactly when `public` is a low-order point.
fn is_low_order(any_private: &PrivateKey, public: &[u8; 32]) -> bool {
    any_private.shared_secret(public) == [0u8; 32]
}

fn key32(b: &[u8]) -> Result<[u8; 32], NoiseError> {
    b.try_into()
        .map_err(|_| NoiseError::Handshake(snow::Error::Input))
}

/// Server side: answer a parsed initiation with the server's static key.
///
/// Returns the 51-byte response to write to the client, the client's machine key
/// (authenticated by the handshake) and the transport (sending with k2, the
/// server→client key; receiving with k1).
pub fn respond(
    server_key: &PrivateKey,
    init: &Initiation,
) -> Result<(Vec<u8>, MachinePublic, Transport), NoiseError> {
    let client_ephemeral = key32(&init.payload[..32])?;
    if is_low_order(server_key, &client_ephemeral) {
        return Err(NoiseError::LowOrderKey);
    }
    let prologue = prologue(init.version);
    let mut hs = snow::Builder::new(params()?)
        .local_private_key(server_key.secret_bytes())?
        .prologue(prologue.as_bytes())?
        .build_responder()?;
    // The 96-byte message leaves room for exactly a 0-byte payload.
    let mut payload = [0u8; INITIATION_PAYLOAD_LEN];
    hs.read_message(&init.payload, &mut payload)?;
    let client = key32(
        hs.get_remote_static()
            .ok_or(NoiseError::Handshake(snow::Error::Input))?,
    )?;
    if is_low_order(server_key, &client) {
        return Err(NoiseError::LowOrderKey);
    }

    let mut response = vec![0u8; RESPONSE_LEN];
    response[0] = MSG_TYPE_RESPONSE;
    response[1..3].copy_from_slice(&(RESPONSE_PAYLOAD_LEN as u16).to_be_bytes());
    let n = hs.write_message(&[], &mut response[3..])?;
    if n != RESPONSE_PAYLOAD_LEN {
        return Err(NoiseError::WrongSize {
            what: "handshake response",
            expected: RESPONSE_PAYLOAD_LEN,
            got: n,
        });
    }
    let (k1, k2) = hs.dangerously_get_raw_split();
    Ok((
        response,
        MachinePublic::from_bytes(client),
        Transport::new(k2, k1),
    ))
}

/// Client side of the handshake, for tests and in-process clients.
pub struct Initiator {
    hs: snow::HandshakeState,
    /// Kept only to check the server's ephemeral key for low order.
    client_key: PrivateKey,
}

impl fmt::Debug for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Initiator").finish_non_exhaustive()
    }
}

impl Initiator {
    /// Start a handshake to the server whose static key is `server_pub`, announcing
    /// protocol `version`. Returns the initiator and the 101-byte initiation message.
    pub fn new(
        client_key: &PrivateKey,
        server_pub: &MachinePublic,
        version: u16,
    ) -> Result<(Self, Vec<u8>), NoiseError> {
        let prologue = prologue(version);
        let mut hs = snow::Builder::new(params()?)
            .local_private_key(client_key.secret_bytes())?
            .remote_public_key(server_pub.as_bytes())?
            .prologue(prologue.as_bytes())?
            .build_initiator()?;
        let mut msg = vec![0u8; INITIATION_LEN];
        msg[..2].copy_from_slice(&version.to_be_bytes());
        msg[2] = MSG_TYPE_INITIATION;
        msg[3..5].copy_from_slice(&(INITIATION_PAYLOAD_LEN as u16).to_be_bytes());
        let n = hs.write_message(&[], &mut msg[5..])?;
        if n != INITIATION_PAYLOAD_LEN {
            return Err(NoiseError::WrongSize {
                what: "handshake initiation",
                expected: INITIATION_PAYLOAD_LEN,
                got: n,
            });
        }
        Ok((
            Initiator {
                hs,
                client_key: client_key.clone(),
            },
            msg,
        ))
    }

    /// Finish with the server's reply: either the 51-byte response or an error
    /// message (type 0x03, reported as [`NoiseError::ServerError`]).
    /// Returns the transport (sending with k1, receiving with k2).
    pub fn finish(mut self, resp: &[u8]) -> Result<Transport, NoiseError> {
        const WHAT: &str = "handshake response";
        if resp.len() < 3 {
            return Err(NoiseError::Truncated {
                what: WHAT,
                need: 3,
                got: resp.len(),
            });
        }
        let announced = usize::from(u16::from_be_bytes([resp[1], resp[2]]));
        if resp[0] == MSG_TYPE_ERROR {
            let text = &resp[3..];
            let text = &text[..announced.min(text.len())];
            return Err(NoiseError::ServerError(
                String::from_utf8_lossy(text).into_owned(),
            ));
        }
        if resp[0] != MSG_TYPE_RESPONSE {
            return Err(NoiseError::UnexpectedType {
                what: WHAT,
                expected: MSG_TYPE_RESPONSE,
                got: resp[0],
            });
        }
        if announced != RESPONSE_PAYLOAD_LEN {
            return Err(NoiseError::BadPayloadLength {
                what: WHAT,
                expected: RESPONSE_PAYLOAD_LEN,
                got: announced,
            });
        }
        if resp.len() != RESPONSE_LEN {
            return Err(NoiseError::WrongSize {
                what: WHAT,
                expected: RESPONSE_LEN,
                got: resp.len(),
            });
        }
        let server_ephemeral = key32(&resp[3..35])?;
        if is_low_order(&self.client_key, &server_ephemeral) {
            return Err(NoiseError::LowOrderKey);
        }
        let mut payload = [0u8; RESPONSE_PAYLOAD_LEN];
        self.hs.read_message(&resp[3..], &mut payload)?;
        let (k1, k2) = self.hs.dangerously_get_raw_split();
        Ok(Transport::new(k1, k2))
    }
}
