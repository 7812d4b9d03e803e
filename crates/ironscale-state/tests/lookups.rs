//! The lookups a commit keeps in step (node key, node name, user name, a
//! user's nodes) answer as a scan of the snapshot would, through changes.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_state::{State, StateError};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, NodeId, RegisterMethod, UserId};

fn key(i: u8) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = i;
    b
}

fn node(i: u8, name: &str, user: Option<UserId>) -> Node {
    Node {
        id: NodeId(0),
        machine_key: MachinePublic::from_bytes(key(i)),
        node_key: NodePublic::from_bytes(key(i)),
        disco_key: Default::default(),
        ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, i)),
        ipv6: None,
        hostname: name.into(),
        given_name: name.into(),
        user_id: user,
        tags: Vec::new(),
        hostinfo_json: None,
        home_derp: 0,
        announced_routes: Vec::new(),
        approved_routes: Vec::new(),
        endpoints: Vec::new(),
        expiry: None,
        created_at: chrono::Utc::now(),
        last_seen: None,
        register_method: RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral: false,
        capver: 106,
        approved: true,
    }
}

#[tokio::test]
async fn lookups_follow_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["alice", "bob"] {
        let new = NewUser {
            name: name.into(),
            ..Default::default()
        };
        ids.push(
            store
                .create_user(&new, chrono::Utc::now())
                .await
                .unwrap()
                .id,
        );
    }
    let n1 = store
        .insert_node(&node(1, "n1", Some(ids[0])))
        .await
        .unwrap()
        .id;
    let n2 = store
        .insert_node(&node(2, "n2", Some(ids[0])))
        .await
        .unwrap()
        .id;
    let n3 = store
        .insert_node(&node(3, "n3", Some(ids[1])))
        .await
        .unwrap()
        .id;
    let state = State::load(store, Default::default(), Default::default())
        .await
        .unwrap();

    // A user's nodes.
    match state
        .delete_user(&ironscale_types::UserRef::Name("alice".into()))
        .await
    {
        Err(StateError::UserHasNodes { nodes, .. }) => assert_eq!(nodes, 2),
        other => panic!("alice has two nodes: {other:?}"),
    }

    // Node names: taken, freed by a rename, taken again.
    state.rename_node(n1, "web").await.unwrap();
    assert!(matches!(
        state.rename_node(n2, "web").await,
        Err(StateError::Invalid(_))
    ));
    state.rename_node(n1, "web").await.unwrap(); // its own name is not "taken"
    state.rename_node(n1, "web2").await.unwrap();
    state.rename_node(n2, "web").await.unwrap();

    // User names.
    state.create_user("carol", "", "").await.unwrap();
    assert!(matches!(
        state.create_user("carol", "", "").await,
        Err(StateError::UserExists(_))
    ));
    assert!(matches!(
        state
            .rename_user(&ironscale_types::UserRef::Name("carol".into()), "bob")
            .await,
        Err(StateError::UserExists(_))
    ));
    state
        .rename_user(&ironscale_types::UserRef::Name("carol".into()), "dave")
        .await
        .unwrap();
    assert_eq!(
        state
            .find_user(&ironscale_types::UserRef::Name("dave".into()))
            .unwrap()
            .name,
        "dave"
    );
    assert!(state
        .find_user(&ironscale_types::UserRef::Name("carol".into()))
        .is_err());
    state.create_user("carol", "", "").await.unwrap();

    // A tagged node belongs to no user any more.
    state.set_node_tags(n1, vec!["tag:x".into()]).await.unwrap();
    match state
        .delete_user(&ironscale_types::UserRef::Name("alice".into()))
        .await
    {
        Err(StateError::UserHasNodes { nodes, .. }) => assert_eq!(nodes, 1),
        other => panic!("alice has one node left: {other:?}"),
    }

    // Node keys.
    let k3 = NodePublic::from_bytes(key(3));
    assert_eq!(state.node_by_key(&k3).unwrap().id, n3);
    state.delete_node(n3).await.unwrap();
    assert!(state.node_by_key(&k3).is_none());
    assert!(!state.is_known_node_key(&k3));
    assert!(state.is_known_node_key(&NodePublic::from_bytes(key(1))));
    state
        .delete_user(&ironscale_types::UserRef::Name("bob".into()))
        .await
        .unwrap();
    assert!(state
        .find_user(&ironscale_types::UserRef::Name("bob".into()))
        .is_err());
}
