//! Administrative node commands that change who owns a node or which
//! addresses it has: `nodes move` and `nodes backfillips`.
//!
//! Each one holds the writer lock, writes only the fields it changes
//! (`update_node_fields`, so a client's report racing it survives), then
//! commits: the sessions that can see the node, and the policy, learn the
//! change.

use std::collections::BTreeSet;
use std::sync::Arc;

use std::net::IpAddr;

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

    /// Bring every node's addresses in line with the configured prefixes
    /// (`nodes backfillips`, after adding `prefixes.v6` say): a node that
    /// lacks an address of a configured family gets one, and an address of a
    /// family no longer configured is removed (as Headscale does). All nodes
    /// are written in one transaction; on an error nothing changes. Returns
    /// one line per address given or removed (Headscale's wording), in node
    /// order; empty when every node is in line.
    pub async fn backfill_node_ips(&self) -> Result<Vec<String>> {
        let _w = self.inner.write.lock().await;
        let t = self.snapshot();
        let mut plans: Vec<(Arc<Node>, NodeUpdate)> = Vec::new();
        let mut taken: Vec<IpAddr> = Vec::new();
        let mut lines = Vec::new();
        {
            let mut ipam = self.inner.ipam.lock();
            let (has4, has6) = (ipam.v4_prefix().is_some(), ipam.v6_prefix().is_some());
            let mut rng = rand::rng();
            for n in t.nodes.values() {
                let (need4, need6) = (has4 && n.ipv4.is_none(), has6 && n.ipv6.is_none());
                let (drop4, drop6) = (!has4 && n.ipv4.is_some(), !has6 && n.ipv6.is_some());
                if !(need4 || need6 || drop4 || drop6) {
                    continue;
                }
                let (a4, a6) = match ipam.allocate_families(need4, need6, &mut rng) {
                    Ok(a) => a,
                    Err(e) => {
                        for ip in &taken {
                            ipam.release(*ip);
                        }
                        return Err(e.into());
                    }
                };
                let mut up = NodeUpdate::default();
                let host = &n.hostname;
                if let Some(a) = a4 {
                    taken.push(IpAddr::V4(a));
                    up.ipv4 = Some(Some(a));
                    lines.push(format!(
                        "assigned IPv4 \"{a}\" to Node({}) {host:?}",
                        n.id.0
                    ));
                }
                if let Some(a) = a6 {
                    taken.push(IpAddr::V6(a));
                    up.ipv6 = Some(Some(a));
                    lines.push(format!(
                        "assigned IPv6 \"{a}\" to Node({}) {host:?}",
                        n.id.0
                    ));
                }
                if let (true, Some(a)) = (drop4, n.ipv4) {
                    up.ipv4 = Some(None);
                    lines.push(format!(
                        "removed IPv4 \"{a}\" from Node({}) {host:?}",
                        n.id.0
                    ));
                }
                if let (true, Some(a)) = (drop6, n.ipv6) {
                    up.ipv6 = Some(None);
                    lines.push(format!(
                        "removed IPv6 \"{a}\" from Node({}) {host:?}",
                        n.id.0
                    ));
                }
                plans.push((n.clone(), up));
            }
        }
        if plans.is_empty() {
            return Ok(lines);
        }
        if let Err(e) = self.write_backfill_locked(&plans).await {
            self.release_ips(&taken);
            return Err(e);
        }
        let ids: BTreeSet<NodeId> = plans.iter().map(|(n, _)| n.id).collect();
        self.commit(
            |t| {
                for (n, up) in &plans {
                    let mut m = (**n).clone();
                    up.apply_to(&mut m);
                    t.nodes.insert(m.id, Arc::new(m));
                }
            },
            Change::Nodes(ids),
        );
        for l in &lines {
            tracing::info!("backfill: {l}");
        }
        Ok(lines)
    }

    /// The backfill's writes, in one transaction. Writer lock held.
    async fn write_backfill_locked(&self, plans: &[(Arc<Node>, NodeUpdate)]) -> Result<()> {
        let mut tx = self.inner.store.begin().await?;
        for (n, up) in plans {
            tx.update_node_fields(n.id, up).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
