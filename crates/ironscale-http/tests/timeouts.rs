//! Every listener closes connections that stall: a client that sends nothing,
//! one that sends half a request line, an idle keep-alive. Upgraded
//! connections are not cut by the HTTP idle timeout.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::response::Response;
use axum::routing::{any, get};
use axum::Router;
use hyper_util::rt::TokioIo;
use ironscale_http::{serve_plain_with, serve_tls_with, Timeouts};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An echo protocol behind `Upgrade: echo`, and a plain route.
fn app() -> Router {
    async fn upgrade(mut req: Request) -> Response {
        let on = req
            .extensions_mut()
            .remove::<hyper::upgrade::OnUpgrade>()
            .unwrap();
        tokio::spawn(async move {
            let mut io = TokioIo::new(on.await.unwrap());
            let mut b = [0u8; 64];
            loop {
                match io.read(&mut b).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if io.write_all(&b[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Response::builder()
            .status(101)
            .header("Upgrade", "echo")
            .header("Connection", "Upgrade")
            .body(axum::body::Body::empty())
            .unwrap()
    }
    Router::new()
        .route("/hello", get(|| async { "hi\n" }))
        .route("/echo", any(upgrade))
}

fn short(header_read: Duration, idle: Duration) -> Timeouts {
    Timeouts {
        header_read,
        idle,
        tls_handshake: Duration::from_millis(500),
        shutdown_grace: Duration::from_millis(200),
    }
}

async fn plain(t: Timeouts) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve_plain_with(l, app(), t, std::future::pending()));
    addr
}

/// Read until the server closes; how long that took from `t0`.
async fn closed_after(tcp: &mut TcpStream, t0: Instant, limit: Duration) -> Duration {
    let mut b = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut b)).await {
            Err(_) => panic!("the server kept the connection open for {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return t0.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_idle_timeout() {
    let addr = plain(short(Duration::from_secs(30), Duration::from_millis(300))).await;
    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(&mut tcp, t0, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn half_a_request_line_is_cut_by_the_header_read_timeout() {
    // The idle timeout is far away: only the header-read timeout can close it.
    let addr = plain(short(Duration::from_millis(300), Duration::from_secs(60))).await;
    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /hel").await.unwrap();
    let took = closed_after(&mut tcp, t0, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(250),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_is_closed_and_a_busy_one_is_not() {
    let addr = plain(short(Duration::from_secs(30), Duration::from_millis(400))).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // Requests every 200 ms keep it open past the idle timeout.
    for _ in 0..5 {
        tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&b[..n]).starts_with("HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Then silence: closed.
    let t0 = Instant::now();
    let took = closed_after(&mut tcp, t0, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
}

#[tokio::test]
async fn an_upgraded_connection_outlives_the_idle_timeout() {
    let addr = plain(short(
        Duration::from_millis(200),
        Duration::from_millis(200),
    ))
    .await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    // Quiet for five idle periods: still open and echoing.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    tcp.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut got))
        .await
        .expect("the upgraded connection was closed")
        .unwrap();
    assert_eq!(&got, b"ping");
}

#[tokio::test]
async fn tls_listener_has_the_same_timeouts() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cfg, _) = ironscale_http::self_signed(&["localhost".into()]).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = short(Duration::from_secs(30), Duration::from_millis(300));
    tokio::spawn(serve_tls_with(
        l,
        std::sync::Arc::new(cfg),
        app(),
        t,
        std::future::pending(),
    ));
    // No ClientHello at all: the handshake timeout closes it.
    let t0 = Instant::now();
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let took = closed_after(&mut tcp, t0, Duration::from_secs(5)).await;
    assert!(
        took >= Duration::from_millis(400),
        "closed too early: {took:?}"
    );
}

#[tokio::test]
async fn shutdown_closes_idle_connections_and_stops_accepting() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve_plain_with(
        l,
        app(),
        short(Duration::from_secs(30), Duration::from_secs(60)),
        async {
            let _ = rx.await;
        },
    ));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut b = [0u8; 512];
    let _ = tcp.read(&mut b).await.unwrap();
    tx.send(()).unwrap();
    let t0 = Instant::now();
    closed_after(&mut tcp, t0, Duration::from_secs(5)).await;
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("the accept loop ended")
        .unwrap();
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}
