//! Tailscale SSH check mode: a connection that an SSH rule with
//! `"action": "check"` governs is held by the destination's `tailscaled`
//! until control says yes or no. Control says yes at once when the person
//! who owns the source device passed a check from that device within the
//! rule's `checkPeriod`; otherwise the connection waits here, under a random
//! id that travels in the login URL shown to the SSH user, until that person
//! logs in (an identity provider approves it), it is denied, or it expires.
//!
//! Both tables live in memory only (a restarted server forgets recent checks:
//! the next connection checks again) and are bounded: pending checks by
//! [`MAX_PENDING_SSH_CHECKS`] (more are refused while all are live), recent
//! checks by [`MAX_RECENT_SSH_CHECKS`] (the oldest are forgotten first).
//! Times are the state's clock ([`State::now`]).

use std::collections::HashMap;
use std::time::Duration;

use ironscale_types::{NodeId, Timestamp, UserId};
use rand::Rng;
use tokio::sync::watch;

use crate::State;

/// How long a pending check waits for its login.
pub const SSH_CHECK_TTL: Duration = Duration::from_secs(10 * 60);
/// At most this many checks waiting (or decided, until they expire).
pub const MAX_PENDING_SSH_CHECKS: usize = 1024;
/// At most this many (user, device) pairs remembered as recently checked.
pub const MAX_RECENT_SSH_CHECKS: usize = 16384;
/// A recent check is never kept longer than the longest `checkPeriod` (168h).
const RECENT_MAX_AGE: Duration = Duration::from_secs(168 * 3600);

const ID_LEN: usize = 24;
const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// The id of a pending SSH check (the last path segment of its check URL):
/// 24 characters from a CSPRNG, as [`crate::RegistrationId`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SshCheckId(String);

impl SshCheckId {
    fn generate() -> SshCheckId {
        // ThreadRng is a CSPRNG (ChaCha, seeded and reseeded from the OS).
        let mut rng = rand::rng();
        SshCheckId(
            (0..ID_LEN)
                .map(|_| ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())] as char)
                .collect(),
        )
    }

    /// Accept what `generate` makes (anything else cannot name a check).
    pub fn parse(s: &str) -> Option<SshCheckId> {
        (s.len() == ID_LEN && s.bytes().all(|b| ID_ALPHABET.contains(&b)))
            .then(|| SshCheckId(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for SshCheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Debug for SshCheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SshCheckId({})", self.0)
    }
}

/// What [`State::ssh_check`] decided for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshCheckDecision {
    /// The source device's owner passed a check within the period.
    Accept,
    /// The owner must log in; the connection waits on this check.
    Pending(SshCheckId),
    /// No check can pass (the reason is for the SSH user).
    Reject(String),
}

/// Where a pending check stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshCheckStatus {
    Waiting,
    Approved(UserId),
    Denied(String),
}

/// A connection waiting for its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSshCheck {
    pub id: SshCheckId,
    pub src: NodeId,
    pub dst: NodeId,
    pub local_user: String,
    /// The source device's owner when the check began: the one person who
    /// can pass it.
    pub owner: UserId,
    pub created: Timestamp,
    pub expires: Timestamp,
}

/// Why an approval was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SshCheckError {
    #[error("the SSH check is unknown or has expired")]
    NotFound,
    #[error("the SSH check was already decided")]
    Decided,
    #[error("only the owner of the connecting device can pass this SSH check")]
    NotOwner,
}

struct Entry {
    check: PendingSshCheck,
    status: watch::Sender<SshCheckStatus>,
}

/// Pending and recent checks.
#[derive(Default)]
pub(crate) struct SshChecks {
    pending: HashMap<SshCheckId, Entry>,
    /// (user, source device) → when that user last passed a check from it.
    recent: HashMap<(UserId, NodeId), Timestamp>,
}

const EXPIRED: &str = "the SSH check expired before anyone logged in";

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl SshChecks {
    /// Drop expired entries (telling a waiting one's watchers it expired).
    fn purge(&mut self, now: Timestamp) {
        self.pending.retain(|_, e| {
            if e.check.expires > now {
                return true;
            }
            e.status.send_if_modified(|s| {
                if *s == SshCheckStatus::Waiting {
                    *s = SshCheckStatus::Denied(EXPIRED.into());
                    true
                } else {
                    false
                }
            });
            false
        });
    }

    fn live(&self, id: &SshCheckId, now: Timestamp) -> Option<&Entry> {
        self.pending.get(id).filter(|e| e.check.expires > now)
    }

    fn start(
        &mut self,
        src: NodeId,
        dst: NodeId,
        local_user: &str,
        owner: UserId,
        now: Timestamp,
    ) -> Option<SshCheckId> {
        if self.pending.len() >= MAX_PENDING_SSH_CHECKS {
            self.purge(now);
            // Decided checks have told their watchers; they can go first.
            self.pending
                .retain(|_, e| *e.status.borrow() == SshCheckStatus::Waiting);
            if self.pending.len() >= MAX_PENDING_SSH_CHECKS {
                return None;
            }
        }
        let id = SshCheckId::generate();
        let check = PendingSshCheck {
            id: id.clone(),
            src,
            dst,
            local_user: local_user.to_string(),
            owner,
            created: now,
            expires: now + chrono_dur(SSH_CHECK_TTL),
        };
        let (status, _) = watch::channel(SshCheckStatus::Waiting);
        self.pending.insert(id.clone(), Entry { check, status });
        Some(id)
    }

    fn remember(&mut self, user: UserId, src: NodeId, now: Timestamp) {
        if self.recent.len() >= MAX_RECENT_SSH_CHECKS && !self.recent.contains_key(&(user, src)) {
            let horizon = now - chrono_dur(RECENT_MAX_AGE);
            self.recent.retain(|_, at| *at > horizon);
            if self.recent.len() >= MAX_RECENT_SSH_CHECKS {
                // Forget the older half: those users check again.
                let mut times: Vec<Timestamp> = self.recent.values().copied().collect();
                times.sort_unstable();
                let cut = times[times.len() / 2];
                self.recent.retain(|_, at| *at > cut);
            }
        }
        self.recent.insert((user, src), now);
    }

    fn passed_within(&self, user: UserId, src: NodeId, period: Duration, now: Timestamp) -> bool {
        !period.is_zero()
            && self
                .recent
                .get(&(user, src))
                .is_some_and(|at| *at <= now && now - *at < chrono_dur(period))
    }
}

impl State {
    /// The `checkPeriod` of the SSH check rule that governs a connection
    /// from `src` to `dst` as `local_user` under the policy in force
    /// ([`ironscale_policy::CompiledPolicy::ssh_check_period`]); `None`
    /// when no check rule does (or there is no policy).
    pub fn ssh_check_period(&self, src: NodeId, dst: NodeId, local_user: &str) -> Option<Duration> {
        let compiled = self.inner.policy.lock().compiled.clone()?;
        compiled.ssh_check_period(src, dst, local_user)
    }

    /// Decide a connection from `src` to `dst` as `local_user` that a check
    /// rule with `period` governs: accepted when the source device's owner
    /// passed a check from it less than `period` ago (zero: never), else a
    /// new pending check. A tagged or unknown source is rejected: a check
    /// needs a person.
    pub fn ssh_check(
        &self,
        src: NodeId,
        dst: NodeId,
        local_user: &str,
        period: Duration,
    ) -> SshCheckDecision {
        let t = self.snapshot();
        let Some(node) = t.nodes.get(&src) else {
            return SshCheckDecision::Reject(
                "The connecting device is unknown to the control server.\n".into(),
            );
        };
        let owner = match node.user_id {
            Some(u) if node.tags.is_empty() => u,
            _ => {
                return SshCheckDecision::Reject(
                    "This connection needs an SSH check, which a person passes by logging in; \
                     the connecting device is tagged and has no owner to log in.\n"
                        .into(),
                )
            }
        };
        if !t.nodes.contains_key(&dst) {
            return SshCheckDecision::Reject(
                "The destination device is unknown to the control server.\n".into(),
            );
        }
        let now = self.now();
        let mut checks = self.inner.ssh_checks.lock();
        if checks.passed_within(owner, src, period, now) {
            return SshCheckDecision::Accept;
        }
        match checks.start(src, dst, local_user, owner, now) {
            Some(id) => SshCheckDecision::Pending(id),
            None => SshCheckDecision::Reject(
                "Too many SSH checks are in progress; try again in a few minutes.\n".into(),
            ),
        }
    }

    /// The check `id` while it waits (not yet decided, not expired).
    pub fn pending_ssh_check(&self, id: &SshCheckId) -> Option<PendingSshCheck> {
        let checks = self.inner.ssh_checks.lock();
        checks
            .live(id, self.now())
            .filter(|e| *e.status.borrow() == SshCheckStatus::Waiting)
            .map(|e| e.check.clone())
    }

    /// The check `id` and where it stands, until it expires.
    pub fn ssh_check_status(&self, id: &SshCheckId) -> Option<(PendingSshCheck, SshCheckStatus)> {
        let checks = self.inner.ssh_checks.lock();
        checks
            .live(id, self.now())
            .map(|e| (e.check.clone(), e.status.borrow().clone()))
    }

    /// `user` logged in for check `id`: it passes if `user` owns the source
    /// device (now, and when the check began), and `user` counts as checked
    /// from that device from now on (for the rule's `checkPeriod`).
    pub fn approve_ssh_check(
        &self,
        id: &SshCheckId,
        user: UserId,
    ) -> Result<PendingSshCheck, SshCheckError> {
        let t = self.snapshot();
        let now = self.now();
        let mut checks = self.inner.ssh_checks.lock();
        let e = checks.live(id, now).ok_or(SshCheckError::NotFound)?;
        if *e.status.borrow() != SshCheckStatus::Waiting {
            return Err(SshCheckError::Decided);
        }
        let check = e.check.clone();
        let owns = t
            .nodes
            .get(&check.src)
            .is_some_and(|n| n.tags.is_empty() && n.user_id == Some(user));
        if !owns || check.owner != user {
            return Err(SshCheckError::NotOwner);
        }
        e.status.send_replace(SshCheckStatus::Approved(user));
        checks.remember(user, check.src, now);
        tracing::info!(
            check = %check.id,
            src = check.src.0,
            dst = check.dst.0,
            user = user.0,
            local_user = %check.local_user,
            "SSH check passed"
        );
        Ok(check)
    }

    /// End check `id` with a refusal; `false` when it is unknown, expired
    /// or already decided.
    pub fn deny_ssh_check(&self, id: &SshCheckId, reason: &str) -> bool {
        let now = self.now();
        let checks = self.inner.ssh_checks.lock();
        let Some(e) = checks.live(id, now) else {
            return false;
        };
        let denied = e.status.send_if_modified(|s| {
            if *s == SshCheckStatus::Waiting {
                *s = SshCheckStatus::Denied(reason.to_string());
                true
            } else {
                false
            }
        });
        if denied {
            tracing::info!(check = %id, src = e.check.src.0, dst = e.check.dst.0, "SSH check denied: {reason}");
        }
        denied
    }

    /// Watch the status of check `id` (None: unknown or expired).
    pub fn watch_ssh_check(&self, id: &SshCheckId) -> Option<watch::Receiver<SshCheckStatus>> {
        let checks = self.inner.ssh_checks.lock();
        checks.live(id, self.now()).map(|e| e.status.subscribe())
    }

    /// Wait until check `id` is decided or expires by the state's clock
    /// (then it is denied as expired). `None`: unknown or already expired.
    pub async fn wait_ssh_check(&self, id: &SshCheckId) -> Option<SshCheckStatus> {
        let (expires, mut rx) = {
            let checks = self.inner.ssh_checks.lock();
            let e = checks.live(id, self.now())?;
            (e.check.expires, e.status.subscribe())
        };
        loop {
            {
                let s = rx.borrow_and_update();
                if *s != SshCheckStatus::Waiting {
                    return Some(s.clone());
                }
            }
            if self.now() >= expires {
                self.deny_expired(id);
                return Some(rx.borrow().clone());
            }
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        // Purged from a full table while waiting: over.
                        let s = rx.borrow().clone();
                        return Some(match s {
                            SshCheckStatus::Waiting => SshCheckStatus::Denied(EXPIRED.into()),
                            s => s,
                        });
                    }
                }
                _ = self.inner.clock.sleep_until(expires) => {}
            }
        }
    }

    fn deny_expired(&self, id: &SshCheckId) {
        let checks = self.inner.ssh_checks.lock();
        if let Some(e) = checks.pending.get(id) {
            e.status.send_if_modified(|s| {
                if *s == SshCheckStatus::Waiting {
                    *s = SshCheckStatus::Denied(EXPIRED.into());
                    true
                } else {
                    false
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default()
    }

    #[test]
    fn ids_are_long_random_and_parse_back() {
        let a = SshCheckId::generate();
        assert_ne!(a, SshCheckId::generate());
        assert_eq!(a.as_str().len(), 24);
        assert_eq!(SshCheckId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(SshCheckId::parse("short"), None);
        assert_eq!(SshCheckId::parse(&"-".repeat(24)), None);
    }

    #[test]
    fn the_pending_table_is_bounded_and_expired_or_decided_entries_make_room() {
        let mut c = SshChecks::default();
        let mut ids = Vec::new();
        for i in 0..MAX_PENDING_SSH_CHECKS {
            ids.push(
                c.start(NodeId(1), NodeId(2), "u", UserId(1), t(i as i64 % 60))
                    .expect("room"),
            );
        }
        assert_eq!(c.start(NodeId(1), NodeId(2), "u", UserId(1), t(60)), None);
        // One decided: room for one.
        if let Some(e) = c.pending.get(&ids[5]) {
            e.status.send_replace(SshCheckStatus::Denied("no".into()));
        }
        assert!(c
            .start(NodeId(1), NodeId(2), "u", UserId(1), t(61))
            .is_some());
        assert_eq!(c.start(NodeId(1), NodeId(2), "u", UserId(1), t(62)), None);
        // After the TTL, the old ones are gone (and their watchers told).
        let rx = c.pending.get(&ids[0]).map(|e| e.status.subscribe());
        let later = t(60) + chrono_dur(SSH_CHECK_TTL);
        assert!(c
            .start(NodeId(1), NodeId(2), "u", UserId(1), later)
            .is_some());
        assert_eq!(
            rx.map(|r| r.borrow().clone()),
            Some(SshCheckStatus::Denied(EXPIRED.into()))
        );
    }

    #[test]
    fn recent_checks_are_bounded_forgetting_the_oldest() {
        let mut c = SshChecks::default();
        for i in 0..MAX_RECENT_SSH_CHECKS {
            c.remember(UserId(1), NodeId(i as u64), t(i as i64));
        }
        let now = t(MAX_RECENT_SSH_CHECKS as i64);
        c.remember(UserId(2), NodeId(1), now);
        assert!(c.recent.len() <= MAX_RECENT_SSH_CHECKS / 2 + 1);
        let day = Duration::from_secs(86400);
        assert!(c.passed_within(UserId(2), NodeId(1), day, now));
        assert!(
            !c.passed_within(UserId(1), NodeId(0), day, now),
            "oldest forgotten"
        );
        let newest = NodeId(MAX_RECENT_SSH_CHECKS as u64 - 1);
        assert!(c.passed_within(UserId(1), newest, day, now), "newest kept");
        assert!(
            !c.passed_within(UserId(1), newest, Duration::ZERO, now),
            "always"
        );
    }
}
