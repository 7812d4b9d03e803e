//! From a YAML tree plus environment variables to a checked [`Config`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::derpmap;
use crate::diag::{Diagnostic, Severity};
use crate::duration::{format_duration, parse_duration};
use crate::keys::{self, Ty};
use crate::model::*;
use crate::yaml::{Kind, Node};
use std::collections::BTreeSet;

#[derive(Clone, Debug)]
enum Origin {
    File,
    /// The environment variable that set it.
    Env(String),
}

#[derive(Clone, Debug)]
struct Entry {
    node: Node,
    /// Line of the key in the config file.
    line: Option<usize>,
    origin: Origin,
    /// The deprecated key this value was written under, if any.
    renamed_from: Option<String>,
}

pub(crate) struct Loader {
    /// The config file, for diagnostics.
    file: Option<PathBuf>,
    /// Relative paths in the file are relative to this directory (as in Headscale).
    base_dir: PathBuf,
    flat: BTreeMap<&'static str, Entry>,
    /// Keys the build step read (every set key must be read: see the tests).
    touched: BTreeSet<String>,
    pub(crate) diags: Vec<Diagnostic>,
}

fn join(prefix: &str, k: &str) -> String {
    if prefix.is_empty() {
        k.to_string()
    } else {
        format!("{prefix}.{k}")
    }
}

impl Loader {
    pub(crate) fn new(file: Option<&Path>) -> Loader {
        let base_dir = file
            .and_then(|f| f.parent())
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        Loader {
            file: file.map(Path::to_path_buf),
            base_dir,
            flat: BTreeMap::new(),
            touched: BTreeSet::new(),
            diags: Vec::new(),
        }
    }

    // ---- diagnostics ----------------------------------------------------

    pub(crate) fn push(
        &mut self,
        severity: Severity,
        key: &str,
        line: Option<usize>,
        message: String,
    ) {
        self.diags.push(Diagnostic {
            severity,
            file: self.file.clone(),
            line,
            key: key.to_string(),
            message,
        });
    }

    /// A diagnostic about a key, located where the key was set.
    fn at(&mut self, severity: Severity, key: &str, message: String) {
        let (line, msg) = match self.flat.get(key) {
            Some(Entry {
                origin: Origin::Env(var),
                ..
            }) => (None, format!("{message} (set by ${var})")),
            Some(e) => (e.line, message),
            None => (None, message),
        };
        self.push(severity, key, line, msg);
    }

    /// An error about `key` (typically missing), located where `near` was set.
    fn err_near(&mut self, key: &str, near: &str, message: String) {
        let (line, msg) = match self.flat.get(near) {
            Some(Entry {
                origin: Origin::Env(var),
                ..
            }) => (None, format!("{message} (${var} is set)")),
            Some(e) => (e.line, message),
            None => (None, message),
        };
        self.push(Severity::Error, key, line, msg);
    }

    fn err(&mut self, key: &str, message: String) {
        self.at(Severity::Error, key, message);
    }

    fn warn(&mut self, key: &str, message: String) {
        self.at(Severity::Warning, key, message);
    }

    /// A diagnostic about one item of a list value (its own line when from the file).
    fn item_diag(&mut self, severity: Severity, key: &str, line: Option<usize>, message: String) {
        match self.flat.get(key) {
            Some(Entry {
                origin: Origin::Env(_),
                ..
            })
            | None => self.at(severity, key, message),
            Some(_) => self.push(severity, key, line, message),
        }
    }

    fn is_set(&self, key: &str) -> bool {
        self.flat.contains_key(key)
    }

    // ---- collecting values ----------------------------------------------

    fn put(
        &mut self,
        key: &'static str,
        node: Node,
        line: Option<usize>,
        origin: Origin,
        renamed_from: Option<String>,
    ) {
        match (self.flat.get(key), &renamed_from) {
            // A value under the new key always beats one under a deprecated key.
            (Some(old), Some(from))
                if old.renamed_from.is_none() && matches!(old.origin, Origin::File) =>
            {
                self.push(
                    Severity::Warning,
                    from,
                    line,
                    format!("ignored because `{key}` is also set"),
                );
                return;
            }
            (Some(old), None) if old.renamed_from.is_some() && matches!(origin, Origin::File) => {
                let (from, oline) = (old.renamed_from.clone().unwrap_or_default(), old.line);
                self.push(
                    Severity::Warning,
                    &from,
                    oline,
                    format!("ignored because `{key}` is also set"),
                );
            }
            _ => {}
        }
        self.flat.insert(
            key,
            Entry {
                node,
                line,
                origin,
                renamed_from,
            },
        );
    }

    fn static_key(key: &str) -> Option<&'static str> {
        keys::KEYS.iter().map(|(k, _)| *k).find(|k| *k == key)
    }

    /// Walk the document, recording known keys and diagnosing the others.
    pub(crate) fn walk(&mut self, node: &Node, prefix: &str) {
        let Kind::Map(entries) = &node.kind else {
            if prefix.is_empty() {
                self.push(
                    Severity::Error,
                    "",
                    Some(node.line),
                    "the configuration must be a mapping of keys to values".into(),
                );
            } else {
                let found = node.type_name();
                self.push(
                    Severity::Error,
                    prefix,
                    Some(node.line),
                    format!("must be a mapping of keys, found {found}"),
                );
            }
            return;
        };
        for (k, kline, v) in entries {
            let path = join(prefix, k);
            let kline = Some(*kline);
            if let Some(key) = Self::static_key(&path) {
                self.put(key, v.clone(), kline, Origin::File, None);
            } else if let Some(new) = keys::renamed(&path) {
                self.push(
                    Severity::Warning,
                    &path,
                    kline,
                    format!("is deprecated or misplaced; use `{new}` instead (ironscale reads it as `{new}` for now)"),
                );
                if let Some(key) = Self::static_key(new) {
                    self.put(key, v.clone(), kline, Origin::File, Some(path));
                }
            } else if path == keys::IP_PREFIXES {
                self.ip_prefixes(v, kline);
            } else if let Some(hint) = keys::removed(&path) {
                self.push(
                    Severity::Warning,
                    &path,
                    kline,
                    format!("is no longer supported and is ignored: {hint}"),
                );
            } else if keys::is_ignored(&path) {
                self.push(
                    Severity::Info,
                    &path,
                    kline,
                    "is a Headscale setting that ironscale accepts and ignores".into(),
                );
            } else if keys::is_section(&path) {
                if !v.is_null() {
                    self.walk(v, &path);
                }
            } else {
                let hint = keys::suggest(&path)
                    .map(|s| format!("; {s}"))
                    .unwrap_or_default();
                self.push(
                    Severity::Warning,
                    &path,
                    kline,
                    format!("unknown key, ignored{hint}"),
                );
            }
        }
    }

    fn ip_prefixes(&mut self, v: &Node, line: Option<usize>) {
        self.push(
            Severity::Warning,
            keys::IP_PREFIXES,
            line,
            "is deprecated; use `prefixes.v4` and `prefixes.v6` instead (ironscale reads it that way for now)".into(),
        );
        let items: Vec<&Node> = match &v.kind {
            Kind::Seq(items) => items.iter().collect(),
            Kind::Scalar { .. } => vec![v],
            Kind::Map(_) => {
                self.push(
                    Severity::Error,
                    keys::IP_PREFIXES,
                    line,
                    "must be a list of prefixes".into(),
                );
                return;
            }
        };
        for it in items {
            let Kind::Scalar { text, .. } = &it.kind else {
                continue;
            };
            let key = if text.contains(':') {
                "prefixes.v6"
            } else {
                "prefixes.v4"
            };
            self.put(
                key,
                it.clone(),
                Some(it.line),
                Origin::File,
                Some(keys::IP_PREFIXES.into()),
            );
        }
    }

    /// Apply `HEADSCALE_*` then `IRONSCALE_*` variables (so IRONSCALE_ wins).
    pub(crate) fn apply_env(&mut self, env: &[(String, String)]) {
        for prefix in ["HEADSCALE_", "IRONSCALE_"] {
            for (name, value) in env {
                let Some(suffix) = name.strip_prefix(prefix) else {
                    continue;
                };
                let Some(key) = keys::key_for_env(suffix) else {
                    continue;
                };
                if matches!(
                    keys::ty_of(key),
                    Some(Ty::MapList | Ty::MapStr | Ty::Records)
                ) {
                    continue; // structured values cannot come from one variable
                }
                let node = Node {
                    line: 0,
                    kind: Kind::Scalar {
                        text: value.clone(),
                        quoted: true,
                    },
                };
                self.flat.insert(
                    key,
                    Entry {
                        node,
                        line: None,
                        origin: Origin::Env(name.clone()),
                        renamed_from: None,
                    },
                );
            }
        }
    }

    // ---- typed getters (None: absent or wrong; wrong pushes an error) -----

    fn node(&mut self, key: &str) -> Option<Node> {
        self.touched.insert(key.to_string());
        self.flat.get(key).map(|e| e.node.clone())
    }

    /// Set keys that the build step never read (a bug in this crate if non-empty).
    #[cfg(test)]
    pub(crate) fn untouched(&self) -> Vec<&'static str> {
        self.flat
            .keys()
            .filter(|k| !self.touched.contains(**k))
            .copied()
            .collect()
    }

    fn scalar(&mut self, key: &str, what: &str) -> Option<String> {
        let n = self.node(key)?;
        if n.is_null() {
            return None;
        }
        match n.kind {
            Kind::Scalar { text, .. } => Some(text),
            _ => {
                let found = n.type_name();
                self.err(key, format!("must be {what}, found {found}"));
                None
            }
        }
    }

    fn s(&mut self, key: &str) -> Option<String> {
        self.scalar(key, "a string")
    }

    fn b(&mut self, key: &str) -> Option<bool> {
        let t = self.scalar(key, "true or false")?;
        match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" => Some(true),
            "false" | "no" | "off" | "0" | "n" => Some(false),
            _ => {
                self.err(key, format!("{t:?} is not a boolean (use true or false)"));
                None
            }
        }
    }

    fn i(&mut self, key: &str) -> Option<i64> {
        let t = self.scalar(key, "an integer")?;
        match t.trim().parse::<i64>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.err(key, format!("{t:?} is not an integer"));
                None
            }
        }
    }

    fn int_in<T: TryFrom<i64>>(&mut self, key: &str, lo: i64, hi: i64) -> Option<T> {
        let v = self.i(key)?;
        if v < lo || v > hi {
            self.err(key, format!("{v} is out of range ({lo}..={hi})"));
            return None;
        }
        T::try_from(v).ok()
    }

    fn dur(&mut self, key: &str) -> Option<Duration> {
        let t = self.scalar(key, "a duration such as \"24h\"")?;
        match parse_duration(&t) {
            Ok(d) => Some(d),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    /// A list of strings with the line of each item.
    fn list(&mut self, key: &str) -> Option<Vec<(String, Option<usize>)>> {
        self.touched.insert(key.to_string());
        let e = self.flat.get(key)?.clone();
        let from_env = matches!(e.origin, Origin::Env(_));
        if e.node.is_null() {
            return Some(Vec::new());
        }
        match &e.node.kind {
            Kind::Seq(items) => {
                let mut out = Vec::new();
                for it in items {
                    match &it.kind {
                        Kind::Scalar { text, .. } => out.push((text.clone(), Some(it.line))),
                        _ => {
                            let found = it.type_name();
                            self.push(
                                Severity::Error,
                                key,
                                Some(it.line),
                                format!("list items must be strings, found {found}"),
                            );
                        }
                    }
                }
                Some(out)
            }
            Kind::Scalar { text, .. } => Some(
                text.split(|c: char| c.is_whitespace() || c == ',')
                    .filter(|s| !s.is_empty())
                    .map(|s| (s.to_string(), if from_env { None } else { e.line }))
                    .collect(),
            ),
            Kind::Map(_) => {
                self.err(key, "must be a list, found a mapping".into());
                None
            }
        }
    }

    fn map_entries(&mut self, key: &str) -> Option<Vec<(String, usize, Node)>> {
        let n = self.node(key)?;
        if n.is_null() {
            return Some(Vec::new());
        }
        match n.kind {
            Kind::Map(m) => Some(m),
            Kind::Seq(ref v) if v.is_empty() => Some(Vec::new()),
            _ => {
                let found = n.type_name();
                self.err(key, format!("must be a mapping, found {found}"));
                None
            }
        }
    }

    fn path_of(&self, key: &str, s: &str) -> PathBuf {
        let p = PathBuf::from(s);
        if p.is_absolute()
            || matches!(
                self.flat.get(key),
                Some(Entry {
                    origin: Origin::Env(_),
                    ..
                })
            )
        {
            p
        } else {
            self.base_dir.join(p)
        }
    }

    /// A non-empty path value, resolved against the config file's directory.
    fn p(&mut self, key: &str) -> Option<PathBuf> {
        let s = self.s(key)?;
        if s.is_empty() {
            None
        } else {
            Some(self.path_of(key, &s))
        }
    }

    fn sock(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match parse_listen_addr(value) {
            Ok(a) => Some(a),
            Err(e) => {
                self.err(key, e);
                None
            }
        }
    }

    // ---- building --------------------------------------------------------

    pub(crate) fn build(&mut self, mut c: Config) -> Config {
        c.source = self.file.clone();
        self.server(&mut c);
        self.prefixes(&mut c);
        self.database(&mut c);
        self.derp(&mut c);
        self.tls(&mut c);
        self.misc(&mut c);
        self.dns(&mut c);
        self.policy(&mut c);
        self.oidc(&mut c);
        self.cli(&mut c);
        c
    }

    fn cli(&mut self, c: &mut Config) {
        if let Some(v) = self.s("cli.address") {
            let v = v.trim();
            if !v.is_empty() {
                c.cli.address = Some(v.to_string());
            }
        }
        // Headscale's CLI speaks gRPC to grpc_listen_addr; ours speaks REST
        // to the main listener. A Headscale config pointing there fails.
        let port = |a: &str| {
            a.rsplit(':')
                .next()
                .map(|p| p.trim_end_matches('/').to_string())
        };
        if let (Some(a), Some(g)) = (&c.cli.address, &c.grpc_listen_addr) {
            if !a.contains("://") && port(a).is_some() && port(a) == port(g) {
                self.warn(
                    "cli.address",
                    format!("{a:?} is the port of grpc_listen_addr ({g}), but ironscale serves no gRPC: the CLI talks REST to the main listener, so give the host:port of server_url"),
                );
            }
        }
        if let Some(v) = self.s("cli.api_key") {
            c.cli.api_key = Secret::new(v.trim());
        }
        if let Some(v) = self.dur("cli.timeout") {
            if v.is_zero() {
                self.err("cli.timeout", "must be more than 0 (default 5s)".into());
            } else {
                c.cli.timeout = v;
            }
        }
        if let Some(v) = self.b("cli.insecure") {
            c.cli.insecure = v;
        }
    }

    fn server(&mut self, c: &mut Config) {
        if let Some(u) = self.s("server_url") {
            c.server_url = u.trim_end_matches('/').to_string();
        }
        if c.server_url.is_empty() {
            self.err("server_url", "must be set to the URL clients use to reach this server, e.g. https://hs.example.com".into());
        } else if !(c.server_url.starts_with("http://") || c.server_url.starts_with("https://")) {
            let v = c.server_url.clone();
            self.err(
                "server_url",
                format!("{v:?} must start with https:// or http://"),
            );
        } else {
            match url::Url::parse(&c.server_url) {
                Ok(u) if u.host_str().is_some_and(|h| !h.is_empty()) => {
                    if u.path() != "/" || u.query().is_some() {
                        let v = c.server_url.clone();
                        self.warn(
                            "server_url",
                            format!(
                                "{v:?} has a path or query; clients only use scheme, host and port"
                            ),
                        );
                    }
                }
                Ok(_) => {
                    let v = c.server_url.clone();
                    self.err("server_url", format!("{v:?} has no host"));
                }
                Err(e) => {
                    let v = c.server_url.clone();
                    self.err("server_url", format!("{v:?} is not a valid URL: {e}"));
                }
            }
        }
        if let Some(v) = self.s("listen_addr") {
            if let Some(a) = self.sock("listen_addr", &v) {
                c.listen_addr = a;
            }
        }
        if let Some(v) = self.s("metrics_listen_addr") {
            c.metrics_listen_addr = if v.is_empty() {
                None
            } else {
                self.sock("metrics_listen_addr", &v)
            };
        }
        if let Some(v) = self.s("grpc_listen_addr") {
            c.grpc_listen_addr = Some(v).filter(|s| !s.is_empty());
        }
        let _ = self.b("grpc_allow_insecure");
    }

    fn prefixes(&mut self, c: &mut Config) {
        if self.is_set("prefixes.v4") || self.is_set("prefixes.v6") {
            c.prefixes.v4 = None;
            c.prefixes.v6 = None;
        }
        if let Some(v) = self.s("prefixes.v4").filter(|s| !s.is_empty()) {
            match v.trim().parse::<IpNet>() {
                Ok(IpNet::V4(n)) => {
                    if n.addr() != n.network() {
                        self.warn(
                            "prefixes.v4",
                            format!("{v:?} has host bits set; using {}", n.trunc()),
                        );
                    }
                    let n = n.trunc();
                    if !cgnat_range().contains(&n) {
                        self.warn(
                            "prefixes.v4",
                            format!("{v:?} is outside {}: Tailscale clients are not designed for other ranges (unsupported, as in Headscale)", cgnat_range()),
                        );
                    }
                    c.prefixes.v4 = Some(n);
                }
                Ok(IpNet::V6(_)) => self.err(
                    "prefixes.v4",
                    format!("{v:?} is an IPv6 prefix; put it under prefixes.v6"),
                ),
                Err(_) => self.err(
                    "prefixes.v4",
                    format!("{v:?} is not a valid IPv4 prefix (expected e.g. 100.64.0.0/10)"),
                ),
            }
        }
        if let Some(v) = self.s("prefixes.v6").filter(|s| !s.is_empty()) {
            match v.trim().parse::<IpNet>() {
                Ok(IpNet::V6(n)) => {
                    if n.addr() != n.network() {
                        self.warn(
                            "prefixes.v6",
                            format!("{v:?} has host bits set; using {}", n.trunc()),
                        );
                    }
                    let n = n.trunc();
                    if !tailscale_ula_range().contains(&n) {
                        self.warn(
                            "prefixes.v6",
                            format!("{v:?} is outside {}: Tailscale clients are not designed for other ranges (unsupported, as in Headscale)", tailscale_ula_range()),
                        );
                    }
                    c.prefixes.v6 = Some(n);
                }
                Ok(IpNet::V4(_)) => self.err(
                    "prefixes.v6",
                    format!("{v:?} is an IPv4 prefix; put it under prefixes.v4"),
                ),
                Err(_) => self.err(
                    "prefixes.v6",
                    format!("{v:?} is not a valid IPv6 prefix (expected e.g. fd7a:115c:a1e0::/48)"),
                ),
            }
        }
        if c.prefixes.v4.is_none()
            && c.prefixes.v6.is_none()
            && !self.has_error_for(&["prefixes.v4", "prefixes.v6"])
        {
            self.err(
                "prefixes",
                "at least one of prefixes.v4 and prefixes.v6 must be set".into(),
            );
        }
        if let Some(v) = self.s("prefixes.allocation") {
            match v.as_str() {
                "sequential" => c.prefixes.allocation = IpAllocation::Sequential,
                "random" => c.prefixes.allocation = IpAllocation::Random,
                _ => self.err(
                    "prefixes.allocation",
                    format!("{v:?} is not valid; use sequential or random"),
                ),
            }
        }
    }

    fn has_error_for(&self, keys: &[&str]) -> bool {
        self.diags
            .iter()
            .any(|d| d.is_error() && keys.contains(&d.key.as_str()))
    }

    fn database(&mut self, c: &mut Config) {
        let ty = self.s("database.type").unwrap_or_else(|| "sqlite".into());
        let (mut sqlite, mut pg) = match &c.database {
            DatabaseConfig::Sqlite(s) => (s.clone(), None),
            DatabaseConfig::Postgres(p) => (
                SqliteConfig {
                    path: PathBuf::new(),
                    write_ahead_log: true,
                },
                Some(p.clone()),
            ),
        };
        if let Some(p) = self.p("database.sqlite.path") {
            sqlite.path = p;
        }
        if let Some(w) = self.b("database.sqlite.write_ahead_log") {
            sqlite.write_ahead_log = w;
        }
        let mut pg = pg.take().unwrap_or(PostgresConfig {
            host: String::new(),
            port: 5432,
            name: String::new(),
            user: String::new(),
            pass: Secret::default(),
            ssl: "disable".into(),
            max_open_conns: 10,
            max_idle_conns: 10,
            conn_max_idle_time: Duration::from_secs(3600),
        });
        if let Some(v) = self.s("database.postgres.host") {
            pg.host = v;
        }
        if let Some(v) = self.int_in::<u16>("database.postgres.port", 1, 65535) {
            pg.port = v;
        }
        if let Some(v) = self.s("database.postgres.name") {
            pg.name = v;
        }
        if let Some(v) = self.s("database.postgres.user") {
            pg.user = v;
        }
        if let Some(v) = self.s("database.postgres.pass") {
            pg.pass = Secret::new(v);
        }
        if let Some(v) = self.s("database.postgres.ssl") {
            match v.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => pg.ssl = "require".into(),
                "false" | "no" | "off" | "" => pg.ssl = "disable".into(),
                m @ ("disable" | "allow" | "prefer" | "require" | "verify-ca" | "verify-full") => pg.ssl = m.into(),
                _ => self.err(
                    "database.postgres.ssl",
                    format!("{v:?} is not valid; use true/false or a libpq sslmode (disable, require, verify-ca, verify-full)"),
                ),
            }
        }
        if let Some(v) = self.int_in::<u32>("database.postgres.max_open_conns", 1, 10_000) {
            pg.max_open_conns = v;
        }
        if let Some(v) = self.int_in::<u32>("database.postgres.max_idle_conns", 0, 10_000) {
            pg.max_idle_conns = v;
        }
        if let Some(v) =
            self.int_in::<u64>("database.postgres.conn_max_idle_time_secs", 0, i64::MAX)
        {
            pg.conn_max_idle_time = Duration::from_secs(v);
        }
        match ty.as_str() {
            "sqlite" | "sqlite3" => {
                if sqlite.path.as_os_str().is_empty() {
                    self.err_near(
                        "database.sqlite.path",
                        "database.type",
                        "must be set when database.type is sqlite (e.g. /var/lib/headscale/db.sqlite)".into(),
                    );
                }
                c.database = DatabaseConfig::Sqlite(sqlite);
            }
            "postgres" | "postgresql" => {
                for (k, v) in [
                    ("database.postgres.host", &pg.host),
                    ("database.postgres.name", &pg.name),
                    ("database.postgres.user", &pg.user),
                ] {
                    if v.is_empty() {
                        self.err_near(
                            k,
                            "database.type",
                            "must be set when database.type is postgres".into(),
                        );
                    }
                }
                c.database = DatabaseConfig::Postgres(pg);
            }
            other => {
                self.err(
                    "database.type",
                    format!("{other:?} is not valid; use sqlite (or sqlite3) or postgres"),
                );
            }
        }
    }

    fn derp(&mut self, c: &mut Config) {
        let listen_ip = c.listen_addr.ip();
        let from_file = self.file.is_some();
        let s = &mut c.derp.server;
        if let Some(v) = self.b("derp.server.enabled") {
            s.enabled = v;
        }
        let region_set = self.is_set("derp.server.region_id");
        if let Some(v) = self.int_in::<i32>("derp.server.region_id", 1, i64::from(i32::MAX)) {
            s.region_id = v;
        }
        if let Some(v) = self.s("derp.server.region_code") {
            s.region_code = v;
        }
        if let Some(v) = self.s("derp.server.region_name") {
            s.region_name = v;
        }
        if let Some(v) = self.b("derp.server.stun.enabled") {
            s.stun_enabled = v;
        }
        if let Some(v) = self.s("derp.server.stun_listen_addr") {
            s.stun_listen_addr = if v.is_empty() {
                None
            } else {
                self.sock("derp.server.stun_listen_addr", &v)
            };
        }
        if let Some(v) = self.p("derp.server.private_key_path") {
            s.private_key_path = v;
        }
        if let Some(v) = self.b("derp.server.verify_clients") {
            s.verify_clients = v;
        }
        if let Some(v) = self.s("derp.server.ipv4").filter(|v| !v.is_empty()) {
            match v.parse::<Ipv4Addr>() {
                Ok(a) => s.ipv4 = Some(a),
                Err(_) => self.err("derp.server.ipv4", format!("{v:?} is not an IPv4 address")),
            }
        }
        if let Some(v) = self.s("derp.server.ipv6").filter(|v| !v.is_empty()) {
            match v.parse::<Ipv6Addr>() {
                Ok(a) => s.ipv6 = Some(a),
                Err(_) => self.err("derp.server.ipv6", format!("{v:?} is not an IPv6 address")),
            }
        }
        if let Some(v) = self.b("derp.server.automatically_add_embedded_derp_region") {
            s.automatically_add_embedded_derp_region = v;
        }
        if from_file {
            // Default: the control listener's host, port 3341.
            s.tls_listen_addr = SocketAddr::new(listen_ip, DEFAULT_DERP_TLS_PORT);
        }
        if let Some(v) = self
            .s("derp.server.tls_listen_addr")
            .filter(|v| !v.is_empty())
        {
            if let Some(a) = self.sock("derp.server.tls_listen_addr", &v) {
                s.tls_listen_addr = a;
            }
        }
        if let Some(v) = self.p("derp.server.tls_cert_path") {
            s.tls_cert_path = v;
        }
        if let Some(v) = self.p("derp.server.tls_key_path") {
            s.tls_key_path = v;
        }
        let s = c.derp.server.clone();
        if s.enabled {
            if !region_set && c.source.is_some() {
                self.err_near(
                    "derp.server.region_id",
                    "derp.server.enabled",
                    "must be set when derp.server.enabled is true (Headscale uses 999)".into(),
                );
            }
            if s.stun_enabled
                && s.stun_listen_addr.is_none()
                && !self.has_error_for(&["derp.server.stun_listen_addr"])
            {
                self.err_near(
                    "derp.server.stun_listen_addr",
                    "derp.server.enabled",
                    "must be set when derp.server.enabled is true (e.g. 0.0.0.0:3478)".into(),
                );
            }
        }

        if let Some(urls) = self.list("derp.urls") {
            c.derp.urls.clear();
            for (u, line) in urls {
                match url::Url::parse(&u) {
                    Ok(p) if matches!(p.scheme(), "http" | "https") && p.host_str().is_some() => {
                        c.derp.urls.push(u)
                    }
                    _ => self.item_diag(
                        Severity::Error,
                        "derp.urls",
                        line,
                        format!("{u:?} is not an http(s) URL"),
                    ),
                }
            }
        }
        let mut paths_with_lines = Vec::new();
        if let Some(paths) = self.list("derp.paths") {
            c.derp.paths.clear();
            for (p, line) in paths {
                let path = self.path_of("derp.paths", &p);
                c.derp.paths.push(path.clone());
                paths_with_lines.push((path, line));
            }
        }
        for (path, line) in paths_with_lines {
            if !path.exists() {
                self.item_diag(
                    Severity::Error,
                    "derp.paths",
                    line,
                    format!("{} does not exist", path.display()),
                );
                continue;
            }
            match derpmap::derp_map_from_file(&path) {
                Ok((_, ds)) => self.diags.extend(ds),
                Err(ds) => {
                    self.item_diag(
                        Severity::Error,
                        "derp.paths",
                        line,
                        format!("{} is not a valid DERP map (see below)", path.display()),
                    );
                    self.diags.extend(ds);
                }
            }
        }
        if c.derp.server.enabled
            && !c.derp.server.automatically_add_embedded_derp_region
            && c.derp.paths.is_empty()
        {
            self.err(
                "derp.server.automatically_add_embedded_derp_region",
                "is false, so the embedded DERP region must be described in a file listed in derp.paths".into(),
            );
        }
        if let Some(v) = self.b("derp.auto_update_enabled") {
            c.derp.auto_update_enabled = v;
        }
        if let Some(v) = self.dur("derp.update_frequency") {
            if v.is_zero() && c.derp.auto_update_enabled {
                self.err(
                    "derp.update_frequency",
                    "must be longer than 0 when derp.auto_update_enabled is true".into(),
                );
            } else {
                c.derp.update_frequency = v;
            }
        }
        if !c.derp.server.enabled
            && c.derp.urls.is_empty()
            && c.derp.paths.is_empty()
            && self.file.is_some()
        {
            self.warn(
                "derp",
                "no DERP servers: the embedded DERP server is off and derp.urls and derp.paths are empty, so clients that cannot connect directly cannot talk at all".into(),
            );
        }
    }

    fn tls(&mut self, c: &mut Config) {
        c.tls.cert_path = self.p("tls_cert_path");
        c.tls.key_path = self.p("tls_key_path");
        match (&c.tls.cert_path, &c.tls.key_path) {
            (Some(_), None) => self.err_near(
                "tls_key_path",
                "tls_cert_path",
                "must be set together with tls_cert_path".into(),
            ),
            (None, Some(_)) => self.err_near(
                "tls_cert_path",
                "tls_key_path",
                "must be set together with tls_key_path".into(),
            ),
            _ => {}
        }
        for key in ["tls_cert_path", "tls_key_path"] {
            let p = if key == "tls_cert_path" {
                c.tls.cert_path.clone()
            } else {
                c.tls.key_path.clone()
            };
            if let Some(p) = p {
                if !p.is_file() {
                    self.err(
                        key,
                        format!("{} does not exist or is not a file", p.display()),
                    );
                }
            }
        }
        if let Some(v) = self.s("tls_letsencrypt_hostname") {
            c.tls.letsencrypt.hostname = v;
        }
        if let Some(v) = self.p("tls_letsencrypt_cache_dir") {
            c.tls.letsencrypt.cache_dir = v;
        }
        if let Some(v) = self.s("tls_letsencrypt_challenge_type") {
            if v == "HTTP-01" || v == "TLS-ALPN-01" {
                c.tls.letsencrypt.challenge_type = v;
            } else {
                self.err(
                    "tls_letsencrypt_challenge_type",
                    format!("{v:?} is not supported; use HTTP-01 or TLS-ALPN-01"),
                );
            }
        }
        if let Some(v) = self.s("tls_letsencrypt_listen") {
            c.tls.letsencrypt.listen = v;
        }
        if let Some(v) = self.s("acme_url") {
            c.tls.acme_url = v;
        }
        if let Some(v) = self.s("acme_email") {
            c.tls.acme_email = v;
        }
        if !c.tls.letsencrypt.hostname.is_empty()
            && (c.tls.cert_path.is_some() || c.tls.key_path.is_some())
        {
            self.err(
                "tls_letsencrypt_hostname",
                "set either tls_letsencrypt_hostname or tls_cert_path/tls_key_path, not both"
                    .into(),
            );
        }
    }

    fn misc(&mut self, c: &mut Config) {
        if let Some(v) = self.p("noise.private_key_path") {
            c.noise.private_key_path = v;
        } else if self.file.is_some() {
            let dir = match &c.database {
                DatabaseConfig::Sqlite(s) if !s.path.as_os_str().is_empty() => s
                    .path
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| self.base_dir.clone()),
                _ => self.base_dir.clone(),
            };
            c.noise.private_key_path = dir.join("noise_private.key");
            let shown = c.noise.private_key_path.display().to_string();
            self.at(
                Severity::Info,
                "noise.private_key_path",
                format!("not set; using {shown} (next to the database)"),
            );
        }
        if self.file.is_some() && !self.is_set("derp.server.private_key_path") {
            if let Some(dir) = c.noise.private_key_path.parent() {
                c.derp.server.private_key_path = dir.join("derp_server_private.key");
                if !self.is_set("derp.server.tls_cert_path") {
                    c.derp.server.tls_cert_path = dir.join("derp_tls_cert.pem");
                }
                if !self.is_set("derp.server.tls_key_path") {
                    c.derp.server.tls_key_path = dir.join("derp_tls_key.pem");
                }
            }
        }
        if let Some(v) = self.p("unix_socket") {
            c.unix_socket = v;
        }
        if let Some(v) = self.s("unix_socket_permission") {
            let t = v.trim();
            let t = t
                .strip_prefix("0o")
                .or_else(|| t.strip_prefix("0O"))
                .unwrap_or(t);
            match u32::from_str_radix(t, 8) {
                Ok(m) if m <= 0o7777 => c.unix_socket_permission = m,
                _ => self.err(
                    "unix_socket_permission",
                    format!("{v:?} is not an octal file mode such as \"0770\""),
                ),
            }
        }
        if let Some(v) = self.s("log.level") {
            match v.to_ascii_lowercase().as_str() {
                l @ ("trace" | "debug" | "info" | "error") => c.log.level = l.into(),
                "warn" | "warning" => c.log.level = "warn".into(),
                "panic" | "fatal" => c.log.level = "error".into(),
                "disabled" => c.log.level = "off".into(),
                _ => self.err(
                    "log.level",
                    format!("{v:?} is not a log level (trace, debug, info, warn, error)"),
                ),
            }
        }
        if let Some(v) = self.s("log.format") {
            match v.as_str() {
                "text" | "" => c.log.format = LogFormat::Text,
                "json" => c.log.format = LogFormat::Json,
                _ => self.err(
                    "log.format",
                    format!("{v:?} is not valid; use text or json"),
                ),
            }
        }
        if let Some(v) = self.b("disable_check_updates") {
            c.disable_check_updates = v;
        }
        if let Some(v) = self.s("node.expiry") {
            match parse_duration(&v) {
                Ok(d) if d.is_zero() => c.node.expiry = None,
                Ok(d) => c.node.expiry = Some(d),
                Err(e) => self.err("node.expiry", e),
            }
        }
        if let Some(v) = self.dur("node.ephemeral.inactivity_timeout") {
            if v <= Duration::from_secs(65) {
                self.err(
                    "node.ephemeral.inactivity_timeout",
                    format!("{} is too low; it must be more than 65s (the client keep-alive plus a margin)", format_duration(v)),
                );
            } else {
                c.node.ephemeral_inactivity_timeout = v;
            }
        }
        if let Some(v) = self.dur("node.routes.ha.probe_interval") {
            c.node.routes_ha_probe_interval = v;
        }
        if let Some(v) = self.dur("node.routes.ha.probe_timeout") {
            if v.is_zero() {
                self.err(
                    "node.routes.ha.probe_timeout",
                    "must be more than 0 (default 5s); set node.routes.ha.probe_interval: 0 to turn probing off".into(),
                );
            } else {
                c.node.routes_ha_probe_timeout = v;
            }
        }
        if let Some(v) = self.b("node.device_approval") {
            c.node.device_approval = v;
        }
        if let Some(v) = self.b("node.device_approval_exempt_tagged_keys") {
            c.node.device_approval_exempt_tagged_keys = v;
        }
        if let Some(v) = self.b("logtail.enabled") {
            c.logtail.enabled = v;
        }
        if let Some(v) = self.b("taildrop.enabled") {
            c.taildrop.enabled = v;
        }
        if let Some(v) = self.dur("tuning.batch_change_delay") {
            if v > Duration::from_secs(5) {
                self.err(
                    "tuning.batch_change_delay",
                    format!("{} is too long: clients would hear of changes that late; use at most 5s (default 100ms)", format_duration(v)),
                );
            } else {
                c.tuning.batch_change_delay = v;
            }
        }
        if let Some(v) = self.int_in::<u32>("tuning.register_cache_max_entries", 1, 1_000_000) {
            c.tuning.register_cache_max_entries = v as usize;
        }
        if let Some(v) = self.dur("tuning.register_cache_expiration") {
            if v < Duration::from_secs(30) {
                self.err(
                    "tuning.register_cache_expiration",
                    format!("{} is too short for a person to open the login URL and approve it; use at least 30s (default 15m)", format_duration(v)),
                );
            } else {
                c.tuning.register_cache_expiration = v;
            }
        }
        if let Some(v) = self.b("randomize_client_port") {
            c.randomize_client_port = v;
            self.warn(
                "randomize_client_port",
                "is deprecated (Headscale 0.29 moved it to the policy: set \"randomizeClientPort\": true at the top level of the policy file); ironscale still honours it here".into(),
            );
        }
    }

    fn nameserver(&mut self, key: &str, s: &str, line: Option<usize>) -> Option<Nameserver> {
        if let Ok(a) = s.parse::<IpAddr>() {
            return Some(Nameserver::Ip(a));
        }
        match url::Url::parse(s) {
            Ok(u) if u.scheme() == "https" && u.host_str().is_some() => {
                Some(Nameserver::Url(s.to_string()))
            }
            _ => {
                self.item_diag(
                    Severity::Error,
                    key,
                    line,
                    format!("{s:?} is neither an IP address nor an https:// (DoH) URL"),
                );
                None
            }
        }
    }

    /// A split-DNS mapping (`domain: [resolvers]`) under `key`, in file order.
    fn split_dns(&mut self, key: &str) -> Option<Vec<(String, Vec<Nameserver>)>> {
        let entries = self.map_entries(key)?;
        let mut out = Vec::new();
        for (domain, line, v) in entries {
            let items: Vec<(String, usize)> = match &v.kind {
                Kind::Seq(items) => items
                    .iter()
                    .filter_map(|it| match &it.kind {
                        Kind::Scalar { text, .. } => Some((text.clone(), it.line)),
                        _ => None,
                    })
                    .collect(),
                Kind::Scalar { text, .. } if !v.is_null() => vec![(text.clone(), v.line)],
                _ => {
                    self.item_diag(
                        Severity::Error,
                        key,
                        Some(line),
                        format!("{domain}: must be a list of nameservers"),
                    );
                    continue;
                }
            };
            if let Err(e) = check_dns_name(&domain) {
                self.item_diag(
                    Severity::Error,
                    key,
                    Some(line),
                    format!("{domain:?}: {e}; split DNS keys are domains such as corp.example.com"),
                );
            }
            let mut ns = Vec::new();
            for (s, l) in items {
                if let Some(n) = self.nameserver(key, &s, Some(l)) {
                    ns.push(n);
                }
            }
            if ns.is_empty() {
                self.item_diag(
                    Severity::Warning,
                    key,
                    Some(line),
                    format!("{domain}: lists no nameserver, so clients answer names under it only from extra_records (NXDOMAIN otherwise); give its resolvers, e.g. [10.0.0.53]"),
                );
            }
            out.push((domain.trim_end_matches('.').to_ascii_lowercase(), ns));
        }
        Some(out)
    }

    fn dns(&mut self, c: &mut Config) {
        if let Some(v) = self.b("dns.magic_dns") {
            c.dns.magic_dns = v;
        }
        if let Some(v) = self.s("dns.base_domain") {
            c.dns.base_domain = v.trim_end_matches('.').to_ascii_lowercase();
        }
        if let Some(v) = self.b("dns.override_local_dns") {
            c.dns.override_local_dns = v;
        }
        if let Some(v) = self.b("dns.magic_dns_aaaa") {
            c.dns.magic_dns_aaaa = v;
        }
        if let Some(list) = self.list("dns.nameservers.global") {
            c.dns.nameservers.global.clear();
            for (s, line) in list {
                if let Some(ns) = self.nameserver("dns.nameservers.global", &s, line) {
                    c.dns.nameservers.global.push(ns);
                }
            }
        }
        // Split DNS under either spelling; both together are merged (the
        // resolvers of a domain named in both are the union).
        let split = self.split_dns("dns.nameservers.split");
        let restricted = self.split_dns("dns.nameservers.restricted");
        if split.is_some() || restricted.is_some() {
            c.dns.nameservers.split.clear();
            for (domain, ns) in split.into_iter().chain(restricted).flatten() {
                let all = c.dns.nameservers.split.entry(domain).or_default();
                for n in ns {
                    if !all.contains(&n) {
                        all.push(n);
                    }
                }
            }
        }
        if let Some(list) = self.list("dns.search_domains") {
            c.dns.search_domains.clear();
            for (d, line) in list {
                if let Err(e) = check_dns_name(&d) {
                    self.item_diag(
                        Severity::Error,
                        "dns.search_domains",
                        line,
                        format!("{d:?}: {e}"),
                    );
                } else {
                    c.dns
                        .search_domains
                        .push(d.trim_end_matches('.').to_ascii_lowercase());
                }
            }
        }
        self.extra_records(c);
        if let Some(p) = self.p("dns.extra_records_path") {
            if !p.is_file() {
                let shown = p.display().to_string();
                self.err(
                    "dns.extra_records_path",
                    format!("{shown} does not exist or is not a file"),
                );
            }
            if p.is_file() {
                match load_extra_records(&p) {
                    Ok((records, diags)) => {
                        c.dns.extra_records = records;
                        self.diags.extend(diags);
                    }
                    Err(diags) => self.diags.extend(diags),
                }
            }
            c.dns.extra_records_path = Some(p);
        }
        if self.is_set("dns.extra_records")
            && !c.dns.extra_records.is_empty()
            && c.dns.extra_records_path.is_some()
        {
            self.err(
                "dns.extra_records_path",
                "dns.extra_records and dns.extra_records_path are mutually exclusive; remove one"
                    .into(),
            );
        }

        // Semantic checks, as Headscale does them.
        if c.dns.magic_dns && c.dns.base_domain.is_empty() {
            self.err_near(
                "dns.base_domain",
                "dns.magic_dns",
                "must be set when dns.magic_dns is true (e.g. vpn.example.com or tailnet.internal)"
                    .into(),
            );
        }
        if !c.dns.base_domain.is_empty() {
            if let Err(e) = check_dns_name(&c.dns.base_domain) {
                let v = c.dns.base_domain.clone();
                self.err("dns.base_domain", format!("{v:?}: {e}"));
            } else if let Some(host) = c.server_url_host() {
                if let Some(msg) = base_domain_pitfall(&c.dns.base_domain, &host) {
                    self.err("dns.base_domain", msg);
                }
            }
        }
        if c.dns.override_local_dns && c.dns.nameservers.global.is_empty() {
            if self.is_set("dns.override_local_dns") {
                self.err(
                    "dns.override_local_dns",
                    "is true, so dns.nameservers.global must list at least one nameserver (or set override_local_dns: false)".into(),
                );
            } else {
                // Headscale's default is true, but with no global nameservers
                // there is nothing to override with: keep the clients' own DNS.
                c.dns.override_local_dns = false;
            }
        }
    }

    fn extra_records(&mut self, c: &mut Config) {
        let Some(n) = self.node("dns.extra_records") else {
            return;
        };
        if let Some(r) = self.records("dns.extra_records", n) {
            c.dns.extra_records = r;
        }
    }

    /// Extra records from a list of `{name, type, value}` mappings (the
    /// config's `dns.extra_records`, or the JSON file of
    /// `dns.extra_records_path`); diagnostics under `key`, at each item's
    /// line. `None` when `n` is not a list at all.
    fn records(&mut self, key: &str, n: Node) -> Option<Vec<ExtraRecord>> {
        if n.is_null() {
            return Some(Vec::new());
        }
        let Kind::Seq(items) = n.kind else {
            self.err(key, "must be a list of {name, type, value} records".into());
            return None;
        };
        let mut out = Vec::new();
        for it in items {
            let Kind::Map(fields) = &it.kind else {
                self.item_diag(
                    Severity::Error,
                    key,
                    Some(it.line),
                    "each record must be a mapping with name, type and value".into(),
                );
                continue;
            };
            let mut name = String::new();
            let mut ty = String::from("A");
            let mut value: Option<(String, usize)> = None;
            for (k, kl, v) in fields {
                let Kind::Scalar { text, .. } = &v.kind else {
                    self.item_diag(
                        Severity::Error,
                        key,
                        Some(*kl),
                        format!("{k}: must be a string"),
                    );
                    continue;
                };
                match k.to_ascii_lowercase().as_str() {
                    "name" => name = text.clone(),
                    "type" => ty = text.to_ascii_uppercase(),
                    "value" => value = Some((text.clone(), *kl)),
                    _ => self.item_diag(
                        Severity::Warning,
                        key,
                        Some(*kl),
                        format!("unknown record field {k:?}, ignored"),
                    ),
                }
            }
            if name.is_empty() {
                self.item_diag(
                    Severity::Error,
                    key,
                    Some(it.line),
                    "record has no name".into(),
                );
                continue;
            }
            if let Err(e) = check_dns_name(&name) {
                self.item_diag(
                    Severity::Error,
                    key,
                    Some(it.line),
                    format!("record name {name:?}: {e}"),
                );
                continue;
            }
            let Some((value, vline)) = value else {
                self.item_diag(
                    Severity::Error,
                    key,
                    Some(it.line),
                    format!("record {name:?} has no value"),
                );
                continue;
            };
            if ty != "A" && ty != "AAAA" {
                self.item_diag(
                    Severity::Warning,
                    key,
                    Some(it.line),
                    format!("record {name:?} has type {ty:?}; Tailscale clients only use A and AAAA records, so it is ignored"),
                );
                continue;
            }
            match value.parse::<IpAddr>() {
                Ok(a) if (ty == "A") == a.is_ipv4() => {
                    out.push(ExtraRecord { name: name.trim_end_matches('.').to_string(), record_type: ty, value: a })
                }
                Ok(_) => self.item_diag(
                    Severity::Error,
                    key,
                    Some(vline),
                    format!("record {name:?}: {value:?} does not match type {ty} (A needs IPv4, AAAA needs IPv6)"),
                ),
                Err(_) => self.item_diag(Severity::Error, key, Some(vline), format!("record {name:?}: {value:?} is not an IP address")),
            }
        }
        Some(out)
    }

    fn policy(&mut self, c: &mut Config) {
        if let Some(v) = self.s("policy.mode") {
            match v.as_str() {
                "file" => c.policy.mode = PolicyMode::File,
                "database" => c.policy.mode = PolicyMode::Database,
                _ => self.err(
                    "policy.mode",
                    format!("{v:?} is not valid; use file or database"),
                ),
            }
        }
        if let Some(p) = self.p("policy.path") {
            c.policy.path = Some(p);
        }
        match (c.policy.mode, &c.policy.path) {
            (PolicyMode::File, Some(p)) if !p.is_file() => {
                let shown = p.display().to_string();
                self.err(
                    "policy.path",
                    format!("{shown} does not exist or is not a file"),
                );
            }
            (PolicyMode::Database, Some(_)) => self.warn(
                "policy.path",
                "is ignored because policy.mode is database (the policy is stored in the database)"
                    .into(),
            ),
            _ => {}
        }
    }

    fn oidc(&mut self, c: &mut Config) {
        let o = &mut c.oidc;
        if let Some(v) = self.s("oidc.issuer") {
            o.issuer = v;
        }
        if let Some(v) = self.s("oidc.client_id") {
            o.client_id = v;
        }
        if let Some(v) = self.s("oidc.client_secret") {
            o.client_secret = Secret::new(v);
        }
        if let Some(v) = self.p("oidc.client_secret_path") {
            o.client_secret_path = Some(v);
        }
        if let Some(v) = self.list("oidc.scope") {
            o.scope = v.into_iter().map(|(s, _)| s).collect();
        }
        if let Some(m) = self.map_entries("oidc.extra_params") {
            o.extra_params = m
                .into_iter()
                .filter_map(|(k, _, v)| match v.kind {
                    Kind::Scalar { text, .. } => Some((k, text)),
                    _ => None,
                })
                .collect();
        }
        for (key, field) in [
            ("oidc.allowed_domains", 0),
            ("oidc.allowed_users", 1),
            ("oidc.allowed_groups", 2),
        ] {
            if let Some(v) = self.list(key) {
                let v: Vec<String> = v.into_iter().map(|(s, _)| s).collect();
                match field {
                    0 => o.allowed_domains = v,
                    1 => o.allowed_users = v,
                    _ => o.allowed_groups = v,
                }
            }
        }
        if let Some(v) = self.b("oidc.email_verified_required") {
            c.oidc.email_verified_required = v;
        }
        if let Some(v) = self.b("oidc.use_expiry_from_token") {
            c.oidc.use_expiry_from_token = v;
        }
        if let Some(v) = self.b("oidc.only_start_if_oidc_is_available") {
            c.oidc.only_start_if_oidc_is_available = v;
        }
        if let Some(v) = self.b("oidc.pkce.enabled") {
            c.oidc.pkce.enabled = v;
        }
        if let Some(v) = self.s("oidc.pkce.method") {
            if v == "plain" || v == "S256" {
                c.oidc.pkce.method = v;
            } else {
                self.err(
                    "oidc.pkce.method",
                    format!("{v:?} is not valid; use plain or S256"),
                );
            }
        }
        if c.oidc.enabled() {
            match url::Url::parse(&c.oidc.issuer) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => {
                    let v = c.oidc.issuer.clone();
                    self.err("oidc.issuer", format!("{v:?} must be a valid http(s) URL"));
                }
            }
            if c.oidc.client_id.is_empty() {
                self.err_near(
                    "oidc.client_id",
                    "oidc.issuer",
                    "must be set when oidc.issuer is set".into(),
                );
            }
            if !c.oidc.client_secret.is_empty() && c.oidc.client_secret_path.is_some() {
                self.err(
                    "oidc.client_secret_path",
                    "oidc.client_secret and oidc.client_secret_path are mutually exclusive".into(),
                );
            }
        }
    }
}

/// `:8080`, `0.0.0.0:8080`, `[::]:8080`, `localhost:8080`.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        return port
            .parse::<u16>()
            .map(|p| SocketAddr::from(([0, 0, 0, 0], p)))
            .map_err(|_| {
                format!(
                    "{s:?} is not a valid listen address (expected host:port, e.g. 0.0.0.0:8080)"
                )
            });
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some((host, port)) = s.rsplit_once(':') {
        if port.parse::<u16>().is_ok() && (host == "localhost" || host.ends_with(".localhost")) {
            return (host, 0)
                .to_socket_addrs()
                .ok()
                .and_then(|mut it| it.next())
                .map_or(
                    Ok(SocketAddr::from((
                        [127, 0, 0, 1],
                        port.parse().unwrap_or(0),
                    ))),
                    |a| Ok(SocketAddr::new(a.ip(), port.parse().unwrap_or(0))),
                );
        }
    }
    Err(format!(
        "{s:?} is not a valid listen address (expected ip:port, e.g. 0.0.0.0:8080 or [::]:8080)"
    ))
}

/// RFC 1035-ish host name check (letters, digits, hyphens; labels of 1-63).
/// Read the extra-records file of `dns.extra_records_path`: Headscale's JSON
/// format, a list of `{"name", "type", "value"}` objects (A and AAAA). A
/// file that does not parse, or a record that is wrong (no name, a value
/// that is not an address of its type), is an error at its line: the caller
/// keeps the records it had. Warnings (an unknown field, a record type
/// clients ignore) come with the records.
pub fn load_extra_records(
    path: &Path,
) -> Result<(Vec<ExtraRecord>, Vec<Diagnostic>), Vec<Diagnostic>> {
    const KEY: &str = "dns.extra_records_path";
    let mut l = Loader::new(Some(path));
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            l.push(
                Severity::Error,
                KEY,
                None,
                format!("cannot read the file: {e}"),
            );
            return Err(l.diags);
        }
    };
    if text.trim().is_empty() {
        l.push(
            Severity::Error,
            KEY,
            Some(1),
            "the file is empty; write [] for no records".into(),
        );
        return Err(l.diags);
    }
    // JSON is YAML's flow syntax: the YAML parser reads it with a line for
    // every record.
    let root = match crate::yaml::parse(&text) {
        Ok(root) => root,
        Err(e) => {
            l.push(
                Severity::Error,
                KEY,
                Some(e.line),
                format!("not valid JSON: {}", e.message),
            );
            return Err(l.diags);
        }
    };
    let line = root.line;
    l.flat.insert(
        KEY,
        Entry {
            node: root.clone(),
            line: Some(line),
            origin: Origin::File,
            renamed_from: None,
        },
    );
    let records = l.records(KEY, root);
    match records {
        Some(r) if !l.diags.iter().any(Diagnostic::is_error) => Ok((r, l.diags)),
        _ => Err(l.diags),
    }
}

pub(crate) fn check_dns_name(name: &str) -> Result<(), String> {
    let n = name.trim_end_matches('.');
    if n.is_empty() {
        return Err("is empty".into());
    }
    if n.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in n.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("is not a valid domain name (empty or over-long label)".into());
        }
        if label.starts_with('-')
            || label.ends_with('-')
            || !label
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            return Err("is not a valid domain name (use letters, digits and hyphens)".into());
        }
    }
    Ok(())
}

/// Headscale refuses a `base_domain` equal to the server host or a parent of
/// it: MagicDNS makes every client answer for `base_domain`, so the control
/// server (and DERP) would become unreachable by name.
pub(crate) fn base_domain_pitfall(base_domain: &str, server_host: &str) -> Option<String> {
    let base = base_domain.trim_end_matches('.').to_ascii_lowercase();
    let host = server_host.trim_end_matches('.').to_ascii_lowercase();
    let same = host == base;
    let parent = host.ends_with(&format!(".{base}"));
    if !same && !parent {
        return None;
    }
    let safe = |cand: &String| !(host == *cand || host.ends_with(&format!(".{cand}")));
    // Suggest a sibling of the server host under the same parent domain.
    let parent_domain = if same {
        host.split_once('.')
            .map(|(_, p)| p.to_string())
            .unwrap_or_default()
    } else {
        base.clone()
    };
    let suggestions: Vec<String> = ["vpn", "tailnet", "ts"]
        .iter()
        .map(|p| {
            if parent_domain.is_empty() {
                format!("{p}.internal")
            } else {
                format!("{p}.{parent_domain}")
            }
        })
        .filter(safe)
        .take(2)
        .collect();
    let relation = if same {
        "is the same as the host of server_url"
    } else {
        "is a parent domain of the server_url host"
    };
    Some(format!(
        "{base:?} {relation} ({host:?}). With MagicDNS, every client treats {base} as the tailnet's own domain, \
         so it could no longer resolve {host} and would lose the control server (and DERP). \
         Use a separate subdomain that does not contain the server host, e.g. {}",
        suggestions.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(" or ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addrs() {
        assert_eq!(
            parse_listen_addr(":8080"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert_eq!(
            parse_listen_addr("0.0.0.0:8080"),
            Ok(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert!(parse_listen_addr("[::]:443").is_ok());
        assert!(parse_listen_addr("localhost:80").is_ok());
        assert!(parse_listen_addr("8080").is_err());
        assert!(parse_listen_addr("0.0.0.0:99999").is_err());
    }

    #[test]
    fn pitfall() {
        let m = base_domain_pitfall("example.com", "your-domain.example.com").expect("parent");
        assert!(m.contains("parent domain"), "{m}");
        assert!(m.contains("\"vpn.example.com\""), "{m}");
        let m = base_domain_pitfall("hs.example.com", "hs.example.com").expect("same");
        assert!(m.contains("same"), "{m}");
        assert!(m.contains("vpn.example.com"), "{m}");
        assert!(base_domain_pitfall("vpn.example.com", "your-domain.example.com").is_none());
        assert!(base_domain_pitfall("ample.com", "example.com").is_none());
        // The suggestion itself must be safe.
        let m = base_domain_pitfall("example.com", "a.vpn.example.com").expect("parent");
        assert!(!m.contains("\"vpn.example.com\""), "{m}");
    }

    #[test]
    fn dns_names() {
        assert!(check_dns_name("vpn.example.com").is_ok());
        assert!(check_dns_name("tailnet.internal.").is_ok());
        assert!(check_dns_name("bad..name").is_err());
        assert!(check_dns_name("-x.com").is_err());
        assert!(check_dns_name("a b.com").is_err());
    }
}
