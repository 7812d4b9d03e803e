//! The registration decision table (tailscale-protocol.md §8.1) as a pure
//! function: [`decide`] reads [`RegisterFacts`] (the request, the nodes its
//! keys name, the credential it presents, already looked up) and a clock
//! reading, and returns a [`RegisterDecision`] saying what to write. Nothing
//! here touches the store, the snapshot or the clock; `apply` (in `mod.rs`)
//! performs a decision in one store transaction.

use std::sync::Arc;

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_types::{Node, NodeId, PreAuthKey, RegisterMethod, Timestamp, UserId};

use crate::nodes::apply_hostinfo;

/// Why a registration is refused. `Display` is the text `tailscale up` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoNodeKey,
    /// A logout for a node key that belongs to another machine.
    LogoutOtherMachine,
    /// A node key already registered to another machine.
    OtherMachine,
    /// No credential, and this server does not start interactive logins.
    NeedsAuthKey,
    InvalidKey,
    ExpiredKey,
    UsedKey,
    /// The key could not be looked up (the store failed; details are logged).
    KeyLookupFailed,
    /// `--advertise-tags` the key's owner may not own.
    TagsNotPermitted {
        requested: Vec<String>,
        why: String,
    },
    /// A logout (an expiry in the past) for a node key this server does not know.
    UnknownNodeLogout,
    /// An interactive registration that is unknown, expired or was denied.
    Registration(String),
    /// Applying the decision failed (store error); details are logged.
    Internal(String),
}

/// Messages shown by `tailscale up` (kept close to Headscale's wording).
pub const ERR_INVALID_KEY: &str = "invalid auth key";
pub const ERR_EXPIRED_KEY: &str = "auth key expired";
pub const ERR_USED_KEY: &str = "auth key already used";

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NoNodeKey => f.write_str("register request without a node key"),
            Refusal::LogoutOtherMachine => f.write_str("node key belongs to another machine"),
            Refusal::OtherMachine => f.write_str(
                "this node key is registered to a different machine; log out and register again",
            ),
            Refusal::NeedsAuthKey => f.write_str(
                "this server needs a pre-auth key: run `tailscale up --login-server=... --authkey=<key>` \
                 (create one with `ironscale preauthkeys create --user <name>`)",
            ),
            Refusal::InvalidKey => f.write_str(ERR_INVALID_KEY),
            Refusal::ExpiredKey => f.write_str(ERR_EXPIRED_KEY),
            Refusal::UsedKey => f.write_str(ERR_USED_KEY),
            Refusal::KeyLookupFailed => f.write_str("internal error while checking the auth key"),
            Refusal::TagsNotPermitted { requested, why } => write!(
                f,
                "requested tags {requested:?} are invalid or not permitted: {why}"
            ),
            Refusal::UnknownNodeLogout => {
                f.write_str("logout of a node this server does not know")
            }
            Refusal::Registration(m) => f.write_str(m),
            Refusal::Internal(m) => write!(f, "registration failed: {m}"),
        }
    }
}

/// The outcome of looking up the pre-auth key a request presents.
#[derive(Debug, Clone)]
pub enum KeyLookup {
    NotFound,
    /// The store failed; the request is refused without writing anything.
    Failed,
    Found {
        key: PreAuthKey,
        /// The key's owner still exists (a deleted user's keys are invalid).
        owner_exists: bool,
    },
}

/// Who vouches for a new registration: the auth-provider seam. A pre-auth
/// key is checked here; an approval comes from an administrator (CLI/API,
/// `nodes register`) or, later, an identity provider (OIDC) that
/// authenticated the user of a pending interactive registration.
#[derive(Debug, Clone)]
pub enum Credential {
    None,
    AuthKey(KeyLookup),
    Approved(Approval),
}

/// An interactive registration that was approved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The owning user (`None` with tags: a tagged node).
    pub user: Option<UserId>,
    pub tags: Vec<String>,
    pub method: RegisterMethod,
    /// The node key's expiry the approver chose (OIDC with
    /// `oidc.use_expiry_from_token`: the ID token's `exp`); `None` applies
    /// `node.expiry`. Ignored for tagged nodes, which do not expire.
    pub expiry: Option<Timestamp>,
}

/// The parts of a RegisterRequest the decision reads.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub node_key: NodePublic,
    pub old_node_key: NodePublic,
    /// The expiry the client asks for (`tailscale logout` sends one in the past).
    pub expiry: Option<Timestamp>,
    pub hostinfo: Option<serde_json::Value>,
    pub ephemeral: bool,
    pub capver: u32,
    /// `--advertise-tags` (from Hostinfo.RequestTags).
    pub request_tags: Vec<String>,
}

/// Questions the decision asks of the current tailnet and policy (read-only).
pub trait Lookups {
    /// A node of `machine` owned by `user` with exactly `tags` (a
    /// re-authentication of the same machine reuses it).
    fn machine_node(
        &self,
        machine: &MachinePublic,
        user: Option<UserId>,
        tags: &[String],
    ) -> Option<Arc<Node>>;
    /// May a node owned by `user` (or carrying `owner_tags`) take `requested`?
    fn check_requested_tags(
        &self,
        user: Option<UserId>,
        owner_tags: &[String],
        requested: &[String],
    ) -> Result<(), String>;
}

/// Everything [`decide`] reads.
pub struct RegisterFacts<'a> {
    pub machine: MachinePublic,
    pub request: &'a Request,
    /// The node registered under the request's node key.
    pub by_node_key: Option<Arc<Node>>,
    /// The node registered under the request's old node key (key rotation).
    pub by_old_key: Option<Arc<Node>>,
    pub credential: Credential,
    /// `node.expiry`: the default key lifetime of user-owned nodes.
    pub node_expiry: Option<chrono::Duration>,
    /// `node.device_approval` / `node.device_approval_exempt_tagged_keys`:
    /// whether a new node starts unapproved.
    pub device_approval: DeviceApproval,
    pub lookups: &'a dyn Lookups,
}

/// Device approval settings as the decision reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeviceApproval {
    /// New nodes need an administrator's approval.
    pub required: bool,
    /// ... except nodes registered with a tagged pre-auth key.
    pub exempt_tagged_keys: bool,
}

/// A single-use key to claim in the same transaction as the node write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    pub key_id: u64,
}

/// What a registration does.
#[derive(Debug, Clone, PartialEq)]
pub enum RegisterDecision {
    /// Write nothing; tell the client why.
    Refuse(Refusal),
    /// Write nothing; the node's key has expired and no credential came
    /// (`NodeKeyExpired`: the client asks its user to log in again).
    KeyExpired { node: Option<NodeId> },
    /// The machine is this node, unchanged.
    Authorized { node: NodeId },
    /// Store this version of an existing node (a logout sets its expiry to
    /// now, a restart refreshes its Hostinfo, a rotation or
    /// re-authentication changes its key), claiming `claim` first.
    Update {
        node: Box<Node>,
        claim: Option<Claim>,
        what: &'static str,
    },
    /// A logout of an ephemeral node: delete it.
    DeleteEphemeral { node: NodeId },
    /// A new node (no id, addresses or unique name yet: `apply` gives them),
    /// claiming `claim` first.
    Create {
        node: Box<Node>,
        claim: Option<Claim>,
    },
    /// No credential: start (or continue) an interactive registration.
    Interactive,
}

/// Who a credential makes the node's owner.
struct Owner {
    user: Option<UserId>,
    tags: Vec<String>,
    method: RegisterMethod,
    auth_key_id: Option<u64>,
    ephemeral: bool,
    claim: Option<Claim>,
    /// The credential is a pre-auth key that carries tags.
    tagged_key: bool,
    /// An expiry the credential sets (see `Approval::expiry`).
    expiry: Option<Timestamp>,
}

impl Owner {
    /// The new key expiry of a node this owner (re-)authenticates.
    fn key_expiry(
        &self,
        node_expiry: Option<chrono::Duration>,
        now: Timestamp,
    ) -> Option<Timestamp> {
        if !self.tags.is_empty() {
            return None;
        }
        self.expiry
            .or_else(|| default_expiry(false, node_expiry, now))
    }
}

fn default_expiry(
    tagged: bool,
    node_expiry: Option<chrono::Duration>,
    now: Timestamp,
) -> Option<Timestamp> {
    if tagged {
        return None;
    }
    node_expiry.map(|d| now + d)
}

/// Check a pre-auth key (and any requested tags) against `now`.
fn owner_from_key(
    f: &RegisterFacts<'_>,
    lookup: &KeyLookup,
    now: Timestamp,
) -> Result<Owner, Refusal> {
    let key = match lookup {
        KeyLookup::NotFound => return Err(Refusal::InvalidKey),
        KeyLookup::Failed => return Err(Refusal::KeyLookupFailed),
        KeyLookup::Found { key, owner_exists } => {
            if key.is_expired(now) {
                return Err(Refusal::ExpiredKey);
            }
            if key.used && !key.reusable {
                return Err(Refusal::UsedKey);
            }
            if key.user_id.is_some() && !owner_exists {
                return Err(Refusal::InvalidKey);
            }
            key
        }
    };
    let tags = with_requested_tags(f, key.user_id, &key.tags)?;
    Ok(Owner {
        user: if tags.is_empty() { key.user_id } else { None },
        tags,
        method: RegisterMethod::AuthKey,
        auth_key_id: Some(key.id),
        ephemeral: key.ephemeral || f.request.ephemeral,
        claim: (!key.reusable).then_some(Claim { key_id: key.id }),
        tagged_key: !key.tags.is_empty(),
        expiry: None,
    })
}

fn owner_from_approval(f: &RegisterFacts<'_>, a: &Approval) -> Result<Owner, Refusal> {
    let mut base = a.tags.clone();
    base.sort();
    base.dedup();
    let tags = with_requested_tags(f, a.user, &base)?;
    Ok(Owner {
        user: if tags.is_empty() { a.user } else { None },
        tags,
        method: a.method,
        auth_key_id: None,
        ephemeral: f.request.ephemeral,
        claim: None,
        tagged_key: false,
        expiry: a.expiry,
    })
}

/// `base` plus the tags the client requests (`--advertise-tags`), which
/// `user` (or the `base` tags) must own per tagOwners.
fn with_requested_tags(
    f: &RegisterFacts<'_>,
    user: Option<UserId>,
    base: &[String],
) -> Result<Vec<String>, Refusal> {
    let mut tags = base.to_vec();
    let requested: Vec<String> = f
        .request
        .request_tags
        .iter()
        .filter(|t| !tags.contains(t))
        .cloned()
        .collect();
    if requested.is_empty() {
        return Ok(tags);
    }
    f.lookups
        .check_requested_tags(user, base, &requested)
        .map_err(|why| Refusal::TagsNotPermitted {
            requested: requested.clone(),
            why,
        })?;
    tags.extend(requested);
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// Decide what a register request does. Pure: same facts and `now`, same decision.
pub fn decide(f: &RegisterFacts<'_>, now: Timestamp) -> RegisterDecision {
    use RegisterDecision as D;
    let req = f.request;
    if req.node_key.is_zero() {
        return D::Refuse(Refusal::NoNodeKey);
    }
    let existing = f.by_node_key.as_deref();
    let has_credential = !matches!(f.credential, Credential::None);

    // 1. Logout: an expiry in the past for a known node.
    if req.expiry.is_some_and(|e| e <= now) {
        let Some(node) = existing else {
            return D::Refuse(Refusal::UnknownNodeLogout);
        };
        if node.machine_key != f.machine {
            return D::Refuse(Refusal::LogoutOtherMachine);
        }
        if node.ephemeral {
            return D::DeleteEphemeral { node: node.id };
        }
        let mut n = node.clone();
        n.expiry = Some(now);
        return D::Update {
            node: Box::new(n),
            claim: None,
            what: "node logged out",
        };
    }

    // 2. Known node key (client restart).
    if let Some(node) = existing {
        if node.machine_key != f.machine {
            return D::Refuse(Refusal::OtherMachine);
        }
        if !node.is_expired(now) {
            let mut n = node.clone();
            if let Some(hi) = &req.hostinfo {
                apply_hostinfo(&mut n, hi);
            }
            return if n != *node {
                D::Update {
                    node: Box::new(n),
                    claim: None,
                    what: "node re-registered",
                }
            } else {
                D::Authorized { node: node.id }
            };
        }
        if !has_credential {
            return D::KeyExpired {
                node: Some(node.id),
            };
        }
    }

    // 3. Key rotation: the node is found by its old key.
    if !req.old_node_key.is_zero() && existing.is_none() {
        if let Some(old) = f
            .by_old_key
            .as_deref()
            .filter(|n| n.machine_key == f.machine)
        {
            let expired = old.is_expired(now);
            // An expired node needs a valid credential to rotate, and rotates
            // only if the credential's owner is the node's (another owner is a
            // new login: step 4); a live one rotates on its own authority.
            let claim = if expired {
                let owner = match &f.credential {
                    Credential::None => None,
                    Credential::AuthKey(k) => match owner_from_key(f, k, now) {
                        Ok(o) => Some(o),
                        Err(r) => return D::Refuse(r),
                    },
                    Credential::Approved(a) => match owner_from_approval(f, a) {
                        Ok(o) => Some(o),
                        Err(r) => return D::Refuse(r),
                    },
                };
                match owner {
                    Some(o) if o.user == old.user_id && o.tags == old.tags => Some(o.claim),
                    _ => None,
                }
            } else {
                Some(None)
            };
            if let Some(claim) = claim {
                let mut n = old.clone();
                n.node_key = req.node_key;
                n.expiry = default_expiry(n.is_tagged(), f.node_expiry, now);
                if let Some(hi) = &req.hostinfo {
                    apply_hostinfo(&mut n, hi);
                }
                return D::Update {
                    node: Box::new(n),
                    claim,
                    what: "node key rotated",
                };
            }
        }
    }

    // 4. A credential: a pre-auth key or an approved interactive login.
    let owner = match &f.credential {
        Credential::None => return D::Interactive,
        Credential::AuthKey(k) => match owner_from_key(f, k, now) {
            Ok(o) => o,
            Err(r) => return D::Refuse(r),
        },
        Credential::Approved(a) => match owner_from_approval(f, a) {
            Ok(o) => o,
            Err(r) => return D::Refuse(r),
        },
    };

    // Re-authentication of this machine's existing node (same owner), or a new node.
    let reuse = f
        .by_node_key
        .clone()
        .or_else(|| f.lookups.machine_node(&f.machine, owner.user, &owner.tags));
    let hostinfo = req.hostinfo.as_ref().filter(|h| !h.is_null());
    let expiry = owner.key_expiry(f.node_expiry, now);
    let approved =
        !f.device_approval.required || (f.device_approval.exempt_tagged_keys && owner.tagged_key);
    match reuse {
        Some(old) => {
            let mut n = (*old).clone();
            n.node_key = req.node_key;
            n.user_id = owner.user;
            n.tags = owner.tags;
            n.auth_key_id = owner.auth_key_id.or(n.auth_key_id);
            n.register_method = owner.method;
            n.ephemeral = owner.ephemeral;
            if let Some(hi) = hostinfo {
                apply_hostinfo(&mut n, hi);
            }
            n.expiry = expiry;
            D::Update {
                node: Box::new(n),
                claim: owner.claim,
                what: "node re-authenticated",
            }
        }
        None => {
            let mut n = Node {
                id: NodeId(0),
                machine_key: f.machine,
                node_key: req.node_key,
                disco_key: Default::default(),
                ipv4: None,
                ipv6: None,
                hostname: String::new(),
                given_name: String::new(),
                user_id: owner.user,
                tags: owner.tags,
                hostinfo_json: None,
                home_derp: 0,
                announced_routes: vec![],
                approved_routes: vec![],
                endpoints: vec![],
                expiry: None,
                created_at: now,
                last_seen: None,
                register_method: owner.method,
                auth_key_id: owner.auth_key_id,
                ephemeral: owner.ephemeral,
                capver: req.capver,
                approved,
            };
            if let Some(hi) = hostinfo {
                apply_hostinfo(&mut n, hi);
            }
            n.expiry = expiry;
            D::Create {
                node: Box::new(n),
                claim: owner.claim,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    fn key32(tag: u8, v: u8) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[0] = tag;
        b[1] = v;
        b
    }
    fn machine(v: u8) -> MachinePublic {
        MachinePublic::from_bytes(key32(1, v))
    }
    fn nodekey(v: u8) -> NodePublic {
        NodePublic::from_bytes(key32(2, v))
    }

    fn node(id: u64, m: u8, k: u8) -> Arc<Node> {
        Arc::new(Node {
            id: NodeId(id),
            machine_key: machine(m),
            node_key: nodekey(k),
            disco_key: Default::default(),
            ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, id as u8)),
            ipv6: None,
            hostname: "laptop".into(),
            given_name: "laptop".into(),
            user_id: Some(UserId(1)),
            tags: vec![],
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: vec![],
            approved_routes: vec![],
            endpoints: vec![],
            expiry: None,
            created_at: t(-100),
            last_seen: None,
            register_method: RegisterMethod::AuthKey,
            auth_key_id: Some(1),
            ephemeral: false,
            capver: 106,
            approved: true,
        })
    }

    fn key(reusable: bool, used: bool) -> PreAuthKey {
        PreAuthKey {
            id: 7,
            prefix: "abc".into(),
            hash: "h".into(),
            user_id: Some(UserId(1)),
            reusable,
            ephemeral: false,
            used,
            tags: vec![],
            expiration: Some(t(3600)),
            created_at: t(-10),
        }
    }

    fn found(k: PreAuthKey) -> Credential {
        Credential::AuthKey(KeyLookup::Found {
            key: k,
            owner_exists: true,
        })
    }

    /// Lookups over a fixed node list; tags are permitted when they start with "tag:ok".
    struct Fake(Vec<Arc<Node>>);
    impl Lookups for Fake {
        fn machine_node(
            &self,
            machine: &MachinePublic,
            user: Option<UserId>,
            tags: &[String],
        ) -> Option<Arc<Node>> {
            self.0
                .iter()
                .find(|n| n.machine_key == *machine && n.user_id == user && n.tags == tags)
                .cloned()
        }
        fn check_requested_tags(
            &self,
            _: Option<UserId>,
            _: &[String],
            requested: &[String],
        ) -> Result<(), String> {
            match requested.iter().find(|t| !t.starts_with("tag:ok")) {
                Some(t) => Err(format!("{t} is not owned")),
                None => Ok(()),
            }
        }
    }

    fn run(
        m: u8,
        req: Request,
        by_node_key: Option<Arc<Node>>,
        by_old_key: Option<Arc<Node>>,
        credential: Credential,
        nodes: Vec<Arc<Node>>,
    ) -> RegisterDecision {
        run_approving(
            DeviceApproval::default(),
            m,
            req,
            by_node_key,
            by_old_key,
            credential,
            nodes,
        )
    }

    fn run_approving(
        device_approval: DeviceApproval,
        m: u8,
        req: Request,
        by_node_key: Option<Arc<Node>>,
        by_old_key: Option<Arc<Node>>,
        credential: Credential,
        nodes: Vec<Arc<Node>>,
    ) -> RegisterDecision {
        let fake = Fake(nodes);
        let f = RegisterFacts {
            machine: machine(m),
            request: &req,
            by_node_key,
            by_old_key,
            credential,
            node_expiry: Some(chrono::Duration::days(180)),
            device_approval,
            lookups: &fake,
        };
        decide(&f, t(0))
    }

    fn req(k: u8) -> Request {
        Request {
            node_key: nodekey(k),
            capver: 106,
            ..Default::default()
        }
    }

    #[test]
    fn a_zero_node_key_is_refused() {
        let d = run(1, Request::default(), None, None, Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Refuse(Refusal::NoNodeKey));
    }

    #[test]
    fn a_new_machine_with_a_single_use_key_creates_a_node_and_claims_the_key() {
        let d = run(1, req(1), None, None, found(key(false, false)), vec![]);
        let RegisterDecision::Create { node, claim } = d else {
            panic!("expected Create, got {d:?}")
        };
        assert_eq!(claim, Some(Claim { key_id: 7 }));
        assert_eq!(node.user_id, Some(UserId(1)));
        assert_eq!(node.auth_key_id, Some(7));
        assert_eq!(node.expiry, Some(t(0) + chrono::Duration::days(180)));
        assert_eq!(node.created_at, t(0));
        assert!(node.ipv4.is_none(), "addresses are given when applied");
    }

    #[test]
    fn a_reusable_key_is_not_claimed() {
        let d = run(1, req(1), None, None, found(key(true, true)), vec![]);
        assert!(
            matches!(d, RegisterDecision::Create { claim: None, .. }),
            "{d:?}"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_their_reason() {
        let cases = [
            (
                Credential::AuthKey(KeyLookup::NotFound),
                Refusal::InvalidKey,
            ),
            (
                Credential::AuthKey(KeyLookup::Failed),
                Refusal::KeyLookupFailed,
            ),
            (found(key(false, true)), Refusal::UsedKey),
            (
                found(PreAuthKey {
                    expiration: Some(t(0)),
                    ..key(true, false)
                }),
                Refusal::ExpiredKey,
            ),
            (
                Credential::AuthKey(KeyLookup::Found {
                    key: key(true, false),
                    owner_exists: false,
                }),
                Refusal::InvalidKey,
            ),
        ];
        for (cred, want) in cases {
            let d = run(1, req(1), None, None, cred, vec![]);
            assert_eq!(d, RegisterDecision::Refuse(want));
        }
    }

    #[test]
    fn no_credential_is_an_interactive_login() {
        let d = run(1, req(1), None, None, Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Interactive);
    }

    #[test]
    fn a_known_live_node_is_authorized_and_its_hostinfo_refreshed() {
        let n = node(3, 1, 1);
        let d = run(1, req(1), Some(n.clone()), None, Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Authorized { node: NodeId(3) });
        let mut r = req(1);
        r.hostinfo = Some(serde_json::json!({"Hostname": "new-name"}));
        let d = run(1, r, Some(n), None, Credential::None, vec![]);
        let RegisterDecision::Update { node, claim, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(node.hostname, "new-name");
        assert_eq!(claim, None);
    }

    #[test]
    fn a_node_key_of_another_machine_is_refused() {
        let d = run(
            2,
            req(1),
            Some(node(3, 1, 1)),
            None,
            Credential::None,
            vec![],
        );
        assert_eq!(d, RegisterDecision::Refuse(Refusal::OtherMachine));
    }

    #[test]
    fn logout_expires_a_node_and_deletes_an_ephemeral_one() {
        let mut r = req(1);
        r.expiry = Some(t(-1));
        let d = run(
            1,
            r.clone(),
            Some(node(3, 1, 1)),
            None,
            Credential::None,
            vec![],
        );
        let RegisterDecision::Update { node: n, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(n.expiry, Some(t(0)));
        let mut eph = (*node(3, 1, 1)).clone();
        eph.ephemeral = true;
        let d = run(
            1,
            r.clone(),
            Some(Arc::new(eph)),
            None,
            Credential::None,
            vec![],
        );
        assert_eq!(d, RegisterDecision::DeleteEphemeral { node: NodeId(3) });
        let d = run(2, r, Some(node(3, 1, 1)), None, Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Refuse(Refusal::LogoutOtherMachine));
    }

    #[test]
    fn an_expired_node_without_a_credential_must_log_in_again() {
        let mut n = (*node(3, 1, 1)).clone();
        n.expiry = Some(t(-5));
        let d = run(1, req(1), Some(Arc::new(n)), None, Credential::None, vec![]);
        assert_eq!(
            d,
            RegisterDecision::KeyExpired {
                node: Some(NodeId(3))
            }
        );
    }

    #[test]
    fn rotation_moves_the_node_to_the_new_key() {
        let mut r = req(2);
        r.old_node_key = nodekey(1);
        let d = run(
            1,
            r.clone(),
            None,
            Some(node(3, 1, 1)),
            Credential::None,
            vec![],
        );
        let RegisterDecision::Update { node: n, claim, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!((n.id, n.node_key, claim), (NodeId(3), nodekey(2), None));
        // An expired node rotates only with a valid credential, which it claims.
        let mut old = (*node(3, 1, 1)).clone();
        old.expiry = Some(t(-5));
        let old = Arc::new(old);
        let d = run(
            1,
            r.clone(),
            None,
            Some(old.clone()),
            found(key(false, true)),
            vec![],
        );
        assert_eq!(d, RegisterDecision::Refuse(Refusal::UsedKey));
        let d = run(
            1,
            r.clone(),
            None,
            Some(old.clone()),
            found(key(false, false)),
            vec![],
        );
        assert!(
            matches!(
                &d,
                RegisterDecision::Update {
                    claim: Some(Claim { key_id: 7 }),
                    ..
                }
            ),
            "{d:?}"
        );
        // Another machine's old key is not a rotation.
        let d = run(2, r, None, Some(old), Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Interactive);
    }

    #[test]
    fn a_logout_of_an_unknown_node_is_refused() {
        let mut r = req(1);
        r.expiry = Some(t(-1));
        let d = run(1, r, None, None, Credential::None, vec![]);
        assert_eq!(d, RegisterDecision::Refuse(Refusal::UnknownNodeLogout));
    }

    #[test]
    fn an_expired_node_approved_for_another_owner_is_a_new_login() {
        let mut r = req(2);
        r.old_node_key = nodekey(1);
        let mut old = (*node(3, 1, 1)).clone();
        old.expiry = Some(t(-5));
        let old = Arc::new(old);
        let other = Approval {
            user: Some(UserId(9)),
            tags: vec![],
            method: RegisterMethod::Cli,
            expiry: None,
        };
        let d = run(
            1,
            r.clone(),
            None,
            Some(old.clone()),
            Credential::Approved(other),
            vec![],
        );
        let RegisterDecision::Create { node, .. } = d else {
            panic!("expected a new node for the new owner, got {d:?}")
        };
        assert_eq!(node.user_id, Some(UserId(9)));
        // The same owner rotates the old node.
        let same = Approval {
            user: Some(UserId(1)),
            tags: vec![],
            method: RegisterMethod::Cli,
            expiry: None,
        };
        let d = run(1, r, None, Some(old), Credential::Approved(same), vec![]);
        assert!(
            matches!(&d, RegisterDecision::Update { node, .. } if node.id == NodeId(3)),
            "{d:?}"
        );
    }

    #[test]
    fn the_same_machine_and_owner_reuses_its_node() {
        let n = node(3, 1, 1);
        let d = run(1, req(9), None, None, found(key(false, false)), vec![n]);
        let RegisterDecision::Update { node, claim, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!((node.id, node.node_key), (NodeId(3), nodekey(9)));
        assert_eq!(claim, Some(Claim { key_id: 7 }));
    }

    #[test]
    fn requested_tags_need_ownership_and_make_the_node_tagged() {
        let mut r = req(1);
        r.request_tags = vec!["tag:bad".into()];
        let d = run(1, r.clone(), None, None, found(key(true, false)), vec![]);
        assert!(
            matches!(&d, RegisterDecision::Refuse(Refusal::TagsNotPermitted { why, .. }) if why.contains("tag:bad")),
            "{d:?}"
        );
        r.request_tags = vec!["tag:ok-server".into()];
        let d = run(1, r, None, None, found(key(true, false)), vec![]);
        let RegisterDecision::Create { node, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(node.tags, vec!["tag:ok-server".to_string()]);
        assert_eq!(node.user_id, None);
        assert_eq!(node.expiry, None, "tagged nodes do not expire");
    }

    #[test]
    fn an_approval_with_an_expiry_sets_it_on_new_and_reauthenticated_nodes() {
        let a = |expiry| Approval {
            user: Some(UserId(1)),
            tags: vec![],
            method: RegisterMethod::Oidc,
            expiry,
        };
        let d = run(
            1,
            req(1),
            None,
            None,
            Credential::Approved(a(Some(t(600)))),
            vec![],
        );
        let RegisterDecision::Create { node: created, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            created.expiry,
            Some(t(600)),
            "the token's expiry, not node.expiry"
        );
        // A re-login of the same machine (an expired node) keeps the node, new expiry.
        let mut old = (*node(3, 1, 1)).clone();
        old.expiry = Some(t(-5));
        let d = run(
            1,
            req(9),
            None,
            None,
            Credential::Approved(a(Some(t(900)))),
            vec![Arc::new(old)],
        );
        let RegisterDecision::Update { node: updated, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!((updated.id, updated.expiry), (NodeId(3), Some(t(900))));
        // Without one, node.expiry applies.
        let d = run(1, req(1), None, None, Credential::Approved(a(None)), vec![]);
        let RegisterDecision::Create { node: default, .. } = d else {
            panic!("{d:?}")
        };
        assert_eq!(default.expiry, Some(t(0) + chrono::Duration::days(180)));
    }

    #[test]
    fn an_approval_creates_a_node_for_the_approved_user() {
        let a = Approval {
            user: Some(UserId(4)),
            tags: vec![],
            method: RegisterMethod::Cli,
            expiry: None,
        };
        let d = run(1, req(1), None, None, Credential::Approved(a), vec![]);
        let RegisterDecision::Create { node, claim } = d else {
            panic!("{d:?}")
        };
        assert_eq!(claim, None);
        assert_eq!(node.user_id, Some(UserId(4)));
        assert_eq!(node.register_method, RegisterMethod::Cli);
        assert_eq!(node.auth_key_id, None);
    }

    #[test]
    fn device_approval_decides_whether_a_new_node_starts_approved() {
        let tagged_key = PreAuthKey {
            user_id: None,
            tags: vec!["tag:server".into()],
            ..key(true, false)
        };
        let approval = Credential::Approved(Approval {
            user: Some(UserId(4)),
            tags: vec![],
            method: RegisterMethod::Cli,
            expiry: None,
        });
        let mut user_key_with_tags = req(1);
        user_key_with_tags.request_tags = vec!["tag:ok-server".into()];
        let da = |required, exempt_tagged_keys| DeviceApproval {
            required,
            exempt_tagged_keys,
        };
        // (settings, request, credential, approved)
        let cases = [
            (da(false, true), req(1), found(key(true, false)), true),
            (da(false, false), req(1), found(tagged_key.clone()), true),
            (da(true, true), req(1), found(key(true, false)), false),
            (da(true, true), req(1), found(tagged_key.clone()), true),
            (da(true, false), req(1), found(tagged_key.clone()), false),
            (da(true, true), req(1), approval, false),
            // Tags the client requests on a user's key are not a tagged key.
            (
                da(true, true),
                user_key_with_tags,
                found(key(true, false)),
                false,
            ),
        ];
        for (i, (settings, r, cred, want)) in cases.into_iter().enumerate() {
            let d = run_approving(settings, 1, r, None, None, cred, vec![]);
            let RegisterDecision::Create { node, .. } = d else {
                panic!("case {i}: expected Create, got {d:?}")
            };
            assert_eq!(node.approved, want, "case {i}: {settings:?}");
        }
    }

    #[test]
    fn re_registrations_keep_the_approval_flag() {
        let on = DeviceApproval {
            required: true,
            exempt_tagged_keys: true,
        };
        for approved in [false, true] {
            let mut n = (*node(3, 1, 1)).clone();
            n.approved = approved;
            let n = Arc::new(n);
            // Re-authentication of the same machine and owner.
            let d = run_approving(
                on,
                1,
                req(9),
                None,
                None,
                found(key(false, false)),
                vec![n.clone()],
            );
            let RegisterDecision::Update { node: got, .. } = d else {
                panic!("{d:?}")
            };
            assert_eq!(got.approved, approved);
            // A restart with changed Hostinfo.
            let mut r = req(1);
            r.hostinfo = Some(serde_json::json!({"Hostname": "renamed"}));
            let d = run_approving(on, 1, r, Some(n.clone()), None, Credential::None, vec![]);
            let RegisterDecision::Update { node: got, .. } = d else {
                panic!("{d:?}")
            };
            assert_eq!(got.approved, approved);
            // Key rotation.
            let mut r = req(5);
            r.old_node_key = nodekey(1);
            let d = run_approving(on, 1, r, None, Some(n.clone()), Credential::None, vec![]);
            let RegisterDecision::Update { node: got, .. } = d else {
                panic!("{d:?}")
            };
            assert_eq!((got.node_key, got.approved), (nodekey(5), approved));
        }
    }

    #[test]
    fn the_decision_is_a_function_of_its_facts() {
        let a = run(1, req(1), None, None, found(key(false, false)), vec![]);
        let b = run(1, req(1), None, None, found(key(false, false)), vec![]);
        assert_eq!(a, b);
    }
}
