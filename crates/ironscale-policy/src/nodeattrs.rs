//! `nodeAttrs` and `randomizeClientPort`: node capabilities by target.

use crate::compile::Ctx;
use crate::output::CapMap;

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
        let mut targets: Vec<u32> = Vec::new();
        for t in &na.target {
            targets.extend(ctx.resolve(&t.value).nodes);
        }
        targets.sort_unstable();
        targets.dedup();
        for &i in &targets {
            let m = &mut out[i as usize];
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
    }
    out
}
