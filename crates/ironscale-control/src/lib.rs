//! The control edge. Plain HTTP(S) routes (`/key`, `/ts2021`, `/health`) and,
//! inside each Noise connection, an HTTP/2 server for the `/machine/*` routes.
//!
//! Each Noise connection is bound to the client's machine key, learned from the
//! handshake; every request on it is checked against that key (Tailscale SSH
//! check mode's `/machine/ssh/*` long polls too: only the destination node's
//! machine may ask). A malformed
//! handshake, record or frame ends that one connection only.

mod frames;
mod login;
mod machine;
mod noise_stream;
mod probe;
mod ssh;
mod ts2021;
mod verify;

use std::sync::Arc;

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use ironscale_keys::PrivateKey;
use ironscale_state::State;
use ironscale_wire as wire;

pub use frames::{encode_frame, FrameCodec};
pub use noise_stream::{accept as noise_accept, NoiseStream};

/// Default of [`Control::min_update_interval`] (`tuning.batch_change_delay`).
pub const DEFAULT_MIN_UPDATE_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Shared by every control connection.
pub struct Control {
    pub state: State,
    /// The server's Noise static key (`noise.private_key_path`).
    pub noise_key: PrivateKey,
    /// Keep-alive interval of map streams (jitter is added).
    pub keepalive: std::time::Duration,
    /// Shortest gap between two updates to one map stream
    /// (`tuning.batch_change_delay`); changes within it are merged.
    pub min_update_interval: std::time::Duration,
    /// The URL clients reach this server at (`server_url`): interactive
    /// logins are sent to `<server_url>/register/<id>`.
    pub server_url: String,
    /// `node.routes.ha.probe_interval` (zero: no probing).
    pub probe_interval: std::time::Duration,
    /// `node.routes.ha.probe_timeout`.
    pub probe_timeout: std::time::Duration,
    /// Health probes sent and not yet answered, by the id in their URL.
    pub(crate) pings: probe::Pings,
    /// See [`ControlOptions::register_page`].
    pub register_page: bool,
    /// See [`ControlOptions::ssh_check_login`].
    pub ssh_check_login: bool,
}

/// What [`Control::with_options`] takes besides the state and key.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// `tuning.batch_change_delay`.
    pub min_update_interval: std::time::Duration,
    /// `server_url`.
    pub server_url: String,
    /// `node.routes.ha.probe_interval` (10s; zero: no probing).
    pub probe_interval: std::time::Duration,
    /// `node.routes.ha.probe_timeout` (5s).
    pub probe_timeout: std::time::Duration,
    /// Serve the administrator-approval page at `/register/<id>` (on unless
    /// an identity provider's login pages take that path: OIDC).
    pub register_page: bool,
    /// An identity provider serves `<server_url>/ssh/check/<id>`, where the
    /// owner of a device logs in to pass a Tailscale SSH check (OIDC). Off,
    /// SSH check rules are answered with a rejection that says so.
    pub ssh_check_login: bool,
}

impl Default for ControlOptions {
    fn default() -> Self {
        ControlOptions {
            min_update_interval: DEFAULT_MIN_UPDATE_INTERVAL,
            server_url: String::new(),
            probe_interval: std::time::Duration::from_secs(10),
            probe_timeout: std::time::Duration::from_secs(5),
            register_page: true,
            ssh_check_login: false,
        }
    }
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("noise_key", &self.noise_key.machine_public())
            .finish()
    }
}

impl Control {
    pub fn new(state: State, noise_key: PrivateKey) -> Arc<Self> {
        Self::with_update_interval(state, noise_key, DEFAULT_MIN_UPDATE_INTERVAL)
    }

    /// [`Control::new`] with `tuning.batch_change_delay`.
    pub fn with_update_interval(
        state: State,
        noise_key: PrivateKey,
        min_update_interval: std::time::Duration,
    ) -> Arc<Self> {
        Self::with_options(
            state,
            noise_key,
            ControlOptions {
                min_update_interval,
                ..Default::default()
            },
        )
    }

    pub fn with_options(state: State, noise_key: PrivateKey, o: ControlOptions) -> Arc<Self> {
        Arc::new(Control {
            state,
            noise_key,
            keepalive: std::time::Duration::from_secs(50),
            min_update_interval: o.min_update_interval,
            server_url: o.server_url.trim_end_matches('/').to_string(),
            probe_interval: o.probe_interval,
            probe_timeout: o.probe_timeout,
            pings: Default::default(),
            register_page: o.register_page,
            ssh_check_login: o.ssh_check_login,
        })
    }
}

/// The answer to a client below [`wire::MIN_CAPVER`], the same on `/key`,
/// `/ts2021` and `/machine/register`.
pub(crate) const CLIENT_TOO_OLD: &str =
    "unsupported client version: this server needs Tailscale 1.74 or newer\n";

#[derive(serde::Deserialize)]
struct KeyQuery {
    v: Option<String>,
}

async fn key_handler(AxState(ctl): AxState<Arc<Control>>, Query(q): Query<KeyQuery>) -> Response {
    let Some(v) = q.v.and_then(|v| v.parse::<u32>().ok()) else {
        return (
            StatusCode::BAD_REQUEST,
            "missing or invalid capability version ?v=N\n",
        )
            .into_response();
    };
    if v < wire::MIN_CAPVER {
        return (StatusCode::BAD_REQUEST, CLIENT_TOO_OLD).into_response();
    }
    tracing::debug!(capver = v, "GET /key");
    Json(wire::OverTlsPublicKeyResponse {
        legacy_public_key: Default::default(),
        public_key: ctl.noise_key.machine_public(),
    })
    .into_response()
}

/// The Headscale version whose API and behaviour ironscale follows, as
/// `/version` reports it: tools that read `/version` (Headplane, scripts)
/// take `version` as the Headscale version to talk to, so it is Headscale's
/// (0.28: the `hskey-api-` keys, `/api/v1/node/{id}/user`, `/auth/register`),
/// and ironscale's own version is `ironscale`.
pub const HEADSCALE_COMPATIBLE_VERSION: &str = "v0.28.0";

/// `/health` and `/version`, for every listener (control, metrics, the
/// embedded DERP's own TLS port, the admin socket). `/health` is public: a
/// generic `{"status": "pass"|"fail"}`, the details only in the server log.
pub fn service_router(state: State) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/version", get(version))
        .with_state(state)
}

async fn version() -> Response {
    Json(serde_json::json!({
        "version": HEADSCALE_COMPATIBLE_VERSION,
        "ironscale": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn health(AxState(state): AxState<State>) -> Response {
    match state.health().await {
        Ok(()) => Json(serde_json::json!({ "status": "pass" })).into_response(),
        // The route is public: the details (paths, hosts, driver messages)
        // stay in the server log (State::health logs them).
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "fail" })),
        )
            .into_response(),
    }
}

/// The public router of the control listener.
pub fn router(ctl: Arc<Control>) -> Router {
    let mut r = Router::new()
        .route("/key", get(key_handler))
        .route("/ts2021", any(ts2021::upgrade))
        .route(
            "/verify",
            axum::routing::post(verify::verify).layer(axum::extract::DefaultBodyLimit::max(
                verify::MAX_VERIFY_BODY,
            )),
        );
    if ctl.register_page {
        r = r.route("/register/{id}", get(login::page));
    }
    r.route(
        "/machine/ping-response",
        get(probe::answered).head(probe::answered),
    )
    .with_state(ctl.clone())
    .merge(service_router(ctl.state.clone()))
}
