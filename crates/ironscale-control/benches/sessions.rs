//! Full-stack control benchmark: N clients, each over its own ts2021 Noise
//! connection with HTTP/2 inside, register with a pre-auth key (SQLite store)
//! and hold a streaming map session, against one in-process server on
//! loopback. It prints, at N = 100, 500 and 1000 (`IRONSCALE_BENCH_NODES`
//! overrides, comma-separated):
//!
//! * registration: all N joins (handshake + RegisterRequest), 32 at a time;
//! * reconnect storm: all N open their map streams at once (as after a
//!   server restart), until every one has its first full map;
//! * fan-out: one node's endpoint change (a lite MapRequest) until every other
//!   session has received the patch, min/median over several changes;
//! * memory: the server's resident set once streaming, and its peak.
//!
//! The server runs in a child process (this binary again, with
//! `IRONSCALE_BENCH_CHILD=1`), so its memory is its own; the clients share the
//! machine's 2 cores with it, so the times include client-side work and are
//! upper bounds.
//! `cargo bench -p ironscale-control --bench sessions`.
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

#[path = "../tests/support/client.rs"]
mod client;

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::*;
use ironscale_wire as wire;
use tokio::sync::mpsc;

/// A `/proc/<pid>/status` figure in MiB (`VmRSS`, `VmHWM`).
fn status_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// What a session reader reports: (session index, first frame?, frame).
type Event = (usize, bool, wire::MapResponse);

async fn run(n: usize, ep: Endpoint, key: String, server_pid: u32) {
    let rss_mib = || status_mib(server_pid, "VmRSS");

    // Registration, 32 at a time.
    let t0 = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(32));
    let mut joins = Vec::new();
    for i in 0..n {
        let key = key.clone();
        let sem = sem.clone();
        joins.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let (c, r) = join(&ep, &key, &format!("n{i}")).await;
            assert!(r.machine_authorized, "{:?}", r.error);
            c
        }));
    }
    let mut clients = Vec::new();
    for j in joins {
        clients.push(j.await.unwrap());
    }
    let reg = t0.elapsed();
    let rss_registered = rss_mib();

    // Map streams, all opened at once (as after a server restart); a reader
    // task per session forwards every update. The first (full) map is only
    // counted, and parsed for session 0 (whose node id the fan-out needs), so
    // that client-side decoding stays small next to the server's work.
    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    let t1 = Instant::now();
    let mut mover_id = 0i64;
    let mut clients = clients.into_iter();
    let mut mover = clients.next().unwrap();
    let read = |i: usize, mut frames: Frames, tx: mpsc::UnboundedSender<Event>| async move {
        let mut first = true;
        while let Some(json) = frames.next_json_within(Duration::from_secs(600)).await {
            let f = if first && i != 0 {
                // Only its arrival matters.
                wire::MapResponse::keep_alive()
            } else {
                serde_json::from_slice::<wire::MapResponse>(&json).unwrap()
            };
            let was_first = std::mem::replace(&mut first, false);
            if (was_first || !f.keep_alive) && tx.send((i, was_first, f)).is_err() {
                return;
            }
        }
    };
    let frames0 = map_stream(&mut mover.h2, &mover.node.node_public(), &mover.disco).await;
    tokio::spawn(read(0, frames0, tx.clone()));
    for (i, mut c) in clients.enumerate() {
        let tx = tx.clone();
        tokio::spawn(async move {
            let frames = map_stream(&mut c.h2, &c.node.node_public(), &c.disco).await;
            read(i + 1, frames, tx).await;
            drop(c);
        });
    }
    drop(tx);
    let mut firsts = 0;
    while firsts < n {
        let (i, first, f) = rx.recv().await.unwrap();
        if first {
            if i == 0 {
                mover_id = f.node.as_ref().expect("first frame is a full map").id;
            }
            firsts += 1;
        }
    }
    let initial = t1.elapsed();
    let rss_streaming = rss_mib();
    // Let the online patches of the join wave settle.
    while tokio::time::timeout(Duration::from_millis(1500), rx.recv())
        .await
        .is_ok()
    {}

    // Fan-out of one endpoint change from session 0.
    let mover = &mut mover;
    let mut times = Vec::new();
    for round in 0..7u16 {
        let ep = format!("192.0.2.{}:{}", 1 + round, 40000 + round);
        let body = serde_json::json!({
            "Version": 130, "Compress": "zstd", "Stream": false, "OmitPeers": true,
            "NodeKey": mover.node.node_public().to_string(),
            "DiscoKey": mover.disco.disco_public().to_string(),
            "Endpoints": [ep], "EndpointTypes": [2],
            "Hostinfo": {"Hostname": "n0", "NetInfo": {"PreferredDERP": 900}}
        });
        let t = Instant::now();
        let r = post(&mut mover.h2, "/machine/map", body).await;
        assert_eq!(r.status(), 200);
        let mut seen = vec![false; n];
        seen[0] = true;
        let mut left = n - 1;
        while left > 0 {
            let (i, _, f) = tokio::time::timeout(Duration::from_secs(30), rx.recv())
                .await
                .expect("fan-out stalled")
                .unwrap();
            let got = f.peers_changed_patch.iter().flatten().any(|p| {
                p.node_id == mover_id && p.endpoints.as_ref().is_some_and(|e| e.contains(&ep))
            }) || f
                .peers_changed
                .iter()
                .flatten()
                .any(|p| p.id == mover_id && p.endpoints.contains(&ep));
            if got && !seen[i] {
                seen[i] = true;
                left -= 1;
            }
        }
        times.push(t.elapsed());
        // The mover's own echo and stragglers.
        while tokio::time::timeout(Duration::from_millis(200), rx.recv())
            .await
            .is_ok()
        {}
    }
    let min = *times.iter().min().unwrap();
    let med = median(&mut times);
    println!(
        "n={n:>5}  register all: {:>8.1} ms ({:>6.0}/s)  all maps after a reconnect storm: {:>8.1} ms  \
         endpoint change to {} sessions: min {:>6.1} ms median {:>6.1} ms  \
         server RSS registered {:>6.1} / streaming {:>6.1} / end {:>6.1} MiB, peak {:>6.1} MiB",
        reg.as_secs_f64() * 1e3,
        n as f64 / reg.as_secs_f64(),
        initial.as_secs_f64() * 1e3,
        n - 1,
        min.as_secs_f64() * 1e3,
        med.as_secs_f64() * 1e3,
        rss_registered,
        rss_streaming,
        rss_mib(),
        status_mib(server_pid, "VmHWM"),
    );
}

/// The child: an in-process server on loopback; prints `ADDR MKEY PREAUTHKEY`
/// and serves until its stdin closes.
fn child(rt: &tokio::runtime::Runtime) {
    rt.block_on(async {
        let s = start().await;
        let key = new_key(&s, true).await;
        println!("{} {} {key}", s.addr, s.server_pub);
        let mut stdin = tokio::io::stdin();
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut stdin, &mut sink).await;
    });
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    if std::env::var_os("IRONSCALE_BENCH_CHILD").is_some() {
        return child(&rt);
    }
    let sizes: Vec<usize> = std::env::var("IRONSCALE_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![100, 500, 1000]);
    println!(
        "control sessions over ts2021 (Noise + HTTP/2 + zstd), SQLite store, allow-all policy"
    );
    for n in sizes {
        let mut server = std::process::Command::new(std::env::current_exe().unwrap())
            .env("IRONSCALE_BENCH_CHILD", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(server.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let mut parts = line.split_whitespace();
        let ep = Endpoint {
            addr: parts.next().unwrap().parse().unwrap(),
            server_pub: parts.next().unwrap().parse().unwrap(),
        };
        let key = parts.next().unwrap().to_string();
        rt.block_on(run(n, ep, key, server.id()));
        drop(server.stdin.take());
        let _ = server.wait();
    }
}
