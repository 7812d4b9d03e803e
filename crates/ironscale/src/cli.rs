//! The Headscale-style admin CLI (`users`, `preauthkeys`, `nodes`): clap
//! types, and runners that talk to the running server's REST API over its
//! local unix socket (the `unix_socket` of the config; no API key needed).
//!
//! Output: a readable table by default; `-o json`, `-o json-line` and
//! `-o yaml` print what Headscale's CLI prints for the same command: the
//! object or list itself (no `{"users": ...}` envelope), snake_case field
//! names, numeric ids. Timestamps are RFC 3339 strings.
//!
//! Dependencies of this file (crates/ironscale/Cargo.toml):
//!   anyhow, clap (derive), serde_json, chrono, humantime,
//!   ironscale-api with its `client` feature (`ironscale_api::client`, the
//!   typed client, and `ironscale_api::dto`, the REST JSON types).
//! Tests also use: tempfile, ironscale-api, ironscale-state, ironscale-store
//! (they start a real API server on a temporary socket).

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};
use ironscale_api::client::{Client, UserFilter};
use ironscale_api::dto;
use serde_json::Value;

// ---------------------------------------------------------------------------
// Command-line types

/// `-o/--output`: Headscale's words (`""`, `json`, `json-line`, `yaml`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Output {
    #[default]
    Table,
    Json,
    JsonLine,
    Yaml,
}

impl Output {
    pub fn parse(s: &str) -> anyhow::Result<Output> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "table" => Ok(Output::Table),
            "json" => Ok(Output::Json),
            "json-line" | "jsonline" | "json_line" => Ok(Output::JsonLine),
            "yaml" | "yml" => Ok(Output::Yaml),
            other => bail!("unknown output format {other:?}: use json, json-line or yaml (or nothing for a table)"),
        }
    }
}

/// Pick a user by id or by name (exactly one), or by a bare name or id as in
/// many Headscale guides (`users destroy bob`).
#[derive(Args, Debug, Clone, PartialEq, Eq, Default)]
#[group(required = true, multiple = false)]
pub struct UserSelector {
    /// The user's numeric id.
    #[arg(short = 'i', long)]
    pub identifier: Option<u64>,
    /// The user's name.
    #[arg(short = 'n', long)]
    pub name: Option<String>,
    /// The user's name or id.
    #[arg(value_name = "USER")]
    pub user: Option<String>,
}

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum UsersCmd {
    /// Create a user.
    #[command(visible_aliases = ["c", "new"])]
    Create {
        name: String,
        #[arg(short = 'd', long)]
        display_name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
        /// Accepted for Headscale compatibility; not stored yet.
        #[arg(short = 'p', long)]
        picture_url: Option<String>,
    },
    /// List users (optionally only those matching every filter given).
    #[command(visible_aliases = ["ls", "show"])]
    List {
        #[arg(short = 'i', long)]
        identifier: Option<u64>,
        #[arg(short = 'n', long)]
        name: Option<String>,
        #[arg(short = 'e', long)]
        email: Option<String>,
    },
    /// Rename a user: `--name OLD --new-name NEW`, `--identifier ID NEW`, or `OLD NEW`.
    #[command(visible_alias = "mv")]
    Rename {
        /// The user's numeric id.
        #[arg(short = 'i', long, conflicts_with = "name")]
        identifier: Option<u64>,
        /// The user's current name.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// The new name.
        #[arg(short = 'r', long = "new-name")]
        new_name: Option<String>,
        /// `OLD NEW`, or `NEW` when the user is picked with --identifier/--name.
        #[arg(value_name = "NAME", num_args = 0..=2)]
        names: Vec<String>,
    },
    /// Delete a user (it must own no nodes).
    #[command(visible_alias = "delete")]
    Destroy {
        #[command(flatten)]
        user: UserSelector,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
}

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

#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum NodesCmd {
    /// List nodes.
    #[command(visible_aliases = ["ls", "show"])]
    List {
        /// Only the nodes of this user (name or id).
        #[arg(short = 'u', long)]
        user: Option<String>,
        /// Only nodes carrying all these tags (tag:a,tag:b). Without a value
        /// (Headscale's old "show tags" switch) it filters nothing.
        #[arg(short = 't', long, value_delimiter = ',', num_args = 0..)]
        tags: Option<Vec<String>>,
    },
    /// Delete a node.
    Delete {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Do not ask for confirmation.
        #[arg(long)]
        force: bool,
    },
    /// Expire a node's key now (or at --expiry): it must log in again.
    #[command(visible_aliases = ["logout", "e"])]
    Expire {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// When, as an RFC 3339 time (default: now).
        #[arg(short = 'e', long)]
        expiry: Option<String>,
    },
    /// Give a node a new MagicDNS name.
    Rename {
        #[arg(short = 'i', long)]
        identifier: u64,
        #[arg(value_name = "NEW_NAME")]
        new_name: String,
    },
    /// Set a node's tags (each must be defined in the policy's tagOwners).
    Tag {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Tags, comma separated or repeated: -t tag:a,tag:b
        #[arg(short = 't', long, value_delimiter = ',', required = true)]
        tags: Vec<String>,
    },
    /// Approve the routes a node advertises (subnets, or 0.0.0.0/0 and ::/0 for an exit node).
    #[command(name = "approve-routes")]
    ApproveRoutes {
        #[arg(short = 'i', long)]
        identifier: u64,
        /// Routes, comma separated: -r 10.0.0.0/24,0.0.0.0/0 (empty: approve none)
        #[arg(short = 'r', long, value_delimiter = ',')]
        routes: Vec<String>,
    },
}

/// Go-style and human durations: 30m, 1h, 1h30m, 90d, 2w.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 30m, 1h, 1h30m, 90d)"))
}

// ---------------------------------------------------------------------------
// Runners (what main.rs calls)

pub async fn run_users(cmd: UsersCmd, socket: &Path, out: Output) -> anyhow::Result<()> {
    emit(users(cmd, &Client::unix(socket), out, &terminal_confirm).await?)
}

pub async fn run_preauthkeys(
    cmd: PreauthkeysCmd,
    socket: &Path,
    out: Output,
) -> anyhow::Result<()> {
    emit(preauthkeys(cmd, &Client::unix(socket), out, chrono::Utc::now()).await?)
}

pub async fn run_nodes(cmd: NodesCmd, socket: &Path, out: Output) -> anyhow::Result<()> {
    emit(
        nodes(
            cmd,
            &Client::unix(socket),
            out,
            &terminal_confirm,
            chrono::Utc::now(),
        )
        .await?,
    )
}

/// What a command prints: data on stdout, remarks on stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Printed {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Printed {
    pub(crate) fn out(s: String) -> Self {
        Printed {
            stdout: s,
            stderr: String::new(),
        }
    }
}

pub(crate) fn emit(p: Printed) -> anyhow::Result<()> {
    use std::io::Write;
    if !p.stderr.is_empty() {
        eprint!("{}", p.stderr);
    }
    let mut so = std::io::stdout().lock();
    so.write_all(p.stdout.as_bytes())?;
    so.flush()?;
    Ok(())
}

/// Asks before destructive commands: `Ok(true)` to go on. Given the question.
type Confirm = dyn Fn(&str) -> anyhow::Result<bool> + Sync;

fn terminal_confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!("{question}: not asking without a terminal; pass --force to confirm");
    }
    eprint!("{question}? [y/N] ");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(
        line.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn confirmed(force: bool, confirm: &Confirm, question: &str) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    confirm(question)
}

/// The REST JSON of a DTO (what `render` turns into the CLI's shape).
fn rest<T: serde::Serialize>(v: &T) -> anyhow::Result<Value> {
    Ok(serde_json::to_value(v)?)
}

async fn users(
    cmd: UsersCmd,
    c: &Client,
    out: Output,
    confirm: &Confirm,
) -> anyhow::Result<Printed> {
    match cmd {
        UsersCmd::Create {
            name,
            display_name,
            email,
            picture_url,
        } => {
            let req = dto::CreateUserRequest {
                name,
                display_name: display_name.unwrap_or_default(),
                email: email.unwrap_or_default(),
                picture_url: picture_url.unwrap_or_default(),
            };
            let u = c.create_user(&req).await?;
            Ok(Printed::out(render(out, &rest(&u)?, || {
                format!("User {:?} created (ID {})\n", u.name, u.id)
            })))
        }
        UsersCmd::List {
            identifier,
            name,
            email,
        } => {
            let filter = UserFilter {
                id: identifier,
                name,
                email,
            };
            let users = c.list_users(&filter).await?;
            Ok(Printed::out(render(out, &rest(&users)?, || {
                users_table(&users)
            })))
        }
        UsersCmd::Rename {
            identifier,
            name,
            new_name,
            names,
        } => {
            let (user, new_name) = rename_args(identifier, name, new_name, names)?;
            let u = select_user(c, &user).await?;
            let r = c.rename_user(u.id, &new_name).await?;
            Ok(Printed::out(render(out, &rest(&r)?, || {
                format!("User {:?} renamed to {:?}\n", u.name, r.name)
            })))
        }
        UsersCmd::Destroy { user, force } => {
            let u = select_user(c, &user).await?;
            if !confirmed(
                force,
                confirm,
                &format!("Delete user {:?} (ID {})", u.name, u.id),
            )? {
                return Ok(Printed {
                    stdout: String::new(),
                    stderr: "Aborted: nothing deleted\n".into(),
                });
            }
            c.delete_user(u.id).await?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("User {:?} destroyed\n", u.name)
            })))
        }
    }
}

async fn preauthkeys(
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
async fn resolve_key(c: &Client, user: Option<&str>, text: &str) -> anyhow::Result<u64> {
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

async fn nodes(
    cmd: NodesCmd,
    c: &Client,
    out: Output,
    confirm: &Confirm,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Printed> {
    match cmd {
        NodesCmd::List { user, tags } => {
            let want: Vec<String> = tags
                .unwrap_or_default()
                .into_iter()
                .filter(|t| !t.is_empty())
                .collect();
            let list: Vec<dto::Node> = c
                .list_nodes(user.as_deref())
                .await?
                .into_iter()
                .filter(|n| want.iter().all(|t| n.tags.contains(t)))
                .collect();
            Ok(Printed::out(render(out, &rest(&list)?, || {
                nodes_table(&list, now)
            })))
        }
        NodesCmd::Delete { identifier, force } => {
            let n = c.get_node(identifier).await?;
            let q = format!("Delete node {:?} (ID {identifier})", n.given_name);
            if !confirmed(force, confirm, &q)? {
                return Ok(Printed {
                    stdout: String::new(),
                    stderr: "Aborted: nothing deleted\n".into(),
                });
            }
            c.delete_node(identifier).await?;
            Ok(Printed::out(render(out, &rest(&dto::Empty {})?, || {
                format!("Node {:?} deleted\n", n.given_name)
            })))
        }
        NodesCmd::Expire { identifier, expiry } => {
            let at = match expiry {
                Some(e) => dto::parse_ts(&e)
                    .map_err(|err| anyhow!("invalid --expiry {e:?}: {err} (use RFC 3339)"))?,
                None => None,
            };
            let n = c.expire_node(identifier, at).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} expired\n", n.given_name)
            })))
        }
        NodesCmd::Rename {
            identifier,
            new_name,
        } => {
            let n = c.rename_node(identifier, &new_name).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node renamed to {:?}\n", n.given_name)
            })))
        }
        NodesCmd::Tag { identifier, tags } => {
            let n = c.set_tags(identifier, tags).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!("Node {:?} tagged {}\n", n.given_name, n.tags.join(","))
            })))
        }
        NodesCmd::ApproveRoutes { identifier, routes } => {
            let routes: Vec<String> = routes.into_iter().filter(|r| !r.is_empty()).collect();
            let n = c.approve_routes(identifier, routes.clone()).await?;
            Ok(Printed::out(render(out, &rest(&n)?, || {
                format!(
                    "Node {:?}: approved routes {}\n",
                    n.given_name,
                    routes.join(", ")
                )
            })))
        }
    }
}

/// A user given as a name or an id.
async fn find_user(c: &Client, name_or_id: &str) -> anyhow::Result<dto::User> {
    if let Some(id) = dto::parse_id(name_or_id) {
        let by_id = UserFilter {
            id: Some(id),
            ..UserFilter::default()
        };
        if let Some(u) = c.list_users(&by_id).await?.pop() {
            return Ok(u);
        }
    }
    let by_name = UserFilter {
        name: Some(name_or_id.to_string()),
        ..UserFilter::default()
    };
    c.list_users(&by_name)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("user {name_or_id:?} not found"))
}

/// The user to rename and the new name, from any of the accepted forms.
fn rename_args(
    identifier: Option<u64>,
    name: Option<String>,
    new_name: Option<String>,
    mut names: Vec<String>,
) -> anyhow::Result<(UserSelector, String)> {
    let picked = identifier.is_some() || name.is_some();
    let user = if picked {
        UserSelector {
            identifier,
            name,
            user: None,
        }
    } else if names.is_empty() {
        bail!("say which user to rename: `users rename OLD NEW` or `--name OLD --new-name NEW`")
    } else {
        UserSelector {
            user: Some(names.remove(0)),
            ..UserSelector::default()
        }
    };
    let new_name = match (new_name, names.as_slice()) {
        (Some(n), []) => n,
        (None, [n]) => n.clone(),
        (None, []) => bail!("give the new name: `users rename OLD NEW` or `--new-name NEW`"),
        _ => bail!("too many names: use `users rename OLD NEW` or `--name OLD --new-name NEW`"),
    };
    Ok((user, new_name))
}

async fn select_user(c: &Client, s: &UserSelector) -> anyhow::Result<dto::User> {
    let (filter, what) = match (&s.identifier, &s.name, &s.user) {
        (Some(id), _, _) => (
            UserFilter {
                id: Some(*id),
                ..UserFilter::default()
            },
            format!("with id {id}"),
        ),
        (None, Some(n), _) => (
            UserFilter {
                name: Some(n.clone()),
                ..UserFilter::default()
            },
            format!("{n:?}"),
        ),
        (None, None, Some(name_or_id)) => return find_user(c, name_or_id).await,
        (None, None, None) => bail!("give the user's name, --identifier or --name"),
    };
    c.list_users(&filter)
        .await?
        .pop()
        .ok_or_else(|| anyhow!("user {what} not found"))
}

// ---------------------------------------------------------------------------
// Rendering

/// `table` for the default format; the Headscale-CLI JSON/YAML of `rest` otherwise.
pub(crate) fn render(out: Output, rest: &Value, table: impl FnOnce() -> String) -> String {
    let v = cli_json(rest);
    match out {
        Output::Table => table(),
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default()),
        Output::JsonLine => format!("{}\n", serde_json::to_string(&v).unwrap_or_default()),
        Output::Yaml => to_yaml(&v),
    }
}

/// REST JSON to what Headscale's CLI prints: snake_case keys, numeric ids.
fn cli_json(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let key = snake_case(k);
                    let val = match (key.as_str(), val) {
                        ("id", Value::String(s)) => s
                            .parse::<u64>()
                            .map(Value::from)
                            .unwrap_or_else(|_| val.clone()),
                        _ => cli_json(val),
                    };
                    (key, val)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(cli_json).collect()),
        other => other.clone(),
    }
}

fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Aligned columns separated by " | ", header first.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                s.push_str(" | ");
            }
            s.push_str(cell);
            s.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(&mut headers.iter().copied());
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

fn fmt_time(ts: &chrono::DateTime<chrono::Utc>) -> String {
    ts.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn fmt_opt_time(ts: Option<&chrono::DateTime<chrono::Utc>>, none: &str) -> String {
    ts.map(fmt_time).unwrap_or_else(|| none.to_string())
}

/// `mkey:0123abcd…` → `mkey:0123abcd`.
fn short_key(k: &str) -> String {
    match k.split_once(':') {
        Some((p, hex)) => format!("{p}:{}", hex.get(..8).unwrap_or(hex)),
        None => k.get(..12).unwrap_or(k).to_string(),
    }
}

fn users_table(users: &[dto::User]) -> String {
    let rows: Vec<Vec<String>> = users
        .iter()
        .map(|u| {
            vec![
                u.id.to_string(),
                u.display_name.clone(),
                u.name.clone(),
                u.email.clone(),
                fmt_time(&u.created_at),
            ]
        })
        .collect();
    table(&["ID", "Name", "Username", "Email", "Created"], &rows)
}

fn owner_of(k: &dto::PreAuthKey) -> String {
    if !k.acl_tags.is_empty() {
        k.acl_tags.join(",")
    } else {
        k.user
            .as_ref()
            .map(|u| u.name.clone())
            .unwrap_or_else(|| "-".into())
    }
}

fn preauthkeys_table(keys: &[dto::PreAuthKey], now: chrono::DateTime<chrono::Utc>) -> String {
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

fn nodes_table(nodes: &[dto::Node], now: chrono::DateTime<chrono::Utc>) -> String {
    let rows: Vec<Vec<String>> = nodes
        .iter()
        .map(|n| {
            let expired = n.expiry.is_some_and(|e| e <= now);
            vec![
                n.id.to_string(),
                n.name.clone(),
                n.given_name.clone(),
                short_key(&n.machine_key),
                short_key(&n.node_key),
                n.user
                    .as_ref()
                    .map(|u| u.name.clone())
                    .unwrap_or_else(|| "-".into()),
                n.tags.join(","),
                n.ip_addresses.join(", "),
                n.pre_auth_key
                    .as_ref()
                    .is_some_and(|k| k.ephemeral)
                    .to_string(),
                fmt_opt_time(n.last_seen.as_ref(), "never"),
                fmt_opt_time(n.expiry.as_ref(), "never"),
                if n.online { "online" } else { "offline" }.to_string(),
                if expired { "yes" } else { "no" }.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "Hostname",
            "Name",
            "MachineKey",
            "NodeKey",
            "User",
            "Tags",
            "IP addresses",
            "Ephemeral",
            "Last seen",
            "Expiration",
            "Connected",
            "Expired",
        ],
        &rows,
    )
}

/// YAML for a JSON value, through serde-saphyr: block style with lists
/// indented under their key, strings quoted when a YAML 1.1 or 1.2 reader
/// would take them for something else (`"yes"`, `"100.64.0.1"`, timestamps),
/// multi-line strings (a policy) as literal blocks, long lines never folded.
fn to_yaml(v: &Value) -> String {
    let mut o = serde_saphyr::SerializerOptions::default();
    o.compact_list_indent = false;
    o.folded_wrap_chars = usize::MAX;
    serde_saphyr::to_string_with_options(v, o).unwrap_or_default()
}

#[cfg(test)]
pub(crate) mod test_server {
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) struct Server {
        _dir: tempfile::TempDir,
        pub(crate) sock: PathBuf,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(s) = self.stop.take() {
                let _ = s.send(());
            }
        }
    }

    pub(crate) async fn server() -> Server {
        server_with(Default::default()).await
    }

    /// A server whose state has these settings.
    pub(crate) async fn server_with(settings: ironscale_state::Settings) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
            dir.path().join("db.sqlite"),
        ))
        .await
        .expect("store");
        let state = ironscale_state::State::load(store, settings, Default::default())
            .await
            .expect("state");
        let sock = dir.path().join("run/ironscale.sock");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let router = ironscale_api::router(state);
        let path = sock.clone();
        tokio::spawn(async move {
            let _ = ironscale_http::serve_unix(&path, 0o770, router, async {
                let _ = rx.await;
            })
            .await;
        });
        for _ in 0..200 {
            if sock.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Server {
            _dir: dir,
            sock,
            stop: Some(tx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use clap::Parser;
    use serde_json::json;

    #[derive(Parser, Debug)]
    struct T {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(Subcommand, Debug, PartialEq)]
    enum Top {
        #[command(subcommand, visible_alias = "user")]
        Users(UsersCmd),
        #[command(subcommand, visible_aliases = ["preauthkey", "authkeys"])]
        Preauthkeys(PreauthkeysCmd),
        #[command(subcommand, visible_alias = "node")]
        Nodes(NodesCmd),
    }

    fn parse(args: &str) -> Result<Top, clap::Error> {
        T::try_parse_from(std::iter::once("ironscale").chain(args.split_whitespace()))
            .map(|t| t.cmd)
    }

    fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    #[test]
    fn parses_headscale_users_words() {
        assert_eq!(
            parse("users create alice -d Alice -e a@example.com").expect("parses"),
            Top::Users(UsersCmd::Create {
                name: "alice".into(),
                display_name: Some("Alice".into()),
                email: Some("a@example.com".into()),
                picture_url: None
            })
        );
        assert!(matches!(
            parse("user ls").expect("parses"),
            Top::Users(UsersCmd::List { .. })
        ));
        assert!(matches!(
            parse("users list --name bob").expect("parses"),
            Top::Users(UsersCmd::List { name: Some(n), identifier: None, .. }) if n == "bob"
        ));
        // Every accepted form of `users rename` picks the same user and new name.
        let rename = |args: &str| match parse(args).expect("parses") {
            Top::Users(UsersCmd::Rename {
                identifier,
                name,
                new_name,
                names,
            }) => rename_args(identifier, name, new_name, names),
            other => panic!("{other:?}"),
        };
        let by_name = UserSelector {
            name: Some("bob".into()),
            ..UserSelector::default()
        };
        let bare = UserSelector {
            user: Some("bob".into()),
            ..UserSelector::default()
        };
        let by_id = UserSelector {
            identifier: Some(3),
            ..UserSelector::default()
        };
        for (args, want) in [
            ("users rename --name bob --new-name robert", &by_name),
            ("users rename -n bob robert", &by_name),
            ("users rename bob robert", &bare),
            ("users rename bob --new-name robert", &bare),
            ("users mv -i 3 -r robert", &by_id),
            ("users mv -i 3 robert", &by_id),
        ] {
            let (user, new_name) = rename(args).unwrap_or_else(|e| panic!("{args}: {e}"));
            assert_eq!((&user, new_name.as_str()), (want, "robert"), "{args}");
        }
        for args in [
            "users rename --name bob",
            "users rename bob",
            "users rename bob robert --new-name rob",
            "users rename -n bob robert rob",
        ] {
            assert!(rename(args).is_err(), "{args} should be refused");
        }
        assert!(parse("users rename").is_ok_and(|_| rename("users rename").is_err()));
        assert!(parse("users rename -i 3 -n bob robert").is_err());

        assert!(matches!(
            parse("users delete --name bob --force").expect("parses"),
            Top::Users(UsersCmd::Destroy { force: true, .. })
        ));
        assert!(matches!(
            parse("users destroy -i 2").expect("parses"),
            Top::Users(UsersCmd::Destroy {
                force: false,
                user: UserSelector {
                    identifier: Some(2),
                    ..
                }
            })
        ));
        assert!(matches!(
            parse("users destroy bob --force").expect("parses"),
            Top::Users(UsersCmd::Destroy {
                force: true,
                user: UserSelector { user: Some(u), .. }
            }) if u == "bob"
        ));
        // Exactly one of --identifier / --name / USER.
        assert!(parse("users destroy").is_err());
        assert!(parse("users destroy -i 2 --name bob").is_err());
        assert!(parse("users destroy bob --name bob").is_err());
    }

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

    #[test]
    fn parses_nodes() {
        assert_eq!(
            parse("nodes list --user alice").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: Some("alice".into()),
                tags: None
            })
        );
        assert_eq!(
            parse("node ls --tags").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: None,
                tags: Some(vec![])
            })
        );
        assert_eq!(
            parse("nodes list -t tag:a,tag:b").expect("parses"),
            Top::Nodes(NodesCmd::List {
                user: None,
                tags: Some(vec!["tag:a".into(), "tag:b".into()])
            })
        );
        assert_eq!(
            parse("nodes delete -i 5 --force").expect("parses"),
            Top::Nodes(NodesCmd::Delete {
                identifier: 5,
                force: true
            })
        );
        assert_eq!(
            parse("nodes logout -i 5").expect("parses"),
            Top::Nodes(NodesCmd::Expire {
                identifier: 5,
                expiry: None
            })
        );
        assert_eq!(
            parse("nodes rename -i 5 web-1").expect("parses"),
            Top::Nodes(NodesCmd::Rename {
                identifier: 5,
                new_name: "web-1".into()
            })
        );
        assert!(parse("nodes delete").is_err());
        assert!(parse("nodes delete -i x").is_err());
    }

    #[test]
    fn output_words() {
        assert_eq!(Output::parse("").expect("ok"), Output::Table);
        assert_eq!(Output::parse("json").expect("ok"), Output::Json);
        assert_eq!(Output::parse("json-line").expect("ok"), Output::JsonLine);
        assert_eq!(Output::parse("YAML").expect("ok"), Output::Yaml);
        assert!(Output::parse("xml").is_err());
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "Name"],
            &[
                vec!["1".into(), "alice".into()],
                vec!["10".into(), "b".into()],
            ],
        );
        assert_eq!(t, "ID | Name\n1  | alice\n10 | b\n");
        let u = dto::User {
            id: 1,
            name: "alice".into(),
            created_at: at(0),
            display_name: "Alice A.".into(),
            email: "a@example.com".into(),
            provider_id: String::new(),
            provider: String::new(),
            profile_pic_url: String::new(),
        };
        assert_eq!(
            users_table(&[u]),
            "ID | Name     | Username | Email         | Created\n\
             1  | Alice A. | alice    | a@example.com | 2023-11-14 22:13:20\n"
        );
    }

    fn sample_node() -> dto::Node {
        serde_json::from_value(json!({
            "id": "3", "machineKey": format!("mkey:{}", "ab".repeat(32)), "nodeKey": format!("nodekey:{}", "cd".repeat(32)),
            "discoKey": "", "ipAddresses": ["100.64.0.3", "fd7a:115c:a1e0::3"], "name": "laptop", "givenName": "laptop-1",
            "user": {"id": "1", "name": "alice", "createdAt": "2023-11-14T22:13:20Z"},
            "lastSeen": null, "expiry": "2023-11-14T22:13:30Z", "preAuthKey": null, "createdAt": "2023-11-14T22:13:20Z",
            "registerMethod": "REGISTER_METHOD_AUTH_KEY", "online": true, "approvedRoutes": [], "availableRoutes": [],
            "subnetRoutes": [], "tags": []
        }))
        .expect("a node")
    }

    #[test]
    fn node_table_and_expiry() {
        let n = sample_node();
        let before = nodes_table(std::slice::from_ref(&n), at(0));
        let lines: Vec<&str> = before.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ID | Hostname | Name     | MachineKey    | NodeKey"),
            "{}",
            lines[0]
        );
        assert!(lines[1].contains("| mkey:abababab |"), "{}", lines[1]);
        assert!(
            lines[1].contains("| 100.64.0.3, fd7a:115c:a1e0::3 |"),
            "{}",
            lines[1]
        );
        assert!(
            lines[1].ends_with("| never     | 2023-11-14 22:13:30 | online    | no"),
            "{}",
            lines[1]
        );
        // Every row has its separators under the header's.
        let cols = |l: &str| l.match_indices(" | ").map(|(i, _)| i).collect::<Vec<_>>();
        assert_eq!(cols(lines[0]), cols(lines[1]));
        let after = nodes_table(&[n], at(60));
        assert!(
            after.lines().nth(1).expect("row").ends_with("| yes"),
            "{after}"
        );
    }

    #[test]
    fn cli_json_is_headscale_cli_shaped() {
        let rest = serde_json::to_value(dto::ListNodesResponse {
            nodes: vec![sample_node()],
        })
        .expect("json");
        let v = cli_json(&rest["nodes"]);
        let n = &v[0];
        assert_eq!(n["id"], 3);
        assert_eq!(n["given_name"], "laptop-1");
        assert_eq!(n["ip_addresses"][0], "100.64.0.3");
        assert_eq!(n["user"]["id"], 1);
        assert_eq!(n["user"]["created_at"], "2023-11-14T22:13:20Z");
        for k in [
            "name",
            "online",
            "tags",
            "last_seen",
            "expiry",
            "created_at",
            "register_method",
            "machine_key",
            "node_key",
        ] {
            assert!(n.get(k).is_some(), "missing {k}");
        }
        assert!(n.get("givenName").is_none());
        assert_eq!(snake_case("preAuthKey"), "pre_auth_key");
    }

    #[test]
    fn renders_each_output() {
        let v = json!({"id": "1", "name": "alice", "aclTags": ["tag:a"], "user": null, "createdAt": "2023-11-14T22:13:20Z"});
        assert_eq!(render(Output::Table, &v, || "T\n".into()), "T\n");
        assert_eq!(
            render(Output::JsonLine, &v, String::new),
            "{\"acl_tags\":[\"tag:a\"],\"created_at\":\"2023-11-14T22:13:20Z\",\"id\":1,\"name\":\"alice\",\"user\":null}\n"
        );
        let pretty = render(Output::Json, &v, String::new);
        assert_eq!(
            serde_json::from_str::<Value>(&pretty).expect("json"),
            cli_json(&v)
        );
        assert_eq!(
            render(Output::Yaml, &v, String::new),
            "acl_tags:\n  - tag:a\ncreated_at: \"2023-11-14T22:13:20Z\"\nid: 1\nname: alice\nuser: null\n"
        );
    }

    #[test]
    fn yaml_lists_of_objects_and_quoting() {
        let v = json!([{"a": 1, "b": {"c": "yes"}}, {"a": 2, "b": {}}, "x: y"]);
        assert_eq!(
            to_yaml(&v),
            "- a: 1\n  b:\n    c: \"yes\"\n- a: 2\n  b: {}\n- \"x: y\"\n"
        );
        assert_eq!(to_yaml(&json!([])), "[]\n");
        assert_eq!(to_yaml(&json!("100.64.0.1")), "\"100.64.0.1\"\n");
        assert_eq!(to_yaml(&json!("tag:web")), "tag:web\n");
        assert_eq!(to_yaml(&json!("")), "\"\"\n");
        // Long lines stay one line; a multi-line text is a literal block.
        let long = "word ".repeat(40);
        assert_eq!(to_yaml(&json!({"a": long})), format!("a: \"{long}\"\n"));
        assert_eq!(
            to_yaml(&json!({"policy": "{\n  \"acls\": []\n}\n"})),
            "policy: |\n  {\n    \"acls\": []\n  }\n"
        );
    }

    #[test]
    fn keys_are_shortened() {
        assert_eq!(short_key("nodekey:0123456789abcdef"), "nodekey:01234567");
    }

    // Query encoding and the server's error messages are tested with the
    // client (`ironscale_api::client`); here, what a command says.
    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("nope.sock");
        let list = || UsersCmd::List {
            identifier: None,
            name: None,
            email: None,
        };
        let no = |_: &str| -> anyhow::Result<bool> { Ok(false) };
        let e = users(list(), &Client::unix(&sock), Output::Table, &no)
            .await
            .expect_err("no server");
        assert_eq!(
            e.to_string(),
            format!(
                "cannot reach the ironscale server at {}: is `ironscale serve` running?",
                sock.display()
            )
        );
        // A stale socket file with nobody listening: the same message.
        drop(std::os::unix::net::UnixListener::bind(&sock).expect("bind"));
        let e = users(list(), &Client::unix(&sock), Output::Table, &no)
            .await
            .expect_err("no server");
        assert!(
            e.to_string().contains("is `ironscale serve` running?"),
            "{e}"
        );
    }

    /// The CLI against a real server on a temporary socket.
    mod live {
        use super::*;

        use crate::cli::test_server::server;

        fn no_tty(q: &str) -> anyhow::Result<bool> {
            bail!("{q}: not asking without a terminal; pass --force to confirm")
        }

        #[tokio::test]
        async fn users_round_trip() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            let create = |n: &str| UsersCmd::Create {
                name: n.into(),
                display_name: None,
                email: None,
                picture_url: None,
            };
            users(create("alice"), &c, Output::Table, &no_tty)
                .await
                .expect("create");
            let p = users(create("bob"), &c, Output::Json, &no_tty)
                .await
                .expect("create");
            let bob: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(bob["name"], "bob");
            assert_eq!(bob["id"], 2);
            let e = users(create("bob"), &c, Output::Table, &no_tty)
                .await
                .expect_err("duplicate");
            assert!(e.to_string().contains("already exists"), "{e}");

            let list = UsersCmd::List {
                identifier: None,
                name: None,
                email: None,
            };
            let p = users(list.clone(), &c, Output::Table, &no_tty)
                .await
                .expect("list");
            assert_eq!(p.stdout.lines().count(), 3, "{}", p.stdout);
            assert!(
                p.stdout
                    .lines()
                    .nth(2)
                    .expect("row")
                    .starts_with("2  |      | bob"),
                "{}",
                p.stdout
            );

            let sel = UserSelector {
                identifier: None,
                name: Some("bob".into()),
                user: None,
            };
            users(
                UsersCmd::Rename {
                    identifier: None,
                    name: None,
                    new_name: None,
                    names: vec!["bob".into(), "robert".into()],
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect("rename");
            let e = users(
                UsersCmd::Destroy {
                    user: sel,
                    force: true,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect_err("bob is now robert");
            assert!(e.to_string().contains("not found"), "{e}");

            let robert = UserSelector {
                identifier: Some(2),
                name: None,
                user: None,
            };
            let e = users(
                UsersCmd::Destroy {
                    user: robert.clone(),
                    force: false,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect_err("no terminal");
            assert!(e.to_string().contains("pass --force"), "{e}");
            users(
                UsersCmd::Destroy {
                    user: robert,
                    force: true,
                },
                &c,
                Output::Table,
                &no_tty,
            )
            .await
            .expect("destroy");
            let p = users(list, &c, Output::JsonLine, &no_tty)
                .await
                .expect("list");
            let v: Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v.as_array().map(Vec::len), Some(1));
        }

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

        #[tokio::test]
        async fn nodes_errors() {
            let s = server().await;
            let c = Client::unix(&s.sock);
            let none = |_: &str| -> anyhow::Result<bool> { Ok(false) };
            let now = chrono::Utc::now();
            let p = nodes(
                NodesCmd::List {
                    user: None,
                    tags: None,
                },
                &c,
                Output::Json,
                &none,
                now,
            )
            .await
            .expect("list");
            assert_eq!(
                serde_json::from_str::<Value>(&p.stdout).expect("json"),
                json!([])
            );
            let e = nodes(
                NodesCmd::List {
                    user: Some("ghost".into()),
                    tags: None,
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("unknown user");
            assert!(e.to_string().contains("not found"), "{e}");
            let e = nodes(
                NodesCmd::Delete {
                    identifier: 9,
                    force: true,
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("no node");
            assert!(e.to_string().contains("not found"), "{e}");
            let e = nodes(
                NodesCmd::Rename {
                    identifier: 9,
                    new_name: "x".into(),
                },
                &c,
                Output::Table,
                &none,
                now,
            )
            .await
            .expect_err("no node");
            assert!(e.to_string().contains("not found"), "{e}");
        }
    }
}
