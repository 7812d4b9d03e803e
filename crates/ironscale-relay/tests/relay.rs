//! End-to-end tests: DERP over TLS on 127.0.0.1, HTTP endpoints, STUN over UDP.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use ironscale_derp::{ClientInfo, Frame, PeerGoneReason};
use ironscale_http::{self_signed, serve_plain, serve_tls};
use ironscale_keys::{NodePublic, PrivateKey};
use ironscale_relay::client::{pinned_tls_config, DerpClient};
use ironscale_relay::{router, run_stun, DerpServer, DerpServerConfig, RelayError};
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tower::ServiceExt;

const T: Duration = Duration::from_secs(10);

struct Relay {
    addr: SocketAddr,
    fingerprint: String,
    server: Arc<DerpServer>,
    _stop: oneshot::Sender<()>,
}

fn stop_signal() -> (oneshot::Sender<()>, impl Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    (tx, async move {
        let _ = rx.await;
    })
}

async fn start(server: DerpServer) -> Relay {
    let (tls, fingerprint) = self_signed(&["localhost".into(), "127.0.0.1".into()]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Arc::new(server);
    let (stop, stopped) = stop_signal();
    tokio::spawn(serve_tls(
        listener,
        Arc::new(tls),
        router(server.clone()),
        stopped,
    ));
    Relay {
        addr,
        fingerprint,
        server,
        _stop: stop,
    }
}

type Client = DerpClient<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn connect(r: &Relay, key: PrivateKey) -> Result<Client, RelayError> {
    let tls = Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
    timeout(
        T,
        DerpClient::connect_tls(r.addr, "localhost", tls, key, ClientInfo::default()),
    )
    .await
    .unwrap()
}

/// Next frame that is not a KeepAlive.
async fn next<S: tokio::io::AsyncRead + AsyncWrite + Unpin>(c: &mut DerpClient<S>) -> Frame {
    loop {
        match timeout(T, c.recv())
            .await
            .expect("frame in time")
            .expect("frame")
        {
            Frame::KeepAlive => continue,
            f => return f,
        }
    }
}

/// Wait until the server has registered `n` clients.
async fn wait_clients(s: &DerpServer, n: u64) {
    for _ in 0..500 {
        if s.stats().clients_current == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("server has {} clients, want {n}", s.stats().clients_current);
}

#[tokio::test]
async fn two_clients_exchange_packets_ping_and_peer_gone() {
    let r = start(DerpServer::new(PrivateKey::generate())).await;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.node_public(), kb.node_public());
    let mut a = connect(&r, ka).await.unwrap();
    let mut b = connect(&r, kb).await.unwrap();
    assert_eq!(a.server_key(), r.server.public_key());
    assert_eq!(a.server_info().version, 2);
    wait_clients(&r.server, 2).await;

    a.note_preferred(true).await.unwrap();
    a.send_packet(pb, b"hello b").await.unwrap();
    assert_eq!(
        next(&mut b).await,
        Frame::RecvPacket {
            src: pa,
            packet: Bytes::from_static(b"hello b")
        }
    );
    b.send_packet(pa, b"hello a").await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Frame::RecvPacket {
            src: pb,
            packet: Bytes::from_static(b"hello a")
        }
    );
    // A 64 KiB packet, the maximum.
    let big = vec![0x5a; 64 << 10];
    a.send_packet(pb, &big).await.unwrap();
    assert_eq!(
        next(&mut b).await,
        Frame::RecvPacket {
            src: pa,
            packet: Bytes::from(big)
        }
    );

    a.ping(*b"pingpong").await.unwrap();
    assert_eq!(next(&mut a).await, Frame::Pong { data: *b"pingpong" });
    assert_eq!(r.server.stats().home_clients, 1);

    // A leaves: B, which received packets from A, hears PeerGone(A).
    drop(a);
    assert_eq!(
        next(&mut b).await,
        Frame::PeerGone {
            peer: pa,
            reason: PeerGoneReason::Disconnected
        }
    );
    wait_clients(&r.server, 1).await;
    let st = r.server.stats();
    assert_eq!(st.clients_total, 2);
    assert_eq!(st.packets_relayed, 3);
    assert_eq!(st.home_clients, 0);
}

#[tokio::test]
async fn disco_packet_to_unknown_peer_gets_peer_gone_not_here() {
    let r = start(DerpServer::new(PrivateKey::generate())).await;
    let mut a = connect(&r, PrivateKey::generate()).await.unwrap();
    let nobody = NodePublic([7; 32]);
    let mut disco = ironscale_derp::frame::DISCO_MAGIC.to_vec();
    disco.extend_from_slice(&[0; 40]);
    a.send_packet(nobody, b"not disco: silently dropped")
        .await
        .unwrap();
    a.send_packet(nobody, &disco).await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Frame::PeerGone {
            peer: nobody,
            reason: PeerGoneReason::NotHere
        }
    );
    assert_eq!(r.server.stats().packets_dropped_unknown_dest, 2);
}

#[tokio::test]
async fn malformed_input_closes_only_that_connection() {
    let r = start(DerpServer::new(PrivateKey::generate())).await;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.node_public(), kb.node_public());
    let mut a = connect(&r, ka).await.unwrap();
    let mut b = connect(&r, kb).await.unwrap();
    // Oversized length, malformed payload, and a second ClientInfo: each kills its connection.
    let garbage: [&[u8]; 3] = [
        &[0x04, 0xff, 0xff, 0xff, 0xff, 1, 2, 3],
        &[0x07, 0, 0, 0, 3, 1, 1, 1],
        &[0x04, 0, 0, 0, 4, 0xde, 0xad, 0xbe, 0xef],
    ];
    for g in garbage {
        let mut bad = connect(&r, PrivateKey::generate()).await.unwrap();
        bad.write_raw(g).await.unwrap();
        let end = timeout(T, async {
            loop {
                match bad.recv().await {
                    Ok(Frame::KeepAlive) => continue,
                    other => return other,
                }
            }
        })
        .await
        .unwrap();
        assert!(
            matches!(end, Err(RelayError::Closed) | Err(RelayError::Io(_))),
            "{end:?}"
        );
    }
    // A raw TLS connection that sends junk instead of HTTP is dropped too.
    {
        let tls = Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
        let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let mut s = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(b"\x00\x01\x02 not http at all\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 1024];
        let _ = timeout(T, s.read(&mut buf)).await.unwrap();
    }
    // The good clients are unaffected.
    a.send_packet(pb, b"still here").await.unwrap();
    assert_eq!(
        next(&mut b).await,
        Frame::RecvPacket {
            src: pa,
            packet: Bytes::from_static(b"still here")
        }
    );
    b.ping([1; 8]).await.unwrap();
    assert_eq!(next(&mut b).await, Frame::Pong { data: [1; 8] });
    wait_clients(&r.server, 2).await;
    assert_eq!(r.server.stats().protocol_errors, 3);
}

#[tokio::test]
async fn verify_clients_refuses_unknown_keys() {
    let allowed = PrivateKey::generate();
    let allowed_pub = allowed.node_public();
    let verifier = Arc::new(move |k: &NodePublic| *k == allowed_pub);
    let r = start(DerpServer::new(PrivateKey::generate()).with_verifier(verifier)).await;
    let refused = connect(&r, PrivateKey::generate()).await;
    assert!(
        matches!(refused, Err(RelayError::Closed) | Err(RelayError::Io(_))),
        "{refused:?}"
    );
    let mut ok = connect(&r, allowed).await.unwrap();
    ok.ping([2; 8]).await.unwrap();
    assert_eq!(next(&mut ok).await, Frame::Pong { data: [2; 8] });
    let st = r.server.stats();
    assert_eq!((st.clients_rejected, st.clients_current), (1, 1));
}

/// A verifier that answers slowly (a `--verify-client-url` far away) holds up only the client it
/// is deciding: another client connects and is served meanwhile, and the source address is passed.
#[tokio::test]
async fn a_slow_async_verifier_holds_up_only_its_own_client() {
    struct Slow {
        slow: NodePublic,
        sources: parking_lot::Mutex<Vec<Option<std::net::IpAddr>>>,
    }
    impl ironscale_relay::ClientVerifier for Slow {
        fn allowed<'a>(
            &'a self,
            node: &'a NodePublic,
            source: Option<std::net::IpAddr>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
            self.sources.lock().push(source);
            let slow = *node == self.slow;
            Box::pin(async move {
                if slow {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                true
            })
        }
    }
    let slow_key = PrivateKey::generate();
    let verifier = Arc::new(Slow {
        slow: slow_key.node_public(),
        sources: Default::default(),
    });
    let r = start(DerpServer::new(PrivateKey::generate()).with_verifier(verifier.clone())).await;
    let slow = tokio::spawn({
        let r_addr = r.addr;
        let fp = r.fingerprint.clone();
        async move {
            let tls = Arc::new(pinned_tls_config(&fp).unwrap());
            DerpClient::connect_tls(r_addr, "localhost", tls, slow_key, ClientInfo::default()).await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut quick = connect(&r, PrivateKey::generate()).await.unwrap();
    quick.ping([3; 8]).await.unwrap();
    assert_eq!(next(&mut quick).await, Frame::Pong { data: [3; 8] });
    assert!(
        !slow.is_finished(),
        "the slow client was admitted before the quick one was served"
    );
    let mut s = timeout(T, slow).await.unwrap().unwrap().unwrap();
    s.ping([4; 8]).await.unwrap();
    assert_eq!(next(&mut s).await, Frame::Pong { data: [4; 8] });
    let sources = verifier.sources.lock().clone();
    assert_eq!(sources.len(), 2);
    assert!(
        sources.iter().all(|s| s.is_some_and(|ip| ip.is_loopback())),
        "{sources:?}"
    );
}

#[tokio::test]
async fn mesh_watcher_sees_present_and_gone() {
    let mesh = ironscale_derp::MeshKey([9; 32]);
    let cfg = DerpServerConfig {
        mesh_key: Some(mesh.clone()),
        ..Default::default()
    };
    // Verification on: the mesh peer is admitted anyway.
    let r = start(
        DerpServer::with_config(PrivateKey::generate(), cfg)
            .with_verifier(Arc::new(|_: &NodePublic| false)),
    )
    .await;
    let tls = Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
    let info = ClientInfo {
        mesh_key: Some(mesh),
        ..Default::default()
    };
    let mut w = timeout(
        T,
        DerpClient::connect_tls(r.addr, "localhost", tls, PrivateKey::generate(), info),
    )
    .await
    .unwrap()
    .unwrap();
    w.send(&Frame::WatchConns).await.unwrap();
    // Regular clients are refused by the verifier; so watch another mesh-key client come and go.
    let tls = Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
    let k = PrivateKey::generate();
    let pk = k.node_public();
    let info = ClientInfo {
        mesh_key: Some(ironscale_derp::MeshKey([9; 32])),
        ..Default::default()
    };
    let other = timeout(
        T,
        DerpClient::connect_tls(r.addr, "localhost", tls, k, info),
    )
    .await
    .unwrap()
    .unwrap();
    let Frame::PeerPresent {
        peer,
        endpoint,
        flags,
    } = next(&mut w).await
    else {
        panic!("want PeerPresent")
    };
    assert_eq!(peer, pk);
    assert!(endpoint.is_some_and(|e| e.ip().is_loopback()));
    assert_eq!(
        flags,
        ironscale_derp::frame::peer_present_flags::IS_MESH_PEER
    );
    // ClosePeer from the mesh peer closes that client's connection.
    let mut other = other;
    w.send(&Frame::ClosePeer { peer: pk }).await.unwrap();
    let end = timeout(T, async {
        loop {
            if let Err(e) = other.recv().await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(end, RelayError::Closed | RelayError::Io(_)),
        "{end:?}"
    );
    assert_eq!(
        next(&mut w).await,
        Frame::PeerGone {
            peer: pk,
            reason: PeerGoneReason::Disconnected
        }
    );
}

#[tokio::test]
async fn keepalives_flow_and_silent_clients_time_out() {
    let cfg = DerpServerConfig {
        keepalive: Duration::from_millis(100),
        keepalive_jitter: Duration::ZERO,
        handshake_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let r = start(DerpServer::with_config(PrivateKey::generate(), cfg)).await;
    let mut a = connect(&r, PrivateKey::generate()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            timeout(T, a.recv()).await.unwrap().unwrap(),
            Frame::KeepAlive
        );
    }
    // A client that upgrades but never sends ClientInfo is dropped after the handshake timeout.
    let tls = Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
    let tcp = tokio::net::TcpStream::connect(r.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut s = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(
        b"GET /derp HTTP/1.1\r\nHost: localhost\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    let closed = timeout(T, async {
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "silent client was not dropped");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(got.starts_with(b"HTTP/1.1 101"));
    assert_eq!(r.server.stats().handshake_failures, 1);
}

#[tokio::test]
async fn slow_reader_costs_bounded_memory_and_recovers() {
    // A generous write timeout so a slow CI machine does not drop B while it stalls.
    let cfg = DerpServerConfig {
        write_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let r = start(DerpServer::with_config(PrivateKey::generate(), cfg)).await;
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let (pa, pb) = (ka.node_public(), kb.node_public());
    let mut a = connect(&r, ka).await.unwrap();
    let mut b = connect(&r, kb).await.unwrap();
    // B does not read while A sends far more than socket buffers hold.
    let pkt = vec![1u8; 16 << 10];
    for _ in 0..1500 {
        a.send_packet(pb, &pkt).await.unwrap();
    }
    a.send_packet(pb, b"last").await.unwrap();
    a.ping([3; 8]).await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Frame::Pong { data: [3; 8] },
        "A is served while B stalls"
    );
    let st = r.server.stats();
    assert!(st.packets_dropped_queue_full > 0, "{st:?}");
    // B drains: the newest packet arrives; far fewer than 3000 do.
    let mut n = 0;
    loop {
        match next(&mut b).await {
            Frame::RecvPacket { src, packet } => {
                assert_eq!(src, pa);
                n += 1;
                if &packet[..] == b"last" {
                    break;
                }
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    assert!(n < 1500, "received {n}");
}

#[tokio::test]
async fn plain_http_listener_serves_derp() {
    let server = Arc::new(DerpServer::new(PrivateKey::generate()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = stop_signal();
    tokio::spawn(serve_plain(listener, router(server.clone()), stopped));
    let ka = PrivateKey::generate();
    let pa = ka.node_public();
    let mut a = timeout(
        T,
        DerpClient::connect_plain(addr, "derp.test", ka, ClientInfo::default()),
    )
    .await
    .unwrap()
    .unwrap();
    a.send_packet(pa, b"to myself").await.unwrap();
    assert_eq!(
        next(&mut a).await,
        Frame::RecvPacket {
            src: pa,
            packet: Bytes::from_static(b"to myself")
        }
    );
    server.shutdown();
    let end = timeout(T, async {
        loop {
            if let Err(e) = a.recv().await {
                return e;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        matches!(end, RelayError::Closed | RelayError::Io(_)),
        "{end:?}"
    );
}

#[tokio::test]
async fn wrong_pin_is_refused_by_the_client() {
    let r = start(DerpServer::new(PrivateKey::generate())).await;
    let tls = Arc::new(pinned_tls_config(&"00".repeat(32)).unwrap());
    let res = timeout(
        T,
        DerpClient::connect_tls(
            r.addr,
            "localhost",
            tls,
            PrivateKey::generate(),
            ClientInfo::default(),
        ),
    )
    .await
    .unwrap();
    assert!(matches!(res, Err(RelayError::Io(_))), "{res:?}");
}

async fn call(app: axum::Router, req: http::Request<Body>) -> http::Response<Body> {
    app.oneshot(req).await.unwrap()
}

#[tokio::test]
async fn http_endpoints() {
    let server = Arc::new(DerpServer::new(PrivateKey::generate()));
    let app = router(server);
    let get = |uri: &str| http::Request::get(uri).body(Body::empty()).unwrap();

    let r = call(app.clone(), get("/derp")).await;
    assert_eq!(r.status(), 426);
    let body = axum::body::to_bytes(r.into_body(), 1024).await.unwrap();
    assert_eq!(&body[..], b"DERP requires connection upgrade");
    // Upgrade header but no upgradable connection (as over h2): still 426, no panic.
    let req = http::Request::get("/derp")
        .header("Upgrade", "DERP")
        .body(Body::empty())
        .unwrap();
    assert_eq!(call(app.clone(), req).await.status(), 426);

    for path in ["/derp/probe", "/derp/latency-check"] {
        let r = call(app.clone(), get(path)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        let head = http::Request::head(path).body(Body::empty()).unwrap();
        assert_eq!(call(app.clone(), head).await.status(), 200);
        let post = http::Request::post(path).body(Body::empty()).unwrap();
        assert_eq!(call(app.clone(), post).await.status(), 405);
    }

    let req = http::Request::get("/generate_204")
        .header("X-Tailscale-Challenge", "abc.DEF_1:2-3")
        .body(Body::empty())
        .unwrap();
    let r = call(app.clone(), req).await;
    assert_eq!(r.status(), 204);
    assert_eq!(
        r.headers()["x-tailscale-response"],
        "response abc.DEF_1:2-3"
    );
    assert!(r.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("no-store"));
    let req = http::Request::get("/generate_204")
        .header("X-Tailscale-Challenge", "bad challenge!")
        .body(Body::empty())
        .unwrap();
    let r = call(app.clone(), req).await;
    assert_eq!(r.status(), 204);
    assert!(r.headers().get("x-tailscale-response").is_none());
}

#[tokio::test]
async fn upgrade_response_headers() {
    // Raw HTTP/1.1 over plain TCP to see the exact 101 response.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Arc::new(DerpServer::new(PrivateKey::generate()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_stop, stopped) = stop_signal();
    tokio::spawn(serve_plain(listener, router(server.clone()), stopped));
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: derp\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // Read the head and the ServerKey frame (45 bytes) that follows it.
    while !got.windows(4).any(|w| w == b"\r\n\r\n")
        || got.len() < got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + 45
    {
        let n = timeout(T, s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let end = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: derp\r\n"), "{head}");
    assert!(head.contains("connection: upgrade\r\n"), "{head}");
    assert!(head.contains("derp-version: 2\r\n"), "{head}");
    assert!(
        head.contains(&format!(
            "derp-public-key: {}\r\n",
            server.public_key().hex()
        )),
        "{head}"
    );
    assert_eq!(got[end], 0x01, "ServerKey frame follows the 101");
    assert_eq!(&got[end + 5..end + 13], &ironscale_derp::frame::MAGIC);
}

#[tokio::test]
async fn stun_answers_binding_requests_over_udp() {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let (_stop, stopped) = stop_signal();
    tokio::spawn(run_stun(sock, stopped));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let mut buf = [0u8; 1500];
    // Garbage first: ignored, the server keeps going.
    client.send_to(b"definitely not stun", addr).await.unwrap();
    // Tailscale-style request.
    let txid = ironscale_stun::TxId([0x11; 12]);
    client
        .send_to(&ironscale_stun::request(txid), addr)
        .await
        .unwrap();
    let (n, _) = timeout(T, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ironscale_stun::parse_response(&buf[..n]), Ok((txid, me)));
    // Plain RFC 5389 request without attributes (turnutils_stunclient style).
    let mut plain = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    plain.extend_from_slice(&[0x22; 12]);
    client.send_to(&plain, addr).await.unwrap();
    let (n, _) = timeout(T, client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        ironscale_stun::parse_response(&buf[..n]),
        Ok((ironscale_stun::TxId([0x22; 12]), me))
    );
}

/// Conformance with a third-party STUN client (coturn's `turnutils_stunclient`,
/// Debian package `coturn`, installed by `.ci/run`). Fails when the tool is missing: a
/// conformance test that quietly skips proves nothing.
#[tokio::test]
async fn turnutils_stunclient_gets_its_mapped_address() {
    if let Err(e) = std::process::Command::new("turnutils_stunclient").output() {
        panic!("turnutils_stunclient cannot run ({e}): apt-get install coturn (see .ci/run)");
    }
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    let (_stop, stopped) = stop_signal();
    tokio::spawn(run_stun(sock, stopped));
    let out = timeout(
        T,
        tokio::process::Command::new("turnutils_stunclient")
            .args(["-p", &port.to_string(), "-L", "127.0.0.1", "127.0.0.1"])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // It prints "UDP reflexive addr: 127.0.0.1:<port>" on success.
    assert!(text.contains("UDP reflexive addr: 127.0.0.1:"), "{text}");
}

/// Two relays of one region, meshed with a pre-shared key: a client on one sends to a client
/// on the other, both ways; a client that leaves is forgotten by the other relay; a mesh peer
/// with the wrong key is refused (verification on) and learns nothing.
#[tokio::test]
async fn two_meshed_relays_forward_between_their_clients() {
    let mesh = ironscale_derp::MeshKey([7; 32]);
    let cfg = || DerpServerConfig {
        mesh_key: Some(mesh.clone()),
        ..Default::default()
    };
    // Regular clients are admitted; verification on proves mesh peers skip it by their key.
    let admit_regular = || Arc::new(|_: &NodePublic| true);
    let a = start(
        DerpServer::with_config(PrivateKey::generate(), cfg()).with_verifier(admit_regular()),
    )
    .await;
    let b = start(
        DerpServer::with_config(PrivateKey::generate(), cfg()).with_verifier(admit_regular()),
    )
    .await;
    let peer = |r: &Relay| ironscale_relay::MeshPeer {
        host: "localhost".into(),
        addr: r.addr,
    };
    let tls_for = |r: &Relay| Arc::new(pinned_tls_config(&r.fingerprint).unwrap());
    tokio::spawn(ironscale_relay::run_mesh_peer(
        a.server.clone(),
        peer(&b),
        mesh.clone(),
        tls_for(&b),
    ));
    tokio::spawn(ironscale_relay::run_mesh_peer(
        b.server.clone(),
        peer(&a),
        mesh.clone(),
        tls_for(&a),
    ));
    let (kx, ky) = (PrivateKey::generate(), PrivateKey::generate());
    let (px, py) = (kx.node_public(), ky.node_public());
    let mut x = connect(&a, kx).await.unwrap();
    let mut y = connect(&b, ky).await.unwrap();
    // Each relay learns the other's client.
    for _ in 0..500 {
        if a.server.remote_clients() >= 1 && b.server.remote_clients() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.server.remote_clients() >= 1 && b.server.remote_clients() >= 1);
    x.send_packet(py, b"x to y").await.unwrap();
    assert_eq!(
        next(&mut y).await,
        Frame::RecvPacket {
            src: px,
            packet: Bytes::from_static(b"x to y")
        }
    );
    y.send_packet(px, b"y to x").await.unwrap();
    assert_eq!(
        next(&mut x).await,
        Frame::RecvPacket {
            src: py,
            packet: Bytes::from_static(b"y to x")
        }
    );
    assert!(a.server.stats().packets_forwarded >= 1 && b.server.stats().packets_forwarded >= 1);

    // y leaves: a forgets the route.
    drop(y);
    for _ in 0..500 {
        if a.server.remote_clients() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        a.server.remote_clients(),
        0,
        "a still routes to a client that left b"
    );

    // A would-be mesh peer with the wrong key is a regular client: refused here by a
    // verifier that admits nobody, so it never sees who is connected.
    let c = start(
        DerpServer::with_config(PrivateKey::generate(), cfg())
            .with_verifier(Arc::new(|_: &NodePublic| false)),
    )
    .await;
    let wrong = ClientInfo {
        mesh_key: Some(ironscale_derp::MeshKey([8; 32])),
        ..Default::default()
    };
    let r = timeout(
        T,
        DerpClient::connect_tls(
            c.addr,
            "localhost",
            tls_for(&c),
            PrivateKey::generate(),
            wrong,
        ),
    )
    .await
    .unwrap();
    match r {
        Err(_) => {}
        Ok(mut cl) => {
            let _ = cl.send(&Frame::WatchConns).await;
            assert!(
                timeout(T, cl.recv()).await.unwrap().is_err(),
                "a wrong mesh key was served"
            );
        }
    }
    assert_eq!(c.server.stats().clients_rejected, 1);
}

/// With a receive rate limit, a client that sends as fast as it can is slowed to the limit
/// (reading pauses; nothing is dropped or closed), while an unlimited relay takes it all.
#[tokio::test]
async fn a_client_over_the_receive_rate_limit_is_slowed_to_it() {
    async fn blast(cfg: DerpServerConfig) -> (u64, Duration) {
        let r = start(DerpServer::with_config(PrivateKey::generate(), cfg)).await;
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let pb = kb.node_public();
        let mut a = connect(&r, ka).await.unwrap();
        let mut b = connect(&r, kb).await.unwrap();
        wait_clients(&r.server, 2).await;
        let started = std::time::Instant::now();
        let sender = tokio::spawn(async move {
            let p = Bytes::from(vec![1u8; 1000]);
            for _ in 0..3000 {
                if a.send_packet(pb, &p).await.is_err() {
                    break;
                }
            }
            a
        });
        // Count what arrives within one second.
        let mut got = 0u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(f)) = tokio::time::timeout_at(deadline, b.recv()).await {
            if let Frame::RecvPacket { packet, .. } = f {
                got += packet.len() as u64;
            }
        }
        let elapsed = started.elapsed();
        sender.abort();
        (got, elapsed)
    }
    let limited = DerpServerConfig {
        token_bucket_bytes_per_second: 200_000,
        token_bucket_bytes_burst: 64_000,
        ..Default::default()
    };
    let (slow, t) = blast(limited).await;
    // At most the burst plus the rate over the time, plus one read's worth of slack.
    let bound = 64_000.0 + 200_000.0 * t.as_secs_f64() + 40_000.0;
    assert!(
        (slow as f64) <= bound,
        "{slow} bytes in {t:?} through a 200 kB/s limit"
    );
    assert!(slow > 0, "nothing arrived through the limit");
    let (fast, _) = blast(DerpServerConfig::default()).await;
    assert!(fast > slow * 2, "unlimited {fast} vs limited {slow}");
}
