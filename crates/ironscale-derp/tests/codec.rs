//! Frame codec tests: round trips, limits, truncation, unknown frames, boxes.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use bytes::{Bytes, BytesMut};
use ironscale_derp::frame::{self, peer_present_flags, MAX_PACKET_SIZE};
use ironscale_derp::{
    ClientInfo, DerpError, Direction, Frame, FrameDecoder, FrameType, MeshKey, PeerGoneReason,
    ServerInfo,
};
use ironscale_keys::{NodePublic, PrivateKey};
use proptest::prelude::*;

fn key(b: u8) -> NodePublic {
    NodePublic([b; 32])
}

fn one_of_each() -> Vec<Frame> {
    let c = PrivateKey::from_bytes([1; 32]);
    let s = PrivateKey::from_bytes([2; 32]);
    vec![
        Frame::ServerKey { key: key(1) },
        ClientInfo::default().seal(&c, &s.node_public(), [5; 24]),
        ServerInfo::default().seal(&s, &c.node_public(), [6; 24]),
        Frame::SendPacket {
            dst: key(2),
            packet: Bytes::from_static(b"hello"),
        },
        Frame::RecvPacket {
            src: key(3),
            packet: Bytes::new(),
        },
        Frame::KeepAlive,
        Frame::NotePreferred { preferred: true },
        Frame::NotePreferred { preferred: false },
        Frame::PeerGone {
            peer: key(4),
            reason: PeerGoneReason::Disconnected,
        },
        Frame::PeerGone {
            peer: key(4),
            reason: PeerGoneReason::NotHere,
        },
        Frame::PeerGone {
            peer: key(4),
            reason: PeerGoneReason::Other(0x42),
        },
        Frame::PeerPresent {
            peer: key(5),
            endpoint: None,
            flags: 0,
        },
        Frame::PeerPresent {
            peer: key(5),
            endpoint: Some("1.2.3.4:41641".parse().unwrap()),
            flags: peer_present_flags::IS_REGULAR,
        },
        Frame::PeerPresent {
            peer: key(5),
            endpoint: Some("[2001:db8::7]:443".parse().unwrap()),
            flags: peer_present_flags::IS_MESH_PEER | peer_present_flags::NOT_IDEAL,
        },
        Frame::PeerPresent {
            peer: key(5),
            endpoint: None,
            flags: peer_present_flags::IS_PROBER,
        },
        Frame::ForwardPacket {
            src: key(6),
            dst: key(7),
            packet: Bytes::from(vec![9; 1000]),
        },
        Frame::WatchConns,
        Frame::ClosePeer { peer: key(8) },
        Frame::Ping { data: *b"12345678" },
        Frame::Pong { data: *b"87654321" },
        Frame::Health {
            problem: "disk full ✓".into(),
        },
        Frame::Health {
            problem: String::new(),
        },
        Frame::Restarting {
            reconnect_in_ms: 1500,
            try_for_ms: 60_000,
        },
    ]
}

fn decode_all(dir: Direction, bytes: &[u8]) -> Result<Vec<Frame>, DerpError> {
    let mut d = FrameDecoder::new(dir);
    d.feed(bytes);
    let mut out = vec![];
    while let Some(f) = d.next_frame()? {
        out.push(f);
    }
    assert!(d.is_idle(), "decoder left {} bytes", d.buffered());
    Ok(out)
}

#[test]
fn every_frame_type_round_trips() {
    let frames = one_of_each();
    let mut types: Vec<u8> = frames.iter().map(|f| f.frame_type().0).collect();
    types.dedup();
    assert_eq!(
        types,
        vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 0x0a, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15]
    );
    let mut wire = BytesMut::new();
    for f in &frames {
        f.check_limits().unwrap();
        let before = wire.len();
        f.encode(&mut wire);
        assert_eq!(
            wire.len() - before,
            5 + f.payload_len(),
            "{:?}",
            f.frame_type()
        );
        assert_eq!(wire[before], f.frame_type().0);
    }
    assert_eq!(decode_all(Direction::Any, &wire).unwrap(), frames);
}

#[test]
fn wire_layout_matches_go() {
    // ServerKey: type 1, len 40, magic "DERP🔑", key.
    let b = Frame::ServerKey { key: key(0xab) }.to_bytes();
    assert_eq!(&b[..5], &[1, 0, 0, 0, 40]);
    assert_eq!(&b[5..13], &[0x44, 0x45, 0x52, 0x50, 0xF0, 0x9F, 0x94, 0x91]);
    assert_eq!(&b[13..], &[0xab; 32]);
    // PeerPresent with IPv4: v4-mapped IPv6, BE port, flags.
    let b = Frame::PeerPresent {
        peer: key(1),
        endpoint: Some("1.2.3.4:258".parse().unwrap()),
        flags: 1,
    }
    .to_bytes();
    assert_eq!(&b[..5], &[9, 0, 0, 0, 51]);
    assert_eq!(
        &b[37..],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 1, 2, 3, 4, 1, 2, 1]
    );
    // Restarting: two BE u32.
    let b = Frame::Restarting {
        reconnect_in_ms: 1,
        try_for_ms: 0x0102_0304,
    }
    .to_bytes();
    assert_eq!(&b[..], &[0x15, 0, 0, 0, 8, 0, 0, 0, 1, 1, 2, 3, 4]);
}

#[test]
fn go_compat_short_and_long_forms() {
    // PeerGone without a reason byte means Disconnected.
    let mut w = vec![8, 0, 0, 0, 32];
    w.extend_from_slice(&[7; 32]);
    assert_eq!(
        decode_all(Direction::ServerToClient, &w).unwrap(),
        vec![Frame::PeerGone {
            peer: key(7),
            reason: PeerGoneReason::Disconnected
        }]
    );
    // ServerKey with future bytes after the key.
    let mut w = vec![1, 0, 0, 0, 44];
    w.extend_from_slice(&frame::MAGIC);
    w.extend_from_slice(&[3; 32]);
    w.extend_from_slice(b"more");
    assert_eq!(
        decode_all(Direction::ServerToClient, &w).unwrap(),
        vec![Frame::ServerKey { key: key(3) }]
    );
    // A 20-byte ping: the first 8 bytes are the data.
    let mut w = vec![0x12, 0, 0, 0, 20];
    w.extend_from_slice(&[1; 20]);
    assert_eq!(
        decode_all(Direction::ClientToServer, &w).unwrap(),
        vec![Frame::Ping { data: [1; 8] }]
    );
    // Old-style PeerPresent: just the key.
    let mut w = vec![9, 0, 0, 0, 32];
    w.extend_from_slice(&[2; 32]);
    assert_eq!(
        decode_all(Direction::ServerToClient, &w).unwrap(),
        vec![Frame::PeerPresent {
            peer: key(2),
            endpoint: None,
            flags: 0
        }]
    );
}

#[test]
fn byte_by_byte_feeding_gives_the_same_frames() {
    let frames = one_of_each();
    let mut wire = BytesMut::new();
    frames.iter().for_each(|f| f.encode(&mut wire));
    let mut d = FrameDecoder::new(Direction::Any);
    let mut got = vec![];
    for b in wire.iter() {
        d.feed(&[*b]);
        while let Some(f) = d.next_frame().unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
}

#[test]
fn truncated_input_waits_without_error() {
    let f = Frame::SendPacket {
        dst: key(1),
        packet: Bytes::from(vec![1; 100]),
    }
    .to_bytes();
    for cut in 0..f.len() {
        let mut d = FrameDecoder::new(Direction::ClientToServer);
        d.feed(&f[..cut]);
        assert_eq!(d.next_frame(), Ok(None), "cut at {cut}");
        d.feed(&f[cut..]);
        assert!(
            matches!(d.next_frame(), Ok(Some(Frame::SendPacket { .. }))),
            "cut at {cut}"
        );
    }
}

#[test]
fn oversized_frames_are_rejected_from_the_header_alone() {
    // A SendPacket announcing 32 + 64 KiB + 1 bytes: error without any payload.
    let len = (32 + MAX_PACKET_SIZE + 1) as u32;
    let mut d = FrameDecoder::new(Direction::ClientToServer);
    d.feed(&[4]);
    d.feed(&len.to_be_bytes());
    assert!(matches!(
        d.next_frame(),
        Err(DerpError::FrameTooLarge {
            frame_type: FrameType::SEND_PACKET,
            ..
        })
    ));
    // Errors are sticky.
    d.feed(&Frame::KeepAlive.to_bytes());
    assert!(d.next_frame().is_err());
    // Exactly the maximum is fine.
    let max = Frame::SendPacket {
        dst: key(1),
        packet: Bytes::from(vec![0; MAX_PACKET_SIZE]),
    };
    assert_eq!(
        decode_all(Direction::ClientToServer, &max.to_bytes()).unwrap(),
        vec![max.clone()]
    );
    // An unknown type with a length over 1 MiB is fatal too.
    let mut d = FrameDecoder::new(Direction::ClientToServer);
    d.feed(&[0x7f, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(
        d.next_frame(),
        Err(DerpError::FrameTooLarge { .. })
    ));
    // ClientInfo over 256 KiB.
    let mut d = FrameDecoder::new(Direction::ClientToServer);
    d.feed(&[2, 0, 4, 0, 1]);
    assert!(matches!(
        d.next_frame(),
        Err(DerpError::FrameTooLarge { .. })
    ));
}

#[test]
fn malformed_payloads_are_errors() {
    let cases: Vec<(Direction, Vec<u8>)> = vec![
        (Direction::ClientToServer, vec![4, 0, 0, 0, 31]), // SendPacket shorter than a key
        (Direction::ClientToServer, vec![7, 0, 0, 0, 2, 1, 1]), // NotePreferred of 2 bytes
        (Direction::ClientToServer, vec![0x10, 0, 0, 0, 1, 0]), // WatchConns with payload
        (
            Direction::ClientToServer,
            vec![0x12, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0],
        ), // short ping
        (
            Direction::ServerToClient,
            vec![0x15, 0, 0, 0, 4, 0, 0, 0, 0],
        ), // short Restarting
    ];
    for (dir, wire) in cases {
        let mut wire = wire;
        wire.resize(wire.len() + 64, 0); // enough bytes for any announced payload
        let r = decode_all_lenient(dir, &wire);
        assert!(r.is_err(), "{wire:?} gave {r:?}");
    }
    let mut w = vec![1, 0, 0, 0, 40];
    w.extend_from_slice(b"DERPXXXX");
    w.extend_from_slice(&[0; 32]);
    assert_eq!(
        decode_all(Direction::ServerToClient, &w),
        Err(DerpError::BadMagic)
    );
}

fn decode_all_lenient(dir: Direction, bytes: &[u8]) -> Result<Vec<Frame>, DerpError> {
    let mut d = FrameDecoder::new(dir);
    d.feed(bytes);
    let mut out = vec![];
    while let Some(f) = d.next_frame()? {
        out.push(f);
    }
    Ok(out)
}

#[test]
fn unknown_and_wrong_direction_frames_are_skipped() {
    let mut wire = BytesMut::new();
    wire.extend_from_slice(&[0x42, 0, 0, 0, 3, 1, 2, 3]); // unknown type 0x42
    Frame::RecvPacket {
        src: key(1),
        packet: Bytes::from_static(b"x"),
    }
    .encode(&mut wire); // S→C only
    wire.extend_from_slice(&[0x05, 0, 0, 0, 1, 0]); // malformed RecvPacket: skipped by a server too
    Frame::Ping { data: [1; 8] }.encode(&mut wire);
    let mut d = FrameDecoder::new(Direction::ClientToServer);
    // Feed in two pieces that split the unknown frame's payload.
    d.feed(&wire[..6]);
    assert_eq!(d.next_frame(), Ok(None));
    d.feed(&wire[6..]);
    assert_eq!(d.next_frame(), Ok(Some(Frame::Ping { data: [1; 8] })));
    assert_eq!(d.skipped_frames(), 3);
    assert!(d.is_idle());
}

#[test]
fn client_info_box_opens_with_both_key_pairs_only() {
    let client = PrivateKey::generate();
    let server = PrivateKey::generate();
    let info = ClientInfo {
        mesh_key: MeshKey::from_hex(&"ab".repeat(32)),
        is_prober: true,
        ..Default::default()
    };
    let Frame::ClientInfo { key: k, sealed } = info.seal(&client, &server.node_public(), [9; 24])
    else {
        panic!("not ClientInfo");
    };
    assert_eq!(k, client.node_public());
    assert_eq!(&sealed[..24], &[9; 24]);
    // Server side: own private key + client public key.
    assert_eq!(ClientInfo::open(&server, &k, &sealed).unwrap(), info);
    // The client can open it too (box is symmetric in the DH secret).
    assert_eq!(
        ClientInfo::open(&client, &server.node_public(), &sealed).unwrap(),
        info
    );
    // Any other key pair fails.
    let other = PrivateKey::generate();
    assert_eq!(
        ClientInfo::open(&other, &k, &sealed),
        Err(DerpError::BoxOpen)
    );
    assert_eq!(
        ClientInfo::open(&server, &other.node_public(), &sealed),
        Err(DerpError::BoxOpen)
    );
    // Tampering fails.
    let mut bad = sealed.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(ClientInfo::open(&server, &k, &bad), Err(DerpError::BoxOpen));
    assert_eq!(
        ClientInfo::open(&server, &k, &sealed[..10]),
        Err(DerpError::BoxOpen)
    );

    let si = ServerInfo {
        token_bucket_bytes_per_second: 1000,
        ..Default::default()
    };
    let Frame::ServerInfo { sealed } = si.seal(&server, &client.node_public(), [1; 24]) else {
        panic!()
    };
    assert_eq!(
        ServerInfo::open(&client, &server.node_public(), &sealed).unwrap(),
        si
    );
    assert!(ServerInfo::open(&other, &server.node_public(), &sealed).is_err());
}

#[test]
fn info_json_matches_go_field_names() {
    let j = serde_json::to_value(ClientInfo::default()).unwrap();
    assert_eq!(j, serde_json::json!({"version": 2, "CanAckPings": true}));
    let mk = MeshKey::from_hex(&"0f".repeat(32)).unwrap();
    let j = serde_json::to_value(ClientInfo {
        mesh_key: Some(mk.clone()),
        is_prober: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        j,
        serde_json::json!({"version": 2, "meshKey": "0f".repeat(32), "CanAckPings": true, "IsProber": true})
    );
    // Zero / empty mesh key means none; unknown fields ignored; case variants accepted.
    let ci: ClientInfo = serde_json::from_str(&format!(
        r#"{{"Version":2,"meshKey":"{}","future":1,"canAckPings":true}}"#,
        "0".repeat(64)
    ))
    .unwrap();
    assert_eq!(ci, ClientInfo::default());
    // What tailscale-rs (ts_derp 0.6) sends: snake_case names, "none" as mesh key.
    let ci: ClientInfo = serde_json::from_str(
        r#"{"can_ack_pings":false,"is_prober":false,"mesh_key":"none","version":2}"#,
    )
    .unwrap();
    assert_eq!(ci.version, 2);
    assert!(ci.mesh_key.is_none());
    for bad in [r#""none""#, "null", "42", r#""abc""#] {
        let ci: ClientInfo =
            serde_json::from_str(&format!(r#"{{"version":2,"meshKey":{bad}}}"#)).unwrap();
        assert!(ci.mesh_key.is_none(), "{bad}");
    }
    assert_eq!(format!("{mk:?}"), "MeshKey(<redacted>)");
    let j = serde_json::to_value(ServerInfo::default()).unwrap();
    assert_eq!(j, serde_json::json!({"version": 2}));
}

fn arb_key() -> impl Strategy<Value = NodePublic> {
    any::<[u8; 32]>().prop_map(NodePublic)
}

fn arb_packet() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

fn arb_endpoint() -> impl Strategy<Value = Option<std::net::SocketAddr>> {
    prop_oneof![
        Just(None),
        (any::<[u8; 4]>(), 1u16..)
            .prop_map(|(ip, p)| Some((std::net::Ipv4Addr::from(ip), p).into())),
        (1u16.., any::<[u16; 7]>(), 1u16..).prop_map(|(a, r, p)| {
            let ip = std::net::Ipv6Addr::new(
                0x2000 | (a & 0x0fff),
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5],
                r[6],
            );
            Some((ip, p).into())
        }),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        arb_key().prop_map(|key| Frame::ServerKey { key }),
        (arb_key(), proptest::collection::vec(any::<u8>(), 24..200)).prop_map(|(key, s)| {
            Frame::ClientInfo {
                key,
                sealed: s.into(),
            }
        }),
        proptest::collection::vec(any::<u8>(), 40..200)
            .prop_map(|s| Frame::ServerInfo { sealed: s.into() }),
        (arb_key(), arb_packet()).prop_map(|(dst, packet)| Frame::SendPacket { dst, packet }),
        (arb_key(), arb_packet()).prop_map(|(src, packet)| Frame::RecvPacket { src, packet }),
        Just(Frame::KeepAlive),
        any::<bool>().prop_map(|preferred| Frame::NotePreferred { preferred }),
        (arb_key(), any::<u8>()).prop_map(|(peer, r)| Frame::PeerGone {
            peer,
            reason: PeerGoneReason::from_byte(r)
        }),
        (arb_key(), arb_endpoint(), any::<u8>()).prop_map(|(peer, endpoint, flags)| {
            Frame::PeerPresent {
                peer,
                endpoint,
                flags,
            }
        }),
        (arb_key(), arb_key(), arb_packet()).prop_map(|(src, dst, packet)| Frame::ForwardPacket {
            src,
            dst,
            packet
        }),
        Just(Frame::WatchConns),
        arb_key().prop_map(|peer| Frame::ClosePeer { peer }),
        any::<[u8; 8]>().prop_map(|data| Frame::Ping { data }),
        any::<[u8; 8]>().prop_map(|data| Frame::Pong { data }),
        ".{0,40}".prop_map(|problem| Frame::Health { problem }),
        (any::<u32>(), any::<u32>()).prop_map(|(reconnect_in_ms, try_for_ms)| Frame::Restarting {
            reconnect_in_ms,
            try_for_ms
        }),
    ]
}

proptest! {
    #[test]
    fn frames_round_trip_in_any_chunking(
        frames in proptest::collection::vec(arb_frame(), 0..12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let mut wire = BytesMut::new();
        frames.iter().for_each(|f| f.encode(&mut wire));
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.push(0);
        points.push(wire.len());
        points.sort_unstable();
        let mut d = FrameDecoder::new(Direction::Any);
        let mut got = vec![];
        for w in points.windows(2) {
            d.feed(&wire[w[0]..w[1]]);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
        prop_assert!(d.is_idle());
    }

    #[test]
    fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), dir in 0..3u8) {
        let dir = [Direction::ClientToServer, Direction::ServerToClient, Direction::Any][dir as usize];
        let mut d = FrameDecoder::new(dir);
        d.feed(&data);
        for _ in 0..700 {
            match d.next_frame() {
                Ok(Some(_)) => {}
                _ => break,
            }
        }
    }
}
