//! Committing a change: swap in the next snapshot, bring derived data (policy,
//! primary routes, lookup index) in step for what changed, and tell the
//! sessions that can see it.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_mapper::Tailnet;
use ironscale_types::NodeId;

use crate::{index, Change, State};

impl State {
    /// Swap in a new snapshot computed by `f` and publish `change`. Must be
    /// called with the writer lock held.
    ///
    /// Costs what changed, not the tailnet's size: the snapshot's maps are
    /// persistent (the copy is O(1)), the changed nodes and users come from
    /// diffing old and new maps (shared structure is skipped), and route
    /// election, the lookup index and the compiled policy are updated for
    /// those alone.
    pub(crate) fn commit(&self, f: impl FnOnce(&mut Tailnet), change: Change) {
        let old = self.snapshot();
        let mut next = (*old).clone();
        f(&mut next);
        let (changed_nodes, changed_users) = index::changes(&old, &next);
        // One route election (online-aware, sticky), read by the map's
        // PrimaryRoutes and, through `sync_primaries`, the policy's AllowedIPs.
        let changed_primaries = next.update_routes(&old, changed_nodes.iter().copied());
        let mut policy_affected = match &change {
            Change::Nodes(ids) => self.update_policy_for(&old, &mut next, ids, &[]),
            Change::Users(_) => {
                self.update_policy_for(&old, &mut next, &BTreeSet::new(), &changed_users)
            }
            Change::Full => BTreeSet::new(),
        };
        policy_affected.extend(self.sync_policy_primaries(&mut next, &changed_primaries));
        self.update_timers_for(&old, &next, &changed_nodes);
        if !changed_nodes.is_empty() || !changed_users.is_empty() {
            let mut ix = (**self.inner.index.load()).clone();
            if ix.update(&old, &next, &changed_nodes, &changed_users) {
                self.inner.index.store(Arc::new(ix));
            }
        }
        let next = Arc::new(next);
        self.inner.current.store(next.clone());
        let change = match change {
            Change::Nodes(mut ids) | Change::Users(mut ids) => {
                ids.extend(changed_primaries);
                Change::Nodes(ids)
            }
            Change::Full => Change::Full,
        };
        self.publish(&old, &next, &change);
        if !policy_affected.is_empty() {
            // Their filters, SSH policy or peer sets changed: rebuild fully.
            let sessions = self.inner.sessions.lock();
            for id in &policy_affected {
                if let Some(s) = sessions.get(id) {
                    s.push_full();
                }
            }
        }
    }

    /// Tell the sessions that may be affected.
    pub(crate) fn publish(&self, old: &Tailnet, new: &Tailnet, change: &Change) {
        let sessions = self.inner.sessions.lock();
        match change {
            Change::Full => {
                for s in sessions.values() {
                    s.push_full();
                }
            }
            Change::Nodes(ids) | Change::Users(ids)
                if old.policy.everyone_watches() && new.policy.everyone_watches() =>
            {
                // Everyone sees everyone: every session is a target, and
                // listing them costs the sessions, not the tailnet.
                for s in sessions.values() {
                    s.push_nodes(ids.iter().copied());
                }
            }
            Change::Nodes(ids) | Change::Users(ids) => {
                let mut targets: BTreeSet<NodeId> = BTreeSet::new();
                for id in ids {
                    targets.insert(*id);
                    if let Some(n) = old.nodes.get(id) {
                        targets.extend(old.policy.watchers_of(old, n));
                    }
                    if let Some(n) = new.nodes.get(id) {
                        targets.extend(new.policy.watchers_of(new, n));
                    }
                }
                for t in targets {
                    if let Some(s) = sessions.get(&t) {
                        s.push_nodes(ids.iter().copied());
                    }
                }
            }
        }
    }
}
