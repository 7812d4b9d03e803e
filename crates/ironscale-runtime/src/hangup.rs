//! SIGHUP, delivered to every watcher that reloads something (the policy
//! file, the configuration's DNS settings): one signal handler, any number
//! of subscribers, each told about every hangup that happens after it
//! subscribed.

use tokio::sync::watch;

/// A subscription to SIGHUP. Cloning it subscribes again.
#[derive(Clone, Debug)]
pub struct Hangups {
    rx: watch::Receiver<u64>,
}

impl Hangups {
    /// Install the SIGHUP handler (call before serving starts, so that no
    /// early SIGHUP takes the default action and terminates the process).
    /// Without a signal handler (it could not be installed), the
    /// subscription never fires.
    pub fn install() -> Hangups {
        let (tx, rx) = watch::channel(0u64);
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut sig) => {
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while sig.recv().await.is_some() {
                        n += 1;
                        if tx.send(n).is_err() {
                            // Nobody listens any more; keep the handler so
                            // SIGHUP stays harmless.
                            continue;
                        }
                    }
                });
            }
            Err(e) => tracing::warn!("cannot install the SIGHUP handler: {e}"),
        }
        Hangups { rx }
    }

    /// A subscription that fires only when [`HangupSender::hangup`] is
    /// called (tests).
    pub fn manual() -> (HangupSender, Hangups) {
        let (tx, rx) = watch::channel(0u64);
        (HangupSender(tx), Hangups { rx })
    }

    /// Wait for the next SIGHUP. Pends forever once the handler is gone.
    pub async fn recv(&mut self) {
        if self.rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Sends a hangup to [`Hangups::manual`] subscribers.
#[derive(Debug)]
pub struct HangupSender(watch::Sender<u64>);

impl HangupSender {
    pub fn hangup(&self) {
        self.0.send_modify(|n| *n += 1);
    }
}
