//! `POST /ts2021`: HTTP/1.1 upgrade to the Noise transport, then HTTP/2 with
//! prior knowledge inside it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State as AxState};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;

use crate::{machine, Control};

pub const UPGRADE_PROTO: &str = "tailscale-control-protocol";
const HANDSHAKE_HEADER: &str = "x-tailscale-handshake";

fn bad(msg: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, msg).into_response()
}

/// Send the handshake response and the early payload (in one write) and wrap
/// the stream.
async fn start_transport<S>(
    mut io: S,
    mut response: Vec<u8>,
    transport: ironscale_noise::Transport,
) -> Result<crate::NoiseStream<S>, ironscale_noise::NoiseError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let (mut enc, dec) = transport.split();
    let challenge = ironscale_keys::PrivateKey::generate().challenge_public();
    enc.seal(&ironscale_noise::early_payload(&challenge), &mut response)?;
    io.write_all(&response).await?;
    io.flush().await?;
    Ok(crate::NoiseStream::new(io, enc, dec))
}

pub async fn upgrade(AxState(ctl): AxState<Arc<Control>>, mut req: Request) -> Response {
    let upgrade = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if upgrade.is_empty() {
        tracing::warn!(
            "/ts2021 request without an Upgrade header: a reverse proxy in front of ironscale must pass \
             Upgrade/Connection headers"
        );
        return bad("missing next protocol\n");
    }
    if upgrade.eq_ignore_ascii_case("websocket") {
        return (
            StatusCode::NOT_IMPLEMENTED,
            "the WebSocket control transport is not supported\n",
        )
            .into_response();
    }
    if !upgrade.eq_ignore_ascii_case(UPGRADE_PROTO) {
        return bad("unknown next protocol\n");
    }
    let Some(hs) = req
        .headers()
        .get(HANDSHAKE_HEADER)
        .and_then(|v| v.to_str().ok())
    else {
        return bad("missing X-Tailscale-Handshake header\n");
    };
    let Ok(init_bytes) = base64::engine::general_purpose::STANDARD.decode(hs.trim()) else {
        return bad("X-Tailscale-Handshake is not valid base64\n");
    };
    let init = match ironscale_noise::parse_initiation(&init_bytes) {
        Ok(i) => i,
        Err(e) => {
            tracing::debug!("bad Noise initiation: {e}");
            return bad("invalid Noise handshake initiation\n");
        }
    };
    if u32::from(init.version) < ironscale_wire::MIN_CAPVER {
        tracing::info!(version = init.version, "refusing too old client");
        return bad(crate::CLIENT_TOO_OLD);
    }
    // Finish the handshake before agreeing to upgrade: a forged or corrupt
    // initiation gets a plain 400, never a 101.
    let (response, machine_key, transport) = match ironscale_noise::respond(&ctl.noise_key, &init) {
        Ok(x) => x,
        Err(e) => {
            tracing::info!("Noise handshake failed: {e}");
            return bad("Noise handshake failed\n");
        }
    };
    let remote = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_default();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let io = match on_upgrade.await {
            Ok(io) => TokioIo::new(io),
            Err(e) => {
                tracing::debug!("ts2021 upgrade failed: {e}");
                return;
            }
        };
        let stream = match start_transport(io, response, transport).await {
            Ok(s) => s,
            Err(e) => {
                tracing::info!(%remote, "Noise connection failed: {e}");
                return;
            }
        };
        tracing::debug!(%remote, machine = %machine_key.short(), "Noise connection established");
        let app = machine::router(ctl.clone(), machine_key);
        let svc = TowerToHyperService::new(app);
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Some(std::time::Duration::from_secs(60)))
            .max_concurrent_streams(250);
        if let Err(e) = builder.serve_connection(TokioIo::new(stream), svc).await {
            tracing::debug!(%remote, machine = %machine_key.short(), "Noise HTTP/2 connection ended: {e}");
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_PROTO));
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp
}
