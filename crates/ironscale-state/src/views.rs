//! Read models: what the API, the CLI and a future web UI show about nodes,
//! users and pre-auth keys, joined here once (node + owner + online + routes +
//! the key it registered with; user + node count; key + owner + used/expired).
//!
//! Plain Rust values (no serde: the REST shapes are `ironscale-api`'s DTOs,
//! built from these views only). Node and user views come from the current
//! snapshot; pre-auth keys are not in the snapshot and are read from the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use ironscale_mapper::Tailnet;
use ironscale_types::{Node, NodeId, PreAuthKey, Timestamp, User, UserId, UserRef};

use crate::{Result, State, StateError};

/// A node's key expiry as of the state's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryState {
    /// No expiry (tagged nodes, or `node.expiry` unset).
    Never,
    /// Valid until this instant.
    ExpiresAt(Timestamp),
    /// Expired at this instant.
    ExpiredAt(Timestamp),
}

impl ExpiryState {
    pub fn of(expiry: Option<Timestamp>, now: Timestamp) -> ExpiryState {
        match expiry {
            None => ExpiryState::Never,
            Some(at) if at <= now => ExpiryState::ExpiredAt(at),
            Some(at) => ExpiryState::ExpiresAt(at),
        }
    }

    pub fn is_expired(self) -> bool {
        matches!(self, ExpiryState::ExpiredAt(_))
    }

    /// The instant, if there is one.
    pub fn at(self) -> Option<Timestamp> {
        match self {
            ExpiryState::Never => None,
            ExpiryState::ExpiresAt(t) | ExpiryState::ExpiredAt(t) => Some(t),
        }
    }
}

/// A node as shown to an operator.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// The record itself (keys, addresses, names, Hostinfo, timestamps).
    pub node: Arc<Node>,
    /// The owner; `None` for a tagged node (its identity is its tags).
    pub user: Option<Arc<User>>,
    /// Whether it has a map session now.
    pub online: bool,
    /// When it was last connected (stored; not "now" while online).
    pub last_seen: Option<Timestamp>,
    /// Routes the node announces.
    pub announced_routes: Vec<IpNet>,
    /// Routes an operator (or an auto-approver) approved.
    pub approved_routes: Vec<IpNet>,
    /// Subnet routes it serves: approved and announced, exit routes aside.
    pub subnet_routes: Vec<IpNet>,
    /// Subnet routes for which it is the elected primary.
    pub primary_routes: Vec<IpNet>,
    /// Whether it is an exit node (an approved and announced exit route).
    pub exit_node: bool,
    pub tags: Vec<String>,
    pub expiry: ExpiryState,
    /// The pre-auth key it registered with, if it did and the key still exists.
    pub pre_auth_key: Option<PreAuthKeyView>,
}

/// A user as shown to an operator.
#[derive(Debug, Clone)]
pub struct UserView {
    pub user: Arc<User>,
    /// Nodes the user owns (tagged nodes belong to no user).
    pub node_count: usize,
}

/// A pre-auth key as shown to an operator: never the secret nor its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreAuthKeyView {
    pub id: u64,
    /// The public prefix (what listings show in place of the key).
    pub prefix: String,
    /// The owner; `None` for a tagged key.
    pub user: Option<Arc<User>>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub expiration: Option<Timestamp>,
    /// Whether the expiration has passed (state's clock).
    pub expired: bool,
    pub tags: Vec<String>,
    pub created_at: Timestamp,
}

/// Which nodes [`State::node_views`] lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFilter {
    /// Only the nodes this user owns (tagged nodes belong to no user).
    pub user: Option<UserRef>,
}

/// Which users [`State::user_views`] lists (every given field must match).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    pub id: Option<UserId>,
    pub name: Option<String>,
    pub email: Option<String>,
}

fn key_view(tn: &Tailnet, k: &PreAuthKey, now: Timestamp) -> PreAuthKeyView {
    PreAuthKeyView {
        id: k.id,
        prefix: k.prefix.clone(),
        user: k.user_id.and_then(|id| tn.users.get(&id).cloned()),
        reusable: k.reusable,
        ephemeral: k.ephemeral,
        used: k.used,
        expiration: k.expiration,
        expired: k.is_expired(now),
        tags: k.tags.clone(),
        created_at: k.created_at,
    }
}

fn node_view(
    tn: &Tailnet,
    n: &Arc<Node>,
    keys: &BTreeMap<u64, PreAuthKey>,
    now: Timestamp,
) -> NodeView {
    let user = if n.is_tagged() {
        None
    } else {
        n.user_id.and_then(|id| tn.users.get(&id).cloned())
    };
    let served = |r: &&IpNet| n.announced_routes.contains(r);
    NodeView {
        node: n.clone(),
        user,
        online: tn.is_online(n.id),
        last_seen: n.last_seen,
        announced_routes: n.announced_routes.clone(),
        approved_routes: n.approved_routes.clone(),
        subnet_routes: n
            .approved_routes
            .iter()
            .filter(served)
            .filter(|r| r.prefix_len() > 0)
            .copied()
            .collect(),
        primary_routes: tn.primary_routes(n.id),
        exit_node: n
            .approved_routes
            .iter()
            .filter(served)
            .any(|r| r.prefix_len() == 0),
        tags: n.tags.clone(),
        expiry: ExpiryState::of(n.expiry, now),
        pre_auth_key: n
            .auth_key_id
            .and_then(|id| keys.get(&id))
            .map(|k| key_view(tn, k, now)),
    }
}

impl State {
    /// The nodes `filter` selects, in id order, with their owners, online
    /// state, routes, expiry and pre-auth keys (one store read for the keys,
    /// only if a node registered with one).
    pub async fn node_views(&self, filter: &NodeFilter) -> Result<Vec<NodeView>> {
        let owner = match &filter.user {
            Some(u) => Some(self.find_user(u)?.id),
            None => None,
        };
        let tn = self.snapshot();
        let nodes: Vec<&Arc<Node>> = tn
            .nodes
            .values()
            .filter(|n| owner.is_none_or(|o| n.user_id == Some(o) && !n.is_tagged()))
            .collect();
        let keys = if nodes.iter().any(|n| n.auth_key_id.is_some()) {
            self.keys_by_id().await?
        } else {
            BTreeMap::new()
        };
        let now = self.now();
        Ok(nodes
            .into_iter()
            .map(|n| node_view(&tn, n, &keys, now))
            .collect())
    }

    /// One node's view.
    pub async fn node_view(&self, id: NodeId) -> Result<NodeView> {
        let tn = self.snapshot();
        let n = tn.nodes.get(&id).ok_or(StateError::NodeNotFound(id))?;
        let mut keys = BTreeMap::new();
        if let Some(kid) = n.auth_key_id {
            if let Some(k) = self.store().get_preauth_key(kid).await? {
                keys.insert(kid, k);
            }
        }
        Ok(node_view(&tn, n, &keys, self.now()))
    }

    /// The users `filter` selects, in id order, with their node counts.
    pub fn user_views(&self, filter: &UserFilter) -> Vec<UserView> {
        let tn = self.snapshot();
        let index = self.inner.index.load();
        tn.users
            .values()
            .filter(|u| filter.id.is_none_or(|id| u.id == id))
            .filter(|u| filter.name.as_ref().is_none_or(|n| &u.name == n))
            .filter(|u| filter.email.as_ref().is_none_or(|e| &u.email == e))
            .map(|u| UserView {
                user: u.clone(),
                node_count: index.nodes_of(u.id).len(),
            })
            .collect()
    }

    /// One user's view.
    pub fn user_view(&self, user: &UserRef) -> Result<UserView> {
        let u = self.find_user(user)?;
        let node_count = self.inner.index.load().nodes_of(u.id).len();
        Ok(UserView {
            user: u,
            node_count,
        })
    }

    /// The view of a user record a command returned (e.g. by
    /// [`State::create_user`] or [`State::rename_user`]).
    pub fn user_view_of(&self, u: &User) -> UserView {
        UserView {
            user: Arc::new(u.clone()),
            node_count: self.inner.index.load().nodes_of(u.id).len(),
        }
    }

    /// The pre-auth keys of `user` (all keys when `None`), in id order.
    pub async fn preauth_key_views(&self, user: Option<&UserRef>) -> Result<Vec<PreAuthKeyView>> {
        let keys = self.list_preauth_keys(user).await?;
        let tn = self.snapshot();
        let now = self.now();
        let mut out: Vec<PreAuthKeyView> = keys.iter().map(|k| key_view(&tn, k, now)).collect();
        out.sort_by_key(|k| k.id);
        Ok(out)
    }

    /// The view of a key record a command returned (e.g. the one
    /// [`State::create_preauth_key`] made): its owner from the snapshot.
    pub fn preauth_key_view_of(&self, k: &PreAuthKey) -> PreAuthKeyView {
        key_view(&self.snapshot(), k, self.now())
    }

    async fn keys_by_id(&self) -> Result<BTreeMap<u64, PreAuthKey>> {
        Ok(self
            .store()
            .list_preauth_keys(None)
            .await?
            .into_iter()
            .map(|k| (k.id, k))
            .collect())
    }
}
