//! Logins in progress: one entry per authorization request, keyed by its
//! `state`, holding what the callback must check (nonce, PKCE verifier, the
//! browser that started it) and what the login is for. Bounded; entries
//! expire; a used `state` is remembered until it would have expired, so a
//! replayed callback is told so rather than "unknown".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::Refusal;

/// How long a login may take from the redirect to the callback.
pub(crate) const FLOW_TTL: Duration = Duration::from_secs(10 * 60);
/// At most this many logins in progress (and as many used states remembered).
pub(crate) const MAX_FLOWS: usize = 4096;
/// At most this many logins in progress for one registration.
pub(crate) const MAX_PER_PURPOSE: usize = 3;

/// What a login is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A waiting `tailscale up` (its registration id).
    Register(ironscale_state::RegistrationId),
    /// A Tailscale SSH connection held for a check (its check id): the
    /// source device's owner logs in to let it through.
    SshCheck(ironscale_state::SshCheckId),
}

pub(crate) struct Flow {
    pub purpose: Purpose,
    pub nonce: String,
    pub pkce_verifier: Option<String>,
    /// SHA-256 of the browser's login cookie.
    binding: [u8; 32],
    created: Instant,
}

impl std::fmt::Debug for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flow")
            .field("purpose", &self.purpose)
            .finish_non_exhaustive()
    }
}

pub(crate) fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[derive(Default)]
pub(crate) struct Flows {
    live: HashMap<[u8; 32], Flow>,
    used: HashMap<[u8; 32], Instant>,
}

impl Flows {
    fn purge(&mut self, now: Instant) {
        self.live
            .retain(|_, f| now.saturating_duration_since(f.created) < FLOW_TTL);
        self.used
            .retain(|_, at| now.saturating_duration_since(*at) < FLOW_TTL);
    }

    /// Remember a new login under `state`. At most [`MAX_PER_PURPOSE`]
    /// logins wait for one registration (an older one is dropped), and a full
    /// table drops its oldest login: opening login links cannot lock others out.
    pub fn insert(
        &mut self,
        state: &str,
        browser: &str,
        purpose: Purpose,
        nonce: String,
        pkce_verifier: Option<String>,
        now: Instant,
    ) {
        let same: Vec<([u8; 32], Instant)> = self
            .live
            .iter()
            .filter(|(_, f)| f.purpose == purpose)
            .map(|(k, f)| (*k, f.created))
            .collect();
        if same.len() >= MAX_PER_PURPOSE {
            if let Some((k, _)) = same.iter().min_by_key(|(_, at)| *at) {
                self.live.remove(k);
            }
        }
        if self.live.len() >= MAX_FLOWS {
            self.purge(now);
            if self.live.len() >= MAX_FLOWS {
                let oldest = self
                    .live
                    .iter()
                    .min_by_key(|(_, f)| f.created)
                    .map(|(k, _)| *k);
                if let Some(k) = oldest {
                    self.live.remove(&k);
                }
            }
        }
        self.live.insert(
            digest(state),
            Flow {
                purpose,
                nonce,
                pkce_verifier,
                binding: digest(browser),
                created: now,
            },
        );
    }

    /// Take the login `state` names, once. The browser must be the one that
    /// started it (its cookie), or the login could be planted in another's.
    pub fn take(
        &mut self,
        state: &str,
        browser: Option<&str>,
        now: Instant,
    ) -> Result<Flow, Refusal> {
        let key = digest(state);
        if let Some(at) = self.used.get(&key) {
            if now.saturating_duration_since(*at) < FLOW_TTL {
                return Err(Refusal::Replayed);
            }
        }
        let Some(flow) = self.live.get(&key) else {
            return Err(Refusal::UnknownState);
        };
        if now.saturating_duration_since(flow.created) >= FLOW_TTL {
            self.live.remove(&key);
            return Err(Refusal::UnknownState);
        }
        match browser {
            Some(b) if digest(b) == flow.binding => {}
            _ => return Err(Refusal::OtherBrowser),
        }
        let flow = self.live.remove(&key).ok_or(Refusal::UnknownState)?;
        if self.used.len() >= MAX_FLOWS {
            self.purge(now);
        }
        if self.used.len() < MAX_FLOWS {
            self.used.insert(key, now);
        }
        Ok(flow)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg() -> Purpose {
        Purpose::Register(
            ironscale_state::RegistrationId::parse("abcdefghijklmnopqrstuvwx").expect("id"),
        )
    }

    #[test]
    fn a_state_is_taken_once_by_its_browser_and_a_replay_is_named() {
        let t = Instant::now();
        let mut f = Flows::default();
        f.insert("s1", "cookie", reg(), "n".into(), None, t);
        assert_eq!(
            f.take("nope", Some("cookie"), t).err(),
            Some(Refusal::UnknownState)
        );
        assert_eq!(
            f.take("s1", Some("other"), t).err(),
            Some(Refusal::OtherBrowser)
        );
        assert_eq!(f.take("s1", None, t).err(), Some(Refusal::OtherBrowser));
        let flow = f.take("s1", Some("cookie"), t).expect("take");
        assert_eq!(flow.nonce, "n");
        assert_eq!(
            f.take("s1", Some("cookie"), t).err(),
            Some(Refusal::Replayed)
        );
    }

    #[test]
    fn logins_expire_and_the_table_is_bounded_without_locking_anyone_out() {
        let t = Instant::now();
        let mut f = Flows::default();
        f.insert("old", "c", reg(), "n".into(), None, t);
        let later = t + FLOW_TTL;
        assert_eq!(
            f.take("old", Some("c"), later).err(),
            Some(Refusal::UnknownState)
        );
        // One registration holds at most MAX_PER_PURPOSE logins: the oldest goes.
        for i in 0..MAX_PER_PURPOSE + 2 {
            f.insert(
                &format!("r{i}"),
                "c",
                reg(),
                "n".into(),
                None,
                later + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(f.len(), MAX_PER_PURPOSE);
        assert_eq!(
            f.take("r0", Some("c"), later).err(),
            Some(Refusal::UnknownState)
        );
        assert!(f
            .take(&format!("r{}", MAX_PER_PURPOSE + 1), Some("c"), later)
            .is_ok());
        // A full table drops its oldest login instead of refusing a new one.
        let mut f = Flows::default();
        for i in 0..MAX_FLOWS {
            let p = Purpose::Register(
                ironscale_state::RegistrationId::parse(&format!("{i:0>24}")).expect("id"),
            );
            f.insert(
                &format!("s{i}"),
                "c",
                p,
                "n".into(),
                None,
                t + Duration::from_millis(i as u64),
            );
        }
        assert_eq!(f.len(), MAX_FLOWS);
        f.insert(
            "newest",
            "c",
            reg(),
            "n".into(),
            None,
            t + Duration::from_secs(60),
        );
        assert_eq!(f.len(), MAX_FLOWS);
        assert_eq!(
            f.take("s0", Some("c"), t).err(),
            Some(Refusal::UnknownState)
        );
        assert!(f
            .take("newest", Some("c"), t + Duration::from_secs(60))
            .is_ok());
    }
}
