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
//!
//! The tables are persistent and the groups shared (`Arc`), so an update
//! of a policy that an older snapshot still holds copies only what it
//! changes: the node's slots, the groups whose membership moved.
//!
//! A user added or changed such that every alias names the same users as
//! before (a new user whom nothing names, a rename that no alias notices,
//! identity-provider groups gained or lost that no `oidc-group:` names)
//! changes nothing but the user tables and their indexes; anything else
//! (such as leaving a provider group a policy group holds) rebuilds.

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};

use ironscale_types::NodeId;

use crate::ast::{Alias, AutoGroup};
use crate::compile::{Change, CompiledPolicy};
use crate::resolve::{insert_sorted, remove_sorted, set_sorted, Resolved};
use crate::topology::{NodeInfo, UserInfo};

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
        Change::Upsert(n) => (n.id, NodeInfo::from_node(n, &c.topo.by_user_id)),
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
    let mut nodes: Vec<NodeInfo> = topo.nodes.iter().cloned().collect();
    match &change {
        Change::Upsert(n) => {
            let info = NodeInfo::from_node(n, &topo.by_user_id);
            match nodes.iter().position(|x| x.id == n.id && x.alive) {
                Some(p) => nodes[p] = info,
                None => nodes.push(info),
            }
        }
        Change::Remove(id) => nodes.retain(|x| x.id != *id),
    }
    // Compact: drop tombstones, keep id order.
    nodes.retain(|x| x.alive);
    nodes.sort_by_key(|x| x.id);
    topo.nodes = nodes.into_iter().collect();
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
            c.topo.nodes.push_back(NodeInfo::tombstone(id));
            c.node_srcs.push_back(Vec::new());
            c.node_dsts.push_back(Vec::new());
            c.node_via.push_back(Vec::new());
            c.subnets.push_back(Vec::new());
            c.exits.push_back(Vec::new());
            c.primaries.push_back(Vec::new());
            c.node_caps.push_back(Default::default());
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
                remove_sorted(Arc::make_mut(v), i);
            }
        }
        c.topo.remove_addrs(i, &old.ips);
    }
    if new.alive {
        c.topo.by_id.insert(new.id, i);
        if let Some(u) = new.user {
            insert_sorted(&mut c.topo.by_user[u as usize], i);
        }
        for t in &new.tags {
            insert_sorted(
                Arc::make_mut(c.topo.by_tag.entry(t.clone()).or_default()),
                i,
            );
        }
        c.topo.add_addrs(i);
    }
    let ips_changed = old.ip_strs != new.ip_strs;

    // Source groups: only those whose membership moved are copied.
    let mut my_srcs = Vec::new();
    for (gi, g) in c.src_groups.iter_mut().enumerate() {
        if g.res.all_nodes {
            continue;
        }
        let (oi, oa) = member(&g.res, &old);
        let (ni, na) = member(&g.res, &new);
        let was = oi || oa;
        let is = ni || na;
        if oi != ni || oa != na || was != is || (ni && ips_changed) {
            let g = Arc::make_mut(g);
            set_sorted(&mut g.res.ident, i, ni);
            set_sorted(&mut g.res.addr_nodes, i, na);
            set_sorted(&mut g.nodes, i, is);
            if oi != ni || (ni && ips_changed) {
                g.strs = OnceLock::new();
            }
        }
        if is {
            my_srcs.push(gi as u32);
        }
    }
    c.node_srcs[i as usize] = my_srcs;

    // Destination groups, likewise.
    let mut my_dsts = Vec::new();
    for (gi, g) in c.dst_groups.iter_mut().enumerate() {
        if g.res.wildcard || g.res.self_devices {
            continue;
        }
        let (oi, oa) = member(&g.res, &old);
        let (ni, na) = member(&g.res, &new);
        if oi != ni || oa != na || (oi || oa) != (ni || na) {
            let g = Arc::make_mut(g);
            set_sorted(&mut g.res.ident, i, ni);
            set_sorted(&mut g.res.addr_nodes, i, na);
            set_sorted(&mut g.targets, i, ni || na);
        }
        if ni || na {
            my_dsts.push(gi as u32);
        }
    }
    c.node_dsts[i as usize] = my_dsts;
    if !c.node_via[i as usize].is_empty() {
        c.node_via[i as usize].clear();
    }

    // SSH rules: a rule is copied only when the node enters or leaves it.
    for r in &mut c.ssh.rules {
        let is_src = new.alive && (r.src.all_nodes || r.src.matches(&new));
        let is_dst = new.alive && (r.dst.all_nodes || r.dst.matches(&new));
        let in_src = r.src_nodes.binary_search(&i).is_ok();
        let in_dst = r.dst_nodes.binary_search(&i).is_ok();
        if in_src != is_src || in_dst != is_dst {
            let r = Arc::make_mut(r);
            set_sorted(&mut r.src_nodes, i, is_src);
            set_sorted(&mut r.dst_nodes, i, is_dst);
        }
    }

    // Node capabilities.
    c.node_caps[i as usize] = if new.alive {
        crate::nodeattrs::caps_for(&c.ctx(), &new)
    } else {
        Default::default()
    };
}

/// Whether an alias (groups followed) names the user `u`, by the rules of
/// `Topology::users_matching` and `Ctx::users_of`. Owner and admins are
/// checked by the caller.
fn alias_names(c: &CompiledPolicy, a: &Alias, u: &UserInfo, depth: u8) -> bool {
    match a {
        Alias::User(t) | Alias::BareUser(t) => {
            let by_email = !u.email.is_empty() && u.email.eq_ignore_ascii_case(t);
            let bare = t.strip_suffix('@').unwrap_or(t);
            by_email || (!bare.contains('@') && u.name == bare)
        }
        Alias::UserDomain(d) => u.domain() == Some(d.as_str()),
        Alias::OidcGroup(g) => u.in_idp_group(g),
        Alias::Group(g) => {
            depth < 8
                && c.pol
                    .groups
                    .iter()
                    .filter(|d| d.name.value == *g)
                    .flat_map(|d| d.members.iter())
                    .any(|m| alias_names(c, &m.value, u, depth + 1))
        }
        Alias::AutoGroup(AutoGroup::Admin | AutoGroup::Owner) => true,
        _ => false,
    }
}

/// Whether some alias anywhere in the policy names the user differently
/// as `old` (absent: a new user) and as `new`.
fn verdict_moves(c: &CompiledPolicy, old: Option<&UserInfo>, new: &UserInfo) -> bool {
    let p = &c.pol;
    let mut lists = p
        .groups
        .iter()
        .flat_map(|g| g.members.iter())
        .chain(p.hosts.iter().map(|h| &h.value))
        .chain(p.tag_owners.iter().flat_map(|t| t.owners.iter()))
        .chain(
            p.acls
                .iter()
                .flat_map(|a| a.src.iter().chain(a.dst.iter().map(|d| &d.alias))),
        )
        .chain(
            p.grants
                .iter()
                .flat_map(|g| g.src.iter().chain(g.dst.iter())),
        )
        .chain(p.ssh.iter().flat_map(|r| r.src.iter().chain(r.dst.iter())))
        .chain(p.node_attrs.iter().flat_map(|n| n.target.iter()))
        .chain(p.auto_approvers.routes.iter().flat_map(|(_, a)| a.iter()))
        .chain(p.auto_approvers.exit_node.iter())
        .chain(p.ipsets.iter().flat_map(|s| s.items.iter().map(|(_, a)| a)));
    let names = |a: &Alias, u: &UserInfo| match a {
        // Admin/owner aliases name users by id.
        Alias::AutoGroup(AutoGroup::Admin) => {
            c.tailnet.admins.contains(&u.id) || c.tailnet.owner == Some(u.id)
        }
        Alias::AutoGroup(AutoGroup::Owner) => c.tailnet.owner == Some(u.id),
        v => alias_names(c, v, u, 0),
    };
    lists.any(|a| old.is_some_and(|o| names(&a.value, o)) != names(&a.value, new))
}

/// A user change after which every alias names the same users as before:
/// update the user tables in place. `None` when the policy may see the
/// difference.
fn update_user_in_place(c: &mut CompiledPolicy, info: &UserInfo) -> Option<BTreeSet<NodeId>> {
    let existing = c.topo.user_idx(info.id);
    let old = existing.map(|p| c.topo.users[p as usize].clone());
    match &old {
        // Domains and `localpart:*@domain` follow the e-mail.
        Some(o) if o.email != info.email => return None,
        Some(_) => {}
        // A new user may be the owner or an admin (by id), or have an SSH
        // local part.
        None if c.tailnet.owner == Some(info.id)
            || c.tailnet.admins.contains(&info.id)
            || c.ssh.rules.iter().any(|r| r.localparts.is_some()) =>
        {
            return None
        }
        None => {}
    }
    if verdict_moves(c, old.as_ref(), info) {
        return None;
    }
    match existing {
        Some(p) => {
            c.topo.unindex_user(p);
            c.topo.users[p as usize] = info.clone();
            c.topo.index_user(p);
        }
        None => {
            let p = c.topo.users.len() as u32;
            c.topo.users.push_back(info.clone());
            c.topo.by_user.push_back(Vec::new());
            c.topo.by_user_id.insert(info.id, p);
            c.topo.index_user(p);
        }
    }
    Some(BTreeSet::new())
}

/// Add or change a user. Policies name users by login: when every alias
/// names the same users as before, no output changes and the user is
/// applied in place (O(log n) plus one pass over the policy's aliases);
/// otherwise the resolution of every alias is redone (a full rebuild, a
/// few milliseconds even for large tailnets). A user without nodes affects
/// nobody.
pub(crate) fn update_user(
    c: &mut CompiledPolicy,
    user: &ironscale_types::User,
) -> BTreeSet<NodeId> {
    let info = UserInfo::from_user(user);
    if let Some(affected) = update_user_in_place(c, &info) {
        return affected;
    }
    let mut topo = c.topo.clone();
    let existing = topo.user_idx(user.id);
    let has_nodes = match existing {
        Some(p) => {
            topo.users[p as usize] = info;
            !topo.by_user[p as usize].is_empty()
        }
        None => {
            topo.users.push_back(info);
            false
        }
    };
    topo.nodes = topo.nodes.iter().filter(|x| x.alive).cloned().collect();
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
