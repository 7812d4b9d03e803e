//! The audit log: one entry per change asked through the CLI, the local
//! socket or the REST API (the API layer writes them), stored in the
//! database and listed newest first.
//!
//! Appending is not a state mutation (no snapshot shows the log), so it does
//! not take the writer lock: a refused request is recorded without waiting
//! for a change in progress (`tests/writer_lock.rs` lists it as the
//! exception). Entries are written after the change they describe, not in
//! its transaction: a crash between the two loses the entry, never the change.
//!
//! Never a secret: whatever the caller hands in, the target, result and
//! detail are passed through [`redact_secrets`] first, which keeps a key's
//! public prefix and drops the rest.

use ironscale_types::{AuditEntry, Timestamp};

use crate::{Result, State};

/// The most entries one listing returns.
pub const AUDIT_LIST_MAX: u32 = 10_000;

/// `text` with anything that looks like key material removed: the secret of
/// `hskey-auth-<prefix>-<secret>` and `hskey-api-<prefix>-<secret>` becomes
/// `***` (the prefix stays: it is public), and so does any other run of 32
/// or more letters and digits (Headscale's legacy keys, a secret without its
/// prefix).
pub fn redact_secrets(text: &str) -> String {
    const MARKERS: [&str; 2] = ["hskey-auth-", "hskey-api-"];
    const PREFIX_LEN: usize = 12;
    const LONG_RUN: usize = 32;
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(m) = MARKERS.iter().find(|m| text[i..].starts_with(**m)) {
            // The marker, the prefix, then the secret after a '-'.
            let start = i + m.len();
            let mut j = start;
            while j < bytes.len() && j - start < PREFIX_LEN && (word(bytes[j]) || bytes[j] == b'-')
            {
                j += 1;
            }
            out.push_str(&text[i..j]);
            if j < bytes.len() && bytes[j] == b'-' {
                let mut k = j + 1;
                while k < bytes.len() && (word(bytes[k]) || bytes[k] == b'-') {
                    k += 1;
                }
                if k > j + 1 {
                    out.push_str("-***");
                    i = k;
                    continue;
                }
            }
            i = j;
            continue;
        }
        if bytes[i].is_ascii_alphanumeric() {
            let mut j = i;
            while j < bytes.len() && bytes[j].is_ascii_alphanumeric() {
                j += 1;
            }
            if j - i >= LONG_RUN {
                out.push_str("***");
            } else {
                out.push_str(&text[i..j]);
            }
            i = j;
            continue;
        }
        let ch = text[i..].chars().next().unwrap_or_default();
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

impl State {
    /// Append an entry to the audit log, stamped with the state's clock, its
    /// target, result and detail (a JSON object as text) passed through
    /// [`redact_secrets`]. Returns the stored entry.
    pub async fn record_audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        result: &str,
        detail: &str,
    ) -> Result<AuditEntry> {
        let entry = AuditEntry {
            id: 0,
            at: self.now(),
            actor: redact_secrets(actor),
            action: action.to_string(),
            target: redact_secrets(target),
            result: redact_secrets(result),
            detail: redact_secrets(detail),
        };
        Ok(self.inner.store.append_audit(&entry).await?)
    }

    /// The newest `limit` entries (at most [`AUDIT_LIST_MAX`]) written at
    /// or after `since`, newest first.
    pub async fn audit_entries(
        &self,
        since: Option<Timestamp>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        Ok(self
            .inner
            .store
            .list_audit(since, limit.min(AUDIT_LIST_MAX))
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_material_is_redacted() {
        let secret = "s".repeat(64);
        assert_eq!(
            redact_secrets(&format!(
                "pre-auth key hskey-auth-AbCdEfGhIjKl-{secret} not found"
            )),
            "pre-auth key hskey-auth-AbCdEfGhIjKl-*** not found"
        );
        assert_eq!(
            redact_secrets(&format!("hskey-api-AbCdEfGhIjKl-{secret}")),
            "hskey-api-AbCdEfGhIjKl-***"
        );
        // The listing's form of a prefix is not a secret.
        assert_eq!(
            redact_secrets("hskey-api-AbCdEfGhIjKl-***"),
            "hskey-api-AbCdEfGhIjKl-***"
        );
        // Legacy keys and bare secrets: long runs go.
        let hex48 = "0123456789abcdef".repeat(3);
        assert_eq!(redact_secrets(&format!("key {hex48}")), "key ***");
        assert_eq!(
            redact_secrets(&format!("AbCdEfG.{}", "x".repeat(32))),
            "AbCdEfG.***"
        );
        // Ordinary targets and messages stay as they are.
        for keep in [
            "user:alice (5)",
            "node:12",
            "user \"ünï-cödé\" already exists",
            r#"{"name":"web-1","tags":["tag:server"]}"#,
            "registration abcdefghijklmnopqrstuvwx",
            "",
        ] {
            assert_eq!(redact_secrets(keep), keep);
        }
    }
}
