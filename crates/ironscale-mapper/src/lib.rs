//! The map: what each node is told about the tailnet, and how it changes.
//!
//! ```text
//! build_view(tailnet, node, now)            -> View            (pure)
//! View::full_response(now)                  -> MapResponse     (first frame of a session)
//! diff(prev, next)                          -> Option<MapResponse>  (delta; None = nothing to send)
//! View::apply_node_changes(tailnet, ids)    -> Option<MapResponse>  (same result as diff, O(|ids|))
//! ```
//! No IO, no clock (callers pass `now`), no global state. Peers are kept in
//! `BTreeMap`s so output order is deterministic.

mod conformance;
mod dns;
mod policy_adapter;
mod policy_view;
mod tailnet;
mod view;

pub use conformance::conformance_dns_config;
pub use dns::{dns_config, DnsSettings, ExtraRecord, CAP_MAGICDNS_AAAA};
pub use policy_adapter::{cap_map_to_wire, filter_rule_to_wire, CompiledView};
pub use policy_view::{AllowAll, PolicyView};
pub use tailnet::{candidate_routes, RouteIndex, Tailnet, WireCache, TAGGED_DEVICES_USER_ID};
pub use view::{build_view, diff, View};
