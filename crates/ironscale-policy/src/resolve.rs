//! Alias resolution: what a `src`, `dst` or `target` entry stands for in a
//! given tailnet, both as node sets (built once through the topology's
//! indexes) and as a per-node predicate (used to apply one node's change
//! without resolving anything again).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use crate::ast::{Alias, AutoGroup};
use crate::ipset::{self, IpSet};
use crate::topology::{NodeInfo, Topology};
use crate::{Policy, Tailnet};

pub(crate) fn sort_dedup(v: &mut Vec<u32>) {
    v.sort_unstable();
    v.dedup();
}

/// Merge two sorted, deduplicated lists.
pub(crate) fn merge_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

pub(crate) fn insert_sorted(v: &mut Vec<u32>, x: u32) {
    if let Err(p) = v.binary_search(&x) {
        v.insert(p, x);
    }
}

pub(crate) fn remove_sorted(v: &mut Vec<u32>, x: u32) {
    if let Ok(p) = v.binary_search(&x) {
        v.remove(p);
    }
}

/// Puts `x` into the sorted set `v` when `present`, takes it out otherwise.
pub(crate) fn set_sorted(v: &mut Vec<u32>, x: u32, present: bool) {
    if present {
        insert_sorted(v, x)
    } else {
        remove_sorted(v, x)
    }
}

/// The identity part of an alias list: which nodes it names by who they
/// are (not by address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Matcher {
    /// Users (their untagged nodes), sorted.
    pub users: Vec<u32>,
    /// Tags, sorted.
    pub tags: Vec<String>,
    /// autogroup:member
    pub member: bool,
    /// autogroup:tagged
    pub tagged: bool,
}

impl Matcher {
    fn merge(&mut self, o: &Matcher) {
        self.users = merge_sorted(&self.users, &o.users);
        for t in &o.tags {
            if let Err(p) = self.tags.binary_search(t) {
                self.tags.insert(p, t.clone());
            }
        }
        self.member |= o.member;
        self.tagged |= o.tagged;
    }

    pub fn matches(&self, n: &NodeInfo) -> bool {
        if !n.alive {
            return false;
        }
        match n.user {
            Some(u) => self.member || self.users.binary_search(&u).is_ok(),
            None => {
                (self.tagged && n.tagged())
                    || n.tags.iter().any(|t| self.tags.binary_search(t).is_ok())
            }
        }
    }
}

/// What one alias (or a list of them) stands for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resolved {
    /// Nodes named by identity (users, groups, tags, autogroups), sorted.
    pub ident: Vec<u32>,
    /// Nodes with an address inside `set`, sorted.
    pub addr_nodes: Vec<u32>,
    /// Address items as written in filters, with their addresses.
    pub nets: Vec<(Arc<str>, IpSet)>,
    /// Every address named by address (not node addresses of identities).
    pub set: IpSet,
    pub m: Matcher,
    /// Every node (`*`, `autogroup:danger-all`).
    pub all_nodes: bool,
    pub wildcard: bool,
    pub danger_all: bool,
    pub internet: bool,
    pub self_devices: bool,
}

impl Resolved {
    pub fn merge(&mut self, o: &Resolved) {
        self.ident = merge_sorted(&self.ident, &o.ident);
        self.addr_nodes = merge_sorted(&self.addr_nodes, &o.addr_nodes);
        self.nets.extend(o.nets.iter().cloned());
        self.set.add_set(&o.set);
        self.m.merge(&o.m);
        self.all_nodes |= o.all_nodes;
        self.wildcard |= o.wildcard;
        self.danger_all |= o.danger_all;
        self.internet |= o.internet;
        self.self_devices |= o.self_devices;
    }

    /// Identity and address nodes together (not meaningful for `all_nodes`).
    pub fn nodes(&self) -> Vec<u32> {
        merge_sorted(&self.ident, &self.addr_nodes)
    }

    /// Whether node `n` is named (by identity or by one of its addresses).
    pub fn matches(&self, n: &NodeInfo) -> bool {
        n.alive
            && (self.all_nodes
                || self.m.matches(n)
                || n.ips.iter().any(|ip| self.set.contains(*ip)))
    }
}

/// Resolution context: policy, tailnet and a memo of resolved aliases.
pub(crate) struct Ctx<'a> {
    pub pol: &'a Policy,
    pub topo: &'a Topology,
    pub tailnet: &'a Tailnet,
    pub subnet_strs: &'a [Arc<str>],
    pub subnet_set: &'a IpSet,
    pub admins: Vec<u32>,
    pub owner: Option<u32>,
    pub memo: RefCell<HashMap<Alias, Arc<Resolved>>>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        pol: &'a Policy,
        topo: &'a Topology,
        tailnet: &'a Tailnet,
        subnet_strs: &'a [Arc<str>],
        subnet_set: &'a IpSet,
    ) -> Ctx<'a> {
        let uidx = |id| topo.user_idx(id);
        let owner = tailnet.owner.and_then(uidx);
        let mut admins: Vec<u32> = tailnet.admins.iter().filter_map(|&id| uidx(id)).collect();
        admins.extend(owner);
        sort_dedup(&mut admins);
        Ctx {
            pol,
            topo,
            tailnet,
            subnet_strs,
            subnet_set,
            admins,
            owner,
            memo: RefCell::new(HashMap::new()),
        }
    }

    fn users_of_domain(&self, domain: &str) -> Vec<u32> {
        (0..self.topo.users.len() as u32)
            .filter(|&u| self.topo.users[u as usize].domain() == Some(domain))
            .collect()
    }

    /// Users an alias names (users, groups, user domains, admin/owner).
    pub fn users_of(&self, a: &Alias) -> Vec<u32> {
        match a {
            Alias::User(t) | Alias::BareUser(t) => self.topo.users_matching(t),
            Alias::UserDomain(d) => self.users_of_domain(d),
            Alias::OidcGroup(g) => self.topo.users_in_idp_group(g),
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

    fn net_res(&self, text: Arc<str>, set: IpSet) -> Resolved {
        let mut nodes = Vec::new();
        for (a, b) in set.ranges() {
            self.topo.nodes_in_range(a, b, &mut nodes);
        }
        sort_dedup(&mut nodes);
        Resolved {
            addr_nodes: nodes,
            nets: vec![(text, set.clone())],
            set,
            ..Default::default()
        }
    }

    /// Resolve one alias (memoised).
    pub fn resolve(&self, a: &Alias) -> Arc<Resolved> {
        if let Some(r) = self.memo.borrow().get(a) {
            return r.clone();
        }
        let r = Arc::new(self.resolve_uncached(a));
        self.memo.borrow_mut().insert(a.clone(), r.clone());
        r
    }

    /// Resolve a list of aliases into one.
    pub fn resolve_list<'b>(&self, list: impl IntoIterator<Item = &'b Alias>) -> Resolved {
        let mut r = Resolved::default();
        for a in list {
            r.merge(&self.resolve(a));
        }
        r
    }

    fn resolve_uncached(&self, a: &Alias) -> Resolved {
        let topo = self.topo;
        match a {
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
                    nets,
                    set,
                    all_nodes: true,
                    wildcard: true,
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::DangerAll) => {
                let mut set = IpSet::new();
                set.add_range(
                    "0.0.0.0".parse().unwrap_or(std::net::IpAddr::V4(0.into())),
                    std::net::IpAddr::V4(u32::MAX.into()),
                );
                set.add_range(
                    std::net::IpAddr::V6(0u128.into()),
                    std::net::IpAddr::V6(u128::MAX.into()),
                );
                Resolved {
                    nets: vec![(Arc::from("*"), IpSet::new())],
                    set,
                    all_nodes: true,
                    danger_all: true,
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::Internet) => {
                let nets = ipset::internet_strings()
                    .into_iter()
                    .map(|s| (Arc::from(s), IpSet::new()))
                    .collect();
                Resolved {
                    nets,
                    set: ipset::internet(),
                    internet: true,
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::SelfDevices) => Resolved {
                self_devices: true,
                ..Default::default()
            },
            Alias::AutoGroup(AutoGroup::Member) => {
                let ident = (0..topo.nodes.len() as u32)
                    .filter(|&i| topo.nodes[i as usize].user.is_some())
                    .collect();
                Resolved {
                    ident,
                    m: Matcher {
                        member: true,
                        ..Default::default()
                    },
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::Tagged) => {
                let ident = (0..topo.nodes.len() as u32)
                    .filter(|&i| topo.nodes[i as usize].tagged())
                    .collect();
                Resolved {
                    ident,
                    m: Matcher {
                        tagged: true,
                        ..Default::default()
                    },
                    ..Default::default()
                }
            }
            Alias::AutoGroup(AutoGroup::NonRoot | AutoGroup::Shared) => Resolved::default(),
            Alias::AutoGroup(AutoGroup::Admin | AutoGroup::Owner)
            | Alias::User(_)
            | Alias::BareUser(_)
            | Alias::UserDomain(_)
            | Alias::OidcGroup(_)
            | Alias::Group(_) => {
                let users = self.users_of(a);
                let mut ident: Vec<u32> = users
                    .iter()
                    .flat_map(|&u| topo.by_user[u as usize].iter().copied())
                    .collect();
                sort_dedup(&mut ident);
                Resolved {
                    ident,
                    m: Matcher {
                        users,
                        ..Default::default()
                    },
                    ..Default::default()
                }
            }
            Alias::Tag(t) => {
                let mut ident = topo
                    .by_tag
                    .get(t)
                    .map(|v| (**v).clone())
                    .unwrap_or_default();
                sort_dedup(&mut ident);
                Resolved {
                    ident,
                    m: Matcher {
                        tags: vec![t.clone()],
                        ..Default::default()
                    },
                    ..Default::default()
                }
            }
            Alias::Host(h) => match self.pol.hosts.iter().find(|d| d.name.value == *h) {
                Some(def) => (*self.resolve(&def.value.value)).clone(),
                None => Resolved::default(),
            },
            Alias::Prefix(p) => {
                self.net_res(Arc::from(ipset::prefix_string(p)), IpSet::from_prefix(p))
            }
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
                        let mut s = r.set.clone();
                        for &n in &r.ident {
                            for ip in &topo.nodes[n as usize].ips {
                                s.add_addr(*ip);
                            }
                        }
                        if *remove {
                            set = set.difference(&s);
                        } else {
                            set.add_set(&s);
                        }
                    }
                }
                let mut r = Resolved::default();
                for (a, b) in set.ranges() {
                    let mut one = IpSet::new();
                    one.add_range(a, b);
                    let text: Arc<str> = match one.prefixes().as_slice() {
                        [p] => Arc::from(ipset::prefix_string(p)),
                        _ => Arc::from(format!("{a}-{b}")),
                    };
                    r.merge(&self.net_res(text, one));
                }
                r
            }
        }
    }
}
