//! The remote CLI: `ironscale serve` with TLS from a throwaway CA on
//! 127.0.0.1, an API key made through the local socket, then the admin
//! commands run with only `HEADSCALE_CLI_ADDRESS` / `HEADSCALE_CLI_API_KEY` /
//! `SSL_CERT_FILE` set (no config file, as on an admin laptop). They print
//! what the same commands print locally; a missing, wrong, expired or deleted
//! key, an unreachable address, an untrusted certificate and a timeout are
//! one line each and exit status 1; the key never shows in the server's log
//! or in any error.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use ironscale_testkit::TestPki;

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

struct Server {
    child: Child,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free on 127.0.0.1 right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

struct Setup {
    dir: tempfile::TempDir,
    cfg: PathBuf,
    port: u16,
    pki: TestPki,
    other_ca: PathBuf,
    /// An empty directory: the remote commands' working and data directory.
    laptop: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::create(&dir.path().join("pki"), &["127.0.0.1".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let other = TestPki::create(&dir.path().join("other"), &["127.0.0.1".to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let d = dir.path().display();
    let text = format!(
        "server_url: https://127.0.0.1:{port}\n\
         listen_addr: 127.0.0.1:{port}\n\
         metrics_listen_addr: \"\"\n\
         tls_cert_path: {}\n\
         tls_key_path: {}\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
         unix_socket: {d}/ironscale.sock\n\
         noise:\n  private_key_path: {d}/noise.key\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n\
         dns:\n  base_domain: tail.test\n  override_local_dns: false\n\
         policy:\n  mode: database\n",
        pki.cert.display(),
        pki.key.display()
    );
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, text).expect("write config");
    let laptop = dir.path().join("laptop");
    std::fs::create_dir(&laptop).expect("mkdir");
    Setup {
        cfg,
        port,
        pki,
        other_ca: other.ca_cert,
        laptop,
        dir,
    }
}

fn start(s: &Setup) -> Server {
    let log = s.dir.path().join("serve.log");
    let child = Command::new(BIN)
        .arg("-c")
        .arg(&s.cfg)
        .arg("serve")
        .env("NO_COLOR", "1")
        .env("IRONSCALE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start ironscale serve");
    let server = Server { child, log };
    let sock = s.dir.path().join("ironscale.sock");
    let t0 = Instant::now();
    while !sock.exists() || std::net::TcpStream::connect(("127.0.0.1", s.port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "serve did not start:\n{}",
            std::fs::read_to_string(&server.log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A command through the local socket (the server's config file).
fn local(s: &Setup, args: &[&str]) -> Output {
    let o = Command::new(BIN)
        .arg("-c")
        .arg(&s.cfg)
        .args(args)
        .env_remove("IRONSCALE_CONFIG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ironscale");
    assert!(o.status.success(), "local {args:?}: {:?}", text(&o));
    o
}

/// A command with no config file and only these variables (plus a data
/// directory with no socket in it).
fn remote_env(s: &Setup, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    c.args(args)
        .current_dir(&s.laptop)
        .env_remove("IRONSCALE_CONFIG")
        .env("IRONSCALE_DATA_DIR", &s.laptop)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null());
    for (k, _) in std::env::vars() {
        if k.starts_with("HEADSCALE_")
            || k.starts_with("IRONSCALE_CLI_")
            || k.starts_with("SSL_CERT")
        {
            c.env_remove(k);
        }
    }
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run ironscale")
}

/// `remote_env` that must succeed.
fn remote(s: &Setup, key: &str, args: &[&str]) -> Output {
    let addr = format!("127.0.0.1:{}", s.port);
    let ca = s.pki.ca_cert.display().to_string();
    let o = remote_env(
        s,
        &[
            ("HEADSCALE_CLI_ADDRESS", &addr),
            ("HEADSCALE_CLI_API_KEY", key),
            ("SSL_CERT_FILE", &ca),
        ],
        args,
    );
    assert!(o.status.success(), "remote {args:?}: {:?}", text(&o));
    o
}

/// A failed command: exit status 1 and one line on stderr, without `key`.
fn one_line_failure(o: &Output, key: &str, what: &str) -> String {
    let (out, err) = text(o);
    assert_eq!(o.status.code(), Some(1), "{what}: {out} {err}");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{what}: not one line:\n{err}"
    );
    assert!(
        !err.contains(key) && !out.contains(key),
        "{what}: the key shows:\n{err}"
    );
    eprintln!("{what}: {}", err.trim_end());
    err
}

fn same(s: &Setup, key: &str, args: &[&str]) {
    let (l, r) = (local(s, args), remote(s, key, args));
    assert_eq!(
        text(&r).0,
        text(&l).0,
        "`{}` remotely and locally",
        args.join(" ")
    );
}

/// The 12-character prefix of `hskey-api-<prefix>-<secret>`.
fn prefix(key: &str) -> String {
    key.strip_prefix("hskey-api-")
        .and_then(|r| r.get(..12))
        .unwrap_or_else(|| panic!("not an API key: {key}"))
        .to_string()
}

fn new_key(s: &Setup) -> String {
    let k = text(&local(s, &["apikeys", "create"])).0.trim().to_string();
    assert!(k.starts_with("hskey-api-"), "{k}");
    k
}

#[test]
fn remote_cli_over_tls_with_an_api_key() {
    let s = setup();
    let server = start(&s);
    let key = new_key(&s);

    // Users, pre-auth keys, nodes, API keys, the policy: remotely as locally.
    let o = remote(&s, &key, &["users", "create", "alice"]);
    assert!(!text(&o).1.contains("WARNING"), "{:?}", text(&o));
    remote(
        &s,
        &key,
        &["users", "create", "bob", "--email", "bob@example.com"],
    );
    for f in [&[][..], &["-o", "json"][..]] {
        same(&s, &key, &[&["users", "list"][..], f].concat());
    }
    let pk = remote(
        &s,
        &key,
        &["preauthkeys", "create", "--user", "alice", "--reusable"],
    );
    let pk = text(&pk).0.trim().to_string();
    assert!(pk.starts_with("hskey-auth-"), "{pk}");
    same(&s, &key, &["preauthkeys", "list", "-o", "json"]);
    same(&s, &key, &["preauthkeys", "list"]);
    remote(&s, &key, &["preauthkeys", "expire", &pk]);
    let listed = text(&local(&s, &["preauthkeys", "list", "-o", "json"])).0;
    assert!(listed.contains("\"expiration\""), "{listed}");
    same(&s, &key, &["preauthkeys", "list", "-o", "json"]);
    same(&s, &key, &["nodes", "list"]);
    same(&s, &key, &["nodes", "list", "-o", "json"]);
    same(&s, &key, &["apikeys", "list", "-o", "json"]);
    let policy = s.dir.path().join("policy.hujson");
    std::fs::write(
        &policy,
        "{\n  // allow all\n  \"acls\": [{\"action\": \"accept\", \"src\": [\"*\"], \"dst\": [\"*:*\"]}],\n}\n",
    )
    .expect("write policy");
    remote(
        &s,
        &key,
        &["policy", "set", "-f", &policy.display().to_string()],
    );
    let pf = policy.display().to_string();
    same(&s, &key, &["policy", "check", "-f", &pf]);
    let checked = text(&remote(&s, &key, &["policy", "check", "-f", &pf])).0;
    assert!(
        checked.contains("checked against the running tailnet"),
        "{checked}"
    );
    same(&s, &key, &["policy", "get"]);
    same(&s, &key, &["policy", "get", "-o", "json"]);

    // A full URL in IRONSCALE_CLI_ADDRESS works as well.
    let url = format!("https://127.0.0.1:{}", s.port);
    let ca = s.pki.ca_cert.display().to_string();
    let o = remote_env(
        &s,
        &[
            ("IRONSCALE_CLI_ADDRESS", &url),
            ("IRONSCALE_CLI_API_KEY", &key),
            ("SSL_CERT_FILE", &ca),
        ],
        &["users", "list", "-o", "json"],
    );
    assert!(o.status.success(), "{:?}", text(&o));
    assert_eq!(
        text(&o).0,
        text(&local(&s, &["users", "list", "-o", "json"])).0
    );

    let addr = format!("127.0.0.1:{}", s.port);
    let with = |k: &str, extra: &[(&str, &str)]| {
        let mut env = vec![
            ("HEADSCALE_CLI_ADDRESS", addr.as_str()),
            ("HEADSCALE_CLI_API_KEY", k),
            ("SSL_CERT_FILE", ca.as_str()),
        ];
        env.extend_from_slice(extra);
        remote_env(&s, &env, &["users", "list"])
    };

    // No key at all: said before anything is sent.
    let o = remote_env(
        &s,
        &[("HEADSCALE_CLI_ADDRESS", &addr), ("SSL_CERT_FILE", &ca)],
        &["users", "list"],
    );
    let e = one_line_failure(&o, &key, "no key");
    assert!(e.contains("no API key") && e.contains("cli.api_key"), "{e}");

    // A wrong key, an expired one, a deleted one: the server refuses (401).
    let wrong = format!("hskey-api-{}-{}", prefix(&key), "x".repeat(64));
    let expired = new_key(&s);
    local(&s, &["apikeys", "expire", "--prefix", &prefix(&expired)]);
    let deleted = new_key(&s);
    remote(&s, &deleted, &["users", "list"]);
    local(&s, &["apikeys", "delete", "--prefix", &prefix(&deleted)]);
    for (k, what) in [
        (wrong.as_str(), "a wrong key"),
        (expired.as_str(), "an expired key"),
        (deleted.as_str(), "a deleted key"),
        ("hskey-api-garbage", "not a key"),
    ] {
        let e = one_line_failure(&with(k, &[]), k, what);
        assert!(
            e.contains(&format!(
                "the server at https://{addr} refused the API key (401)"
            )) && e.contains("ironscale apikeys create"),
            "{what}: {e}"
        );
    }
    // The good key still works after the refusals.
    remote(&s, &key, &["users", "list"]);

    // A certificate this client does not trust: one line naming the problem.
    let other = s.other_ca.display().to_string();
    let o = with(&key, &[("SSL_CERT_FILE", &other)]);
    let e = one_line_failure(&o, &key, "untrusted certificate");
    assert!(
        e.contains("is not trusted: its certificate is not signed by a CA this client trusts")
            && e.contains("SSL_CERT_FILE"),
        "{e}"
    );
    // cli.insecure: it works, with a warning.
    let o = with(
        &key,
        &[
            ("SSL_CERT_FILE", &other),
            ("HEADSCALE_CLI_INSECURE", "true"),
        ],
    );
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out} {err}");
    assert!(out.contains("alice"), "{out}");
    assert!(
        err.contains("WARNING") && err.contains("NOT verified"),
        "{err}"
    );
    assert!(!err.contains(&key), "{err}");

    // Plain http to the TLS port: an answer that is no API answer, one line.
    let plain = format!("http://127.0.0.1:{}", s.port);
    let o = with(&key, &[("HEADSCALE_CLI_ADDRESS", &plain)]);
    let e = one_line_failure(&o, &key, "http to a TLS port");
    assert!(e.contains("does not answer HTTP: is it https://"), "{e}");

    // Nobody listening: one line.
    let closed = format!("127.0.0.1:{}", free_port());
    let o = with(&key, &[("HEADSCALE_CLI_ADDRESS", &closed)]);
    let e = one_line_failure(&o, &key, "unreachable");
    assert!(
        e.contains(&format!(
            "cannot reach the ironscale server at https://{closed}"
        )),
        "{e}"
    );

    // A server that accepts but never answers: the timeout, one line.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_addr = silent.local_addr().expect("addr").to_string();
    let o = with(
        &key,
        &[
            ("HEADSCALE_CLI_ADDRESS", &silent_addr),
            ("HEADSCALE_CLI_TIMEOUT", "1s"),
        ],
    );
    let e = one_line_failure(&o, &key, "timeout");
    assert!(e.contains("did not answer within 1s (cli.timeout)"), "{e}");
    drop(silent);

    // A bad address: one line naming it.
    let o = with(&key, &[("HEADSCALE_CLI_ADDRESS", "ftp://127.0.0.1:1")]);
    let e = one_line_failure(&o, &key, "bad address");
    assert!(e.contains("cli.address"), "{e}");

    // No key, wrong or right, appears in the server's log.
    drop(server);
    let log = std::fs::read_to_string(s.dir.path().join("serve.log")).expect("log");
    assert!(
        log.contains("API request refused"),
        "the refusals are logged:\n{log}"
    );
    assert!(log.contains("DEBUG"), "the server logged at debug level");
    eprintln!("server log: {} lines", log.lines().count());
    for k in [&key, &wrong, &expired, &deleted] {
        let secret = &k[k.len() - 20..];
        assert!(!log.contains(secret), "a key shows in the server log");
    }
}

/// A real `tailscaled` 1.96.4 registers with a pre-auth key made through the
/// remote CLI, run in a lab host of its own (another network namespace, as an
/// admin's laptop would be), and the remote `nodes list` shows the node as the
/// local one does. Needs root (network namespaces, TUN); see `ironscale-testkit`.
#[test]
fn tailscaled_registers_with_a_key_made_remotely() {
    use ironscale_testkit::{
        install_clients, output_text, require_root, Lab, ServerProc, Tailscaled,
    };
    let must = |r: ironscale_testkit::Result<()>| r.unwrap_or_else(|e| panic!("{e}"));
    must(require_root());
    let clients = install_clients().unwrap_or_else(|e| panic!("{e}"));
    let lab = Lab::new("isi-rcli").unwrap_or_else(|e| panic!("{e}"));
    let hub = lab.hub_ip();
    let pki = TestPki::create(&lab.dir().join("pki"), &[hub.to_string()])
        .unwrap_or_else(|e| panic!("{e}"));
    const PORT: u16 = 8443;
    let server = ServerProc::start(
        &lab,
        Some(std::path::Path::new(BIN)),
        serde_json::json!({
            "server_url": format!("https://{hub}:{PORT}"),
            "listen_addr": format!("{hub}:{PORT}"),
            "tls_cert_path": pki.cert.to_string_lossy(),
            "tls_key_path": pki.key.to_string_lossy(),
            "derp": {"server": {"tls_listen_addr": null}},
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    must(server.create_user("alice"));
    let key = server
        .cli_ok(&["apikeys", "create"])
        .unwrap_or_else(|e| panic!("{e}"))
        .trim()
        .to_string();

    let admin = lab.add_host("admin").unwrap_or_else(|e| panic!("{e}"));
    let ca = pki.ca_cert.to_string_lossy().into_owned();
    let addr = format!("{hub}:{PORT}");
    let remote = |args: &[&str]| {
        let o = admin
            .command(BIN)
            .args(args)
            .env("HEADSCALE_CLI_ADDRESS", &addr)
            .env("HEADSCALE_CLI_API_KEY", &key)
            .env("SSL_CERT_FILE", &ca)
            .env("IRONSCALE_DATA_DIR", lab.dir().join("admin-data"))
            .stdin(Stdio::null())
            .output()
            .expect("run ironscale in the admin host");
        assert!(o.status.success(), "remote {args:?}: {}", output_text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let pk = remote(&["preauthkeys", "create", "--user", "alice"])
        .trim()
        .to_string();
    assert!(pk.starts_with("hskey-auth-"), "{pk}");

    let host = lab.add_host("a").unwrap_or_else(|e| panic!("{e}"));
    let a = Tailscaled::start(&host, &clients, "ts", &[("SSL_CERT_FILE", ca.as_str())])
        .unwrap_or_else(|e| panic!("{e}"));
    must(a.up_ok(&server.url(), Some(&pk), "laptop", &[]));
    must(a.wait_running(Duration::from_secs(30)));

    let listed = remote(&["nodes", "list", "-o", "json"]);
    let nodes: serde_json::Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(nodes[0]["given_name"], "laptop", "{listed}");
    assert_eq!(nodes[0]["user"]["name"], "alice", "{listed}");
    let local = server
        .cli_ok(&["nodes", "list", "-o", "json"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(listed, local, "remote and local listings differ");
    // The key was used once and is spent.
    let keys = remote(&["preauthkeys", "list", "-o", "json"]);
    assert!(keys.contains("\"used\": true"), "{keys}");
}
