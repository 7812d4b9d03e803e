//! Identity-provider groups: `oidc-group:NAME` as a member of a group in
//! `groups` names the users whose `idp_groups` hold NAME (exact match);
//! anywhere else it is refused with its position and the fix.

use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{TimeZone, Utc};
use ironscale_policy::{CompiledPolicy, ErrorKind, Policy, Tailnet};
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};

fn user(i: u64, name: &str, groups: &[&str]) -> User {
    User {
        id: UserId(i),
        name: name.into(),
        display_name: String::new(),
        email: format!("{name}@example.com"),
        provider: "oidc".into(),
        provider_id: format!("sub-{i}"),
        profile_pic_url: String::new(),
        idp_groups: groups.iter().map(|g| g.to_string()).collect(),
        created_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
    }
}

fn node(id: u64, user: Option<u64>, tags: &[&str]) -> Node {
    Node {
        id: NodeId(id),
        machine_key: Default::default(),
        node_key: Default::default(),
        disco_key: Default::default(),
        ipv4: Some(Ipv4Addr::new(100, 64, 0, id as u8)),
        ipv6: Some(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, id as u16)),
        hostname: format!("n{id}"),
        given_name: format!("n{id}"),
        user_id: user.map(UserId),
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

const POLICY: &str = r#"{
  "groups": {
    "group:eng": ["dave@example.com", "oidc-group:engineering"],
    "group:ops": ["oidc-group:Org/Site Ops@corp"],
  },
  "tagOwners": {"tag:server": ["group:eng"], "tag:db": ["group:ops"]},
  "acls": [
    {"action": "accept", "src": ["group:eng"], "dst": ["tag:server:22"]},
    {"action": "accept", "src": ["group:ops"], "dst": ["tag:db:5432"]},
  ],
  "ssh": [{"action": "accept", "src": ["group:eng"], "dst": ["tag:server"], "users": ["root"]}],
}"#;

const SERVER: NodeId = NodeId(10);
const DB: NodeId = NodeId(11);

/// alice is in the provider's "engineering", bob in look-alikes only,
/// carol in the ops group (a name with `/`, a space and `@`), dave is
/// named by e-mail.
fn users() -> Vec<User> {
    vec![
        user(1, "alice", &["engineering", "all"]),
        user(
            2,
            "bob",
            &["Engineering", "engineering/web", " engineering"],
        ),
        user(3, "carol", &["Org/Site Ops@corp"]),
        user(4, "dave", &[]),
    ]
}

fn nodes() -> Vec<Node> {
    vec![
        node(1, Some(1), &[]),
        node(2, Some(2), &[]),
        node(3, Some(3), &[]),
        node(4, Some(4), &[]),
        node(10, None, &["tag:server"]),
        node(11, None, &["tag:db"]),
    ]
}

fn compile(users: &[User]) -> CompiledPolicy {
    let p = Policy::parse(POLICY, "p.hujson").expect("policy");
    CompiledPolicy::compile(&p, users, &nodes(), &Tailnet::default()).expect("compiles")
}

/// The source addresses of a node's packet filter.
fn sources(c: &CompiledPolicy, id: NodeId) -> Vec<String> {
    let v = serde_json::to_value(c.filter_rules(id)).expect("json");
    let mut out: Vec<String> = v
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["SrcIPs"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    out.sort();
    out
}

#[test]
fn provider_group_members_reach_the_tagged_server() {
    let c = compile(&users());
    assert!(c.can_see(NodeId(1), SERVER), "alice is in engineering");
    assert!(c.can_see(NodeId(4), SERVER), "dave is named by e-mail");
    assert!(
        !c.can_see(NodeId(2), SERVER),
        "bob's groups only look like engineering (case, prefix, space)"
    );
    assert!(!c.can_see(NodeId(3), SERVER));
    assert_eq!(
        sources(&c, SERVER),
        [
            "100.64.0.1",
            "100.64.0.4",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0::4"
        ]
    );
    // A provider group name with `/`, a space and `@`, matched exactly.
    assert!(c.can_see(NodeId(3), DB));
    assert!(!c.can_see(NodeId(1), DB));
    assert_eq!(sources(&c, DB), ["100.64.0.3", "fd7a:115c:a1e0::3"]);
    // SSH follows the same group.
    let ssh = c.ssh_policy(SERVER).expect("ssh policy");
    let mut principals: Vec<&str> = ssh
        .rules
        .iter()
        .flat_map(|r| r.principals.iter())
        .map(|p| p.node_ip.as_str())
        .collect();
    principals.sort();
    assert_eq!(
        principals,
        [
            "100.64.0.1",
            "100.64.0.4",
            "fd7a:115c:a1e0::1",
            "fd7a:115c:a1e0::4"
        ]
    );
}

#[test]
fn provider_groups_own_tags() {
    let c = compile(&users());
    let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(c
        .may_own_tags(Some(UserId(1)), &[], &tags(&["tag:server"]))
        .is_ok());
    assert!(c
        .may_own_tags(Some(UserId(2)), &[], &tags(&["tag:server"]))
        .is_err());
    assert!(c
        .may_own_tags(Some(UserId(3)), &[], &tags(&["tag:db"]))
        .is_ok());
}

/// Everything the engine says about every node, for comparison.
fn snapshot(c: &CompiledPolicy) -> Vec<String> {
    c.node_ids()
        .into_iter()
        .map(|id| {
            let peers: Vec<_> = c
                .peers(id)
                .into_iter()
                .map(|p| (p, c.allowed_ips(id, p)))
                .collect();
            format!(
                "{id:?} {} {peers:?} {:?} {:?}",
                serde_json::to_string(&c.filter_rules(id)).unwrap_or_default(),
                c.ssh_policy(id),
                c.node_cap_map(id)
            )
        })
        .collect()
}

#[test]
fn leaving_the_provider_group_loses_access_after_update_user() {
    let mut all = users();
    let mut c = compile(&all);
    assert!(c.can_see(NodeId(1), SERVER));

    // alice's next login: the provider no longer lists her in engineering.
    all[0].idp_groups = vec!["all".into()];
    let affected = c.update_user(&all[0]);
    assert!(!c.can_see(NodeId(1), SERVER), "alice left engineering");
    assert!(!sources(&c, SERVER).contains(&"100.64.0.1".to_string()));
    assert!(affected.contains(&NodeId(1)), "{affected:?}");
    assert!(affected.contains(&SERVER), "{affected:?}");
    assert_eq!(snapshot(&c), snapshot(&compile(&all)));

    // bob joins it, exactly spelled.
    all[1].idp_groups.push("engineering".into());
    let affected = c.update_user(&all[1]);
    assert!(c.can_see(NodeId(2), SERVER), "bob joined engineering");
    assert!(affected.contains(&NodeId(2)) && affected.contains(&SERVER));
    assert_eq!(snapshot(&c), snapshot(&compile(&all)));

    // A change of groups that no `oidc-group:` names is applied in place
    // and affects nobody; the index still follows it.
    all[0].idp_groups = vec!["all".into(), "marketing".into()];
    assert!(c.update_user(&all[0]).is_empty());
    assert_eq!(snapshot(&c), snapshot(&compile(&all)));
    all[0].idp_groups.push("engineering".into());
    assert!(c.update_user(&all[0]).contains(&NodeId(1)));
    assert!(c.can_see(NodeId(1), SERVER), "alice is back");
    assert_eq!(snapshot(&c), snapshot(&compile(&all)));

    // A new user who arrives with the group is a member at once.
    let erin = user(5, "erin", &["engineering"]);
    all.push(erin.clone());
    c.update_user(&erin);
    assert_eq!(snapshot(&c), snapshot(&compile(&all)));
    let laptop = node(5, Some(5), &[]);
    c.update_node(ironscale_policy::Change::Upsert(laptop));
    assert!(c.can_see(NodeId(5), SERVER));
}

#[test]
fn policy_tests_see_provider_groups() {
    let text = POLICY.replace(
        "\n}",
        r#"
  "tests": [
    {"src": "alice@example.com", "accept": ["tag:server:22"], "deny": ["tag:db:5432"]},
    {"src": "bob@example.com", "deny": ["tag:server:22"]},
    {"src": "group:eng", "accept": ["tag:server:22"]},
  ],
  "sshTests": [{"src": "alice@example.com", "dst": ["tag:server"], "accept": ["root"]}],
}"#,
    );
    let p = Policy::parse(&text, "t.hujson").expect("policy");
    CompiledPolicy::compile(&p, &users(), &nodes(), &Tailnet::default()).expect("tests pass");

    // Without her provider group alice's test fails, at its position.
    let mut without = users();
    without[0].idp_groups.clear();
    let e = CompiledPolicy::compile(&p, &without, &nodes(), &Tailnet::default())
        .expect_err("alice is no longer in engineering");
    assert_eq!(e.kind, ErrorKind::TestFailed);
    let line = text
        .lines()
        .position(|l| l.contains(r#"{"src": "alice@example.com", "accept""#))
        .expect("line")
        + 1;
    assert!(
        e.to_string().starts_with(&format!("t.hujson:{line}:")),
        "{e}"
    );
}

/// The error for `text`, and the 1-based line and column of `needle`'s
/// opening quote in it.
fn err_at(text: &str, needle: &str) -> (ironscale_policy::PolicyError, String) {
    let e = Policy::parse(text, "p.hujson").expect_err("must be rejected");
    let quoted = format!("\"{needle}\"");
    let (line, col) = text
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(&quoted).map(|c| (i + 1, l[..c].chars().count() + 1)))
        .unwrap_or_else(|| panic!("{needle} not in the text"));
    (e, format!("p.hujson:{line}:{col}: "))
}

const MISPLACED: &str = "\"oidc-group:eng\" can only be a member of a group in \"groups\"; \
     define \"group:eng\": [\"oidc-group:eng\"] and use the group";

#[test]
fn provider_groups_elsewhere_are_refused_with_their_position() {
    let cases: &[(&str, &str)] = &[
        (
            r#"{"acls": [
  {"action": "accept", "src": ["oidc-group:eng"], "dst": ["*:*"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"acls": [
  {"action": "accept", "src": ["*"],
   "dst": ["oidc-group:eng:22"]}]}"#,
            "oidc-group:eng:22",
        ),
        (
            // Without ports: still about the group, not the ports.
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["oidc-group:eng"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"grants": [{"src": ["*"], "dst": ["oidc-group:eng"], "ip": ["*"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"grants": [{"src": ["oidc-group:eng"], "dst": ["*"], "ip": ["*"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"tagOwners": {"tag:x": []},
  "ssh": [{"action": "accept", "src": ["oidc-group:eng"], "dst": ["tag:x"], "users": ["root"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"tagOwners": {"tag:x": ["a@example.com",
    "oidc-group:eng"]}}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"autoApprovers": {"routes": {"10.0.0.0/8": ["oidc-group:eng"]}}}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"autoApprovers": {"exitNode": ["oidc-group:eng"]}}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"nodeAttrs": [{"target": ["oidc-group:eng"], "attr": ["funnel"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"ipsets": {"ipset:x": ["oidc-group:eng"]}}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"tagOwners": {"tag:x": []}, "acls": [],
  "tests": [{"src": "oidc-group:eng", "accept": ["tag:x:22"]}]}"#,
            "oidc-group:eng",
        ),
        (
            r#"{"tagOwners": {"tag:x": []}, "acls": [],
  "tests": [{"src": "a@example.com", "deny": ["oidc-group:eng:22"]}]}"#,
            "oidc-group:eng:22",
        ),
        (
            r#"{"tagOwners": {"tag:x": []},
  "sshTests": [{"src": "oidc-group:eng", "dst": ["tag:x"], "accept": ["root"]}]}"#,
            "oidc-group:eng",
        ),
    ];
    for (text, needle) in cases {
        let (e, at) = err_at(text, needle);
        assert_eq!(e.kind, ErrorKind::Invalid, "{e}");
        assert_eq!(e.to_string(), format!("{at}{MISPLACED}"), "in {text}");
    }
}

#[test]
fn provider_group_names_are_checked() {
    // Empty.
    let text = r#"{"groups": {"group:eng": ["a@example.com",
      "oidc-group:"]}}"#;
    let (e, at) = err_at(text, "oidc-group:");
    assert_eq!(e.kind, ErrorKind::Invalid);
    assert!(e.to_string().starts_with(&at), "{e}");
    assert!(e.message.contains("needs a group name"), "{e}");
    // Control characters (a JSON escape).
    let text = r#"{"groups": {"group:eng": ["oidc-group:a\tb"]}}"#;
    let (e, at) = err_at(text, r"oidc-group:a\tb");
    assert!(e.message.contains("control characters"), "{e}");
    assert!(e.to_string().starts_with(&at), "{e}");
    // Anything else is a name, kept as written (no case folding).
    let p = Policy::parse(
        r#"{"groups": {"group:x": ["oidc-group:Org/Team A@corp:x", "oidc-group:ünï"]}}"#,
        "p.hujson",
    )
    .expect("any other name");
    let members: Vec<String> = p.groups[0]
        .members
        .iter()
        .map(|m| m.value.to_string())
        .collect();
    assert_eq!(members, ["oidc-group:Org/Team A@corp:x", "oidc-group:ünï"]);
    // A provider group is not a group of groups: the nesting rule stands.
    let e = Policy::parse(
        r#"{"groups": {"group:a": ["group:b"], "group:b": ["oidc-group:eng"]}}"#,
        "p.hujson",
    )
    .expect_err("nested");
    assert!(e.message.contains("cannot be recursive"), "{e}");
}
