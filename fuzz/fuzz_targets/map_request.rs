//! MapRequest / RegisterRequest JSON from the network: parsing never panics,
//! and whatever parses re-serialises and parses again to the same value.
#![no_main]

use ironscale_wire::{HostinfoView, MapRequest, RegisterRequest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<MapRequest>(data) {
        if let Some(h) = &m.hostinfo {
            let _ = HostinfoView::from_value(h);
        }
        let again = serde_json::to_vec(&m).expect("serialises");
        let m2: MapRequest = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(m2.node_key, m.node_key);
        assert_eq!(m2.endpoints, m.endpoints);
    }
    if let Ok(r) = serde_json::from_slice::<RegisterRequest>(data) {
        let _ = r.auth_key();
        let again = serde_json::to_vec(&r).expect("serialises");
        let r2: RegisterRequest = serde_json::from_slice(&again).expect("round trip");
        assert_eq!(r2.node_key, r.node_key);
    }
});
