//! STUN parsing on arbitrary bytes: no panics, and accepted requests can be answered.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ironscale_stun::is_stun(data);
    let _ = ironscale_stun::parse_binding_request_strict(data);
    let _ = ironscale_stun::parse_response(data);
    if let Ok(req) = ironscale_stun::parse_binding_request(data) {
        for addr in ["192.0.2.1:3478", "[2001:db8::1]:41641"] {
            let addr: SocketAddr = addr.parse().expect("literal");
            let resp = ironscale_stun::response(req.txid, addr);
            assert_eq!(ironscale_stun::parse_response(&resp), Ok((req.txid, addr)));
        }
    }
});
