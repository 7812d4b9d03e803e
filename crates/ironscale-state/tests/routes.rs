//! One route election: the map's PrimaryRoutes and the policy's AllowedIPs
//! name the same router, online-aware and sticky, with or without a policy.
//! (Before: under a policy, AllowedIPs kept the lowest-id router even while
//! it was offline, so HA failover did not reach peers.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use std::sync::Arc;

use ipnet::IpNet;
use ironscale_keys::PrivateKey;
use ironscale_state::{RegisterResult, Settings, State};
use ironscale_store::Store;
use ironscale_types::{Node, NodeId, UserRef};
use ironscale_wire as wire;

const POLICY: &str = r#"{ "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ] }"#;

async fn state(dir: &tempfile::TempDir) -> State {
    let store = Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .unwrap();
    let s = State::load(store, Settings::default(), Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    s
}

async fn join(s: &State, host: &str, routes: &[&str]) -> Arc<Node> {
    let (_, key) = s
        .create_preauth_key(
            Some(&UserRef::Name("alice".parse().unwrap())),
            false,
            false,
            None,
            vec![],
        )
        .await
        .unwrap();
    let req = wire::RegisterRequest {
        version: 106,
        node_key: PrivateKey::generate().node_public(),
        auth: Some(wire::RegisterResponseAuth { auth_key: key }),
        hostinfo: Some(serde_json::json!({ "Hostname": host, "RoutableIPs": routes })),
        ..Default::default()
    };
    match s
        .register(PrivateKey::generate().machine_public(), &req)
        .await
    {
        RegisterResult::Authorized { node, .. } => node,
        other => panic!("{host}: {other:?}"),
    }
}

/// What `viewer` may route through `peer` (AllowedIPs beyond its addresses)
/// and what the map says `peer` serves (PrimaryRoutes).
fn routes_via(s: &State, viewer: NodeId, peer: NodeId) -> (Vec<IpNet>, Vec<IpNet>) {
    let t = s.snapshot();
    let (v, p) = (&t.nodes[&viewer], &t.nodes[&peer]);
    let allowed = t.policy.peer_routes(&t, v, p);
    (allowed, t.primary_routes(peer))
}

async fn ha(with_policy: bool) {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir).await;
    if with_policy {
        s.set_policy_text(POLICY, "policy.hujson").await.unwrap();
    }
    let subnet: IpNet = "10.7.0.0/24".parse().unwrap();
    let r1 = join(&s, "r1", &["10.7.0.0/24"]).await;
    let r2 = join(&s, "r2", &["10.7.0.0/24"]).await;
    let v = join(&s, "laptop", &[]).await;
    for r in [&r1, &r2] {
        s.set_approved_routes(r.id, vec![subnet]).await.unwrap();
    }
    let c1 = s.connect(r1.id).await.unwrap();
    let c2 = s.connect(r2.id).await.unwrap();
    let _cv = s.connect(v.id).await.unwrap();
    let first = (vec![subnet], vec![subnet]);
    assert_eq!(
        routes_via(&s, v.id, r1.id),
        first,
        "r1 (lowest id, online) serves"
    );
    assert_eq!(
        routes_via(&s, v.id, r2.id),
        (vec![], vec![]),
        "r2 stands by"
    );

    // r1's stream ends: r2 takes over in the filters and the map alike.
    s.disconnect(&c1).await;
    assert_eq!(routes_via(&s, v.id, r2.id), first, "failover to r2");
    assert_eq!(
        routes_via(&s, v.id, r1.id),
        (vec![], vec![]),
        "offline r1 serves nothing"
    );

    // r1 comes back: r2 stays primary (sticky).
    let c1 = s.connect(r1.id).await.unwrap();
    assert_eq!(routes_via(&s, v.id, r2.id), first, "sticky");
    assert_eq!(routes_via(&s, v.id, r1.id), (vec![], vec![]));

    // Both offline: nobody is named as serving.
    s.disconnect(&c2).await;
    s.disconnect(&c1).await;
    assert_eq!(routes_via(&s, v.id, r1.id), (vec![], vec![]));
    assert_eq!(routes_via(&s, v.id, r2.id), (vec![], vec![]));
    assert!(s.snapshot().primaries.is_empty());
}

#[tokio::test]
async fn failover_reaches_allowed_ips_and_primary_routes_without_a_policy() {
    ha(false).await;
}

#[tokio::test]
async fn failover_reaches_allowed_ips_and_primary_routes_under_a_policy() {
    ha(true).await;
}

const AUTO: &str = r#"{
  "acls": [ { "action": "accept", "src": ["*"], "dst": ["*:*"] } ],
  "autoApprovers": { "routes": { "10.8.0.0/16": ["alice@"] }, "exitNode": ["alice@"] }
}"#;

/// `autoApprovers` approve once and the approval is stored: at registration,
/// at a policy change, and it outlives the policy that gave it.
#[tokio::test]
async fn auto_approvals_are_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = state(&dir).await;
    let before = join(&s, "early", &["10.8.2.0/24"]).await;
    assert!(
        before.approved_routes.is_empty(),
        "no policy yet: nothing approved"
    );
    s.set_policy_text(AUTO, "policy.hujson").await.unwrap();
    // The policy change approved the early router's route, in the record.
    let early = s.get_node(before.id).unwrap();
    assert_eq!(
        early.approved_routes,
        vec!["10.8.2.0/24".parse::<IpNet>().unwrap()]
    );
    // A router registering under the policy is approved at once; a route
    // outside the approver's prefix is not.
    let r = join(
        &s,
        "gw",
        &["10.8.1.0/24", "192.168.5.0/24", "0.0.0.0/0", "::/0"],
    )
    .await;
    let mut got = r.approved_routes.clone();
    got.sort();
    let mut want: Vec<IpNet> = ["10.8.1.0/24", "0.0.0.0/0", "::/0"]
        .iter()
        .map(|x| x.parse().unwrap())
        .collect();
    want.sort();
    assert_eq!(got, want);
    // Stored: a policy without autoApprovers keeps the approvals.
    s.set_policy_text(POLICY, "policy.hujson").await.unwrap();
    assert_eq!(s.get_node(r.id).unwrap().approved_routes, got);
    assert_eq!(
        s.get_node(early.id).unwrap().approved_routes,
        early.approved_routes
    );
    // And the election serves them.
    let _c = s.connect(r.id).await.unwrap();
    assert_eq!(
        s.snapshot().primary_routes(r.id),
        vec!["10.8.1.0/24".parse::<IpNet>().unwrap()]
    );
}

/// With device approval, an unapproved router serves nothing (its peers do
/// not see it) until it is approved.
#[tokio::test]
async fn an_unapproved_router_is_not_elected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .unwrap();
    let settings = Settings {
        device_approval: true,
        ..Settings::default()
    };
    let s = State::load(store, settings, Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    let subnet: IpNet = "10.9.0.0/24".parse().unwrap();
    let r = join(&s, "r", &["10.9.0.0/24"]).await;
    assert!(!r.approved);
    s.set_approved_routes(r.id, vec![subnet]).await.unwrap();
    let _c = s.connect(r.id).await.unwrap();
    assert!(
        s.snapshot().primaries.is_empty(),
        "an unapproved router is not primary"
    );
    s.approve_node(r.id).await.unwrap();
    assert_eq!(s.snapshot().primaries.get(&subnet), Some(&r.id));
}
