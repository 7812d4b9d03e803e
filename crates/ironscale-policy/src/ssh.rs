//! The `ssh` section: per-node `SSHPolicy` rules.
//!
//! For a destination node, each policy rule that names it yields a rule
//! whose principals are the source devices' addresses. `users` becomes the
//! `sshUsers` map (`root` is refused with `""` unless listed,
//! `autogroup:nonroot` becomes `"*": "="`); `localpart:*@domain` adds, per
//! source user of that domain, a rule mapping the user to the local part of
//! their login (and then also lets each such user's own devices accept
//! their own SSH). `check` rules come before `accept` rules.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::ast::{Alias, AutoGroup, CheckPeriod, SshAction};
use crate::compile::CompiledPolicy;
use crate::output::{SshAction as OutAction, SshPolicy, SshPrincipal, SshRule as OutRule};
use crate::resolve::{Ctx, Resolved};

#[derive(Debug, Clone)]
pub(crate) struct CSshRule {
    pub action: OutAction,
    pub check: bool,
    /// `checkPeriod` of a check rule: how long a passed check lets the same
    /// user in from the same device again without one (12h when unset;
    /// `always` is zero: every connection checks). Zero for accept rules.
    pub check_period: Duration,
    pub src: Resolved,
    /// Source devices, sorted.
    pub src_nodes: Vec<u32>,
    /// Destinations other than `autogroup:self`, and their nodes.
    pub dst: Resolved,
    pub dst_nodes: Vec<u32>,
    pub dst_self: bool,
    pub users: BTreeMap<String, String>,
    /// Source user index to local part, for `localpart:*@domain`.
    pub localparts: Option<BTreeMap<u32, String>>,
    pub accept_env: Vec<String>,
    /// Sources include `autogroup:tagged`.
    pub per_tag: bool,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct CompiledSsh {
    pub present: bool,
    pub rules: Vec<std::sync::Arc<CSshRule>>,
}

/// Tailscale's default `checkPeriod`.
pub const DEFAULT_CHECK_PERIOD: Duration = Duration::from_secs(12 * 3600);

fn check_period(p: Option<CheckPeriod>) -> Duration {
    match p {
        None => DEFAULT_CHECK_PERIOD,
        Some(CheckPeriod::Always) => Duration::ZERO,
        // Validation refuses negative periods.
        Some(CheckPeriod::Duration(ns)) => Duration::from_nanos(u64::try_from(ns).unwrap_or(0)),
    }
}

pub(crate) fn check_url(base: &str) -> String {
    format!("{base}/machine/ssh/action/$SRC_NODE_ID/to/$DST_NODE_ID?local_user=$LOCAL_USER")
}

pub(crate) fn compile(ctx: &Ctx<'_>) -> CompiledSsh {
    let pol = ctx.pol;
    let all: Vec<u32> = (0..ctx.topo.nodes.len() as u32)
        .filter(|&i| ctx.topo.nodes[i as usize].alive)
        .collect();
    let mut out = CompiledSsh {
        present: !pol.ssh.is_empty(),
        rules: Vec::new(),
    };
    for r in &pol.ssh {
        // SSH principals are devices: address aliases match devices.
        let src = ctx.resolve_list(r.src.iter().map(|a| &a.value));
        let src_nodes = if src.all_nodes {
            all.clone()
        } else {
            src.nodes()
        };
        let dst_self = r
            .dst
            .iter()
            .any(|d| d.value == Alias::AutoGroup(AutoGroup::SelfDevices));
        let dst = ctx.resolve_list(
            r.dst
                .iter()
                .map(|a| &a.value)
                .filter(|a| **a != Alias::AutoGroup(AutoGroup::SelfDevices)),
        );
        let dst_nodes = if dst.all_nodes {
            all.clone()
        } else {
            dst.nodes()
        };

        let names: Vec<&str> = r.users.iter().map(|u| u.value.as_str()).collect();
        let mut users = BTreeMap::new();
        let mut localparts: Option<BTreeMap<u32, String>> = None;
        let mut has_root = false;
        for u in &names {
            match *u {
                "root" => has_root = true,
                "autogroup:nonroot" => {
                    users.insert("*".to_string(), "=".to_string());
                }
                u if is_localpart(u).is_some() => {
                    let domain = is_localpart(u).unwrap_or_default();
                    let m = localparts.get_or_insert_with(BTreeMap::new);
                    for (i, user) in ctx.topo.users.iter().enumerate() {
                        if let Some((lp, d)) = user.email.rsplit_once('@') {
                            if d == domain {
                                m.insert(i as u32, lp.to_string());
                            }
                        }
                    }
                }
                u => {
                    users.insert(u.to_string(), u.to_string());
                }
            }
        }
        users.insert(
            "root".to_string(),
            if has_root {
                "root".to_string()
            } else {
                String::new()
            },
        );
        let check = r.action == SshAction::Check;
        let action = if check {
            OutAction {
                hold_and_delegate: check_url(&ctx.tailnet.control_url),
                ..Default::default()
            }
        } else {
            OutAction {
                accept: true,
                allow_agent_forwarding: true,
                allow_local_port_forwarding: true,
                allow_remote_port_forwarding: true,
                ..Default::default()
            }
        };
        out.rules.push(std::sync::Arc::new(CSshRule {
            action,
            check,
            check_period: if check {
                check_period(r.check_period)
            } else {
                Duration::ZERO
            },
            src,
            src_nodes,
            dst,
            dst_nodes,
            dst_self,
            users,
            localparts,
            accept_env: r.accept_env.clone(),
            per_tag: r
                .src
                .iter()
                .any(|a| a.value == Alias::AutoGroup(AutoGroup::Tagged)),
        }));
    }
    out
}

/// `localpart:*@domain` gives `Some(domain)`; other shapes are literal
/// user names.
pub(crate) fn is_localpart(u: &str) -> Option<&str> {
    let rest = u.strip_prefix("localpart:")?;
    let (lp, d) = rest.rsplit_once('@')?;
    (lp == "*" && !d.is_empty()).then_some(d)
}

/// Principals for source devices. Tailscale expands `autogroup:tagged` tag
/// by tag, so with it a device with N tags is listed N times.
fn principals(c: &CompiledPolicy, nodes: &[u32], per_tag: bool) -> Vec<SshPrincipal> {
    let mut nodes = nodes.to_vec();
    nodes.sort_by_key(|&n| c.node(n).id);
    let mut v = Vec::new();
    for &n in &nodes {
        let node = c.node(n);
        let times = if per_tag { node.tags.len().max(1) } else { 1 };
        for _ in 0..times {
            for ip in &node.ips {
                v.push(SshPrincipal {
                    node_ip: ip.to_string(),
                });
            }
        }
    }
    v
}

pub(crate) fn policy_for(c: &CompiledPolicy, i: u32) -> Option<SshPolicy> {
    if !c.ssh.present {
        return None;
    }
    let node = c.node(i);
    let mut rules: Vec<(bool, OutRule)> = Vec::new();
    for r in &c.ssh.rules {
        // Source devices grouped by user (in user order), then tagged ones.
        let mut by_user: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        let mut tagged: Vec<u32> = Vec::new();
        for &s in &r.src_nodes {
            match c.node(s).user {
                Some(u) => by_user.entry(u).or_default().push(s),
                None => tagged.push(s),
            }
        }
        let push = |nodes: &[u32], user: Option<u32>, rules: &mut Vec<(bool, OutRule)>| {
            let p = principals(c, nodes, r.per_tag);
            if p.is_empty() {
                return;
            }
            rules.push((
                r.check,
                OutRule {
                    principals: p.clone(),
                    ssh_users: r.users.clone(),
                    action: r.action.clone(),
                    accept_env: r.accept_env.clone(),
                },
            ));
            if let (Some(u), Some(lps)) = (user, &r.localparts) {
                if let Some(lp) = lps.get(&u) {
                    let mut m = BTreeMap::new();
                    m.insert(lp.clone(), lp.clone());
                    rules.push((
                        r.check,
                        OutRule {
                            principals: p,
                            ssh_users: m,
                            action: r.action.clone(),
                            accept_env: r.accept_env.clone(),
                        },
                    ));
                }
            }
        };
        if r.dst_self {
            if let Some(u) = node.user {
                if let Some(nodes) = by_user.get(&u) {
                    push(nodes, Some(u), &mut rules);
                }
            }
        }
        if r.dst_nodes.binary_search(&i).is_ok() {
            if r.localparts.is_some() {
                for (u, nodes) in &by_user {
                    push(nodes, Some(*u), &mut rules);
                }
                push(&tagged, None, &mut rules);
            } else {
                let mut all: Vec<u32> = by_user.values().flatten().copied().collect();
                all.extend(&tagged);
                push(&all, None, &mut rules);
            }
        } else if r.localparts.is_some() && r.src_nodes.binary_search(&i).is_ok() && !r.dst_self {
            // With localpart mappings, a source device also accepts its own
            // user's SSH.
            match node.user {
                Some(u) => {
                    if let Some(nodes) = by_user.get(&u) {
                        push(nodes, Some(u), &mut rules);
                    }
                }
                None => push(&[i], None, &mut rules),
            }
        }
    }
    // check (holdAndDelegate) rules first; stable otherwise.
    rules.sort_by_key(|(check, _)| !*check);
    Some(SshPolicy {
        rules: rules.into_iter().map(|(_, r)| r).collect(),
    })
}

/// Whether a rule with these `sshUsers` (and, for `localpart:`, the source
/// user's local part) lets someone in as `local`, the way `tailscaled` maps
/// a requested user: its own entry, else `*` (`=`: the same name).
fn maps_to(users: &BTreeMap<String, String>, localpart: Option<&str>, local: &str) -> bool {
    if local.is_empty() {
        return false;
    }
    if localpart == Some(local) {
        return true;
    }
    if local == "root" {
        return users.get("root").is_some_and(|v| v == "root");
    }
    users
        .iter()
        .any(|(k, v)| v == local || (k == "*" && v == "="))
}

/// The `checkPeriod` of the check rules that let source device `s` into
/// destination `d` as `local` (the rules `policy_for(d)` gives `s` as a
/// principal); the shortest when several match. `None`: no check rule.
pub(crate) fn check_period_for(
    c: &CompiledPolicy,
    s: u32,
    d: u32,
    local: &str,
) -> Option<Duration> {
    let src = c.node(s);
    let dst = c.node(d);
    let mut best: Option<Duration> = None;
    for r in c.ssh.rules.iter().filter(|r| r.check) {
        if r.src_nodes.binary_search(&s).is_err() {
            continue;
        }
        let same_user = src.user.is_some() && src.user == dst.user;
        let reaches = (r.dst_self && same_user)
            || r.dst_nodes.binary_search(&d).is_ok()
            || (r.localparts.is_some()
                && !r.dst_self
                && r.src_nodes.binary_search(&d).is_ok()
                && (same_user || (dst.user.is_none() && s == d)));
        if !reaches {
            continue;
        }
        let lp = match (&r.localparts, src.user) {
            (Some(m), Some(u)) => m.get(&u).map(String::as_str),
            _ => None,
        };
        if maps_to(&r.users, lp, local) {
            best = Some(best.map_or(r.check_period, |b| b.min(r.check_period)));
        }
    }
    best
}
