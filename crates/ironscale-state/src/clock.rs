//! The clock seam: every "what time is it" and "wake me at" of the state layer
//! goes through a [`Clock`], so production runs on the system clock and tests
//! run in virtual time (advance a [`ManualClock`], no real sleeps).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ironscale_types::Timestamp;

/// A future that completes when a clock reaches an instant.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where the state layer's time comes from.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
    /// Completes when the clock reaches `at`, or earlier (callers re-read
    /// [`Clock::now`] on wake-up and sleep again if it is not yet time).
    fn sleep_until(&self, at: Timestamp) -> Sleep;
}

/// The system (wall) clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

/// The longest a [`SystemClock`] sleep lasts before the wall clock is read
/// again, so a clock stepped forward (NTP, suspend) is noticed.
const MAX_SYSTEM_SLEEP: Duration = Duration::from_secs(300);

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        chrono::Utc::now()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let wait = (at - chrono::Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SYSTEM_SLEEP);
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to (tests, simulations). Clones share
/// the same time.
#[derive(Clone)]
pub struct ManualClock {
    time: Arc<tokio::sync::watch::Sender<Timestamp>>,
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &*self.time.borrow())
            .finish()
    }
}

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock {
            time: Arc::new(tokio::sync::watch::Sender::new(start)),
        }
    }

    /// Move the clock forward by `d`, waking the sleepers whose instant came.
    pub fn advance(&self, d: Duration) {
        let d = chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        self.time.send_modify(|t| {
            *t = t
                .checked_add_signed(d)
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
        });
    }

    /// Set the clock (forward or back).
    pub fn set(&self, t: Timestamp) {
        self.time.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.time.borrow()
    }

    fn sleep_until(&self, at: Timestamp) -> Sleep {
        let mut rx = self.time.subscribe();
        Box::pin(async move {
            // An error means every clock handle is gone: time stands still forever.
            if rx.wait_for(|t| *t >= at).await.is_err() {
                std::future::pending::<()>().await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn manual_sleep_wakes_at_its_instant_and_not_before() {
        let start = chrono::DateTime::from_timestamp(1_000_000, 0).expect("valid");
        let c = ManualClock::new(start);
        let mut s = c.sleep_until(start + chrono::Duration::seconds(10));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(s.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::from_secs(9));
        assert!(s.as_mut().poll(&mut cx).is_pending());
        c.advance(Duration::from_secs(1));
        assert!(s.as_mut().poll(&mut cx).is_ready());
        assert_eq!(c.now(), start + chrono::Duration::seconds(10));
    }
}
