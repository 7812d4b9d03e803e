//! Node timers: ephemeral nodes deleted after inactivity, key expiry announced.

use std::collections::BTreeSet;
use std::time::Duration;

use ironscale_types::NodeId;

use crate::{now, Change, State};

impl State {
    pub(crate) fn schedule_ephemeral_deletion(&self, id: NodeId) {
        let state = self.clone();
        let wait = self.inner.settings.ephemeral_inactivity_timeout;
        let h = tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let _w = state.inner.write.lock().await;
            if state.snapshot().online.contains(&id) {
                return;
            }
            state.inner.ephemeral_timers.lock().remove(&id);
            match state.delete_node_locked(id).await {
                Ok(n) => {
                    tracing::info!(node = id.0, name = %n.given_name, "ephemeral node removed after inactivity")
                }
                Err(e) => tracing::debug!(node = id.0, "ephemeral cleanup: {e}"),
            }
        });
        if let Some(old) = self.inner.ephemeral_timers.lock().insert(id, h) {
            old.abort();
        }
    }

    /// Watch for node keys expiring: when a node's expiry passes, the node and
    /// its peers are told (the node sees its past KeyExpiry and asks its user
    /// to log in again; peers stop using it).
    pub fn spawn_expiry_watch(&self, every: Duration) {
        let state = self.clone();
        tokio::spawn(async move {
            let mut last = now();
            loop {
                tokio::time::sleep(every).await;
                let t = now();
                let ids: BTreeSet<NodeId> = state
                    .snapshot()
                    .nodes
                    .values()
                    .filter(|n| matches!(n.expiry, Some(e) if e > last && e <= t))
                    .map(|n| n.id)
                    .collect();
                last = t;
                if !ids.is_empty() {
                    tracing::info!(nodes = ids.len(), "node keys expired");
                    let snap = state.snapshot();
                    state.publish(&snap, &snap, &Change::Nodes(ids));
                }
            }
        });
    }
}
