//! What a client reports (a disconnect's last seen, a MapRequest's endpoints,
//! disco key, Hostinfo) is written field by field: a change another writer
//! (another instance on the same database, an admin) made to the node's
//! record meanwhile is not overwritten with the snapshot's copy.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_state::State;
use ironscale_store::{NewUser, NodeUpdate, Store};
use ironscale_types::{Node, NodeId, RegisterMethod};
use ironscale_wire as wire;

fn node(user: ironscale_types::UserId) -> Node {
    let mut k = [0u8; 32];
    k[0] = 7;
    Node {
        id: NodeId(0),
        machine_key: MachinePublic::from_bytes(k),
        node_key: NodePublic::from_bytes(k),
        disco_key: Default::default(),
        ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, 7)),
        ipv6: None,
        hostname: "laptop".into(),
        given_name: "laptop".into(),
        user_id: Some(user),
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

/// A state over a fresh database with one node, and a second handle on that
/// database (the other writer).
async fn setup() -> (tempfile::TempDir, State, Store, Node) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let user = store
        .create_user(
            &NewUser {
                name: "alice".into(),
                ..Default::default()
            },
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    let n = store.insert_node(&node(user.id)).await.unwrap();
    let state = State::load(store.clone(), Default::default(), Default::default())
        .await
        .unwrap();
    (dir, state, store, n)
}

/// The other writer renames the node and approves a route behind the state's back.
async fn change_elsewhere(store: &Store, id: NodeId) {
    store
        .update_node_fields(
            id,
            &NodeUpdate {
                given_name: Some("renamed-elsewhere".into()),
                approved_routes: Some(vec!["10.0.0.0/24".parse().unwrap()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn disconnect_writes_presence_only() {
    let (_dir, state, store, n) = setup().await;
    let slot = state.connect(n.id).await.unwrap();
    change_elsewhere(&store, n.id).await;
    state.disconnect(&slot).await;

    let stored = store.get_node(n.id).await.unwrap().unwrap();
    assert!(stored.last_seen.is_some(), "last seen not written");
    assert_eq!(stored.given_name, "renamed-elsewhere");
    assert_eq!(
        stored.approved_routes,
        vec!["10.0.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(!state.snapshot().online.contains(&n.id));
}

#[tokio::test]
async fn map_request_writes_what_the_client_reports_only() {
    let (_dir, state, store, n) = setup().await;
    change_elsewhere(&store, n.id).await;
    let mut disco = [0u8; 32];
    disco[0] = 9;
    let req = wire::MapRequest {
        version: 120,
        node_key: n.node_key,
        disco_key: ironscale_keys::DiscoPublic::from_bytes(disco),
        endpoints: Some(vec!["192.0.2.1:41641".into()]),
        hostinfo: Some(serde_json::json!({
            "Hostname": "laptop2",
            "NetInfo": { "PreferredDERP": 3 },
            "RoutableIPs": ["10.0.0.0/24"],
        })),
        ..Default::default()
    };
    let out = state
        .apply_map_request(&n.machine_key, &req)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.endpoints, vec!["192.0.2.1:41641".to_string()]);

    let stored = store.get_node(n.id).await.unwrap().unwrap();
    // What the client reported is stored ...
    assert_eq!(stored.endpoints, vec!["192.0.2.1:41641".to_string()]);
    assert_eq!(stored.disco_key, req.disco_key);
    assert_eq!(stored.home_derp, 3);
    assert_eq!(stored.hostname, "laptop2");
    assert_eq!(stored.capver, 120);
    assert_eq!(
        stored.announced_routes,
        vec!["10.0.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );
    assert!(stored.hostinfo_json.is_some());
    // ... and the other writer's changes are kept.
    assert_eq!(stored.given_name, "renamed-elsewhere");
    assert_eq!(
        stored.approved_routes,
        vec!["10.0.0.0/24".parse::<ipnet::IpNet>().unwrap()]
    );

    // An endpoint-only report writes the presence alone.
    change_elsewhere(&store, n.id).await;
    store
        .update_node_fields(
            n.id,
            &NodeUpdate {
                given_name: Some("renamed-again".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let req = wire::MapRequest {
        version: 120,
        node_key: n.node_key,
        endpoints: Some(vec!["192.0.2.1:41642".into()]),
        ..Default::default()
    };
    state
        .apply_map_request(&n.machine_key, &req)
        .await
        .unwrap()
        .unwrap();
    let stored = store.get_node(n.id).await.unwrap().unwrap();
    assert_eq!(stored.endpoints, vec!["192.0.2.1:41642".to_string()]);
    assert_eq!(stored.given_name, "renamed-again");
}
