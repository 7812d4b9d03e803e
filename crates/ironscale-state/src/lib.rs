//! The state layer: owns the current immutable [`Tailnet`] snapshot, applies
//! commands (writing through to the store first), and tells map sessions what
//! changed.
//!
//! Invariants:
//! - Every mutation holds the single writer lock, writes the store, then swaps
//!   in a new snapshot; readers never block (`ArcSwap`).
//! - A change is published as "these nodes changed" (or "everything") to the
//!   sessions that can see those nodes; sessions coalesce and build deltas
//!   themselves, so admin calls never wait on map fan-out.

mod error;
mod policy;
mod register;
mod session;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use ironscale_ipam::{Allocator, Strategy};
use ironscale_keys::NodePublic;
use ironscale_mapper::{DnsSettings, PolicyView, Tailnet};
use ironscale_store::Store;
use ironscale_types::{Node, NodeId, PreAuthKey, Timestamp, User, UserId};
use ironscale_wire as wire;
use parking_lot::Mutex;

pub use error::StateError;
pub use policy::{PolicyRejected, PolicySetError, PolicyState, POLICY_KV_KEY};
pub use register::RegisterOutcome;
pub use session::{Pending, SessionSlot};

pub type Result<T, E = StateError> = std::result::Result<T, E>;

/// Settings the state layer needs (mapped from the config by the binary).
#[derive(Debug, Clone)]
pub struct Settings {
    pub prefix_v4: Option<Ipv4Net>,
    pub prefix_v6: Option<Ipv6Net>,
    pub allocation: Strategy,
    /// Default key expiry for new user-owned nodes (`node.expiry`; None = never).
    pub node_expiry: Option<chrono::Duration>,
    /// How long an ephemeral node may be disconnected before it is deleted.
    pub ephemeral_inactivity_timeout: Duration,
    pub dns: DnsSettings,
    pub randomize_client_port: bool,
    /// Facts the policy needs that the policy file does not carry.
    pub policy_tailnet: ironscale_policy::Tailnet,
    /// `policy.mode: database` (the API may replace the policy).
    pub policy_in_database: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            prefix_v4: Some("100.64.0.0/10".parse().expect("valid")),
            prefix_v6: Some("fd7a:115c:a1e0::/48".parse().expect("valid")),
            allocation: Strategy::Sequential,
            node_expiry: None,
            ephemeral_inactivity_timeout: Duration::from_secs(120),
            dns: DnsSettings::default(),
            randomize_client_port: false,
            policy_tailnet: ironscale_policy::Tailnet::default(),
            policy_in_database: false,
        }
    }
}

/// What changed in a mutation.
#[derive(Debug, Clone)]
pub enum Change {
    Nodes(BTreeSet<NodeId>),
    /// A user was created, renamed or deleted (these nodes are theirs).
    Users(BTreeSet<NodeId>),
    Full,
}

struct Inner {
    store: Store,
    settings: Settings,
    current: ArcSwap<Tailnet>,
    by_node_key: ArcSwap<HashMap<NodePublic, NodeId>>,
    write: tokio::sync::Mutex<()>,
    ipam: Mutex<Allocator>,
    sessions: Mutex<HashMap<NodeId, Arc<SessionSlot>>>,
    ephemeral_timers: Mutex<HashMap<NodeId, tokio::task::JoinHandle<()>>>,
    policy: Mutex<policy::PolicyState>,
}

/// Cheap to clone handle on the server's state.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("nodes", &self.snapshot().nodes.len())
            .finish()
    }
}

fn now() -> Timestamp {
    chrono::Utc::now()
}

impl State {
    /// Load everything from the store and build the first snapshot.
    pub async fn load(store: Store, settings: Settings, derp_map: wire::DerpMap) -> Result<State> {
        let users = store.list_users().await?;
        let nodes = store.list_nodes().await?;
        let mut ipam = Allocator::new(settings.prefix_v4, settings.prefix_v6, settings.allocation)?;
        for n in &nodes {
            for ip in n.ips() {
                if let Err(e) = ipam.reserve(ip) {
                    tracing::warn!(node = n.id.0, %ip, "address from the database not reserved: {e}");
                }
            }
        }
        let mut t = Tailnet {
            derp_map: Arc::new(derp_map),
            dns: Arc::new(settings.dns.clone()),
            randomize_client_port: settings.randomize_client_port,
            ..Default::default()
        };
        t.users = users.into_iter().map(|u| (u.id, Arc::new(u))).collect();
        t.nodes = nodes.into_iter().map(|n| (n.id, Arc::new(n))).collect();
        t.primaries = Arc::new(t.elect_primaries(&BTreeMap::new()));
        let index = t.nodes.values().map(|n| (n.node_key, n.id)).collect();
        let state = State {
            inner: Arc::new(Inner {
                store,
                settings,
                current: ArcSwap::from_pointee(t),
                by_node_key: ArcSwap::from_pointee(index),
                write: tokio::sync::Mutex::new(()),
                ipam: Mutex::new(ipam),
                sessions: Mutex::new(HashMap::new()),
                ephemeral_timers: Mutex::new(HashMap::new()),
                policy: Mutex::new(policy::PolicyState::default()),
            }),
        };
        // Ephemeral nodes left over from a previous run get their grace period again.
        let leftovers: Vec<NodeId> = state
            .snapshot()
            .nodes
            .values()
            .filter(|n| n.ephemeral)
            .map(|n| n.id)
            .collect();
        for id in leftovers {
            state.schedule_ephemeral_deletion(id);
        }
        Ok(state)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Tailnet> {
        self.inner.current.load_full()
    }

    pub fn node_by_key(&self, key: &NodePublic) -> Option<Arc<Node>> {
        let id = *self.inner.by_node_key.load().get(key)?;
        self.snapshot().nodes.get(&id).cloned()
    }

    /// Whether `key` belongs to a node of this tailnet (DERP `verify_clients`).
    pub fn is_known_node_key(&self, key: &NodePublic) -> bool {
        self.inner.by_node_key.load().contains_key(key)
    }

    /// Swap in a new snapshot computed by `f` and publish `change`. Must be
    /// called with the writer lock held.
    fn commit(&self, f: impl FnOnce(&mut Tailnet), change: Change) {
        let old = self.snapshot();
        let mut next = (*old).clone();
        f(&mut next);
        let policy_affected = match &change {
            Change::Nodes(ids) => self.update_policy_for(&old, &mut next, ids, false),
            Change::Users(_) => self.update_policy_for(&old, &mut next, &BTreeSet::new(), true),
            Change::Full => BTreeSet::new(),
        };
        let primaries = next.elect_primaries(&old.primaries);
        let mut changed_primaries = BTreeSet::new();
        if primaries != *next.primaries {
            for (r, id) in primaries.iter() {
                if next.primaries.get(r) != Some(id) {
                    changed_primaries.insert(*id);
                    if let Some(prev) = next.primaries.get(r) {
                        changed_primaries.insert(*prev);
                    }
                }
            }
            for (r, id) in next.primaries.iter() {
                if !primaries.contains_key(r) {
                    changed_primaries.insert(*id);
                }
            }
            next.primaries = Arc::new(primaries);
        }
        if old.nodes.len() != next.nodes.len()
            || old
                .nodes
                .iter()
                .zip(next.nodes.iter())
                .any(|(a, b)| a.0 != b.0 || a.1.node_key != b.1.node_key)
        {
            let index = next.nodes.values().map(|n| (n.node_key, n.id)).collect();
            self.inner.by_node_key.store(Arc::new(index));
        }
        let next = Arc::new(next);
        self.inner.current.store(next.clone());
        let change = match change {
            Change::Nodes(mut ids) | Change::Users(mut ids) => {
                ids.extend(changed_primaries);
                Change::Nodes(ids)
            }
            Change::Full => Change::Full,
        };
        self.publish(&old, &next, &change);
        if !policy_affected.is_empty() {
            // Their filters, SSH policy or peer sets changed: rebuild fully.
            let sessions = self.inner.sessions.lock();
            for id in &policy_affected {
                if let Some(s) = sessions.get(id) {
                    s.push_full();
                }
            }
        }
    }

    /// Tell the sessions that may be affected.
    fn publish(&self, old: &Tailnet, new: &Tailnet, change: &Change) {
        let sessions = self.inner.sessions.lock();
        match change {
            Change::Full => {
                for s in sessions.values() {
                    s.push_full();
                }
            }
            Change::Nodes(ids) | Change::Users(ids) => {
                let mut targets: BTreeSet<NodeId> = BTreeSet::new();
                for id in ids {
                    targets.insert(*id);
                    if let Some(n) = old.nodes.get(id) {
                        targets.extend(old.policy.watchers_of(old, n));
                    }
                    if let Some(n) = new.nodes.get(id) {
                        targets.extend(new.policy.watchers_of(new, n));
                    }
                }
                for t in targets {
                    if let Some(s) = sessions.get(&t) {
                        s.push_nodes(ids.iter().copied());
                    }
                }
            }
        }
    }

    // ----- users -----

    pub fn list_users(&self) -> Vec<User> {
        self.snapshot()
            .users
            .values()
            .map(|u| (**u).clone())
            .collect()
    }

    pub fn find_user(&self, name_or_id: &str) -> Result<Arc<User>> {
        let t = self.snapshot();
        if let Ok(id) = name_or_id.parse::<u64>() {
            if let Some(u) = t.users.get(&UserId(id)) {
                return Ok(u.clone());
            }
        }
        t.users
            .values()
            .find(|u| u.name == name_or_id)
            .cloned()
            .ok_or_else(|| StateError::UserNotFound(name_or_id.to_string()))
    }

    pub async fn create_user(&self, name: &str, display_name: &str, email: &str) -> Result<User> {
        validate_user_name(name)?;
        let _w = self.inner.write.lock().await;
        if self.snapshot().users.values().any(|u| u.name == name) {
            return Err(StateError::UserExists(name.to_string()));
        }
        let new = ironscale_store::NewUser {
            name: name.to_string(),
            display_name: display_name.to_string(),
            email: email.to_string(),
            ..Default::default()
        };
        let u = self.inner.store.create_user(&new, now()).await?;
        let out = u.clone();
        self.commit(
            |t| {
                t.users.insert(u.id, Arc::new(u));
            },
            Change::Users(BTreeSet::new()),
        );
        Ok(out)
    }

    pub async fn rename_user(&self, name_or_id: &str, new_name: &str) -> Result<User> {
        validate_user_name(new_name)?;
        let _w = self.inner.write.lock().await;
        let u = self.find_user(name_or_id)?;
        if self
            .snapshot()
            .users
            .values()
            .any(|x| x.name == new_name && x.id != u.id)
        {
            return Err(StateError::UserExists(new_name.to_string()));
        }
        let mut nu = (*u).clone();
        nu.name = new_name.to_string();
        self.inner.store.rename_user(u.id, new_name, now()).await?;
        let owned: BTreeSet<NodeId> = self
            .snapshot()
            .nodes
            .values()
            .filter(|n| n.user_id == Some(u.id))
            .map(|n| n.id)
            .collect();
        let out = nu.clone();
        self.commit(
            |t| {
                t.users.insert(nu.id, Arc::new(nu));
            },
            Change::Users(owned),
        );
        Ok(out)
    }

    pub async fn delete_user(&self, name_or_id: &str) -> Result<User> {
        let _w = self.inner.write.lock().await;
        let u = self.find_user(name_or_id)?;
        let nodes = self
            .snapshot()
            .nodes
            .values()
            .filter(|n| n.user_id == Some(u.id))
            .count();
        if nodes > 0 {
            return Err(StateError::UserHasNodes {
                name: u.name.clone(),
                nodes,
                id: u.id,
            });
        }
        self.inner.store.delete_user(u.id).await?;
        self.commit(
            |t| {
                t.users.remove(&u.id);
            },
            Change::Users(BTreeSet::new()),
        );
        Ok((*u).clone())
    }

    // ----- pre-auth keys -----

    /// Create a key; returns the record and the full secret (shown once).
    pub async fn create_preauth_key(
        &self,
        user: Option<&str>,
        reusable: bool,
        ephemeral: bool,
        expiration: Option<Timestamp>,
        tags: Vec<String>,
    ) -> Result<(PreAuthKey, String)> {
        let user_id = match user {
            Some(u) => Some(self.find_user(u)?.id),
            None => None,
        };
        if !tags.is_empty() {
            match user_id {
                Some(_) => self.check_tags(user_id, &[], &tags),
                None => self.check_tags_defined(&tags),
            }
            .map_err(StateError::Invalid)?;
        }
        if user_id.is_none() && tags.is_empty() {
            return Err(StateError::Invalid(
                "a pre-auth key needs a user (--user) or tags (--tags)".into(),
            ));
        }
        let _w = self.inner.write.lock().await;
        Ok(self
            .inner
            .store
            .create_preauth_key(user_id, reusable, ephemeral, expiration, &tags, now())
            .await?)
    }

    pub async fn list_preauth_keys(&self, user: Option<&str>) -> Result<Vec<PreAuthKey>> {
        let user_id = match user {
            Some(u) => Some(self.find_user(u)?.id),
            None => None,
        };
        Ok(self.inner.store.list_preauth_keys(user_id).await?)
    }

    /// Expire a key given its id or its public prefix.
    pub async fn expire_preauth_key(&self, id_or_prefix: &str) -> Result<PreAuthKey> {
        let _w = self.inner.write.lock().await;
        let keys = self.inner.store.list_preauth_keys(None).await?;
        let k = keys
            .into_iter()
            .find(|k| {
                k.id.to_string() == id_or_prefix
                    || k.prefix == id_or_prefix
                    || id_or_prefix.contains(&k.prefix)
            })
            .ok_or_else(|| StateError::KeyNotFound(id_or_prefix.to_string()))?;
        self.inner.store.expire_preauth_key(k.id, now()).await?;
        Ok(PreAuthKey {
            expiration: Some(now()),
            ..k
        })
    }

    // ----- nodes -----

    pub fn list_nodes(&self) -> Vec<Arc<Node>> {
        self.snapshot().nodes.values().cloned().collect()
    }

    pub fn get_node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.snapshot()
            .nodes
            .get(&id)
            .cloned()
            .ok_or(StateError::NodeNotFound(id))
    }

    pub async fn delete_node(&self, id: NodeId) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        self.delete_node_locked(id).await
    }

    async fn delete_node_locked(&self, id: NodeId) -> Result<Arc<Node>> {
        let node = self.get_node(id)?;
        self.inner.store.delete_node(id).await?;
        {
            let mut ipam = self.inner.ipam.lock();
            for ip in node.ips() {
                ipam.release(ip);
            }
        }
        if let Some(h) = self.inner.ephemeral_timers.lock().remove(&id) {
            h.abort();
        }
        self.commit(
            |t| {
                t.nodes.remove(&id);
                t.online.remove(&id);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        if let Some(s) = self.inner.sessions.lock().remove(&id) {
            s.close();
        }
        tracing::info!(node = id.0, name = %node.given_name, "node deleted");
        Ok(node)
    }

    /// Set a node's key expiry to now (or `at`).
    pub async fn expire_node(&self, id: NodeId, at: Option<Timestamp>) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.expiry = Some(at.unwrap_or_else(now));
        self.save_node_locked(n).await
    }

    pub async fn rename_node(&self, id: NodeId, new_name: &str) -> Result<Arc<Node>> {
        let label = sanitize_label(new_name);
        if label.is_empty() || label != new_name {
            return Err(StateError::Invalid(format!(
                "{new_name:?} is not a valid DNS label (use lowercase letters, digits and '-', at most 63 characters)"
            )));
        }
        let _w = self.inner.write.lock().await;
        if self
            .snapshot()
            .nodes
            .values()
            .any(|n| n.given_name == label && n.id != id)
        {
            return Err(StateError::Invalid(format!(
                "the name {label:?} is already taken"
            )));
        }
        let mut n = (*self.get_node(id)?).clone();
        n.given_name = label;
        self.save_node_locked(n).await
    }

    /// Set a node's tags (admin action, `nodes tag`). Tags must be well formed
    /// and, under a policy, defined in `tagOwners`. A tagged node belongs to no
    /// user and does not expire; an empty list keeps the node's tags as they are.
    pub async fn set_node_tags(&self, id: NodeId, tags: Vec<String>) -> Result<Arc<Node>> {
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        if tags.is_empty() {
            return Err(StateError::Invalid(
                "give at least one tag (e.g. tag:server)".into(),
            ));
        }
        self.check_tags_defined(&tags)
            .map_err(StateError::Invalid)?;
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.tags = tags;
        n.user_id = None;
        n.expiry = None;
        self.save_node_locked(n).await
    }

    /// Approve subnet routes / exit routes (`nodes approve-routes`). Replaces
    /// the approved set; routes the node does not announce are kept but unused
    /// until it does.
    pub async fn set_approved_routes(&self, id: NodeId, routes: Vec<IpNet>) -> Result<Arc<Node>> {
        let mut routes: Vec<IpNet> = routes.into_iter().map(|r| r.trunc()).collect();
        // Approving one exit family approves both, as Tailscale does.
        if routes.iter().any(|r| r.prefix_len() == 0) {
            routes.push("0.0.0.0/0".parse().expect("valid"));
            routes.push("::/0".parse().expect("valid"));
        }
        routes.sort();
        routes.dedup();
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.approved_routes = routes;
        self.save_node_locked(n).await
    }

    /// Persist a changed node and publish it. Writer lock held.
    async fn save_node_locked(&self, n: Node) -> Result<Arc<Node>> {
        self.inner.store.update_node(&n).await?;
        let id = n.id;
        let n = Arc::new(n);
        let out = n.clone();
        self.commit(
            |t| {
                t.nodes.insert(id, n);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        Ok(out)
    }

    // ----- map sessions -----

    /// Apply what a MapRequest carries (disco key, endpoints, hostinfo, capver).
    /// Returns the node, or `None` if no node has this key for this machine.
    pub async fn apply_map_request(
        &self,
        machine: &ironscale_keys::MachinePublic,
        req: &wire::MapRequest,
    ) -> Result<Option<Arc<Node>>> {
        let Some(node) = self.node_by_key(&req.node_key) else {
            return Ok(None);
        };
        if node.machine_key != *machine {
            return Ok(None);
        }
        let mut n = (*node).clone();
        if !req.disco_key.is_zero() {
            n.disco_key = req.disco_key;
        }
        if let Some(eps) = &req.endpoints {
            n.endpoints = eps.clone();
        }
        if req.version > 0 {
            n.capver = req.version;
        }
        if let Some(hi) = &req.hostinfo {
            apply_hostinfo(&mut n, hi);
        }
        if n == *node {
            return Ok(Some(node));
        }
        let _w = self.inner.write.lock().await;
        // Re-read under the lock: another request may have changed the node.
        let Some(cur) = self.snapshot().nodes.get(&node.id).cloned() else {
            return Ok(None);
        };
        let mut m = (*cur).clone();
        m.disco_key = n.disco_key;
        m.endpoints = n.endpoints;
        m.capver = n.capver;
        m.hostinfo_json = n.hostinfo_json;
        m.home_derp = n.home_derp;
        m.announced_routes = n.announced_routes;
        m.hostname = n.hostname;
        if m == *cur {
            return Ok(Some(cur));
        }
        Ok(Some(self.save_node_locked(m).await?))
    }

    /// Register a streaming session for `id`, replacing (closing) an older one.
    pub async fn connect(&self, id: NodeId) -> Result<Arc<SessionSlot>> {
        let slot = Arc::new(SessionSlot::new(id));
        if let Some(old) = self.inner.sessions.lock().insert(id, slot.clone()) {
            old.close();
        }
        if let Some(h) = self.inner.ephemeral_timers.lock().remove(&id) {
            h.abort();
        }
        let _w = self.inner.write.lock().await;
        if !self.snapshot().nodes.contains_key(&id) {
            self.inner.sessions.lock().remove(&id);
            return Err(StateError::NodeNotFound(id));
        }
        if !self.snapshot().online.contains(&id) {
            self.commit(
                |t| {
                    t.online.insert(id);
                },
                Change::Nodes(BTreeSet::from([id])),
            );
        }
        Ok(slot)
    }

    /// A session ended. Marks the node offline if no newer session replaced it.
    pub async fn disconnect(&self, slot: &Arc<SessionSlot>) {
        let id = slot.node_id;
        {
            let mut sessions = self.inner.sessions.lock();
            match sessions.get(&id) {
                Some(s) if Arc::ptr_eq(s, slot) => {
                    sessions.remove(&id);
                }
                _ => return, // replaced by a newer stream, or deleted
            }
        }
        let _w = self.inner.write.lock().await;
        let Some(node) = self.snapshot().nodes.get(&id).cloned() else {
            return;
        };
        let mut n = (*node).clone();
        n.last_seen = Some(now());
        if let Err(e) = self.inner.store.update_node(&n).await {
            tracing::warn!(node = id.0, "persisting last_seen failed: {e}");
        }
        let n = Arc::new(n);
        self.commit(
            |t| {
                t.online.remove(&id);
                t.nodes.insert(id, n);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        if node.ephemeral {
            self.schedule_ephemeral_deletion(id);
        }
    }

    fn schedule_ephemeral_deletion(&self, id: NodeId) {
        let state = self.clone();
        let wait = self.inner.settings.ephemeral_inactivity_timeout;
        let h = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _w = state.inner.write.lock().await;
            if state.snapshot().online.contains(&id) {
                return;
            }
            state.inner.ephemeral_timers.lock().remove(&id);
            match state.delete_node_locked(id).await {
                Ok(n) => {
                    tracing::info!(node = id.0, name = %n.given_name, "ephemeral node removed after inactivity")
                }
                Err(e) => tracing::debug!(node = id.0, "ephemeral cleanup: {e}"),
            }
        });
        if let Some(old) = self.inner.ephemeral_timers.lock().insert(id, h) {
            old.abort();
        }
    }

    /// Replace the DERP map (e.g. after a refresh of `derp.urls`).
    pub async fn set_derp_map(&self, map: wire::DerpMap) {
        let _w = self.inner.write.lock().await;
        if *self.snapshot().derp_map == map {
            return;
        }
        self.commit(|t| t.derp_map = Arc::new(map), Change::Full);
    }

    /// Replace the compiled policy. Every session rebuilds its view.
    pub async fn set_policy(&self, policy: Arc<dyn PolicyView>) {
        let _w = self.inner.write.lock().await;
        self.commit(|t| t.policy = policy, Change::Full);
    }

    /// Watch for node keys expiring: when a node's expiry passes, the node and
    /// its peers are told (the node sees its past KeyExpiry and asks its user
    /// to log in again; peers stop using it).
    pub fn spawn_expiry_watch(&self, every: Duration) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut last = now();
            loop {
                tokio::time::sleep(every).await;
                let t = now();
                let ids: BTreeSet<NodeId> = state
                    .snapshot()
                    .nodes
                    .values()
                    .filter(|n| matches!(n.expiry, Some(e) if e > last && e <= t))
                    .map(|n| n.id)
                    .collect();
                last = t;
                if !ids.is_empty() {
                    tracing::info!(nodes = ids.len(), "node keys expired");
                    let snap = state.snapshot();
                    state.publish(&snap, &snap, &Change::Nodes(ids));
                }
            }
        });
    }

    /// Number of open map sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }

    fn allocate_ips(&self) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        let mut rng = rand::rng();
        Ok(self.inner.ipam.lock().allocate(&mut rng)?)
    }

    fn release_ips(&self, ips: &[IpAddr]) {
        let mut ipam = self.inner.ipam.lock();
        for ip in ips {
            ipam.release(*ip);
        }
    }
}

/// Copy the parts of Hostinfo the server acts on into the node.
pub(crate) fn apply_hostinfo(n: &mut Node, hi: &serde_json::Value) {
    let view = wire::HostinfoView::from_value(hi);
    n.hostinfo_json = Some(hi.to_string());
    if view.preferred_derp > 0 {
        n.home_derp = view.preferred_derp;
    }
    if !view.hostname.is_empty() {
        n.hostname = view.hostname.clone();
    }
    let mut routes: Vec<IpNet> = view
        .routable_ips
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    routes.sort();
    routes.dedup();
    n.announced_routes = routes;
}

fn validate_user_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "-_.@+".contains(c))
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "{name:?} is not a valid user name (letters, digits, '-', '_', '.', '@', '+'; at most 63 characters)"
        )))
    }
}

/// Tailscale tag syntax: `tag:` + a letter, then letters, digits, '-'.
pub fn validate_tag(tag: &str) -> Result<()> {
    let Some(name) = tag.strip_prefix("tag:") else {
        return Err(StateError::Invalid(format!(
            "tag {tag:?} must start with \"tag:\""
        )));
    };
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StateError::Invalid(format!(
            "tag {tag:?} is invalid: after \"tag:\" use a letter, then letters, digits or '-'"
        )))
    }
}

/// Turn a client hostname into a DNS label: lowercase, invalid characters to
/// '-', no leading/trailing '-', at most 63 characters.
pub fn sanitize_label(host: &str) -> String {
    let mut s: String = host
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    // Only the first label of an FQDN counts.
    if let Some(i) = host.find('.') {
        s.truncate(i);
    }
    let s = s.trim_matches('-');
    let mut s: String = s.chars().take(63).collect();
    while s.ends_with('-') {
        s.pop();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_tags() {
        assert_eq!(sanitize_label("My Laptop"), "my-laptop");
        assert_eq!(sanitize_label("db1.corp.example"), "db1");
        assert_eq!(sanitize_label("--x--"), "x");
        assert!(validate_tag("tag:server").is_ok());
        assert!(validate_tag("server").is_err());
        assert!(validate_tag("tag:1x").is_err());
    }
}
