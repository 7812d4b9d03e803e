//! The Headscale-style admin CLI (`users`, `preauthkeys`, `nodes`): clap
//! types, and runners that talk to the running server's REST API: over its
//! local unix socket (the `unix_socket` of the config; no API key needed),
//! or, when `cli.address` is set, over TCP to its main listener with
//! `cli.api_key` (see [`client`]).
//!
//! Output: a readable table by default; `-o json`, `-o json-line` and
//! `-o yaml` print what Headscale's CLI prints for the same command: the
//! object or list itself (no `{"users": ...}` envelope), snake_case field
//! names, numeric ids. Timestamps are RFC 3339 strings.
//!
//! One module per command family (`users`, `preauthkeys`, `nodes`,
//! `policy`), each with its clap types, its runner and its tests; `output`
//! renders for all of them.
//!
//! Dependencies of these files (crates/ironscale/Cargo.toml):
//!   anyhow, clap (derive), serde_json, chrono, humantime,
//!   ironscale-api with its `client` feature (`ironscale_api::client`, the
//!   typed client, and `ironscale_api::dto`, the REST JSON types).
//! Tests also use: tempfile, ironscale-api, ironscale-state, ironscale-store
//! (they start a real API server on a temporary socket).

mod apikeys;
mod audit;
mod auth;
pub mod doctor;
pub mod netcheck;
mod nodes;
pub mod oidc;
mod output;
pub mod policy;
mod preauthkeys;
mod routes;
mod users;

use std::io::IsTerminal;

use anyhow::bail;
use ironscale_api::client::{ApiKey, Client, RemoteOptions};
use ironscale_config::Config;

pub use apikeys::ApikeysCmd;
pub use audit::AuditCmd;
pub use auth::AuthCmd;
pub use nodes::NodesCmd;
pub use output::Output;
pub use preauthkeys::PreauthkeysCmd;
pub(crate) use routes::legacy as legacy_routes;
pub use routes::RoutesCmd;
pub use users::UsersCmd;

// ---------------------------------------------------------------------------
// Runners (what main.rs calls)

/// The client every API command uses: `cli.address` with `cli.api_key`
/// (and `cli.timeout`, `cli.insecure`) when an address is set, else the
/// local `unix_socket`. Skipping certificate checks is said on stderr.
pub fn client(cfg: &Config) -> anyhow::Result<Client> {
    let Some(address) = &cfg.cli.address else {
        return Ok(Client::unix(&cfg.unix_socket));
    };
    let c = Client::remote(RemoteOptions {
        address: address.clone(),
        api_key: ApiKey::new(cfg.cli.api_key.expose()),
        timeout: cfg.cli.timeout,
        insecure: cfg.cli.insecure,
    })?;
    if let ironscale_api::client::Endpoint::Tcp(r) = c.endpoint() {
        if r.skips_verification() {
            eprintln!(
                "WARNING: cli.insecure is set: the certificate of {} is NOT verified; anyone on the way can read the API key and answer in the server's place",
                r.url()
            );
        }
    }
    Ok(c)
}

pub async fn run_users(cmd: UsersCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(users::users(cmd, c, out, &terminal_confirm).await?)
}

pub async fn run_preauthkeys(cmd: PreauthkeysCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(preauthkeys::preauthkeys(cmd, c, out, chrono::Utc::now()).await?)
}

pub async fn run_apikeys(cmd: ApikeysCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(apikeys::apikeys(cmd, c, out, chrono::Utc::now()).await?)
}

pub async fn run_audit(cmd: AuditCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(audit::audit(cmd, c, out, chrono::Utc::now()).await?)
}

pub async fn run_nodes(cmd: NodesCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(nodes::nodes(cmd, c, out, &terminal_confirm, chrono::Utc::now()).await?)
}

pub async fn run_auth(cmd: AuthCmd, c: &Client, out: Output) -> anyhow::Result<()> {
    emit(auth::auth(cmd, c, out, chrono::Utc::now()).await?)
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
pub(crate) type Confirm = dyn Fn(&str) -> anyhow::Result<bool> + Sync;

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

pub(crate) fn confirmed(force: bool, confirm: &Confirm, question: &str) -> anyhow::Result<bool> {
    if force {
        return Ok(true);
    }
    confirm(question)
}

#[cfg(test)]
pub(crate) mod test_server {
    use std::path::PathBuf;
    use std::time::Duration;

    pub(crate) struct Server {
        _dir: tempfile::TempDir,
        pub(crate) sock: PathBuf,
        /// The server's state (to set up what the API cannot, such as a
        /// client waiting for its interactive registration).
        pub(crate) state: ironscale_state::State,
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
        let router = ironscale_api::router(state.clone());
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
            state,
            stop: Some(tx),
        }
    }
}

/// What the command families' tests share: a parser of their commands, a
/// fixed time, a confirmation that refuses like a run without a terminal.
#[cfg(test)]
pub(crate) mod testing {
    use chrono::TimeZone;
    use clap::{Parser, Subcommand};

    use super::{AuthCmd, NodesCmd, PreauthkeysCmd, UsersCmd};

    #[derive(Parser, Debug)]
    pub(crate) struct T {
        #[command(subcommand)]
        cmd: Top,
    }
    #[derive(Subcommand, Debug, PartialEq)]
    pub(crate) enum Top {
        #[command(subcommand, visible_alias = "user")]
        Users(UsersCmd),
        #[command(subcommand, visible_aliases = ["preauthkey", "authkeys"])]
        Preauthkeys(PreauthkeysCmd),
        #[command(subcommand, visible_alias = "node")]
        Nodes(NodesCmd),
        #[command(subcommand)]
        Auth(AuthCmd),
    }

    pub(crate) fn parse(args: &str) -> Result<Top, clap::Error> {
        T::try_parse_from(std::iter::once("ironscale").chain(args.split_whitespace()))
            .map(|t| t.cmd)
    }

    pub(crate) fn at(s: i64) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc
            .timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid")
    }

    pub(crate) fn no_tty(q: &str) -> anyhow::Result<bool> {
        anyhow::bail!("{q}: not asking without a terminal; pass --force to confirm")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::users::users;

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
}
