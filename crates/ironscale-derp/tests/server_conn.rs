//! The server connection state machine, driven in virtual time.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use ironscale_derp::{
    ClientInfo, DerpError, Direction, Frame, FrameDecoder, MeshKey, PacketQueue, Pushed,
    ServerConn, ServerConnConfig, ServerEvent, ServerInfo,
};
use ironscale_keys::{NodePublic, PrivateKey};

struct Harness {
    conn: ServerConn,
    client_rx: FrameDecoder,
    now: Instant,
    server: PrivateKey,
}

impl Harness {
    fn new(cfg: ServerConnConfig) -> Self {
        let server = PrivateKey::generate();
        let now = Instant::now();
        Self {
            conn: ServerConn::new(cfg, server.clone(), now),
            client_rx: FrameDecoder::new(Direction::ServerToClient),
            now,
            server,
        }
    }
    /// Everything the server wrote, as frames.
    fn received(&mut self) -> Vec<Frame> {
        self.client_rx.feed(self.conn.transmit());
        let n = self.conn.transmit_len();
        self.conn.advance_transmit(n);
        let mut v = vec![];
        while let Some(f) = self.client_rx.next_frame().expect("server output decodes") {
            v.push(f);
        }
        v
    }
    fn send(&mut self, f: &Frame) -> Result<(), DerpError> {
        self.conn.handle_input(&f.to_bytes(), self.now)
    }
    fn events(&mut self) -> Vec<ServerEvent> {
        std::iter::from_fn(|| self.conn.poll_event()).collect()
    }
    fn handshake(&mut self, client: &PrivateKey, info: ClientInfo) {
        let f = info.seal(client, &self.server.node_public(), [0; 24]);
        self.send(&f).unwrap();
        let evs = self.events();
        assert!(
            matches!(evs.as_slice(), [ServerEvent::ClientInfo { .. }]),
            "{evs:?}"
        );
        self.conn
            .accept(&ServerInfo::default(), [1; 24], self.now)
            .unwrap();
    }
}

#[test]
fn handshake_sends_server_key_then_server_info() {
    let mut h = Harness::new(ServerConnConfig::default());
    assert_eq!(
        h.received(),
        vec![Frame::ServerKey {
            key: h.server.node_public()
        }]
    );
    let client = PrivateKey::generate();
    // Client sends ClientInfo and, without waiting, a packet and NotePreferred.
    let mut wire = BytesMut::new();
    ClientInfo::default()
        .seal(&client, &h.server.node_public(), [3; 24])
        .encode(&mut wire);
    Frame::SendPacket {
        dst: NodePublic([9; 32]),
        packet: Bytes::from_static(b"p"),
    }
    .encode(&mut wire);
    Frame::NotePreferred { preferred: true }.encode(&mut wire);
    h.conn.handle_input(&wire, h.now).unwrap();
    // Only the ClientInfo event until admission.
    let evs = h.events();
    assert_eq!(evs.len(), 1);
    let ServerEvent::ClientInfo { key, info, is_mesh } = &evs[0] else {
        panic!("{evs:?}")
    };
    assert_eq!(*key, client.node_public());
    assert!(info.can_ack_pings && !is_mesh);
    assert!(h.conn.awaiting_admission());
    assert!(h.received().is_empty(), "nothing before admission");
    h.conn
        .accept(&ServerInfo::default(), [4; 24], h.now)
        .unwrap();
    let out = h.received();
    let [Frame::ServerInfo { sealed }] = out.as_slice() else {
        panic!("{out:?}")
    };
    assert_eq!(
        ServerInfo::open(&client, &h.server.node_public(), sealed).unwrap(),
        ServerInfo::default()
    );
    assert_eq!(
        h.events(),
        vec![
            ServerEvent::SendPacket {
                dst: NodePublic([9; 32]),
                packet: Bytes::from_static(b"p")
            },
            ServerEvent::NotePreferred(true)
        ]
    );
}

#[test]
fn first_frame_must_be_client_info() {
    let mut h = Harness::new(ServerConnConfig::default());
    let r = h.send(&Frame::Ping { data: [0; 8] });
    assert!(matches!(r, Err(DerpError::Unexpected { .. })), "{r:?}");
}

#[test]
fn client_info_sealed_to_another_server_is_refused() {
    let mut h = Harness::new(ServerConnConfig::default());
    let client = PrivateKey::generate();
    let f = ClientInfo::default().seal(&client, &PrivateKey::generate().node_public(), [0; 24]);
    assert_eq!(h.send(&f), Err(DerpError::BoxOpen));
}

#[test]
fn handshake_times_out() {
    let mut h = Harness::new(ServerConnConfig::default());
    let deadline = h.conn.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(10));
    assert_eq!(
        h.conn.handle_timeout(deadline - Duration::from_millis(1)),
        Ok(())
    );
    assert_eq!(
        h.conn.handle_timeout(deadline),
        Err(DerpError::HandshakeTimeout)
    );
}

#[test]
fn ping_pong_and_keepalive() {
    let mut h = Harness::new(ServerConnConfig {
        keepalive: Duration::from_secs(60),
        ..Default::default()
    });
    h.handshake(&PrivateKey::generate(), ClientInfo::default());
    h.received();
    h.send(&Frame::Ping { data: *b"abcdefgh" }).unwrap();
    assert_eq!(h.received(), vec![Frame::Pong { data: *b"abcdefgh" }]);
    let at = h.conn.poll_timeout().unwrap();
    assert_eq!(at, h.now + Duration::from_secs(60));
    h.conn.handle_timeout(at - Duration::from_secs(1)).unwrap();
    assert!(h.received().is_empty());
    h.conn.handle_timeout(at).unwrap();
    assert_eq!(h.received(), vec![Frame::KeepAlive]);
    assert_eq!(h.conn.poll_timeout(), Some(at + Duration::from_secs(60)));
}

#[test]
fn pongs_are_dropped_when_the_client_does_not_read() {
    let mut h = Harness::new(ServerConnConfig {
        max_pending_transmit: 100,
        ..Default::default()
    });
    h.handshake(&PrivateKey::generate(), ClientInfo::default());
    for _ in 0..50 {
        h.send(&Frame::Ping { data: [1; 8] }).unwrap();
    }
    assert!(h.conn.transmit_len() < 200, "{}", h.conn.transmit_len());
    assert!(h.conn.dropped_pongs() > 0);
}

#[test]
fn mesh_frames_need_the_mesh_key() {
    let mk = MeshKey([7; 32]);
    let cfg = ServerConnConfig {
        mesh_key: Some(mk.clone()),
        ..Default::default()
    };
    // Without the key: WatchConns closes the connection.
    let mut h = Harness::new(cfg.clone());
    h.handshake(&PrivateKey::generate(), ClientInfo::default());
    assert!(!h.conn.is_mesh());
    assert!(matches!(
        h.send(&Frame::WatchConns),
        Err(DerpError::Unexpected { .. })
    ));
    // A wrong key is just "not mesh".
    let mut h = Harness::new(cfg.clone());
    h.handshake(
        &PrivateKey::generate(),
        ClientInfo {
            mesh_key: Some(MeshKey([8; 32])),
            ..Default::default()
        },
    );
    assert!(!h.conn.is_mesh());
    // With the key: mesh frames become events.
    let mut h = Harness::new(cfg);
    h.handshake(
        &PrivateKey::generate(),
        ClientInfo {
            mesh_key: Some(mk),
            ..Default::default()
        },
    );
    assert!(h.conn.is_mesh());
    h.send(&Frame::WatchConns).unwrap();
    h.send(&Frame::ClosePeer {
        peer: NodePublic([1; 32]),
    })
    .unwrap();
    let fwd = Frame::ForwardPacket {
        src: NodePublic([2; 32]),
        dst: NodePublic([3; 32]),
        packet: Bytes::from_static(b"x"),
    };
    h.send(&fwd).unwrap();
    assert_eq!(
        h.events(),
        vec![
            ServerEvent::WatchConns,
            ServerEvent::ClosePeer(NodePublic([1; 32])),
            ServerEvent::ForwardPacket {
                src: NodePublic([2; 32]),
                dst: NodePublic([3; 32]),
                packet: Bytes::from_static(b"x")
            },
        ]
    );
}

#[test]
fn oversized_frame_after_handshake_is_fatal() {
    let mut h = Harness::new(ServerConnConfig::default());
    h.handshake(&PrivateKey::generate(), ClientInfo::default());
    let r = h.conn.handle_input(&[4, 0xff, 0xff, 0xff, 0xff], h.now);
    assert!(matches!(r, Err(DerpError::FrameTooLarge { .. })), "{r:?}");
}

#[test]
fn packet_queue_is_bounded_and_prioritises() {
    let mut q = PacketQueue::new(2);
    let k = NodePublic([1; 32]);
    assert_eq!(q.push_packet(k, Bytes::from_static(b"d1")), Pushed::Queued);
    assert_eq!(q.push_packet(k, Bytes::from_static(b"d2")), Pushed::Queued);
    assert_eq!(
        q.push_packet(k, Bytes::from_static(b"d3")),
        Pushed::DroppedOldest
    );
    let mut disco = ironscale_derp::frame::DISCO_MAGIC.to_vec();
    disco.push(1);
    q.push_packet(k, Bytes::from(disco.clone()));
    q.push_control(Frame::PeerGone {
        peer: k,
        reason: ironscale_derp::PeerGoneReason::Disconnected,
    });
    assert_eq!(q.len(), 4);
    assert_eq!(q.dropped(), 1);
    let order: Vec<Frame> = std::iter::from_fn(|| q.pop()).collect();
    assert!(matches!(order[0], Frame::PeerGone { .. }));
    assert_eq!(
        order[1],
        Frame::RecvPacket {
            src: k,
            packet: Bytes::from(disco)
        }
    );
    assert_eq!(
        order[2],
        Frame::RecvPacket {
            src: k,
            packet: Bytes::from_static(b"d2")
        }
    );
    assert_eq!(
        order[3],
        Frame::RecvPacket {
            src: k,
            packet: Bytes::from_static(b"d3")
        }
    );
    assert!(q.is_empty());
}
