//! The tailnet as the engine sees it: nodes in a dense index, with lookups
//! by user, tag and address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

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
}

impl UserInfo {
    pub fn from_user(u: &User) -> UserInfo {
        UserInfo {
            id: u.id,
            name: u.name.clone(),
            email: u.email.clone(),
        }
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

/// Nodes and users with indexes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Topology {
    pub nodes: Vec<NodeInfo>,
    pub users: Vec<UserInfo>,
    pub by_id: HashMap<NodeId, u32>,
    /// Untagged nodes of each user.
    pub by_user: Vec<Vec<u32>>,
    pub by_tag: HashMap<String, Vec<u32>>,
    /// Sorted (address, node) pairs, for prefix lookups.
    pub v4: Vec<(u32, u32)>,
    pub v6: Vec<(u128, u32)>,
    /// Users by lower-case e-mail and by name.
    pub by_email: HashMap<String, Vec<u32>>,
    pub by_name: HashMap<String, Vec<u32>>,
}

impl Topology {
    pub fn build(users: &[User], nodes: &[Node]) -> Topology {
        let mut t = Topology::default();
        let mut uidx = HashMap::new();
        for u in users {
            uidx.insert(u.id, t.users.len() as u32);
            t.users.push(UserInfo::from_user(u));
        }
        let mut sorted: Vec<&Node> = nodes.iter().collect();
        sorted.sort_by_key(|n| n.id);
        sorted.dedup_by_key(|n| n.id);
        for n in sorted {
            t.nodes.push(NodeInfo::from_node(n, &uidx));
        }
        t.reindex();
        t
    }

    pub fn index_users(&mut self) {
        self.by_email.clear();
        self.by_name.clear();
        for (i, u) in self.users.iter().enumerate() {
            if !u.email.is_empty() {
                self.by_email
                    .entry(u.email.to_ascii_lowercase())
                    .or_default()
                    .push(i as u32);
            }
            self.by_name
                .entry(u.name.clone())
                .or_default()
                .push(i as u32);
        }
    }

    pub fn reindex(&mut self) {
        self.index_users();
        self.by_id.clear();
        self.by_user = vec![Vec::new(); self.users.len()];
        self.by_tag.clear();
        self.v4.clear();
        self.v6.clear();
        for (i, n) in self.nodes.iter().enumerate() {
            let i = i as u32;
            if !n.alive {
                continue;
            }
            self.by_id.insert(n.id, i);
            if let Some(u) = n.user {
                self.by_user[u as usize].push(i);
            }
            for t in &n.tags {
                self.by_tag.entry(t.clone()).or_default().push(i);
            }
            for ip in &n.ips {
                match ip {
                    IpAddr::V4(a) => self.v4.push((u32::from(*a), i)),
                    IpAddr::V6(a) => self.v6.push((u128::from(*a), i)),
                }
            }
        }
        self.v4.sort_unstable();
        self.v6.sort_unstable();
    }

    /// Nodes with an address inside `a..=b` (same family).
    pub fn nodes_in_range(&self, a: IpAddr, b: IpAddr, out: &mut Vec<u32>) {
        match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let (a, b) = (u32::from(a), u32::from(b));
                let i = self.v4.partition_point(|x| x.0 < a);
                out.extend(self.v4[i..].iter().take_while(|x| x.0 <= b).map(|x| x.1));
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let (a, b) = (u128::from(a), u128::from(b));
                let i = self.v6.partition_point(|x| x.0 < a);
                out.extend(self.v6[i..].iter().take_while(|x| x.0 <= b).map(|x| x.1));
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

    /// Insert a node's addresses into the sorted address arrays.
    pub fn add_addrs(&mut self, i: u32) {
        for ip in self.nodes[i as usize].ips.clone() {
            match ip {
                IpAddr::V4(a) => {
                    let k = (u32::from(a), i);
                    let p = self.v4.partition_point(|x| *x < k);
                    self.v4.insert(p, k);
                }
                IpAddr::V6(a) => {
                    let k = (u128::from(a), i);
                    let p = self.v6.partition_point(|x| *x < k);
                    self.v6.insert(p, k);
                }
            }
        }
    }

    pub fn remove_addrs(&mut self, i: u32) {
        self.v4.retain(|x| x.1 != i);
        self.v6.retain(|x| x.1 != i);
    }
}
