//! Assembling the DERP map: the embedded region, `derp.paths` YAML files and
//! `derp.urls` JSON maps, refreshed every `derp.update_frequency` (the last good
//! map is kept when a fetch fails).
//!
//! A library so that `serve`, a DERP-only mode and a doctor build the same
//! map. It knows nothing of the state: [`spawn_refresh`] hands each new map
//! to a callback (`serve` gives it to `State::set_derp_map`).

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use ironscale_config::{Config, DerpMapFile, DerpRegionCfg};
use ironscale_wire as wire;

/// Why a DERP map could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DerpMapError {
    /// A `derp.paths` file is unreadable or invalid: its diagnostics, rendered.
    #[error("DERP map file {}:\n{diagnostics}", .path.display())]
    File { path: PathBuf, diagnostics: String },
}

/// Why one `derp.urls` map could not be fetched (logged; the last good map is kept).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(#[from] reqwest::Error);

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
pub fn local_map(
    cfg: &Config,
    embedded: Option<&EmbeddedRegion>,
) -> Result<wire::DerpMap, DerpMapError> {
    let mut map = wire::DerpMap::default();
    for p in &cfg.derp.paths {
        match ironscale_config::derp_map_from_file(p) {
            Ok((f, _)) => merge_file(&mut map, &f),
            Err(d) => {
                return Err(DerpMapError::File {
                    path: p.clone(),
                    diagnostics: ironscale_config::render(&d),
                })
            }
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
async fn fetch(client: &reqwest::Client, url: &str) -> Result<wire::DerpMap, FetchError> {
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
) -> Result<wire::DerpMap, DerpMapError> {
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

/// Periodic refresh of `derp.urls` (and the local files), every
/// `derp.update_frequency` (at least 10 s): each map built is given to
/// `on_map`. `last` is what [`full_map`] kept of the remote maps at start-up.
pub fn spawn_refresh<F, Fut>(
    cfg: Config,
    embedded: Option<EmbeddedRegion>,
    mut last: Vec<Option<wire::DerpMap>>,
    on_map: F,
) where
    F: Fn(wire::DerpMap) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    if !cfg.derp.auto_update_enabled || cfg.derp.urls.is_empty() {
        return;
    }
    let every = cfg.derp.update_frequency.max(Duration::from_secs(10));
    tokio::spawn(async move {
        let client = http_client();
        loop {
            tokio::time::sleep(every).await;
            match full_map(&cfg, embedded.as_ref(), &client, &mut last).await {
                Ok(m) => on_map(m).await,
                Err(e) => tracing::warn!("DERP map refresh failed: {e}"),
            }
        }
    });
}

/// The client for `derp.urls`: 15 s timeout, at most 3 redirects.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .redirect(reqwest::redirect::Policy::limited(3))
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(id: i32, code: &str) -> wire::DerpRegion {
        wire::DerpRegion {
            region_id: id,
            region_code: code.into(),
            ..Default::default()
        }
    }

    fn config(dir: &std::path::Path) -> Config {
        let mut cfg = Config::default_local(dir);
        cfg.derp.urls.clear();
        cfg.derp.paths.clear();
        cfg
    }

    #[test]
    fn files_and_the_embedded_region_merge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        let file = dir.path().join("derp.yaml");
        std::fs::write(
            &file,
            "regions:\n  900:\n    regionid: 900\n    regioncode: mine\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: derp.example.com\n  999: null\n",
        )
        .expect("write");
        cfg.derp.paths.push(file);
        let embedded = EmbeddedRegion {
            region: region(999, "embedded"),
        };
        cfg.derp.server.automatically_add_embedded_derp_region = true;
        let m = local_map(&cfg, Some(&embedded)).expect("map");
        assert_eq!(m.regions.keys().copied().collect::<Vec<_>>(), [900, 999]);
        assert_eq!(m.regions[&900].region_code, "mine");
        assert_eq!(m.regions[&900].nodes[0].host_name, "derp.example.com");
        assert_eq!(m.regions[&999].region_code, "embedded");
        cfg.derp.server.automatically_add_embedded_derp_region = false;
        let m = local_map(&cfg, Some(&embedded)).expect("map");
        assert_eq!(m.regions.keys().copied().collect::<Vec<_>>(), [900]);
    }

    #[test]
    fn a_bad_file_names_itself() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        let file = dir.path().join("missing.yaml");
        cfg.derp.paths.push(file.clone());
        let e = local_map(&cfg, None).expect_err("no file");
        assert!(
            matches!(&e, DerpMapError::File { path, .. } if *path == file),
            "{e:?}"
        );
        assert!(e.to_string().contains("missing.yaml"), "{e}");
    }

    /// A URL that fails keeps its last good map; local regions win on equal ids.
    #[tokio::test]
    async fn a_failed_fetch_keeps_the_last_good_map() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cfg = config(dir.path());
        // Nothing listens on port 1 of the loopback: the fetch is refused at once.
        cfg.derp.urls.push("http://127.0.0.1:1/derpmap.json".into());
        let mut remote = wire::DerpMap::default();
        remote.regions.insert(1, region(1, "remote"));
        remote.regions.insert(999, region(999, "remote"));
        let mut last = vec![Some(remote)];
        let embedded = EmbeddedRegion {
            region: region(999, "embedded"),
        };
        cfg.derp.server.automatically_add_embedded_derp_region = true;
        let m = full_map(&cfg, Some(&embedded), &http_client(), &mut last)
            .await
            .expect("map");
        assert_eq!(m.regions[&1].region_code, "remote");
        assert_eq!(m.regions[&999].region_code, "embedded");
        assert!(last[0].is_some());
        // With no map ever fetched, the URL contributes nothing.
        let m = full_map(&cfg, None, &http_client(), &mut vec![None])
            .await
            .expect("map");
        assert!(m.regions.is_empty());
    }
}
