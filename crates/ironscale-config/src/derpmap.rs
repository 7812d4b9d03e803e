//! Local DERP map files (`derp.paths`), in Headscale's YAML form:
//!
//! ```yaml
//! regions:
//!   900:
//!     regionid: 900
//!     regioncode: my-derp
//!     regionname: My DERP
//!     nodes:
//!       - name: 900a
//!         regionid: 900
//!         hostname: derp.example.com
//!         ipv4: 198.51.100.1
//!         derpport: 443
//!         stunport: 3478
//! ```
//!
//! Field names are Tailscale's `tailcfg.DERPMap` field names, matched
//! case-insensitively (so the JSON form `{"Regions": {"900": {"RegionID": ...}}}`
//! works too). `regions: {1: null}` removes region 1 from the merged map.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::diag::{Diagnostic, Severity};
use crate::yaml::{self, Kind, Node};

/// One DERP node (server) of a region.
#[derive(Clone, Debug, PartialEq)]
pub struct DerpNodeCfg {
    pub name: String,
    pub region_id: i32,
    pub host_name: String,
    pub cert_name: String,
    /// An IPv4 address, `"none"` (no IPv4), or empty (use DNS). Kept as text, as in tailcfg.
    pub ipv4: String,
    pub ipv6: String,
    /// 0 means 3478; -1 disables STUN.
    pub stun_port: i32,
    pub stun_only: bool,
    /// 0 means 443.
    pub derp_port: i32,
    pub insecure_for_tests: bool,
    pub stun_test_ip: String,
    pub can_port80: bool,
}

/// One DERP region.
#[derive(Clone, Debug, PartialEq)]
pub struct DerpRegionCfg {
    pub region_id: i32,
    pub region_code: String,
    pub region_name: String,
    pub latitude: f64,
    pub longitude: f64,
    pub avoid: bool,
    pub no_measure_no_home: bool,
    pub nodes: Vec<DerpNodeCfg>,
}

/// A whole DERP map file.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct DerpMapFile {
    /// Regions, sorted by id.
    pub regions: Vec<DerpRegionCfg>,
    /// Region ids given as `null`: remove them from the merged map.
    pub removed: Vec<i32>,
    pub omit_default_regions: bool,
}

struct Ctx {
    file: PathBuf,
    diags: Vec<Diagnostic>,
}

impl Ctx {
    fn push(&mut self, severity: Severity, key: &str, line: usize, message: String) {
        self.diags.push(Diagnostic {
            severity,
            file: Some(self.file.clone()),
            line: Some(line),
            key: key.into(),
            message,
        });
    }
    fn err(&mut self, key: &str, line: usize, message: String) {
        self.push(Severity::Error, key, line, message);
    }
    fn text(&mut self, key: &str, n: &Node) -> Option<String> {
        match &n.kind {
            _ if n.is_null() => Some(String::new()),
            Kind::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.err(
                    key,
                    n.line,
                    format!("must be a scalar, found {}", n.type_name()),
                );
                None
            }
        }
    }
    fn int(&mut self, key: &str, n: &Node) -> Option<i64> {
        let t = self.text(key, n)?;
        match t.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(key, n.line, format!("{t:?} is not an integer"));
                None
            }
        }
    }
    fn float(&mut self, key: &str, n: &Node) -> Option<f64> {
        let t = self.text(key, n)?;
        match t.trim().parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(key, n.line, format!("{t:?} is not a number"));
                None
            }
        }
    }
    fn boolean(&mut self, key: &str, n: &Node) -> Option<bool> {
        let t = self.text(key, n)?;
        match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Some(true),
            "false" | "no" | "off" | "" => Some(false),
            _ => {
                self.err(key, n.line, format!("{t:?} is not a boolean"));
                None
            }
        }
    }
}

/// Parse a DERP map file. `Ok` carries the map and its warnings; `Err` every problem.
pub fn derp_map_from_file(path: &Path) -> Result<(DerpMapFile, Vec<Diagnostic>), Vec<Diagnostic>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Diagnostic {
            severity: Severity::Error,
            file: Some(path.to_path_buf()),
            line: None,
            key: String::new(),
            message: format!("cannot read DERP map: {e}"),
        }]
    })?;
    derp_map_from_str(&text, path)
}

/// The regions of a DERP map file (regions given as `null` are left out).
pub fn derp_regions_from_file(path: &Path) -> Result<Vec<DerpRegionCfg>, Vec<Diagnostic>> {
    derp_map_from_file(path).map(|(m, _)| m.regions)
}

/// Parse DERP map text; `path` is used in diagnostics only.
pub fn derp_map_from_str(
    text: &str,
    path: &Path,
) -> Result<(DerpMapFile, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut cx = Ctx {
        file: path.to_path_buf(),
        diags: Vec::new(),
    };
    let root = match yaml::parse(text) {
        Ok(r) => r,
        Err(e) => {
            cx.err("", e.line, e.message);
            return Err(cx.diags);
        }
    };
    let mut out = DerpMapFile::default();
    let Kind::Map(top) = &root.kind else {
        cx.err(
            "",
            root.line,
            "a DERP map must be a mapping with a `regions` key".into(),
        );
        return Err(cx.diags);
    };
    let mut saw_regions = false;
    for (k, kl, v) in top {
        match k.to_ascii_lowercase().as_str() {
            "regions" => {
                saw_regions = true;
                regions(&mut cx, v, &mut out);
            }
            "omitdefaultregions" => out.omit_default_regions = cx.boolean(k, v).unwrap_or(false),
            "homeparams" => {}
            _ => cx.push(
                Severity::Warning,
                k,
                *kl,
                "unknown DERP map key, ignored".into(),
            ),
        }
    }
    if !saw_regions {
        cx.err(
            "regions",
            root.line,
            "a DERP map needs a `regions` mapping (region id → region)".into(),
        );
    }
    out.regions.sort_by_key(|r| r.region_id);
    if cx.diags.iter().any(Diagnostic::is_error) {
        Err(cx.diags)
    } else {
        Ok((out, cx.diags))
    }
}

fn regions(cx: &mut Ctx, v: &Node, out: &mut DerpMapFile) {
    let Kind::Map(entries) = &v.kind else {
        if !v.is_null() {
            cx.err(
                "regions",
                v.line,
                "must be a mapping of region id to region".into(),
            );
        }
        return;
    };
    for (id_text, kl, rv) in entries {
        let key = format!("regions.{id_text}");
        let Ok(id) = id_text.trim().parse::<i32>() else {
            cx.err(
                &key,
                *kl,
                format!("region key {id_text:?} must be a numeric region id"),
            );
            continue;
        };
        if id <= 0 {
            cx.err(&key, *kl, "region ids must be positive".into());
            continue;
        }
        if rv.is_null() {
            out.removed.push(id);
            continue;
        }
        if let Some(r) = region(cx, &key, id, rv) {
            out.regions.push(r);
        }
    }
}

fn region(cx: &mut Ctx, key: &str, id: i32, v: &Node) -> Option<DerpRegionCfg> {
    let Kind::Map(fields) = &v.kind else {
        cx.err(
            key,
            v.line,
            format!("must be a mapping, found {}", v.type_name()),
        );
        return None;
    };
    let mut r = DerpRegionCfg {
        region_id: id,
        region_code: String::new(),
        region_name: String::new(),
        latitude: 0.0,
        longitude: 0.0,
        avoid: false,
        no_measure_no_home: false,
        nodes: Vec::new(),
    };
    for (k, kl, fv) in fields {
        let fk = format!("{key}.{k}");
        match k.to_ascii_lowercase().as_str() {
            "regionid" => {
                if let Some(rid) = cx.int(&fk, fv) {
                    if rid != i64::from(id) {
                        cx.err(
                            &fk,
                            *kl,
                            format!("regionid {rid} differs from the region's key {id}"),
                        );
                    }
                }
            }
            "regioncode" => r.region_code = cx.text(&fk, fv).unwrap_or_default(),
            "regionname" => r.region_name = cx.text(&fk, fv).unwrap_or_default(),
            "latitude" => r.latitude = cx.float(&fk, fv).unwrap_or_default(),
            "longitude" => r.longitude = cx.float(&fk, fv).unwrap_or_default(),
            "avoid" => r.avoid = cx.boolean(&fk, fv).unwrap_or_default(),
            "nomeasurenohome" => r.no_measure_no_home = cx.boolean(&fk, fv).unwrap_or_default(),
            "nodes" => match &fv.kind {
                Kind::Seq(items) => {
                    for (i, it) in items.iter().enumerate() {
                        if let Some(n) = node(cx, &format!("{key}.nodes.{i}"), id, it) {
                            r.nodes.push(n);
                        }
                    }
                }
                _ if fv.is_null() => {}
                _ => cx.err(&fk, *kl, "must be a list of DERP nodes".into()),
            },
            _ => cx.push(
                Severity::Warning,
                &fk,
                *kl,
                "unknown region field, ignored".into(),
            ),
        }
    }
    if r.region_code.is_empty() {
        cx.push(
            Severity::Warning,
            key,
            v.line,
            "region has no regioncode".into(),
        );
    }
    if r.nodes.is_empty() {
        cx.push(
            Severity::Warning,
            key,
            v.line,
            "region has no nodes; clients cannot use it".into(),
        );
    }
    Some(r)
}

fn node(cx: &mut Ctx, key: &str, region_id: i32, v: &Node) -> Option<DerpNodeCfg> {
    let Kind::Map(fields) = &v.kind else {
        cx.err(
            key,
            v.line,
            format!("a DERP node must be a mapping, found {}", v.type_name()),
        );
        return None;
    };
    let mut n = DerpNodeCfg {
        name: String::new(),
        region_id,
        host_name: String::new(),
        cert_name: String::new(),
        ipv4: String::new(),
        ipv6: String::new(),
        stun_port: 0,
        stun_only: false,
        derp_port: 0,
        insecure_for_tests: false,
        stun_test_ip: String::new(),
        can_port80: false,
    };
    let port = |cx: &mut Ctx, fk: &str, fv: &Node, min: i64| -> i32 {
        match cx.int(fk, fv) {
            Some(p) if (min..=65535).contains(&p) => i32::try_from(p).unwrap_or_default(),
            Some(p) => {
                cx.err(fk, fv.line, format!("{p} is not a valid port"));
                0
            }
            None => 0,
        }
    };
    for (k, kl, fv) in fields {
        let fk = format!("{key}.{k}");
        match k.to_ascii_lowercase().as_str() {
            "name" => n.name = cx.text(&fk, fv).unwrap_or_default(),
            "regionid" => {
                if let Some(rid) = cx.int(&fk, fv) {
                    if rid != i64::from(region_id) {
                        cx.err(
                            &fk,
                            *kl,
                            format!("node regionid {rid} differs from its region {region_id}"),
                        );
                    }
                }
            }
            "hostname" => n.host_name = cx.text(&fk, fv).unwrap_or_default(),
            "certname" => n.cert_name = cx.text(&fk, fv).unwrap_or_default(),
            "ipv4" => {
                n.ipv4 = cx.text(&fk, fv).unwrap_or_default();
                if !n.ipv4.is_empty() && n.ipv4 != "none" && n.ipv4.parse::<Ipv4Addr>().is_err() {
                    cx.push(
                        Severity::Warning,
                        &fk,
                        *kl,
                        format!("{:?} is not an IPv4 address (or \"none\"); clients will ignore it and resolve hostname instead", n.ipv4),
                    );
                }
            }
            "ipv6" => {
                n.ipv6 = cx.text(&fk, fv).unwrap_or_default();
                if !n.ipv6.is_empty() && n.ipv6 != "none" && n.ipv6.parse::<Ipv6Addr>().is_err() {
                    cx.push(
                        Severity::Warning,
                        &fk,
                        *kl,
                        format!(
                            "{:?} is not an IPv6 address (or \"none\"); clients will ignore it",
                            n.ipv6
                        ),
                    );
                }
            }
            "stunport" => n.stun_port = port(cx, &fk, fv, -1),
            "stunonly" => n.stun_only = cx.boolean(&fk, fv).unwrap_or_default(),
            "derpport" => n.derp_port = port(cx, &fk, fv, 0),
            "insecurefortests" => n.insecure_for_tests = cx.boolean(&fk, fv).unwrap_or_default(),
            "stuntestip" => n.stun_test_ip = cx.text(&fk, fv).unwrap_or_default(),
            "canport80" => n.can_port80 = cx.boolean(&fk, fv).unwrap_or_default(),
            _ => cx.push(
                Severity::Warning,
                &fk,
                *kl,
                "unknown DERP node field, ignored".into(),
            ),
        }
    }
    if n.name.is_empty() {
        cx.err(
            &format!("{key}.name"),
            v.line,
            "a DERP node needs a name".into(),
        );
    }
    if n.host_name.is_empty() {
        cx.err(
            &format!("{key}.hostname"),
            v.line,
            "a DERP node needs a hostname".into(),
        );
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_null_regions() {
        let t = "regions:\n  1: null\n  900:\n    regionid: 900\n    regioncode: x\n    regionname: X\n    nodes:\n      - name: 900a\n        regionid: 900\n        hostname: derp.example.com\n        ipv4: 198.51.100.1\n        derpport: 33331\n        stunport: 3478\n        insecurefortests: true\n";
        let (m, w) = derp_map_from_str(t, Path::new("d.yaml")).expect("ok");
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(m.removed, vec![1]);
        assert_eq!(m.regions.len(), 1);
        let n = &m.regions[0].nodes[0];
        assert_eq!(
            (n.derp_port, n.stun_port, n.insecure_for_tests),
            (33331, 3478, true)
        );
        assert_eq!(n.host_name, "derp.example.com");
    }

    #[test]
    fn parses_json_form() {
        let t = r#"{"Regions": {"900": {"RegionID": 900, "RegionCode": "x", "Nodes": [{"Name": "a", "RegionID": 900, "HostName": "h", "DERPPort": 443}]}}}"#;
        let (m, _) = derp_map_from_str(t, Path::new("d.json")).expect("ok");
        assert_eq!(m.regions[0].nodes[0].derp_port, 443);
    }

    #[test]
    fn errors_have_lines() {
        let t = "regions:\n  900:\n    regionid: 901\n    nodes:\n      - name: a\n        derpport: 99999\n";
        let e = derp_map_from_str(t, Path::new("d.yaml")).expect_err("bad");
        let lines: Vec<_> = e
            .iter()
            .filter(|d| d.is_error())
            .map(|d| (d.line, d.key.clone()))
            .collect();
        assert!(
            lines.contains(&(Some(3), "regions.900.regionid".into())),
            "{lines:?}"
        );
        assert!(
            lines.contains(&(Some(6), "regions.900.nodes.0.derpport".into())),
            "{lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|(_, k)| k == "regions.900.nodes.0.hostname"),
            "{lines:?}"
        );
    }
}
