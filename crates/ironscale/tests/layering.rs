//! Architecture invariant 1 (ARCHITECTURE.md): protocol and core crates depend
//! on none of tokio, sqlx, axum/hyper, reqwest. Checked with `cargo tree`
//! (normal dependencies, host platform) for each of them.

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
const FORBIDDEN: &[&str] = &["tokio", "sqlx", "sqlx-core", "axum", "hyper", "reqwest"];

fn tree(krate: &str, offline: bool) -> std::process::Output {
    let mut c = Command::new(env!("CARGO"));
    c.args([
        "tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if offline {
        c.arg("--offline");
    }
    c.output().expect("cargo tree runs")
}

#[test]
fn pure_crates_have_no_io_dependencies() {
    let mut failures = Vec::new();
    for krate in PURE {
        let mut out = tree(krate, true);
        if !out.status.success() {
            out = tree(krate, false);
        }
        assert!(
            out.status.success(),
            "cargo tree -p {krate}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(krate),
            "cargo tree printed nothing useful for {krate}:\n{text}"
        );
        for line in text.lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if FORBIDDEN.contains(&name) {
                failures.push(format!("{krate} depends (transitively) on {name}"));
            }
        }
    }
    failures.sort();
    failures.dedup();
    assert!(
        failures.is_empty(),
        "layering violations:\n{}",
        failures.join("\n")
    );
}
