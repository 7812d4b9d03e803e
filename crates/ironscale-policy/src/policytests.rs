//! Running a policy's own `tests` and `sshTests`. Any failure rejects the
//! policy, as Tailscale does (`test(s) failed`); our message says which
//! assertion failed and why.

use std::net::IpAddr;

use crate::ast::{Alias, AutoGroup, PortRange, Spanned};
use crate::compile::CompiledPolicy;
use crate::error::PolicyError;
use crate::parse::{parse_alias, parse_ports, split_host_port};

fn fail(c: &CompiledPolicy, pos: crate::error::Pos, msg: String) -> PolicyError {
    c.test_error(pos, format!("test(s) failed: {msg}"))
}

/// Addresses a test `src` stands for.
fn src_addrs(c: &CompiledPolicy, s: &Spanned<String>) -> Result<Vec<IpAddr>, PolicyError> {
    let a = parse_alias(&s.value).map_err(|m| fail(c, s.pos, format!("src {:?}: {m}", s.value)))?;
    let a = host_or_user(c, a);
    check_defined(c, &a).map_err(|m| fail(c, s.pos, format!("src {:?}: {m}", s.value)))?;
    match a {
        Alias::Wildcard
        | Alias::AutoGroup(AutoGroup::Internet | AutoGroup::SelfDevices | AutoGroup::DangerAll) => {
            return Err(fail(
                c,
                s.pos,
                format!("src {:?} is not valid in tests", s.value),
            ))
        }
        _ => {}
    }
    let r = c.resolve_alias(&a);
    let mut ips: Vec<IpAddr> = Vec::new();
    for &n in &r.ident {
        ips.extend(c.node(n).ips.iter().copied());
    }
    for (a, b) in r.set.ranges() {
        if a == b {
            ips.push(a);
        } else if r.ident.is_empty() {
            return Err(fail(
                c,
                s.pos,
                format!("src {:?} must be a single host, not a range", s.value),
            ));
        }
    }
    ips.sort();
    ips.dedup();
    if ips.is_empty() {
        return Err(fail(
            c,
            s.pos,
            format!("src {:?} matches no device or address", s.value),
        ));
    }
    Ok(ips)
}

fn host_or_user(c: &CompiledPolicy, a: Alias) -> Alias {
    match a {
        Alias::BareUser(n) if c.pol.hosts.iter().any(|h| h.name.value == n) => Alias::Host(n),
        other => other,
    }
}

fn check_defined(c: &CompiledPolicy, a: &Alias) -> Result<(), String> {
    match a {
        Alias::Group(g) if !c.pol.groups.iter().any(|d| d.name.value == *g) => {
            Err(format!("group {g:?} is not defined"))
        }
        Alias::Tag(t) if !c.pol.tag_owners.iter().any(|d| d.tag.value == *t) => {
            Err(format!("tag {t:?} is not defined"))
        }
        // Refused when the policy is parsed; kept for a policy built by hand.
        Alias::OidcGroup(g) => Err(crate::parse::oidc_group_misplaced(g)),
        Alias::User(u) | Alias::BareUser(u) if c.topo.users_matching(u).is_empty() => {
            Err(format!("user {u:?} does not exist"))
        }
        _ => Ok(()),
    }
}

/// Whether a packet from `src` to `dst:port` over `proto` is allowed.
fn allowed(
    c: &CompiledPolicy,
    src: IpAddr,
    src_node: Option<u32>,
    dst: IpAddr,
    port: u16,
    proto: u8,
) -> bool {
    let dst_node = c.topo.node_by_ip(dst);
    for r in c.rules.iter() {
        if r.app.is_some() {
            continue;
        }
        let proto_ok = if r.protos.is_empty() {
            matches!(proto, 6 | 17 | 1 | 58)
        } else {
            r.protos.contains(&proto)
        };
        if !proto_ok {
            continue;
        }
        let sg = c.src_group(r);
        let src_ok =
            sg.res.danger_all || sg.res.set.contains(src) || src_node.is_some_and(|n| sg.covers(n));
        if !src_ok {
            continue;
        }
        for d in &r.dsts {
            if !d.ports.iter().any(|p: &PortRange| p.contains(port)) {
                continue;
            }
            let g = &c.dst_groups[d.group as usize];
            let hit = if g.res.wildcard {
                crate::ipset::tailnet_ranges().contains(dst) || c.subnet_covers(dst)
            } else if g.res.self_devices {
                match (src_node, dst_node) {
                    (Some(a), Some(b)) => {
                        c.node(a).user.is_some() && c.node(a).user == c.node(b).user
                    }
                    _ => false,
                }
            } else {
                g.res.set.contains(dst) || dst_node.is_some_and(|b| g.res.m.matches(c.node(b)))
            };
            if hit {
                return true;
            }
        }
    }
    false
}

fn run_tests(c: &CompiledPolicy) -> Result<(), PolicyError> {
    for t in &c.pol.tests {
        if t.accept.is_empty() && t.deny.is_empty() {
            return Err(fail(
                c,
                t.pos,
                "test entry must have at least one of \"accept\" or \"deny\"".into(),
            ));
        }
        let proto = match t.proto.as_deref() {
            None | Some([]) => 6,
            Some([p]) if matches!(p, 6 | 17 | 132) => *p,
            Some(_) => {
                return Err(fail(
                    c,
                    t.pos,
                    "test protocol must be tcp, udp, sctp, or empty".into(),
                ))
            }
        };
        let srcs = src_addrs(c, &t.src)?;
        for (want, list) in [(true, &t.accept), (false, &t.deny)] {
            for d in list {
                let (addrs, port) = test_dst(c, d)?;
                for dst in &addrs {
                    let mut pairs = 0;
                    for s in &srcs {
                        if s.is_ipv4() != dst.is_ipv4() {
                            continue;
                        }
                        pairs += 1;
                        let sn = c.topo.node_by_ip(*s);
                        let ok = allowed(c, *s, sn, *dst, port, proto);
                        if ok != want {
                            let verb = if want { "cannot reach" } else { "can reach" };
                            return Err(fail(
                                c,
                                d.pos,
                                format!(
                                    "{} ({s}) {verb} {} ({dst}), but the test says it {}",
                                    t.src.value,
                                    d.value,
                                    if want { "should" } else { "should not" }
                                ),
                            ));
                        }
                    }
                    if pairs == 0 && want {
                        return Err(fail(
                            c,
                            d.pos,
                            format!("{} has no address of the same family as {dst}", t.src.value),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Resolve a test destination `host:port` to addresses and one port.
fn test_dst(c: &CompiledPolicy, d: &Spanned<String>) -> Result<(Vec<IpAddr>, u16), PolicyError> {
    let e = |m: String| fail(c, d.pos, format!("dst {:?}: {m}", d.value));
    let (host, ports) = split_host_port(&d.value).ok_or_else(|| e("must be host:port".into()))?;
    let ports = parse_ports(ports).map_err(e)?;
    let port = match ports.as_slice() {
        [p] if p.first == p.last => p.first,
        _ => return Err(e("test destination port must be a single port".into())),
    };
    if host.contains('/') {
        return Err(e(
            "test destination must be a single host, not a CIDR range".into(),
        ));
    }
    let a = host_or_user(c, parse_alias(host).map_err(e)?);
    check_defined(c, &a).map_err(e)?;
    match &a {
        Alias::AutoGroup(_) | Alias::Wildcard | Alias::Range(_, _) => {
            return Err(e(format!("{host} is not valid as a test destination")))
        }
        Alias::Host(h) => {
            if let Some(def) = c.pol.hosts.iter().find(|x| x.name.value == *h) {
                if let Alias::Prefix(p) = &def.value.value {
                    if p.prefix_len() != p.max_prefix_len() {
                        return Err(e(
                            "test destination must be a single host, not a CIDR range".into(),
                        ));
                    }
                }
            }
        }
        _ => {}
    }
    let r = c.resolve_alias(&a);
    let mut addrs: Vec<IpAddr> = Vec::new();
    for &n in &r.ident {
        addrs.extend(c.node(n).ips.iter().copied());
    }
    for (a, b) in r.set.ranges() {
        if a == b {
            addrs.push(a);
        }
    }
    addrs.sort();
    addrs.dedup();
    if addrs.is_empty() {
        return Err(e("matches no device or address".into()));
    }
    Ok((addrs, port))
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum SshOutcome {
    Accept,
    Check,
    Deny,
}

fn ssh_outcome(c: &CompiledPolicy, dst: u32, src: IpAddr, login: &str) -> SshOutcome {
    let Some(pol) = c.ssh_for(dst) else {
        return SshOutcome::Deny;
    };
    let s = src.to_string();
    for r in &pol.rules {
        if !r.principals.iter().any(|p| p.node_ip == s) {
            continue;
        }
        let mapped = match r.ssh_users.get(login) {
            Some(m) => Some(m.clone()),
            None => r.ssh_users.get("*").cloned(),
        };
        match mapped {
            Some(m) if !m.is_empty() => {
                return if r.action.hold_and_delegate.is_empty() {
                    SshOutcome::Accept
                } else {
                    SshOutcome::Check
                };
            }
            _ => continue,
        }
    }
    SshOutcome::Deny
}

fn run_ssh_tests(c: &CompiledPolicy) -> Result<(), PolicyError> {
    for t in &c.pol.ssh_tests {
        if t.dst.is_empty() {
            return Err(fail(
                c,
                t.pos,
                "SSH tests entry must have at least one dst".into(),
            ));
        }
        let mut dst_nodes: Vec<u32> = Vec::new();
        for d in &t.dst {
            let a = host_or_user(
                c,
                parse_alias(&d.value)
                    .map_err(|m| fail(c, d.pos, format!("dst {:?}: {m}", d.value)))?,
            );
            match &a {
                Alias::Tag(tag) if !c.pol.tag_owners.iter().any(|x| x.tag.value == *tag) => {
                    return Err(c.test_error(
                        d.pos,
                        format!("SSH tests dst contains unknown tag {:?}", d.value),
                    ))
                }
                Alias::Prefix(p) if p.prefix_len() != p.max_prefix_len() => {
                    return Err(c.test_error(
                        d.pos,
                        format!("SSH tests dst contains disallowed element {:?}", d.value),
                    ))
                }
                Alias::AutoGroup(AutoGroup::Internet) | Alias::Wildcard | Alias::Range(_, _) => {
                    return Err(c.test_error(
                        d.pos,
                        format!("SSH tests dst contains disallowed element {:?}", d.value),
                    ))
                }
                Alias::Prefix(p) if p.addr().is_ipv6() => {
                    // Tailscale matches SSH test hosts by IPv4 address only.
                    continue;
                }
                _ => {}
            }
            check_defined(c, &a).map_err(|m| fail(c, d.pos, format!("dst {:?}: {m}", d.value)))?;
            let r = c.resolve_alias(&a);
            dst_nodes.extend(r.nodes());
        }
        dst_nodes.sort_unstable();
        dst_nodes.dedup();
        let src = src_addrs(c, &t.src)?;
        let expectations = [
            (SshOutcome::Accept, &t.accept),
            (SshOutcome::Check, &t.check),
            (SshOutcome::Deny, &t.deny),
        ];
        for (want, users) in expectations {
            for login in users.iter() {
                if want != SshOutcome::Deny && dst_nodes.is_empty() {
                    return Err(fail(
                        c,
                        t.pos,
                        format!(
                            "sshTests dst {:?} matches no device",
                            t.dst.iter().map(|d| d.value.as_str()).collect::<Vec<_>>()
                        ),
                    ));
                }
                for &dn in &dst_nodes {
                    for s in &src {
                        if c.topo.node_by_ip(*s) == Some(dn) {
                            continue;
                        }
                        let got = ssh_outcome(c, dn, *s, login);
                        let ok = match want {
                            // A check rule still lets the user in.
                            SshOutcome::Accept => got != SshOutcome::Deny,
                            other => got == other,
                        };
                        if !ok {
                            return Err(fail(
                                c,
                                t.pos,
                                format!(
                                    "ssh from {} ({s}) to {} as {login:?}: expected {want:?}, policy gives {got:?}",
                                    t.src.value,
                                    c.name_of(dn)
                                ),
                            ));
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

pub(crate) fn run(c: &CompiledPolicy) -> Result<(), PolicyError> {
    run_tests(c)?;
    run_ssh_tests(c)
}

impl CompiledPolicy {
    pub(crate) fn subnet_covers(&self, ip: IpAddr) -> bool {
        self.subnets.iter().flatten().any(|s| s.contains(&ip))
    }
}
