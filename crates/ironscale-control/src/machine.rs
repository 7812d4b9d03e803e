//! Routes served inside a Noise connection (HTTP/2), bound to the connection's
//! machine key.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Extension, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use ironscale_keys::MachinePublic;
use ironscale_mapper::{build_view, diff, TAGGED_DEVICES_USER_ID};
use ironscale_state::RegisterResult;
use ironscale_wire as wire;
use rand::Rng;
use tokio::sync::mpsc;

use crate::frames::{encode_frame, FrameCodec};
use crate::Control;

const MAX_BODY: usize = 1 << 20;

pub fn router(ctl: Arc<Control>, machine: MachinePublic) -> Router {
    Router::new()
        .route("/machine/register", post(register))
        .route("/machine/map", post(map))
        .route("/machine/update-health", post(update_health))
        .route(
            "/machine/ssh/action/{src}/to/{dst}",
            get(crate::ssh::action),
        )
        .route("/machine/ssh/wait/{id}", get(crate::ssh::wait))
        .route("/machine/{*rest}", any(not_implemented))
        .layer(Extension(machine))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctl)
}

async fn not_implemented() -> Response {
    (StatusCode::NOT_IMPLEMENTED, "not implemented\n").into_response()
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &str,
    body: &Bytes,
) -> Result<T, (StatusCode, String)> {
    serde_json::from_slice(body).map_err(|e| {
        tracing::info!("malformed {what}: {e}");
        (StatusCode::BAD_REQUEST, format!("malformed {what}: {e}\n"))
    })
}

async fn register(
    AxState(ctl): AxState<Arc<Control>>,
    Extension(machine): Extension<MachinePublic>,
    body: Bytes,
) -> Response {
    let req: wire::RegisterRequest = match parse("RegisterRequest", &body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    if req.version < wire::MIN_CAPVER {
        return (StatusCode::BAD_REQUEST, crate::CLIENT_TOO_OLD).into_response();
    }
    let out = if req.followup.is_empty() {
        ctl.state.register(machine, &req).await
    } else {
        crate::login::followup(&ctl, machine, &req).await
    };
    Json(register_response(&ctl, out)).into_response()
}

/// The wire answer to a registration's result.
fn register_response(ctl: &Control, out: RegisterResult) -> wire::RegisterResponse {
    let mut r = wire::RegisterResponse::empty();
    match out {
        RegisterResult::Refused(why) => return wire::RegisterResponse::error(why.to_string()),
        RegisterResult::KeyExpired { .. } => r.node_key_expired = true,
        RegisterResult::NeedsLogin(p) => {
            r.auth_url = format!("{}/register/{}", ctl.server_url, p.id);
        }
        RegisterResult::Authorized {
            owner,
            key_expired,
            machine_authorized,
            ..
        } => {
            r.machine_authorized = machine_authorized;
            r.node_key_expired = key_expired;
            match owner {
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
                    // A tagged node: Tailscale's "Tagged Devices" pseudo-user.
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
        }
    }
    r
}

async fn update_health(body: Bytes) -> Response {
    if let Ok(h) = serde_json::from_slice::<wire::HealthChangeRequest>(&body) {
        tracing::debug!(subsys = %h.subsys, error = %h.error, "client health change");
    }
    StatusCode::OK.into_response()
}

async fn map(
    AxState(ctl): AxState<Arc<Control>>,
    Extension(machine): Extension<MachinePublic>,
    body: Bytes,
) -> Response {
    let req: wire::MapRequest = match parse("MapRequest", &body) {
        Ok(r) => r,
        Err(resp) => return resp.into_response(),
    };
    let node = match ctl.state.apply_map_request(&machine, &req).await {
        Ok(Some(n)) => n,
        Ok(None) => return (StatusCode::NOT_FOUND, "node not found\n").into_response(),
        Err(e) => {
            tracing::error!("map request failed: {e}");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response();
        }
    };
    if node.is_expired(ctl.state.now()) && req.stream {
        // The first frame still goes out: the client learns its KeyExpiry from it.
        tracing::debug!(node = node.id.0, "map stream for an expired node");
    }
    let codec = FrameCodec::for_request(&req.compress);
    if !req.stream {
        if req.omit_peers {
            // Lite update: the client only reads the status.
            tracing::debug!(
                node = node.id.0,
                endpoints = ?req.endpoints,
                home_derp = node.home_derp,
                "lite map update"
            );
            return StatusCode::OK.into_response();
        }
        let t = ctl.state.snapshot();
        let now = ctl.state.now();
        let Some(view) = build_view(&t, node.id, req.version, now) else {
            return (StatusCode::NOT_FOUND, "node not found\n").into_response();
        };
        return match encode_frame(&view.full_response(now), codec) {
            Ok(f) => Response::new(Body::from(f)),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        };
    }
    tracing::info!(
        node = node.id.0,
        name = %node.given_name,
        capver = req.version,
        compress = %req.compress,
        endpoints = req.endpoints.as_ref().map_or(0, Vec::len),
        "map stream opened"
    );
    let slot = match ctl.state.connect(node.id).await {
        Ok(s) => s,
        Err(_) => return (StatusCode::NOT_FOUND, "node not found\n").into_response(),
    };
    // Small bounded queue: a slow client backs up into the session's coalescing
    // pending set, never into unbounded memory.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    let state = ctl.state.clone();
    let timing = Timing {
        keepalive: ctl.keepalive,
        min_update_interval: ctl.min_update_interval,
    };
    let capver = req.version;
    let ctl2 = ctl.clone();
    tokio::spawn(async move {
        let id = slot.node_id;
        let result = stream_session(&ctl2, &slot, capver, codec, timing, tx).await;
        if let Err(why) = result {
            tracing::info!(node = id.0, "map stream closed: {why}");
        }
        state.disconnect(&slot).await;
    });
    let body = Body::from_stream(tokio_stream_from(rx).map(Ok::<Bytes, Infallible>));
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/octet-stream"),
    );
    resp
}

fn tokio_stream_from(mut rx: mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A map stream's clocks.
#[derive(Clone, Copy)]
struct Timing {
    /// Keep-alive interval (jitter is added).
    keepalive: Duration,
    /// Shortest gap between two updates; changes within it are merged.
    min_update_interval: Duration,
}

async fn stream_session(
    ctl: &Control,
    slot: &Arc<ironscale_state::SessionSlot>,
    capver: u32,
    codec: FrameCodec,
    timing: Timing,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), &'static str> {
    let state = &ctl.state;
    let keepalive = timing.keepalive;
    let id = slot.node_id;
    let now = state.now();
    let t = state.snapshot();
    let mut view = build_view(&t, id, capver, now).ok_or("node gone")?;
    // Anything published before this point is already in `view`.
    slot.take();
    send(&tx, &view.full_response(now), codec).await?;
    tracing::debug!(node = id.0, peers = view.peers.len(), "sent the full map");
    let ka_frame = encode_frame(&wire::MapResponse::keep_alive(), codec).map_err(|_| "encode")?;
    let jitter = || Duration::from_millis(rand::rng().random_range(0..9000));
    let mut next_ka = tokio::time::Instant::now() + keepalive + jitter();
    // When the last update went out: the next waits until `min_update_interval`
    // has passed, gathering whatever else changes meanwhile (leading edge: the
    // first change after a quiet spell is not delayed).
    let mut last_update = tokio::time::Instant::now();
    // Health probes (routers only): the next one, and the one in flight.
    let probing = !ctl.probe_interval.is_zero();
    let mut next_probe = tokio::time::Instant::now() + ctl.probe_interval;
    let mut in_flight: Option<(
        String,
        tokio::time::Instant,
        tokio::sync::oneshot::Receiver<()>,
    )> = None;
    let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
    loop {
        let probe_deadline = in_flight.as_ref().map_or_else(far, |p| p.1);
        tokio::select! {
            _ = tokio::time::sleep_until(next_probe), if probing && in_flight.is_none() => {
                next_probe = tokio::time::Instant::now() + ctl.probe_interval;
                if state.is_router(id) {
                    let (pid, rx) = ctl.pings.start();
                    let frame = wire::MapResponse::ping(crate::probe::url(ctl, &pid));
                    let f = encode_frame(&frame, codec).map_err(|_| "encode failed")?;
                    // Never wait on a client that does not read: a full queue
                    // means no answer, and the deadline below says so.
                    if let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(f) {
                        return Err("client went away");
                    }
                    in_flight = Some((pid, tokio::time::Instant::now() + ctl.probe_timeout, rx));
                }
            }
            answered = async {
                match in_flight.as_mut() {
                    Some((_, _, rx)) => rx.await.is_ok(),
                    None => std::future::pending().await,
                }
            }, if in_flight.is_some() => {
                in_flight = None;
                if answered {
                    state.set_route_health(id, true).await;
                }
            }
            _ = tokio::time::sleep_until(probe_deadline), if in_flight.is_some() => {
                if let Some((pid, _, _)) = in_flight.take() {
                    ctl.pings.forget(&pid);
                }
                state.set_route_health(id, false).await;
            }
            _ = slot.changed() => {
                if slot.is_closed() {
                    return Err("closed by the server (replaced or deleted)");
                }
                tokio::time::sleep_until(last_update + timing.min_update_interval).await;
                if slot.is_closed() {
                    return Err("closed by the server (replaced or deleted)");
                }
                let pending = slot.take();
                let t = state.snapshot();
                let now = state.now();
                let delta = if pending.full {
                    let next = build_view(&t, id, capver, now).ok_or("node gone")?;
                    let d = diff(&view, &next);
                    view = next;
                    d
                } else {
                    if !t.nodes.contains_key(&id) {
                        return Err("node gone");
                    }
                    view.apply_node_changes(&t, &pending.nodes, now)
                };
                if let Some(d) = delta {
                    tracing::debug!(
                        node = id.0,
                        changed = d.peers_changed.as_ref().map_or(0, Vec::len),
                        patched = d.peers_changed_patch.as_ref().map_or(0, Vec::len),
                        removed = d.peers_removed.as_ref().map_or(0, Vec::len),
                        self_changed = d.node.is_some(),
                        filter = d.packet_filter.is_some(),
                        "sent a delta"
                    );
                    send(&tx, &d, codec).await?;
                    last_update = tokio::time::Instant::now();
                    next_ka = last_update + keepalive + jitter();
                }
            }
            _ = tokio::time::sleep_until(next_ka) => {
                tx.send(ka_frame.clone()).await.map_err(|_| "client went away")?;
                next_ka = tokio::time::Instant::now() + keepalive + jitter();
            }
            _ = tx.closed() => return Err("client went away"),
        }
    }
}

async fn send(
    tx: &mpsc::Sender<Bytes>,
    r: &wire::MapResponse,
    codec: FrameCodec,
) -> Result<(), &'static str> {
    let f = encode_frame(r, codec).map_err(|_| "encode failed")?;
    tx.send(f).await.map_err(|_| "client went away")
}
