use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use ironscale_types::{Node, NodeId, Timestamp, User, UserId};
use ironscale_wire::DerpMap;

use crate::{AllowAll, PolicyView};

/// The synthetic owner of tagged nodes, as Headscale renders it.
pub const TAGGED_DEVICES_USER_ID: u64 = 2147455555;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExtraRecord {
    pub name: String,
    pub r#type: String,
    pub value: String,
}

/// Tailnet-wide DNS settings (from the config's `dns` section).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsSettings {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers: Vec<String>,
    pub split: BTreeMap<String, Vec<String>>,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
}

/// An immutable snapshot of everything the map is built from.
#[derive(Debug, Clone)]
pub struct Tailnet {
    pub users: BTreeMap<UserId, Arc<User>>,
    pub nodes: BTreeMap<NodeId, Arc<Node>>,
    /// Nodes with an open map stream.
    pub online: BTreeSet<NodeId>,
    pub derp_map: Arc<DerpMap>,
    pub dns: Arc<DnsSettings>,
    pub policy: Arc<dyn PolicyView>,
    /// Subnet route → the node currently primary for it (HA failover).
    pub primaries: Arc<BTreeMap<IpNet, NodeId>>,
    pub randomize_client_port: bool,
    /// Viewer-independent wire nodes, shared by every session's view.
    pub wire_cache: Arc<WireCache>,
}

struct CacheEntry {
    src: Arc<Node>,
    online: bool,
    expired: bool,
    primaries: Arc<BTreeMap<IpNet, NodeId>>,
    dns: Arc<DnsSettings>,
    wire: Arc<ironscale_wire::Node>,
}

/// Memo of wire nodes, validated against the exact inputs they were built
/// from (the entry keeps those `Arc`s alive, so pointer equality is sound).
#[derive(Default)]
pub struct WireCache {
    entries: std::sync::Mutex<std::collections::HashMap<NodeId, CacheEntry>>,
}

impl std::fmt::Debug for WireCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WireCache")
    }
}

impl WireCache {
    pub(crate) fn get_or_build(
        &self,
        t: &Tailnet,
        node: &Arc<Node>,
        now: Timestamp,
        build: impl FnOnce() -> ironscale_wire::Node,
    ) -> Arc<ironscale_wire::Node> {
        let online = t.is_online(node.id);
        let expired = node.is_expired(now);
        let mut m = match self.entries.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        if let Some(e) = m.get(&node.id) {
            if Arc::ptr_eq(&e.src, node)
                && e.online == online
                && e.expired == expired
                && Arc::ptr_eq(&e.primaries, &t.primaries)
                && Arc::ptr_eq(&e.dns, &t.dns)
            {
                return e.wire.clone();
            }
        }
        let wire = Arc::new(build());
        if m.len() > 2 * t.nodes.len() + 64 {
            m.retain(|id, _| t.nodes.contains_key(id));
        }
        m.insert(
            node.id,
            CacheEntry {
                src: node.clone(),
                online,
                expired,
                primaries: t.primaries.clone(),
                dns: t.dns.clone(),
                wire: wire.clone(),
            },
        );
        wire
    }
}

impl Default for Tailnet {
    fn default() -> Self {
        Tailnet {
            users: BTreeMap::new(),
            nodes: BTreeMap::new(),
            online: BTreeSet::new(),
            derp_map: Arc::new(DerpMap::default()),
            dns: Arc::new(DnsSettings::default()),
            policy: Arc::new(AllowAll),
            primaries: Arc::new(BTreeMap::new()),
            randomize_client_port: false,
            wire_cache: Arc::new(WireCache::default()),
        }
    }
}

impl Tailnet {
    pub fn is_online(&self, id: NodeId) -> bool {
        self.online.contains(&id)
    }

    /// Subnet routes (not exit routes) for which `id` is primary.
    pub fn primary_routes(&self, id: NodeId) -> Vec<IpNet> {
        self.primaries
            .iter()
            .filter(|(_, n)| **n == id)
            .map(|(r, _)| *r)
            .collect()
    }

    /// Recompute route primaries: for every approved subnet route, keep the
    /// current primary while it is online; otherwise pick the online node with
    /// the lowest id, else the lowest id overall.
    pub fn elect_primaries(&self, previous: &BTreeMap<IpNet, NodeId>) -> BTreeMap<IpNet, NodeId> {
        let mut candidates: BTreeMap<IpNet, Vec<NodeId>> = BTreeMap::new();
        for n in self.nodes.values() {
            for r in &n.approved_routes {
                if r.prefix_len() != 0 && n.announced_routes.contains(r) {
                    candidates.entry(*r).or_default().push(n.id);
                }
            }
        }
        let mut out = BTreeMap::new();
        for (route, ids) in candidates {
            let keep = previous
                .get(&route)
                .filter(|p| ids.contains(p) && self.is_online(**p));
            let pick = keep
                .copied()
                .or_else(|| ids.iter().copied().find(|id| self.is_online(*id)))
                .or_else(|| ids.iter().copied().min());
            if let Some(p) = pick {
                out.insert(route, p);
            }
        }
        out
    }

    /// FQDN of a node with the trailing dot (`host.base.domain.`).
    pub fn fqdn(&self, node: &Node) -> String {
        if self.dns.base_domain.is_empty() {
            format!("{}.", node.given_name)
        } else {
            format!("{}.{}.", node.given_name, self.dns.base_domain)
        }
    }

    pub fn user_of(&self, node: &Node) -> Option<&User> {
        node.user_id
            .and_then(|u| self.users.get(&u))
            .map(|u| u.as_ref())
    }

    pub fn now_online_or_seen(&self, node: &Node) -> Option<Timestamp> {
        node.last_seen
    }
}
