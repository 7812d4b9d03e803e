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
