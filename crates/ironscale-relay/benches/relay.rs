//! DERP relay benchmark: prints figures, asserts nothing.
//!
//!     cargo bench -p ironscale-relay --bench relay [-- --seconds 5 --rounds 3 --idle 10000]
//!
//! 1. Throughput: one client sends 1,400-byte packets as fast as it can to another through
//!    the relay (TLS both ways, DERP framing), and in the same run the same bytes go through a
//!    plain TLS-terminating TCP forwarder (TLS in, TLS out, no framing): MB/s of each and the
//!    ratio. The server runs in a child process (this binary with `--serve`), so its CPU is
//!    its own; the clients are ours (no WireGuard, no TUN), so they are not the bottleneck.
//! 2. Idle clients: `--idle N` connections that complete the DERP handshake and then wait;
//!    the server's resident memory before and after, per client.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ironscale_derp::{ClientInfo, Frame};
use ironscale_http::{self_signed, serve_tls};
use ironscale_keys::PrivateKey;
use ironscale_relay::client::{pinned_tls_config, DerpClient};
use ironscale_relay::{router, DerpServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PACKET: usize = 1400;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Raise the open-files limit to its hard limit (10k idle clients need 10k descriptors).
fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next().map(str::to_string))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The child: a DERP relay and a TLS forwarder on loopback; prints their ports and fingerprint.
async fn serve() {
    raise_nofile();
    let (tls, fp) = self_signed(&["localhost".into(), "127.0.0.1".into()]).expect("cert");
    let tls = Arc::new(tls);
    let derp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let fwd = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!(
        "{} {} {fp}",
        derp.local_addr().expect("addr").port(),
        fwd.local_addr().expect("addr").port()
    );
    let server = Arc::new(DerpServer::new(PrivateKey::generate()));
    tokio::spawn(serve_tls(
        derp,
        tls.clone(),
        router(server),
        std::future::pending::<()>(),
    ));
    // The forwarder: connections come in pairs, a receiver then a sender whose bytes are
    // copied to it.
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut receiver = None;
    loop {
        let Ok((tcp, _)) = fwd.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let Ok(stream) = acceptor.accept(tcp).await else {
            continue;
        };
        match receiver.take() {
            None => receiver = Some(stream),
            Some(mut rx) => {
                let mut sender = stream;
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sender, &mut rx).await;
                });
            }
        }
    }
}

async fn derp_throughput(addr: SocketAddr, fp: &str, secs: u64) -> f64 {
    let tls = Arc::new(pinned_tls_config(fp).expect("tls"));
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let pb = kb.node_public();
    let mut a = DerpClient::connect_tls(addr, "localhost", tls.clone(), ka, ClientInfo::default())
        .await
        .expect("a");
    let mut b = DerpClient::connect_tls(addr, "localhost", tls, kb, ClientInfo::default())
        .await
        .expect("b");
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let reader = tokio::spawn(async move {
        while let Ok(f) = b.recv().await {
            if let Frame::RecvPacket { packet, .. } = f {
                r.fetch_add(packet.len() as u64, Ordering::Relaxed);
            }
        }
    });
    let payload = Bytes::from(vec![0x42u8; PACKET]);
    // One frame per write and flush, as Tailscale's DERP client sends (a burst of many
    // frames at once would only overflow the receiver's bounded queue, which drops, as
    // derper's does).
    let end = Instant::now() + Duration::from_secs(secs) + Duration::from_millis(500);
    let mut started = None;
    let mut at_start = 0;
    while Instant::now() < end {
        for _ in 0..64 {
            let f = Frame::SendPacket {
                dst: pb,
                packet: payload.clone(),
            };
            if a.send(&f).await.is_err() {
                break;
            }
        }
        if started.is_none() && Instant::now() + Duration::from_secs(secs) >= end {
            started = Some(Instant::now());
            at_start = received.load(Ordering::Relaxed);
        }
    }
    let t = started.map(|s| s.elapsed()).unwrap_or_default();
    let got = received.load(Ordering::Relaxed) - at_start;
    reader.abort();
    got as f64 / t.as_secs_f64().max(1e-9) / 1e6
}

async fn forwarder_throughput(addr: SocketAddr, fp: &str, secs: u64) -> f64 {
    let tls = Arc::new(pinned_tls_config(fp).expect("tls"));
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let connect = || async {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let _ = tcp.set_nodelay(true);
        connector.connect(name.clone(), tcp).await.expect("tls")
    };
    let mut rx = connect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut tx = connect().await;
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = rx.read(&mut buf).await {
            if n == 0 {
                break;
            }
            r.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    let chunk = vec![0x42u8; PACKET];
    let end = Instant::now() + Duration::from_secs(secs) + Duration::from_millis(500);
    let mut started = None;
    let mut at_start = 0;
    while Instant::now() < end {
        for _ in 0..64 {
            if tx.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = tx.flush().await;
        if started.is_none() && Instant::now() + Duration::from_secs(secs) >= end {
            started = Some(Instant::now());
            at_start = received.load(Ordering::Relaxed);
        }
    }
    let t = started.map(|s| s.elapsed()).unwrap_or_default();
    let got = received.load(Ordering::Relaxed) - at_start;
    reader.abort();
    got as f64 / t.as_secs_f64().max(1e-9) / 1e6
}

async fn idle_clients(addr: SocketAddr, fp: &str, n: usize, server_pid: u32) {
    let before = rss_kib(server_pid);
    let tls = Arc::new(pinned_tls_config(fp).expect("tls"));
    let mut clients = Vec::with_capacity(n);
    let start = Instant::now();
    let mut failed = 0;
    for chunk in 0..n.div_ceil(200) {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..200.min(n - chunk * 200) {
            let tls = tls.clone();
            set.spawn(async move {
                DerpClient::connect_tls(
                    addr,
                    "localhost",
                    tls,
                    PrivateKey::generate(),
                    ClientInfo::default(),
                )
                .await
            });
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(c)) => clients.push(c),
                _ => failed += 1,
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = rss_kib(server_pid);
    let per = (after.saturating_sub(before)) as f64 / clients.len().max(1) as f64;
    println!(
        "idle DERP clients: {} connected ({failed} failed) in {:.1} s; server RSS {:.1} MiB -> {:.1} MiB: {per:.1} KiB per client",
        clients.len(),
        start.elapsed().as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    drop(clients);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::args().any(|a| a == "--serve") {
        rt.block_on(serve());
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        // `cargo test --benches` asks a harness=false bench to list its tests.
        return;
    }
    raise_nofile();
    let secs: u64 = arg("--seconds", 5);
    let idle: usize = arg("--idle", 10_000);
    let rounds: usize = arg("--rounds", 3);
    let exe = std::env::current_exe().expect("exe");
    let mut child = std::process::Command::new(exe)
        .arg("--serve")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("ports");
    }
    let mut it = line.split_whitespace();
    let derp_port: u16 = it.next().and_then(|p| p.parse().ok()).expect("port");
    let fwd_port: u16 = it.next().and_then(|p| p.parse().ok()).expect("port");
    let fp = it.next().expect("fingerprint").to_string();
    let pid = child.id();
    rt.block_on(async {
        let derp = SocketAddr::from(([127, 0, 0, 1], derp_port));
        let fwd = SocketAddr::from(([127, 0, 0, 1], fwd_port));
        // Interleaved rounds, the best of each kept (noise on a shared machine only slows).
        let (mut relay, mut forwarder) = (0f64, 0f64);
        for round in 0..rounds {
            let r = derp_throughput(derp, &fp, secs).await;
            let f = forwarder_throughput(fwd, &fp, secs).await;
            println!("  round {}: relay {r:.1} MB/s, forwarder {f:.1} MB/s", round + 1);
            relay = relay.max(r);
            forwarder = forwarder.max(f);
        }
        println!(
            "throughput (best of {rounds}), {PACKET}-byte packets, {secs} s each, one sender -> one receiver on loopback:"
        );
        println!("  DERP relay (TLS, DERP frames):   {relay:8.1} MB/s");
        println!("  TLS forwarder (TLS in, TLS out): {forwarder:8.1} MB/s");
        println!(
            "  relay / forwarder:               {:8.0} %",
            relay / forwarder.max(1e-9) * 100.0
        );
        if idle > 0 {
            idle_clients(derp, &fp, idle, pid).await;
        }
    });
    let _ = child.kill();
    let _ = child.wait();
}
