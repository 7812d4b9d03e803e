//! Issue 3 acceptance with real `tailscaled` 1.96.4 nodes: the seed's
//! enterprise policy (admins reach everything, clients only the internet
//! through exit nodes, admins SSH to tagged servers on port 22) lets an
//! allowed connection through and stops a denied one; a policy change takes
//! effect on running clients without restarting them; a broken policy is
//! rejected with file:line:col while the old one stays in force.
//!
//! Needs root (network namespaces, TUN); see ironscale-testkit.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironscale_testkit::{
    grep_file, install_clients, require_root, wait_until, Clients, Host, KeyOpts, Lab, Result,
    ServerProc, Signal, Tailscaled,
};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The seed's enterprise policy (section 4), users named bare as in Headscale docs.
const ENTERPRISE: &str = r#"{
  "groups": {
    "group:admin": ["admin"],
    "group:clients": ["clients"]
  },
  "tagOwners": {
    "tag:exit-node": ["group:admin"],
    "tag:server": ["group:admin"]
  },
  "acls": [
    // Admin: full access to all nodes
    {"action": "accept", "src": ["group:admin"], "dst": ["*:*"]},
    // Clients: internet only through exit nodes
    {"action": "accept", "src": ["group:clients"], "dst": ["autogroup:internet:*"]},
    // Admin can SSH to tagged servers
    {"action": "accept", "src": ["group:admin"], "dst": ["tag:server:22"]},
  ]
}
"#;

fn node(lab: &Lab, clients: &Clients, name: &str) -> Tailscaled {
    let host = must(lab.add_host(name));
    must(Tailscaled::start(&host, clients, "ts", &[]))
}

/// A TCP round trip that must succeed (retried briefly: the path may need a moment).
fn reach(from: &Host, src: Ipv4Addr, dst: Ipv4Addr, port: u16, what: &str) {
    let start = Instant::now();
    let reply = must(wait_until(
        what,
        Duration::from_secs(20),
        Duration::from_millis(500),
        || Ok(from.tcp_roundtrip(Some(src), dst, port, "hello").ok()),
    ));
    assert!(
        reply.contains("hello"),
        "{what}: unexpected reply {reply:?}"
    );
    eprintln!(
        "{what}: allowed, ok after {:.1}s",
        start.elapsed().as_secs_f64()
    );
}

/// A TCP round trip that must fail (the packet filter of the destination drops it).
fn blocked(from: &Host, src: Ipv4Addr, dst: Ipv4Addr, port: u16, what: &str) {
    let r = from.tcp_roundtrip(Some(src), dst, port, "hello");
    assert!(
        r.is_err(),
        "{what}: expected to be blocked by the policy, got {r:?}"
    );
    eprintln!("{what}: blocked, as the policy says");
}

/// Root check, clients, a lab named `prefix`, and `ironscale serve` with
/// `policy.mode: file` on `<lab>/policy.hujson`, written from `policy` first.
fn policy_lab(prefix: &str, policy: &str) -> (Clients, Lab, ServerProc, PathBuf) {
    must(require_root());
    let clients = must(install_clients());
    let lab = must(Lab::new(prefix));
    let policy_path = lab.dir().join("policy.hujson");
    std::fs::write(&policy_path, policy).expect("write the policy file");
    let server = must(ServerProc::start(
        &lab,
        Some(Path::new(BIN)),
        serde_json::json!({"policy": {"mode": "file", "path": policy_path.to_string_lossy()}}),
    ));
    (clients, lab, server, policy_path)
}

#[test]
fn enterprise_policy_allows_denies_and_reloads() {
    let (clients, lab, server, policy_path) = policy_lab("isi-pol", ENTERPRISE);
    // The bare user names load with a warning that suggests `admin@`.
    assert!(
        !grep_file(server.log_path(), &["admin@"], 5).is_empty(),
        "expected a warning suggesting admin@ in the server log:\n{}",
        server.log_tail(40)
    );
    must(server.create_user("admin"));
    must(server.create_user("clients"));
    let kadm = must(server.create_preauthkey(
        "admin",
        &KeyOpts {
            reusable: true,
            ..KeyOpts::default()
        },
    ));
    let kcli = must(server.create_preauthkey(
        "clients",
        &KeyOpts {
            reusable: true,
            ..KeyOpts::default()
        },
    ));
    let ksrv = must(server.create_preauthkey(
        "admin",
        &KeyOpts {
            reusable: true,
            tags: vec!["tag:server".into()],
            ..KeyOpts::default()
        },
    ));
    // A key with a tag nobody owns is refused by the server.
    let bad = server.create_preauthkey(
        "clients",
        &KeyOpts {
            tags: vec!["tag:server".into()],
            ..KeyOpts::default()
        },
    );
    assert!(
        bad.is_err(),
        "clients must not get a tag:server key: {bad:?}"
    );

    let url = server.url();
    let adm = node(&lab, &clients, "adm");
    let cli = node(&lab, &clients, "cli");
    let srv = node(&lab, &clients, "srv");
    for (n, k, h) in [
        (&adm, &kadm, "adm"),
        (&cli, &kcli, "cli"),
        (&srv, &ksrv, "srv"),
    ] {
        must(n.up_ok(&url, Some(k), h, &[]));
        must(n.wait_running(Duration::from_secs(30)));
    }
    let (ia, ic, is) = (must(adm.ip4()), must(cli.ip4()), must(srv.ip4()));
    eprintln!("tailnet IPs: adm={ia} cli={ic} srv={is}");
    let nodes = must(server.nodes());
    let srv_info = nodes
        .iter()
        .find(|n| n.given_name == "srv")
        .expect("srv listed");
    assert!(
        srv_info.raw.to_string().contains("tag:server"),
        "srv must be tagged: {}",
        srv_info.raw
    );

    let _ssh = must(srv.host().tcp_echo("ssh", is, 22));
    let _web = must(srv.host().tcp_echo("web", is, 8080));
    let _cliweb = must(cli.host().tcp_echo("cliweb", ic, 8080));

    // Allowed: admin → server:22 and admin → client. Denied: client → server, client → admin.
    reach(adm.host(), ia, is, 22, "admin -> tag:server:22");
    reach(adm.host(), ia, ic, 8080, "admin -> client:8080");
    blocked(cli.host(), ic, is, 22, "client -> tag:server:22");
    blocked(cli.host(), ic, is, 8080, "client -> tag:server:8080");

    // A policy change reaches the running clients (no restart): clients may
    // now use the server's web port.
    let changed = ENTERPRISE.replace(
        "    // Admin can SSH to tagged servers",
        "    {\"action\": \"accept\", \"src\": [\"group:clients\"], \"dst\": [\"tag:server:8080\"]},\n    // Admin can SSH to tagged servers",
    );
    assert_ne!(changed, ENTERPRISE);
    std::fs::write(&policy_path, &changed).unwrap();
    reach(
        cli.host(),
        ic,
        is,
        8080,
        "after the change: client -> tag:server:8080",
    );
    blocked(
        cli.host(),
        ic,
        is,
        22,
        "after the change: client -> tag:server:22",
    );

    // A broken policy (unknown group) is rejected with file:line:col; the old
    // one stays in force.
    let broken = changed.replace(
        "\"src\": [\"group:clients\"], \"dst\": [\"tag:server:8080\"]",
        "\"src\": [\"group:contractors\"], \"dst\": [\"tag:server:8080\"]",
    );
    std::fs::write(&policy_path, &broken).unwrap();
    let lines = must(wait_until(
        "the server to reject the broken policy",
        Duration::from_secs(10),
        Duration::from_millis(300),
        || {
            let l = grep_file(server.log_path(), &["group:contractors"], 5);
            Ok((!l.is_empty()).then_some(l))
        },
    ));
    let shown = lines.join("\n");
    assert!(
        shown.contains("policy.hujson:"),
        "error must name file:line:col: {shown}"
    );
    assert!(server.is_running(), "the server must keep running");
    reach(
        cli.host(),
        ic,
        is,
        8080,
        "broken policy ignored: client -> tag:server:8080 still allowed",
    );
    reach(
        adm.host(),
        ia,
        is,
        22,
        "broken policy ignored: admin -> tag:server:22 still allowed",
    );

    // SIGHUP (`systemctl reload`) re-reads the unchanged file: the broken policy is checked
    // and rejected again, and the server keeps running on the old one.
    let rejections = || grep_file(server.log_path(), &["group:contractors"], 1000).len();
    let before = rejections();
    must(server.signal(Signal::SIGHUP));
    must(wait_until(
        "SIGHUP to re-check the policy file",
        Duration::from_secs(10),
        Duration::from_millis(200),
        || Ok((rejections() > before).then_some(())),
    ));
    assert!(server.is_running(), "SIGHUP stopped the server");
    reach(
        cli.host(),
        ic,
        is,
        8080,
        "after SIGHUP: client -> tag:server:8080 still allowed",
    );
}

/// The policy's `ssh` section with real clients: `tailscale up --ssh` on a
/// tagged server, and `tailscale ssh` (OpenSSH over `tailscale nc`) from an
/// admin node gets a shell as root, while a node the policy does not name is
/// refused by the server's Tailscale SSH, which only knows the `SSHPolicy`
/// our map gave it.
#[test]
fn tailscale_ssh_follows_the_policy() {
    let policy = r#"{
  "groups": {"group:admin": ["admin@"]},
  "tagOwners": {"tag:server": ["group:admin"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
  "ssh": [
    // admins log in to tagged servers as root, no re-authentication
    {"action": "accept", "src": ["group:admin"], "dst": ["tag:server"], "users": ["root"]},
  ],
}
"#;
    let (clients, lab, server, _) = policy_lab("isi-ssh", policy);
    must(server.create_user("admin"));
    must(server.create_user("bob"));
    let key = |user: &str, tags: Vec<String>| {
        must(server.create_preauthkey(
            user,
            &KeyOpts {
                reusable: true,
                tags,
                ..KeyOpts::default()
            },
        ))
    };
    let (kadm, kbob, ksrv) = (
        key("admin", vec![]),
        key("bob", vec![]),
        key("admin", vec!["tag:server".into()]),
    );
    let url = server.url();
    let adm = node(&lab, &clients, "adm");
    let bob = node(&lab, &clients, "bob");
    let srv = node(&lab, &clients, "srv");
    must(adm.up_ok(&url, Some(&kadm), "adm", &[]));
    must(bob.up_ok(&url, Some(&kbob), "bob", &[]));
    must(srv.up_ok(&url, Some(&ksrv), "srv", &["--ssh"]));
    for n in [&adm, &bob, &srv] {
        must(n.wait_running(Duration::from_secs(30)));
    }
    let is = must(srv.ip4());
    must(adm.wait_peer(is, true, Duration::from_secs(20)));
    must(bob.wait_peer(is, true, Duration::from_secs(20)));

    // `tailscale ssh` runs OpenSSH with `tailscale nc` as its proxy and the
    // server's host keys from the netmap; BatchMode: never prompt.
    let ssh = |from: &Tailscaled| {
        must(from.cli(&[
            "ssh",
            &format!("root@{is}"),
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=10",
            "echo ssh-ok-$(id -u)",
        ]))
    };
    let out = must(wait_until(
        "admin's `tailscale ssh root@srv` to run a command",
        Duration::from_secs(30),
        Duration::from_secs(1),
        || {
            let out = ssh(&adm);
            let t = ironscale_testkit::output_text(&out);
            Ok(t.contains("ssh-ok-0").then_some(t))
        },
    ));
    eprintln!("admin -> srv over Tailscale SSH:\n{out}");

    let out = ssh(&bob);
    let t = ironscale_testkit::output_text(&out);
    eprintln!("bob -> srv over Tailscale SSH ({}):\n{t}", out.status);
    assert!(
        !out.status.success() && !t.contains("ssh-ok"),
        "bob got a shell the policy does not give him:\n{t}"
    );
    // And it was the server's Tailscale SSH, applying our SSHPolicy, that said no.
    let why = srv.log_grep(&["tailnet policy does not permit"], 3);
    assert!(
        !why.is_empty(),
        "{}",
        srv.err("no policy rejection in srv's tailscaled log")
    );
    eprintln!("srv's tailscaled: {}", why[0]);
}

/// Tags a client asks for (`tailscale up --advertise-tags`) are checked
/// against `tagOwners` at registration: an owner's node becomes a tagged node
/// (owned by no user), anyone else is refused with a clear error and no node
/// is created. `nodes tag` from the CLI only takes tags the policy defines,
/// and a retag reaches the peers' maps.
#[test]
fn requested_tags_are_checked_against_tag_owners() {
    let (clients, lab, server, _) = policy_lab(
        "isi-tags",
        r#"{
  "groups": {"group:admin": ["admin@"]},
  "tagOwners": {"tag:server": ["group:admin"], "tag:web": ["group:admin"]},
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}"#,
    );
    must(server.create_user("admin"));
    must(server.create_user("bob"));
    let (kadm, kbob) = (
        must(server.reusable_key("admin")),
        must(server.reusable_key("bob")),
    );
    let url = server.url();

    // bob does not own tag:server.
    let x = node(&lab, &clients, "x");
    let out = must(x.up(
        &url,
        Some(&kbob),
        "x",
        &["--advertise-tags=tag:server", "--timeout=15s"],
    ));
    let t = ironscale_testkit::output_text(&out);
    let log = x.log_grep(&["not permitted", "tags"], 3);
    eprintln!(
        "bob's --advertise-tags=tag:server ({}):\n{t}\nlog: {log:#?}",
        out.status
    );
    assert!(
        !out.status.success(),
        "{}",
        x.err("bob's node took tag:server")
    );
    assert!(
        t.contains("not permitted") || log.iter().any(|l| l.contains("not permitted")),
        "{}",
        x.err("no clear tag error for bob")
    );
    assert!(
        !t.contains("policy.hujson") && !log.iter().any(|l| l.contains("policy.hujson")),
        "the client was shown the server's file names:\n{t}\n{log:#?}"
    );
    assert!(
        must(server.nodes()).is_empty(),
        "a refused node was created"
    );

    // An admin's node asks for it and becomes a tagged node.
    let y = node(&lab, &clients, "y");
    must(y.up_ok(&url, Some(&kadm), "y", &["--advertise-tags=tag:server"]));
    must(y.wait_running(Duration::from_secs(30)));
    let nodes = must(server.nodes());
    let ny = nodes
        .iter()
        .find(|n| n.given_name == "y")
        .expect("y listed");
    assert_eq!(
        ny.raw["tags"],
        serde_json::json!(["tag:server"]),
        "{}",
        ny.raw
    );
    assert!(
        ny.user.is_none(),
        "a tagged node belongs to no user: {}",
        ny.raw
    );

    // The CLI only applies defined tags; a retag reaches a peer's map.
    let z = node(&lab, &clients, "z");
    must(z.up_ok(&url, Some(&kbob), "z", &[]));
    must(z.wait_running(Duration::from_secs(30)));
    let iy = must(y.ip4());
    must(z.wait_peer(iy, true, Duration::from_secs(20)));
    let id = ny.id.to_string();
    let out = must(server.cli(&["nodes", "tag", "-i", &id, "-t", "tag:nope"]));
    let t = ironscale_testkit::output_text(&out);
    assert!(
        !out.status.success() && t.contains("tag:nope") && t.contains("tagOwners"),
        "an undefined tag was applied or the error is unclear:\n{t}"
    );
    must(server.cli_ok(&["nodes", "tag", "-i", &id, "-t", "tag:web"]));
    must(wait_until(
        "z to see y tagged tag:web",
        Duration::from_secs(10),
        Duration::from_millis(250),
        || {
            let st = z.status_json()?;
            let tagged = st["Peer"].as_object().is_some_and(|peers| {
                peers.values().any(|p| {
                    p["TailscaleIPs"].to_string().contains(&iy.to_string())
                        && p["Tags"] == serde_json::json!(["tag:web"])
                })
            });
            Ok(tagged.then_some(()))
        },
    ));
}
