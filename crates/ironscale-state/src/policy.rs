//! The policy in force: parsing and compiling new policies (the old one stays
//! in force when a new one is rejected), and keeping the compiled form in step
//! with the tailnet as nodes join, leave or change.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_mapper::{AllowAll, CompiledView, PolicyView, Tailnet};
use ironscale_policy::{CompiledPolicy, Policy, PolicyError, PolicyWarning};
use ironscale_types::{Node, NodeId, User};

use crate::{Change, State};

/// The policy source and its compiled form.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    /// The policy text in force (`None`: no policy, allow all).
    pub text: Option<String>,
    pub policy: Option<Arc<Policy>>,
    pub compiled: Option<Arc<CompiledPolicy>>,
    pub updated_at: Option<ironscale_types::Timestamp>,
}

/// Where `policy.mode: database` keeps the policy text.
pub const POLICY_KV_KEY: &str = "policy";

/// Why a policy was not installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicySetError {
    #[error("{0}")]
    Policy(#[from] PolicyError),
    #[error("storing the policy failed: {0}")]
    Store(#[from] ironscale_store::StoreError),
}

/// A rejected policy: every error, with positions.
#[derive(Debug)]
pub struct PolicyRejected(pub PolicyError);

impl std::fmt::Display for PolicyRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for PolicyRejected {}

pub(crate) fn users_nodes(t: &Tailnet) -> (Vec<User>, Vec<Node>) {
    (
        t.users.values().map(|u| (**u).clone()).collect(),
        t.nodes.values().map(|n| (**n).clone()).collect(),
    )
}

/// Whether a node change matters to the policy (identity, addresses, routes).
pub(crate) fn policy_relevant(a: &Node, b: &Node) -> bool {
    a.tags != b.tags
        || a.user_id != b.user_id
        || a.ipv4 != b.ipv4
        || a.ipv6 != b.ipv6
        || a.approved_routes != b.approved_routes
        || a.announced_routes != b.announced_routes
        || a.hostname != b.hostname
}

impl State {
    /// The policy text `policy.mode: database` keeps (`None`: none stored
    /// yet, allow all), as stored, whether or not it is in force.
    pub async fn stored_policy(&self) -> Result<Option<String>, ironscale_store::StoreError> {
        self.store().kv_get(POLICY_KV_KEY).await
    }

    /// Parse and compile `text` against the current tailnet without installing it.
    pub fn check_policy(
        &self,
        text: &str,
        file_name: &str,
    ) -> Result<(CompiledPolicy, Vec<PolicyWarning>), PolicyError> {
        let policy = Policy::parse(text, file_name)?;
        let t = self.snapshot();
        let (users, nodes) = users_nodes(&t);
        let compiled =
            CompiledPolicy::compile(&policy, &users, &nodes, &self.settings().policy_tailnet)?;
        Ok((compiled, policy.warnings().to_vec()))
    }

    /// Install a new policy. On any error the policy in force stays.
    pub async fn set_policy_text(
        &self,
        text: &str,
        file_name: &str,
    ) -> Result<Vec<PolicyWarning>, PolicyError> {
        self.install_policy(text, file_name, false)
            .await
            .map_err(|e| match e {
                PolicySetError::Policy(p) => p,
                PolicySetError::Store(s) => PolicyError::new(
                    file_name,
                    None,
                    ironscale_policy::ErrorKind::Invalid,
                    s.to_string(),
                ),
            })
    }

    /// `policy.mode: database`: install a new policy and store it. Nothing
    /// changes when it is rejected.
    pub async fn set_policy_in_database(
        &self,
        text: &str,
    ) -> Result<Vec<PolicyWarning>, PolicySetError> {
        self.install_policy(text, "policy", true).await
    }

    async fn install_policy(
        &self,
        text: &str,
        file_name: &str,
        persist: bool,
    ) -> Result<Vec<PolicyWarning>, PolicySetError> {
        let _w = self.inner.write.lock().await;
        let policy = Policy::parse(text, file_name)?;
        let t = self.snapshot();
        let (users, nodes) = users_nodes(&t);
        let mut compiled =
            CompiledPolicy::compile(&policy, &users, &nodes, &self.settings().policy_tailnet)?;
        compiled.sync_primaries(&t.primaries, &BTreeSet::new());
        let compiled = Arc::new(compiled);
        let warnings = policy.warnings().to_vec();
        if persist {
            self.store().kv_set(POLICY_KV_KEY, text).await?;
        }
        {
            let mut ps = self.inner.policy.lock();
            ps.text = Some(text.to_string());
            ps.policy = Some(Arc::new(policy));
            ps.compiled = Some(compiled.clone());
            ps.updated_at = Some(self.now());
        }
        let view: Arc<dyn PolicyView> = Arc::new(CompiledView(compiled));
        self.commit(|t| t.policy = view, Change::Full);
        // autoApprovers approve at a policy change too (stored, once).
        let routers: Vec<NodeId> = self
            .snapshot()
            .nodes
            .values()
            .filter(|n| !n.announced_routes.is_empty())
            .map(|n| n.id)
            .collect();
        if let Err(e) = self.store_auto_approvals_locked(&routers).await {
            tracing::error!("storing the policy's route auto-approvals failed: {e}");
        }
        tracing::info!(file = file_name, "policy installed");
        Ok(warnings)
    }

    /// Remove the policy (allow all).
    pub async fn clear_policy(&self) {
        let _w = self.inner.write.lock().await;
        *self.inner.policy.lock() = PolicyState::default();
        self.commit(|t| t.policy = Arc::new(AllowAll), Change::Full);
    }

    pub fn policy_state(&self) -> PolicyState {
        self.inner.policy.lock().clone()
    }

    /// Check that `tags` may be carried by a node of `user` (or a key owned by
    /// it) under the policy in force. Without a policy, any well-formed tag is fine.
    /// The refusal names the policy file, line and column: for administrators.
    pub fn check_tags(
        &self,
        user: Option<ironscale_types::UserId>,
        owner_tags: &[String],
        tags: &[String],
    ) -> Result<(), String> {
        self.tag_refusal(user, owner_tags, tags)
            .map_err(|(full, _)| full)
    }

    /// [`State::check_tags`] for a registering client: the refusal says why,
    /// without the server's file names.
    pub(crate) fn check_requested_tags(
        &self,
        user: Option<ironscale_types::UserId>,
        owner_tags: &[String],
        tags: &[String],
    ) -> Result<(), String> {
        self.tag_refusal(user, owner_tags, tags)
            .map_err(|(_, message)| message)
    }

    /// `Err((with location, message alone))`.
    fn tag_refusal(
        &self,
        user: Option<ironscale_types::UserId>,
        owner_tags: &[String],
        tags: &[String],
    ) -> Result<(), (String, String)> {
        for t in tags {
            crate::validate_tag(t).map_err(|e| (e.to_string(), e.to_string()))?;
        }
        let ps = self.inner.policy.lock();
        match &ps.compiled {
            Some(c) => c
                .may_own_tags(user, owner_tags, tags)
                .map_err(|e| (e.to_string(), e.message)),
            None => Ok(()),
        }
    }

    /// Admin check for tags without an owning user (tag-only pre-auth keys,
    /// `nodes tag`): each tag must be well formed and, under a policy, defined
    /// in `tagOwners`.
    pub fn check_tags_defined(&self, tags: &[String]) -> Result<(), String> {
        for t in tags {
            crate::validate_tag(t).map_err(|e| e.to_string())?;
        }
        let ps = self.inner.policy.lock();
        if let Some(p) = &ps.policy {
            for t in tags {
                if !p.tag_owners.iter().any(|d| d.tag.value == *t) {
                    return Err(format!(
                        "tag {t:?} is not defined in the policy's tagOwners; add it there first"
                    ));
                }
            }
        }
        Ok(())
    }

    /// Bring the compiled policy in step after `old` → `next` changed the
    /// nodes in `ids`, or the users in `users` ((old, new) pairs). A user
    /// added or changed goes through [`CompiledPolicy::update_user`]
    /// (in place when the policy does not name it); a user removed
    /// recompiles. Returns the nodes whose policy outputs changed (their
    /// sessions rebuild fully). Writer lock held.
    /// `autoApprovers` approve once: the announced routes the policy approves
    /// for these nodes that their record does not yet hold are stored as
    /// approved (so the approval outlives a later policy change, and the
    /// route election sees them). Returns the nodes that changed. Writer lock held.
    pub(crate) async fn store_auto_approvals_locked(
        &self,
        ids: &[NodeId],
    ) -> Result<Vec<Arc<Node>>, crate::StateError> {
        let wanted: Vec<(Arc<Node>, Vec<ipnet::IpNet>)> = {
            let ps = self.inner.policy.lock();
            let Some(c) = ps.compiled.as_ref() else {
                return Ok(Vec::new());
            };
            let t = self.snapshot();
            ids.iter()
                .filter_map(|id| t.nodes.get(id).cloned())
                .filter_map(|n| {
                    let missing: Vec<ipnet::IpNet> = c
                        .approved_routes(n.id)
                        .into_iter()
                        .filter(|r| {
                            n.announced_routes.contains(r) && !n.approved_routes.contains(r)
                        })
                        .collect();
                    (!missing.is_empty()).then_some((n, missing))
                })
                .collect()
        };
        let mut out = Vec::new();
        for (n, missing) in wanted {
            let mut m = (*n).clone();
            m.approved_routes.extend(missing.iter().copied());
            m.approved_routes.sort();
            m.approved_routes.dedup();
            self.store()
                .update_node_fields(
                    m.id,
                    &ironscale_store::NodeUpdate {
                        approved_routes: Some(m.approved_routes.clone()),
                        ..Default::default()
                    },
                )
                .await?;
            tracing::info!(node = m.id.0, name = %m.given_name, routes = ?missing, "routes approved by the policy's autoApprovers");
            out.push(self.publish_node_locked(m)?);
        }
        Ok(out)
    }

    /// Give the compiled policy the commit's route election (see
    /// `CompiledPolicy::sync_primaries`); returns the routers whose
    /// primaries changed in the policy. Writer lock held.
    pub(crate) fn sync_policy_primaries(
        &self,
        next: &mut Tailnet,
        routers: &BTreeSet<NodeId>,
    ) -> BTreeSet<NodeId> {
        let mut ps = self.inner.policy.lock();
        let Some(compiled) = ps.compiled.as_mut() else {
            return BTreeSet::new();
        };
        if compiled.primaries_in_sync() && routers.is_empty() {
            return BTreeSet::new();
        }
        let changed = Arc::make_mut(compiled).sync_primaries(&next.primaries, routers);
        next.policy = Arc::new(CompiledView(compiled.clone()));
        changed
    }

    pub(crate) fn update_policy_for(
        &self,
        old: &Tailnet,
        next: &mut Tailnet,
        ids: &BTreeSet<NodeId>,
        users: &[crate::index::UserChange],
    ) -> BTreeSet<NodeId> {
        let mut ps = self.inner.policy.lock();
        let (Some(policy), Some(compiled)) = (ps.policy.clone(), ps.compiled.as_mut()) else {
            return BTreeSet::new();
        };
        if users.iter().any(|(_, b)| b.is_none()) {
            let (users, nodes) = users_nodes(next);
            match CompiledPolicy::compile(&policy, &users, &nodes, &self.settings().policy_tailnet)
            {
                Ok(c) => {
                    *compiled = Arc::new(c);
                    next.policy = Arc::new(CompiledView(compiled.clone()));
                    return next.nodes.keys().copied().collect();
                }
                Err(e) => {
                    tracing::error!("the policy no longer compiles after a user change; keeping the previous rules: {e}");
                    return BTreeSet::new();
                }
            }
        }
        let mut affected = BTreeSet::new();
        let mut touched = false;
        for (_, u) in users {
            if let Some(u) = u {
                // Copy-on-write: sessions may still read the previous snapshot
                // (the copy shares the compiled tables, see CompiledPolicy).
                affected.extend(Arc::make_mut(compiled).update_user(u));
                touched = true;
            }
        }
        for id in ids {
            let change = match (old.nodes.get(id), next.nodes.get(id)) {
                (Some(a), Some(b)) if !policy_relevant(a, b) => continue,
                (_, Some(b)) => ironscale_policy::Change::Upsert((**b).clone()),
                (Some(_), None) => ironscale_policy::Change::Remove(*id),
                (None, None) => continue,
            };
            affected.extend(Arc::make_mut(compiled).update_node(change));
            touched = true;
        }
        if touched {
            next.policy = Arc::new(CompiledView(compiled.clone()));
        }
        affected
    }
}
