//! `ironscale doctor` on a lab tailnet of real, unmodified `tailscaled` 1.96.4 nodes: healthy,
//! it finds nothing (exit 0); a node advertising a subnet route nobody approved, a node whose key
//! was expired, and a node that stopped each give their finding with the fixing command (exit 1);
//! after the fix the finding is gone.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::Duration;

use ironscale_testkit::{lab_with_server, output_text, wait_until, Result, Tailscaled};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn doctor_finds_real_problems_with_their_fixes_and_nothing_on_a_healthy_tailnet() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-doctor",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let key = must(server.reusable_key("alice"));
    let ha = must(lab.add_host("a"));
    let hb = must(lab.add_host("b"));
    let hc = must(lab.add_host("c"));
    let a = must(Tailscaled::start(&ha, &clients, "ts", &[]));
    let b = must(Tailscaled::start(&hb, &clients, "ts", &[]));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &[]));
    must(a.up_ok(&url, Some(&key), "a", &[]));
    must(b.up_ok(&url, Some(&key), "b", &[]));
    must(c.up_ok(&url, Some(&key), "c", &[]));
    let doctor = |args: &[&str]| {
        let out = must(server.cli(&[&["doctor", "-o", "json"], args].concat()));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            out.status.success(),
            v["findings"].as_array().cloned().unwrap_or_default(),
            output_text(&out),
        )
    };
    // Healthy: every node online, with NetInfo (UDP, an easy NAT on the lab's L2, home DERP
    // close by) and endpoints. Their first reports take a moment.
    must(wait_until(
        "a healthy tailnet to give no findings",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let (ok, f, _) = doctor(&[]);
            Ok((ok && f.is_empty()).then_some(()))
        },
    ));
    // policy explain through the CLI (no policy here: allow all), and a clear error for a typo.
    let e = must(server.cli(&["policy", "explain", "--src", "a", "--dst", "b:22"]));
    assert!(
        output_text(&e).contains("no policy is in force"),
        "{}",
        output_text(&e)
    );
    let e = must(server.cli(&["policy", "explain", "--src", "nope", "--dst", "b:22"]));
    assert!(
        !e.status.success() && output_text(&e).contains("\"nope\" is no node"),
        "{}",
        output_text(&e)
    );
    let table = must(server.cli(&["doctor"]));
    assert!(table.status.success());
    assert!(
        output_text(&table).contains("No problems found"),
        "{}",
        output_text(&table)
    );

    // a advertises a subnet route nobody approved; b's key is expired; c stops.
    must(a.up_ok(&url, None, "a", &["--advertise-routes=10.77.0.0/24"]));
    let nodes = must(server.nodes());
    let id = |n: &str| {
        nodes
            .iter()
            .find(|x| x.given_name == n)
            .map(|x| x.id)
            .unwrap_or_else(|| panic!("{nodes:#?}"))
    };
    let (ia, ib, ic) = (id("a"), id("b"), id("c"));
    must(server.cli_ok(&["nodes", "expire", "-i", &ib.to_string()]));
    must(c.cli(&["down"]));
    let findings = must(wait_until(
        "the doctor to see all three",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let (ok, f, _) = doctor(&[]);
            let has = |node: u64, code: &str| {
                f.iter().any(|x| {
                    x["node_id"].as_str() == Some(node.to_string().as_str()) && x["code"] == code
                })
            };
            Ok((!ok
                && has(ia, "route-not-approved")
                && has(ib, "key-expired")
                && has(ic, "offline"))
            .then_some(f))
        },
    ));
    let fix = |code: &str| {
        findings
            .iter()
            .find(|x| x["code"] == code)
            .and_then(|x| x["fix"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        fix("route-not-approved").starts_with(&format!(
            "ironscale nodes approve-routes -i {ia} -r 10.77.0.0/24"
        )),
        "{findings:#?}"
    );
    assert!(
        fix("key-expired").contains(&format!("tailscale up --login-server={url}")),
        "{findings:#?}"
    );
    // One node only.
    let (_, only_a, _) = doctor(&["--node", &ia.to_string()]);
    assert!(
        only_a
            .iter()
            .all(|x| x["node_id"].as_str() == Some(ia.to_string().as_str())),
        "{only_a:#?}"
    );

    // The fix the doctor gave, run as given, makes the finding go away.
    let approve: Vec<String> = fix("route-not-approved")
        .split(" (")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    let args: Vec<&str> = approve.iter().map(String::as_str).collect();
    must(server.cli_ok(&args));
    let (_, after, text) = doctor(&[]);
    assert!(
        !after.iter().any(|x| x["code"] == "route-not-approved"),
        "{text}"
    );
}
