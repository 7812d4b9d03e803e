//! The baseshift forwarder (tsnet 1.86.0, capver 122): JSON requests on stdin, JSON answers on
//! stdout, runs while stdin stays open (real-clients.md §1.2). It ignores
//! `TS_NO_LOGS_NO_SUPPORT`, so it may only run in a lab namespace (no route out).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::install::Clients;
use crate::lab::{Host, Proc};
use crate::util::{tail_file, wait_until};

/// Options of the `start` request.
#[derive(Clone, Debug)]
pub struct BaseshiftOptions {
    /// Control URL.
    pub control_url: String,
    /// Auth key.
    pub auth_key: String,
    /// Tailnet hostname.
    pub hostname: String,
    /// Register as ephemeral.
    pub ephemeral: bool,
    /// Tailnet host (name or IP) to forward to.
    pub remote_host: String,
    /// Tailnet port to forward to.
    pub remote_port: u16,
    /// Loopback port to listen on (in the node's namespace).
    pub local_port: u16,
}

/// A running baseshift forwarder.
pub struct BaseshiftNode {
    host: Host,
    name: String,
    dir: PathBuf,
    log: PathBuf,
    opts: BaseshiftOptions,
    stdin: Option<ChildStdin>,
    responses: Arc<Mutex<Vec<Value>>>,
    proc: Option<Proc>,
}

impl BaseshiftNode {
    /// Starts the forwarder with `HOME=<host dir>/<name>/home` (state in
    /// `$HOME/.baseshift/tsnet-state`), sends the `start` request and waits for its answer.
    pub fn start(
        host: &Host,
        clients: &Clients,
        name: &str,
        opts: BaseshiftOptions,
    ) -> Result<BaseshiftNode> {
        if host.name() == "hub" {
            bail!("baseshift must run in a client host namespace");
        }
        let dir = host.dir().join(name);
        crate::util::mkdir_private(&dir)?;
        let log = dir.join("baseshift.log");
        let mut cmd = host.command_with_home(&clients.baseshift, &dir);
        cmd.env("TS_ASSUME_NETWORK_UP_FOR_TEST", "1");
        let (proc, stdin, stdout) =
            host.spawn_logged(&format!("baseshift {name}"), cmd, &log, true, true)?;
        host.register_log(
            &format!("baseshift {name} own logs"),
            &dir.join("home/.baseshift/logs"),
        );
        let responses = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = stdout {
            let responses = responses.clone();
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out)
                    .lines()
                    .map_while(std::result::Result::ok)
                {
                    if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(&log) {
                        let _ = writeln!(f, "[stdout] {line}");
                    }
                    if let Ok(v) = serde_json::from_str::<Value>(&line) {
                        responses.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                    }
                }
            });
        }
        let mut n = BaseshiftNode {
            host: host.clone(),
            name: name.to_owned(),
            dir,
            log,
            opts,
            stdin,
            responses,
            proc: Some(proc),
        };
        let req = json!({
            "action": "start",
            "control_url": n.opts.control_url,
            "auth_key": n.opts.auth_key,
            "hostname": n.opts.hostname,
            "ephemeral": n.opts.ephemeral,
            "remote_host": n.opts.remote_host,
            "remote_port": n.opts.remote_port,
            "local_port": n.opts.local_port,
        });
        let resp = n.request(&req, Duration::from_secs(30))?;
        if resp.get("success").and_then(Value::as_bool) != Some(true) {
            return Err(n.err(format!("start request refused: {resp}")));
        }
        Ok(n)
    }

    /// Sends one JSON request line and waits for the next response.
    pub fn request(&mut self, req: &Value, timeout: Duration) -> Result<Value> {
        let before = self
            .responses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::msg("baseshift stdin already closed"))?;
        writeln!(stdin, "{req}")?;
        stdin.flush()?;
        let responses = self.responses.clone();
        let proc = self.proc.as_ref();
        wait_until(
            "baseshift response",
            timeout,
            Duration::from_millis(100),
            || {
                if let Some(v) = responses
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(before)
                {
                    return Ok(Some(v.clone()));
                }
                if !proc.is_some_and(Proc::is_running) {
                    fail!("baseshift exited");
                }
                Ok(None)
            },
        )
        .map_err(|e| self.err(e))
    }

    /// `{"action":"status"}`
    pub fn status(&mut self) -> Result<Value> {
        self.request(&json!({"action": "status"}), Duration::from_secs(10))
    }

    /// GET `http://127.0.0.1:<local_port><path>` in the node's namespace (through the forwarder).
    pub fn get(&self, path: &str, timeout: Duration) -> Result<String> {
        self.host.http_get(
            &format!("http://127.0.0.1:{}{path}", self.opts.local_port),
            timeout,
        )
    }

    /// Closes stdin (the forwarder's stop signal), then stops the process by PID.
    pub fn stop(&mut self) {
        self.stdin = None;
        if let Some(p) = self.proc.take() {
            let _ = wait_until(
                "baseshift to exit",
                Duration::from_secs(3),
                Duration::from_millis(100),
                || Ok((!p.is_running()).then_some(())),
            );
            p.stop();
        }
    }

    /// True while the process is alive.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// The node directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Process log (stderr + stdout lines).
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// An error with the log tail attached.
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::msg(format!(
            "[baseshift {}] {msg}\n--- baseshift log tail ---\n{}",
            self.name,
            tail_file(&self.log, 40)
        ))
    }
}

impl Drop for BaseshiftNode {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}
