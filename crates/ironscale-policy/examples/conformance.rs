//! Run the conformance corpus and print failures:
//! `cargo run -p ironscale-policy --example conformance -- DIR [-o json] [FILTER]`
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../../shared/conformance/policy"));
    let json = args.iter().any(|a| a == "json");
    let filter = args
        .iter()
        .skip(1)
        .find(|a| *a != "-o" && *a != "json")
        .cloned();
    let mut report = ironscale_policy::conformance::run_dir(&dir);
    if let Some(f) = filter {
        report
            .results
            .retain(|r| r.id.contains(&f) || r.category == f);
    }
    if json {
        print!("{}", report.json_lines());
    } else {
        print!("{}", report.text());
        for (cat, (p, t)) in report.by_category() {
            println!("  {cat}: {p}/{t}");
        }
    }
    std::process::exit(report.exit_code());
}
