//! The read models (`State::node_views`, `node_view`, `user_views`,
//! `preauth_key_views`) join what the API, the CLI and a web UI show: a node
//! with its owner, online state, routes (announced, approved, served,
//! primary), tags, expiry and pre-auth key; a user with its node count; a key
//! with its owner and used/expired state.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use ironscale_state::{ExpiryState, ManualClock, NodeFilter, State, StateError, UserFilter};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, NodeId, UserId, UserRef};

use common::t0;

/// A node registered with pre-auth key `key` (see `common::node`).
fn node(i: u8, name: &str, user: Option<UserId>, key: Option<u64>) -> Node {
    let mut n = common::node(i, name, user);
    n.auth_key_id = key;
    n
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

struct Env {
    _dir: tempfile::TempDir,
    state: State,
    clock: ManualClock,
    alice: UserId,
    bob: UserId,
    /// alice's laptop (registered with key 1), a router of alice's, bob's
    /// phone (no key), a tagged server (key 2).
    laptop: NodeId,
    router: NodeId,
    phone: NodeId,
    server: NodeId,
    alice_key: u64,
    tag_key: u64,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let mut users = Vec::new();
    for name in ["alice", "bob", "carol"] {
        let new = NewUser {
            name: name.into(),
            email: format!("{name}@example.com"),
            ..Default::default()
        };
        users.push(store.create_user(&new, t0()).await.unwrap().id);
    }
    let (alice, bob) = (users[0], users[1]);
    let (k1, _) = store
        .create_preauth_key(
            Some(alice),
            true,
            false,
            Some(t0() + chrono::Duration::hours(1)),
            &[],
            t0(),
        )
        .await
        .unwrap();
    let (k2, _) = store
        .create_preauth_key(None, false, false, None, &["tag:server".to_string()], t0())
        .await
        .unwrap();
    store.mark_preauth_key_used(k2.id).await.unwrap();

    let mut laptop = node(1, "laptop", Some(alice), Some(k1.id));
    laptop.expiry = Some(t0() + chrono::Duration::hours(2));
    laptop.last_seen = Some(t0() - chrono::Duration::minutes(5));
    let mut router = node(2, "router", Some(alice), Some(k1.id));
    router.announced_routes = vec![
        net("10.0.0.0/24"),
        net("10.1.0.0/24"),
        net("0.0.0.0/0"),
        net("::/0"),
    ];
    let phone = node(3, "phone", Some(bob), None);
    let mut server = node(4, "server", None, Some(k2.id));
    server.tags = vec!["tag:server".into()];
    server.announced_routes = vec![net("10.0.0.0/24")];
    let mut ids = Vec::new();
    for n in [laptop, router, phone, server] {
        ids.push(store.insert_node(&n).await.unwrap().id);
    }
    let clock = ManualClock::new(t0());
    let state = State::load_with_clock(
        store,
        Default::default(),
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    Env {
        _dir: dir,
        state,
        clock,
        alice,
        bob,
        laptop: ids[0],
        router: ids[1],
        phone: ids[2],
        server: ids[3],
        alice_key: k1.id,
        tag_key: k2.id,
    }
}

#[tokio::test]
async fn node_views_join_owner_online_routes_and_key() {
    let e = env().await;
    let s = &e.state;
    // The router serves 10.0.0.0/24 (and an exit route); 10.2.0.0/24 is
    // approved but not announced. The tagged server is approved for the same
    // subnet: the first online node becomes its primary.
    s.set_approved_routes(
        e.router,
        vec![net("10.0.0.0/24"), net("10.2.0.0/24"), net("0.0.0.0/0")],
    )
    .await
    .unwrap();
    s.set_approved_routes(e.server, vec![net("10.0.0.0/24")])
        .await
        .unwrap();
    let _server_session = s.connect(e.server).await.unwrap();

    let all = s.node_views(&NodeFilter::default()).await.unwrap();
    let ids: Vec<NodeId> = all.iter().map(|v| v.node.id).collect();
    assert_eq!(ids, [e.laptop, e.router, e.phone, e.server], "id order");

    let laptop = &all[0];
    assert_eq!(laptop.user.as_ref().map(|u| u.name.as_str()), Some("alice"));
    assert!(!laptop.online);
    assert_eq!(laptop.last_seen, Some(t0() - chrono::Duration::minutes(5)));
    assert_eq!(
        laptop.expiry,
        ExpiryState::ExpiresAt(t0() + chrono::Duration::hours(2))
    );
    let k = laptop.pre_auth_key.as_ref().expect("registered with a key");
    assert_eq!(
        (k.id, k.user.as_ref().map(|u| u.id)),
        (e.alice_key, Some(e.alice))
    );
    assert!(!k.expired && k.reusable);

    let router = &all[1];
    assert_eq!(router.announced_routes.len(), 4);
    assert_eq!(
        router.approved_routes,
        [
            net("0.0.0.0/0"),
            net("10.0.0.0/24"),
            net("10.2.0.0/24"),
            net("::/0")
        ],
        "an exit family approves both"
    );
    assert_eq!(router.subnet_routes, [net("10.0.0.0/24")]);
    assert!(router.exit_node);
    assert!(
        router.primary_routes.is_empty(),
        "offline: the online server is primary"
    );

    let phone = &all[2];
    assert_eq!(phone.user.as_ref().map(|u| u.id), Some(e.bob));
    assert!(phone.pre_auth_key.is_none());
    assert_eq!(phone.expiry, ExpiryState::Never);
    assert!(!phone.exit_node && phone.subnet_routes.is_empty());

    let server = &all[3];
    assert!(server.user.is_none(), "a tagged node has no owner");
    assert_eq!(server.tags, ["tag:server"]);
    assert!(server.online);
    assert_eq!(server.primary_routes, [net("10.0.0.0/24")]);
    let k = server.pre_auth_key.as_ref().expect("key");
    assert!(k.used && k.user.is_none());

    // One node's view is the same join.
    let one = s.node_view(e.server).await.unwrap();
    assert_eq!(one.primary_routes, server.primary_routes);
    assert_eq!(one.pre_auth_key, server.pre_auth_key);
    assert!(matches!(
        s.node_view(NodeId(999)).await,
        Err(StateError::NodeNotFound(NodeId(999)))
    ));

    // The expiry state follows the state's clock.
    e.clock.advance(Duration::from_secs(3 * 3600));
    let laptop = s.node_view(e.laptop).await.unwrap();
    assert_eq!(
        laptop.expiry,
        ExpiryState::ExpiredAt(t0() + chrono::Duration::hours(2))
    );
    assert!(laptop.expiry.is_expired());
    assert!(
        laptop.pre_auth_key.unwrap().expired,
        "the key expired after an hour"
    );
}

#[tokio::test]
async fn node_views_filter_by_owner() {
    let e = env().await;
    let s = &e.state;
    let alice = s
        .node_views(&NodeFilter {
            user: Some(UserRef::Name("alice".into())),
        })
        .await
        .unwrap();
    let ids: Vec<NodeId> = alice.iter().map(|v| v.node.id).collect();
    assert_eq!(ids, [e.laptop, e.router]);
    let bob = s
        .node_views(&NodeFilter {
            user: Some(UserRef::Id(e.bob)),
        })
        .await
        .unwrap();
    assert_eq!(bob.len(), 1);
    assert_eq!(bob[0].node.id, e.phone);
    assert!(matches!(
        s.node_views(&NodeFilter {
            user: Some(UserRef::Name("nobody".into())),
        })
        .await,
        Err(StateError::UserNotFound(_))
    ));
    // Tagging a node takes it from its owner's list.
    s.set_node_tags(e.laptop, vec!["tag:server".into()])
        .await
        .unwrap();
    let alice = s
        .node_views(&NodeFilter {
            user: Some(UserRef::Id(e.alice)),
        })
        .await
        .unwrap();
    assert_eq!(alice.len(), 1);
}

#[tokio::test]
async fn user_views_count_nodes_and_filter() {
    let e = env().await;
    let s = &e.state;
    let all = s.user_views(&UserFilter::default());
    let counts: Vec<(&str, usize)> = all
        .iter()
        .map(|v| (v.user.name.as_str(), v.node_count))
        .collect();
    assert_eq!(counts, [("alice", 2), ("bob", 1), ("carol", 0)]);
    let by_name = s.user_views(&UserFilter {
        name: Some("bob".into()),
        ..Default::default()
    });
    assert_eq!(by_name.len(), 1);
    assert_eq!(by_name[0].user.id, e.bob);
    let by_email = s.user_views(&UserFilter {
        email: Some("carol@example.com".into()),
        ..Default::default()
    });
    assert_eq!(by_email[0].user.name, "carol");
    let none = s.user_views(&UserFilter {
        id: Some(e.alice),
        name: Some("bob".into()),
        ..Default::default()
    });
    assert!(none.is_empty(), "every given field must match");
    s.delete_node(e.phone).await.unwrap();
    assert_eq!(s.user_view(&UserRef::Id(e.bob)).unwrap().node_count, 0);
    assert!(s.user_view(&UserRef::Name("nobody".into())).is_err());
    let u = s.create_user("dave", "", "").await.unwrap();
    assert_eq!(s.user_view_of(&u).node_count, 0);
}

#[tokio::test]
async fn preauth_key_views_show_owner_used_expired_and_no_secret() {
    let e = env().await;
    let s = &e.state;
    let all = s.preauth_key_views(None).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|k| k.id).collect();
    assert_eq!(ids, [e.alice_key, e.tag_key]);
    assert_eq!(all[0].user.as_ref().map(|u| u.name.as_str()), Some("alice"));
    assert!(!all[0].used && !all[0].expired);
    assert!(all[1].used && all[1].user.is_none());
    assert_eq!(all[1].tags, ["tag:server"]);
    let alice = s
        .preauth_key_views(Some(&UserRef::Id(e.alice)))
        .await
        .unwrap();
    assert_eq!(alice.len(), 1);
    assert!(s
        .preauth_key_views(Some(&UserRef::Name("nobody".into())))
        .await
        .is_err());

    // A new key's view; its secret is in no view (nor in Debug).
    let (k, full) = s
        .create_preauth_key(Some(&UserRef::Id(e.bob)), false, true, None, vec![])
        .await
        .unwrap();
    let v = s.preauth_key_view_of(&k);
    assert_eq!(v.user.as_ref().map(|u| u.id), Some(e.bob));
    assert!(v.ephemeral && !v.expired);
    assert!(full.contains(&v.prefix));
    let secret = full.rsplit('-').next().unwrap();
    let listed = format!("{:?}", s.preauth_key_views(None).await.unwrap());
    assert!(!listed.contains(secret), "{listed}");
    assert!(!listed.contains(&k.hash), "the hash is not in a view");

    s.expire_preauth_key(&e.alice_key.to_string())
        .await
        .unwrap();
    let all = s.preauth_key_views(None).await.unwrap();
    assert!(all[0].expired);
}
