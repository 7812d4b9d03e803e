//! Prometheus metrics at `http://<metrics_listen_addr>/metrics` (text
//! exposition format 0.0.4), and `/health`.
//!
//! The figures are read when scraped (snapshot sizes, relay and STUN
//! counters); nothing on a request path waits for this module.

use std::fmt::Write;
use std::sync::Arc;

use ironscale_relay::{DerpServer, DerpStats, StunStats};
use ironscale_state::State;

/// Where the figures come from.
#[derive(Clone)]
pub struct Sources {
    pub state: State,
    pub derp: Option<Arc<DerpServer>>,
    pub stun: Option<Arc<StunStats>>,
    pub oidc: Option<Arc<ironscale_oidc::Oidc>>,
}

/// One scrape's figures.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub nodes: u64,
    pub nodes_online: u64,
    pub users: u64,
    pub map_sessions: u64,
    pub derp: Option<DerpStats>,
    /// STUN: requests answered, packets ignored, send errors.
    pub stun: Option<(u64, u64, u64)>,
    /// OIDC logins by outcome (`ok` or a refusal reason).
    pub oidc_logins: Option<Vec<(&'static str, u64)>>,
}

impl Sources {
    pub fn figures(&self) -> Figures {
        let t = self.state.snapshot();
        Figures {
            nodes: t.nodes.len() as u64,
            nodes_online: t.online.len() as u64,
            users: t.users.len() as u64,
            map_sessions: self.state.session_count() as u64,
            derp: self.derp.as_ref().map(|d| d.stats()),
            stun: self
                .stun
                .as_ref()
                .map(|s| (s.requests(), s.ignored(), s.send_errors())),
            oidc_logins: self.oidc.as_ref().map(|o| o.login_counts()),
        }
    }
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

/// The exposition text for one scrape.
pub fn render(f: &Figures) -> String {
    let mut o = String::new();
    let version = format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
    metric(
        &mut o,
        "ironscale_build_info",
        "gauge",
        "The running version.",
        &[(&version, 1)],
    );
    metric(
        &mut o,
        "ironscale_nodes",
        "gauge",
        "Registered nodes.",
        &[("", f.nodes)],
    );
    metric(
        &mut o,
        "ironscale_nodes_online",
        "gauge",
        "Nodes with an open map stream.",
        &[("", f.nodes_online)],
    );
    metric(
        &mut o,
        "ironscale_users",
        "gauge",
        "Users.",
        &[("", f.users)],
    );
    metric(
        &mut o,
        "ironscale_map_sessions",
        "gauge",
        "Open map streams.",
        &[("", f.map_sessions)],
    );
    if let Some(d) = &f.derp {
        metric(
            &mut o,
            "ironscale_derp_clients",
            "gauge",
            "Clients connected to the embedded DERP relay.",
            &[("", d.clients_current)],
        );
        metric(
            &mut o,
            "ironscale_derp_home_clients",
            "gauge",
            "Connected clients that use this relay as their home.",
            &[("", d.home_clients)],
        );
        metric(
            &mut o,
            "ironscale_derp_clients_accepted_total",
            "counter",
            "DERP clients admitted.",
            &[("", d.clients_total)],
        );
        metric(
            &mut o,
            "ironscale_derp_clients_rejected_total",
            "counter",
            "DERP clients refused by verify_clients.",
            &[("", d.clients_rejected)],
        );
        metric(
            &mut o,
            "ironscale_derp_connection_errors_total",
            "counter",
            "DERP connections closed for a bad handshake or a protocol error.",
            &[
                ("{reason=\"handshake\"}", d.handshake_failures),
                ("{reason=\"protocol\"}", d.protocol_errors),
            ],
        );
        metric(
            &mut o,
            "ironscale_derp_packets_relayed_total",
            "counter",
            "Packets relayed between DERP clients.",
            &[("", d.packets_relayed)],
        );
        metric(
            &mut o,
            "ironscale_derp_bytes_relayed_total",
            "counter",
            "Payload bytes relayed between DERP clients.",
            &[("", d.bytes_relayed)],
        );
        metric(
            &mut o,
            "ironscale_derp_packets_dropped_total",
            "counter",
            "Packets the relay dropped.",
            &[
                ("{reason=\"queue_full\"}", d.packets_dropped_queue_full),
                ("{reason=\"unknown_dest\"}", d.packets_dropped_unknown_dest),
            ],
        );
    }
    if let Some((requests, ignored, send_errors)) = f.stun {
        metric(
            &mut o,
            "ironscale_stun_requests_total",
            "counter",
            "STUN binding requests answered.",
            &[("", requests)],
        );
        metric(
            &mut o,
            "ironscale_stun_ignored_total",
            "counter",
            "UDP packets on the STUN port that were not binding requests.",
            &[("", ignored)],
        );
        metric(
            &mut o,
            "ironscale_stun_send_errors_total",
            "counter",
            "STUN responses that could not be sent.",
            &[("", send_errors)],
        );
    }
    if let Some(logins) = &f.oidc_logins {
        let labels: Vec<(String, u64)> = logins
            .iter()
            .map(|(k, v)| {
                let l = if *k == "ok" {
                    "{result=\"ok\"}".to_string()
                } else {
                    format!("{{result=\"refused\",reason=\"{k}\"}}")
                };
                (l, *v)
            })
            .collect();
        let samples: Vec<(&str, u64)> = labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            &mut o,
            "ironscale_oidc_logins_total",
            "counter",
            "OIDC logins finished at the callback, by result and refusal reason.",
            &samples,
        );
    }
    o
}

/// `/metrics`, and `/health` and `/version` as on every listener.
pub fn router(src: Sources) -> axum::Router {
    use axum::routing::get;
    let state = src.state.clone();
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let src = src.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        render(&src.figures()),
                    )
                }
            }),
        )
        .merge(ironscale_control::service_router(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every sample line is `name{labels} value`, every metric has HELP and
    /// TYPE before its samples, and no name is declared twice.
    #[test]
    fn exposition_format_is_well_formed() {
        let f = Figures {
            nodes: 6,
            nodes_online: 5,
            users: 2,
            map_sessions: 5,
            derp: Some(DerpStats {
                clients_current: 4,
                packets_relayed: 99,
                packets_dropped_unknown_dest: 3,
                ..DerpStats::default()
            }),
            stun: Some((12, 1, 0)),
            oidc_logins: Some(vec![("group", 2), ("ok", 3)]),
        };
        let text = render(&f);
        assert!(
            text.contains("ironscale_oidc_logins_total{result=\"ok\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("ironscale_oidc_logins_total{result=\"refused\",reason=\"group\"} 2"),
            "{text}"
        );
        let mut declared = std::collections::BTreeSet::new();
        let mut typed = None::<String>;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(matches!(kind, "gauge" | "counter"), "{line}");
                assert!(declared.insert(name.to_string()), "{name} declared twice");
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counter {name} without _total");
                }
                typed = Some(name.to_string());
            } else if line.starts_with("# HELP ") {
                continue;
            } else {
                let (series, value) = line.rsplit_once(' ').expect("sample");
                value.parse::<u64>().expect("integer value");
                let name = series.split('{').next().expect("name");
                assert_eq!(Some(name), typed.as_deref(), "{line}");
            }
        }
        for want in [
            "ironscale_nodes 6",
            "ironscale_nodes_online 5",
            "ironscale_derp_clients 4",
            "ironscale_derp_packets_relayed_total 99",
            "ironscale_derp_packets_dropped_total{reason=\"unknown_dest\"} 3",
            "ironscale_stun_requests_total 12",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // Without a relay, no relay series.
        let bare = render(&Figures::default());
        assert!(!bare.contains("derp") && !bare.contains("stun"), "{bare}");
    }
}
