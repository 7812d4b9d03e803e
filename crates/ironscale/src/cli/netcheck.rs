//! `ironscale netcheck [--probe]`: the server's view of every node's network
//! from the NetInfo its client reports (UDP, hard NAT, hair-pinning, port
//! mapping, home DERP and its latency), and with `--probe` this host's own
//! STUN and DERP (HTTPS) round trips to every region of the map, as
//! `tailscale netcheck` measures them.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ironscale_api::client::Client;
use ironscale_api::dto;

use super::output::{render, rest, table, Output};

/// How long one probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "-",
    }
}

/// The node table.
pub(crate) fn nodes_table(r: &dto::NetcheckResponse) -> String {
    let region_code = |id: i64| {
        r.regions
            .iter()
            .find(|x| x.id == id)
            .map(|x| format!("{id} ({})", x.code))
            .unwrap_or_else(|| if id == 0 { "-".into() } else { id.to_string() })
    };
    let rows: Vec<Vec<String>> = r
        .nodes
        .iter()
        .map(|n| {
            let Some(i) = &n.net_info else {
                return vec![
                    n.id.to_string(),
                    n.name.clone(),
                    if n.online { "online" } else { "offline" }.into(),
                    "no NetInfo reported".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ];
            };
            let prefix = format!("{}-", i.preferred_derp);
            let home_ms = i
                .derp_latency
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(_, v)| *v)
                .min_by(|a, b| a.total_cmp(b))
                .map(|s| format!("{:.1}ms", s * 1000.0))
                .unwrap_or_else(|| "-".into());
            let nat = match i.mapping_varies_by_dest_addr {
                Some(true) => "hard",
                Some(false) => "easy",
                None => "-",
            };
            vec![
                n.id.to_string(),
                n.name.clone(),
                if n.online { "online" } else { "offline" }.into(),
                yes_no(i.working_udp).into(),
                yes_no(i.working_ipv6).into(),
                nat.into(),
                yes_no(i.hair_pinning).into(),
                if i.have_port_map { "yes" } else { "no" }.into(),
                format!("{} {home_ms}", region_code(i.preferred_derp)),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "ID",
            "Node",
            "Status",
            "UDP",
            "IPv6",
            "NAT",
            "Hairpin",
            "PortMap",
            "Home DERP",
        ],
        &rows,
    );
    let with = |f: &dyn Fn(&dto::NetInfoDto) -> bool| {
        r.nodes
            .iter()
            .filter(|n| n.net_info.as_ref().is_some_and(f))
            .count()
    };
    let hard = with(&|i| i.mapping_varies_by_dest_addr == Some(true));
    let no_udp = with(&|i| i.working_udp == Some(false));
    out.push_str(&format!(
        "\n{} nodes; {hard} behind a hard NAT (direct paths between two of them need a relay); {no_udp} without UDP (always relayed)\n",
        r.nodes.len()
    ));
    out
}

/// One region's probe results.
#[derive(Debug, Clone, serde::Serialize)]
struct Probe {
    region: i64,
    code: String,
    node: String,
    stun_ms: Option<f64>,
    stun_error: Option<String>,
    derp_ms: Option<f64>,
    derp_error: Option<String>,
}

fn node_addr(n: &dto::DerpNodeInfo) -> Option<IpAddr> {
    n.ipv4
        .parse::<IpAddr>()
        .ok()
        .or_else(|| n.ipv6.parse::<IpAddr>().ok())
}

async fn stun_probe(addr: SocketAddr) -> Result<f64, String> {
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().map_err(|e| format!("{e}"))?
    } else {
        "[::]:0".parse().map_err(|e| format!("{e}"))?
    };
    let sock = tokio::net::UdpSocket::bind(bind)
        .await
        .map_err(|e| format!("bind: {e}"))?;
    let mut txid = [0u8; 12];
    getrandom::fill(&mut txid).map_err(|e| format!("no randomness: {e}"))?;
    let txid = ironscale_stun::TxId::from_bytes(txid);
    let req = ironscale_stun::request(txid);
    let start = Instant::now();
    sock.send_to(&req, addr)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = [0u8; 1500];
    loop {
        let (n, from) = tokio::time::timeout(PROBE_TIMEOUT, sock.recv_from(&mut buf))
            .await
            .map_err(|_| "no answer".to_string())?
            .map_err(|e| format!("receive: {e}"))?;
        if from != addr {
            continue;
        }
        if let Ok((got, _mapped)) = ironscale_stun::parse_response(&buf[..n]) {
            if got == txid {
                return Ok(start.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
}

/// HTTPS round trip to the relay's `/derp/latency-check` (the certificate is
/// not what is measured, so it is not checked here; clients check it).
async fn derp_probe(host: &str, addr: SocketAddr) -> Result<f64, String> {
    let name = if host.is_empty() {
        addr.ip().to_string()
    } else {
        host.to_string()
    };
    let client = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .resolve(&name, addr)
        .timeout(PROBE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("{e}"))?;
    let url = format!("https://{name}:{}/derp/latency-check", addr.port());
    // The first request pays for TCP and TLS; the second is the round trip.
    let first = client.get(&url).send().await.map_err(|e| format!("{e}"))?;
    if !first.status().is_success() {
        return Err(format!("HTTP {}", first.status()));
    }
    let start = Instant::now();
    client.get(&url).send().await.map_err(|e| format!("{e}"))?;
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

async fn probe_all(r: &dto::NetcheckResponse) -> Vec<Probe> {
    let mut out = Vec::new();
    for region in &r.regions {
        for n in &region.nodes {
            let mut p = Probe {
                region: region.id,
                code: region.code.clone(),
                node: n.name.clone(),
                stun_ms: None,
                stun_error: None,
                derp_ms: None,
                derp_error: None,
            };
            let Some(ip) = node_addr(n) else {
                p.stun_error = Some("no IP address in the map".into());
                p.derp_error = p.stun_error.clone();
                out.push(p);
                continue;
            };
            if n.stun_port >= 0 {
                let port = if n.stun_port == 0 { 3478 } else { n.stun_port };
                match stun_probe(SocketAddr::new(ip, u16::try_from(port).unwrap_or(3478))).await {
                    Ok(ms) => p.stun_ms = Some(ms),
                    Err(e) => p.stun_error = Some(e),
                }
            } else {
                p.stun_error = Some("no STUN".into());
            }
            if !n.stun_only {
                let port = if n.derp_port == 0 { 443 } else { n.derp_port };
                match derp_probe(
                    &n.host,
                    SocketAddr::new(ip, u16::try_from(port).unwrap_or(443)),
                )
                .await
                {
                    Ok(ms) => p.derp_ms = Some(ms),
                    Err(e) => p.derp_error = Some(e),
                }
            }
            out.push(p);
        }
    }
    out
}

fn probes_table(p: &[Probe]) -> String {
    let ms = |v: Option<f64>, e: &Option<String>| match (v, e) {
        (Some(v), _) => format!("{v:.1}ms"),
        (None, Some(e)) => format!("failed: {e}"),
        (None, None) => "-".into(),
    };
    let rows: Vec<Vec<String>> = p
        .iter()
        .map(|x| {
            vec![
                format!("{} ({})", x.region, x.code),
                x.node.clone(),
                ms(x.stun_ms, &x.stun_error),
                ms(x.derp_ms, &x.derp_error),
            ]
        })
        .collect();
    format!(
        "\nFrom this host:\n{}",
        table(&["Region", "Node", "STUN", "DERP (HTTPS)"], &rows)
    )
}

pub async fn run(c: &Client, probe: bool, out: Output) -> anyhow::Result<()> {
    let r = c.netcheck().await?;
    let probes = if probe {
        Some(probe_all(&r).await)
    } else {
        None
    };
    let mut v = rest(&r)?;
    if let (Some(p), Some(obj)) = (&probes, v.as_object_mut()) {
        obj.insert("probes".into(), serde_json::to_value(p)?);
    }
    print!(
        "{}",
        render(out, &v, || {
            let mut s = nodes_table(&r);
            if let Some(p) = &probes {
                s.push_str(&probes_table(p));
            }
            s
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_who_is_behind_a_hard_nat_and_where_home_is() {
        let r = dto::NetcheckResponse {
            nodes: vec![
                dto::NodeNetwork {
                    id: 1,
                    name: "laptop".into(),
                    online: true,
                    net_info: Some(dto::NetInfoDto {
                        working_udp: Some(true),
                        mapping_varies_by_dest_addr: Some(true),
                        hair_pinning: Some(false),
                        preferred_derp: 900,
                        derp_latency: [("900-v4".to_string(), 0.0123)].into_iter().collect(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                dto::NodeNetwork {
                    id: 2,
                    name: "new".into(),
                    ..Default::default()
                },
            ],
            regions: vec![dto::DerpRegionInfo {
                id: 900,
                code: "lab".into(),
                name: "Lab".into(),
                nodes: vec![],
            }],
        };
        let t = nodes_table(&r);
        let laptop = t.lines().find(|l| l.contains("laptop")).expect("row");
        assert!(
            laptop.contains("hard") && laptop.contains("900 (lab) 12.3ms"),
            "{t}"
        );
        assert!(t.contains("no NetInfo reported"), "{t}");
        assert!(t.contains("2 nodes; 1 behind a hard NAT"), "{t}");
    }
}
