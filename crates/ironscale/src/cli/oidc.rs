//! `ironscale oidc check`: contact the configured issuer and say what is
//! wrong with the OIDC setup before a user meets it.

use clap::Subcommand;
use ironscale_config::Config;
use ironscale_oidc::{CheckReport, Verdict};

use super::Output;

#[derive(Subcommand, Debug)]
pub enum OidcCmd {
    /// Contact `oidc.issuer`: discovery, issuer name, signing keys, scopes,
    /// PKCE, and whether the provider accepts the client id and secret.
    Check,
}

pub async fn run(c: OidcCmd, cfg: &Config, out: Output) -> anyhow::Result<std::process::ExitCode> {
    match c {
        OidcCmd::Check => {
            let Some(s) =
                ironscale_oidc::OidcSettings::from_config(cfg).map_err(anyhow::Error::msg)?
            else {
                anyhow::bail!("OIDC is off: oidc.issuer is not set");
            };
            let report = ironscale_oidc::check(&s).await;
            print!("{}", render(&s.issuer, &s.redirect_url, &report, out)?);
            Ok(if report.failed() {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            })
        }
    }
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::Warn => "warn",
        Verdict::Fail => "FAIL",
    }
}

fn render(issuer: &str, redirect: &str, r: &CheckReport, out: Output) -> anyhow::Result<String> {
    let items: Vec<serde_json::Value> = r
        .items
        .iter()
        .map(|i| {
            serde_json::json!({"check": i.what, "verdict": verdict(i.verdict).to_ascii_lowercase(), "detail": i.detail})
        })
        .collect();
    let v = serde_json::json!({
        "issuer": issuer,
        "redirect_url": redirect,
        "ok": !r.failed(),
        "checks": items,
    });
    Ok(super::output::render(out, &v, || {
        let mut s = format!(
            "issuer:       {issuer}\nredirect URL: {redirect} (register it at the provider)\n"
        );
        for i in &r.items {
            s.push_str(&format!(
                "{:<5} {:<20} {}\n",
                verdict(i.verdict),
                i.what,
                i.detail
            ));
        }
        s
    }))
}
