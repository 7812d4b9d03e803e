//! `ironscale policy conformance | check | get | set`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use ironscale_config::{Config, PolicyMode};

use ironscale_api::client::Client;

use crate::cli::{Output, Printed};

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Run every case of a Tailscale policy conformance corpus under DIR and
    /// compare with the captured results. Ends with `N passed, M failed`; with
    /// `-o json`, prints one JSON object per case instead (JSON Lines).
    Conformance {
        /// Corpus directory (searched recursively for *.json cases).
        dir: PathBuf,
    },
    /// Check a policy file: HuJSON syntax, validation and its `tests`. With a
    /// running server, it is also compiled against the live tailnet.
    Check {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
    /// Why SRC may or may not reach DST:PORT (TCP): the rule of DST's packet
    /// filter that decides. Nodes by id or name.
    Explain {
        #[arg(long)]
        src: String,
        /// NODE:PORT
        #[arg(long)]
        dst: String,
    },
    /// Print the policy in force (policy.mode: database).
    Get {
        /// Read the database directly instead of asking the running server
        /// (Headscale's flag; for when the server is stopped).
        #[arg(long = "bypass-grpc-and-access-database-directly")]
        bypass: bool,
    },
    /// Replace the policy (policy.mode: database). A rejected policy changes nothing.
    Set {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Check the policy against the stored tailnet and write it to the
        /// database directly, without the running server (Headscale's flag; a
        /// running server keeps its policy until it restarts).
        #[arg(long = "bypass-grpc-and-access-database-directly")]
        bypass: bool,
    },
}

pub fn conformance(dir: &Path, out: Output) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    // The DNS config each node gets is compared too (the map builder computes it).
    let report = ironscale_policy::conformance::run_dir_with(
        dir,
        Some(ironscale_mapper::conformance_dns_config),
    );
    match out {
        Output::Json | Output::JsonLine => print!("{}", report.json_lines()),
        _ => print!("{}", report.text()),
    }
    Ok(if report.exit_code() == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

/// Local check (no server): parse, validate, compile against an empty tailnet
/// and run the policy's tests.
pub fn check_local(file: &Path) -> anyhow::Result<std::process::ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let name = file.display().to_string();
    match ironscale_policy::Policy::parse(&text, &name) {
        Err(e) => {
            eprintln!("{e}");
            Ok(std::process::ExitCode::FAILURE)
        }
        Ok(p) => {
            for w in p.warnings() {
                eprintln!("{w}");
            }
            match ironscale_policy::CompiledPolicy::compile(&p, &[], &[], &Default::default()) {
                Ok(_) => {
                    println!("{name}: policy is valid");
                    Ok(std::process::ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(std::process::ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `get` and `set` through the running server.
pub async fn remote(
    cmd: PolicyCmd,
    c: &Client,
    out: Output,
) -> anyhow::Result<std::process::ExitCode> {
    crate::cli::emit(remote_with(cmd, c, out).await?)?;
    Ok(std::process::ExitCode::SUCCESS)
}

async fn remote_with(cmd: PolicyCmd, c: &Client, out: Output) -> anyhow::Result<Printed> {
    if let PolicyCmd::Explain { src, dst } = &cmd {
        let (node, port) = dst
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("--dst must be NODE:PORT, e.g. server:22"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| anyhow::anyhow!("--dst {dst:?}: {port:?} is not a port"))?;
        let e = c.explain_policy(src, node, port).await?;
        let v = serde_json::to_value(&e)?;
        return Ok(Printed::out(crate::cli::output::render(out, &v, || {
            let mut s = format!("{}\n", e.why);
            if let Some(i) = e.rule {
                s.push_str(&format!(
                    "  rule {i}: from {} to {}\n",
                    e.rule_src_ips.join(", "),
                    e.rule_dst_ports.join(", ")
                ));
            }
            s
        })));
    }
    let r = match &cmd {
        PolicyCmd::Get { .. } => c.get_policy().await?,
        PolicyCmd::Set { file, .. } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            c.set_policy(&text).await.map_err(|e| {
                anyhow::anyhow!(
                    "{}\nthe policy in force is unchanged",
                    name_file(&e.to_string(), file)
                )
            })?
        }
        _ => anyhow::bail!("not a remote policy command"),
    };
    let v = serde_json::to_value(&r)?;
    // -o json/json-line/yaml: the answer in Headscale's CLI shape; the
    // table form is the policy text itself (get) or a remark (set).
    Ok(match cmd {
        PolicyCmd::Get { .. } => {
            Printed::out(crate::cli::output::render(out, &v, || r.policy.clone()))
        }
        _ if out == Output::Table => Printed {
            stdout: String::new(),
            stderr: "Policy updated\n".into(),
        },
        _ => Printed::out(crate::cli::output::render(out, &v, String::new)),
    })
}

/// `get` and `set` with `--bypass-grpc-and-access-database-directly`: the
/// database named in the config, without the server. `set` checks the policy
/// (syntax, references, tests) against the users and nodes stored there
/// before writing it; a rejected policy writes nothing.
pub async fn direct(cmd: PolicyCmd, cfg: &Config) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(
        cfg.policy.mode == PolicyMode::Database,
        "policy.mode is file: the policy is the file {} (edit it; the server reloads it)",
        cfg.policy.path.as_deref().map_or_else(
            || "named by policy.path".to_string(),
            |p| p.display().to_string()
        )
    );
    let state = crate::serve::offline_state(cfg).await?;
    match cmd {
        PolicyCmd::Get { .. } => match state.stored_policy().await? {
            Some(text) => print!("{text}"),
            None => anyhow::bail!("no policy is stored in the database (allow all is in force)"),
        },
        PolicyCmd::Set { file, .. } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            match state.set_policy_in_database(&text).await {
                Ok(warnings) => {
                    for w in warnings {
                        eprintln!("{}", name_file(&w.to_string(), &file));
                    }
                }
                Err(e) => {
                    eprintln!("{}", name_file(&e.to_string(), &file));
                    eprintln!("the stored policy is unchanged");
                    return Ok(std::process::ExitCode::FAILURE);
                }
            }
            eprintln!("Policy written to the database");
            if cfg.unix_socket.exists() {
                eprintln!(
                    "note: a server seems to be running ({} exists); it keeps its policy until it restarts. \
                     Without the flag, `policy set` applies the policy at once.",
                    cfg.unix_socket.display()
                );
            }
        }
        _ => anyhow::bail!("not a database policy command"),
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `policy check` with a running server: compile against the live tailnet.
/// Check through the server (`c`); a local socket with no server behind it
/// falls back to [`check_local`] (a remote server that cannot be reached is an error).
pub async fn check_remote(file: &Path, c: &Client) -> anyhow::Result<std::process::ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match c.check_policy(&text).await {
        Ok(_) => {
            println!(
                "{}: policy is valid (checked against the running tailnet)",
                file.display()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) if e.is_unreachable() => check_local(file),
        Err(e) => {
            eprintln!("{}", name_file(&e.to_string(), file));
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// The server names the policy "policy"; show the user's file name instead.
fn name_file(msg: &str, file: &Path) -> String {
    msg.replace("policy:", &format!("{}:", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::test_server::server_with;

    fn database_mode() -> ironscale_state::Settings {
        ironscale_state::Settings {
            policy_in_database: true,
            ..Default::default()
        }
    }

    /// `policy get` and `policy set` print the answer in the format asked
    /// for: `-o yaml` printed JSON.
    #[tokio::test]
    async fn get_and_set_print_each_output() {
        let s = server_with(database_mode()).await;
        let c = Client::unix(&s.sock);
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("p.hujson");
        let text = "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}\n";
        std::fs::write(&file, text).expect("write");
        let set = || PolicyCmd::Set {
            file: file.clone(),
            bypass: false,
        };
        let get = || PolicyCmd::Get { bypass: false };

        let p = remote_with(set(), &c, Output::Table).await.expect("set");
        assert_eq!(p.stdout, "");
        assert_eq!(p.stderr, "Policy updated\n");
        let p = remote_with(get(), &c, Output::Table).await.expect("get");
        assert_eq!(p.stdout, text);

        let p = remote_with(get(), &c, Output::Yaml).await.expect("get");
        assert!(
            serde_json::from_str::<serde_json::Value>(&p.stdout).is_err(),
            "-o yaml printed JSON: {}",
            p.stdout
        );
        assert!(p.stdout.starts_with("policy: "), "{}", p.stdout);
        let updated = p
            .stdout
            .lines()
            .find(|l| l.starts_with("updated_at: "))
            .unwrap_or_else(|| panic!("no updated_at: {}", p.stdout));
        assert!(!updated.contains("null"), "{}", p.stdout);
        assert!(p.stdout.contains("accept"), "{}", p.stdout);

        // JSON: Headscale's CLI shape (snake_case), the policy text verbatim.
        for out in [Output::Json, Output::JsonLine] {
            let p = remote_with(get(), &c, out).await.expect("get");
            let v: serde_json::Value = serde_json::from_str(&p.stdout).expect("json");
            assert_eq!(v["policy"], text, "{out:?}");
            assert!(v["updated_at"].is_string(), "{out:?}: {v}");
        }
        let p = remote_with(set(), &c, Output::JsonLine).await.expect("set");
        assert_eq!(p.stdout.lines().count(), 1, "{}", p.stdout);
        let v: serde_json::Value = serde_json::from_str(&p.stdout).expect("json");
        assert_eq!(v["policy"], text);
        let p = remote_with(set(), &c, Output::Yaml).await.expect("set");
        assert!(p.stdout.starts_with("policy: "), "{}", p.stdout);
    }
}
