//! The map builder's part of the policy conformance runner
//! (`ironscale_policy::conformance::run_dir_with`): each captured node's
//! netmap `DNSConfig`, computed by [`crate::dns_config`] from the case's
//! tailnet DNS settings (`dns`: `magic_dns`, `nameservers`, `search_paths`,
//! `split_dns`) and the node's capabilities.
//!
//! Tailscale's hosted control plane, where the corpus was captured, adds
//! two things that belong to its own environment, not to the settings; they
//! are modelled here, as the runner models the tailnet's other hosted-only
//! state: every node gets `ExitNodeFilteredSet: [".ts.net", ".tailscale.net"]`
//! (its own domains, which exit nodes never answer for others), and with
//! MagicDNS on a `ts.net.` route to its public resolvers. The tailnet's
//! domain (`tailXXXX.ts.net`, the hosted counterpart of `base_domain`) is
//! read from the capture, as the addresses are.

use std::collections::BTreeMap;

use ironscale_types::Node;
use serde_json::{json, Value};

use crate::{dns_config, DnsSettings};

const HOSTED_EXIT_NODE_FILTERED_SET: [&str; 2] = [".ts.net", ".tailscale.net"];
const HOSTED_TS_NET_RESOLVERS: [&str; 2] = ["199.247.155.53", "2620:111:8007::53"];

fn strs(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The tailnet's domain as the capture shows it (the first search domain of
/// any node's DNS config), if MagicDNS left a trace.
fn captured_domain(case: &Value) -> Option<String> {
    case["expect"].as_object()?.values().find_map(|e| {
        e["dns_config"]["Domains"][0]
            .as_str()
            .map(|s| s.trim_end_matches('.').to_owned())
    })
}

/// The corpus-shaped `dns_config` of `node` in `case` (see the module docs).
pub fn conformance_dns_config(case: &Value, node: &Node, self_cap_map: &Value) -> Value {
    let d = &case["dns"];
    let magic_dns = d["magic_dns"].as_bool().unwrap_or(false);
    let settings = DnsSettings {
        magic_dns,
        base_domain: captured_domain(case).unwrap_or_else(|| "tailnet.ts.net".into()),
        // Tailscale's "override local DNS" is off unless set; the corpus
        // records no such switch.
        override_local_dns: false,
        nameservers: strs(&d["nameservers"]),
        split: d["split_dns"]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), strs(v))).collect())
            .unwrap_or_default(),
        search_domains: strs(&d["search_paths"]),
        extra_records: Vec::new(),
        magic_dns_aaaa: false,
    };
    let caps: BTreeMap<String, Value> = self_cap_map
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let mut v = serde_json::to_value(dns_config(&settings, node, &caps)).unwrap_or(json!({}));
    let Some(m) = v.as_object_mut() else {
        return v;
    };
    m.insert(
        "ExitNodeFilteredSet".into(),
        json!(HOSTED_EXIT_NODE_FILTERED_SET),
    );
    if magic_dns {
        let resolvers: Vec<Value> = HOSTED_TS_NET_RESOLVERS
            .iter()
            .map(|a| json!({ "Addr": a }))
            .collect();
        if let Some(r) = m
            .entry("Routes")
            .or_insert_with(|| json!({}))
            .as_object_mut()
        {
            r.insert("ts.net.".into(), Value::Array(resolvers));
        }
    }
    v
}
