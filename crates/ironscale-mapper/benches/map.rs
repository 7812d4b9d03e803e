//! Map benchmarks at 100, 1k and 10k nodes (allow-all policy, every node sees
//! every other): initial map for one node, one endpoint change fanned out to
//! every session (incremental path), and a full rebuild+diff for comparison.
//! Prints min/median over several runs. `cargo bench -p ironscale-mapper`.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ironscale_keys::{DiscoPublic, MachinePublic, NodePublic};
use ironscale_mapper::{build_view, diff, Tailnet};
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};

fn node(i: u64) -> Node {
    let b = i.to_be_bytes();
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&b);
    Node {
        id: NodeId(i),
        machine_key: MachinePublic(k),
        node_key: NodePublic(k),
        disco_key: DiscoPublic(k),
        ipv4: Some(Ipv4Addr::from(0x6440_0000u32 + i as u32)),
        ipv6: Some(Ipv6Addr::from(
            0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + u128::from(i),
        )),
        hostname: format!("host-{i}"),
        given_name: format!("host-{i}"),
        user_id: Some(UserId(1 + i % 10)),
        tags: vec![],
        hostinfo_json: Some(format!(
            r#"{{"Hostname":"host-{i}","OS":"linux","IPNVersion":"1.96.4"}}"#
        )),
        home_derp: 900,
        announced_routes: vec![],
        approved_routes: vec![],
        endpoints: vec![
            format!("192.0.2.{}:41641", i % 250),
            format!("10.0.{}.{}:41641", i / 250 % 250, i % 250),
        ],
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

fn tailnet(n: u64) -> Tailnet {
    let mut t = Tailnet::default();
    for u in 1..=10u64 {
        t.users.insert(
            UserId(u),
            Arc::new(User {
                id: UserId(u),
                name: format!("user{u}"),
                display_name: String::new(),
                email: format!("user{u}@example.com"),
                provider: String::new(),
                provider_id: String::new(),
                profile_pic_url: String::new(),
                idp_groups: Vec::new(),
                created_at: Utc.timestamp_opt(0, 0).unwrap(),
            }),
        );
    }
    t.nodes = (1..=n).map(|i| (NodeId(i), Arc::new(node(i)))).collect();
    t.online = (1..=n).map(NodeId).collect();
    t
}

fn measure(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed()
        })
        .collect();
    v.sort();
    (v[0], v[v.len() / 2])
}

fn main() {
    let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
    for n in [100u64, 1_000, 10_000] {
        let mut t = tailnet(n);
        let runs = if n >= 10_000 { 5 } else { 20 };
        let (mn, md) = measure(runs, || {
            let v = build_view(&t, NodeId(1), 130, now).unwrap();
            std::hint::black_box(serde_json::to_vec(&v.full_response(now)).unwrap());
        });
        println!("n={n:>6}  initial map (build + JSON) for one node: min {mn:?}  median {md:?}");

        // Sessions hold their views; node 1's endpoints change. At 10k nodes
        // every view holds 10k peers, so only a sample of sessions fits in
        // memory: the cost per session is what is measured.
        let sessions = n.min(10_000);
        let mut views: Vec<_> = (1..=sessions)
            .map(|i| build_view(&t, NodeId(i), 130, now).unwrap())
            .collect();
        let mut port = 1u16;
        let (mn, md) = measure(runs, || {
            port += 1;
            Arc::make_mut(t.nodes.get_mut(&NodeId(1)).unwrap()).endpoints =
                vec![format!("198.51.100.1:{port}")];
            let changed = BTreeSet::from([NodeId(1)]);
            let mut frames = 0;
            for v in views.iter_mut() {
                if v.apply_node_changes(&t, &changed, now).is_some() {
                    frames += 1;
                }
            }
            assert_eq!(
                frames, sessions,
                "every session (the changed node included) gets one frame"
            );
        });
        println!(
            "n={n:>6}  one endpoint change applied to {sessions} sessions (incremental): min {mn:?}  median {md:?}  ({:?} per session)",
            md / sessions as u32
        );

        if n <= 1_000 {
            let prev = build_view(&t, NodeId(2), 130, now).unwrap();
            let (mn, md) = measure(runs, || {
                let next = build_view(&t, NodeId(2), 130, now).unwrap();
                std::hint::black_box(diff(&prev, &next));
            });
            println!("n={n:>6}  full rebuild + diff for one session (the non-incremental path): min {mn:?}  median {md:?}");
        }
    }
}
