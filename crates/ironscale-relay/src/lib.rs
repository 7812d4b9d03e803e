//! The DERP relay and STUN server: the IO edge around the sans-IO
//! `ironscale-derp` and `ironscale-stun` crates.
//!
//! * [`DerpServer`]: shared state (connected clients, bounded per-client queues,
//!   PeerGone/PeerPresent, admission via [`ClientVerifier`], counters).
//! * [`router`]: `/derp` (HTTP upgrade), `/derp/probe`, `/derp/latency-check`,
//!   `/generate_204`, to merge into any axum router.
//! * [`serve_tls`] / [`serve_plain`]: accept loops serving a router with
//!   upgrades; [`self_signed`] / [`load_or_create_self_signed`] for certificates.
//! * [`run_stun`]: the STUN responder.
//! * [`client`]: a small DERP client.

pub mod client;
mod conn;
mod error;
mod http;
mod server;
mod stun;
mod tls;

pub use error::RelayError;
pub use http::router;
pub use server::{ClientVerifier, DerpServer, DerpServerConfig, DerpStats};
pub use stun::{run_stun, run_stun_with_stats, StunStats};
pub use tls::{
    cert_sha256_hex, load_or_create_self_signed, load_pem_files, self_signed, serve_http,
    serve_plain, serve_tls, server_config, tls_config_from_pem,
};
