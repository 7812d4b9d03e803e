//! `ironscale serve` inside the lab's hub namespace, plus the admin CLI.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::error::{Context, Error, Result};
use crate::lab::{Host, Lab, Proc};
use crate::util::{self, output_text, run, tail_file, wait_until, CHILD_PATH};

/// Control (HTTP) port on the hub address.
pub const CONTROL_PORT: u16 = 8080;
/// Metrics port on the hub address.
pub const METRICS_PORT: u16 = 9090;
/// Embedded DERP (TLS) port on the hub address.
pub const DERP_TLS_PORT: u16 = 3341;
/// STUN (UDP) port on the hub address.
pub const STUN_PORT: u16 = 3478;
/// DERP region code configured for the lab; `tailscale ping` prints `via DERP(lab)`.
pub const DERP_REGION_CODE: &str = "lab";

/// The server binary: `explicit`, else `$IRONSCALE_BIN`.
pub fn server_bin(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_owned());
    }
    std::env::var_os("IRONSCALE_BIN")
        .map(PathBuf::from)
        .context("no ironscale binary: pass env!(\"CARGO_BIN_EXE_ironscale\") or set IRONSCALE_BIN")
}

/// Options for creating a pre-auth key.
#[derive(Clone, Debug, Default)]
pub struct KeyOpts {
    /// `--reusable`
    pub reusable: bool,
    /// `--ephemeral`
    pub ephemeral: bool,
    /// `--expiration <dur>` (e.g. `1h`)
    pub expiration: Option<String>,
    /// `--tags tag:a,tag:b`
    pub tags: Vec<String>,
}

/// A node as listed by `ironscale nodes list -o json` (Headscale field names).
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// `id`
    pub id: u64,
    /// `name` (the hostname the node reported)
    pub name: String,
    /// `given_name`
    pub given_name: String,
    /// `ip_addresses`
    pub ip_addresses: Vec<String>,
    /// `online`
    pub online: Option<bool>,
    /// `user.name`
    pub user: Option<String>,
    /// The whole JSON object.
    pub raw: Value,
}

impl NodeInfo {
    fn from_json(v: &Value) -> Result<NodeInfo> {
        let id = match v.get("id") {
            Some(Value::Number(n)) => n.as_u64(),
            Some(Value::String(s)) => s.parse().ok(),
            _ => None,
        }
        .with_context(|| format!("node without numeric id: {v}"))?;
        let s = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Ok(NodeInfo {
            id,
            name: s("name"),
            given_name: s("given_name"),
            ip_addresses: v
                .get("ip_addresses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            online: v.get("online").and_then(Value::as_bool),
            user: v
                .get("user")
                .and_then(|u| u.get("name"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            raw: v.clone(),
        })
    }

    /// The first IPv4 address.
    pub fn ipv4(&self) -> Option<String> {
        self.ip_addresses
            .iter()
            .find(|a| a.parse::<std::net::Ipv4Addr>().is_ok())
            .cloned()
    }
}

/// The server under test, running in the hub namespace.
pub struct ServerProc {
    hub: Host,
    bin: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    /// What `config` holds (the default lab config merged with the overrides).
    cfg: Value,
    log: PathBuf,
    socket: PathBuf,
    url: String,
    proc: Option<Proc>,
    starts: u32,
    /// Extra environment for the server process (kept across restarts).
    env: Vec<(String, String)>,
}

impl ServerProc {
    /// The default configuration for a lab (Headscale keys); `overrides` is deep-merged into it
    /// (`null` removes a key).
    pub fn default_config(lab: &Lab, dir: &Path) -> Value {
        let hub = lab.hub_ip();
        json!({
            "server_url": format!("http://{hub}:{CONTROL_PORT}"),
            "listen_addr": format!("{hub}:{CONTROL_PORT}"),
            "metrics_listen_addr": format!("{hub}:{METRICS_PORT}"),
            "noise": {"private_key_path": dir.join("noise_private.key").to_string_lossy()},
            "prefixes": {"v4": "100.64.0.0/10", "v6": "fd7a:115c:a1e0::/48", "allocation": "sequential"},
            "database": {"type": "sqlite", "sqlite": {"path": dir.join("db.sqlite").to_string_lossy()}},
            "unix_socket": dir.join("ironscale.sock").to_string_lossy(),
            "derp": {
                "server": {
                    "enabled": true,
                    "region_id": 900,
                    "region_code": DERP_REGION_CODE,
                    "region_name": "Lab",
                    "stun_listen_addr": format!("{hub}:{STUN_PORT}"),
                    "private_key_path": dir.join("derp_server_private.key").to_string_lossy(),
                    "ipv4": hub.to_string(),
                    "tls_listen_addr": format!("{hub}:{DERP_TLS_PORT}"),
                },
                "urls": [],
                "paths": [],
                "auto_update_enabled": false,
            },
            "dns": {"magic_dns": true, "base_domain": "tail.test", "nameservers": {"global": []}},
            "log": {"level": "debug"},
        })
    }

    /// Writes the config, starts `ironscale serve -c FILE` in the hub namespace and waits until
    /// `GET /key?v=130` answers 200 and the CLI socket exists. `bin`: the server binary (pass
    /// `Some(Path::new(env!("CARGO_BIN_EXE_ironscale")))`); `None` uses `$IRONSCALE_BIN`.
    pub fn start(lab: &Lab, bin: Option<&Path>, overrides: Value) -> Result<ServerProc> {
        Self::start_with_env(lab, bin, overrides, &[])
    }

    /// [`ServerProc::start`] with extra environment variables for the server.
    pub fn start_with_env(
        lab: &Lab,
        bin: Option<&Path>,
        overrides: Value,
        env: &[(&str, &str)],
    ) -> Result<ServerProc> {
        let bin = server_bin(bin)?;
        let dir = lab.dir().join("server");
        util::mkdir_private(&dir)?;
        let mut cfg = Self::default_config(lab, &dir);
        util::merge_json(&mut cfg, &overrides);
        let config = dir.join("config.yaml");
        util::write_private(&config, util::to_yaml(&cfg).as_bytes())?;
        let socket = cfg
            .get("unix_socket")
            .and_then(Value::as_str)
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("ironscale.sock"));
        let url = cfg
            .get("server_url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let mut s = ServerProc {
            url,
            hub: lab.hub().clone(),
            bin,
            log: dir.join("server.log"),
            dir,
            config,
            cfg,
            socket,
            proc: None,
            starts: 0,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        s.spawn_and_wait()?;
        Ok(s)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        self.starts += 1;
        if let Ok(mut f) = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
        {
            let _ = writeln!(f, "\n[testkit] ===== server start #{} =====", self.starts);
        }
        let _ = fs::remove_file(&self.socket);
        let mut cmd = self.hub.command_with_home(&self.bin, &self.dir);
        cmd.arg("serve")
            .arg("-c")
            .arg(&self.config)
            .env("RUST_BACKTRACE", "1");
        if let Some(v) = std::env::var_os("RUST_LOG") {
            cmd.env("RUST_LOG", v);
        }
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let (proc, _, _) =
            self.hub
                .spawn_logged("ironscale-serve", cmd, &self.log, false, false)?;
        let url = format!("{}/key?v=130", self.url());
        let hub = self.hub.clone();
        let socket = self.socket.clone();
        let res = wait_until(
            "ironscale serve to answer /key",
            Duration::from_secs(60),
            Duration::from_millis(200),
            || {
                if !proc.is_running() {
                    fail!("ironscale serve exited ({:?})", proc.exit_status());
                }
                // -k: only readiness is checked here (tests that care check the certificate).
                let out = run(hub.command("curl").args([
                    "-s",
                    "-k",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-m",
                    "2",
                    &url,
                ]))?;
                let code = String::from_utf8_lossy(&out.stdout).into_owned();
                if code != "200" {
                    bail!("GET {url} -> {code:?}");
                }
                if !socket.exists() {
                    bail!("CLI socket {} not there yet", socket.display());
                }
                Ok(Some(()))
            },
        );
        self.proc = Some(proc);
        res.map_err(|e| {
            Error::msg(format!(
                "{e}\n--- server log tail ---\n{}",
                self.log_tail(60)
            ))
        })
    }

    /// The configured `server_url`, e.g. `http://10.99.<k>.1:8080`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The config file path.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The configuration the file holds now.
    pub fn config(&self) -> &Value {
        &self.cfg
    }

    /// Deep-merges `overrides` into the current configuration (`null` removes a key) and
    /// rewrites the config file (in place); the running server is not told (send SIGHUP with
    /// [`ServerProc::signal`], or [`ServerProc::restart`]).
    pub fn update_config(&mut self, overrides: &Value) -> Result<()> {
        util::merge_json(&mut self.cfg, overrides);
        util::write_private(&self.config, util::to_yaml(&self.cfg).as_bytes())
    }

    /// The server's working directory (database, keys, log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server log (all starts appended).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Last `n` log lines.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log, n)
    }

    /// True while the server process is alive.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Sends a signal to the server process (e.g. SIGHUP).
    pub fn signal(&self, sig: Signal) -> Result<()> {
        match &self.proc {
            Some(p) => p.signal(sig),
            None => bail!("the server is not running"),
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }

    /// Stops and starts the server with the same config and data.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Runs `ironscale -c FILE <args>` (in the machine's namespace: the CLI only talks to the
    /// unix socket).
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        run(Command::new(&self.bin)
            .arg("-c")
            .arg(&self.config)
            .args(args)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("HOME", self.dir.join("home"))
            .env("NO_COLOR", "1"))
    }

    /// Like [`ServerProc::cli`], failing unless the command succeeds; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.cli(args)?;
        if !out.status.success() {
            bail!(
                "`ironscale {}` failed ({}):\n{}",
                args.join(" "),
                out.status,
                output_text(&out)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `users create NAME`
    pub fn create_user(&self, name: &str) -> Result<()> {
        self.cli_ok(&["users", "create", name]).map(drop)
    }

    /// `preauthkeys create --user NAME … -o json`; returns the key.
    pub fn create_preauthkey(&self, user: &str, opts: &KeyOpts) -> Result<String> {
        let mut args = vec!["preauthkeys", "create", "--user", user];
        if opts.reusable {
            args.push("--reusable");
        }
        if opts.ephemeral {
            args.push("--ephemeral");
        }
        if let Some(e) = &opts.expiration {
            args.extend(["--expiration", e.as_str()]);
        }
        let tags = opts.tags.join(",");
        if !tags.is_empty() {
            args.extend(["--tags", tags.as_str()]);
        }
        args.extend(["-o", "json"]);
        let out = self.cli_ok(&args)?;
        parse_key(&out).with_context(|| {
            format!(
                "cannot find the key in `ironscale {}` output:\n{out}",
                args.join(" ")
            )
        })
    }

    /// A reusable key of `user` valid for an hour (what most tests join with).
    pub fn reusable_key(&self, user: &str) -> Result<String> {
        self.create_preauthkey(
            user,
            &KeyOpts {
                reusable: true,
                expiration: Some("1h".into()),
                ..KeyOpts::default()
            },
        )
    }

    /// `preauthkeys expire --user NAME KEY`
    pub fn expire_preauthkey(&self, user: &str, key: &str) -> Result<()> {
        self.cli_ok(&["preauthkeys", "expire", "--user", user, key])
            .map(drop)
    }

    /// `nodes list -o json`
    pub fn nodes(&self) -> Result<Vec<NodeInfo>> {
        let out = self.cli_ok(&["nodes", "list", "-o", "json"])?;
        let v: Value = serde_json::from_str(out.trim())
            .with_context(|| format!("`nodes list -o json` printed no JSON:\n{out}"))?;
        match v {
            Value::Array(items) => items.iter().map(NodeInfo::from_json).collect(),
            Value::Null => Ok(Vec::new()),
            other => bail!("`nodes list -o json` printed no array: {other}"),
        }
    }

    /// `nodes delete --identifier ID --force`
    pub fn delete_node(&self, id: u64) -> Result<()> {
        self.cli_ok(&[
            "nodes",
            "delete",
            "--identifier",
            &id.to_string(),
            "--force",
        ])
        .map(drop)
    }
}

fn parse_key(out: &str) -> Option<String> {
    if let Ok(v) = serde_json::from_str::<Value>(out.trim()) {
        if let Some(k) = v.get("key").and_then(Value::as_str) {
            return Some(k.to_owned());
        }
    }
    out.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_owned)
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}

/// The usual start of an interop test: the root check, the clients installed,
/// a fresh lab named `prefix`, `ironscale serve` (`bin`) with the default lab
/// config merged with `overrides`, and one user, `user`.
pub fn lab_with_server(
    prefix: &str,
    bin: &Path,
    overrides: Value,
    user: &str,
) -> Result<(crate::Clients, Lab, ServerProc)> {
    lab_with_server_env(prefix, bin, overrides, user, &[])
}

/// [`lab_with_server`] with extra environment variables for the server.
pub fn lab_with_server_env(
    prefix: &str,
    bin: &Path,
    overrides: Value,
    user: &str,
    env: &[(&str, &str)],
) -> Result<(crate::Clients, Lab, ServerProc)> {
    util::require_root()?;
    let clients = crate::install_clients()?;
    let lab = Lab::new(prefix)?;
    let server = ServerProc::start_with_env(&lab, Some(bin), overrides, env)?;
    server.create_user(user)?;
    Ok((clients, lab, server))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_parsing() {
        assert_eq!(
            parse_key("{\"key\": \"abc\", \"id\": 1}").as_deref(),
            Some("abc")
        );
        assert_eq!(parse_key("some text\nkey123\n").as_deref(), Some("key123"));
    }

    #[test]
    fn node_parsing() {
        let v = json!({"id": "3", "name": "a", "given_name": "a", "ip_addresses": ["100.64.0.1", "fd7a::1"],
                       "online": true, "user": {"name": "alice"}});
        let n = NodeInfo::from_json(&v).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(n.id, 3);
        assert_eq!(n.ipv4().as_deref(), Some("100.64.0.1"));
        assert_eq!(n.user.as_deref(), Some("alice"));
    }
}
