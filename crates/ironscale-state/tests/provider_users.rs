//! Users from an identity provider (OIDC): created at first login, found again by their
//! provider identity (not their e-mail or name), refreshed at each login.
#![allow(clippy::unwrap_used)]

mod common;

use ironscale_state::ProviderIdentity;
use ironscale_types::UserRef;

fn alice() -> ProviderIdentity {
    ProviderIdentity {
        provider: "oidc".into(),
        provider_id: "http://idp.test/alice-sub".into(),
        preferred_name: "alice".into(),
        email: "alice@example.com".into(),
        display_name: "Alice Admin".into(),
        profile_pic_url: "http://idp.test/alice.png".into(),
        groups: vec!["admins".into()],
    }
}

#[tokio::test]
async fn a_first_login_creates_the_user_and_later_logins_find_and_refresh_it() {
    let (_dir, state, _clock) = common::manual_state().await;
    let (u, created) = state.upsert_provider_user(&alice()).await.unwrap();
    assert!(created);
    assert_eq!(u.name, "alice");
    assert_eq!(u.email, "alice@example.com");
    assert_eq!(u.provider, "oidc");
    assert_eq!(u.provider_id, "http://idp.test/alice-sub");
    assert_eq!(u.idp_groups, vec!["admins".to_string()]);

    // Same subject, new e-mail and groups: the same user, refreshed; the name stays.
    let mut moved = alice();
    moved.email = "alice@new.example".into();
    moved.preferred_name = "alice.new".into();
    moved.groups = vec!["staff".into()];
    let (again, created) = state.upsert_provider_user(&moved).await.unwrap();
    assert!(!created);
    assert_eq!(again.id, u.id);
    assert_eq!(again.name, "alice");
    assert_eq!(again.email, "alice@new.example");
    assert_eq!(again.idp_groups, vec!["staff".to_string()]);
    let found = state.find_user(&UserRef::Id(u.id)).unwrap();
    assert_eq!(
        found.idp_groups,
        vec!["staff".to_string()],
        "the snapshot has it too"
    );
    assert_eq!(state.list_users().len(), 1);
}

#[tokio::test]
async fn a_new_provider_user_never_takes_over_an_existing_name() {
    let (_dir, state, _clock) = common::manual_state().await;
    let local = state.create_user("alice", "", "").await.unwrap();
    let (u, _) = state.upsert_provider_user(&alice()).await.unwrap();
    assert_ne!(
        u.id, local.id,
        "a CLI user is not claimed by a provider login"
    );
    assert_eq!(u.name, "alice-2");
    // Another subject with the same preferred name is yet another user.
    let mut other = alice();
    other.provider_id = "http://idp.test/other-sub".into();
    let (o, _) = state.upsert_provider_user(&other).await.unwrap();
    assert_eq!(o.name, "alice-3");
    assert_eq!(state.list_users().len(), 3);
}

#[tokio::test]
async fn an_identity_without_an_id_is_refused_and_writes_nothing() {
    let (_dir, state, _clock) = common::manual_state().await;
    let mut bad = alice();
    bad.provider_id.clear();
    assert!(state.upsert_provider_user(&bad).await.is_err());
    assert!(state.list_users().is_empty());
}
