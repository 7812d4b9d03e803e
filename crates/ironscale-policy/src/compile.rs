//! Binding a policy to a tailnet: rules compiled once into shared source
//! and destination groups, and per-node indexes so that "which rules does
//! node X get" and "who may see node X" are lookups, not scans.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use imbl::Vector;
use ipnet::IpNet;
use ironscale_types::{Node, NodeId, User, UserId};

use crate::ast::*;
use crate::error::{ErrorKind, PolicyError};
use crate::ipset::{self, IpSet};
use crate::output::*;
use crate::resolve::{sort_dedup, Ctx, Resolved};
use crate::topology::{NodeInfo, Topology};
use crate::Policy;

/// Facts about the tailnet that the policy file does not carry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
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

/// A change to one node, for [`CompiledPolicy::affected`] and
/// [`CompiledPolicy::update_node`].
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Change {
    /// The node joined, or changed (tags, user, routes, addresses).
    Upsert(Node),
    /// The node left.
    Remove(NodeId),
}

/// Sources shared by every rule with the same `src` list.
#[derive(Debug, Clone)]
pub(crate) struct SrcGroup {
    pub res: Resolved,
    /// Nodes that send from these sources: identity, address and routers
    /// whose subnets overlap the addresses (empty when `res.all_nodes`).
    pub nodes: Vec<u32>,
    pub rules: Vec<u32>,
    /// `SrcIPs` and a hash of it, built on first use.
    pub strs: OnceLock<(Arc<[Arc<str>]>, u64)>,
}

/// One destination alias shared by every rule that names it.
#[derive(Debug, Clone)]
pub(crate) struct DstGroup {
    pub res: Resolved,
    /// Nodes reached: identity, address, subnet routes, exit routes.
    pub targets: Vec<u32>,
    /// (rule, dst index) pairs using this group, via rules excluded.
    pub uses: Vec<(u32, u16)>,
}

#[derive(Debug, Clone)]
pub(crate) struct CDst {
    pub group: u32,
    pub ports: Vec<PortRange>,
    /// For via rules: the via routers this destination reaches.
    pub via_targets: Vec<u32>,
}

/// A compiled rule: one ACL entry, or one `ip` element / the `app` part of
/// a grant.
#[derive(Debug, Clone)]
pub(crate) struct CRule {
    pub src: u32,
    pub protos: Vec<u8>,
    pub dsts: Vec<CDst>,
    /// `Some` for application-capability rules.
    pub app: Option<Arc<CapMap>>,
    pub via: Vec<String>,
    /// Companion of an app grant to `autogroup:self`: the sources are the
    /// destination node's own user's devices.
    pub self_src: bool,
}

/// The policy bound to users and nodes, with indexes for per-node queries.
///
/// Cloning is cheap, so that the copy-on-write update of a policy that an
/// older snapshot still holds costs what the change touches: the per-node
/// tables are persistent vectors (`imbl::Vector`, O(1) clone, O(log n)
/// update), the rules are shared, and each group and SSH rule is its own
/// `Arc`, copied only when a change alters its membership. What is left to
/// copy is proportional to the policy (groups), not to the tailnet.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    pub(crate) pol: Arc<Policy>,
    pub(crate) tailnet: Tailnet,
    pub(crate) topo: Topology,
    pub(crate) rules: Arc<Vec<CRule>>,
    pub(crate) src_groups: Vec<Arc<SrcGroup>>,
    pub(crate) dst_groups: Vec<Arc<DstGroup>>,
    /// Per node: source groups naming it (all-node groups are in
    /// `all_src_groups`).
    pub(crate) node_srcs: Vector<Vec<u32>>,
    pub(crate) all_src_groups: Vec<u32>,
    /// Per node: destination groups reaching it.
    pub(crate) node_dsts: Vector<Vec<u32>>,
    /// Destination groups for `*` and `autogroup:self`.
    pub(crate) star_groups: Vec<u32>,
    pub(crate) self_groups: Vec<u32>,
    /// Per node: (rule, dst) pairs of via rules reaching it as a router.
    pub(crate) node_via: Vector<Vec<(u32, u16)>>,
    /// Per node: approved subnet routes, approved exit routes, and the
    /// subnet routes it is primary for.
    pub(crate) subnets: Vector<Vec<IpNet>>,
    pub(crate) exits: Vector<Vec<IpNet>>,
    pub(crate) primaries: Vector<Vec<IpNet>>,
    /// `primaries` hold the state's election ([`CompiledPolicy::sync_primaries`]),
    /// not the compile-time one (lowest id); a rebuild clears it.
    pub(crate) elected: bool,
    pub(crate) all_subnet_strs: Vec<Arc<str>>,
    pub(crate) subnet_set: IpSet,
    pub(crate) node_caps: Vector<CapMap>,
    pub(crate) ssh: crate::ssh::CompiledSsh,
}

/// `SrcIPs` shared between rules.
pub(crate) type SrcStrs = Arc<[Arc<str>]>;

pub(crate) fn key_of(strs: &[Arc<str>]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    strs.hash(&mut h);
    h.finish()
}

/// Capabilities that come with a companion capability, granted back from
/// the destinations to the sources.
const COMPANIONS: &[(&str, &str)] = &[
    ("tailscale.com/cap/drive", "tailscale.com/cap/drive-sharer"),
    ("tailscale.com/cap/relay", "tailscale.com/cap/relay-target"),
];

/// Route approval: announced routes approved explicitly or by
/// `autoApprovers` (exit routes only through `exitNode`).
fn approve_routes(ctx: &Ctx<'_>, n: &NodeInfo) -> (Vec<IpNet>, Vec<IpNet>) {
    let mut subnets = Vec::new();
    let mut exits = Vec::new();
    for r in &n.announced {
        let explicit = n.approved.contains(r);
        let auto = || {
            if ipset::is_exit_route(r) {
                ctx.pol
                    .auto_approvers
                    .exit_node
                    .iter()
                    .any(|a| approver_matches(ctx, &a.value, n))
            } else {
                ctx.pol.auto_approvers.routes.iter().any(|(p, approvers)| {
                    p.value.contains(r)
                        && approvers.iter().any(|a| approver_matches(ctx, &a.value, n))
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

fn approver_matches(ctx: &Ctx<'_>, a: &Alias, n: &NodeInfo) -> bool {
    ctx.resolve(a).matches(n)
}

/// Build (or rebuild) `SrcIPs` for a source group.
fn build_src_strs(topo: &Topology, res: &Resolved) -> (Arc<[Arc<str>]>, u64) {
    let mut v: Vec<Arc<str>> = Vec::new();
    if res.danger_all {
        v.push(Arc::from("*"));
    } else {
        v.extend(res.nets.iter().map(|(s, _)| s.clone()));
        for &n in &res.ident {
            v.extend(topo.nodes[n as usize].ip_strs.iter().cloned());
        }
    }
    v.sort_unstable();
    v.dedup();
    let key = key_of(&v);
    (v.into(), key)
}

impl SrcGroup {
    pub fn src_strs(&self, topo: &Topology) -> &(Arc<[Arc<str>]>, u64) {
        self.strs.get_or_init(|| build_src_strs(topo, &self.res))
    }
    pub fn covers(&self, n: u32) -> bool {
        self.res.all_nodes || self.nodes.binary_search(&n).is_ok()
    }
}

struct Builder<'c, 'a> {
    ctx: &'c Ctx<'a>,
    rules: Vec<CRule>,
    src_groups: Vec<SrcGroup>,
    src_keys: HashMap<Vec<Alias>, u32>,
    dst_groups: Vec<DstGroup>,
    dst_keys: HashMap<Alias, u32>,
}

impl Builder<'_, '_> {
    fn src(&mut self, aliases: &[Alias]) -> u32 {
        let mut key = aliases.to_vec();
        key.sort();
        key.dedup();
        if let Some(&g) = self.src_keys.get(&key) {
            return g;
        }
        let res = self.ctx.resolve_list(key.iter());
        let g = self.src_groups.len() as u32;
        self.src_groups.push(SrcGroup {
            res,
            nodes: Vec::new(),
            rules: Vec::new(),
            strs: OnceLock::new(),
        });
        self.src_keys.insert(key, g);
        g
    }

    fn dst(&mut self, a: &Alias) -> u32 {
        if let Some(&g) = self.dst_keys.get(a) {
            return g;
        }
        let res = (*self.ctx.resolve(a)).clone();
        let g = self.dst_groups.len() as u32;
        self.dst_groups.push(DstGroup {
            res,
            targets: Vec::new(),
            uses: Vec::new(),
        });
        self.dst_keys.insert(a.clone(), g);
        g
    }

    fn rule(
        &mut self,
        src: u32,
        dsts: Vec<(u32, Vec<PortRange>)>,
        protos: Vec<u8>,
        app: Option<Arc<CapMap>>,
        via: Vec<String>,
        self_src: bool,
    ) {
        let ri = self.rules.len() as u32;
        self.src_groups[src as usize].rules.push(ri);
        let dsts = dsts
            .into_iter()
            .map(|(group, ports)| CDst {
                group,
                ports,
                via_targets: Vec::new(),
            })
            .collect();
        self.rules.push(CRule {
            src,
            protos,
            dsts,
            app,
            via,
            self_src,
        });
    }

    /// Grants first, then ACLs (as Tailscale merges them).
    fn compile(&mut self) {
        let pol = self.ctx.pol;
        if pol.is_allow_all() {
            let s = self.src(&[Alias::Wildcard]);
            let d = self.dst(&Alias::Wildcard);
            self.rule(
                s,
                vec![(d, vec![PortRange::ANY])],
                Vec::new(),
                None,
                Vec::new(),
                false,
            );
            return;
        }
        for g in &pol.grants {
            if g.src.is_empty() || g.dst.is_empty() {
                continue;
            }
            let src_aliases: Vec<Alias> = g.src.iter().map(|a| a.value.clone()).collect();
            let dst_aliases: Vec<Alias> = g.dst.iter().map(|a| a.value.clone()).collect();
            let s = self.src(&src_aliases);
            let dgroups: Vec<u32> = dst_aliases.iter().map(|a| self.dst(a)).collect();
            let via: Vec<String> = g.via.iter().map(|v| v.value.clone()).collect();
            for ip in &g.ip {
                let dsts = dgroups.iter().map(|&d| (d, ip.ports.clone())).collect();
                self.rule(s, dsts, ip.protocols.clone(), None, via.clone(), false);
            }
            if !g.app.is_empty() {
                let cap: CapMap = g
                    .app
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect();
                let cap = Arc::new(cap);
                let dsts = dgroups.iter().map(|&d| (d, Vec::new())).collect();
                self.rule(s, dsts, Vec::new(), Some(cap.clone()), via.clone(), false);
                // Companion capabilities go back from destinations to sources.
                for (orig, comp) in COMPANIONS {
                    if cap.contains_key(*orig) {
                        let mut cm = CapMap::new();
                        cm.insert((*comp).to_string(), None);
                        let self_src =
                            dst_aliases.contains(&Alias::AutoGroup(AutoGroup::SelfDevices));
                        let cs = self.src(&dst_aliases);
                        let cdsts = src_aliases
                            .iter()
                            .map(|a| (self.dst(a), Vec::new()))
                            .collect();
                        self.rule(
                            cs,
                            cdsts,
                            Vec::new(),
                            Some(Arc::new(cm)),
                            Vec::new(),
                            self_src,
                        );
                    }
                }
            }
        }
        for acl in &pol.acls {
            let src_aliases: Vec<Alias> = acl.src.iter().map(|a| a.value.clone()).collect();
            let s = self.src(&src_aliases);
            let dsts = acl
                .dst
                .iter()
                .map(|d| (self.dst(&d.alias.value), d.ports.clone()))
                .collect();
            let protos = acl
                .proto
                .as_ref()
                .map(|p| p.value.clone())
                .unwrap_or_default();
            self.rule(s, dsts, protos, None, Vec::new(), false);
        }
    }
}

impl CompiledPolicy {
    /// Bind `policy` to the tailnet's users and nodes, then run the
    /// policy's `tests` and `sshTests` (a failing test is an error).
    pub fn compile(
        policy: &Policy,
        users: &[User],
        nodes: &[Node],
        tailnet: &Tailnet,
    ) -> Result<CompiledPolicy, PolicyError> {
        let topo = Topology::build(users, nodes);
        let c = Self::build(Arc::new(policy.clone()), topo, tailnet.clone())?;
        crate::policytests::run(&c)?;
        Ok(c)
    }

    pub(crate) fn build(
        pol: Arc<Policy>,
        topo: Topology,
        tailnet: Tailnet,
    ) -> Result<CompiledPolicy, PolicyError> {
        check_domains(&pol, &topo, &tailnet)?;
        let n = topo.nodes.len();

        // Routes first: `*` as a source includes approved subnets.
        let mut subnets = vec![Vec::new(); n];
        let mut exits = vec![Vec::new(); n];
        {
            let empty_strs: Vec<Arc<str>> = Vec::new();
            let empty_set = IpSet::new();
            let ctx = Ctx::new(&pol, &topo, &tailnet, &empty_strs, &empty_set);
            for (i, node) in topo.nodes.iter().enumerate() {
                if node.alive && !node.announced.is_empty() {
                    let (s, e) = approve_routes(&ctx, node);
                    subnets[i] = s;
                    exits[i] = e;
                }
            }
        }
        let mut sub_strs: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut subnet_set = IpSet::new();
        for s in subnets.iter().flatten() {
            sub_strs.insert(Arc::from(ipset::prefix_string(s)));
            subnet_set.add_prefix(s);
        }
        let all_subnet_strs: Vec<Arc<str>> = sub_strs.into_iter().collect();
        let primaries = elect_primaries(&topo, &subnets);
        let (subnets, exits) = (Vector::from(subnets), Vector::from(exits));

        let ctx = Ctx::new(&pol, &topo, &tailnet, &all_subnet_strs, &subnet_set);
        let mut b = Builder {
            ctx: &ctx,
            rules: Vec::new(),
            src_groups: Vec::new(),
            src_keys: HashMap::new(),
            dst_groups: Vec::new(),
            dst_keys: HashMap::new(),
        };
        b.compile();
        let Builder {
            rules,
            src_groups,
            dst_groups,
            ..
        } = b;
        let node_caps = crate::nodeattrs::node_caps(&ctx);
        let ssh = crate::ssh::compile(&ctx);
        drop(ctx);

        let mut c = CompiledPolicy {
            pol,
            tailnet,
            topo,
            rules: Arc::new(rules),
            src_groups: src_groups.into_iter().map(Arc::new).collect(),
            dst_groups: dst_groups.into_iter().map(Arc::new).collect(),
            node_srcs: Vector::new(),
            all_src_groups: Vec::new(),
            node_dsts: Vector::new(),
            star_groups: Vec::new(),
            self_groups: Vec::new(),
            node_via: Vector::new(),
            subnets,
            exits,
            primaries: Vector::from(primaries),
            elected: false,
            all_subnet_strs,
            subnet_set,
            node_caps: Vector::from(node_caps),
            ssh,
        };
        c.index(n);
        Ok(c)
    }

    /// Build the per-node indexes from the groups.
    fn index(&mut self, n: usize) {
        let mut node_srcs: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut node_dsts: Vec<Vec<u32>> = vec![Vec::new(); n];
        let mut node_via: Vec<Vec<(u32, u16)>> = vec![Vec::new(); n];
        let routers: Vec<u32> = (0..n as u32)
            .filter(|&i| !self.subnets[i as usize].is_empty())
            .collect();
        let exit_nodes: Vec<u32> = (0..n as u32)
            .filter(|&i| !self.exits[i as usize].is_empty())
            .collect();
        let internet = ipset::internet();
        for (gi, g) in self.src_groups.iter_mut().enumerate() {
            let g = Arc::make_mut(g);
            if g.res.all_nodes {
                self.all_src_groups.push(gi as u32);
                continue;
            }
            // Routers whose approved subnets overlap the source addresses
            // send from those subnets, so they count as sources.
            let mut extra: Vec<u32> = routers
                .iter()
                .copied()
                .filter(|&r| {
                    g.res.nets.iter().any(|(_, set)| {
                        self.subnets[r as usize]
                            .iter()
                            .any(|s| set.overlaps_prefix(s))
                    })
                })
                .collect();
            sort_dedup(&mut extra);
            g.nodes = crate::resolve::merge_sorted(&g.res.nodes(), &extra);
            for &x in &g.nodes {
                node_srcs[x as usize].push(gi as u32);
            }
        }
        for (ri, r) in Arc::make_mut(&mut self.rules).iter_mut().enumerate() {
            for (di, d) in r.dsts.iter_mut().enumerate() {
                let g = Arc::make_mut(&mut self.dst_groups[d.group as usize]);
                if r.via.is_empty() {
                    g.uses.push((ri as u32, di as u16));
                    continue;
                }
                // Via rules reach only the via routers that serve the
                // destination.
                for (i, node) in self.topo.nodes.iter().enumerate() {
                    if !r.via.iter().any(|t| node.has_tag(t)) {
                        continue;
                    }
                    let hit = if g.res.internet {
                        !self.exits[i].is_empty()
                    } else {
                        self.subnets[i].iter().any(|s| g.res.set.overlaps_prefix(s))
                    };
                    if hit {
                        d.via_targets.push(i as u32);
                        node_via[i].push((ri as u32, di as u16));
                    }
                }
            }
        }
        for (gi, g) in self.dst_groups.iter_mut().enumerate() {
            let g = Arc::make_mut(g);
            let gi = gi as u32;
            if g.res.wildcard {
                self.star_groups.push(gi);
                continue;
            }
            if g.res.self_devices {
                self.self_groups.push(gi);
                continue;
            }
            let mut t = g.res.nodes();
            if g.res.internet {
                t.extend(&exit_nodes);
            } else {
                for &rn in &routers {
                    if self.subnets[rn as usize]
                        .iter()
                        .any(|s| g.res.set.overlaps_prefix(s))
                    {
                        t.push(rn);
                    }
                }
                if !g.res.set.is_empty() && internet.is_superset(&g.res.set) {
                    t.extend(&exit_nodes);
                }
            }
            sort_dedup(&mut t);
            for &x in &t {
                node_dsts[x as usize].push(gi);
            }
            g.targets = t;
        }
        self.node_srcs = Vector::from(node_srcs);
        self.node_dsts = Vector::from(node_dsts);
        self.node_via = Vector::from(node_via);
    }

    pub(crate) fn ctx(&self) -> Ctx<'_> {
        Ctx::new(
            &self.pol,
            &self.topo,
            &self.tailnet,
            &self.all_subnet_strs,
            &self.subnet_set,
        )
    }

    pub(crate) fn resolve_alias(&self, a: &Alias) -> Arc<Resolved> {
        self.ctx().resolve(a)
    }

    /// How many live nodes the policy knows.
    pub fn node_count(&self) -> usize {
        self.topo.by_id.len()
    }

    pub(crate) fn idx(&self, id: NodeId) -> Option<u32> {
        self.topo.by_id.get(&id).copied()
    }

    pub(crate) fn node(&self, i: u32) -> &NodeInfo {
        &self.topo.nodes[i as usize]
    }

    /// The node ids the policy knows, in id order.
    pub fn node_ids(&self) -> Vec<NodeId> {
        let mut v: Vec<NodeId> = self.topo.by_id.keys().copied().collect();
        v.sort();
        v
    }

    pub(crate) fn src_group(&self, r: &CRule) -> &SrcGroup {
        &self.src_groups[r.src as usize]
    }

    /// Source nodes of a rule as seen from a node of `user` through
    /// `autogroup:self`.
    pub(crate) fn self_src_nodes(&self, r: &CRule, user: u32) -> Vec<u32> {
        let g = self.src_group(r);
        self.topo.by_user[user as usize]
            .iter()
            .copied()
            .filter(|&m| g.covers(m))
            .collect()
    }

    /// The packet filter for a node: the rules whose destinations include
    /// it, reduced to the destinations that concern it, rules with the
    /// same sources and protocols merged. Empty for an unknown node.
    pub fn filter_rules(&self, id: NodeId) -> Vec<FilterRule> {
        let Some(i) = self.idx(id) else {
            return Vec::new();
        };
        self.filter_for(i)
    }

    pub(crate) fn filter_for(&self, i: u32) -> Vec<FilterRule> {
        let node = self.node(i);
        let mut pairs: Vec<(u32, u16)> = Vec::new();
        for &g in &self.node_dsts[i as usize] {
            pairs.extend_from_slice(&self.dst_groups[g as usize].uses);
        }
        for &g in &self.star_groups {
            pairs.extend_from_slice(&self.dst_groups[g as usize].uses);
        }
        if node.user.is_some() {
            for &g in &self.self_groups {
                pairs.extend_from_slice(&self.dst_groups[g as usize].uses);
            }
        }
        pairs.extend_from_slice(&self.node_via[i as usize]);
        pairs.sort_unstable();
        pairs.dedup();

        let mut out: Vec<FilterRule> = Vec::new();
        let mut keys: Vec<(u64, usize)> = Vec::new();
        let mut self_cache: Vec<(u32, SrcStrs, u64)> = Vec::new();
        let mut self_dis: Vec<u16> = Vec::new();
        let mut other_dis: Vec<u16> = Vec::new();
        let mut k = 0;
        while k < pairs.len() {
            let ri = pairs[k].0;
            let r = &self.rules[ri as usize];
            // Self destinations get their own rule (sources narrowed to the
            // node's user); other destinations share the rule's sources.
            self_dis.clear();
            other_dis.clear();
            while k < pairs.len() && pairs[k].0 == ri {
                let d = pairs[k].1;
                if self.dst_groups[r.dsts[d as usize].group as usize]
                    .res
                    .self_devices
                {
                    self_dis.push(d);
                } else {
                    other_dis.push(d);
                }
                k += 1;
            }
            if !other_dis.is_empty() {
                if r.self_src {
                    if let Some(u) = node.user {
                        let (strs, key) = self.user_src_strs(&self.topo.by_user[u as usize]);
                        self.emit(i, r, &other_dis, strs, key, &mut out, &mut keys);
                    }
                } else {
                    let (strs, key) = self.src_group(r).src_strs(&self.topo).clone();
                    self.emit(i, r, &other_dis, strs, key, &mut out, &mut keys);
                }
            }
            if let (false, Some(u)) = (self_dis.is_empty(), node.user) {
                // Rules sharing a source group share the narrowed sources.
                let cached = self_cache
                    .iter()
                    .find(|(g, _, _)| *g == r.src)
                    .map(|(_, s, k)| (s.clone(), *k));
                let (strs, key) = match cached {
                    Some(x) => x,
                    None => {
                        let srcs = self.self_src_nodes(r, u);
                        let (s, k) = self.user_src_strs(&srcs);
                        self_cache.push((r.src, s.clone(), k));
                        (s, k)
                    }
                };
                if !strs.is_empty() {
                    self.emit(i, r, &self_dis, strs, key, &mut out, &mut keys);
                }
            }
        }
        out
    }

    fn user_src_strs(&self, nodes: &[u32]) -> (Arc<[Arc<str>]>, u64) {
        let mut v: Vec<Arc<str>> = nodes
            .iter()
            .flat_map(|&m| self.node(m).ip_strs.iter().cloned())
            .collect();
        v.sort_unstable();
        v.dedup();
        let key = key_of(&v);
        (v.into(), key)
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
        keys: &mut Vec<(u64, usize)>,
    ) {
        let node = self.node(i);
        let subnets = &self.subnets[i as usize];
        let via = !r.via.is_empty();
        if let Some(cap) = &r.app {
            if via {
                // Tailscale sends no CapGrant for via app grants.
                return;
            }
            let mut grants: Vec<CapGrant> = Vec::new();
            for &di in dis {
                let g = &self.dst_groups[r.dsts[di as usize].group as usize];
                let mut dsts: Vec<String> = Vec::new();
                if g.res.self_devices || g.res.wildcard || g.res.m.matches(node) {
                    dsts.extend(node.ips.iter().map(|ip| ipset::host_prefix_string(*ip)));
                } else {
                    for ip in &node.ips {
                        if g.res.set.contains(*ip) {
                            dsts.push(ipset::host_prefix_string(*ip));
                        }
                    }
                    for (_, set) in &g.res.nets {
                        for p in set.prefixes() {
                            if subnets
                                .iter()
                                .any(|s| s.contains(&p.network()) || p.contains(&s.network()))
                            {
                                dsts.push(p.to_string());
                            }
                        }
                    }
                }
                dsts.dedup();
                if !dsts.is_empty() {
                    let cg = CapGrant {
                        dsts,
                        cap_map: cap.clone(),
                    };
                    if !grants.contains(&cg) {
                        grants.push(cg);
                    }
                }
            }
            if !grants.is_empty() {
                out.push(FilterRule {
                    src_ips: src,
                    dst_ports: Vec::new(),
                    ip_proto: Vec::new(),
                    cap_grant: grants,
                });
            }
            return;
        }
        if src.is_empty() {
            return;
        }
        let exit = !self.exits[i as usize].is_empty();
        // The rule to add to: an earlier one with the same sources and
        // protocols (Tailscale merges those), else a new one.
        let existing = keys.iter().find(|(k, at)| {
            *k == key
                && (Arc::ptr_eq(&out[*at].src_ips, &src) || out[*at].src_ips == src)
                && out[*at].ip_proto == r.protos
        });
        let at = match existing {
            Some(&(_, at)) => at,
            None => {
                out.push(FilterRule {
                    src_ips: src,
                    dst_ports: Vec::new(),
                    ip_proto: r.protos.clone(),
                    cap_grant: Vec::new(),
                });
                out.len() - 1
            }
        };
        let before = out[at].dst_ports.len();
        let ports = &mut out[at].dst_ports;
        for &di in dis {
            let d = &r.dsts[di as usize];
            let g = &self.dst_groups[d.group as usize];
            if g.res.wildcard {
                for p in &d.ports {
                    ports.push(NetPortRange {
                        ip: Arc::from("*"),
                        ports: *p,
                    });
                }
                continue;
            }
            if g.res.self_devices || (!via && g.res.m.matches(node)) {
                for s in &node.ip_strs {
                    for p in &d.ports {
                        ports.push(NetPortRange {
                            ip: s.clone(),
                            ports: *p,
                        });
                    }
                }
            }
            if g.res.self_devices {
                continue;
            }
            for (text, set) in &g.res.nets {
                let hit = if g.res.internet {
                    exit
                } else {
                    (!via && node.ips.iter().any(|ip| set.contains(*ip)))
                        || subnets.iter().any(|s| set.overlaps_prefix(s))
                        || (!via && exit && ipset::internet_set().is_superset(set))
                };
                if hit {
                    for p in &d.ports {
                        ports.push(NetPortRange {
                            ip: text.clone(),
                            ports: *p,
                        });
                    }
                }
            }
        }
        if existing.is_none() {
            if ports.len() == before {
                out.pop();
            } else {
                keys.push((key, at));
            }
        }
    }

    /// The node capability map from `nodeAttrs` (and `randomizeClientPort`).
    pub fn node_cap_map(&self, id: NodeId) -> CapMap {
        self.idx(id)
            .map(|i| self.node_caps[i as usize].clone())
            .unwrap_or_default()
    }

    /// Capabilities a viewer sees on a peer (`suggest-exit-node` on an
    /// approved exit node).
    pub fn peer_cap_map(&self, _viewer: NodeId, peer: NodeId) -> CapMap {
        let Some(p) = self.idx(peer) else {
            return CapMap::new();
        };
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
    /// section: Tailscale SSH is then not configured).
    pub fn ssh_policy(&self, id: NodeId) -> Option<SshPolicy> {
        let i = self.idx(id)?;
        self.ssh_for(i)
    }

    /// How long a passed SSH check lets the same person in again, for a
    /// connection from `src` to `dst` as local user `local_user` that a
    /// `check` rule governs (`tailscaled` asks control about it at the
    /// rule's `holdAndDelegate` URL): the rule's `checkPeriod`, 12h unless
    /// set, zero for `always` (every connection checks). The shortest when
    /// several check rules match; `None` when none does (or a node is
    /// unknown).
    pub fn ssh_check_period(
        &self,
        src: NodeId,
        dst: NodeId,
        local_user: &str,
    ) -> Option<std::time::Duration> {
        let s = self.idx(src)?;
        let d = self.idx(dst)?;
        crate::ssh::check_period_for(self, s, d, local_user)
    }

    pub(crate) fn ssh_for(&self, i: u32) -> Option<SshPolicy> {
        crate::ssh::policy_for(self, i)
    }

    /// Check that a user (or, for tags owned by tags, a credential that
    /// carries `owner_tags`) may apply `tags` to a node, as at registration
    /// or on `nodes tag`. Every tag must exist in `tagOwners`; the user
    /// must own each one directly, through a group or autogroup, or through
    /// a tag that owns it.
    pub fn may_own_tags(
        &self,
        user: Option<UserId>,
        owner_tags: &[String],
        tags: &[String],
    ) -> Result<(), PolicyError> {
        crate::tags::may_own_tags(self, user, owner_tags, tags)
    }

    /// Nodes whose results (filter, peers, routes, SSH, capabilities) may
    /// change when `change` is applied, the changed node included.
    pub fn affected(&self, change: &Change) -> BTreeSet<NodeId> {
        crate::incremental::affected(self, change)
    }

    /// Apply one node change, touching only what depends on that node, and
    /// return the nodes whose results may have changed. Route changes
    /// (which move `*` and primaries) fall back to a full rebuild.
    pub fn update_node(&mut self, change: Change) -> BTreeSet<NodeId> {
        crate::incremental::update_node(self, change)
    }

    /// Take the primary routes elected by the server (online-aware and
    /// sticky, `ironscale_mapper::Tailnet::primaries`) instead of the
    /// compile-time election (the lowest id, Tailscale's answer when every
    /// router is up), so the filters' AllowedIPs and the map's PrimaryRoutes
    /// name the same router. `routers`: the nodes whose primaries may have
    /// changed; after a (re)build every node is synced. A route is taken
    /// only where this policy approves it for that node. Returns the nodes
    /// whose primary routes changed here.
    pub fn sync_primaries(
        &mut self,
        primaries: &std::collections::BTreeMap<IpNet, NodeId>,
        routers: &BTreeSet<NodeId>,
    ) -> BTreeSet<NodeId> {
        let targets: Vec<u32> = if self.elected {
            routers.iter().filter_map(|id| self.idx(*id)).collect()
        } else {
            (0..self.topo.nodes.len() as u32).collect()
        };
        let mut by_node: HashMap<NodeId, Vec<IpNet>> = HashMap::new();
        for (r, id) in primaries {
            by_node.entry(*id).or_default().push(*r);
        }
        let mut changed = BTreeSet::new();
        for i in targets {
            let id = self.topo.nodes[i as usize].id;
            let mut v = by_node.remove(&id).unwrap_or_default();
            v.retain(|r| self.subnets[i as usize].contains(r));
            v.sort();
            if self.primaries[i as usize] != v {
                self.primaries.set(i as usize, v);
                changed.insert(id);
            }
        }
        self.elected = true;
        changed
    }

    /// The routes this policy approves for `id`: approved by an administrator
    /// or by `autoApprovers` (subnet routes, then exit routes).
    pub fn approved_routes(&self, id: NodeId) -> Vec<IpNet> {
        match self.idx(id) {
            Some(i) => self.subnets[i as usize]
                .iter()
                .chain(self.exits[i as usize].iter())
                .copied()
                .collect(),
            None => Vec::new(),
        }
    }

    /// Whether the primaries are the server's election (no rebuild since the
    /// last [`CompiledPolicy::sync_primaries`]).
    pub fn primaries_in_sync(&self) -> bool {
        self.elected
    }

    /// Add a user, or apply a change to one (name, e-mail). Nodes that
    /// join later may then belong to it. Returns the nodes whose results
    /// may have changed (none for a user without nodes).
    pub fn update_user(&mut self, user: &User) -> BTreeSet<NodeId> {
        crate::incremental::update_user(self, user)
    }

    pub(crate) fn test_error(&self, pos: crate::error::Pos, msg: String) -> PolicyError {
        PolicyError::new(&self.pol.file, Some(pos), ErrorKind::TestFailed, msg)
    }

    pub(crate) fn name_of(&self, i: u32) -> &str {
        &self.node(i).name
    }

    /// The capability map a connection from `src` has at node `id`,
    /// computed from the node's packet filter (what `tailscaled` answers to
    /// a whois lookup). `None` when no capability applies.
    pub fn whois_caps(&self, id: NodeId, src: IpAddr) -> Option<CapMap> {
        let rules = self.filter_rules(id);
        let node_ips: Vec<IpAddr> = self
            .idx(id)
            .map(|i| self.node(i).ips.clone())
            .unwrap_or_default();
        let mut out: CapMap = BTreeMap::new();
        let mut any = false;
        for r in &rules {
            if r.cap_grant.is_empty() || !src_matches(&r.src_ips, src) {
                continue;
            }
            for g in &r.cap_grant {
                let hits = g.dsts.iter().any(|d| {
                    d.parse::<IpNet>()
                        .map(|p| node_ips.iter().any(|ip| p.contains(ip)))
                        .unwrap_or(false)
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

/// Primary election: for each subnet route, the approved node with the
/// lowest id (the first to register).
pub(crate) fn elect_primaries(topo: &Topology, subnets: &[Vec<IpNet>]) -> Vec<Vec<IpNet>> {
    let mut best: HashMap<IpNet, (NodeId, u32)> = HashMap::new();
    for (i, s) in subnets.iter().enumerate() {
        let id = topo.nodes[i].id;
        for r in s {
            let e = best.entry(*r).or_insert((id, i as u32));
            if id < e.0 {
                *e = (id, i as u32);
            }
        }
    }
    let mut primaries = vec![Vec::new(); subnets.len()];
    for (r, (_, i)) in best {
        primaries[i as usize].push(r);
    }
    for p in &mut primaries {
        p.sort();
    }
    primaries
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
                return a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b;
            }
        }
        false
    })
}

/// `user:*@domain` and `localpart:*@domain` may only name the tailnet's
/// own domains.
fn check_domains(pol: &Policy, topo: &Topology, tailnet: &Tailnet) -> Result<(), PolicyError> {
    let domains: Vec<String> = if tailnet.domains.is_empty() {
        topo.users
            .iter()
            .filter_map(|u| u.domain().map(str::to_string))
            .collect()
    } else {
        tailnet.domains.clone()
    };
    let bad = |d: &str| !domains.iter().any(|x| x == d);
    let msg = |d: &str| {
        format!("{d} is not associated with this Tailnet and cannot be used in user:*@<domain> expressions")
    };
    let check_list = |list: &[Spanned<Alias>], prefix: &str| -> Result<(), PolicyError> {
        for a in list {
            if let Alias::UserDomain(d) = &a.value {
                if bad(d) {
                    return Err(PolicyError::new(
                        &pol.file,
                        Some(a.pos),
                        ErrorKind::Tailnet,
                        format!("{prefix}{}", msg(d)),
                    ));
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
                        return Err(PolicyError::new(
                            &pol.file,
                            Some(u.pos),
                            ErrorKind::Tailnet,
                            msg(d),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}
