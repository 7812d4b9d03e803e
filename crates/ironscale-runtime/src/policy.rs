//! Loading the policy at start-up and keeping it current: `policy.mode: file`
//! (the file is watched, and SIGHUP reloads it) or `policy.mode: database`
//! (set through the API/CLI). A policy that fails to parse, validate or pass
//! its tests is rejected with its errors, and the previous one stays in force.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ironscale_config::{Config, PolicyMode};
use ironscale_state::State;

use crate::hangup::Hangups;

/// Why the configured policy could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLoadError {
    /// The policy file could not be read.
    #[error("reading policy file {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The policy file failed to parse, validate, compile or pass its tests
    /// (the rendered errors, with file:line:col).
    #[error("policy rejected, the previous policy stays in force:\n{0}")]
    Rejected(String),
    /// The policy stored in the database is invalid.
    #[error("the policy stored in the database is invalid:\n{0}")]
    StoredInvalid(String),
    /// The database could not be read.
    #[error("reading the policy stored in the database: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
}

use crate::watch::{fingerprint, Fingerprint};

async fn load_file(state: &State, path: &Path) -> Result<(), PolicyLoadError> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|source| PolicyLoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    let name = path.display().to_string();
    match state.set_policy_text(&text, &name).await {
        Ok(warnings) => {
            for w in warnings {
                tracing::warn!("policy: {w}");
            }
            Ok(())
        }
        Err(e) => Err(PolicyLoadError::Rejected(e.to_string())),
    }
}

/// Install the configured policy before the server accepts clients.
pub async fn load_initial(cfg: &Config, state: &State) -> Result<(), PolicyLoadError> {
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
        PolicyMode::Database => match state
            .stored_policy()
            .await
            .map_err(|e| PolicyLoadError::Store(Box::new(e)))?
        {
            Some(text) => {
                state
                    .set_policy_text(&text, "policy (database)")
                    .await
                    .map_err(|e| PolicyLoadError::StoredInvalid(e.to_string()))?;
                tracing::info!("policy loaded from the database");
            }
            None => tracing::info!("no policy in the database yet: allow all"),
        },
    }
    Ok(())
}

/// Reload the policy file when it changes (checked every second) or on
/// SIGHUP (`hup`). Where there is no file to reload, a SIGHUP says so in the
/// log.
pub fn spawn_file_watch(cfg: &Config, state: State, mut hup: Hangups) {
    match (cfg.policy.mode, cfg.policy.path.clone()) {
        (PolicyMode::File, Some(path)) => {
            // The file as it is now: a change after this call is noticed, even
            // one made before the task first runs.
            let last = fingerprint(&path);
            tokio::spawn(watch(path, last, state, hup));
        }
        (mode, _) => {
            let what = match mode {
                PolicyMode::Database => {
                    "policy.mode is database: set it with `ironscale policy set`"
                }
                PolicyMode::File => "no policy.path is configured",
            };
            tokio::spawn(async move {
                loop {
                    hup.recv().await;
                    tracing::info!("SIGHUP: no policy file to reload ({what})");
                }
            });
        }
    }
}

async fn watch(path: PathBuf, mut last: Option<Fingerprint>, state: State, mut hup: Hangups) {
    loop {
        let forced = tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
            _ = hup.recv() => true,
        };
        let now = fingerprint(&path);
        if !forced && now == last {
            continue;
        }
        last = now;
        match load_file(&state, &path).await {
            Ok(()) => tracing::info!(path = %path.display(), forced, "policy reloaded"),
            Err(e) => tracing::error!(path = %path.display(), "{e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}\n";
    const OTHER: &str =
        "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:22\"]}]}\n";
    const BAD: &str =
        "{\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}],\n}\n";

    async fn state(dir: &Path, in_database: bool) -> State {
        let store =
            ironscale_store::Store::open(&ironscale_store::sqlite_config(dir.join("db.sqlite")))
                .await
                .expect("store");
        let settings = ironscale_state::Settings {
            policy_in_database: in_database,
            ..Default::default()
        };
        State::load(store, settings, Default::default())
            .await
            .expect("state")
    }

    fn config(dir: &Path, mode: PolicyMode, path: Option<PathBuf>) -> Config {
        let mut cfg = Config::default_local(dir);
        cfg.policy.mode = mode;
        cfg.policy.path = path;
        cfg
    }

    fn text_in_force(s: &State) -> Option<String> {
        s.policy_state().text
    }

    #[tokio::test]
    async fn file_mode_loads_the_file_and_refuses_a_bad_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.hujson");
        let s = state(dir.path(), false).await;

        // No file configured: allow all.
        load_initial(&config(dir.path(), PolicyMode::File, None), &s)
            .await
            .expect("no policy");
        assert_eq!(text_in_force(&s), None);

        let cfg = config(dir.path(), PolicyMode::File, Some(file.clone()));
        let e = load_initial(&cfg, &s).await.expect_err("no file yet");
        assert!(
            matches!(&e, PolicyLoadError::Read { path, .. } if *path == file),
            "{e:?}"
        );

        std::fs::write(&file, GOOD).expect("write");
        load_initial(&cfg, &s).await.expect("loads");
        assert_eq!(text_in_force(&s).as_deref(), Some(GOOD));

        std::fs::write(&file, BAD).expect("write");
        let e = load_initial(&cfg, &s).await.expect_err("bad policy");
        assert!(matches!(e, PolicyLoadError::Rejected(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("group:nope") && msg.contains("policy.hujson"),
            "{msg}"
        );
        assert_eq!(
            text_in_force(&s).as_deref(),
            Some(GOOD),
            "the old one stays"
        );
    }

    #[tokio::test]
    async fn database_mode_loads_what_is_stored() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = state(dir.path(), true).await;
        let cfg = config(dir.path(), PolicyMode::Database, None);
        load_initial(&cfg, &s).await.expect("nothing stored");
        assert_eq!(text_in_force(&s), None);
        s.set_policy_in_database(GOOD).await.expect("stored");
        drop(s);
        // A fresh start reads it back.
        let s = state(dir.path(), true).await;
        assert_eq!(text_in_force(&s), None);
        load_initial(&cfg, &s).await.expect("loads");
        assert_eq!(text_in_force(&s).as_deref(), Some(GOOD));
    }

    /// The watch installs a changed file (it checks every second; the wait
    /// below is a bound, not a timing assertion).
    #[tokio::test]
    async fn a_changed_file_is_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("policy.hujson");
        std::fs::write(&file, GOOD).expect("write");
        let s = state(dir.path(), false).await;
        let cfg = config(dir.path(), PolicyMode::File, Some(file.clone()));
        load_initial(&cfg, &s).await.expect("loads");
        let (_tx, hup) = Hangups::manual();
        spawn_file_watch(&cfg, s.clone(), hup);
        std::fs::write(&file, OTHER).expect("write");
        for _ in 0..300 {
            if text_in_force(&s).as_deref() == Some(OTHER) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(text_in_force(&s).as_deref(), Some(OTHER));
    }
}
