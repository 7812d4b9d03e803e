//! Small helpers: running commands, polling, reading log tails, root check.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Context, Error, Result};

/// PATH given to every child process (clients exec `iptables`, `ip`, ...).
pub(crate) const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// True when the current process runs with effective uid 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Fails with a clear message unless running as root (network namespaces, TUN devices and
/// `/etc/netns` need it).
pub fn require_root() -> Result<()> {
    if is_root() {
        Ok(())
    } else {
        Err(Error::msg(
            "the interop harness needs root: it creates network namespaces, veth pairs, TUN devices \
             and /etc/netns/<ns>/resolv.conf. Run the tests as root (e.g. `sudo -E cargo test ...`) \
             or in the CI container, which runs as root.",
        ))
    }
}

/// Renders a command for messages.
pub(crate) fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, capturing its output (a spawn failure is an error, a non-zero
/// exit is not).
pub(crate) fn run(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(std::process::Stdio::null());
    cmd.output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// Runs a command and fails unless it exits with status 0; returns its stdout.
pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    if !out.status.success() {
        return Err(Error::msg(format!(
            "`{}` failed ({}):\n{}",
            describe(cmd),
            out.status,
            output_text(&out)
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip <args>` and fails unless it succeeds.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run_ok(Command::new("ip").args(args).env("PATH", CHILD_PATH))
}

/// Stdout and stderr of an output, concatenated (for assertions and messages).
pub fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&err);
    }
    s
}

/// Polls `f` every `every` until it returns `Ok(Some(_))` or `timeout` passes. The last error
/// (or "still not ready") is reported on timeout together with `what`; a fatal error
/// ([`Error::fatal`], e.g. "the process exited") stops at once.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("condition not met");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) if e.is_fatal() => {
                return Err(Error::msg(format!("while waiting for {what}: {e}")));
            }
            Err(e) => last = e.to_string(),
        }
        if start.elapsed() >= timeout {
            return Err(Error::msg(format!(
                "timed out after {:.1}s waiting for {what}; last result: {last}",
                timeout.as_secs_f64()
            )));
        }
        std::thread::sleep(every);
    }
}

/// The last `lines` lines of a text file (at most the last 256 KiB are read).
pub fn tail_file(path: &Path, lines: usize) -> String {
    let Ok(mut f) = fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].join("\n")
}

/// Lines of a text file containing any of `needles` (case-sensitive), at most `max` (the last ones).
pub fn grep_file(path: &Path, needles: &[&str], max: usize) -> Vec<String> {
    let text = fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let hits: Vec<String> = text
        .lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(str::to_owned)
        .collect();
    let from = hits.len().saturating_sub(max);
    hits[from..].to_vec()
}

/// The real python3 executable (pyenv shims are resolved once, so children need no pyenv env).
pub fn python3() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("IRONSCALE_PYTHON") {
            return PathBuf::from(p);
        }
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let p = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                if p.is_empty() {
                    PathBuf::from("python3")
                } else {
                    PathBuf::from(p)
                }
            }
            _ => PathBuf::from("python3"),
        }
    })
    .clone()
}

/// Writes a file with mode 0600 (it may hold an auth key).
pub(crate) fn write_private(path: &Path, contents: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut f, contents)?;
    Ok(())
}

/// Creates a directory (and parents) with mode 0700.
/// A path under `parent` that no other caller, in this process or another, is given:
/// `<name>-<pid>-<n>-<nanos>` (`n` counts the calls of this process).
pub(crate) fn unique_path(parent: &Path, name: &str) -> PathBuf {
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    parent.join(format!("{name}-{}-{n}-{nanos}", std::process::id()))
}

pub(crate) fn mkdir_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Emits a `serde_json::Value` as block-style YAML (strings double-quoted with JSON escapes,
/// which YAML accepts).
pub fn to_yaml(v: &serde_json::Value) -> String {
    let mut out = String::new();
    emit_yaml(v, 0, &mut out);
    out
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    use serde_json::Value;
    match v {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(serde_json::Value::String(s.clone()).to_string()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn emit_yaml(v: &serde_json::Value, indent: usize, out: &mut String) {
    use serde_json::Value;
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                match scalar(val) {
                    Some(s) => out.push_str(&format!("{pad}{k}: {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}{k}:\n"));
                        emit_yaml(val, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        out.push_str(&format!("{pad}-\n"));
                        emit_yaml(item, indent + 2, out);
                    }
                }
            }
        }
        other => {
            if let Some(s) = scalar(other) {
                out.push_str(&format!("{pad}{s}\n"));
            }
        }
    }
}

/// Deep-merges `patch` into `base` (objects merge key by key; `null` in the patch deletes).
pub fn merge_json(base: &mut serde_json::Value, patch: &serde_json::Value) {
    use serde_json::Value;
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    b.remove(k);
                } else if let Some(bv) = b.get_mut(k) {
                    merge_json(bv, pv);
                } else {
                    b.insert(k.clone(), pv.clone());
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml_nested() {
        let v = json!({"a": {"b": "x:y", "c": [], "d": ["1", {"e": 2}]}, "f": true});
        let y = to_yaml(&v);
        assert_eq!(
            y,
            "a:\n  b: \"x:y\"\n  c: []\n  d:\n    - \"1\"\n    -\n      e: 2\nf: true\n"
        );
    }

    #[test]
    fn merge() {
        let mut a = json!({"a": {"b": 1, "c": 2}, "d": 3});
        merge_json(&mut a, &json!({"a": {"b": 5, "c": null}, "e": 6}));
        assert_eq!(a, json!({"a": {"b": 5}, "d": 3, "e": 6}));
    }
}
