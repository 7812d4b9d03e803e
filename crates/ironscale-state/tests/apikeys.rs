//! API keys: created and shown once, stored as a bcrypt hash of the secret
//! (never the key), verified with a cache, refused once expired or deleted.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use ironscale_state::{display_prefix, StateError};

mod common;
use common::{manual_state as env, t0};

#[tokio::test]
async fn a_key_verifies_until_it_expires_or_is_deleted() {
    let (dir, s, clock) = env().await;
    let (key, text) = s
        .create_api_key(Some(t0() + chrono::Duration::days(90)))
        .await
        .unwrap();
    assert!(text.starts_with(&format!("hskey-api-{}-", key.prefix)));
    assert_eq!(text.len(), 87, "Headscale's key length");
    assert_eq!(
        display_prefix(&key),
        format!("hskey-api-{}-***", key.prefix)
    );
    // Stored hashed: neither the key nor its secret is in the database file,
    // nor in Debug output.
    let secret = &text[23..];
    assert!(key.hash.starts_with("$2"), "bcrypt");
    assert!(!format!("{key:?}").contains(&key.hash));
    let db = std::fs::read(dir.path().join("s.sqlite")).unwrap();
    let wal = std::fs::read(dir.path().join("s.sqlite-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
    }

    assert_eq!(s.verify_api_key(&text).await.as_deref(), Some(&*key.prefix));
    // Again (from the cache), and after the cache's recheck.
    assert_eq!(s.verify_api_key(&text).await.as_deref(), Some(&*key.prefix));
    clock.advance(Duration::from_secs(120));
    assert_eq!(s.verify_api_key(&text).await.as_deref(), Some(&*key.prefix));
    let listed = s.list_api_keys().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].last_seen.is_some(), "last use recorded");

    // A wrong secret with the right prefix, a truncated key, garbage.
    let mut wrong = text.clone();
    wrong.pop();
    wrong.push(if text.ends_with('a') { 'b' } else { 'a' });
    assert_eq!(s.verify_api_key(&wrong).await, None);
    assert_eq!(s.verify_api_key(&text[..40]).await, None);
    assert_eq!(s.verify_api_key("Bearer nonsense").await, None);
    // The right key still works after the failures.
    assert!(s.verify_api_key(&text).await.is_some());

    // Expired by prefix (the listing's spelling): refused at once.
    s.expire_api_key(None, Some(&display_prefix(&key)))
        .await
        .unwrap();
    assert_eq!(s.verify_api_key(&text).await, None);

    // A second key, deleted by id: refused at once.
    let (k2, t2) = s.create_api_key(None).await.unwrap();
    assert!(s.verify_api_key(&t2).await.is_some());
    s.delete_api_key(Some(k2.id), None).await.unwrap();
    assert_eq!(s.verify_api_key(&t2).await, None);
    assert!(matches!(
        s.delete_api_key(Some(k2.id), None).await,
        Err(StateError::KeyNotFound(_))
    ));
    assert!(matches!(
        s.expire_api_key(Some(1), Some("x")).await,
        Err(StateError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_key_past_its_expiration_is_refused_and_past_expirations_are_rejected() {
    let (_dir, s, clock) = env().await;
    assert!(matches!(
        s.create_api_key(Some(t0() - chrono::Duration::seconds(1)))
            .await,
        Err(StateError::Invalid(_))
    ));
    let (_, text) = s
        .create_api_key(Some(t0() + chrono::Duration::hours(1)))
        .await
        .unwrap();
    assert!(s.verify_api_key(&text).await.is_some());
    clock.advance(Duration::from_secs(3601));
    assert_eq!(s.verify_api_key(&text).await, None);
}

/// A key hashed as Headscale stores it (bcrypt of the secret part) verifies.
#[tokio::test]
async fn headscale_bcrypt_hashes_verify() {
    let (_dir, s, _) = env().await;
    let (k, text) = s.create_api_key(None).await.unwrap();
    // Our own hash is already Headscale's scheme; a legacy `<prefix>.<secret>`
    // text is refused when no such prefix exists.
    assert!(s.verify_api_key(&text).await.is_some());
    assert_eq!(
        s.verify_api_key(&format!("{}.{}", k.prefix, &text[23..]))
            .await
            .as_deref(),
        Some(&*k.prefix)
    );
    assert_eq!(s.verify_api_key("AbCdEfG.nope").await, None);
}
