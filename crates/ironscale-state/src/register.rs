//! `/machine/register`: the decision table of tailscale-protocol.md §8.1.
//! Every refusal is decided before anything is written, so a wrong, expired or
//! reused key leaves the state untouched.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_keys::MachinePublic;
use ironscale_mapper::TAGGED_DEVICES_USER_ID;
use ironscale_types::{DnsLabel, Node, NodeId, PreAuthKey, RegisterMethod, Timestamp};
use ironscale_wire as wire;

use crate::nodes::apply_hostinfo;
use crate::{Change, State, StateError};

/// The answer to a register request, plus the node it concerns (if any).
#[derive(Debug)]
pub struct RegisterOutcome {
    pub response: wire::RegisterResponse,
    pub node: Option<Arc<Node>>,
}

impl RegisterOutcome {
    fn refuse(msg: impl Into<String>) -> Self {
        RegisterOutcome {
            response: wire::RegisterResponse::error(msg),
            node: None,
        }
    }
}

/// Messages shown by `tailscale up` (kept close to Headscale's wording).
pub const ERR_INVALID_KEY: &str = "invalid auth key";
pub const ERR_EXPIRED_KEY: &str = "auth key expired";
pub const ERR_USED_KEY: &str = "auth key already used";

impl State {
    fn authorized(&self, node: &Arc<Node>) -> RegisterOutcome {
        let mut r = wire::RegisterResponse::empty();
        r.machine_authorized = true;
        r.node_key_expired = node.is_expired(self.now());
        let t = self.snapshot();
        match t.user_of(node).filter(|_| !node.is_tagged()) {
            Some(u) => {
                r.user = wire::User {
                    id: u.id.0 as i64,
                    display_name: u.display().to_string(),
                    profile_pic_url: u.profile_pic_url.clone(),
                    created: Some(u.created_at),
                };
                r.login = wire::Login {
                    id: u.id.0 as i64,
                    provider: u.provider.clone(),
                    login_name: u.login_name().to_string(),
                    display_name: u.display().to_string(),
                    profile_pic_url: u.profile_pic_url.clone(),
                };
            }
            None => {
                let id = TAGGED_DEVICES_USER_ID as i64;
                r.user = wire::User {
                    id,
                    display_name: "Tagged Devices".into(),
                    profile_pic_url: String::new(),
                    created: None,
                };
                r.login = wire::Login {
                    id,
                    provider: String::new(),
                    login_name: "tagged-devices".into(),
                    display_name: "Tagged Devices".into(),
                    profile_pic_url: String::new(),
                };
            }
        }
        RegisterOutcome {
            response: r,
            node: Some(node.clone()),
        }
    }

    /// Check a pre-auth key without changing anything.
    async fn check_auth_key(&self, text: &str, now: Timestamp) -> Result<PreAuthKey, &'static str> {
        let key = match self.store().find_preauth_key(text).await {
            Ok(Some(k)) => k,
            Ok(None) => return Err(ERR_INVALID_KEY),
            Err(e) => {
                tracing::error!("pre-auth key lookup failed: {e}");
                return Err("internal error while checking the auth key");
            }
        };
        if key.is_expired(now) {
            return Err(ERR_EXPIRED_KEY);
        }
        if key.used && !key.reusable {
            return Err(ERR_USED_KEY);
        }
        if let Some(u) = key.user_id {
            if !self.snapshot().users.contains_key(&u) {
                return Err(ERR_INVALID_KEY);
            }
        }
        Ok(key)
    }

    /// Handle a RegisterRequest from the machine authenticated by Noise.
    pub async fn register(
        &self,
        machine: MachinePublic,
        req: &wire::RegisterRequest,
    ) -> RegisterOutcome {
        match self.register_inner(machine, req).await {
            Ok(o) => o,
            Err(e) => {
                tracing::error!(machine = %machine.short(), "registration failed: {e}");
                RegisterOutcome::refuse(format!("registration failed: {e}"))
            }
        }
    }

    async fn register_inner(
        &self,
        machine: MachinePublic,
        req: &wire::RegisterRequest,
    ) -> Result<RegisterOutcome, StateError> {
        let now = self.now();
        if req.node_key.is_zero() {
            return Ok(RegisterOutcome::refuse(
                "register request without a node key",
            ));
        }
        let _w = self.inner.write.lock().await;
        let existing = self.node_by_key(&req.node_key);

        // 1. Logout: an expiry in the past for a known node.
        if let (Some(exp), Some(node)) = (req.expiry, existing.as_ref()) {
            if exp <= now {
                if node.machine_key != machine {
                    return Ok(RegisterOutcome::refuse(
                        "node key belongs to another machine",
                    ));
                }
                if node.ephemeral {
                    self.delete_node_locked(node.id).await?;
                    let mut r = wire::RegisterResponse::empty();
                    r.node_key_expired = true;
                    return Ok(RegisterOutcome {
                        response: r,
                        node: None,
                    });
                }
                let mut n = (**node).clone();
                n.expiry = Some(now);
                let n = self.save_node_locked(n).await?;
                tracing::info!(node = n.id.0, name = %n.given_name, "node logged out");
                return Ok(self.authorized(&n));
            }
        }

        // 2. Known node key (client restart).
        if let Some(node) = existing.as_ref() {
            if node.machine_key != machine {
                return Ok(RegisterOutcome::refuse(
                    "this node key is registered to a different machine; log out and register again",
                ));
            }
            if !node.is_expired(now) {
                let mut n = (**node).clone();
                if let Some(hi) = &req.hostinfo {
                    apply_hostinfo(&mut n, hi);
                }
                let n = if n != **node {
                    self.save_node_locked(n).await?
                } else {
                    node.clone()
                };
                return Ok(self.authorized(&n));
            }
            if req.auth_key().is_none() {
                let mut r = wire::RegisterResponse::empty();
                r.node_key_expired = true;
                return Ok(RegisterOutcome {
                    response: r,
                    node: Some(node.clone()),
                });
            }
        }

        // 3. Key rotation: the node is found by its old key.
        if !req.old_node_key.is_zero() && existing.is_none() {
            if let Some(old) = self
                .node_by_key(&req.old_node_key)
                .filter(|n| n.machine_key == machine)
            {
                if !old.is_expired(now) || req.auth_key().is_some() {
                    if let Some(text) = req.auth_key() {
                        if old.is_expired(now) {
                            if let Err(msg) = self.check_auth_key(text, now).await {
                                return Ok(RegisterOutcome::refuse(msg));
                            }
                        }
                    }
                    let mut n = (*old).clone();
                    n.node_key = req.node_key;
                    n.expiry = self.default_expiry(&n, now);
                    if let Some(hi) = &req.hostinfo {
                        apply_hostinfo(&mut n, hi);
                    }
                    let n = self.save_node_locked(n).await?;
                    tracing::info!(node = n.id.0, "node key rotated");
                    return Ok(self.authorized(&n));
                }
            }
        }

        // 4. Pre-auth key.
        let Some(text) = req.auth_key() else {
            return Ok(RegisterOutcome::refuse(
                "this server needs a pre-auth key: run `tailscale up --login-server=... --authkey=<key>` \
                 (create one with `ironscale preauthkeys create --user <name>`)",
            ));
        };
        let key = match self.check_auth_key(text, now).await {
            Ok(k) => k,
            Err(msg) => {
                tracing::info!(machine = %machine.short(), "registration refused: {msg}");
                return Ok(RegisterOutcome::refuse(msg));
            }
        };
        let hostinfo = req.hostinfo.clone().unwrap_or(serde_json::Value::Null);
        let view = wire::HostinfoView::from_value(&hostinfo);
        // Tags: the key's, plus any the client requests (`--advertise-tags`),
        // which the key's owner (or the key's own tags) must own per tagOwners.
        let mut tags = key.tags.clone();
        let requested: Vec<String> = view
            .request_tags
            .iter()
            .filter(|t| !tags.contains(t))
            .cloned()
            .collect();
        if !requested.is_empty() {
            if let Err(why) = self.check_requested_tags(key.user_id, &key.tags, &requested) {
                return Ok(RegisterOutcome::refuse(format!(
                    "requested tags {requested:?} are invalid or not permitted: {why}"
                )));
            }
            tags.extend(requested);
            tags.sort();
            tags.dedup();
        }
        let key = PreAuthKey { tags, ..key };

        // Re-authentication of this machine's existing node (same owner), or a new node.
        let t = self.snapshot();
        let reuse = existing.clone().or_else(|| {
            t.nodes
                .values()
                .find(|n| {
                    n.machine_key == machine && n.user_id == key.user_id && n.tags == key.tags
                })
                .cloned()
        });
        let ephemeral = key.ephemeral || req.ephemeral;
        let node = match reuse {
            Some(old) => {
                let mut n = (*old).clone();
                n.node_key = req.node_key;
                n.user_id = if key.tags.is_empty() {
                    key.user_id
                } else {
                    None
                };
                n.tags = key.tags.clone();
                n.auth_key_id = Some(key.id);
                n.register_method = RegisterMethod::AuthKey;
                n.ephemeral = ephemeral;
                n.expiry = self.default_expiry(&n, now);
                if !hostinfo.is_null() {
                    apply_hostinfo(&mut n, &hostinfo);
                }
                self.save_node_locked(n).await?
            }
            None => {
                let (v4, v6) = self.allocate_ips()?;
                let mut n = Node {
                    id: NodeId(0),
                    machine_key: machine,
                    node_key: req.node_key,
                    disco_key: Default::default(),
                    ipv4: v4,
                    ipv6: v6,
                    hostname: String::new(),
                    given_name: String::new(),
                    user_id: if key.tags.is_empty() {
                        key.user_id
                    } else {
                        None
                    },
                    tags: key.tags.clone(),
                    hostinfo_json: None,
                    home_derp: 0,
                    announced_routes: vec![],
                    approved_routes: vec![],
                    endpoints: vec![],
                    expiry: None,
                    created_at: now,
                    last_seen: None,
                    register_method: RegisterMethod::AuthKey,
                    auth_key_id: Some(key.id),
                    ephemeral,
                    capver: req.version,
                };
                if !hostinfo.is_null() {
                    apply_hostinfo(&mut n, &hostinfo);
                }
                n.expiry = self.default_expiry(&n, now);
                n.given_name = self.unique_name(&n.hostname, None);
                let n = match self.store().insert_node(&n).await {
                    Ok(n) => n,
                    Err(e) => {
                        self.release_ips(&n.ips());
                        return Err(e.into());
                    }
                };
                let id = n.id;
                let n = Arc::new(n);
                let out = n.clone();
                self.commit(
                    |t| {
                        t.nodes.insert(id, n);
                    },
                    Change::Nodes(BTreeSet::from([id])),
                );
                tracing::info!(node = id.0, name = %out.given_name, ip = ?out.ipv4, "node registered with a pre-auth key");
                out
            }
        };
        if !key.reusable {
            self.store().mark_preauth_key_used(key.id).await?;
        }
        Ok(self.authorized(&node))
    }

    fn default_expiry(&self, n: &Node, now: Timestamp) -> Option<Timestamp> {
        if n.is_tagged() {
            return None;
        }
        self.settings().node_expiry.map(|d| now + d)
    }

    /// A MagicDNS label derived from `hostname`, unique in the tailnet.
    pub(crate) fn unique_name(&self, hostname: &str, except: Option<NodeId>) -> String {
        let base = DnsLabel::sanitize(hostname)
            .unwrap_or_else(|| DnsLabel::parse("node").expect("a valid label"));
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
