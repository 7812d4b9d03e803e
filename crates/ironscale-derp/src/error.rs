//! The one error type of this crate.

use crate::frame::FrameType;

/// Everything that can go wrong while decoding or handling DERP frames.
///
/// Every variant is fatal for the connection it came from: DERP has no way to
/// resynchronise a byte stream, so the caller closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DerpError {
    /// A frame header announced more bytes than its type allows.
    #[error("{frame_type:?} frame of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge {
        frame_type: FrameType,
        len: u32,
        max: u32,
    },
    /// A frame's payload has the wrong size or layout for its type.
    #[error("malformed {frame_type:?} frame: {reason}")]
    Malformed {
        frame_type: FrameType,
        reason: &'static str,
    },
    /// The ServerKey frame does not start with the DERP magic.
    #[error("ServerKey frame lacks the DERP magic")]
    BadMagic,
    /// A NaCl box could not be opened (wrong keys or tampered data).
    #[error("cannot open NaCl box: wrong key or corrupted data")]
    BoxOpen,
    /// The JSON inside a ClientInfo or ServerInfo box is invalid.
    #[error("invalid {what} JSON: {detail}")]
    Json { what: &'static str, detail: String },
    /// The peer sent a frame that is not allowed in the current state.
    #[error("unexpected {frame_type:?} frame: {reason}")]
    Unexpected {
        frame_type: FrameType,
        reason: &'static str,
    },
    /// The client did not send ClientInfo in time.
    #[error("no ClientInfo frame within the handshake timeout")]
    HandshakeTimeout,
    /// The connection was closed by the state machine (e.g. after a rejected client).
    #[error("connection closed: {0}")]
    Closed(&'static str),
}
