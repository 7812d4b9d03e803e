//! Loading the policy at start-up and keeping it current: `policy.mode: file`
//! (the file is watched, and SIGHUP reloads it) or `policy.mode: database`
//! (set through the API/CLI). A policy that fails to parse, validate or pass
//! its tests is rejected with its errors, and the previous one stays in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use ironscale_config::{Config, PolicyMode};
use ironscale_state::State;

fn fingerprint(path: &Path) -> Option<(std::time::SystemTime, u64, u64)> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(path).ok()?;
    let text = std::fs::read(path).ok()?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    Some((meta.modified().ok()?, meta.len(), h.finish()))
}

async fn load_file(state: &State, path: &Path) -> anyhow::Result<()> {
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("reading policy file {}", path.display()))?;
    let name = path.display().to_string();
    match state.set_policy_text(&text, &name).await {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("policy: {w}");
            }
            Ok(())
        }
        Err(e) => Err(anyhow::anyhow!(
            "policy rejected, the previous policy stays in force:\n{e}"
        )),
    }
}

/// Install the configured policy before the server accepts clients.
pub async fn load_initial(cfg: &Config, state: &State) -> anyhow::Result<()> {
    match cfg.policy.mode {
        PolicyMode::File => {
            if let Some(path) = &cfg.policy.path {
                load_file(state, path).await?;
                tracing::info!(path = %path.display(), "policy loaded");
            } else {
                tracing::info!(
                    "no policy configured: every node may reach every other node (allow all)"
                );
            }
        }
        PolicyMode::Database => match state.stored_policy().await? {
            Some(text) => {
                state
                    .set_policy_text(&text, "policy (database)")
                    .await
                    .map_err(|e| {
                        anyhow::anyhow!("the policy stored in the database is invalid:\n{e}")
                    })?;
                tracing::info!("policy loaded from the database");
            }
            None => tracing::info!("no policy in the database yet: allow all"),
        },
    }
    Ok(())
}

/// Reload the policy file when it changes (checked every second) or on SIGHUP.
/// The SIGHUP handler is installed in every mode, so that `kill -HUP` (or
/// `systemctl reload`) never terminates the server: where there is no file to
/// reload, it says so in the log.
pub fn spawn_file_watch(cfg: &Config, state: State) {
    // Installed here, before serving starts, so no early SIGHUP takes the default action.
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    match (cfg.policy.mode, cfg.policy.path.clone()) {
        (PolicyMode::File, Some(path)) => {
            tokio::spawn(watch(path, state, hup.ok()));
        }
        (mode, _) => {
            let Ok(mut hup) = hup else {
                return;
            };
            let what = match mode {
                PolicyMode::Database => {
                    "policy.mode is database: set it with `ironscale policy set`"
                }
                PolicyMode::File => "no policy.path is configured",
            };
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP: no policy file to reload ({what})");
                }
            });
        }
    }
}

async fn watch(path: PathBuf, state: State, mut hup: Option<tokio::signal::unix::Signal>) {
    let mut last = fingerprint(&path);
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            Some(_) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        let now = fingerprint(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match load_file(&state, &path).await {
            Ok(()) => tracing::info!(path = %path.display(), forced, "policy reloaded"),
            Err(e) => tracing::error!(path = %path.display(), "{e:#}"),
        }
    }
}
