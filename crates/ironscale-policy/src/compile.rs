//! Binding a policy to a tailnet: alias resolution, rule compilation into
//! per-node indexes, and the per-node queries (filter, peers, routes).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use ironscale_types::{Node, NodeId, User, UserId};

use crate::ast::*;
use crate::error::{ErrorKind, PolicyError};
use crate::ipset::{self, IpSet};
use crate::output::*;
use crate::topology::{NodeInfo, Topology};
use crate::Policy;

/// Facts about the tailnet that the policy file does not carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tailnet {
    /// Domains that belong to the tailnet, for `user:*@domain` and
    /// `localpart:*@domain`. Empty: the domain of every known user's e-mail.
    pub domains: Vec<String>,
    /// The tailnet owner (`autogroup:owner`).
    pub owner: Option<UserId>,
    /// Admins (`autogroup:admin`); the owner counts as one.
    pub admins: Vec<UserId>,
    /// Base URL of the control server, for SSH `check` actions.
    pub control_url: String,
    /// Whether the tailnet suggests exit nodes to clients: approved exit
    /// nodes then carry `suggest-exit-node` in their peer capability map.
    pub suggest_exit_nodes: bool,
}

impl Default for Tailnet {
    fn default() -> Self {
        Tailnet { domains: Vec::new(), owner: None, admins: Vec::new(), control_url: String::new(), suggest_exit_nodes: false }
    }
}

/// A change to one node, for [`CompiledPolicy::affected`] and
/// [`CompiledPolicy::update_node`].
#[derive(Debug, Clone)]
pub enum Change {
    /// The node joined (or changed: tags, user, routes, addresses).
    Upsert(Node),
    /// The node left.
    Remove(NodeId),
}

/// A set of node indexes: everything, or a sorted list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeSet {
    All,
    List(Vec<u32>),
}

impl NodeSet {
    pub fn contains(&self, n: u32) -> bool {
        match self {
            NodeSet::All => true,
            NodeSet::List(v) => v.binary_search(&n).is_ok(),
        }
    }
    pub fn is_empty(&self) -> bool {
        matches!(self, NodeSet::List(v) if v.is_empty())
    }
}

fn sort_dedup(v: &mut Vec<u32>) {
    v.sort_unstable();
    v.dedup();
}

/// What one alias (or a list of them) stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    /// Nodes named by identity or whose address is covered.
    pub nodes: Vec<u32>,
    /// Node identity members only (users, groups, tags, autogroups).
    pub ident: Vec<u32>,
    /// Address items: their text (as in filters) and their addresses.
    pub nets: Vec<(Arc<str>, IpSet)>,
    /// Every address covered (node addresses and `nets`).
    pub set: IpSet,
    pub all_nodes: bool,
    pub wildcard: bool,
    pub danger_all: bool,
    pub internet: bool,
    pub self_devices: bool,
}

impl Resolved {
    fn merge(&mut self, o: Resolved) {
        self.nodes.extend(o.nodes);
        self.ident.extend(o.ident);
        self.nets.extend(o.nets);
        self.set.add_set(&o.set);
        self.all_nodes |= o.all_nodes;
        self.wildcard |= o.wildcard;
        self.danger_all |= o.danger_all;
        self.internet |= o.internet;
        self.self_devices |= o.self_devices;
    }
    fn finish(&mut self) {
        sort_dedup(&mut self.nodes);
        sort_dedup(&mut self.ident);
    }
    pub fn node_set(&self) -> NodeSet {
        if self.all_nodes {
            NodeSet::All
        } else {
            NodeSet::List(self.nodes.clone())
        }
    }
}

/// One destination of a compiled rule.
#[derive(Debug, Clone)]
pub(crate) struct CDst {
    pub ports: Vec<PortRange>,
    pub res: Resolved,
    pub alias: Alias,
}

/// A compiled rule: one ACL entry, or one `ip` element / the `app` part
/// of a grant.
#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub src: Resolved,
    pub src_strs: Arc<[Arc<str>]>,
    pub src_key: u64,
    pub protos: Vec<u8>,
    pub dsts: Vec<CDst>,
    /// `Some` for application-capability rules.
    pub app: Option<Arc<CapMap>>,
    pub via: Vec<String>,
    /// Companion of an app rule (drive-sharer, relay-target): reversed.
    pub companion: bool,
}

/// The policy bound to users and nodes, with indexes for per-node queries.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) pol: Arc<Policy>,
    pub(crate) tailnet: Tailnet,
    pub(crate) topo: Topology,
    pub(crate) rules: Vec<CRule>,
    /// Per node: (rule, dst) pairs whose destination covers the node by
    /// identity, address, subnet route or exit route.
    pub(crate) node_dsts: Vec<Vec<(u32, u16)>>,
    /// (rule, dst) pairs with a `*` destination (every node).
    pub(crate) star_dsts: Vec<(u32, u16)>,
    /// (rule, dst) pairs with an `autogroup:self` destination.
    pub(crate) self_dsts: Vec<(u32, u16)>,
    /// Per node: rules whose source covers it (rules covering all nodes are
    /// in `star_srcs`).
    pub(crate) node_srcs: Vec<Vec<u32>>,
    pub(crate) star_srcs: Vec<u32>,
    /// Per rule: the nodes it may reach (not counting `autogroup:self`).
    pub(crate) rule_dst_nodes: Vec<NodeSet>,
    /// Per node: approved subnet routes (not exit routes).
    pub(crate) subnets: Vec<Vec<IpNet>>,
    /// Per node: approved exit routes.
    pub(crate) exits: Vec<Vec<IpNet>>,
    /// Per node: subnet routes it is primary for.
    pub(crate) primaries: Vec<Vec<IpNet>>,
    pub(crate) all_subnet_strs: Vec<Arc<str>>,
    pub(crate) subnet_set: IpSet,
    pub(crate) admins: Vec<u32>,
    pub(crate) owner: Option<u32>,
    pub(crate) node_caps: Vec<CapMap>,
    pub(crate) ssh: crate::ssh::CompiledSsh,
}

pub(crate) fn arc_strs(v: BTreeSet<Arc<str>>) -> Arc<[Arc<str>]> {
    v.into_iter().collect::<Vec<_>>().into()
}

fn key_of(strs: &[Arc<str>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    strs.hash(&mut h);
    h.finish()
}

fn ip_str(a: &IpAddr) -> Arc<str> {
    Arc::from(a.to_string())
}

/// Capabilities that come with a companion capability, granted back from
/// the destinations to the sources.
const COMPANIONS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

pub(crate) struct Ctx<'a> {
    pub pol: &'a Policy,
    pub topo: &'a Topology,
    pub tailnet: &'a Tailnet,
    pub subnet_strs: &'a [Arc<str>],
    pub subnet_set: &'a IpSet,
    pub admins: Vec<u32>,
    pub owner: Option<u32>,
}

impl Ctx<'_> {
    fn user_nodes(&self, users: &[u32]) -> Vec<u32> {
        let mut v: Vec<u32> = users.iter().flat_map(|&u| self.topo.by_user[u as usize].iter().copied()).collect();
        sort_dedup(&mut v);
        v
    }

    fn users_of_token(&self, token: &str) -> Vec<u32> {
        self.topo.users_matching(token)
    }

    fn users_of_domain(&self, domain: &str) -> Vec<u32> {
        (0..self.topo.users.len() as u32)
            .filter(|&u| self.topo.users[u as usize].domain() == Some(domain))
            .collect()
    }

    /// Users an alias in a group or owner list names.
    pub fn users_of(&self, a: &Alias) -> Vec<u32> {
        match a {
            Alias::User(t) => self.users_of_token(t),
            Alias::BareUser(n) => self.users_of_token(n),
            Alias::UserDomain(d) => self.users_of_domain(d),
            Alias::Group(g) => {
                let mut v = Vec::new();
                if let Some(def) = self.pol.groups.iter().find(|d| d.name.value == *g) {
                    for m in &def.members {
                        v.extend(self.users_of(&m.value));
                    }
                }
                sort_dedup(&mut v);
                v
            }
            Alias::AutoGroup(AutoGroup::Admin) => self.admins.clone(),
            Alias::AutoGroup(AutoGroup::Owner) => self.owner.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    fn nodes_res(&self, nodes: Vec<u32>) -> Resolved {
        let mut set = IpSet::new();
        for &n in &nodes {
            for ip in &self.topo.nodes[n as usize].ips {
                set.add_addr(*ip);
            }
        }
        Resolved { ident: nodes.clone(), nodes, set, ..Default::default() }
    }

    fn net_res(&self, text: Arc<str>, set: IpSet) -> Resolved {
        let mut nodes = Vec::new();
        for (a, b) in set.ranges() {
            self.topo.nodes_in_range(a, b, &mut nodes);
        }
        Resolved { nodes, nets: vec![(text, set.clone())], set, ..Default::default() }
    }

    /// Resolve one alias against the tailnet.
    pub fn resolve(&self, a: &Alias) -> Resolved {
        let mut r = match a {
            Alias::Wildcard => {
                let mut set = ipset::tailnet_ranges();
                set.add_set(self.subnet_set);
                let mut nets: Vec<(Arc<str>, IpSet)> = Vec::new();
                for s in ipset::TAILNET_SRC_STRINGS {
                    nets.push((Arc::from(s), IpSet::new()));
                }
                for s in self.subnet_strs {
                    nets.push((s.clone(), IpSet::new()));
                }
                Resolved {
                    nodes: (0..self.topo.nodes.len() as u32).collect(),
                    nets,
                    set,
                    all_nodes: true,
                    wildcard: true,
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::DangerAll) => {
                let mut set = IpSet::from_prefix(&"0.0.0.0/0".parse().unwrap_or_else(|_| ipset::cgnat()));
                set.add_prefix(&"::/0".parse().unwrap_or_else(|_| ipset::tailscale_ula()));
                Resolved {
                    nodes: (0..self.topo.nodes.len() as u32).collect(),
                    nets: vec![(Arc::from("*"), IpSet::new())],
                    set,
                    all_nodes: true,
                    danger_all: true,
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::Internet) => {
                let set = ipset::internet();
                let nets = ipset::internet_strings().into_iter().map(|s| (Arc::from(s), IpSet::new())).collect();
                Resolved { nets, set, internet: true, ..Default::default() }
            }
            Alias::AutoGroup(AutoGroup::SelfDevices) => Resolved { self_devices: true, ..Default::default() },
            Alias::AutoGroup(AutoGroup::Member) => {
                let v = (0..self.topo.nodes.len() as u32)
                    .filter(|&i| self.topo.nodes[i as usize].user.is_some())
                    .collect();
                self.nodes_res(v)
            }
            Alias::AutoGroup(AutoGroup::Tagged) => {
                let v = (0..self.topo.nodes.len() as u32).filter(|&i| self.topo.nodes[i as usize].tagged()).collect();
                self.nodes_res(v)
            }
            Alias::AutoGroup(AutoGroup::NonRoot | AutoGroup::Shared) => Resolved::default(),
            Alias::AutoGroup(AutoGroup::Admin | AutoGroup::Owner)
            | Alias::User(_)
            | Alias::BareUser(_)
            | Alias::UserDomain(_)
            | Alias::Group(_) => {
                let users = self.users_of(a);
                self.nodes_res(self.user_nodes(&users))
            }
            Alias::Tag(t) => self.nodes_res(self.topo.by_tag.get(t).cloned().unwrap_or_default()),
            Alias::Host(h) => match self.pol.hosts.iter().find(|d| d.name.value == *h) {
                Some(def) => self.resolve(&def.value.value),
                None => Resolved::default(),
            },
            Alias::Prefix(p) => self.net_res(Arc::from(ipset::prefix_string(p)), IpSet::from_prefix(p)),
            Alias::Range(a, b) => {
                let mut s = IpSet::new();
                s.add_range(*a, *b);
                self.net_res(Arc::from(format!("{a}-{b}")), s)
            }
            Alias::IpSet(name) => {
                let mut set = IpSet::new();
                if let Some(def) = self.pol.ipsets.iter().find(|d| d.name.value == *name) {
                    for (remove, item) in &def.items {
                        let r = self.resolve(&item.value);
                        if *remove {
                            set = set.difference(&r.set);
                        } else {
                            set.add_set(&r.set);
                        }
                    }
                }
                let mut r = Resolved::default();
                for (a, b) in set.ranges() {
                    let mut one = IpSet::new();
                    one.add_range(a, b);
                    let text: Arc<str> = match one.prefixes().as_slice() {
                        [p] => Arc::from(ipset::prefix_string(p)),
                        _ if a == b => ip_str(&a),
                        _ => Arc::from(format!("{a}-{b}")),
                    };
                    r.merge(self.net_res(text, one));
                }
                r
            }
        };
        r.finish();
        r
    }

    /// The strings a resolved source contributes to `SrcIPs`.
    pub fn src_strings(&self, r: &Resolved, out: &mut BTreeSet<Arc<str>>) {
        if r.danger_all {
            out.insert(Arc::from("*"));
            return;
        }
        for (s, _) in &r.nets {
            out.insert(s.clone());
        }
        for &n in &r.ident {
            for ip in &self.topo.nodes[n as usize].ips {
                out.insert(ip_str(ip));
            }
        }
    }
}

/// Route approval: announced routes approved explicitly or by
/// `autoApprovers`.
fn approve_routes(ctx: &Ctx<'_>, n: u32) -> (Vec<IpNet>, Vec<IpNet>) {
    let node = &ctx.topo.nodes[n as usize];
    let mut subnets = Vec::new();
    let mut exits = Vec::new();
    for r in &node.announced {
        let explicit = node.approved.contains(r);
        let auto = || {
            if ipset::is_exit_route(r) {
                ctx.pol.auto_approvers.exit_node.iter().any(|a| approver_matches(ctx, &a.value, n))
            } else {
                ctx.pol.auto_approvers.routes.iter().any(|(p, approvers)| {
                    p.value.contains(r) && approvers.iter().any(|a| approver_matches(ctx, &a.value, n))
                })
            }
        };
        if explicit || auto() {
            if ipset::is_exit_route(r) {
                exits.push(*r);
            } else {
                subnets.push(*r);
            }
        }
    }
    (subnets, exits)
}

fn approver_matches(ctx: &Ctx<'_>, a: &Alias, n: u32) -> bool {
    let node = &ctx.topo.nodes[n as usize];
    match a {
        Alias::Tag(t) => node.has_tag(t),
        Alias::AutoGroup(AutoGroup::Tagged) => node.tagged(),
        Alias::AutoGroup(AutoGroup::Member) => node.user.is_some(),
        Alias::User(_) | Alias::BareUser(_) | Alias::Group(_) | Alias::UserDomain(_) | Alias::AutoGroup(_) => {
            node.user.is_some_and(|u| ctx.users_of(a).contains(&u))
        }
        other => {
            let r = ctx.resolve(other);
            node.ips.iter().any(|ip| r.set.contains(*ip))
        }
    }
}

impl CompiledPolicy {
    /// Bind `policy` to the tailnet's users and nodes, then run the
    /// policy's `tests` and `sshTests` (a failing test is an error).
    pub fn compile(policy: &Policy, users: &[User], nodes: &[Node], tailnet: &Tailnet) -> Result<CompiledPolicy, PolicyError> {
        let topo = Topology::build(users, nodes);
        let c = Self::build(Arc::new(policy.clone()), topo, tailnet.clone())?;
        crate::policytests::run(&c)?;
        Ok(c)
    }

    pub(crate) fn build(pol: Arc<Policy>, topo: Topology, tailnet: Tailnet) -> Result<CompiledPolicy, PolicyError> {
        let uidx = |id: UserId| topo.users.iter().position(|u| u.id == id).map(|i| i as u32);
        let owner = tailnet.owner.and_then(uidx);
        let mut admins: Vec<u32> = tailnet.admins.iter().filter_map(|&id| uidx(id)).collect();
        admins.extend(owner);
        sort_dedup(&mut admins);

        check_domains(&pol, &topo, &tailnet)?;

        // Routes first: `*` as a source includes approved subnets.
        let n = topo.nodes.len();
        let mut subnets = vec![Vec::new(); n];
        let mut exits = vec![Vec::new(); n];
        {
            let empty_strs: Vec<Arc<str>> = Vec::new();
            let empty_set = IpSet::new();
            let ctx = Ctx { pol: &pol, topo: &topo, tailnet: &tailnet, subnet_strs: &empty_strs, subnet_set: &empty_set, admins: admins.clone(), owner };
            for i in 0..n as u32 {
                let (s, e) = approve_routes(&ctx, i);
                subnets[i as usize] = s;
                exits[i as usize] = e;
            }
        }
        let mut sub_strs: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut sub_set = IpSet::new();
        for s in subnets.iter().flatten() {
            sub_strs.insert(Arc::from(ipset::prefix_string(s)));
            sub_set.add_prefix(s);
        }
        let all_subnet_strs: Vec<Arc<str>> = sub_strs.into_iter().collect();
        // Primary election: the first (lowest id) node approved for a route.
        let mut primaries = vec![Vec::new(); n];
        let mut seen: HashMap<IpNet, u32> = HashMap::new();
        for (i, s) in subnets.iter().enumerate() {
            for r in s {
                seen.entry(*r).or_insert(i as u32);
            }
        }
        for (r, i) in &seen {
            primaries[*i as usize].push(*r);
        }
        for p in &mut primaries {
            p.sort();
        }

        let ctx = Ctx {
            pol: &pol,
            topo: &topo,
            tailnet: &tailnet,
            subnet_strs: &all_subnet_strs,
            subnet_set: &sub_set,
            admins: admins.clone(),
            owner,
        };
        let rules = compile_rules(&ctx);
        let node_caps = crate::nodeattrs::node_caps(&ctx);
        let ssh = crate::ssh::compile(&ctx, &subnets);

        let mut c = CompiledPolicy {
            pol: pol.clone(),
            tailnet: tailnet.clone(),
            topo: Topology::default(),
            rules,
            node_dsts: vec![Vec::new(); n],
            star_dsts: Vec::new(),
            self_dsts: Vec::new(),
            node_srcs: vec![Vec::new(); n],
            star_srcs: Vec::new(),
            rule_dst_nodes: Vec::new(),
            subnets,
            exits,
            primaries,
            all_subnet_strs: all_subnet_strs.clone(),
            subnet_set: sub_set.clone(),
            admins,
            owner,
            node_caps,
            ssh,
        };
        c.topo = topo;
        c.index();
        Ok(c)
    }

    /// Build the per-node indexes from the compiled rules.
    fn index(&mut self) {
        let n = self.topo.nodes.len();
        // Routers whose approved subnets overlap a rule's source addresses
        // send from those subnets, so they count as sources.
        let routers: Vec<u32> = (0..n as u32).filter(|&i| !self.subnets[i as usize].is_empty()).collect();
        if !routers.is_empty() {
            for r in &mut self.rules {
                if r.src.all_nodes {
                    continue;
                }
                let mut add = Vec::new();
                for &rn in &routers {
                    let hit = r.src.nets.iter().any(|(_, set)| {
                        self.subnets[rn as usize].iter().any(|s| set.overlaps_prefix(s))
                    });
                    if hit {
                        add.push(rn);
                    }
                }
                if !add.is_empty() {
                    r.src.nodes.extend(add);
                    sort_dedup(&mut r.src.nodes);
                }
            }
        }
        let exit_nodes: Vec<u32> = (0..n as u32).filter(|&i| !self.exits[i as usize].is_empty()).collect();
        let route_nodes: Vec<u32> = (0..n as u32).filter(|&i| !self.subnets[i as usize].is_empty()).collect();
        let internet = ipset::internet();
        for (ri, r) in self.rules.iter().enumerate() {
            let ri = ri as u32;
            if !r.via.is_empty() {
                // Via rules reach only the via routers (see `via_targets`).
                let mut all = Vec::new();
                for (di, d) in r.dsts.iter().enumerate() {
                    for t in self.via_targets(r, d) {
                        self.node_dsts[t as usize].push((ri, di as u16));
                        all.push(t);
                    }
                }
                sort_dedup(&mut all);
                self.rule_dst_nodes.push(NodeSet::List(all));
            } else {
                let mut all: Vec<u32> = Vec::new();
                let mut star = false;
                for (di, d) in r.dsts.iter().enumerate() {
                    let di = di as u16;
                    if d.res.wildcard {
                        self.star_dsts.push((ri, di));
                        star = true;
                        continue;
                    }
                    if d.res.self_devices {
                        self.self_dsts.push((ri, di));
                        continue;
                    }
                    let mut t: Vec<u32> = d.res.nodes.clone();
                    if d.res.internet {
                        t.extend(&exit_nodes);
                    } else {
                        for &rn in &route_nodes {
                            if self.subnets[rn as usize].iter().any(|s| d.res.set.overlaps_prefix(s)) {
                                t.push(rn);
                            }
                        }
                        if !d.res.nets.is_empty() && !d.res.set.is_empty() && internet.is_superset(&d.res.set) {
                            t.extend(&exit_nodes);
                        }
                    }
                    sort_dedup(&mut t);
                    for &x in &t {
                        self.node_dsts[x as usize].push((ri, di));
                    }
                    all.extend(t);
                }
                sort_dedup(&mut all);
                self.rule_dst_nodes.push(if star { NodeSet::All } else { NodeSet::List(all) });
            }
            if r.src.all_nodes {
                self.star_srcs.push(ri);
            } else {
                for &x in &r.src.nodes {
                    self.node_srcs[x as usize].push(ri);
                }
            }
        }
        for v in &mut self.node_dsts {
            v.sort_unstable();
            v.dedup();
        }
    }

    /// Via routers for one destination of a via rule: nodes carrying one of
    /// the via tags with an approved route overlapping the destination
    /// (or approved exit routes, for `autogroup:internet`).
    fn via_targets(&self, r: &CRule, d: &CDst) -> Vec<u32> {
        let mut out = Vec::new();
        for (i, node) in self.topo.nodes.iter().enumerate() {
            if !r.via.iter().any(|t| node.has_tag(t)) {
                continue;
            }
            let hit = if d.res.internet {
                !self.exits[i].is_empty()
            } else {
                self.subnets[i].iter().any(|s| d.res.set.overlaps_prefix(s))
            };
            if hit {
                out.push(i as u32);
            }
        }
        out
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx {
            pol: &self.pol,
            topo: &self.topo,
            tailnet: &self.tailnet,
            subnet_strs: &self.all_subnet_strs,
            subnet_set: &self.subnet_set,
            admins: self.admins.clone(),
            owner: self.owner,
        }
    }

    pub(crate) fn resolve_alias(&self, a: &Alias) -> Resolved {
        self.ctx().resolve(a)
    }

    pub fn node_count(&self) -> usize {
        self.topo.nodes.len()
    }

    pub(crate) fn idx(&self, id: NodeId) -> Option<u32> {
        self.topo.by_id.get(&id).copied()
    }

    pub(crate) fn node(&self, i: u32) -> &NodeInfo {
        &self.topo.nodes[i as usize]
    }

    /// The node ids the policy knows, in id order.
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.topo.nodes.iter().map(|n| n.id)
    }

    /// Source nodes of a rule as seen from destination `dst` (for
    /// `autogroup:self`, only the destination user's devices).
    fn self_src_nodes(&self, r: &CRule, user: u32) -> Vec<u32> {
        self.topo.by_user[user as usize].iter().copied().filter(|&m| r.src.all_nodes || r.src.nodes.binary_search(&m).is_ok()).collect()
    }

    /// The packet filter for a node: the rules whose destinations include
    /// it, reduced to the destinations that concern it. Empty when the
    /// node is unknown.
    pub fn filter_rules(&self, id: NodeId) -> Vec<FilterRule> {
        let Some(i) = self.idx(id) else { return Vec::new() };
        self.filter_for(i)
    }

    pub(crate) fn filter_for(&self, i: u32) -> Vec<FilterRule> {
        let node = self.node(i);
        let mut pairs: Vec<(u32, u16)> = Vec::with_capacity(self.node_dsts[i as usize].len() + self.star_dsts.len());
        pairs.extend_from_slice(&self.node_dsts[i as usize]);
        pairs.extend_from_slice(&self.star_dsts);
        if node.user.is_some() {
            pairs.extend_from_slice(&self.self_dsts);
        }
        pairs.sort_unstable();
        pairs.dedup();

        let mut out: Vec<FilterRule> = Vec::new();
        let mut keys: Vec<(u64, Vec<u8>, usize)> = Vec::new();
        let mut k = 0;
        while k < pairs.len() {
            let ri = pairs[k].0;
            let mut dis = Vec::new();
            while k < pairs.len() && pairs[k].0 == ri {
                dis.push(pairs[k].1);
                k += 1;
            }
            let r = &self.rules[ri as usize];
            // Self destinations get their own rule (sources narrowed to the
            // node's user); other destinations share the rule's sources.
            let (self_dis, other_dis): (Vec<u16>, Vec<u16>) =
                dis.into_iter().partition(|&d| r.dsts[d as usize].res.self_devices);
            if !other_dis.is_empty() {
                if r.src.self_devices {
                    // Companion of an app grant to autogroup:self: the
                    // sources are the node's own user's devices.
                    if let Some(u) = node.user {
                        let (strs, key) = self.user_src_strs(&self.topo.by_user[u as usize]);
                        self.emit(i, r, &other_dis, strs, key, &mut out, &mut keys);
                    }
                } else {
                    self.emit(i, r, &other_dis, r.src_strs.clone(), r.src_key, &mut out, &mut keys);
                }
            }
            if !self_dis.is_empty() {
                if let Some(u) = node.user {
                    let srcs = self.self_src_nodes(r, u);
                    if !srcs.is_empty() {
                        let (strs, key) = self.user_src_strs(&srcs);
                        self.emit(i, r, &self_dis, strs, key, &mut out, &mut keys);
                    }
                }
            }
        }
        out
    }

    fn user_src_strs(&self, nodes: &[u32]) -> (Arc<[Arc<str>]>, u64) {
        let mut strs = BTreeSet::new();
        for m in nodes {
            for ip in &self.node(*m).ips {
                strs.insert(ip_str(ip));
            }
        }
        let strs = arc_strs(strs);
        let key = key_of(&strs);
        (strs, key)
    }

    #[allow(clippy::too_many_arguments)]
    fn emit(
        &self,
        i: u32,
        r: &CRule,
        dis: &[u16],
        src: Arc<[Arc<str>]>,
        key: u64,
        out: &mut Vec<FilterRule>,
        keys: &mut Vec<(u64, Vec<u8>, usize)>,
    ) {
        let node = self.node(i);
        if let Some(cap) = &r.app {
            if !r.via.is_empty() {
                // Tailscale sends no CapGrant for via app grants.
                return;
            }
            let mut grants = Vec::new();
            for &di in dis {
                let d = &r.dsts[di as usize];
                let mut dsts: Vec<String> = Vec::new();
                if d.res.self_devices || d.res.wildcard || d.res.ident.binary_search(&i).is_ok() {
                    dsts.extend(node.ips.iter().map(|ip| ipset::host_prefix_string(*ip)));
                } else {
                    for ip in &node.ips {
                        if d.res.set.contains(*ip) {
                            dsts.push(ipset::host_prefix_string(*ip));
                        }
                    }
                    for (_, set) in &d.res.nets {
                        for p in set.prefixes() {
                            if self.subnets[i as usize].iter().any(|s| s.contains(&p.network()) || p.contains(&s.network())) {
                                dsts.push(p.to_string());
                            }
                        }
                    }
                }
                dsts.dedup();
                if !dsts.is_empty() {
                    grants.push(CapGrant { dsts, cap_map: cap.clone() });
                }
            }
            if !grants.is_empty() {
                out.push(FilterRule { src_ips: src, dst_ports: Vec::new(), ip_proto: Vec::new(), cap_grant: grants });
            }
            return;
        }
        let mut ports: Vec<NetPortRange> = Vec::new();
        for &di in dis {
            let d = &r.dsts[di as usize];
            if d.res.wildcard {
                for p in &d.ports {
                    ports.push(NetPortRange { ip: Arc::from("*"), ports: *p });
                }
                continue;
            }
            if d.res.self_devices || d.res.ident.binary_search(&i).is_ok() {
                for ip in &node.ips {
                    let s = ip_str(ip);
                    for p in &d.ports {
                        ports.push(NetPortRange { ip: s.clone(), ports: *p });
                    }
                }
            }
            if d.res.self_devices {
                continue;
            }
            let via = !r.via.is_empty();
            for (text, set) in &d.res.nets {
                let hit = if d.res.internet {
                    !self.exits[i as usize].is_empty()
                } else {
                    (!via && node.ips.iter().any(|ip| set.contains(*ip)))
                        || self.subnets[i as usize].iter().any(|s| set.overlaps_prefix(s))
                        || (!via && !self.exits[i as usize].is_empty() && ipset::internet().is_superset(set))
                };
                if hit {
                    for p in &d.ports {
                        ports.push(NetPortRange { ip: text.clone(), ports: *p });
                    }
                }
            }
        }
        if ports.is_empty() || src.is_empty() {
            return;
        }
        if let Some((_, _, at)) = keys.iter().find(|(k, pr, at)| *k == key && *pr == r.protos && out[*at].src_ips == src) {
            out[*at].dst_ports.extend(ports);
            return;
        }
        keys.push((key, r.protos.clone(), out.len()));
        out.push(FilterRule { src_ips: src, dst_ports: ports, ip_proto: r.protos.clone(), cap_grant: Vec::new() });
    }

    /// Whether rule `ri` reaches node `m` (as destination).
    fn rule_reaches(&self, ri: u32, m: u32) -> bool {
        self.rule_dst_nodes[ri as usize].contains(m)
    }

    fn rule_has_self(&self, ri: u32) -> bool {
        self.rules[ri as usize].dsts.iter().any(|d| d.res.self_devices)
    }

    fn src_covers(&self, ri: u32, m: u32) -> bool {
        let r = &self.rules[ri as usize];
        r.src.all_nodes || r.src.nodes.binary_search(&m).is_ok()
    }

    /// Whether `a` may send to `b` under some rule (addresses, routes and
    /// `autogroup:self` included).
    fn may_send(&self, a: u32, b: u32) -> bool {
        let na = self.node(a);
        let nb = self.node(b);
        let same_user = na.user.is_some() && na.user == nb.user;
        let check = |ri: u32| {
            self.rule_reaches(ri, b) || (same_user && self.rule_has_self(ri))
        };
        self.node_srcs[a as usize].iter().any(|&ri| check(ri)) || self.star_srcs.iter().any(|&ri| check(ri))
    }

    /// Whether node `a` sees node `b` as a peer: either may send to the
    /// other.
    pub fn can_see(&self, a: NodeId, b: NodeId) -> bool {
        match (self.idx(a), self.idx(b)) {
            (Some(x), Some(y)) if x != y => self.may_send(x, y) || self.may_send(y, x) || self.via_sees(x, y),
            _ => false,
        }
    }

    /// The peers of a node, in node-id order.
    pub fn peers(&self, id: NodeId) -> Vec<NodeId> {
        let Some(i) = self.idx(id) else { return Vec::new() };
        self.peers_of(i).into_iter().map(|j| self.node(j).id).collect()
    }

    pub(crate) fn peers_of(&self, i: u32) -> Vec<u32> {
        let n = self.topo.nodes.len();
        let mut mark = vec![false; n];
        let mut all = false;
        let node = self.node(i);
        let srcs = self.node_srcs[i as usize].iter().chain(self.star_srcs.iter());
        for &ri in srcs {
            match &self.rule_dst_nodes[ri as usize] {
                NodeSet::All => all = true,
                NodeSet::List(v) => v.iter().for_each(|&m| mark[m as usize] = true),
            }
            if self.rule_has_self(ri) {
                if let Some(u) = node.user {
                    self.topo.by_user[u as usize].iter().for_each(|&m| mark[m as usize] = true);
                }
            }
            if all {
                break;
            }
        }
        if !all {
            // Rules that reach this node: their sources see it.
            let mut dst_rules: Vec<u32> = self.node_dsts[i as usize].iter().map(|x| x.0).collect();
            dst_rules.extend(self.star_dsts.iter().map(|x| x.0));
            if node.user.is_some() {
                for &(ri, _) in &self.self_dsts {
                    if let Some(u) = node.user {
                        for m in self.self_src_nodes(&self.rules[ri as usize], u) {
                            mark[m as usize] = true;
                        }
                    }
                }
            }
            sort_dedup(&mut dst_rules);
            for ri in dst_rules {
                let r = &self.rules[ri as usize];
                if r.src.all_nodes {
                    all = true;
                    break;
                }
                r.src.nodes.iter().for_each(|&m| mark[m as usize] = true);
            }
        }
        let mut v: Vec<u32> = if all {
            (0..n as u32).collect()
        } else {
            (0..n as u32).filter(|&m| mark[m as usize]).collect()
        };
        for m in self.via_peers(i) {
            if !v.contains(&m) {
                v.push(m);
            }
        }
        v.sort_unstable();
        v.retain(|&m| m != i);
        v
    }

    /// Extra visibility from via grants: sources see the via routers.
    fn via_sees(&self, a: u32, b: u32) -> bool {
        self.via_peers(a).contains(&b)
    }

    fn via_peers(&self, _i: u32) -> Vec<u32> {
        Vec::new()
    }

    /// Whether traffic from `a`'s addresses may reach the address set
    /// `set` (a route) under some rule.
    fn may_reach_set(&self, a: u32, set: &IpNet) -> bool {
        let rules = self.node_srcs[a as usize].iter().chain(self.star_srcs.iter());
        for &ri in rules {
            let r = &self.rules[ri as usize];
            if !r.via.is_empty() {
                continue;
            }
            for d in &r.dsts {
                if d.res.wildcard || (d.res.internet && ipset::is_exit_route(set)) {
                    return true;
                }
                if !d.res.internet && !d.res.self_devices && d.res.set.overlaps_prefix(set) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether traffic from the route `set` may reach node `b`.
    fn set_may_send(&self, set: &IpNet, b: u32) -> bool {
        let nb = self.node(b);
        let _ = nb;
        // autogroup:self narrows sources to the user's own devices, so a
        // route never reaches a node through it.
        let mut rules: Vec<u32> = self.node_dsts[b as usize].iter().map(|x| x.0).collect();
        rules.extend(self.star_dsts.iter().map(|x| x.0));
        rules.iter().any(|&ri| {
            let r = &self.rules[ri as usize];
            r.via.is_empty() && (r.src.danger_all || r.src.set.overlaps_prefix(set))
        })
    }

    /// Whether `p` is the first (lowest id) node carrying one of `tags`
    /// with route `x` approved.
    fn via_primary(&self, tags: &[String], x: &IpNet, p: u32) -> bool {
        for (i, n) in self.topo.nodes.iter().enumerate() {
            if tags.iter().any(|t| n.has_tag(t)) && self.subnets[i].contains(x) {
                return i as u32 == p;
            }
        }
        false
    }

    /// Routes through `p` that via grants steer `v` to (`include`), or
    /// away from (`exclude`); routes in `use_primary` fall back to the
    /// global primary because a plain grant also covers them.
    fn via_routes(&self, v: u32, p: u32) -> (Vec<IpNet>, Vec<IpNet>, Vec<IpNet>) {
        let mut inc: Vec<IpNet> = Vec::new();
        let mut exc: Vec<IpNet> = Vec::new();
        let mut use_primary: Vec<IpNet> = Vec::new();
        let pn = self.node(p);
        let mut any = false;
        for r in &self.rules {
            if r.via.is_empty() || !(r.src.all_nodes || r.src.nodes.binary_search(&v).is_ok()) {
                continue;
            }
            any = true;
            let tagged = r.via.iter().any(|t| pn.has_tag(t));
            for d in &r.dsts {
                let mut matched: Vec<IpNet> =
                    self.subnets[p as usize].iter().filter(|x| d.res.set.overlaps_prefix(x)).copied().collect();
                if d.res.internet {
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
        let rules = self.node_srcs[v as usize].iter().chain(self.star_srcs.iter());
        for &ri in rules {
            let r = &self.rules[ri as usize];
            if !r.via.is_empty() {
                continue;
            }
            for d in &r.dsts {
                let covers = |x: &IpNet| d.res.wildcard || (!d.res.self_devices && d.res.set.overlaps_prefix(x));
                for x in &inc {
                    if covers(x) && !use_primary.contains(x) {
                        use_primary.push(*x);
                    }
                }
                exc.retain(|x| !covers(x));
            }
        }
        inc.retain(|x| !exc.contains(x) || use_primary.contains(x));
        (inc, exc, use_primary)
    }

    /// What `viewer` may route through `peer`: the peer's addresses, then
    /// the peer's primary subnet routes and exit routes the viewer may use.
    pub fn allowed_ips(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) => self.allowed_for(v, p),
            _ => Vec::new(),
        }
    }

    pub(crate) fn peer_routes(&self, v: u32, p: u32) -> Vec<IpNet> {
        let (inc, exc, use_primary) = self.via_routes(v, p);
        let mut out = Vec::new();
        for r in &self.primaries[p as usize] {
            if exc.contains(r) {
                continue;
            }
            // A standby router for the same route always learns the
            // primary's route (HA failover).
            let standby = self.subnets[v as usize].contains(r);
            if standby || inc.contains(r) || self.may_reach_set(v, r) || self.set_may_send(r, v) {
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
        self.node(p).ips.iter().filter(|ip| !(v6_only && ip.is_ipv4())).map(|ip| ipset::host_prefix(*ip)).collect()
    }

    /// A peer's addresses as the viewer sees them in its netmap.
    pub fn peer_addresses(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) => self.visible_ips(v, p),
            _ => Vec::new(),
        }
    }

    pub(crate) fn allowed_for(&self, v: u32, p: u32) -> Vec<IpNet> {
        let mut out: Vec<IpNet> = self.visible_ips(v, p);
        out.extend(self.peer_routes(v, p));
        out
    }

    /// The subnet routes `peer` is primary for, as `viewer` sees them.
    pub fn primary_routes(&self, viewer: NodeId, peer: NodeId) -> Vec<IpNet> {
        match (self.idx(viewer), self.idx(peer)) {
            (Some(v), Some(p)) => self.primary_for(v, p),
            _ => Vec::new(),
        }
    }

    pub(crate) fn primary_for(&self, v: u32, p: u32) -> Vec<IpNet> {
        if v == p {
            return self.primaries[p as usize].clone();
        }
        self.peer_routes(v, p).into_iter().filter(|r| !ipset::is_exit_route(r)).collect()
    }

    /// The node's own allowed IPs: its addresses and approved routes.
    pub fn self_allowed_ips(&self, id: NodeId) -> Vec<IpNet> {
        let Some(i) = self.idx(id) else { return Vec::new() };
        let mut out: Vec<IpNet> = self.visible_ips(i, i);
        out.extend(self.subnets[i as usize].iter().copied());
        out.extend(self.exits[i as usize].iter().copied());
        out
    }

    /// The node capability map from `nodeAttrs` (and `randomizeClientPort`).
    pub fn node_cap_map(&self, id: NodeId) -> CapMap {
        self.idx(id).map(|i| self.node_caps[i as usize].clone()).unwrap_or_default()
    }

    /// Capabilities a viewer sees on a peer (`suggest-exit-node` on an
    /// approved exit node that has it).
    pub fn peer_cap_map(&self, _viewer: NodeId, peer: NodeId) -> CapMap {
        let Some(p) = self.idx(peer) else { return CapMap::new() };
        let mut out = CapMap::new();
        if !self.exits[p as usize].is_empty() {
            if let Some(v) = self.node_caps[p as usize].get("suggest-exit-node") {
                out.insert("suggest-exit-node".into(), v.clone());
            } else if self.tailnet.suggest_exit_nodes {
                out.insert("suggest-exit-node".into(), None);
            }
        }
        out
    }

    /// The SSH policy of a node (`None` when the policy has no `ssh`
    /// section, which tells clients that Tailscale SSH is not configured).
    pub fn ssh_policy(&self, id: NodeId) -> Option<SshPolicy> {
        let i = self.idx(id)?;
        self.ssh_for(i)
    }

    pub(crate) fn ssh_for(&self, i: u32) -> Option<SshPolicy> {
        crate::ssh::policy_for(self, i)
    }

    /// Check that a user (or, for `tags` owned by tags, a tagged
    /// credential) may apply `tags` to a node, as at registration or on
    /// `nodes tag`. Every tag must exist in `tagOwners`; the user must own
    /// each one directly, through a group, through `autogroup:admin`, or
    /// through a tag that owns it and that the user may own.
    pub fn may_own_tags(&self, user: Option<UserId>, owner_tags: &[String], tags: &[String]) -> Result<(), PolicyError> {
        crate::tags::may_own_tags(self, user, owner_tags, tags)
    }

    /// Nodes whose results may change when `change` is applied: the node
    /// itself, nodes that share a rule with it before or after, and (for
    /// route changes) every node, since `*` includes approved subnets.
    pub fn affected(&self, change: &Change) -> BTreeSet<NodeId> {
        crate::incremental::affected(self, change)
    }

    /// Apply one node change, recomputing only what depends on it.
    pub fn update_node(&mut self, change: Change) -> BTreeSet<NodeId> {
        crate::incremental::update_node(self, change)
    }

    /// Errors for a `tests` entry are reported against this policy's file.
    pub(crate) fn test_error(&self, pos: crate::error::Pos, msg: String) -> PolicyError {
        PolicyError::new(&self.pol.file, Some(pos), ErrorKind::TestFailed, msg)
    }

    /// Names of all nodes, by index (for messages).
    pub(crate) fn name_of(&self, i: u32) -> &str {
        &self.node(i).name
    }

    /// The capability map a connection from `src` has at node `id`,
    /// computed from the node's packet filter (what `tailscaled`'s whois
    /// answers). `None` when no capability applies.
    pub fn whois_caps(&self, id: NodeId, src: IpAddr) -> Option<CapMap> {
        let rules = self.filter_rules(id);
        let node_ips: Vec<IpAddr> = self.idx(id).map(|i| self.node(i).ips.clone()).unwrap_or_default();
        let mut out: CapMap = BTreeMap::new();
        let mut any = false;
        for r in &rules {
            if r.cap_grant.is_empty() || !src_matches(&r.src_ips, src) {
                continue;
            }
            for g in &r.cap_grant {
                let hits = g.dsts.iter().any(|d| {
                    d.parse::<IpNet>().map(|p| node_ips.iter().any(|ip| p.contains(ip))).unwrap_or(false)
                });
                if !hits {
                    continue;
                }
                for (k, v) in g.cap_map.iter() {
                    any = true;
                    let e = out.entry(k.clone()).or_default();
                    if let Some(v) = v {
                        e.get_or_insert_with(Vec::new).extend(v.iter().cloned());
                    }
                }
            }
        }
        any.then_some(out)
    }
}

/// Whether an address matches a `SrcIPs` list.
pub(crate) fn src_matches(src: &[Arc<str>], ip: IpAddr) -> bool {
    src.iter().any(|s| {
        let s: &str = s;
        if s == "*" {
            return true;
        }
        if let Ok(a) = s.parse::<IpAddr>() {
            return a == ip;
        }
        if let Ok(p) = s.parse::<IpNet>() {
            return p.contains(&ip);
        }
        if let Some((a, b)) = s.split_once('-') {
            if let (Ok(a), Ok(b)) = (a.parse::<IpAddr>(), b.parse::<IpAddr>()) {
                return a <= ip && ip <= b && a.is_ipv4() == ip.is_ipv4();
            }
        }
        false
    })
}

/// `user:*@domain` and `localpart:*@domain` may only name the tailnet's
/// own domains.
fn check_domains(pol: &Policy, topo: &Topology, tailnet: &Tailnet) -> Result<(), PolicyError> {
    let domains: Vec<String> = if tailnet.domains.is_empty() {
        topo.users.iter().filter_map(|u| u.domain().map(str::to_string)).collect()
    } else {
        tailnet.domains.clone()
    };
    let bad = |d: &str| !domains.iter().any(|x| x == d);
    let msg = |d: &str| format!("{d} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions");
    let check_list = |list: &[Spanned<Alias>], prefix: &str| -> Result<(), PolicyError> {
        for a in list {
            if let Alias::UserDomain(d) = &a.value {
                if bad(d) {
                    return Err(PolicyError::new(&pol.file, Some(a.pos), ErrorKind::Tailnet, format!("{prefix}{}", msg(d))));
                }
            }
        }
        Ok(())
    };
    for g in &pol.groups {
        check_list(&g.members, "")?;
    }
    for a in &pol.acls {
        check_list(&a.src, "")?;
    }
    for g in &pol.grants {
        check_list(&g.src, "")?;
        check_list(&g.dst, "")?;
    }
    for r in &pol.ssh {
        check_list(&r.src, "[ssh] ")?;
        for u in &r.users {
            if let Some(rest) = u.value.strip_prefix("localpart:") {
                if let Some((lp, d)) = rest.rsplit_once('@') {
                    if lp == "*" && !d.is_empty() && bad(d) {
                        return Err(PolicyError::new(&pol.file, Some(u.pos), ErrorKind::Tailnet, msg(d)));
                    }
                }
            }
        }
    }
    Ok(())
}

fn cap_map_of(app: &[(String, Vec<serde_json::Value>)]) -> CapMap {
    app.iter().map(|(k, v)| (k.clone(), Some(v.clone()))).collect()
}

/// Compile ACLs and grants into rules, in policy order (grants first, as
/// Tailscale merges them into one list).
fn compile_rules(ctx: &Ctx<'_>) -> Vec<CRule> {
    let mut rules = Vec::new();
    let pol = ctx.pol;
    if pol.is_allow_all() {
        let src = ctx.resolve(&Alias::Wildcard);
        let dst = CDst { ports: vec![PortRange::ANY], res: ctx.resolve(&Alias::Wildcard), alias: Alias::Wildcard };
        rules.push(make_rule(ctx, src, vec![dst], Vec::new(), None, Vec::new(), false));
        return rules;
    }
    let resolve_list = |list: &[Spanned<Alias>]| {
        let mut r = Resolved::default();
        for a in list {
            r.merge(ctx.resolve(&a.value));
        }
        r.finish();
        r
    };
    for g in &pol.grants {
        if g.src.is_empty() || g.dst.is_empty() {
            continue;
        }
        let src = resolve_list(&g.src);
        let dst_res: Vec<(Alias, Resolved)> = g.dst.iter().map(|d| (d.value.clone(), ctx.resolve(&d.value))).collect();
        let via: Vec<String> = g.via.iter().map(|v| v.value.clone()).collect();
        for ip in &g.ip {
            let dsts = dst_res
                .iter()
                .map(|(a, r)| CDst { ports: ip.ports.clone(), res: r.clone(), alias: a.clone() })
                .collect();
            rules.push(make_rule(ctx, src.clone(), dsts, ip.protocols.clone(), None, via.clone(), false));
        }
        if !g.app.is_empty() {
            let cap = Arc::new(cap_map_of(&g.app));
            let dsts: Vec<CDst> = dst_res
                .iter()
                .map(|(a, r)| CDst { ports: Vec::new(), res: r.clone(), alias: a.clone() })
                .collect();
            rules.push(make_rule(ctx, src.clone(), dsts, Vec::new(), Some(cap.clone()), via.clone(), false));
            // Companion capabilities go back from destinations to sources.
            for (orig, comp) in COMPANIONS {
                if cap.contains_key(*orig) {
                    let mut cm = CapMap::new();
                    cm.insert((*comp).to_string(), None);
                    let mut csrc = Resolved::default();
                    for (_, r) in &dst_res {
                        csrc.merge(r.clone());
                    }
                    csrc.finish();
                    // `self_devices` on the companion's source means "the
                    // destination node's own user's devices".
                    csrc.self_devices = dst_res.iter().any(|(_, r)| r.self_devices);
                    let cdst = CDst { ports: Vec::new(), res: src.clone(), alias: Alias::Wildcard };
                    rules.push(make_rule(ctx, csrc, vec![cdst], Vec::new(), Some(Arc::new(cm)), Vec::new(), true));
                }
            }
        }
    }
    for acl in &pol.acls {
        let src = resolve_list(&acl.src);
        let dsts = acl
            .dst
            .iter()
            .map(|d| CDst { ports: d.ports.clone(), res: ctx.resolve(&d.alias.value), alias: d.alias.value.clone() })
            .collect();
        let protos = acl.proto.as_ref().map(|p| p.value.clone()).unwrap_or_default();
        rules.push(make_rule(ctx, src, dsts, protos, None, Vec::new(), false));
    }
    rules
}

fn make_rule(
    ctx: &Ctx<'_>,
    src: Resolved,
    dsts: Vec<CDst>,
    protos: Vec<u8>,
    app: Option<Arc<CapMap>>,
    via: Vec<String>,
    companion: bool,
) -> CRule {
    let mut strs = BTreeSet::new();
    ctx.src_strings(&src, &mut strs);
    let src_strs = arc_strs(strs);
    let src_key = key_of(&src_strs);
    CRule { src, src_strs, src_key, protos, dsts, app, via, companion }
}
