//! `ironscale doctor [--node N] [-o json]`: why a node is offline, relayed,
//! or its routes do not work, from what the server knows; each finding with
//! its cause and the command that fixes it. Exit status 1 when there is a
//! problem (warnings alone: 0), so scripts and monitoring can use it.

use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{render, rest, Output};

pub(crate) fn text(r: &dto::DoctorResponse) -> String {
    if r.findings.is_empty() {
        return "No problems found: every node is online, approved, with a valid key, its routes approved and a direct path possible.\n".into();
    }
    let mut out = String::new();
    for f in &r.findings {
        let who = match &f.node_id {
            Some(id) => format!("{} (id {id})", f.node),
            None => "tailnet".into(),
        };
        out.push_str(&format!(
            "{}: {who}: {}\n  cause: {}\n  fix:   {}\n",
            f.severity.to_uppercase(),
            f.code,
            f.cause,
            f.fix
        ));
    }
    let problems = r
        .findings
        .iter()
        .filter(|f| f.severity == "problem")
        .count();
    out.push_str(&format!(
        "\n{problems} problem(s), {} warning(s)\n",
        r.findings.len() - problems
    ));
    out
}

pub async fn run(
    c: &Client,
    node: Option<u64>,
    out: Output,
) -> anyhow::Result<std::process::ExitCode> {
    let r = c.doctor(node).await?;
    print!("{}", render(out, &rest(&r)?, || text(&r)));
    Ok(if r.findings.iter().any(|f| f.severity == "problem") {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_read_as_cause_and_fix() {
        let r = dto::DoctorResponse {
            findings: vec![dto::DoctorFinding {
                node_id: Some("3".into()),
                node: "router".into(),
                severity: "problem".into(),
                code: "route-not-approved".into(),
                cause: "it advertises 10.0.0.0/24 but the route is not approved".into(),
                fix: "ironscale nodes approve-routes -i 3 -r 10.0.0.0/24".into(),
            }],
        };
        let t = text(&r);
        assert!(
            t.starts_with("PROBLEM: router (id 3): route-not-approved\n  cause: it advertises"),
            "{t}"
        );
        assert!(
            t.contains("  fix:   ironscale nodes approve-routes -i 3 -r 10.0.0.0/24\n"),
            "{t}"
        );
        assert!(t.ends_with("1 problem(s), 0 warning(s)\n"), "{t}");
        assert!(text(&dto::DoctorResponse::default()).starts_with("No problems found"));
    }
}
