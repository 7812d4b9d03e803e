//! Node timers: ephemeral nodes deleted after inactivity, key expiry announced.
//!
//! One table holds every deadline, keyed by (kind, node): setting a timer
//! replaces that node's earlier timer of the same kind, cancelling removes it.
//! One driver task sleeps on the injected [`Clock`](crate::Clock) until the
//! earliest deadline (or until the table changes) and fires what is due under
//! the writer lock. Invariants:
//! - at most one entry per (kind, node); both indexes hold the same entries;
//! - a node with an expiry in the future has an `Expiry` entry at exactly that
//!   instant (kept by `commit`, which sees every node change), and no node
//!   that is gone has any entry;
//! - an ephemeral node has an `EphemeralDeletion` entry from its disconnect
//!   until it reconnects, is deleted, or the entry fires.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};

use ironscale_mapper::Tailnet;
use ironscale_types::{NodeId, Timestamp};

use crate::{Change, Inner, State};

/// What a timer does when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// Delete the node if it is still ephemeral and offline.
    EphemeralDeletion,
    /// The node's key expired: tell the node and its peers.
    Expiry,
}

/// Deadlines by (kind, node), ordered by instant.
#[derive(Debug, Default)]
pub(crate) struct TimerTable {
    by_deadline: BTreeSet<(Timestamp, TimerKind, NodeId)>,
    by_key: HashMap<(TimerKind, NodeId), Timestamp>,
}

impl TimerTable {
    /// Set (or move) the timer of `kind` for `id`. Returns whether the
    /// earliest deadline may have changed.
    pub(crate) fn set(&mut self, kind: TimerKind, id: NodeId, at: Timestamp) -> bool {
        if let Some(old) = self.by_key.insert((kind, id), at) {
            self.by_deadline.remove(&(old, kind, id));
        }
        self.by_deadline.insert((at, kind, id));
        true
    }

    /// Cancel the timer of `kind` for `id`; returns whether there was one.
    pub(crate) fn cancel(&mut self, kind: TimerKind, id: NodeId) -> bool {
        match self.by_key.remove(&(kind, id)) {
            Some(at) => self.by_deadline.remove(&(at, kind, id)),
            None => false,
        }
    }

    pub(crate) fn get(&self, kind: TimerKind, id: NodeId) -> Option<Timestamp> {
        self.by_key.get(&(kind, id)).copied()
    }

    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        self.by_deadline.first().map(|(at, _, _)| *at)
    }

    /// Remove and return every timer due at `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: Timestamp) -> Vec<(TimerKind, NodeId)> {
        let mut due = Vec::new();
        while let Some(&(at, kind, id)) = self.by_deadline.first() {
            if at > now {
                break;
            }
            self.by_deadline.pop_first();
            self.by_key.remove(&(kind, id));
            due.push((kind, id));
        }
        due
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.by_deadline.len());
        self.by_key.len()
    }
}

impl State {
    /// The state layer's current time (its injected clock).
    pub fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The clock this state runs on.
    pub fn clock(&self) -> &Arc<dyn crate::Clock> {
        &self.inner.clock
    }

    /// Number of pending node timers (ephemeral deletions and key expiries).
    pub fn timer_count(&self) -> usize {
        self.inner.timers.lock().len()
    }

    /// When the timer of `kind` for node `id` fires, if one is set.
    pub fn timer_deadline(&self, kind: TimerKind, id: NodeId) -> Option<Timestamp> {
        self.inner.timers.lock().get(kind, id)
    }

    fn set_timer(&self, kind: TimerKind, id: NodeId, at: Timestamp) {
        if self.inner.timers.lock().set(kind, id, at) {
            self.inner.timers_changed.notify_one();
        }
    }

    pub(crate) fn cancel_timer(&self, kind: TimerKind, id: NodeId) {
        if self.inner.timers.lock().cancel(kind, id) {
            self.inner.timers_changed.notify_one();
        }
    }

    /// An ephemeral node went offline: delete it after the inactivity timeout
    /// unless it reconnects first (a later disconnect restarts the timer).
    pub(crate) fn schedule_ephemeral_deletion(&self, id: NodeId) {
        let wait = chrono::Duration::from_std(self.inner.settings.ephemeral_inactivity_timeout)
            .unwrap_or(chrono::Duration::MAX);
        let now = self.now();
        let at = now
            .checked_add_signed(wait)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        self.set_timer(TimerKind::EphemeralDeletion, id, at);
    }

    /// Bring the expiry timers in step with a commit's changed nodes: an
    /// expiry in the future gets a timer at that instant, a moved one is moved,
    /// a cleared or past one (and any timer of a deleted node) is cancelled.
    /// Costs the changed nodes, not the tailnet.
    pub(crate) fn update_timers_for(&self, old: &Tailnet, next: &Tailnet, ids: &BTreeSet<NodeId>) {
        if ids.is_empty() {
            return;
        }
        let now = self.now();
        let mut table = self.inner.timers.lock();
        let mut changed = false;
        for id in ids {
            match next.nodes.get(id) {
                None => {
                    changed |= table.cancel(TimerKind::Expiry, *id);
                    changed |= table.cancel(TimerKind::EphemeralDeletion, *id);
                }
                Some(n) => {
                    let before = old.nodes.get(id).and_then(|o| o.expiry);
                    if before == n.expiry && old.nodes.contains_key(id) {
                        continue;
                    }
                    changed |= match n.expiry {
                        Some(e) if e > now => table.set(TimerKind::Expiry, *id, e),
                        _ => table.cancel(TimerKind::Expiry, *id),
                    };
                }
            }
        }
        drop(table);
        if changed {
            self.inner.timers_changed.notify_one();
        }
    }

    /// Timers for a freshly loaded snapshot: every future expiry; ephemeral
    /// nodes left over from a previous run get their grace period again.
    pub(crate) fn init_timers(&self) {
        let t = self.snapshot();
        let now = self.now();
        for n in t.nodes.values() {
            if let Some(e) = n.expiry.filter(|e| *e > now) {
                self.inner.timers.lock().set(TimerKind::Expiry, n.id, e);
            }
            if n.ephemeral {
                self.schedule_ephemeral_deletion(n.id);
            }
        }
        self.inner.timers_changed.notify_one();
    }

    /// Start the one task that fires every node timer. It ends when the last
    /// `State` handle is dropped.
    pub(crate) fn spawn_timer_driver(&self) {
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let clock = self.inner.clock.clone();
        let changed = self.inner.timers_changed.clone();
        tokio::spawn(async move {
            loop {
                let next = match weak.upgrade() {
                    Some(inner) => inner.timers.lock().next_deadline(),
                    None => return,
                };
                match next {
                    Some(at) => {
                        tokio::select! {
                            _ = clock.sleep_until(at) => {}
                            _ = changed.notified() => continue,
                        }
                    }
                    None => {
                        changed.notified().await;
                        continue;
                    }
                }
                let Some(inner) = weak.upgrade() else { return };
                State { inner }.fire_due().await;
            }
        });
    }

    /// Fire every timer due now, under the writer lock.
    async fn fire_due(&self) {
        let _w = self.inner.write.lock().await;
        let now = self.now();
        let due = self.inner.timers.lock().take_due(now);
        let mut expired = BTreeSet::new();
        for (kind, id) in due {
            let snap = self.snapshot();
            let Some(n) = snap.nodes.get(&id) else {
                continue;
            };
            match kind {
                TimerKind::EphemeralDeletion => {
                    if !n.ephemeral || snap.online.contains(&id) {
                        continue;
                    }
                    match self.delete_node_locked(id).await {
                        Ok(n) => {
                            tracing::info!(node = id.0, name = %n.given_name, "ephemeral node removed after inactivity")
                        }
                        Err(e) => tracing::debug!(node = id.0, "ephemeral cleanup: {e}"),
                    }
                }
                TimerKind::Expiry => {
                    if n.expiry.is_some_and(|e| e <= now) {
                        expired.insert(id);
                    }
                }
            }
        }
        if !expired.is_empty() {
            // The node sees its past KeyExpiry and asks its user to log in
            // again; peers stop using it.
            tracing::info!(nodes = expired.len(), "node keys expired");
            let snap = self.snapshot();
            self.publish(&snap, &snap, &Change::Nodes(expired));
        }
        self.inner.fired_through.send_replace(now);
    }

    /// Wait until every timer due at the clock's current time has fired (for
    /// tests in virtual time: advance the clock, then wait for this).
    pub async fn timers_settled(&self) {
        let target = self.now();
        let mut fired = self.inner.fired_through.subscribe();
        loop {
            {
                let _w = self.inner.write.lock().await;
                // Due timers are taken and fired in one writer-lock hold, so
                // with the lock held "none due" means "all due ones fired".
                let next = self.inner.timers.lock().next_deadline();
                if next.is_none_or(|at| at > target) {
                    return;
                }
            }
            self.inner.timers_changed.notify_one();
            if fired.wait_for(|t| *t >= target).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(s, 0).expect("valid")
    }

    #[test]
    fn table_keeps_one_entry_per_key_and_pops_in_order() {
        let mut t = TimerTable::default();
        t.set(TimerKind::Expiry, NodeId(1), ts(30));
        t.set(TimerKind::Expiry, NodeId(2), ts(10));
        t.set(TimerKind::EphemeralDeletion, NodeId(1), ts(20));
        // Moving a timer replaces it.
        t.set(TimerKind::Expiry, NodeId(1), ts(40));
        assert_eq!(t.len(), 3);
        assert_eq!(t.next_deadline(), Some(ts(10)));
        assert!(t.cancel(TimerKind::Expiry, NodeId(2)));
        assert!(!t.cancel(TimerKind::Expiry, NodeId(2)));
        assert_eq!(t.next_deadline(), Some(ts(20)));
        assert_eq!(t.take_due(ts(19)), vec![]);
        assert_eq!(
            t.take_due(ts(40)),
            vec![
                (TimerKind::EphemeralDeletion, NodeId(1)),
                (TimerKind::Expiry, NodeId(1))
            ]
        );
        assert_eq!(t.len(), 0);
        assert_eq!(t.next_deadline(), None);
    }

    /// A stream ends while its node's new stream is starting: the old one's
    /// disconnect takes the writer lock first and starts the ephemeral timer,
    /// then the new one's connect must cancel it (a node online has none).
    #[tokio::test]
    async fn reconnect_racing_the_old_disconnect_cancels_the_ephemeral_timer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
            dir.path().join("s.sqlite"),
        ))
        .await
        .expect("store");
        let user = store
            .create_user(&ironscale_store::NewUser::named("alice"), ts(0))
            .await
            .expect("user");
        let mut k = [0u8; 32];
        k[0] = 1;
        let n = ironscale_types::Node {
            id: NodeId(0),
            machine_key: ironscale_keys::MachinePublic::from_bytes(k),
            node_key: ironscale_keys::NodePublic::from_bytes(k),
            disco_key: Default::default(),
            ipv4: Some(std::net::Ipv4Addr::new(100, 64, 0, 1)),
            ipv6: None,
            hostname: "e".into(),
            given_name: "e".into(),
            user_id: Some(user.id),
            tags: Vec::new(),
            hostinfo_json: None,
            home_derp: 0,
            announced_routes: Vec::new(),
            approved_routes: Vec::new(),
            endpoints: Vec::new(),
            expiry: None,
            created_at: ts(0),
            last_seen: None,
            register_method: ironscale_types::RegisterMethod::AuthKey,
            auth_key_id: None,
            ephemeral: true,
            capver: 106,
            approved: true,
        };
        let id = store.insert_node(&n).await.expect("node").id;
        let clock = crate::ManualClock::new(ts(1_000));
        let state = State::load_with_clock(
            store,
            Default::default(),
            Default::default(),
            Arc::new(clock),
        )
        .await
        .expect("state");
        let old = state.connect(id).await.expect("connect");

        let w = state.inner.write.lock().await;
        let (s1, s2) = (state.clone(), state.clone());
        let disconnect = tokio::spawn(async move { s1.disconnect(&old).await });
        for _ in 0..10 {
            tokio::task::yield_now().await; // the disconnect now waits for the lock
        }
        let connect = tokio::spawn(async move { s2.connect(id).await.map(|_| ()) });
        for _ in 0..10 {
            tokio::task::yield_now().await; // the connect waits behind it
        }
        drop(w);
        disconnect.await.expect("disconnect");
        connect.await.expect("join").expect("connect");

        assert!(state.snapshot().online.contains(&id));
        assert_eq!(
            state.timer_deadline(TimerKind::EphemeralDeletion, id),
            None,
            "an online node has an ephemeral deletion pending"
        );
    }
}
