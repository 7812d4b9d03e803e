//! Node lifecycle with real, unmodified `tailscaled` 1.96.4 nodes: `tailscale logout` and logging
//! in again (same node, same IP), `ironscale nodes expire` sending a client back to NeedsLogin,
//! ephemeral nodes deleted at logout and after `node.ephemeral.inactivity_timeout` once their
//! daemon is gone, and SIGHUP (as sent by `systemctl reload`) never stopping the server.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{
    grep_file, lab_with_server, lab_with_server_env, wait_until, Clients, Error, KeyOpts, Lab,
    NodeInfo, Result, ServerProc, Signal, Tailscaled,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn node(lab: &Lab, clients: &Clients, name: &str) -> Tailscaled {
    let host = must(lab.add_host(name));
    must(Tailscaled::start(&host, clients, "ts", &[]))
}

fn key(server: &ServerProc, ephemeral: bool) -> String {
    must(server.create_preauthkey(
        "alice",
        &KeyOpts {
            reusable: true,
            ephemeral,
            expiration: Some("1h".into()),
            ..KeyOpts::default()
        },
    ))
}

fn by_name<'a>(nodes: &'a [NodeInfo], name: &str) -> Option<&'a NodeInfo> {
    nodes
        .iter()
        .find(|n| n.given_name == name || n.name == name)
}

/// The node's `expiry` from `nodes list -o json`, if set.
fn expiry(n: &NodeInfo) -> Option<chrono::DateTime<chrono::Utc>> {
    n.raw
        .get("expiry")
        .and_then(|v| v.as_str())
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
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

/// `tailscale logout`, then logging in again; `nodes expire` from the CLI.
#[test]
fn logout_relogin_and_admin_expiry() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-life",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let a = node(&lab, &clients, "a");
    let b = node(&lab, &clients, "b");
    let k = key(&server, false);
    must(a.up_ok(&url, Some(&k), "a", &[]));
    must(b.up_ok(&url, Some(&k), "b", &[]));
    must(a.wait_running(Duration::from_secs(20)));
    must(b.wait_running(Duration::from_secs(20)));
    let ib = must(b.ip4());
    must(a.wait_peer(ib, true, Duration::from_secs(20)));
    let b_id =
        must(by_name(&must(server.nodes()), "b").ok_or_else(|| Error::msg("b not listed"))).id;

    // `tailscale logout`: the client is logged out, the server expires the node (it stays
    // listed, as Headscale keeps it), and the peer stops treating b as a live peer.
    let out = must(b.cli(&["logout"]));
    assert!(
        out.status.success(),
        "{}",
        b.err(format!(
            "`tailscale logout` failed:\n{}",
            ironscale_testkit::output_text(&out)
        ))
    );
    wait_state(&b, "NeedsLogin", Duration::from_secs(20));
    let nodes = must(server.nodes());
    let nb = by_name(&nodes, "b").unwrap_or_else(|| panic!("b vanished at logout: {nodes:#?}"));
    let exp = expiry(nb).unwrap_or_else(|| panic!("b has no expiry after logout: {}", nb.raw));
    assert!(
        exp <= chrono::Utc::now(),
        "b's expiry {exp} is not in the past after logout"
    );
    must(wait_until(
        "a to see b expired or gone",
        Duration::from_secs(15),
        Duration::from_millis(250),
        || {
            let p = a.peers()?;
            let pb = p.iter().find(|p| p.ips.contains(&ib.to_string()));
            Ok(pb.is_none_or(|p| p.expired).then_some(()))
        },
    ));
    eprintln!("logout: b is NeedsLogin, expired on the server, expired/gone at a");

    // Logging in again (new key, same machine) reuses the node: same id, same IP.
    let k2 = key(&server, false);
    must(b.up_ok(&url, Some(&k2), "b", &[]));
    must(b.wait_running(Duration::from_secs(20)));
    assert_eq!(must(b.ip4()), ib, "b changed its IP when logging in again");
    let nodes = must(server.nodes());
    assert_eq!(
        nodes.len(),
        2,
        "logging in again created a node: {nodes:#?}"
    );
    assert_eq!(by_name(&nodes, "b").map(|n| n.id), Some(b_id));
    must(a.wait_peer(ib, true, Duration::from_secs(20)));
    let pb = must(a.peers())
        .into_iter()
        .find(|p| p.ips.contains(&ib.to_string()));
    assert!(
        pb.as_ref().is_some_and(|p| !p.expired),
        "a still sees b expired after its new login: {pb:?}"
    );
    eprintln!("login again: b Running with the same node id {b_id} and IP {ib}");

    // An administrator expires b: the client is told at once and needs to log in.
    let t0 = Instant::now();
    must(server.cli_ok(&["nodes", "expire", "--identifier", &b_id.to_string()]));
    wait_state(&b, "NeedsLogin", Duration::from_secs(20));
    eprintln!(
        "`nodes expire`: b reached NeedsLogin after {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    assert!(server.is_running());
}

/// The inactivity timeout the ephemeral test runs with.
const EPHEMERAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Ephemeral nodes: deleted when they log out, and after the inactivity timeout once their
/// daemon is gone. SIGHUP without a policy file leaves the server running.
#[test]
fn ephemeral_nodes_are_removed_and_sighup_is_harmless() {
    // The timer logic (deadline exact, reconnect cancels, restart on a later
    // disconnect) is proven in virtual time by `ironscale-state`'s tests; this
    // proves the deletion end to end with real clients, on a short timeout the
    // config would refuse (Headscale's rule: more than 65 s), set by the
    // server's testing variable. The config key is still set and parsed.
    let (clients, lab, server) = must(lab_with_server_env(
        "isi-eph",
        Path::new(BIN),
        serde_json::json!({"node": {"ephemeral": {"inactivity_timeout": "66s"}}}),
        "alice",
        &[(
            "IRONSCALE_TESTING_EPHEMERAL_INACTIVITY_TIMEOUT_MS",
            &EPHEMERAL_TIMEOUT.as_millis().to_string(),
        )],
    ));
    let url = server.url();
    let a = node(&lab, &clients, "a");
    let e1 = node(&lab, &clients, "e1");
    let mut e2 = node(&lab, &clients, "e2");
    let (k, ke) = (key(&server, false), key(&server, true));
    must(a.up_ok(&url, Some(&k), "a", &[]));
    must(e1.up_ok(&url, Some(&ke), "e1", &[]));
    must(e2.up_ok(&url, Some(&ke), "e2", &[]));
    for n in [&a, &e1, &e2] {
        must(n.wait_running(Duration::from_secs(20)));
    }
    let (i1, i2) = (must(e1.ip4()), must(e2.ip4()));
    must(a.wait_peer(i1, true, Duration::from_secs(20)));
    must(a.wait_peer(i2, true, Duration::from_secs(20)));
    let nodes = must(server.nodes());
    assert_eq!(nodes.len(), 3, "{nodes:#?}");
    for name in ["e1", "e2"] {
        let n = by_name(&nodes, name).unwrap_or_else(|| panic!("{name} not listed"));
        assert_eq!(
            n.raw["pre_auth_key"]["ephemeral"],
            serde_json::json!(true),
            "{name} should show its ephemeral key: {}",
            n.raw
        );
    }

    // SIGHUP with no policy file: logged, and the server keeps serving.
    must(server.signal(Signal::SIGHUP));
    must(wait_until(
        "the server to log the SIGHUP",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || Ok((!grep_file(server.log_path(), &["SIGHUP"], 1).is_empty()).then_some(())),
    ));
    assert!(server.is_running(), "SIGHUP stopped the server");

    // An ephemeral node that logs out is deleted at once.
    let out = must(e1.cli(&["logout"]));
    assert!(
        out.status.success(),
        "{}",
        e1.err("`tailscale logout` failed")
    );
    let took = must(a.wait_peer_gone(&i1.to_string(), Duration::from_secs(10)));
    eprintln!(
        "ephemeral e1 logged out: gone from a's status after {:.1}s",
        took.as_secs_f64()
    );
    assert!(
        by_name(&must(server.nodes()), "e1").is_none(),
        "e1 still listed after logging out"
    );

    // An ephemeral node whose daemon goes away is deleted after the inactivity timeout.
    let t0 = Instant::now();
    e2.stop();
    must(wait_until(
        "e2 offline in `nodes list`",
        EPHEMERAL_TIMEOUT,
        Duration::from_millis(100),
        || {
            let nodes = server.nodes()?;
            Ok(by_name(&nodes, "e2")
                .is_some_and(|n| n.online != Some(true))
                .then_some(()))
        },
    ));
    must(a.wait_peer_gone(&i2.to_string(), EPHEMERAL_TIMEOUT + Duration::from_secs(60)));
    let gone = t0.elapsed();
    eprintln!(
        "ephemeral e2 stopped: deleted {:.1}s later",
        gone.as_secs_f64()
    );
    assert!(
        gone >= EPHEMERAL_TIMEOUT,
        "e2 was deleted after {gone:?}, before the {EPHEMERAL_TIMEOUT:?} inactivity timeout"
    );
    let nodes = must(server.nodes());
    assert!(
        by_name(&nodes, "e2").is_none(),
        "e2 still listed: {nodes:#?}"
    );
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
}
