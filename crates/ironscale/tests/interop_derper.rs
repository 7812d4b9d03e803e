//! `ironscale derper` as a standalone relay for real, unmodified `tailscaled` 1.96.4 nodes,
//! with the flags of the seed's derper unit (`--hostname --a --stun --stun-port
//! --verify-clients --verify-client-url=…/verify`, plus `--certmode manual`): the control server's
//! DERP map names only that relay (a `derp.paths` file, the certificate pinned by `CertName`);
//! clients forced through DERP (`TS_DEBUG_ALWAYS_USE_DERP=1`) ping and carry TCP through it;
//! a client the control server does not know is refused by the relay after it asked `/verify`.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ironscale_testkit::{
    install_clients, output_text, wait_until, Lab, Result, ServerProc, Tailscaled, CONTROL_PORT,
};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");
const DERPER_PORT: u16 = 8443;
const DERPER_STUN: u16 = 3479;

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn derper_with_verify_url_relays_for_members_and_refuses_outsiders() {
    let clients = must(install_clients());
    let lab = must(Lab::new("isi-derper"));
    let hub = lab.hub_ip().to_string();
    let dir = lab.dir().join("derper");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    // derper's manual certificate layout: <certdir>/<hostname>.crt and .key.
    let (_, sha) = ironscale_http::load_or_create_self_signed(
        &dir.join(format!("{hub}.crt")),
        &dir.join(format!("{hub}.key")),
        std::slice::from_ref(&hub),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let derp_yaml = dir.join("derp.yaml");
    std::fs::write(
        &derp_yaml,
        format!(
            "regions:\n  901:\n    regionid: 901\n    regioncode: lab-derper\n    regionname: Lab derper\n    nodes:\n\
             \x20     - name: 901a\n        regionid: 901\n        hostname: {hub}\n        ipv4: {hub}\n\
             \x20       ipv6: none\n        stunport: {DERPER_STUN}\n        derpport: {DERPER_PORT}\n\
             \x20       certname: sha256-raw:{sha}\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = must(ServerProc::start(
        &lab,
        Some(Path::new(BIN)),
        json!({"derp": {"server": {"enabled": false}, "paths": [derp_yaml.to_string_lossy()]}}),
    ));
    must(server.create_user("alice"));

    // The seed's unit, with the binary path changed (and a manual certificate).
    let verify_url = format!("http://{hub}:{CONTROL_PORT}/verify");
    let args: Vec<String> = [
        format!("--hostname={hub}"),
        format!("--a={hub}:{DERPER_PORT}"),
        "--http-port=-1".into(),
        "--stun".into(),
        format!("--stun-port={DERPER_STUN}"),
        // A value as a separate argument, as in a unit file.
        "--certmode".into(),
        "manual".into(),
        "--certdir".into(),
        dir.display().to_string(),
        "--verify-clients".into(),
        format!("--verify-client-url={verify_url}"),
        "--key-file".into(),
        dir.join("derper.key").display().to_string(),
    ]
    .into();
    let (derper, log) = spawn_derper(&lab, "derper", &args, &[]);

    // Members, forced through DERP: they ping and carry TCP through the derper.
    let key = must(server.reusable_key("alice"));
    let derp_env = [("TS_DEBUG_ALWAYS_USE_DERP", "1")];
    let hc = must(lab.add_host("c"));
    let hd = must(lab.add_host("d"));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &derp_env));
    let d = must(Tailscaled::start(&hd, &clients, "ts", &derp_env));
    must(c.up_ok(&server.url(), Some(&key), "c", &[]));
    must(d.up_ok(&server.url(), Some(&key), "d", &[]));
    let (ic, id) = (must(c.ip4()), must(d.ip4()));
    must(c.wait_peer(id, true, Duration::from_secs(30)));
    let out = must(c.ping(&id.to_string(), &["--until-direct=false", "--c=5"]));
    let t = output_text(&out);
    assert!(
        out.status.success() && t.contains("via DERP(lab-derper)") && !t.contains("via 10.99."),
        "{}",
        c.err(format!("ping did not go through the derper:\n{t}"))
    );
    let _echo = must(d.host().tcp_echo("echo", id, 7000));
    let reply = must(c.host().tcp_roundtrip(Some(ic), id, 7000, "via-derper"));
    assert_eq!(reply, format!("echo from {id} to {ic}: via-derper"));

    // `ironscale netcheck`: the server's view of both clients (UDP, home region 901 and its
    // latency, from their NetInfo) and, with --probe from the hub, STUN and DERP to the derper.
    let nc = must(wait_until(
        "both clients to report NetInfo with home region 901 and no UDP",
        Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            let mut cmd = lab.hub().command(BIN);
            cmd.arg("-c")
                .arg(server.config_path())
                .args(["netcheck", "--probe", "-o", "json"]);
            let out = cmd
                .output()
                .map_err(|e| ironscale_testkit::Error::msg(e.to_string()))?;
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if std::env::var_os("IRONSCALE_TEST_DEBUG").is_some() {
                eprintln!("netcheck: {}", output_text(&out));
            }
            let homed = v["nodes"].as_array().is_some_and(|ns| {
                ns.len() == 2
                    && ns.iter().all(|n| {
                        // Forced through DERP, the clients use no UDP (and measure no latency).
                        n["net_info"]["preferred_derp"] == 901
                            && n["net_info"]["working_udp"] == false
                    })
            });
            Ok(homed.then_some(v))
        },
    ));
    let probes = nc["probes"].as_array().cloned().unwrap_or_default();
    assert_eq!(probes.len(), 1, "{nc}");
    assert!(
        probes[0]["stun_ms"].as_f64().is_some(),
        "STUN probe failed: {nc}"
    );
    assert!(
        probes[0]["derp_ms"].as_f64().is_some(),
        "DERP probe failed: {nc}"
    );
    let mut cmd = lab.hub().command(BIN);
    cmd.arg("-c").arg(server.config_path()).arg("netcheck");
    let table = output_text(&cmd.output().unwrap_or_else(|e| panic!("{e}")));
    assert!(
        table.contains("901 (lab-derper)")
            && table.contains("2 nodes; 0 behind a hard NAT")
            && table.contains("2 without UDP"),
        "{table}"
    );

    // An outsider (a key the control server does not know) is refused by the relay.
    let addr: std::net::SocketAddr = format!("{hub}:{DERPER_PORT}")
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let sha2 = sha.clone();
    let outsider = must(lab.hub().run_in(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(async move {
            let tls = Arc::new(
                ironscale_relay::client::pinned_tls_config(&sha2).unwrap_or_else(|e| panic!("{e}")),
            );
            let key = ironscale_keys::PrivateKey::generate();
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                ironscale_relay::client::DerpClient::connect_tls(
                    addr,
                    &addr.ip().to_string(),
                    tls,
                    key,
                    ironscale_derp::ClientInfo::default(),
                ),
            )
            .await;
            match r {
                Ok(Ok(mut client)) => {
                    // Admission happens after ClientInfo: the relay closes the connection.
                    let next = tokio::time::timeout(Duration::from_secs(10), client.recv()).await;
                    format!("connected, then {next:?}")
                }
                Ok(Err(e)) => format!("refused: {e}"),
                Err(_) => "timed out".to_string(),
            }
        })
    }));
    assert!(
        outsider.starts_with("refused") || outsider.contains("Err("),
        "an outsider was served by the derper: {outsider}"
    );
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logged.contains("client refused by the verify URL"),
        "the derper did not refuse through /verify:\n{logged}"
    );
    drop(derper);
}

/// Start `ironscale derper ARGS` in the hub; waits for its start line.
fn spawn_derper(
    lab: &Lab,
    name: &str,
    args: &[String],
    env: &[(&str, &str)],
) -> (ironscale_testkit::Proc, std::path::PathBuf) {
    let mut cmd = lab.hub().command(BIN);
    cmd.arg("derper").args(args);
    cmd.env("IRONSCALE_LOG", "ironscale=debug,ironscale_relay=debug");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let log = lab.dir().join(format!("{name}.log"));
    let (p, _, _) = must(lab.hub().spawn_logged(name, cmd, &log, false, false));
    must(wait_until(
        &format!("{name} to start"),
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if !p.is_running() {
                return Err(ironscale_testkit::Error::msg(format!(
                    "{name} exited: {}",
                    p.tail(30)
                )));
            }
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("DERP relay starting")
                .then_some(()))
        },
    ));
    (p, log)
}

/// Two `ironscale derper`s of one region meshed with a pre-shared key (`--mesh-psk-file`,
/// `--mesh-with`, TLS between them checked against a CA given by `SSL_CERT_FILE`): a client
/// homed on each (the other relay's port is closed to it) reaches the other through the mesh.
#[test]
fn two_meshed_derpers_relay_between_a_client_homed_on_each() {
    let clients = must(install_clients());
    let lab = must(Lab::new("isi-mesh"));
    let hub = lab.hub_ip().to_string();
    let dir = lab.dir().join("mesh");
    let names = vec![
        "derp1.test".to_string(),
        "derp2.test".to_string(),
        hub.clone(),
    ];
    let pki = must(ironscale_testkit::TestPki::create(&dir.join("pki"), &names));
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).unwrap_or_else(|e| panic!("{e}"));
    for n in ["derp1.test", "derp2.test"] {
        std::fs::copy(&pki.cert, certs.join(format!("{n}.crt"))).unwrap_or_else(|e| panic!("{e}"));
        std::fs::copy(&pki.key, certs.join(format!("{n}.key"))).unwrap_or_else(|e| panic!("{e}"));
    }
    let psk = dir.join("mesh.key");
    std::fs::write(&psk, format!("{}\n", "5a".repeat(32))).unwrap_or_else(|e| panic!("{e}"));
    let ca = pki.ca_cert.to_string_lossy().to_string();
    let derp_yaml = dir.join("derp.yaml");
    let node = |n: u16, port: u16| {
        format!(
            "      - name: 901{n}\n        regionid: 901\n        hostname: derp{n}.test\n        ipv4: {hub}\n\
             \x20       ipv6: none\n        stunport: -1\n        derpport: {port}\n"
        )
    };
    std::fs::write(
        &derp_yaml,
        format!(
            "regions:\n  901:\n    regionid: 901\n    regioncode: lab-mesh\n    regionname: Lab mesh\n    nodes:\n{}{}",
            node(1, 8443),
            node(2, 8444)
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let server = must(ServerProc::start(
        &lab,
        Some(Path::new(BIN)),
        json!({"derp": {"server": {"enabled": false}, "paths": [derp_yaml.to_string_lossy()]}}),
    ));
    must(server.create_user("alice"));
    let verify = format!("--verify-client-url=http://{hub}:{CONTROL_PORT}/verify");
    let derper = |n: u16, port: u16, other: u16, other_port: u16| {
        vec![
            format!("--hostname=derp{n}.test"),
            format!("--a={hub}:{port}"),
            "--http-port=-1".to_string(),
            "--stun=false".to_string(),
            "--certmode=manual".to_string(),
            format!("--certdir={}", certs.display()),
            "--verify-clients".to_string(),
            verify.clone(),
            format!("--key-file={}", dir.join(format!("derp{n}.key")).display()),
            format!("--mesh-psk-file={}", psk.display()),
            // The same list on both, as derper's docs have it; each skips itself.
            format!("--mesh-with=derp{n}.test/{hub}:{port},derp{other}.test/{hub}:{other_port}"),
        ]
    };
    let (_d1, log1) = spawn_derper(
        &lab,
        "derp1",
        &derper(1, 8443, 2, 8444),
        &[("SSL_CERT_FILE", &ca)],
    );
    let (_d2, log2) = spawn_derper(
        &lab,
        "derp2",
        &derper(2, 8444, 1, 8443),
        &[("SSL_CERT_FILE", &ca)],
    );
    must(wait_until(
        "the derpers to mesh",
        Duration::from_secs(20),
        Duration::from_millis(200),
        || {
            let ok = |l: &Path| {
                std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .contains("mesh peer connected")
            };
            Ok((ok(&log1) && ok(&log2)).then_some(()))
        },
    ));

    let key = must(server.reusable_key("alice"));
    let env = [
        ("TS_DEBUG_ALWAYS_USE_DERP", "1"),
        ("SSL_CERT_FILE", ca.as_str()),
    ];
    let hc = must(lab.add_host("c"));
    let hd = must(lab.add_host("d"));
    // d cannot reach derp1, so it homes on derp2; c homes on derp1 (the region's first node).
    must(hd.exec_ok(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            hub.as_str(),
            "--dport",
            "8443",
            "-j",
            "REJECT",
            "--reject-with",
            "tcp-reset",
        ],
    ));
    let c = must(Tailscaled::start(&hc, &clients, "ts", &env));
    let d = must(Tailscaled::start(&hd, &clients, "ts", &env));
    must(c.up_ok(&server.url(), Some(&key), "c", &[]));
    must(d.up_ok(&server.url(), Some(&key), "d", &[]));
    let (ic, id) = (must(c.ip4()), must(d.ip4()));
    must(c.wait_peer(id, true, Duration::from_secs(30)));
    let out = must(c.ping(&id.to_string(), &["--until-direct=false", "--c=5"]));
    let t = output_text(&out);
    assert!(
        out.status.success() && t.contains("via DERP(lab-mesh)"),
        "{}",
        c.err(format!("ping did not go through the mesh:\n{t}"))
    );
    let _echo = must(d.host().tcp_echo("echo", id, 7000));
    let reply = must(c.host().tcp_roundtrip(Some(ic), id, 7000, "via-mesh"));
    assert_eq!(reply, format!("echo from {id} to {ic}: via-mesh"));
    // Each client is connected to its own relay only (so the packets crossed the mesh).
    let l1 = std::fs::read_to_string(&log1).unwrap_or_default();
    let l2 = std::fs::read_to_string(&log2).unwrap_or_default();
    let connected = |l: &str, ip: &str| {
        l.lines().any(|x| {
            x.contains("DERP client connected") && x.contains(ip) && x.contains("mesh=false")
        })
    };
    let (hc_ip, hd_ip) = (hc.ip().to_string(), hd.ip().to_string());
    assert!(
        connected(&l1, &hc_ip) && !connected(&l2, &hc_ip),
        "c is not homed on derp1 alone:\n{l1}\n{l2}"
    );
    assert!(
        connected(&l2, &hd_ip) && !connected(&l1, &hd_ip),
        "d is not homed on derp2 alone:\n{l1}\n{l2}"
    );
}
