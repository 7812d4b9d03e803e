use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ironscale_types::{Node, NodeId, Timestamp};
use ironscale_wire as wire;
use serde_json::Value;

use crate::{Tailnet, TAGGED_DEVICES_USER_ID};

/// Everything one node has been told (or is about to be told).
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    pub node_id: NodeId,
    pub capver: u32,
    pub self_node: wire::Node,
    /// Peers as last sent. Shared (`Arc`) across sessions where the node
    /// looks the same to every viewer, so N sessions do not hold N copies.
    pub peers: BTreeMap<i64, Arc<wire::Node>>,
    pub filter: Vec<wire::FilterRule>,
    pub ssh: Option<Value>,
    pub dns: wire::DnsConfig,
    pub derp: Arc<wire::DerpMap>,
    pub profiles: BTreeMap<i64, wire::UserProfile>,
    pub domain: String,
}

fn wire_id(id: NodeId) -> i64 {
    id.0 as i64
}

fn user_wire_id(node: &Node) -> i64 {
    match (node.is_tagged(), node.user_id) {
        (false, Some(u)) => u.0 as i64,
        _ => TAGGED_DEVICES_USER_ID as i64,
    }
}

fn addresses(node: &Node) -> Vec<String> {
    let mut v = Vec::with_capacity(2);
    if let Some(a) = node.ipv4 {
        v.push(format!("{a}/32"));
    }
    if let Some(a) = node.ipv6 {
        v.push(format!("{a}/128"));
    }
    v
}

fn hostinfo_value(node: &Node) -> Value {
    node.hostinfo_json
        .as_deref()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| serde_json::json!({ "Hostname": node.hostname }))
}

/// The viewer-independent wire form of a peer.
fn base_wire_node(t: &Tailnet, node: &Node, now: Timestamp) -> wire::Node {
    let addrs = addresses(node);
    let online = t.is_online(node.id);
    let home = node.home_derp;
    let mut primary: Vec<String> = t
        .primary_routes(node.id)
        .iter()
        .map(|r| r.to_string())
        .collect();
    primary.sort();
    wire::Node {
        id: wire_id(node.id),
        stable_id: node.id.0.to_string(),
        name: t.fqdn(node),
        user: user_wire_id(node),
        key: node.node_key,
        key_expiry: node.expiry,
        machine: node.machine_key,
        disco_key: node.disco_key,
        allowed_ips: addrs.clone(),
        addresses: addrs,
        endpoints: node.endpoints.clone(),
        derp: if home > 0 {
            format!("127.3.3.40:{home}")
        } else {
            String::new()
        },
        home_derp: home,
        hostinfo: hostinfo_value(node),
        created: Some(node.created_at),
        cap: node.capver,
        tags: node.tags.clone(),
        primary_routes: primary,
        last_seen: if online { None } else { node.last_seen },
        online: Some(online),
        machine_authorized: node.approved,
        cap_map: None,
        expired: node.is_expired(now),
    }
}

/// The wire form of `node` as `viewer` sees it; shared with other viewers
/// through the tailnet's cache when nothing in it is viewer-specific.
fn peer_wire_node(t: &Tailnet, viewer: &Node, node: &Arc<Node>, now: Timestamp) -> Arc<wire::Node> {
    let base = t
        .wire_cache
        .get_or_build(t, node, now, || base_wire_node(t, node, now));
    let routes = t.policy.peer_routes(t, viewer, node);
    let caps = t.policy.peer_cap_map(t, viewer, node);
    if routes.is_empty() && caps.is_empty() {
        return base;
    }
    let mut n = (*base).clone();
    n.allowed_ips.extend(routes.iter().map(|r| r.to_string()));
    if !caps.is_empty() {
        n.cap_map = Some(caps);
    }
    Arc::new(n)
}

/// The node's own wire form (its self node).
fn self_wire_node(t: &Tailnet, me: &Node, now: Timestamp) -> wire::Node {
    let mut n = base_wire_node(t, me, now);
    n.cap_map = Some(self_cap_map(t, me));
    n
}

/// The DNS config of `me`, whose self node is `self_node`.
fn node_dns(t: &Tailnet, me: &Node, self_node: &wire::Node) -> wire::DnsConfig {
    let none = BTreeMap::new();
    crate::dns_config(&t.dns, me, self_node.cap_map.as_ref().unwrap_or(&none))
}

/// The node's own capabilities: the policy's (`nodeAttrs`) plus
/// `magicdns-aaaa` when the DNS settings grant it to everyone.
fn self_cap_map(t: &Tailnet, me: &Node) -> BTreeMap<String, Value> {
    let mut caps = t.policy.node_cap_map(t, me);
    if t.dns.magic_dns_aaaa {
        caps.entry(crate::CAP_MAGICDNS_AAAA.to_string())
            .or_insert(Value::Null);
    }
    caps
}

fn profile_for(t: &Tailnet, node: &Node) -> wire::UserProfile {
    match t.user_of(node).filter(|_| !node.is_tagged()) {
        Some(u) => wire::UserProfile {
            id: u.id.0 as i64,
            login_name: u.login_name().to_string(),
            display_name: u.display().to_string(),
            profile_pic_url: u.profile_pic_url.clone(),
        },
        None => wire::UserProfile {
            id: TAGGED_DEVICES_USER_ID as i64,
            login_name: "tagged-devices".into(),
            display_name: "Tagged Devices".into(),
            profile_pic_url: String::new(),
        },
    }
}

/// Whether `peer` is in `me`'s map: the policy lets it see the peer, and both
/// are approved (device approval: an unapproved node sees no one and no one
/// sees it; its own map still comes, so it learns `MachineAuthorized`).
fn visible(t: &Tailnet, me: &Node, peer: &Node) -> bool {
    me.approved && peer.approved && t.policy.can_see(t, me, peer)
}

/// Build the complete view of `node_id`. `None` if the node does not exist.
pub fn build_view(t: &Tailnet, node_id: NodeId, capver: u32, now: Timestamp) -> Option<View> {
    let me = t.nodes.get(&node_id)?;
    let mut peers = BTreeMap::new();
    let mut profiles = BTreeMap::new();
    let p = profile_for(t, me);
    profiles.insert(p.id, p);
    for peer in t.nodes.values() {
        if peer.id != me.id && visible(t, me, peer) {
            let w = peer_wire_node(t, me, peer, now);
            let p = profile_for(t, peer);
            profiles.insert(p.id, p);
            peers.insert(w.id, w);
        }
    }
    let self_node = self_wire_node(t, me, now);
    let dns = node_dns(t, me, &self_node);
    Some(View {
        node_id,
        capver,
        self_node,
        peers,
        filter: t.policy.packet_filter(t, me),
        ssh: t.policy.ssh_policy(t, me),
        dns,
        derp: t.derp_map.clone(),
        profiles,
        domain: t.dns.base_domain.clone(),
    })
}

impl View {
    /// The first frame of a map session: everything.
    pub fn full_response(&self, now: Timestamp) -> wire::MapResponse {
        let peers: Vec<wire::Node> = self.peers.values().map(|p| (**p).clone()).collect();
        wire::MapResponse {
            node: Some(self.self_node.clone()),
            derp_map: Some((*self.derp).clone()),
            peers: Some(peers),
            dns_config: Some(self.dns.clone()),
            domain: self.domain.clone(),
            collect_services: Some(false),
            packet_filter: Some(self.filter.clone()),
            user_profiles: Some(self.profiles.values().cloned().collect()),
            ssh_policy: self.ssh.clone(),
            control_time: Some(now),
            debug: Some(wire::Debug {
                disable_log_tail: true,
            }),
            ..Default::default()
        }
    }

    /// Update this view for changes to the given nodes only (endpoint, online,
    /// key, hostinfo, add, remove...), returning the delta to send. Cost is
    /// O(|changed| · log peers), independent of the tailnet's size.
    pub fn apply_node_changes(
        &mut self,
        t: &Tailnet,
        changed: &BTreeSet<NodeId>,
        now: Timestamp,
    ) -> Option<wire::MapResponse> {
        let me = t.nodes.get(&self.node_id)?.clone();
        let mut out = wire::MapResponse::default();
        if changed.contains(&self.node_id) {
            let s = self_wire_node(t, &me, now);
            // The DNS config follows the node (NextDNS metadata, its caps).
            let dns = node_dns(t, &me, &s);
            if dns != self.dns {
                self.dns = dns.clone();
                out.dns_config = Some(dns);
            }
            if s != self.self_node {
                self.self_node = s.clone();
                out.node = Some(s);
            }
            let f = t.policy.packet_filter(t, &me);
            if f != self.filter {
                self.filter = f.clone();
                out.packet_filter = Some(f);
            }
            let ssh = t.policy.ssh_policy(t, &me);
            if ssh != self.ssh {
                out.ssh_policy = Some(
                    ssh.clone()
                        .unwrap_or_else(|| serde_json::json!({ "rules": [] })),
                );
                self.ssh = ssh;
            }
        }
        let mut new_profiles = Vec::new();
        if changed.contains(&self.node_id) {
            let prof = profile_for(t, &me);
            if self.profiles.get(&prof.id) != Some(&prof) {
                self.profiles.insert(prof.id, prof.clone());
                new_profiles.push(prof);
            }
        }
        for id in changed {
            if *id == self.node_id {
                continue;
            }
            let wid = wire_id(*id);
            let next = t
                .nodes
                .get(id)
                .filter(|p| visible(t, &me, p))
                .map(|p| (peer_wire_node(t, &me, p, now), profile_for(t, p)));
            let prev = self.peers.get(&wid);
            match (prev, next) {
                (None, None) => {}
                (Some(_), None) => {
                    self.peers.remove(&wid);
                    out.peers_removed.get_or_insert_with(Vec::new).push(wid);
                }
                (prev, Some((n, prof))) => {
                    if self.profiles.get(&prof.id) != Some(&prof) {
                        self.profiles.insert(prof.id, prof.clone());
                        new_profiles.push(prof);
                    }
                    let same = prev.is_some_and(|p| Arc::ptr_eq(p, &n) || **p == *n);
                    if !same {
                        push_peer_delta(&mut out, prev.map(|p| &**p), &n);
                        self.peers.insert(wid, n);
                    }
                }
            }
        }
        if !new_profiles.is_empty() {
            out.user_profiles = Some(new_profiles);
        }
        if out.is_empty() {
            None
        } else {
            Some(out)
        }
    }
}

/// Append the delta that turns `prev` into `next` for one peer: a patch when
/// only patchable fields differ, else the complete node.
fn push_peer_delta(out: &mut wire::MapResponse, prev: Option<&wire::Node>, next: &wire::Node) {
    if let Some(prev) = prev {
        if let Some(patch) = patch_between(prev, next) {
            out.peers_changed_patch
                .get_or_insert_with(Vec::new)
                .push(patch);
            return;
        }
    }
    out.peers_changed
        .get_or_insert_with(Vec::new)
        .push(next.clone());
}

/// A `PeerChange` turning `prev` into `next`, if the difference is limited to
/// fields a patch can carry without clearing anything by accident.
fn patch_between(prev: &wire::Node, next: &wire::Node) -> Option<wire::PeerChange> {
    let mut a = prev.clone();
    let mut p = wire::PeerChange {
        node_id: next.id,
        ..Default::default()
    };
    if a.endpoints != next.endpoints {
        if next.endpoints.is_empty() {
            return None; // an empty list would not survive Go's omitempty semantics
        }
        p.endpoints = Some(next.endpoints.clone());
        a.endpoints = next.endpoints.clone();
    }
    if a.home_derp != next.home_derp {
        if next.home_derp == 0 {
            return None;
        }
        p.derp_region = Some(next.home_derp);
        a.home_derp = next.home_derp;
        a.derp = next.derp.clone();
    }
    if a.disco_key != next.disco_key {
        p.disco_key = Some(next.disco_key);
        a.disco_key = next.disco_key;
    }
    if a.key != next.key {
        p.key = Some(next.key);
        a.key = next.key;
    }
    if a.cap != next.cap {
        p.cap = Some(next.cap);
        a.cap = next.cap;
    }
    if a.key_expiry != next.key_expiry {
        next.key_expiry?;
        p.key_expiry = next.key_expiry;
        a.key_expiry = next.key_expiry;
    }
    if a.online != next.online || a.last_seen != next.last_seen {
        // Online true clears LastSeen on the client only via a full node; going
        // offline sets both.
        match (next.online, next.last_seen) {
            (Some(o), ls) => {
                if ls.is_none() && a.last_seen.is_some() {
                    return None;
                }
                p.online = Some(o);
                p.last_seen = ls;
                a.online = next.online;
                a.last_seen = ls;
            }
            (None, _) => return None,
        }
    }
    if a.expired != next.expired {
        return None;
    }
    (a == *next && !p.is_empty()).then_some(p)
}

/// The delta from `prev` to `next` (both views of the same node). `None` when
/// nothing changed. Applying the result to `prev` with the client's algorithm
/// yields `next`.
pub fn diff(prev: &View, next: &View) -> Option<wire::MapResponse> {
    let mut out = wire::MapResponse::default();
    if prev.self_node != next.self_node {
        out.node = Some(next.self_node.clone());
    }
    if prev.derp != next.derp {
        out.derp_map = Some((*next.derp).clone());
    }
    if prev.dns != next.dns {
        out.dns_config = Some(next.dns.clone());
    }
    if prev.filter != next.filter {
        out.packet_filter = Some(next.filter.clone());
    }
    if prev.ssh != next.ssh {
        out.ssh_policy = Some(
            next.ssh
                .clone()
                .unwrap_or_else(|| serde_json::json!({ "rules": [] })),
        );
    }
    if prev.domain != next.domain && !next.domain.is_empty() {
        out.domain = next.domain.clone();
    }
    let new_profiles: Vec<_> = next
        .profiles
        .values()
        .filter(|p| prev.profiles.get(&p.id) != Some(*p))
        .cloned()
        .collect();
    if !new_profiles.is_empty() {
        out.user_profiles = Some(new_profiles);
    }
    for id in prev.peers.keys() {
        if !next.peers.contains_key(id) {
            out.peers_removed.get_or_insert_with(Vec::new).push(*id);
        }
    }
    for (id, n) in &next.peers {
        let p = prev.peers.get(id);
        if !p.is_some_and(|p| Arc::ptr_eq(p, n) || p == n) {
            push_peer_delta(&mut out, p.map(|p| &**p), n);
        }
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

#[cfg(test)]
mod tests;
