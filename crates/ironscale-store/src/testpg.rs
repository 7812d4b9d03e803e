//! A throwaway PostgreSQL for tests (feature `test-pg`).
//!
//! * If `IRONSCALE_TEST_PG_URL` is set, that server is used.
//! * Otherwise a private cluster is created with the system's PostgreSQL
//!   binaries (`IRONSCALE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`):
//!   `initdb` + `pg_ctl` in a temp dir, on a free loopback port, `fsync=off`,
//!   trust auth. As root the binaries run as user `postgres` via `runuser`.
//!   The cluster is stopped and deleted on drop.
//!
//! Missing binaries are an error with a clear message, never a silent skip.
//! Each [`TestPg::fresh_database`] call creates a new empty database.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ironscale_config::{PostgresConfig, Secret};
use sqlx::Connection;

pub struct TestPg {
    /// `postgres://…/postgres` (maintenance database).
    base_url: String,
    cluster: Option<Cluster>,
}

struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

static DB_SEQ: AtomicU32 = AtomicU32::new(0);

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn find_bin() -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os("IRONSCALE_PG_BIN") {
        return Ok(PathBuf::from(b));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|e| format!("PostgreSQL binaries not found ({}: {e}); install them with `apt-get install -y postgresql`, or set IRONSCALE_TEST_PG_URL", root.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok().map(|v| (v, e.path().join("bin"))))
        .filter(|(_, p)| p.join("initdb").exists() && p.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p).ok_or_else(|| {
        "no initdb/pg_ctl under /usr/lib/postgresql/*/bin; install PostgreSQL (`apt-get install -y postgresql`) or set IRONSCALE_TEST_PG_URL".to_string()
    })
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

impl Cluster {
    fn cmd(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        }
    }
}

fn run(mut c: Command, what: &str) -> Result<(), String> {
    let out = c.output().map_err(|e| format!("{what}: cannot run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl TestPg {
    /// Use `IRONSCALE_TEST_PG_URL` or start a private cluster.
    pub fn start() -> Result<TestPg, String> {
        if let Ok(url) = std::env::var("IRONSCALE_TEST_PG_URL") {
            if !url.is_empty() {
                return Ok(TestPg {
                    base_url: url,
                    cluster: None,
                });
            }
        }
        let bin = find_bin()?;
        let as_postgres = is_root();
        let dir = tempfile::Builder::new()
            .prefix("ironscale-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if as_postgres {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown of the cluster dir to postgres",
            )?;
        }
        let data = dir.path().join("data");
        let cluster = Cluster {
            bin,
            data: data.clone(),
            as_postgres,
            _dir: dir,
        };
        let mut init = cluster.cmd("initdb");
        init.args([
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            "-D",
        ])
        .arg(&data);
        run(init, "initdb")?;
        let sock_dir = cluster._dir.path().to_path_buf();
        let log = cluster._dir.path().join("postgres.log");
        // A port can be taken between our probe and the server's bind: retry a few times.
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port()?;
            let mut start = cluster.cmd("pg_ctl");
            start
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .arg("-w")
                .arg("-t")
                .arg("60")
                .arg("-o")
                .arg(format!(
                    "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                    sock_dir.display()
                ))
                .arg("start");
            match run(start, "pg_ctl start") {
                Ok(()) => {
                    return Ok(TestPg {
                        base_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
                        cluster: Some(cluster),
                    });
                }
                Err(e) => {
                    let logtext = std::fs::read_to_string(&log).unwrap_or_default();
                    last_err = format!("{e}\n--- server log ---\n{logtext}");
                }
            }
        }
        Err(last_err)
    }

    /// The maintenance database URL.
    pub fn url(&self) -> &str {
        &self.base_url
    }

    /// Create a new, empty database and return its URL.
    pub async fn fresh_database(&self) -> Result<String, String> {
        let name = format!(
            "ironscale_test_{}_{}",
            std::process::id(),
            DB_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.base_url)
            .await
            .map_err(|e| {
                format!(
                    "cannot connect to {}: {e}",
                    crate::redact_url(&self.base_url)
                )
            })?;
        sqlx::raw_sql(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        let _ = conn.close().await;
        let (head, _) = self.base_url.rsplit_once('/').ok_or("bad base URL")?;
        let query = self
            .base_url
            .split_once('?')
            .map(|(_, q)| format!("?{q}"))
            .unwrap_or_default();
        Ok(format!("{head}/{name}{query}"))
    }

    /// Create a new, empty database and return the configuration naming it
    /// (pool keys at their Headscale defaults), for [`crate::Store::open`].
    pub async fn fresh_config(&self) -> Result<PostgresConfig, String> {
        config_for_url(&self.fresh_database().await?)
    }
}

fn percent_decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|e| e.to_string())
}

/// The configuration for a `postgres://user[:pass]@host[:port]/db[?sslmode=…]`
/// URL (the inverse of [`PostgresConfig::url`] for TCP hosts).
pub fn config_for_url(url: &str) -> Result<PostgresConfig, String> {
    let bad = || {
        format!(
            "not a postgres://user@host:port/db URL: {}",
            crate::redact_url(url)
        )
    };
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or_else(bad)?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (auth, rest) = rest.rsplit_once('@').ok_or_else(bad)?;
    let (user, pass) = auth.split_once(':').unwrap_or((auth, ""));
    let (hostport, name) = rest.split_once('/').ok_or_else(bad)?;
    let (host, port) = match hostport.strip_prefix('[') {
        Some(v6) => {
            let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
            (h, tail.strip_prefix(':'))
        }
        None => match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        },
    };
    let port = port.map_or(Ok(5432), |p| p.parse::<u16>().map_err(|_| bad()))?;
    let ssl = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sslmode="))
        .unwrap_or("disable");
    Ok(PostgresConfig {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port,
        name: percent_decode(name)?,
        user: percent_decode(user)?,
        pass: Secret::new(percent_decode(pass)?),
        ssl: ssl.to_string(),
        max_open_conns: 10,
        max_idle_conns: 10,
        conn_max_idle_time: std::time::Duration::from_secs(3600),
    })
}

impl Drop for TestPg {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let mut stop = c.cmd("pg_ctl");
            stop.arg("-D")
                .arg(&c.data)
                .args(["-m", "immediate", "-w", "stop"]);
            let _ = stop.output();
        }
    }
}
