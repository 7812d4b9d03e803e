//! `ironscale serve`: wire the layers together and run the listeners.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use ironscale_config::{Config, DatabaseConfig, LogFormat};
use ironscale_control::Control;
use ironscale_keys::PrivateKey;
use ironscale_relay::DerpServer;
use ironscale_state::{Settings, State};
use ironscale_store::Store;
use ironscale_wire as wire;
use tokio::net::{TcpListener, UdpSocket};

use crate::supervisor::Supervisor;
use ironscale_derpmap::{self as derpmap, EmbeddedRegion};

pub(crate) fn init_logging(cfg: &Config) {
    let level = match cfg.log.level.as_str() {
        "trace" | "debug" | "info" | "warn" | "error" => cfg.log.level.clone(),
        _ => "info".into(),
    };
    // Our crates at the configured level, dependencies one notch quieter.
    let ours = [
        "ironscale",
        "ironscale_control",
        "ironscale_state",
        "ironscale_relay",
        "ironscale_api",
        "ironscale_store",
        "ironscale_runtime",
        "ironscale_derpmap",
        "ironscale_http",
    ];
    let mut default = String::from("warn");
    for c in ours {
        default.push_str(&format!(",{c}={level}"));
    }
    // IRONSCALE_LOG, else the usual RUST_LOG, else the configured level.
    let filter = tracing_subscriber::EnvFilter::try_from_env("IRONSCALE_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal (not in journald, files or pipes), and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = match cfg.log.format {
        LogFormat::Json => b.json().try_init(),
        LogFormat::Text => b.try_init(),
    };
}

/// Read a `privkey:` key file, or create it (mode 0600) with a fresh key.
pub fn load_or_create_key(path: &Path, what: &str) -> anyhow::Result<PrivateKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => PrivateKey::from_file_text(&text).with_context(|| {
            format!(
                "{what} key file {} is not a valid privkey: file",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            let k = PrivateKey::generate();
            write_private(path, k.to_file_text().as_bytes())
                .with_context(|| format!("writing {what} key {}", path.display()))?;
            tracing::info!(path = %path.display(), "generated a new {what} key");
            Ok(k)
        }
        Err(e) => Err(e).with_context(|| format!("reading {what} key {}", path.display())),
    }
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    f.write_all(b"\n")
}

/// Host and port of `server_url`.
fn server_host_port(url: &str) -> anyhow::Result<(String, u16, bool)> {
    let u = reqwest::Url::parse(url).with_context(|| format!("server_url {url:?} is not a URL"))?;
    let https = u.scheme() == "https";
    let host = u
        .host_str()
        .context("server_url has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = u
        .port_or_known_default()
        .unwrap_or(if https { 443 } else { 80 });
    Ok((host, port, https))
}

/// Tests only: `IRONSCALE_TESTING_EPHEMERAL_INACTIVITY_TIMEOUT_MS` replaces
/// `node.ephemeral.inactivity_timeout` (whose Headscale rule, more than 65 s,
/// stays for configuration), so an interop test proves ephemeral deletion end
/// to end in seconds. Not a config key and not for production: a client's
/// reconnect gap longer than this deletes its ephemeral node.
const TESTING_EPHEMERAL_TIMEOUT_VAR: &str = "IRONSCALE_TESTING_EPHEMERAL_INACTIVITY_TIMEOUT_MS";

fn ephemeral_inactivity_timeout(cfg: &Config) -> anyhow::Result<std::time::Duration> {
    let Some(v) = std::env::var_os(TESTING_EPHEMERAL_TIMEOUT_VAR) else {
        return Ok(cfg.node.ephemeral_inactivity_timeout);
    };
    let ms: u64 = v.to_str().and_then(|v| v.parse().ok()).with_context(|| {
        format!("{TESTING_EPHEMERAL_TIMEOUT_VAR}: not a number of milliseconds")
    })?;
    tracing::warn!(
        "{TESTING_EPHEMERAL_TIMEOUT_VAR}={ms}: ephemeral nodes are deleted {ms} ms after they disconnect (testing only)"
    );
    Ok(std::time::Duration::from_millis(ms))
}

fn settings_from(cfg: &Config) -> anyhow::Result<Settings> {
    Ok(Settings {
        prefix_v4: cfg.prefixes.v4,
        prefix_v6: cfg.prefixes.v6,
        allocation: match cfg.prefixes.allocation {
            ironscale_config::IpAllocation::Sequential => ironscale_ipam::Strategy::Sequential,
            ironscale_config::IpAllocation::Random => ironscale_ipam::Strategy::Random,
        },
        node_expiry: cfg
            .node
            .expiry
            .map(|d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)),
        ephemeral_inactivity_timeout: ephemeral_inactivity_timeout(cfg)?,
        dns: ironscale_runtime::dns_settings(cfg),
        randomize_client_port: cfg.randomize_client_port,
        policy_tailnet: ironscale_policy::Tailnet {
            control_url: cfg.server_url.clone(),
            ..Default::default()
        },
        policy_in_database: cfg.policy.mode == ironscale_config::PolicyMode::Database,
        // `tailscale up` without a key waits at `<server_url>/register/<id>`
        // until `nodes register` / `auth register` approves it.
        interactive_login: true,
        registration_ttl: cfg.tuning.register_cache_expiration,
        max_pending_registrations: cfg.tuning.register_cache_max_entries,
        device_approval: cfg.node.device_approval,
        device_approval_exempt_tagged_keys: cfg.node.device_approval_exempt_tagged_keys,
    })
}

/// The state loaded from the configured database, for CLI commands that work
/// without a running server (no listeners, no DERP map, no background tasks of
/// its own beyond those `State::load` starts).
pub async fn offline_state(cfg: &Config) -> anyhow::Result<State> {
    let store = open_store(cfg).await?;
    State::load(store, settings_from(cfg)?, Default::default())
        .await
        .context("loading state")
}

async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Store::open(&cfg.database)
        .await
        .with_context(|| match &cfg.database {
            DatabaseConfig::Sqlite(s) => format!("opening SQLite database {}", s.path.display()),
            DatabaseConfig::Postgres(p) => format!(
                "connecting to PostgreSQL at {}:{}/{}",
                p.host, p.port, p.name
            ),
        })
}

struct Derp {
    key: PrivateKey,
    /// TLS config for a dedicated DERP listener (when the control listener is plain HTTP).
    own_listener: Option<(SocketAddr, Arc<rustls::ServerConfig>)>,
    region: EmbeddedRegion,
}

fn setup_derp(cfg: &Config, control_tls: bool) -> anyhow::Result<Derp> {
    let s = &cfg.derp.server;
    let key = load_or_create_key(&s.private_key_path, "DERP server")?;
    let (host, port, _) = server_host_port(&cfg.server_url)?;
    let host_ip: Option<IpAddr> = host.parse().ok();
    let mut node = wire::DerpNode {
        name: format!("{}a", s.region_id),
        region_id: s.region_id,
        host_name: host.clone(),
        ipv4: s
            .ipv4
            .map(|a| a.to_string())
            .or(match host_ip {
                Some(IpAddr::V4(a)) => Some(a.to_string()),
                _ => None,
            })
            .unwrap_or_default(),
        ipv6: s
            .ipv6
            .map(|a| a.to_string())
            .or(match host_ip {
                Some(IpAddr::V6(a)) => Some(a.to_string()),
                _ => None,
            })
            .unwrap_or_else(|| {
                if host_ip.is_some() {
                    "none".into()
                } else {
                    String::new()
                }
            }),
        stun_port: match (s.stun_enabled, s.stun_listen_addr) {
            (true, Some(a)) => i32::from(a.port()),
            _ => -1,
        },
        ..Default::default()
    };
    let own_listener = if control_tls {
        node.derp_port = i32::from(port);
        None
    } else {
        let mut names = vec![host.clone()];
        if let Some(a) = s.ipv4 {
            names.push(a.to_string());
        }
        if let Some(a) = s.ipv6 {
            names.push(a.to_string());
        }
        let (tls, sha) =
            ironscale_http::load_or_create_self_signed(&s.tls_cert_path, &s.tls_key_path, &names)
                .context("preparing the embedded DERP's TLS certificate")?;
        node.derp_port = i32::from(s.tls_listen_addr.port());
        node.cert_name = format!("sha256-raw:{sha}");
        Some((s.tls_listen_addr, Arc::new(tls)))
    };
    let region = wire::DerpRegion {
        region_id: s.region_id,
        region_code: s.region_code.clone(),
        region_name: s.region_name.clone(),
        nodes: vec![node],
        ..Default::default()
    };
    Ok(Derp {
        key,
        own_listener,
        region: EmbeddedRegion { region },
    })
}

/// The OIDC relying party when `oidc.issuer` is set. With
/// `oidc.only_start_if_oidc_is_available` (the default, as Headscale) the
/// issuer must answer discovery now or `serve` does not start; without it a
/// provider that is down is discovered at the first login.
async fn oidc_setup(cfg: &Config) -> anyhow::Result<Option<Arc<ironscale_oidc::Oidc>>> {
    let Some(settings) =
        ironscale_oidc::OidcSettings::from_config(cfg).map_err(anyhow::Error::msg)?
    else {
        return Ok(None);
    };
    let issuer = settings.issuer.clone();
    let redirect = settings.redirect_url.clone();
    let oidc = if cfg.oidc.only_start_if_oidc_is_available {
        ironscale_oidc::Oidc::new(settings).await.map_err(|e| {
            anyhow::anyhow!(
                "OIDC issuer {issuer} is not available: {e} (serve does not start without it while \
                 oidc.only_start_if_oidc_is_available is true; `ironscale oidc check` says more)"
            )
        })?
    } else {
        let o = ironscale_oidc::Oidc::new_lazy(settings).map_err(anyhow::Error::msg)?;
        tracing::info!(%issuer, "OIDC issuer will be discovered at the first login");
        o
    };
    tracing::info!(%issuer, redirect_url = %redirect, "OIDC login enabled: register the redirect URL at the provider");
    Ok(Some(oidc))
}

pub(crate) async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Run the server with `cfg`, read from `config_path` (re-read on SIGHUP for
/// the `dns` section; `None`: built-in defaults and the environment).
pub async fn run(cfg: Config, config_path: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    init_logging(&cfg);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let noise_key = load_or_create_key(&cfg.noise.private_key_path, "Noise")?;
    let (_, _, https) = server_host_port(&cfg.server_url)?;
    let control_tls = match (&cfg.tls.cert_path, &cfg.tls.key_path) {
        (Some(c), Some(k)) => {
            let (tls, _) = ironscale_http::load_pem_files(c, k).with_context(|| {
                format!(
                    "loading tls_cert_path {} / tls_key_path {}",
                    c.display(),
                    k.display()
                )
            })?;
            Some(Arc::new(tls))
        }
        _ => None,
    };
    if https && control_tls.is_none() {
        tracing::warn!(
            "server_url is https:// but no tls_cert_path/tls_key_path is set: ironscale expects a TLS-terminating \
             reverse proxy in front of it"
        );
    }
    let derp = if cfg.derp.server.enabled {
        Some(setup_derp(&cfg, control_tls.is_some())?)
    } else {
        None
    };
    let client = derpmap::http_client();
    let mut last_remote = Vec::new();
    let derp_map = derpmap::full_map(
        &cfg,
        derp.as_ref().map(|d| &d.region),
        &client,
        &mut last_remote,
    )
    .await?;
    if derp_map.regions.is_empty() {
        tracing::warn!("the DERP map is empty: clients need a DERP relay to connect (enable derp.server or set derp.urls/paths)");
    }

    let store = open_store(&cfg).await?;
    let state = State::load(store, settings_from(&cfg)?, derp_map)
        .await
        .context("loading state")?;
    ironscale_runtime::load_initial(&cfg, &state).await?;
    let hangups = ironscale_runtime::Hangups::install();
    ironscale_runtime::spawn_file_watch(&cfg, state.clone(), hangups.clone());
    ironscale_runtime::spawn_dns_watch(&cfg, config_path, state.clone(), hangups);
    derpmap::spawn_refresh(
        cfg.clone(),
        derp.as_ref().map(|d| d.region.clone()),
        last_remote,
        {
            let state = state.clone();
            move |m| {
                let state = state.clone();
                async move { state.set_derp_map(m).await }
            }
        },
    );

    let derp_server = derp.as_ref().map(|d| {
        let server = DerpServer::new(d.key.clone());
        if cfg.derp.server.verify_clients {
            // Only nodes of this tailnet may use the relay.
            let st = state.clone();
            Arc::new(
                server.with_verifier(Arc::new(move |k: &ironscale_keys::NodePublic| {
                    st.relay_allowed(k)
                })),
            )
        } else {
            Arc::new(server)
        }
    });

    // OIDC: its login pages replace the administrator-approval page.
    let oidc = oidc_setup(&cfg).await?;

    let mut sup = Supervisor::new();

    // Control listener.
    let ctl = Control::with_options(
        state.clone(),
        noise_key.clone(),
        ironscale_control::ControlOptions {
            min_update_interval: cfg.tuning.batch_change_delay,
            server_url: cfg.server_url.clone(),
            probe_interval: cfg.node.routes_ha_probe_interval,
            probe_timeout: cfg.node.routes_ha_probe_timeout,
            register_page: oidc.is_none(),
            ssh_check_login: oidc.is_some(),
        },
    );
    // The REST API beside the control protocol, behind API keys
    // (`ironscale apikeys create`); the unix socket below needs none.
    let mut router =
        ironscale_control::router(ctl.clone()).merge(ironscale_api::network_router(state.clone()));
    if let Some(o) = &oidc {
        router = router.merge(ironscale_oidc::router(o.clone(), state.clone()));
    }
    if let (Some(_), Some(ds)) = (&control_tls, &derp_server) {
        router = router.merge(ironscale_relay::router(ds.clone()));
    }
    let listener = TcpListener::bind(cfg.listen_addr)
        .await
        .with_context(|| format!("binding listen_addr {}", cfg.listen_addr))?;
    let name = format!("control listener {}", cfg.listen_addr);
    match control_tls.clone() {
        Some(tls) => {
            let stop = sup.stopped();
            sup.spawn(name, async move {
                ironscale_http::serve_tls(listener, tls, router, stop).await;
                Ok(())
            });
        }
        None => {
            let stop = sup.stopped();
            sup.spawn(name, async move {
                ironscale_http::serve_plain(listener, router, stop).await;
                Ok(())
            });
        }
    }

    // Embedded DERP on its own TLS port, and STUN.
    let stun_stats = Arc::new(ironscale_relay::StunStats::default());
    let mut stun_running = false;
    if let (Some(d), Some(ds)) = (&derp, &derp_server) {
        if let Some((addr, tls)) = &d.own_listener {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding derp.server.tls_listen_addr {addr}"))?;
            let (tls, router, stop) = (
                tls.clone(),
                ironscale_relay::router(ds.clone())
                    .merge(ironscale_control::service_router(state.clone())),
                sup.stopped(),
            );
            sup.spawn(format!("DERP listener {addr}"), async move {
                ironscale_http::serve_tls(l, tls, router, stop).await;
                Ok(())
            });
        }
        if let (true, Some(addr)) = (
            cfg.derp.server.stun_enabled,
            cfg.derp.server.stun_listen_addr,
        ) {
            let sock = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("binding derp.server.stun_listen_addr {addr}"))?;
            let (stats, stop) = (stun_stats.clone(), sup.stopped());
            sup.spawn(format!("STUN server {addr}"), async move {
                ironscale_relay::run_stun_with_stats(sock, stats, stop).await;
                Ok(())
            });
            stun_running = true;
        }
    }

    // Admin API on the local unix socket (what the CLI uses).
    let api = ironscale_api::router(state.clone())
        .merge(ironscale_control::service_router(state.clone()));
    let sock_path = cfg.unix_socket.clone();
    if let Some(dir) = sock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    {
        let perm = cfg.unix_socket_permission;
        let what = format!("admin socket {}", sock_path.display());
        let l = ironscale_http::bind_unix(&sock_path, perm).with_context(|| what.clone())?;
        tracing::info!(socket = %sock_path.display(), mode = format!("{perm:o}"), "API listening on the unix socket");
        let stop = sup.stopped();
        let p = sock_path.clone();
        sup.spawn(what, async move {
            ironscale_http::serve_unix_listener(l, &p, api, Default::default(), stop).await;
            Ok(())
        });
    }

    if let Some(addr) = cfg.metrics_listen_addr {
        match TcpListener::bind(addr).await {
            Ok(l) => {
                let router = crate::metrics::router(crate::metrics::Sources {
                    state: state.clone(),
                    derp: derp_server.clone(),
                    stun: stun_running.then(|| stun_stats.clone()),
                    oidc: oidc.clone(),
                });
                let stop = sup.stopped();
                sup.spawn(format!("metrics listener {addr}"), async move {
                    ironscale_http::serve_plain(l, router, stop).await;
                    Ok(())
                });
            }
            Err(e) => tracing::warn!(%addr, "metrics listener disabled: {e}"),
        }
    }

    print_banner(&cfg, derp.as_ref());
    let ds = derp_server.clone();
    let outcome = sup
        .run(
            shutdown_signal(),
            std::time::Duration::from_secs(3),
            move || {
                // Upgraded DERP connections belong to the DERP server, not to a listener.
                if let Some(ds) = &ds {
                    ds.shutdown();
                }
            },
        )
        .await;
    // The admin socket removes its file when it stops; this covers an abort.
    // (Never when it failed: the path may be another server's live socket.)
    if outcome.is_ok() {
        let _ = std::fs::remove_file(&sock_path);
    }
    outcome
}

fn print_banner(cfg: &Config, derp: Option<&Derp>) {
    let c = cfg
        .source
        .as_ref()
        .map(|p| format!(" -c {}", p.display()))
        .unwrap_or_default();
    let mut s = String::new();
    s.push_str(&format!(
        "ironscale {} is running\n",
        env!("CARGO_PKG_VERSION")
    ));
    s.push_str(&format!(
        "  control:  {} (listening on {})\n",
        cfg.server_url, cfg.listen_addr
    ));
    if let Some(d) = derp {
        let n = &d.region.region.nodes[0];
        s.push_str(&format!(
            "  DERP:     https://{}:{}/derp (region {} \"{}\"{})\n",
            n.host_name,
            n.derp_port,
            d.region.region.region_id,
            d.region.region.region_code,
            if n.cert_name.is_empty() {
                ""
            } else {
                ", self-signed certificate pinned in the DERP map"
            }
        ));
        if n.stun_port > 0 {
            s.push_str(&format!(
                "  STUN:     {}:{}/udp\n",
                n.host_name, n.stun_port
            ));
        }
    }
    s.push_str(&format!(
        "  admin:    unix socket {}\n",
        cfg.unix_socket.display()
    ));
    s.push_str("Connect a client:\n");
    s.push_str(&format!("  ironscale{c} users create alice\n"));
    s.push_str(&format!("  ironscale{c} preauthkeys create --user alice\n"));
    s.push_str(&format!(
        "  tailscale up --login-server={} --authkey=<the key>\n",
        cfg.server_url
    ));
    eprint!("{s}");
}

#[cfg(test)]
#[path = "serve_tests.rs"]
mod tests;
