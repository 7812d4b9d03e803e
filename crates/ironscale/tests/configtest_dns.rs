//! `configtest` and `serve` on the seed's DNS pitfalls (section 10,
//! "MagicDNS not working"): each is an error naming the key and the fix,
//! `configtest` exits non-zero, and `serve` refuses to start.

use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn write_config(dir: &Path, dns: &str) -> std::path::PathBuf {
    let d = dir.display();
    let text = format!(
        "server_url: https://hs.example.com\n\
         listen_addr: 127.0.0.1:0\n\
         database:\n  type: sqlite\n  sqlite:\n    path: {d}/db.sqlite\n\
         unix_socket: {d}/ironscale.sock\n\
         noise:\n  private_key_path: {d}/noise.key\n\
         derp:\n  server:\n    enabled: false\n  urls: []\n\
         {dns}"
    );
    let p = dir.join("config.yaml");
    std::fs::write(&p, text).expect("write config");
    p
}

fn run(cfg: &Path, cmd: &str) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("-c")
        .arg(cfg)
        .arg(cmd)
        .env("NO_COLOR", "1")
        .env_remove("IRONSCALE_CONFIG")
        .output()
        .expect("run ironscale");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn each_dns_pitfall_fails_configtest_and_serve_with_the_key_and_the_fix() {
    // (dns section, the key named, a word of the fix)
    let cases: &[(&str, &str, &str)] = &[
        (
            "dns:\n  magic_dns: true\n  base_domain: example.com\n",
            "dns.base_domain",
            "server_url",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: hs.example.com\n",
            "dns.base_domain",
            "server_url",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  override_local_dns: true\n",
            "dns.override_local_dns",
            "dns.nameservers.global",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    split:\n      \"corp example\": [10.0.0.53]\n",
            "dns.nameservers.split",
            "domain",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    restricted:\n      \"corp!\": [10.0.0.53]\n",
            "dns.nameservers.restricted",
            "domain",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    global: [\"dns.google\"]\n",
            "dns.nameservers.global",
            "https://",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  extra_records_path: /nonexistent/records.json\n",
            "dns.extra_records_path",
            "does not exist",
        ),
    ];
    for (dns, key, fix) in cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = write_config(dir.path(), dns);
        let (ok, out) = run(&cfg, "configtest");
        assert!(!ok, "configtest accepted:\n{dns}\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains(key) && !l.contains("warning:"))
            .unwrap_or_else(|| panic!("no error naming {key}:\n{out}"));
        assert!(line.contains(fix), "{line}");
        assert!(line.contains("config.yaml:"), "no line number: {line}");
        let (ok, out) = run(&cfg, "serve");
        assert!(!ok, "serve started with:\n{dns}\n{out}");
        assert!(out.contains(key), "{out}");
        assert!(!dir.path().join("ironscale.sock").exists());
    }
}

#[test]
fn a_broken_extra_records_file_names_its_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = dir.path().join("records.json");
    std::fs::write(
        &rec,
        "[\n  {\"name\": \"a.vpn.example.net\", \"type\": \"A\", \"value\": \"100.64.0.9\"},\n  {\"name\": \"b.vpn.example.net\", \"type\": \"A\", \"value\": \"fd7a::1\"}\n]\n",
    )
    .expect("write");
    let cfg = write_config(
        dir.path(),
        &format!(
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  extra_records_path: {}\n",
            rec.display()
        ),
    );
    let (ok, out) = run(&cfg, "configtest");
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("{}:3:", rec.display())) && out.contains("does not match type A"),
        "{out}"
    );
    // Fixed: OK.
    std::fs::write(
        &rec,
        "[{\"name\": \"b.vpn.example.net\", \"type\": \"AAAA\", \"value\": \"fd7a::1\"}]",
    )
    .expect("write");
    let (ok, out) = run(&cfg, "configtest");
    assert!(ok, "{out}");
}
