//! `State::diagnose`: each real situation gives its finding with cause and fix; a healthy node
//! gives none.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use ipnet::IpNet;
use ironscale_state::{ManualClock, State};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, UserId};

use common::t0;

/// An online-looking node: NetInfo with UDP, an easy NAT and home DERP 900 at 10 ms, one
/// endpoint, a recent client (see `common::node`).
fn node(i: u8, name: &str, user: UserId) -> Node {
    let mut n = common::node(i, name, Some(user));
    n.hostinfo_json = Some(netinfo(true, false, 900, 0.01));
    n.home_derp = 900;
    n.endpoints = vec!["192.0.2.1:41641".into()];
    n.last_seen = Some(t0());
    n.capver = 130;
    n
}

fn netinfo(udp: bool, hard: bool, home: i64, latency: f64) -> String {
    serde_json::json!({"Hostname": "x", "IPNVersion": "1.96.4", "NetInfo": {
        "WorkingUDP": if udp { "true" } else { "false" },
        "MappingVariesByDestAddr": if hard { "true" } else { "false" },
        "PreferredDERP": home,
        "DERPLatency": {format!("{home}-v4"): latency},
    }})
    .to_string()
}

#[tokio::test]
async fn each_situation_has_its_finding_and_a_healthy_node_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let u = store
        .create_user(&NewUser::named("alice"), t0())
        .await
        .unwrap()
        .id;
    let net = |s: &str| -> IpNet { s.parse().unwrap() };
    let mut nodes = Vec::new();
    nodes.push(node(1, "healthy", u));
    let mut n = node(2, "expired", u);
    n.expiry = Some(t0() - chrono::Duration::hours(1));
    nodes.push(n);
    let mut n = node(3, "router", u);
    n.announced_routes = vec![net("10.0.0.0/24")];
    nodes.push(n);
    let mut n = node(4, "exit", u);
    n.announced_routes = vec![net("0.0.0.0/0"), net("::/0")];
    nodes.push(n);
    let mut n = node(5, "hard1", u);
    n.hostinfo_json = Some(netinfo(true, true, 900, 0.01));
    nodes.push(n);
    let mut n = node(6, "hard2", u);
    n.hostinfo_json = Some(netinfo(true, true, 900, 0.01));
    nodes.push(n);
    let mut n = node(7, "gone", u);
    n.last_seen = Some(t0() - chrono::Duration::hours(3));
    nodes.push(n);
    let mut n = node(8, "noudp", u);
    n.hostinfo_json = Some(netinfo(false, false, 900, 0.01));
    nodes.push(n);
    let mut n = node(9, "far", u);
    n.hostinfo_json = Some(netinfo(true, false, 901, 0.240));
    nodes.push(n);
    let mut ids = std::collections::BTreeMap::new();
    for n in nodes {
        let name = n.given_name.clone();
        ids.insert(name, store.insert_node(&n).await.unwrap().id);
    }
    let clock = ManualClock::new(t0());
    let state = State::load_with_clock(
        store,
        Default::default(),
        Default::default(),
        Arc::new(clock),
    )
    .await
    .unwrap();
    let mut sessions = Vec::new();
    for name in [
        "healthy", "router", "exit", "hard1", "hard2", "noudp", "far",
    ] {
        sessions.push(state.connect(ids[name]).await.unwrap());
    }
    let url = "https://vpn.example.com";
    let all = state.diagnose(None, url);
    let codes = |name: &str| -> Vec<&str> {
        all.iter()
            .filter(|f| f.node == Some(ids[name]))
            .map(|f| f.code)
            .collect()
    };
    assert!(codes("healthy").is_empty(), "{all:#?}");
    assert_eq!(codes("expired"), vec!["key-expired"]);
    assert_eq!(codes("router"), vec!["route-not-approved"]);
    assert_eq!(codes("exit"), vec!["exit-not-approved"]);
    assert_eq!(codes("hard1"), vec!["relayed-hard-nat-pair"]);
    assert_eq!(codes("hard2"), vec!["relayed-hard-nat-pair"]);
    assert_eq!(codes("gone"), vec!["offline"]);
    assert_eq!(codes("noudp"), vec!["relayed-no-udp"]);
    assert_eq!(codes("far"), vec!["home-derp-far"]);
    let find = |code: &str| all.iter().find(|f| f.code == code).unwrap();
    assert!(find("key-expired")
        .fix
        .contains("tailscale up --login-server=https://vpn.example.com"));
    let r = ids["router"].0;
    assert_eq!(
        find("route-not-approved").fix,
        format!("ironscale nodes approve-routes -i {r} -r 10.0.0.0/24 (or an autoApprovers.routes rule in the policy)")
    );
    assert!(
        find("exit-not-approved").fix.contains("-r 0.0.0.0/0,::/0"),
        "{:?}",
        find("exit-not-approved")
    );
    assert!(
        find("offline").cause.contains("last seen 3 h ago"),
        "{:?}",
        find("offline")
    );
    assert!(
        find("relayed-hard-nat-pair").cause.contains("hard2")
            || find("relayed-hard-nat-pair").cause.contains("hard1")
    );
    assert!(find("home-derp-far").cause.contains("240 ms"));
    // Problems first.
    let first_warning = all
        .iter()
        .position(|f| f.severity == ironscale_state::FindingSeverity::Warning)
        .unwrap();
    assert!(all[..first_warning]
        .iter()
        .all(|f| f.severity == ironscale_state::FindingSeverity::Problem));
    // One node only.
    let one = state.diagnose(Some(ids["router"]), url);
    assert_eq!(one.len(), 1);
    assert!(state.diagnose(Some(ids["healthy"]), url).is_empty());

    // Fixed: the route approved, the finding is gone.
    state
        .set_approved_routes(ids["router"], vec![net("10.0.0.0/24")])
        .await
        .unwrap();
    assert!(state.diagnose(Some(ids["router"]), url).is_empty());
    drop(sessions);
}

#[tokio::test]
async fn explain_names_the_rule_that_allows_and_says_why_a_connection_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let alice = store
        .create_user(&NewUser::named("alice"), t0())
        .await
        .unwrap()
        .id;
    let bob = store
        .create_user(&NewUser::named("bob"), t0())
        .await
        .unwrap()
        .id;
    let mut ids = Vec::new();
    for (i, name, u) in [
        (1, "laptop", alice),
        (2, "phone", bob),
        (3, "server", alice),
    ] {
        ids.push(store.insert_node(&node(i, name, u)).await.unwrap().id);
    }
    let state = State::load_with_clock(
        store,
        Default::default(),
        Default::default(),
        Arc::new(ManualClock::new(t0())),
    )
    .await
    .unwrap();
    let (laptop, phone, server) = (ids[0], ids[1], ids[2]);
    let e = state.explain_access(phone, server, 22).unwrap();
    assert!(
        e.allowed && e.why.starts_with("no policy is in force"),
        "{e:?}"
    );
    state
        .set_policy_text(
            r#"{"acls": [
                {"action": "accept", "src": ["bob@"], "dst": ["alice@:443"]},
                {"action": "accept", "src": ["alice@"], "dst": ["alice@:22"]}
            ]}"#,
            "policy.hujson",
        )
        .await
        .unwrap();
    let e = state.explain_access(laptop, server, 22).unwrap();
    assert!(e.allowed, "{e:?}");
    let (_, srcs, dsts) = e.rule.clone().unwrap();
    assert!(srcs.iter().any(|s| s.contains("100.64.0.1")), "{e:?}");
    assert!(dsts.iter().any(|d| d.ends_with(":22")), "{e:?}");
    let e = state.explain_access(phone, server, 22).unwrap();
    assert!(!e.allowed, "{e:?}");
    assert!(
        e.why.contains("none of the")
            && e.why.contains("phone (100.64.0.2)")
            && e.why.contains("server:22"),
        "{e:?}"
    );
    let e = state.explain_access(phone, server, 443).unwrap();
    assert!(e.allowed, "{e:?}");
    // bob's phone is no destination of any rule.
    let e = state.explain_access(laptop, phone, 22).unwrap();
    assert!(
        !e.allowed && e.why.contains("packet filter is empty"),
        "{e:?}"
    );
}
