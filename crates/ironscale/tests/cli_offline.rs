//! CLI commands that work on the database without a running server:
//! `policy get|set --bypass-grpc-and-access-database-directly`, as in
//! Headscale's guides.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn config(dir: &Path, mode: &str) -> std::path::PathBuf {
    config_with(dir, mode, "")
}

/// `sqlite_extra`: more keys under `database.sqlite` (each line indented 4 spaces).
fn config_with(dir: &Path, mode: &str, sqlite_extra: &str) -> std::path::PathBuf {
    let d = dir.display();
    let text = format!(
        "server_url: http://127.0.0.1:18080\n\
         listen_addr: 127.0.0.1:18080\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n{sqlite_extra}\
         unix_socket: {d}/ironscale.sock\n\
         noise:\n  private_key_path: {d}/noise.key\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n\
         dns:\n  base_domain: tail.test\n  override_local_dns: false\n\
         policy:\n  mode: {mode}\n  path: {d}/policy.hujson\n"
    );
    let p = dir.join(format!("config-{mode}.yaml"));
    std::fs::write(&p, text).expect("write config");
    p
}

fn run(cfg: &Path, args: &[&str]) -> (bool, String, String) {
    let out: Output = Command::new(BIN)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run ironscale");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const BYPASS: &str = "--bypass-grpc-and-access-database-directly";

#[test]
fn policy_get_and_set_directly_on_the_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "database");
    let bad = dir.path().join("bad.hujson");
    std::fs::write(
        &bad,
        "{\n  // typo in the group name\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"group:nope\"], \"dst\": [\"*:*\"]}],\n}\n",
    )
    .expect("write");
    let good = dir.path().join("good.hujson");
    let good_text = "{\"groups\": {\"group:a\": [\"admin@\"]},\n \"acls\": [{\"action\": \"accept\", \"src\": [\"group:a\"], \"dst\": [\"*:22\"]}]}\n";
    std::fs::write(&good, good_text).expect("write");

    // Nothing stored yet.
    let (ok, _, err) = run(&cfg, &["policy", "get", BYPASS]);
    assert!(!ok && err.contains("no policy is stored"), "{err}");

    // A broken policy is refused with file:line:col and writes nothing.
    let (ok, _, err) = run(
        &cfg,
        &["policy", "set", BYPASS, "--file", &bad.to_string_lossy()],
    );
    assert!(!ok, "a broken policy was accepted");
    assert!(
        err.contains(&format!("{}:3:", bad.display())) && err.contains("group:nope"),
        "{err}"
    );
    assert!(err.contains("unchanged"), "{err}");
    let (ok, _, _) = run(&cfg, &["policy", "get", BYPASS]);
    assert!(!ok, "the broken policy was stored");

    // A good one is stored and read back verbatim.
    let (ok, _, err) = run(
        &cfg,
        &["policy", "set", BYPASS, "-f", &good.to_string_lossy()],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run(&cfg, &["policy", "get", BYPASS]);
    assert!(ok, "{err}");
    assert_eq!(out, good_text);

    // A later broken one leaves the stored policy in place.
    let (ok, _, _) = run(
        &cfg,
        &["policy", "set", BYPASS, "-f", &bad.to_string_lossy()],
    );
    assert!(!ok);
    let (_, out, _) = run(&cfg, &["policy", "get", BYPASS]);
    assert_eq!(out, good_text);
}

#[test]
fn bypass_in_file_mode_points_at_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "file");
    std::fs::write(dir.path().join("policy.hujson"), "{}").expect("write");
    let (ok, _, err) = run(&cfg, &["policy", "get", BYPASS]);
    assert!(!ok);
    assert!(
        err.contains("policy.mode is file") && err.contains("policy.hujson"),
        "{err}"
    );
}

/// The journal mode a SQLite file is in, from its header (bytes 18 and 19, the
/// file format write/read versions: 1 = rollback journal, 2 = WAL).
fn sqlite_header_journal(path: &Path) -> (u8, u8) {
    let b = std::fs::read(path).expect("read database");
    assert!(b.starts_with(b"SQLite format 3\0"), "not a SQLite file");
    (b[18], b[19])
}

/// `database.sqlite.write_ahead_log` is honoured by the commands that open the
/// database (it was ignored: every database was switched to WAL).
#[test]
fn sqlite_write_ahead_log_setting_is_honoured() {
    let good = "{\"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}]}\n";
    for (wal, want) in [(Some(false), (1, 1)), (Some(true), (2, 2)), (None, (2, 2))] {
        let dir = tempfile::tempdir().expect("tempdir");
        let extra = wal.map_or(String::new(), |w| format!("    write_ahead_log: {w}\n"));
        let cfg = config_with(dir.path(), "database", &extra);
        let file = dir.path().join("p.hujson");
        std::fs::write(&file, good).expect("write");
        let (ok, _, err) = run(
            &cfg,
            &["policy", "set", BYPASS, "-f", &file.to_string_lossy()],
        );
        assert!(ok, "{err}");
        assert_eq!(
            sqlite_header_journal(&dir.path().join("db.sqlite")),
            want,
            "write_ahead_log: {wal:?}"
        );
    }
}

/// `policy check` without a server checks the file itself: an identity-
/// provider group used outside `groups` is reported at its `file:line:col`
/// with the fix, and the same group as a group member is valid.
#[test]
fn policy_check_reports_misplaced_provider_groups() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), "file");
    let bad = dir.path().join("bad.hujson");
    std::fs::write(
        &bad,
        "{\n  \"tagOwners\": {\"tag:server\": []},\n  \"acls\": [{\"action\": \"accept\",\n    \"src\": [\"oidc-group:eng\"], \"dst\": [\"tag:server:22\"]}]\n}\n",
    )
    .expect("write");
    let (ok, _, err) = run(&cfg, &["policy", "check", "-f", &bad.to_string_lossy()]);
    assert!(!ok, "a misplaced oidc-group was accepted");
    assert!(
        err.contains(&format!(
            "{}:4:13: \"oidc-group:eng\" can only be a member of a group in \"groups\"; \
             define \"group:eng\": [\"oidc-group:eng\"] and use the group",
            bad.display()
        )),
        "{err}"
    );

    let good = dir.path().join("good.hujson");
    std::fs::write(
        &good,
        "{\"groups\": {\"group:eng\": [\"oidc-group:eng\"]},\n \"tagOwners\": {\"tag:server\": [\"group:eng\"]},\n \"acls\": [{\"action\": \"accept\", \"src\": [\"group:eng\"], \"dst\": [\"tag:server:22\"]}]}\n",
    )
    .expect("write");
    let (ok, out, err) = run(&cfg, &["policy", "check", "-f", &good.to_string_lossy()]);
    assert!(ok, "{err}");
    assert!(out.contains("policy is valid"), "{out}");
}

/// `ironscale derper` and a symlink named `derper` take derper's flags; a typo or a flag
/// not implemented yet is an error that names it (exit 1), never silently ignored.
#[test]
fn derper_flags_through_the_subcommand_and_a_derper_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let link = dir.path().join("derper");
    std::os::unix::fs::symlink(BIN, &link).expect("symlink");
    for (prog, pre) in [
        (BIN, vec!["derper"]),
        (link.to_str().expect("utf-8"), vec![]),
    ] {
        let run = |args: &[&str]| {
            Command::new(prog)
                .args(&pre)
                .args(args)
                .output()
                .expect("run")
        };
        let help = run(&["--help"]);
        let text = String::from_utf8_lossy(&help.stdout);
        assert!(
            help.status.success() && text.contains("--verify-client-url"),
            "{text}"
        );
        let bad = run(&[
            "--certmode=manual",
            "--verify-clinets",
            "--accept-connection-limit=5",
        ]);
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{err}");
        assert!(
            err.contains("unknown derper flags: --verify-clinets"),
            "{err}"
        );
        assert!(
            err.contains("does not implement yet: --accept-connection-limit"),
            "{err}"
        );
        // A missing certificate is named, with the path derper's layout gives it.
        let certs = dir.path().join("certs");
        let no_cert = run(&[
            "--hostname=derp.test",
            "--certmode=manual",
            &format!("--certdir={}", certs.display()),
            &format!("--key-file={}", dir.path().join("k").display()),
            "--a=127.0.0.1:0",
            "--http-port=-1",
            "--stun=false",
        ]);
        let err = String::from_utf8_lossy(&no_cert.stderr);
        assert!(!no_cert.status.success(), "{err}");
        assert!(
            err.contains(&format!("{}/derp.test.crt", certs.display())),
            "{err}"
        );
    }
}
