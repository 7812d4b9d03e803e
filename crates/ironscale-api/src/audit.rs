//! The audit log's writer: an axum layer around the `/api/v1` routes that
//! records one entry per mutating request, accepted or refused, with the
//! [`Caller`], the action its route names ([`action_of`]), the target and
//! detail its handler noted on the [`Audit`] handle (else the route's path
//! parameters), and `ok` or the error it was refused with.
//!
//! The entry is written after the handler answered and before the answer
//! leaves, so a client that got its answer finds the entry listed. A failed
//! write is logged; the request's answer stands (the change is made).
//!
//! Requests refused by the auth layer never get here (they are logged and
//! slowed down there), so the log names only authenticated callers. Never a
//! secret: handlers note ids, names and key prefixes, never a body verbatim,
//! and `State::record_audit` redacts anything that still looks like key
//! material.

use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{FromRequestParts, MatchedPath, RawPathParams, Request, State as AxState};
use axum::middleware::Next;
use axum::response::Response;
use http::request::Parts;
use http::{Method, StatusCode};
use ironscale_state::State;

use crate::Caller;

/// The action a mutating route performs, by method and route (relative to
/// `/api/v1`). `None`: the request changes nothing (reads, `policy/check`).
/// A mutating route missing here is still recorded, as `<METHOD> <route>`.
pub(crate) fn action_of(method: &Method, route: &str) -> Option<String> {
    if matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    ) {
        return None;
    }
    let name = match (method.as_str(), route) {
        ("POST", "/user") => "user.create",
        ("POST", "/user/{old_id}/rename/{new_name}") => "user.rename",
        ("DELETE", "/user/{id}") => "user.delete",
        ("POST", "/preauthkey") => "preauthkey.create",
        ("POST", "/preauthkey/expire") => "preauthkey.expire",
        ("POST", "/apikey") => "apikey.create",
        ("POST", "/apikey/expire") => "apikey.expire",
        ("DELETE", "/apikey/" | "/apikey/{prefix}") => "apikey.delete",
        ("POST", "/node/register") => "node.register",
        ("POST", "/node/backfillips") => "node.backfillips",
        ("DELETE", "/node/{id}") => "node.delete",
        ("POST", "/node/{id}/expire") => "node.expire",
        ("POST", "/node/{id}/approve") => "node.approve",
        ("POST", "/node/{id}/rename/{new_name}") => "node.rename",
        ("POST", "/node/{id}/tags") => "node.tags",
        ("POST", "/node/{id}/approve_routes") => "node.approve_routes",
        ("POST", "/node/{id}/user") => "node.move",
        ("POST", "/auth/register") => "auth.register",
        ("POST", "/auth/approve") => "auth.approve",
        ("POST", "/auth/reject") => "auth.reject",
        ("PUT", "/policy") => "policy.set",
        ("POST", "/policy/check") => return None,
        (m, r) => return Some(format!("{m} {r}")),
    };
    Some(name.to_string())
}

#[derive(Default)]
struct Note {
    target: Option<String>,
    detail: serde_json::Map<String, serde_json::Value>,
}

/// What a handler tells the audit log about its request: the target and
/// detail fields. An extractor that never fails (outside the audit layer
/// the notes go nowhere). Note the target before the work, so a refusal is
/// recorded against it too.
#[derive(Clone, Default)]
pub struct Audit(Arc<Mutex<Note>>);

impl Audit {
    fn note(&self) -> MutexGuard<'_, Note> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the request acts on: `user:<name or id>`, `node:<id>`,
    /// `preauthkey:<prefix>`, `apikey:<prefix>`… never key material.
    pub fn target(&self, target: impl Into<String>) {
        self.note().target = Some(target.into());
    }

    /// One field of the entry's detail (ids, names, flags; never a secret).
    pub fn detail(&self, key: &str, value: impl serde::Serialize) {
        let v = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
        self.note().detail.insert(key.to_string(), v);
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Audit {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Audit>().cloned().unwrap_or_default())
    }
}

/// The message of an [`ApiError`](crate::ApiError) answer, for the entry's
/// result (set by its `IntoResponse`).
#[derive(Clone)]
pub(crate) struct ErrorText(pub String);

/// The layer (`axum::middleware::from_fn_with_state`, inside the auth
/// layer, after routing).
pub(crate) async fn record(AxState(state): AxState<State>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let Some(route) = route else {
        return next.run(req).await;
    };
    let route = route
        .strip_prefix("/api/v1")
        .map(str::to_string)
        .unwrap_or(route);
    let Some(action) = action_of(req.method(), &route) else {
        return next.run(req).await;
    };
    let actor = req
        .extensions()
        .get::<Caller>()
        .map_or_else(|| "unknown".to_string(), Caller::to_string);
    let (mut parts, body) = req.into_parts();
    let from_path = RawPathParams::from_request_parts(&mut parts, &())
        .await
        .map(|ps| {
            ps.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let audit = Audit::default();
    parts.extensions.insert(audit.clone());
    let resp = next.run(Request::from_parts(parts, body)).await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
        return resp;
    }
    let result = if resp.status().is_success() {
        "ok".to_string()
    } else {
        resp.extensions()
            .get::<ErrorText>()
            .map_or_else(|| resp.status().to_string(), |e| e.0.clone())
    };
    let (target, detail) = {
        let mut n = audit.note();
        (
            n.target.take().unwrap_or(from_path),
            serde_json::Value::Object(std::mem::take(&mut n.detail)).to_string(),
        )
    };
    if let Err(e) = state
        .record_audit(&actor, &action, &target, &result, &detail)
        .await
    {
        tracing::error!(%actor, %action, "writing the audit log failed: {e}");
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route of the table that is not a read has an action of its
    /// own (not the `<METHOD> <route>` fallback).
    #[test]
    fn every_mutating_route_is_named() {
        let mut named = 0;
        for r in crate::routes::table() {
            let m = Method::from_bytes(r.method.to_ascii_uppercase().as_bytes()).expect("method");
            match action_of(&m, r.path) {
                None => {}
                Some(a) => {
                    assert!(
                        !a.contains(' ') && a.contains('.'),
                        "{} {}: no action name ({a})",
                        r.method,
                        r.path
                    );
                    named += 1;
                }
            }
        }
        assert!(named >= 20, "only {named} mutating routes found");
    }

    #[test]
    fn reads_are_not_actions_and_every_change_has_one() {
        assert_eq!(action_of(&Method::GET, "/user"), None);
        assert_eq!(action_of(&Method::POST, "/policy/check"), None);
        assert_eq!(
            action_of(&Method::POST, "/node/{id}/rename/{new_name}").as_deref(),
            Some("node.rename")
        );
        assert_eq!(
            action_of(&Method::PATCH, "/user/{id}").as_deref(),
            Some("PATCH /user/{id}")
        );
    }
}
