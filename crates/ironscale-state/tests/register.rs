//! Registration through `State`: decisions applied in one transaction, a
//! single-use key claimed atomically even by two servers sharing one
//! database (SQLite file and real PostgreSQL), refusals that write nothing,
//! and interactive registrations waiting in the pending table.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use ironscale_keys::PrivateKey;
use ironscale_state::{Approval, Refusal, RegisterResult, RegistrationStatus, Settings, State};
use ironscale_store::testpg::TestPg;
use ironscale_store::Store;
use ironscale_types::{RegisterMethod, UserRef};
use ironscale_wire as wire;

fn request(
    node_key: ironscale_keys::NodePublic,
    auth: Option<&str>,
    host: &str,
) -> wire::RegisterRequest {
    wire::RegisterRequest {
        version: 106,
        node_key,
        auth: auth.map(|k| wire::RegisterResponseAuth {
            auth_key: k.to_string(),
        }),
        hostinfo: Some(serde_json::json!({ "Hostname": host })),
        ..Default::default()
    }
}

async fn sqlite(dir: &tempfile::TempDir) -> Store {
    Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .unwrap()
}

async fn postgres(pg: &TestPg) -> (Store, Store) {
    let cfg = pg.fresh_config().await.expect("database");
    let cfg = ironscale_config::DatabaseConfig::Postgres(cfg);
    (
        Store::open(&cfg).await.unwrap(),
        Store::open(&cfg).await.unwrap(),
    )
}

/// Settings whose address pools are `v4` and `v6`.
fn pool(v4: &str, v6: &str) -> Settings {
    Settings {
        prefix_v4: Some(v4.parse().unwrap()),
        prefix_v6: Some(v6.parse().unwrap()),
        ..Settings::default()
    }
}

/// Two servers on one database; a single-use key; two machines register at
/// once on different servers, again and again. Exactly one wins each round.
/// (The servers draw addresses from disjoint pools: coordinating address
/// allocation between instances is not what this checks.)
async fn one_key_one_node(a: Store, b: Store) {
    let sa = State::load(
        a.clone(),
        pool("100.64.0.0/16", "fd7a:115c:a1e0:1::/64"),
        Default::default(),
    )
    .await
    .unwrap();
    sa.create_user("alice", "", "").await.unwrap();
    let sb = State::load(
        b.clone(),
        pool("100.65.0.0/16", "fd7a:115c:a1e0:2::/64"),
        Default::default(),
    )
    .await
    .unwrap();
    let alice = UserRef::Name("alice".parse().unwrap());
    // Rounds: each races a fresh single-use key.
    for round in 0..8 {
        let (_, key) = sa
            .create_preauth_key(Some(&alice), false, false, None, vec![])
            .await
            .unwrap();
        let (ma, mb) = (PrivateKey::generate(), PrivateKey::generate());
        let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
        let ra = request(ka.node_public(), Some(&key), &format!("a{round}"));
        let rb = request(kb.node_public(), Some(&key), &format!("b{round}"));
        let (oa, ob) = tokio::join!(
            sa.register(ma.machine_public(), &ra),
            sb.register(mb.machine_public(), &rb)
        );
        let won = [&oa, &ob]
            .iter()
            .filter(|o| matches!(o, RegisterResult::Authorized { .. }))
            .count();
        assert_eq!(won, 1, "round {round}: {oa:?} / {ob:?}");
        let lost = if matches!(oa, RegisterResult::Authorized { .. }) {
            &ob
        } else {
            &oa
        };
        assert!(
            matches!(lost, RegisterResult::Refused(Refusal::UsedKey)),
            "round {round}: the loser is told the key is used: {lost:?}"
        );
    }
    // The database holds one node per round and every key is used.
    assert_eq!(a.list_nodes().await.unwrap().len(), 8);
    assert!(a
        .list_preauth_keys(None)
        .await
        .unwrap()
        .iter()
        .all(|k| k.used));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_key_registers_one_node_across_two_servers_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let a = sqlite(&dir).await;
    let b = sqlite(&dir).await;
    one_key_one_node(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_use_key_registers_one_node_across_two_servers_on_postgres() {
    // Fails (never skips) when no PostgreSQL can be found or started.
    let pg = TestPg::start().unwrap_or_else(|e| panic!("cannot provide PostgreSQL: {e}"));
    let (a, b) = postgres(&pg).await;
    one_key_one_node(a, b).await;
}

#[tokio::test]
async fn refused_registrations_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let s = State::load(store.clone(), Settings::default(), Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    let alice = UserRef::Name("alice".parse().unwrap());
    let (_, used) = s
        .create_preauth_key(Some(&alice), false, false, None, vec![])
        .await
        .unwrap();
    let first = s
        .register(
            PrivateKey::generate().machine_public(),
            &request(PrivateKey::generate().node_public(), Some(&used), "one"),
        )
        .await;
    assert!(
        matches!(first, RegisterResult::Authorized { .. }),
        "{first:?}"
    );
    let past = s.now() - chrono::Duration::seconds(1);
    let (_, expired) = s
        .create_preauth_key(Some(&alice), true, false, Some(past), vec![])
        .await
        .unwrap();
    let nodes_before = store.list_nodes().await.unwrap();
    let keys_before = store.list_preauth_keys(None).await.unwrap();
    let cases = [
        (Some(used.as_str()), Refusal::UsedKey),
        (Some(expired.as_str()), Refusal::ExpiredKey),
        (Some("hskey-auth-not-a-real-key"), Refusal::InvalidKey),
        (None, Refusal::NeedsAuthKey),
    ];
    for (key, want) in cases {
        let out = s
            .register(
                PrivateKey::generate().machine_public(),
                &request(PrivateKey::generate().node_public(), key, "two"),
            )
            .await;
        match out {
            RegisterResult::Refused(r) => assert_eq!(r, want),
            other => panic!("{key:?}: expected a refusal, got {other:?}"),
        }
    }
    assert_eq!(store.list_nodes().await.unwrap(), nodes_before);
    assert_eq!(store.list_preauth_keys(None).await.unwrap(), keys_before);
    assert_eq!(s.list_nodes().len(), 1);
    assert!(
        s.pending_registrations().is_empty(),
        "interactive login is off"
    );
}

/// An administrator's approval for `user` (`nodes register`).
fn by_cli(user: &ironscale_types::User) -> Approval {
    Approval {
        user: Some(user.id),
        tags: vec![],
        method: RegisterMethod::Cli,
        expiry: None,
    }
}

async fn interactive_state(dir: &tempfile::TempDir) -> State {
    let settings = Settings {
        interactive_login: true,
        ..Settings::default()
    };
    let s = State::load(sqlite(dir).await, settings, Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    s
}

#[tokio::test]
async fn an_interactive_registration_waits_until_approved() {
    let dir = tempfile::tempdir().unwrap();
    let s = interactive_state(&dir).await;
    let machine = PrivateKey::generate().machine_public();
    let nk = PrivateKey::generate().node_public();
    let req = request(nk, None, "laptop");
    let RegisterResult::NeedsLogin(p) = s.register(machine, &req).await else {
        panic!("expected an interactive login")
    };
    assert_eq!(p.hostname, "laptop");
    assert_eq!(s.pending_registrations().len(), 1);
    assert!(
        s.list_nodes().is_empty(),
        "nothing is written before approval"
    );
    // The client asks again: the same registration.
    let RegisterResult::NeedsLogin(again) = s.register(machine, &req).await else {
        panic!("expected the same interactive login")
    };
    assert_eq!(again.id, p.id);
    let mut watch = s.watch_registration(&p.id).expect("watch");
    let alice = s
        .find_user(&UserRef::Name("alice".parse().unwrap()))
        .unwrap();
    let node = s.approve_registration(&p.id, by_cli(&alice)).await.unwrap();
    assert_eq!(node.user_id, Some(alice.id));
    assert_eq!(node.register_method, RegisterMethod::Cli);
    assert_eq!(node.given_name, "laptop");
    watch.changed().await.unwrap();
    assert!(matches!(&*watch.borrow(), RegistrationStatus::Approved(n) if n.id == node.id));
    assert!(s.pending_registrations().is_empty());
    // The client's next request is answered: it is this node now.
    match s.register(machine, &req).await {
        RegisterResult::Authorized { node: n, owner, .. } => {
            assert_eq!(n.id, node.id);
            assert_eq!(owner.map(|u| u.id), Some(alice.id));
        }
        other => panic!("expected authorized, got {other:?}"),
    }
    // An approval is single-use too.
    let again = s.approve_registration(&p.id, by_cli(&alice)).await;
    assert!(again.is_err());
    assert_eq!(s.list_nodes().len(), 1);
}

#[tokio::test]
async fn a_denied_registration_writes_nothing_and_tells_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let s = interactive_state(&dir).await;
    let machine = PrivateKey::generate().machine_public();
    let req = request(PrivateKey::generate().node_public(), None, "intruder");
    let RegisterResult::NeedsLogin(p) = s.register(machine, &req).await else {
        panic!("expected an interactive login")
    };
    let watch = s.watch_registration(&p.id).unwrap();
    s.deny_registration(&p.id, "not ours").unwrap();
    assert!(matches!(&*watch.borrow(), RegistrationStatus::Denied(m) if m == "not ours"));
    let alice = s
        .find_user(&UserRef::Name("alice".parse().unwrap()))
        .unwrap();
    let late = s.approve_registration(&p.id, by_cli(&alice)).await;
    assert!(late.is_err(), "a denied registration cannot be approved");
    assert!(s.list_nodes().is_empty());
    assert!(s.deny_registration(&p.id, "again").is_err());
}

#[tokio::test]
async fn pending_registrations_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        interactive_login: true,
        max_pending_registrations: 3,
        ..Settings::default()
    };
    let s = State::load(sqlite(&dir).await, settings, Default::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let out = s
            .register(
                PrivateKey::generate().machine_public(),
                &request(PrivateKey::generate().node_public(), None, &format!("h{i}")),
            )
            .await;
        let RegisterResult::NeedsLogin(p) = out else {
            panic!("{out:?}")
        };
        ids.push(p.id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "ids are distinct");
    let out = s
        .register(
            PrivateKey::generate().machine_public(),
            &request(PrivateKey::generate().node_public(), None, "h4"),
        )
        .await;
    assert!(
        matches!(&out, RegisterResult::Refused(Refusal::Registration(m)) if m.contains("too many")),
        "{out:?}"
    );
}

/// A client restart that re-registers (new Hostinfo) writes the fields it
/// changes only: what another writer (another instance on the database)
/// changed meanwhile survives.
#[tokio::test]
async fn a_reregistration_keeps_another_writers_changes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(&dir).await;
    let other = sqlite(&dir).await;
    let s = State::load(store, Settings::default(), Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    let alice = UserRef::Name("alice".parse().unwrap());
    let (_, key) = s
        .create_preauth_key(Some(&alice), true, false, None, vec![])
        .await
        .unwrap();
    let machine = PrivateKey::generate().machine_public();
    let nk = PrivateKey::generate().node_public();
    let first = s
        .register(machine, &request(nk, Some(&key), "router"))
        .await;
    let id = first.node().expect("registered").id;
    let route: ipnet::IpNet = "10.9.0.0/24".parse().unwrap();
    other
        .update_node_fields(
            id,
            &ironscale_store::NodeUpdate {
                approved_routes: Some(vec![route]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let again = s
        .register(machine, &request(nk, None, "router-renamed"))
        .await;
    assert!(
        matches!(again, RegisterResult::Authorized { .. }),
        "{again:?}"
    );
    let stored = other.get_node(id).await.unwrap().expect("node");
    assert_eq!(stored.hostname, "router-renamed");
    assert_eq!(
        stored.approved_routes,
        vec![route],
        "the other writer's approval was overwritten"
    );
}

#[tokio::test]
async fn with_device_approval_a_new_node_is_registered_but_not_authorized() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings {
        device_approval: true,
        ..Settings::default()
    };
    let store = sqlite(&dir).await;
    let s = State::load(store.clone(), settings, Default::default())
        .await
        .unwrap();
    s.create_user("alice", "", "").await.unwrap();
    let alice = UserRef::Name("alice".parse().unwrap());
    let (_, secret) = s
        .create_preauth_key(Some(&alice), true, false, None, vec![])
        .await
        .unwrap();
    let machine = PrivateKey::generate().machine_public();
    let req = request(
        PrivateKey::generate().node_public(),
        Some(&secret),
        "laptop",
    );
    let RegisterResult::Authorized {
        node,
        machine_authorized,
        ..
    } = s.register(machine, &req).await
    else {
        panic!("expected a registered node")
    };
    assert!(!machine_authorized);
    assert!(!node.approved);
    let stored = store.get_node(node.id).await.unwrap().unwrap();
    assert!(!stored.approved, "the flag is durable");
    // Registering again (a restart) does not approve it.
    let RegisterResult::Authorized {
        machine_authorized, ..
    } = s.register(machine, &req).await
    else {
        panic!("expected the same node")
    };
    assert!(!machine_authorized);
    // Approved: stored, and the next registration answers authorized.
    let approved = s.approve_node(node.id).await.unwrap();
    assert!(approved.approved);
    assert!(store.get_node(node.id).await.unwrap().unwrap().approved);
    let RegisterResult::Authorized {
        machine_authorized, ..
    } = s.register(machine, &req).await
    else {
        panic!("expected the same node")
    };
    assert!(machine_authorized);
    assert!(matches!(
        s.approve_node(ironscale_types::NodeId(999)).await,
        Err(ironscale_state::StateError::NodeNotFound(_))
    ));
}
