//! API keys of the REST API: `hskey-api-<12-character prefix>-<secret>`
//! (Headscale 0.28+'s format; Headscale's older `<prefix>.<secret>` keys
//! are read too, for imports).
//!
//! The store keeps the prefix and a bcrypt hash of the secret part (cost 10,
//! as Headscale), never the key; Headscale's bcrypt hashes verify as ours.
//! A request does not pay a bcrypt: a key that verified is remembered by the
//! SHA-256 of its text (compared in constant time) for [`RECHECK`], after
//! which its row is read again (a key expired or deleted by another instance
//! is refused from then on; here it is refused at once).

use std::collections::HashMap;

use chrono::Duration;
use ironscale_types::{ApiKey, Timestamp};
use rand::distr::{Alphanumeric, SampleString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{Result, State, StateError};

/// The text every new key starts with.
pub const API_KEY_PREFIX: &str = "hskey-api-";
const PREFIX_LEN: usize = 12;
const SECRET_LEN: usize = 64;
const BCRYPT_COST: u32 = 10;
/// How long a verified key is trusted before its row is read again.
const RECHECK: Duration = Duration::seconds(30);
/// `last_seen` is written at most this often per key.
const TOUCH_EVERY: Duration = Duration::seconds(60);

/// The prefix and secret of a key text; `None` when it is not a key.
pub fn parse_api_key(text: &str) -> Option<(&str, &str)> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if let Some(rest) = text.strip_prefix(API_KEY_PREFIX) {
        if rest.len() <= PREFIX_LEN + 1 || !rest.is_char_boundary(PREFIX_LEN) {
            return None;
        }
        let (prefix, tail) = rest.split_at(PREFIX_LEN);
        let secret = tail.strip_prefix('-')?;
        return (ok(prefix) && ok(secret)).then_some((prefix, secret));
    }
    // Headscale before 0.28: `<prefix>.<secret>`.
    let (prefix, secret) = text.split_once('.')?;
    (ok(prefix) && ok(secret)).then_some((prefix, secret))
}

/// The prefix an operator names a key by: the bare prefix or the listing's
/// `hskey-api-<prefix>-***`.
pub fn normalize_prefix(p: &str) -> &str {
    p.strip_prefix(API_KEY_PREFIX)
        .map(|r| r.strip_suffix("-***").unwrap_or(r))
        .unwrap_or(p)
}

/// How listings show a key's prefix (Headscale 0.28: Headplane compares it
/// with the start of its key).
pub fn display_prefix(k: &ApiKey) -> String {
    if k.prefix.len() == PREFIX_LEN {
        format!("{API_KEY_PREFIX}{}-***", k.prefix)
    } else {
        k.prefix.clone()
    }
}

#[derive(Clone)]
struct Verified {
    digest: [u8; 32],
    id: u64,
    hash: String,
    expiration: Option<Timestamp>,
    checked_at: Timestamp,
    touched_at: Option<Timestamp>,
}

/// Keys that verified recently, by prefix, and a counter of forgets: a
/// verification that read its row before a key was expired or deleted must
/// not put the key back (`epoch` changed meanwhile).
#[derive(Default)]
pub(crate) struct ApiKeyCache(HashMap<String, Verified>, u64);

/// At most this many bcrypt verifications run at once (each takes a
/// blocking thread for tens of milliseconds).
pub(crate) const BCRYPT_SLOTS: usize = 4;

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

async fn bcrypt_blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Invalid(format!("hashing failed: {e}")))
}

impl State {
    /// Create an API key; returns it and its text, shown once.
    pub async fn create_api_key(&self, expiration: Option<Timestamp>) -> Result<(ApiKey, String)> {
        let now = self.now();
        if matches!(expiration, Some(e) if e <= now) {
            return Err(StateError::Invalid("the expiration is in the past".into()));
        }
        let (prefix, secret) = {
            let mut rng = rand::rng();
            (
                Alphanumeric.sample_string(&mut rng, PREFIX_LEN),
                Alphanumeric.sample_string(&mut rng, SECRET_LEN),
            )
        };
        let text = format!("{API_KEY_PREFIX}{prefix}-{secret}");
        let hash = bcrypt_blocking(move || bcrypt::hash(secret, BCRYPT_COST))
            .await?
            .map_err(|e| StateError::Invalid(format!("hashing failed: {e}")))?;
        let _w = self.inner.write.lock().await;
        let key = self
            .inner
            .store
            .create_api_key(&prefix, &hash, expiration, now)
            .await?;
        tracing::info!(prefix = %key.prefix, "API key created");
        Ok((key, text))
    }

    /// Every API key, by id (hashes included: callers show only prefixes).
    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(self.inner.store.list_api_keys().await?)
    }

    async fn find_api_key(&self, id: Option<u64>, prefix: Option<&str>) -> Result<ApiKey> {
        let found = match (id, prefix) {
            (Some(id), None) => self.inner.store.get_api_key(id).await?,
            (None, Some(p)) => {
                self.inner
                    .store
                    .get_api_key_by_prefix(normalize_prefix(p))
                    .await?
            }
            _ => {
                return Err(StateError::Invalid(
                    "name the API key by exactly one of id or prefix".into(),
                ))
            }
        };
        found.ok_or_else(|| {
            StateError::KeyNotFound(match (id, prefix) {
                (Some(id), _) => format!("API key {id}"),
                (_, p) => format!("API key {}", p.unwrap_or_default()),
            })
        })
    }

    /// Expire an API key now (by id or prefix); requests with it are refused
    /// from now on.
    pub async fn expire_api_key(&self, id: Option<u64>, prefix: Option<&str>) -> Result<ApiKey> {
        let key = self.find_api_key(id, prefix).await?;
        let _w = self.inner.write.lock().await;
        self.inner.store.expire_api_key(key.id, self.now()).await?;
        self.forget_api_key(&key.prefix);
        tracing::info!(prefix = %key.prefix, "API key expired");
        Ok(key)
    }

    /// Delete an API key (by id or prefix).
    pub async fn delete_api_key(&self, id: Option<u64>, prefix: Option<&str>) -> Result<ApiKey> {
        let key = self.find_api_key(id, prefix).await?;
        let _w = self.inner.write.lock().await;
        self.inner.store.delete_api_key(key.id).await?;
        self.forget_api_key(&key.prefix);
        tracing::info!(prefix = %key.prefix, "API key deleted");
        Ok(key)
    }

    fn forget_api_key(&self, prefix: &str) {
        let mut c = self.inner.api_keys.lock();
        c.0.remove(prefix);
        c.1 += 1;
    }

    /// The prefix of `text` if it is a valid, unexpired API key. A key seen
    /// recently costs a SHA-256 and a constant-time compare; otherwise its
    /// row is read and, unless its hash is the one already verified, bcrypt
    /// runs once (off the async threads).
    pub async fn verify_api_key(&self, text: &str) -> Option<String> {
        let (prefix, secret) = parse_api_key(text)?;
        let d = digest(text);
        let now = self.now();
        let (cached, epoch) = {
            let c = self.inner.api_keys.lock();
            (c.0.get(prefix).cloned(), c.1)
        };
        let same_text = cached
            .as_ref()
            .is_some_and(|c| bool::from(c.digest.ct_eq(&d)));
        if let Some(c) = cached.as_ref().filter(|_| same_text) {
            if now >= c.checked_at
                && now - c.checked_at < RECHECK
                && !matches!(c.expiration, Some(e) if e <= now)
            {
                self.touch_api_key(prefix, c, now).await;
                return Some(prefix.to_string());
            }
        }
        let row = match self.inner.store.get_api_key_by_prefix(prefix).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                self.forget_api_key(prefix);
                return None;
            }
            Err(e) => {
                tracing::error!("reading API key {prefix}: {e}");
                return None;
            }
        };
        if row.is_expired(now) {
            self.forget_api_key(prefix);
            return None;
        }
        let known = same_text && cached.as_ref().is_some_and(|c| c.hash == row.hash);
        if !known {
            let (s, h) = (secret.to_string(), row.hash.clone());
            let Ok(_slot) = self.inner.bcrypt_slots.acquire().await else {
                return None;
            };
            let ok = bcrypt_blocking(move || bcrypt::verify(s, &h).unwrap_or(false))
                .await
                .unwrap_or(false);
            if !ok {
                return None;
            }
        }
        let v = Verified {
            digest: d,
            id: row.id,
            hash: row.hash,
            expiration: row.expiration,
            checked_at: now,
            touched_at: cached.and_then(|c| c.touched_at).or(row.last_seen),
        };
        let raced = {
            let mut c = self.inner.api_keys.lock();
            let raced = c.1 != epoch;
            if !raced {
                c.0.insert(prefix.to_string(), v.clone());
            }
            raced
        };
        if raced {
            // A key was expired or deleted while this check ran (perhaps
            // this one): decide from the row as it is now, and cache nothing.
            return match self.inner.store.get_api_key_by_prefix(prefix).await {
                Ok(Some(r)) if !r.is_expired(now) && r.hash == v.hash => Some(prefix.to_string()),
                _ => None,
            };
        }
        self.touch_api_key(prefix, &v, now).await;
        Some(prefix.to_string())
    }

    /// Record the key's use, at most once per [`TOUCH_EVERY`].
    async fn touch_api_key(&self, prefix: &str, v: &Verified, now: Timestamp) {
        if matches!(v.touched_at, Some(t) if now - t < TOUCH_EVERY) {
            return;
        }
        if let Some(c) = self.inner.api_keys.lock().0.get_mut(prefix) {
            c.touched_at = Some(now);
        }
        let _w = self.inner.write.lock().await;
        if let Err(e) = self.inner.store.touch_api_key(v.id, now).await {
            tracing::warn!("recording the use of API key {prefix}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_texts_parse_in_both_formats() {
        let t = format!("hskey-api-abcDEF-12_x4-{}", "s".repeat(64));
        assert_eq!(parse_api_key(&t), Some(("abcDEF-12_x4", &*"s".repeat(64))));
        assert_eq!(
            parse_api_key("AbCdEfG.secretpart"),
            Some(("AbCdEfG", "secretpart"))
        );
        for bad in [
            "",
            "hskey-api-",
            "hskey-api-short",
            "hskey-api-abcdefghijkl",
            "hskey-api-abcdefghijklX",
            "hskey-api-abcdefghijkl-",
            "hskey-api-abcdefghijkl-sec ret",
            "nodot",
            ".secret",
            "prefix.",
        ] {
            assert_eq!(parse_api_key(bad), None, "{bad:?}");
        }
        assert_eq!(
            normalize_prefix("hskey-api-abcdefghijkl-***"),
            "abcdefghijkl"
        );
        assert_eq!(normalize_prefix("abcdefghijkl"), "abcdefghijkl");
    }
}
