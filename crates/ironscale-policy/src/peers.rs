//! Peer visibility and routes: who appears in whose netmap, and which of a
//! peer's routes a viewer may use (`AllowedIPs`, `PrimaryRoutes`).
//!
//! A node sees another when either may send to the other under some rule
//! (addresses, approved subnet routes, exit routes and `autogroup:self`
//! count). A peer's primary subnet route is offered to a viewer that may
//! reach it, that it may reach the viewer from, or that stands by for the
//! same route; via grants steer a viewer to the via routers instead.

use ipnet::IpNet;
use ironscale_types::NodeId;

use crate::compile::CompiledPolicy;
use crate::ipset;

/// The node indexes met so far (sorted and deduplicated at the end), so
/// that collecting a node's peers costs what it finds, not the tailnet.
struct Marks {
    mark: Vec<u32>,
    all: bool,
}

impl Marks {
    fn add(&mut self, v: &[u32]) {
        self.mark.extend_from_slice(v);
    }
}

impl CompiledPolicy {
    /// The peers of a node, in node-id order.
    pub fn peers(&self, id: NodeId) -> Vec<NodeId> {
        let Some(i) = self.idx(id) else {
            return Vec::new();
        };
        let mut v: Vec<NodeId> = self
            .peers_of(i)
            .into_iter()
            .map(|j| self.node(j).id)
            .collect();
        v.sort();
        v
    }

    pub(crate) fn peers_of(&self, i: u32) -> Vec<u32> {
        let node = self.node(i);
        let (mut v, everyone) = self.peers_of_info(
            node,
            &self.node_srcs[i as usize],
            &self.node_dsts[i as usize],
            &self.node_via[i as usize],
        );
        if everyone {
            v = (0..self.topo.nodes.len() as u32)
                .filter(|&j| self.topo.nodes[j as usize].alive)
                .collect();
        }
        v.retain(|&j| j != i);
        v
    }

    /// Peers of a node given its memberships (source groups, destination
    /// groups, via rules reaching it): the node indexes, or `true` when it
    /// sees every node.
    pub(crate) fn peers_of_info(
        &self,
        node: &crate::topology::NodeInfo,
        srcs: &[u32],
        dsts: &[u32],
        via: &[(u32, u16)],
    ) -> (Vec<u32>, bool) {
        let mut m = Marks {
            mark: Vec::new(),
            all: false,
        };
        if node.alive {
            self.mark_peers(node, srcs, dsts, via, &mut m);
        }
        if m.all {
            return (Vec::new(), true);
        }
        let mut v = m.mark;
        crate::resolve::sort_dedup(&mut v);
        v.retain(|&j| {
            let n = &self.topo.nodes[j as usize];
            n.alive && n.id != node.id
        });
        (v, false)
    }

    fn mark_peers(
        &self,
        node: &crate::topology::NodeInfo,
        srcs: &[u32],
        dsts: &[u32],
        via: &[(u32, u16)],
        m: &mut Marks,
    ) {
        let mut seen_dst = vec![false; self.dst_groups.len()];
        let mut seen_src = vec![false; self.src_groups.len()];
        // What this node may send to.
        for &sg in srcs.iter().chain(self.all_src_groups.iter()) {
            for &ri in &self.src_groups[sg as usize].rules {
                let r = &self.rules[ri as usize];
                for d in &r.dsts {
                    if !r.via.is_empty() {
                        m.add(&d.via_targets);
                        continue;
                    }
                    let g = &self.dst_groups[d.group as usize];
                    if g.res.wildcard {
                        m.all = true;
                        return;
                    }
                    if g.res.self_devices {
                        if let Some(u) = node.user {
                            m.add(&self.topo.by_user[u as usize]);
                        }
                        continue;
                    }
                    if !seen_dst[d.group as usize] {
                        seen_dst[d.group as usize] = true;
                        m.add(&g.targets);
                    }
                }
            }
        }
        // Who may send to this node.
        let mut src_of = |sg: u32, m: &mut Marks| {
            if seen_src[sg as usize] {
                return;
            }
            seen_src[sg as usize] = true;
            let g = &self.src_groups[sg as usize];
            if g.res.all_nodes {
                m.all = true;
            } else {
                m.add(&g.nodes);
            }
        };
        for &g in dsts.iter().chain(self.star_groups.iter()) {
            for &(ri, _) in &self.dst_groups[g as usize].uses {
                src_of(self.rules[ri as usize].src, m);
                if m.all {
                    return;
                }
            }
        }
        for &(ri, _) in via {
            src_of(self.rules[ri as usize].src, m);
        }
        if let Some(u) = node.user {
            for &g in &self.self_groups {
                for &(ri, _) in &self.dst_groups[g as usize].uses {
                    let srcs = self.self_src_nodes(&self.rules[ri as usize], u);
                    m.add(&srcs);
                }
            }
        }
    }

    /// Whether `a` may send to `b` under some rule.
    fn may_send(&self, a: u32, b: u32) -> bool {
        let na = self.node(a);
        let nb = self.node(b);
        let same_user = na.user.is_some() && na.user == nb.user;
        let srcs = self.node_srcs[a as usize]
            .iter()
            .chain(self.all_src_groups.iter());
        for &sg in srcs {
            for &ri in &self.src_groups[sg as usize].rules {
                let r = &self.rules[ri as usize];
                for d in &r.dsts {
                    if !r.via.is_empty() {
                        if d.via_targets.contains(&b) {
                            return true;
                        }
                        continue;
                    }
                    let g = &self.dst_groups[d.group as usize];
                    if g.res.wildcard
                        || (g.res.self_devices && same_user)
                        || (!g.res.self_devices && g.targets.binary_search(&b).is_ok())
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Whether node `a` sees node `b` as a peer.
    pub fn can_see(&self, a: NodeId, b: NodeId) -> bool {
        match (self.idx(a), self.idx(b)) {
            (Some(x), Some(y)) if x != y => self.may_send(x, y) || self.may_send(y, x),
            _ => false,
        }
    }

    /// Whether node `a` may reach addresses in `route` under a plain
    /// (non-via) rule.
    fn may_reach_set(&self, a: u32, route: &IpNet) -> bool {
        let srcs = self.node_srcs[a as usize]
            .iter()
            .chain(self.all_src_groups.iter());
        for &sg in srcs {
            for &ri in &self.src_groups[sg as usize].rules {
                let r = &self.rules[ri as usize];
                if !r.via.is_empty() {
                    continue;
                }
                for d in &r.dsts {
                    let g = &self.dst_groups[d.group as usize];
                    if g.res.wildcard || (g.res.internet && ipset::is_exit_route(route)) {
                        return true;
                    }
                    if !g.res.internet && !g.res.self_devices && g.res.set.overlaps_prefix(route) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// Whether traffic from addresses in `route` may reach node `b`
    /// (`autogroup:self` never admits a route: its sources are devices).
    fn route_may_send(&self, route: &IpNet, b: u32) -> bool {
        let groups = self.node_dsts[b as usize]
            .iter()
            .chain(self.star_groups.iter());
        for &g in groups {
            for &(ri, _) in &self.dst_groups[g as usize].uses {
                let s = self.src_group(&self.rules[ri as usize]);
                if s.res.danger_all || s.res.set.overlaps_prefix(route) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether `p` is the first (lowest id) node carrying one of `tags`
    /// with route `x` approved.
    fn via_primary(&self, tags: &[String], x: &IpNet, p: u32) -> bool {
        let mut best: Option<(NodeId, u32)> = None;
        for (i, n) in self.topo.nodes.iter().enumerate() {
            if n.alive
                && tags.iter().any(|t| n.has_tag(t))
                && self.subnets[i].contains(x)
                && best.is_none_or(|b| n.id < b.0)
            {
                best = Some((n.id, i as u32));
            }
        }
        best.is_some_and(|b| b.1 == p)
    }

    /// Routes through `p` that via grants steer `v` to (`include`) or away
    /// from (`exclude`); routes in `use_primary` fall back to the global
    /// primary because a plain grant also covers them.
    fn via_routes(&self, v: u32, p: u32) -> (Vec<IpNet>, Vec<IpNet>, Vec<IpNet>) {
        let mut inc: Vec<IpNet> = Vec::new();
        let mut exc: Vec<IpNet> = Vec::new();
        let mut use_primary: Vec<IpNet> = Vec::new();
        let pn = self.node(p);
        let mut any = false;
        for r in self.rules.iter() {
            if r.via.is_empty() || !self.src_group(r).covers(v) {
                continue;
            }
            any = true;
            let tagged = r.via.iter().any(|t| pn.has_tag(t));
            for d in &r.dsts {
                let g = &self.dst_groups[d.group as usize];
                let mut matched: Vec<IpNet> = self.subnets[p as usize]
                    .iter()
                    .filter(|x| g.res.set.overlaps_prefix(x))
                    .copied()
                    .collect();
                if g.res.internet {
                    matched.extend(self.exits[p as usize].iter().copied());
                }
                for x in matched {
                    if tagged && (ipset::is_exit_route(&x) || self.via_primary(&r.via, &x, p)) {
                        inc.push(x);
                    } else {
                        exc.push(x);
                    }
                }
            }
        }
        if !any {
            return (inc, exc, use_primary);
        }
        let srcs = self.node_srcs[v as usize]
            .iter()
            .chain(self.all_src_groups.iter());
        for &sg in srcs {
            for &ri in &self.src_groups[sg as usize].rules {
                let r = &self.rules[ri as usize];
                if !r.via.is_empty() {
                    continue;
                }
                for d in &r.dsts {
                    let g = &self.dst_groups[d.group as usize];
                    let covers = |x: &IpNet| {
                        g.res.wildcard || (!g.res.self_devices && g.res.set.overlaps_prefix(x))
                    };
                    for x in &inc {
                        if covers(x) && !use_primary.contains(x) {
                            use_primary.push(*x);
                        }
                    }
                    exc.retain(|x| !covers(x));
                }
            }
        }
        inc.retain(|x| !exc.contains(x) || use_primary.contains(x));
        (inc, exc, use_primary)
    }

    /// The routes `v` may use through `p` (subnets first, then exit).
    pub(crate) fn peer_routes(&self, v: u32, p: u32) -> Vec<IpNet> {
        if self.primaries[p as usize].is_empty()
            && self.exits[p as usize].is_empty()
            && self.subnets[p as usize].is_empty()
        {
            return Vec::new();
        }
        let (inc, exc, use_primary) = self.via_routes(v, p);
        let mut out = Vec::new();
        for r in &self.primaries[p as usize] {
            if exc.contains(r) {
                continue;
            }
            // A standby router for the same route learns the primary's.
            let standby = self.subnets[v as usize].contains(r);
            if standby || inc.contains(r) || self.may_reach_set(v, r) || self.route_may_send(r, v) {
                out.push(*r);
            }
        }
        for r in &inc {
            if !out.contains(r) && !use_primary.contains(r) && !ipset::is_exit_route(r) {
                out.push(*r);
            }
        }
        for r in &self.exits[p as usize] {
            if exc.contains(r) {
                continue;
            }
            if inc.contains(r) || self.may_reach_set(v, r) {
                out.push(*r);
            }
        }
        out
    }

    fn v4_disabled(&self, i: u32) -> bool {
        self.node_caps[i as usize].contains_key("disable-ipv4")
    }

    /// Addresses of `p` as `v` sees them: IPv6 only when either has the
    /// `disable-ipv4` attribute.
    pub(crate) fn visible_ips(&self, v: u32, p: u32) -> Vec<IpNet> {
        let v6_only = self.v4_disabled(v) || self.v4_disabled(p);
        self.node(p)
            .ips
            .iter()
            .filter(|ip| !(v6_only && ip.is_ipv4()))
            .map(|ip| ipset::host_prefix(*ip))
            .collect()
    }

    /// A peer's addresses as the viewer sees them in its netmap.
    pub fn peer_addresses(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) => self.visible_ips(v, p),
            _ => Vec::new(),
        }
    }

    /// What `viewer` may route through `peer`: the peer's addresses, then
    /// its primary subnet routes and exit routes the viewer may use.
    pub fn allowed_ips(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) => {
                let mut out = self.visible_ips(v, p);
                out.extend(self.peer_routes(v, p));
                out
            }
            _ => Vec::new(),
        }
    }

    /// The subnet routes `peer` is primary for, as `viewer` sees them
    /// (for `viewer == peer`: the node's own primary routes).
    pub fn primary_routes(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) if v == p => self.primaries[p as usize].clone(),
            (Some(v), Some(p)) => self
                .peer_routes(v, p)
                .into_iter()
                .filter(|r| !ipset::is_exit_route(r))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The node's own allowed IPs: its addresses and approved routes.
    pub fn self_allowed_ips(&self, id: NodeId) -> Vec<IpNet> {
        let Some(i) = self.idx(id) else {
            return Vec::new();
        };
        let mut out: Vec<IpNet> = self.visible_ips(i, i);
        out.extend(self.subnets[i as usize].iter().copied());
        out.extend(self.exits[i as usize].iter().copied());
        out
    }
}
