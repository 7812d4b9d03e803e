//! Server-level tests with an in-process ts2021 client built from our own Noise
//! initiator and hyper's HTTP/2 client: upgrade, register, map streaming and
//! deltas, bad input. (The acceptance tests with real Tailscale clients are in
//! crates/ironscale/tests/interop.rs; these run in milliseconds and pin down
//! the protocol details.)
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "support/client.rs"]
mod client;
use client::*;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http_body_util::BodyExt;
use ironscale_keys::PrivateKey;
use ironscale_types::UserRef;
use ironscale_wire as wire;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn register_map_and_deltas() {
    let s = start().await;
    let key = new_key(&s, true).await;
    let (mut a, ra) = join(&s, &key, "alpha").await;
    assert!(ra.machine_authorized, "{:?}", ra.error);
    assert_eq!(ra.login.login_name, "alice");
    let mut fa = map_stream(&mut a.h2, &a.node.node_public(), &a.disco).await;
    let first = fa.next().await;
    let me = first.node.expect("first frame has Node");
    assert_eq!(
        me.addresses,
        vec![
            "100.64.0.1/32".to_string(),
            "fd7a:115c:a1e0::1/128".to_string()
        ]
    );
    assert!(me.machine_authorized);
    assert!(first.debug.unwrap().disable_log_tail);
    assert_eq!(
        first.packet_filter.unwrap(),
        vec![wire::FilterRule::allow_all()]
    );

    // A second node joins: alpha hears about it as a delta, not a full map.
    let (mut b, rb) = join(&s, &key, "beta").await;
    assert!(rb.machine_authorized);
    let d = fa.next_update().await;
    assert!(d.peers.is_none(), "expected a delta, got a full peer list");
    let added = d.peers_changed.expect("PeersChanged");
    assert_eq!(added[0].name, "beta.");
    let beta_id = added[0].id;

    // Beta streams: alpha sees it come online (patch), then its endpoints (patch).
    let mut fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    let bfirst = fb.next().await;
    assert_eq!(bfirst.peers.unwrap().len(), 1);
    let mut saw_online = false;
    while !saw_online {
        let d = fa.next_update().await;
        for p in d
            .peers_changed_patch
            .into_iter()
            .flatten()
            .chain(std::iter::empty())
        {
            if p.node_id == beta_id && p.online == Some(true) {
                saw_online = true;
            }
        }
        for n in d.peers_changed.into_iter().flatten() {
            if n.id == beta_id && n.online == Some(true) {
                saw_online = true;
            }
        }
    }
    // An endpoint-only lite update reaches alpha as a patch.
    let lite = |eps: &str, derp: i32| {
        serde_json::json!({
            "Version": 130, "Compress": "zstd", "Stream": false, "OmitPeers": true,
            "NodeKey": b.node.node_public().to_string(), "DiscoKey": b.disco.disco_public().to_string(),
            "Endpoints": [eps], "EndpointTypes": [2],
            "Hostinfo": {"Hostname": "x", "NetInfo": {"PreferredDERP": derp}}
        })
    };
    let r = post(&mut b.h2, "/machine/map", lite("192.0.2.7:41641", 900)).await;
    assert_eq!(r.status(), 200);
    assert!(r.into_body().collect().await.unwrap().to_bytes().is_empty());
    let d = fa.next_update().await;
    let patch = d.peers_changed_patch.expect("PeersChangedPatch");
    assert_eq!(patch[0].node_id, beta_id);
    assert_eq!(
        patch[0].endpoints.as_deref(),
        Some(&["192.0.2.7:41641".to_string()][..])
    );
    assert!(d.peers_changed.is_none());
    // A home DERP change (it comes inside Hostinfo) reaches alpha too.
    let r = post(&mut b.h2, "/machine/map", lite("192.0.2.7:41641", 901)).await;
    assert_eq!(r.status(), 200);
    let d = fa.next_update().await;
    let full = d.peers_changed.expect("PeersChanged (Hostinfo changed)");
    assert_eq!(
        (full[0].id, full[0].home_derp, full[0].derp.as_str()),
        (beta_id, 901, "127.3.3.40:901")
    );

    // Deleting beta removes it from alpha's map at once.
    let t0 = std::time::Instant::now();
    s.state
        .delete_node(ironscale_types::NodeId(beta_id as u64))
        .await
        .unwrap();
    let d = fa.next_update().await;
    assert_eq!(d.peers_removed, Some(vec![beta_id]));
    assert!(t0.elapsed() < Duration::from_secs(1));
}

#[tokio::test]
async fn bad_keys_are_refused_without_creating_nodes() {
    let s = start().await;
    let single = new_key(&s, false).await;
    let (_a, r) = join(&s, "hskey-auth-nonexistent-0000", "x").await;
    assert_eq!(r.error, "invalid auth key");
    assert!(!r.machine_authorized);
    let (_b, r) = join(&s, &single, "first").await;
    assert!(r.machine_authorized);
    let (_c, r) = join(&s, &single, "second").await;
    assert_eq!(r.error, "auth key already used");
    let (expired, secret) = s
        .state
        .create_preauth_key(
            Some(&UserRef::Name("alice".into())),
            true,
            false,
            None,
            vec![],
        )
        .await
        .unwrap();
    s.state
        .expire_preauth_key(&expired.id.to_string())
        .await
        .unwrap();
    let (_d, r) = join(&s, &secret, "third").await;
    assert_eq!(r.error, "auth key expired");
    assert_eq!(s.state.list_nodes().len(), 1);
}

#[tokio::test]
async fn restart_reregistration_with_used_single_use_key_works() {
    let s = start().await;
    let single = new_key(&s, false).await;
    let mkey = PrivateKey::generate();
    let node = PrivateKey::generate();
    let mut h2 = dial(&s, &mkey).await;
    let r = register(&mut h2, &node.node_public(), &single, "n").await;
    assert!(r.machine_authorized);
    // Client restart: same machine and node key, the consumed key sent again.
    let mut h2 = dial(&s, &mkey).await;
    let r = register(&mut h2, &node.node_public(), &single, "n").await;
    assert!(r.machine_authorized, "{}", r.error);
    assert_eq!(s.state.list_nodes().len(), 1);
    // Another machine cannot use that node key.
    let mut other = dial(&s, &PrivateKey::generate()).await;
    let r = register(&mut other, &node.node_public(), &single, "n").await;
    assert!(!r.machine_authorized);
}

#[tokio::test]
async fn malformed_handshakes_close_only_their_connection() {
    let s = start().await;
    let key = new_key(&s, true).await;
    let (mut a, _) = join(&s, &key, "alpha").await;
    for hs in [
        "!!!notbase64",
        "AAAA",
        &base64::engine::general_purpose::STANDARD.encode([0u8; 101]),
    ] {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let req = format!(
            "POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {hs}\r\nContent-Length: 0\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let head = read_head(&mut tcp).await;
        // Even a well-formed initiation whose cryptography is wrong is refused
        // before the upgrade.
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    }
    // Truncated upgrade request, then garbage records inside a real Noise session.
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(b"POST /ts2021 HTTP/1.1\r\nUpgr")
        .await
        .unwrap();
    drop(tcp);
    let mkey = PrivateKey::generate();
    let (init, msg) = ironscale_noise::Initiator::new(&mkey, &s.server_pub, 130).unwrap();
    let hs = base64::engine::general_purpose::STANDARD.encode(&msg);
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {hs}\r\n\r\n").as_bytes()).await.unwrap();
    read_head(&mut tcp).await;
    let _ = init; // we never finish the handshake: send an oversized record instead
    tcp.write_all(&[0x04, 0xff, 0xff]).await.unwrap();
    tcp.write_all(&[0u8; 4096]).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest))
        .await
        .expect("closed");
    // The first client's connection still works.
    let r = post(
        &mut a.h2,
        "/machine/update-health",
        serde_json::json!({"Subsys": "x"}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let (_, r2) = join(&s, &key, "beta").await;
    assert!(r2.machine_authorized);
    let _ = Arc::new(());
}

/// Policy changes reach running sessions as map updates; a rejected policy
/// changes nothing.
#[tokio::test]
async fn policy_changes_reach_sessions_and_bad_policies_are_rejected() {
    let s = start().await;
    s.state
        .create_user("alice", "", "alice@example.com")
        .await
        .unwrap();
    s.state
        .create_user("bob", "", "bob@example.com")
        .await
        .unwrap();
    let ka = s
        .state
        .create_preauth_key(
            Some(&UserRef::Name("alice".into())),
            false,
            false,
            None,
            vec![],
        )
        .await
        .unwrap()
        .1;
    let kb = s
        .state
        .create_preauth_key(
            Some(&UserRef::Name("bob".into())),
            false,
            false,
            None,
            vec![],
        )
        .await
        .unwrap()
        .1;
    let policy = r#"{
        // alice may reach bob's SSH port only
        "acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:22"]}],
    }"#;
    s.state
        .set_policy_text(policy, "policy.hujson")
        .await
        .unwrap();
    let (mut a, _) = join(&s, &ka, "alpha").await;
    let (mut b, _) = join(&s, &kb, "beta").await;
    let mut fa = map_stream(&mut a.h2, &a.node.node_public(), &a.disco).await;
    let mut fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    let first_a = fa.next().await;
    let first_b = fb.next().await;
    let alpha_ip = first_a.node.as_ref().unwrap().addresses[0]
        .trim_end_matches("/32")
        .to_string();
    assert_eq!(
        first_a.packet_filter,
        Some(vec![]),
        "alpha accepts nothing inbound"
    );
    let fb_rules = first_b.packet_filter.unwrap();
    assert_eq!(fb_rules.len(), 1);
    assert!(
        fb_rules[0].src_ips.iter().any(|s| s.starts_with(&alpha_ip)),
        "{fb_rules:?}"
    );
    assert_eq!(
        fb_rules[0].dst_ports[0].ports,
        wire::PortRange {
            first: 22,
            last: 22
        }
    );
    assert_eq!(
        first_a.peers.unwrap().len(),
        1,
        "alpha sees beta (it may reach it)"
    );

    // A broken policy is rejected with file:line:col; the old one stays.
    let err = s.state.set_policy_text("{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}\n  ]\n}", "broken.hujson").await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("broken.hujson:3:"), "{msg}");
    assert!(msg.contains("group:nope"), "{msg}");
    assert!(s
        .state
        .policy_state()
        .text
        .unwrap()
        .contains("bob@example.com:22"));

    // Allow all: both sessions get the new filter within a second.
    let t0 = std::time::Instant::now();
    s.state
        .set_policy_text(
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
            "p2.hujson",
        )
        .await
        .unwrap();
    for f in [&mut fa, &mut fb] {
        loop {
            let d = f.next_update().await;
            if let Some(pf) = d.packet_filter {
                assert_eq!(pf.len(), 1);
                assert_eq!(
                    pf[0].dst_ports[0].ports,
                    wire::PortRange {
                        first: 0,
                        last: 65535
                    }
                );
                break;
            }
        }
    }
    assert!(t0.elapsed() < Duration::from_secs(1));
}

/// A policy change reaches only the sessions whose map it changes: adding a
/// port on bob's machine changes bob's packet filter, and nothing that alice
/// or carol are told.
#[tokio::test]
async fn policy_change_reaches_only_affected_sessions() {
    let s = start().await;
    let mut keys = Vec::new();
    for u in ["alice", "bob", "carol"] {
        s.state
            .create_user(u, "", &format!("{u}@example.com"))
            .await
            .unwrap();
        keys.push(
            s.state
                .create_preauth_key(
                    Some(&UserRef::Name(u.to_string())),
                    false,
                    false,
                    None,
                    vec![],
                )
                .await
                .unwrap()
                .1,
        );
    }
    let p1 = r#"{"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:22"]}]}"#;
    s.state.set_policy_text(p1, "p1.hujson").await.unwrap();
    let (mut a, _) = join(&s, &keys[0], "alpha").await;
    let (mut b, _) = join(&s, &keys[1], "beta").await;
    let (mut c, _) = join(&s, &keys[2], "gamma").await;
    let mut fa = map_stream(&mut a.h2, &a.node.node_public(), &a.disco).await;
    let mut fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    let mut fc = map_stream(&mut c.h2, &c.node.node_public(), &c.disco).await;
    for f in [&mut fa, &mut fb, &mut fc] {
        f.next().await;
        f.drain(Duration::from_millis(500)).await;
    }

    let p2 = r#"{"acls": [{"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:22,80"]}]}"#;
    s.state.set_policy_text(p2, "p2.hujson").await.unwrap();
    let ub = fb
        .update_within(Duration::from_secs(1))
        .await
        .expect("bob's session gets the new filter within a second");
    let pf = ub.packet_filter.expect("a new packet filter");
    let ports: Vec<(u16, u16)> = pf
        .iter()
        .flat_map(|r| r.dst_ports.iter().map(|d| (d.ports.first, d.ports.last)))
        .collect();
    assert!(
        ports.contains(&(80, 80)) && ports.contains(&(22, 22)),
        "{ports:?}"
    );
    for (who, f) in [("alice", &mut fa), ("carol", &mut fc)] {
        let u = f.update_within(Duration::from_millis(1500)).await;
        assert!(
            u.is_none(),
            "{who}'s map did not change, yet the session was sent {u:?}"
        );
    }
}

/// A burst of changes reaches a peer as few updates (merged within
/// `tuning.batch_change_delay`), the first without delay, and the last state
/// always arrives.
#[tokio::test]
async fn bursts_of_changes_are_merged_and_the_last_state_arrives() {
    let s = start().await;
    let key = new_key(&s, true).await;
    let (mut a, _) = join(&s, &key, "alpha").await;
    let (mut b, _) = join(&s, &key, "beta").await;
    let mut fa = map_stream(&mut a.h2, &a.node.node_public(), &a.disco).await;
    let _fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    fa.next().await;
    fa.drain(Duration::from_millis(500)).await;

    let lite = |eps: String| {
        serde_json::json!({
            "Version": 130, "Compress": "zstd", "Stream": false, "OmitPeers": true,
            "NodeKey": b.node.node_public().to_string(), "DiscoKey": b.disco.disco_public().to_string(),
            "Endpoints": [eps], "EndpointTypes": [2],
            "Hostinfo": {"Hostname": "beta", "NetInfo": {"PreferredDERP": 900}}
        })
    };
    // One isolated change: no added delay.
    let t0 = std::time::Instant::now();
    let r = post(&mut b.h2, "/machine/map", lite("192.0.2.1:1".into())).await;
    assert_eq!(r.status(), 200);
    fa.update_within(Duration::from_secs(1))
        .await
        .expect("the change arrives");
    let first = t0.elapsed();
    assert!(
        first < ironscale_control::DEFAULT_MIN_UPDATE_INTERVAL,
        "an isolated change waited {first:?}"
    );

    // Twenty changes back to back.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..20 {
        let r = post(
            &mut b.h2,
            "/machine/map",
            lite(format!("192.0.2.2:{}", 100 + i)),
        )
        .await;
        assert_eq!(r.status(), 200);
    }
    let mut updates = Vec::new();
    while let Some(u) = fa.update_within(Duration::from_millis(500)).await {
        updates.push(u);
    }
    let last_eps = updates
        .iter()
        .flat_map(|u| u.peers_changed_patch.iter().flatten())
        .filter_map(|p| p.endpoints.clone())
        .next_back();
    assert_eq!(last_eps, Some(vec!["192.0.2.2:119".to_string()]));
    assert!(
        updates.len() < 20,
        "20 changes in a burst gave {} updates: nothing was merged",
        updates.len()
    );
    eprintln!(
        "20 changes in a burst reached the peer as {} updates",
        updates.len()
    );
}

/// `/key` refuses the same clients the rest of the server refuses: a
/// capability version below `MIN_CAPVER` gets a 400 that says why, one at
/// `MIN_CAPVER` gets the Noise public key.
#[tokio::test]
async fn key_refuses_capability_versions_the_server_does_not_serve() {
    let s = start().await;
    async fn get_key(s: &Server, v: &str) -> (String, String) {
        let mut tcp = TcpStream::connect(s.addr).await.unwrap();
        let req = format!("GET /key?v={v} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut all))
            .await
            .expect("response within 5 s")
            .unwrap();
        let text = String::from_utf8(all).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        (head.to_string(), body.to_string())
    }
    for old in [39, wire::MIN_CAPVER - 1] {
        let (head, body) = get_key(&s, &old.to_string()).await;
        assert!(head.starts_with("HTTP/1.1 400"), "v={old}: {head}\n{body}");
        assert!(
            body.contains("unsupported client version"),
            "v={old}: {body}"
        );
        assert!(body.contains("1.74"), "v={old}: {body}");
    }
    let (head, body) = get_key(&s, &wire::MIN_CAPVER.to_string()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}\n{body}");
    assert!(body.contains(&s.server_pub.to_string()), "{body}");
    // The Noise upgrade refuses the same versions with the same words.
    let old = u16::try_from(wire::MIN_CAPVER - 1).unwrap();
    let (_init, msg) =
        ironscale_noise::Initiator::new(&PrivateKey::generate(), &s.server_pub, old).unwrap();
    let hs = base64::engine::general_purpose::STANDARD.encode(&msg);
    let mut tcp = TcpStream::connect(s.addr).await.unwrap();
    tcp.write_all(format!("POST /ts2021 HTTP/1.1\r\nHost: x\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\nX-Tailscale-Handshake: {hs}\r\nContent-Length: 0\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}

/// `/health` is public: when the database fails it answers a generic 503 and
/// keeps the error text (paths, hosts, driver messages) in the server log.
#[tokio::test]
async fn health_hides_the_database_error() {
    let s = start().await;
    let get = |addr| async move {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tcp.read_to_string(&mut out).await.unwrap();
        out
    };
    let ok = get(s.addr).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"pass\""), "{ok}");

    s.store.close().await;
    let err = s.store.schema_version().await.unwrap_err().to_string();
    assert!(!err.is_empty());
    let bad = get(s.addr).await;
    assert!(bad.starts_with("HTTP/1.1 503"), "{bad}");
    assert!(bad.contains("\"fail\""), "{bad}");
    assert!(!bad.contains(&err), "the database error leaked: {bad}");
    assert!(!bad.contains("\"error\""), "an error field leaked: {bad}");
}

/// A node key's expiry reaches its peers' maps at the expiry instant of the
/// state's clock, not before (virtual time: the clock is advanced, nothing
/// sleeps for an hour), and the map's notion of "expired" reads that clock.
#[tokio::test]
async fn key_expiry_reaches_peers_at_its_instant_in_virtual_time() {
    let clock = ironscale_state::ManualClock::new(chrono::Utc::now());
    let s = start_with_clock(Arc::new(clock.clone())).await;
    let key = new_key(&s, true).await;
    let (a, _) = join(&s, &key, "alpha").await;
    let (mut b, _) = join(&s, &key, "beta").await;
    let alpha = s.state.node_by_key(&a.node.node_public()).unwrap().id;
    let at = s.state.now() + chrono::Duration::hours(1);
    s.state.expire_node(alpha, Some(at)).await.unwrap();

    let mut fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    let first = fb.next().await;
    let peer = first.peers.unwrap();
    assert_eq!(peer.len(), 1);
    assert_eq!(peer[0].name, "alpha.");
    assert!(!peer[0].expired, "alpha expired an hour early");
    let alpha_wire = peer[0].id;
    fb.drain(Duration::from_millis(300)).await;

    clock.advance(Duration::from_secs(3599));
    s.state.timers_settled().await;
    assert!(
        fb.update_within(Duration::from_millis(500)).await.is_none(),
        "an update before the expiry instant"
    );
    clock.advance(Duration::from_secs(1));
    s.state.timers_settled().await;
    let d = fb.next_update().await;
    let changed = d.peers_changed.expect("PeersChanged at the expiry instant");
    assert!(
        changed.iter().any(|p| p.id == alpha_wire && p.expired),
        "alpha not expired in beta's map: {changed:?}"
    );
}

/// `GET path` on the server's plain HTTP listener: the whole response.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// A server with interactive login on.
async fn interactive_server() -> Server {
    start_with(
        ironscale_state::Settings {
            interactive_login: true,
            ..Default::default()
        },
        Arc::new(ironscale_state::SystemClock),
    )
    .await
}

/// Interactive login over the wire: no key gets a login URL; the login page
/// says what to run; the client's follow-up request waits until an
/// administrator approves, then answers as authorized, and the node maps.
#[tokio::test]
async fn an_interactive_login_waits_for_approval_then_authorizes() {
    let s = interactive_server().await;
    s.state.create_user("alice", "", "").await.unwrap();
    let mkey = PrivateKey::generate();
    let node = PrivateKey::generate();
    let mut h2 = dial(&s, &mkey).await;
    let r = register_followup(&mut h2, &node.node_public(), "", "laptop", "").await;
    assert!(!r.machine_authorized);
    assert!(r.error.is_empty(), "{}", r.error);
    let id = r
        .auth_url
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(r.auth_url.contains("/register/"), "{}", r.auth_url);
    assert_eq!(id.len(), 24, "{}", r.auth_url);
    // The page a person opens.
    let page = http_get(s.addr, &format!("/register/{id}")).await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(
        page.contains(&format!("nodes register --user USERNAME --key {id}")),
        "{page}"
    );
    assert!(page.contains("laptop"), "{page}");
    let unknown = http_get(s.addr, "/register/AAAAAAAAAAAAAAAAAAAAAAAA").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    // The follow-up waits...
    let url = r.auth_url.clone();
    let nk = node.node_public();
    let mut h2b = h2.clone();
    let waiting =
        tokio::spawn(async move { register_followup(&mut h2b, &nk, "", "laptop", &url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "the follow-up must wait for approval"
    );
    assert!(s.state.list_nodes().is_empty());
    // ...until an administrator approves.
    let alice = s.state.find_user(&UserRef::Name("alice".into())).unwrap();
    let pending = s.state.pending_registrations();
    assert_eq!(pending.len(), 1);
    s.state
        .approve_registration(
            &pending[0].id,
            ironscale_state::Approval {
                user: Some(alice.id),
                tags: vec![],
                method: ironscale_types::RegisterMethod::Cli,
                expiry: None,
            },
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the follow-up answers after approval")
        .unwrap();
    assert!(done.machine_authorized, "{:?}", done.error);
    assert_eq!(done.login.login_name, "alice");
    let disco = PrivateKey::generate();
    let mut frames = map_stream(&mut h2, &node.node_public(), &disco).await;
    let first = frames.next().await;
    assert_eq!(
        first.node.as_ref().map(|n| n.name.starts_with("laptop")),
        Some(true)
    );
}

/// A denied login: the waiting follow-up is told why, and no node exists.
#[tokio::test]
async fn a_denied_interactive_login_is_told_why() {
    let s = interactive_server().await;
    let mkey = PrivateKey::generate();
    let node = PrivateKey::generate();
    let mut h2 = dial(&s, &mkey).await;
    let r = register_followup(&mut h2, &node.node_public(), "", "visitor", "").await;
    let url = r.auth_url.clone();
    let nk = node.node_public();
    let mut h2b = h2.clone();
    let waiting =
        tokio::spawn(async move { register_followup(&mut h2b, &nk, "", "visitor", &url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = s.state.pending_registrations()[0].id.clone();
    s.state.deny_registration(&id, "not on the list").unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .unwrap()
        .unwrap();
    assert!(!done.machine_authorized);
    assert_eq!(done.error, "not on the list");
    // The client asks again with the same URL: the denial stands (no new login URL).
    let again = register_followup(&mut h2, &node.node_public(), "", "visitor", &r.auth_url).await;
    assert_eq!(again.error, "not on the list");
    assert!(again.auth_url.is_empty());
    assert!(s.state.list_nodes().is_empty());
    assert!(s.state.pending_registrations().is_empty());
}

/// Device approval: a new node registers (no error, it is this node) but the
/// answer says it is not authorized yet.
#[tokio::test]
async fn with_device_approval_a_new_node_is_not_authorized() {
    let s = start_with(
        ironscale_state::Settings {
            device_approval: true,
            ..Default::default()
        },
        Arc::new(ironscale_state::SystemClock),
    )
    .await;
    let key = new_key(&s, true).await;
    let (mut a, ra) = join(&s, &key, "alpha").await;
    assert!(ra.error.is_empty(), "{}", ra.error);
    assert!(
        !ra.machine_authorized,
        "an unapproved node is not authorized"
    );
    assert_eq!(ra.login.login_name, "alice");
    let nodes = s.state.list_nodes();
    assert_eq!(nodes.len(), 1);
    assert!(!nodes[0].approved);
    let a_id = nodes[0].id;

    // Its map comes (so the client learns it waits), with no peers.
    let (mut b, _) = join(&s, &key, "beta").await;
    let b_id = s
        .state
        .list_nodes()
        .iter()
        .find(|n| n.id != a_id)
        .expect("beta")
        .id;
    s.state.approve_node(b_id).await.unwrap();
    let mut fa = map_stream(&mut a.h2, &a.node.node_public(), &a.disco).await;
    let first = fa.next().await;
    assert!(!first.node.expect("self").machine_authorized);
    assert!(first.peers.unwrap_or_default().is_empty(), "no peers");
    let mut fb = map_stream(&mut b.h2, &b.node.node_public(), &b.disco).await;
    let bfirst = fb.next().await;
    assert!(bfirst.node.expect("self").machine_authorized);
    assert!(
        bfirst.peers.unwrap_or_default().is_empty(),
        "an approved node does not see an unapproved one"
    );

    // Approved: alpha is told it is authorized and gets beta; beta gets alpha.
    s.state.approve_node(a_id).await.unwrap();
    let (mut authorized, mut sees_beta) = (false, false);
    while !(authorized && sees_beta) {
        let d = fa.next_update().await;
        if let Some(n) = &d.node {
            authorized |= n.machine_authorized;
        }
        sees_beta |= d
            .peers
            .iter()
            .flatten()
            .chain(d.peers_changed.iter().flatten())
            .any(|p| p.name == "beta.");
    }
    let mut sees_alpha = false;
    while !sees_alpha {
        let d = fb.next_update().await;
        sees_alpha |= d
            .peers
            .iter()
            .flatten()
            .chain(d.peers_changed.iter().flatten())
            .any(|p| p.name == "alpha.");
    }
}

/// A router's map stream reader that answers health probes while `answer` is
/// set (HEAD of the probe URL on the server), and counts the probes it saw.
fn probe_answerer(
    addr: std::net::SocketAddr,
    mut frames: Frames,
    answer: Arc<std::sync::atomic::AtomicBool>,
    seen: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    tokio::spawn(async move {
        loop {
            let m = frames.next().await;
            if let Some(p) = m.ping_request {
                seen.fetch_add(1, Ordering::SeqCst);
                if answer.load(Ordering::SeqCst) {
                    let path = p.url.trim_start_matches(|c| c != '/');
                    let mut tcp = TcpStream::connect(addr).await.unwrap();
                    tcp.write_all(
                        format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                            .as_bytes(),
                    )
                    .await
                    .unwrap();
                    let mut out = Vec::new();
                    let _ = tcp.read_to_end(&mut out).await;
                }
            }
        }
    })
}

/// Health probing (`node.routes.ha.probe_*`): a primary router that keeps
/// its stream but stops answering is replaced; one that answers again does
/// not take its routes back (sticky); a healthy standby is never demoted.
#[tokio::test]
async fn a_router_that_stops_answering_probes_fails_over() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let s = start_with_options(
        Default::default(),
        Arc::new(ironscale_state::SystemClock),
        ironscale_control::ControlOptions {
            probe_interval: Duration::from_millis(150),
            probe_timeout: Duration::from_millis(150),
            ..Default::default()
        },
    )
    .await;
    let key = new_key(&s, true).await;
    let subnet: ipnet::IpNet = "10.40.0.0/24".parse().unwrap();
    let hi = serde_json::json!({"Hostname": "r", "RoutableIPs": ["10.40.0.0/24"]});
    let mut routers = Vec::new();
    for host in ["r1", "r2"] {
        let (mut c, r) = join(&s, &key, host).await;
        assert!(r.machine_authorized);
        let frames = map_stream_with(&mut c.h2, &c.node.node_public(), &c.disco, hi.clone()).await;
        let id = s.state.node_by_key(&c.node.node_public()).unwrap().id;
        s.state.set_approved_routes(id, vec![subnet]).await.unwrap();
        let answer = Arc::new(AtomicBool::new(true));
        let seen = Arc::new(AtomicUsize::new(0));
        let task = probe_answerer(s.addr, frames, answer.clone(), seen.clone());
        routers.push((id, c, answer, seen, task));
    }
    let (r1, r2) = (routers[0].0, routers[1].0);
    let primary = |s: &Server| s.state.snapshot().primaries.get(&subnet).copied();
    assert_eq!(primary(&s), Some(r1));
    // Both answer: after several probe rounds, r1 is still primary.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(primary(&s), Some(r1), "a healthy primary stays");
    assert!(routers[0].3.load(Ordering::SeqCst) >= 2, "r1 was probed");
    // r1 stops answering (its stream stays open): r2 takes over.
    routers[0].2.store(false, Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    while primary(&s) != Some(r2) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "no failover from a silent router"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.state.snapshot().unhealthy.contains(&r1));
    // r1 answers again: healthy, but r2 keeps the route.
    routers[0].2.store(true, Ordering::SeqCst);
    let t0 = std::time::Instant::now();
    while s.state.snapshot().unhealthy.contains(&r1) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "r1 never became healthy again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(primary(&s), Some(r2), "sticky after recovery");
    for (_, _, _, _, task) in routers {
        task.abort();
    }
}

/// `POST body` (raw bytes, no Content-Type, as Go's derper sends it) on the plain listener.
async fn http_post(addr: std::net::SocketAddr, path: &str, body: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

/// `/verify` admits exactly the nodes of this tailnet whose key is valid now: a member yes,
/// an unknown key no, and a node expired or deleted no from then on; bad bodies are a 400.
#[tokio::test]
async fn verify_admits_members_and_refuses_outsiders_expired_and_deleted_nodes() {
    let s = start().await;
    let key = new_key(&s, true).await;
    let (a, _) = join(&s, &key, "alpha").await;
    let (b, _) = join(&s, &key, "beta").await;
    let ask = |k: String| {
        let addr = s.addr;
        async move {
            let body = format!("{{\"NodePublic\":\"{k}\",\"Source\":\"192.0.2.7\"}}");
            http_post(addr, "/verify", body.as_bytes()).await
        }
    };
    let allowed = |resp: &str| {
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        if resp.ends_with("{\"Allow\":true}") {
            true
        } else {
            assert!(resp.ends_with("{\"Allow\":false}"), "{resp}");
            false
        }
    };
    let ka = a.node.node_public().to_string();
    let kb = b.node.node_public().to_string();
    assert!(allowed(&ask(ka.clone()).await));
    assert!(allowed(&ask(kb.clone()).await));
    let outsider = PrivateKey::generate().node_public().to_string();
    assert!(!allowed(&ask(outsider).await), "an outsider was admitted");

    let alpha = s.state.node_by_key(&a.node.node_public()).unwrap().id;
    s.state
        .expire_node(alpha, Some(s.state.now() - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    assert!(!allowed(&ask(ka).await), "an expired node was admitted");
    let beta = s.state.node_by_key(&b.node.node_public()).unwrap().id;
    s.state.delete_node(beta).await.unwrap();
    assert!(!allowed(&ask(kb).await), "a deleted node was admitted");

    for bad in [
        &b"not json"[..],
        b"{}",
        b"{\"NodePublic\":\"nodekey:zz\"}",
        b"",
    ] {
        let r = http_post(s.addr, "/verify", bad).await;
        assert!(r.starts_with("HTTP/1.1 400"), "{r}");
    }
    // The server still answers.
    assert!(http_get(s.addr, "/health")
        .await
        .starts_with("HTTP/1.1 200"));
}
