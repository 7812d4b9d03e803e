//! `nodeAttrs` and `randomizeClientPort`: node capabilities by target.

use crate::output::CapMap;
use crate::resolve::Ctx;

/// Capabilities an attribute brings along (what Tailscale adds with it).
fn implied(attr: &str) -> &'static [&'static str] {
    match attr {
        "funnel" => &[
            "https://tailscale.com/cap/funnel-ports?ports=443,8443,10000",
            "https://tailscale.com/cap/warn-funnel-no-https",
        ],
        _ => &[],
    }
}

pub(crate) fn node_caps(ctx: &Ctx<'_>) -> Vec<CapMap> {
    let n = ctx.topo.nodes.len();
    let mut out = vec![CapMap::new(); n];
    if ctx.pol.randomize_client_port {
        for m in out.iter_mut() {
            m.insert("randomize-client-port".into(), None);
        }
    }
    for na in &ctx.pol.node_attrs {
        let r = ctx.resolve_list(na.target.iter().map(|t| &t.value));
        let targets: Vec<u32> = if r.all_nodes {
            (0..n as u32)
                .filter(|&i| ctx.topo.nodes[i as usize].alive)
                .collect()
        } else {
            r.nodes()
        };
        for &i in &targets {
            apply(&mut out[i as usize], na);
        }
    }
    out
}

/// Add one `nodeAttrs` entry's capabilities to a node's map.
pub(crate) fn apply(m: &mut CapMap, na: &crate::ast::NodeAttr) {
    for a in &na.attr {
        m.entry(a.clone()).or_insert(None);
        for x in implied(a) {
            m.entry((*x).to_string()).or_insert(None);
        }
    }
    for (k, v) in &na.app {
        let e = m.entry(k.clone()).or_insert(None);
        e.get_or_insert_with(Vec::new).extend(v.iter().cloned());
    }
}

/// The capability map of one node, computed alone (for incremental
/// updates).
pub(crate) fn caps_for(ctx: &Ctx<'_>, node: &crate::topology::NodeInfo) -> CapMap {
    let mut m = CapMap::new();
    if ctx.pol.randomize_client_port {
        m.insert("randomize-client-port".into(), None);
    }
    for na in &ctx.pol.node_attrs {
        let r = ctx.resolve_list(na.target.iter().map(|t| &t.value));
        if r.matches(node) {
            apply(&mut m, na);
        }
    }
    m
}
