//! The relay crate's error type.

use ironscale_derp::DerpError;

/// Errors of the relay: TLS configuration, IO, and the DERP client's handshake.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("DERP protocol error: {0}")]
    Derp(#[from] DerpError),
    #[error("DERP handshake failed: {0}")]
    Handshake(String),
    #[error("connection closed by the server")]
    Closed,
}
