//! Domain types of the tailnet. These types are deliberately **not** serde
//! serialisable: each boundary (database rows in `store`, REST DTOs in `api`,
//! Tailscale JSON in `wire`) converts explicitly in one tested module.

mod names;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
pub use ironscale_keys::{DiscoPublic, MachinePublic, NodePublic};
pub use names::{DnsLabel, NameError, Tag, UserName, UserRef};

pub type Timestamp = DateTime<Utc>;

/// A user id (> 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub u64);

/// A node id (> 0, never reused).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u64);

/// A tailnet user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    /// Unique user name (Headscale's `name`).
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub provider: String,
    pub provider_id: String,
    pub profile_pic_url: String,
    /// The identity provider's groups (the ID token's `groups` claim) as of
    /// the user's last login; empty for users not from a provider. A policy
    /// names them as `oidc-group:<name>` members of its groups.
    pub idp_groups: Vec<String>,
    pub created_at: Timestamp,
}

impl User {
    /// Login name shown to clients: the e-mail if known, else `name@`-less name.
    pub fn login_name(&self) -> &str {
        if self.email.is_empty() {
            &self.name
        } else {
            &self.email
        }
    }
    pub fn display(&self) -> &str {
        if self.display_name.is_empty() {
            &self.name
        } else {
            &self.display_name
        }
    }
}

/// How a node was registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegisterMethod {
    AuthKey,
    Cli,
    Oidc,
    Unspecified,
}

impl RegisterMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            RegisterMethod::AuthKey => "authkey",
            RegisterMethod::Cli => "cli",
            RegisterMethod::Oidc => "oidc",
            RegisterMethod::Unspecified => "unspecified",
        }
    }
    pub fn parse(s: &str) -> Self {
        match s {
            "authkey" => RegisterMethod::AuthKey,
            "cli" => RegisterMethod::Cli,
            "oidc" => RegisterMethod::Oidc,
            _ => RegisterMethod::Unspecified,
        }
    }
}

/// A machine in the tailnet.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub id: NodeId,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    pub disco_key: DiscoPublic,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    /// Hostname reported by the client.
    pub hostname: String,
    /// Unique DNS label used in MagicDNS (`given_name.base_domain`).
    pub given_name: String,
    /// Owner; `None` for tagged nodes (tags are the identity).
    pub user_id: Option<UserId>,
    pub tags: Vec<String>,
    /// The client's last Hostinfo, as raw JSON text (opaque to the domain).
    pub hostinfo_json: Option<String>,
    /// Derived from Hostinfo: the node's home DERP region (0 = unknown).
    pub home_derp: i32,
    /// Derived from Hostinfo.RoutableIPs: routes the node advertises.
    pub announced_routes: Vec<IpNet>,
    /// Routes an admin (or autoApprovers) approved.
    pub approved_routes: Vec<IpNet>,
    /// The node's UDP endpoints ("ip:port").
    pub endpoints: Vec<String>,
    pub expiry: Option<Timestamp>,
    pub created_at: Timestamp,
    pub last_seen: Option<Timestamp>,
    pub register_method: RegisterMethod,
    pub auth_key_id: Option<u64>,
    pub ephemeral: bool,
    /// The capability version of the client (from its last MapRequest).
    pub capver: u32,
    /// Device approval: an unapproved node is registered but not authorized
    /// (`MachineAuthorized` false): it has no peers and no peer sees it.
    pub approved: bool,
}

impl Node {
    pub fn ips(&self) -> Vec<IpAddr> {
        let mut v = Vec::with_capacity(2);
        if let Some(a) = self.ipv4 {
            v.push(IpAddr::V4(a));
        }
        if let Some(a) = self.ipv6 {
            v.push(IpAddr::V6(a));
        }
        v
    }
    pub fn is_tagged(&self) -> bool {
        !self.tags.is_empty()
    }
    pub fn is_expired(&self, now: Timestamp) -> bool {
        matches!(self.expiry, Some(e) if e <= now)
    }
    /// Whether the node advertises an exit route (0.0.0.0/0 or ::/0).
    pub fn announces_exit(&self) -> bool {
        self.announced_routes.iter().any(|r| r.prefix_len() == 0)
    }
    /// The node's presence fields.
    pub fn presence(&self) -> NodePresence {
        NodePresence {
            disco_key: self.disco_key,
            endpoints: self.endpoints.clone(),
            home_derp: self.home_derp,
            last_seen: self.last_seen,
        }
    }
    /// Replace the node's presence fields.
    pub fn set_presence(&mut self, p: NodePresence) {
        self.disco_key = p.disco_key;
        self.endpoints = p.endpoints;
        self.home_derp = p.home_derp;
        self.last_seen = p.last_seen;
    }
}

/// Where and how a node can be reached now, as its client reports it: changes
/// with every network change, apart from the node's durable record (keys,
/// owner, names, routes, expiry), and written on its own
/// (`Store::update_node_presence`) so that presence updates and admin changes
/// never overwrite each other. Whether the node is online is not stored: it is
/// whether it has a map session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePresence {
    pub disco_key: DiscoPublic,
    /// UDP endpoints ("ip:port").
    pub endpoints: Vec<String>,
    /// Home DERP region (0 = unknown).
    pub home_derp: i32,
    pub last_seen: Option<Timestamp>,
}

/// An API key of the REST API. Only a slow hash (bcrypt) of its secret part
/// is kept; the key itself is shown once, at creation.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: u64,
    /// The public prefix (12 characters; shown in listings, not secret).
    pub prefix: String,
    /// bcrypt of the secret part (`$2a$`/`$2b$`, Headscale's too).
    pub hash: String,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
    /// When the key last authenticated a request (updated at most once a minute).
    pub last_seen: Option<Timestamp>,
}

impl ApiKey {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        matches!(self.expiration, Some(e) if e <= now)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("prefix", &self.prefix)
            .field("hash", &"<redacted>")
            .field("expiration", &self.expiration)
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .finish()
    }
}

/// One entry of the audit log: a change asked through the CLI, the local
/// socket or the REST API, and its outcome. Never holds a secret (the API
/// layer that writes it names keys by id or prefix only).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    /// Assigned by the store, increasing in the order entries were written.
    pub id: u64,
    pub at: Timestamp,
    /// `local-socket` or `api-key:<prefix>`.
    pub actor: String,
    /// What was asked, e.g. `user.create`, `node.rename`.
    pub action: String,
    /// What it was asked of (a user, a node id, a key's id or prefix).
    pub target: String,
    /// `ok`, or the error the request was refused with.
    pub result: String,
    /// More about the change, a JSON object as text (`{}` when none).
    pub detail: String,
}

/// A pre-authentication key. Only the hash of the secret part is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreAuthKey {
    pub id: u64,
    /// The public prefix of the key (shown in listings; not secret).
    pub prefix: String,
    /// SHA-256 of the full key text, hex.
    pub hash: String,
    pub user_id: Option<UserId>,
    pub reusable: bool,
    pub ephemeral: bool,
    pub used: bool,
    pub tags: Vec<String>,
    pub expiration: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl PreAuthKey {
    pub fn is_expired(&self, now: Timestamp) -> bool {
        matches!(self.expiration, Some(e) if e <= now)
    }
}
