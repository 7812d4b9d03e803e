//! `POST /verify`: the DERP client-verification endpoint that Tailscale's
//! `derper --verify-client-url` (and `ironscale derper`) calls for each
//! connecting client. Headscale's request and answer:
//! `{"NodePublic": "nodekey:…", "Source": "1.2.3.4"}` → `{"Allow": bool}`,
//! HTTP 200 either way. Go's derper sends no Content-Type, so none is
//! required; a body that is not that JSON is a 400 and changes nothing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironscale_keys::NodePublic;
use serde::{Deserialize, Serialize};

use crate::Control;

/// The largest body taken (a request is well under 200 bytes).
pub(crate) const MAX_VERIFY_BODY: usize = 4096;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyRequest {
    node_public: NodePublic,
    #[serde(default)]
    source: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyResponse {
    allow: bool,
}

pub(crate) async fn verify(AxState(ctl): AxState<Arc<Control>>, body: Bytes) -> Response {
    let req: VerifyRequest = match serde_json::from_slice::<VerifyRequest>(&body) {
        Ok(r) if r.node_public != NodePublic::ZERO => r,
        Ok(_) => {
            return (StatusCode::BAD_REQUEST, "the request names no NodePublic\n").into_response()
        }
        Err(e) => {
            tracing::debug!("/verify: not a verify request: {e}");
            return (
                StatusCode::BAD_REQUEST,
                "expected {\"NodePublic\": \"nodekey:…\", \"Source\": \"ip\"}\n",
            )
                .into_response();
        }
    };
    let allow = ctl.state.relay_allowed(&req.node_public);
    tracing::debug!(node = %req.node_public.short(), source = req.source.as_deref().unwrap_or(""), allow, "/verify");
    Json(VerifyResponse { allow }).into_response()
}
