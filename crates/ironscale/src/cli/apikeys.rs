//! `ironscale apikeys create | list | expire | delete` (Headscale's words).

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{fmt_time, render, rest, table, Output};
use super::preauthkeys::parse_duration;
use super::Printed;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum ApikeysCmd {
    /// Create an API key for the REST API (shown once).
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Validity: a duration such as 90d, 8760h.
        #[arg(short = 'e', long, default_value = "90d", value_parser = parse_duration)]
        expiration: Duration,
    },
    /// List API keys (prefixes only).
    #[command(visible_aliases = ["ls", "show"])]
    List,
    /// Expire an API key now.
    #[command(visible_aliases = ["revoke", "e"])]
    Expire {
        #[command(flatten)]
        key: KeySelector,
    },
    /// Delete an API key.
    #[command(visible_aliases = ["remove", "del"])]
    Delete {
        #[command(flatten)]
        key: KeySelector,
    },
}

/// Which API key a command acts on: exactly one of its prefix and its id.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct KeySelector {
    /// The key's prefix (as listed, or the 12 characters after `hskey-api-`).
    #[arg(
        short = 'p',
        long,
        conflicts_with = "id",
        required_unless_present = "id"
    )]
    prefix: Option<String>,
    /// The key's id.
    #[arg(short = 'i', long)]
    id: Option<u64>,
}

impl KeySelector {
    /// How messages name the key.
    fn named(&self) -> anyhow::Result<String> {
        match (&self.prefix, self.id) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(id)) => Ok(id.to_string()),
            (None, None) => bail!("give the key's --prefix or --id"),
        }
    }
}

fn apikeys_table(keys: &[dto::ApiKey], now: chrono::DateTime<chrono::Utc>) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            vec![
                k.id.to_string(),
                k.prefix.clone(),
                match k.expiration.as_ref() {
                    Some(e) if *e <= now => format!("{} (expired)", fmt_time(e)),
                    Some(e) => fmt_time(e),
                    None => "never".into(),
                },
                fmt_time(&k.created_at),
                k.last_seen
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "never".into()),
            ]
        })
        .collect();
    table(
        &["ID", "Prefix", "Expiration", "Created", "Last used"],
        &rows,
    )
}

pub(crate) async fn apikeys(
    cmd: ApikeysCmd,
    c: &Client,
    out: Output,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        ApikeysCmd::Create { expiration } => {
            let until = chrono::Duration::from_std(expiration)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| anyhow!("the expiration is too far in the future"))?;
            let key = c
                .create_api_key(Some(until))
                .await
                .map_err(|e| anyhow!("cannot create the API key: {e}"))?;
            if out != Output::Table {
                let v = serde_json::json!({ "apiKey": key, "expiration": dto::format_ts(&until) });
                return Ok(Printed::out(render(out, &v, String::new)));
            }
            // The key alone on stdout: KEY=$(ironscale apikeys create) works.
            Ok(Printed {
                stdout: format!("{key}\n"),
                stderr: format!(
                    "API key created, expires {}. It is shown only now:\n",
                    fmt_time(&until)
                ),
            })
        }
        ApikeysCmd::List => {
            let keys = c.list_api_keys().await?;
            Ok(Printed::out(render(out, &rest(&keys)?, || {
                apikeys_table(&keys, now)
            })))
        }
        ApikeysCmd::Expire { key } => {
            let what = key.named()?;
            c.expire_api_key(key.prefix.as_deref(), key.id)
                .await
                .map_err(|e| anyhow!("cannot expire the API key: {e}"))?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("API key {what} expired\n")
            })))
        }
        ApikeysCmd::Delete { key } => {
            let what = key.named()?;
            c.delete_api_key(key.prefix.as_deref(), key.id)
                .await
                .map_err(|e| anyhow!("cannot delete the API key: {e}"))?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("API key {what} deleted\n")
            })))
        }
    }
}
