//! What a running server does around its [`State`](ironscale_state::State)
//! that is not a listener: the policy lifecycle ([`policy`]: load at
//! start-up, watch the file, reload on SIGHUP) and the DNS settings
//! ([`dns`]: the `extra_records_path` file watched, the `dns` section
//! re-read on SIGHUP), with one SIGHUP handler for both ([`hangup`]). A library so that `serve`
//! and a doctor (or any other mode that runs a state) share it; the binary
//! keeps only the wiring.

pub mod dns;
pub mod hangup;
pub mod policy;
mod watch;

pub use dns::{dns_settings, spawn_dns_watch};
pub use hangup::Hangups;
pub use policy::{load_initial, spawn_file_watch, PolicyLoadError};
