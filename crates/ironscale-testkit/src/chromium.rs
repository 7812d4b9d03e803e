//! A login in a real browser: Debian's headless Chromium (`/usr/bin/chromium`, `apt-get install
//! chromium`) driven by npm `playwright-core` 1.64.1 (driver only; installed from the crate's
//! `chromium/package-lock.json` into [`chromium_driver_dir`] by `.ci/run` or on first use) with
//! the crate's script `chromium/login.mjs`. Each run has a fresh profile, the flags
//! `--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
//! --disable-background-networking --disable-component-update --disable-sync`, and is killed by
//! PID if it overruns.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::error::{Context, Result};
use crate::lab::Host;
use crate::oidc::{install_oidc_provider, installed_package_version, npm_install, NpmPackage};
use crate::util::{self, tail_file, CHILD_PATH};

/// The npm `playwright-core` version the lock pins.
pub const PLAYWRIGHT_CORE_VERSION: &str = "1.64.1";
const SCRIPT: &str = include_str!("../chromium/login.mjs");
const PACKAGE_JSON: &str = include_str!("../chromium/package.json");
const PACKAGE_LOCK: &str = include_str!("../chromium/package-lock.json");
/// Longest a whole run may take (Chromium start, the flow, shutdown).
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

/// The driver's install directory: `$IRONSCALE_PLAYWRIGHT_DIR`, else
/// `$HOME/.cache/ironscale-playwright-core-1.64.1`.
pub fn chromium_driver_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IRONSCALE_PLAYWRIGHT_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(format!(
        ".cache/ironscale-playwright-core-{PLAYWRIGHT_CORE_VERSION}"
    ))
}

/// The Chromium binary: `$IRONSCALE_CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium_binary() -> PathBuf {
    std::env::var_os("IRONSCALE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Options of [`chromium_login_with`].
#[derive(Clone, Debug, Default)]
pub struct ChromiumOptions {
    /// A redirect to a URL starting with this is answered by the driver (not followed) and
    /// ends the run: the redirect target is [`ChromiumPage::url`] (e.g. the relying party's
    /// callback with an unused `code`).
    pub stop_at_prefix: Option<String>,
    /// Run Chromium in this `ip netns` namespace (needs root).
    pub netns: Option<String>,
}

impl ChromiumOptions {
    /// Options for a browser inside `host`'s namespace.
    pub fn in_host(host: &Host) -> ChromiumOptions {
        ChromiumOptions {
            netns: Some(host.ns().to_owned()),
            ..ChromiumOptions::default()
        }
    }
}

/// Where a Chromium login ended.
#[derive(Clone, Debug)]
pub struct ChromiumPage {
    /// The final URL (or the stop URL).
    pub url: String,
    /// HTTP status of the last main-frame navigation, if one was answered.
    pub status: Option<u16>,
    /// The page title.
    pub title: String,
    /// The page's visible text (`document.body.innerText`).
    pub text: String,
    /// Every main-frame navigation request, redirects included, in order.
    pub hops: Vec<String>,
    /// True when the run ended at [`ChromiumOptions::stop_at_prefix`].
    pub stopped: bool,
}

/// [`chromium_login_with`] with default options (the test's own namespace, no stop).
pub fn chromium_login(start_url: &str, username: &str, password: &str) -> Result<ChromiumPage> {
    chromium_login_with(&ChromiumOptions::default(), start_url, username, password)
}

/// Opens `start_url` in headless Chromium, fills the test provider's login form with
/// `username`/`password` (and approves its consent form), and returns where the browser ended:
/// normally the relying party's page after its callback. Wrong credentials end on the login
/// page (status 401).
pub fn chromium_login_with(
    opts: &ChromiumOptions,
    start_url: &str,
    username: &str,
    password: &str,
) -> Result<ChromiumPage> {
    let chromium = chromium_binary();
    if !chromium.is_file() {
        bail!(
            "no Chromium at {} (install Debian's: apt-get install chromium, as .ci/run does; or \
             set IRONSCALE_CHROMIUM)",
            chromium.display()
        );
    }
    let node = install_oidc_provider()?.node;
    let driver = chromium_driver_dir();
    if installed_package_version(&driver, "playwright-core").as_deref()
        != Some(PLAYWRIGHT_CORE_VERSION)
    {
        let pkg = NpmPackage {
            package_json: PACKAGE_JSON,
            package_lock: PACKAGE_LOCK,
            probe: "playwright-core",
            version: PLAYWRIGHT_CORE_VERSION,
        };
        npm_install(&driver, &pkg).with_context(|| {
            format!(
                "installing npm playwright-core {PLAYWRIGHT_CORE_VERSION} into {}",
                driver.display()
            )
        })?;
    }
    let dir = util::unique_path(&std::env::temp_dir(), "ironscale-chromium");
    util::mkdir_private(&dir)?;
    let result = run_driver(
        &dir, &node, &driver, &chromium, opts, start_url, username, password,
    );
    if result.is_ok() || std::env::var_os("IRONSCALE_KEEP_CHROMIUM").is_none() {
        let _ = fs::remove_dir_all(&dir);
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn run_driver(
    dir: &Path,
    node: &Path,
    driver: &Path,
    chromium: &Path,
    opts: &ChromiumOptions,
    start_url: &str,
    username: &str,
    password: &str,
) -> Result<ChromiumPage> {
    fs::write(dir.join("login.mjs"), SCRIPT)?;
    std::os::unix::fs::symlink(driver.join("node_modules"), dir.join("node_modules"))
        .with_context(|| format!("cannot link node_modules into {}", dir.display()))?;
    let profile = dir.join("profile");
    util::mkdir_private(&profile)?;
    let args = json!({
        "chromium": chromium.to_string_lossy(),
        "user_data_dir": profile.to_string_lossy(),
        "start_url": start_url,
        "username": username,
        "password": password,
        "stop_at_prefix": opts.stop_at_prefix,
        "timeout_ms": 20000,
    });
    let args_path = dir.join("args.json");
    util::write_private(&args_path, args.to_string().as_bytes())?;
    let out_path = dir.join("out.json");
    let log_path = dir.join("driver.log");
    let mut cmd = match &opts.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(node);
            c
        }
        None => Command::new(node),
    };
    cmd.arg(dir.join("login.mjs"))
        .arg(&args_path)
        .current_dir(dir)
        .env_clear()
        .env("PATH", CHILD_PATH)
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(fs::File::create(&out_path)?))
        .stderr(Stdio::from(fs::File::create(&log_path)?));
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", node.display()))?;
    let deadline = Instant::now() + RUN_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if Instant::now() >= deadline {
            // its own process group: the driver and the Chromium it started
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
            }
            let _ = child.wait();
            bail!(
                "the Chromium driver did not finish within {}s; log:\n{}",
                RUN_TIMEOUT.as_secs(),
                tail_file(&log_path, 40)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = fs::read_to_string(&out_path).unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with('{')) else {
        bail!(
            "the Chromium driver printed no result ({status}); log:\n{}",
            tail_file(&log_path, 40)
        );
    };
    let v: Value = serde_json::from_str(line)
        .with_context(|| format!("Chromium driver result is not JSON: {line}"))?;
    let hops: Vec<String> = v
        .get("hops")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        bail!(
            "Chromium login failed at {}: {err}\nhops: {hops:?}\nlog:\n{}",
            s("url"),
            tail_file(&log_path, 20)
        );
    }
    Ok(ChromiumPage {
        url: s("url"),
        status: v
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|x| u16::try_from(x).ok()),
        title: s("title"),
        text: s("text"),
        hops,
        stopped: v.get("stopped").and_then(Value::as_bool).unwrap_or(false),
    })
}
