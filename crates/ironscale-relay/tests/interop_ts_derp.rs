//! Interop: tailscale-rs' own DERP client (`ts_derp` 0.6) against our relay.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ironscale_derp::{ClientInfo, Frame};
use ironscale_http::serve_plain;
use ironscale_keys::{NodePublic, PrivateKey};
use ironscale_relay::client::DerpClient;
use ironscale_relay::{router, DerpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

/// Do the HTTP upgrade by hand, reading the response one byte at a time so no
/// DERP byte after the head is consumed.
async fn upgrade(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /derp HTTP/1.1\r\nHost: derp.test\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        head.push(s.read_u8().await.unwrap());
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

#[tokio::test]
async fn tailscale_rs_client_talks_to_our_relay() {
    let server = Arc::new(DerpServer::new(PrivateKey::generate()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_plain(
        listener,
        router(server.clone()),
        std::future::pending(),
    ));

    let ts_keys = ts_keys::NodeKeyPair::random();
    let ts_pub: NodePublic = ts_keys.public.to_string().parse().unwrap();
    let ts = timeout(T, ts_derp::Client::handshake(upgrade(addr).await, &ts_keys))
        .await
        .unwrap()
        .unwrap();

    let ours_key = PrivateKey::generate();
    let ours_pub = ours_key.node_public();
    let mut ours = timeout(
        T,
        DerpClient::connect_plain(addr, "derp.test", ours_key, ClientInfo::default()),
    )
    .await
    .unwrap()
    .unwrap();

    // tailscale-rs → ours
    let dst: ts_keys::NodePublicKey = ours_pub.to_string().parse().unwrap();
    timeout(T, ts.send_one(dst, b"from tailscale-rs"))
        .await
        .unwrap()
        .unwrap();
    let f = loop {
        match timeout(T, ours.recv()).await.unwrap().unwrap() {
            Frame::KeepAlive => continue,
            f => break f,
        }
    };
    assert_eq!(
        f,
        Frame::RecvPacket {
            src: ts_pub,
            packet: Bytes::from_static(b"from tailscale-rs")
        }
    );

    // ours → tailscale-rs
    ours.send_packet(ts_pub, b"from ironscale").await.unwrap();
    let (src, payload) = timeout(T, ts.recv_one()).await.unwrap().unwrap();
    assert_eq!(src.to_string(), ours_pub.to_string());
    assert_eq!(AsRef::<[u8]>::as_ref(&payload), b"from ironscale");
    assert_eq!(server.stats().clients_current, 2);
}
