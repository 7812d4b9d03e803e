//! Committing a change: swap in the next snapshot, bring derived data (policy,
//! primary routes, key index) in step, and tell the sessions that can see it.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_mapper::Tailnet;
use ironscale_types::NodeId;

use crate::{Change, State};

impl State {
    /// Swap in a new snapshot computed by `f` and publish `change`. Must be
    /// called with the writer lock held.
    pub(crate) fn commit(&self, f: impl FnOnce(&mut Tailnet), change: Change) {
        let old = self.snapshot();
        let mut next = (*old).clone();
        f(&mut next);
        let policy_affected = match &change {
            Change::Nodes(ids) => self.update_policy_for(&old, &mut next, ids, false),
            Change::Users(_) => self.update_policy_for(&old, &mut next, &BTreeSet::new(), true),
            Change::Full => BTreeSet::new(),
        };
        let primaries = next.elect_primaries(&old.primaries);
        let mut changed_primaries = BTreeSet::new();
        if primaries != *next.primaries {
            for (r, id) in primaries.iter() {
                if next.primaries.get(r) != Some(id) {
                    changed_primaries.insert(*id);
                    if let Some(prev) = next.primaries.get(r) {
                        changed_primaries.insert(*prev);
                    }
                }
            }
            for (r, id) in next.primaries.iter() {
                if !primaries.contains_key(r) {
                    changed_primaries.insert(*id);
                }
            }
            next.primaries = Arc::new(primaries);
        }
        if old.nodes.len() != next.nodes.len()
            || old
                .nodes
                .iter()
                .zip(next.nodes.iter())
                .any(|(a, b)| a.0 != b.0 || a.1.node_key != b.1.node_key)
        {
            let index = next.nodes.values().map(|n| (n.node_key, n.id)).collect();
            self.inner.by_node_key.store(Arc::new(index));
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
