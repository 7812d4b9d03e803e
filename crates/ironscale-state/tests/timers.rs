//! Node timers in virtual time: a manual clock is advanced, nothing sleeps.
//! Ephemeral deletion after inactivity and key-expiry announcements fire at
//! their deadline and not before, are cancelled or moved by the changes that
//! should cancel or move them, and any number of them costs one driver task.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;
use std::time::Duration;

use ironscale_keys::{MachinePublic, NodePublic};
use ironscale_state::{ManualClock, Settings, State, TimerKind};
use ironscale_store::{NewUser, Store};
use ironscale_types::{Node, NodeId, RegisterMethod, Timestamp, UserId};

const TIMEOUT: Duration = Duration::from_secs(120);

fn t0() -> Timestamp {
    chrono::DateTime::from_timestamp(2_000_000_000, 0).unwrap()
}

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

fn node(user: UserId, i: u32, ephemeral: bool, expiry: Option<Timestamp>) -> Node {
    let mut k = [0u8; 32];
    k[..4].copy_from_slice(&i.to_le_bytes());
    k[31] = 1;
    Node {
        id: NodeId(0),
        machine_key: MachinePublic::from_bytes(k),
        node_key: NodePublic::from_bytes(k),
        disco_key: Default::default(),
        ipv4: Some(std::net::Ipv4Addr::from(0x6440_0000 + i + 1)),
        ipv6: None,
        hostname: format!("n{i}"),
        given_name: format!("n{i}"),
        user_id: Some(user),
        tags: Vec::new(),
        hostinfo_json: None,
        home_derp: 0,
        announced_routes: Vec::new(),
        approved_routes: Vec::new(),
        endpoints: Vec::new(),
        expiry,
        created_at: t0(),
        last_seen: None,
        register_method: RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral,
        capver: 106,
        approved: true,
    }
}

struct Lab {
    _dir: tempfile::TempDir,
    store: Store,
    state: State,
    clock: ManualClock,
}

/// A state on a manual clock at `t0()` over a fresh database holding `nodes`
/// (built by the closure from the user's id and an index).
async fn lab(nodes: impl FnOnce(UserId) -> Vec<Node>) -> (Lab, Vec<Node>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&ironscale_store::sqlite_config(dir.path().join("s.sqlite")))
        .await
        .unwrap();
    let user = store
        .create_user(
            &NewUser {
                name: "alice".into(),
                ..Default::default()
            },
            t0(),
        )
        .await
        .unwrap();
    let mut stored = Vec::new();
    for n in nodes(user.id) {
        stored.push(store.insert_node(&n).await.unwrap());
    }
    let clock = ManualClock::new(t0());
    let settings = Settings {
        ephemeral_inactivity_timeout: TIMEOUT,
        ..Default::default()
    };
    let state = State::load_with_clock(
        store.clone(),
        settings,
        Default::default(),
        Arc::new(clock.clone()),
    )
    .await
    .unwrap();
    (
        Lab {
            _dir: dir,
            store,
            state,
            clock,
        },
        stored,
    )
}

impl Lab {
    /// Advance virtual time and let every timer that came due fire.
    async fn advance(&self, d: chrono::Duration) {
        self.clock.advance(d.to_std().unwrap());
        tokio::time::timeout(Duration::from_secs(30), self.state.timers_settled())
            .await
            .expect("timers did not settle");
    }

    fn exists(&self, id: NodeId) -> bool {
        self.state.get_node(id).is_ok()
    }

    async fn stored(&self, id: NodeId) -> bool {
        self.store.get_node(id).await.unwrap().is_some()
    }
}

/// An ephemeral node that connected once and went away.
async fn connected_then_gone(l: &Lab, id: NodeId) {
    let slot = l.state.connect(id).await.unwrap();
    l.state.disconnect(&slot).await;
}

#[tokio::test]
async fn ephemeral_node_is_deleted_exactly_after_the_timeout() {
    let (l, n) = lab(|u| vec![node(u, 0, true, None), node(u, 1, false, None)]).await;
    let (e, keep) = (n[0].id, n[1].id);
    // Connected: no deletion pending.
    let slot = l.state.connect(e).await.unwrap();
    assert_eq!(
        l.state.timer_deadline(TimerKind::EphemeralDeletion, e),
        None
    );
    l.advance(secs(30)).await;
    l.state.disconnect(&slot).await;
    let gone_at = t0() + secs(30) + secs(120);
    assert_eq!(
        l.state.timer_deadline(TimerKind::EphemeralDeletion, e),
        Some(gone_at)
    );

    l.advance(secs(119)).await;
    assert!(l.exists(e), "deleted before the inactivity timeout");
    l.advance(secs(1)).await;
    assert_eq!(l.state.now(), gone_at);
    assert!(!l.exists(e), "not deleted at the inactivity timeout");
    assert!(!l.stored(e).await, "still in the database");
    assert_eq!(l.state.timer_count(), 0);
    // A node that is not ephemeral is never deleted.
    assert!(l.exists(keep));
    let slot = l.state.connect(keep).await.unwrap();
    l.state.disconnect(&slot).await;
    l.advance(secs(10_000)).await;
    assert!(l.exists(keep));
}

#[tokio::test]
async fn ephemeral_node_that_reconnects_in_time_is_kept() {
    let (l, n) = lab(|u| vec![node(u, 0, true, None)]).await;
    let e = n[0].id;
    connected_then_gone(&l, e).await;
    l.advance(secs(119)).await;
    let _slot = l.state.connect(e).await.unwrap();
    assert_eq!(
        l.state.timer_deadline(TimerKind::EphemeralDeletion, e),
        None
    );
    l.advance(secs(10_000)).await;
    assert!(l.exists(e), "deleted although it reconnected");
}

#[tokio::test]
async fn reconnect_then_disconnect_restarts_the_timer() {
    let (l, n) = lab(|u| vec![node(u, 0, true, None)]).await;
    let e = n[0].id;
    connected_then_gone(&l, e).await;
    l.advance(secs(60)).await;
    connected_then_gone(&l, e).await;
    // The first disconnect's deadline (t0 + 120 s) passes: still there.
    l.advance(secs(61)).await;
    assert!(l.exists(e), "deleted on the first disconnect's deadline");
    l.advance(secs(58)).await;
    assert!(
        l.exists(e),
        "deleted before the timeout after the last disconnect"
    );
    l.advance(secs(1)).await;
    assert_eq!(l.state.now(), t0() + secs(180));
    assert!(!l.exists(e), "not deleted 120 s after the last disconnect");
}

#[tokio::test]
async fn ephemeral_leftover_from_a_previous_run_gets_its_grace_period() {
    let (l, n) = lab(|u| vec![node(u, 0, true, None)]).await;
    let e = n[0].id;
    l.advance(secs(119)).await;
    assert!(l.exists(e));
    l.advance(secs(1)).await;
    assert!(!l.exists(e));
}

#[tokio::test]
async fn key_expiry_is_announced_at_its_deadline_and_not_before() {
    let exp = t0() + secs(3600);
    let (l, n) = lab(|u| vec![node(u, 0, false, Some(exp)), node(u, 1, false, None)]).await;
    let (a, peer) = (n[0].id, n[1].id);
    assert_eq!(l.state.timer_deadline(TimerKind::Expiry, a), Some(exp));
    let slot = l.state.connect(peer).await.unwrap();
    slot.take();

    l.advance(secs(3599)).await;
    assert!(slot.take().is_empty(), "expiry announced early");
    l.advance(secs(1)).await;
    let p = slot.take();
    assert!(
        p.nodes.contains(&a),
        "expiry not announced at its deadline: {p:?}"
    );
    assert_eq!(l.state.timer_deadline(TimerKind::Expiry, a), None);
    l.advance(secs(3600)).await;
    assert!(slot.take().is_empty(), "expiry announced twice");
}

#[tokio::test]
async fn moved_or_cleared_expiry_cancels_the_old_timer() {
    let first = t0() + secs(100);
    let (l, n) = lab(|u| {
        vec![
            node(u, 0, false, Some(first)),
            node(u, 1, false, Some(first)),
        ]
    })
    .await;
    let (moved, cleared) = (n[0].id, n[1].id);
    let watcher = l.state.connect(moved).await.unwrap();

    // Moved later: nothing at the old deadline, an announcement at the new one.
    let later = t0() + secs(200);
    l.state.expire_node(moved, Some(later)).await.unwrap();
    assert_eq!(
        l.state.timer_deadline(TimerKind::Expiry, moved),
        Some(later)
    );
    // Cleared (a tagged node does not expire).
    l.state
        .set_node_tags(cleared, vec!["tag:server".into()])
        .await
        .unwrap();
    assert_eq!(l.state.timer_deadline(TimerKind::Expiry, cleared), None);
    assert_eq!(l.state.timer_count(), 1);
    watcher.take();

    l.advance(secs(150)).await;
    assert!(
        watcher.take().is_empty(),
        "an old (moved or cleared) expiry fired"
    );
    l.advance(secs(50)).await;
    let p = watcher.take();
    assert!(
        p.nodes.contains(&moved),
        "moved expiry not announced: {p:?}"
    );
    assert!(
        !p.nodes.contains(&cleared),
        "cleared expiry announced: {p:?}"
    );

    // Deleting a node cancels its timers.
    l.state
        .expire_node(cleared, Some(t0() + secs(1000)))
        .await
        .unwrap();
    assert_eq!(l.state.timer_count(), 1);
    l.state.delete_node(cleared).await.unwrap();
    assert_eq!(l.state.timer_count(), 0);
}

#[tokio::test]
async fn a_thousand_timers_cost_one_driver_task() {
    const N: u32 = 1000;
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    // A state costs a few tasks (the database pool's, the one timer driver),
    // with or without timers: not one per node.
    const FEW: usize = 5;
    let before = tasks();
    let (l, n) = lab(|u| {
        (0..N)
            .map(|i| node(u, i, true, Some(t0() + secs(60 + i64::from(i)))))
            .collect()
    })
    .await;
    // Every node: an ephemeral deletion (left over from a previous run) and an expiry.
    assert_eq!(l.state.timer_count(), 2 * N as usize);
    let spawned = tasks() - before;
    assert!(spawned <= FEW, "{spawned} tasks for {N} nodes' timers");
    l.advance(secs(119)).await;
    assert_eq!(l.state.list_nodes().len(), N as usize);
    l.advance(secs(1)).await;
    assert_eq!(l.state.list_nodes().len(), 0);
    assert_eq!(l.state.timer_count(), 0);
    assert!(!l.stored(n[0].id).await);
    // The store may run a short-lived task of its own (a pool connection being
    // opened under load): give those a moment to end, but not one per node.
    let mut left = tasks() - before;
    for _ in 0..50 {
        if left <= FEW {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = tasks() - before;
    }
    assert!(
        left <= FEW,
        "{left} tasks left after {N} nodes' timers fired"
    );
}
