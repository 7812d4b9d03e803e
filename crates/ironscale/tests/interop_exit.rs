//! An exit node with real, unmodified `tailscaled` 1.96.4 nodes: `--advertise-exit-node` on a
//! node with forwarding on, approved with the seed's `nodes routes enable --route 0.0.0.0/0`
//! (which approves ::/0 with it); a peer's `tailscale set --exit-node=… --exit-node-allow-lan-access=true`
//! sends its traffic for a host outside the tailnet through the exit node (the host sees it
//! arrive from the exit node's uplink address), while the peer's LAN stays reachable directly.
//!
//! Lab detail: tailscaled refuses to forward to a subnet attached to the exit node itself (its
//! "guest wifi" rule), so the exit node's uplink to the outside host is a point-to-point link
//! (`ip addr add A peer B`), not a shared /24.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{
    install_clients, lab_with_server, output_text, require_root, Host, KeyOpts, Lab, Result,
    ServerProc, Tailscaled,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");
const UPLINK: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The outside host `o`, reachable only over exit host `x`'s point-to-point uplink, with an
/// echo server; forwarding on in `x`.
fn outside_world(hx: &Host, ho: &Host) -> ironscale_testkit::Proc {
    must(hx.exec_ok(
        "ip",
        &[
            "link",
            "add",
            "up0",
            "type",
            "veth",
            "peer",
            "name",
            "dn0",
            "netns",
            ho.ns(),
        ],
    ));
    must(hx.exec_ok(
        "ip",
        &[
            "addr",
            "add",
            &UPLINK.to_string(),
            "peer",
            &OUTSIDE.to_string(),
            "dev",
            "up0",
        ],
    ));
    must(hx.exec_ok("ip", &["link", "set", "up0", "up"]));
    must(ho.exec_ok(
        "ip",
        &[
            "addr",
            "add",
            &OUTSIDE.to_string(),
            "peer",
            &UPLINK.to_string(),
            "dev",
            "dn0",
        ],
    ));
    must(ho.exec_ok("ip", &["link", "set", "dn0", "up"]));
    must(hx.exec_ok("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]));
    must(hx.exec_ok("sysctl", &["-q", "-w", "net.ipv6.conf.all.forwarding=1"]));
    must(ho.tcp_echo("echo", OUTSIDE, 7000))
}

/// `tailscale set --exit-node=<ip> --exit-node-allow-lan-access=true`.
fn exit_node_args(ix: Ipv4Addr) -> [String; 3] {
    [
        "set".into(),
        format!("--exit-node={ix}"),
        "--exit-node-allow-lan-access=true".into(),
    ]
}

/// [`exit_node_args`] retried until the exit node is offered.
fn use_exit_node(c: &Tailscaled, ix: Ipv4Addr) {
    let args = exit_node_args(ix);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    loop {
        let out = must(c.cli(&args));
        if out.status.success() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "exit node never offered: {}",
            output_text(&out)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The reply of the outside host once it is reached (retried up to 30 s).
fn reach_outside(hc: &Host, payload: &str) -> String {
    let t0 = Instant::now();
    loop {
        match hc.tcp_roundtrip(None, OUTSIDE, 7000, payload) {
            Ok(r) if r.contains(payload) => return r,
            _ => {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "the outside host was not reached through the exit node"
                );
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    }
}

/// The seed's enterprise intent: `group:clients` may reach only `autogroup:internet:*`; a
/// client reaches the outside host through the (tagged, auto-approved) exit node but cannot
/// reach an admin's node, which can reach the client.
#[test]
fn clients_reach_only_the_internet_through_the_exit_node() {
    must(require_root());
    let clients = must(install_clients());
    let lab = must(Lab::new("isi-ent"));
    let policy = lab.dir().join("policy.hujson");
    std::fs::write(
        &policy,
        r#"{
  "groups": { "group:admin": ["admin@"], "group:clients": ["clients@"] },
  "tagOwners": { "tag:exit-node": ["group:admin"] },
  "acls": [
    {"action": "accept", "src": ["group:admin"], "dst": ["*:*"]},
    {"action": "accept", "src": ["group:clients"], "dst": ["autogroup:internet:*"]},
  ],
  "autoApprovers": { "exitNode": ["tag:exit-node"] },
}
"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = must(ServerProc::start(
        &lab,
        Some(Path::new(BIN)),
        serde_json::json!({"policy": {"mode": "file", "path": policy.to_string_lossy()}}),
    ));
    must(server.create_user("admin"));
    must(server.create_user("clients"));
    let opts = |tags: Vec<String>| KeyOpts {
        reusable: true,
        tags,
        ..KeyOpts::default()
    };
    let kadm = must(server.create_preauthkey("admin", &opts(vec![])));
    let kcli = must(server.create_preauthkey("clients", &opts(vec![])));
    let kexit = must(server.create_preauthkey("admin", &opts(vec!["tag:exit-node".into()])));
    let url = server.url();

    let hx = must(lab.add_host("x"));
    let ho = must(lab.add_host("o"));
    let _outside = outside_world(&hx, &ho);
    let x = must(Tailscaled::start(&hx, &clients, "ts", &[]));
    must(x.up_ok(&url, Some(&kexit), "x", &["--advertise-exit-node"]));
    let ha = must(lab.add_host("adm"));
    let a = must(Tailscaled::start(&ha, &clients, "ts", &[]));
    must(a.up_ok(&url, Some(&kadm), "adm", &[]));
    let hc = must(lab.add_host("cli"));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &[]));
    must(c.up_ok(&url, Some(&kcli), "cli", &[]));
    let (ix, ia, ic) = (must(x.ip4()), must(a.ip4()), must(c.ip4()));

    // autoApprovers approved the tagged exit node; the client uses it for the internet.
    use_exit_node(&c, ix);
    let reply = reach_outside(&hc, "client-out");
    assert_eq!(
        reply,
        format!("echo from {OUTSIDE} to {UPLINK}: client-out")
    );
    // The client may not reach the admin's node; the admin reaches the client.
    let _echo_a = must(ha.tcp_echo("echo", ia, 7002));
    let _echo_c = must(hc.tcp_echo("echo", ic, 7003));
    assert!(
        hc.tcp_roundtrip(Some(ic), ia, 7002, "client-to-admin")
            .is_err(),
        "a client reached an admin's node"
    );
    let t0 = Instant::now();
    loop {
        if ha
            .tcp_roundtrip(Some(ia), ic, 7003, "admin-to-client")
            .is_ok_and(|r| r.contains("admin-to-client"))
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "the admin could not reach the client"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn a_peer_reaches_the_outside_through_an_approved_exit_node() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-exit",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let key = must(server.reusable_key("alice"));

    // The outside host, reachable only over the exit node's point-to-point uplink.
    let hx = must(lab.add_host("x"));
    let ho = must(lab.add_host("o"));
    let _outside = outside_world(&hx, &ho);
    // A LAN neighbour of the peer (on the lab subnet, not in the tailnet).
    let hl = must(lab.add_host("lan"));
    let _lan = must(hl.tcp_echo("echo", hl.ip(), 7001));

    let x = must(Tailscaled::start(&hx, &clients, "ts", &[]));
    must(x.up_ok(&url, Some(&key), "x", &["--advertise-exit-node"]));
    let hc = must(lab.add_host("c"));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &[]));
    must(c.up_ok(&url, Some(&key), "c", &[]));
    let ix = must(x.ip4());

    // Not yet approved: the peer cannot pick it.
    let args = exit_node_args(ix);
    let early = must(c.cli(&args.iter().map(String::as_str).collect::<Vec<_>>()));
    assert!(
        !early.status.success(),
        "an unapproved exit node was accepted: {}",
        output_text(&early)
    );
    assert!(
        hc.tcp_roundtrip(None, OUTSIDE, 7000, "too-early").is_err(),
        "the outside host is reachable without an exit node"
    );

    let id = must(server.nodes())
        .into_iter()
        .find(|n| n.given_name == "x")
        .map(|n| n.id)
        .unwrap_or_else(|| panic!("x not listed"));
    must(server.cli_ok(&[
        "nodes",
        "routes",
        "enable",
        "--identifier",
        &id.to_string(),
        "--route",
        "0.0.0.0/0",
    ]));
    let routes = must(server.cli_ok(&[
        "nodes",
        "list-routes",
        "--identifier",
        &id.to_string(),
        "-o",
        "json",
    ]));
    assert!(
        routes.contains("0.0.0.0/0") && routes.contains("::/0"),
        "{routes}"
    );

    // The peer learns the exit node, selects it, and its traffic leaves through it.
    use_exit_node(&c, ix);
    let t0 = Instant::now();
    let reply = reach_outside(&hc, "via-exit");
    eprintln!(
        "outside host reached through the exit node after {:.1}s: {reply}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        reply,
        format!("echo from {OUTSIDE} to {UPLINK}: via-exit"),
        "the outside host must see the traffic arrive from the exit node's uplink"
    );
    // The LAN stays reachable directly (allow-lan-access): the neighbour sees the peer's own address.
    let lan = must(hc.tcp_roundtrip(None, hl.ip(), 7001, "lan"));
    assert_eq!(lan, format!("echo from {} to {}: lan", hl.ip(), hc.ip()));
}
