//! ironscale serving TLS itself (`server_url: https://…`, `tls_cert_path`/`tls_key_path`), as
//! most deployments without a reverse proxy do: real `tailscaled` 1.96.4 nodes log in over
//! HTTPS, and the embedded DERP relay answers at `/derp` on the same TLS listener (no second
//! port, no pinned self-signed certificate). The clients trust a test CA through
//! `SSL_CERT_FILE`; a client that does not trust it is refused by its own TLS check and no node
//! is created.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::Duration;

use ironscale_testkit::{
    install_clients, output_text, require_root, Clients, Lab, Result, ServerProc, Tailscaled,
    TestPki, DERP_REGION_CODE,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");
const TLS_PORT: u16 = 8443;

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

fn node(lab: &Lab, clients: &Clients, name: &str, env: &[(&str, &str)]) -> Tailscaled {
    let host = must(lab.add_host(name));
    must(Tailscaled::start(&host, clients, "ts", env))
}

#[test]
fn https_control_and_derp_on_one_tls_listener() {
    must(require_root());
    let clients = must(install_clients());
    let lab = must(Lab::new("isi-tls"));
    let hub = lab.hub_ip();
    let pki = must(TestPki::create(&lab.dir().join("pki"), &[hub.to_string()]));
    let other_ca = must(TestPki::create(
        &lab.dir().join("other-pki"),
        &[hub.to_string()],
    ));
    let server = must(ServerProc::start(
        &lab,
        Some(Path::new(BIN)),
        serde_json::json!({
            "server_url": format!("https://{hub}:{TLS_PORT}"),
            "listen_addr": format!("{hub}:{TLS_PORT}"),
            "tls_cert_path": pki.cert.to_string_lossy(),
            "tls_key_path": pki.key.to_string_lossy(),
            "derp": {"server": {"tls_listen_addr": null}},
        }),
    ));
    must(server.create_user("alice"));
    let url = server.url();
    assert!(url.starts_with("https://"), "{url}");

    // The DERP endpoints answer on the control listener, with the CA-signed certificate.
    let probe = must(lab.add_host("probe"));
    for (path, want) in [
        ("/key?v=130", "200"),
        ("/derp/probe", "200"),
        ("/generate_204", "204"),
    ] {
        let out = must(probe.exec(
            "curl",
            &[
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-m",
                "5",
                "--cacert",
                &pki.ca_cert.to_string_lossy(),
                &format!("{url}{path}"),
            ],
        ));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "GET {path} over TLS: {}",
            output_text(&out)
        );
    }

    // Two nodes, forced through DERP: the relay on the TLS control port carries their traffic.
    let ca = pki.ca_cert.to_string_lossy().into_owned();
    let env = [
        ("SSL_CERT_FILE", ca.as_str()),
        ("TS_DEBUG_ALWAYS_USE_DERP", "1"),
    ];
    let a = node(&lab, &clients, "a", &env);
    let b = node(&lab, &clients, "b", &env);
    let k = must(server.reusable_key("alice"));
    must(a.up_ok(&url, Some(&k), "a", &[]));
    must(b.up_ok(&url, Some(&k), "b", &[]));
    must(a.wait_running(Duration::from_secs(30)));
    must(b.wait_running(Duration::from_secs(30)));
    let (ia, ib) = (must(a.ip4()), must(b.ip4()));
    must(a.wait_peer(ib, true, Duration::from_secs(20)));
    let out = must(a.ping(&ib.to_string(), &["--until-direct=false"]));
    let t = output_text(&out);
    eprintln!("tailscale ping {ib} over the TLS listener's DERP:\n{t}");
    assert!(
        out.status.success() && t.contains(&format!("via DERP({DERP_REGION_CODE})")),
        "{}",
        a.err(format!("no pong via our DERP on the TLS listener:\n{t}"))
    );
    let _echo = must(b.host().tcp_echo("echo", ib, 7000));
    let reply = must(a.host().tcp_roundtrip(Some(ia), ib, 7000, "over-tls-derp"));
    assert_eq!(reply, format!("echo from {ib} to {ia}: over-tls-derp"));

    // A client that does not trust the server's CA gets no further than its TLS check.
    let other = other_ca.ca_cert.to_string_lossy().into_owned();
    let x = node(&lab, &clients, "x", &[("SSL_CERT_FILE", other.as_str())]);
    let out = must(x.up(&url, Some(&k), "x", &["--timeout=15s"]));
    let t = output_text(&out);
    let log = x.log_grep(&["x509", "certificate", "tls:"], 5);
    eprintln!(
        "untrusting client: `tailscale up` ({}):\n{t}\nlog: {log:#?}",
        out.status
    );
    assert!(
        !out.status.success(),
        "{}",
        x.err("an untrusting client logged in")
    );
    assert!(
        !log.is_empty() || t.contains("x509") || t.contains("certificate"),
        "{}",
        x.err("no TLS certificate error for the untrusting client")
    );
    let nodes = must(server.nodes());
    assert_eq!(nodes.len(), 2, "{nodes:#?}");
}
