//! `ironscale apikeys create | list | expire | delete` (Headscale's words).

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Subcommand;
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
    },
    /// Delete an API key.
    #[command(visible_aliases = ["remove", "del"])]
    Delete {
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
    },
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
        ApikeysCmd::Expire { prefix, id } => {
            if prefix.is_none() && id.is_none() {
                bail!("give the key's --prefix or --id");
            }
            c.expire_api_key(prefix.as_deref(), id)
                .await
                .map_err(|e| anyhow!("cannot expire the API key: {e}"))?;
            let what = prefix.unwrap_or_else(|| format!("{}", id.unwrap_or_default()));
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("API key {what} expired\n")
            })))
        }
        ApikeysCmd::Delete { prefix, id } => {
            if prefix.is_none() && id.is_none() {
                bail!("give the key's --prefix or --id");
            }
            c.delete_api_key(prefix.as_deref(), id)
                .await
                .map_err(|e| anyhow!("cannot delete the API key: {e}"))?;
            let what = prefix.unwrap_or_else(|| format!("{}", id.unwrap_or_default()));
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("API key {what} deleted\n")
            })))
        }
    }
}
