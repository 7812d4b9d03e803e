//! Node commands (admin actions and what a MapRequest carries) and queries.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use ironscale_store::NodeUpdate;
use ironscale_types::{DnsLabel, Node, NodeId, Tag, Timestamp};
use ironscale_wire as wire;

use crate::{Change, Result, State, StateError};

impl State {
    pub fn list_nodes(&self) -> Vec<Arc<Node>> {
        self.snapshot().nodes.values().cloned().collect()
    }

    pub fn get_node(&self, id: NodeId) -> Result<Arc<Node>> {
        self.snapshot()
            .nodes
            .get(&id)
            .cloned()
            .ok_or(StateError::NodeNotFound(id))
    }

    pub async fn delete_node(&self, id: NodeId) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        self.delete_node_locked(id).await
    }

    pub(crate) async fn delete_node_locked(&self, id: NodeId) -> Result<Arc<Node>> {
        let node = self.get_node(id)?;
        self.inner.store.delete_node(id).await?;
        {
            let mut ipam = self.inner.ipam.lock();
            for ip in node.ips() {
                ipam.release(ip);
            }
        }
        self.commit(
            |t| {
                t.nodes.remove(&id);
                t.online.remove(&id);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        if let Some(s) = self.inner.sessions.lock().remove(&id) {
            s.close();
        }
        tracing::info!(node = id.0, name = %node.given_name, "node deleted");
        Ok(node)
    }

    /// Set a node's key expiry to now (or `at`).
    pub async fn expire_node(&self, id: NodeId, at: Option<Timestamp>) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.expiry = Some(at.unwrap_or_else(|| self.now()));
        self.save_node_locked(n).await
    }

    pub async fn rename_node(&self, id: NodeId, new_name: &str) -> Result<Arc<Node>> {
        let label = DnsLabel::parse(new_name)
            .map_err(|e| StateError::Invalid(e.0))?
            .into_string();
        let _w = self.inner.write.lock().await;
        if self.inner.index.load().name_taken(&label, Some(id)) {
            return Err(StateError::Invalid(format!(
                "the name {label:?} is already taken"
            )));
        }
        let mut n = (*self.get_node(id)?).clone();
        n.given_name = label;
        self.save_node_locked(n).await
    }

    /// Set a node's tags (admin action, `nodes tag`). Tags must be well formed
    /// and, under a policy, defined in `tagOwners`. A tagged node belongs to no
    /// user and does not expire; an empty list keeps the node's tags as they are.
    pub async fn set_node_tags(&self, id: NodeId, tags: Vec<String>) -> Result<Arc<Node>> {
        let mut tags = tags;
        tags.sort();
        tags.dedup();
        if tags.is_empty() {
            return Err(StateError::Invalid(
                "give at least one tag (e.g. tag:server)".into(),
            ));
        }
        self.check_tags_defined(&tags)
            .map_err(StateError::Invalid)?;
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.tags = tags;
        n.user_id = None;
        n.expiry = None;
        let saved = self.save_node_locked(n).await?;
        // Its new tags may make it an auto-approved router.
        Ok(self
            .store_auto_approvals_locked(&[saved.id])
            .await?
            .pop()
            .unwrap_or(saved))
    }

    /// Approve subnet routes / exit routes (`nodes approve-routes`). Replaces
    /// the approved set; routes the node does not announce are kept but unused
    /// until it does.
    pub async fn set_approved_routes(&self, id: NodeId, routes: Vec<IpNet>) -> Result<Arc<Node>> {
        let mut routes: Vec<IpNet> = routes.into_iter().map(|r| r.trunc()).collect();
        // Approving one exit family approves both, as Tailscale does.
        if routes.iter().any(|r| r.prefix_len() == 0) {
            routes.push("0.0.0.0/0".parse().expect("valid"));
            routes.push("::/0".parse().expect("valid"));
        }
        routes.sort();
        routes.dedup();
        let _w = self.inner.write.lock().await;
        let mut n = (*self.get_node(id)?).clone();
        n.approved_routes = routes;
        self.save_node_locked(n).await
    }

    /// Device approval (`node.device_approval`): let an unapproved node in
    /// (`nodes approve`). Writes the one field; the node's map is rebuilt (it
    /// gets `MachineAuthorized` and its peers) and its peers see it appear.
    /// Approving an approved node changes nothing.
    pub async fn approve_node(&self, id: NodeId) -> Result<Arc<Node>> {
        let _w = self.inner.write.lock().await;
        let cur = self.get_node(id)?;
        if cur.approved {
            return Ok(cur);
        }
        let update = NodeUpdate {
            approved: Some(true),
            ..Default::default()
        };
        self.inner.store.update_node_fields(id, &update).await?;
        let mut next = (*cur).clone();
        update.apply_to(&mut next);
        let out = self.publish_node_locked(next)?;
        // Its own peer set changed: a full rebuild of its view.
        if let Some(s) = self.inner.sessions.lock().get(&id) {
            s.push_full();
        }
        tracing::info!(node = id.0, name = %out.given_name, "node approved");
        Ok(out)
    }

    /// Persist a changed node and publish it. Writer lock held.
    pub(crate) async fn save_node_locked(&self, n: Node) -> Result<Arc<Node>> {
        self.inner.store.update_node(&n).await?;
        self.publish_node_locked(n)
    }

    /// Swap a node (already persisted) into the snapshot. Writer lock held.
    pub(crate) fn publish_node_locked(&self, n: Node) -> Result<Arc<Node>> {
        let id = n.id;
        let n = Arc::new(n);
        let out = n.clone();
        self.commit(
            |t| {
                t.nodes.insert(id, n);
            },
            Change::Nodes(BTreeSet::from([id])),
        );
        Ok(out)
    }

    /// Apply what a MapRequest carries (disco key, endpoints, hostinfo, capver).
    /// Returns the node, or `None` if no node has this key for this machine.
    pub async fn apply_map_request(
        &self,
        machine: &ironscale_keys::MachinePublic,
        req: &wire::MapRequest,
    ) -> Result<Option<Arc<Node>>> {
        let Some(node) = self.node_by_key(&req.node_key) else {
            return Ok(None);
        };
        if node.machine_key != *machine {
            return Ok(None);
        }
        let mut n = (*node).clone();
        if !req.disco_key.is_zero() {
            n.disco_key = req.disco_key;
        }
        if let Some(eps) = &req.endpoints {
            n.endpoints = eps.clone();
        }
        if req.version > 0 {
            n.capver = req.version;
        }
        if let Some(hi) = &req.hostinfo {
            apply_hostinfo(&mut n, hi);
        }
        if n == *node {
            return Ok(Some(node));
        }
        let _w = self.inner.write.lock().await;
        // Re-read under the lock: another request may have changed the node.
        let Some(cur) = self.snapshot().nodes.get(&node.id).cloned() else {
            return Ok(None);
        };
        let mut m = (*cur).clone();
        m.disco_key = n.disco_key;
        m.endpoints = n.endpoints;
        m.capver = n.capver;
        m.hostinfo_json = n.hostinfo_json;
        m.home_derp = n.home_derp;
        m.announced_routes = n.announced_routes;
        m.hostname = n.hostname;
        if m == *cur {
            return Ok(Some(cur));
        }
        let routes_changed = m.announced_routes != cur.announced_routes;
        let saved = self.save_reported_locked(&cur, m).await?;
        if routes_changed {
            if let Some(n) = self.store_auto_approvals_locked(&[saved.id]).await?.pop() {
                return Ok(Some(n));
            }
        }
        Ok(Some(saved))
    }

    /// Persist what a client reported (presence, and the durable fields its
    /// MapRequest carries) field by field, in one transaction, and publish
    /// the node. Columns the client does not report (names, owner, approved
    /// routes, expiry) are not written, so an admin change made meanwhile by
    /// another writer survives. Writer lock held.
    async fn save_reported_locked(&self, cur: &Node, n: Node) -> Result<Arc<Node>> {
        let presence = n.presence();
        let update = NodeUpdate {
            hostname: (n.hostname != cur.hostname).then(|| n.hostname.clone()),
            hostinfo_json: (n.hostinfo_json != cur.hostinfo_json).then(|| n.hostinfo_json.clone()),
            announced_routes: (n.announced_routes != cur.announced_routes)
                .then(|| n.announced_routes.clone()),
            capver: (n.capver != cur.capver).then_some(n.capver),
            ..Default::default()
        };
        let store = &self.inner.store;
        match (presence != cur.presence(), !update.is_empty()) {
            (true, true) => {
                let mut tx = store.begin().await?;
                tx.update_node_presence(n.id, &presence).await?;
                tx.update_node_fields(n.id, &update).await?;
                tx.commit().await?;
            }
            (true, false) => store.update_node_presence(n.id, &presence).await?,
            (false, true) => {
                store.update_node_fields(n.id, &update).await?;
            }
            (false, false) => {}
        }
        self.publish_node_locked(n)
    }

    pub(crate) fn allocate_ips(
        &self,
    ) -> Result<(Option<std::net::Ipv4Addr>, Option<std::net::Ipv6Addr>)> {
        let mut rng = rand::rng();
        Ok(self.inner.ipam.lock().allocate(&mut rng)?)
    }

    pub(crate) fn release_ips(&self, ips: &[IpAddr]) {
        let mut ipam = self.inner.ipam.lock();
        for ip in ips {
            ipam.release(*ip);
        }
    }
}

/// Copy the parts of Hostinfo the server acts on into the node.
pub(crate) fn apply_hostinfo(n: &mut Node, hi: &serde_json::Value) {
    let view = wire::HostinfoView::from_value(hi);
    n.hostinfo_json = Some(hi.to_string());
    if view.preferred_derp > 0 {
        n.home_derp = view.preferred_derp;
    }
    if !view.hostname.is_empty() {
        n.hostname = view.hostname.clone();
    }
    let mut routes: Vec<IpNet> = view
        .routable_ips
        .iter()
        .filter_map(|r| r.parse().ok())
        .collect();
    routes.sort();
    routes.dedup();
    n.announced_routes = routes;
}

/// Tailscale tag syntax: `tag:` + a letter, then letters, digits, '-' ([`Tag`]).
pub fn validate_tag(tag: &str) -> Result<()> {
    Tag::parse(tag)
        .map(|_| ())
        .map_err(|e| StateError::Invalid(e.0))
}

/// Turn a client hostname into a DNS label ([`DnsLabel::sanitize`]); empty
/// when nothing usable is left.
pub fn sanitize_label(host: &str) -> String {
    DnsLabel::sanitize(host)
        .map(DnsLabel::into_string)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_tags() {
        assert_eq!(sanitize_label("My Laptop"), "my-laptop");
        assert_eq!(sanitize_label("db1.corp.example"), "db1");
        assert_eq!(sanitize_label("--x--"), "x");
        assert!(validate_tag("tag:server").is_ok());
        assert!(validate_tag("server").is_err());
        assert!(validate_tag("tag:1x").is_err());
    }
}
