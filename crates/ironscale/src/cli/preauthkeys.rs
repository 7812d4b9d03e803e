//! `ironscale preauthkeys create | list | expire`.

use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Subcommand;
use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{fmt_time, render, rest, table, Output};
use super::users::find_user;
use super::Printed;

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum PreauthkeysCmd {
    /// Create a pre-auth key (owned by --user, or tagged with --tags).
    #[command(visible_aliases = ["c", "new"])]
    Create {
        /// Owner: user name or id.
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// The key can register several machines.
        #[arg(long)]
        reusable: bool,
        /// Nodes registered with the key are deleted when they go offline.
        #[arg(long)]
        ephemeral: bool,
        /// Validity: a duration such as 30m, 1h, 90d.
        #[arg(short = 'e', long, default_value = "1h", value_parser = parse_duration)]
        expiration: Duration,
        /// Tags of the nodes registered with the key: tag:a,tag:b.
        #[arg(long, value_delimiter = ',')]
        tags: Vec<String>,
    },
    /// List pre-auth keys.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only the keys of this user (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
    },
    /// Expire a pre-auth key, given its id or the key (or its prefix).
    #[command(visible_aliases = ["revoke", "e"])]
    Expire {
        /// Only look among this user's keys (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// The key's id.
        #[arg(short = 'i', long = "id", conflicts_with = "key")]
        id: Option<u64>,
        /// The key's id, the key, or its prefix.
        #[arg(value_name = "KEY_OR_ID", required_unless_present = "id")]
        key: Option<String>,
    },
}

/// Go-style and human durations: 30m, 1h, 1h30m, 90d, 2w.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30m, 1h, 1h30m, 90d)"))
}

pub(crate) async fn preauthkeys(
    cmd: PreauthkeysCmd,
    c: &Client,
    out: Output,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        PreauthkeysCmd::Create {
            user,
            reusable,
            ephemeral,
            expiration,
            tags,
        } => {
            let owner = match user.as_deref() {
                Some(u) => Some(find_user(c, u).await?),
                None => None,
            };
            let until = chrono::Duration::from_std(expiration)
                .ok()
                .and_then(|d| now.checked_add_signed(d))
                .ok_or_else(|| anyhow!("the expiration is too far in the future"))?;
            let req = dto::CreatePreAuthKeyRequest {
                user: owner.as_ref().map(|u| dto::LooseId(u.id.to_string())),
                reusable,
                ephemeral,
                expiration: Some(until),
                acl_tags: tags,
            };
            let k = c.create_preauth_key(&req).await?;
            if out != Output::Table {
                return Ok(Printed::out(render(out, &rest(&k)?, String::new)));
            }
            // The key alone on stdout, so that KEY=$(ironscale preauthkeys create ...) works.
            let mut stderr = format!(
                "Pre-auth key {} created for {}: {}, {}, expires {}\n",
                k.id,
                owner_of(&k),
                if k.reusable { "reusable" } else { "single use" },
                if k.ephemeral {
                    "ephemeral nodes"
                } else {
                    "persistent nodes"
                },
                k.expiration
                    .as_ref()
                    .map(fmt_time)
                    .unwrap_or_else(|| "never".into()),
            );
            stderr.push_str("The key is shown only now:\n");
            Ok(Printed {
                stdout: format!("{}\n", k.key),
                stderr,
            })
        }
        PreauthkeysCmd::List { user } => {
            let keys = c.list_preauth_keys(user.as_deref()).await?;
            Ok(Printed::out(render(out, &rest(&keys)?, || {
                preauthkeys_table(&keys, now)
            })))
        }
        PreauthkeysCmd::Expire { user, id, key } => {
            let (id, scoped) = match (id, key) {
                (Some(id), _) => (id, false),
                (None, Some(text)) => match dto::parse_id(&text) {
                    Some(id) => (id, false),
                    None => (resolve_key(c, user.as_deref(), &text).await?, true),
                },
                (None, None) => bail!("give the key's id (-i) or the key"),
            };
            // An id given with --user must be one of that user's keys.
            if let Some(u) = user.as_deref().filter(|_| !scoped) {
                let keys = c.list_preauth_keys(Some(u)).await?;
                if !keys.iter().any(|k| k.id == id) {
                    bail!("user {u:?} has no pre-auth key with id {id}");
                }
            }
            c.expire_preauth_key(id).await?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("Pre-auth key {id} expired\n")
            })))
        }
    }
}

/// The id of the key given as the full key or its prefix (as listed).
pub(crate) async fn resolve_key(c: &Client, user: Option<&str>, text: &str) -> anyhow::Result<u64> {
    let keys = c.list_preauth_keys(user).await?;
    // Listings show `hskey-auth-<prefix>-***`; the key is `hskey-auth-<prefix>-<secret>`.
    let core = |s: &str| {
        s.trim()
            .trim_start_matches("hskey-auth-")
            .trim_end_matches('*')
            .trim_end_matches('-')
            .to_string()
    };
    let given = core(text);
    let found: Vec<u64> = keys
        .iter()
        .filter(|k| {
            let prefix = core(&k.key);
            !prefix.is_empty() && given.starts_with(&prefix)
        })
        .map(|k| k.id)
        .collect();
    match found.as_slice() {
        [id] => Ok(*id),
        [] => bail!("no pre-auth key matches the given key"),
        _ => bail!("the given prefix matches several pre-auth keys; use the id (-i)"),
    }
}

pub(crate) fn owner_of(k: &dto::PreAuthKey) -> String {
    if !k.acl_tags.is_empty() {
        k.acl_tags.join(",")
    } else {
        k.user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_else(|| "-".into())
    }
}

pub(crate) fn preauthkeys_table(
    keys: &[dto::PreAuthKey],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|k| {
            let expired = k.expiration.is_some_and(|e| e <= now);
            vec![
                k.id.to_string(),
                k.key.clone(),
                k.reusable.to_string(),
                k.ephemeral.to_string(),
                k.used.to_string(),
                match k.expiration.as_ref() {
                    Some(e) if expired => format!("{} (expired)", fmt_time(e)),
                    Some(e) => fmt_time(e),
                    None => "never".into(),
                },
                fmt_time(&k.created_at),
                owner_of(k),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Key/Prefix",
            "Reusable",
            "Ephemeral",
            "Used",
            "Expiration",
            "Created",
            "Owner",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::testing::{parse, Top};
    use crate::cli::users::{users, UsersCmd};
    use serde_json::{json, Value};

    #[test]
    fn parses_preauthkeys() {
        match parse("preauthkeys create -u alice --reusable --tags tag:a,tag:b -e 90d")
            .expect("parses")
        {
            Top::Preauthkeys(PreauthkeysCmd::Create {
                user,
                reusable,
                ephemeral,
                expiration,
                tags,
            }) => {
                assert_eq!(user.as_deref(), Some("alice"));
                assert!(reusable && !ephemeral);
                assert_eq!(expiration, Duration::from_secs(90 * 86400));
                assert_eq!(tags, ["tag:a", "tag:b"]);
            }
            other => panic!("{other:?}"),
        }
        match parse("authkeys create --user 3").expect("parses") {
            Top::Preauthkeys(PreauthkeysCmd::Create {
                expiration, tags, ..
            }) => {
                assert_eq!(
                    expiration,
                    Duration::from_secs(3600),
                    "Headscale's default is 1h"
                );
                assert!(tags.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(parse("preauthkeys create -u a -e soon").is_err());
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(matches!(
            parse("preauthkeys revoke -u alice hskey-auth-abc").expect("parses"),
            Top::Preauthkeys(PreauthkeysCmd::Expire { key: Some(k), .. }) if k == "hskey-auth-abc"
        ));
        assert!(matches!(
            parse("preauthkeys expire -i 4").expect("parses"),
            Top::Preauthkeys(PreauthkeysCmd::Expire {
                id: Some(4),
                key: None,
                ..
            })
        ));
        assert!(parse("preauthkeys expire").is_err());
        assert!(matches!(
            parse("preauthkey ls -u bob").expect("parses"),
            Top::Preauthkeys(PreauthkeysCmd::List { .. })
        ));
    }

    /// Against a real server on a temporary socket.
    mod live {
        use super::*;
        use crate::cli::test_server::server;

        #[tokio::test]
        async fn preauthkeys_round_trip() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            let none = |_: &str| -> anyhow::Result<bool> { Ok(false) };
            users(
                UsersCmd::Create {
                    name: "alice".into(),
                    display_name: None,
                    email: None,
                    picture_url: None,
                },
                &c,
                Output::Table,
                &none,
            )
            .await
            .expect("user");
            let now = chrono::Utc::now();
            let create = |user: Option<&str>, tags: &[&str]| PreauthkeysCmd::Create {
                user: user.map(String::from),
                reusable: false,
                ephemeral: false,
                expiration: Duration::from_secs(3600),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            };
            let p = preauthkeys(create(Some("alice"), &[]), &c, Output::Table, now)
                .await
                .expect("create");
            let key = p.stdout.trim().to_string();
            assert_eq!(
                p.stdout.lines().count(),
                1,
                "only the key on stdout: {}",
                p.stdout
            );
            assert!(key.len() > 20, "{key}");
            assert!(!p.stderr.contains(&key));

            let p = preauthkeys(create(None, &["tag:web"]), &c, Output::Json, now)
                .await
                .expect("create");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert!(v["key"].as_str().is_some_and(|k| k.len() > 20), "{v}");
            assert_eq!(v["acl_tags"], json!(["tag:web"]));

            let e = preauthkeys(create(Some("nobody"), &[]), &c, Output::Table, now)
                .await
                .expect_err("no user");
            assert!(e.to_string().contains("not found"), "{e}");
            let e = preauthkeys(create(None, &["web"]), &c, Output::Table, now)
                .await
                .expect_err("bad tag");
            assert!(e.to_string().contains("tag"), "{e}");

            let p = preauthkeys(PreauthkeysCmd::List { user: None }, &c, Output::Table, now)
                .await
                .expect("list");
            assert_eq!(p.stdout.lines().count(), 3, "{}", p.stdout);
            assert!(!p.stdout.contains(&key), "listing shows no secrets");

            // Expire by the full key, as shown at creation.
            preauthkeys(
                PreauthkeysCmd::Expire {
                    user: Some("alice".into()),
                    id: None,
                    key: Some(key),
                },
                &c,
                Output::Table,
                now,
            )
            .await
            .expect("expire");
            let p = preauthkeys(
                PreauthkeysCmd::List {
                    user: Some("alice".into()),
                },
                &c,
                Output::Json,
                now,
            )
            .await
            .expect("list");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            let exp = v[0]["expiration"]
                .as_str()
                .and_then(|s| dto::parse_ts(s).ok().flatten())
                .expect("expiration");
            assert!(exp <= chrono::Utc::now());
            let e = preauthkeys(
                PreauthkeysCmd::Expire {
                    user: Some("alice".into()),
                    id: Some(2),
                    key: None,
                },
                &c,
                Output::Table,
                now,
            )
            .await
            .expect_err("key 2 is tagged, not alice's");
            assert!(e.to_string().contains("no pre-auth key"), "{e}");
        }
    }
}
