//! The HTTP surface of a DERP server (tailscale-protocol.md §5.3/§5.4).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use http::{header, HeaderValue, Method, StatusCode};
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::server::DerpServer;

/// Routes of a DERP server, ready to be merged into another router or served
/// with `ironscale_http::serve_tls` / `serve_plain`:
///
/// * `/derp` — `Upgrade: DERP` → 101 and the DERP protocol; otherwise 426.
/// * `/derp/probe`, `/derp/latency-check` — GET/HEAD → 200 (CORS `*`), else 405.
/// * `/generate_204` — 204, answering `X-Tailscale-Challenge`.
///
/// The DERP upgrade needs HTTP/1.1 served with upgrades enabled (hyper-util's
/// `serve_connection_with_upgrades`, which `axum::serve` also uses). If the
/// request carries `ConnectInfo<SocketAddr>`, the address is reported to mesh
/// watchers.
pub fn router(server: Arc<DerpServer>) -> Router {
    Router::new()
        .route("/derp", any(derp_upgrade))
        .route("/derp/probe", any(probe))
        .route("/derp/latency-check", any(probe))
        .route("/generate_204", any(generate_204))
        .with_state(server)
}

fn plain(status: StatusCode, body: &'static str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

async fn derp_upgrade(State(server): State<Arc<DerpServer>>, mut req: Request) -> Response {
    let is_derp = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim().eq_ignore_ascii_case("derp")));
    if !is_derp {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires connection upgrade",
        );
    }
    // Only HTTP/1.1 connections served with upgrades carry this extension.
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return plain(
            StatusCode::UPGRADE_REQUIRED,
            "DERP requires an HTTP/1.1 connection upgrade",
        );
    };
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // `Derp-Fast-Start: 1` asks for no HTTP response at all. Clients only send it
    // after seeing a meta-certificate in the TLS chain, which this server never
    // presents, so the header does not occur here.
    let server_key_hex = server.public_key().hex();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => server.serve_conn(TokioIo::new(upgraded), remote).await,
            Err(e) => debug!(error = %e, remote = ?remote, "DERP upgrade failed"),
        }
    });
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("DERP"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert("Derp-Version", HeaderValue::from_static("2"));
    if let Ok(v) = HeaderValue::from_str(&server_key_hex) {
        h.insert("Derp-Public-Key", v);
    }
    r
}

async fn probe(method: Method) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "bogus probe method");
    }
    let mut r = Response::new(Body::empty());
    r.headers_mut().insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    r
}

fn valid_challenge(c: &str) -> bool {
    !c.is_empty()
        && c.len() <= 64
        && c.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

async fn generate_204(req: Request) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate, no-transform, max-age=0"),
    );
    let challenge = req
        .headers()
        .get("X-Tailscale-Challenge")
        .and_then(|v| v.to_str().ok());
    if let Some(c) = challenge.filter(|c| valid_challenge(c)) {
        if let Ok(v) = HeaderValue::from_str(&format!("response {c}")) {
            h.insert("X-Tailscale-Response", v);
        }
    }
    r
}
