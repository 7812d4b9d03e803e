//! Headscale-compatible REST API v1 (`/api/v1/...`) on axum.
//!
//! Routers are versioned: `/api/v1` is a nested router, and the auth layer
//! ([`authenticate`]) sits around everything mounted beside it. The layer
//! hands each handler the [`Caller`] (an extractor); every mutating handler
//! logs who changed what, and the audit layer (`audit.rs`) records every
//! mutating request, accepted or refused, in the audit log
//! (`GET /api/v1/audit`).
//!
//! The same [`Router`] is served on the local unix socket without
//! authentication (like Headscale's CLI socket; `ironscale_http::serve_unix`) and, with
//! [`Auth::ApiKey`], over TCP. Bodies follow Headscale's v1 JSON (see
//! [`dto`]); errors are `{"code", "message", "details": []}` with the HTTP
//! statuses Headscale answers (400 for a malformed id, 404 for an unknown
//! user/node/key, 409 for a duplicate user).
//!
//! Request bodies are never logged: they can carry pre-auth keys.
//!
//! With the `client` feature, [`client::Client`] is the typed client of
//! these routes (the CLI's), speaking the same [`dto`] types.

mod audit;
#[cfg(feature = "client")]
pub mod client;
pub mod dto;
mod error;
#[cfg(test)]
mod golden;
mod handlers;
pub mod routes;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::request::Parts;
use ironscale_state::State;

pub use audit::Audit;
pub use error::ApiError;
use routes::v1;

/// Checks an API key presented as `Authorization: Bearer <key>`.
/// Implementations must compare in constant time and never log the key.
pub trait ApiKeyVerifier: Send + Sync + 'static {
    /// The caller's identity if `key` is accepted: the key's public prefix
    /// (or id), never the secret. `None` refuses the request.
    fn verify<'a>(
        &'a self,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>>;
}

/// The state's API keys (`ironscale apikeys create`) as the verifier of
/// [`Auth::ApiKey`].
#[derive(Clone)]
pub struct StateApiKeys(State);

impl StateApiKeys {
    pub fn new(state: State) -> StateApiKeys {
        StateApiKeys(state)
    }
}

impl ApiKeyVerifier for StateApiKeys {
    fn verify<'a>(
        &'a self,
        key: &'a str,
    ) -> Pin<Box<dyn Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(self.0.verify_api_key(key))
    }
}

/// Slows down sources that keep presenting bad keys: from the third failure
/// in a row, each further refusal is answered 250 ms later, doubling up to
/// 8 s; a request with a valid key is never delayed, and a success or ten
/// quiet minutes forget the source.
#[derive(Default)]
struct FailureLimiter {
    by_source:
        std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, (u32, std::time::Instant)>>,
}

impl FailureLimiter {
    const FREE: u32 = 2;
    const FORGET: std::time::Duration = std::time::Duration::from_secs(600);
    const MAX_SOURCES: usize = 10_000;

    /// IPv6 sources count by their /64 (one host may hold all of it).
    fn source(ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                std::net::IpAddr::V6(o.into())
            }
            v4 => v4,
        }
    }

    fn delay(&self, ip: std::net::IpAddr) -> std::time::Duration {
        let ip = Self::source(ip);
        let m = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&ip) {
            Some((n, at)) if *n > Self::FREE && at.elapsed() < Self::FORGET => {
                let shift = (*n - Self::FREE - 1).min(5);
                std::time::Duration::from_millis(250u64 << shift)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    fn record(&self, ip: std::net::IpAddr, ok: bool) {
        let ip = Self::source(ip);
        let mut m = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        if ok {
            m.remove(&ip);
            return;
        }
        if m.len() >= Self::MAX_SOURCES && !m.contains_key(&ip) {
            m.retain(|_, (_, at)| at.elapsed() < Self::FORGET);
            if m.len() >= Self::MAX_SOURCES {
                // Still full: forget the least recent half rather than grow.
                let mut ages: Vec<std::time::Instant> = m.values().map(|(_, at)| *at).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                m.retain(|_, (_, at)| *at > cut);
            }
        }
        let e = m.entry(ip).or_insert((0, std::time::Instant::now()));
        if e.1.elapsed() >= Self::FORGET {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = std::time::Instant::now();
    }
}

/// How callers of the router authenticate.
#[derive(Clone)]
pub enum Auth {
    /// Trusted transport (the local unix socket): no credentials; handlers
    /// see [`Caller::LocalSocket`].
    None,
    /// Every request needs `Authorization: Bearer <API key>` accepted by the
    /// verifier; handlers see [`Caller::ApiKey`] with the identity it returned.
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

/// Who is calling, as the auth layer established it. The layer puts it in
/// the request's extensions; handlers take it as an extractor (a request that
/// reached a handler without one is a 500: the router has no auth layer).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    /// The local unix socket (trusted transport, no credentials).
    LocalSocket,
    /// A caller holding an API key; `prefix` is the key's public prefix or
    /// id, never its secret.
    ApiKey { prefix: String },
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::LocalSocket => f.write_str("local-socket"),
            Caller::ApiKey { prefix } => write!(f, "api-key:{prefix}"),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            tracing::error!(path = %parts.uri.path(), "API request without a caller: the router has no auth layer");
            ApiError::internal()
        })
    }
}

/// The API without authentication (for the unix socket): every caller is
/// [`Caller::LocalSocket`].
pub fn router(state: State) -> Router {
    router_with_auth(state, Auth::None)
}

/// The API behind `auth`: `/api/v1` nested under the root, so another
/// version (`/api/v2`) or a web UI can be mounted beside it, behind the same
/// layer.
pub fn router_with_auth(state: State, auth: Auth) -> Router {
    let app = Router::new()
        .nest("/api/v1", audited(v1(), state))
        .fallback(handlers::not_found);
    authenticate(app, auth)
}

/// The API for the network listener (the `server_url` port): `/api/v1`
/// behind `Authorization: Bearer <API key>` checked against the state's keys
/// ([`StateApiKeys`]), with no fallback of its own, so that it merges into
/// the control listener's router.
pub fn network_router(state: State) -> Router {
    let keys: Arc<dyn ApiKeyVerifier> = Arc::new(StateApiKeys::new(state.clone()));
    // On the routes only: a path that is no route stays a plain 404 for the
    // listener (Headplane probes `/swagger/v1/openapiv2.json` and reads a
    // 404 as "Headscale 0.28"), not a 401.
    network_router_with(state, keys, Arc::new(FailureLimiter::default()))
}

fn network_router_with(
    state: State,
    keys: Arc<dyn ApiKeyVerifier>,
    limiter: Arc<FailureLimiter>,
) -> Router {
    require_key_on(
        Router::new().nest("/api/v1", audited(v1(), state)),
        keys,
        limiter,
        true,
    )
}

/// Puts `routes` (and their fallback) behind `auth`: a refused request never
/// reaches a handler, an accepted one carries its [`Caller`].
pub fn authenticate(routes: Router, auth: Auth) -> Router {
    match auth {
        Auth::None => routes.layer(axum::middleware::from_fn(
            |mut req: Request, next: Next| async move {
                req.extensions_mut().insert(Caller::LocalSocket);
                next.run(req).await
            },
        )),
        Auth::ApiKey(v) => require_key_on(routes, v, Arc::new(FailureLimiter::default()), false),
    }
}

/// `routes` behind API keys checked by `v`: every request (`routes_only`
/// false, the fallback included) or only those that match a route.
fn require_key_on(
    routes: Router,
    v: Arc<dyn ApiKeyVerifier>,
    limiter: Arc<FailureLimiter>,
    routes_only: bool,
) -> Router {
    let layer = axum::middleware::from_fn(move |req: Request, next: Next| {
        let (v, limiter) = (v.clone(), limiter.clone());
        async move { require_api_key(v, &limiter, req, next).await }
    });
    if routes_only {
        routes.route_layer(layer)
    } else {
        routes.layer(layer)
    }
}

/// `routes` with their state, each mutating request recorded in the audit
/// log (see `audit.rs`; inside the auth layer, so the caller is known).
fn audited(routes: Router<State>, state: State) -> Router {
    routes
        .with_state(state.clone())
        .layer(axum::middleware::from_fn_with_state(state, audit::record))
}

async fn require_api_key(
    v: Arc<dyn ApiKeyVerifier>,
    limiter: &FailureLimiter,
    mut req: Request,
    next: Next,
) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let key = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim);
    let identity = match key {
        Some(k) if !k.is_empty() => v.verify(k).await,
        _ => None,
    };
    // Only refusals wait: a valid key is never slowed down by failures from
    // the same address (a NAT, a stale key in another tool).
    if let Some(ip) = source {
        if identity.is_none() {
            let wait = limiter.delay(ip);
            limiter.record(ip, false);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
        } else {
            limiter.record(ip, true);
        }
    }
    match identity {
        Some(prefix) => {
            req.extensions_mut().insert(Caller::ApiKey { prefix });
            next.run(req).await
        }
        None => {
            let path = ironscale_state::redact_secrets(req.uri().path());
            tracing::info!(%path, "API request refused: missing or invalid API key");
            ApiError::unauthenticated().into_response()
        }
    }
}
