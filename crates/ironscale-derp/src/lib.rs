//! Sans-IO DERP (Designated Encrypted Relay for Packets), protocol version 2.
//!
//! * [`frame`]: the typed [`Frame`] for every frame type, its encoding and the
//!   per-type limits.
//! * [`decoder`]: an incremental [`FrameDecoder`] (feed bytes, take frames).
//! * [`info`]: the NaCl-boxed ClientInfo/ServerInfo handshake messages.
//! * [`server`]: [`ServerConn`], the server side of one connection as a state
//!   machine driven by bytes and `now`.
//! * [`queue`]: [`PacketQueue`], the bounded per-client outbound queue.
//!
//! No networking, no clock, no async runtime: the relay crate drives these.

pub mod decoder;
pub mod error;
pub mod frame;
pub mod info;
pub mod queue;
pub mod server;

pub use decoder::{Direction, FrameDecoder};
pub use error::DerpError;
pub use frame::{is_disco, Frame, FrameType, PeerGoneReason};
pub use info::{random_nonce, ClientInfo, MeshKey, ServerInfo};
/// The key types used throughout this crate's API.
pub use ironscale_keys::{NodePublic, PrivateKey};
pub use queue::{PacketQueue, Pushed};
pub use server::{ServerConn, ServerConnConfig, ServerEvent};
