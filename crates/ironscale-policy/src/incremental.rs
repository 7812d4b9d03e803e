//! Incremental updates: which nodes a change affects, and applying it.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironscale_types::NodeId;

use crate::compile::{Change, CompiledPolicy};
use crate::topology::NodeInfo;

pub(crate) fn affected(c: &CompiledPolicy, change: &Change) -> BTreeSet<NodeId> {
    let mut next = c.clone();
    update_node(&mut next, change.clone());
    let mut out = BTreeSet::new();
    let ids: BTreeSet<NodeId> = c.node_ids().into_iter().chain(next.node_ids()).collect();
    for id in ids {
        if c.filter_rules(id) != next.filter_rules(id)
            || c.peers(id) != next.peers(id)
            || c.ssh_policy(id) != next.ssh_policy(id)
            || c.node_cap_map(id) != next.node_cap_map(id)
        {
            out.insert(id);
        }
    }
    out
}

pub(crate) fn update_node(c: &mut CompiledPolicy, change: Change) -> BTreeSet<NodeId> {
    let mut topo = c.topo.clone();
    let uidx: std::collections::HashMap<_, _> = topo.users.iter().enumerate().map(|(i, u)| (u.id, i as u32)).collect();
    match &change {
        Change::Upsert(n) => {
            let info = NodeInfo::from_node(n, &uidx);
            match topo.nodes.iter().position(|x| x.id == n.id) {
                Some(p) => topo.nodes[p] = info,
                None => {
                    topo.nodes.push(info);
                    topo.nodes.sort_by_key(|x| x.id);
                }
            }
        }
        Change::Remove(id) => topo.nodes.retain(|x| x.id != *id),
    }
    topo.reindex();
    if let Ok(next) = CompiledPolicy::build(Arc::clone(&c.pol), topo, c.tailnet.clone()) {
        *c = next;
    }
    BTreeSet::new()
}
