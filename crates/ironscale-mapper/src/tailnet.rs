use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use ipnet::IpNet;
use ironscale_types::{Node, NodeId, Timestamp, User, UserId};
use ironscale_wire::DerpMap;

use crate::{AllowAll, DnsSettings, PolicyView};

/// The synthetic owner of tagged nodes, as Headscale renders it.
pub const TAGGED_DEVICES_USER_ID: u64 = 2147455555;

/// Subnet routes a node is a candidate for: approved and announced, exit
/// routes excluded.
pub fn candidate_routes(n: &Node) -> impl Iterator<Item = IpNet> + '_ {
    n.approved_routes
        .iter()
        .copied()
        .filter(move |r| r.prefix_len() != 0 && n.announced_routes.contains(r))
}

/// Subnet route → its candidate nodes, in id order.
pub type RouteIndex = OrdMap<IpNet, OrdSet<NodeId>>;

/// An immutable snapshot of everything the map is built from.
///
/// The users, nodes, online set and route index are persistent maps
/// (`imbl`): cloning a snapshot is O(1) and shares their structure, and
/// changing one node in the clone costs O(log n), so a commit costs what it
/// changes, not the tailnet's size. They iterate in key order, as the
/// `BTreeMap`s they replace did.
#[derive(Debug, Clone)]
pub struct Tailnet {
    pub users: OrdMap<UserId, Arc<User>>,
    pub nodes: OrdMap<NodeId, Arc<Node>>,
    /// Nodes with an open map stream.
    pub online: OrdSet<NodeId>,
    /// Online routers that stopped answering the server's health probe
    /// (`node.routes.ha.probe_*`): they serve no route until they answer.
    pub unhealthy: OrdSet<NodeId>,
    /// Candidates of every subnet route; kept in step with `nodes` by
    /// [`Tailnet::update_routes`] (or rebuilt by [`Tailnet::reelect_all`]).
    pub routes: RouteIndex,
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
            users: OrdMap::new(),
            nodes: OrdMap::new(),
            online: OrdSet::new(),
            unhealthy: OrdSet::new(),
            routes: RouteIndex::new(),
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

    /// Whether `id` may serve routes: online, answering health probes, and
    /// approved as a device (an unapproved node is invisible to its peers).
    pub fn can_serve(&self, id: NodeId) -> bool {
        self.online.contains(&id)
            && !self.unhealthy.contains(&id)
            && self.nodes.get(&id).is_some_and(|n| n.approved)
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
    /// current primary while it is online (sticky: a router coming back does
    /// not take over); otherwise pick the online node with the lowest id. A
    /// route with no online router has no primary: nobody is told an offline
    /// router serves it. O(n): the reference that [`Tailnet::update_routes`]
    /// must agree with.
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
                .filter(|p| ids.contains(p) && self.can_serve(**p));
            let pick = keep
                .copied()
                .or_else(|| ids.iter().copied().filter(|id| self.can_serve(*id)).min());
            if let Some(p) = pick {
                out.insert(route, p);
            }
        }
        out
    }

    /// The primary of one route among its candidates (same rule as
    /// [`Tailnet::elect_primaries`]).
    fn elect_one(&self, route: &IpNet, previous: &BTreeMap<IpNet, NodeId>) -> Option<NodeId> {
        let ids = self.routes.get(route)?;
        previous
            .get(route)
            .filter(|p| ids.contains(*p) && self.can_serve(**p))
            .copied()
            .or_else(|| ids.iter().copied().find(|id| self.can_serve(*id)))
    }

    /// Install `primaries` if they differ; returns the nodes that gained or
    /// lost a primary route.
    fn set_primaries(&mut self, primaries: BTreeMap<IpNet, NodeId>) -> BTreeSet<NodeId> {
        let mut changed = BTreeSet::new();
        if primaries == *self.primaries {
            return changed;
        }
        for (r, id) in primaries.iter() {
            if self.primaries.get(r) != Some(id) {
                changed.insert(*id);
                if let Some(prev) = self.primaries.get(r) {
                    changed.insert(*prev);
                }
            }
        }
        for (r, id) in self.primaries.iter() {
            if !primaries.contains_key(r) {
                changed.insert(*id);
            }
        }
        self.primaries = Arc::new(primaries);
        changed
    }

    /// Rebuild the route index from every node and re-elect every route
    /// (at load, or after a change nobody named). O(n). Returns the nodes
    /// whose primary routes changed.
    pub fn reelect_all(&mut self) -> BTreeSet<NodeId> {
        let mut idx = RouteIndex::new();
        for n in self.nodes.values() {
            for r in candidate_routes(n) {
                idx.entry(r).or_default().insert(n.id);
            }
        }
        self.routes = idx;
        let primaries = self.elect_primaries(&self.primaries);
        self.set_primaries(primaries)
    }

    /// Bring the route index and the primaries in step after the nodes in
    /// `changed` were added, removed, or changed (routes, online state), `old`
    /// being the snapshot this one was copied from. Only the routes those
    /// nodes are or were candidates for are elected again, with the rule of
    /// [`Tailnet::elect_primaries`]: O(|changed| · routes per node · log n).
    /// Returns the nodes whose primary routes changed.
    pub fn update_routes(
        &mut self,
        old: &Tailnet,
        changed: impl IntoIterator<Item = NodeId>,
    ) -> BTreeSet<NodeId> {
        let mut touched: BTreeSet<IpNet> = BTreeSet::new();
        for id in changed {
            let before: Vec<IpNet> = old
                .nodes
                .get(&id)
                .map(|n| candidate_routes(n).collect())
                .unwrap_or_default();
            let after: Vec<IpNet> = self
                .nodes
                .get(&id)
                .map(|n| candidate_routes(n).collect())
                .unwrap_or_default();
            for r in &before {
                if !after.contains(r) {
                    if let Some(set) = self.routes.get_mut(r) {
                        set.remove(&id);
                        if set.is_empty() {
                            self.routes.remove(r);
                        }
                    }
                }
            }
            for r in &after {
                self.routes.entry(*r).or_default().insert(id);
            }
            touched.extend(before);
            touched.extend(after);
        }
        if touched.is_empty() {
            return BTreeSet::new();
        }
        let previous = self.primaries.clone();
        let mut next = (*previous).clone();
        for r in &touched {
            match self.elect_one(r, &previous) {
                Some(p) => {
                    next.insert(*r, p);
                }
                None => {
                    next.remove(r);
                }
            }
        }
        self.set_primaries(next)
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use ironscale_types::RegisterMethod;
    use proptest::prelude::*;

    const ROUTES: [&str; 4] = ["10.0.0.0/24", "10.0.1.0/24", "192.168.0.0/16", "0.0.0.0/0"];

    fn route(i: usize) -> IpNet {
        ROUTES[i % ROUTES.len()].parse().expect("route")
    }

    fn node(id: u64, announced: &[usize], approved: &[usize]) -> Node {
        Node {
            id: NodeId(id),
            machine_key: Default::default(),
            node_key: Default::default(),
            disco_key: Default::default(),
            ipv4: None,
            ipv6: None,
            hostname: format!("n{id}"),
            given_name: format!("n{id}"),
            user_id: None,
            tags: Vec::new(),
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: announced.iter().map(|&i| route(i)).collect(),
            approved_routes: approved.iter().map(|&i| route(i)).collect(),
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

    #[derive(Debug, Clone)]
    enum Op {
        /// Add or replace a node with these announced and approved routes.
        Upsert(u64, Vec<usize>, Vec<usize>),
        Remove(u64),
        Online(u64, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let routes = || proptest::collection::vec(0..ROUTES.len(), 0..3);
        prop_oneof![
            (1..9u64, routes(), routes()).prop_map(|(id, a, b)| Op::Upsert(id, a, b)),
            (1..9u64).prop_map(Op::Remove),
            (1..9u64, any::<bool>()).prop_map(|(id, o)| Op::Online(id, o)),
            (1..9u64, any::<bool>()).prop_map(|(id, o)| Op::Online(id, o)),
        ]
    }

    proptest! {
        /// Electing only the routes the changed nodes touch gives what a
        /// full election over every node gives, change after change, and
        /// names exactly the nodes whose primary routes changed.
        #[test]
        fn incremental_election_matches_full(ops in proptest::collection::vec(proptest::collection::vec(op(), 1..4), 1..30)) {
            let mut t = Tailnet::default();
            for batch in &ops {
                let old = t.clone();
                let mut changed = BTreeSet::new();
                for o in batch {
                    match o {
                        Op::Upsert(id, a, b) => {
                            t.nodes.insert(NodeId(*id), Arc::new(node(*id, a, b)));
                            changed.insert(NodeId(*id));
                        }
                        Op::Remove(id) => {
                            t.nodes.remove(&NodeId(*id));
                            t.online.remove(&NodeId(*id));
                            changed.insert(NodeId(*id));
                        }
                        Op::Online(id, true) if t.nodes.contains_key(&NodeId(*id)) => {
                            t.online.insert(NodeId(*id));
                            changed.insert(NodeId(*id));
                        }
                        Op::Online(id, _) => {
                            t.online.remove(&NodeId(*id));
                            changed.insert(NodeId(*id));
                        }
                    }
                }
                let full = t.elect_primaries(&old.primaries);
                let mut reference = t.clone();
                let reference_changed = reference.reelect_all();
                let moved = t.update_routes(&old, changed);
                prop_assert_eq!(&*t.primaries, &full);
                prop_assert_eq!(&*reference.primaries, &full);
                prop_assert_eq!(&t.routes, &reference.routes);
                prop_assert_eq!(moved, reference_changed);
            }
        }
    }

    #[test]
    fn primary_is_sticky_while_online_then_fails_over() {
        let mut t = Tailnet::default();
        for id in 1..=3 {
            t.nodes.insert(NodeId(id), Arc::new(node(id, &[0], &[0])));
        }
        t.online.insert(NodeId(2));
        t.online.insert(NodeId(3));
        let old = t.clone();
        t.update_routes(&old, [NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(t.primaries.get(&route(0)), Some(&NodeId(2)), "first online");
        let old = t.clone();
        t.online.insert(NodeId(1));
        let moved = t.update_routes(&old, [NodeId(1)]);
        assert_eq!(t.primaries.get(&route(0)), Some(&NodeId(2)), "sticky");
        assert!(moved.is_empty());
        let old = t.clone();
        t.online.remove(&NodeId(2));
        let moved = t.update_routes(&old, [NodeId(2)]);
        assert_eq!(t.primaries.get(&route(0)), Some(&NodeId(1)), "fails over");
        assert_eq!(moved, BTreeSet::from([NodeId(1), NodeId(2)]));
        // Every router offline: nobody serves the route (no offline primary).
        let old = t.clone();
        t.online.clear();
        let moved = t.update_routes(&old, [NodeId(1), NodeId(3)]);
        assert_eq!(
            t.primaries.get(&route(0)),
            None,
            "no online router, no primary"
        );
        assert_eq!(moved, BTreeSet::from([NodeId(1)]));
        assert!(t.elect_primaries(&t.primaries).is_empty());
    }
}
