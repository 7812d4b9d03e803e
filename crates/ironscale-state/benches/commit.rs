//! State commit benchmark: what one change costs through the public `State`
//! API at 1,000 and 10,000 nodes (`IRONSCALE_BENCH_NODES` overrides,
//! comma-separated), without a policy and with one (groups, tags, SSH).
//!
//! Per operation it prints the median and the mean over many repetitions:
//!
//! * `endpoints`: one node's lite MapRequest with new endpoints and a new
//!   Hostinfo (`apply_map_request`), nothing the policy looks at;
//! * `hostname`: the Hostinfo's hostname changes (the policy is updated);
//! * `rename`: `rename_node`;
//! * `connect+disconnect`: a map session opens and closes (online flips
//!   twice, `last_seen` written);
//! * `user create`: `create_user` (no nodes yet);
//! * `user rename`: `rename_user` of a user with nodes.
//!
//! Every operation includes its SQLite write (WAL, in a tempdir), which is
//! the same at every size: the column to read is the ratio 10k/1k, which is
//! about 1 when the work is proportional to the change and about 10 when it
//! is proportional to the tailnet. No session is connected, so no map is
//! built; `apply_node_changes` is the mapper benchmark's business.
//! `cargo bench -p ironscale-state --bench commit`.
#![allow(clippy::unwrap_used)] // bench code: a panic is the failure report

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_state::{Settings, State};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, NodeId, RegisterMethod, UserId};
use ironscale_wire as wire;

const TAGS: usize = 20;
const GROUPS: usize = 40;
const RULES: usize = 200;
const REPS: usize = 200;

fn key32(kind: u8, i: usize) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[0] = kind;
    b[1..9].copy_from_slice(&(i as u64 + 1).to_be_bytes());
    b
}

fn node(i: usize, users: usize) -> Node {
    let n = i as u32 + 1;
    let tagged = i % 5 == 4;
    let mut tags = Vec::new();
    if tagged {
        tags.push(format!("tag:t{}", i % TAGS));
        if i.is_multiple_of(3) {
            tags.push(format!("tag:t{}", (i / 7) % TAGS));
        }
        tags.sort();
        tags.dedup();
    }
    let now = chrono::Utc::now();
    Node {
        id: NodeId(0),
        machine_key: MachinePublic::from_bytes(key32(1, i)),
        node_key: NodePublic::from_bytes(key32(2, i)),
        disco_key: Default::default(),
        ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n)),
        ipv6: Some(Ipv6Addr::from(
            u128::from("fd7a:115c:a1e0::".parse::<Ipv6Addr>().unwrap()) + n as u128,
        )),
        hostname: format!("node{i}"),
        given_name: format!("node{i}"),
        user_id: (!tagged).then(|| UserId((i % users) as u64 + 1)),
        tags,
        hostinfo_json: None,
        home_derp: 1,
        announced_routes: Vec::new(),
        approved_routes: Vec::new(),
        endpoints: vec![format!("192.0.2.1:{}", 10000 + i % 50000)],
        expiry: None,
        created_at: now,
        last_seen: None,
        register_method: RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral: false,
        capver: 106,
        approved: true,
    }
}

/// Groups of users, tags owned by groups, rules from groups to tags and
/// between tags, per-user rules, SSH to tags: the policy crate's benchmark
/// shape, at a fixed size (so only the tailnet grows between runs).
fn policy_text(users: usize) -> String {
    let mut s = String::from("{\n  \"groups\": {\n");
    for g in 0..GROUPS {
        let members: Vec<String> = (0..10)
            .map(|k| format!("\"user{}@example.com\"", (g * 10 + k) % users))
            .collect();
        s.push_str(&format!("    \"group:g{g}\": [{}],\n", members.join(", ")));
    }
    s.push_str("  },\n  \"tagOwners\": {\n");
    for t in 0..TAGS {
        s.push_str(&format!("    \"tag:t{t}\": [\"group:g{}\"],\n", t % GROUPS));
    }
    s.push_str("  },\n  \"hosts\": {\n");
    for h in 0..10 {
        s.push_str(&format!("    \"net{h}\": \"10.{h}.0.0/16\",\n"));
    }
    s.push_str("  },\n  \"acls\": [\n");
    for r in 0..RULES {
        let line = match r % 6 {
            0..=2 => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"tag:t{}:22,443\"]}}",
                r % GROUPS,
                r % TAGS
            ),
            3 => format!(
                "{{\"action\": \"accept\", \"src\": [\"tag:t{}\"], \"dst\": [\"tag:t{}:*\"]}}",
                r % TAGS,
                (r * 7) % TAGS
            ),
            4 => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\", \"user{}@example.com\"], \"dst\": [\"group:g{}:8000-8100\"]}}",
                r % GROUPS,
                r % users,
                (r / 2) % GROUPS
            ),
            _ => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"net{}:*\"]}}",
                r % GROUPS,
                r % 10
            ),
        };
        s.push_str("    ");
        s.push_str(&line);
        s.push_str(",\n");
    }
    s.push_str("  ],\n  \"ssh\": [\n");
    for r in 0..10 {
        s.push_str(&format!(
            "    {{\"action\": \"accept\", \"src\": [\"group:g{r}\"], \"dst\": [\"tag:t{}\"], \"users\": [\"root\"]}},\n",
            r % TAGS
        ));
    }
    s.push_str("  ],\n}\n");
    s
}

struct Timing(Vec<Duration>);

impl Timing {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v[v.len() / 2]
    }
    fn mean(&self) -> Duration {
        self.0.iter().sum::<Duration>() / self.0.len() as u32
    }
}

async fn setup(n: usize, with_policy: bool) -> (State, tempfile::TempDir, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(
        dir.path().join("bench.sqlite"),
    ))
    .await
    .unwrap();
    let users = (n / 5).max(GROUPS * 10);
    for u in 0..users {
        let new = NewUser {
            name: format!("user{u}"),
            email: format!("user{u}@example.com"),
            ..Default::default()
        };
        store.create_user(&new, chrono::Utc::now()).await.unwrap();
    }
    for i in 0..n {
        store.insert_node(&node(i, users)).await.unwrap();
    }
    let state = State::load(store, Settings::default(), wire::DerpMap::default())
        .await
        .unwrap();
    if with_policy {
        state
            .set_policy_text(&policy_text(users), "bench.hujson")
            .await
            .unwrap();
    }
    (state, dir, users)
}

fn map_request(node: &Node, k: usize, hostname: &str) -> wire::MapRequest {
    wire::MapRequest {
        version: 106,
        node_key: node.node_key,
        endpoints: Some(vec![
            format!("192.0.2.{}:{}", 1 + k % 200, 41641),
            format!("[2001:db8::{:x}]:41641", k + 1),
        ]),
        hostinfo: Some(serde_json::json!({
            "Hostname": hostname,
            "OS": "linux",
            "IPNVersion": format!("1.80.{k}"),
            "NetInfo": {"PreferredDERP": 1},
        })),
        ..Default::default()
    }
}

/// Runs every operation `REPS` times on user-owned nodes (spread over the
/// tailnet) and returns the timings by operation name, and the mean number
/// of peers the changed nodes have (what a change to them affects).
async fn run(n: usize, with_policy: bool) -> (BTreeMap<&'static str, Timing>, usize) {
    let (state, _dir, users) = setup(n, with_policy).await;
    let targets: Vec<std::sync::Arc<Node>> = state
        .list_nodes()
        .into_iter()
        .filter(|x| x.user_id.is_some())
        .step_by((n / REPS / 2).max(1))
        .take(REPS)
        .collect();
    assert_eq!(targets.len(), REPS, "enough user nodes");
    let peers = match state.policy_state().compiled {
        Some(c) => targets.iter().map(|t| c.peers(t.id).len()).sum::<usize>() / REPS,
        None => n - 1,
    };
    let mut out = BTreeMap::new();

    let mut t = Vec::new();
    for (k, node) in targets.iter().enumerate() {
        let req = map_request(node, k, &node.hostname);
        let s = Instant::now();
        state
            .apply_map_request(&node.machine_key, &req)
            .await
            .unwrap()
            .unwrap();
        t.push(s.elapsed());
    }
    out.insert("endpoints", Timing(t));

    let mut t = Vec::new();
    for (k, node) in targets.iter().enumerate() {
        let req = map_request(node, k + REPS, &format!("{}-renamed", node.hostname));
        let s = Instant::now();
        state
            .apply_map_request(&node.machine_key, &req)
            .await
            .unwrap()
            .unwrap();
        t.push(s.elapsed());
    }
    out.insert("hostname", Timing(t));

    let mut t = Vec::new();
    for (k, node) in targets.iter().enumerate() {
        let name = format!("renamed-{k}");
        let s = Instant::now();
        state.rename_node(node.id, &name).await.unwrap();
        t.push(s.elapsed());
    }
    out.insert("rename", Timing(t));

    let mut t = Vec::new();
    for node in &targets {
        let s = Instant::now();
        let slot = state.connect(node.id).await.unwrap();
        state.disconnect(&slot).await;
        t.push(s.elapsed());
    }
    out.insert("connect+disconnect", Timing(t));

    let mut t = Vec::new();
    for k in 0..REPS {
        let name = format!("newuser{k}");
        let s = Instant::now();
        state
            .create_user(&name, "", &format!("{name}@example.com"))
            .await
            .unwrap();
        t.push(s.elapsed());
    }
    out.insert("user create", Timing(t));

    let mut t = Vec::new();
    for k in 0..REPS {
        // Users with nodes: user{u} owns the nodes with i % users == u.
        let user = format!("user{}", (k * 7) % users);
        let s = Instant::now();
        state
            .rename_user(
                &ironscale_types::UserRef::Name(user.clone()),
                &format!("{user}-x"),
            )
            .await
            .unwrap();
        t.push(s.elapsed());
        state
            .rename_user(&ironscale_types::UserRef::Name(format!("{user}-x")), &user)
            .await
            .unwrap();
    }
    out.insert("user rename", Timing(t));
    (out, peers)
}

fn us(d: Duration) -> String {
    format!("{:>9.1} µs", d.as_secs_f64() * 1e6)
}

fn main() {
    let sizes: Vec<usize> = std::env::var("IRONSCALE_BENCH_NODES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for with_policy in [false, true] {
        let mut results = Vec::new();
        for &n in &sizes {
            let s = Instant::now();
            let (r, peers) = rt.block_on(run(n, with_policy));
            eprintln!(
                "  ({n} nodes, policy {with_policy}: {:.1} s)",
                s.elapsed().as_secs_f64()
            );
            results.push((n, r, peers));
        }
        println!(
            "\n{} — median and mean per operation, {REPS} repetitions",
            if with_policy {
                format!("policy: {GROUPS} groups, {TAGS} tags, {RULES} rules, 10 SSH rules")
            } else {
                "no policy (allow all)".to_string()
            }
        );
        let peers: Vec<String> = results
            .iter()
            .map(|(n, _, p)| format!("{p} at {n}"))
            .collect();
        println!("peers of a changed node (mean): {}", peers.join(", "));
        let mut header = format!("{:<20}", "operation");
        for (n, _, _) in &results {
            header.push_str(&format!(" | {:>12} {:>12}", format!("{n} median"), "mean"));
        }
        if results.len() > 1 {
            header.push_str(" | ratio (median)");
        }
        println!("{header}");
        let ops: Vec<&str> = results[0].1.keys().copied().collect();
        for op in ops {
            let mut line = format!("{op:<20}");
            for (_, r, _) in &results {
                line.push_str(&format!(" | {} {}", us(r[op].median()), us(r[op].mean())));
            }
            if let (Some(first), Some(last)) = (results.first(), results.last()) {
                if results.len() > 1 {
                    let ratio =
                        last.1[op].median().as_secs_f64() / first.1[op].median().as_secs_f64();
                    line.push_str(&format!(" | {ratio:.1}"));
                }
            }
            println!("{line}");
        }
    }
}
