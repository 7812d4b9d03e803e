//! Headscale-compatible REST API v1 (`/api/v1/...`) on axum.
//!
//! The same [`Router`] is served on the local unix socket without
//! authentication (like Headscale's CLI socket; `ironscale_http::serve_unix`) and, with
//! [`Auth::ApiKey`], over TCP. Bodies follow Headscale's v1 JSON (see
//! [`dto`]); errors are `{"code", "message", "details": []}` with the HTTP
//! statuses Headscale answers (400 for a malformed id, 404 for an unknown
//! user/node/key, 409 for a duplicate user).
//!
//! Request bodies are never logged: they can carry pre-auth keys.

pub mod dto;
mod error;
#[cfg(test)]
mod golden;
mod handlers;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use ironscale_state::State;

pub use error::ApiError;

/// Checks an API key presented as `Authorization: Bearer <key>`.
/// Implementations must compare in constant time and never log the key.
pub trait ApiKeyVerifier: Send + Sync + 'static {
    fn verify<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// How callers of the router authenticate.
#[derive(Clone)]
pub enum Auth {
    /// Trusted transport (the local unix socket): no credentials.
    None,
    /// Every request needs `Authorization: Bearer <API key>` accepted by the verifier.
    ApiKey(Arc<dyn ApiKeyVerifier>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("Auth::None"),
            Auth::ApiKey(_) => f.write_str("Auth::ApiKey(..)"),
        }
    }
}

/// The `/api/v1` router without authentication (for the unix socket).
pub fn router(state: State) -> Router {
    router_with_auth(state, Auth::None)
}

/// The `/api/v1` router behind `auth`.
pub fn router_with_auth(state: State, auth: Auth) -> Router {
    use handlers as h;
    let api = Router::new()
        .route("/api/v1/health", get(h::health))
        .route("/api/v1/user", get(h::list_users).post(h::create_user))
        .route("/api/v1/user/{id}", axum::routing::delete(h::delete_user))
        .route(
            "/api/v1/user/{old_id}/rename/{new_name}",
            post(h::rename_user),
        )
        .route(
            "/api/v1/preauthkey",
            get(h::list_preauth_keys).post(h::create_preauth_key),
        )
        .route("/api/v1/preauthkey/expire", post(h::expire_preauth_key))
        .route("/api/v1/node", get(h::list_nodes))
        .route("/api/v1/node/{id}", get(h::get_node).delete(h::delete_node))
        .route("/api/v1/node/{id}/expire", post(h::expire_node))
        .route("/api/v1/node/{id}/rename/{new_name}", post(h::rename_node))
        .route("/api/v1/node/{id}/tags", post(h::set_tags))
        .route("/api/v1/node/{id}/approve_routes", post(h::approve_routes))
        .route("/api/v1/policy", get(h::get_policy).put(h::set_policy))
        .route("/api/v1/policy/check", post(h::check_policy))
        .fallback(h::not_found)
        .method_not_allowed_fallback(h::method_not_allowed)
        .with_state(state);
    match auth {
        Auth::None => api,
        Auth::ApiKey(v) => api.layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let v = v.clone();
                async move { require_api_key(v, req, next).await }
            },
        )),
    }
}

async fn require_api_key(v: Arc<dyn ApiKeyVerifier>, req: Request, next: Next) -> Response {
    let key = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let ok = match key {
        Some(k) if !k.is_empty() => v.verify(k).await,
        _ => false,
    };
    if ok {
        next.run(req).await
    } else {
        tracing::info!(path = %req.uri().path(), "API request refused: missing or invalid API key");
        ApiError::unauthenticated().into_response()
    }
}
