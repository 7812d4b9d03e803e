use ipnet::IpNet;
use ironscale_types::{Node, NodeId};
use ironscale_wire::FilterRule;
use serde_json::Value;
use std::collections::BTreeMap;

use crate::Tailnet;

/// What the mapper needs from the compiled policy. Implemented for the policy
/// engine's compiled form and by [`AllowAll`] (no policy: everyone sees and
/// reaches everyone).
pub trait PolicyView: Send + Sync + std::fmt::Debug {
    /// Whether `peer` appears in `viewer`'s map.
    fn can_see(&self, tailnet: &Tailnet, viewer: &Node, peer: &Node) -> bool;
    /// Inbound packet filter of `node`.
    fn packet_filter(&self, tailnet: &Tailnet, node: &Node) -> Vec<FilterRule>;
    /// `SSHPolicy` for `node` (None = no Tailscale SSH rules).
    fn ssh_policy(&self, _tailnet: &Tailnet, _node: &Node) -> Option<Value> {
        None
    }
    /// Self capabilities (`Node.CapMap` of the node itself).
    fn node_cap_map(&self, _tailnet: &Tailnet, _node: &Node) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }
    /// Capabilities `viewer` sees on `peer` (`Node.CapMap` of a peer).
    fn peer_cap_map(
        &self,
        _tailnet: &Tailnet,
        _viewer: &Node,
        _peer: &Node,
    ) -> BTreeMap<String, Value> {
        BTreeMap::new()
    }
    /// Routes (beyond its own addresses) that `viewer` may use through `peer`.
    fn peer_routes(&self, tailnet: &Tailnet, _viewer: &Node, peer: &Node) -> Vec<IpNet> {
        let primaries = tailnet.primary_routes(peer.id);
        let mut out: Vec<IpNet> = peer
            .approved_routes
            .iter()
            .filter(|r| r.prefix_len() == 0 || primaries.contains(r))
            .copied()
            .collect();
        out.sort();
        out
    }
    /// Whether every node sees every other (so every node watches every
    /// change, and [`PolicyView::watchers_of`] is everyone): callers can
    /// then skip listing the tailnet.
    fn everyone_watches(&self) -> bool {
        false
    }
    /// The set of nodes whose view may change when `changed` changes (besides
    /// `changed` itself). The default is "everyone who can see it".
    fn watchers_of(&self, tailnet: &Tailnet, changed: &Node) -> Vec<NodeId> {
        tailnet
            .nodes
            .values()
            .filter(|n| n.id != changed.id && self.can_see(tailnet, n, changed))
            .map(|n| n.id)
            .collect()
    }
}

/// No policy: allow all (Headscale's and Tailscale's default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAll;

impl PolicyView for AllowAll {
    fn can_see(&self, _: &Tailnet, viewer: &Node, peer: &Node) -> bool {
        viewer.id != peer.id
    }
    fn packet_filter(&self, _: &Tailnet, _: &Node) -> Vec<FilterRule> {
        vec![FilterRule::allow_all()]
    }
    fn everyone_watches(&self) -> bool {
        true
    }
    fn watchers_of(&self, tailnet: &Tailnet, changed: &Node) -> Vec<NodeId> {
        tailnet
            .nodes
            .keys()
            .copied()
            .filter(|id| *id != changed.id)
            .collect()
    }
}
