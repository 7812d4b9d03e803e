//! Conformance runner for the shared Tailscale policy corpus
//! (`shared/conformance/policy`, see its README for the format).
//!
//! For each case: build the tailnet from `users`/`nodes`, load `policy`,
//! compute every captured node's `expect` entry with this engine, and
//! compare it with the capture the way the corpus README prescribes (rules
//! and address lists as sets, SSH rules in order, tailnet-state
//! capabilities that no policy produces modelled or stripped).
//!
//! [`run_dir`] returns a [`Report`] that prints one line per failing case,
//! the final `N passed, M failed` line, or JSON Lines (`-o json`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{TimeZone, Utc};
use ipnet::IpNet;
use ironscale_types::{Node, NodeId, RegisterMethod, User, UserId};
use serde_json::{json, Map, Value};

use crate::{CompiledPolicy, Policy, Tailnet};

/// Registration order of the capture tailnet's nodes. The captures whose
/// addresses were handed out sequentially (100.64.0.1, .2, ...) show it; it
/// decides which router is primary for a subnet two routers announce
/// ("the first advertiser is primary"). Unknown names come after, by name.
const REGISTRATION_ORDER: &[&str] = &[
    "caterpie",
    "pidgey",
    "pidgeotto",
    "charmander",
    "rattata",
    "raticate",
    "metapod",
    "butterfree",
    "blastoise",
    "wartortle",
    "spearow",
    "fearow",
    "squirtle",
    "weedle",
    "kakuna",
    "beedrill",
    "ivysaur",
    "venusaur",
    "bulbasaur",
];

/// Capabilities of the captured tailnet's state that every node gets.
const TAILNET_CAPS: &[&str] = &[
    "https://tailscale.com/cap/file-sharing",
    "https://tailscale.com/cap/ssh",
    "https://tailscale.com/cap/tailnet-lock",
    "probe-udp-lifetime",
    "ssh-behavior-v1",
    "ssh-env-vars",
    "store-appc-routes",
];

/// The result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub id: String,
    pub category: String,
    pub path: PathBuf,
    /// Whether our engine accepted the policy.
    pub accepted: bool,
    /// Our rejection message, when we rejected it.
    pub error: Option<String>,
    /// What differs from the capture; empty when the case passes.
    pub diffs: Vec<String>,
    /// The corpus-shaped `expect` object our engine computed.
    pub expect: Value,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.diffs.is_empty()
    }

    /// `{"id": ..., "accepted": ..., "expect": {...}}`
    pub fn json_line(&self) -> String {
        json!({"id": self.id, "accepted": self.accepted, "expect": self.expect}).to_string()
    }
}

/// Results of a whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<CaseResult>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.results.iter().filter(|r| r.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.results.len() - self.passed()
    }

    /// Exit status for the CLI: 0 only when nothing failed.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed() > 0 || self.results.is_empty())
    }

    /// One line per failing case: `category/id: what differed`.
    pub fn failure_lines(&self) -> Vec<String> {
        self.results
            .iter()
            .filter(|r| !r.passed())
            .map(|r| {
                const SHOWN: usize = 4;
                let mut line = format!("{}/{}: ", r.category, r.id);
                for (k, d) in r.diffs.iter().take(SHOWN).enumerate() {
                    if k > 0 {
                        line.push_str("; ");
                    }
                    // Keep each difference readable on one line.
                    if d.chars().count() > 300 {
                        line.extend(d.chars().take(300));
                        line.push('…');
                    } else {
                        line.push_str(d);
                    }
                }
                if r.diffs.len() > SHOWN {
                    line.push_str(&format!("; (+{} more)", r.diffs.len() - SHOWN));
                }
                line
            })
            .collect()
    }

    /// `N passed, M failed`
    pub fn summary_line(&self) -> String {
        format!("{} passed, {} failed", self.passed(), self.failed())
    }

    /// Failure lines then the summary line, as the CLI prints them.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in self.failure_lines() {
            s.push_str(&l);
            s.push('\n');
        }
        s.push_str(&self.summary_line());
        s.push('\n');
        s
    }

    /// JSON Lines: one object per case.
    pub fn json_lines(&self) -> String {
        let mut s = String::new();
        for r in &self.results {
            s.push_str(&r.json_line());
            s.push('\n');
        }
        s
    }

    /// (passed, total) per category.
    pub fn by_category(&self) -> BTreeMap<String, (usize, usize)> {
        let mut m: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &self.results {
            let e = m.entry(r.category.clone()).or_default();
            e.1 += 1;
            if r.passed() {
                e.0 += 1;
            }
        }
        m
    }
}

/// Computes a node's netmap DNS config in the corpus' shape (Tailscale's
/// `DNSConfig` JSON) from the case (its `dns` tailnet settings) and the
/// node with its own capability map (corpus JSON). The policy engine has no
/// DNS of its own: the map builder supplies this (`ironscale-mapper`).
pub type DnsConfigFn = fn(case: &Value, node: &Node, self_cap_map: &Value) -> Value;

/// The DNS config every node of the corpus got while the tailnet's DNS
/// settings were untouched; the corpus stores `dns_config` only where it
/// differs from this.
pub fn baseline_dns_config() -> Value {
    json!({"ExitNodeFilteredSet": [".ts.net", ".tailscale.net"]})
}

/// Run every `*.json` case under `dir` (recursively), in path order.
pub fn run_dir(dir: &Path) -> Report {
    run_dir_with(dir, None)
}

/// [`run_dir`], also comparing each node's `dns_config` when `dns` is given.
pub fn run_dir_with(dir: &Path, dns: Option<DnsConfigFn>) -> Report {
    let mut files = Vec::new();
    collect(dir, &mut files);
    files.sort();
    let mut report = Report::default();
    for f in files {
        report.results.push(run_file_with(&f, dns));
    }
    report
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

/// Run one case file.
pub fn run_file(path: &Path) -> CaseResult {
    run_file_with(path, None)
}

/// [`run_file`], also comparing `dns_config` when `dns` is given.
pub fn run_file_with(path: &Path, dns: Option<DnsConfigFn>) -> CaseResult {
    let fallback_id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bad = |msg: String| CaseResult {
        id: fallback_id.clone(),
        category: path
            .parent()
            .and_then(|p| p.file_name())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        accepted: false,
        error: None,
        diffs: vec![msg],
        expect: json!({}),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return bad(format!("cannot read case: {e}")),
    };
    let v: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => return bad(format!("case is not JSON: {e}")),
    };
    let mut r = run_case_with(&v, dns);
    r.path = path.to_path_buf();
    r
}

struct Tn {
    users: Vec<User>,
    nodes: Vec<Node>,
    names: BTreeMap<NodeId, String>,
    ids: BTreeMap<String, NodeId>,
    tailnet: Tailnet,
}

fn epoch() -> chrono::DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn nets(v: &Value) -> Vec<IpNet> {
    strs(v).iter().filter_map(|s| s.parse().ok()).collect()
}

/// Nodes whose notes say they did not really advertise their routes.
fn not_advertising(case: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for n in strs(&case["notes"]) {
        if let Some(rest) = n.strip_prefix("node ") {
            if n.contains("but the node itself advertised []") {
                if let Some((name, _)) = rest.split_once(':') {
                    out.insert(name.to_string());
                }
            }
        }
    }
    out
}

fn build_tailnet(case: &Value) -> Tn {
    let mut users = Vec::new();
    for (i, u) in case["users"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        users.push(User {
            id: UserId(i as u64 + 1),
            name: u["name"].as_str().unwrap_or_default().to_string(),
            display_name: String::new(),
            email: u["email"].as_str().unwrap_or_default().to_string(),
            provider: String::new(),
            provider_id: String::new(),
            profile_pic_url: String::new(),
            idp_groups: Vec::new(),
            created_at: epoch(),
        });
    }
    let owner = users.first().map(|u| u.id);
    let domains: Vec<String> = users
        .first()
        .and_then(|u| u.email.rsplit_once('@').map(|(_, d)| d.to_string()))
        .into_iter()
        .collect();
    let tailnet = Tailnet {
        domains,
        owner,
        admins: users.iter().map(|u| u.id).collect(),
        control_url: "https://unused".to_string(),
        suggest_exit_nodes: true,
    };
    let silent = not_advertising(case);
    let mut names: Vec<String> = case["nodes"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    names.sort_by_key(|n| {
        let pos = REGISTRATION_ORDER
            .iter()
            .position(|x| x == n)
            .unwrap_or(REGISTRATION_ORDER.len());
        (pos, n.clone())
    });
    let mut nodes = Vec::new();
    let mut id_names = BTreeMap::new();
    let mut ids = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let n = &case["nodes"][name];
        let id = NodeId(i as u64 + 1);
        let user_id = n["user"]
            .as_str()
            .and_then(|un| users.iter().find(|u| u.name == un))
            .map(|u| u.id);
        let announced = if silent.contains(name) {
            Vec::new()
        } else {
            nets(&n["routable_ips"])
        };
        nodes.push(Node {
            id,
            machine_key: Default::default(),
            node_key: Default::default(),
            disco_key: Default::default(),
            ipv4: n["ipv4"].as_str().and_then(|s| s.parse().ok()),
            ipv6: n["ipv6"].as_str().and_then(|s| s.parse().ok()),
            hostname: n["hostname"].as_str().unwrap_or(name).to_string(),
            given_name: name.clone(),
            user_id,
            tags: strs(&n["tags"]),
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: announced,
            approved_routes: nets(&n["approved_routes"]),
            endpoints: Vec::new(),
            expiry: None,
            created_at: epoch(),
            last_seen: None,
            register_method: RegisterMethod::Unspecified,
            auth_key_id: None,
            ephemeral: false,
            capver: 0,
            approved: true,
        });
        id_names.insert(id, name.clone());
        ids.insert(name.clone(), id);
    }
    Tn {
        users,
        nodes,
        names: id_names,
        ids,
        tailnet,
    }
}

fn cap_json(m: &crate::output::CapMap) -> Value {
    let mut o = Map::new();
    for (k, v) in m {
        o.insert(
            k.clone(),
            match v {
                None => Value::Null,
                Some(list) => Value::Array(list.clone()),
            },
        );
    }
    Value::Object(o)
}

fn prefix_strs(v: &[IpNet]) -> Vec<Value> {
    v.iter().map(|p| Value::String(p.to_string())).collect()
}

/// The tailnet-state capabilities the capture tailnet adds to a node.
fn tailnet_caps(tn: &Tn, node: &Node, case: &Value, out: &mut Map<String, Value>) {
    for k in TAILNET_CAPS {
        out.entry(k.to_string()).or_insert(Value::Null);
    }
    // The capture tailnet is named after its owner's login; the corpus
    // anonymises it to `<owner>@example.com` even where the owner's e-mail
    // is blank.
    let owner_email = tn.users.first().map(|u| {
        if u.email.is_empty() {
            format!("{}@example.com", u.name)
        } else {
            u.email.clone()
        }
    });
    out.insert(
        "tailnet-display-name".into(),
        json!([owner_email.unwrap_or_default()]),
    );
    let tagged = !node.tags.is_empty();
    if tagged || (node.user_id.is_some() && node.user_id == tn.tailnet.owner) {
        out.entry("https://tailscale.com/cap/is-owner".to_string())
            .or_insert(Value::Null);
    }
    if !tagged && node.user_id.is_some_and(|u| tn.tailnet.admins.contains(&u)) {
        out.entry("https://tailscale.com/cap/is-admin".to_string())
            .or_insert(Value::Null);
    }
    if let Some(b) = case["tailnet_settings"]["devices_auto_updates_on"].as_bool() {
        out.insert("default-auto-update".into(), json!([b]));
    }
}

/// Compute the corpus-shaped `expect` for the nodes `names`.
fn compute_expect(
    c: &CompiledPolicy,
    tn: &Tn,
    case: &Value,
    names: &[String],
    with_whois: bool,
    dns: Option<DnsConfigFn>,
) -> Value {
    let mut out = Map::new();
    for name in names {
        let Some(&id) = tn.ids.get(name) else {
            continue;
        };
        let Some(node) = tn.nodes.iter().find(|n| n.id == id) else {
            continue;
        };
        let mut e = Map::new();
        let rules: Vec<Value> = c
            .filter_rules(id)
            .iter()
            .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
            .collect();
        e.insert("packet_filter_rules".into(), Value::Array(rules));
        let addresses = |n: &Node| -> Vec<Value> {
            c.peer_addresses(id, n.id)
                .iter()
                .map(|p| Value::String(p.to_string()))
                .collect()
        };
        let mut peers = Map::new();
        let peer_ids = c.peers(id);
        for p in &peer_ids {
            let Some(pn) = tn.nodes.iter().find(|n| n.id == *p) else {
                continue;
            };
            let mut pe = Map::new();
            pe.insert("addresses".into(), Value::Array(addresses(pn)));
            pe.insert(
                "allowed_ips".into(),
                Value::Array(prefix_strs(&c.allowed_ips(id, *p))),
            );
            let prim = c.primary_routes(id, *p);
            if !prim.is_empty() {
                pe.insert("primary_routes".into(), Value::Array(prefix_strs(&prim)));
            }
            if !pn.tags.is_empty() {
                pe.insert("tags".into(), json!(pn.tags));
            }
            let pcm = c.peer_cap_map(id, *p);
            if !pcm.is_empty() {
                pe.insert("cap_map".into(), cap_json(&pcm));
            }
            peers.insert(tn.names[p].clone(), Value::Object(pe));
        }
        e.insert("peers".into(), Value::Object(peers));
        let mut s = Map::new();
        s.insert("addresses".into(), Value::Array(addresses(node)));
        s.insert(
            "allowed_ips".into(),
            Value::Array(prefix_strs(&c.self_allowed_ips(id))),
        );
        let prim = c.primary_routes(id, id);
        if !prim.is_empty() {
            s.insert("primary_routes".into(), Value::Array(prefix_strs(&prim)));
        }
        if !node.tags.is_empty() {
            s.insert("tags".into(), json!(node.tags));
        }
        let mut cm = match cap_json(&c.node_cap_map(id)) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        tailnet_caps(tn, node, case, &mut cm);
        let cm = Value::Object(cm);
        if let Some(f) = dns {
            let d = f(case, node, &cm);
            if canon(&d) != canon(&baseline_dns_config()) {
                e.insert("dns_config".into(), d);
            }
        }
        s.insert("cap_map".into(), cm);
        e.insert("self".into(), Value::Object(s));
        let ssh = c.ssh_policy(id).unwrap_or_default();
        e.insert(
            "ssh_policy".into(),
            serde_json::to_value(&ssh).unwrap_or(json!({"rules": []})),
        );
        if with_whois && !peer_ids.is_empty() {
            let mut w = Map::new();
            for p in &peer_ids {
                for a in c.peer_addresses(id, *p) {
                    let ip = a.addr();
                    let caps = c.whois_caps(id, ip).map(|m| cap_json(&m));
                    w.insert(ip.to_string(), caps.unwrap_or(Value::Null));
                }
            }
            e.insert("whois".into(), Value::Object(w));
        }
        out.insert(name.clone(), Value::Object(e));
    }
    Value::Object(out)
}

/// Run one parsed case.
pub fn run_case(case: &Value) -> CaseResult {
    run_case_with(case, None)
}

/// [`run_case`], also computing and comparing each node's `dns_config`
/// when `dns` is given.
pub fn run_case_with(case: &Value, dns: Option<DnsConfigFn>) -> CaseResult {
    let id = case["id"].as_str().unwrap_or_default().to_string();
    let category = case["category"].as_str().unwrap_or_default().to_string();
    let policy_text = case["policy"].as_str().unwrap_or_default();
    let want_accepted = case["accepted"].as_bool().unwrap_or(false);
    let tn = build_tailnet(case);
    let compiled = Policy::parse(policy_text, &format!("{id}.hujson"))
        .and_then(|p| CompiledPolicy::compile(&p, &tn.users, &tn.nodes, &tn.tailnet));
    let (accepted, error, compiled) = match compiled {
        Ok(c) => (true, None, c),
        Err(e) => {
            // A rejected policy leaves the previous one (the default) in force.
            let fallback =
                CompiledPolicy::compile(&Policy::allow_all(), &tn.users, &tn.nodes, &tn.tailnet);
            match fallback {
                Ok(c) => (false, Some(e.to_string()), c),
                Err(e2) => {
                    return CaseResult {
                        id,
                        category,
                        path: PathBuf::new(),
                        accepted: false,
                        error: Some(e.to_string()),
                        diffs: vec![format!("default policy failed: {e2}")],
                        expect: json!({}),
                    }
                }
            }
        }
    };
    let mut names: Vec<String> = case["expect"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    if names.is_empty() {
        names = tn.ids.keys().cloned().collect();
    }
    let with_whois = case["expect"]
        .as_object()
        .is_some_and(|m| m.values().any(|v| v.get("whois").is_some()));
    let expect = compute_expect(&compiled, &tn, case, &names, with_whois, dns);
    let mut diffs = Vec::new();
    if accepted != want_accepted {
        if want_accepted {
            diffs.push(format!(
                "rejected, but Tailscale accepts it: {}",
                error.clone().unwrap_or_default()
            ));
        } else {
            let msg = case["api_response_body"]["message"].as_str().unwrap_or("");
            diffs.push(format!("accepted, but Tailscale rejects it ({msg})"));
        }
    } else if accepted {
        compare(case, &expect, &mut diffs);
        if dns.is_some() {
            compare_dns(case, &expect, &mut diffs);
        }
    }
    CaseResult {
        id,
        category,
        path: PathBuf::new(),
        accepted,
        error,
        diffs,
        expect,
    }
}

/// Parse `text` as a policy, compile it against a small built-in tailnet
/// (users, user-owned and tagged nodes, a subnet router, an exit node) and
/// run every per-node query. Returns the number of filter rules produced.
/// Used by the fuzz targets and smoke tests: it must never panic.
pub fn exercise(text: &str) -> Result<usize, crate::PolicyError> {
    let case = json!({
        "users": [
            {"id": 1, "name": "odin", "email": "odin@example.com"},
            {"id": 2, "name": "thor", "email": "thor@example.org"},
            {"id": 3, "name": "admin", "email": ""}
        ],
        "nodes": {
            "bulbasaur": {"ipv4": "100.64.0.1", "ipv6": "fd7a:115c:a1e0::1", "user": "odin", "tags": []},
            "ivysaur": {"ipv4": "100.64.0.2", "ipv6": "fd7a:115c:a1e0::2", "user": "thor", "tags": []},
            "venusaur": {"ipv4": "100.64.0.3", "ipv6": "fd7a:115c:a1e0::3", "user": "admin", "tags": []},
            "beedrill": {"ipv4": "100.64.0.4", "ipv6": "fd7a:115c:a1e0::4", "tags": ["tag:server"]},
            "squirtle": {"ipv4": "100.64.0.5", "ipv6": "fd7a:115c:a1e0::5", "tags": ["tag:router"],
                         "routable_ips": ["10.33.0.0/16"], "approved_routes": ["10.33.0.0/16"]},
            "charmander": {"ipv4": "100.64.0.6", "ipv6": "fd7a:115c:a1e0::6", "tags": ["tag:exit"],
                           "routable_ips": ["0.0.0.0/0", "::/0"], "approved_routes": ["0.0.0.0/0", "::/0"]}
        }
    });
    let tn = build_tailnet(&case);
    let policy = Policy::parse(text, "fuzz.hujson")?;
    let c = CompiledPolicy::compile(&policy, &tn.users, &tn.nodes, &tn.tailnet)?;
    let mut rules = 0;
    for n in &tn.nodes {
        rules += c.filter_rules(n.id).len();
        for p in c.peers(n.id) {
            let _ = c.allowed_ips(n.id, p);
            let _ = c.primary_routes(n.id, p);
            let _ = c.peer_cap_map(n.id, p);
            assert!(c.can_see(n.id, p), "peers() and can_see() disagree");
        }
        let _ = c.ssh_policy(n.id);
        let _ = c.node_cap_map(n.id);
        let _ = c.whois_caps(
            n.id,
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(100, 64, 0, 1)),
        );
    }
    Ok(rules)
}

// ---- comparison -------------------------------------------------------

fn sorted_strs(v: &Value) -> Vec<String> {
    let mut s: Vec<String> = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| x.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    s.sort();
    s.dedup();
    s
}

/// A filter rule reduced to what the README says to compare.
fn norm_rule(r: &Value) -> String {
    let src = sorted_strs(&r["SrcIPs"]);
    let mut dst: Vec<String> = r["DstPorts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|d| {
                    format!(
                        "{}:{}-{}",
                        d["IP"].as_str().unwrap_or(""),
                        d["Ports"]["First"],
                        d["Ports"]["Last"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    dst.sort();
    dst.dedup();
    let proto = sorted_strs(&r["IPProto"]);
    let mut caps: Vec<String> = r["CapGrant"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|g| format!("{:?}=>{}", sorted_strs(&g["Dsts"]), canon(&g["CapMap"])))
                .collect()
        })
        .unwrap_or_default();
    caps.sort();
    format!("src={src:?} dst={dst:?} proto={proto:?} cap={caps:?}")
}

/// JSON with object keys sorted (serde_json's map is ordered).
fn canon(v: &Value) -> String {
    v.to_string()
}

fn rule_set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .map(|a| a.iter().map(norm_rule).collect())
        .unwrap_or_default()
}

fn set_diff(what: &str, want: &BTreeSet<String>, got: &BTreeSet<String>, out: &mut Vec<String>) {
    if want == got {
        return;
    }
    let missing: Vec<&String> = want.difference(got).collect();
    let extra: Vec<&String> = got.difference(want).collect();
    let mut s = format!("{what}:");
    if !missing.is_empty() {
        let _ = write!(s, " missing {missing:?}");
    }
    if !extra.is_empty() {
        let _ = write!(s, " extra {extra:?}");
    }
    out.push(s);
}

fn str_set(v: &Value) -> BTreeSet<String> {
    sorted_strs(v).into_iter().collect()
}

/// Tailnet-state capabilities we cannot know from the case (auto-update
/// defaults that appear in later captures without a recorded setting).
fn strip_caps(m: &Value, case: &Value) -> Value {
    let mut m = m.as_object().cloned().unwrap_or_default();
    if case["tailnet_settings"]["devices_auto_updates_on"].is_null() {
        m.remove("default-auto-update");
    }
    Value::Object(m)
}

fn norm_ssh(v: &Value) -> Vec<String> {
    v["rules"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let mut p: Vec<String> = r["principals"]
                        .as_array()
                        .map(|x| x.iter().map(|p| p.to_string()).collect())
                        .unwrap_or_default();
                    p.sort();
                    p.dedup();
                    format!(
                        "principals={p:?} users={} action={} env={}",
                        canon(&r["sshUsers"]),
                        canon(&r["action"]),
                        canon(&r.get("acceptEnv").cloned().unwrap_or(json!([])))
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Each node's `dns_config` (absent: the baseline) as JSON.
fn compare_dns(case: &Value, got: &Value, diffs: &mut Vec<String>) {
    let Some(want) = case["expect"].as_object() else {
        return;
    };
    for (name, w) in want {
        let base = baseline_dns_config();
        let wd = w.get("dns_config").unwrap_or(&base);
        let gd = got[name].get("dns_config").unwrap_or(&base);
        if canon(wd) != canon(gd) {
            diffs.push(format!("{name}: dns_config: want {wd} got {gd}"));
        }
    }
}

fn compare(case: &Value, got: &Value, diffs: &mut Vec<String>) {
    let Some(want) = case["expect"].as_object() else {
        return;
    };
    for (name, w) in want {
        let g = &got[name];
        let mut d = Vec::new();
        set_diff(
            "rules",
            &rule_set(&w["packet_filter_rules"]),
            &rule_set(&g["packet_filter_rules"]),
            &mut d,
        );
        let wp: BTreeSet<String> = w["peers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        let gp: BTreeSet<String> = g["peers"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        set_diff("peers", &wp, &gp, &mut d);
        for p in wp.intersection(&gp) {
            let (wv, gv) = (&w["peers"][p], &g["peers"][p]);
            for k in ["addresses", "allowed_ips", "primary_routes", "tags"] {
                set_diff(
                    &format!("peer {p} {k}"),
                    &str_set(&wv[k]),
                    &str_set(&gv[k]),
                    &mut d,
                );
            }
            if canon(&wv.get("cap_map").cloned().unwrap_or(json!({})))
                != canon(&gv.get("cap_map").cloned().unwrap_or(json!({})))
            {
                d.push(format!(
                    "peer {p} cap_map: want {} got {}",
                    wv["cap_map"], gv["cap_map"]
                ));
            }
        }
        for k in ["addresses", "allowed_ips", "primary_routes", "tags"] {
            set_diff(
                &format!("self {k}"),
                &str_set(&w["self"][k]),
                &str_set(&g["self"][k]),
                &mut d,
            );
        }
        let (wc, gc) = (
            strip_caps(&w["self"]["cap_map"], case),
            strip_caps(&g["self"]["cap_map"], case),
        );
        if canon(&wc) != canon(&gc) {
            d.push(format!("self cap_map: want {wc} got {gc}"));
        }
        let (ws, gs) = (norm_ssh(&w["ssh_policy"]), norm_ssh(&g["ssh_policy"]));
        if ws != gs {
            d.push(format!("ssh_policy: want {ws:?} got {gs:?}"));
        }
        if let Some(ww) = w.get("whois") {
            let gw = g.get("whois").cloned().unwrap_or(Value::Null);
            if canon(ww) != canon(&gw) {
                let wm = ww.as_object().cloned().unwrap_or_default();
                let gm = gw.as_object().cloned().unwrap_or_default();
                let bad: Vec<String> = wm
                    .iter()
                    .filter(|(k, v)| gm.get(*k) != Some(v))
                    .map(|(k, v)| {
                        format!(
                            "{k}: want {v} got {}",
                            gm.get(k).cloned().unwrap_or(Value::Null)
                        )
                    })
                    .take(3)
                    .collect();
                d.push(format!("whois: {}", bad.join(", ")));
            }
        }
        for x in d {
            diffs.push(format!("{name}: {x}"));
        }
    }
}
