//! The supervisor of `serve`: every listener and background task runs under a
//! name, and any of them ending before shutdown was asked (with an error, a
//! panic, or cleanly) is a failure: it is logged with its name and reason, the
//! others are told to stop, and `serve` exits non-zero.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

/// Named tasks and the stop signal they watch.
pub struct Supervisor {
    tasks: JoinSet<(String, anyhow::Result<()>)>,
    stop_tx: watch::Sender<bool>,
    stop_rx: watch::Receiver<bool>,
}

impl Default for Supervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl Supervisor {
    pub fn new() -> Self {
        let (stop_tx, stop_rx) = watch::channel(false);
        Supervisor {
            tasks: JoinSet::new(),
            stop_tx,
            stop_rx,
        }
    }

    /// A future that completes once the supervisor asks its tasks to stop.
    pub fn stopped(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    }

    /// Run `task` under `name`. It is expected to run until [`Self::stopped`]
    /// completes; ending earlier is a failure of the whole server.
    pub fn spawn<F>(&mut self, name: impl Into<String>, task: F)
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let name = name.into();
        self.tasks.spawn(async move { (name, task.await) });
    }

    /// Wait for `shutdown` (then `Ok`) or for the first task to end (then an
    /// error naming it). Either way, ask every task to stop, run `on_stop`,
    /// and give the tasks `grace` to finish before aborting them.
    pub async fn run(
        mut self,
        shutdown: impl Future<Output = ()>,
        grace: Duration,
        on_stop: impl FnOnce(),
    ) -> anyhow::Result<()> {
        let outcome = if self.tasks.is_empty() {
            shutdown.await;
            Ok(())
        } else {
            tokio::select! {
                _ = shutdown => {
                    tracing::info!("shutting down");
                    Ok(())
                }
                Some(r) = self.tasks.join_next() => Err(match r {
                    Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped unexpectedly"),
                    Ok((name, Err(e))) => anyhow::anyhow!("{name} failed: {e:#}"),
                    Err(e) if e.is_panic() => anyhow::anyhow!("a task panicked: {e}"),
                    Err(e) => anyhow::anyhow!("a task was cancelled: {e}"),
                }),
            }
        };
        if let Err(e) = &outcome {
            tracing::error!("{e:#}; stopping the other listeners");
        }
        let _ = self.stop_tx.send(true);
        on_stop();
        let drained = tokio::time::timeout(grace, async {
            while let Some(r) = self.tasks.join_next().await {
                if let Ok((name, Err(e))) = r {
                    tracing::warn!("{name} ended with an error while stopping: {e:#}");
                }
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                "{} task(s) did not stop within {grace:?}: aborted",
                self.tasks.len()
            );
            self.tasks.abort_all();
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    const GRACE: Duration = Duration::from_secs(2);

    /// A task that runs until told to stop, and records that it stopped.
    fn well_behaved(s: &mut Supervisor, name: &str) -> Arc<AtomicBool> {
        let done = Arc::new(AtomicBool::new(false));
        let d = done.clone();
        let stop = s.stopped();
        s.spawn(name, async move {
            stop.await;
            d.store(true, Ordering::SeqCst);
            Ok(())
        });
        done
    }

    #[tokio::test]
    async fn a_task_ending_cleanly_is_a_failure_and_stops_the_others() {
        let mut s = Supervisor::new();
        let other = well_behaved(&mut s, "metrics listener");
        s.spawn("control listener 127.0.0.1:1", async { Ok(()) });
        let mut stopped = false;
        let r = s
            .run(std::future::pending(), GRACE, || stopped = true)
            .await;
        let e = r.expect_err("a clean early end must fail").to_string();
        assert!(e.contains("control listener 127.0.0.1:1"), "{e}");
        assert!(e.contains("stopped unexpectedly"), "{e}");
        assert!(stopped, "on_stop not run");
        assert!(
            other.load(Ordering::SeqCst),
            "the other task was not stopped"
        );
    }

    #[tokio::test]
    async fn a_task_error_names_the_task_and_the_reason() {
        let mut s = Supervisor::new();
        let other = well_behaved(&mut s, "control listener");
        s.spawn("admin socket /run/x.sock", async {
            Err(anyhow::anyhow!("address in use"))
        });
        let e = s
            .run(std::future::pending(), GRACE, || {})
            .await
            .expect_err("an error must fail")
            .to_string();
        assert!(e.contains("admin socket /run/x.sock"), "{e}");
        assert!(e.contains("address in use"), "{e}");
        assert!(other.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_panic_is_a_failure() {
        let mut s = Supervisor::new();
        s.spawn("stun", async {
            #[allow(clippy::panic)]
            if true {
                panic!("boom");
            }
            Ok(())
        });
        let e = s
            .run(std::future::pending(), GRACE, || {})
            .await
            .expect_err("a panic must fail")
            .to_string();
        assert!(e.contains("panicked"), "{e}");
    }

    #[tokio::test]
    async fn shutdown_is_success_and_stops_every_task() {
        let mut s = Supervisor::new();
        let a = well_behaved(&mut s, "a");
        let b = well_behaved(&mut s, "b");
        let r = s.run(async {}, GRACE, || {}).await;
        assert!(r.is_ok(), "{r:?}");
        assert!(a.load(Ordering::SeqCst) && b.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_task_that_ignores_stop_is_aborted_after_the_grace() {
        let mut s = Supervisor::new();
        s.spawn("stuck", std::future::pending());
        let t0 = std::time::Instant::now();
        let r = s.run(async {}, Duration::from_millis(100), || {}).await;
        assert!(r.is_ok());
        assert!(t0.elapsed() < Duration::from_secs(2));
    }
}
