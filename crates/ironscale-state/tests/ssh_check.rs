//! Tailscale SSH check mode in the state layer, in virtual time: the
//! policy's `checkPeriod` found for a connection, a check that waits for the
//! source device's owner, a pass remembered for the period (never with
//! `always`), refusals (tagged or unknown source, another user, a decided
//! or expired check) and the wait that ends at the check's expiry.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::t0;
use ironscale_state::{
    ManualClock, SshCheckDecision, SshCheckError, SshCheckId, SshCheckStatus, State, SSH_CHECK_TTL,
};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, NodeId, UserId};

/// A node with tags (see `common::node`).
fn node(i: u8, name: &str, user: Option<UserId>, tags: &[&str]) -> Node {
    let mut n = common::node(i, name, user);
    n.tags = tags.iter().map(|t| t.to_string()).collect();
    n
}

const POLICY: &str = r#"{
  "tagOwners": {"tag:server": ["alice@"], "tag:ci": ["alice@"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    {"action": "check", "src": ["alice@", "bob@", "tag:ci"], "dst": ["tag:server"], "users": ["root"], "checkPeriod": "1h"},
    {"action": "check", "src": ["alice@"], "dst": ["tag:server"], "users": ["deploy"], "checkPeriod": "always"},
    {"action": "accept", "src": ["alice@"], "dst": ["tag:server"], "users": ["ubuntu"]}
  ]
}"#;

struct Env {
    _dir: tempfile::TempDir,
    state: State,
    clock: ManualClock,
    alice: UserId,
    bob: UserId,
    laptop: NodeId,
    phone: NodeId,
    server: NodeId,
    ci: NodeId,
}

/// alice's laptop, bob's phone, a tagged server and a tagged CI runner.
async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ironscale_store::sqlite_config(dir.path().join("s.sqlite"));
    let store = Store::open(&cfg).await.unwrap();
    let alice = store
        .create_user(&NewUser::named("alice"), t0())
        .await
        .unwrap()
        .id;
    let bob = store
        .create_user(&NewUser::named("bob"), t0())
        .await
        .unwrap()
        .id;
    let laptop = store
        .insert_node(&node(1, "laptop", Some(alice), &[]))
        .await
        .unwrap()
        .id;
    let phone = store
        .insert_node(&node(2, "phone", Some(bob), &[]))
        .await
        .unwrap()
        .id;
    let server = store
        .insert_node(&node(3, "server", None, &["tag:server"]))
        .await
        .unwrap()
        .id;
    let ci = store
        .insert_node(&node(4, "ci", None, &["tag:ci"]))
        .await
        .unwrap()
        .id;
    let clock = ManualClock::new(t0());
    let state = State::load_with_clock(
        store,
        Default::default(),
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    state
        .set_policy_text(POLICY, "policy.hujson")
        .await
        .unwrap();
    Env {
        _dir: dir,
        state,
        clock,
        alice,
        bob,
        laptop,
        phone,
        server,
        ci,
    }
}

fn pending(d: SshCheckDecision) -> SshCheckId {
    match d {
        SshCheckDecision::Pending(id) => id,
        other => panic!("expected a pending check, got {other:?}"),
    }
}

#[tokio::test]
async fn the_policy_gives_each_connection_its_check_period() {
    let e = env().await;
    let s = &e.state;
    assert_eq!(
        s.ssh_check_period(e.laptop, e.server, "root"),
        Some(Duration::from_secs(3600))
    );
    assert_eq!(
        s.ssh_check_period(e.laptop, e.server, "deploy"),
        Some(Duration::ZERO)
    );
    assert_eq!(s.ssh_check_period(e.laptop, e.server, "ubuntu"), None);
    assert_eq!(s.ssh_check_period(e.phone, e.server, "deploy"), None);
    assert_eq!(s.ssh_check_period(e.laptop, e.phone, "root"), None);
    s.clear_policy().await;
    assert_eq!(s.ssh_check_period(e.laptop, e.server, "root"), None);
}

#[tokio::test]
async fn a_check_waits_for_the_owner_and_a_pass_lasts_the_check_period() {
    let e = env().await;
    let s = &e.state;
    let hour = s.ssh_check_period(e.laptop, e.server, "root").unwrap();

    let id = pending(s.ssh_check(e.laptop, e.server, "root", hour));
    let p = s.pending_ssh_check(&id).unwrap();
    assert_eq!((p.src, p.dst, p.owner), (e.laptop, e.server, e.alice));
    assert_eq!(p.local_user, "root");
    assert_eq!(p.expires - p.created, chrono::Duration::minutes(10));
    let mut rx = s.watch_ssh_check(&id).unwrap();
    assert_eq!(*rx.borrow(), SshCheckStatus::Waiting);

    // bob cannot pass alice's check; the check still waits.
    assert_eq!(
        s.approve_ssh_check(&id, e.bob),
        Err(SshCheckError::NotOwner)
    );
    assert!(s.pending_ssh_check(&id).is_some());

    let waiter = {
        let s = s.clone();
        let id = id.clone();
        tokio::spawn(async move { s.wait_ssh_check(&id).await })
    };
    s.approve_ssh_check(&id, e.alice).unwrap();
    assert_eq!(
        waiter.await.unwrap(),
        Some(SshCheckStatus::Approved(e.alice))
    );
    rx.changed().await.unwrap();
    assert_eq!(*rx.borrow(), SshCheckStatus::Approved(e.alice));
    // Once only.
    assert_eq!(
        s.approve_ssh_check(&id, e.alice),
        Err(SshCheckError::Decided)
    );
    assert!(s.pending_ssh_check(&id).is_none());

    // Within the hour: accepted at once, to any destination the rule covers.
    e.clock.advance(Duration::from_secs(59 * 60));
    assert_eq!(
        s.ssh_check(e.laptop, e.server, "root", hour),
        SshCheckDecision::Accept
    );
    // `always` (zero) checks every connection, passed or not.
    let deploy = s.ssh_check_period(e.laptop, e.server, "deploy").unwrap();
    pending(s.ssh_check(e.laptop, e.server, "deploy", deploy));
    // Another device of bob's was never checked.
    pending(s.ssh_check(e.phone, e.server, "root", hour));
    // After the hour, a new check.
    e.clock.advance(Duration::from_secs(60));
    pending(s.ssh_check(e.laptop, e.server, "root", hour));
}

#[tokio::test]
async fn tagged_and_unknown_sources_are_rejected_for_want_of_a_person() {
    let e = env().await;
    let s = &e.state;
    let hour = Duration::from_secs(3600);
    match s.ssh_check(e.ci, e.server, "root", hour) {
        SshCheckDecision::Reject(why) => assert!(why.contains("tagged"), "{why}"),
        other => panic!("{other:?}"),
    }
    match s.ssh_check(NodeId(99), e.server, "root", hour) {
        SshCheckDecision::Reject(why) => assert!(why.contains("unknown"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_denied_check_says_why_and_cannot_be_approved() {
    let e = env().await;
    let s = &e.state;
    let id = pending(s.ssh_check(e.laptop, e.server, "root", Duration::from_secs(3600)));
    assert!(s.deny_ssh_check(&id, "logged in as someone else"));
    assert!(!s.deny_ssh_check(&id, "again"), "decided once");
    assert_eq!(
        s.wait_ssh_check(&id).await,
        Some(SshCheckStatus::Denied("logged in as someone else".into()))
    );
    assert_eq!(
        s.approve_ssh_check(&id, e.alice),
        Err(SshCheckError::Decided)
    );
    // A denial is no pass: the next connection checks again.
    pending(s.ssh_check(e.laptop, e.server, "root", Duration::from_secs(3600)));
    let unknown = SshCheckId::parse("AAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
    assert!(!s.deny_ssh_check(&unknown, "x"));
    assert_eq!(
        s.approve_ssh_check(&unknown, e.alice),
        Err(SshCheckError::NotFound)
    );
    assert_eq!(s.wait_ssh_check(&unknown).await, None);
}

#[tokio::test]
async fn a_waiting_check_expires_on_the_state_clock() {
    let e = env().await;
    let s = &e.state;
    let id = pending(s.ssh_check(e.laptop, e.server, "root", Duration::from_secs(3600)));
    let waiter = {
        let s = s.clone();
        let id = id.clone();
        tokio::spawn(async move { s.wait_ssh_check(&id).await })
    };
    // Not yet: the waiter is still waiting a second before the expiry.
    e.clock.advance(SSH_CHECK_TTL - Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    assert!(s.pending_ssh_check(&id).is_some());
    e.clock.advance(Duration::from_secs(1));
    match waiter.await.unwrap() {
        Some(SshCheckStatus::Denied(why)) => assert!(why.contains("expired"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(s.pending_ssh_check(&id).is_none());
    assert_eq!(
        s.approve_ssh_check(&id, e.alice),
        Err(SshCheckError::NotFound)
    );
}

#[tokio::test]
async fn a_device_that_changed_hands_is_checked_for_its_new_owner() {
    let e = env().await;
    let s = &e.state;
    let hour = Duration::from_secs(3600);
    let id = pending(s.ssh_check(e.laptop, e.server, "root", hour));
    s.approve_ssh_check(&id, e.alice).unwrap();
    assert_eq!(
        s.ssh_check(e.laptop, e.server, "root", hour),
        SshCheckDecision::Accept
    );
    // The laptop moves to bob: alice's pass does not carry over, and a check
    // begun for alice cannot be passed by either now.
    let before = pending(s.ssh_check(e.laptop, e.server, "deploy", Duration::ZERO));
    s.move_node(e.laptop, &ironscale_types::UserRef::Id(e.bob))
        .await
        .unwrap();
    let id = pending(s.ssh_check(e.laptop, e.server, "root", hour));
    assert_eq!(s.pending_ssh_check(&id).unwrap().owner, e.bob);
    assert_eq!(
        s.approve_ssh_check(&before, e.alice),
        Err(SshCheckError::NotOwner)
    );
    assert_eq!(
        s.approve_ssh_check(&before, e.bob),
        Err(SshCheckError::NotOwner)
    );
    s.approve_ssh_check(&id, e.bob).unwrap();
}
