//! One handler per route. Handlers parse ids and bodies themselves so that
//! every rejection has Headscale's status and error body, and build their
//! answers from the state's read models (`State::node_views`, `user_views`,
//! `preauth_key_views`, ...): no joins here.
//!
//! Every mutating handler takes the [`Caller`] and logs it with what it
//! changed (ids, names, tags; never a pre-auth key's or API key's secret),
//! and notes the target and detail of its audit log entry on the [`Audit`]
//! handle (the same things, never a request body verbatim).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, Request};
use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::StatusCode;
use ironscale_state::{Approval, NodeFilter, RegistrationId, State, StateError, UserFilter};
use ironscale_types::{NodeId, RegisterMethod, UserId, UserRef};
use serde::de::DeserializeOwned;

use crate::dto::{self, parse_id};
use crate::{ApiError, Audit, Caller};

type ApiResult<T> = Result<Json<T>, ApiError>;
type Params = Result<Query<HashMap<String, String>>, QueryRejection>;

fn params(q: Params) -> Result<HashMap<String, String>, ApiError> {
    q.map(|Query(m)| m)
        .map_err(|e| ApiError::invalid(format!("invalid query string: {}", e.body_text())))
}

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v)
        .map_err(|e| ApiError::invalid(e.body_text()))
}

/// A request body, its rejection (too large, unreadable) a JSON error.
pub struct Body(Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                let status = e.status();
                let code = if status == StatusCode::PAYLOAD_TOO_LARGE {
                    dto::code::INVALID_ARGUMENT
                } else {
                    dto::code::INTERNAL
                };
                ApiError::new(status, code, e.body_text())
            })
    }
}

/// An empty body is an empty request message (as with grpc-gateway), and a
/// `null` member is an unset field (client libraries send them).
fn body<T: DeserializeOwned + Default>(b: &Body) -> Result<T, ApiError> {
    let b = &b.0;
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let bad = |e: serde_json::Error| ApiError::invalid(format!("invalid request body: {e}"));
    let mut v: serde_json::Value = serde_json::from_slice(b).map_err(bad)?;
    drop_nulls(&mut v);
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v).map_err(bad)
}

/// Removes the `null` members of every object in `v`.
fn drop_nulls(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

fn node_id(raw: &str) -> Result<NodeId, ApiError> {
    parse_id(raw)
        .map(NodeId)
        .ok_or_else(|| ApiError::bad_id("node", raw))
}

fn user_id(raw: &str) -> Result<u64, ApiError> {
    parse_id(raw).ok_or_else(|| ApiError::bad_id("user", raw))
}

/// A user named in a query parameter: Headscale's clients send an id
/// (`preauthkeys list --user 5`, 0.26+) or a name (`nodes list --user alice`).
/// A name wins when a user has it; digits that name no user are an id.
fn user_in_query(state: &State, raw: &str) -> Result<UserRef, ApiError> {
    let by_name = UserRef::Name(raw.to_string());
    if state.find_user(&by_name).is_ok() {
        return Ok(by_name);
    }
    Ok(match parse_id(raw) {
        Some(id) => UserRef::Id(UserId(id)),
        None => by_name,
    })
}

fn empty() -> Json<dto::Empty> {
    Json(dto::Empty {})
}

// ----- health and fallbacks -----

pub async fn health(AxState(state): AxState<State>) -> Response {
    let ok = state.health().await.is_ok();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(dto::HealthResponse {
            database_connectivity: ok,
        }),
    )
        .into_response()
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("Not Found")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        dto::code::UNIMPLEMENTED,
        "Method Not Allowed",
    )
}

// ----- users -----

pub async fn list_users(
    AxState(state): AxState<State>,
    q: Params,
) -> ApiResult<dto::ListUsersResponse> {
    let q = params(q)?;
    let id = match q.get("id").map(String::as_str).filter(|s| !s.is_empty()) {
        Some(raw) => Some(user_id(raw)?),
        None => None,
    };
    let filter = UserFilter {
        id: id.map(UserId),
        name: q.get("name").filter(|s| !s.is_empty()).cloned(),
        email: q.get("email").filter(|s| !s.is_empty()).cloned(),
    };
    let users = state
        .user_views(&filter)
        .iter()
        .map(dto::User::from_view)
        .collect();
    Ok(Json(dto::ListUsersResponse { users }))
}

pub async fn create_user(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::UserResponse> {
    let req: dto::CreateUserRequest = body(&b)?;
    audit.target(format!("user:{}", req.name));
    let u = state
        .create_user(&req.name, &req.display_name, &req.email)
        .await?;
    tracing::info!(%caller, user = %u.name, id = u.id.0, "user created");
    audit.detail("id", u.id.0.to_string());
    Ok(Json(dto::UserResponse {
        user: dto::User::from_view(&state.user_view_of(&u)),
    }))
}

pub async fn rename_user(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<dto::UserResponse> {
    let (old, new) = path(p)?;
    audit.target(format!("user:{old}"));
    audit.detail("newName", &new);
    let id = user_id(&old)?;
    let u = state.rename_user(&UserRef::Id(UserId(id)), &new).await?;
    tracing::info!(%caller, id, user = %u.name, "user renamed");
    Ok(Json(dto::UserResponse {
        user: dto::User::from_view(&state.user_view_of(&u)),
    }))
}

pub async fn delete_user(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<dto::Empty> {
    let raw = path(p)?;
    audit.target(format!("user:{raw}"));
    let id = user_id(&raw)?;
    let u = state.delete_user(&UserRef::Id(UserId(id))).await?;
    tracing::info!(%caller, id, user = %u.name, "user deleted");
    audit.detail("name", &u.name);
    Ok(empty())
}

// ----- pre-auth keys -----

pub async fn list_preauth_keys(
    AxState(state): AxState<State>,
    q: Params,
) -> ApiResult<dto::ListPreAuthKeysResponse> {
    let q = params(q)?;
    let user = match q.get("user").map(String::as_str).filter(|s| !s.is_empty()) {
        Some(raw) => Some(user_in_query(&state, raw)?),
        None => None,
    };
    let pre_auth_keys = state
        .preauth_key_views(user.as_ref())
        .await?
        .iter()
        .map(dto::PreAuthKey::listed)
        .collect();
    Ok(Json(dto::ListPreAuthKeysResponse { pre_auth_keys }))
}

pub async fn create_preauth_key(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::PreAuthKeyResponse> {
    let req: dto::CreatePreAuthKeyRequest = body(&b)?;
    match req.user.as_ref().filter(|u| !u.0.is_empty()) {
        Some(u) => audit.target(format!("user:{}", u.0)),
        None => audit.target("tagged"),
    }
    audit.detail("reusable", req.reusable);
    audit.detail("ephemeral", req.ephemeral);
    audit.detail("tags", &req.acl_tags);
    let user = match req.user.as_ref().filter(|u| !u.0.is_empty()) {
        Some(raw) => Some(UserRef::Id(UserId(
            raw.parse()
                .ok_or_else(|| ApiError::bad_id("user", &raw.0))?,
        ))),
        None => None,
    };
    let (k, full) = state
        .create_preauth_key(
            user.as_ref(),
            req.reusable,
            req.ephemeral,
            req.expiration,
            req.acl_tags,
        )
        .await?;
    tracing::info!(%caller, id = k.id, user = ?k.user_id.map(|u| u.0), tags = ?k.tags, reusable = k.reusable,
        ephemeral = k.ephemeral, "pre-auth key created");
    audit.target(format!("preauthkey:{}", k.prefix));
    audit.detail("id", k.id.to_string());
    audit.detail("user", k.user_id.map(|u| u.0.to_string()));
    audit.detail("expiration", k.expiration.as_ref().map(dto::format_ts));
    Ok(Json(dto::PreAuthKeyResponse {
        pre_auth_key: dto::PreAuthKey::from_view(&state.preauth_key_view_of(&k), full),
    }))
}

pub async fn expire_preauth_key(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::Empty> {
    let req: dto::ExpirePreAuthKeyRequest = body(&b)?;
    // Named by id, or by its text: only the prefix of that is noted.
    match (&req.id, &req.key) {
        (Some(id), _) if !id.0.is_empty() => audit.target(format!("preauthkey:id={}", id.0)),
        (_, Some(key)) if !key.is_empty() => audit.target(format!(
            "preauthkey:{}",
            ironscale_state::redact_secrets(key)
        )),
        _ => {}
    }
    let target = match (&req.id, &req.key) {
        (Some(id), _) if !id.0.is_empty() => id
            .parse()
            .ok_or_else(|| ApiError::bad_id("pre-auth key", &id.0))?
            .to_string(),
        (_, Some(key)) if !key.is_empty() => key.clone(),
        _ => return Err(ApiError::invalid("give the pre-auth key's \"id\"")),
    };
    let k = state.expire_preauth_key(&target).await?;
    tracing::info!(%caller, id = k.id, "pre-auth key expired");
    audit.target(format!("preauthkey:{}", k.prefix));
    audit.detail("id", k.id.to_string());
    Ok(empty())
}

// ----- API keys -----

pub async fn list_api_keys(AxState(state): AxState<State>) -> ApiResult<dto::ListApiKeysResponse> {
    let api_keys = state
        .list_api_keys()
        .await?
        .iter()
        .map(dto::ApiKey::from_key)
        .collect();
    Ok(Json(dto::ListApiKeysResponse { api_keys }))
}

pub async fn create_api_key(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::CreateApiKeyResponse> {
    let req: dto::CreateApiKeyRequest = body(&b)?;
    audit.detail("expiration", req.expiration.as_ref().map(dto::format_ts));
    let (k, text) = state.create_api_key(req.expiration).await?;
    tracing::info!(%caller, id = k.id, prefix = %k.prefix, expiration = ?k.expiration, "API key created");
    audit.target(format!("apikey:{}", k.prefix));
    audit.detail("id", k.id.to_string());
    Ok(Json(dto::CreateApiKeyResponse { api_key: text }))
}

/// Exactly one of an id and a prefix names a key. A whole key given as the
/// prefix names the key by its prefix (its secret goes no further).
fn api_key_target(
    audit: &Audit,
    id: Option<&str>,
    prefix: Option<&str>,
) -> Result<(Option<u64>, Option<String>), ApiError> {
    let id = id.filter(|s| !s.is_empty());
    let prefix = prefix
        .filter(|s| !s.is_empty())
        .map(|p| ironscale_state::parse_api_key(p).map_or(p, |(prefix, _)| prefix));
    match (id, prefix) {
        (Some(i), _) => audit.target(format!("apikey:id={i}")),
        (None, Some(p)) => audit.target(format!("apikey:{}", ironscale_state::normalize_prefix(p))),
        (None, None) => {}
    }
    match (id, prefix) {
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "give the API key's id or its prefix, not both",
        )),
        (None, None) => Err(ApiError::invalid("give the API key's \"prefix\" or \"id\"")),
        (Some(i), None) => Ok((
            Some(parse_id(i).ok_or_else(|| ApiError::bad_id("API key", i))?),
            None,
        )),
        (None, Some(p)) => Ok((None, Some(p.to_string()))),
    }
}

pub async fn expire_api_key(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::Empty> {
    let req: dto::ExpireApiKeyRequest = body(&b)?;
    let (id, prefix) = api_key_target(
        &audit,
        req.id.as_ref().map(|i| i.0.as_str()),
        req.prefix.as_deref(),
    )?;
    let k = state.expire_api_key(id, prefix.as_deref()).await?;
    tracing::info!(%caller, id = k.id, prefix = %k.prefix, "API key expired");
    audit.target(format!("apikey:{}", k.prefix));
    audit.detail("id", k.id.to_string());
    Ok(empty())
}

/// `DELETE /api/v1/apikey/{prefix}`, or `DELETE /api/v1/apikey/?id=N`.
pub async fn delete_api_key(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    prefix: Option<Path<String>>,
    q: Params,
) -> ApiResult<dto::Empty> {
    let q = params(q)?;
    let prefix = prefix.map(|Path(p)| p);
    let (id, prefix) = api_key_target(&audit, q.get("id").map(String::as_str), prefix.as_deref())?;
    let k = state.delete_api_key(id, prefix.as_deref()).await?;
    tracing::info!(%caller, id = k.id, prefix = %k.prefix, "API key deleted");
    audit.target(format!("apikey:{}", k.prefix));
    audit.detail("id", k.id.to_string());
    Ok(empty())
}

// ----- nodes -----

async fn one_node(state: &State, id: NodeId) -> Result<dto::NodeResponse, ApiError> {
    Ok(dto::NodeResponse {
        node: dto::Node::from_view(&state.node_view(id).await?),
    })
}

pub async fn list_nodes(
    AxState(state): AxState<State>,
    q: Params,
) -> ApiResult<dto::ListNodesResponse> {
    let q = params(q)?;
    let filter = NodeFilter {
        user: match q.get("user").map(String::as_str).filter(|s| !s.is_empty()) {
            Some(u) => Some(user_in_query(&state, u)?),
            None => None,
        },
    };
    let nodes = state
        .node_views(&filter)
        .await?
        .iter()
        .map(dto::Node::from_view)
        .collect();
    Ok(Json(dto::ListNodesResponse { nodes }))
}

pub async fn get_node(
    AxState(state): AxState<State>,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<dto::NodeResponse> {
    let id = node_id(&path(p)?)?;
    Ok(Json(one_node(&state, id).await?))
}

pub async fn delete_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<dto::Empty> {
    let raw = path(p)?;
    audit.target(format!("node:{raw}"));
    let id = node_id(&raw)?;
    let n = state.delete_node(id).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, "node deleted");
    audit.detail("name", &n.given_name);
    Ok(empty())
}

pub async fn expire_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
    q: Params,
    b: Body,
) -> ApiResult<dto::NodeResponse> {
    let raw = path(p)?;
    audit.target(format!("node:{raw}"));
    let id = node_id(&raw)?;
    let q = params(q)?;
    let mut req: dto::ExpireNodeRequest = body(&b)?;
    if let Some(raw) = q.get("expiry").filter(|s| !s.is_empty()) {
        req.expiry = dto::parse_ts(raw).map_err(|e| {
            ApiError::invalid(format!("invalid expiry {raw:?}: {e} (use RFC 3339)"))
        })?;
    }
    if let Some(raw) = q.get("disableExpiry") {
        req.disable_expiry = matches!(raw.as_str(), "true" | "1");
    }
    if req.disable_expiry {
        return Err(ApiError::unimplemented(
            "disabling a node's key expiry is not supported yet",
        ));
    }
    let n = state.expire_node(id, req.expiry).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, expiry = ?n.expiry, "node expired");
    audit.detail("name", &n.given_name);
    audit.detail("expiry", n.expiry.as_ref().map(dto::format_ts));
    Ok(Json(one_node(&state, id).await?))
}

/// `POST /api/v1/node/{id}/approve` (ours; Headscale has no device
/// approval): let a node registered under `node.device_approval` in.
pub async fn approve_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
) -> ApiResult<dto::NodeResponse> {
    let raw = path(p)?;
    audit.target(format!("node:{raw}"));
    let id = node_id(&raw)?;
    let n = state.approve_node(id).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, "node approved");
    audit.detail("name", &n.given_name);
    Ok(Json(one_node(&state, id).await?))
}

pub async fn rename_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<(String, String)>, PathRejection>,
) -> ApiResult<dto::NodeResponse> {
    let (raw, new) = path(p)?;
    audit.target(format!("node:{raw}"));
    audit.detail("newName", &new);
    let id = node_id(&raw)?;
    let n = state.rename_node(id, &new).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, "node renamed");
    Ok(Json(one_node(&state, id).await?))
}

// ---- node tags and routes ---------------------------------------------------

/// `POST /api/v1/node/{id}/tags` `{"tags": ["tag:a"]}`
pub async fn set_tags(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
    b: Body,
) -> ApiResult<dto::NodeResponse> {
    let raw = path(p)?;
    audit.target(format!("node:{raw}"));
    let id = node_id(&raw)?;
    let req: dto::SetTagsRequest = body(&b)?;
    audit.detail("tags", &req.tags);
    let n = state.set_node_tags(id, req.tags).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, tags = ?n.tags, "node tags set");
    Ok(Json(one_node(&state, id).await?))
}

/// `POST /api/v1/node/{id}/approve_routes` `{"routes": ["10.0.0.0/24"]}`
pub async fn approve_routes(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
    b: Body,
) -> ApiResult<dto::NodeResponse> {
    let raw = path(p)?;
    audit.target(format!("node:{raw}"));
    let id = node_id(&raw)?;
    let req: dto::ApproveRoutesRequest = body(&b)?;
    audit.detail("routes", &req.routes);
    let mut routes = Vec::new();
    for r in &req.routes {
        routes.push(
            r.parse::<ipnet::IpNet>()
                .map_err(|e| ApiError::invalid(format!("route {r:?}: {e}")))?,
        );
    }
    let n = state.set_approved_routes(id, routes).await?;
    let approved: Vec<String> = n.approved_routes.iter().map(|r| r.to_string()).collect();
    tracing::info!(%caller, node = id.0, name = %n.given_name, ?approved, "node routes approved");
    Ok(Json(one_node(&state, id).await?))
}

/// `POST /api/v1/node/{id}/user` `{"user": <id>}` (Headscale 0.26+'s
/// MoveNode; `nodes move`). The user is an id; a body naming the user (as
/// Headscale before 0.26 sent it) is taken as a name.
pub async fn move_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    p: Result<Path<String>, PathRejection>,
    q: Params,
    b: Body,
) -> ApiResult<dto::NodeResponse> {
    let raw_id = path(p)?;
    audit.target(format!("node:{raw_id}"));
    let id = node_id(&raw_id)?;
    let q = params(q)?;
    let req: dto::MoveNodeRequest = body(&b)?;
    let raw = req
        .user
        .map(|u| u.0)
        .or_else(|| q.get("user").cloned())
        .unwrap_or_default();
    let raw = raw.trim();
    audit.detail("user", raw);
    if raw.is_empty() {
        return Err(ApiError::invalid(
            "give the user to move the node to (\"user\": its id)",
        ));
    }
    let to = match parse_id(raw) {
        Some(uid) => UserRef::Id(UserId(uid)),
        None if raw.bytes().all(|c| c.is_ascii_digit() || c == b'-') => {
            return Err(ApiError::bad_id("user", raw))
        }
        None => UserRef::Name(raw.to_string()),
    };
    let n = state.move_node(id, &to).await?;
    tracing::info!(%caller, node = id.0, name = %n.given_name, user = ?n.user_id.map(|u| u.0), "node moved");
    Ok(Json(one_node(&state, id).await?))
}

/// `POST /api/v1/node/backfillips?confirmed=true` (Headscale's
/// BackfillNodeIPs; `nodes backfillips`): every node gets an address of each
/// configured family it lacks. Without `confirmed` it is refused (400).
pub async fn backfill_node_ips(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    q: Params,
    b: Body,
) -> ApiResult<dto::BackfillNodeIpsResponse> {
    audit.target("nodes");
    #[derive(serde::Deserialize, Default)]
    #[serde(default)]
    struct Req {
        confirmed: bool,
    }
    let q = params(q)?;
    let req: Req = body(&b)?;
    let confirmed = req.confirmed
        || q.get("confirmed")
            .is_some_and(|v| matches!(v.as_str(), "true" | "1"));
    if !confirmed {
        return Err(ApiError::invalid(
            "not confirmed, aborting: pass confirmed=true to give every node the addresses it lacks",
        ));
    }
    let changes = state.backfill_node_ips().await?;
    tracing::info!(%caller, changes = changes.len(), "node addresses backfilled");
    audit.detail("changes", changes.len());
    Ok(Json(dto::BackfillNodeIpsResponse { changes }))
}

// ---- interactive registrations ---------------------------------------------

/// The id of a pending registration (the last segment of its login URL).
fn registration_id(raw: &str) -> Result<RegistrationId, ApiError> {
    RegistrationId::parse(raw.trim()).ok_or_else(|| {
        ApiError::invalid(format!(
            "invalid registration id {raw:?}: expected the 24 letters and digits after /register/ in the login URL"
        ))
    })
}

/// Approve the pending registration `raw_id` for the user `raw_user` (a
/// name, or an id no user is named): the node is created, the waiting
/// client proceeds.
async fn complete_registration(
    state: &State,
    caller: &Caller,
    audit: &Audit,
    raw_id: &str,
    raw_user: &str,
) -> ApiResult<dto::NodeResponse> {
    audit.target(format!("registration:{}", raw_id.trim()));
    audit.detail("user", raw_user.trim());
    let id = registration_id(raw_id)?;
    if raw_user.trim().is_empty() {
        return Err(ApiError::invalid(
            "give the user who will own the node (\"user\")",
        ));
    }
    let user = state.find_user(&user_in_query(state, raw_user.trim())?)?;
    let approval = Approval {
        user: Some(user.id),
        tags: Vec::new(),
        method: RegisterMethod::Cli,
        expiry: None,
    };
    let node = state.approve_registration(&id, approval).await?;
    tracing::info!(%caller, registration = %id, node = node.id.0, name = %node.given_name,
        user = %user.name, "interactive registration approved");
    audit.detail("node", node.id.0.to_string());
    audit.detail("name", &node.given_name);
    Ok(Json(one_node(state, node.id).await?))
}

/// `POST /api/v1/node/register?user=<name>&key=<id>` (Headscale's
/// RegisterNode; the seed's `nodes register --user U --key <id>`).
pub async fn register_node(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    q: Params,
) -> ApiResult<dto::NodeResponse> {
    let q = params(q)?;
    let key = q.get("key").map(String::as_str).unwrap_or_default();
    let user = q.get("user").map(String::as_str).unwrap_or_default();
    complete_registration(&state, &caller, &audit, key, user).await
}

/// `POST /api/v1/auth/register` `{"user": "<name>", "authId": "<id>"}`
/// (Headscale 0.27+'s `auth register`).
pub async fn auth_register(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::NodeResponse> {
    let req: dto::AuthRegisterRequest = body(&b)?;
    complete_registration(&state, &caller, &audit, &req.auth_id, &req.user).await
}

/// `POST /api/v1/auth/approve` `{"authId": "<id>"}`. Headscale approves an
/// auth request that already knows its user (an SSH check, a
/// re-authentication); a pending registration here has no owner yet, so it
/// is refused with the command that completes it.
pub async fn auth_approve(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::Empty> {
    let req: dto::AuthIdRequest = body(&b)?;
    audit.target(format!("registration:{}", req.auth_id.trim()));
    let id = registration_id(&req.auth_id)?;
    let Some(p) = state.pending_registration(&id) else {
        return Err(StateError::RegistrationNotFound(id.to_string()).into());
    };
    tracing::info!(%caller, registration = %id, host = %p.hostname, "auth approve refused: the registration needs a user");
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        dto::code::FAILED_PRECONDITION,
        format!(
            "registration {id} ({}) needs a user to own the node: run `ironscale auth register --auth-id {id} --user <name>`",
            p.hostname
        ),
    ))
}

/// `GET /api/v1/auth/pending`: the registrations waiting, oldest first (not
/// a Headscale route; `ironscale auth list`).
pub async fn list_pending_registrations(
    AxState(state): AxState<State>,
) -> ApiResult<dto::ListPendingRegistrationsResponse> {
    let registrations = state
        .pending_registrations()
        .iter()
        .map(dto::PendingRegistration::from_state)
        .collect();
    Ok(Json(dto::ListPendingRegistrationsResponse {
        registrations,
    }))
}

/// `POST /api/v1/auth/reject` `{"authId": "<id>"}`: deny the pending
/// registration; the waiting client is told.
pub async fn auth_reject(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::Empty> {
    let req: dto::AuthIdRequest = body(&b)?;
    audit.target(format!("registration:{}", req.auth_id.trim()));
    let id = registration_id(&req.auth_id)?;
    let host = state
        .pending_registration(&id)
        .map(|p| p.hostname)
        .unwrap_or_default();
    state.deny_registration(&id, "the registration was rejected by an administrator")?;
    tracing::info!(%caller, registration = %id, %host, "interactive registration rejected");
    Ok(empty())
}

// ---- policy -----------------------------------------------------------------

/// `GET /api/v1/policy`. In database mode with no policy stored, a 404
/// whose text contains Headscale's `acl policy not found` (Headplane keys its
/// editor on it).
pub async fn get_policy(AxState(state): AxState<State>) -> ApiResult<dto::PolicyResponse> {
    let ps = state.policy_state();
    match ps.text {
        None if state.settings().policy_in_database => Err(ApiError::not_found(
            "acl policy not found: no policy is stored yet (PUT /api/v1/policy sets one)",
        )),
        text => Ok(Json(dto::PolicyResponse {
            policy: text.unwrap_or_default(),
            updated_at: ps.updated_at,
        })),
    }
}

/// A rejected policy, worded as Headscale does (`parsing policy from
/// bytes: ...`; Headplane shows errors that start so).
fn policy_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(format!("parsing policy from bytes: {e}"))
}

/// `PUT /api/v1/policy` `{"policy": "<HuJSON>"}` (policy.mode: database).
pub async fn set_policy(
    AxState(state): AxState<State>,
    caller: Caller,
    audit: Audit,
    b: Body,
) -> ApiResult<dto::PolicyResponse> {
    audit.target("policy");
    let req: dto::PolicyRequest = body(&b)?;
    audit.detail("bytes", req.policy.len());
    if !state.settings().policy_in_database {
        return Err(ApiError::invalid(
            "update is disabled for modes other than 'database': policy.mode is file, edit the policy file instead (it is reloaded on change and on SIGHUP)",
        ));
    }
    match state.set_policy_in_database(&req.policy).await {
        Ok(warnings) => {
            tracing::info!(%caller, bytes = req.policy.len(), warnings = warnings.len(), "policy set");
            audit.detail("warnings", warnings.len());
            for w in warnings {
                tracing::warn!("policy: {w}");
            }
            get_policy(AxState(state)).await
        }
        Err(ironscale_state::PolicySetError::Policy(e)) => Err(policy_error(e)),
        Err(e) => {
            tracing::error!("setting the policy failed: {e}");
            Err(ApiError::internal())
        }
    }
}

/// `POST /api/v1/policy/check` `{"policy": "<HuJSON>"}`: compile against the
/// live tailnet (and run its tests) without installing it.
pub async fn check_policy(AxState(state): AxState<State>, b: Body) -> ApiResult<dto::Empty> {
    let req: dto::PolicyRequest = body(&b)?;
    match state.check_policy(&req.policy, "policy") {
        Ok(_) => Ok(empty()),
        Err(e) => Err(policy_error(e)),
    }
}

// ---- audit log ----------------------------------------------------------------

/// `GET /api/v1/audit?since=<RFC 3339>&limit=<n>` (not a Headscale route;
/// `ironscale audit list`): the newest `limit` entries (default 100, at
/// most 10000) written at or after `since`, newest first.
pub async fn list_audit(
    AxState(state): AxState<State>,
    q: Params,
) -> ApiResult<dto::ListAuditResponse> {
    let q = params(q)?;
    let since = match q.get("since").filter(|s| !s.is_empty()) {
        Some(raw) => dto::parse_ts(raw)
            .map_err(|e| ApiError::invalid(format!("invalid since {raw:?}: {e} (use RFC 3339)")))?,
        None => None,
    };
    let limit = match q.get("limit").filter(|s| !s.is_empty()) {
        Some(raw) => raw.parse::<u32>().map_err(|_| {
            ApiError::invalid(format!(
                "invalid limit {raw:?}: expected a number of entries"
            ))
        })?,
        None => 100,
    };
    if limit > ironscale_state::AUDIT_LIST_MAX {
        return Err(ApiError::invalid(format!(
            "limit {limit} is more than {}",
            ironscale_state::AUDIT_LIST_MAX
        )));
    }
    let entries = state
        .audit_entries(since, limit)
        .await?
        .iter()
        .map(dto::AuditEntry::from_entry)
        .collect();
    Ok(Json(dto::ListAuditResponse { entries }))
}

pub async fn netcheck(AxState(state): AxState<State>) -> ApiResult<dto::NetcheckResponse> {
    Ok(Json(dto::NetcheckResponse::from_views(
        &state.node_networks(),
        &state.derp_regions(),
    )))
}

pub async fn doctor(AxState(state): AxState<State>, q: Params) -> ApiResult<dto::DoctorResponse> {
    let q = params(q)?;
    let only = match q.get("node").filter(|s| !s.is_empty()) {
        Some(raw) => {
            let id = raw.parse::<u64>().map_err(|_| {
                ApiError::invalid(format!("invalid node {raw:?}: expected a node id"))
            })?;
            let id = ironscale_types::NodeId(id);
            if !state.snapshot().nodes.contains_key(&id) {
                return Err(StateError::NodeNotFound(id).into());
            }
            Some(id)
        }
        None => None,
    };
    let url = state.settings().policy_tailnet.control_url.clone();
    Ok(Json(dto::DoctorResponse::from_findings(
        &state.diagnose(only, &url),
    )))
}

/// A node by id or by its given name.
fn node_by_id_or_name(
    state: &State,
    what: &str,
    raw: &str,
) -> Result<ironscale_types::NodeId, ApiError> {
    if let Ok(id) = raw.parse::<u64>() {
        let id = ironscale_types::NodeId(id);
        if state.snapshot().nodes.contains_key(&id) {
            return Ok(id);
        }
    }
    state.node_named(raw).ok_or_else(|| {
        ApiError::invalid(format!(
            "{what} {raw:?} is no node (give an id or a node name)"
        ))
    })
}

pub async fn explain_policy(
    AxState(state): AxState<State>,
    q: Params,
) -> ApiResult<dto::ExplainResponse> {
    let q = params(q)?;
    let get = |k: &str| {
        q.get(k)
            .filter(|s| !s.is_empty())
            .cloned()
            .ok_or_else(|| ApiError::invalid(format!("{k} is required")))
    };
    let src = node_by_id_or_name(&state, "src", &get("src")?)?;
    let dst = node_by_id_or_name(&state, "dst", &get("dst")?)?;
    let raw = get("port")?;
    let port = raw
        .parse::<u16>()
        .map_err(|_| ApiError::invalid(format!("invalid port {raw:?}")))?;
    let e = state.explain_access(src, dst, port)?;
    let (rule, rule_src_ips, rule_dst_ports) = match e.rule {
        Some((i, s, d)) => (Some(i + 1), s, d),
        None => (None, Vec::new(), Vec::new()),
    };
    Ok(Json(dto::ExplainResponse {
        allowed: e.allowed,
        rule,
        rule_src_ips,
        rule_dst_ports,
        why: e.why,
    }))
}
