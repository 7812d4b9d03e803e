//! Map sessions: a node's stream connects (online) and disconnects (offline).

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_types::NodeId;

use crate::{Change, Result, SessionSlot, State, StateError};

impl State {
    /// Register a streaming session for `id`, replacing (closing) an older one.
    pub async fn connect(&self, id: NodeId) -> Result<Arc<SessionSlot>> {
        let slot = Arc::new(SessionSlot::new(id));
        if let Some(old) = self.inner.sessions.lock().insert(id, slot.clone()) {
            old.close();
        }
        let _w = self.inner.write.lock().await;
        // Under the lock: an older stream's disconnect that got the lock first
        // (and started the timer) is cancelled too.
        self.cancel_timer(crate::TimerKind::EphemeralDeletion, id);
        if !self.snapshot().nodes.contains_key(&id) {
            self.inner.sessions.lock().remove(&id);
            return Err(StateError::NodeNotFound(id));
        }
        if !self.snapshot().online.contains(&id) {
            self.commit(
                |t| {
                    t.online.insert(id);
                },
                Change::Nodes(BTreeSet::from([id])),
            );
        }
        Ok(slot)
    }

    /// A session ended. Marks the node offline if no newer session replaced it.
    pub async fn disconnect(&self, slot: &Arc<SessionSlot>) {
        let id = slot.node_id;
        {
            let mut sessions = self.inner.sessions.lock();
            match sessions.get(&id) {
                Some(s) if Arc::ptr_eq(s, slot) => {
                    sessions.remove(&id);
                }
                _ => return, // replaced by a newer stream, or deleted
            }
        }
        let _w = self.inner.write.lock().await;
        let Some(node) = self.snapshot().nodes.get(&id).cloned() else {
            return;
        };
        let mut n = (*node).clone();
        n.last_seen = Some(self.now());
        // Presence only: an admin change written meanwhile (by another
        // instance) keeps its fields.
        if let Err(e) = self
            .inner
            .store
            .update_node_presence(id, &n.presence())
            .await
        {
            tracing::warn!(node = id.0, "persisting last_seen failed: {e}");
        }
        let n = Arc::new(n);
        self.commit(
            |t| {
                t.online.remove(&id);
                t.unhealthy.remove(&id);
                t.nodes.insert(id, n);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        if node.ephemeral {
            self.schedule_ephemeral_deletion(id);
        }
    }

    /// Number of open map sessions.
    pub fn session_count(&self) -> usize {
        self.inner.sessions.lock().len()
    }
}

impl State {
    /// Record whether an online router answers the server's health probe
    /// (`node.routes.ha.probe_*`). An unhealthy router serves no route: the
    /// election moves its routes to the next healthy router (and a router
    /// that answers again does not take them back: primaries are sticky).
    /// Returns whether anything changed.
    pub async fn set_route_health(&self, id: NodeId, healthy: bool) -> bool {
        let _w = self.inner.write.lock().await;
        let t = self.snapshot();
        if !t.online.contains(&id) || t.unhealthy.contains(&id) != healthy {
            return false;
        }
        if healthy {
            tracing::info!(node = id.0, "router answers its health probe again");
        } else {
            tracing::warn!(
                node = id.0,
                "router did not answer its health probe: its routes fail over"
            );
        }
        self.commit(
            |t| {
                if healthy {
                    t.unhealthy.remove(&id);
                } else {
                    t.unhealthy.insert(id);
                }
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        true
    }

    /// Whether `id` is a candidate router for some subnet route (its
    /// approved and announced routes): the server probes those.
    pub fn is_router(&self, id: NodeId) -> bool {
        self.snapshot()
            .nodes
            .get(&id)
            .is_some_and(|n| ironscale_mapper::candidate_routes(n).next().is_some())
    }
}
