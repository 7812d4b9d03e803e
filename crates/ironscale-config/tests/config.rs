//! Loading real-world (seed) configurations and broken ones.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironscale_config::*;

fn testdata(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A temp dir holding the seed's derp.yaml and acls.json, plus `config.yaml`
/// written from `text` with `/TESTDIR` pointed at the temp dir.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn setup(text: &str) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("derp.yaml"), testdata("seed-derp.yaml")).expect("write");
    std::fs::write(dir.path().join("acls.json"), testdata("seed-acls.json")).expect("write");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        text.replace("/TESTDIR", &dir.path().display().to_string()),
    )
    .expect("write");
    Setup { dir, config }
}

fn errors(d: &[Diagnostic]) -> Vec<&Diagnostic> {
    d.iter().filter(|d| d.is_error()).collect()
}

fn expect_err(r: LoadResult) -> Vec<Diagnostic> {
    match r {
        Ok((_, w)) => panic!("expected errors, got Ok with:\n{}", render(&w)),
        Err(d) => d,
    }
}

fn expect_ok(r: LoadResult) -> (Config, Vec<Diagnostic>) {
    match r {
        Ok(v) => v,
        Err(d) => panic!("expected Ok, got:\n{}", render(&d)),
    }
}

#[test]
fn seed_config_fails_exactly_on_the_base_domain_pitfall() {
    let s = setup(&testdata("seed-config.yaml"));
    let diags = expect_err(Config::load(&s.config));
    let errs = errors(&diags);
    assert_eq!(
        errs.len(),
        1,
        "only the base_domain pitfall must be an error:\n{}",
        render(&diags)
    );
    let e = errs[0];
    assert_eq!(e.key, "dns.base_domain");
    assert_eq!(e.line, Some(21));
    assert_eq!(e.file.as_deref(), Some(s.config.as_path()));
    // The message names the pitfall and the fix.
    assert!(e.message.contains("\"example.com\" is a parent domain of the server_url host (\"your-domain.example.com\")"), "{}", e.message);
    assert!(e.message.contains("\"vpn.example.com\""), "{}", e.message);
    assert!(
        e.message.contains("does not contain the server host"),
        "{}",
        e.message
    );
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("{}:21: dns.base_domain: ", s.config.display())),
        "{shown}"
    );
}

#[test]
fn seed_config_with_vpn_subdomain_passes() {
    let text = testdata("seed-config.yaml")
        .replace("base_domain: example.com ", "base_domain: vpn.example.com ");
    let s = setup(&text);
    let (c, warnings) = expect_ok(Config::load(&s.config));
    let dir = s.dir.path();
    assert_eq!(c.server_url, "https://your-domain.example.com");
    assert_eq!(
        c.listen_addr,
        "0.0.0.0:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        c.metrics_listen_addr,
        Some("127.0.0.1:9090".parse().expect("addr"))
    );
    assert_eq!(c.dns.base_domain, "vpn.example.com");
    assert!(c.dns.magic_dns && c.dns.override_local_dns);
    assert_eq!(
        c.dns.nameservers.global,
        vec![
            Nameserver::Ip("1.1.1.1".parse().expect("ip")),
            Nameserver::Ip("8.8.8.8".parse().expect("ip"))
        ]
    );
    assert_eq!(c.prefixes.v4, Some(cgnat_range()));
    assert_eq!(c.prefixes.v6, Some(tailscale_ula_range()));
    // `database.path` is not a Headscale key, but clearly means database.sqlite.path.
    assert_eq!(
        c.database,
        DatabaseConfig::Sqlite(SqliteConfig {
            path: dir.join("db.sqlite"),
            write_ahead_log: true
        })
    );
    assert!(
        warnings.iter().any(|w| w.key == "database.path"
            && w.line == Some(8)
            && w.message.contains("database.sqlite.path")),
        "{}",
        render(&warnings)
    );
    assert_eq!(
        c.policy,
        PolicyConfig {
            mode: PolicyMode::File,
            path: Some(dir.join("acls.json"))
        }
    );
    assert!(!c.derp.server.enabled);
    assert_eq!(c.derp.server.region_id, 999);
    assert_eq!(
        c.derp.urls,
        vec!["https://controlplane.tailscale.com/derpmap/default".to_string()]
    );
    assert_eq!(c.derp.paths, vec![dir.join("derp.yaml")]);
    assert!(c.derp.auto_update_enabled);
    assert_eq!(c.derp.update_frequency, Duration::from_secs(86_400));
    // Noise key defaults to next to the database.
    assert_eq!(c.noise.private_key_path, dir.join("noise_private.key"));
    // The seed's derp.yaml has placeholder IPs: warnings from that file, with lines.
    let derp_file = dir.join("derp.yaml");
    assert!(
        warnings
            .iter()
            .any(|w| w.file.as_deref() == Some(derp_file.as_path())
                && w.key == "regions.900.nodes.0.ipv4"
                && w.line == Some(11)),
        "{}",
        render(&warnings)
    );
}

#[test]
fn seed_section8_dns_block_passes() {
    let seed = testdata("seed-config.yaml");
    let start = seed.find("# DNS Configuration").expect("dns start");
    let end = seed.find("# ACL Policy").expect("dns end");
    let text = format!(
        "{}{}\n{}",
        &seed[..start],
        testdata("seed-section8-dns.yaml"),
        &seed[end..]
    );
    let s = setup(&text);
    let (c, warnings) = expect_ok(Config::load(&s.config));
    assert_eq!(c.dns.base_domain, "vpn.example.com");
    assert_eq!(
        c.dns.nameservers.split.get("internal.corp.com"),
        Some(&vec![Nameserver::Ip("10.0.0.53".parse().expect("ip"))])
    );
    assert_eq!(
        c.dns.extra_records,
        vec![ExtraRecord {
            name: "dashboard.vpn.example.com".into(),
            record_type: "A".into(),
            value: "100.64.0.2".parse().expect("ip")
        }]
    );
    // `restricted` is the seed's own spelling of split DNS: accepted as is.
    assert!(
        !warnings
            .iter()
            .any(|w| w.key.starts_with("dns.nameservers")),
        "{}",
        render(&warnings)
    );
}

#[test]
fn split_and_restricted_are_merged() {
    let s = setup(&format!(
        "{DNS_BASE}dns:\n  magic_dns: true\n  base_domain: vpn.example.com\n  nameservers:\n    split:\n      corp.example: [10.0.0.53]\n      both.example: [10.0.0.1]\n    restricted:\n      other.example: [10.0.0.54]\n      both.example: [10.0.0.1, 10.0.0.2]\n"
    ));
    let (c, _) = expect_ok(Config::load(&s.config));
    let ip = |s: &str| Nameserver::Ip(s.parse().expect("ip"));
    let split = &c.dns.nameservers.split;
    assert_eq!(split.len(), 3, "{split:?}");
    assert_eq!(split["corp.example"], vec![ip("10.0.0.53")]);
    assert_eq!(split["other.example"], vec![ip("10.0.0.54")]);
    assert_eq!(split["both.example"], vec![ip("10.0.0.1"), ip("10.0.0.2")]);
}

#[test]
fn seed_derp_map() {
    let s = setup("");
    let regions = derp_regions_from_file(&s.dir.path().join("derp.yaml")).expect("derp map");
    assert_eq!(regions.len(), 2);
    assert_eq!(
        (
            regions[0].region_id,
            regions[0].region_code.as_str(),
            regions[0].region_name.as_str()
        ),
        (900, "my-derp", "Malaysia DERP")
    );
    assert_eq!(regions[1].region_id, 901);
    let n = &regions[1].nodes[0];
    assert_eq!(
        (
            n.name.as_str(),
            n.derp_port,
            n.stun_port,
            n.insecure_for_tests
        ),
        ("901a", 33331, 3478, true)
    );
}

fn one_error(diags: &[Diagnostic]) -> &Diagnostic {
    let errs = errors(diags);
    assert_eq!(errs.len(), 1, "{}", render(diags));
    errs[0]
}

fn vpn_seed() -> String {
    testdata("seed-config.yaml")
        .replace("base_domain: example.com ", "base_domain: vpn.example.com ")
}

#[test]
fn bad_prefix_names_the_line() {
    let s = setup(&vpn_seed().replace("v4: 100.64.0.0/10 ", "v4: 100.64.0.0/33 "));
    let diags = expect_err(Config::load(&s.config));
    let e = one_error(&diags);
    assert_eq!(e.to_string(), format!("{}:12: prefixes.v4: \"100.64.0.0/33\" is not a valid IPv4 prefix (expected e.g. 100.64.0.0/10)", s.config.display()));
}

#[test]
fn prefix_outside_cgnat_only_warns() {
    let s = setup(&vpn_seed().replace("v4: 100.64.0.0/10 ", "v4: 10.0.0.0/8 "));
    let (c, w) = expect_ok(Config::load(&s.config));
    assert_eq!(c.prefixes.v4, Some("10.0.0.0/8".parse().expect("net")));
    assert!(
        w.iter().any(|w| w.key == "prefixes.v4"
            && w.line == Some(12)
            && w.severity == Severity::Warning),
        "{}",
        render(&w)
    );
}

#[test]
fn bad_duration_names_the_line() {
    let s = setup(&vpn_seed().replace("update_frequency: 24h", "update_frequency: 24hours"));
    let diags = expect_err(Config::load(&s.config));
    let e = one_error(&diags);
    assert_eq!(
        (e.key.as_str(), e.line),
        ("derp.update_frequency", Some(63))
    );
    assert!(e.message.contains("unknown unit"), "{}", e.message);
}

#[test]
fn missing_derp_path_names_the_line() {
    let s = setup(&vpn_seed());
    std::fs::remove_file(s.dir.path().join("derp.yaml")).expect("rm");
    let diags = expect_err(Config::load(&s.config));
    let e = one_error(&diags);
    assert_eq!((e.key.as_str(), e.line), ("derp.paths", Some(61)));
    assert!(e.message.contains("does not exist"), "{}", e.message);
}

#[test]
fn broken_derp_file_is_reported_in_that_file() {
    let s = setup(&vpn_seed());
    std::fs::write(s.dir.path().join("derp.yaml"), "regions:\n  900:\n    regionid: 900\n    nodes:\n      - name: a\n        hostname: h\n        derpport: eighty\n").expect("write");
    let diags = expect_err(Config::load(&s.config));
    let derp = s.dir.path().join("derp.yaml");
    assert!(
        errors(&diags)
            .iter()
            .any(|d| d.key == "derp.paths" && d.line == Some(61)),
        "{}",
        render(&diags)
    );
    assert!(
        errors(&diags)
            .iter()
            .any(|d| d.file.as_deref() == Some(derp.as_path())
                && d.line == Some(7)
                && d.key == "regions.900.nodes.0.derpport"),
        "{}",
        render(&diags)
    );
}

#[test]
fn bad_indentation_names_the_line() {
    let text = vpn_seed().replace(
        "  base_domain: vpn.example.com",
        "   base_domain: vpn.example.com",
    );
    let s = setup(&text);
    let diags = expect_err(Config::load(&s.config));
    let e = one_error(&diags);
    assert_eq!(e.line, Some(21), "{}", render(&diags));
    assert!(e.message.contains("YAML syntax error"), "{}", e.message);
}

#[test]
fn misindented_key_is_an_unknown_key_with_a_hint() {
    // `v6` dedented to the top level: valid YAML, but not where it belongs.
    let text = vpn_seed().replace("  v6: fd7a:115c:a1e0::/48", "v6: fd7a:115c:a1e0::/48");
    let s = setup(&text);
    let (c, w) = expect_ok(Config::load(&s.config));
    assert_eq!(c.prefixes.v6, None);
    let d = w.iter().find(|d| d.key == "v6").expect("warning for v6");
    assert_eq!(d.line, Some(13));
    assert!(d.message.contains("prefixes.v6"), "{}", d.message);
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = vpn_seed()
        .replace("v4: 100.64.0.0/10 ", "v4: 100.64.0.0/33 ")
        .replace("update_frequency: 24h", "update_frequency: soon")
        .replace("mode: file ", "mode: filesystem ")
        .replace("listen_addr: 0.0.0.0:8080", "listen_addr: 0.0.0.0:80800");
    let s = setup(&text);
    std::fs::remove_file(s.dir.path().join("derp.yaml")).expect("rm");
    let diags = expect_err(Config::load(&s.config));
    let mut got: Vec<(String, Option<usize>)> = errors(&diags)
        .iter()
        .map(|d| (d.key.clone(), d.line))
        .collect();
    got.sort();
    let mut want = vec![
        ("derp.paths".to_string(), Some(61)),
        ("derp.update_frequency".to_string(), Some(63)),
        ("listen_addr".to_string(), Some(3)),
        ("policy.mode".to_string(), Some(38)),
        ("prefixes.v4".to_string(), Some(12)),
    ];
    want.sort();
    assert_eq!(got, want, "{}", render(&diags));
}

#[test]
fn unknown_keys_warn_with_line_and_suggestion() {
    let text = format!(
        "{}\ntuning:\n  batched_change_delay: 250ms\n  node_mapsession_channel_size: 32\n",
        vpn_seed()
    );
    let s = setup(&text);
    let (_, w) = expect_ok(Config::load(&s.config));
    let d = w
        .iter()
        .find(|d| d.key == "tuning.batched_change_delay")
        .expect("warned");
    // The seed has 63 lines; the format adds an empty line 64 and `tuning:` on 65.
    assert_eq!(d.line, Some(66));
    assert!(
        d.message.contains("tuning.batch_change_delay"),
        "{}",
        d.message
    );
    assert!(w
        .iter()
        .any(|d| d.key == "tuning.node_mapsession_channel_size" && d.line == Some(67)));
}

#[test]
fn deprecated_headscale_keys_are_honoured_with_a_warning() {
    let text = "server_url: http://127.0.0.1:8080\n\
                private_key_path: /x/private.key\n\
                ip_prefixes:\n  - fd7a:115c:a1e0::/48\n  - 100.64.0.0/10\n\
                db_type: sqlite3\n\
                db_path: /TESTDIR/db.sqlite\n\
                acl_policy_path: /TESTDIR/acls.json\n\
                ephemeral_node_inactivity_timeout: 30m\n\
                dns_config:\n  magic_dns: true\n  base_domain: tail.example.org\n  nameservers:\n    - 9.9.9.9\n  domains: [corp.example.org]\n\
                oidc:\n  expiry: 180d\n  strip_email_domain: true\n";
    let s = setup(text);
    let (c, w) = expect_ok(Config::load(&s.config));
    let dir = s.dir.path();
    assert_eq!(c.prefixes.v4, Some(cgnat_range()));
    assert_eq!(c.prefixes.v6, Some(tailscale_ula_range()));
    assert_eq!(
        c.database,
        DatabaseConfig::Sqlite(SqliteConfig {
            path: dir.join("db.sqlite"),
            write_ahead_log: true
        })
    );
    assert_eq!(c.policy.path, Some(dir.join("acls.json")));
    assert_eq!(
        c.node.ephemeral_inactivity_timeout,
        Duration::from_secs(1800)
    );
    assert_eq!(c.node.expiry, Some(Duration::from_secs(180 * 86_400)));
    assert_eq!(c.dns.base_domain, "tail.example.org");
    assert_eq!(
        c.dns.nameservers.global,
        vec![Nameserver::Ip("9.9.9.9".parse().expect("ip"))]
    );
    assert_eq!(c.dns.search_domains, vec!["corp.example.org".to_string()]);
    for (key, new) in [
        ("ip_prefixes", "prefixes.v4"),
        ("db_path", "database.sqlite.path"),
        ("acl_policy_path", "policy.path"),
        (
            "ephemeral_node_inactivity_timeout",
            "node.ephemeral.inactivity_timeout",
        ),
        ("dns_config.nameservers", "dns.nameservers.global"),
        ("dns_config.domains", "dns.search_domains"),
        ("oidc.expiry", "node.expiry"),
    ] {
        assert!(
            w.iter().any(|d| d.key == key
                && d.severity == Severity::Warning
                && d.message.contains(new)
                && d.line.is_some()),
            "{key} should warn naming {new}:\n{}",
            render(&w)
        );
    }
    assert!(w
        .iter()
        .any(|d| d.key == "private_key_path" && d.message.contains("noise.private_key_path")));
    assert!(w.iter().any(|d| d.key == "oidc.strip_email_domain"));
}

#[test]
fn new_key_beats_deprecated_one() {
    let text = "server_url: http://127.0.0.1:8080\nephemeral_node_inactivity_timeout: 30m\nnode:\n  ephemeral:\n    inactivity_timeout: 10m\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\n  override_local_dns: false\n";
    let s = setup(text);
    let (c, w) = expect_ok(Config::load(&s.config));
    assert_eq!(
        c.node.ephemeral_inactivity_timeout,
        Duration::from_secs(600)
    );
    assert!(
        w.iter()
            .any(|d| d.key == "ephemeral_node_inactivity_timeout"
                && d.message.contains("ignored because")),
        "{}",
        render(&w)
    );
}

#[test]
fn semantic_checks() {
    let base = "server_url: https://hs.example.com\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\n  override_local_dns: false\n";
    let cases: &[(&str, &str, &str)] = &[
        (
            "server_url: https://hs.example.com",
            "server_url: hs.example.com",
            "server_url",
        ),
        (
            "  base_domain: t.internal",
            "  base_domain: hs.example.com",
            "dns.base_domain",
        ),
        (
            "  base_domain: t.internal",
            "  magic_dns: true",
            "dns.base_domain",
        ),
        (
            "  override_local_dns: false",
            "  override_local_dns: true",
            "dns.override_local_dns",
        ),
    ];
    for (from, to, key) in cases {
        let s = setup(&base.replace(from, to));
        let diags = expect_err(Config::load(&s.config));
        assert!(
            errors(&diags).iter().any(|d| d.key == *key),
            "{to:?} should fail on {key}:\n{}",
            render(&diags)
        );
    }
    let extra: &[(&str, &str)] = &[
        ("tls_cert_path: /TESTDIR/derp.yaml\n", "tls_key_path"),
        ("derp:\n  server:\n    enabled: true\n", "derp.server.region_id"),
        ("derp:\n  server:\n    enabled: true\n    region_id: 999\n", "derp.server.stun_listen_addr"),
        ("derp:\n  urls: [not a url]\n", "derp.urls"),
        ("node:\n  ephemeral:\n    inactivity_timeout: 30s\n", "node.ephemeral.inactivity_timeout"),
        ("node:\n  expiry: forever\n", "node.expiry"),
        ("database:\n  type: mysql\n", "database.type"),
        ("prefixes:\n  allocation: striped\n", "prefixes.allocation"),
        ("prefixes:\n  v4: fd7a:115c:a1e0::/48\n", "prefixes.v4"),
        ("policy:\n  path: /TESTDIR/nope.json\n", "policy.path"),
        ("unix_socket_permission: rwx\n", "unix_socket_permission"),
        ("log:\n  format: xml\n", "log.format"),
        ("oidc:\n  issuer: https://sso.example.com\n", "oidc.client_id"),
        ("dns:\n  extra_records:\n    - name: x.t.internal\n      type: AAAA\n      value: 100.64.0.1\n", "dns.extra_records"),
        ("dns:\n  nameservers:\n    global: [not-an-ip]\n", "dns.nameservers.global"),
        ("randomize_client_port: maybe\n", "randomize_client_port"),
    ];
    for (snippet, key) in extra {
        // Merge the snippet's top-level section into the base by appending a second document key set.
        let text = merge(base, snippet);
        let s = setup(&text);
        let diags = expect_err(Config::load(&s.config));
        assert!(
            errors(&diags)
                .iter()
                .any(|d| d.key == *key && d.line.is_some()),
            "{snippet:?} should fail on {key}:\n{}",
            render(&diags)
        );
    }
}

/// Append `snippet`; if its first key is a section that `base` already has, nest its lines there.
fn merge(base: &str, snippet: &str) -> String {
    let first = snippet.lines().next().unwrap_or("");
    if first.ends_with(':') && base.lines().any(|l| l == first) {
        let rest: String = snippet.lines().skip(1).map(|l| format!("{l}\n")).collect();
        base.replacen(&format!("{first}\n"), &format!("{first}\n{rest}"), 1)
    } else {
        format!("{base}{snippet}")
    }
}

#[test]
fn full_config_reads_every_key() {
    let s = setup(&testdata("full.yaml"));
    std::fs::write(s.dir.path().join("cert.pem"), "").expect("write");
    std::fs::write(s.dir.path().join("key.pem"), "").expect("write");
    let (c, w) = expect_ok(Config::load(&s.config));
    let dir = s.dir.path();
    assert!(
        !w.iter().any(|d| d.message.contains("unknown")),
        "{}",
        render(&w)
    );
    assert_eq!(c.server_url, "https://hs.example.net:8443");
    assert_eq!(c.grpc_listen_addr.as_deref(), Some("127.0.0.1:50443"));
    assert_eq!(c.noise.private_key_path, dir.join("keys/noise.key"));
    assert_eq!(c.prefixes.allocation, IpAllocation::Random);
    let DatabaseConfig::Postgres(pg) = &c.database else {
        panic!("postgres expected")
    };
    assert_eq!(
        (
            pg.host.as_str(),
            pg.port,
            pg.ssl.as_str(),
            pg.max_open_conns
        ),
        ("db.internal", 5433, "require", 20)
    );
    assert_eq!(
        pg.url(),
        "postgres://iron:p%40ss%20word@db.internal:5433/ironscale?sslmode=require"
    );
    assert_eq!(pg.conn_max_idle_time, Duration::from_secs(600));
    let d = &c.derp.server;
    assert!(d.enabled && !d.verify_clients);
    assert_eq!((d.region_id, d.region_code.as_str()), (950, "iron"));
    assert_eq!(
        d.tls_listen_addr,
        "0.0.0.0:3442".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(d.ipv4, Some("198.51.100.7".parse().expect("ip")));
    assert_eq!(c.derp.update_frequency, Duration::from_secs(210));
    assert_eq!(c.tls.cert_path, Some(dir.join("cert.pem")));
    assert_eq!(c.tls.letsencrypt.challenge_type, "TLS-ALPN-01");
    assert_eq!(c.unix_socket_permission, 0o750);
    assert_eq!(
        (c.log.level.as_str(), c.log.format),
        ("debug", LogFormat::Json)
    );
    assert_eq!(c.node.expiry, Some(Duration::from_secs(180 * 86_400)));
    assert_eq!(
        c.dns.nameservers.global[2],
        Nameserver::Url("https://dns.nextdns.io/abc123".into())
    );
    assert_eq!(
        c.dns.extra_records[1].value,
        "fd7a:115c:a1e0::3".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(c.policy.mode, PolicyMode::Database);
    assert_eq!(c.oidc.scope.len(), 4);
    assert_eq!(
        c.oidc.extra_params.get("domain_hint").map(String::as_str),
        Some("example.net")
    );
    assert_eq!(c.oidc.client_secret.expose(), "very-secret-value");
    assert!(c.randomize_client_port && c.logtail.enabled && !c.taildrop.enabled);
    // https server_url: DERP is served on the main listener, port from the URL.
    assert!(!c.embedded_derp_uses_own_tls());
    assert_eq!(c.embedded_derp_port(), 8443);
    assert_eq!(c.embedded_derp_host(), "hs.example.net");
    // Secrets never appear in Debug output.
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("very-secret-value") && !dbg.contains("p@ss word"),
        "{dbg}"
    );
}

#[test]
fn env_overrides() {
    let s = setup(&vpn_seed());
    let env: Vec<(String, String)> = [
        ("IRONSCALE_SERVER_URL", "https://ctl.example.org"),
        ("HEADSCALE_DNS_BASE_DOMAIN", "hs-loses.example.org"),
        ("IRONSCALE_DNS_BASE_DOMAIN", "ts.example.org"),
        ("HEADSCALE_DERP_SERVER_ENABLED", "true"),
        ("IRONSCALE_DERP_SERVER_STUN_LISTEN_ADDR", "0.0.0.0:3479"),
        (
            "IRONSCALE_DNS_NAMESERVERS_GLOBAL",
            "9.9.9.9 149.112.112.112",
        ),
        ("HEADSCALE_LOG_LEVEL", "debug"),
        ("IRONSCALE_NOT_A_KEY", "ignored"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let (c, _) = expect_ok(Config::load_with_env(Some(&s.config), &env));
    assert_eq!(c.server_url, "https://ctl.example.org");
    assert_eq!(c.dns.base_domain, "ts.example.org");
    assert!(c.derp.server.enabled);
    assert_eq!(
        c.derp.server.stun_listen_addr,
        Some("0.0.0.0:3479".parse().expect("addr"))
    );
    assert_eq!(c.dns.nameservers.global.len(), 2);
    assert_eq!(c.log.level, "debug");

    // A bad value from the environment names the variable.
    let env = vec![(
        "IRONSCALE_PREFIXES_V4".to_string(),
        "100.64.0.0/33".to_string(),
    )];
    let diags = expect_err(Config::load_with_env(Some(&s.config), &env));
    let e = one_error(&diags);
    assert_eq!((e.key.as_str(), e.line), ("prefixes.v4", None));
    assert!(
        e.message.contains("$IRONSCALE_PREFIXES_V4"),
        "{}",
        e.message
    );
}

#[test]
fn no_file_gives_working_local_defaults() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = vec![(
        "IRONSCALE_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    )];
    let (c, w) = expect_ok(Config::load_with_env(None, &env));
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(c, Config::default_local(dir.path()));
    assert_eq!(c.server_url, "http://127.0.0.1:8080");
    assert_eq!(
        c.database,
        DatabaseConfig::Sqlite(SqliteConfig {
            path: dir.path().join("db.sqlite"),
            write_ahead_log: true
        })
    );
    assert!(c.derp.server.enabled && c.embedded_derp_uses_own_tls());
    assert_eq!(c.embedded_derp_port(), DEFAULT_DERP_TLS_PORT);
    assert_eq!(c.embedded_stun_port(), Some(3478));
    assert_eq!(c.embedded_derp_host(), "127.0.0.1");
    assert_eq!(c.dns.base_domain, "tailnet.internal");
    assert_eq!(
        c.policy,
        PolicyConfig {
            mode: PolicyMode::File,
            path: None
        }
    );
    assert_eq!(c.fqdn("laptop"), "laptop.tailnet.internal");

    // Env still applies on top of the local defaults.
    let env = vec![
        (
            "IRONSCALE_DATA_DIR".to_string(),
            dir.path().display().to_string(),
        ),
        (
            "IRONSCALE_LISTEN_ADDR".to_string(),
            "127.0.0.1:18080".to_string(),
        ),
    ];
    let (c, _) = expect_ok(Config::load_with_env(None, &env));
    assert_eq!(c.listen_addr.port(), 18080);
}

#[test]
fn http_server_url_uses_the_derp_tls_listener() {
    let text = "server_url: http://10.1.2.3:8080\nlisten_addr: 10.1.2.3:8080\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\n  override_local_dns: false\nderp:\n  server:\n    enabled: true\n    region_id: 999\n    stun_listen_addr: 0.0.0.0:3478\n";
    let s = setup(text);
    let (c, _) = expect_ok(Config::load(&s.config));
    assert!(c.embedded_derp_uses_own_tls());
    assert_eq!(
        c.derp.server.tls_listen_addr,
        "10.1.2.3:3341".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.embedded_derp_port(), 3341);
    assert_eq!(
        c.derp.server.tls_cert_path,
        s.dir.path().join("derp_tls_cert.pem")
    );
    assert_eq!(c.embedded_derp_host(), "10.1.2.3");
}

#[test]
fn missing_file_is_one_error() {
    let diags = expect_err(Config::load(Path::new(
        "/nonexistent/ironscale/config.yaml",
    )));
    assert_eq!(errors(&diags).len(), 1);
}

#[test]
fn batch_change_delay_is_honoured_and_bounded() {
    let (c, _) = expect_ok(Config::load(
        &setup(&format!(
            "{}\ntuning:\n  batch_change_delay: 250ms\n",
            vpn_seed()
        ))
        .config,
    ));
    assert_eq!(c.tuning.batch_change_delay, Duration::from_millis(250));
    let (c, _) = expect_ok(Config::load(&setup(&vpn_seed()).config));
    assert_eq!(c.tuning.batch_change_delay, Duration::from_millis(100));
    let (c, _) = expect_ok(Config::load(
        &setup(&format!(
            "{}\ntuning:\n  batch_change_delay: 0\n",
            vpn_seed()
        ))
        .config,
    ));
    assert_eq!(c.tuning.batch_change_delay, Duration::ZERO);
    let diags = expect_err(Config::load(
        &setup(&format!(
            "{}\ntuning:\n  batch_change_delay: 30s\n",
            vpn_seed()
        ))
        .config,
    ));
    let d = diags
        .iter()
        .find(|d| d.key == "tuning.batch_change_delay")
        .expect("refused");
    assert_eq!(d.line, Some(66), "{}", render(&diags));
    assert!(d.message.contains("too long"), "{}", d.message);
}

#[test]
fn register_cache_keys_are_honoured_and_bounded() {
    let (c, _) = expect_ok(Config::load(&setup(&vpn_seed()).config));
    assert_eq!(c.tuning.register_cache_max_entries, 1024);
    assert_eq!(c.tuning.register_cache_expiration, Duration::from_secs(900));
    let (c, _) = expect_ok(Config::load(
        &setup(&format!(
            "{}\ntuning:\n  register_cache_max_entries: 50\n  register_cache_expiration: 5m\n",
            vpn_seed()
        ))
        .config,
    ));
    assert_eq!(c.tuning.register_cache_max_entries, 50);
    assert_eq!(c.tuning.register_cache_expiration, Duration::from_secs(300));
    let diags = expect_err(Config::load(
        &setup(&format!(
            "{}\ntuning:\n  register_cache_expiration: 5s\n  register_cache_max_entries: 0\n",
            vpn_seed()
        ))
        .config,
    ));
    let exp = diags
        .iter()
        .find(|d| d.key == "tuning.register_cache_expiration")
        .expect("a 5 s expiration is refused");
    assert!(exp.message.contains("too short"), "{}", exp.message);
    assert!(
        diags
            .iter()
            .any(|d| d.key == "tuning.register_cache_max_entries"),
        "{}",
        render(&diags)
    );
}

#[test]
fn device_approval_keys() {
    let base = "server_url: http://127.0.0.1:8080\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\n  override_local_dns: false\n";
    let (c, _) = expect_ok(Config::load(&setup(base).config));
    assert!(!c.node.device_approval);
    assert!(c.node.device_approval_exempt_tagged_keys);
    let (c, w) = expect_ok(Config::load(
        &setup(&format!(
            "{base}node:\n  device_approval: true\n  device_approval_exempt_tagged_keys: false\n"
        ))
        .config,
    ));
    assert!(c.node.device_approval);
    assert!(!c.node.device_approval_exempt_tagged_keys);
    assert!(
        !w.iter().any(|d| d.key.starts_with("node.device_approval")),
        "{}",
        render(&w)
    );
    let diags = expect_err(Config::load(
        &setup(&format!("{base}node:\n  device_approval: maybe\n")).config,
    ));
    assert!(
        diags.iter().any(|d| d.key == "node.device_approval"),
        "{}",
        render(&diags)
    );
}

#[test]
fn ha_probe_keys_are_honoured() {
    let (c, _) = expect_ok(Config::load(&setup(&vpn_seed()).config));
    assert_eq!(c.node.routes_ha_probe_interval, Duration::from_secs(10));
    assert_eq!(c.node.routes_ha_probe_timeout, Duration::from_secs(5));
    let (c, diags) = expect_ok(Config::load(
        &setup(&format!(
            "{}\nnode:\n  routes:\n    ha:\n      probe_interval: 3s\n      probe_timeout: 2s\n",
            vpn_seed()
        ))
        .config,
    ));
    assert_eq!(c.node.routes_ha_probe_interval, Duration::from_secs(3));
    assert_eq!(c.node.routes_ha_probe_timeout, Duration::from_secs(2));
    assert!(
        !diags.iter().any(|d| d.key.starts_with("node.routes")),
        "{}",
        render(&diags)
    );
    let diags = expect_err(Config::load(
        &setup(&format!(
            "{}\nnode:\n  routes:\n    ha:\n      probe_timeout: 0s\n",
            vpn_seed()
        ))
        .config,
    ));
    assert!(
        diags
            .iter()
            .any(|d| d.key == "node.routes.ha.probe_timeout"),
        "{}",
        render(&diags)
    );
}

const DNS_BASE: &str = "server_url: https://hs.example.com\nlisten_addr: 127.0.0.1:8080\nprefixes: {v4: 100.64.0.0/10, v6: fd7a:115c:a1e0::/48}\ndatabase: {type: sqlite, sqlite: {path: /TESTDIR/db.sqlite}}\nnoise: {private_key_path: /TESTDIR/noise.key}\n";

fn with_records_file(records: &str, dns: &str) -> Setup {
    let s = setup(&format!("{DNS_BASE}{dns}"));
    std::fs::write(s.dir.path().join("records.json"), records).expect("write");
    s
}

#[test]
fn extra_records_path_is_read_with_headscales_json_format() {
    let s = with_records_file(
        "[\n\t{\"name\": \"grafana.vpn.example.com\", \"type\": \"A\", \"value\": \"100.64.0.3\"},\n\t{\"name\": \"db.vpn.example.com\", \"type\": \"AAAA\", \"value\": \"fd7a:115c:a1e0::3\"}\n]\n",
        "dns:\n  magic_dns: true\n  base_domain: vpn.example.com\n  extra_records_path: /TESTDIR/records.json\n",
    );
    let (c, _) = expect_ok(Config::load(&s.config));
    let names: Vec<&str> = c
        .dns
        .extra_records
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["grafana.vpn.example.com", "db.vpn.example.com"]);
    assert_eq!(c.dns.extra_records[1].record_type, "AAAA");
}

#[test]
fn a_broken_extra_records_file_is_an_error_at_its_line() {
    // A value that is not an address, on line 3 of the file.
    let s = with_records_file(
        "[\n  {\"name\": \"a.vpn.example.com\", \"type\": \"A\", \"value\": \"100.64.0.3\"},\n  {\"name\": \"b.vpn.example.com\", \"type\": \"A\", \"value\": \"nope\"}\n]\n",
        "dns:\n  magic_dns: true\n  base_domain: vpn.example.com\n  extra_records_path: /TESTDIR/records.json\n",
    );
    let d = expect_err(Config::load(&s.config));
    let rec = s.dir.path().join("records.json");
    assert!(
        d.iter().any(|d| d.is_error()
            && d.file.as_deref() == Some(rec.as_path())
            && d.line == Some(3)
            && d.message.contains("\"nope\" is not an IP address")),
        "{}",
        render(&d)
    );
    // Not JSON at all: the parser's line.
    std::fs::write(&rec, "[\n  {\"name\": \"a\",\n  oops\n").expect("write");
    let d = expect_err(Config::load(&s.config));
    assert!(
        d.iter()
            .any(|d| d.is_error() && d.file.as_deref() == Some(rec.as_path()) && d.line.is_some()),
        "{}",
        render(&d)
    );
    // The standalone loader (the server's watcher) says the same.
    let d = ironscale_config::load_extra_records(&rec).expect_err("broken");
    assert!(d.iter().all(|d| d.file.as_deref() == Some(rec.as_path())));
    // A type mismatch.
    std::fs::write(
        &rec,
        r#"[{"name": "a.vpn.example.com", "type": "AAAA", "value": "100.64.0.3"}]"#,
    )
    .expect("write");
    let d = ironscale_config::load_extra_records(&rec).expect_err("mismatch");
    assert!(
        render(&d).contains("does not match type AAAA"),
        "{}",
        render(&d)
    );
}

#[test]
fn magic_dns_aaaa_defaults_on_and_can_be_turned_off() {
    let s = setup(&format!(
        "{DNS_BASE}dns:\n  magic_dns: true\n  base_domain: vpn.example.com\n"
    ));
    let (c, _) = expect_ok(Config::load(&s.config));
    assert!(c.dns.magic_dns_aaaa);
    let s = setup(&format!(
        "{DNS_BASE}dns:\n  magic_dns: true\n  base_domain: vpn.example.com\n  magic_dns_aaaa: false\n"
    ));
    let (c, _) = expect_ok(Config::load(&s.config));
    assert!(!c.dns.magic_dns_aaaa);
}

/// The seed's DNS pitfalls, each an error naming the key and the fix.
#[test]
fn dns_pitfalls_are_errors_that_name_the_key_and_the_fix() {
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
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  override_local_dns: true\n  nameservers:\n    global: []\n",
            "dns.override_local_dns",
            "dns.nameservers.global",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    split:\n      \"not a domain\": [10.0.0.53]\n",
            "dns.nameservers.split",
            "domain",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    restricted:\n      \"bad_domain!\": [10.0.0.53]\n",
            "dns.nameservers.restricted",
            "domain",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    global: [\"tls://1.1.1.1\"]\n",
            "dns.nameservers.global",
            "https://",
        ),
        (
            "dns:\n  magic_dns: true\n  base_domain: vpn.example.net\n  nameservers:\n    split:\n      corp.example: [\"dns.corp.example\"]\n",
            "dns.nameservers.split",
            "https://",
        ),
    ];
    for (dns, key, hint) in cases {
        let s = setup(&format!("{DNS_BASE}{dns}"));
        let d = expect_err(Config::load(&s.config));
        assert!(
            d.iter().any(|d| d.is_error()
                && d.key == *key
                && d.message.contains(hint)
                && d.line.is_some()),
            "{dns}\n{}",
            render(&d)
        );
    }
}

#[test]
fn cli_keys_from_the_file_and_the_environment() {
    // Headscale's `cli:` section is read (it used to be ignored).
    let text = format!(
        "{}cli:\n  address: hs.example.com:443\n  api_key: hskey-api-abc-def\n  timeout: 7s\n  insecure: true\n",
        "server_url: https://hs.example.com\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\n"
    );
    let s = setup(&text);
    let (c, w) = expect_ok(Config::load(&s.config));
    assert!(
        w.iter().all(|d| !d.key.starts_with("cli")),
        "{}",
        render(&w)
    );
    assert_eq!(c.cli.address.as_deref(), Some("hs.example.com:443"));
    assert_eq!(c.cli.api_key.expose(), "hskey-api-abc-def");
    assert_eq!(c.cli.timeout, Duration::from_secs(7));
    assert!(c.cli.insecure);
    assert!(
        !format!("{c:?}").contains("hskey-api-abc-def"),
        "the key shows in Debug"
    );

    // No file: the defaults, then HEADSCALE_CLI_* with IRONSCALE_CLI_* winning.
    let dir = tempfile::tempdir().expect("tempdir");
    let base = vec![(
        "IRONSCALE_DATA_DIR".to_string(),
        dir.path().display().to_string(),
    )];
    let (c, _) = expect_ok(Config::load_with_env(None, &base));
    assert_eq!(c.cli, CliConfig::default());
    assert_eq!(c.cli.timeout, Duration::from_secs(5));
    let var = |k: &str, v: &str| (k.to_string(), v.to_string());
    let mut env = base.clone();
    env.extend([
        var("HEADSCALE_CLI_ADDRESS", "https://a.example:8443"),
        var("HEADSCALE_CLI_API_KEY", "hskey-api-x-y"),
        var("HEADSCALE_CLI_TIMEOUT", "2s"),
        var("HEADSCALE_CLI_INSECURE", "true"),
    ]);
    let (c, w) = expect_ok(Config::load_with_env(None, &env));
    assert!(w.is_empty(), "{}", render(&w));
    assert_eq!(
        c.cli,
        CliConfig {
            address: Some("https://a.example:8443".into()),
            api_key: Secret::new("hskey-api-x-y"),
            timeout: Duration::from_secs(2),
            insecure: true,
        }
    );
    env.extend([
        var("IRONSCALE_CLI_ADDRESS", "b.example:443"),
        var("IRONSCALE_CLI_INSECURE", "false"),
    ]);
    let (c, _) = expect_ok(Config::load_with_env(None, &env));
    assert_eq!(c.cli.address.as_deref(), Some("b.example:443"));
    assert!(!c.cli.insecure);

    // A Headscale config whose cli.address is its gRPC port: a warning.
    let text = "server_url: https://hs.example.com\ngrpc_listen_addr: 0.0.0.0:50443\ndatabase:\n  sqlite:\n    path: /TESTDIR/db\ndns:\n  base_domain: t.internal\ncli:\n  address: hs.example.com:50443\n";
    let s = setup(text);
    let (_, w) = expect_ok(Config::load(&s.config));
    assert!(
        w.iter()
            .any(|d| d.key == "cli.address" && d.message.contains("serves no gRPC")),
        "{}",
        render(&w)
    );

    let mut env = base;
    env.push(var("HEADSCALE_CLI_TIMEOUT", "0s"));
    let e = expect_err(Config::load_with_env(None, &env));
    assert!(e.iter().any(|d| d.key == "cli.timeout"), "{}", render(&e));
}
