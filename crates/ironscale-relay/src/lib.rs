//! The DERP relay and STUN server: the IO edge around the sans-IO
//! `ironscale-derp` and `ironscale-stun` crates.
//!
//! * [`DerpServer`]: shared state (connected clients, bounded per-client queues,
//!   PeerGone/PeerPresent, admission via [`ClientVerifier`], counters).
//! * [`router`]: `/derp` (HTTP upgrade), `/derp/probe`, `/derp/latency-check`,
//!   `/generate_204`, to merge into any axum router.
//!
//! Serving the router (accept loops, TLS, timeouts) is `ironscale-http`'s.
//! * [`run_stun`]: the STUN responder.
//! * [`client`]: a small DERP client.
//! * [`run_mesh_peer`]: meshing with another relay of the region (WatchConns,
//!   PeerPresent/PeerGone, ForwardPacket).

pub mod client;
mod conn;
mod error;
mod http;
mod mesh;
mod server;
mod stun;

pub use error::RelayError;
pub use http::router;
pub use mesh::{run_mesh_peer, MeshPeer};
pub use server::{ClientVerifier, DerpServer, DerpServerConfig, DerpStats};
pub use stun::{run_stun, run_stun_with_stats, StunStats};
