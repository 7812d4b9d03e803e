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
//! - Time comes from the injected [`Clock`]; node timers live in one table
//!   fired by one driver task (see `timers.rs`).
//! - Tailscale SSH check mode (`ssh_check.rs`): pending checks and recent
//!   passes, in memory, bounded, on the same clock.
//! - Reading for display goes through the read models (`views.rs`:
//!   [`NodeView`], [`UserView`], [`PreAuthKeyView`]), shared by the API, the
//!   CLI and a future web UI.

mod apikeys;
mod audit;
mod clock;
mod commit;
mod error;
mod index;
mod keys;
mod node_admin;
mod nodes;
mod policy;
mod register;
mod session;
mod sessions;
mod ssh_check;
mod timers;
mod users;
pub use users::ProviderIdentity;
mod doctor;
mod netinfo;
mod views;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

pub use apikeys::{display_prefix, normalize_prefix, parse_api_key, API_KEY_PREFIX};
use arc_swap::ArcSwap;
pub use audit::{redact_secrets, AUDIT_LIST_MAX};
use ipnet::{Ipv4Net, Ipv6Net};
use ironscale_ipam::{Allocator, Strategy};
use ironscale_keys::NodePublic;
pub use ironscale_mapper::{DnsSettings, ExtraRecord};
use ironscale_mapper::{PolicyView, Tailnet};
use ironscale_store::Store;
use ironscale_types::{Node, NodeId, Timestamp};
use ironscale_wire as wire;
use parking_lot::Mutex;

pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use doctor::{AccessExplanation, Finding, Severity as FindingSeverity};
pub use error::StateError;
pub use netinfo::{DerpNodeView, DerpRegionView, NetInfo, NodeNetView};
pub use nodes::{sanitize_label, validate_tag};
pub use policy::{PolicyRejected, PolicySetError, PolicyState, POLICY_KV_KEY};
pub use register::{
    decide, Approval, Claim, Credential, DeviceApproval, KeyLookup, Lookups, PendingRegistration,
    Refusal, RegisterDecision, RegisterFacts, RegisterResult, RegistrationId, RegistrationStatus,
    Request, ERR_EXPIRED_KEY, ERR_INVALID_KEY, ERR_USED_KEY,
};
pub use session::{Pending, SessionSlot};
pub use ssh_check::{
    PendingSshCheck, SshCheckDecision, SshCheckError, SshCheckId, SshCheckStatus,
    MAX_PENDING_SSH_CHECKS, MAX_RECENT_SSH_CHECKS, SSH_CHECK_TTL,
};
pub use timers::TimerKind;
pub use views::{ExpiryState, NodeFilter, NodeView, PreAuthKeyView, UserFilter, UserView};

/// Why [`State::health`] failed, without the underlying error's text (it is
/// in the server log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HealthError {
    #[error("the database is unreachable")]
    DatabaseUnreachable,
}

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
    /// A registration without a credential waits for approval (pending
    /// table) instead of being refused.
    pub interactive_login: bool,
    /// How long a pending interactive registration waits for approval.
    pub registration_ttl: Duration,
    /// At most this many pending registrations (more are refused).
    pub max_pending_registrations: usize,
    /// `node.device_approval`: a new node is created unapproved (no peers,
    /// seen by none, `MachineAuthorized` false) until `approve_node`.
    pub device_approval: bool,
    /// `node.device_approval_exempt_tagged_keys`: with device approval on, a
    /// node registered with a tagged pre-auth key is approved at once.
    pub device_approval_exempt_tagged_keys: bool,
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
            interactive_login: false,
            registration_ttl: Duration::from_secs(15 * 60),
            max_pending_registrations: 1024,
            device_approval: false,
            device_approval_exempt_tagged_keys: true,
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
    /// Lookups by node key, node name, user name and owner.
    index: ArcSwap<index::Index>,
    write: tokio::sync::Mutex<()>,
    ipam: Mutex<Allocator>,
    sessions: Mutex<HashMap<NodeId, Arc<SessionSlot>>>,
    /// Where time comes from (system clock in production, manual in tests).
    clock: Arc<dyn Clock>,
    /// Every node timer (ephemeral deletion, key expiry); one driver task.
    timers: Mutex<timers::TimerTable>,
    /// Wakes the timer driver when the table changed.
    timers_changed: Arc<tokio::sync::Notify>,
    /// The clock time up to which the driver has fired timers.
    fired_through: tokio::sync::watch::Sender<Timestamp>,
    policy: Mutex<policy::PolicyState>,
    /// Interactive registrations waiting for approval.
    pending: Mutex<register::PendingTable>,
    /// Tailscale SSH checks waiting for a login, and recent passes.
    ssh_checks: Mutex<ssh_check::SshChecks>,
    /// API keys that verified recently.
    api_keys: Mutex<apikeys::ApiKeyCache>,
    /// Bounds concurrent bcrypt verifications.
    bcrypt_slots: tokio::sync::Semaphore,
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

impl State {
    /// Load everything from the store and build the first snapshot, on the
    /// system clock.
    pub async fn load(store: Store, settings: Settings, derp_map: wire::DerpMap) -> Result<State> {
        Self::load_with_clock(store, settings, derp_map, Arc::new(SystemClock)).await
    }

    /// [`State::load`] on a given clock (tests: a [`ManualClock`]). Starts the
    /// timer driver, so it must run inside a tokio runtime.
    pub async fn load_with_clock(
        store: Store,
        settings: Settings,
        derp_map: wire::DerpMap,
        clock: Arc<dyn Clock>,
    ) -> Result<State> {
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
        t.reelect_all();
        let index = index::Index::build(&t);
        let state = State {
            inner: Arc::new(Inner {
                store,
                current: ArcSwap::from_pointee(t),
                index: ArcSwap::from_pointee(index),
                write: tokio::sync::Mutex::new(()),
                ipam: Mutex::new(ipam),
                sessions: Mutex::new(HashMap::new()),
                fired_through: tokio::sync::watch::Sender::new(clock.now()),
                clock,
                timers: Mutex::new(timers::TimerTable::default()),
                timers_changed: Arc::new(tokio::sync::Notify::new()),
                policy: Mutex::new(policy::PolicyState::default()),
                pending: Mutex::new(register::PendingTable::new(
                    settings.max_pending_registrations,
                    settings.registration_ttl,
                )),
                ssh_checks: Mutex::new(ssh_check::SshChecks::default()),
                api_keys: Mutex::new(apikeys::ApiKeyCache::default()),
                bcrypt_slots: tokio::sync::Semaphore::new(apikeys::BCRYPT_SLOTS),
                settings,
            }),
        };
        state.init_timers();
        state.spawn_timer_driver();
        Ok(state)
    }

    /// The store, for this crate's commands only: callers outside ask
    /// `State` for what they need ([`State::health`],
    /// [`State::stored_policy`]), so every write goes through the writer lock
    /// and the snapshot never falls behind the database (checked by the
    /// layering test).
    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Whether the database answers. The error is logged here and not
    /// returned: health routes may be public, and a driver's message names
    /// paths, hosts and users.
    pub async fn health(&self) -> Result<(), HealthError> {
        match self.inner.store.schema_version().await {
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::error!("health check: the database is unreachable: {e}");
                Err(HealthError::DatabaseUnreachable)
            }
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The current snapshot (lock-free).
    pub fn snapshot(&self) -> Arc<Tailnet> {
        self.inner.current.load_full()
    }

    /// The node whose given name (its MagicDNS name) is `name`, from the lookup index.
    pub fn node_named(&self, name: &str) -> Option<NodeId> {
        self.inner.index.load().node_named(name)
    }

    pub fn node_by_key(&self, key: &NodePublic) -> Option<Arc<Node>> {
        let id = *self.inner.index.load().by_node_key.get(key)?;
        self.snapshot().nodes.get(&id).cloned()
    }

    /// Whether `key` belongs to a node of this tailnet (DERP `verify_clients`).
    pub fn is_known_node_key(&self, key: &NodePublic) -> bool {
        self.inner.index.load().by_node_key.contains_key(key)
    }

    /// Whether a DERP relay should admit the client with node key `key`
    /// (`/verify`, the embedded relay's `verify_clients`): a node of this
    /// tailnet now, its key not expired, approved (with device approval).
    /// Read from the snapshot, so a node deleted or expired is refused at once.
    pub fn relay_allowed(&self, key: &NodePublic) -> bool {
        let Some(id) = self.inner.index.load().by_node_key.get(key).copied() else {
            return false;
        };
        let t = self.snapshot();
        let Some(n) = t.nodes.get(&id) else {
            return false;
        };
        n.approved && n.expiry.is_none_or(|e| e > self.now())
    }

    /// Replace the DERP map (e.g. after a refresh of `derp.urls`).
    pub async fn set_derp_map(&self, map: wire::DerpMap) {
        let _w = self.inner.write.lock().await;
        if *self.snapshot().derp_map == map {
            return;
        }
        self.commit(|t| t.derp_map = Arc::new(map), Change::Full);
    }

    /// Replace the tailnet's DNS settings (a config reload, a changed
    /// `extra_records_path` file). Every session rebuilds its view and sends
    /// what changed: a `DNSConfig`, and the self node when `magic_dns_aaaa`
    /// or the base domain (the names) changed. `false` when nothing changed.
    pub async fn set_dns(&self, dns: DnsSettings) -> bool {
        let _w = self.inner.write.lock().await;
        if *self.snapshot().dns == dns {
            return false;
        }
        self.commit(|t| t.dns = Arc::new(dns), Change::Full);
        true
    }

    /// The DNS settings in force.
    pub fn dns(&self) -> Arc<DnsSettings> {
        self.snapshot().dns.clone()
    }

    /// Replace the compiled policy. Every session rebuilds its view.
    pub async fn set_policy(&self, policy: Arc<dyn PolicyView>) {
        let _w = self.inner.write.lock().await;
        self.commit(|t| t.policy = policy, Change::Full);
    }
}
