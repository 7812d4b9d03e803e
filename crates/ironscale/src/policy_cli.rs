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
    Ok(if report.exit_code() == 0 { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::FAILURE })
}

/// Local check (no server): parse, validate, compile against an empty tailnet
/// and run the policy's tests.
pub fn check_local(file: &Path) -> anyhow::Result<std::process::ExitCode> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
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
pub async fn remote(cmd: PolicyCmd, socket: &Path, _out: Output) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!(
        "`ironscale policy {}` needs the server's policy API, which is not available yet (socket {})",
        match cmd {
            PolicyCmd::Get => "get",
            _ => "set",
        },
        socket.display()
    )
}
