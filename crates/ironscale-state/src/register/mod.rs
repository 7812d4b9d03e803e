//! `/machine/register`: gather the facts, [`decide`] (pure), apply the
//! decision in one store transaction. A single-use key is claimed in the same
//! transaction that writes the node, so two registrations racing with one key
//! (on one server or on two servers sharing a database) cannot both win, and
//! every refusal leaves the state untouched.
//!
//! Interactive registrations (no credential) wait in the pending table
//! (`pending.rs`) until they are approved ([`State::approve_registration`],
//! the seam the CLI/API and OIDC use), denied or expired.

mod decide;
mod pending;

use std::sync::Arc;

use ironscale_keys::MachinePublic;
use ironscale_mapper::Tailnet;
use ironscale_types::{Node, NodeId, Timestamp, User, UserId, UserRef};
use ironscale_wire as wire;
use tokio::sync::watch;

pub use decide::{
    decide, Approval, Claim, Credential, DeviceApproval, KeyLookup, Lookups, Refusal,
    RegisterDecision, RegisterFacts, Request, ERR_EXPIRED_KEY, ERR_INVALID_KEY, ERR_USED_KEY,
};
pub(crate) use pending::PendingTable;
pub use pending::{PendingRegistration, RegistrationId, RegistrationStatus};

use crate::{State, StateError};

/// What a register request came to; the control crate turns it into the
/// wire `RegisterResponse`.
#[derive(Debug, Clone)]
pub enum RegisterResult {
    /// The machine is this node. `owner` is `None` for a tagged node.
    Authorized {
        node: Arc<Node>,
        owner: Option<Arc<User>>,
        key_expired: bool,
        /// `MachineAuthorized`: false while the node waits for device
        /// approval (`node.device_approval`; `State::approve_node`).
        machine_authorized: bool,
    },
    /// The node key expired (or an ephemeral node logged out and is gone):
    /// the client must log in again.
    KeyExpired {
        node: Option<Arc<Node>>,
    },
    /// Interactive login: the user opens the registration's URL.
    NeedsLogin(Box<PendingRegistration>),
    Refused(Refusal),
}

impl RegisterResult {
    /// The node the machine is (authorized or expired), if any.
    pub fn node(&self) -> Option<&Arc<Node>> {
        match self {
            RegisterResult::Authorized { node, .. } => Some(node),
            RegisterResult::KeyExpired { node } => node.as_ref(),
            RegisterResult::NeedsLogin(_) | RegisterResult::Refused(_) => None,
        }
    }
}

impl Request {
    pub fn from_wire(req: &wire::RegisterRequest) -> Request {
        let request_tags = req
            .hostinfo
            .as_ref()
            .map(|h| wire::HostinfoView::from_value(h).request_tags)
            .unwrap_or_default();
        Request {
            node_key: req.node_key,
            old_node_key: req.old_node_key,
            expiry: req.expiry,
            hostinfo: req.hostinfo.clone(),
            ephemeral: req.ephemeral,
            capver: req.version,
            request_tags,
        }
    }
}

/// [`Lookups`] over one snapshot and the policy in force.
struct StateLookups<'a> {
    state: &'a State,
    tailnet: &'a Tailnet,
}

impl Lookups for StateLookups<'_> {
    fn machine_node(
        &self,
        machine: &MachinePublic,
        user: Option<UserId>,
        tags: &[String],
    ) -> Option<Arc<Node>> {
        self.tailnet
            .nodes
            .values()
            .find(|n| n.machine_key == *machine && n.user_id == user && n.tags == tags)
            .cloned()
    }

    fn check_requested_tags(
        &self,
        user: Option<UserId>,
        owner_tags: &[String],
        requested: &[String],
    ) -> Result<(), String> {
        self.state.check_requested_tags(user, owner_tags, requested)
    }
}

impl State {
    /// Handle a RegisterRequest from the machine authenticated by Noise.
    pub async fn register(
        &self,
        machine: MachinePublic,
        req: &wire::RegisterRequest,
    ) -> RegisterResult {
        let request = Request::from_wire(req);
        let _w = self.inner.write.lock().await;
        let credential = match req.auth_key() {
            Some(text) => Credential::AuthKey(self.lookup_key(text).await),
            None => Credential::None,
        };
        let out = self
            .decide_and_apply_locked(machine, &request, credential)
            .await;
        if let RegisterResult::Refused(r) = &out {
            tracing::info!(machine = %machine.short(), "registration refused: {r}");
        }
        out
    }

    async fn lookup_key(&self, text: &str) -> KeyLookup {
        match self.store().find_preauth_key(text).await {
            Ok(Some(key)) => {
                let owner_exists = key
                    .user_id
                    .is_none_or(|u| self.snapshot().users.contains_key(&u));
                KeyLookup::Found { key, owner_exists }
            }
            Ok(None) => KeyLookup::NotFound,
            Err(e) => {
                tracing::error!("pre-auth key lookup failed: {e}");
                KeyLookup::Failed
            }
        }
    }

    /// Decide and apply. Writer lock held.
    async fn decide_and_apply_locked(
        &self,
        machine: MachinePublic,
        request: &Request,
        credential: Credential,
    ) -> RegisterResult {
        let now = self.now();
        let decision = self.decide_at(machine, request, credential, now);
        match self
            .apply_decision_locked(machine, request, decision, now)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(machine = %machine.short(), "registration failed: {e}");
                RegisterResult::Refused(Refusal::Internal(e.to_string()))
            }
        }
    }

    /// Gather the facts from the current snapshot and decide.
    fn decide_at(
        &self,
        machine: MachinePublic,
        request: &Request,
        credential: Credential,
        now: Timestamp,
    ) -> RegisterDecision {
        let t = self.snapshot();
        let lookups = StateLookups {
            state: self,
            tailnet: &t,
        };
        let facts = RegisterFacts {
            machine,
            request,
            by_node_key: self.node_by_key(&request.node_key),
            by_old_key: (!request.old_node_key.is_zero())
                .then(|| self.node_by_key(&request.old_node_key))
                .flatten(),
            credential,
            node_expiry: self.settings().node_expiry,
            device_approval: DeviceApproval {
                required: self.settings().device_approval,
                exempt_tagged_keys: self.settings().device_approval_exempt_tagged_keys,
            },
            lookups: &lookups,
        };
        decide(&facts, now)
    }

    fn authorized(&self, node: Arc<Node>, now: Timestamp) -> RegisterResult {
        let owner = if node.is_tagged() {
            None
        } else {
            node.user_id
                .and_then(|u| self.snapshot().users.get(&u).cloned())
        };
        RegisterResult::Authorized {
            key_expired: node.is_expired(now),
            machine_authorized: node.approved,
            owner,
            node,
        }
    }

    /// Perform a decision: every write in one transaction. Writer lock held.
    async fn apply_decision_locked(
        &self,
        machine: MachinePublic,
        request: &Request,
        decision: RegisterDecision,
        now: Timestamp,
    ) -> Result<RegisterResult, StateError> {
        use RegisterDecision as D;
        Ok(match decision {
            D::Refuse(r) => RegisterResult::Refused(r),
            D::KeyExpired { node } => RegisterResult::KeyExpired {
                node: node.and_then(|id| self.snapshot().nodes.get(&id).cloned()),
            },
            D::Authorized { node } => match self.snapshot().nodes.get(&node).cloned() {
                Some(n) => self.authorized(n, now),
                None => return Err(StateError::NodeNotFound(node)),
            },
            D::DeleteEphemeral { node } => {
                self.delete_node_locked(node).await?;
                RegisterResult::KeyExpired { node: None }
            }
            D::Update { node, claim, what } => {
                // Field by field: what another writer changed meanwhile in
                // the fields this registration leaves alone survives.
                let cur = self
                    .snapshot()
                    .nodes
                    .get(&node.id)
                    .cloned()
                    .ok_or(StateError::NodeNotFound(node.id))?;
                let update = ironscale_store::NodeUpdate::between(&cur, &node);
                let presence = node.presence();
                let mut tx = self.store().begin().await?;
                if let Some(c) = claim {
                    if !tx.claim_preauth_key(c.key_id).await? {
                        return Ok(RegisterResult::Refused(Refusal::UsedKey));
                    }
                }
                if !update.is_empty() {
                    tx.update_node_fields(node.id, &update).await?;
                }
                if presence != cur.presence() {
                    tx.update_node_presence(node.id, &presence).await?;
                }
                tx.commit().await?;
                let out = self.publish_node_locked(*node)?;
                tracing::info!(node = out.id.0, name = %out.given_name, "{what}");
                let out = self.auto_approve_registered_locked(out).await?;
                self.authorized(out, now)
            }
            D::Create { node, claim } => {
                let mut n = *node;
                let (v4, v6) = self.allocate_ips()?;
                n.ipv4 = v4;
                n.ipv6 = v6;
                n.given_name = self.unique_name(&n.hostname, None);
                let written = async {
                    let mut tx = self.store().begin().await?;
                    if let Some(c) = claim {
                        if !tx.claim_preauth_key(c.key_id).await? {
                            return Ok(None);
                        }
                    }
                    let n = tx.insert_node(&n).await?;
                    tx.commit().await?;
                    Ok::<_, StateError>(Some(n))
                }
                .await;
                let n = match written {
                    Ok(Some(n)) => n,
                    Ok(None) => {
                        self.release_ips(&n.ips());
                        return Ok(RegisterResult::Refused(Refusal::UsedKey));
                    }
                    Err(e) => {
                        self.release_ips(&n.ips());
                        return Err(e);
                    }
                };
                let out = self.publish_node_locked(n)?;
                tracing::info!(
                    node = out.id.0,
                    name = %out.given_name,
                    ip = ?out.ipv4,
                    method = out.register_method.as_str(),
                    "node registered"
                );
                let out = self.auto_approve_registered_locked(out).await?;
                self.authorized(out, now)
            }
            D::Interactive => {
                if !self.settings().interactive_login {
                    return Ok(RegisterResult::Refused(Refusal::NeedsAuthKey));
                }
                match self.inner.pending.lock().start(machine, request, now) {
                    Ok(p) => {
                        tracing::info!(
                            machine = %machine.short(),
                            registration = %p.id,
                            host = %p.hostname,
                            "interactive registration waiting for approval"
                        );
                        RegisterResult::NeedsLogin(Box::new(p))
                    }
                    Err(pending::TableFull) => RegisterResult::Refused(Refusal::Registration(
                        "too many registrations are waiting for approval; try again later".into(),
                    )),
                }
            }
        })
    }

    /// A registered node that announces routes: store what `autoApprovers`
    /// approve for it. Writer lock held.
    async fn auto_approve_registered_locked(&self, n: Arc<Node>) -> Result<Arc<Node>, StateError> {
        if n.announced_routes.is_empty() {
            return Ok(n);
        }
        Ok(self
            .store_auto_approvals_locked(&[n.id])
            .await?
            .pop()
            .unwrap_or(n))
    }

    /// Interactive registrations waiting for approval, oldest first.
    pub fn pending_registrations(&self) -> Vec<PendingRegistration> {
        self.inner.pending.lock().list(self.now())
    }

    pub fn pending_registration(&self, id: &RegistrationId) -> Option<PendingRegistration> {
        self.inner.pending.lock().get(id, self.now())
    }

    /// Follow a pending registration until it is approved or denied (a
    /// client's follow-up request waits on this). `None`: unknown or expired.
    pub fn watch_registration(
        &self,
        id: &RegistrationId,
    ) -> Option<watch::Receiver<RegistrationStatus>> {
        self.inner.pending.lock().watch(id, self.now())
    }

    /// Vouch for a pending registration: the node is created (or this
    /// machine's node re-authenticated) for `approval`'s owner, as a
    /// pre-auth key would, and the waiting client is told.
    pub async fn approve_registration(
        &self,
        id: &RegistrationId,
        approval: Approval,
    ) -> Result<Arc<Node>, StateError> {
        let _w = self.inner.write.lock().await;
        if approval.user.is_none() && approval.tags.is_empty() {
            return Err(StateError::Invalid(
                "an approval needs a user (or tags for a tagged node)".into(),
            ));
        }
        if let Some(u) = approval.user {
            if !self.snapshot().users.contains_key(&u) {
                return Err(StateError::UserNotFound(UserRef::Id(u).to_string()));
            }
        }
        if !approval.tags.is_empty() {
            match approval.user {
                Some(_) => self.check_tags(approval.user, &[], &approval.tags),
                None => self.check_tags_defined(&approval.tags),
            }
            .map_err(StateError::Invalid)?;
        }
        // Taken out of the table while it is applied: a denial meanwhile
        // finds nothing to deny, and cannot be overridden by this approval.
        let now = self.now();
        let entry = self
            .inner
            .pending
            .lock()
            .take(id, now)
            .ok_or_else(|| StateError::RegistrationNotFound(id.to_string()))?;
        let pending = entry.registration().clone();
        let out = self
            .decide_and_apply_locked(
                pending.machine,
                &pending.request,
                Credential::Approved(approval),
            )
            .await;
        let mut table = self.inner.pending.lock();
        match out {
            RegisterResult::Authorized { node, .. } => {
                table.finish_entry(entry, RegistrationStatus::Approved(node.clone()));
                Ok(node)
            }
            RegisterResult::Refused(r) => {
                table.restore(entry);
                Err(StateError::Invalid(r.to_string()))
            }
            RegisterResult::KeyExpired { .. } | RegisterResult::NeedsLogin(_) => {
                table.restore(entry);
                Err(StateError::Invalid(
                    "the registration cannot be approved in its current state; ask the client to log in again"
                        .into(),
                ))
            }
        }
    }

    /// Why a registration was denied (while the denial is remembered: until
    /// the registration would have expired).
    pub fn registration_denial(&self, id: &RegistrationId) -> Option<String> {
        self.inner.pending.lock().denial(id, self.now())
    }

    /// Refuse a pending registration; the waiting client is told `reason`.
    pub fn deny_registration(&self, id: &RegistrationId, reason: &str) -> Result<(), StateError> {
        if self
            .inner
            .pending
            .lock()
            .finish(id, RegistrationStatus::Denied(reason.to_string()))
        {
            Ok(())
        } else {
            Err(StateError::RegistrationNotFound(id.to_string()))
        }
    }

    /// A MagicDNS label derived from `hostname`, unique in the tailnet.
    pub(crate) fn unique_name(&self, hostname: &str, except: Option<NodeId>) -> String {
        let base = ironscale_types::DnsLabel::sanitize(hostname)
            .unwrap_or_else(|| ironscale_types::DnsLabel::parse("node").expect("a valid label"));
        let index = self.inner.index.load();
        let taken = |name: &str| index.name_taken(name, except);
        if !taken(&base) {
            return base.into_string();
        }
        (1..)
            .map(|i| base.with_suffix(i))
            .find(|c| !taken(c))
            .unwrap_or(base)
            .into_string()
    }
}
