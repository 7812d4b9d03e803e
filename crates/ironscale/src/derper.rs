//! `ironscale derper`: a standalone DERP relay (and STUN server) that takes
//! the flags of Tailscale's `derper` as its unit files use them, so a unit
//! works with only the binary path changed. Invoked through a symlink named
//! `derper`, the binary behaves the same.
//!
//! Flags are parsed as Go's `flag` package does (`-x` or `--x`, `=value` or a
//! separate value, booleans as `-x` or `-x=false`); a flag Tailscale's derper
//! has that this one does not implement yet, and any unknown flag, is an
//! error that lists them.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ironscale_keys::NodePublic;
use ironscale_relay::{ClientVerifier, DerpServer};
use tokio::net::{TcpListener, UdpSocket};

use crate::supervisor::Supervisor;

/// How long a `/verify` answer is reused for the same node key (a client
/// that reconnects in a loop costs one request per this period).
const VERIFY_CACHE_TTL: Duration = Duration::from_secs(5);

pub const HELP: &str = "\
ironscale derper: a DERP relay and STUN server, with the flags of Tailscale's derper.

Usage: ironscale derper [flags]     (or through a symlink named derper)

  --hostname NAME            TLS host name; with --certmode manual the certificate is
                             CERTDIR/NAME.crt and its key CERTDIR/NAME.key (default derp.example.com)
  --a ADDR                   listen address for DERP over HTTPS (default :443)
  --http-port N              plain-HTTP port (/generate_204, /derp for TS_DEBUG_USE_DERP_HTTP);
                             -1 disables (default 80)
  --stun                     run the STUN server (default true; --stun=false to disable)
  --stun-port N              STUN UDP port (default 3478)
  --certmode MODE            manual (only; derper's default letsencrypt is not supported yet)
  --certdir DIR              directory of the manual certificate (default /var/lib/derper/certs)
  --verify-clients           admit only clients the control server knows
  --verify-client-url URL    ask URL (Headscale's or ironscale's /verify) for each client
  --verify-client-url-fail-open
                             admit clients when the URL cannot be reached (default true,
                             as derper; a warning is logged when it is on)
  --mesh-psk-file FILE       the region's pre-shared mesh key (64 hex digits)
  --mesh-with HOSTS          comma-separated relays of this region to mesh with
                             (host, host:port, or name/dial-host[:port]; default port 443)
  --client-rate-limit BYTES   bytes per second each client may send (ironscale's; default 0:
                             no limit); a client over it is slowed (reading pauses), never cut
  --client-rate-burst BYTES   bytes a client may send at once (default: one second's worth)
  --key-file PATH            the relay's private key, created if missing (ironscale's flag:
                             derper's -c would clash with our global -c). Default:
                             /var/lib/derper/derper-<hostname>-<port>.key, so two relays on one
                             host never share a key.

Where ironscale differs from Go's derper:
  * --verify-clients together with --verify-client-url checks through the URL alone: no
    local tailscaled is needed (Go's derper also asks a local tailscaled).
  * HTTPS calls to the verify URL honour SSL_CERT_FILE and the system's CA certificates.
  * Answers of the verify URL are reused for 5 s per node key.
  * --mesh-with: relays whose --hostname is in the list skip themselves; a mesh peer that
    presents the key is admitted without /verify; TLS to peers uses the system's CA
    certificates (SSL_CERT_FILE honoured).
  * Not implemented yet (refused with an error): --certmode letsencrypt,
    --accept-connection-limit, --accept-connection-burst, and derper's other flags.
";

/// What the flags say.
#[derive(Clone, Debug, PartialEq)]
pub struct DerperArgs {
    pub hostname: String,
    pub addr: SocketAddr,
    pub http_port: Option<u16>,
    pub stun: bool,
    pub stun_port: u16,
    pub certdir: PathBuf,
    pub verify_clients: bool,
    pub verify_client_url: Option<String>,
    pub fail_open: bool,
    pub key_file: Option<PathBuf>,
    /// `--mesh-psk-file`: the file holding the region's 64-hex-digit mesh key.
    pub mesh_psk_file: Option<PathBuf>,
    /// `--mesh-with`: the other relays of the region (`host`, `host:port`, or
    /// `host/dial-host[:port]`; our own `--hostname` is skipped).
    pub mesh_with: Vec<String>,
    /// `--client-rate-limit` (ours): bytes per second each client may send (0: none).
    pub client_rate_limit: u64,
    /// `--client-rate-burst` (ours): bytes a client may send at once.
    pub client_rate_burst: u64,
}

/// Tailscale derper's flags that are not implemented here (yet).
const UNSUPPORTED: &[&str] = &[
    "accept-connection-limit",
    "accept-connection-burst",
    "c",
    "dev",
    "derp",
    "bootstrap-dns-names",
    "unpublished-bootstrap-dns-names",
    "secrets-url",
    "secrets-path-prefix",
    "secrets-cache-ttl",
    "tcp-keepalive-time",
    "tcp-user-timeout",
    "tcp-write-timeout",
    "home",
    "socket",
    "acme-eab-kid",
    "acme-eab-key",
];

const BOOLS: &[&str] = &["stun", "verify-clients", "verify-client-url-fail-open"];
const VALUES: &[&str] = &[
    "hostname",
    "a",
    "http-port",
    "stun-port",
    "certmode",
    "certdir",
    "verify-client-url",
    "key-file",
    "mesh-psk-file",
    "mesh-with",
    "client-rate-limit",
    "client-rate-burst",
];

fn parse_bool(flag: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => bail!("invalid boolean value {v:?} for --{flag}"),
    }
}

/// `:443`, `0.0.0.0:443`, `[::]:443`.
fn parse_addr(v: &str) -> anyhow::Result<SocketAddr> {
    ironscale_config::parse_listen_addr(v).map_err(|e| anyhow::anyhow!("--a: {e}"))
}

/// Parse derper's flags (`args` without the program or subcommand name).
pub fn parse(args: &[String]) -> anyhow::Result<DerperArgs> {
    let mut values: HashMap<&'static str, String> = HashMap::new();
    let mut bools: HashMap<&'static str, bool> = HashMap::new();
    let mut unsupported = Vec::new();
    let mut unknown = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            if i < args.len() {
                bail!("unexpected arguments after --: {:?}", &args[i..]);
            }
            break;
        }
        let Some(body) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) else {
            bail!("unexpected argument {a:?} (derper takes flags only; see --help)");
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (body, None),
        };
        if let Some(b) = BOOLS.iter().find(|b| **b == name) {
            let v = match &inline {
                Some(v) => parse_bool(name, v)?,
                None => true,
            };
            bools.insert(b, v);
        } else if let Some(k) = VALUES.iter().find(|k| **k == name) {
            let v = match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .with_context(|| format!("flag needs an argument: --{name}"))?;
                    i += 1;
                    v.clone()
                }
            };
            values.insert(k, v);
        } else if UNSUPPORTED.contains(&name) {
            if inline.is_none() && name != "dev" && name != "derp" {
                i += 1; // skip its value, to list every offending flag
            }
            unsupported.push(format!("--{name}"));
        } else {
            // Its value, if it has one, is not an argument of ours either.
            if inline.is_none() && args.get(i).is_some_and(|n| !n.starts_with('-')) {
                i += 1;
            }
            unknown.push(format!("--{name}"));
        }
    }
    if !unknown.is_empty() || !unsupported.is_empty() {
        let mut msg = String::new();
        if !unknown.is_empty() {
            msg.push_str(&format!("unknown derper flags: {}", unknown.join(", ")));
        }
        if !unsupported.is_empty() {
            if !msg.is_empty() {
                msg.push_str("; ");
            }
            msg.push_str(&format!(
                "derper flags ironscale derper does not implement yet: {}",
                unsupported.join(", ")
            ));
        }
        bail!("{msg} (see `ironscale derper --help`)");
    }
    let certmode = values
        .get("certmode")
        .map(String::as_str)
        .unwrap_or("letsencrypt");
    if certmode != "manual" {
        bail!(
            "--certmode {certmode} is not supported yet (letsencrypt is derper's default): use \
             --certmode manual --certdir DIR with DIR/<hostname>.crt and DIR/<hostname>.key"
        );
    }
    let port = |k: &str, d: i64| -> anyhow::Result<Option<u16>> {
        let v = match values.get(k) {
            Some(v) => v
                .parse::<i64>()
                .with_context(|| format!("--{k}: {v:?} is not a number"))?,
            None => d,
        };
        if v < 0 {
            return Ok(None);
        }
        u16::try_from(v)
            .map(Some)
            .map_err(|_| anyhow::anyhow!("--{k}: {v} is not a port"))
    };
    let num = |k: &str| -> anyhow::Result<u64> {
        match values.get(k) {
            Some(v) => v
                .parse::<u64>()
                .with_context(|| format!("--{k}: {v:?} is not a number of bytes")),
            None => Ok(0),
        }
    };
    let verify_client_url = values
        .get("verify-client-url")
        .cloned()
        .filter(|u| !u.is_empty());
    if let Some(u) = &verify_client_url {
        match reqwest::Url::parse(u) {
            Ok(p) if matches!(p.scheme(), "http" | "https") => {}
            _ => bail!("--verify-client-url: {u:?} is not an http(s) URL"),
        }
    }
    Ok(DerperArgs {
        hostname: values
            .get("hostname")
            .cloned()
            .unwrap_or_else(|| "derp.example.com".into()),
        addr: parse_addr(values.get("a").map(String::as_str).unwrap_or(":443"))?,
        http_port: port("http-port", 80)?,
        stun: bools.get("stun").copied().unwrap_or(true),
        stun_port: port("stun-port", 3478)?.unwrap_or(3478),
        certdir: values
            .get("certdir")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/derper/certs")),
        verify_clients: bools.get("verify-clients").copied().unwrap_or(false),
        verify_client_url,
        fail_open: bools
            .get("verify-client-url-fail-open")
            .copied()
            .unwrap_or(true),
        key_file: values.get("key-file").map(PathBuf::from),
        mesh_psk_file: values.get("mesh-psk-file").map(PathBuf::from),
        mesh_with: values
            .get("mesh-with")
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|x| !x.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        client_rate_limit: num("client-rate-limit")?,
        client_rate_burst: num("client-rate-burst")?,
    })
}

/// Admits the clients a verify URL allows, reusing answers briefly.
struct UrlVerifier {
    url: String,
    fail_open: bool,
    http: reqwest::Client,
    cache: std::sync::Mutex<HashMap<NodePublic, (bool, Instant)>>,
    /// The URL is failing now (so the failure is logged once, not per client).
    failing: std::sync::atomic::AtomicBool,
}

impl UrlVerifier {
    async fn ask(&self, node: &NodePublic, source: Option<IpAddr>) -> Result<bool, String> {
        let body = serde_json::json!({
            "NodePublic": node.to_string(),
            "Source": source.map(|s| s.to_string()).unwrap_or_default(),
        });
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {}: {e}", self.url))?;
        if !resp.status().is_success() {
            return Err(format!("{} answered HTTP {}", self.url, resp.status()));
        }
        let v: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("{} did not answer JSON: {e}", self.url))?;
        v.get("Allow")
            .and_then(serde_json::Value::as_bool)
            .ok_or_else(|| format!("{} answered without Allow: {v}", self.url))
    }
}

impl ClientVerifier for UrlVerifier {
    fn allowed<'a>(
        &'a self,
        node: &'a NodePublic,
        source: Option<IpAddr>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async move {
            let cached = self.cache.lock().ok().and_then(|c| c.get(node).copied());
            if let Some((ok, at)) = cached {
                if at.elapsed() < VERIFY_CACHE_TTL {
                    return ok;
                }
            }
            use std::sync::atomic::Ordering;
            match self.ask(node, source).await {
                Ok(ok) => {
                    if self.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!(url = %self.url, "the verify URL answers again");
                    }
                    if let Ok(mut c) = self.cache.lock() {
                        if c.len() > 100_000 {
                            c.retain(|_, (_, at)| at.elapsed() < VERIFY_CACHE_TTL);
                        }
                        c.insert(*node, (ok, Instant::now()));
                    }
                    if !ok {
                        tracing::debug!(node = %node.short(), "client refused by the verify URL");
                    }
                    ok
                }
                Err(e) => {
                    if !self.failing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "client verification failed: {e}; {}",
                            if self.fail_open {
                                "admitting clients while it fails (--verify-client-url-fail-open)"
                            } else {
                                "refusing clients while it fails"
                            }
                        );
                    }
                    self.fail_open
                }
            }
        })
    }
}

/// `--mesh-psk-file`: 64 hex digits (derper's format), surrounding space ignored.
fn read_mesh_key(p: &std::path::Path) -> anyhow::Result<ironscale_derp::MeshKey> {
    let text = std::fs::read_to_string(p)
        .with_context(|| format!("reading --mesh-psk-file {}", p.display()))?;
    let t = text.trim();
    let bytes = hex::decode(t)
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| {
            format!(
                "--mesh-psk-file {}: the key must be 64 hex digits (e.g. `openssl rand -hex 32`)",
                p.display()
            )
        })?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&bytes);
    Ok(ironscale_derp::MeshKey(k))
}

/// TLS for mesh peers: the system's CA certificates (`SSL_CERT_FILE` /
/// `SSL_CERT_DIR` honoured), names checked as derper does.
fn mesh_tls() -> anyhow::Result<rustls::ClientConfig> {
    let roots = ironscale_api::client::tcp::system_roots().map_err(|why| {
        anyhow::anyhow!(
            "no CA certificate to verify mesh peers with{}: install the system's CA certificates or set SSL_CERT_FILE",
            if why.is_empty() { String::new() } else { format!(" ({why})") }
        )
    })?;
    Ok(rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Run the relay until SIGTERM / Ctrl-C.
pub async fn run(args: DerperArgs) -> anyhow::Result<()> {
    crate::serve::init_logging(&ironscale_config::Config::default_local(
        std::path::Path::new("/nonexistent"),
    ));
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key_file = args.key_file.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "/var/lib/derper/derper-{}-{}.key",
            args.hostname,
            args.addr.port()
        ))
    });
    let key = crate::serve::load_or_create_key(&key_file, "DERP relay")?;
    let crt = args.certdir.join(format!("{}.crt", args.hostname));
    let pem_key = args.certdir.join(format!("{}.key", args.hostname));
    let (tls, _) = ironscale_http::load_pem_files(&crt, &pem_key).with_context(|| {
        format!(
            "loading the certificate {} and key {} (--certmode manual)",
            crt.display(),
            pem_key.display()
        )
    })?;
    let mesh_key = match &args.mesh_psk_file {
        Some(p) => Some(read_mesh_key(p)?),
        None => None,
    };
    if mesh_key.is_none() && !args.mesh_with.is_empty() {
        bail!("--mesh-with needs --mesh-psk-file (the region's pre-shared key)");
    }
    let mut server = DerpServer::with_config(
        key,
        ironscale_relay::DerpServerConfig {
            mesh_key: mesh_key.clone(),
            token_bucket_bytes_per_second: args.client_rate_limit,
            token_bucket_bytes_burst: args.client_rate_burst.max(args.client_rate_limit),
            ..Default::default()
        },
    );
    if args.verify_clients && args.verify_client_url.is_none() {
        bail!(
            "--verify-clients without --verify-client-url asks a local tailscaled, which ironscale \
             derper does not do: give --verify-client-url=http://CONTROL/verify"
        );
    }
    if let Some(url) = &args.verify_client_url {
        if args.fail_open {
            tracing::warn!(%url, "--verify-client-url-fail-open is on (derper's default): clients are admitted whenever the verify URL cannot be reached");
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .context("building the HTTP client for --verify-client-url")?;
        server = server.with_verifier(Arc::new(UrlVerifier {
            url: url.clone(),
            fail_open: args.fail_open,
            http,
            cache: Default::default(),
            failing: Default::default(),
        }));
    }
    let server = Arc::new(server);
    tracing::info!(
        hostname = %args.hostname,
        addr = %args.addr,
        key = %server.public_key().short(),
        verify = args.verify_client_url.as_deref().unwrap_or("off"),
        "DERP relay starting"
    );

    let mut sup = Supervisor::new();
    let router = ironscale_relay::router(server.clone());
    let listener = TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("binding --a {}", args.addr))?;
    {
        let stop = sup.stopped();
        let router = router.clone();
        let tls = Arc::new(tls);
        sup.spawn(format!("DERP listener {}", args.addr), async move {
            ironscale_http::serve_tls(listener, tls, router, stop).await;
            Ok(())
        });
    }
    if let Some(p) = args.http_port {
        let addr = SocketAddr::new(args.addr.ip(), p);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --http-port {p}"))?;
        let stop = sup.stopped();
        sup.spawn(format!("HTTP listener {addr}"), async move {
            ironscale_http::serve_plain(listener, router, stop).await;
            Ok(())
        });
    }
    if args.stun {
        let addr = SocketAddr::new(args.addr.ip(), args.stun_port);
        let sock = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding --stun-port {}", args.stun_port))?;
        let stop = sup.stopped();
        sup.spawn(format!("STUN {addr}"), async move {
            ironscale_relay::run_stun(sock, stop).await;
            Ok(())
        });
    }
    if let Some(mk) = mesh_key {
        let tls = Arc::new(mesh_tls()?);
        for entry in &args.mesh_with {
            let (name, dial) = match entry.split_once('/') {
                Some((n, d)) => (n, d),
                None => (entry.as_str(), entry.as_str()),
            };
            let host = name.split(':').next().unwrap_or(name);
            if host == args.hostname {
                continue; // ourselves (the same list is given to every relay)
            }
            let dial = if dial.contains(':') {
                dial.to_string()
            } else {
                format!("{dial}:443")
            };
            let addr = tokio::net::lookup_host(&dial)
                .await
                .with_context(|| format!("--mesh-with {entry}: cannot resolve {dial}"))?
                .next()
                .with_context(|| format!("--mesh-with {entry}: {dial} has no address"))?;
            let peer = ironscale_relay::MeshPeer {
                host: host.to_string(),
                addr,
            };
            tracing::info!(peer = %peer.host, %addr, "meshing with");
            let (srv, key, tls) = (server.clone(), mk.clone(), tls.clone());
            let stop = sup.stopped();
            sup.spawn(format!("mesh {entry}"), async move {
                tokio::select! {
                    _ = ironscale_relay::run_mesh_peer(srv, peer, key, tls) => {}
                    _ = stop => {}
                }
                Ok(())
            });
        }
    }
    let srv = server.clone();
    sup.run(
        crate::serve::shutdown_signal(),
        Duration::from_secs(2),
        move || srv.shutdown(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn the_seed_unit_flags_parse_as_go_derper_reads_them() {
        let a = parse(&args(
            "--hostname=derp.example.com --a=:33331 --stun --stun-port=3478 --certmode manual \
             --certdir /etc/derper --verify-clients --verify-client-url=http://127.0.0.1:8080/verify",
        ))
        .expect("parses");
        assert_eq!(a.hostname, "derp.example.com");
        assert_eq!(a.addr.port(), 33331);
        assert!(a.stun && a.verify_clients && a.fail_open);
        assert_eq!(a.stun_port, 3478);
        assert_eq!(a.http_port, Some(80));
        assert_eq!(a.certdir, PathBuf::from("/etc/derper"));
        assert_eq!(
            a.verify_client_url.as_deref(),
            Some("http://127.0.0.1:8080/verify")
        );
        // Single dashes, separate values and explicit booleans, as Go's flag package.
        let b = parse(&args(
            "-hostname derp.x -a :8443 -http-port=-1 -stun=false -certmode=manual -certdir=/c \
             -verify-client-url-fail-open=false",
        ))
        .expect("parses");
        assert_eq!(
            (b.addr.port(), b.http_port, b.stun, b.fail_open),
            (8443, None, false, false)
        );
    }

    #[test]
    fn unknown_and_unimplemented_flags_are_listed_not_ignored() {
        let e = parse(&args(
            "--certmode manual --hostnme x --accept-connection-limit 10 --dev --bogus",
        ))
        .expect_err("refused")
        .to_string();
        assert!(
            e.contains("unknown derper flags: --hostnme, --bogus"),
            "{e}"
        );
        assert!(
            e.contains("not implement yet: --accept-connection-limit, --dev"),
            "{e}"
        );
        let m = parse(&args(
            "--certmode manual --mesh-psk-file /k --mesh-with=a.test,b.test:8443,c/10.0.0.3",
        ))
        .expect("mesh flags");
        assert_eq!(m.mesh_psk_file, Some(PathBuf::from("/k")));
        assert_eq!(m.mesh_with, vec!["a.test", "b.test:8443", "c/10.0.0.3"]);
        let e = parse(&args("--hostname x"))
            .expect_err("letsencrypt")
            .to_string();
        assert!(
            e.contains("--certmode letsencrypt is not supported yet"),
            "{e}"
        );
        let e = parse(&args("--certmode manual --stun=maybe"))
            .expect_err("bool")
            .to_string();
        assert!(
            e.contains("invalid boolean value \"maybe\" for --stun"),
            "{e}"
        );
        let e = parse(&args("--certmode manual --a"))
            .expect_err("value")
            .to_string();
        assert!(e.contains("flag needs an argument: --a"), "{e}");
        let e = parse(&args("--certmode manual stray"))
            .expect_err("positional")
            .to_string();
        assert!(e.contains("unexpected argument \"stray\""), "{e}");
        let e = parse(&args("--certmode manual --verify-client-url ftp://x"))
            .expect_err("url")
            .to_string();
        assert!(e.contains("not an http(s) URL"), "{e}");
    }
}
