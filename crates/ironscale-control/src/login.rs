//! Interactive login, the HTTP side: the `/register/<id>` page a person
//! opens from `tailscale up`, and the client's follow-up register request,
//! which waits until the registration is approved, denied or expires.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use ironscale_http::page::{escape, html_page as html};
use ironscale_keys::MachinePublic;
use ironscale_state::{RegisterResult, RegistrationId, RegistrationStatus};
use ironscale_wire as wire;

use crate::Control;

/// The id at the end of a login URL (`…/register/<id>`).
pub(crate) fn id_of_url(url: &str) -> Option<RegistrationId> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    RegistrationId::parse(path.trim_end_matches('/').rsplit('/').next()?)
}

/// A follow-up RegisterRequest: wait for the registration its URL names,
/// then answer as a fresh register request would (authorized once approved).
pub(crate) async fn followup(
    ctl: &Control,
    machine: MachinePublic,
    req: &wire::RegisterRequest,
) -> RegisterResult {
    let Some(id) = id_of_url(&req.followup) else {
        // Not one of ours: start over (a new login URL).
        return ctl.state.register(machine, req).await;
    };
    let pending = ctl.state.pending_registration(&id);
    let watch = ctl.state.watch_registration(&id);
    if let (Some(p), Some(mut rx)) = (pending, watch) {
        if p.machine != machine || p.node_key != req.node_key {
            return RegisterResult::Refused(ironscale_state::Refusal::Registration(
                "this login URL belongs to another machine".into(),
            ));
        }
        // As Headscale: wait for a verdict or the registration's expiry (the
        // client cancels the request if it gives up first).
        let left =
            (p.expires - ctl.state.now()).to_std().unwrap_or_default() + Duration::from_millis(50);
        let waited = tokio::time::timeout(
            left,
            rx.wait_for(|s| !matches!(s, RegistrationStatus::Waiting)),
        )
        .await;
        match waited {
            Ok(Ok(s)) => {
                if let RegistrationStatus::Denied(why) = &*s {
                    return RegisterResult::Refused(ironscale_state::Refusal::Registration(
                        why.clone(),
                    ));
                }
            }
            // The entry went away (expired and purged) without a verdict.
            Ok(Err(_)) => {}
            // Expired: a plain register below starts a new login.
            Err(_) => {}
        }
    } else if let Some(why) = ctl.state.registration_denial(&id) {
        return RegisterResult::Refused(ironscale_state::Refusal::Registration(why));
    }
    // Approved (the node now has this node key), expired, or unknown (a
    // restarted server): a plain register request answers each.
    ctl.state.register(machine, req).await
}

/// `GET /register/<id>`: what a person who opened the login URL should do.
pub(crate) async fn page(AxState(ctl): AxState<Arc<Control>>, Path(id): Path<String>) -> Response {
    let pending = RegistrationId::parse(&id).and_then(|id| ctl.state.pending_registration(&id));
    let Some(p) = pending else {
        return html(
            StatusCode::NOT_FOUND,
            "Unknown registration",
            "<p>This login link is unknown or has expired. Run <code>tailscale up</code> again to get a new one.</p>",
        );
    };
    let host = escape(&p.hostname);
    let id = p.id.as_str();
    let body = format!(
        "<p>The machine <b>{host}</b> asks to join this tailnet.</p>\
         <p>An administrator approves it on the server with:</p>\
         <pre>ironscale nodes register --user USERNAME --key {id}</pre>\
         <p>or, in Headscale 0.27+ words:</p>\
         <pre>ironscale auth register --auth-id {id} --user USERNAME</pre>\
         <p>The machine joins as soon as that is done; this link expires at {} UTC.</p>",
        p.expires.format("%Y-%m-%d %H:%M:%S")
    );
    html(StatusCode::OK, "Machine registration", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_the_end_of_the_url() {
        let id = "AbCdEfGhIjKlMnOpQrStUvWx";
        assert_eq!(
            id_of_url(&format!("https://hs.example.com/register/{id}")).map(|i| i.to_string()),
            Some(id.to_string())
        );
        assert!(id_of_url(&format!("http://x/register/{id}/?a=1")).is_some());
        assert!(id_of_url("http://x/register/short").is_none());
        assert!(id_of_url("").is_none());
    }

    #[test]
    fn hostnames_are_escaped() {
        assert_eq!(escape("<b>&\"'"), "&lt;b&gt;&amp;&quot;&#39;");
    }
}
