//! Subnet routers and HA failover with real, unmodified `tailscaled` 1.96.4 nodes. Two routers
//! advertise 10.77.0.0/24, a network that exists only inside each router's namespace (10.77.0.1 on its
//! loopback with a TCP echo server on it); a client with `--accept-routes`
//! reaches it through the primary. Before approval it cannot; after `nodes routes enable` it
//! can. When the primary's tailscaled is stopped, and (second test) when the primary vanishes
//! silently (every packet dropped in its namespace: no FIN, no RST, its tailscaled still
//! running), the client reaches the subnet again through the second router; each test prints
//! the seconds it took and checks the route listing names the router that serves.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{
    lab_with_server, output_text, Clients, Host, Lab, Result, ServerProc, Tailscaled,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");
const SUBNET: &str = "10.77.0.0/24";
const TARGET: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A router: the subnet on a dummy interface, an echo server on it, tailscaled advertising it.
fn router(
    lab: &Lab,
    clients: &Clients,
    server: &ServerProc,
    key: &str,
    name: &str,
) -> (Tailscaled, ironscale_testkit::Proc) {
    let h = must(lab.add_host(name));
    // The subnet's host lives on the router itself (this kernel has no dummy interfaces).
    must(h.exec_ok("ip", &["addr", "add", "10.77.0.1/32", "dev", "lo"]));
    let echo = must(h.tcp_echo("echo", TARGET, 7000));
    let t = must(Tailscaled::start(&h, clients, "ts", &[]));
    must(t.up_ok(
        &server.url(),
        Some(key),
        name,
        &[&format!("--advertise-routes={SUBNET}")],
    ));
    (t, echo)
}

fn node_id(server: &ServerProc, name: &str) -> u64 {
    must(server.nodes())
        .into_iter()
        .find(|n| n.given_name == name)
        .unwrap_or_else(|| panic!("{name} not listed"))
        .id
}

/// Whether the client reaches the subnet host now.
fn reaches(client: &Host) -> bool {
    client
        .tcp_roundtrip(None, TARGET, 7000, "via-subnet")
        .is_ok_and(|r| r.contains("via-subnet"))
}

/// Seconds until the client reaches the subnet again (panics after `limit`).
fn time_to_reach(client: &Host, limit: Duration, what: &str) -> f64 {
    let t0 = Instant::now();
    loop {
        if reaches(client) {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < limit,
            "{what}: the subnet was not reachable again within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node the route listing says serves the subnet.
fn serving(server: &ServerProc) -> Vec<String> {
    let out = must(server.cli_ok(&["nodes", "list-routes", "-o", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|n| {
            n["subnet_routes"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x == SUBNET))
        })
        .filter_map(|n| n["given_name"].as_str().map(str::to_string))
        .collect()
}

struct Setup {
    _lab: Lab,
    server: ServerProc,
    r1: Tailscaled,
    r2: Tailscaled,
    client: Tailscaled,
    _echo: Vec<ironscale_testkit::Proc>,
}

fn setup(prefix: &str) -> Setup {
    let (clients, lab, server) = must(lab_with_server(
        prefix,
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let key = must(server.reusable_key("alice"));
    let (r1, e1) = router(&lab, &clients, &server, &key, "r1");
    let (r2, e2) = router(&lab, &clients, &server, &key, "r2");
    let hc = must(lab.add_host("c"));
    let client = must(Tailscaled::start(&hc, &clients, "ts", &[]));
    must(client.up_ok(&server.url(), Some(&key), "c", &["--accept-routes"]));
    Setup {
        _lab: lab,
        server,
        r1,
        r2,
        client,
        _echo: vec![e1, e2],
    }
}

/// Approval gates the route; the primary serves; stopping it fails over to the second router.
#[test]
fn a_subnet_router_is_approved_then_fails_over_when_stopped() {
    let mut s = setup("isi-ha");
    let c = s.client.host().clone();
    assert!(!reaches(&c), "the subnet is reachable before any approval");
    let (id1, id2) = (node_id(&s.server, "r1"), node_id(&s.server, "r2"));
    must(s.server.cli_ok(&[
        "nodes",
        "routes",
        "enable",
        "--identifier",
        &id1.to_string(),
        "--route",
        SUBNET,
    ]));
    let t = time_to_reach(&c, Duration::from_secs(30), "after enabling r1's route");
    eprintln!("after `nodes routes enable`: reachable in {t:.1}s");
    assert_eq!(serving(&s.server), vec!["r1".to_string()]);
    must(s.server.cli_ok(&[
        "nodes",
        "routes",
        "disable",
        "--identifier",
        &id1.to_string(),
        "--route",
        SUBNET,
    ]));
    let t0 = Instant::now();
    while reaches(&c) {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "still reachable after `routes disable`"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!(
        "after `nodes routes disable`: unreachable in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    for id in [id1, id2] {
        must(s.server.cli_ok(&[
            "nodes",
            "routes",
            "enable",
            "--identifier",
            &id.to_string(),
            "--route",
            SUBNET,
        ]));
    }
    time_to_reach(&c, Duration::from_secs(30), "with both routers approved");
    assert_eq!(
        serving(&s.server),
        vec!["r1".to_string()],
        "the lowest id serves first"
    );

    // The primary's tailscaled stops: r2 takes over.
    s.r1.stop();
    let t = time_to_reach(&c, Duration::from_secs(30), "after r1 stopped");
    eprintln!("FAILOVER (primary's tailscaled stopped): subnet reachable again after {t:.1}s");
    assert!(t < 15.0, "failover took {t:.1}s (target: 15 s)");
    assert_eq!(serving(&s.server), vec!["r2".to_string()]);
    drop(s.r2);
}

/// The primary vanishes silently (its namespace drops every packet; no FIN, no RST; its
/// tailscaled keeps running): the health probe notices and r2 takes over.
#[test]
fn a_subnet_router_that_vanishes_silently_is_replaced() {
    let s = setup("isi-hav");
    let c = s.client.host().clone();
    for name in ["r1", "r2"] {
        let id = node_id(&s.server, name);
        must(s.server.cli_ok(&[
            "nodes",
            "routes",
            "enable",
            "--identifier",
            &id.to_string(),
            "--route",
            SUBNET,
        ]));
    }
    time_to_reach(&c, Duration::from_secs(30), "with both routers approved");
    // One of them is primary: r1 (the lower id) unless its control connection flapped while
    // the routes were approved (tailscaled re-dials after a link change in these namespaces),
    // and then r2, which stays primary (the election is sticky). Silence the primary.
    let primary = serving(&s.server);
    assert!(primary == ["r1"] || primary == ["r2"], "{primary:?}");
    let (gone, other) = if primary == ["r1"] {
        (&s.r1, "r2")
    } else {
        (&s.r2, "r1")
    };
    // Silence it: drop everything in and out of its namespace (its links stay up).
    let h1 = gone.host();
    let rules = "table inet vanish {\n chain in { type filter hook input priority -300; policy drop; }\n chain out { type filter hook output priority -300; policy drop; }\n}\n";
    let f = h1.dir().join("vanish.nft");
    std::fs::write(&f, rules).unwrap_or_else(|e| panic!("{e}"));
    let out = must(h1.exec("nft", &["-f", &f.display().to_string()]));
    assert!(out.status.success(), "nft: {}", output_text(&out));
    assert!(
        gone.is_running(),
        "the silenced router's tailscaled must keep running"
    );
    let t = time_to_reach(&c, Duration::from_secs(60), "after the primary vanished");
    eprintln!("FAILOVER (primary vanished silently): subnet reachable again after {t:.1}s");
    assert!(t < 30.0, "silent failover took {t:.1}s (target: 30 s)");
    assert_eq!(serving(&s.server), vec![other.to_string()]);
    drop(s.r2);
}
