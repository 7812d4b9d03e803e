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
        }
    }
}

impl Tailnet {
    pub fn is_online(&self, id: NodeId) -> bool {
        self.online.contains(&id)
    }

    /// Subnet routes (not exit routes) for which `id` is primary.
    pub fn primary_routes(&self, id: NodeId) -> Vec<IpNet> {
        self.primaries.iter().filter(|(_, n)| **n == id).map(|(r, _)| *r).collect()
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
            let keep = previous.get(&route).filter(|p| ids.contains(p) && self.is_online(**p));
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
        node.user_id.and_then(|u| self.users.get(&u)).map(|u| u.as_ref())
    }

    pub fn now_online_or_seen(&self, node: &Node) -> Option<Timestamp> {
        node.last_seen
    }
}
