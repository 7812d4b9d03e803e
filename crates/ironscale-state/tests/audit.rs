//! The audit log through `State`: entries carry the state's clock, come back
//! newest first, and lose anything that looks like key material.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use ironscale_state::AUDIT_LIST_MAX;

mod common;
use common::{manual_state, t0};

#[tokio::test]
async fn entries_carry_the_state_clock_and_no_key_material() {
    let (dir, s, clock) = manual_state().await;

    let first = s
        .record_audit("local-socket", "user.create", "user:alice", "ok", "{}")
        .await
        .unwrap();
    assert_eq!(first.at, t0());
    clock.advance(std::time::Duration::from_secs(60));
    let secret = "S".repeat(64);
    let text = format!("hskey-auth-AbCdEfGhIjKl-{secret}");
    let second = s
        .record_audit(
            "api-key:AbCdEfGhIjKl",
            "preauthkey.expire",
            &format!("preauthkey:{text}"),
            &format!("pre-auth key {text:?} not found"),
            &format!(r#"{{"key":"{text}"}}"#),
        )
        .await
        .unwrap();
    assert_eq!(second.at, t0() + chrono::Duration::seconds(60));
    assert_eq!(second.target, "preauthkey:hskey-auth-AbCdEfGhIjKl-***");
    assert_eq!(
        second.result,
        "pre-auth key \"hskey-auth-AbCdEfGhIjKl-***\" not found"
    );
    assert_eq!(second.detail, r#"{"key":"hskey-auth-AbCdEfGhIjKl-***"}"#);

    assert_eq!(
        s.audit_entries(None, 10).await.unwrap(),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(
        s.audit_entries(Some(t0() + chrono::Duration::seconds(1)), 10)
            .await
            .unwrap(),
        vec![second]
    );
    // A limit beyond the maximum is capped, not refused.
    assert_eq!(
        s.audit_entries(None, AUDIT_LIST_MAX + 1)
            .await
            .unwrap()
            .len(),
        2
    );
    let db = std::fs::read(dir.path().join("s.sqlite")).unwrap();
    let wal = std::fs::read(dir.path().join("s.sqlite-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }
}
