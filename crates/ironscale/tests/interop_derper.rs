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
    let mut cmd = lab.hub().command(BIN);
    cmd.arg("derper")
        .arg(format!("--hostname={hub}"))
        .arg(format!("--a={hub}:{DERPER_PORT}"))
        .arg("--http-port=-1")
        .arg("--stun")
        .arg(format!("--stun-port={DERPER_STUN}"))
        .args(["--certmode", "manual", "--certdir"])
        .arg(&dir)
        .arg("--verify-clients")
        .arg(format!("--verify-client-url={verify_url}"))
        .arg("--key-file")
        .arg(dir.join("derper.key"))
        .env("IRONSCALE_LOG", "ironscale=debug,ironscale_relay=debug");
    let log = dir.join("derper.log");
    let (derper, _, _) = must(lab.hub().spawn_logged("derper", cmd, &log, false, false));
    must(wait_until(
        "the derper to listen",
        Duration::from_secs(15),
        Duration::from_millis(100),
        || {
            if !derper.is_running() {
                return Err(ironscale_testkit::Error::msg(format!(
                    "derper exited: {}",
                    derper.tail(30)
                )));
            }
            Ok(std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("DERP relay starting")
                .then_some(()))
        },
    ));

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
