//! `State::move_node` (`nodes move`): the owner changes field by field, the
//! commit publishes it (sessions that can see the node, the policy), and a
//! refusal (tagged node, unknown node or user) changes nothing.
//! `State::backfill_node_ips` (`nodes backfillips`): the addresses follow
//! the configured prefixes.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;

use common::{node, t0};
use ironscale_state::{ManualClock, State, StateError};
use ironscale_store::{NewUser, NodeUpdate, Store};
use ironscale_types::{NodeId, UserId, UserRef};

struct Env {
    _dir: tempfile::TempDir,
    /// A second handle on the same database (what another writer sees).
    store: Store,
    state: State,
    alice: UserId,
    bob: UserId,
    laptop: NodeId,
    phone: NodeId,
    server: NodeId,
}

/// alice's laptop, bob's phone, a tagged server (IPv4 addresses only).
async fn env() -> Env {
    env_with(Default::default()).await
}

async fn env_with(settings: ironscale_state::Settings) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ironscale_store::sqlite_config(dir.path().join("s.sqlite"));
    let store = Store::open(&cfg).await.unwrap();
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
    let laptop = store
        .insert_node(&node(1, "laptop", Some(alice)))
        .await
        .unwrap()
        .id;
    let phone = store
        .insert_node(&node(2, "phone", Some(bob)))
        .await
        .unwrap()
        .id;
    let mut s = node(3, "server", None);
    s.tags = vec!["tag:server".into()];
    let server = store.insert_node(&s).await.unwrap().id;
    let state = State::load_with_clock(
        Store::open(&cfg).await.unwrap(),
        settings,
        Default::default(),
        Arc::new(ManualClock::new(t0())),
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        store,
        state,
        alice,
        bob,
        laptop,
        phone,
        server,
    }
}

fn name(s: &str) -> UserRef {
    UserRef::Name(s.into())
}

#[tokio::test]
async fn move_changes_the_owner_and_publishes() {
    let e = env().await;
    // Users see their own nodes only: the laptop (alice) cannot see the phone (bob).
    e.state
        .set_policy_text(
            r#"{"acls": [{"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]}]}"#,
            "policy.json",
        )
        .await
        .unwrap();
    let sees = |a: NodeId, b: NodeId| {
        let t = e.state.snapshot();
        let (a, b) = (t.nodes.get(&a).unwrap(), t.nodes.get(&b).unwrap());
        t.policy.can_see(&t, a, b)
    };
    assert!(!sees(e.laptop, e.phone));
    let session = e.state.connect(e.laptop).await.unwrap();
    session.take();

    let n = e.state.move_node(e.phone, &name("alice")).await.unwrap();
    assert_eq!(n.user_id, Some(e.alice));
    assert!(n.tags.is_empty());
    // The snapshot, the read model, the database and the policy agree.
    assert_eq!(e.state.get_node(e.phone).unwrap().user_id, Some(e.alice));
    let v = e.state.node_view(e.phone).await.unwrap();
    assert_eq!(v.user.as_ref().map(|u| u.id), Some(e.alice));
    let stored = e.store.get_node(e.phone).await.unwrap().unwrap();
    assert_eq!(stored.user_id, Some(e.alice));
    assert!(sees(e.laptop, e.phone), "the policy sees the new owner");
    // The laptop's session is told (the phone, or a full rebuild).
    let p = session.take();
    assert!(p.full || p.nodes.contains(&e.phone), "{p:?}");
    // The index follows: bob owns nothing now, alice two nodes.
    let views = e.state.user_views(&Default::default());
    let count = |id: UserId| views.iter().find(|u| u.user.id == id).unwrap().node_count;
    assert_eq!((count(e.alice), count(e.bob)), (2, 0));

    // By id, back to bob.
    let n = e
        .state
        .move_node(e.phone, &UserRef::Id(e.bob))
        .await
        .unwrap();
    assert_eq!(n.user_id, Some(e.bob));
}

#[tokio::test]
async fn move_writes_only_the_owner() {
    let e = env().await;
    // Another writer renames the phone in the database meanwhile.
    e.store
        .update_node_fields(
            e.phone,
            &NodeUpdate {
                given_name: Some("renamed".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    e.state.move_node(e.phone, &name("alice")).await.unwrap();
    let stored = e.store.get_node(e.phone).await.unwrap().unwrap();
    assert_eq!(stored.user_id, Some(e.alice));
    assert_eq!(
        stored.given_name, "renamed",
        "the other writer's change survives"
    );
}

#[tokio::test]
async fn refused_moves_change_nothing() {
    let e = env().await;
    let before = e.state.snapshot();
    let stored_before = e.store.list_nodes().await.unwrap();

    let err = e
        .state
        .move_node(e.server, &name("alice"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StateError::Invalid(_)), "{err:?}");
    assert!(msg.contains("is tagged (tag:server)"), "{msg}");
    assert!(msg.contains("tagged nodes have no user"), "{msg}");

    let err = e
        .state
        .move_node(e.phone, &name("ghost"))
        .await
        .unwrap_err();
    assert!(matches!(err, StateError::UserNotFound(_)), "{err:?}");
    assert_eq!(err.to_string(), r#"user "ghost" not found"#);
    let err = e
        .state
        .move_node(e.phone, &UserRef::Id(UserId(99)))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "user id 99 not found");

    let err = e
        .state
        .move_node(NodeId(99), &name("alice"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StateError::NodeNotFound(NodeId(99))),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "node 99 not found");

    let after = e.state.snapshot();
    for (id, n) in before.nodes.iter() {
        assert_eq!(after.nodes.get(id), Some(n), "node {id:?} changed");
    }
    assert_eq!(e.store.list_nodes().await.unwrap(), stored_before);
}

#[tokio::test]
async fn backfill_gives_the_missing_family_and_publishes() {
    let e = env().await; // both prefixes configured, nodes with IPv4 only
    let session = e.state.connect(e.laptop).await.unwrap();
    session.take();
    let lines = e.state.backfill_node_ips().await.unwrap();
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut seen = std::collections::BTreeSet::new();
    for (id, host) in [
        (e.laptop, "laptop"),
        (e.phone, "phone"),
        (e.server, "server"),
    ] {
        let n = e.state.get_node(id).unwrap();
        let v6 = n.ipv6.expect("an IPv6 address");
        assert!(seen.insert(v6), "{v6} given twice");
        assert!(
            lines.contains(&format!(
                "assigned IPv6 \"{v6}\" to Node({}) \"{host}\"",
                id.0
            )),
            "{lines:?}"
        );
        assert_eq!(
            n.ipv4,
            Some(std::net::Ipv4Addr::new(100, 64, 0, id.0 as u8))
        );
        let stored = e.store.get_node(id).await.unwrap().unwrap();
        assert_eq!((stored.ipv4, stored.ipv6), (n.ipv4, n.ipv6));
    }
    let p = session.take();
    assert!(p.full || p.nodes.contains(&e.phone), "{p:?}");
    // In line now: nothing more to do, nothing committed.
    let before = e.state.snapshot();
    assert!(e.state.backfill_node_ips().await.unwrap().is_empty());
    assert!(Arc::ptr_eq(&before, &e.state.snapshot()));
}

#[tokio::test]
async fn backfill_removes_a_family_no_longer_configured() {
    let e = env_with(ironscale_state::Settings {
        prefix_v4: None,
        ..Default::default()
    })
    .await;
    let lines = e.state.backfill_node_ips().await.unwrap();
    assert_eq!(lines.len(), 6, "{lines:?}");
    let n = e.state.get_node(e.phone).unwrap();
    assert_eq!(n.ipv4, None);
    assert!(n.ipv6.is_some());
    assert!(
        lines.contains(&format!(
            "removed IPv4 \"100.64.0.2\" from Node({}) \"phone\"",
            e.phone.0
        )),
        "{lines:?}"
    );
    let stored = e.store.get_node(e.phone).await.unwrap().unwrap();
    assert_eq!((stored.ipv4, stored.ipv6), (None, n.ipv6));
}

#[tokio::test]
async fn a_failed_backfill_changes_nothing() {
    let e = env().await;
    // Another writer takes the address the allocator will hand out next.
    let mut squatter = node(9, "squatter", Some(e.alice));
    squatter.ipv4 = Some(std::net::Ipv4Addr::new(100, 64, 0, 9));
    squatter.ipv6 = Some("fd7a:115c:a1e0::1".parse().unwrap());
    e.store.insert_node(&squatter).await.unwrap();
    let before = e.state.snapshot();
    let stored_before = e.store.list_nodes().await.unwrap();
    let err = e.state.backfill_node_ips().await.unwrap_err();
    assert!(err.to_string().contains("fd7a:115c:a1e0::1"), "{err}");
    assert!(Arc::ptr_eq(&before, &e.state.snapshot()));
    assert_eq!(
        e.store.list_nodes().await.unwrap(),
        stored_before,
        "rolled back"
    );
}
