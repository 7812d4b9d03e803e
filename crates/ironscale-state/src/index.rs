//! Lookups derived from the snapshot (node key, node name, user name, the
//! nodes of a user), kept in step with it commit by commit.
//!
//! The maps are persistent (`imbl`): a commit copies the index in O(1) and
//! updates only the entries of the nodes and users it changed, which it
//! learns by diffing the old and new snapshot maps (the diff skips the
//! structure they share, so it costs O(changes · log n)).

use std::collections::BTreeSet;
use std::sync::Arc;

use imbl::{ordmap::DiffItem, HashMap, OrdSet};
use ironscale_keys::NodePublic;
use ironscale_mapper::Tailnet;
use ironscale_types::{Node, NodeId, User, UserId};

/// A user added (old `None`), changed, or removed (new `None`).
pub(crate) type UserChange = (Option<Arc<User>>, Option<Arc<User>>);

#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Index {
    pub by_node_key: HashMap<NodePublic, NodeId>,
    pub nodes_by_name: HashMap<String, OrdSet<NodeId>>,
    pub users_by_name: HashMap<String, OrdSet<UserId>>,
    /// Nodes by `user_id` (tagged nodes have none).
    pub nodes_by_user: HashMap<UserId, OrdSet<NodeId>>,
}

fn add<K: std::hash::Hash + Eq + Clone, V: Ord + Clone>(
    m: &mut HashMap<K, OrdSet<V>>,
    k: &K,
    v: V,
) {
    m.entry(k.clone()).or_default().insert(v);
}

fn remove<K: std::hash::Hash + Eq + Clone, V: Ord + Clone>(
    m: &mut HashMap<K, OrdSet<V>>,
    k: &K,
    v: &V,
) {
    if let Some(set) = m.get_mut(k) {
        set.remove(v);
        if set.is_empty() {
            m.remove(k);
        }
    }
}

impl Index {
    /// The index of a whole snapshot (at load).
    pub fn build(t: &Tailnet) -> Index {
        let mut ix = Index::default();
        for n in t.nodes.values() {
            ix.add_node(n);
        }
        for u in t.users.values() {
            add(&mut ix.users_by_name, &u.name, u.id);
        }
        ix
    }

    fn add_node(&mut self, n: &Node) {
        self.by_node_key.insert(n.node_key, n.id);
        add(&mut self.nodes_by_name, &n.given_name, n.id);
        if let Some(u) = n.user_id {
            add(&mut self.nodes_by_user, &u, n.id);
        }
    }

    fn remove_node(&mut self, n: &Node) {
        if self.by_node_key.get(&n.node_key) == Some(&n.id) {
            self.by_node_key.remove(&n.node_key);
        }
        remove(&mut self.nodes_by_name, &n.given_name, &n.id);
        if let Some(u) = n.user_id {
            remove(&mut self.nodes_by_user, &u, &n.id);
        }
    }

    /// Bring the index from `old` to `next`; `changed` are the node ids
    /// whose entries differ between them. Returns whether anything moved.
    pub fn update(
        &mut self,
        old: &Tailnet,
        next: &Tailnet,
        changed: &BTreeSet<NodeId>,
        users: &[UserChange],
    ) -> bool {
        let mut moved = false;
        for id in changed {
            let (a, b) = (old.nodes.get(id), next.nodes.get(id));
            let same = match (a, b) {
                (Some(a), Some(b)) => {
                    a.node_key == b.node_key
                        && a.given_name == b.given_name
                        && a.user_id == b.user_id
                }
                (None, None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            moved = true;
            if let Some(a) = a {
                self.remove_node(a);
            }
            if let Some(b) = b {
                self.add_node(b);
            }
        }
        for (a, b) in users {
            if let Some(a) = a {
                remove(&mut self.users_by_name, &a.name, &a.id);
            }
            if let Some(b) = b {
                add(&mut self.users_by_name, &b.name, b.id);
            }
            moved = true;
        }
        moved
    }

    pub fn user_named(&self, name: &str) -> Option<UserId> {
        self.users_by_name
            .get(name)
            .and_then(|s| s.iter().next().copied())
    }

    /// The node with this given name (the lowest id if a stale index held two).
    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.nodes_by_name
            .get(name)
            .and_then(|s| s.iter().next().copied())
    }

    /// Whether a node other than `except` has the given name.
    pub fn name_taken(&self, name: &str, except: Option<NodeId>) -> bool {
        self.nodes_by_name
            .get(name)
            .is_some_and(|s| s.iter().any(|id| Some(*id) != except))
    }

    pub fn nodes_of(&self, user: UserId) -> BTreeSet<NodeId> {
        self.nodes_by_user
            .get(&user)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

/// What changed between two snapshots, from their persistent maps: the
/// node ids whose record or online state differ, and the users added,
/// changed or removed (old, new).
pub(crate) fn changes(old: &Tailnet, next: &Tailnet) -> (BTreeSet<NodeId>, Vec<UserChange>) {
    let mut nodes = BTreeSet::new();
    for d in old.nodes.diff(&next.nodes) {
        match d {
            DiffItem::Add(k, _) | DiffItem::Remove(k, _) => nodes.insert(*k),
            DiffItem::Update { new: (k, _), .. } => nodes.insert(*k),
        };
    }
    for d in old
        .online
        .diff(&next.online)
        .chain(old.unhealthy.diff(&next.unhealthy))
    {
        match d {
            imbl::ordset::DiffItem::Add(k) | imbl::ordset::DiffItem::Remove(k) => nodes.insert(*k),
        };
    }
    let users = old
        .users
        .diff(&next.users)
        .map(|d| match d {
            DiffItem::Add(_, u) => (None, Some(u.clone())),
            DiffItem::Update {
                old: (_, a),
                new: (_, b),
            } => (Some(a.clone()), Some(b.clone())),
            DiffItem::Remove(_, u) => (Some(u.clone()), None),
        })
        .collect();
    (nodes, users)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironscale_types::RegisterMethod;

    fn node(id: u64, key: u8, name: &str, user: Option<u64>) -> Node {
        // Keys are unique per node (the store enforces it): id and version.
        let mut k = [0u8; 32];
        k[0] = id as u8;
        k[1] = key;
        Node {
            id: NodeId(id),
            machine_key: Default::default(),
            node_key: NodePublic::from_bytes(k),
            disco_key: Default::default(),
            ipv4: None,
            ipv6: None,
            hostname: name.into(),
            given_name: name.into(),
            user_id: user.map(UserId),
            tags: Vec::new(),
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: Vec::new(),
            approved_routes: Vec::new(),
            endpoints: Vec::new(),
            expiry: None,
            created_at: chrono::DateTime::default(),
            last_seen: None,
            register_method: RegisterMethod::Unspecified,
            auth_key_id: None,
            ephemeral: false,
            capver: 0,
            approved: true,
        }
    }

    fn user(id: u64, name: &str) -> User {
        User {
            id: UserId(id),
            name: name.into(),
            display_name: String::new(),
            email: String::new(),
            provider: String::new(),
            provider_id: String::new(),
            profile_pic_url: String::new(),
            idp_groups: Vec::new(),
            created_at: chrono::DateTime::default(),
        }
    }

    /// Updating the index from the snapshot diff, change after change,
    /// gives the index built from scratch.
    #[test]
    fn incremental_index_matches_rebuilt() {
        let mut t = Tailnet::default();
        let mut ix = Index::build(&t);
        let mut g: u64 = 42;
        let mut next = |n: u64| {
            g = g
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (g >> 33) % n
        };
        for _ in 0..500 {
            let old = t.clone();
            for _ in 0..1 + next(3) {
                let id = 1 + next(12);
                match next(5) {
                    0 => {
                        t.nodes.remove(&NodeId(id));
                        t.online.remove(&NodeId(id));
                    }
                    1 => {
                        t.online.insert(NodeId(id));
                    }
                    2 => {
                        let u = user(1 + next(4), &format!("u{}", next(3)));
                        t.users.insert(u.id, Arc::new(u));
                    }
                    3 => {
                        t.users.remove(&UserId(1 + next(4)));
                    }
                    _ => {
                        let owner = (next(3) > 0).then(|| 1 + next(4));
                        let n = node(id, next(6) as u8, &format!("n{}", next(5)), owner);
                        t.nodes.insert(n.id, Arc::new(n));
                    }
                }
            }
            let (nodes, users) = changes(&old, &t);
            ix.update(&old, &t, &nodes, &users);
            let rebuilt = Index::build(&t);
            assert_eq!(ix, rebuilt);
        }
    }
}
