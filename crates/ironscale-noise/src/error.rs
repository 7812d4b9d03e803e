//! The crate's one error type.

/// Everything that can go wrong in the ts2021 handshake or record layer.
///
/// Every variant returned by a [`crate::Transport`], [`crate::RecordEncoder`] or
/// [`crate::RecordDecoder`] is fatal: that object refuses all later calls with
/// [`NoiseError::Dead`].
#[derive(Debug, thiserror::Error)]
pub enum NoiseError {
    /// A handshake message is shorter than its fixed header.
    #[error("{what} is truncated: {got} bytes, need at least {need}")]
    Truncated {
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// A handshake message carries the wrong type byte.
    #[error("{what} has message type {got:#04x}, expected {expected:#04x}")]
    UnexpectedType {
        what: &'static str,
        expected: u8,
        got: u8,
    },
    /// A handshake message header announces the wrong payload length.
    #[error("{what} announces a {got}-byte payload, expected {expected}")]
    BadPayloadLength {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// A handshake message is not exactly its fixed size.
    #[error("{what} is {got} bytes, expected exactly {expected}")]
    WrongSize {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    /// The server answered the initiation with an error message (type 0x03).
    #[error("server error: {0:?}")]
    ServerError(String),
    /// The Noise handshake itself failed (bad key, decryption of the handshake
    /// payload failed, ...).
    #[error("noise handshake failed: {0}")]
    Handshake(#[from] snow::Error),
    /// The peer sent a low-order Curve25519 point, which would make a
    /// Diffie-Hellman result all zeros.
    #[error("peer sent a low-order Curve25519 public key")]
    LowOrderKey,
    /// A transport record has a type byte other than 0x04.
    #[error("transport record has type {0:#04x}, expected 0x04")]
    BadRecordType(u8),
    /// A transport record header announces more than 4093 bytes of ciphertext.
    #[error("transport record announces {0} bytes of ciphertext, at most 4093 allowed")]
    RecordTooLong(usize),
    /// A transport record is too short to hold the 16-byte authentication tag.
    #[error("transport record of {0} bytes is shorter than the 16-byte tag")]
    RecordTooShort(usize),
    /// [`crate::RecordDecoder::open_record`] got a buffer whose size does not match
    /// the length its header announces.
    #[error("transport record announces {announced} bytes of ciphertext but {got} follow")]
    RecordSize { announced: usize, got: usize },
    /// A single record was asked to carry more than 4077 bytes of plaintext.
    #[error("plaintext chunk of {0} bytes exceeds the 4077-byte record limit")]
    PlaintextTooLong(usize),
    /// A transport record failed authentication.
    #[error("transport record failed to decrypt")]
    Decrypt,
    /// Encryption of a transport record failed.
    #[error("transport record failed to encrypt")]
    Encrypt,
    /// The 64-bit record counter reached its last (invalid) value.
    #[error("transport nonce counter exhausted")]
    NonceExhausted,
    /// An earlier error killed this transport.
    #[error("transport is dead after an earlier error")]
    Dead,
    /// I/O error from an adapter that moves the bytes (not used by the sans-IO core).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl NoiseError {
    /// The text a server should send back in an error message (type 0x03) for a
    /// rejected initiation, if any. Only framing errors get one: the message is
    /// unauthenticated and is only a hint to the client's logs.
    pub fn peer_hint(&self) -> Option<&'static str> {
        match self {
            NoiseError::Truncated { .. } | NoiseError::WrongSize { .. } => {
                Some("wrong handshake initiation size")
            }
            NoiseError::UnexpectedType { .. } => Some("unexpected handshake message type"),
            NoiseError::BadPayloadLength { .. } => Some("wrong handshake initiation length"),
            _ => None,
        }
    }
}
