//! The one table of `/api/v1`: each entry is a method, a path, its handler,
//! its query parameters and its request and response DTOs. [`v1`] builds the
//! router from it and [`openapi`] the OpenAPI 3 document, so the two cannot
//! drift (a route exists iff it is documented; `tests::openapi_*`).
//!
//! Schemas come from the DTOs' `schemars::JsonSchema` derives, which follow
//! their serde attributes (camelCase names, defaults, the `with` encodings
//! declared beside them).

use std::sync::OnceLock;

use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use ironscale_state::State;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::dto;
use crate::handlers as h;

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// `T`'s schema (a `$ref` for named types), with the generator's OpenAPI
/// transforms applied as they are to the definitions.
fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let mut s = g.subschema_for::<T>();
    for t in g.transforms_mut() {
        t.transform(&mut s);
    }
    s
}

/// One operation of `/api/v1`.
pub struct Route {
    /// Lower-case HTTP method, as OpenAPI names it.
    pub method: &'static str,
    /// Relative to `/api/v1`, with `{name}` path parameters (axum's and
    /// OpenAPI's syntax alike).
    pub path: &'static str,
    pub summary: &'static str,
    /// Query parameters (all optional strings).
    pub query: &'static [(&'static str, &'static str)],
    /// The JSON body, if the handler reads one (an empty body is the empty
    /// message, so it is never required).
    pub request: Option<SchemaFn>,
    /// The 200 answer's JSON body.
    pub response: SchemaFn,
    handler: MethodRouter<State>,
}

macro_rules! route {
    ($m:ident $path:literal, $handler:expr, $summary:literal,
     query: [$(($q:literal, $qd:literal)),* $(,)?],
     request: [$($req:ty)?], response: $resp:ty) => {
        Route {
            method: route!(@name $m),
            path: $path,
            summary: $summary,
            query: &[$(($q, $qd)),*],
            request: None$(.or(Some(schema::<$req> as SchemaFn)))?,
            response: schema::<$resp>,
            handler: on(MethodFilter::$m, $handler),
        }
    };
    (@name GET) => { "get" };
    (@name POST) => { "post" };
    (@name PUT) => { "put" };
    (@name DELETE) => { "delete" };
}

/// Every operation of `/api/v1`.
pub fn table() -> Vec<Route> {
    vec![
        route!(GET "/health", h::health, "Database connectivity (503 when the database is unreachable)",
            query: [], request: [], response: dto::HealthResponse),
        route!(GET "/openapi.json", serve_openapi, "This document",
            query: [], request: [], response: serde_json::Value),
        route!(GET "/user", h::list_users, "List users",
            query: [("id", "a user id"), ("name", "a user name"), ("email", "an email address")],
            request: [], response: dto::ListUsersResponse),
        route!(POST "/user", h::create_user, "Create a user",
            query: [], request: [dto::CreateUserRequest], response: dto::UserResponse),
        route!(DELETE "/user/{id}", h::delete_user, "Delete a user (refused while it owns nodes)",
            query: [], request: [], response: dto::Empty),
        route!(POST "/user/{old_id}/rename/{new_name}", h::rename_user, "Rename a user",
            query: [], request: [], response: dto::UserResponse),
        route!(GET "/preauthkey", h::list_preauth_keys, "List pre-auth keys (the secret masked)",
            query: [("user", "a user name or id")], request: [],
            response: dto::ListPreAuthKeysResponse),
        route!(POST "/preauthkey", h::create_preauth_key, "Create a pre-auth key (its secret shown once)",
            query: [], request: [dto::CreatePreAuthKeyRequest], response: dto::PreAuthKeyResponse),
        route!(POST "/preauthkey/expire", h::expire_preauth_key, "Expire a pre-auth key",
            query: [], request: [dto::ExpirePreAuthKeyRequest], response: dto::Empty),
        route!(GET "/apikey", h::list_api_keys, "List API keys (prefixes only)",
            query: [], request: [], response: dto::ListApiKeysResponse),
        route!(POST "/apikey", h::create_api_key, "Create an API key (shown once)",
            query: [], request: [dto::CreateApiKeyRequest], response: dto::CreateApiKeyResponse),
        route!(POST "/apikey/expire", h::expire_api_key, "Expire an API key (by prefix or id)",
            query: [], request: [dto::ExpireApiKeyRequest], response: dto::Empty),
        route!(DELETE "/apikey/", h::delete_api_key, "Delete an API key by id",
            query: [("id", "the API key's id")], request: [], response: dto::Empty),
        route!(DELETE "/apikey/{prefix}", h::delete_api_key, "Delete an API key by prefix",
            query: [("id", "the API key's id (not with a prefix)")], request: [],
            response: dto::Empty),
        route!(GET "/node", h::list_nodes, "List nodes",
            query: [("user", "a user name or id")], request: [], response: dto::ListNodesResponse),
        route!(POST "/node/register", h::register_node, "Complete an interactive registration for a user",
            query: [("user", "the owner: a user name or id"), ("key", "the registration id (end of the login URL)")],
            request: [], response: dto::NodeResponse),
        route!(POST "/node/backfillips", h::backfill_node_ips, "Give every node the addresses it lacks",
            query: [("confirmed", "true to proceed")], request: [],
            response: dto::BackfillNodeIpsResponse),
        route!(GET "/node/{id}", h::get_node, "Get a node",
            query: [], request: [], response: dto::NodeResponse),
        route!(DELETE "/node/{id}", h::delete_node, "Delete a node",
            query: [], request: [], response: dto::Empty),
        route!(POST "/node/{id}/expire", h::expire_node, "Expire a node's key (now or at `expiry`)",
            query: [("expiry", "RFC 3339 instant"), ("disableExpiry", "true to disable expiry (not supported)")],
            request: [dto::ExpireNodeRequest], response: dto::NodeResponse),
        route!(POST "/node/{id}/approve", h::approve_node, "Approve a node held by device approval",
            query: [], request: [], response: dto::NodeResponse),
        route!(POST "/node/{id}/rename/{new_name}", h::rename_node, "Rename a node (its MagicDNS name)",
            query: [], request: [], response: dto::NodeResponse),
        route!(POST "/node/{id}/tags", h::set_tags, "Set a node's tags",
            query: [], request: [dto::SetTagsRequest], response: dto::NodeResponse),
        route!(POST "/node/{id}/approve_routes", h::approve_routes, "Set a node's approved routes",
            query: [], request: [dto::ApproveRoutesRequest], response: dto::NodeResponse),
        route!(POST "/node/{id}/user", h::move_node, "Move a node to another user",
            query: [("user", "the user's id")], request: [dto::MoveNodeRequest],
            response: dto::NodeResponse),
        route!(POST "/auth/register", h::auth_register, "Complete an interactive registration for a user",
            query: [], request: [dto::AuthRegisterRequest], response: dto::NodeResponse),
        route!(POST "/auth/approve", h::auth_approve, "Approve an auth request (a registration needs a user: use /auth/register)",
            query: [], request: [dto::AuthIdRequest], response: dto::Empty),
        route!(POST "/auth/reject", h::auth_reject, "Deny a pending registration",
            query: [], request: [dto::AuthIdRequest], response: dto::Empty),
        route!(GET "/auth/pending", h::list_pending_registrations, "List pending interactive registrations",
            query: [], request: [], response: dto::ListPendingRegistrationsResponse),
        route!(GET "/policy", h::get_policy, "The policy in force",
            query: [], request: [], response: dto::PolicyResponse),
        route!(PUT "/policy", h::set_policy, "Set the policy (policy.mode: database)",
            query: [], request: [dto::PolicyRequest], response: dto::PolicyResponse),
        route!(POST "/policy/check", h::check_policy, "Compile a policy against the tailnet without installing it",
            query: [], request: [dto::PolicyRequest], response: dto::Empty),
        route!(GET "/policy/explain", h::explain_policy, "Why a node may or may not reach another's port: the rule of the destination's packet filter that decides (not a Headscale route)",
            query: [("src", "the source node (id or name)"), ("dst", "the destination node (id or name)"), ("port", "the TCP port")],
            request: [], response: dto::ExplainResponse),
        route!(GET "/audit", h::list_audit, "The audit log, newest first (not a Headscale route)",
            query: [("since", "RFC 3339: entries written at or after it"), ("limit", "at most this many entries (default 100, at most 10000)")],
            request: [], response: dto::ListAuditResponse),
        route!(GET "/netcheck", h::netcheck, "Every node's network as its client reports it (NetInfo), and the DERP regions (not a Headscale route)",
            query: [], request: [], response: dto::NetcheckResponse),
        route!(GET "/doctor", h::doctor, "Findings about the tailnet's nodes, each with its cause and fix (not a Headscale route)",
            query: [("node", "only this node id")], request: [], response: dto::DoctorResponse),
    ]
}

/// The `/api/v1` routes, relative to where they are nested, from [`table`].
pub fn v1() -> Router<State> {
    table()
        .into_iter()
        .fold(Router::new(), |r, route| r.route(route.path, route.handler))
        .fallback(h::not_found)
        .method_not_allowed_fallback(h::method_not_allowed)
}

/// `GET /api/v1/openapi.json`: the document, served beside the table it is
/// built from (so the handlers need not know the table).
async fn serve_openapi() -> axum::Json<&'static Value> {
    axum::Json(openapi())
}

/// The OpenAPI 3.0 document of `/api/v1` (built once).
pub fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build_openapi)
}

fn build_openapi() -> Value {
    let mut g = SchemaSettings::openapi3().into_generator();
    let error = schema::<dto::ErrorBody>(&mut g);
    let mut paths: Map<String, Value> = Map::new();
    for r in table() {
        let mut params: Vec<Value> = path_params(r.path)
            .map(|name| {
                json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
            })
            .collect();
        params.extend(r.query.iter().map(|(name, d)| {
            json!({"name": name, "in": "query", "required": false, "description": d,
                   "schema": {"type": "string"}})
        }));
        let mut op = json!({
            "operationId": operation_id(r.method, r.path),
            "summary": r.summary,
            "responses": {
                "200": {"description": "OK",
                        "content": {"application/json": {"schema": (r.response)(&mut g)}}},
                "default": {"description": "an error (`code` is the gRPC status code)",
                            "content": {"application/json": {"schema": error.clone()}}},
            },
        });
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(req) = r.request {
            op["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": req(&mut g)}},
            });
        }
        let item = paths
            .entry(format!("/api/v1{}", r.path))
            .or_insert_with(|| json!({}));
        item[r.method] = op;
    }
    let schemas: Map<String, Value> = g.take_definitions(true);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ironscale REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Headscale-compatible REST API v1. Ids are decimal strings; timestamps RFC 3339; errors {code, message, details}."
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                "description": "an API key (`ironscale apikeys create`)"}},
        },
    })
}

/// The `{name}` segments of `path`.
pub fn path_params(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}

fn operation_id(method: &str, path: &str) -> String {
    let mut id = method.to_string();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let seg = seg.trim_start_matches('{').trim_end_matches('}');
        id.push('_');
        id.push_str(&seg.replace('.', "_"));
    }
    if path.ends_with('/') {
        id.push_str("_by_id");
    }
    id
}
