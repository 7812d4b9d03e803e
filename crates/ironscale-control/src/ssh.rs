//! Tailscale SSH check mode, the wire side. For a connection that a
//! `"action": "check"` rule governs, the destination's `tailscaled` fetches
//! the rule's `holdAndDelegate` URL over its Noise connection:
//!
//! - `GET /machine/ssh/action/<src>/to/<dst>?local_user=<u>` answers at once:
//!   `accept` (the source device's owner passed a check within the rule's
//!   `checkPeriod`), `reject` (no person can pass it, no identity provider,
//!   no check rule), or a `message` with the login URL
//!   (`<server_url>/ssh/check/<id>`, served by the identity provider's
//!   pages) and the next URL to poll, `<server_url>/machine/ssh/wait/<id>`.
//! - `GET /machine/ssh/wait/<id>` holds until the check passes (`accept`),
//!   is denied or expires (`reject` with the reason).
//!
//! Only the destination's own machine may ask (the Noise peer's machine key
//! is the destination node's); anything else is 403. Every other answer is
//! a 200 with an `SSHAction`: `tailscaled` retries other statuses with
//! back-off for up to 30 minutes, while a `reject` ends the connection with
//! its message.

use std::sync::Arc;

use axum::extract::{Extension, Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use ironscale_keys::MachinePublic;
use ironscale_state::{SshCheckDecision, SshCheckId, SshCheckStatus};
use ironscale_types::NodeId;
use ironscale_wire as wire;

use crate::Control;

/// What the SSH user reads when OIDC is not configured.
pub(crate) const NEEDS_OIDC: &str = "This connection needs a Tailscale SSH check, which a person \
passes by logging in with the tailnet's identity provider; this control server has no identity \
provider configured (oidc.issuer), so check rules cannot pass. Ask the administrator.\n";

#[derive(serde::Deserialize)]
pub(crate) struct ActionQuery {
    #[serde(default)]
    local_user: String,
}

fn reject(message: impl Into<String>) -> Response {
    Json(wire::SshAction {
        reject: true,
        message: message.into(),
        ..Default::default()
    })
    .into_response()
}

fn accept() -> Response {
    Json(wire::SshAction {
        accept: true,
        allow_agent_forwarding: true,
        allow_local_port_forwarding: true,
        allow_remote_port_forwarding: true,
        session_duration: 0,
        ..Default::default()
    })
    .into_response()
}

fn forbidden() -> Response {
    (
        StatusCode::FORBIDDEN,
        "only the destination node may ask about its SSH connections\n",
    )
        .into_response()
}

/// Whether `machine` is the machine of node `dst`.
fn is_machine_of(ctl: &Control, machine: &MachinePublic, dst: NodeId) -> bool {
    ctl.state
        .snapshot()
        .nodes
        .get(&dst)
        .is_some_and(|n| n.machine_key == *machine)
}

/// `GET /machine/ssh/action/{src}/to/{dst}?local_user=…`.
pub(crate) async fn action(
    AxState(ctl): AxState<Arc<Control>>,
    Extension(machine): Extension<MachinePublic>,
    Path((src, dst)): Path<(String, String)>,
    Query(q): Query<ActionQuery>,
) -> Response {
    let (Ok(src), Ok(dst)) = (src.parse::<u64>(), dst.parse::<u64>()) else {
        return (StatusCode::BAD_REQUEST, "node ids are numbers\n").into_response();
    };
    let (src, dst) = (NodeId(src), NodeId(dst));
    if !is_machine_of(&ctl, &machine, dst) {
        tracing::warn!(
            src = src.0,
            dst = dst.0,
            "SSH check asked by a machine that is not the destination's"
        );
        return forbidden();
    }
    if q.local_user.is_empty() {
        return (StatusCode::BAD_REQUEST, "local_user is missing\n").into_response();
    }
    if !ctl.ssh_check_login {
        return reject(NEEDS_OIDC);
    }
    let Some(period) = ctl.state.ssh_check_period(src, dst, &q.local_user) else {
        return reject(
            "No SSH check rule of the tailnet policy covers this connection any more.\n",
        );
    };
    match ctl.state.ssh_check(src, dst, &q.local_user, period) {
        SshCheckDecision::Accept => {
            tracing::info!(src = src.0, dst = dst.0, local_user = %q.local_user, "SSH check: passed within the check period");
            accept()
        }
        SshCheckDecision::Pending(id) => {
            tracing::info!(src = src.0, dst = dst.0, local_user = %q.local_user, check = %id, "SSH check: waiting for a login");
            Json(wire::SshAction {
                message: format!(
                    "# Tailscale SSH requires an additional check.\n# To authenticate, visit: {}/ssh/check/{id}\n",
                    ctl.server_url
                ),
                hold_and_delegate: format!("{}/machine/ssh/wait/{id}", ctl.server_url),
                ..Default::default()
            })
            .into_response()
        }
        SshCheckDecision::Reject(why) => {
            tracing::info!(
                src = src.0,
                dst = dst.0,
                "SSH check refused: {}",
                why.trim_end()
            );
            reject(why)
        }
    }
}

/// `GET /machine/ssh/wait/{id}`: the long poll.
pub(crate) async fn wait(
    AxState(ctl): AxState<Arc<Control>>,
    Extension(machine): Extension<MachinePublic>,
    Path(id): Path<String>,
) -> Response {
    const GONE: &str =
        "The SSH check is unknown or has expired; connect again to start a new one.\n";
    let Some(id) = SshCheckId::parse(&id) else {
        return reject(GONE);
    };
    let Some((check, _)) = ctl.state.ssh_check_status(&id) else {
        return reject(GONE);
    };
    if !is_machine_of(&ctl, &machine, check.dst) {
        tracing::warn!(check = %id, "SSH check polled by a machine that is not the destination's");
        return forbidden();
    }
    match ctl.state.wait_ssh_check(&id).await {
        Some(SshCheckStatus::Approved(_)) => accept(),
        Some(SshCheckStatus::Denied(why)) => {
            let mut m = format!("SSH check failed: {why}");
            if !m.ends_with('\n') {
                m.push('\n');
            }
            reject(m)
        }
        Some(SshCheckStatus::Waiting) | None => reject(GONE),
    }
}
