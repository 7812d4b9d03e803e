//! The official `tailscaled` daemon (real TUN device `tailscale0`) and `tailscale` CLI, one node
//! per call, inside a lab namespace.

use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::install::Clients;
use crate::lab::{Host, Proc};
use crate::util::{self, grep_file, output_text, run, tail_file, wait_until, CHILD_PATH};

/// A peer as seen in `tailscale status --json`.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    /// `HostName`
    pub host_name: String,
    /// `DNSName`
    pub dns_name: String,
    /// `TailscaleIPs`
    pub ips: Vec<String>,
    /// `Online`
    pub online: bool,
    /// `Relay` (home DERP region code)
    pub relay: String,
    /// `CurAddr` (current direct address, empty when relayed)
    pub cur_addr: String,
    /// `Expired` (the peer's node key has expired)
    pub expired: bool,
}

/// A `tailscaled` process plus its CLI.
pub struct Tailscaled {
    host: Host,
    clients: Clients,
    name: String,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    env: Vec<(String, String)>,
    /// Started with [`Tailscaled::start_with_dns`]: a private view of `/etc`.
    dns: bool,
    proc: Option<Proc>,
}

/// The wrapper that gives a DNS-managing tailscaled a private `/etc` (run by `ip netns exec`,
/// which has already put the process in a mount namespace of its own, slave to the machine's,
/// and bind-mounted `/etc/netns/<ns>/resolv.conf` over `/etc/resolv.conf`).
///
/// `$1` is the node's private-etc directory, `$2` the namespace's own resolv.conf; the rest is
/// the command to exec. The namespace's file is first bind-mounted aside (so the overlay below
/// does not hide it), an overlay with the host's `/etc` as its read-only lower layer goes over
/// `/etc` (writes such as tailscaled's `/etc/resolv.pre-tailscale-backup.conf` land in
/// `$1/upper`), and the namespace's file is bind-mounted over `/etc/resolv.conf` again, so what
/// tailscaled writes there is what every other `ip netns exec <ns>` process reads. Nothing
/// here propagates to the machine's mount namespace; it all vanishes with the process.
const PRIVATE_ETC_SH: &str = r#"set -eu
d=$1; conf=$2; shift 2
if [ "$(stat -L -c %d:%i /etc/resolv.conf)" != "$(stat -L -c %d:%i "$conf")" ]; then
  echo "private-etc: /etc/resolv.conf is not $conf (not started by ip netns exec?)" >&2
  exit 97
fi
mkdir -p "$d/upper" "$d/work"
: > "$d/netns-resolv.conf"
mount --bind /etc/resolv.conf "$d/netns-resolv.conf"
mount -t overlay ironscale-etc -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" /etc
if [ -L /etc/resolv.conf ] || [ ! -f /etc/resolv.conf ]; then
  rm -f /etc/resolv.conf
  : > /etc/resolv.conf
fi
mount --bind "$d/netns-resolv.conf" /etc/resolv.conf
if [ "$(stat -c %d:%i /etc/resolv.conf)" != "$(stat -c %d:%i "$d/netns-resolv.conf")" ]; then
  echo "private-etc: bind mount of the namespace's resolv.conf failed" >&2
  exit 97
fi
echo "private-etc: /etc is an overlay (upper $d/upper), /etc/resolv.conf is $conf" >&2
exec "$@"
"#;

/// A `systemctl` that says every unit is inactive: tailscaled's direct DNS manager restarts
/// systemd-resolved when `systemctl is-active systemd-resolved` succeeds, and from a network
/// namespace that would be the machine's resolved.
const SYSTEMCTL_STUB: &str = "#!/bin/sh\nexit 3\n";

impl Tailscaled {
    /// Starts `tailscaled --no-logs-no-support` in `host`'s namespace with state, socket and logs
    /// under `<host dir>/<name>`, UDP port 41641, real TUN `tailscale0`. `extra_env` is passed
    /// on top of the safety defaults (e.g. `TS_DEBUG_ALWAYS_USE_DERP=1`). Waits until the local
    /// API answers.
    pub fn start(
        host: &Host,
        clients: &Clients,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<Tailscaled> {
        Self::start_inner(host, clients, name, extra_env, false)
    }

    /// Like [`Tailscaled::start`], for a node that manages DNS (`--accept-dns=true`, the
    /// default of [`Tailscaled::up`] for such a node): tailscaled runs with a private view of
    /// `/etc` (an overlay over the machine's, upper layer in `<node dir>/etc/upper`) in which
    /// `/etc/resolv.conf` is the namespace's own `/etc/netns/<ns>/resolv.conf`. What tailscaled
    /// writes there (`nameserver 100.100.100.100`, its search domains) is what every program in
    /// the namespace resolves with; its backup file and anything else it writes under `/etc`
    /// stay in the upper layer. The machine's `/etc` is never written. It also gets a
    /// `systemctl` that reports every unit inactive and no D-Bus system bus, so it never
    /// programs (or restarts) the machine's systemd-resolved or NetworkManager.
    pub fn start_with_dns(
        host: &Host,
        clients: &Clients,
        name: &str,
        extra_env: &[(&str, &str)],
    ) -> Result<Tailscaled> {
        Self::start_inner(host, clients, name, extra_env, true)
    }

    fn start_inner(
        host: &Host,
        clients: &Clients,
        name: &str,
        extra_env: &[(&str, &str)],
        dns: bool,
    ) -> Result<Tailscaled> {
        let dir = host.dir().join(name);
        util::mkdir_private(&dir)?;
        let mut t = Tailscaled {
            host: host.clone(),
            clients: clients.clone(),
            name: name.to_owned(),
            socket: dir.join("tailscaled.sock"),
            log: dir.join("tailscaled.log"),
            dir,
            env: extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            dns,
            proc: None,
        };
        t.spawn_and_wait()?;
        Ok(t)
    }

    fn spawn_and_wait(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.socket);
        let mut cmd = if self.dns {
            let etc = self.private_etc_dir();
            let bin = self.dir.join("bin");
            std::fs::create_dir_all(&etc)?;
            std::fs::create_dir_all(&bin)?;
            let stub = bin.join("systemctl");
            std::fs::write(&stub, SYSTEMCTL_STUB)?;
            std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))?;
            let mut cmd = self.host.command_with_home("sh", &self.dir);
            cmd.args(["-c", PRIVATE_ETC_SH, "sh"])
                .arg(&etc)
                .arg(self.host.resolv_conf_path())
                .arg(&self.clients.tailscaled)
                .env("PATH", format!("{}:{CHILD_PATH}", bin.display()))
                .env(
                    "DBUS_SYSTEM_BUS_ADDRESS",
                    format!("unix:path={}", self.dir.join("no-dbus").display()),
                );
            cmd
        } else {
            self.host
                .command_with_home(&self.clients.tailscaled, &self.dir)
        };
        cmd.arg("--no-logs-no-support")
            .arg(format!(
                "--state={}",
                self.dir.join("tailscaled.state").display()
            ))
            .arg(format!("--statedir={}", self.dir.display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg("--port=41641")
            .arg("--tun=tailscale0");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let (proc, _, _) = self.host.spawn_logged(
            &format!("tailscaled {}", self.name),
            cmd,
            &self.log,
            false,
            false,
        )?;
        let res = wait_until(
            &format!("tailscaled {} local API", self.name),
            Duration::from_secs(30),
            Duration::from_millis(100),
            || {
                if !proc.is_running() {
                    fail!("tailscaled exited ({:?})", proc.exit_status());
                }
                if !self.socket.exists() {
                    return Ok(None);
                }
                let out = self.cli(&["status", "--json"])?;
                Ok(serde_json::from_slice::<Value>(&out.stdout)
                    .is_ok()
                    .then_some(()))
            },
        );
        self.proc = Some(proc);
        res.map_err(|e| self.err(e.to_string()))
    }

    /// Node name given at start.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace host this node runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The node's working directory (state, socket, logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True for a node started with [`Tailscaled::start_with_dns`].
    pub fn manages_dns(&self) -> bool {
        self.dns
    }

    /// The directory of a DNS node's private `/etc` (its overlay's `upper` and `work`).
    pub fn private_etc_dir(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// A file tailscaled wrote under its private `/etc` (e.g.
    /// `resolv.pre-tailscale-backup.conf`), if it did: read from the overlay's upper layer.
    pub fn private_etc_file(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.private_etc_dir().join("upper").join(name)).ok()
    }

    /// The daemon's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Last `n` daemon log lines.
    pub fn log_tail(&self, n: usize) -> String {
        tail_file(&self.log, n)
    }

    /// Daemon log lines containing any of `needles` (last `max`).
    pub fn log_grep(&self, needles: &[&str], max: usize) -> Vec<String> {
        grep_file(&self.log, needles, max)
    }

    /// An error message with the log tail attached.
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::msg(format!(
            "[{}] {msg}\n--- tailscaled {} log tail ---\n{}",
            self.name,
            self.name,
            self.log_tail(40)
        ))
    }

    /// True while the daemon process is alive.
    pub fn is_running(&self) -> bool {
        self.proc.as_ref().is_some_and(Proc::is_running)
    }

    /// Stops the daemon (SIGTERM lets it remove its TUN and rules).
    pub fn stop(&mut self) {
        if let Some(p) = self.proc.take() {
            p.stop();
        }
    }

    /// Stops and starts the daemon from its state.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_and_wait()
    }

    /// Runs `tailscale --socket=<sock> <args>` in the namespace.
    ///
    /// On a node not started with [`Tailscaled::start_with_dns`], turning DNS management on
    /// (`--accept-dns`/`--accept-dns=true`, or `up`/`login` without `--accept-dns=false`) is
    /// refused: that tailscaled would write its backup into the machine's `/etc`.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        if !self.dns {
            let mut flag = None;
            for a in args {
                let a = a.trim_start_matches('-');
                if let Some(v) = a.strip_prefix("accept-dns") {
                    flag = Some(v.is_empty() || v == "=true" || v == "=1" || v == "=t");
                }
            }
            let sub = args.iter().find(|a| !a.starts_with('-')).copied();
            let turns_on = match flag {
                Some(on) => on,
                None => matches!(sub, Some("up" | "login")),
            };
            if turns_on && matches!(sub, Some("up" | "login" | "set")) {
                bail!(
                    "[{}] refusing `tailscale {}`: DNS management needs a node started with \
                     Tailscaled::start_with_dns (a private /etc)",
                    self.name,
                    args.join(" ")
                );
            }
        }
        let mut cmd = self
            .host
            .command_with_home(&self.clients.tailscale, &self.dir);
        cmd.arg(format!("--socket={}", self.socket.display()))
            .args(args);
        run(&mut cmd)
    }

    /// `tailscale up --login-server=URL [--authkey=KEY] --hostname=H --accept-dns=false
    /// --timeout=45s <extra_args>` (`--accept-dns=true` for a node started with
    /// [`Tailscaled::start_with_dns`]); `extra_args` replace the defaults (e.g.
    /// `--timeout=10s`). Returns the output whatever the exit status.
    pub fn up(
        &self,
        login_server: &str,
        authkey: Option<&str>,
        hostname: &str,
        extra_args: &[&str],
    ) -> Result<Output> {
        let mut args = vec![
            "up".to_owned(),
            format!("--login-server={login_server}"),
            format!("--hostname={hostname}"),
        ];
        // The CLI refuses a flag given twice: defaults only where the caller gave none.
        let given = |flag: &str| extra_args.iter().any(|a| a.starts_with(flag));
        if !given("--accept-dns") {
            args.push(format!("--accept-dns={}", self.dns));
        }
        if !given("--timeout") {
            args.push("--timeout=45s".to_owned());
        }
        if let Some(k) = authkey {
            args.push(format!("--authkey={k}"));
        }
        args.extend(extra_args.iter().map(|s| (*s).to_owned()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.cli(&refs)
    }

    /// Like [`Tailscaled::up`] but fails (with output and log tail) unless it succeeds.
    ///
    /// One retry, for a race inside tailscaled itself: the daemon leaves
    /// `Starting` for `Running` on the engine status that its home-DERP
    /// connection triggers; rarely (seen once in ~10 CI runs, ~300 daemon
    /// starts) that status is lost and the daemon stays in `Starting` with its
    /// netmap and a live DERP connection until some other engine event, which
    /// an idle test node never has. Then `tailscale down` + `up` (no key: the
    /// node is registered) reconnects to our DERP and completes. It is logged,
    /// and the retry must itself reach `Running`.
    pub fn up_ok(
        &self,
        login_server: &str,
        authkey: Option<&str>,
        hostname: &str,
        extra_args: &[&str],
    ) -> Result<()> {
        let out = self.up(login_server, authkey, hostname, extra_args)?;
        if out.status.success() {
            return Ok(());
        }
        let failed = |out: &Output| {
            self.err(format!(
                "`tailscale up` failed ({}):\n{}",
                out.status,
                output_text(out)
            ))
        };
        let stuck_starting = output_text(&out).contains("enter a Running state")
            && self.backend_state().is_ok_and(|s| s == "Starting")
            && self.status_json().is_ok_and(|st| {
                st["Self"]["TailscaleIPs"]
                    .as_array()
                    .is_some_and(|ips| !ips.is_empty())
            });
        if !stuck_starting {
            return Err(failed(&out));
        }
        eprintln!(
            "[testkit] NOTE {}: tailscaled stayed in Starting with a netmap (its DERP-status race); \
             `tailscale down` + `up` once",
            self.name
        );
        let down = self.cli(&["down"])?;
        if !down.status.success() {
            return Err(failed(&down));
        }
        let out = self.up(login_server, None, hostname, extra_args)?;
        if !out.status.success() {
            return Err(failed(&out));
        }
        Ok(())
    }

    /// `tailscale status --json`
    pub fn status_json(&self) -> Result<Value> {
        let out = self.cli(&["status", "--json"])?;
        serde_json::from_slice(&out.stdout).map_err(|e| {
            self.err(format!(
                "`tailscale status --json` is not JSON ({e}):\n{}",
                output_text(&out)
            ))
        })
    }

    /// `tailscale status` (text form).
    pub fn status_text(&self) -> Result<String> {
        Ok(output_text(&self.cli(&["status"])?))
    }

    /// `BackendState` from the status (`Running`, `NeedsLogin`, `Starting`, …).
    pub fn backend_state(&self) -> Result<String> {
        Ok(self
            .status_json()?
            .get("BackendState")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Peers from the status.
    pub fn peers(&self) -> Result<Vec<PeerStatus>> {
        let st = self.status_json()?;
        let mut out = Vec::new();
        if let Some(map) = st.get("Peer").and_then(Value::as_object) {
            for p in map.values() {
                let s = |k: &str| {
                    p.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned()
                };
                out.push(PeerStatus {
                    host_name: s("HostName"),
                    dns_name: s("DNSName"),
                    ips: p
                        .get("TailscaleIPs")
                        .and_then(Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str().map(str::to_owned))
                                .collect()
                        })
                        .unwrap_or_default(),
                    online: p.get("Online").and_then(Value::as_bool).unwrap_or(false),
                    relay: s("Relay"),
                    cur_addr: s("CurAddr"),
                    expired: p.get("Expired").and_then(Value::as_bool).unwrap_or(false),
                });
            }
        }
        Ok(out)
    }

    /// Waits until the backend state is `Running`.
    pub fn wait_running(&self, timeout: Duration) -> Result<()> {
        wait_until(
            &format!("{} to be Running", self.name),
            timeout,
            Duration::from_millis(250),
            || {
                let st = self.backend_state()?;
                if st == "Running" {
                    Ok(Some(()))
                } else {
                    bail!("BackendState {st}")
                }
            },
        )
        .map_err(|e| self.err(e))
    }

    /// Waits until a peer with tailnet IP `ip` appears in the status (and, if `online`, is
    /// reported online).
    pub fn wait_peer(&self, ip: Ipv4Addr, online: bool, timeout: Duration) -> Result<PeerStatus> {
        let ip_s = ip.to_string();
        wait_until(
            &format!("{} to list peer {ip}", self.name),
            timeout,
            Duration::from_millis(250),
            || {
                let peers = self.peers()?;
                match peers.into_iter().find(|p| p.ips.contains(&ip_s)) {
                    Some(p) if !online || p.online => Ok(Some(p)),
                    Some(p) => bail!("peer {ip} listed but offline: {p:?}"),
                    None => Ok(None),
                }
            },
        )
        .map_err(|e| {
            self.err(format!(
                "{e}\n--- tailscale status ---\n{}",
                self.status_text().unwrap_or_default()
            ))
        })
    }

    /// Waits until no peer with tailnet IP `ip` is listed; returns how long it took.
    pub fn wait_peer_gone(&self, ip: &str, timeout: Duration) -> Result<Duration> {
        let start = std::time::Instant::now();
        wait_until(
            &format!("{} to drop peer {ip}", self.name),
            timeout,
            Duration::from_millis(100),
            || {
                let peers = self.peers()?;
                Ok((!peers.iter().any(|p| p.ips.iter().any(|a| a == ip))).then(|| start.elapsed()))
            },
        )
        .map_err(|e| {
            self.err(format!(
                "{e}\n--- tailscale status ---\n{}",
                self.status_text().unwrap_or_default()
            ))
        })
    }

    /// `tailscale ip -4`
    pub fn ip4(&self) -> Result<Ipv4Addr> {
        let out = self.cli(&["ip", "-4"])?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.trim().parse().map_err(|_| {
            self.err(format!(
                "`tailscale ip -4` gave no IPv4 address:\n{}",
                output_text(&out)
            ))
        })
    }

    /// `tailscale ping --c 5 --timeout 3s <target> <extra>` (add `--until-direct=false` when
    /// the path is relayed on purpose). Returns the output whatever the exit status.
    pub fn ping(&self, target: &str, extra: &[&str]) -> Result<Output> {
        // The CLI refuses a flag given twice: defaults only where the caller gave none.
        let given = |flags: &[&str]| {
            extra.iter().any(|a| {
                flags
                    .iter()
                    .any(|f| a == f || a.starts_with(&format!("{f}=")))
            })
        };
        let mut args = vec!["ping"];
        if !given(&["-c", "--c"]) {
            args.extend(["--c", "5"]);
        }
        if !given(&["-timeout", "--timeout"]) {
            args.extend(["--timeout", "3s"]);
        }
        args.extend_from_slice(extra);
        args.push(target);
        self.cli(&args)
    }
}

impl Drop for Tailscaled {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.stop();
        }
    }
}
