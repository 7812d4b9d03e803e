//! `ironscale`: the server (`serve`), config checker (`configtest`) and the
//! Headscale-style admin CLI (`users`, `preauthkeys`, `nodes`, `auth`, `policy`).

mod cli;
mod derper;
mod metrics;
mod serve;
mod supervisor;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use ironscale_config::{Config, Severity};

#[derive(Parser, Debug)]
#[command(
    name = "ironscale",
    version,
    about = "Self-hosted Tailscale control server (Headscale-compatible)"
)]
struct Cli {
    /// Configuration file (Headscale's config.yaml keys). Without one, a local
    /// default is used (data in ./ironscale-data or $IRONSCALE_DATA_DIR).
    #[arg(short = 'c', long = "config", global = true, env = "IRONSCALE_CONFIG")]
    config: Option<PathBuf>,
    /// Output format: json, json-line, yaml (default: a readable table).
    #[arg(short = 'o', long = "output", global = true, default_value = "")]
    output: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the control server, embedded DERP relay and STUN server.
    Serve,
    /// Check the configuration and report every problem with its line.
    Configtest,
    /// Print the version.
    Version,
    /// Manage users.
    #[command(subcommand, visible_alias = "user")]
    Users(cli::UsersCmd),
    /// Manage pre-authentication keys.
    #[command(subcommand, visible_aliases = ["preauthkey", "authkeys"])]
    Preauthkeys(cli::PreauthkeysCmd),
    /// Manage API keys of the REST API (Headplane, scripts, the remote CLI).
    #[command(subcommand, visible_aliases = ["apikey", "api-keys"])]
    Apikeys(cli::ApikeysCmd),
    /// The audit log: every change through the CLI, the socket or the API.
    #[command(subcommand)]
    Audit(cli::AuditCmd),
    /// Manage nodes.
    #[command(subcommand, visible_aliases = ["node", "machines", "machine"])]
    Nodes(cli::NodesCmd),
    /// Complete or reject a client's interactive registration (Headscale 0.27+).
    #[command(subcommand)]
    Auth(cli::AuthCmd),
    /// Replaced by `nodes list-routes` / `nodes routes` (says so and exits 1).
    #[command(hide = true, visible_alias = "route")]
    Routes {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Check, get and set the policy; run the conformance corpus.
    #[command(subcommand, visible_alias = "acl")]
    Policy(cli::policy::PolicyCmd),
    /// OIDC login: check the identity provider setup.
    #[command(subcommand)]
    Oidc(cli::oidc::OidcCmd),
    /// Why a node is offline, relayed, or its routes do not work: findings with
    /// cause and fix (exit status 1 when there is a problem).
    Doctor {
        /// Only this node (its id).
        #[arg(short = 'n', long)]
        node: Option<u64>,
    },
    /// Every node's network as its client reports it (UDP, NAT, home DERP);
    /// `--probe`: this host's STUN and DERP round trips to every region.
    Netcheck {
        #[arg(long)]
        probe: bool,
    },
    /// A standalone DERP relay with Tailscale derper's flags (`ironscale derper --help`).
    #[command(disable_help_flag = true)]
    Derper {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn load_config(path: Option<&std::path::Path>, quiet: bool) -> anyhow::Result<Config> {
    match Config::from_env_and_file(path) {
        Ok((c, diags)) => {
            if !quiet {
                for d in diags.iter().filter(|d| d.severity != Severity::Info) {
                    eprintln!(
                        "{}",
                        ironscale_config::render(std::slice::from_ref(d)).trim_end()
                    );
                }
            }
            Ok(c)
        }
        Err(diags) => {
            eprint!("{}", ironscale_config::render(&diags));
            anyhow::bail!("the configuration has errors (run `ironscale configtest` for details)")
        }
    }
}

fn main() -> std::process::ExitCode {
    // Through a symlink named `derper`: derper's flags, nothing else.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let as_derper = std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "derper");
    let cli = if as_derper {
        Cli {
            config: None,
            output: String::new(),
            cmd: Cmd::Derper {
                args: std::env::args().skip(1).collect(),
            },
        }
    } else {
        Cli::parse()
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let out = cli::Output::parse(&cli.output)?;
    let cfg_path = cli.config.as_deref();
    match cli.cmd {
        Cmd::Version => {
            println!("ironscale {}", env!("CARGO_PKG_VERSION"));
        }
        Cmd::Configtest => {
            return Ok(configtest(cfg_path));
        }
        Cmd::Serve => {
            let cfg = load_config(cfg_path, false)?;
            serve::run(cfg, cfg_path.map(std::path::Path::to_path_buf))
                .await
                .context("server failed")?;
        }
        Cmd::Users(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_users(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Preauthkeys(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_preauthkeys(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Apikeys(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_apikeys(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Audit(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_audit(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Nodes(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_nodes(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Auth(c) => {
            let cfg = load_config(cfg_path, true)?;
            cli::run_auth(c, &cli::client(&cfg)?, out).await?;
        }
        Cmd::Routes { args } => return Err(cli::legacy_routes(&args)),
        Cmd::Doctor { node } => {
            let cfg = load_config(cfg_path, true)?;
            return cli::doctor::run(&cli::client(&cfg)?, node, out).await;
        }
        Cmd::Netcheck { probe } => {
            let cfg = load_config(cfg_path, true)?;
            cli::netcheck::run(&cli::client(&cfg)?, probe, out).await?;
        }
        Cmd::Derper { args } => {
            if args
                .iter()
                .any(|a| matches!(a.as_str(), "-h" | "--help" | "-help"))
            {
                print!("{}", derper::HELP);
                return Ok(std::process::ExitCode::SUCCESS);
            }
            let a = derper::parse(&args)?;
            derper::run(a).await.context("derper failed")?;
        }
        Cmd::Oidc(c) => {
            let cfg = load_config(cfg_path, true)?;
            return cli::oidc::run(c, &cfg, out).await;
        }
        Cmd::Policy(cli::policy::PolicyCmd::Conformance { dir }) => {
            return cli::policy::conformance(&dir, out)
        }
        Cmd::Policy(cli::policy::PolicyCmd::Check { file }) => {
            // With a reachable server, check against the live tailnet; else locally.
            return match load_config(cfg_path, true) {
                Ok(cfg) if cfg.cli.address.is_some() || cfg.unix_socket.exists() => {
                    cli::policy::check_remote(&file, &cli::client(&cfg)?).await
                }
                _ => cli::policy::check_local(&file),
            };
        }
        Cmd::Policy(
            c @ (cli::policy::PolicyCmd::Get { bypass: true }
            | cli::policy::PolicyCmd::Set { bypass: true, .. }),
        ) => {
            let cfg = load_config(cfg_path, true)?;
            return cli::policy::direct(c, &cfg).await;
        }
        Cmd::Policy(c) => {
            let cfg = load_config(cfg_path, true)?;
            return cli::policy::remote(c, &cli::client(&cfg)?, out).await;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn configtest(path: Option<&std::path::Path>) -> std::process::ExitCode {
    match Config::from_env_and_file(path) {
        Ok((cfg, diags)) => {
            eprint!("{}", ironscale_config::render(&diags));
            match &cfg.source {
                Some(p) => println!("{}: OK", p.display()),
                None => println!("no config file given: the built-in local defaults are OK"),
            }
            std::process::ExitCode::SUCCESS
        }
        Err(diags) => {
            eprint!("{}", ironscale_config::render(&diags));
            let n = diags.iter().filter(|d| d.is_error()).count();
            eprintln!("configuration has {n} error(s)");
            std::process::ExitCode::FAILURE
        }
    }
}
