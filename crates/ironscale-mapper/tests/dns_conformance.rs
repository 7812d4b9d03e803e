//! The policy conformance corpus with each node's netmap DNS config
//! compared too (`dns_config`, computed by the map builder).

use std::path::{Path, PathBuf};

use ironscale_mapper::conformance_dns_config;
use ironscale_policy::conformance::{run_case_with, run_dir_with};
use serde_json::{json, Value};

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/policy");
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (the checkout needs ../shared beside it)",
        dir.display()
    );
    dir
}

fn c4_case() -> Value {
    let text =
        std::fs::read_to_string(corpus().join("nodeattrs/nodeattrs-attr-c4-magicdns-aaaa.json"))
            .expect("case");
    serde_json::from_str(&text).expect("json")
}

fn node_names(case: &Value) -> Vec<String> {
    case["expect"]
        .as_object()
        .expect("expect")
        .keys()
        .cloned()
        .collect()
}

/// Every `nodeattrs` case (tailnet settings that reach the nodes) passes
/// with the DNS config compared: with MagicDNS off, every node gets exactly
/// the baseline config.
#[test]
fn nodeattrs_cases_pass_with_their_dns_config() {
    let report = run_dir_with(&corpus().join("nodeattrs"), Some(conformance_dns_config));
    for l in report.failure_lines() {
        eprintln!("{l}");
    }
    assert_eq!(report.results.len(), 42);
    assert_eq!(report.failed(), 0, "{}", report.summary_line());
}

/// MagicDNS on, as Tailscale's control sends it (the shape of the capture
/// `nodeattrs-tailnet-magicdns-on`): the tailnet's domain as a route without
/// resolvers and as the search domain, `Proxied`, plus the hosted `ts.net.`
/// route and filtered set the runner models. A DNS config that differs in
/// one field fails the case.
#[test]
fn magicdns_on_gives_tailscales_dns_config() {
    let mut case = c4_case();
    case["dns"]["magic_dns"] = json!(true);
    let want = json!({
        "Routes": {
            "tail78f774.ts.net.": null,
            "ts.net.": [{"Addr": "199.247.155.53"}, {"Addr": "2620:111:8007::53"}]
        },
        "Domains": ["tail78f774.ts.net"],
        "Proxied": true,
        "ExitNodeFilteredSet": [".ts.net", ".tailscale.net"]
    });
    let names = node_names(&case);
    for n in &names {
        case["expect"][n]["dns_config"] = want.clone();
    }
    let r = run_case_with(&case, Some(conformance_dns_config));
    assert!(r.passed(), "{:?}", r.diffs);
    assert_eq!(r.expect[&names[0]]["dns_config"], want);

    // Without the route, or with MagicDNS off, it fails.
    let mut tampered = case.clone();
    tampered["expect"][&names[0]]["dns_config"]["Routes"]
        .as_object_mut()
        .expect("routes")
        .remove("tail78f774.ts.net.");
    let r = run_case_with(&tampered, Some(conformance_dns_config));
    assert!(!r.passed());
    assert!(
        r.diffs.iter().any(|d| d.contains("dns_config")),
        "{:?}",
        r.diffs
    );
    let mut off = case.clone();
    off["dns"]["magic_dns"] = json!(false);
    assert!(!run_case_with(&off, Some(conformance_dns_config)).passed());
}

/// Split DNS and search paths from the tailnet settings.
#[test]
fn split_dns_and_search_paths_become_routes_and_domains() {
    let mut case = c4_case();
    case["dns"] = json!({
        "magic_dns": false,
        "nameservers": ["1.1.1.1"],
        "search_paths": ["corp.example"],
        "split_dns": {"corp.example": ["10.0.0.53"]}
    });
    let r = run_case_with(&case, Some(conformance_dns_config));
    let name = node_names(&case).remove(0);
    assert_eq!(
        r.expect[&name]["dns_config"],
        json!({
            "FallbackResolvers": [{"Addr": "1.1.1.1"}],
            "Routes": {"corp.example.": [{"Addr": "10.0.0.53"}]},
            "Domains": ["corp.example"],
            "ExitNodeFilteredSet": [".ts.net", ".tailscale.net"]
        })
    );
}
