//! `ironscale policy conformance | check | get | set`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;

use crate::cli::Output;

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
    /// Print the policy in force (policy.mode: database).
    Get,
    /// Replace the policy (policy.mode: database). A rejected policy changes nothing.
    Set {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

pub fn conformance(dir: &Path, out: Output) -> anyhow::Result<std::process::ExitCode> {
    anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
    let report = ironscale_policy::conformance::run_dir(dir);
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
    socket: &Path,
    out: Output,
) -> anyhow::Result<std::process::ExitCode> {
    let v = match &cmd {
        PolicyCmd::Get => crate::cli::api_call(socket, "GET", "/api/v1/policy", None).await?,
        PolicyCmd::Set { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            crate::cli::api_call(
                socket,
                "PUT",
                "/api/v1/policy",
                Some(serde_json::json!({ "policy": text })),
            )
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}\nthe policy in force is unchanged",
                    name_file(&e.to_string(), file)
                )
            })?
        }
        _ => anyhow::bail!("not a remote policy command"),
    };
    match out {
        Output::Json | Output::JsonLine | Output::Yaml => {
            println!("{}", serde_json::to_string_pretty(&v)?)
        }
        Output::Table => match cmd {
            PolicyCmd::Get => print!("{}", v["policy"].as_str().unwrap_or_default()),
            _ => eprintln!("Policy updated"),
        },
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// `policy check` with a running server: compile against the live tailnet.
pub async fn check_remote(file: &Path, socket: &Path) -> anyhow::Result<std::process::ExitCode> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    match crate::cli::api_call(
        socket,
        "POST",
        "/api/v1/policy/check",
        Some(serde_json::json!({ "policy": text })),
    )
    .await
    {
        Ok(_) => {
            println!(
                "{}: policy is valid (checked against the running tailnet)",
                file.display()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Err(e) if e.to_string().contains("cannot reach") => check_local(file),
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
