//! Node commands against a running `ironscale serve`: bad input is a clear
//! message on stderr and exit status 1 (the binary, not only the runners).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    let text = format!(
        "server_url: http://127.0.0.1:18080\n\
         listen_addr: 127.0.0.1:0\n\
         metrics_listen_addr: \"\"\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
         unix_socket: {d}/ironscale.sock\n\
         noise:\n  private_key_path: {d}/noise.key\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n\
         dns:\n  base_domain: tail.test\n  override_local_dns: false\n"
    );
    let p = dir.join("config.yaml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn run(cfg: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run ironscale");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_node_commands_exit_1_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let _server = Server(
        Command::new(BIN)
            .arg("-c")
            .arg(&cfg)
            .arg("serve")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ironscale serve"),
    );
    let sock = dir.path().join("ironscale.sock");
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "no admin socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, err) = run(&cfg, &["users", "create", "admin"]);
    assert_eq!(code, Some(0), "{err}");
    let cases: &[(&[&str], &str)] = &[
        (
            &["nodes", "move", "--identifier", "9", "--user", "admin"],
            "node 9 not found",
        ),
        (
            &["nodes", "move", "--identifier", "9", "--user", "ghost"],
            "user \"ghost\" not found",
        ),
        (
            &["nodes", "tag", "--identifier", "9", "--tags", "tag:a"],
            "node 9 not found",
        ),
        (
            &["nodes", "rename", "--identifier", "9", "x"],
            "node 9 not found",
        ),
        (
            &[
                "nodes",
                "routes",
                "enable",
                "--identifier",
                "9",
                "--route",
                "10.0.0.1/24",
            ],
            "10.0.0.0/24",
        ),
        (&["nodes", "backfillips"], "pass --force"),
        (&["routes", "list"], "nodes list-routes"),
    ];
    for (args, want) in cases {
        let (code, err) = run(&cfg, args);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("\\\""), "{args:?}: doubled quotes in {err}");
    }
}
