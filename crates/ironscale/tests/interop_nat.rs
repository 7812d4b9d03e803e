//! NAT traversal with real `tailscaled` 1.96.4 nodes behind NAT routers (the NAT lab of
//! `real-clients.md` §5): nodes learn their public address from our STUN server, report it to
//! the control server, which hands it to their peers; the peers then punch through and talk
//! directly, never touching the relay. A node behind a symmetric NAT still reaches the others,
//! through our DERP relay when no direct path exists.
//!
//! Needs root (network namespaces, TUN, nftables); see `ironscale-testkit`.

use std::path::Path;
use std::time::Duration;

use ironscale_testkit::{
    lab_with_server, output_text, Clients, Host, Lab, Nat, Result, Tailscaled, DERP_REGION_CODE,
    METRICS_PORT,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn daemon(host: &Host, clients: &Clients) -> Tailscaled {
    must(Tailscaled::start(host, clients, "ts", &[]))
}

/// `tailscale ping` until a direct pong; returns the output, which must show a direct path
/// through `via` (the peer's public address as its NAT router maps it).
fn ping_direct(from: &Tailscaled, to: std::net::Ipv4Addr, via: std::net::Ipv4Addr) -> String {
    let out = must(from.ping(&to.to_string(), &["-c", "30"]));
    let t = output_text(&out);
    eprintln!("[{}] tailscale ping {to}:\n{t}", from.name());
    let direct = t
        .lines()
        .any(|l| l.contains("pong from") && l.contains(&format!("via {via}:")));
    assert!(
        out.status.success() && direct,
        "{}",
        from.err(format!("no direct pong from {to} via {via}:\n{t}"))
    );
    t
}

#[test]
fn nat_traversal_goes_direct_and_symmetric_nat_falls_back_to_derp() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-nat",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let k = must(server.reusable_key("alice"));

    let pub_host = must(lab.add_host("pub"));
    let e1 = must(lab.add_nat_host("e1", Nat::Easy));
    let e2 = must(lab.add_nat_host("e2", Nat::Easy));
    let h1 = must(lab.add_nat_host("h1", Nat::Hard));
    let p = daemon(&pub_host, &clients);
    let n1 = daemon(&e1.host, &clients);
    let n2 = daemon(&e2.host, &clients);
    let nh = daemon(&h1.host, &clients);
    for (n, name) in [(&p, "pub"), (&n1, "e1"), (&n2, "e2"), (&nh, "h1")] {
        must(n.up_ok(&url, Some(&k), name, &[]));
    }
    for n in [&p, &n1, &n2, &nh] {
        must(n.wait_running(Duration::from_secs(30)));
    }
    let (ip_p, ip1, ip2, iph) = (
        must(p.ip4()),
        must(n1.ip4()),
        must(n2.ip4()),
        must(nh.ip4()),
    );
    for n in [&p, &n1, &n2, &nh] {
        for peer in [ip_p, ip1, ip2, iph] {
            if Some(peer) != n.ip4().ok() {
                must(n.wait_peer(peer, true, Duration::from_secs(30)));
            }
        }
    }

    // The public node reaches e1 directly at e1's router address: an endpoint e1 could only
    // have learned from our STUN server and that only our map could have told the public node.
    ping_direct(&p, ip1, e1.router.ip());
    // Two nodes behind separate easy NATs punch through to each other.
    ping_direct(&n1, ip2, e2.router.ip());
    ping_direct(&n2, ip1, e1.router.ip());
    // And carry TCP over that path.
    let _echo = must(e2.host.tcp_echo("echo", ip2, 7000));
    let reply = must(
        e1.host
            .tcp_roundtrip(Some(ip1), ip2, 7000, "through-two-nats"),
    );
    assert_eq!(reply, format!("echo from {ip2} to {ip1}: through-two-nats"));

    // Behind a symmetric NAT, h1 still reaches e1, and only through our DERP relay: its NAT
    // gives every destination a new port, so the endpoint our STUN server saw is no use to e1,
    // and e1's NAT drops h1's packets from any other port.
    let relayed_before = derp_packets_relayed(&lab);
    let out = must(nh.ping(&ip1.to_string(), &["-c", "10"]));
    let t = output_text(&out);
    eprintln!("[h1] tailscale ping {ip1} (symmetric NAT):\n{t}");
    let pongs: Vec<&str> = t.lines().filter(|l| l.contains("pong from")).collect();
    let via_derp = format!("via DERP({DERP_REGION_CODE})");
    assert!(
        !pongs.is_empty(),
        "{}",
        nh.err(format!("h1 got no pong from e1:\n{t}"))
    );
    assert!(
        pongs.iter().all(|l| l.contains(&via_derp)),
        "{}",
        nh.err(format!(
            "behind a symmetric NAT every pong must come {via_derp}, some did not:\n{t}"
        ))
    );
    let _echo1 = must(e1.host.tcp_echo("echo", ip1, 7001));
    let reply = must(
        h1.host
            .tcp_roundtrip(Some(iph), ip1, 7001, "from-symmetric-nat"),
    );
    assert_eq!(
        reply,
        format!("echo from {ip1} to {iph}: from-symmetric-nat")
    );
    // After that traffic, h1's client still has no direct path to e1 and names our region
    // as e1's relay, and our relay carried packets meanwhile.
    let peer = must(nh.wait_peer(ip1, true, Duration::from_secs(5)));
    assert!(
        peer.cur_addr.is_empty(),
        "{}",
        nh.err(format!(
            "h1 has a direct path to e1 behind a symmetric NAT: {peer:?}"
        ))
    );
    assert_eq!(peer.relay, DERP_REGION_CODE, "{peer:?}");
    let relayed_after = derp_packets_relayed(&lab);
    assert!(
        relayed_after > relayed_before,
        "our DERP relay carried nothing while h1 talked to e1 ({relayed_before} -> {relayed_after})"
    );
}

/// `ironscale_derp_packets_relayed_total` from the server's `/metrics`.
fn derp_packets_relayed(lab: &Lab) -> u64 {
    let name = "ironscale_derp_packets_relayed_total";
    let metrics = must(lab.hub().http_get(
        &format!("http://{}:{METRICS_PORT}/metrics", lab.hub_ip()),
        Duration::from_secs(5),
    ));
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /metrics:\n{metrics}"))
}
