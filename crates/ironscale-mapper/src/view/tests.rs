//! Property tests: applying a delta with the client's algorithm
//! (`controlclient/map.go`, see tailscale-protocol.md §4.6) to the old view
//! yields the new view.

use super::*;
use chrono::{TimeZone, Utc};
use ironscale_keys::{DiscoPublic, MachinePublic, NodePublic};
use ironscale_types::{RegisterMethod, User, UserId};
use proptest::prelude::*;
use std::net::Ipv4Addr;

/// What a client holds after applying frames.
#[derive(Debug, Clone, PartialEq)]
struct ClientState {
    node: wire::Node,
    peers: BTreeMap<i64, wire::Node>,
    filter: Vec<wire::FilterRule>,
    dns: wire::DnsConfig,
    derp: wire::DerpMap,
    profiles: BTreeMap<i64, wire::UserProfile>,
}

fn client_from(r: &wire::MapResponse) -> ClientState {
    ClientState {
        node: r.node.clone().unwrap(),
        peers: r
            .peers
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|n| (n.id, n))
            .collect(),
        filter: r.packet_filter.clone().unwrap(),
        dns: r.dns_config.clone().unwrap(),
        derp: r.derp_map.clone().unwrap(),
        profiles: r
            .user_profiles
            .clone()
            .unwrap()
            .into_iter()
            .map(|p| (p.id, p))
            .collect(),
    }
}

fn apply(c: &mut ClientState, r: &wire::MapResponse) {
    if let Some(n) = &r.node {
        c.node = n.clone();
    }
    if let Some(f) = &r.packet_filter {
        c.filter = f.clone();
    }
    if let Some(d) = &r.dns_config {
        c.dns = d.clone();
    }
    if let Some(d) = &r.derp_map {
        c.derp = d.clone();
    }
    for p in r.user_profiles.iter().flatten() {
        c.profiles.insert(p.id, p.clone());
    }
    match &r.peers {
        Some(p) if !p.is_empty() => {
            c.peers = p.iter().map(|n| (n.id, n.clone())).collect();
            return;
        }
        _ => {}
    }
    for id in r.peers_removed.iter().flatten() {
        c.peers.remove(id);
    }
    for n in r.peers_changed.iter().flatten() {
        c.peers.insert(n.id, n.clone());
    }
    for pc in r.peers_changed_patch.iter().flatten() {
        let Some(n) = c.peers.get_mut(&pc.node_id) else {
            continue;
        };
        if let Some(v) = pc.derp_region {
            n.home_derp = v;
            n.derp = format!("127.3.3.40:{v}");
        }
        if let Some(v) = pc.cap {
            n.cap = v;
        }
        if let Some(v) = &pc.endpoints {
            n.endpoints = v.clone();
        }
        if let Some(v) = pc.key {
            n.key = v;
        }
        if let Some(v) = pc.disco_key {
            n.disco_key = v;
        }
        if let Some(v) = pc.online {
            n.online = Some(v);
        }
        if let Some(v) = pc.last_seen {
            n.last_seen = Some(v);
        }
        if let Some(v) = pc.key_expiry {
            n.key_expiry = Some(v);
        }
    }
}

fn view_state(v: &View) -> ClientState {
    client_from(&v.full_response(Utc.timestamp_opt(0, 0).unwrap()))
}

fn mk_node(id: u64, user: u64) -> Node {
    Node {
        id: NodeId(id),
        machine_key: MachinePublic([id as u8; 32]),
        node_key: NodePublic([id as u8; 32]),
        disco_key: DiscoPublic([id as u8; 32]),
        ipv4: Some(Ipv4Addr::new(100, 64, 0, id as u8)),
        ipv6: None,
        hostname: format!("n{id}"),
        given_name: format!("n{id}"),
        user_id: Some(UserId(user)),
        tags: vec![],
        hostinfo_json: None,
        home_derp: 0,
        announced_routes: vec![],
        approved_routes: vec![],
        endpoints: vec![],
        expiry: None,
        created_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
        last_seen: None,
        register_method: RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral: false,
        capver: 130,
        approved: true,
    }
}

fn mk_tailnet(n: u64) -> Tailnet {
    let mut t = Tailnet::default();
    for u in 1..=2u64 {
        t.users.insert(
            UserId(u),
            Arc::new(User {
                id: UserId(u),
                name: format!("u{u}"),
                display_name: String::new(),
                email: String::new(),
                provider: String::new(),
                provider_id: String::new(),
                profile_pic_url: String::new(),
                idp_groups: Vec::new(),
                created_at: Utc.timestamp_opt(0, 0).unwrap(),
            }),
        );
    }
    for i in 1..=n {
        t.nodes.insert(NodeId(i), Arc::new(mk_node(i, 1 + i % 2)));
    }
    t
}

#[derive(Debug, Clone)]
enum Mutation {
    Endpoints(u64, u16),
    Derp(u64, i32),
    Online(u64, bool),
    Disco(u64, u8),
    Remove(u64),
    Add(u64),
    Tag(u64),
    Rename(u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (1..8u64, 1..65535u16).prop_map(|(n, p)| Mutation::Endpoints(n, p)),
        (1..8u64, 1..1000i32).prop_map(|(n, d)| Mutation::Derp(n, d)),
        (1..8u64, any::<bool>()).prop_map(|(n, o)| Mutation::Online(n, o)),
        (1..8u64, any::<u8>()).prop_map(|(n, k)| Mutation::Disco(n, k)),
        (2..8u64).prop_map(Mutation::Remove),
        (8..12u64).prop_map(Mutation::Add),
        (1..8u64).prop_map(Mutation::Tag),
        (1..8u64).prop_map(Mutation::Rename),
    ]
}

/// Apply a mutation; returns the ids whose state changed.
fn mutate(t: &mut Tailnet, m: &Mutation) -> BTreeSet<NodeId> {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let edit = |t: &mut Tailnet, id: u64, f: &dyn Fn(&mut Node)| {
        if let Some(n) = t.nodes.get_mut(&NodeId(id)) {
            f(Arc::make_mut(n));
        }
    };
    let id = match *m {
        Mutation::Endpoints(id, p) => {
            edit(t, id, &|n| n.endpoints = vec![format!("192.0.2.1:{p}")]);
            id
        }
        Mutation::Derp(id, d) => {
            edit(t, id, &|n| n.home_derp = d);
            id
        }
        Mutation::Online(id, o) => {
            if o {
                t.online.insert(NodeId(id));
            } else if t.online.remove(&NodeId(id)).is_some() {
                edit(t, id, &|n| n.last_seen = Some(now));
            }
            id
        }
        Mutation::Disco(id, k) => {
            edit(t, id, &|n| n.disco_key = DiscoPublic([k; 32]));
            id
        }
        Mutation::Remove(id) => {
            t.nodes.remove(&NodeId(id));
            t.online.remove(&NodeId(id));
            id
        }
        Mutation::Add(id) => {
            t.nodes
                .entry(NodeId(id))
                .or_insert_with(|| Arc::new(mk_node(id, 2)));
            id
        }
        Mutation::Tag(id) => {
            edit(t, id, &|n| {
                n.tags = vec!["tag:server".into()];
                n.user_id = None;
            });
            id
        }
        Mutation::Rename(id) => {
            edit(t, id, &|n| n.given_name = format!("{}x", n.given_name));
            id
        }
    };
    BTreeSet::from([NodeId(id)])
}

proptest! {
    #[test]
    fn diff_applied_to_old_view_yields_new_view(ms in proptest::collection::vec(mutation(), 1..25)) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let mut t = mk_tailnet(7);
        let me = NodeId(1);
        let first = build_view(&t, me, 130, now).unwrap();
        let mut client = view_state(&first);
        let mut prev = first.clone();
        let mut incremental = first;
        for m in &ms {
            let changed = mutate(&mut t, m);
            let next = build_view(&t, me, 130, now).unwrap();
            if let Some(d) = diff(&prev, &next) {
                apply(&mut client, &d);
            }
            // UserProfiles are additive on the client: it may keep stale ones.
            let mut seen = client.clone();
            seen.profiles.retain(|id, _| next.profiles.contains_key(id));
            prop_assert_eq!(&seen, &view_state(&next));
            // The incremental path reaches the same view.
            incremental.apply_node_changes(&t, &changed, now);
            incremental.profiles.retain(|id, _| next.profiles.contains_key(id));
            prop_assert_eq!(&incremental, &next);
            prev = next;
        }
    }
}

#[test]
fn no_change_no_frame_and_endpoint_change_is_a_patch() {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut t = mk_tailnet(3);
    let a = build_view(&t, NodeId(1), 130, now).unwrap();
    assert!(diff(&a, &a).is_none());
    mutate(&mut t, &Mutation::Endpoints(2, 41641));
    let b = build_view(&t, NodeId(1), 130, now).unwrap();
    let d = diff(&a, &b).unwrap();
    let patch = d.peers_changed_patch.unwrap();
    assert_eq!(patch.len(), 1);
    assert_eq!(
        patch[0].endpoints.as_deref(),
        Some(&["192.0.2.1:41641".to_string()][..])
    );
    assert!(d.peers_changed.is_none() && d.node.is_none());
}

#[test]
fn removing_last_peer_sends_peers_removed() {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut t = mk_tailnet(2);
    let a = build_view(&t, NodeId(1), 130, now).unwrap();
    mutate(&mut t, &Mutation::Remove(2));
    let b = build_view(&t, NodeId(1), 130, now).unwrap();
    assert_eq!(diff(&a, &b).unwrap().peers_removed, Some(vec![2]));
}

#[test]
fn tagged_node_is_owned_by_tagged_devices() {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut t = mk_tailnet(2);
    mutate(&mut t, &Mutation::Tag(2));
    let v = build_view(&t, NodeId(1), 130, now).unwrap();
    assert_eq!(v.peers[&2].user, TAGGED_DEVICES_USER_ID as i64);
    assert!(v.profiles.contains_key(&(TAGGED_DEVICES_USER_ID as i64)));
}

#[test]
fn an_unapproved_node_sees_no_one_and_no_one_sees_it() {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    let mut t = mk_tailnet(3);
    Arc::make_mut(t.nodes.get_mut(&NodeId(2)).unwrap()).approved = false;
    let wid = |id: u64| wire_id(NodeId(id));
    let mut one = build_view(&t, NodeId(1), 130, now).unwrap();
    assert!(one.self_node.machine_authorized);
    assert_eq!(one.peers.keys().copied().collect::<Vec<_>>(), vec![wid(3)]);
    let two = build_view(&t, NodeId(2), 130, now).unwrap();
    assert!(!two.self_node.machine_authorized, "its own map says so");
    assert!(two.peers.is_empty());
    assert!(two.full_response(now).node.is_some());
    // A change to the unapproved node does not reveal it.
    mutate(&mut t, &Mutation::Endpoints(2, 41641));
    assert!(one
        .apply_node_changes(&t, &BTreeSet::from([NodeId(2)]), now)
        .is_none());
    // Approved: the peer learns it as a delta; its own map has everyone.
    Arc::make_mut(t.nodes.get_mut(&NodeId(2)).unwrap()).approved = true;
    let d = one
        .apply_node_changes(&t, &BTreeSet::from([NodeId(2)]), now)
        .expect("a delta");
    assert_eq!(d.peers_changed.expect("added")[0].id, wid(2));
    let two_after = build_view(&t, NodeId(2), 130, now).unwrap();
    assert!(two_after.self_node.machine_authorized);
    assert_eq!(two_after.peers.len(), 2);
    let d = diff(&two, &two_after).expect("a delta");
    assert!(d.node.expect("self changed").machine_authorized);
}
