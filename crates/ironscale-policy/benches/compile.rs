//! Policy compile benchmark: 10,000 nodes, 1,000 rules.
//!
//! `cargo bench -p ironscale-policy --bench compile` prints min/median
//! timings for a full compile and for one node joining or changing tags
//! (incremental update), plus the size of each change's affected set.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use ironscale_policy::{Change, CompiledPolicy, Policy, Tailnet};
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};

const NODES: usize = 10_000;
const USERS: usize = 2_000;
const TAGS: usize = 50;
const GROUPS: usize = 100;
const RULES: usize = 1_000;

fn user(i: usize) -> User {
    User {
        id: UserId(i as u64 + 1),
        name: format!("user{i}"),
        display_name: String::new(),
        email: format!("user{i}@example.com"),
        provider: String::new(),
        provider_id: String::new(),
        profile_pic_url: String::new(),
        idp_groups: Vec::new(),
        created_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
    }
}

fn node(i: usize, user: Option<usize>, tags: Vec<String>) -> Node {
    let n = i as u32 + 1;
    let v4 = Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + n);
    let v6 = Ipv6Addr::from(
        u128::from(
            "fd7a:115c:a1e0::"
                .parse::<Ipv6Addr>()
                .unwrap_or(Ipv6Addr::UNSPECIFIED),
        ) + n as u128,
    );
    Node {
        id: NodeId(i as u64 + 1),
        machine_key: Default::default(),
        node_key: Default::default(),
        disco_key: Default::default(),
        ipv4: Some(v4),
        ipv6: Some(v6),
        hostname: format!("node{i}"),
        given_name: format!("node{i}"),
        user_id: if tags.is_empty() {
            user.map(|u| UserId(u as u64 + 1))
        } else {
            None
        },
        tags,
        hostinfo_json: None,
        home_derp: 0,
        announced_routes: Vec::new(),
        approved_routes: Vec::new(),
        endpoints: Vec::new(),
        expiry: None,
        created_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
        last_seen: None,
        register_method: RegisterMethod::Unspecified,
        auth_key_id: None,
        ephemeral: false,
        capver: 0,
        approved: true,
    }
}

fn topology() -> (Vec<User>, Vec<Node>) {
    let users: Vec<User> = (0..USERS)
        .collect::<Vec<_>>()
        .into_iter()
        .map(user)
        .collect();
    let mut nodes = Vec::with_capacity(NODES);
    for i in 0..NODES {
        if i % 5 == 4 {
            // 20% tagged, one or two tags each.
            let mut tags = vec![format!("tag:t{}", i % TAGS)];
            if i % 3 == 0 {
                tags.push(format!("tag:t{}", (i / 7) % TAGS));
            }
            nodes.push(node(i, None, tags));
        } else {
            nodes.push(node(i, Some(i % USERS), Vec::new()));
        }
    }
    // A few subnet routers.
    for (k, n) in nodes
        .iter_mut()
        .filter(|n| !n.tags.is_empty())
        .take(10)
        .enumerate()
    {
        let r = format!("10.{k}.0.0/16")
            .parse()
            .unwrap_or_else(|_| "10.0.0.0/16".parse().expect("net"));
        n.announced_routes.push(r);
        n.approved_routes.push(r);
    }
    (users, nodes)
}

fn policy_text() -> String {
    let mut s = String::from("{\n  \"groups\": {\n");
    for g in 0..GROUPS {
        let members: Vec<String> = (0..20)
            .map(|k| format!("\"user{}@example.com\"", (g * 20 + k) % USERS))
            .collect();
        s.push_str(&format!("    \"group:g{g}\": [{}],\n", members.join(", ")));
    }
    s.push_str("  },\n  \"tagOwners\": {\n");
    for t in 0..TAGS {
        s.push_str(&format!("    \"tag:t{t}\": [\"group:g{}\"],\n", t % GROUPS));
    }
    s.push_str("  },\n  \"hosts\": {\n");
    for h in 0..20 {
        s.push_str(&format!("    \"net{h}\": \"10.{h}.0.0/16\",\n"));
    }
    s.push_str("  },\n  \"acls\": [\n");
    for r in 0..RULES {
        let line = match r % 10 {
            0..=2 => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"tag:t{}:22,443\", \"tag:t{}:80\"]}}",
                r % GROUPS,
                r % TAGS,
                (r / 3) % TAGS
            ),
            3 | 4 => format!(
                "{{\"action\": \"accept\", \"src\": [\"tag:t{}\"], \"dst\": [\"tag:t{}:*\"]}}",
                r % TAGS,
                (r * 7) % TAGS
            ),
            5 => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\", \"user{}@example.com\"], \"dst\": [\"group:g{}:8000-8100\"]}}",
                r % GROUPS,
                r % USERS,
                (r / 2) % GROUPS
            ),
            6 => format!("{{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"net{}:*\"]}}", r % GROUPS, r % 20),
            7 => format!(
                "{{\"action\": \"accept\", \"proto\": \"udp\", \"src\": [\"user{}@example.com\"], \"dst\": [\"tag:t{}:53\"]}}",
                r % USERS,
                r % TAGS
            ),
            8 => format!(
                "{{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"autogroup:self:{}\"]}}",
                r % GROUPS,
                1000 + r
            ),
            _ => format!("{{\"action\": \"accept\", \"src\": [\"autogroup:member\"], \"dst\": [\"tag:t{}:443\"]}}", r % TAGS),
        };
        s.push_str("    ");
        s.push_str(&line);
        s.push_str(",\n");
    }
    s.push_str("  ],\n  \"ssh\": [\n");
    for r in 0..20 {
        s.push_str(&format!(
            "    {{\"action\": \"accept\", \"src\": [\"group:g{}\"], \"dst\": [\"tag:t{}\"], \"users\": [\"root\", \"autogroup:nonroot\"]}},\n",
            r,
            r % TAGS
        ));
    }
    s.push_str("    {\"action\": \"check\", \"src\": [\"autogroup:member\"], \"dst\": [\"autogroup:self\"], \"users\": [\"autogroup:nonroot\"]},\n");
    s.push_str("  ],\n  \"nodeAttrs\": [{\"target\": [\"tag:t1\"], \"attr\": [\"randomize-client-port\"]}],\n}\n");
    s
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let (users, nodes) = topology();
    let text = policy_text();
    let tailnet = Tailnet::default();

    let t = Instant::now();
    let policy = Policy::parse(&text, "bench.hujson").expect("policy parses");
    let parse = t.elapsed();

    let mut compile = Vec::new();
    let mut compiled = None;
    for _ in 0..7 {
        let t = Instant::now();
        let c = CompiledPolicy::compile(&policy, &users, &nodes, &tailnet).expect("compiles");
        compile.push(t.elapsed());
        compiled = Some(c);
    }
    let Some(mut compiled) = compiled else { return };
    let (cmin, cmed) = stats(compile);

    // Materialise every node's packet filter once (what a full map push costs).
    let t = Instant::now();
    let mut rules = 0usize;
    for n in &nodes {
        rules += compiled.filter_rules(n.id).len();
    }
    let all_filters = t.elapsed();

    let t = Instant::now();
    let mut peers = 0usize;
    for n in nodes.iter().step_by(100) {
        peers += compiled.peers(n.id).len();
    }
    let peers_100 = t.elapsed();

    // One node joins (a user node in some groups), then leaves again.
    let mut join = Vec::new();
    let mut join_affected = 0;
    for k in 0..50 {
        let id = NODES + 1 + k;
        let n = node(id - 1, Some(k * 37 % USERS), Vec::new());
        let t = Instant::now();
        let affected = compiled.update_node(Change::Upsert(n));
        join.push(t.elapsed());
        join_affected = affected.len();
        compiled.update_node(Change::Remove(NodeId(id as u64)));
    }
    let (jmin, jmed) = stats(join);

    // A tagged node changes tags.
    let mut retag = Vec::new();
    let mut retag_affected = 0;
    let tagged: Vec<&Node> = nodes
        .iter()
        .filter(|n| !n.tags.is_empty() && n.approved_routes.is_empty())
        .take(50)
        .collect();
    for (k, n) in tagged.iter().enumerate() {
        let mut changed = (*n).clone();
        changed.tags = vec![format!("tag:t{}", (k * 11 + 3) % TAGS)];
        let t = Instant::now();
        let affected = compiled.update_node(Change::Upsert(changed));
        retag.push(t.elapsed());
        retag_affected = affected.len();
    }
    let (rmin, rmed) = stats(retag);

    println!("policy: {RULES} rules, {GROUPS} groups, {TAGS} tags; tailnet: {NODES} nodes, {USERS} users");
    println!("parse                        {}", ms(parse));
    println!(
        "full compile                 min {}  median {}",
        ms(cmin),
        ms(cmed)
    );
    println!(
        "all packet filters           {} ({rules} rules over {NODES} nodes)",
        ms(all_filters)
    );
    println!("compile + all filters        {}", ms(cmin + all_filters));
    println!(
        "peers of 100 nodes           {} ({peers} peers)",
        ms(peers_100)
    );
    println!(
        "node joins (incremental)     min {}  median {}  (affects {join_affected} nodes)",
        ms(jmin),
        ms(jmed)
    );
    println!(
        "node changes tags            min {}  median {}  (affects {retag_affected} nodes)",
        ms(rmin),
        ms(rmed)
    );
}
