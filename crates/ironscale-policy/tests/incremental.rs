//! Incremental node updates must give exactly what a full compile of the
//! changed tailnet gives, and `affected` must name every node whose
//! results changed.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{TimeZone, Utc};
use ironscale_policy::{Change, CompiledPolicy, Policy, Tailnet};
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};

const POLICY: &str = r#"{
  "groups": {"group:a": ["u0@example.com", "u1@example.com"], "group:b": ["u2@example.com", "u3@"]},
  "tagOwners": {"tag:web": ["group:a"], "tag:db": ["group:b"], "tag:ops": ["tag:web"]},
  "hosts": {"lan": "10.1.0.0/16", "one": "100.64.0.5"},
  "grants": [
    {"src": ["group:a"], "dst": ["tag:web"], "ip": ["tcp:443"], "app": {"example.com/cap/web": [{"x": 1}]}},
    {"src": ["tag:ops"], "dst": ["autogroup:tagged"], "ip": ["*"]},
  ],
  "acls": [
    {"action": "accept", "src": ["group:b"], "dst": ["tag:db:5432", "one:22"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
    {"action": "accept", "src": ["tag:web"], "dst": ["tag:db:5432", "lan:*"]},
    {"action": "accept", "proto": "udp", "src": ["u4@example.com"], "dst": ["100.64.0.0/28:53"]},
  ],
  "ssh": [
    {"action": "accept", "src": ["group:a"], "dst": ["tag:web"], "users": ["root"]},
    {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"]},
  ],
  "nodeAttrs": [{"target": ["tag:db", "u4@example.com"], "attr": ["randomize-client-port"]}],
}"#;

fn user(i: u64) -> User {
    User {
        id: UserId(i + 1),
        name: format!("u{i}"),
        display_name: String::new(),
        email: if i == 3 {
            String::new()
        } else {
            format!("u{i}@example.com")
        },
        provider: String::new(),
        provider_id: String::new(),
        profile_pic_url: String::new(),
        idp_groups: Vec::new(),
        created_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
    }
}

fn node(id: u64, ip: u32, user: Option<u64>, tags: &[&str]) -> Node {
    Node {
        id: NodeId(id),
        machine_key: Default::default(),
        node_key: Default::default(),
        disco_key: Default::default(),
        ipv4: Some(Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + ip)),
        ipv6: Some(Ipv6Addr::from(
            0xfd7a_115c_a1e0_0000_0000_0000_0000_0000u128 + ip as u128,
        )),
        hostname: format!("n{id}"),
        given_name: format!("n{id}"),
        user_id: if tags.is_empty() {
            user.map(|u| UserId(u + 1))
        } else {
            None
        },
        tags: tags.iter().map(|t| t.to_string()).collect(),
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

/// Small deterministic generator (no dependency on a RNG crate).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

const TAGS: &[&[&str]] = &[
    &[],
    &["tag:web"],
    &["tag:db"],
    &["tag:ops"],
    &["tag:web", "tag:ops"],
    &[],
];

fn random_node(g: &mut Lcg, id: u64) -> Node {
    let tags = TAGS[g.next(TAGS.len() as u64) as usize];
    node(id, 1 + g.next(40) as u32, Some(g.next(5)), tags)
}

/// Everything the engine says about every node, for comparison.
fn snapshot(c: &CompiledPolicy) -> BTreeMap<NodeId, String> {
    let mut out = BTreeMap::new();
    for id in c.node_ids() {
        let mut s = String::new();
        s += &serde_json::to_string(&c.filter_rules(id)).unwrap_or_default();
        for p in c.peers(id) {
            s += &format!(
                "|{p:?}:{:?}:{:?}",
                c.allowed_ips(id, p),
                c.primary_routes(id, p)
            );
        }
        s += &format!("|ssh={:?}|caps={:?}", c.ssh_policy(id), c.node_cap_map(id));
        out.insert(id, s);
    }
    out
}

#[test]
fn incremental_matches_full_compile() {
    let policy = Policy::parse(POLICY, "inc.hujson").expect("policy");
    let users: Vec<User> = (0..5).map(user).collect();
    let tailnet = Tailnet::default();
    let mut g = Lcg(7);
    let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
    for id in 1..=12 {
        nodes.insert(id, random_node(&mut g, id));
    }
    let all: Vec<Node> = nodes.values().cloned().collect();
    let mut inc = CompiledPolicy::compile(&policy, &users, &all, &tailnet).expect("compiles");
    let mut next_id = 13;
    for step in 0..300 {
        let before = snapshot(&inc);
        let change = match g.next(4) {
            0 => {
                let n = random_node(&mut g, next_id);
                next_id += 1;
                nodes.insert(n.id.0, n.clone());
                Change::Upsert(n)
            }
            1 if nodes.len() > 2 => {
                let keys: Vec<u64> = nodes.keys().copied().collect();
                let k = keys[g.next(keys.len() as u64) as usize];
                nodes.remove(&k);
                Change::Remove(NodeId(k))
            }
            _ => {
                let keys: Vec<u64> = nodes.keys().copied().collect();
                let k = keys[g.next(keys.len() as u64) as usize];
                let n = random_node(&mut g, k);
                nodes.insert(k, n.clone());
                Change::Upsert(n)
            }
        };
        let predicted = inc.affected(&change);
        let reported = inc.update_node(change.clone());
        assert_eq!(
            predicted, reported,
            "step {step}: affected() and update_node() disagree"
        );
        let all: Vec<Node> = nodes.values().cloned().collect();
        let full = CompiledPolicy::compile(&policy, &users, &all, &tailnet).expect("compiles");
        let after = snapshot(&inc);
        assert_eq!(
            after,
            snapshot(&full),
            "step {step}: incremental differs from full compile after {change:?}"
        );
        // Every node whose results changed must have been reported.
        for (id, s) in &after {
            if before.get(id) != Some(s) {
                assert!(
                    reported.contains(id),
                    "step {step}: {id:?} changed but was not reported as affected"
                );
            }
        }
        for id in before.keys() {
            if !after.contains_key(id) {
                assert!(
                    reported.contains(id),
                    "step {step}: removed {id:?} not reported"
                );
            }
        }
    }
}

#[test]
fn route_changes_recompile() {
    let policy = Policy::parse(
        r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
        "r.hujson",
    )
    .expect("policy");
    let users: Vec<User> = (0..2).map(user).collect();
    let a = node(1, 1, Some(0), &[]);
    let mut b = node(2, 2, None, &["tag:router"]);
    let mut c = CompiledPolicy::compile(
        &policy,
        &users,
        &[a.clone(), b.clone()],
        &Tailnet::default(),
    )
    .expect("compiles");
    assert!(c.allowed_ips(a.id, b.id).len() == 2);
    let route: ipnet::IpNet = "10.9.0.0/16".parse().expect("net");
    b.announced_routes = vec![route];
    b.approved_routes = vec![route];
    let affected = c.update_node(Change::Upsert(b.clone()));
    assert!(affected.contains(&a.id) && affected.contains(&b.id));
    assert!(c.allowed_ips(a.id, b.id).contains(&route));
    let rules = serde_json::to_string(&c.filter_rules(a.id)).unwrap_or_default();
    assert!(
        rules.contains("10.9.0.0/16"),
        "`*` sources now include the approved route: {rules}"
    );
}

#[test]
fn new_user_then_node() {
    let policy = Policy::parse(
        r#"{"tagOwners": {"tag:db": []}, "acls": [{"action": "accept", "src": ["new@example.com"], "dst": ["tag:db:5432"]}]}"#,
        "u.hujson",
    )
    .expect("policy");
    let users: Vec<User> = (0..2).map(user).collect();
    let db = node(1, 1, None, &["tag:db"]);
    let mut c = CompiledPolicy::compile(
        &policy,
        &users,
        std::slice::from_ref(&db),
        &Tailnet::default(),
    )
    .expect("compiles");
    let mut newcomer = user(9);
    newcomer.email = "new@example.com".into();
    assert!(
        c.update_user(&newcomer).is_empty(),
        "a user without nodes affects nobody"
    );
    let laptop = node(2, 2, Some(9), &[]);
    let affected = c.update_node(Change::Upsert(laptop.clone()));
    assert!(
        affected.contains(&db.id) && affected.contains(&laptop.id),
        "{affected:?}"
    );
    assert!(c.can_see(laptop.id, db.id));
    let mut all_users = users.clone();
    all_users.push(newcomer);
    let full = CompiledPolicy::compile(
        &policy,
        &all_users,
        &[db.clone(), laptop.clone()],
        &Tailnet::default(),
    )
    .expect("compiles");
    assert_eq!(snapshot(&c), snapshot(&full));
}

/// `POLICY` plus aliases naming users that join later, by e-mail, by bare
/// name, by domain and by identity-provider group.
const USER_POLICY: &str = r#"{
  "groups": {
    "group:a": ["u0@example.com", "late@example.com", "oidc-group:eng"],
    "group:b": ["u2@example.com", "bob@"],
    "group:c": ["oidc-group:ops/sre team", "oidc-group:eng"],
  },
  "tagOwners": {"tag:web": ["group:a"], "tag:db": ["group:b"]},
  "acls": [
    {"action": "accept", "src": ["group:a"], "dst": ["tag:web:443"]},
    {"action": "accept", "src": ["group:b"], "dst": ["tag:db:5432"]},
    {"action": "accept", "src": ["group:c"], "dst": ["tag:db:9000"]},
    {"action": "accept", "src": ["user:*@corp.example"], "dst": ["tag:db:22"]},
    {"action": "accept", "src": ["autogroup:member"], "dst": ["autogroup:self:*"]},
  ],
  "ssh": [{"action": "accept", "src": ["group:a"], "dst": ["tag:web"], "users": ["root"]}],
}"#;

fn user_tailnet() -> Tailnet {
    Tailnet {
        domains: vec!["example.com".into(), "corp.example".into()],
        ..Default::default()
    }
}

/// Provider groups the random steps draw from: two the policy names, one
/// differing only in case, one it does not name.
const IDP_GROUPS: &[&str] = &["eng", "ops/sre team", "Eng", "other"];

fn random_idp_groups(g: &mut Lcg) -> Vec<String> {
    IDP_GROUPS
        .iter()
        .filter(|_| g.next(3) == 0)
        .map(|s| s.to_string())
        .collect()
}

/// Users created, renamed and moved between provider groups (named by the
/// policy or not, with nodes or not) give exactly what a full compile
/// gives, and every node whose results changed is reported.
#[test]
fn user_changes_match_full_compile() {
    let policy = Policy::parse(USER_POLICY, "users.hujson").expect("policy");
    let tailnet = user_tailnet();
    let mut users: BTreeMap<u64, User> = (0..5).map(|i| (i, user(i))).collect();
    let mut g = Lcg(11);
    let mut nodes: BTreeMap<u64, Node> = BTreeMap::new();
    for id in 1..=10 {
        nodes.insert(id, random_node(&mut g, id));
    }
    let compile = |users: &BTreeMap<u64, User>, nodes: &BTreeMap<u64, Node>| {
        let u: Vec<User> = users.values().cloned().collect();
        let n: Vec<Node> = nodes.values().cloned().collect();
        CompiledPolicy::compile(&policy, &u, &n, &tailnet).expect("compiles")
    };
    let mut inc = compile(&users, &nodes);
    let (mut next_user, mut next_node) = (5u64, 11u64);
    for step in 0..200 {
        let before = snapshot(&inc);
        let reported = match g.next(4) {
            0 => {
                let mut u = user(next_user);
                u.idp_groups = random_idp_groups(&mut g);
                let k = next_user;
                next_user += 1;
                u.email = match g.next(4) {
                    0 => "late@example.com".into(),
                    1 => format!("x{k}@corp.example"),
                    2 => String::new(),
                    _ => format!("x{k}@example.com"),
                };
                u.name = if g.next(3) == 0 {
                    "bob".into()
                } else {
                    format!("n{k}")
                };
                users.insert(k, u.clone());
                inc.update_user(&u)
            }
            1 => {
                let keys: Vec<u64> = users.keys().copied().collect();
                let k = keys[g.next(keys.len() as u64) as usize];
                let mut u = users[&k].clone();
                u.name = match g.next(3) {
                    0 => "bob".into(),
                    1 => format!("r{step}"),
                    _ => format!("u{k}"),
                };
                users.insert(k, u.clone());
                inc.update_user(&u)
            }
            2 => {
                // A login: the provider's groups gained, lost or replaced.
                let keys: Vec<u64> = users.keys().copied().collect();
                let k = keys[g.next(keys.len() as u64) as usize];
                let mut u = users[&k].clone();
                let group = IDP_GROUPS[g.next(IDP_GROUPS.len() as u64) as usize].to_string();
                match g.next(3) {
                    0 => u.idp_groups.push(group),
                    1 => u.idp_groups.retain(|x| *x != group),
                    _ => u.idp_groups = random_idp_groups(&mut g),
                }
                users.insert(k, u.clone());
                inc.update_user(&u)
            }
            _ => {
                let id = if g.next(2) == 0 {
                    next_node += 1;
                    next_node
                } else {
                    let keys: Vec<u64> = nodes.keys().copied().collect();
                    keys[g.next(keys.len() as u64) as usize]
                };
                // Half the time the newest user, who may have joined in place.
                let owners: Vec<u64> = users.keys().copied().collect();
                let owner = if g.next(2) == 0 {
                    next_user - 1
                } else {
                    owners[g.next(owners.len() as u64) as usize]
                };
                let tags = TAGS[g.next(TAGS.len() as u64) as usize];
                let n = node(id, 1 + g.next(60) as u32, Some(owner), tags);
                nodes.insert(id, n.clone());
                inc.update_node(Change::Upsert(n))
            }
        };
        let after = snapshot(&inc);
        assert_eq!(
            after,
            snapshot(&compile(&users, &nodes)),
            "step {step}: incremental differs from a full compile"
        );
        for (id, s) in &after {
            if before.get(id) != Some(s) {
                assert!(
                    reported.contains(id),
                    "step {step}: {id:?} changed but was not reported"
                );
            }
        }
    }
}

/// A user whom no alias names is renamed in place: no node is affected,
/// even though the user has nodes. Renaming it to a name the policy uses
/// (`bob@`) changes its nodes' rules, and reports them.
#[test]
fn unnamed_user_rename_affects_nobody() {
    let policy = Policy::parse(USER_POLICY, "users.hujson").expect("policy");
    let users: Vec<User> = (0..5).map(user).collect();
    let laptop = node(1, 1, Some(1), &[]);
    let db = node(2, 2, None, &["tag:db"]);
    let nodes = [laptop.clone(), db.clone()];
    let mut c =
        CompiledPolicy::compile(&policy, &users, &nodes, &user_tailnet()).expect("compiles");
    let mut u1 = users[1].clone();
    u1.name = "someone".into();
    assert!(c.update_user(&u1).is_empty(), "u1 is named by no alias");
    assert!(!c.can_see(laptop.id, db.id));
    u1.name = "bob".into();
    u1.email = String::new();
    let affected = c.update_user(&u1);
    assert!(affected.contains(&laptop.id), "{affected:?}");
    assert!(c.can_see(laptop.id, db.id), "bob@ is in group:b");
    let mut all = users.clone();
    all[1] = u1;
    let full = CompiledPolicy::compile(&policy, &all, &nodes, &user_tailnet()).expect("compiles");
    assert_eq!(snapshot(&c), snapshot(&full));
}

/// A rename that no alias notices (the group names the user by e-mail)
/// is applied in place: nobody affected, same result as a full compile.
#[test]
fn rename_unnoticed_by_aliases_affects_nobody() {
    let policy = Policy::parse(USER_POLICY, "users.hujson").expect("policy");
    let users: Vec<User> = (0..5).map(user).collect();
    let laptop = node(1, 1, Some(0), &[]);
    let web = node(2, 2, None, &["tag:web"]);
    let nodes = [laptop.clone(), web.clone()];
    let mut c =
        CompiledPolicy::compile(&policy, &users, &nodes, &user_tailnet()).expect("compiles");
    assert!(c.can_see(laptop.id, web.id), "u0@example.com is in group:a");
    let mut u0 = users[0].clone();
    u0.name = "renamed".into();
    assert!(c.update_user(&u0).is_empty());
    let mut all = users.clone();
    all[0] = u0;
    let full = CompiledPolicy::compile(&policy, &all, &nodes, &user_tailnet()).expect("compiles");
    assert_eq!(snapshot(&c), snapshot(&full));
    assert!(c.can_see(laptop.id, web.id));
}

/// A user gaining a provider group the policy names gains its access, and
/// every node whose results changed is reported; losing it takes the access
/// away; a group nothing names changes nobody.
#[test]
fn provider_group_gained_and_lost_match_full_compile() {
    let policy = Policy::parse(USER_POLICY, "users.hujson").expect("policy");
    let mut users: Vec<User> = (0..5).map(user).collect();
    let laptop = node(1, 1, Some(1), &[]);
    let web = node(2, 2, None, &["tag:web"]);
    let db = node(3, 3, None, &["tag:db"]);
    let nodes = [laptop.clone(), web.clone(), db.clone()];
    let full = |users: &[User]| {
        CompiledPolicy::compile(&policy, users, &nodes, &user_tailnet()).expect("compiles")
    };
    let mut c = full(&users);
    assert!(!c.can_see(laptop.id, web.id), "u1 is in no group");

    users[1].idp_groups = vec!["eng".into()];
    let before = snapshot(&c);
    let affected = c.update_user(&users[1]);
    assert!(c.can_see(laptop.id, web.id), "eng is in group:a");
    assert!(c.can_see(laptop.id, db.id), "eng is in group:c");
    let after = snapshot(&c);
    assert_eq!(after, snapshot(&full(&users)));
    for id in [laptop.id, web.id, db.id] {
        assert_ne!(before.get(&id), after.get(&id), "{id:?} unchanged");
        assert!(affected.contains(&id), "{id:?} not reported: {affected:?}");
    }

    // Only the case differs: not the policy's group, nothing moves.
    users[1].idp_groups.push("Eng".into());
    assert!(c.update_user(&users[1]).is_empty());
    assert_eq!(snapshot(&c), snapshot(&full(&users)));

    // Trading eng for ops/sre team keeps group:c, loses group:a.
    users[1].idp_groups = vec!["ops/sre team".into()];
    let affected = c.update_user(&users[1]);
    assert!(!c.can_see(laptop.id, web.id));
    assert!(c.can_see(laptop.id, db.id));
    assert!(affected.contains(&laptop.id) && affected.contains(&web.id));
    assert_eq!(snapshot(&c), snapshot(&full(&users)));

    // Losing every group loses the rest.
    users[1].idp_groups.clear();
    c.update_user(&users[1]);
    assert!(!c.can_see(laptop.id, db.id));
    assert_eq!(snapshot(&c), snapshot(&full(&users)));
}
