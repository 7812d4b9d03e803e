//! The typed configuration. Plain structs: this crate is the YAML seam, and
//! nothing else in ironscale sees YAML.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::{Ipv4Net, Ipv6Net};

/// A secret string (database password, OIDC client secret). `Debug` and
/// `Display` never show it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself. Call only where it is handed to its consumer.
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("<redacted>")
        }
    }
}

/// The whole configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this configuration came from (`None`: built-in local defaults).
    pub source: Option<PathBuf>,
    /// URL clients connect to, without a trailing slash (e.g. `https://hs.example.com`).
    pub server_url: String,
    pub listen_addr: SocketAddr,
    /// `None` disables the metrics/debug listener (empty `metrics_listen_addr`).
    pub metrics_listen_addr: Option<SocketAddr>,
    /// Accepted for Headscale compatibility; ironscale serves no gRPC.
    pub grpc_listen_addr: Option<String>,
    pub noise: NoiseConfig,
    pub prefixes: PrefixesConfig,
    pub database: DatabaseConfig,
    pub derp: DerpConfig,
    pub tls: TlsConfig,
    pub unix_socket: PathBuf,
    /// File mode of the unix socket (default 0o770).
    pub unix_socket_permission: u32,
    pub log: LogConfig,
    pub disable_check_updates: bool,
    pub node: NodeConfig,
    pub dns: DnsConfig,
    pub policy: PolicyConfig,
    pub oidc: OidcConfig,
    pub logtail: LogtailConfig,
    /// Deprecated in Headscale 0.29 (moved to the policy's `randomizeClientPort`);
    /// ironscale still honours it.
    pub randomize_client_port: bool,
    pub taildrop: TaildropConfig,
    pub tuning: TuningConfig,
    /// `cli.*`: where the admin commands send their API calls.
    pub cli: CliConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NoiseConfig {
    /// The TS2021 Noise server key; generated there if absent.
    pub private_key_path: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpAllocation {
    Sequential,
    Random,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PrefixesConfig {
    pub v4: Option<Ipv4Net>,
    pub v6: Option<Ipv6Net>,
    pub allocation: IpAllocation,
}

#[derive(Clone, Debug, PartialEq)]
pub enum DatabaseConfig {
    Sqlite(SqliteConfig),
    Postgres(PostgresConfig),
}

#[derive(Clone, Debug, PartialEq)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub write_ahead_log: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PostgresConfig {
    /// Host name, IP, or a unix socket directory (starts with `/`).
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
    pub pass: Secret,
    /// libpq `sslmode` (`disable`, `require`, `verify-full`, ...); Headscale's
    /// boolean `true`/`false` map to `require`/`disable`.
    pub ssl: String,
    pub max_open_conns: u32,
    pub max_idle_conns: u32,
    pub conn_max_idle_time: Duration,
}

impl PostgresConfig {
    /// A `postgres://` URL for sqlx. The password is in it: never log the result.
    pub fn url(&self) -> String {
        fn enc(s: &str) -> String {
            let mut o = String::new();
            for b in s.bytes() {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    o.push(b as char);
                } else {
                    o.push_str(&format!("%{b:02X}"));
                }
            }
            o
        }
        let auth = if self.pass.is_empty() {
            enc(&self.user)
        } else {
            format!("{}:{}", enc(&self.user), enc(self.pass.expose()))
        };
        if self.host.starts_with('/') {
            format!(
                "postgres://{auth}@localhost:{}/{}?host={}&sslmode={}",
                self.port,
                enc(&self.name),
                enc(&self.host),
                self.ssl
            )
        } else {
            let host = if self.host.contains(':') {
                format!("[{}]", self.host)
            } else {
                self.host.clone()
            };
            format!(
                "postgres://{auth}@{host}:{}/{}?sslmode={}",
                self.port,
                enc(&self.name),
                self.ssl
            )
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DerpConfig {
    pub server: DerpServerConfig,
    /// Remote DERP map URLs (JSON).
    pub urls: Vec<String>,
    /// Local DERP map files (YAML, see [`crate::derp_map_from_file`]).
    pub paths: Vec<PathBuf>,
    pub auto_update_enabled: bool,
    pub update_frequency: Duration,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DerpServerConfig {
    pub enabled: bool,
    pub region_id: i32,
    pub region_code: String,
    pub region_name: String,
    /// `derp.server.stun.enabled` (default true).
    pub stun_enabled: bool,
    pub stun_listen_addr: Option<SocketAddr>,
    pub private_key_path: PathBuf,
    pub verify_clients: bool,
    /// Public addresses advertised in the DERP map.
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub automatically_add_embedded_derp_region: bool,
    /// ironscale extension: where the embedded DERP serves TLS when `server_url`
    /// is plain `http://` (Tailscale clients only speak DERP over TLS). Default:
    /// the host of `listen_addr`, port 3341.
    pub tls_listen_addr: SocketAddr,
    /// ironscale extension: the self-signed certificate generated for that listener.
    pub tls_cert_path: PathBuf,
    pub tls_key_path: PathBuf,
}

/// Default port of the embedded DERP TLS listener (`derp.server.tls_listen_addr`).
pub const DEFAULT_DERP_TLS_PORT: u16 = 3341;

#[derive(Clone, Debug, PartialEq)]
pub struct TlsConfig {
    pub cert_path: Option<PathBuf>,
    pub key_path: Option<PathBuf>,
    pub letsencrypt: LetsEncryptConfig,
    pub acme_url: String,
    pub acme_email: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LetsEncryptConfig {
    /// Empty: Let's Encrypt is off.
    pub hostname: String,
    pub cache_dir: PathBuf,
    /// `HTTP-01` or `TLS-ALPN-01`.
    pub challenge_type: String,
    pub listen: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogConfig {
    /// One of trace, debug, info, warn, error (Headscale's panic/fatal map to error).
    pub level: String,
    pub format: LogFormat,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    /// Default key expiry for new untagged nodes; `None` = never (`0`).
    pub expiry: Option<Duration>,
    /// `node.ephemeral.inactivity_timeout` (old: `ephemeral_node_inactivity_timeout`).
    pub ephemeral_inactivity_timeout: Duration,
    /// `node.device_approval` (ours; default off): a new node registers
    /// unauthorized until an administrator approves it.
    pub device_approval: bool,
    /// `node.device_approval_exempt_tagged_keys` (ours; default on): a node
    /// registered with a tagged pre-auth key is approved at once.
    pub device_approval_exempt_tagged_keys: bool,
    /// `node.routes.ha.probe_interval` (Headscale 0.29, default 10s): how
    /// often the server asks each online subnet router to prove it is alive;
    /// `0` turns probing off.
    pub routes_ha_probe_interval: Duration,
    /// `node.routes.ha.probe_timeout` (default 5s): a router that has not
    /// answered within it serves no route until it answers again.
    pub routes_ha_probe_timeout: Duration,
}

/// A DNS resolver: a plain IP or a DNS-over-HTTPS URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nameserver {
    Ip(IpAddr),
    Url(String),
}

impl fmt::Display for Nameserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nameserver::Ip(a) => write!(f, "{a}"),
            Nameserver::Url(u) => f.write_str(u),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Nameservers {
    pub global: Vec<Nameserver>,
    /// Split DNS: domain → resolvers.
    pub split: BTreeMap<String, Vec<Nameserver>>,
}

/// A static MagicDNS record (only A and AAAA are used by clients).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraRecord {
    pub name: String,
    /// `A` or `AAAA`.
    pub record_type: String,
    pub value: IpAddr,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DnsConfig {
    pub magic_dns: bool,
    /// `dns.magic_dns_aaaa` (ironscale, default true): every node gets the
    /// `magicdns-aaaa` capability, so clients (capability version 116+)
    /// answer AAAA queries for peers that also have an IPv4 address.
    pub magic_dns_aaaa: bool,
    pub base_domain: String,
    pub override_local_dns: bool,
    pub nameservers: Nameservers,
    pub search_domains: Vec<String>,
    pub extra_records: Vec<ExtraRecord>,
    pub extra_records_path: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyMode {
    File,
    Database,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// HuJSON policy file (file mode). `None`: no policy, which allows all.
    pub path: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PkceConfig {
    pub enabled: bool,
    /// `plain` or `S256`.
    pub method: String,
}

/// OIDC settings (accepted and checked now; used by a later issue).
#[derive(Clone, Debug, PartialEq)]
pub struct OidcConfig {
    /// Empty: OIDC is off.
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub client_secret_path: Option<PathBuf>,
    pub scope: Vec<String>,
    pub extra_params: BTreeMap<String, String>,
    pub allowed_domains: Vec<String>,
    pub allowed_users: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub email_verified_required: bool,
    pub use_expiry_from_token: bool,
    pub only_start_if_oidc_is_available: bool,
    pub pkce: PkceConfig,
}

impl OidcConfig {
    pub fn enabled(&self) -> bool {
        !self.issuer.is_empty()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct LogtailConfig {
    pub enabled: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TuningConfig {
    /// `tuning.batch_change_delay`: the shortest gap between two map updates
    /// to one client. The first change after a quiet spell goes out at once;
    /// changes arriving within the gap are merged into the next update, so a
    /// reconnect storm costs each client a few updates a second rather than
    /// one per peer. `0` sends every change as it comes.
    pub batch_change_delay: Duration,
    /// `tuning.register_cache_max_entries`: at most this many interactive
    /// registrations wait for approval at once (more are refused).
    pub register_cache_max_entries: usize,
    /// `tuning.register_cache_expiration`: how long an interactive
    /// registration waits for approval before its login URL stops working.
    pub register_cache_expiration: Duration,
}

impl Default for TuningConfig {
    fn default() -> Self {
        TuningConfig {
            batch_change_delay: Duration::from_millis(100),
            register_cache_max_entries: 1024,
            register_cache_expiration: Duration::from_secs(15 * 60),
        }
    }
}

/// `cli.*` (Headscale's keys): the admin commands talk to `address` with
/// `api_key` when an address is set, to the local `unix_socket` otherwise.
#[derive(Clone, Debug, PartialEq)]
pub struct CliConfig {
    /// `cli.address`: `host:port` (https assumed) or an `http(s)://` URL.
    pub address: Option<String>,
    /// `cli.api_key`: made with `ironscale apikeys create`.
    pub api_key: Secret,
    /// `cli.timeout` (default 5s, as Headscale).
    pub timeout: Duration,
    /// `cli.insecure`: do not verify the server's certificate.
    pub insecure: bool,
}

impl Default for CliConfig {
    fn default() -> Self {
        CliConfig {
            address: None,
            api_key: Secret::default(),
            timeout: Duration::from_secs(5),
            insecure: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TaildropConfig {
    pub enabled: bool,
}

/// Where the no-config-file default keeps its data: `$IRONSCALE_DATA_DIR` or `./ironscale-data`.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("IRONSCALE_DATA_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("./ironscale-data"),
    }
}

impl Config {
    /// The configuration used when no config file is given: everything on
    /// loopback, all state under `data_dir`, embedded DERP + STUN on,
    /// MagicDNS under `tailnet.internal`, no policy (allow all).
    pub fn default_local(data_dir: &Path) -> Config {
        let d = |f: &str| data_dir.join(f);
        Config {
            source: None,
            server_url: "http://127.0.0.1:8080".into(),
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen_addr: Some(SocketAddr::from(([127, 0, 0, 1], 9090))),
            grpc_listen_addr: None,
            noise: NoiseConfig {
                private_key_path: d("noise_private.key"),
            },
            prefixes: PrefixesConfig {
                v4: Some(cgnat_range()),
                v6: Some(tailscale_ula_range()),
                allocation: IpAllocation::Sequential,
            },
            database: DatabaseConfig::Sqlite(SqliteConfig {
                path: d("db.sqlite"),
                write_ahead_log: true,
            }),
            derp: DerpConfig {
                server: DerpServerConfig {
                    enabled: true,
                    region_id: 999,
                    region_code: "ironscale".into(),
                    region_name: "ironscale embedded DERP".into(),
                    stun_enabled: true,
                    stun_listen_addr: Some(SocketAddr::from(([127, 0, 0, 1], 3478))),
                    private_key_path: d("derp_server_private.key"),
                    verify_clients: true,
                    ipv4: None,
                    ipv6: None,
                    automatically_add_embedded_derp_region: true,
                    tls_listen_addr: SocketAddr::from(([127, 0, 0, 1], DEFAULT_DERP_TLS_PORT)),
                    tls_cert_path: d("derp_tls_cert.pem"),
                    tls_key_path: d("derp_tls_key.pem"),
                },
                urls: Vec::new(),
                paths: Vec::new(),
                auto_update_enabled: false,
                update_frequency: Duration::from_secs(3 * 3600),
            },
            tls: TlsConfig {
                cert_path: None,
                key_path: None,
                letsencrypt: LetsEncryptConfig {
                    hostname: String::new(),
                    cache_dir: d("acme-cache"),
                    challenge_type: "HTTP-01".into(),
                    listen: ":http".into(),
                },
                acme_url: "https://acme-v02.api.letsencrypt.org/directory".into(),
                acme_email: String::new(),
            },
            unix_socket: d("ironscale.sock"),
            unix_socket_permission: 0o770,
            log: LogConfig {
                level: "info".into(),
                format: LogFormat::Text,
            },
            disable_check_updates: true,
            node: NodeConfig {
                expiry: None,
                ephemeral_inactivity_timeout: Duration::from_secs(120),
                device_approval: false,
                device_approval_exempt_tagged_keys: true,
                routes_ha_probe_interval: Duration::from_secs(10),
                routes_ha_probe_timeout: Duration::from_secs(5),
            },
            dns: DnsConfig {
                magic_dns: true,
                magic_dns_aaaa: true,
                base_domain: "tailnet.internal".into(),
                override_local_dns: false,
                nameservers: Nameservers::default(),
                search_domains: Vec::new(),
                extra_records: Vec::new(),
                extra_records_path: None,
            },
            policy: PolicyConfig {
                mode: PolicyMode::File,
                path: None,
            },
            oidc: OidcConfig::default_off(),
            logtail: LogtailConfig { enabled: false },
            randomize_client_port: false,
            taildrop: TaildropConfig { enabled: true },
            tuning: TuningConfig::default(),
            cli: CliConfig::default(),
        }
    }

    /// Headscale's built-in defaults for keys a config file leaves out.
    /// Paths default to `/var/lib/headscale` like Headscale's example config.
    pub(crate) fn headscale_defaults() -> Config {
        let base = Path::new("/var/lib/headscale");
        let mut c = Config::default_local(base);
        c.server_url = String::new();
        c.metrics_listen_addr = None;
        c.database = DatabaseConfig::Sqlite(SqliteConfig {
            path: PathBuf::new(),
            write_ahead_log: true,
        });
        c.derp.server.enabled = false;
        c.derp.server.region_id = 0;
        c.derp.server.region_code = "headscale".into();
        c.derp.server.region_name = "Headscale Embedded DERP".into();
        c.derp.server.stun_listen_addr = None;
        c.derp.server.tls_listen_addr = SocketAddr::from(([0, 0, 0, 0], DEFAULT_DERP_TLS_PORT));
        c.derp.auto_update_enabled = false;
        c.tls.letsencrypt.cache_dir = PathBuf::from("/var/www/.cache");
        c.unix_socket = PathBuf::from("/var/run/headscale/headscale.sock");
        c.disable_check_updates = false;
        c.dns.base_domain = String::new();
        c.dns.override_local_dns = true;
        c
    }

    /// Host name of `server_url` (what the embedded DERP region advertises).
    pub fn server_url_host(&self) -> Option<String> {
        url::Url::parse(&self.server_url)
            .ok()
            .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_string()))
    }

    pub fn server_url_is_https(&self) -> bool {
        self.server_url.starts_with("https://")
    }

    /// The host name clients use to reach the embedded DERP server.
    pub fn embedded_derp_host(&self) -> String {
        self.server_url_host().unwrap_or_else(|| "127.0.0.1".into())
    }

    /// Whether the embedded DERP needs its own TLS listener
    /// (`derp.server.tls_listen_addr`): DERP is on and `server_url` is plain http.
    pub fn embedded_derp_uses_own_tls(&self) -> bool {
        self.derp.server.enabled && !self.server_url_is_https()
    }

    /// The TCP port advertised as `DERPPort` for the embedded region.
    pub fn embedded_derp_port(&self) -> u16 {
        if self.embedded_derp_uses_own_tls() {
            self.derp.server.tls_listen_addr.port()
        } else {
            url::Url::parse(&self.server_url)
                .ok()
                .and_then(|u| u.port_or_known_default())
                .unwrap_or(443)
        }
    }

    /// The UDP port advertised as `STUNPort` for the embedded region (`None`: STUN off).
    pub fn embedded_stun_port(&self) -> Option<u16> {
        if !self.derp.server.stun_enabled {
            return None;
        }
        self.derp.server.stun_listen_addr.map(|a| a.port())
    }

    /// MagicDNS FQDN for a node's given name, e.g. `laptop.vpn.example.com`.
    pub fn fqdn(&self, given_name: &str) -> String {
        format!("{given_name}.{}", self.dns.base_domain)
    }
}

impl OidcConfig {
    pub(crate) fn default_off() -> OidcConfig {
        OidcConfig {
            issuer: String::new(),
            client_id: String::new(),
            client_secret: Secret::default(),
            client_secret_path: None,
            scope: vec!["openid".into(), "profile".into(), "email".into()],
            extra_params: BTreeMap::new(),
            allowed_domains: Vec::new(),
            allowed_users: Vec::new(),
            allowed_groups: Vec::new(),
            email_verified_required: true,
            use_expiry_from_token: false,
            only_start_if_oidc_is_available: true,
            pkce: PkceConfig {
                enabled: false,
                method: "S256".into(),
            },
        }
    }
}

/// 100.64.0.0/10, the range Tailscale clients expect node IPv4s in.
pub fn cgnat_range() -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default()
}

/// fd7a:115c:a1e0::/48, Tailscale's ULA range for node IPv6s.
pub fn tailscale_ula_range() -> Ipv6Net {
    Ipv6Net::new(Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0), 48).unwrap_or_default()
}
