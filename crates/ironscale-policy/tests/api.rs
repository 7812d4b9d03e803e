//! Public API behaviour: parsing and error positions, the seed's policies,
//! tag ownership, default allow-all, filters, SSH.

use std::net::{Ipv4Addr, Ipv6Addr};

use chrono::{TimeZone, Utc};
use ironscale_policy::{CompiledPolicy, ErrorKind, Policy, Tailnet};
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};

fn user(i: u64, name: &str, email: &str) -> User {
    User {
        id: UserId(i),
        name: name.into(),
        display_name: String::new(),
        email: email.into(),
        provider: String::new(),
        provider_id: String::new(),
        profile_pic_url: String::new(),
        idp_groups: Vec::new(),
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

/// The seed's "Basic Structure" policy (section 4), verbatim.
const SEED_BASIC: &str = r#"{
  // Groups: organize users
  "groups": {
    "group:admin": ["admin"],
    "group:clients": ["clients"]
  },

  // Tag owners: who can assign tags
  "tagOwners": {
    "tag:server": ["group:admin"],
    "tag:exit-node": ["group:admin"]
  },

  // ACL rules
  "acls": [
    // Admin can access everything
    {
      "action": "accept",
      "src": ["group:admin"],
      "dst": ["*:*"]
    },
    // Clients can only use exit nodes (internet access)
    {
      "action": "accept",
      "src": ["group:clients"],
      "dst": ["autogroup:internet:*"]
    },
    // Clients can ping each other (optional)
    {
      "action": "accept",
      "src": ["group:clients"],
      "dst": ["group:clients:*"]
    }
  ]
}"#;

/// The seed's "Enterprise Example" policy, verbatim.
const SEED_ENTERPRISE: &str = r#"{
  "groups": {
    "group:admin": ["admin"],
    "group:clients": ["clients"]
  },
  "tagOwners": {
    "tag:exit-node": ["group:admin"],
    "tag:server": ["group:admin"]
  },
  "acls": [
    // Admin: full access to all nodes
    {
      "action": "accept",
      "src": ["group:admin"],
      "dst": ["*:*"]
    },
    // Clients: internet only through exit nodes
    {
      "action": "accept",
      "src": ["group:clients"],
      "dst": ["autogroup:internet:*"]
    },
    // Clients cannot see or access other clients' devices
    // (no rule = denied by default)

    // Admin can SSH to tagged servers
    {
      "action": "accept",
      "src": ["group:admin"],
      "dst": ["tag:server:22"]
    }
  ]
}"#;

#[test]
fn seed_policies_load_with_bare_user_warnings() {
    for text in [SEED_BASIC, SEED_ENTERPRISE] {
        let p = Policy::parse(text, "acls.json").expect("seed policy loads");
        let w: Vec<String> = p.warnings().iter().map(|w| w.to_string()).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("acls.json:") && w[0].contains("\"admin@\""),
            "{}",
            w[0]
        );
        assert!(w[1].contains("\"clients@\""), "{}", w[1]);
    }
}

#[test]
fn bare_user_names_resolve_to_users_of_that_name() {
    let p = Policy::parse(SEED_ENTERPRISE, "acls.json").expect("loads");
    let users = vec![user(1, "admin", ""), user(2, "clients", "")];
    let nodes = vec![
        node(1, Some(1), &[]),
        node(2, Some(2), &[]),
        node(3, None, &["tag:server"]),
        node(4, Some(2), &[]),
    ];
    let c = CompiledPolicy::compile(&p, &users, &nodes, &Tailnet::default()).expect("compiles");
    // admin reaches everything; clients reach nobody inside the tailnet.
    assert!(c.can_see(NodeId(1), NodeId(3)));
    assert!(c.can_see(NodeId(1), NodeId(2)));
    assert!(!c.can_see(NodeId(2), NodeId(4)));
    let rules = serde_json::to_value(c.filter_rules(NodeId(3))).expect("json");
    let src = rules[0]["SrcIPs"].as_array().expect("src");
    assert_eq!(src.len(), 2, "admin's two addresses: {rules}");
    assert_eq!(src[0], "100.64.0.1");
}

fn err(text: &str) -> ironscale_policy::PolicyError {
    Policy::parse(text, "policy.hujson").expect_err("must be rejected")
}

#[test]
fn troubleshooting_errors_are_precise() {
    // Unknown group.
    let e = err(r#"{"groups": {"group:admin": ["a@x.io"]},
        "acls": [{"action": "accept", "src": ["group:admn"], "dst": ["*:*"]}]}"#);
    assert_eq!(
        e.to_string(),
        "policy.hujson:2:47: src=group not found: \"group:admn\" (did you mean \"group:admin\"?)"
    );
    assert_eq!(e.kind, ErrorKind::Invalid);

    // Typo in a key.
    let e = err("{\n  \"acls\": [],\n  \"tagowner\": {}\n}");
    assert_eq!(
        e.to_string(),
        "policy.hujson:3:3: unknown key \"tagowner\" in the policy (did you mean \"tagOwners\"?)"
    );
    assert_eq!(e.kind, ErrorKind::Schema);
    let e = err(r#"{"acls": [{"action": "accept", "src": ["*"], "dts": ["*:*"]}]}"#);
    assert!(
        e.to_string()
            .contains("unknown key \"dts\" in acls entry (did you mean \"dst\"?)"),
        "{e}"
    );

    // Bad CIDR.
    let e = err(r#"{"acls": [{"action": "accept", "src": ["10.0.0.0/33"], "dst": ["*:*"]}]}"#);
    assert_eq!(
        e.to_string(),
        "policy.hujson:1:40: src: invalid CIDR \"10.0.0.0/33\": prefix length 33 is over 32"
    );
    let e = err(r#"{"hosts": {"db": "10.0.0/8"}}"#);
    assert!(
        e.to_string()
            .contains("hosts[\"db\"]: invalid CIDR \"10.0.0/8\""),
        "{e}"
    );

    // Tag without owner.
    let e = err(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["tag:db:5432"]}]}"#);
    assert!(
        e.to_string()
            .contains("dst=\"tag:db\": tag not found: \"tag:db\" (add it to \"tagOwners\" first)"),
        "{e}"
    );
}

#[test]
fn hujson_syntax_errors_have_positions() {
    let e = err("{\n  // comment\n  \"acls\": [\n    {\"action\": \"accept\" \"src\": []}\n  ]\n}");
    assert_eq!(e.kind, ErrorKind::Syntax);
    assert_eq!(e.pos.map(|p| p.line), Some(4), "{e}");
    let e = err("{ /* never closed ");
    assert!(e.to_string().contains("unterminated /* comment"), "{e}");
    // Comments and trailing commas are fine.
    Policy::parse("{\n // c\n \"acls\": [ /* x */ ],\n}", "ok.hujson").expect("HuJSON");
    // Single quotes are not HuJSON.
    assert_eq!(err("{'acls': []}").kind, ErrorKind::Syntax);
}

#[test]
fn tailscale_rejections_match() {
    let e = err(r#"{"acls": [{"action": "deny", "src": ["*"], "dst": ["*:*"]}]}"#);
    assert!(
        e.message.starts_with("action=\"deny\" is not supported"),
        "{e}"
    );
    let e = err(r#"{"grants": [{"src": ["*"], "dst": ["0.0.0.0/0"], "ip": ["*"]}]}"#);
    assert!(
        e.message
            .contains("to allow all IP addresses, use \"*\" or \"autogroup:internet\""),
        "{e}"
    );
    let e = err(r#"{"groups": {"group:a": ["group:b"], "group:b": ["x@y.z"]}}"#);
    assert!(
        e.message.contains("group members cannot be recursive"),
        "{e}"
    );
    let e = err(
        r#"{"ssh": [{"action": "accept", "src": ["*"], "dst": ["tag:x"], "users": []}], "tagOwners": {"tag:x": []}}"#,
    );
    assert!(e.message.contains("users must be specified"), "{e}");
}

#[test]
fn no_policy_allows_all() {
    let users = vec![user(1, "a", "a@x.io")];
    let nodes = vec![node(1, Some(1), &[]), node(2, None, &["tag:t"])];
    let c = CompiledPolicy::compile(&Policy::allow_all(), &users, &nodes, &Tailnet::default())
        .expect("compiles");
    assert!(c.can_see(NodeId(1), NodeId(2)));
    let v = serde_json::to_value(c.filter_rules(NodeId(2))).expect("json");
    assert_eq!(v[0]["DstPorts"][0]["IP"], "*");
    assert_eq!(v[0]["SrcIPs"][0], "100.115.94.0-100.127.255.255");
    assert!(c.ssh_policy(NodeId(1)).is_none());
}

#[test]
fn tag_ownership() {
    let p = Policy::parse(
        r#"{"groups": {"group:ops": ["bob@x.io"]},
            "tagOwners": {"tag:web": ["group:ops"], "tag:canary": ["tag:web"], "tag:db": ["alice@x.io"]}}"#,
        "t.hujson",
    )
    .expect("policy");
    let users = vec![user(1, "alice", "alice@x.io"), user(2, "bob", "bob@x.io")];
    let c = CompiledPolicy::compile(&p, &users, &[], &Tailnet::default()).expect("compiles");
    let tags = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(c
        .may_own_tags(Some(UserId(2)), &[], &tags(&["tag:web"]))
        .is_ok());
    // Tags owning tags: bob owns tag:web, which owns tag:canary.
    assert!(c
        .may_own_tags(Some(UserId(2)), &[], &tags(&["tag:canary"]))
        .is_ok());
    // A tagged credential carrying tag:web may apply tag:canary.
    assert!(c
        .may_own_tags(None, &tags(&["tag:web"]), &tags(&["tag:canary"]))
        .is_ok());
    let e = c
        .may_own_tags(Some(UserId(1)), &[], &tags(&["tag:web"]))
        .expect_err("alice does not own tag:web");
    assert!(e.message.contains("may not apply tag \"tag:web\""), "{e}");
    let e = c
        .may_own_tags(Some(UserId(1)), &[], &tags(&["tag:nope"]))
        .expect_err("undefined");
    assert!(e.message.contains("not defined in tagOwners"), "{e}");
}

#[test]
fn tests_run_on_load_and_reject() {
    let text = r#"{
      "tagOwners": {"tag:db": ["a@x.io"]},
      "acls": [{"action": "accept", "src": ["a@x.io"], "dst": ["tag:db:5432"]}],
      "tests": [{"src": "a@x.io", "accept": ["tag:db:5432"], "deny": ["tag:db:22"]}],
    }"#;
    let users = vec![user(1, "a", "a@x.io")];
    let nodes = vec![node(1, Some(1), &[]), node(2, None, &["tag:db"])];
    let p = Policy::parse(text, "t.hujson").expect("policy");
    CompiledPolicy::compile(&p, &users, &nodes, &Tailnet::default()).expect("tests pass");
    let bad = text.replace("\"deny\": [\"tag:db:22\"]", "\"deny\": [\"tag:db:5432\"]");
    let p = Policy::parse(&bad, "t.hujson").expect("policy");
    let e =
        CompiledPolicy::compile(&p, &users, &nodes, &Tailnet::default()).expect_err("test fails");
    assert_eq!(e.kind, ErrorKind::TestFailed);
    assert!(e.to_string().starts_with("t.hujson:4:"), "{e}");
}

#[test]
fn ssh_check_rules_come_first() {
    let text = r#"{
      "tagOwners": {"tag:srv": ["a@x.io"]},
      "ssh": [
        {"action": "accept", "src": ["a@x.io"], "dst": ["tag:srv"], "users": ["ubuntu"]},
        {"action": "check", "src": ["a@x.io"], "dst": ["tag:srv"], "users": ["root"]},
      ],
    }"#;
    let users = vec![user(1, "a", "a@x.io")];
    let nodes = vec![node(1, Some(1), &[]), node(2, None, &["tag:srv"])];
    let p = Policy::parse(text, "s.hujson").expect("policy");
    let tailnet = Tailnet {
        control_url: "https://hs.example".into(),
        ..Default::default()
    };
    let c = CompiledPolicy::compile(&p, &users, &nodes, &tailnet).expect("compiles");
    let pol = c.ssh_policy(NodeId(2)).expect("ssh");
    assert_eq!(pol.rules.len(), 2);
    assert!(pol.rules[0]
        .action
        .hold_and_delegate
        .starts_with("https://hs.example/machine/ssh/action/"));
    assert_eq!(
        pol.rules[1].ssh_users.get("root").map(String::as_str),
        Some("")
    );
    assert_eq!(
        pol.rules[1].ssh_users.get("ubuntu").map(String::as_str),
        Some("ubuntu")
    );
    assert_eq!(c.ssh_policy(NodeId(1)).map(|p| p.rules.len()), Some(0));
}

#[test]
fn ssh_check_period_is_kept_per_rule_and_found_by_source_destination_and_user() {
    use std::time::Duration;
    let text = r#"{
      "tagOwners": {"tag:srv": ["a@x.io"], "tag:ci": ["a@x.io"]},
      "ssh": [
        {"action": "accept", "src": ["a@x.io"], "dst": ["tag:srv"], "users": ["ubuntu"]},
        {"action": "check", "src": ["a@x.io"], "dst": ["tag:srv"], "users": ["root"], "checkPeriod": "1h30m"},
        {"action": "check", "src": ["a@x.io", "b@x.io"], "dst": ["tag:srv"], "users": ["deploy"]},
        {"action": "check", "src": ["b@x.io"], "dst": ["tag:srv"], "users": ["deploy"], "checkPeriod": "always"},
        {"action": "check", "src": ["autogroup:member"], "dst": ["autogroup:self"], "users": ["autogroup:nonroot"], "checkPeriod": "2h"},
      ],
    }"#;
    let users = vec![user(1, "a", "a@x.io"), user(2, "b", "b@x.io")];
    let nodes = vec![
        node(1, Some(1), &[]),
        node(2, None, &["tag:srv"]),
        node(3, Some(2), &[]),
        node(4, Some(1), &[]),
        node(5, None, &["tag:ci"]),
    ];
    let p = Policy::parse(text, "s.hujson").expect("policy");
    let c = CompiledPolicy::compile(&p, &users, &nodes, &Tailnet::default()).expect("compiles");
    let period = |s: u64, d: u64, u: &str| c.ssh_check_period(NodeId(s), NodeId(d), u);
    // Explicit period; the accept rule's user has no check.
    assert_eq!(period(1, 2, "root"), Some(Duration::from_secs(5400)));
    assert_eq!(period(1, 2, "ubuntu"), None);
    // No checkPeriod: Tailscale's 12h.
    assert_eq!(period(1, 2, "deploy"), Some(Duration::from_secs(12 * 3600)));
    // `always` is zero, and the shortest of several matching rules wins.
    assert_eq!(period(3, 2, "deploy"), Some(Duration::ZERO));
    assert_eq!(period(3, 2, "root"), None, "b has no root rule");
    // autogroup:self: own devices only; nonroot maps any user but root.
    assert_eq!(period(1, 4, "alice"), Some(Duration::from_secs(7200)));
    assert_eq!(period(1, 4, "root"), None);
    assert_eq!(period(3, 4, "alice"), None, "another user's device");
    // A tagged source matches no rule here; unknown nodes, none.
    assert_eq!(period(5, 2, "deploy"), None);
    assert_eq!(period(9, 2, "deploy"), None);
    assert_eq!(period(1, 9, "root"), None);
}

#[test]
fn ipsets_ranges_and_protocols() {
    let text = r#"{
      "ipsets": {"ipset:lan": ["10.0.0.0/8", "remove 10.99.0.0/16", "100.64.0.2"]},
      "acls": [
        {"action": "accept", "src": ["100.64.0.1-100.64.0.3"], "dst": ["ipset:lan:80,443"]},
        {"action": "accept", "proto": "sctp", "src": ["a@x.io"], "dst": ["100.64.0.2:1000-2000"]},
      ],
    }"#;
    let users = vec![user(1, "a", "a@x.io")];
    let nodes = vec![node(1, Some(1), &[]), node(2, Some(1), &[])];
    let p = Policy::parse(text, "i.hujson").expect("policy");
    let c = CompiledPolicy::compile(&p, &users, &nodes, &Tailnet::default()).expect("compiles");
    let v = serde_json::to_value(c.filter_rules(NodeId(2))).expect("json");
    let rules = v.as_array().expect("rules");
    assert_eq!(rules.len(), 2, "{v}");
    assert_eq!(
        rules[0]["SrcIPs"],
        serde_json::json!(["100.64.0.1-100.64.0.3"])
    );
    let ips: Vec<&str> = rules[0]["DstPorts"]
        .as_array()
        .expect("dst")
        .iter()
        .filter_map(|d| d["IP"].as_str())
        .collect();
    assert_eq!(
        ips,
        vec!["100.64.0.2", "100.64.0.2"],
        "only the node's own ipset member: {v}"
    );
    assert_eq!(rules[1]["IPProto"], serde_json::json!([132]));
    assert_eq!(
        rules[1]["DstPorts"][0]["Ports"],
        serde_json::json!({"First": 1000, "Last": 2000})
    );
    // Node 1 is only a source: no rules, but it sees node 2.
    assert!(c.filter_rules(NodeId(1)).is_empty());
    assert!(c.can_see(NodeId(1), NodeId(2)));
}

#[test]
fn compiled_policy_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<CompiledPolicy>();
    assert_send_sync::<Policy>();
}
