//! Architecture invariant 1 (ARCHITECTURE.md): protocol and core crates depend
//! on none of tokio, sqlx, axum/hyper, reqwest — checked over `cargo metadata`.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const PURE: &[&str] = &[
    "ironscale-keys",
    "ironscale-wire",
    "ironscale-noise",
    "ironscale-derp",
    "ironscale-stun",
    "ironscale-types",
    "ironscale-ipam",
    "ironscale-mapper",
    "ironscale-policy",
    "ironscale-config",
];
const FORBIDDEN: &[&str] = &["tokio", "sqlx", "axum", "hyper", "reqwest", "sqlx-core"];

#[test]
fn pure_crates_have_no_io_dependencies() {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--locked", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .or_else(|_| Command::new(env!("CARGO")).args(["metadata", "--format-version", "1"]).output())
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: BTreeMap<String, String> = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        names.insert(p["id"].as_str().unwrap().to_string(), p["name"].as_str().unwrap().to_string());
    }
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in meta["resolve"]["nodes"].as_array().unwrap() {
        let id = n["id"].as_str().unwrap().to_string();
        // Normal (non-dev, non-build) dependencies only.
        let ds = n["deps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null()))
            .map(|d| d["pkg"].as_str().unwrap().to_string())
            .collect();
        deps.insert(id, ds);
    }
    let mut failures = Vec::new();
    for (id, name) in &names {
        if !PURE.contains(&name.as_str()) {
            continue;
        }
        let mut seen = BTreeSet::new();
        let mut stack = vec![id.clone()];
        while let Some(cur) = stack.pop() {
            if !seen.insert(cur.clone()) {
                continue;
            }
            let n = &names[&cur];
            if FORBIDDEN.contains(&n.as_str()) {
                failures.push(format!("{name} depends (transitively) on {n}"));
            }
            stack.extend(deps.get(&cur).cloned().unwrap_or_default());
        }
    }
    assert!(failures.is_empty(), "layering violations:\n{}", failures.join("\n"));
}
