//! Health probes of subnet routers (Headscale 0.29's
//! `node.routes.ha.probe_interval` / `probe_timeout`): every interval the
//! map stream of an online router carries a `PingRequest` whose URL names a
//! fresh id; the client answers with `HEAD <server_url>/machine/ping-response?id=…`.
//! A router that has not answered within the timeout serves no route
//! (`State::set_route_health`), so its routes fail over even when its link
//! vanished without a FIN or RST and the stream looks open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use tokio::sync::oneshot;

use crate::Control;

/// Unanswered probes: id → who waits for the answer.
#[derive(Default)]
pub(crate) struct Pings(Mutex<HashMap<String, oneshot::Sender<()>>>);

impl std::fmt::Debug for Pings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pings")
    }
}

impl Pings {
    /// A new probe: its id and the receiver that fires when it is answered.
    pub(crate) fn start(&self) -> (String, oneshot::Receiver<()>) {
        let mut rng = rand::rng();
        let id: String = (0..16)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.clone(), tx);
        }
        (id, rx)
    }

    pub(crate) fn forget(&self, id: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(id);
        }
    }

    fn answer(&self, id: &str) -> bool {
        let tx = self.0.lock().ok().and_then(|mut m| m.remove(id));
        tx.is_some_and(|tx| tx.send(()).is_ok())
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct Answer {
    id: Option<String>,
}

/// `HEAD|GET /machine/ping-response?id=…`: a client answering a probe.
pub(crate) async fn answered(
    AxState(ctl): AxState<Arc<Control>>,
    Query(q): Query<Answer>,
) -> Response {
    match q.id.as_deref() {
        Some(id) if ctl.pings.answer(id) => StatusCode::OK.into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The URL of probe `id`.
pub(crate) fn url(ctl: &Control, id: &str) -> String {
    format!("{}/machine/ping-response?id={id}", ctl.server_url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_fires_once_and_unknown_ids_do_not() {
        let p = Pings::default();
        let (id, mut rx) = p.start();
        assert!(!p.answer("nope"));
        assert!(p.answer(&id));
        assert!(rx.try_recv().is_ok());
        assert!(!p.answer(&id), "each probe is answered once");
        let (id2, _rx2) = p.start();
        assert_ne!(id, id2);
        p.forget(&id2);
        assert!(!p.answer(&id2));
    }
}
