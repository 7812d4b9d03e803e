//! Interactive registration with real, unmodified `tailscaled` 1.96.4 nodes: `tailscale up`
//! without a key prints our login URL and waits; the operator completes it with the seed's
//! `ironscale nodes register --user U --key <id>` (or Headscale 0.27's `auth register`); the
//! waiting client proceeds without a restart and reaches a peer over the tailnet. An unknown id
//! is refused with a clear message and changes nothing.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{lab_with_server, output_text, wait_until, Error, Result, Tailscaled};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The login URL the waiting client shows (`tailscale status --json` `AuthURL`).
fn wait_auth_url(n: &Tailscaled, timeout: Duration) -> String {
    must(
        wait_until(
            &format!("{} to show a login URL", n.name()),
            timeout,
            Duration::from_millis(200),
            || {
                let st = n.status_json()?;
                let url = st["AuthURL"].as_str().unwrap_or_default().to_string();
                Ok((!url.is_empty()).then_some(url))
            },
        )
        .map_err(|e| n.err(e)),
    )
}

#[test]
fn tailscale_up_without_a_key_waits_until_the_operator_registers_it() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-reg",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let ha = must(lab.add_host("a"));
    let hb = must(lab.add_host("b"));
    let a = must(Tailscaled::start(&ha, &clients, "ts", &[]));
    let b = must(Tailscaled::start(&hb, &clients, "ts", &[]));
    let key = must(server.reusable_key("alice"));
    must(b.up_ok(&url, Some(&key), "b", &[]));
    let ib = must(b.ip4());

    std::thread::scope(|s| {
        // `tailscale up` with no key: it prints the URL and blocks until the login completes.
        let up = s.spawn(|| a.up(&url, None, "laptop", &["--timeout=90s"]));
        let login = wait_auth_url(&a, Duration::from_secs(30));
        let id = login.rsplit('/').next().unwrap_or_default().to_string();
        assert!(
            login.starts_with(&format!("{url}/register/")) && id.len() == 24,
            "unexpected login URL {login:?}"
        );
        eprintln!("login URL: {login}");
        // The page the user opens tells them what the operator runs.
        let page = must(lab.hub().http_get(&login, Duration::from_secs(5)));
        assert!(
            page.contains(&format!("nodes register --user USERNAME --key {id}")),
            "{page}"
        );
        assert!(must(server.nodes())
            .iter()
            .all(|n| n.given_name != "laptop"));

        // A wrong id is refused, clearly, and registers nothing.
        let bad = must(server.cli(&[
            "nodes",
            "register",
            "--user",
            "alice",
            "--key",
            "AAAAAAAAAAAAAAAAAAAAAAAA",
        ]));
        assert!(!bad.status.success(), "{}", output_text(&bad));
        assert!(
            output_text(&bad).to_lowercase().contains("not found")
                || output_text(&bad).to_lowercase().contains("unknown"),
            "{}",
            output_text(&bad)
        );
        assert_eq!(must(server.nodes()).len(), 1);

        // The operator registers it; the waiting `tailscale up` completes on its own.
        let t0 = Instant::now();
        must(server.cli_ok(&["nodes", "register", "--user", "alice", "--key", &id]));
        let out = up
            .join()
            .unwrap_or_else(|_| panic!("the `tailscale up` thread panicked"));
        let out = must(out);
        assert!(
            out.status.success(),
            "{}",
            a.err(format!(
                "`tailscale up` did not complete:\n{}",
                output_text(&out)
            ))
        );
        eprintln!(
            "`tailscale up` completed {:.1}s after `nodes register`",
            t0.elapsed().as_secs_f64()
        );
    });
    must(a.wait_running(Duration::from_secs(20)));
    let ia = must(a.ip4());
    let nodes = must(server.nodes());
    let laptop = nodes
        .iter()
        .find(|n| n.given_name == "laptop")
        .ok_or_else(|| Error::msg(format!("laptop not listed: {nodes:#?}")));
    let laptop = must(laptop);
    assert_eq!(
        laptop.raw["register_method"].as_str(),
        Some("REGISTER_METHOD_CLI"),
        "{}",
        laptop.raw
    );
    assert_eq!(
        laptop.raw["user"]["name"].as_str(),
        Some("alice"),
        "{}",
        laptop.raw
    );

    // Traffic crosses the tailnet from the new node to its peer and back.
    must(a.wait_peer(ib, true, Duration::from_secs(20)));
    let _echo = must(b.host().tcp_echo("echo", ib, 7000));
    let reply = must(
        a.host()
            .tcp_roundtrip(Some(ia), ib, 7000, "registered-by-cli"),
    );
    assert_eq!(reply, format!("echo from {ib} to {ia}: registered-by-cli"));
}

/// Headscale 0.27+'s words: `auth register --auth-id <id> --user U`; and `auth reject`
/// sends a waiting client away with the reason, registering nothing.
#[test]
fn auth_register_and_auth_reject_complete_or_refuse_a_waiting_login() {
    let (clients, lab, server) = must(lab_with_server(
        "isi-auth",
        Path::new(BIN),
        serde_json::json!({}),
        "alice",
    ));
    let url = server.url();
    let hc = must(lab.add_host("c"));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &[]));
    std::thread::scope(|s| {
        let up = s.spawn(|| c.up(&url, None, "desk", &["--timeout=60s"]));
        let login = wait_auth_url(&c, Duration::from_secs(30));
        let id = login.rsplit('/').next().unwrap_or_default().to_string();
        must(server.cli_ok(&["auth", "register", "--auth-id", &id, "--user", "alice"]));
        let out = must(up.join().unwrap_or_else(|_| panic!("up thread panicked")));
        assert!(out.status.success(), "{}", c.err(output_text(&out)));
    });
    must(c.wait_running(Duration::from_secs(20)));
    assert!(must(server.nodes()).iter().any(|n| n.given_name == "desk"));

    let hd = must(lab.add_host("d"));
    let d = must(Tailscaled::start(&hd, &clients, "ts", &[]));
    std::thread::scope(|s| {
        let up = s.spawn(|| d.up(&url, None, "stranger", &["--timeout=60s"]));
        let login = wait_auth_url(&d, Duration::from_secs(30));
        let id = login.rsplit('/').next().unwrap_or_default().to_string();
        must(server.cli_ok(&["auth", "reject", "--auth-id", &id]));
        let out = must(up.join().unwrap_or_else(|_| panic!("up thread panicked")));
        assert!(
            !out.status.success(),
            "a rejected login must not succeed: {}",
            output_text(&out)
        );
        eprintln!("rejected `tailscale up`: {}", output_text(&out).trim());
    });
    assert!(must(server.nodes())
        .iter()
        .all(|n| n.given_name != "stranger"));
    assert_eq!(must(server.nodes()).len(), 1);
}
