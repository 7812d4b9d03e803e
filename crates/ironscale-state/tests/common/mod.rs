//! What several test files of this crate set up the same way.
#![allow(clippy::unwrap_used, dead_code)] // test code; not every file uses every item

use std::sync::Arc;

use chrono::TimeZone;
use ironscale_state::{ManualClock, State};
use ironscale_store::Store;
use ironscale_types::Timestamp;

/// The tests' start time.
pub fn t0() -> Timestamp {
    chrono::Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// A state on a fresh SQLite file (`s.sqlite` in the returned directory) with
/// a manual clock at [`t0`].
pub async fn manual_state() -> (tempfile::TempDir, State, ManualClock) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let clock = ManualClock::new(t0());
    let state = State::load_with_clock(
        store,
        Default::default(),
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    (dir, state, clock)
}

/// A node for store-level setup: keys from `i` (first byte), `100.64.0.<i>`, named `name`,
/// owned by `user`, registered with a pre-auth key at [`t0`], approved, never connected.
/// Tests change the fields they are about.
pub fn node(i: u8, name: &str, user: Option<ironscale_types::UserId>) -> ironscale_types::Node {
    let mut b = [0u8; 32];
    b[0] = i;
    ironscale_types::Node {
        id: ironscale_types::NodeId(0),
        machine_key: ironscale_keys::MachinePublic::from_bytes(b),
        node_key: ironscale_keys::NodePublic::from_bytes(b),
        disco_key: Default::default(),
        ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, i)),
        ipv6: None,
        hostname: name.into(),
        given_name: name.into(),
        user_id: user,
        tags: Vec::new(),
        hostinfo_json: None,
        home_derp: 0,
        announced_routes: Vec::new(),
        approved_routes: Vec::new(),
        endpoints: Vec::new(),
        expiry: None,
        created_at: t0(),
        last_seen: None,
        register_method: ironscale_types::RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral: false,
        capver: 106,
        approved: true,
    }
}
