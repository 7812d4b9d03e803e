//! The server's view of every node's network, from the `NetInfo` its client
//! reports in Hostinfo (`tailscale netcheck`'s findings: UDP, hard NAT,
//! hair-pinning, port mapping, home DERP and latency per region), and the
//! DERP regions of the current map, for `ironscale netcheck` and a doctor.

use std::collections::BTreeMap;

use ironscale_types::{Node, NodeId, Timestamp};
use serde_json::Value;

use crate::State;

/// What a node's client last said about its network (`Hostinfo.NetInfo`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetInfo {
    pub working_udp: Option<bool>,
    pub working_ipv6: Option<bool>,
    pub os_has_ipv6: Option<bool>,
    /// `MappingVariesByDestAddr`: a hard (endpoint-dependent) NAT.
    pub mapping_varies_by_dest_addr: Option<bool>,
    pub hair_pinning: Option<bool>,
    pub have_port_map: bool,
    pub upnp: Option<bool>,
    pub pmp: Option<bool>,
    pub pcp: Option<bool>,
    /// The home DERP region (0: none).
    pub preferred_derp: i64,
    pub link_type: String,
    pub firewall_mode: String,
    /// Seconds to each region, by the client's keys (`"900-v4"`).
    pub derp_latency: BTreeMap<String, f64>,
}

impl NetInfo {
    /// Read `Hostinfo.NetInfo`; `None` when the client sent none.
    pub fn from_hostinfo(hostinfo: &Value) -> Option<NetInfo> {
        let n = hostinfo.get("NetInfo")?.as_object()?;
        let b = |k: &str| n.get(k).and_then(Value::as_bool);
        // Go encodes opt.Bool as "true"/"false"/"" strings.
        let ob = |k: &str| match n.get(k) {
            Some(Value::Bool(x)) => Some(*x),
            Some(Value::String(s)) if s == "true" => Some(true),
            Some(Value::String(s)) if s == "false" => Some(false),
            _ => None,
        };
        let s = |k: &str| n.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        Some(NetInfo {
            working_udp: ob("WorkingUDP"),
            working_ipv6: ob("WorkingIPv6"),
            os_has_ipv6: ob("OSHasIPv6"),
            mapping_varies_by_dest_addr: ob("MappingVariesByDestAddr"),
            hair_pinning: ob("HairPinning"),
            have_port_map: b("HavePortMap").unwrap_or(false),
            upnp: ob("UPnP"),
            pmp: ob("PMP"),
            pcp: ob("PCP"),
            preferred_derp: n.get("PreferredDERP").and_then(Value::as_i64).unwrap_or(0),
            link_type: s("LinkType"),
            firewall_mode: s("FirewallMode"),
            derp_latency: n
                .get("DERPLatency")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_f64().map(|f| (k.clone(), f)))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// What `n`'s stored Hostinfo says (its JSON parsed here).
    pub fn of_node(n: &Node) -> Option<NetInfo> {
        let hi: Value = serde_json::from_str(n.hostinfo_json.as_deref()?).ok()?;
        NetInfo::from_hostinfo(&hi)
    }

    /// The best latency the client measured to `region` (any address family).
    pub fn latency_to(&self, region: i64) -> Option<f64> {
        let prefix = format!("{region}-");
        self.derp_latency
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| *v)
            .min_by(|a, b| a.total_cmp(b))
    }
}

/// One node's network as the server knows it.
#[derive(Debug, Clone)]
pub struct NodeNetView {
    pub id: NodeId,
    pub name: String,
    pub online: bool,
    pub last_seen: Option<Timestamp>,
    /// Endpoints the client reported (its candidate addresses).
    pub endpoints: Vec<String>,
    pub client_version: String,
    pub net: Option<NetInfo>,
}

/// A DERP region of the current map, with its nodes' addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct DerpRegionView {
    pub id: i64,
    pub code: String,
    pub name: String,
    pub nodes: Vec<DerpNodeView>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DerpNodeView {
    pub name: String,
    pub host: String,
    pub ipv4: String,
    pub ipv6: String,
    /// -1: no STUN; 0: the default 3478.
    pub stun_port: i64,
    /// 0: the default 443.
    pub derp_port: i64,
    pub cert_name: String,
    pub insecure_for_tests: bool,
    pub stun_only: bool,
}

impl State {
    /// Every node's reported network, in id order.
    pub fn node_networks(&self) -> Vec<NodeNetView> {
        let t = self.snapshot();
        t.nodes
            .values()
            .map(|n| {
                let parsed: Option<Value> = n
                    .hostinfo_json
                    .as_deref()
                    .and_then(|s| serde_json::from_str(s).ok());
                let hi = parsed.as_ref();
                NodeNetView {
                    id: n.id,
                    name: n.given_name.clone(),
                    online: t.online.contains(&n.id),
                    last_seen: n.last_seen,
                    endpoints: n.endpoints.clone(),
                    client_version: hi
                        .and_then(|h| h.get("IPNVersion"))
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    net: hi.and_then(NetInfo::from_hostinfo),
                }
            })
            .collect()
    }

    /// The regions of the DERP map the nodes are given now.
    pub fn derp_regions(&self) -> Vec<DerpRegionView> {
        let t = self.snapshot();
        t.derp_map
            .regions
            .values()
            .map(|r| DerpRegionView {
                id: i64::from(r.region_id),
                code: r.region_code.clone(),
                name: r.region_name.clone(),
                nodes: r
                    .nodes
                    .iter()
                    .map(|n| DerpNodeView {
                        name: n.name.clone(),
                        host: n.host_name.clone(),
                        ipv4: n.ipv4.clone(),
                        ipv6: n.ipv6.clone(),
                        stun_port: i64::from(n.stun_port),
                        derp_port: i64::from(n.derp_port),
                        cert_name: n.cert_name.clone(),
                        insecure_for_tests: n.insecure_for_tests,
                        stun_only: n.stun_only,
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netinfo_reads_what_tailscaled_sends() {
        // As tailscaled 1.96 sends it (opt.Bool as strings, latencies in seconds).
        let hi = serde_json::json!({"NetInfo": {
            "MappingVariesByDestAddr": "true", "HairPinning": "false", "WorkingIPv6": "false",
            "OSHasIPv6": "true", "WorkingUDP": "true", "WorkingICMPv4": "false",
            "HavePortMap": false, "UPnP": "", "PMP": "", "PCP": "", "PreferredDERP": 900,
            "LinkType": "", "DERPLatency": {"900-v4": 0.0021, "901-v4": 0.0405, "900-v6": 0.0019},
            "FirewallMode": "ipt-default"}});
        let n = NetInfo::from_hostinfo(&hi).expect("netinfo");
        assert_eq!(n.mapping_varies_by_dest_addr, Some(true));
        assert_eq!(n.hair_pinning, Some(false));
        assert_eq!(n.working_udp, Some(true));
        assert_eq!(n.upnp, None);
        assert_eq!(n.preferred_derp, 900);
        assert_eq!(n.latency_to(900), Some(0.0019));
        assert_eq!(n.latency_to(901), Some(0.0405));
        assert_eq!(n.latency_to(902), None);
        assert_eq!(n.firewall_mode, "ipt-default");
        assert!(NetInfo::from_hostinfo(&serde_json::json!({"Hostname": "x"})).is_none());
    }
}
