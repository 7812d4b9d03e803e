//! Device approval with real, unmodified `tailscaled` 1.96.4 nodes: with
//! `node.device_approval: true` a node registered with a user's key waits in
//! `NeedsMachineAuth`, has no peers and is seen by none; a node from a tagged
//! key is exempt (`node.device_approval_exempt_tagged_keys`, on by default);
//! `ironscale nodes approve --identifier N` lets the waiting node in without a
//! restart, and TCP crosses the tailnet both ways.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{
    lab_with_server, output_text, wait_until, Error, KeyOpts, Result, Tailscaled,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until the client's backend state is `want`.
fn wait_state(n: &Tailscaled, want: &str, timeout: Duration) {
    must(
        wait_until(
            &format!("{} to reach {want}", n.name()),
            timeout,
            Duration::from_millis(250),
            || {
                let st = n.backend_state()?;
                Ok((st == want).then_some(()))
            },
        )
        .map_err(|e| n.err(e)),
    );
}

#[test]
fn an_unapproved_node_is_isolated_until_nodes_approve() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-appr",
        Path::new(BIN),
        serde_json::json!({"node": {"device_approval": true}}),
        "alice",
    ));
    let url = server.url();
    let ha = must(lab.add_host("a"));
    let hb = must(lab.add_host("b"));
    let a = must(Tailscaled::start(&ha, &clients, "ts", &[]));
    let b = must(Tailscaled::start(&hb, &clients, "ts", &[]));

    // b joins with a tagged key: exempt, it runs at once.
    let tagged = must(server.create_preauthkey(
        "alice",
        &KeyOpts {
            reusable: true,
            expiration: Some("1h".into()),
            tags: vec!["tag:server".into()],
            ..KeyOpts::default()
        },
    ));
    must(b.up_ok(&url, Some(&tagged), "b", &[]));
    let ib = must(b.ip4());

    let user_key = must(server.reusable_key("alice"));
    std::thread::scope(|s| {
        // a joins with a user's key: registered, but it waits for approval.
        let up = s.spawn(|| a.up(&url, Some(&user_key), "a", &["--timeout=90s"]));
        wait_state(&a, "NeedsMachineAuth", Duration::from_secs(30));
        let nodes = must(server.nodes());
        let na = nodes
            .iter()
            .find(|n| n.given_name == "a")
            .ok_or_else(|| Error::msg(format!("a not listed: {nodes:#?}")));
        let na = must(na);
        let ia = must(
            na.ipv4()
                .ok_or_else(|| Error::msg(format!("a has no IPv4: {:?}", na.raw))),
        );
        // b is Running and up to date (it was told of a's registration at
        // once if it could see a): it lists no a; a lists no one.
        assert!(
            must(b.peers()).iter().all(|p| !p.ips.contains(&ia)),
            "b must not see the unapproved node:\n{}",
            must(b.status_text())
        );
        assert!(
            must(a.peers()).is_empty(),
            "an unapproved node has no peers:\n{}",
            must(a.status_text())
        );

        // An unknown node: a clear message, exit status 1, nothing changes.
        let bad = must(server.cli(&["nodes", "approve", "--identifier", "999"]));
        assert_eq!(bad.status.code(), Some(1), "{}", output_text(&bad));
        assert!(
            output_text(&bad).contains("not found"),
            "{}",
            output_text(&bad)
        );
        assert_eq!(must(a.backend_state()), "NeedsMachineAuth");

        let t0 = Instant::now();
        let out = must(server.cli_ok(&["nodes", "approve", "--identifier", &na.id.to_string()]));
        assert!(out.contains("approved"), "{out}");
        must(a.wait_running(Duration::from_secs(30)));
        eprintln!(
            "a reached Running {:.1}s after `nodes approve`",
            t0.elapsed().as_secs_f64()
        );
        let up = must(
            up.join()
                .unwrap_or_else(|_| panic!("the `tailscale up` thread panicked")),
        );
        eprintln!(
            "`tailscale up` of a: {} {}",
            up.status,
            output_text(&up).trim()
        );
        assert!(
            up.status.success() && output_text(&up).contains("approve your machine"),
            "the waiting `tailscale up` asks for approval and completes after it: {}",
            output_text(&up)
        );
    });

    // Both directions work now.
    let ia = must(a.ip4());
    must(a.wait_peer(ib, true, Duration::from_secs(30)));
    must(b.wait_peer(ia, true, Duration::from_secs(30)));
    let _echo_b = must(b.host().tcp_echo("echo-b", ib, 7000));
    let _echo_a = must(a.host().tcp_echo("echo-a", ia, 7001));
    assert_eq!(
        must(a.host().tcp_roundtrip(Some(ia), ib, 7000, "a-to-b")),
        format!("echo from {ib} to {ia}: a-to-b")
    );
    assert_eq!(
        must(b.host().tcp_roundtrip(Some(ib), ia, 7001, "b-to-a")),
        format!("echo from {ia} to {ib}: b-to-a")
    );
}
