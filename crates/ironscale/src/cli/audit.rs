//! `ironscale audit list [--since 24h|RFC 3339] [--limit N]`: the audit log
//! (every change asked through the CLI, the socket or the API), newest first.

use anyhow::anyhow;
use clap::Subcommand;
use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{fmt_time, render, rest, table, Output};
use super::preauthkeys::parse_duration;
use super::Printed;

/// Where a listing starts: this long ago, or at this instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(std::time::Duration),
    At(dto::Timestamp),
}

fn parse_since(s: &str) -> Result<Since, String> {
    if let Ok(Some(t)) = dto::parse_ts(s.trim()) {
        return Ok(Since::At(t));
    }
    parse_duration(s).map(Since::Ago).map_err(|_| {
        format!("invalid --since {s:?}: give a duration (30m, 24h, 7d) or an RFC 3339 time")
    })
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum AuditCmd {
    /// List audit log entries, newest first.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only entries this recent (a duration: 30m, 24h, 7d) or written at
        /// or after this instant (RFC 3339).
        #[arg(short = 's', long, value_parser = parse_since)]
        since: Option<Since>,
        /// At most this many entries (the newest).
        #[arg(short = 'n', long, default_value_t = 100)]
        limit: u32,
    },
}

fn audit_table(entries: &[dto::AuditEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.id.to_string(),
                fmt_time(&e.at),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.result.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "Time", "Actor", "Action", "Target", "Result"],
        &rows,
    )
}

pub(crate) async fn audit(
    cmd: AuditCmd,
    c: &Client,
    out: Output,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        AuditCmd::List { since, limit } => {
            let since = match since {
                None => None,
                Some(Since::At(t)) => Some(t),
                Some(Since::Ago(d)) => Some(
                    chrono::Duration::from_std(d)
                        .ok()
                        .and_then(|d| now.checked_sub_signed(d))
                        .ok_or_else(|| anyhow!("--since is too far in the past"))?,
                ),
            };
            let entries = c.list_audit(since, Some(limit)).await?;
            Ok(Printed::out(render(out, &rest(&entries)?, || {
                audit_table(&entries)
            })))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_server::server;
    use serde_json::Value;
    use std::time::Duration;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        assert_eq!(
            parse_since("24h"),
            Ok(Since::Ago(Duration::from_secs(86_400)))
        );
        assert_eq!(
            parse_since("2026-12-01T10:00:00Z"),
            Ok(Since::At(
                dto::parse_ts("2026-12-01T10:00:00Z")
                    .expect("ts")
                    .expect("ts")
            ))
        );
        assert!(parse_since("yesterday").is_err());
    }

    /// Changes made through the socket are listed, newest first, with who,
    /// what, target and result; `-o json` holds neither key's text.
    #[tokio::test]
    async fn lists_changes_and_never_a_key() {
        let srv = server().await;
        let c = Client::unix(&srv.sock);
        let u = c
            .create_user(&dto::CreateUserRequest {
                name: "alice".into(),
                ..Default::default()
            })
            .await
            .expect("user");
        let pak = c
            .create_preauth_key(&dto::CreatePreAuthKeyRequest {
                user: Some(dto::LooseId(u.id.to_string())),
                reusable: true,
                ..Default::default()
            })
            .await
            .expect("pre-auth key");
        let api_key = c.create_api_key(None).await.expect("API key");
        let refused = c
            .create_user(&dto::CreateUserRequest {
                name: "alice".into(),
                ..Default::default()
            })
            .await
            .expect_err("duplicate");
        let now = chrono::Utc::now();

        let list = |since, out| {
            audit(
                AuditCmd::List { since, limit: 100 },
                &c,
                out,
                now + chrono::Duration::seconds(1),
            )
        };
        let printed = list(Some(Since::Ago(Duration::from_secs(3600))), Output::Json)
            .await
            .expect("list");
        let v: Value = serde_json::from_str(&printed.stdout).expect("JSON");
        let entries = v.as_array().expect("a list");
        let got: Vec<(&str, &str, &str)> = entries
            .iter()
            .map(|e| {
                (
                    e["actor"].as_str().unwrap_or_default(),
                    e["action"].as_str().unwrap_or_default(),
                    e["result"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        let refusal = refused.to_string();
        assert!(refusal.contains("already exists"), "{refusal}");
        assert_eq!(
            got[1..],
            [
                ("local-socket", "apikey.create", "ok"),
                ("local-socket", "preauthkey.create", "ok"),
                ("local-socket", "user.create", "ok"),
            ],
            "{printed:?}"
        );
        // The refusal, newest, with the server's reason.
        assert_eq!(got[0].0, "local-socket");
        assert_eq!(got[0].1, "user.create");
        assert!(got[0].2.contains("already exists"), "{got:?}");
        assert_eq!(entries[0]["target"], "user:alice");
        assert_eq!(entries.len(), 4, "{printed:?}");
        assert!(entries[0]["id"].is_u64(), "numeric ids as Headscale's CLI");
        assert_eq!(entries[3]["target"], "user:alice");
        assert_eq!(
            entries[2]["target"].as_str().unwrap_or_default(),
            format!("preauthkey:{}", &pak.key[11..23])
        );
        assert_eq!(
            entries[1]["target"].as_str().unwrap_or_default(),
            format!("apikey:{}", &api_key[10..22])
        );
        for secret in [&pak.key[24..], &api_key[23..]] {
            assert!(secret.len() >= 32, "{secret}");
            assert!(!printed.stdout.contains(secret), "{}", printed.stdout);
        }
        // The table, and a window with nothing in it.
        let t = list(None, Output::Table).await.expect("table");
        assert!(t.stdout.contains("user.create"), "{}", t.stdout);
        let later = list(
            Some(Since::At(now + chrono::Duration::hours(1))),
            Output::Json,
        )
        .await
        .expect("list");
        assert_eq!(
            serde_json::from_str::<Value>(&later.stdout).expect("JSON"),
            Value::Array(vec![])
        );
    }
}
