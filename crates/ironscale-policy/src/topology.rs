//! The tailnet as the engine sees it: nodes in a dense index, with lookups
//! by user, tag and address.
//!
//! Every table here is persistent (`imbl`), so cloning a topology (and the
//! compiled policy holding it, copy-on-write while an older snapshot still
//! reads it) is O(1) and one node's change copies O(log n), not the tables.

use std::net::IpAddr;
use std::sync::Arc;

use imbl::{HashMap, OrdSet, Vector};

use ipnet::IpNet;
use ironscale_types::{Node, NodeId, User, UserId};

/// One node, reduced to what the policy depends on.
#[derive(Debug, Clone)]
pub(crate) struct NodeInfo {
    pub id: NodeId,
    pub name: String,
    pub ips: Vec<IpAddr>,
    /// Owner; `None` for tagged nodes (tags are the identity).
    pub user: Option<u32>,
    pub tags: Vec<String>,
    pub announced: Vec<IpNet>,
    /// Explicitly approved routes (auto-approvals are added at compile).
    pub approved: Vec<IpNet>,
    /// The addresses as filter strings, computed once.
    pub ip_strs: Vec<Arc<str>>,
    /// False for a slot whose node left (indexes are never reused).
    pub alive: bool,
}

impl NodeInfo {
    pub fn from_node(n: &Node, user_idx: &HashMap<UserId, u32>) -> NodeInfo {
        let mut tags = n.tags.clone();
        tags.sort();
        tags.dedup();
        let user = if tags.is_empty() {
            n.user_id.and_then(|u| user_idx.get(&u).copied())
        } else {
            None
        };
        let ips = n.ips();
        NodeInfo {
            id: n.id,
            name: if n.given_name.is_empty() {
                n.hostname.clone()
            } else {
                n.given_name.clone()
            },
            ip_strs: ips.iter().map(|ip| Arc::from(ip.to_string())).collect(),
            ips,
            user,
            tags,
            announced: n.announced_routes.iter().map(|r| r.trunc()).collect(),
            approved: n.approved_routes.iter().map(|r| r.trunc()).collect(),
            alive: true,
        }
    }

    /// A dead slot (the node left).
    pub fn tombstone(id: NodeId) -> NodeInfo {
        NodeInfo {
            id,
            name: String::new(),
            ips: Vec::new(),
            user: None,
            tags: Vec::new(),
            announced: Vec::new(),
            approved: Vec::new(),
            ip_strs: Vec::new(),
            alive: false,
        }
    }

    pub fn tagged(&self) -> bool {
        !self.tags.is_empty()
    }

    pub fn has_tag(&self, t: &str) -> bool {
        self.tags.binary_search_by(|x| x.as_str().cmp(t)).is_ok()
    }
}

#[derive(Debug, Clone)]
pub(crate) struct UserInfo {
    pub id: UserId,
    pub name: String,
    pub email: String,
    /// The identity provider's groups, sorted and deduplicated.
    pub idp_groups: Vec<String>,
}

impl UserInfo {
    pub fn from_user(u: &User) -> UserInfo {
        let mut idp_groups = u.idp_groups.clone();
        idp_groups.sort();
        idp_groups.dedup();
        UserInfo {
            id: u.id,
            name: u.name.clone(),
            email: u.email.clone(),
            idp_groups,
        }
    }

    /// Whether the identity provider lists the user in `group` (exact,
    /// case-sensitive).
    pub fn in_idp_group(&self, group: &str) -> bool {
        self.idp_groups
            .binary_search_by(|g| g.as_str().cmp(group))
            .is_ok()
    }

    /// The login name policies use: the e-mail, else `name@`.
    pub fn login(&self) -> String {
        if self.email.is_empty() {
            format!("{}@", self.name)
        } else {
            self.email.clone()
        }
    }

    pub fn domain(&self) -> Option<&str> {
        self.email
            .rsplit_once('@')
            .map(|(_, d)| d)
            .filter(|d| !d.is_empty())
    }
}

/// Take user `i` out of `map[key]`, and the key out when no user is left.
fn unindex(map: &mut HashMap<String, Vec<u32>>, key: &str, i: u32) {
    if let Some(v) = map.get_mut(key) {
        crate::resolve::remove_sorted(v, i);
        if v.is_empty() {
            map.remove(key);
        }
    }
}

/// Nodes and users with indexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Topology {
    pub nodes: Vector<NodeInfo>,
    pub users: Vector<UserInfo>,
    pub by_id: HashMap<NodeId, u32>,
    pub by_user_id: HashMap<UserId, u32>,
    /// Untagged nodes of each user.
    pub by_user: Vector<Vec<u32>>,
    /// Nodes of each tag (shared until a change touches the tag).
    pub by_tag: HashMap<String, Arc<Vec<u32>>>,
    /// Sorted (address, node) pairs, for prefix lookups.
    pub v4: OrdSet<(u32, u32)>,
    pub v6: OrdSet<(u128, u32)>,
    /// Users by lower-case e-mail and by name.
    pub by_email: HashMap<String, Vec<u32>>,
    pub by_name: HashMap<String, Vec<u32>>,
    /// Users by identity-provider group (`oidc-group:` members), sorted.
    pub by_idp_group: HashMap<String, Vec<u32>>,
}

impl Topology {
    pub fn build(users: &[User], nodes: &[Node]) -> Topology {
        let mut t = Topology::default();
        let mut uidx = HashMap::new();
        for u in users {
            uidx.insert(u.id, t.users.len() as u32);
            t.users.push_back(UserInfo::from_user(u));
        }
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_by_key(|n| n.id);
        sorted.dedup_by_key(|n| n.id);
        for n in sorted {
            t.nodes.push_back(NodeInfo::from_node(n, &uidx));
        }
        t.reindex();
        t
    }

    /// Index one user's e-mail, name and provider groups (user `i`).
    pub fn index_user(&mut self, i: u32) {
        let u = &self.users[i as usize];
        let (email, name) = (u.email.to_ascii_lowercase(), u.name.clone());
        let groups = u.idp_groups.clone();
        if !email.is_empty() {
            crate::resolve::insert_sorted(self.by_email.entry(email).or_default(), i);
        }
        crate::resolve::insert_sorted(self.by_name.entry(name).or_default(), i);
        for g in groups {
            crate::resolve::insert_sorted(self.by_idp_group.entry(g).or_default(), i);
        }
    }

    /// Drop user `i` from the e-mail, name and provider-group indexes
    /// (before it changes).
    pub fn unindex_user(&mut self, i: u32) {
        let u = &self.users[i as usize];
        let (email, name) = (u.email.to_ascii_lowercase(), u.name.clone());
        let groups = u.idp_groups.clone();
        unindex(&mut self.by_email, &email, i);
        unindex(&mut self.by_name, &name, i);
        for g in &groups {
            unindex(&mut self.by_idp_group, g, i);
        }
    }

    /// Users the identity provider lists in `group`, sorted.
    pub fn users_in_idp_group(&self, group: &str) -> Vec<u32> {
        self.by_idp_group.get(group).cloned().unwrap_or_default()
    }

    pub fn index_users(&mut self) {
        self.by_email = HashMap::new();
        self.by_name = HashMap::new();
        self.by_idp_group = HashMap::new();
        self.by_user_id = HashMap::new();
        for i in 0..self.users.len() as u32 {
            self.by_user_id.insert(self.users[i as usize].id, i);
            self.index_user(i);
        }
    }

    /// The index of a user.
    pub fn user_idx(&self, id: UserId) -> Option<u32> {
        self.by_user_id.get(&id).copied()
    }

    pub fn reindex(&mut self) {
        self.index_users();
        self.by_id = HashMap::new();
        let mut by_user = vec![Vec::new(); self.users.len()];
        let mut by_tag: std::collections::HashMap<String, Vec<u32>> = Default::default();
        self.v4 = OrdSet::new();
        self.v6 = OrdSet::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let i = i as u32;
            if !n.alive {
                continue;
            }
            self.by_id.insert(n.id, i);
            if let Some(u) = n.user {
                by_user[u as usize].push(i);
            }
            for t in &n.tags {
                by_tag.entry(t.clone()).or_default().push(i);
            }
            for ip in &n.ips {
                match ip {
                    IpAddr::V4(a) => {
                        self.v4.insert((u32::from(*a), i));
                    }
                    IpAddr::V6(a) => {
                        self.v6.insert((u128::from(*a), i));
                    }
                }
            }
        }
        self.by_user = Vector::from(by_user);
        self.by_tag = by_tag.into_iter().map(|(t, v)| (t, Arc::new(v))).collect();
    }

    /// Nodes with an address inside `a..=b` (same family).
    pub fn nodes_in_range(&self, a: IpAddr, b: IpAddr, out: &mut Vec<u32>) {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let (a, b) = (u32::from(a), u32::from(b));
                if a <= b {
                    out.extend(self.v4.range((a, 0)..=(b, u32::MAX)).map(|x| x.1));
                }
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let (a, b) = (u128::from(a), u128::from(b));
                if a <= b {
                    out.extend(self.v6.range((a, 0)..=(b, u32::MAX)).map(|x| x.1));
                }
            }
            _ => {}
        }
    }

    pub fn node_by_ip(&self, ip: IpAddr) -> Option<u32> {
        let mut v = Vec::new();
        self.nodes_in_range(ip, ip, &mut v);
        v.first().copied()
    }

    /// Users a policy token names (`alice@example.com`, `alice@`, `alice`).
    pub fn users_matching(&self, token: &str) -> Vec<u32> {
        // (see `user_named` in incremental.rs, which must agree)
        let mut v: Vec<u32> = self
            .by_email
            .get(&token.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        let bare = token.strip_suffix('@').unwrap_or(token);
        if !bare.contains('@') {
            if let Some(x) = self.by_name.get(bare) {
                v.extend(x);
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Insert a node's addresses into the sorted address sets.
    pub fn add_addrs(&mut self, i: u32) {
        for ip in self.nodes[i as usize].ips.clone() {
            match ip {
                IpAddr::V4(a) => {
                    self.v4.insert((u32::from(a), i));
                }
                IpAddr::V6(a) => {
                    self.v6.insert((u128::from(a), i));
                }
            }
        }
    }

    /// Remove node `i`'s addresses `ips` (as it had them) from the sets.
    pub fn remove_addrs(&mut self, i: u32, ips: &[IpAddr]) {
        for ip in ips {
            match ip {
                IpAddr::V4(a) => {
                    self.v4.remove(&(u32::from(*a), i));
                }
                IpAddr::V6(a) => {
                    self.v6.remove(&(u128::from(*a), i));
                }
            }
        }
    }
}
