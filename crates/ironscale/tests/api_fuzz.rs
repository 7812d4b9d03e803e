//! The API surface for tools, against a running `ironscale serve` on
//! 127.0.0.1: `/health` and `/version` on every listener (control, metrics,
//! the embedded DERP's own TLS port, the admin unix socket), and PyPI
//! `schemathesis` (installed by `.ci/run`) fuzzing `/api/v1` from its own
//! OpenAPI document with an API key made by the local CLI: no 5xx, and every
//! answer's status, content type and body as the document says.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    control: u16,
    metrics: u16,
    derp: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "server log:\n{}",
                std::fs::read_to_string(self.log()).unwrap_or_default()
            );
        }
    }
}

impl Server {
    fn log(&self) -> PathBuf {
        self.dir.path().join("serve.log")
    }

    fn sock(&self) -> PathBuf {
        self.dir.path().join("ironscale.sock")
    }

    /// `serve` with every listener (`all`: metrics and the embedded DERP on
    /// its own TLS port too), on free loopback ports; a port taken between
    /// picking and binding is retried with new ones.
    fn start(all: bool) -> Server {
        for _ in 0..3 {
            if let Some(s) = Self::try_start(all) {
                return s;
            }
        }
        panic!("serve could not bind its ports three times");
    }

    fn try_start(all: bool) -> Option<Server> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (control, metrics, derp, stun) = (free_port(), free_port(), free_port(), free_port());
        let d = dir.path().display();
        let (metrics_addr, derp_cfg) = if all {
            (
                format!("127.0.0.1:{metrics}"),
                format!(
                    "derp:\n  server:\n    enabled: true\n    region_id: 999\n\
                     \x20   tls_listen_addr: 127.0.0.1:{derp}\n\
                     \x20   stun_listen_addr: 127.0.0.1:{stun}\n\
                     \x20   private_key_path: {d}/derp.key\n\
                     \x20   tls_cert_path: {d}/derp.crt\n\
                     \x20   tls_key_path: {d}/derp.pem\n\
                     \x20 urls: []\n"
                ),
            )
        } else {
            (
                "\"\"".to_string(),
                "derp:\n  server:\n    enabled: false\n  urls: []\n".to_string(),
            )
        };
        let text = format!(
            "server_url: http://127.0.0.1:{control}\n\
             listen_addr: 127.0.0.1:{control}\n\
             metrics_listen_addr: {metrics_addr}\n\
             database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
             unix_socket: {d}/ironscale.sock\n\
             noise:\n  private_key_path: {d}/noise.key\n\
             {derp_cfg}\
             dns:\n  base_domain: tail.test\n  override_local_dns: false\n\
             policy:\n  mode: database\n"
        );
        let cfg = dir.path().join("config.yaml");
        std::fs::write(&cfg, text).expect("write config");
        let log = std::fs::File::create(dir.path().join("serve.log")).expect("log");
        let child = Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .arg("serve")
            .env("NO_COLOR", "1")
            .env("IRONSCALE_LOG", "info")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start serve");
        let s = Server {
            child,
            dir,
            cfg,
            control,
            metrics,
            derp,
        };
        let t0 = Instant::now();
        while !(s.sock().exists()
            && curl(&[&format!("http://127.0.0.1:{control}/health")]).0 == 200)
        {
            let log = std::fs::read_to_string(s.log()).unwrap_or_default();
            if log.contains("Address already in use") {
                return None;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "server did not start:\n{}",
                std::fs::read_to_string(s.log()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(s)
    }

    /// The local CLI (over the unix socket); stdout on success.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(BIN)
            .arg("-c")
            .arg(&self.cfg)
            .args(args)
            .env("NO_COLOR", "1")
            .output()
            .expect("run cli");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `curl` (the embedded DERP's certificate is self-signed: `-k`): (status,
/// body). `args` ends with the URL.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-k",
            "--noproxy",
            "*",
            "-m",
            "10",
            "-w",
            "\n%{http_code}",
        ])
        .args(args)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[test]
fn every_listener_answers_health_and_version() {
    let s = Server::start(true);
    let sock = s.sock();
    let sock = sock.to_str().expect("utf-8 path");
    let listeners: [(&str, Vec<&str>, String); 4] = [
        ("control", vec![], format!("http://127.0.0.1:{}", s.control)),
        ("metrics", vec![], format!("http://127.0.0.1:{}", s.metrics)),
        ("DERP", vec![], format!("https://127.0.0.1:{}", s.derp)),
        (
            "socket",
            vec!["--unix-socket", sock],
            "http://local".to_string(),
        ),
    ];
    for (name, extra, base) in &listeners {
        let mut args = extra.clone();
        let url = format!("{base}/health");
        args.push(&url);
        let (st, body) = curl(&args);
        assert_eq!(st, 200, "{name} /health: {body}");
        assert_eq!(json(&body), serde_json::json!({"status": "pass"}), "{name}");

        let mut args = extra.clone();
        let url = format!("{base}/version");
        args.push(&url);
        let (st, body) = curl(&args);
        assert_eq!(st, 200, "{name} /version: {body}");
        let v = json(&body);
        assert_eq!(v["version"], "v0.28.0", "{name}: {v}");
        assert_eq!(v["ironscale"], env!("CARGO_PKG_VERSION"), "{name}: {v}");
    }
    // Headplane hashes this path to pick the Headscale version: it stays 404.
    let (st, _) = curl(&[&format!(
        "http://127.0.0.1:{}/swagger/v1/openapiv2.json",
        s.control
    )]);
    assert_eq!(st, 404);
}

/// The schemathesis program: `IRONSCALE_SCHEMATHESIS`, or `schemathesis` on
/// the PATH. `None` outside CI when it is not installed (the test says so);
/// in CI (`CI` set) its absence fails the test.
fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IRONSCALE_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let found = Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(PathBuf::from("schemathesis"));
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "schemathesis is not installed (.ci/run installs it)"
    );
    eprintln!("skipped: schemathesis is not installed (pip install schemathesis==4.32.5)");
    None
}

/// One schemathesis run over the operations `filter` selects, within
/// `budget` seconds; its summary printed; the number of test cases.
fn fuzz(st: &Path, s: &Server, key: &str, budget: u32, filter: &[&str]) -> u64 {
    let base = format!("http://127.0.0.1:{}", s.control);
    let report = s.dir.path().join(format!("report-{budget}"));
    let out_path = s.dir.path().join(format!("schemathesis-{budget}.out"));
    let out = std::fs::File::create(&out_path).expect("output file");
    let t0 = Instant::now();
    let mut child = Command::new(st)
        .args(["run", &format!("{base}/api/v1/openapi.json"), "--url", &base])
        .args(["-H", &format!("Authorization: Bearer {key}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
        ])
        .args(["--max-time", &budget.to_string(), "--workers", "2"])
        .args(["--phases", "coverage,fuzzing", "--seed", "10"])
        .args(["--request-timeout", "10", "--output-sanitize", "true"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .args(filter)
        .env("NO_COLOR", "1")
        // Its cache (`.schemathesis/`) goes in the test's directory, not the tree.
        .current_dir(s.dir.path())
        // To a file: a pipe read only at the end would fill up and block it.
        .stdout(Stdio::from(out.try_clone().expect("output file")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("run schemathesis");
    // A hard stop well past the budget: the fuzzer must end by itself.
    let limit = Duration::from_secs(u64::from(budget) + 60);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis ran past {limit:?}:\n{}",
                std::fs::read_to_string(&out_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&out_path).expect("schemathesis output");
    assert!(
        !text.contains(key),
        "the API key appeared in schemathesis' output"
    );
    let summary = text
        .lines()
        .skip_while(|l| !l.contains("SUMMARY"))
        .collect::<Vec<_>>()
        .join("\n");
    println!(
        "schemathesis {filter:?}: {:.1} s\n{summary}",
        t0.elapsed().as_secs_f64()
    );
    assert!(status.success(), "schemathesis found problems:\n{text}");
    // "Test cases:\n  N generated, N passed"
    let cases = text
        .lines()
        .skip_while(|l| !l.starts_with("Test cases:"))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no test case count in:\n{text}"));
    assert!(cases > 0, "schemathesis ran no test case:\n{text}");
    cases
}

#[test]
fn schemathesis_finds_no_server_error_and_no_answer_off_the_document() {
    let Some(st) = schemathesis() else { return };
    let s = Server::start(false);
    let key = s.cli(&["apikeys", "create"]).trim().to_string();
    assert!(key.starts_with("hskey-api-"), "{key}");
    // Some data for the fuzzer to find.
    s.cli(&["users", "create", "alice"]);
    s.cli(&["users", "create", "bob"]);
    s.cli(&["preauthkeys", "create", "--user", "1", "--reusable"]);
    let t0 = Instant::now();
    // The operations that can revoke API keys would revoke the fuzzer's own
    // (id 1, a value fuzzers try first): everything else with the key, then
    // those alone at the end.
    let revoking = "^/api/v1/apikey/(expire|\\{prefix\\})?$";
    let mut cases = fuzz(&st, &s, &key, 60, &["--exclude-path-regex", revoking]);
    cases += fuzz(&st, &s, &key, 15, &["--include-path-regex", revoking]);
    println!(
        "schemathesis: {cases} test cases in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    // The server survived it.
    let (code, body) = curl(&[&format!("http://127.0.0.1:{}/health", s.control)]);
    assert_eq!(code, 200, "{body}");
}
