//! `ironscale serve` fails loudly when a listener cannot start: a non-zero
//! exit and a message naming what failed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn config(dir: &Path, socket: &Path) -> PathBuf {
    let d = dir.display();
    let text = format!(
        "server_url: http://127.0.0.1:18080\n\
         listen_addr: 127.0.0.1:0\n\
         metrics_listen_addr: \"\"\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
         unix_socket: {}\n\
         noise:\n  private_key_path: {d}/noise.key\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n\
         dns:\n  base_domain: tail.test\n  override_local_dns: false\n",
        socket.display()
    );
    let p = dir.join("config.yaml");
    std::fs::write(&p, text).expect("write config");
    p
}

/// Run `serve` and wait (at most 30 s) for it to exit on its own.
fn serve_until_exit(cfg: &Path) -> (Option<i32>, String) {
    let mut child = Command::new(BIN)
        .arg("-c")
        .arg(cfg)
        .arg("serve")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ironscale serve");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ironscale serve kept running without its admin socket");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code(), err)
}

#[test]
fn serve_exits_non_zero_when_the_socket_path_is_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("not-a-socket");
    std::fs::write(&sock, "a regular file").expect("write");
    let cfg = config(dir.path(), &sock);
    let (code, err) = serve_until_exit(&cfg);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("admin socket"), "{err}");
}

#[test]
fn serve_exits_non_zero_when_the_socket_is_in_use() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("taken.sock");
    let _other = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let cfg = config(dir.path(), &sock);
    let (code, err) = serve_until_exit(&cfg);
    assert!(code.is_some_and(|c| c != 0), "exit {code:?}\n{err}");
    assert!(err.contains(&sock.display().to_string()), "{err}");
    assert!(err.contains("admin socket"), "{err}");
}
