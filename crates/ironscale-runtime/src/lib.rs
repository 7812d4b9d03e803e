//! What a running server does around its [`State`](ironscale_state::State)
//! that is not a listener: today the policy lifecycle ([`policy`]: load at
//! start-up, watch the file, reload on SIGHUP). A library so that `serve`
//! and a doctor (or any other mode that runs a state) share it; the binary
//! keeps only the wiring.

pub mod policy;

pub use policy::{load_initial, spawn_file_watch, PolicyLoadError};
