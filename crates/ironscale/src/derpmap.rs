//! Assembling the DERP map: the embedded region, `derp.paths` YAML files and
//! `derp.urls` JSON maps, refreshed every `derp.update_frequency` (the last good
//! map is kept when a fetch fails).

use std::time::Duration;

use ironscale_config::{Config, DerpMapFile, DerpRegionCfg};
use ironscale_state::State;
use ironscale_wire as wire;

/// The embedded relay as it appears in the map.
#[derive(Debug, Clone)]
pub struct EmbeddedRegion {
    pub region: wire::DerpRegion,
}

fn region_from_cfg(r: &DerpRegionCfg) -> wire::DerpRegion {
    wire::DerpRegion {
        region_id: r.region_id,
        region_code: r.region_code.clone(),
        region_name: r.region_name.clone(),
        latitude: r.latitude,
        longitude: r.longitude,
        avoid: r.avoid,
        no_measure_no_home: r.no_measure_no_home,
        nodes: r
            .nodes
            .iter()
            .map(|n| wire::DerpNode {
                name: n.name.clone(),
                region_id: n.region_id,
                host_name: n.host_name.clone(),
                cert_name: n.cert_name.clone(),
                ipv4: n.ipv4.clone(),
                ipv6: n.ipv6.clone(),
                stun_port: n.stun_port,
                stun_only: n.stun_only,
                derp_port: n.derp_port,
                insecure_for_tests: n.insecure_for_tests,
                stun_test_ip: n.stun_test_ip.clone(),
                can_port80: n.can_port80,
            })
            .collect(),
    }
}

fn merge_file(map: &mut wire::DerpMap, f: &DerpMapFile) {
    for r in &f.regions {
        map.regions.insert(r.region_id, region_from_cfg(r));
    }
    for id in &f.removed {
        map.regions.remove(id);
    }
    map.omit_default_regions |= f.omit_default_regions;
}

/// Everything but the remote URLs.
pub fn local_map(cfg: &Config, embedded: Option<&EmbeddedRegion>) -> anyhow::Result<wire::DerpMap> {
    let mut map = wire::DerpMap::default();
    for p in &cfg.derp.paths {
        match ironscale_config::derp_map_from_file(p) {
            Ok((f, _)) => merge_file(&mut map, &f),
            Err(d) => anyhow::bail!(
                "DERP map file {}:\n{}",
                p.display(),
                ironscale_config::render(&d)
            ),
        }
    }
    if let Some(e) = embedded {
        if cfg.derp.server.automatically_add_embedded_derp_region {
            map.regions.insert(e.region.region_id, e.region.clone());
        }
    }
    Ok(map)
}

/// Fetch one remote DERP map (Tailscale's JSON format).
async fn fetch(client: &reqwest::Client, url: &str) -> anyhow::Result<wire::DerpMap> {
    let resp = client.get(url).send().await?.error_for_status()?;
    Ok(resp.json::<wire::DerpMap>().await?)
}

/// Build the full map: remote maps first, then local files and the embedded
/// region on top (local wins on equal region ids). `last_remote` is kept for
/// any URL that fails.
pub async fn full_map(
    cfg: &Config,
    embedded: Option<&EmbeddedRegion>,
    client: &reqwest::Client,
    last_remote: &mut Vec<Option<wire::DerpMap>>,
) -> anyhow::Result<wire::DerpMap> {
    last_remote.resize(cfg.derp.urls.len(), None);
    let mut map = wire::DerpMap::default();
    for (i, url) in cfg.derp.urls.iter().enumerate() {
        match fetch(client, url).await {
            Ok(m) => last_remote[i] = Some(m),
            Err(e) => {
                tracing::warn!(%url, "fetching DERP map failed, keeping the previous one: {e}")
            }
        }
        if let Some(m) = &last_remote[i] {
            for (id, r) in &m.regions {
                map.regions.insert(*id, r.clone());
            }
        }
    }
    let local = local_map(cfg, embedded)?;
    map.regions.extend(local.regions);
    map.omit_default_regions |= local.omit_default_regions;
    Ok(map)
}

/// Periodic refresh of `derp.urls` (and the local files).
pub fn spawn_refresh(
    cfg: Config,
    embedded: Option<EmbeddedRegion>,
    state: State,
    mut last: Vec<Option<wire::DerpMap>>,
) {
    if !cfg.derp.auto_update_enabled || cfg.derp.urls.is_empty() {
        return;
    }
    let every = cfg.derp.update_frequency.max(Duration::from_secs(10));
    tokio::spawn(async move {
        let client = http_client();
        loop {
            tokio::time::sleep(every).await;
            match full_map(&cfg, embedded.as_ref(), &client, &mut last).await {
                Ok(m) => state.set_derp_map(m).await,
                Err(e) => tracing::warn!("DERP map refresh failed: {e:#}"),
            }
        }
    });
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .unwrap_or_default()
}
