//! HTTP/TLS serving for every ironscale listener (control, embedded DERP,
//! metrics, the admin unix socket).
//!
//! * [`serve_plain`] / [`serve_tls`] / [`serve_unix`]: accept loops serving an
//!   axum router over HTTP/1.1 (with upgrades, for `/ts2021` and `/derp`) and
//!   h2, one task per connection; the `_with` forms take [`Timeouts`].
//! * Every connection has a header-read timeout, an idle timeout (no request
//!   in flight and no byte moved) and a graceful shutdown; upgraded
//!   connections leave the HTTP server and keep only their protocol's
//!   keep-alives.
//! * [`page`]: the skeleton and escaping of the HTML pages people open.
//! * TLS material: [`load_pem_files`], [`self_signed`],
//!   [`load_or_create_self_signed`], [`cert_sha256_hex`].

pub mod page;
mod serve;
mod tls;

pub use serve::{
    bind_unix, serve_connection, serve_plain, serve_plain_with, serve_tls, serve_tls_with,
    serve_unix, serve_unix_listener, Timeouts,
};
pub use tls::{
    cert_sha256_hex, load_or_create_self_signed, load_pem_files, self_signed, server_config,
    tls_config_from_pem,
};

/// Errors of TLS material.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("TLS error: {0}")]
    Tls(#[from] rustls::Error),
    #[error("certificate generation failed: {0}")]
    CertGen(#[from] rcgen::Error),
    #[error("PEM file {path}: {reason}")]
    Pem { path: String, reason: String },
}
