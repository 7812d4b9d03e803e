//! Incremental updates: one node joins, leaves or changes (tags, user,
//! addresses) without recompiling the policy.
//!
//! Every compiled source and destination group keeps both its node lists
//! and a predicate (identity matcher plus address set), so the changed node
//! is tested against each group once and only the groups whose membership
//! changed are touched. Per-node indexes of other nodes stay as they are.
//! The nodes whose results may change are the node itself, its peers before
//! and after, and the nodes whose SSH policy names it.
//!
//! Route changes (announced or approved routes, on the node before or
//! after) move `*`'s source list and HA primaries for everyone, so they
//! fall back to a full rebuild and report every node as affected.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

use ironscale_types::NodeId;

use crate::compile::{Change, CompiledPolicy};
use crate::resolve::{insert_sorted, remove_sorted, Resolved};
use crate::topology::NodeInfo;

/// Whether a group's resolution names `n`, by identity and by address.
fn member(res: &Resolved, n: &NodeInfo) -> (bool, bool) {
    if !n.alive {
        return (false, false);
    }
    (
        res.m.matches(n),
        n.ips.iter().any(|ip| res.set.contains(*ip)),
    )
}

fn new_info(c: &CompiledPolicy, change: &Change) -> (NodeId, NodeInfo) {
    match change {
        Change::Upsert(n) => {
            let uidx: HashMap<_, _> = c
                .topo
                .users
                .iter()
                .enumerate()
                .map(|(i, u)| (u.id, i as u32))
                .collect();
            (n.id, NodeInfo::from_node(n, &uidx))
        }
        Change::Remove(id) => (*id, NodeInfo::tombstone(*id)),
    }
}

/// Memberships of a node that is not (or not yet) indexed.
struct Memberships {
    srcs: Vec<u32>,
    dsts: Vec<u32>,
}

fn memberships(c: &CompiledPolicy, n: &NodeInfo) -> Memberships {
    let mut srcs = Vec::new();
    for (gi, g) in c.src_groups.iter().enumerate() {
        if g.res.all_nodes {
            continue;
        }
        let (a, b) = member(&g.res, n);
        if a || b {
            srcs.push(gi as u32);
        }
    }
    let mut dsts = Vec::new();
    for (gi, g) in c.dst_groups.iter().enumerate() {
        if g.res.wildcard || g.res.self_devices {
            continue;
        }
        let (a, b) = member(&g.res, n);
        if a || b {
            dsts.push(gi as u32);
        }
    }
    Memberships { srcs, dsts }
}

/// Nodes whose SSH policy names `n` as a source.
fn ssh_related(c: &CompiledPolicy, n: &NodeInfo, out: &mut BTreeSet<u32>) {
    if !n.alive {
        return;
    }
    for r in &c.ssh.rules {
        if r.src.all_nodes || r.src.m.matches(n) || n.ips.iter().any(|ip| r.src.set.contains(*ip)) {
            out.extend(r.dst_nodes.iter().copied());
            if r.dst_self {
                if let Some(u) = n.user {
                    out.extend(c.topo.by_user[u as usize].iter().copied());
                }
            }
        }
    }
}

fn needs_rebuild(c: &CompiledPolicy, id: NodeId, new: &NodeInfo) -> bool {
    let old_routes = c.idx(id).is_some_and(|i| {
        let o = c.node(i);
        !o.announced.is_empty()
            || !c.subnets[i as usize].is_empty()
            || !c.exits[i as usize].is_empty()
    });
    old_routes || !new.announced.is_empty()
}

fn all_nodes(c: &CompiledPolicy) -> BTreeSet<NodeId> {
    c.node_ids().into_iter().collect()
}

pub(crate) fn affected(c: &CompiledPolicy, change: &Change) -> BTreeSet<NodeId> {
    let (id, new) = new_info(c, change);
    if needs_rebuild(c, id, &new) {
        let mut out = all_nodes(c);
        if new.alive {
            out.insert(id);
        }
        return out;
    }
    let mut idxs: BTreeSet<u32> = BTreeSet::new();
    let mut all = false;
    if let Some(i) = c.idx(id) {
        let old = c.node(i);
        let (peers, everyone) = c.peers_of_info(
            old,
            &c.node_srcs[i as usize],
            &c.node_dsts[i as usize],
            &c.node_via[i as usize],
        );
        all |= everyone;
        idxs.extend(peers);
        ssh_related(c, old, &mut idxs);
    }
    if new.alive {
        let m = memberships(c, &new);
        let (peers, everyone) = c.peers_of_info(&new, &m.srcs, &m.dsts, &[]);
        all |= everyone;
        idxs.extend(peers);
        ssh_related(c, &new, &mut idxs);
    }
    let mut out: BTreeSet<NodeId> = if all {
        all_nodes(c)
    } else {
        idxs.into_iter()
            .filter(|&j| c.node(j).alive)
            .map(|j| c.node(j).id)
            .collect()
    };
    out.insert(id);
    out
}

pub(crate) fn update_node(c: &mut CompiledPolicy, change: Change) -> BTreeSet<NodeId> {
    let (id, new) = new_info(c, &change);
    if needs_rebuild(c, id, &new) {
        return rebuild(c, change);
    }
    let affected = affected(c, &change);
    apply(c, id, new);
    affected
}

/// Full recompilation with the change applied (route changes).
fn rebuild(c: &mut CompiledPolicy, change: Change) -> BTreeSet<NodeId> {
    let mut topo = c.topo.clone();
    let uidx: HashMap<_, _> = topo
        .users
        .iter()
        .enumerate()
        .map(|(i, u)| (u.id, i as u32))
        .collect();
    match &change {
        Change::Upsert(n) => {
            let info = NodeInfo::from_node(n, &uidx);
            match topo.nodes.iter().position(|x| x.id == n.id && x.alive) {
                Some(p) => topo.nodes[p] = info,
                None => topo.nodes.push(info),
            }
        }
        Change::Remove(id) => topo.nodes.retain(|x| x.id != *id),
    }
    // Compact: drop tombstones, keep id order.
    topo.nodes.retain(|x| x.alive);
    topo.nodes.sort_by_key(|x| x.id);
    topo.reindex();
    let mut out = all_nodes(c);
    match CompiledPolicy::build(Arc::clone(&c.pol), topo, c.tailnet.clone()) {
        Ok(next) => {
            *c = next;
            out.extend(all_nodes(c));
        }
        Err(_) => {
            // A policy that compiled before cannot fail on a topology
            // change (only tailnet domains are checked); keep the old one.
        }
    }
    out
}

/// Apply a route-free change in place.
fn apply(c: &mut CompiledPolicy, id: NodeId, new: NodeInfo) {
    // The slot: the node's own, or a new one at the end.
    let i = match c.idx(id) {
        Some(i) => i,
        None => {
            if !new.alive {
                return;
            }
            let i = c.topo.nodes.len() as u32;
            c.topo.nodes.push(NodeInfo::tombstone(id));
            c.node_srcs.push(Vec::new());
            c.node_dsts.push(Vec::new());
            c.node_via.push(Vec::new());
            c.subnets.push(Vec::new());
            c.exits.push(Vec::new());
            c.primaries.push(Vec::new());
            c.node_caps.push(Default::default());
            i
        }
    };
    let old = std::mem::replace(&mut c.topo.nodes[i as usize], new.clone());

    // Topology indexes.
    if old.alive {
        c.topo.by_id.remove(&old.id);
        if let Some(u) = old.user {
            remove_sorted(&mut c.topo.by_user[u as usize], i);
        }
        for t in &old.tags {
            if let Some(v) = c.topo.by_tag.get_mut(t) {
                remove_sorted(v, i);
            }
        }
        c.topo.remove_addrs(i);
    }
    if new.alive {
        c.topo.by_id.insert(new.id, i);
        if let Some(u) = new.user {
            insert_sorted(&mut c.topo.by_user[u as usize], i);
        }
        for t in &new.tags {
            insert_sorted(c.topo.by_tag.entry(t.clone()).or_default(), i);
        }
        c.topo.add_addrs(i);
    }
    let ips_changed = old.ip_strs != new.ip_strs;

    // Source groups.
    let mut my_srcs = Vec::new();
    for (gi, g) in c.src_groups.iter_mut().enumerate() {
        if g.res.all_nodes {
            continue;
        }
        let (oi, oa) = member(&g.res, &old);
        let (ni, na) = member(&g.res, &new);
        if oi != ni {
            if ni {
                insert_sorted(&mut g.res.ident, i);
            } else {
                remove_sorted(&mut g.res.ident, i);
            }
        }
        if oa != na {
            if na {
                insert_sorted(&mut g.res.addr_nodes, i);
            } else {
                remove_sorted(&mut g.res.addr_nodes, i);
            }
        }
        let was = oi || oa;
        let is = ni || na;
        if was != is {
            if is {
                insert_sorted(&mut g.nodes, i);
            } else {
                remove_sorted(&mut g.nodes, i);
            }
        }
        if oi != ni || (ni && ips_changed) {
            g.strs = OnceLock::new();
        }
        if is {
            my_srcs.push(gi as u32);
        }
    }
    c.node_srcs[i as usize] = my_srcs;

    // Destination groups.
    let mut my_dsts = Vec::new();
    for (gi, g) in c.dst_groups.iter_mut().enumerate() {
        if g.res.wildcard || g.res.self_devices {
            continue;
        }
        let (oi, oa) = member(&g.res, &old);
        let (ni, na) = member(&g.res, &new);
        if oi != ni {
            if ni {
                insert_sorted(&mut g.res.ident, i);
            } else {
                remove_sorted(&mut g.res.ident, i);
            }
        }
        if oa != na {
            if na {
                insert_sorted(&mut g.res.addr_nodes, i);
            } else {
                remove_sorted(&mut g.res.addr_nodes, i);
            }
        }
        if (oi || oa) != (ni || na) {
            if ni || na {
                insert_sorted(&mut g.targets, i);
            } else {
                remove_sorted(&mut g.targets, i);
            }
        }
        if ni || na {
            my_dsts.push(gi as u32);
        }
    }
    c.node_dsts[i as usize] = my_dsts;
    c.node_via[i as usize].clear();

    // SSH rules.
    for r in &mut c.ssh.rules {
        let was = old.alive && (r.src.all_nodes || r.src.matches(&old));
        let is = new.alive && (r.src.all_nodes || r.src.matches(&new));
        if was != is || is {
            remove_sorted(&mut r.src_nodes, i);
            if is {
                insert_sorted(&mut r.src_nodes, i);
            }
        }
        let was = old.alive && (r.dst.all_nodes || r.dst.matches(&old));
        let is = new.alive && (r.dst.all_nodes || r.dst.matches(&new));
        if was != is || is {
            remove_sorted(&mut r.dst_nodes, i);
            if is {
                insert_sorted(&mut r.dst_nodes, i);
            }
        }
    }

    // Node capabilities.
    c.node_caps[i as usize] = if new.alive {
        crate::nodeattrs::caps_for(&c.ctx(), &new)
    } else {
        Default::default()
    };
}

/// Add or change a user. Policies name users by login, so the resolution
/// of every alias is redone (a full rebuild, a few milliseconds even for
/// large tailnets). A user without nodes affects nobody.
pub(crate) fn update_user(
    c: &mut CompiledPolicy,
    user: &ironscale_types::User,
) -> BTreeSet<NodeId> {
    let mut topo = c.topo.clone();
    let existing = topo.users.iter().position(|u| u.id == user.id);
    let info = crate::topology::UserInfo::from_user(user);
    let has_nodes = match existing {
        Some(p) => {
            topo.users[p] = info;
            !topo.by_user[p].is_empty()
        }
        None => {
            topo.users.push(info);
            false
        }
    };
    topo.nodes.retain(|x| x.alive);
    topo.reindex();
    let before = all_nodes(c);
    if let Ok(next) = CompiledPolicy::build(Arc::clone(&c.pol), topo, c.tailnet.clone()) {
        *c = next;
    }
    if has_nodes {
        before
    } else {
        BTreeSet::new()
    }
}
