//! `ironscale doctor`: what the server knows, read as answers to the
//! questions operators ask ("offline but connected", "always relayed",
//! "exit node not working", "route not working"), each finding with its cause
//! and the command that fixes it. Read-only, from the snapshot.

use ironscale_types::{Node, NodeId};

use crate::netinfo::NetInfo;
use crate::State;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but not as well as it could (relayed, far home relay).
    Warning,
    /// Does not work (offline, expired, unapproved).
    Problem,
}

/// One finding about one node (or the tailnet, `node: None`).
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub node: Option<NodeId>,
    pub node_name: String,
    pub severity: Severity,
    /// A stable short code (`offline`, `key-expired`, `route-not-approved`…).
    pub code: &'static str,
    /// What is wrong and why.
    pub cause: String,
    /// The command (or step) that fixes it.
    pub fix: String,
}

/// A home relay further than this is worth a closer one.
const FAR_HOME_SECS: f64 = 0.150;

impl State {
    /// Findings for every node, or only `only`.
    pub fn diagnose(&self, only: Option<NodeId>, server_url: &str) -> Vec<Finding> {
        let t = self.snapshot();
        let now = self.now();
        let mut out = Vec::new();
        // Each node's NetInfo, parsed once from its stored Hostinfo.
        let nets: std::collections::BTreeMap<NodeId, Option<NetInfo>> = t
            .nodes
            .values()
            .map(|n| (n.id, NetInfo::of_node(n)))
            .collect();
        for n in t.nodes.values() {
            if only.is_some_and(|id| id != n.id) {
                continue;
            }
            let online = t.online.contains(&n.id);
            node_findings(n, online, nets[&n.id].as_ref(), now, server_url, &mut out);
        }
        // Pairs that can only meet through a relay: both behind a hard NAT.
        let hard: Vec<(&Node, bool)> = t
            .nodes
            .values()
            .filter(|n| t.online.contains(&n.id))
            .filter(|n| {
                nets[&n.id]
                    .as_ref()
                    .is_some_and(|x| x.mapping_varies_by_dest_addr == Some(true))
            })
            .map(|n| (&**n, only.is_none_or(|id| id == n.id)))
            .collect();
        if hard.len() >= 2 {
            for (n, wanted) in &hard {
                if !wanted {
                    continue;
                }
                let others: Vec<&str> = hard
                    .iter()
                    .filter(|(o, _)| o.id != n.id)
                    .map(|(o, _)| o.given_name.as_str())
                    .collect();
                out.push(Finding {
                    node: Some(n.id),
                    node_name: n.given_name.clone(),
                    severity: Severity::Warning,
                    code: "relayed-hard-nat-pair",
                    cause: format!(
                        "behind a hard NAT (the mapped port changes per destination), as are {}: between them, traffic always goes through DERP",
                        others.join(", ")
                    ),
                    fix: "give one side an easy NAT: allow UDP 41641 in (a port forward) or enable UPnP/NAT-PMP on its router, or run a DERP relay close to both (derp.paths)".into(),
                });
            }
        }
        out.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.node.cmp(&b.node))
                .then(a.code.cmp(b.code))
        });
        out
    }
}

fn node_findings(
    n: &Node,
    online: bool,
    net: Option<&NetInfo>,
    now: ironscale_types::Timestamp,
    server_url: &str,
    out: &mut Vec<Finding>,
) {
    let id = n.id.0;
    let mut push = |severity, code, cause: String, fix: String| {
        out.push(Finding {
            node: Some(n.id),
            node_name: n.given_name.clone(),
            severity,
            code,
            cause,
            fix,
        })
    };
    let expired = n.expiry.is_some_and(|e| e <= now);
    if expired {
        let at = n
            .expiry
            .map(|e| e.format("%Y-%m-%d %H:%M UTC").to_string())
            .unwrap_or_default();
        push(
            Severity::Problem,
            "key-expired",
            format!("its node key expired at {at}: peers drop it and it gets no new map until it logs in again"),
            format!("on the node: tailscale up --login-server={server_url} (a new login, with a pre-auth key or the login URL); tagged nodes do not expire: ironscale nodes tag -i {id} -t tag:…"),
        );
    }
    if !n.approved {
        push(
            Severity::Problem,
            "not-approved",
            "registered but not approved (node.device_approval): it gets no peers and no peer sees it".into(),
            format!("ironscale nodes approve -i {id}"),
        );
    }
    if !online && !expired {
        let seen = match n.last_seen {
            Some(t) => {
                let ago = (now - t).num_seconds().max(0);
                format!("last seen {} ago", humanize(ago))
            }
            None => "never connected since it registered".into(),
        };
        push(
            Severity::Problem,
            "offline",
            format!("no map stream: {seen}"),
            format!("check tailscaled runs on it and reaches {server_url} (tailscale status; tailscale netcheck); its log names the failing request"),
        );
    }
    if n.capver > 0 && n.capver < ironscale_wire::MIN_CAPVER {
        push(
            Severity::Problem,
            "client-too-old",
            format!(
                "its client speaks capability version {} (this server needs {} = Tailscale 1.74)",
                n.capver,
                ironscale_wire::MIN_CAPVER
            ),
            "upgrade Tailscale on the node to 1.74 or newer".into(),
        );
    }
    let exit: Vec<String> = n
        .announced_routes
        .iter()
        .filter(|r| r.prefix_len() == 0 && !n.approved_routes.contains(r))
        .map(|r| r.to_string())
        .collect();
    if !exit.is_empty() {
        push(
            Severity::Problem,
            "exit-not-approved",
            "it advertises an exit node (--advertise-exit-node), but the exit routes are not approved: no client can use it".into(),
            format!("ironscale nodes approve-routes -i {id} -r {} (or an autoApprovers.exitNode rule in the policy)", approved_plus(n, &exit)),
        );
    }
    let subnets: Vec<String> = n
        .announced_routes
        .iter()
        .filter(|r| r.prefix_len() > 0 && !n.approved_routes.contains(r))
        .map(|r| r.to_string())
        .collect();
    if !subnets.is_empty() {
        push(
            Severity::Problem,
            "route-not-approved",
            format!("it advertises {} but the route is not approved: clients get no route to it", subnets.join(", ")),
            format!("ironscale nodes approve-routes -i {id} -r {} (or an autoApprovers.routes rule in the policy)", approved_plus(n, &subnets)),
        );
    }
    let Some(net) = net.filter(|_| online) else {
        return;
    };
    if net.working_udp == Some(false) {
        push(
            Severity::Warning,
            "relayed-no-udp",
            "its network lets no UDP out (tailscale netcheck: UDP false): every connection goes through DERP".into(),
            "allow outbound UDP (at least to 41641 and STUN 3478) on the node's firewall or network".into(),
        );
    } else if net.mapping_varies_by_dest_addr != Some(true) && n.endpoints.is_empty() {
        push(
            Severity::Warning,
            "no-endpoints",
            "it reported no endpoints, so peers cannot try a direct path".into(),
            "check that STUN works from the node (tailscale netcheck) and that the DERP map has a STUN port".into(),
        );
    }
    if net.preferred_derp > 0 {
        if let Some(l) = net.latency_to(net.preferred_derp) {
            if l > FAR_HOME_SECS {
                push(
                    Severity::Warning,
                    "home-derp-far",
                    format!(
                        "its home DERP region {} is {:.0} ms away: relayed traffic is slow",
                        net.preferred_derp,
                        l * 1000.0
                    ),
                    "run a DERP relay near it (ironscale derper) and add it to derp.paths".into(),
                );
            }
        }
    } else if net.working_udp.is_some() {
        push(
            Severity::Problem,
            "no-home-derp",
            "it has no home DERP region: it reaches no relay of the DERP map".into(),
            "check that the node reaches a DERP server of the map over HTTPS (tailscale netcheck; ironscale netcheck --probe)".into(),
        );
    }
}

/// The routes to approve: those approved now plus `more` (approve-routes sets the whole list).
fn approved_plus(n: &Node, more: &[String]) -> String {
    let mut v: Vec<String> = n.approved_routes.iter().map(|r| r.to_string()).collect();
    v.extend(more.iter().cloned());
    if v.iter().any(|r| r == "0.0.0.0/0") && !v.iter().any(|r| r == "::/0") {
        v.push("::/0".into());
    }
    v.dedup();
    v.join(",")
}

fn humanize(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} days", s / 86_400),
    }
}

/// Why traffic from one node to another's port is allowed or not: the
/// destination's packet filter (what its client enforces) read for the
/// source's addresses. `ironscale policy explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessExplanation {
    pub allowed: bool,
    /// The matching rule of the destination's filter: its index, sources and
    /// destinations as the client gets them.
    pub rule: Option<(usize, Vec<String>, Vec<String>)>,
    /// In words.
    pub why: String,
}

/// Whether the filter address text `s` (`*`, an IP, a CIDR, `a-b`) holds `ip`.
fn addr_matches(s: &str, ip: std::net::IpAddr) -> bool {
    if s == "*" {
        return true;
    }
    if let Ok(n) = s.parse::<ipnet::IpNet>() {
        return n.contains(&ip);
    }
    if let Ok(a) = s.parse::<std::net::IpAddr>() {
        return a == ip;
    }
    if let Some((a, b)) = s.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.parse::<std::net::IpAddr>(), b.parse::<std::net::IpAddr>()) {
            return a <= ip && ip <= b && a.is_ipv4() == ip.is_ipv4();
        }
    }
    false
}

impl State {
    /// Explain `src` → `dst`:`port` (TCP) under the policy in force.
    pub fn explain_access(
        &self,
        src: NodeId,
        dst: NodeId,
        port: u16,
    ) -> crate::Result<AccessExplanation> {
        let t = self.snapshot();
        let s = t
            .nodes
            .get(&src)
            .ok_or(crate::StateError::NodeNotFound(src))?;
        let d = t
            .nodes
            .get(&dst)
            .ok_or(crate::StateError::NodeNotFound(dst))?;
        let (sn, dn) = (&s.given_name, &d.given_name);
        let compiled = self.inner.policy.lock().compiled.clone();
        let Some(c) = compiled else {
            return Ok(AccessExplanation {
                allowed: true,
                rule: None,
                why: format!(
                    "no policy is in force: everything is allowed, {sn} → {dn}:{port} included"
                ),
            });
        };
        let (src_ips, dst_ips) = (s.ips(), d.ips());
        let rules = c.filter_rules(dst);
        for (i, r) in rules.iter().enumerate() {
            let tcp = r.ip_proto.is_empty() || r.ip_proto.contains(&6);
            let from = r
                .src_ips
                .iter()
                .any(|x| src_ips.iter().any(|ip| addr_matches(x, *ip)));
            let to = r.dst_ports.iter().any(|p| {
                p.ports.first <= port
                    && port <= p.ports.last
                    && dst_ips.iter().any(|ip| addr_matches(&p.ip, *ip))
            });
            if tcp && from && to {
                return Ok(AccessExplanation {
                    allowed: true,
                    rule: Some((
                        i,
                        r.src_ips.iter().map(|x| x.to_string()).collect(),
                        r.dst_ports
                            .iter()
                            .map(|p| {
                                if p.ports.first == p.ports.last {
                                    format!("{}:{}", p.ip, p.ports.first)
                                } else if p.ports.first == 0 && p.ports.last == 65535 {
                                    format!("{}:*", p.ip)
                                } else {
                                    format!("{}:{}-{}", p.ip, p.ports.first, p.ports.last)
                                }
                            })
                            .collect(),
                    )),
                    why: format!("allowed: rule {} of {dn}'s packet filter admits {sn}'s addresses to port {port}", i + 1),
                });
            }
        }
        Ok(AccessExplanation {
            allowed: false,
            rule: None,
            why: if rules.is_empty() {
                format!("denied: {dn}'s packet filter is empty (no rule of the policy has {dn} as a destination), so it accepts no connection")
            } else {
                format!(
                    "denied: none of the {} rules of {dn}'s packet filter admits {sn} ({}) to port {port}; add an acl with {sn}'s user, group or tag in src and {dn}:{port} in dst",
                    rules.len(),
                    src_ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
                )
            },
        })
    }
}
