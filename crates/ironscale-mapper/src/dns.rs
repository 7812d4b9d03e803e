//! The DNS configuration each node is sent (`MapResponse.DNSConfig`), from
//! the tailnet's DNS settings (the config's `dns` section) and the node's
//! own capabilities.
//!
//! What a node gets, as Tailscale's control sends it:
//! - MagicDNS on: `Proxied`, the base domain first in `Domains` (the search
//!   list) and as a route with no resolvers (`"<base_domain>.": null`), so
//!   the client answers every name under it itself (peers, extra records)
//!   and never forwards one. Peers carry `<given name>.<base_domain>.`.
//! - Split DNS (`nameservers.split`, and the `restricted` spelling merged
//!   into it by the config loader): one route per domain to its resolvers.
//! - Global nameservers: `Resolvers` when `override_local_dns` is on (every
//!   name outside the routes goes to them), else `FallbackResolvers` (the
//!   node keeps its own resolvers; Tailscale only uses these where the OS
//!   cannot do split DNS), as Headscale does.
//! - NextDNS DoH resolvers (`https://dns.nextdns.io/<profile>`) carry the
//!   device's metadata as Headscale adds it: `device_name` (hostname),
//!   `device_model` (Hostinfo OS) and `device_ip` (first tailnet address).
//!   A node whose capabilities include `nextdns:<profile>` (policy
//!   `nodeAttrs`) uses that profile instead, and `nextdns:no-device-info`
//!   stops the metadata, as Tailscale's `nodeAttrs` do.
//! - `extra_records` as `ExtraRecords` (the client answers them itself when
//!   they fall under a route without resolvers, i.e. the base domain).

use std::collections::BTreeMap;

use ironscale_types::Node;
use ironscale_wire as wire;
use serde_json::Value;

/// A static DNS record served by every client's resolver.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExtraRecord {
    pub name: String,
    pub r#type: String,
    pub value: String,
}

/// Tailnet-wide DNS settings (from the config's `dns` section).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DnsSettings {
    pub magic_dns: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    /// Global resolvers: IP addresses or `https://` DoH URLs.
    pub nameservers: Vec<String>,
    /// Split DNS: domain (no trailing dot) → resolvers.
    pub split: BTreeMap<String, Vec<String>>,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
    /// Give every node the `magicdns-aaaa` capability, so clients answer
    /// AAAA queries for peers that also have an IPv4 address (capability
    /// version 116 and later answer AAAA only with it). Policy `nodeAttrs`
    /// can grant it per node when this is off.
    pub magic_dns_aaaa: bool,
}

/// The node attribute that makes a client answer AAAA for dual-stack peers.
pub const CAP_MAGICDNS_AAAA: &str = "magicdns-aaaa";

const NEXTDNS_DOH: &str = "https://dns.nextdns.io/";
const NEXTDNS_ATTR: &str = "nextdns:";
const NEXTDNS_NO_DEVICE_INFO: &str = "nextdns:no-device-info";

fn fqdn(domain: &str) -> String {
    if domain.ends_with('.') {
        domain.to_string()
    } else {
        format!("{domain}.")
    }
}

/// Percent-encode a query value (RFC 3986 unreserved characters kept).
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn hostinfo_os(node: &Node) -> String {
    node.hostinfo_json
        .as_deref()
        .and_then(|s| serde_json::from_str::<Value>(s).ok())
        .and_then(|v| v.get("OS").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_default()
}

/// The resolver address `addr` as `node` uses it (NextDNS profile and
/// device metadata applied).
fn resolver_for(addr: &str, node: &Node, caps: &BTreeMap<String, Value>) -> wire::DnsResolver {
    let Some(rest) = addr.strip_prefix(NEXTDNS_DOH) else {
        return wire::DnsResolver { addr: addr.into() };
    };
    let profile_override = caps
        .keys()
        .filter_map(|k| k.strip_prefix(NEXTDNS_ATTR))
        .find(|p| !p.is_empty() && *p != "no-device-info");
    let mut base = match profile_override {
        Some(p) => format!("{NEXTDNS_DOH}{p}"),
        None => format!("{NEXTDNS_DOH}{rest}"),
    };
    if caps.contains_key(NEXTDNS_NO_DEVICE_INFO) {
        return wire::DnsResolver { addr: base };
    }
    let mut q = vec![
        format!("device_name={}", query_escape(&node.hostname)),
        format!("device_model={}", query_escape(&hostinfo_os(node))),
    ];
    if let Some(ip) = node
        .ipv4
        .map(std::net::IpAddr::V4)
        .or(node.ipv6.map(std::net::IpAddr::V6))
    {
        q.push(format!("device_ip={ip}"));
    }
    base.push(if base.contains('?') { '&' } else { '?' });
    base.push_str(&q.join("&"));
    wire::DnsResolver { addr: base }
}

/// The `DNSConfig` sent to `node`, whose own capability map (policy
/// `nodeAttrs`) is `caps`.
pub fn dns_config(d: &DnsSettings, node: &Node, caps: &BTreeMap<String, Value>) -> wire::DnsConfig {
    let resolvers: Vec<wire::DnsResolver> = d
        .nameservers
        .iter()
        .map(|a| resolver_for(a, node, caps))
        .collect();
    let magic = d.magic_dns && !d.base_domain.is_empty();
    let mut domains = Vec::new();
    let mut routes = BTreeMap::new();
    if magic {
        domains.push(d.base_domain.clone());
        routes.insert(fqdn(&d.base_domain), Vec::new());
    }
    for s in &d.search_domains {
        if !domains.contains(s) {
            domains.push(s.clone());
        }
    }
    for (dom, ns) in &d.split {
        let r: &mut Vec<wire::DnsResolver> = routes.entry(fqdn(dom)).or_default();
        for a in ns {
            let res = resolver_for(a, node, caps);
            if !r.contains(&res) {
                r.push(res);
            }
        }
    }
    let (resolvers, fallback_resolvers) = if d.override_local_dns {
        (resolvers, Vec::new())
    } else {
        (Vec::new(), resolvers)
    };
    wire::DnsConfig {
        resolvers,
        fallback_resolvers,
        routes,
        domains,
        proxied: d.magic_dns,
        extra_records: d
            .extra_records
            .iter()
            .map(|r| wire::DnsRecord {
                name: r.name.clone(),
                r#type: r.r#type.clone(),
                value: r.value.clone(),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironscale_types::{NodeId, RegisterMethod};
    use serde_json::json;

    fn node() -> Node {
        Node {
            id: NodeId(7),
            machine_key: Default::default(),
            node_key: Default::default(),
            disco_key: Default::default(),
            ipv4: Some("100.64.0.7".parse().unwrap()),
            ipv6: Some("fd7a:115c:a1e0::7".parse().unwrap()),
            hostname: "my laptop".into(),
            given_name: "laptop".into(),
            user_id: None,
            tags: Vec::new(),
            hostinfo_json: Some(r#"{"Hostname":"my laptop","OS":"linux"}"#.into()),
            home_derp: 0,
            announced_routes: Vec::new(),
            approved_routes: Vec::new(),
            endpoints: Vec::new(),
            expiry: None,
            created_at: Default::default(),
            last_seen: None,
            register_method: RegisterMethod::Unspecified,
            auth_key_id: None,
            ephemeral: false,
            capver: 0,
            approved: true,
        }
    }

    fn settings() -> DnsSettings {
        DnsSettings {
            magic_dns: true,
            base_domain: "vpn.example.com".into(),
            override_local_dns: true,
            nameservers: vec!["1.1.1.1".into()],
            split: BTreeMap::from([("corp.example".into(), vec!["10.0.0.53".into()])]),
            search_domains: vec!["corp.example".into(), "vpn.example.com".into()],
            extra_records: vec![ExtraRecord {
                name: "grafana.vpn.example.com".into(),
                r#type: "A".into(),
                value: "100.64.0.3".into(),
            }],
            magic_dns_aaaa: true,
        }
    }

    #[test]
    fn magicdns_is_a_route_without_resolvers_and_first_search_domain() {
        let c = dns_config(&settings(), &node(), &BTreeMap::new());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "Resolvers": [{"Addr": "1.1.1.1"}],
                "Routes": {"vpn.example.com.": null, "corp.example.": [{"Addr": "10.0.0.53"}]},
                "Domains": ["vpn.example.com", "corp.example"],
                "Proxied": true,
                "ExtraRecords": [{"Name": "grafana.vpn.example.com", "Type": "A", "Value": "100.64.0.3"}],
            })
        );
    }

    #[test]
    fn without_override_the_global_resolvers_are_only_a_fallback() {
        let mut s = settings();
        s.override_local_dns = false;
        s.magic_dns = false;
        let c = dns_config(&s, &node(), &BTreeMap::new());
        assert!(c.resolvers.is_empty());
        assert_eq!(c.fallback_resolvers[0].addr, "1.1.1.1");
        assert!(!c.proxied);
        assert_eq!(c.domains, vec!["corp.example", "vpn.example.com"]);
        assert!(!c.routes.contains_key("vpn.example.com."));
    }

    #[test]
    fn nextdns_gets_device_metadata_a_profile_override_or_none() {
        let mut s = settings();
        s.nameservers = vec!["https://dns.nextdns.io/abc123".into()];
        let c = dns_config(&s, &node(), &BTreeMap::new());
        assert_eq!(
            c.resolvers[0].addr,
            "https://dns.nextdns.io/abc123?device_name=my%20laptop&device_model=linux&device_ip=100.64.0.7"
        );
        let caps = BTreeMap::from([("nextdns:xyz".to_string(), Value::Null)]);
        let c = dns_config(&s, &node(), &caps);
        assert!(c.resolvers[0]
            .addr
            .starts_with("https://dns.nextdns.io/xyz?device_name="));
        let caps = BTreeMap::from([
            ("nextdns:xyz".to_string(), Value::Null),
            (NEXTDNS_NO_DEVICE_INFO.to_string(), Value::Null),
        ]);
        let c = dns_config(&s, &node(), &caps);
        assert_eq!(c.resolvers[0].addr, "https://dns.nextdns.io/xyz");
        // Other resolvers are left alone.
        s.nameservers = vec!["https://dns.example/dns-query".into()];
        let c = dns_config(&s, &node(), &BTreeMap::new());
        assert_eq!(c.resolvers[0].addr, "https://dns.example/dns-query");
    }

    #[test]
    fn a_split_domain_equal_to_the_base_domain_keeps_its_resolvers() {
        let mut s = settings();
        s.split
            .insert("vpn.example.com".into(), vec!["10.0.0.1".into()]);
        let c = dns_config(&s, &node(), &BTreeMap::new());
        assert_eq!(c.routes["vpn.example.com."][0].addr, "10.0.0.1");
    }
}
