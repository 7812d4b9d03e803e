//! The REST JSON seam: every request and response body of `/api/v1`, in
//! Headscale's v1 shape (camelCase fields, ids as decimal strings, RFC 3339
//! timestamps, `null` for an absent timestamp), and the conversions from the
//! state's read models (`ironscale_state::{NodeView, UserView,
//! PreAuthKeyView}`: handlers build DTOs from those only; the `from_domain`
//! forms take bare domain records). Nothing else in the workspace knows this
//! JSON.
//!
//! The types derive both `Serialize` and `Deserialize`: the server writes
//! them, the CLI reads them back. Reading is lenient where Headscale's own
//! gateway is (ids as strings or numbers, missing fields default).
//!
//! Secrets: [`PreAuthKey::key`] holds the full key only in the response to a
//! create call; `Debug` never prints it.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use ironscale_state as st;
use ironscale_types as t;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub type Timestamp = DateTime<Utc>;

/// gRPC status codes, used as `code` in error bodies (grpc-gateway's shape).
pub mod code {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Error body: `{"code": <gRPC code>, "message": "...", "details": []}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

// ---------------------------------------------------------------------------
// Field encodings

/// RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits (protojson's choice).
pub fn format_ts(ts: &Timestamp) -> String {
    ts.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Parse RFC 3339; Go's zero instant (year 1) counts as "no timestamp".
pub fn parse_ts(s: &str) -> Result<Option<Timestamp>, chrono::ParseError> {
    let ts = DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc);
    Ok(if ts.timestamp() <= -62_135_596_800 {
        None
    } else {
        Some(ts)
    })
}

mod ts {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ts(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        parse_ts(&s)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("zero timestamp"))
    }
}

mod ts_opt {
    use super::*;
    pub fn serialize<S: Serializer>(v: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(ts) => s.serialize_str(&format_ts(ts)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.is_empty() => Ok(None),
            Some(s) => parse_ts(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A uint64 id: written as a decimal string, read from a string or a number.
mod id {
    use super::*;
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let raw = LooseId::deserialize(d)?;
        raw.0
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("invalid id {:?}", raw.0)))
    }
}

/// An id as the client sent it (string or number), parsed by the handler so
/// that a bad id gets Headscale's 400 rather than a generic decode error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct LooseId(pub String);

impl<'de> Deserialize<'de> for LooseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            I(i64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::S(s) => LooseId(s),
            Raw::U(u) => LooseId(u.to_string()),
            Raw::I(i) => LooseId(i.to_string()),
        })
    }
}

/// Documented as what the server reads: a string or a number.
impl JsonSchema for LooseId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LooseId".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "an id: a decimal string or a number",
            "anyOf": [{"type": "string"}, {"type": "integer", "format": "int64"}]
        })
    }
}

impl LooseId {
    /// The id as a positive integer, or `None` if it is not one.
    pub fn parse(&self) -> Option<u64> {
        parse_id(&self.0)
    }
}

/// Parse a positive decimal id (Headscale answers 400 to anything else). The
/// store's ids are SQL `BIGINT`s, so one past `i64::MAX` is no id either (it
/// was a 500 from the store, found by schemathesis).
pub fn parse_id(s: &str) -> Option<u64> {
    match s.trim().parse::<u64>() {
        Ok(v) if v > 0 && i64::try_from(v).is_ok() => Some(v),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Objects

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub created_at: Timestamp,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub provider_id: String,
    #[serde(default)]
    pub provider: String,
    #[serde(default)]
    pub profile_pic_url: String,
}

impl User {
    pub fn from_view(v: &st::UserView) -> Self {
        Self::from_domain(&v.user)
    }

    pub fn from_domain(u: &t::User) -> Self {
        User {
            id: u.id.0,
            name: u.name.clone(),
            created_at: u.created_at,
            display_name: u.display_name.clone(),
            email: u.email.clone(),
            provider_id: u.provider_id.clone(),
            provider: u.provider.clone(),
            profile_pic_url: u.profile_pic_url.clone(),
        }
    }
}

/// A pre-auth key. In listings `key` is the public prefix only; the full key
/// appears once, in the answer to the create call.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKey {
    #[serde(default)]
    pub user: Option<User>,
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub reusable: bool,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub used: bool,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub expiration: Option<Timestamp>,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub created_at: Timestamp,
    #[serde(default)]
    pub acl_tags: Vec<String>,
}

impl fmt::Debug for PreAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreAuthKey")
            .field("id", &self.id)
            .field("key", &"<redacted>")
            .field("user", &self.user.as_ref().map(|u| &u.name))
            .field("reusable", &self.reusable)
            .field("ephemeral", &self.ephemeral)
            .field("used", &self.used)
            .field("expiration", &self.expiration)
            .field("acl_tags", &self.acl_tags)
            .finish()
    }
}

/// What a listing shows in place of the secret: `hskey-auth-<prefix>-***`
/// (as Headscale ≥ 0.28 does).
pub fn masked_key(prefix: &str) -> String {
    format!("{}{prefix}-***", ironscale_store::AUTH_KEY_PREFIX)
}

impl PreAuthKey {
    /// `key` is the text to show: [`masked_key`] in listings, the full key
    /// only in the answer to a create call.
    pub fn from_view(k: &st::PreAuthKeyView, key: String) -> Self {
        PreAuthKey {
            user: k.user.as_deref().map(User::from_domain),
            id: k.id,
            key,
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: k.expiration,
            created_at: k.created_at,
            acl_tags: k.tags.clone(),
        }
    }

    /// A listing's entry: the masked key.
    pub fn listed(k: &st::PreAuthKeyView) -> Self {
        Self::from_view(k, masked_key(&k.prefix))
    }

    /// `key` is the text to show: [`masked_key`] in listings, the full key
    /// only in the answer to a create call.
    pub fn from_domain(k: &t::PreAuthKey, user: Option<&t::User>, key: String) -> Self {
        PreAuthKey {
            user: user.map(User::from_domain),
            id: k.id,
            key,
            reusable: k.reusable,
            ephemeral: k.ephemeral,
            used: k.used,
            expiration: k.expiration,
            created_at: k.created_at,
            acl_tags: k.tags.clone(),
        }
    }
}

pub const REGISTER_METHOD_UNSPECIFIED: &str = "REGISTER_METHOD_UNSPECIFIED";
pub const REGISTER_METHOD_AUTH_KEY: &str = "REGISTER_METHOD_AUTH_KEY";
pub const REGISTER_METHOD_CLI: &str = "REGISTER_METHOD_CLI";
pub const REGISTER_METHOD_OIDC: &str = "REGISTER_METHOD_OIDC";

pub fn register_method(m: t::RegisterMethod) -> &'static str {
    match m {
        t::RegisterMethod::AuthKey => REGISTER_METHOD_AUTH_KEY,
        t::RegisterMethod::Cli => REGISTER_METHOD_CLI,
        t::RegisterMethod::Oidc => REGISTER_METHOD_OIDC,
        t::RegisterMethod::Unspecified => REGISTER_METHOD_UNSPECIFIED,
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    #[serde(default)]
    pub machine_key: String,
    #[serde(default)]
    pub node_key: String,
    #[serde(default)]
    pub disco_key: String,
    #[serde(default)]
    pub ip_addresses: Vec<String>,
    /// The hostname the client reported.
    #[serde(default)]
    pub name: String,
    /// The MagicDNS label.
    #[serde(default)]
    pub given_name: String,
    /// Owner; `null` for a tagged node.
    #[serde(default)]
    pub user: Option<User>,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub last_seen: Option<Timestamp>,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub expiry: Option<Timestamp>,
    #[serde(default)]
    pub pre_auth_key: Option<PreAuthKey>,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub created_at: Timestamp,
    #[serde(default)]
    pub register_method: String,
    #[serde(default)]
    pub online: bool,
    #[serde(default)]
    pub approved_routes: Vec<String>,
    #[serde(default)]
    pub available_routes: Vec<String>,
    #[serde(default)]
    pub subnet_routes: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Node {
    pub fn from_view(v: &st::NodeView) -> Self {
        let n = &v.node;
        let routes = |rs: &[ipnet::IpNet]| rs.iter().map(|r| r.to_string()).collect();
        Node {
            id: n.id.0,
            machine_key: n.machine_key.to_string(),
            node_key: n.node_key.to_string(),
            disco_key: n.disco_key.to_string(),
            ip_addresses: n.ips().iter().map(|ip| ip.to_string()).collect(),
            name: if n.hostname.is_empty() {
                n.given_name.clone()
            } else {
                n.hostname.clone()
            },
            given_name: n.given_name.clone(),
            user: v.user.as_deref().map(User::from_domain),
            last_seen: v.last_seen,
            expiry: v.expiry.at(),
            pre_auth_key: v.pre_auth_key.as_ref().map(PreAuthKey::listed),
            created_at: n.created_at,
            register_method: register_method(n.register_method).to_string(),
            online: v.online,
            approved_routes: routes(&v.approved_routes),
            available_routes: routes(&v.announced_routes),
            subnet_routes: routes(&serving(v)),
            tags: v.tags.clone(),
        }
    }

    /// `user` is the owner (ignored for tagged nodes, whose identity is their
    /// tags); `pre_auth_key` the key the node registered with, if known.
    pub fn from_domain(
        n: &t::Node,
        user: Option<&t::User>,
        online: bool,
        pre_auth_key: Option<PreAuthKey>,
    ) -> Self {
        let user = if n.is_tagged() {
            None
        } else {
            user.filter(|u| Some(u.id) == n.user_id)
        };
        // Served subnet routes: approved and announced, exit routes aside.
        let subnet_routes = n
            .approved_routes
            .iter()
            .filter(|r| r.prefix_len() > 0 && n.announced_routes.contains(r))
            .map(|r| r.to_string())
            .collect();
        Node {
            id: n.id.0,
            machine_key: n.machine_key.to_string(),
            node_key: n.node_key.to_string(),
            disco_key: n.disco_key.to_string(),
            ip_addresses: n.ips().iter().map(|ip| ip.to_string()).collect(),
            name: if n.hostname.is_empty() {
                n.given_name.clone()
            } else {
                n.hostname.clone()
            },
            given_name: n.given_name.clone(),
            user: user.map(User::from_domain),
            last_seen: n.last_seen,
            expiry: n.expiry,
            pre_auth_key,
            created_at: n.created_at,
            register_method: register_method(n.register_method).to_string(),
            online,
            approved_routes: n.approved_routes.iter().map(|r| r.to_string()).collect(),
            available_routes: n.announced_routes.iter().map(|r| r.to_string()).collect(),
            subnet_routes,
            tags: n.tags.clone(),
        }
    }
}

// ---------------------------------------------------------------------------
// Requests

/// `POST /api/v1/user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateUserRequest {
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub picture_url: String,
}

/// `POST /api/v1/preauthkey`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CreatePreAuthKeyRequest {
    /// The owner's id; absent for a tagged key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<LooseId>,
    pub reusable: bool,
    pub ephemeral: bool,
    #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Timestamp>")]
    pub expiration: Option<Timestamp>,
    pub acl_tags: Vec<String>,
}

/// `POST /api/v1/preauthkey/expire`: `{id}` (Headscale ≥ 0.28), or the
/// older `{user, key}`.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpirePreAuthKeyRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<LooseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<LooseId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl fmt::Debug for ExpirePreAuthKeyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExpirePreAuthKeyRequest")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("key", &self.key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// `POST /api/v1/node/{id}/expire` (body or query).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpireNodeRequest {
    #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Timestamp>")]
    pub expiry: Option<Timestamp>,
    pub disable_expiry: bool,
}

/// `POST /api/v1/node/{id}/tags`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct SetTagsRequest {
    pub tags: Vec<String>,
}

/// `POST /api/v1/node/{id}/approve_routes`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct ApproveRoutesRequest {
    pub routes: Vec<String>,
}

/// `POST /api/v1/node/{id}/user` `{"user": <id>}` (Headscale 0.26+'s
/// MoveNode; the id may be a number or a string, as grpc-gateway accepts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct MoveNodeRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<LooseId>,
}

/// `POST /api/v1/node/backfillips?confirmed=true`: one line per address
/// given or removed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct BackfillNodeIpsResponse {
    pub changes: Vec<String>,
}

/// `POST /api/v1/auth/register` (Headscale 0.27+): complete the pending
/// interactive registration `auth_id` for the user named `user`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthRegisterRequest {
    pub user: String,
    #[serde(alias = "auth_id")]
    pub auth_id: String,
}

/// `POST /api/v1/auth/approve` and `POST /api/v1/auth/reject`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthIdRequest {
    #[serde(alias = "auth_id")]
    pub auth_id: String,
}

/// `PUT /api/v1/policy` and `POST /api/v1/policy/check`: the HuJSON text.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PolicyRequest {
    pub policy: String,
}

// ---------------------------------------------------------------------------
// Responses

/// `GET`/`PUT /api/v1/policy`: the policy in force (empty when none is
/// stored) and when it was last set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyResponse {
    #[serde(default)]
    pub policy: String,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub updated_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserResponse {
    pub user: User,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListUsersResponse {
    #[serde(default)]
    pub users: Vec<User>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PreAuthKeyResponse {
    pub pre_auth_key: PreAuthKey,
}

/// An API key as listed (Headscale's `v1.ApiKey`): never the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    /// `hskey-api-<prefix>-***` (Headscale 0.28's listing; Headplane's login
    /// compares it with the start of its key).
    pub prefix: String,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub expiration: Option<Timestamp>,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub created_at: Timestamp,
    #[serde(with = "ts_opt", default)]
    #[schemars(with = "Option<Timestamp>")]
    pub last_seen: Option<Timestamp>,
}

impl ApiKey {
    pub fn from_key(k: &ironscale_types::ApiKey) -> ApiKey {
        ApiKey {
            id: k.id,
            prefix: ironscale_state::display_prefix(k),
            expiration: k.expiration,
            created_at: k.created_at,
            last_seen: k.last_seen,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListApiKeysResponse {
    #[serde(default)]
    pub api_keys: Vec<ApiKey>,
}

/// `POST /api/v1/apikey`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct CreateApiKeyRequest {
    #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Timestamp>")]
    pub expiration: Option<Timestamp>,
}

/// The new key, shown once.
#[derive(Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateApiKeyResponse {
    pub api_key: String,
}

impl fmt::Debug for CreateApiKeyResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateApiKeyResponse")
            .field("api_key", &"<redacted>")
            .finish()
    }
}

/// `POST /api/v1/apikey/expire`: `{prefix}` or `{id}` (exactly one).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ExpireApiKeyRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<LooseId>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListPreAuthKeysResponse {
    #[serde(default)]
    pub pre_auth_keys: Vec<PreAuthKey>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeResponse {
    pub node: Node,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListNodesResponse {
    #[serde(default)]
    pub nodes: Vec<Node>,
}

/// A client waiting for its interactive registration to be completed
/// (`GET /api/v1/auth/pending`; not a Headscale route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRegistration {
    /// The id to give `auth register --auth-id` (the end of the login URL).
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    pub machine_key: String,
    pub node_key: String,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub created_at: Timestamp,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub expires_at: Timestamp,
}

impl PendingRegistration {
    pub fn from_state(p: &st::PendingRegistration) -> Self {
        PendingRegistration {
            id: p.id.to_string(),
            hostname: p.hostname.clone(),
            machine_key: p.machine.to_string(),
            node_key: p.node_key.to_string(),
            created_at: p.created,
            expires_at: p.expires,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListPendingRegistrationsResponse {
    #[serde(default)]
    pub registrations: Vec<PendingRegistration>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthResponse {
    pub database_connectivity: bool,
}

/// `{}`: the answer to deletes and expiries.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

/// One audit log entry (`GET /api/v1/audit`; not a Headscale route).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    #[serde(with = "ts")]
    #[schemars(with = "Timestamp")]
    pub at: Timestamp,
    /// `local-socket` or `api-key:<prefix>`.
    pub actor: String,
    /// e.g. `user.create`, `node.rename`, `preauthkey.create`.
    pub action: String,
    #[serde(default)]
    pub target: String,
    /// `ok`, or the error the request was refused with.
    pub result: String,
    /// More about the change (an object; `{}` when there is nothing more).
    #[serde(default)]
    pub detail: serde_json::Value,
}

impl AuditEntry {
    pub fn from_entry(e: &ironscale_types::AuditEntry) -> AuditEntry {
        AuditEntry {
            id: e.id,
            at: e.at,
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            result: e.result.clone(),
            // Written by this crate as an object; anything else is shown as text.
            detail: serde_json::from_str(&e.detail)
                .unwrap_or_else(|_| serde_json::Value::String(e.detail.clone())),
        }
    }
}

/// `GET /api/v1/audit?since=<RFC 3339>&limit=<n>`: newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ListAuditResponse {
    #[serde(default)]
    pub entries: Vec<AuditEntry>,
}

/// What a node serves now (Headscale's `subnet_routes`): the subnet routes
/// it is the elected primary for, and its approved exit routes while online.
fn serving(v: &ironscale_state::NodeView) -> Vec<ipnet::IpNet> {
    let mut out = v.primary_routes.clone();
    if v.online {
        out.extend(
            v.approved_routes
                .iter()
                .filter(|r| r.prefix_len() == 0 && v.announced_routes.contains(r))
                .copied(),
        );
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::{assert_shape, golden, Lenient};
    use chrono::TimeZone;
    use ironscale_types::{NodeId, RegisterMethod, UserId};

    fn at(s: i64) -> Timestamp {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    fn user(id: u64, name: &str) -> t::User {
        t::User {
            id: UserId(id),
            name: name.into(),
            display_name: String::new(),
            email: String::new(),
            provider: String::new(),
            provider_id: String::new(),
            profile_pic_url: String::new(),
            idp_groups: Vec::new(),
            created_at: at(id as i64),
        }
    }

    fn key(id: u64, user: Option<u64>, tags: &[&str]) -> t::PreAuthKey {
        t::PreAuthKey {
            id,
            prefix: format!("hskey-auth-p{id}"),
            hash: "deadbeef".into(),
            user_id: user.map(UserId),
            reusable: false,
            ephemeral: false,
            used: true,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            expiration: None,
            created_at: at(10),
        }
    }

    fn node(id: u64, name: &str, owner: Option<u64>, tags: &[&str]) -> t::Node {
        t::Node {
            id: NodeId(id),
            machine_key: t::MachinePublic([id as u8; 32]),
            node_key: t::NodePublic([id as u8 + 1; 32]),
            disco_key: t::DiscoPublic([id as u8 + 2; 32]),
            ipv4: None,
            ipv6: None,
            hostname: name.into(),
            given_name: name.into(),
            user_id: owner.map(UserId),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: vec![],
            approved_routes: vec![],
            endpoints: vec![],
            expiry: None,
            created_at: at(20),
            last_seen: Some(at(30)),
            register_method: RegisterMethod::AuthKey,
            auth_key_id: Some(id),
            ephemeral: false,
            capver: 100,
            approved: true,
        }
    }

    fn json<T: Serialize>(v: &T) -> serde_json::Value {
        serde_json::to_value(v).expect("serialises")
    }

    #[test]
    fn user_matches_golden() {
        let mut u = user(1, "test");
        u.display_name = "Test".into();
        u.email = "t@example.com".into();
        let body = json(&UserResponse {
            user: User::from_domain(&u),
        });
        assert_shape(
            &body,
            &golden("TestAPIV1CreateUser_parity").body,
            Lenient::none(),
        );
    }

    #[test]
    fn user_list_matches_golden() {
        let users: Vec<User> = ["alice", "bob", "carol"]
            .iter()
            .zip(1..)
            .map(|(n, i)| User::from_domain(&user(i, n)))
            .collect();
        let body = json(&ListUsersResponse { users });
        assert_shape(
            &body,
            &golden("TestAPIV1ListUsers_all_parity").body,
            Lenient::none(),
        );
        let empty = json(&ListUsersResponse { users: vec![] });
        assert_shape(
            &empty,
            &golden("TestAPIV1ListUsers_empty_parity").body,
            Lenient::none(),
        );
    }

    #[test]
    fn preauth_key_list_matches_golden() {
        let alice = user(1, "alice");
        let mut k1 = key(1, Some(1), &[]);
        k1.reusable = true;
        k1.used = false;
        k1.expiration = Some(at(3600));
        let mut k2 = key(2, None, &["tag:test"]);
        k2.ephemeral = true;
        k2.used = false;
        k2.expiration = Some(at(3600));
        let keys = vec![
            PreAuthKey::from_domain(&k1, Some(&alice), masked_key(&k1.prefix)),
            PreAuthKey::from_domain(&k2, None, masked_key(&k2.prefix)),
        ];
        let body = json(&ListPreAuthKeysResponse {
            pre_auth_keys: keys,
        });
        assert_shape(
            &body,
            &golden("TestAPIV1ListPreAuthKeys_all_parity").body,
            Lenient::none(),
        );
    }

    #[test]
    fn node_matches_golden() {
        let alice = user(1, "alice");
        let n = node(1, "node-a", Some(1), &[]);
        let k = PreAuthKey::from_domain(&key(1, Some(1), &[]), Some(&alice), masked_key("p"));
        let body = json(&NodeResponse {
            node: Node::from_domain(&n, Some(&alice), false, Some(k)),
        });
        assert_shape(
            &body,
            &golden("TestAPIV1NodeGet_happy_parity").body,
            Lenient::none(),
        );
    }

    #[test]
    fn tagged_node_has_null_user() {
        let bob = user(1, "bob");
        // A tagged node keeps no owner even if one is passed in.
        let mut n = node(1, "node-b", None, &["tag:initial"]);
        n.user_id = Some(UserId(1));
        let k = PreAuthKey::from_domain(
            &key(1, Some(1), &["tag:initial"]),
            Some(&bob),
            masked_key("p"),
        );
        let body = json(&NodeResponse {
            node: Node::from_domain(&n, Some(&bob), false, Some(k)),
        });
        assert_shape(
            &body,
            &golden("TestAPIV1NodeGet_tagged_node_parity").body,
            Lenient::none(),
        );
        assert!(body["node"]["user"].is_null());
    }

    #[test]
    fn node_list_and_health_match_golden() {
        let users = [user(1, "alice"), user(2, "bob")];
        let nodes: Vec<Node> = ["node-a", "node-b"]
            .iter()
            .zip(1u64..)
            .map(|(name, i)| {
                let u = &users[i as usize - 1];
                let k = PreAuthKey::from_domain(&key(i, Some(i), &[]), Some(u), masked_key("p"));
                Node::from_domain(&node(i, name, Some(i), &[]), Some(u), false, Some(k))
            })
            .collect();
        let body = json(&ListNodesResponse { nodes });
        assert_shape(
            &body,
            &golden("TestAPIV1NodeList_all_parity").body,
            Lenient::none(),
        );
        let h = json(&HealthResponse {
            database_connectivity: true,
        });
        assert_shape(
            &h,
            &golden("TestAPIV1Health_parity_with_gateway").body,
            Lenient::none(),
        );
        assert_shape(
            &json(&Empty {}),
            &golden("TestAPIV1DeleteUser_parity").body,
            Lenient::none(),
        );
    }

    #[test]
    fn node_fields_carry_keys_ips_and_routes() {
        let mut n = node(7, "web", Some(1), &[]);
        n.ipv4 = Some("100.64.0.7".parse().expect("ip"));
        n.ipv6 = Some("fd7a:115c:a1e0::7".parse().expect("ip"));
        n.announced_routes = vec![
            "10.0.0.0/24".parse().expect("net"),
            "0.0.0.0/0".parse().expect("net"),
        ];
        n.approved_routes = n.announced_routes.clone();
        let d = Node::from_domain(&n, Some(&user(1, "alice")), true, None);
        assert_eq!(d.ip_addresses, ["100.64.0.7", "fd7a:115c:a1e0::7"]);
        assert_eq!(d.subnet_routes, ["10.0.0.0/24"]);
        assert_eq!(d.available_routes.len(), 2);
        assert!(d.machine_key.starts_with("mkey:"), "{}", d.machine_key);
        assert!(d.node_key.starts_with("nodekey:"), "{}", d.node_key);
        assert!(d.online);
        let v = json(&d);
        assert_eq!(v["id"], "7");
        assert_eq!(v["lastSeen"], "2023-11-14T22:13:50Z");
        assert!(v["preAuthKey"].is_null());
        // Round trip: the CLI reads what the server writes.
        let back: Node = serde_json::from_value(v).expect("reads back");
        assert_eq!(back, d);
    }

    #[test]
    fn timestamps() {
        let ts = Utc
            .timestamp_opt(1_700_000_000, 123_000_000)
            .single()
            .expect("valid");
        assert_eq!(format_ts(&ts), "2023-11-14T22:13:20.123Z");
        assert_eq!(
            parse_ts("2023-11-14T23:13:20.123+01:00").expect("parses"),
            Some(ts)
        );
        assert_eq!(parse_ts("0001-01-01T00:00:00Z").expect("parses"), None);
        assert!(parse_ts("yesterday").is_err());
    }

    #[test]
    fn requests_accept_string_or_number_ids() {
        let r: CreatePreAuthKeyRequest = serde_json::from_str(
            r#"{"user":"3","reusable":true,"expiration":"2030-01-01T00:00:00Z","aclTags":["tag:a"]}"#,
        )
        .expect("parses");
        assert_eq!(r.user.as_ref().and_then(LooseId::parse), Some(3));
        assert!(r.reusable && !r.ephemeral);
        assert_eq!(r.acl_tags, ["tag:a"]);
        let r: CreatePreAuthKeyRequest = serde_json::from_str(r#"{"user":4}"#).expect("parses");
        assert_eq!(r.user.as_ref().and_then(LooseId::parse), Some(4));
        assert_eq!(r.expiration, None);
        let r: CreatePreAuthKeyRequest = serde_json::from_str(r#"{"user":"abc"}"#).expect("parses");
        assert_eq!(r.user.as_ref().and_then(LooseId::parse), None);
        let r: ExpirePreAuthKeyRequest = serde_json::from_str(r#"{"id":"12"}"#).expect("parses");
        assert_eq!(r.id.as_ref().and_then(LooseId::parse), Some(12));
        assert_eq!(parse_id("0"), None);
        assert_eq!(parse_id("-1"), None);
        assert_eq!(parse_id("9223372036854775807"), Some(i64::MAX as u64));
        assert_eq!(parse_id("9223372036854775808"), None);
    }

    #[test]
    fn debug_never_shows_keys() {
        let mut k = PreAuthKey::from_domain(
            &key(1, None, &["tag:a"]),
            None,
            "hskey-auth-SECRETSECRET".into(),
        );
        k.key = "hskey-auth-SECRETSECRET".into();
        let dbg = format!("{:?}", PreAuthKeyResponse { pre_auth_key: k });
        assert!(!dbg.contains("SECRET"), "{dbg}");
        let r = ExpirePreAuthKeyRequest {
            key: Some("hskey-auth-SECRETSECRET".into()),
            ..Default::default()
        };
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}

/// `GET /api/v1/netcheck` (not a Headscale route): every node's network as
/// its client reports it, and the DERP regions of the map in force.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetcheckResponse {
    #[serde(default)]
    pub nodes: Vec<NodeNetwork>,
    #[serde(default)]
    pub regions: Vec<DerpRegionInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeNetwork {
    #[serde(with = "id")]
    #[schemars(with = "String")]
    pub id: u64,
    pub name: String,
    pub online: bool,
    #[serde(default, with = "ts_opt")]
    #[schemars(with = "Option<Timestamp>")]
    pub last_seen: Option<Timestamp>,
    #[serde(default)]
    pub endpoints: Vec<String>,
    #[serde(default)]
    pub client_version: String,
    /// Absent when the client reported no NetInfo yet.
    #[serde(default)]
    pub net_info: Option<NetInfoDto>,
}

/// Tailscale's `NetInfo` fields, as the client sent them (`null`: unknown).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetInfoDto {
    pub working_udp: Option<bool>,
    pub working_ipv6: Option<bool>,
    pub os_has_ipv6: Option<bool>,
    /// A hard NAT: the mapped port changes with the destination.
    pub mapping_varies_by_dest_addr: Option<bool>,
    pub hair_pinning: Option<bool>,
    #[serde(default)]
    pub have_port_map: bool,
    pub upnp: Option<bool>,
    pub pmp: Option<bool>,
    pub pcp: Option<bool>,
    #[serde(default)]
    pub preferred_derp: i64,
    #[serde(default)]
    pub link_type: String,
    #[serde(default)]
    pub firewall_mode: String,
    /// Seconds, by region and address family (`"900-v4"`).
    #[serde(default)]
    pub derp_latency: std::collections::BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DerpRegionInfo {
    pub id: i64,
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub nodes: Vec<DerpNodeInfo>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DerpNodeInfo {
    pub name: String,
    pub host: String,
    #[serde(default)]
    pub ipv4: String,
    #[serde(default)]
    pub ipv6: String,
    /// -1: no STUN; 0: 3478.
    #[serde(default)]
    pub stun_port: i64,
    /// 0: 443.
    #[serde(default)]
    pub derp_port: i64,
    #[serde(default)]
    pub cert_name: String,
    #[serde(default)]
    pub insecure_for_tests: bool,
    #[serde(default)]
    pub stun_only: bool,
}

impl NetcheckResponse {
    pub fn from_views(nodes: &[st::NodeNetView], regions: &[st::DerpRegionView]) -> Self {
        NetcheckResponse {
            nodes: nodes
                .iter()
                .map(|n| NodeNetwork {
                    id: n.id.0,
                    name: n.name.clone(),
                    online: n.online,
                    last_seen: n.last_seen,
                    endpoints: n.endpoints.clone(),
                    client_version: n.client_version.clone(),
                    net_info: n.net.as_ref().map(|i| NetInfoDto {
                        working_udp: i.working_udp,
                        working_ipv6: i.working_ipv6,
                        os_has_ipv6: i.os_has_ipv6,
                        mapping_varies_by_dest_addr: i.mapping_varies_by_dest_addr,
                        hair_pinning: i.hair_pinning,
                        have_port_map: i.have_port_map,
                        upnp: i.upnp,
                        pmp: i.pmp,
                        pcp: i.pcp,
                        preferred_derp: i.preferred_derp,
                        link_type: i.link_type.clone(),
                        firewall_mode: i.firewall_mode.clone(),
                        derp_latency: i.derp_latency.clone(),
                    }),
                })
                .collect(),
            regions: regions
                .iter()
                .map(|r| DerpRegionInfo {
                    id: r.id,
                    code: r.code.clone(),
                    name: r.name.clone(),
                    nodes: r
                        .nodes
                        .iter()
                        .map(|n| DerpNodeInfo {
                            name: n.name.clone(),
                            host: n.host.clone(),
                            ipv4: n.ipv4.clone(),
                            ipv6: n.ipv6.clone(),
                            stun_port: n.stun_port,
                            derp_port: n.derp_port,
                            cert_name: n.cert_name.clone(),
                            insecure_for_tests: n.insecure_for_tests,
                            stun_only: n.stun_only,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/doctor[?node=ID]` (not a Headscale route): findings, problems first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorResponse {
    #[serde(default)]
    pub findings: Vec<DoctorFinding>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DoctorFinding {
    /// The node it is about (absent: the tailnet).
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub node: String,
    /// `problem` or `warning`.
    pub severity: String,
    /// A stable code: `offline`, `key-expired`, `not-approved`, `client-too-old`,
    /// `route-not-approved`, `exit-not-approved`, `relayed-no-udp`, `relayed-hard-nat-pair`,
    /// `no-endpoints`, `home-derp-far`, `no-home-derp`.
    pub code: String,
    pub cause: String,
    pub fix: String,
}

impl DoctorResponse {
    pub fn from_findings(f: &[st::Finding]) -> Self {
        DoctorResponse {
            findings: f
                .iter()
                .map(|x| DoctorFinding {
                    node_id: x.node.map(|n| n.0.to_string()),
                    node: x.node_name.clone(),
                    severity: match x.severity {
                        st::FindingSeverity::Problem => "problem",
                        st::FindingSeverity::Warning => "warning",
                    }
                    .into(),
                    code: x.code.into(),
                    cause: x.cause.clone(),
                    fix: x.fix.clone(),
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/policy/explain?src=NODE&dst=NODE&port=N` (not a Headscale
/// route): whether `src` may open a TCP connection to `dst`:`port`, and which
/// rule of `dst`'s packet filter decides it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExplainResponse {
    pub allowed: bool,
    /// 1-based index of the matching rule in the destination's packet filter.
    #[serde(default)]
    pub rule: Option<usize>,
    #[serde(default)]
    pub rule_src_ips: Vec<String>,
    #[serde(default)]
    pub rule_dst_ports: Vec<String>,
    pub why: String,
}
