//! Runs the shared Tailscale policy corpus and holds the pass ratio of
//! every category at or above the level reached so far (raise the floors
//! as the engine improves; never lower them).

use std::path::Path;

/// Minimum passing cases per category (current level).
const FLOORS: &[(&str, usize, usize)] = &[
    // (category, passed, total)
    ("acl", 160, 161),
    ("grant", 199, 199),
    ("nodeattrs", 42, 42),
    ("policytest", 42, 43),
    ("routes", 95, 95),
    ("ssh", 81, 81),
    ("sshtest", 28, 28),
];

#[test]
fn corpus_pass_ratio_per_category() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/policy");
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (the checkout needs ../shared beside it)",
        dir.display()
    );
    let report = ironscale_policy::conformance::run_dir(&dir);
    let by_cat = report.by_category();
    for line in report.failure_lines() {
        eprintln!("{}", &line[..line.len().min(400)]);
    }
    eprintln!("{}", report.summary_line());
    let mut problems = Vec::new();
    for (cat, floor, total) in FLOORS {
        let (passed, seen) = by_cat.get(*cat).copied().unwrap_or((0, 0));
        eprintln!("{cat}: {passed}/{seen}");
        if seen != *total {
            problems.push(format!("{cat}: expected {total} cases, found {seen}"));
        }
        if passed < *floor {
            problems.push(format!(
                "{cat}: {passed} passed, below the floor of {floor}"
            ));
        }
        // The target: at least 97% in every category.
        if passed * 100 < seen * 97 {
            problems.push(format!("{cat}: {passed}/{seen} is below 97%"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn json_lines_have_the_corpus_shape() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/policy/acl");
    assert!(
        dir.is_dir(),
        "conformance corpus not found at {} (the checkout needs ../shared beside it)",
        dir.display()
    );
    let report = ironscale_policy::conformance::run_dir(&dir);
    let lines = report.json_lines();
    let mut n = 0;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
        assert!(v["id"].is_string());
        assert!(v["accepted"].is_boolean());
        let expect = v["expect"].as_object().expect("expect is an object");
        for node in expect.values() {
            for k in ["packet_filter_rules", "peers", "self", "ssh_policy"] {
                assert!(node.get(k).is_some(), "missing {k}");
            }
        }
        n += 1;
    }
    assert_eq!(n, report.results.len());
    // The summary counts every case file of the directory once, and its
    // failures are the ones listed.
    let files = count_case_files(&dir);
    let (passed, failed) = summary_counts(&report.summary_line());
    assert_eq!(passed + failed, files, "{}", report.summary_line());
    assert_eq!(failed, report.failure_lines().len());
    let Some((_, floor, total)) = FLOORS.iter().find(|(c, ..)| *c == "acl") else {
        panic!("no floor for acl");
    };
    assert_eq!(files, *total);
    assert!(passed >= *floor, "{}", report.summary_line());
}

/// A category where every case passes says so: `N passed, 0 failed` with N
/// the number of its case files.
#[test]
fn summary_of_a_fully_passing_category_counts_every_case() {
    let dir =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/policy/grant");
    let report = ironscale_policy::conformance::run_dir(&dir);
    let (passed, failed) = summary_counts(&report.summary_line());
    assert_eq!(failed, 0, "{}", report.text());
    assert_eq!(passed, count_case_files(&dir), "{}", report.summary_line());
    assert_eq!(report.exit_code(), 0);
}

/// `(N, M)` from the runner's `N passed, M failed` line; panics on anything else.
fn summary_counts(line: &str) -> (usize, usize) {
    let parsed = line.split_once(" passed, ").and_then(|(n, rest)| {
        let m = rest.strip_suffix(" failed")?;
        Some((n.parse().ok()?, m.parse().ok()?))
    });
    parsed.unwrap_or_else(|| panic!("summary line is not `N passed, M failed`: {line:?}"))
}

/// The `*.json` case files under `dir`, counted without the runner.
fn count_case_files(dir: &Path) -> usize {
    let mut n = 0;
    let rd = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            n += count_case_files(&p);
        } else if p.extension().is_some_and(|x| x == "json") {
            n += 1;
        }
    }
    n
}

#[test]
fn the_comparison_detects_differences() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/conformance/policy/acl/acl-ar02.json");
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("conformance case {}: {e}", file.display()));
    let case: serde_json::Value = serde_json::from_str(&text).expect("case JSON");
    assert!(ironscale_policy::conformance::run_case(&case).passed());

    // Drop a peer from the capture: the runner must notice.
    let mut tampered = case.clone();
    if let Some(peers) = tampered["expect"]["beedrill"]["peers"].as_object_mut() {
        peers.remove("weedle");
    }
    let r = ironscale_policy::conformance::run_case(&tampered);
    assert!(!r.passed());
    assert!(
        r.diffs
            .iter()
            .any(|d| d.contains("beedrill: peers: extra [\"weedle\"]")),
        "{:?}",
        r.diffs
    );

    // Change a port in a captured rule.
    let mut tampered = case.clone();
    tampered["expect"]["beedrill"]["packet_filter_rules"][0]["DstPorts"][0]["Ports"]["First"] =
        serde_json::json!(23);
    assert!(!ironscale_policy::conformance::run_case(&tampered).passed());

    // Claim Tailscale rejected it.
    let mut tampered = case;
    tampered["accepted"] = serde_json::json!(false);
    let r = ironscale_policy::conformance::run_case(&tampered);
    assert!(!r.passed() && r.accepted);
}
