//! Map-session slots: how a change reaches a streaming node.
//!
//! Each streaming node has one slot. Publishing a change marks the slot's
//! pending set and wakes it; the session task later takes the whole pending set
//! at once, so bursts coalesce and a slow client never queues unbounded work:
//! its pending state is at most "these node ids changed" or "everything".

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ironscale_types::NodeId;
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Rebuild the whole view (policy, DNS, DERP map changed).
    pub full: bool,
    /// Nodes whose state changed.
    pub nodes: BTreeSet<NodeId>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        !self.full && self.nodes.is_empty()
    }
}

/// One streaming map session's mailbox.
#[derive(Debug)]
pub struct SessionSlot {
    pub node_id: NodeId,
    pub generation: u64,
    pending: Mutex<Pending>,
    notify: Notify,
    closed: AtomicBool,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

impl SessionSlot {
    pub(crate) fn new(node_id: NodeId) -> Self {
        SessionSlot {
            node_id,
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            pending: Mutex::new(Pending::default()),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    pub(crate) fn push_nodes(&self, ids: impl IntoIterator<Item = NodeId>) {
        self.pending.lock().nodes.extend(ids);
        self.notify.notify_one();
    }

    pub(crate) fn push_full(&self) {
        self.pending.lock().full = true;
        self.notify.notify_one();
    }

    /// Ask the session to end (replaced by a newer stream, or node deleted).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Wait until there is pending work or the slot is closed.
    pub async fn changed(&self) {
        loop {
            if self.is_closed() || !self.pending.lock().is_empty() {
                return;
            }
            self.notify.notified().await;
        }
    }

    /// Take everything pending.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.pending.lock())
    }
}
