//! Administrative node commands that change who owns a node or which
//! addresses it has: `nodes move` and `nodes backfillips`.
//!
//! Each one holds the writer lock, writes only the fields it changes
//! (`update_node_fields`, so a client's report racing it survives), then
//! commits: the sessions that can see the node, and the policy, learn the
//! change.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_store::{NodeOwner, NodeUpdate};
use ironscale_types::{Node, NodeId, UserRef};

use crate::{Change, Result, State, StateError};

impl State {
    /// Give node `id` to the user `to` (`nodes move`). A tagged node is
    /// refused: it belongs to its tags, not to a user. Moving a node to the
    /// user who already owns it changes nothing.
    pub async fn move_node(&self, id: NodeId, to: &UserRef) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        let cur = self.get_node(id)?;
        let user = self.find_user(to)?;
        if !cur.tags.is_empty() {
            return Err(StateError::Invalid(format!(
                "node {} ({}) is tagged ({}): tagged nodes have no user; to give it an owner, \
                 re-register the machine with a key of user {:?} (or `nodes register`)",
                id.0,
                cur.given_name,
                cur.tags.join(","),
                user.name
            )));
        }
        if cur.user_id == Some(user.id) {
            return Ok(cur);
        }
        let update = NodeUpdate {
            owner: Some(NodeOwner {
                user_id: Some(user.id),
                tags: Vec::new(),
            }),
            ..Default::default()
        };
        self.inner.store.update_node_fields(id, &update).await?;
        let mut n = (*cur).clone();
        update.apply_to(&mut n);
        let n = Arc::new(n);
        let out = n.clone();
        self.commit(
            |t| {
                t.nodes.insert(id, n);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        tracing::info!(node = id.0, name = %out.given_name, user = %user.name, "node moved");
        Ok(out)
    }
}
