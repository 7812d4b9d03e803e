//! An in-process ts2021 client for server-level tests and benchmarks: our own
//! Noise initiator under hyper's HTTP/2 client, talking to a real `Control`
//! router on a loopback port. Shared by `tests/in_process.rs` and
//! `benches/sessions.rs` (included with `#[path]`).
#![allow(dead_code, clippy::unwrap_used)] // each includer uses a subset; test code

use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use ironscale_control::{Control, NoiseStream};
use ironscale_keys::{MachinePublic, NodePublic, PrivateKey};
use ironscale_state::{Settings, State};
use ironscale_store::Store;
use ironscale_wire as wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Server {
    pub addr: std::net::SocketAddr,
    pub state: State,
    /// The store the state was loaded from (a handle on the same pool), for
    /// tests that break the database under the server.
    pub store: Store,
    pub server_pub: MachinePublic,
    _dir: tempfile::TempDir,
}

pub async fn start() -> Server {
    start_with_clock(std::sync::Arc::new(ironscale_state::SystemClock)).await
}

/// [`start`] with the state on `clock` (tests in virtual time).
pub async fn start_with_clock(clock: std::sync::Arc<dyn ironscale_state::Clock>) -> Server {
    start_with(Settings::default(), clock).await
}

/// [`start`] with these state settings on `clock`.
pub async fn start_with(
    settings: Settings,
    clock: std::sync::Arc<dyn ironscale_state::Clock>,
) -> Server {
    start_with_options(settings, clock, Default::default()).await
}

/// [`start_with`] and these control options (probing, server URL).
pub async fn start_with_options(
    settings: Settings,
    clock: std::sync::Arc<dyn ironscale_state::Clock>,
    opts: ironscale_control::ControlOptions,
) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .unwrap();
    let state = State::load_with_clock(store.clone(), settings, wire::DerpMap::default(), clock)
        .await
        .unwrap();
    let key = PrivateKey::generate();
    let server_pub = key.machine_public();
    let ctl = Control::with_options(state.clone(), key, opts);
    let app = ironscale_control::router(ctl);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    // As the production accept loop does (ironscale-relay's accept_loop): no Nagle delay.
    let l = axum::serve::ListenerExt::tap_io(l, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    Server {
        addr,
        state,
        store,
        server_pub,
        _dir: dir,
    }
}

pub type H2 = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// Open a ts2021 connection as machine `mkey` and return an HTTP/2 handle.
/// Where a client connects: a [`Server`] in this process, or an [`Endpoint`]
/// elsewhere.
pub trait Target {
    fn addr(&self) -> std::net::SocketAddr;
    fn server_pub(&self) -> MachinePublic;
}

impl Target for Server {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    fn server_pub(&self) -> MachinePublic {
        self.server_pub
    }
}

/// A control server's address and Noise public key.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    pub addr: std::net::SocketAddr,
    pub server_pub: MachinePublic,
}

impl Target for Endpoint {
    fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
    fn server_pub(&self) -> MachinePublic {
        self.server_pub
    }
}

pub async fn dial(s: &impl Target, mkey: &PrivateKey) -> H2 {
    let (init, msg) = ironscale_noise::Initiator::new(mkey, &s.server_pub(), 130).unwrap();
    let hs = base64::engine::general_purpose::STANDARD.encode(&msg);
    let mut tcp = TcpStream::connect(s.addr()).await.unwrap();
    tcp.set_nodelay(true).unwrap(); // as Go's net package does by default
    let req = format!(
        "POST /ts2021 HTTP/1.1\r\nHost: {}\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {hs}\r\nContent-Length: 0\r\n\r\n",
        s.addr()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("upgrade: tailscale-control-protocol"),
        "{head}"
    );
    let mut noise = NoiseStream::connect(tcp, init).await.unwrap();
    let early = noise
        .read_early_payload()
        .await
        .unwrap()
        .expect("early payload");
    assert!(String::from_utf8(early)
        .unwrap()
        .contains("nodeKeyChallenge"));
    let (h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(noise))
            .await
            .unwrap();
    tokio::spawn(conn);
    h2
}

pub async fn read_head(tcp: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut b).await.unwrap();
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

pub async fn post(
    h2: &mut H2,
    path: &str,
    body: serde_json::Value,
) -> hyper::Response<hyper::body::Incoming> {
    let req = hyper::Request::post(format!("https://control{path}"))
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    h2.ready().await.unwrap();
    h2.send_request(req).await.unwrap()
}

pub async fn register(
    h2: &mut H2,
    node: &NodePublic,
    key: &str,
    host: &str,
) -> wire::RegisterResponse {
    register_followup(h2, node, key, host, "").await
}

/// A RegisterRequest with `key` (empty: none) and `followup` (a login URL
/// the server gave, or empty).
pub async fn register_followup(
    h2: &mut H2,
    node: &NodePublic,
    key: &str,
    host: &str,
    followup: &str,
) -> wire::RegisterResponse {
    let mut body = serde_json::json!({
        "Version": 130, "NodeKey": node.to_string(),
        "OldNodeKey": NodePublic::ZERO.to_string(),
        "Expiry": "0001-01-01T00:00:00Z",
        "Hostinfo": {"Hostname": host, "OS": "linux"}
    });
    if !key.is_empty() {
        body["Auth"] = serde_json::json!({"AuthKey": key});
    }
    if !followup.is_empty() {
        body["Followup"] = serde_json::json!(followup);
    }
    let resp = post(h2, "/machine/register", body).await;
    assert_eq!(resp.status(), 200);
    let b = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&b).unwrap()
}

thread_local! {
    /// One decompression context per thread, as a Go client keeps its decoder.
    static DECOMPRESSOR: std::cell::RefCell<zstd::bulk::Decompressor<'static>> =
        std::cell::RefCell::new(zstd::bulk::Decompressor::new().unwrap());
}

fn decompress(frame: &[u8]) -> Vec<u8> {
    DECOMPRESSOR.with(|d| d.borrow_mut().decompress(frame, 1 << 26).unwrap())
}

/// Reads map frames from a streaming body.
pub struct Frames {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Frames {
    /// The next frame (keep-alives included); panics if none comes within 5 s.
    pub async fn next(&mut self) -> wire::MapResponse {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("no map frame within 5 s (or the stream ended)")
    }

    /// The next frame (keep-alives included), or `None` if the stream stays
    /// silent for `d` or ends. Panics if a frame is malformed.
    pub async fn next_within(&mut self, d: Duration) -> Option<wire::MapResponse> {
        let json = self.next_json_within(d).await?;
        Some(serde_json::from_slice(&json).unwrap())
    }

    /// Like [`Frames::next_within`], without parsing: the frame's JSON.
    pub async fn next_json_within(&mut self, d: Duration) -> Option<Vec<u8>> {
        loop {
            if self.buf.len() >= 4 {
                let n = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + n {
                    let frame: Vec<u8> = self.buf.drain(..4 + n).skip(4).collect();
                    return Some(decompress(&frame));
                }
            }
            let f = tokio::time::timeout(d, self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = f.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    /// The first frame that is not a keep-alive within `d`, if any.
    pub async fn update_within(&mut self, d: Duration) -> Option<wire::MapResponse> {
        tokio::time::timeout(d, self.next_update()).await.ok()
    }

    /// Reads and drops updates until none arrives for `quiet`.
    pub async fn drain(&mut self, quiet: Duration) {
        while self.update_within(quiet).await.is_some() {}
    }

    /// Next frame that is not a keep-alive.
    pub async fn next_update(&mut self) -> wire::MapResponse {
        loop {
            let f = self.next().await;
            if !f.keep_alive {
                return f;
            }
        }
    }
}

pub async fn map_stream(h2: &mut H2, node: &NodePublic, disco: &PrivateKey) -> Frames {
    map_stream_with(
        h2,
        node,
        disco,
        serde_json::json!({"Hostname": "x", "NetInfo": {"PreferredDERP": 900}}),
    )
    .await
}

/// [`map_stream`] reporting this Hostinfo (e.g. with `RoutableIPs`).
pub async fn map_stream_with(
    h2: &mut H2,
    node: &NodePublic,
    disco: &PrivateKey,
    hostinfo: serde_json::Value,
) -> Frames {
    let body = serde_json::json!({
        "Version": 130, "Compress": "zstd", "KeepAlive": true, "Stream": true,
        "NodeKey": node.to_string(), "DiscoKey": disco.disco_public().to_string(),
        "Hostinfo": hostinfo
    });
    let resp = post(h2, "/machine/map", body).await;
    assert_eq!(resp.status(), 200);
    Frames {
        body: resp.into_body(),
        buf: Vec::new(),
    }
}

pub struct Client {
    pub h2: H2,
    pub node: PrivateKey,
    pub disco: PrivateKey,
}

pub async fn join(s: &impl Target, key: &str, host: &str) -> (Client, wire::RegisterResponse) {
    let mkey = PrivateKey::generate();
    let mut h2 = dial(s, &mkey).await;
    let node = PrivateKey::generate();
    let r = register(&mut h2, &node.node_public(), key, host).await;
    (
        Client {
            h2,
            node,
            disco: PrivateKey::generate(),
        },
        r,
    )
}

pub async fn new_key(s: &Server, reusable: bool) -> String {
    if s.state
        .find_user(&ironscale_types::UserRef::Name("alice".into()))
        .is_err()
    {
        s.state.create_user("alice", "", "").await.unwrap();
    }
    s.state
        .create_preauth_key(
            Some(&ironscale_types::UserRef::Name("alice".into())),
            reusable,
            false,
            None,
            vec![],
        )
        .await
        .unwrap()
        .1
}
