//! DERP frame decoding and the server connection state machine on arbitrary bytes.
//!
//! Checks: no panics; every decoded frame re-encodes to bytes that decode to the
//! same frame; the server state machine survives anything after a valid handshake.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ironscale_derp::{
    ClientInfo, Direction, FrameDecoder, PrivateKey, ServerConn, ServerConnConfig, ServerEvent,
    ServerInfo,
};
use libfuzzer_sys::fuzz_target;

fn decode_chunked(dir: Direction, data: &[u8], chunk: usize) {
    let mut d = FrameDecoder::new(dir);
    for piece in data.chunks(chunk.max(1)) {
        d.feed(piece);
        loop {
            match d.next_frame() {
                Ok(Some(f)) => {
                    let bytes = f.to_bytes();
                    let mut again = FrameDecoder::new(Direction::Any);
                    again.feed(&bytes);
                    let back = again
                        .next_frame()
                        .expect("re-encoded frame decodes")
                        .expect("complete frame");
                    assert_eq!(back, f, "round trip");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

fn fresh() -> &'static (ServerConn, Instant) {
    static CONN: OnceLock<(ServerConn, Instant)> = OnceLock::new();
    CONN.get_or_init(|| {
        let now = Instant::now();
        (
            ServerConn::new(
                ServerConnConfig::default(),
                PrivateKey::from_bytes([1; 32]),
                now,
            ),
            now,
        )
    })
}

fn established() -> &'static (ServerConn, Instant) {
    static CONN: OnceLock<(ServerConn, Instant)> = OnceLock::new();
    CONN.get_or_init(|| {
        let server = PrivateKey::from_bytes([1; 32]);
        let client = PrivateKey::from_bytes([2; 32]);
        let now = Instant::now();
        let mut conn = ServerConn::new(ServerConnConfig::default(), server.clone(), now);
        let hello = ClientInfo::default()
            .seal(&client, &server.node_public(), [0; 24])
            .to_bytes();
        conn.handle_input(&hello, now).expect("valid handshake");
        while let Some(ev) = conn.poll_event() {
            if let ServerEvent::ClientInfo { .. } = ev {
                conn.accept(&ServerInfo::default(), [0; 24], now)
                    .expect("accept");
            }
        }
        assert!(conn.is_established());
        (conn, now)
    })
}

fuzz_target!(|data: &[u8]| {
    let chunk = data.first().map_or(1, |b| usize::from(*b) + 1);
    for dir in [
        Direction::ClientToServer,
        Direction::ServerToClient,
        Direction::Any,
    ] {
        decode_chunked(dir, data, chunk);
    }

    // Server side, before the handshake: must fail or wait, never panic.
    let (mut conn, now) = fresh().clone();
    if conn.handle_input(data, now).is_ok() {
        while conn.poll_event().is_some() {}
    }

    // Server side: a connection after a valid handshake (prepared once: the
    // key agreement is slow), then the fuzz input as the client's stream.
    let (mut conn, now) = established().clone();
    let mut t = now;
    for piece in data.chunks(chunk) {
        t += Duration::from_secs(7);
        if conn.handle_input(piece, t).is_err() || conn.handle_timeout(t).is_err() {
            break;
        }
        while conn.poll_event().is_some() {}
        let n = conn.transmit_len() / 2;
        conn.advance_transmit(n);
    }
});
