//! The policy engine's compiled form seen through [`PolicyView`]: the one
//! place where policy-level outputs become wire types.

use std::collections::BTreeMap;
use std::sync::Arc;

use ipnet::IpNet;
use ironscale_policy::output::CapMap;
use ironscale_policy::CompiledPolicy;
use ironscale_types::{Node, NodeId};
use ironscale_wire as wire;
use serde_json::Value;

use crate::{PolicyView, Tailnet};

/// A compiled policy, as the mapper uses it.
#[derive(Debug, Clone)]
pub struct CompiledView(pub Arc<CompiledPolicy>);

pub fn cap_map_to_wire(m: &CapMap) -> BTreeMap<String, Value> {
    m.iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_ref()
                    .map(|v| Value::Array(v.clone()))
                    .unwrap_or(Value::Null),
            )
        })
        .collect()
}

pub fn filter_rule_to_wire(r: &ironscale_policy::FilterRule) -> wire::FilterRule {
    wire::FilterRule {
        src_ips: r.src_ips.iter().map(|s| s.to_string()).collect(),
        dst_ports: r
            .dst_ports
            .iter()
            .map(|d| wire::NetPortRange {
                ip: d.ip.to_string(),
                ports: wire::PortRange {
                    first: d.ports.first,
                    last: d.ports.last,
                },
            })
            .collect(),
        ip_proto: r.ip_proto.iter().map(|p| i32::from(*p)).collect(),
        cap_grant: r
            .cap_grant
            .iter()
            .map(|g| wire::CapGrant {
                dsts: g.dsts.clone(),
                cap_map: cap_map_to_wire(&g.cap_map),
            })
            .collect(),
    }
}

impl PolicyView for CompiledView {
    fn can_see(&self, _: &Tailnet, viewer: &Node, peer: &Node) -> bool {
        self.0.can_see(viewer.id, peer.id)
    }

    fn packet_filter(&self, _: &Tailnet, node: &Node) -> Vec<wire::FilterRule> {
        self.0
            .filter_rules(node.id)
            .iter()
            .map(filter_rule_to_wire)
            .collect()
    }

    fn ssh_policy(&self, _: &Tailnet, node: &Node) -> Option<Value> {
        self.0
            .ssh_policy(node.id)
            .and_then(|p| serde_json::to_value(p).ok())
    }

    fn node_cap_map(&self, _: &Tailnet, node: &Node) -> BTreeMap<String, Value> {
        cap_map_to_wire(&self.0.node_cap_map(node.id))
    }

    fn peer_cap_map(&self, _: &Tailnet, viewer: &Node, peer: &Node) -> BTreeMap<String, Value> {
        cap_map_to_wire(&self.0.peer_cap_map(viewer.id, peer.id))
    }

    fn peer_routes(&self, _: &Tailnet, viewer: &Node, peer: &Node) -> Vec<IpNet> {
        let own: Vec<IpNet> = peer.ips().into_iter().map(IpNet::from).collect();
        let mut out: Vec<IpNet> = self
            .0
            .allowed_ips(viewer.id, peer.id)
            .into_iter()
            .filter(|r| !own.contains(r))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn watchers_of(&self, _: &Tailnet, changed: &Node) -> Vec<NodeId> {
        self.0.peers(changed.id)
    }
}
