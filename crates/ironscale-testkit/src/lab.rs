//! Network-namespace lab: a hub namespace with a bridge (the server runs there) and one namespace
//! per client host, each attached to the bridge by a veth pair. No namespace has a default route:
//! client traffic can only reach the lab subnet.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};
use crate::util::{self, ip, python3, require_root, run, run_ok, tail_file, CHILD_PATH};

/// Lines of each log printed when a test fails.
const DUMP_LINES: usize = 60;

struct ProcEntry {
    name: String,
    child: Child,
    status: Option<ExitStatus>,
}

pub(crate) struct LabInner {
    prefix: String,
    /// `<prefix>-<pid>`: namespace names and the lab directory start with it, so concurrent test
    /// processes (e.g. two people running the same test) never touch each other's labs.
    base: String,
    subnet: u8,
    dir: PathBuf,
    namespaces: Mutex<Vec<String>>,
    procs: Mutex<BTreeMap<u32, ProcEntry>>,
    logs: Mutex<Vec<(String, PathBuf)>>,
    next_host: Mutex<u8>,
    _guard: PrefixGuard,
}

/// Prefixes of the labs alive in this process (one lab per prefix at a time).
static ACTIVE_PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct PrefixGuard(String);

impl PrefixGuard {
    fn claim(prefix: &str) -> Result<PrefixGuard> {
        let mut active = lock(&ACTIVE_PREFIXES);
        if active.iter().any(|p| p == prefix) {
            bail!("a lab with prefix {prefix:?} already exists in this process");
        }
        active.push(prefix.to_owned());
        Ok(PrefixGuard(prefix.to_owned()))
    }
}

impl Drop for PrefixGuard {
    fn drop(&mut self) {
        lock(&ACTIVE_PREFIXES).retain(|p| p != &self.0);
    }
}

/// For a name `<prefix>-<pid>[-…]`, the pid.
fn stale_owner(name: &str, prefix: &str) -> Option<u32> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('-')?;
    let digits = rest.split('-').next()?;
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LabInner {
    fn hub_ns(&self) -> String {
        format!("{}-hub", self.base)
    }

    pub(crate) fn register_log(&self, name: &str, path: &Path) {
        let mut logs = lock(&self.logs);
        if !logs.iter().any(|(_, p)| p == path) {
            logs.push((name.to_owned(), path.to_owned()));
        }
    }

    fn exited(&self, pid: u32) -> Option<ExitStatus> {
        let mut procs = lock(&self.procs);
        let e = procs.get_mut(&pid)?;
        if e.status.is_none() {
            if let Ok(Some(st)) = e.child.try_wait() {
                e.status = Some(st);
            }
        }
        e.status
    }

    fn is_running(&self, pid: u32) -> bool {
        let procs_has = lock(&self.procs).contains_key(&pid);
        procs_has && self.exited(pid).is_none()
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL; reaps the child and forgets it.
    fn stop(&self, pid: u32, grace: Duration) -> Option<ExitStatus> {
        if !lock(&self.procs).contains_key(&pid) {
            return None;
        }
        if self.exited(pid).is_none() {
            if let Some(e) = lock(&self.procs).get(&pid) {
                log_line(&format!("stopping {} (pid {pid})", e.name));
            }
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let start = Instant::now();
            while start.elapsed() < grace && self.exited(pid).is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            if self.exited(pid).is_none() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                let mut procs = lock(&self.procs);
                if let Some(e) = procs.get_mut(&pid) {
                    if let Ok(st) = e.child.wait() {
                        e.status = Some(st);
                    }
                }
            }
        }
        lock(&self.procs).remove(&pid).and_then(|e| e.status)
    }

    fn dump_logs(&self) -> String {
        let mut out = String::new();
        let logs = lock(&self.logs).clone();
        for (name, path) in logs {
            let mut files = Vec::new();
            if path.is_dir() {
                if let Ok(rd) = fs::read_dir(&path) {
                    let mut v: Vec<PathBuf> = rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_file())
                        .collect();
                    v.sort();
                    files.extend(v);
                }
            } else {
                files.push(path.clone());
            }
            for f in files {
                out.push_str(&format!(
                    "\n----- {name}: last {DUMP_LINES} lines of {} -----\n{}\n",
                    f.display(),
                    tail_file(&f, DUMP_LINES)
                ));
            }
        }
        out
    }

    fn teardown(&self) {
        let pids: Vec<u32> = lock(&self.procs).keys().copied().collect();
        for pid in pids {
            self.stop(pid, Duration::from_secs(3));
        }
        let namespaces = std::mem::take(&mut *lock(&self.namespaces));
        for ns in namespaces.iter().rev() {
            delete_namespace(ns);
        }
    }
}

fn log_line(msg: &str) {
    if std::env::var_os("IRONSCALE_TESTKIT_VERBOSE").is_some() {
        eprintln!("[testkit] {msg}");
    }
}

/// Kills every process still inside `ns` (by PID, SIGKILL), deletes the namespace and its
/// `/etc/netns/<ns>` directory.
fn delete_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip")
        .args(["netns", "pids", ns])
        .env("PATH", CHILD_PATH)
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                if pid > 1 && pid != std::process::id() as i32 {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .env("PATH", CHILD_PATH)
        .output();
    let _ = fs::remove_dir_all(Path::new("/etc/netns").join(ns));
}

/// Names of existing network namespaces.
pub fn list_namespaces() -> Vec<String> {
    Command::new("ip")
        .args(["netns", "list"])
        .env("PATH", CHILD_PATH)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A lab: hub namespace `<prefix>-<pid>-hub` with bridge `br0` and address `10.99.<k>.1/24`, plus
/// host namespaces `<prefix>-<pid>-<name>`. Dropping it stops every process it started (by PID) and deletes
/// its namespaces; when the thread is panicking it first prints the tail of every registered log
/// and keeps the lab directory.
pub struct Lab {
    inner: Arc<LabInner>,
    hub: Host,
}

impl Lab {
    /// Builds a fresh lab. Namespaces are named `<prefix>-<pid>-<host>` and the directory is
    /// `/tmp/ironscale-labs/<prefix>-<pid>` (`$IRONSCALE_LAB_DIR` overrides the root). Stale
    /// namespaces and directories of this prefix whose process is gone (left by a killed earlier
    /// run) are removed first, after killing the processes inside them (by PID); labs of live
    /// concurrent test processes are left alone.
    pub fn new(prefix: &str) -> Result<Lab> {
        require_root()?;
        if prefix.is_empty()
            || prefix.len() > 24
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            bail!("lab prefix {prefix:?} must be 1-24 chars of [a-z0-9-]");
        }
        let guard = PrefixGuard::claim(prefix)?;
        let me = std::process::id();
        for ns in list_namespaces() {
            if stale_owner(&ns, prefix).is_some_and(|pid| pid == me || !pid_alive(pid)) {
                eprintln!("[testkit] removing stale namespace {ns}");
                delete_namespace(&ns);
            }
        }
        let root = std::env::var_os("IRONSCALE_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/ironscale-labs"));
        if let Ok(rd) = fs::read_dir(&root) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if stale_owner(&name, prefix).is_some_and(|pid| pid == me || !pid_alive(pid)) {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let base = format!("{prefix}-{me}");
        let dir = root.join(&base);
        let _ = fs::remove_dir_all(&dir);
        util::mkdir_private(&dir)?;
        // The subnet only has to be unique for readability: every lab has its own hub namespace.
        let subnet = (prefix.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        }) % 250
            + 1) as u8;
        let inner = Arc::new(LabInner {
            prefix: prefix.to_owned(),
            base,
            _guard: guard,
            subnet,
            dir: dir.clone(),
            namespaces: Mutex::new(Vec::new()),
            procs: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(Vec::new()),
            next_host: Mutex::new(10),
        });
        let hub_ns = inner.hub_ns();
        let hub = Host {
            lab: inner.clone(),
            name: "hub".into(),
            ns: hub_ns.clone(),
            ip: Ipv4Addr::new(10, 99, subnet, 1),
            dir: dir.join("hub"),
        };
        let lab = Lab { inner, hub };
        create_namespace(&lab.inner, &hub_ns, &lab.hub.dir)?;
        ip(&["-n", &hub_ns, "link", "add", "br0", "type", "bridge"])?;
        ip(&[
            "-n",
            &hub_ns,
            "addr",
            "add",
            &format!("10.99.{subnet}.1/24"),
            "dev",
            "br0",
        ])?;
        ip(&["-n", &hub_ns, "link", "set", "br0", "up"])?;
        assert_no_default_route(&hub_ns)?;
        Ok(lab)
    }

    /// The lab prefix (namespace names start with `<prefix>-<pid>-`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The lab's working directory (logs, state, configs).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The hub namespace (where the server runs), address `10.99.<k>.1`.
    pub fn hub(&self) -> &Host {
        &self.hub
    }

    /// The hub address, where the server listens.
    pub fn hub_ip(&self) -> Ipv4Addr {
        self.hub.ip
    }

    /// The lab subnet, e.g. `10.99.7.0/24`.
    pub fn subnet(&self) -> String {
        format!("10.99.{}.0/24", self.inner.subnet)
    }

    /// Adds a host namespace `<prefix>-<pid>-<name>` with `eth0` on the lab subnet, `lo` up, no default
    /// route, and an (empty) `/etc/netns/<ns>/resolv.conf`.
    pub fn add_host(&self, name: &str) -> Result<Host> {
        if name.is_empty()
            || name.len() > 12
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            bail!("host name {name:?} must be 1-12 chars of [A-Za-z0-9-]");
        }
        let idx = {
            let mut n = lock(&self.inner.next_host);
            if *n >= 250 {
                bail!("too many hosts in lab {}", self.inner.prefix);
            }
            let i = *n;
            *n += 1;
            i
        };
        let ns = format!("{}-{name}", self.inner.base);
        let host = Host {
            lab: self.inner.clone(),
            name: name.to_owned(),
            ns: ns.clone(),
            ip: Ipv4Addr::new(10, 99, self.inner.subnet, idx),
            dir: self.inner.dir.join(name),
        };
        create_namespace(&self.inner, &ns, &host.dir)?;
        let hub_ns = self.inner.hub_ns();
        let port = format!("h{idx}");
        // Created inside the hub namespace with the peer end moved straight into the host
        // namespace: no interface ever appears in the machine's own namespace.
        ip(&[
            "-n", &hub_ns, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
            &ns,
        ])?;
        ip(&["-n", &hub_ns, "link", "set", &port, "master", "br0"])?;
        ip(&["-n", &hub_ns, "link", "set", &port, "up"])?;
        addr_up(&ns, "eth0", &format!("{}/24", host.ip))?;
        assert_no_default_route(&ns)?;
        Ok(host)
    }

    /// Adds a host behind a NAT router (the NAT lab of `real-clients.md` §5): a router
    /// namespace `<name>gw` on the lab subnet (its `eth0` address is the host's public address)
    /// that masquerades a private LAN `172.16.<i>.0/24`, and the host at `172.16.<i>.2` with its
    /// default route through the router. The router itself has no default route, so nothing
    /// the host sends gets further than the lab subnet.
    ///
    /// [`Nat::Easy`] preserves the source port (endpoint-independent mapping, as most home
    /// routers); [`Nat::Hard`] picks a random port per destination (endpoint-dependent,
    /// "symmetric" NAT). Both drop unsolicited inbound packets, as home routers do: dropped
    /// before conntrack confirms them, they leave no entry that would later clash with an
    /// outbound mapping and make the easy NAT pick another port.
    pub fn add_nat_host(&self, name: &str, nat: Nat) -> Result<NatHost> {
        if name.len() > 10 {
            bail!("NAT host name {name:?} must be at most 10 chars (the router adds \"gw\")");
        }
        let router = self.add_host(&format!("{name}gw"))?;
        let i = router.ip.octets()[3];
        let ns = format!("{}-{name}", self.inner.base);
        let host = Host {
            lab: self.inner.clone(),
            name: name.to_owned(),
            ns: ns.clone(),
            ip: Ipv4Addr::new(172, 16, i, 2),
            dir: self.inner.dir.join(name),
        };
        create_namespace(&self.inner, &ns, &host.dir)?;
        ip(&[
            "-n", &router.ns, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0",
            "netns", &ns,
        ])?;
        addr_up(&router.ns, "lan0", &format!("172.16.{i}.1/24"))?;
        addr_up(&ns, "eth0", &format!("{}/24", host.ip))?;
        ip(&[
            "-n",
            &ns,
            "route",
            "add",
            "default",
            "via",
            &format!("172.16.{i}.1"),
        ])?;
        router.exec_ok("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;
        let how = match nat {
            Nat::Easy => "masquerade",
            Nat::Hard => "masquerade fully-random",
        };
        let rules = router.dir.join("nat.nft");
        fs::write(
            &rules,
            format!(
                "table ip nat {{\n  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n    oifname \"eth0\" {how}\n  }}\n}}\n\
                 table ip filter {{\n  chain input {{ type filter hook input priority filter; policy accept;\n    iifname \"eth0\" ct state new drop\n  }}\n}}\n"
            ),
        )?;
        router.exec_ok("nft", &["-f", &rules.to_string_lossy()])?;
        assert_no_default_route(&router.ns)?;
        Ok(NatHost { host, router })
    }

    /// Adds a log file (or a directory of logs) to the failure dump.
    pub fn register_log(&self, name: &str, path: &Path) {
        self.inner.register_log(name, path);
    }

    /// The tail of every registered log (server, clients, helpers).
    pub fn dump_logs(&self) -> String {
        self.inner.dump_logs()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "\n===== lab {} failed; logs kept in {} =====\n{}",
                self.inner.prefix,
                self.inner.dir.display(),
                self.inner.dump_logs()
            );
        }
        self.inner.teardown();
        let keep = panicking || std::env::var_os("IRONSCALE_KEEP_LAB").is_some();
        if !keep {
            let _ = fs::remove_dir_all(&self.inner.dir);
        }
    }
}

fn create_namespace(lab: &LabInner, ns: &str, dir: &Path) -> Result<()> {
    // resolv.conf first: `ip netns exec` bind-mounts it over /etc/resolv.conf, so nothing a
    // client does to DNS settings can reach the machine's own file.
    let etc = Path::new("/etc/netns").join(ns);
    fs::create_dir_all(&etc).with_context(|| format!("cannot create {}", etc.display()))?;
    fs::write(
        etc.join("resolv.conf"),
        "# ironscale-testkit lab namespace: no resolver\n",
    )?;
    lock(&lab.namespaces).push(ns.to_owned());
    ip(&["netns", "add", ns])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    util::mkdir_private(dir)?;
    Ok(())
}

/// Gives `dev` in `ns` the address `cidr` and brings it up.
fn addr_up(ns: &str, dev: &str, cidr: &str) -> Result<()> {
    ip(&["-n", ns, "addr", "add", cidr, "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "up"])?;
    Ok(())
}

fn assert_no_default_route(ns: &str) -> Result<()> {
    for fam in ["-4", "-6"] {
        let r = ip(&["-n", ns, fam, "route", "show", "default"])?;
        if !r.trim().is_empty() {
            bail!("namespace {ns} unexpectedly has a default route: {r}");
        }
    }
    Ok(())
}

/// The kind of NAT in front of a [`NatHost`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// Port-preserving masquerade: endpoint-independent mapping.
    Easy,
    /// `masquerade fully-random`: a new port per destination (symmetric NAT).
    Hard,
}

/// A host behind its own NAT router (see [`Lab::add_nat_host`]).
#[derive(Clone, Debug)]
pub struct NatHost {
    /// The host, at `172.16.<i>.2` on its private LAN.
    pub host: Host,
    /// The router; its [`Host::ip`] is the host's public address.
    pub router: Host,
}

/// One namespace of the lab.
#[derive(Clone)]
pub struct Host {
    lab: Arc<LabInner>,
    name: String,
    ns: String,
    ip: Ipv4Addr,
    dir: PathBuf,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Host({} {} {})", self.name, self.ns, self.ip)
    }
}

impl Host {
    /// Short name given to [`Lab::add_host`] (`hub` for the hub).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Namespace name.
    pub fn ns(&self) -> &str {
        &self.ns
    }
    /// The host's address on the lab subnet.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The host's working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The hub (server) address of this host's lab.
    pub fn hub_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 99, self.lab.subnet, 1)
    }

    /// Adds a log to the lab's failure dump.
    pub fn register_log(&self, name: &str, path: &Path) {
        self.lab.register_log(name, path);
    }

    /// Runs `f` on a new thread inside this host's network namespace and returns its result.
    /// Sockets that `f` opens, threads it starts and processes it spawns are in the namespace
    /// (a new thread or child inherits the namespace of the thread that made it); the calling
    /// thread is untouched. For in-process clients of lab services: an HTTP "browser" built
    /// inside `f`, a server started from `f` that must listen on the lab subnet.
    pub fn run_in<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let path = Path::new("/run/netns").join(&self.ns);
        let ns = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        std::thread::spawn(move || -> Result<R> {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::msg(format!("entering the namespace: {e}")))?;
            Ok(f())
        })
        .join()
        .map_err(|_| Error::msg("the thread in the namespace panicked"))?
    }

    /// `/etc/netns/<ns>/resolv.conf`: what programs in this namespace see as
    /// `/etc/resolv.conf` (`ip netns exec` bind-mounts it there).
    pub fn resolv_conf_path(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.ns).join("resolv.conf")
    }

    /// The namespace's resolv.conf now (empty if unreadable).
    pub fn resolv_conf(&self) -> String {
        fs::read_to_string(self.resolv_conf_path()).unwrap_or_default()
    }

    /// A command that runs `program` inside this namespace with a clean environment: only
    /// `PATH`, `HOME`/`XDG_*` under the host directory, and the Tailscale safety variables
    /// (`TS_NO_LOGS_NO_SUPPORT=true`, `TS_LOGS_DIR`, `TS_DISABLE_PORTMAPPER=1`). `TS_AUTHKEY*`
    /// are therefore never inherited.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        self.command_with_home(program, &self.dir)
    }

    pub(crate) fn command_with_home(&self, program: impl AsRef<OsStr>, node_dir: &Path) -> Command {
        let home = node_dir.join("home");
        let logs = node_dir.join("tslogs");
        let _ = fs::create_dir_all(home.join(".config"));
        let _ = fs::create_dir_all(&logs);
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).arg(program.as_ref());
        c.env_clear()
            .env("PATH", CHILD_PATH)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .env("XDG_STATE_HOME", home.join(".local/state"))
            .env("TS_NO_LOGS_NO_SUPPORT", "true")
            .env("TS_LOGS_DIR", &logs)
            .env("TS_DISABLE_PORTMAPPER", "1")
            .current_dir(node_dir);
        c
    }

    /// Runs `program args…` in the namespace and returns its output.
    pub fn exec<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Result<Output> {
        run(self.command(program).args(args))
    }

    /// Like [`Host::exec`] but fails unless the command succeeds; returns stdout.
    pub fn exec_ok<S: AsRef<OsStr>>(
        &self,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Result<String> {
        run_ok(self.command(program).args(args))
    }

    /// Starts a background process from `cmd` (built with [`Host::command`]); stdout and stderr
    /// go to `<host dir>/<name>.log`.
    pub fn spawn(&self, name: &str, cmd: Command) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        self.spawn_logged(name, cmd, &log, false, false)
            .map(|(p, _, _)| p)
    }

    /// Starts a background process, appending stderr (and stdout unless piped) to `log`.
    pub fn spawn_logged(
        &self,
        name: &str,
        mut cmd: Command,
        log: &Path,
        pipe_stdin: bool,
        pipe_stdout: bool,
    ) -> Result<(Proc, Option<ChildStdin>, Option<ChildStdout>)> {
        let file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open log {}", log.display()))?;
        {
            let mut f = &file;
            let _ = writeln!(f, "[testkit] starting {}: {}", name, util::describe(&cmd));
        }
        cmd.stdin(if pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(Stdio::from(file.try_clone()?));
        }
        cmd.stderr(Stdio::from(file));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: `{}`", util::describe(&cmd)))?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let pid = child.id();
        lock(&self.lab.procs).insert(
            pid,
            ProcEntry {
                name: name.to_owned(),
                child,
                status: None,
            },
        );
        self.lab
            .register_log(&format!("{} ({})", name, self.name), log);
        Ok((
            Proc {
                lab: self.lab.clone(),
                pid,
                name: name.to_owned(),
                log: log.to_owned(),
            },
            stdin,
            stdout,
        ))
    }

    /// `curl -sS --fail -m <secs> <url>` inside the namespace; returns the body.
    pub fn http_get(&self, url: &str, timeout: Duration) -> Result<String> {
        let secs = format!("{}", timeout.as_secs().max(1));
        run_ok(
            self.command("curl")
                .args(["-sS", "--fail", "--noproxy", "*", "-m", &secs, url]),
        )
    }

    /// Serves `body` as `/index.html` with `python3 -m http.server` bound to `bind:port` and
    /// waits until the port accepts connections.
    pub fn serve_http(&self, name: &str, bind: Ipv4Addr, port: u16, body: &str) -> Result<Proc> {
        let root = self.dir.join(format!("{name}-www"));
        fs::create_dir_all(&root)?;
        fs::write(root.join("index.html"), body)?;
        let mut cmd = self.command(python3());
        cmd.args([
            "-u",
            "-m",
            "http.server",
            "--bind",
            &bind.to_string(),
            "--directory",
        ])
        .arg(&root)
        .arg(port.to_string());
        let p = self.spawn(name, cmd)?;
        self.wait_tcp_listening(&p, bind, port, Duration::from_secs(15))?;
        Ok(p)
    }

    /// A TCP server bound to `bind:port`: for each connection it reads one line and answers
    /// `echo from <bind> to <peer-ip>: <line>`.
    pub fn tcp_echo(&self, name: &str, bind: Ipv4Addr, port: u16) -> Result<Proc> {
        let mut cmd = self.command(python3());
        cmd.args(["-u", "-c", ECHO_PY, &bind.to_string(), &port.to_string()]);
        let p = self.spawn(name, cmd)?;
        self.wait_tcp_listening(&p, bind, port, Duration::from_secs(15))?;
        Ok(p)
    }

    /// Connects to `ip:port` (optionally from source address `from`), sends `payload` plus a
    /// newline and returns the reply line.
    pub fn tcp_roundtrip(
        &self,
        from: Option<Ipv4Addr>,
        ip: Ipv4Addr,
        port: u16,
        payload: &str,
    ) -> Result<String> {
        let from = from.map(|a| a.to_string()).unwrap_or_default();
        let out = run_ok(self.command(python3()).args([
            "-c",
            CONNECT_PY,
            &from,
            &ip.to_string(),
            &port.to_string(),
            payload,
        ]))?;
        Ok(out.trim_end().to_owned())
    }

    fn wait_tcp_listening(
        &self,
        p: &Proc,
        bind: Ipv4Addr,
        port: u16,
        timeout: Duration,
    ) -> Result<()> {
        util::wait_until(
            &format!("{} to listen on {bind}:{port}", p.name),
            timeout,
            Duration::from_millis(200),
            || {
                if !p.is_running() {
                    fail!("{} exited: {}", p.name, p.tail(20));
                }
                let out = run(self.command(python3()).args([
                    "-c",
                    PROBE_PY,
                    &bind.to_string(),
                    &port.to_string(),
                ]))?;
                Ok(out.status.success().then_some(()))
            },
        )
    }
}

const ECHO_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("listening", sys.argv[1], sys.argv[2], flush=True)
while True:
    c, peer = s.accept()
    c.settimeout(10)
    try:
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(65536)
            if not chunk:
                break
            data += chunk
        line = data.decode(errors="replace").strip()
        print("connection from", peer, "data", line[:80], flush=True)
        c.sendall(("echo from %s to %s: %s\n" % (sys.argv[1], peer[0], line)).encode())
    except Exception as e:
        print("error", peer, e, flush=True)
    finally:
        c.close()
"#;

pub(crate) const CONNECT_PY: &str = r#"
import socket, sys
src, ip, port, payload = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(10)
if src:
    s.bind((src, 0))
s.connect((ip, port))
s.sendall((payload + "\n").encode())
data = b""
while not data.endswith(b"\n"):
    chunk = s.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.decode(errors="replace").strip())
"#;

const PROBE_PY: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(1)
s.connect((sys.argv[1], int(sys.argv[2])))
"#;

/// A background process started by the lab. Dropping it stops the process (SIGTERM, then
/// SIGKILL) unless the thread is panicking, in which case the lab stops it after printing logs.
pub struct Proc {
    lab: Arc<LabInner>,
    pid: u32,
    name: String,
    log: PathBuf,
}

impl Proc {
    /// Process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    /// Name used in messages.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Log file (stdout + stderr).
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    /// True while the process has not exited.
    pub fn is_running(&self) -> bool {
        self.lab.is_running(self.pid)
    }
    /// Exit status once the process has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.lab.exited(self.pid)
    }
    /// Stops the process: SIGTERM, up to 5 s grace, then SIGKILL.
    pub fn stop(&self) -> Option<ExitStatus> {
        self.lab.stop(self.pid, Duration::from_secs(5))
    }
    /// Sends a signal to the process (by PID) if it is still running.
    pub fn signal(&self, sig: Signal) -> Result<()> {
        if self.is_running() {
            kill(Pid::from_raw(self.pid as i32), sig)
                .map_err(|e| Error::msg(format!("kill {}: {e}", self.pid)))?;
        }
        Ok(())
    }
    /// Last `n` lines of the log.
    pub fn tail(&self, n: usize) -> String {
        tail_file(&self.log, n)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.lab.stop(self.pid, Duration::from_secs(5));
        }
    }
}

impl std::fmt::Debug for Proc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proc({} pid {})", self.name, self.pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_owner_parsing() {
        assert_eq!(stale_owner("isi-a-123-hub", "isi-a"), Some(123));
        assert_eq!(stale_owner("isi-a-123", "isi-a"), Some(123));
        assert_eq!(stale_owner("isi-a-b-123-hub", "isi-a"), None);
        assert_eq!(stale_owner("isi-ab-123-hub", "isi-a"), None);
        assert_eq!(stale_owner("other", "isi-a"), None);
    }
}
