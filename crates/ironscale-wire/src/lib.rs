//! Tailscale's control-protocol JSON (Go `tailcfg`), the only crate that knows it.
//!
//! Rules followed (see `tailscale-protocol.md` §0.1): explicit field names (Go's
//! acronyms), `omitempty` as `skip_serializing_if`, `null` accepted wherever a
//! list/map/object is expected, unknown fields ignored, zero time encoded as
//! `0001-01-01T00:00:00Z`. Fields that the Go client reads as "nil = unchanged"
//! are `Option`s so that "unchanged" and "empty" stay distinct.

pub mod gotime;
mod types;

pub use types::*;

/// Lowest client capability version we serve (1.74).
pub const MIN_CAPVER: u32 = 106;
/// Capability version from which clients read `Node.HomeDERP`.
pub const CAPVER_HOME_DERP: u32 = 111;
