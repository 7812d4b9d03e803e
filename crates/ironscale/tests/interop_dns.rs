//! MagicDNS, split DNS and extra records with real, unmodified `tailscaled` 1.96.4 nodes that
//! manage DNS (`--accept-dns=true`). Every check sends real DNS queries to the client's own
//! resolver at 100.100.100.100 from inside the client's namespace, or resolves through the
//! namespace's resolv.conf that tailscaled wrote, and asserts on the answer.
//!
//! * names: `<peer>.tail.test` answers A and AAAA with the peer's addresses (AAAA through the
//!   `magicdns-aaaa` attribute the server grants by default), `<peer>` resolves through the
//!   search domain (tailscaled forwards a single-label query upstream like any name outside its
//!   domains); a TCP connection to the peer by name carries data; `tailscale status --json` shows the names; with
//!   `dns.magic_dns_aaaa: false` AAAA for a peer with IPv4 gives no address.
//! * split DNS: `nameservers.split` and `nameservers.restricted` together, each domain answered
//!   by its own small DNS server in the lab (their logs say who was asked), any other name by the
//!   global one (`override_local_dns: true`) or the node's own resolver (`false`).
//! * extra records from the config, and from `extra_records_path` rewritten in place and
//!   replaced by a rename while the server runs (the test prints how long each took); a broken
//!   file is reported at its line and changes nothing.
//! * a rename moves the name on the peer; `tailscale set --accept-dns=false` is the client's
//!   choice; SIGHUP after editing the config's dns section reaches the clients.
//!
//! Checks that restart the server take ~10 s for the clients to come back: after the failed
//! Noise dial tailscaled tries TLS to the `http://` control URL and waits for that attempt's
//! deadline (its log: "forcing port 443 dial due to recent noise dial"); the server is up
//! again within 0.1 s.
//!
//! The machine's `/etc/resolv.conf` is never touched: DNS nodes run with a private `/etc`
//! (see `Tailscaled::start_with_dns`); each test checks the machine's file is unchanged and no
//! `/etc/resolv.pre-tailscale-backup.conf` appeared.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use ironscale_testkit::{
    grep_file, install_clients, output_text, require_root, Clients, DnsAnswer, DnsServer, DnsType,
    Host, Lab, Result, ServerProc, Signal, Tailscaled,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");
const QUAD100: IpAddr = IpAddr::V4(Ipv4Addr::new(100, 100, 100, 100));
const HOST_RESOLV: &str = "/etc/resolv.conf";
const HOST_BACKUP: &str = "/etc/resolv.pre-tailscale-backup.conf";
/// How long a change may take to reach a client before the test gives up (the time it took
/// is printed).
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// The machine's resolver files, to compare before and after.
#[derive(Debug, PartialEq, Eq)]
struct HostDnsFiles {
    resolv: Option<Vec<u8>>,
    backup_exists: bool,
}

impl HostDnsFiles {
    fn now() -> HostDnsFiles {
        HostDnsFiles {
            resolv: std::fs::read(HOST_RESOLV).ok(),
            backup_exists: Path::new(HOST_BACKUP).exists(),
        }
    }

    /// Panics unless the machine's files are what they were at `self`.
    fn assert_unchanged(&self, when: &str) {
        let now = HostDnsFiles::now();
        assert_eq!(
            now.resolv, self.resolv,
            "{when}: the machine's {HOST_RESOLV} changed"
        );
        assert!(
            !now.backup_exists || self.backup_exists,
            "{when}: {HOST_BACKUP} appeared on the machine"
        );
    }
}

/// A DNS-managing node named `name` (host and hostname), up with `key`; `own_resolver` is
/// the nameserver in the namespace's resolv.conf before tailscaled starts.
fn dns_node(
    lab: &Lab,
    clients: &Clients,
    server: &ServerProc,
    key: &str,
    name: &str,
    own_resolver: Option<Ipv4Addr>,
) -> Tailscaled {
    let h = must(lab.add_host(name));
    if let Some(ns) = own_resolver {
        // The namespace's own resolver, as a DHCP client would have written it.
        std::fs::write(
            h.resolv_conf_path(),
            format!("# lab: the namespace's own resolver\nnameserver {ns}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let t = must(Tailscaled::start_with_dns(&h, clients, "ts", &[]));
    must(t.up_ok(&server.url(), Some(key), name, &[]));
    t
}

/// The node's tailnet addresses from its own status (IPv4, IPv6).
fn self_ips(t: &Tailscaled) -> (Ipv4Addr, Ipv6Addr) {
    let st = must(t.status_json());
    let ips: Vec<IpAddr> = st["Self"]["TailscaleIPs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str()?.parse().ok())
        .collect();
    let v4 = ips.iter().find_map(|a| match a {
        IpAddr::V4(a) => Some(*a),
        IpAddr::V6(_) => None,
    });
    let v6 = ips.iter().find_map(|a| match a {
        IpAddr::V6(a) => Some(*a),
        IpAddr::V4(_) => None,
    });
    match (v4, v6) {
        (Some(a), Some(b)) => (a, b),
        _ => panic!("{} has no IPv4 and IPv6 tailnet address: {ips:?}", t.name()),
    }
}

fn node_id(server: &ServerProc, given_name: &str) -> u64 {
    must(server.nodes())
        .into_iter()
        .find(|n| n.given_name == given_name)
        .unwrap_or_else(|| panic!("no node {given_name} in `nodes list`"))
        .id
}

/// One query to `server` from `h`.
fn ask(h: &Host, server: IpAddr, name: &str, t: DnsType) -> DnsAnswer {
    must(h.dns_query(server, name, t))
}

/// Polls `name`/`t` at 100.100.100.100 from `h` until `ok` holds; returns the answer and the
/// seconds it took (panics with the last answer after [`PROPAGATION_LIMIT`]).
fn wait_answer(
    h: &Host,
    name: &str,
    t: DnsType,
    what: &str,
    ok: impl Fn(&DnsAnswer) -> bool,
) -> (DnsAnswer, f64) {
    let t0 = Instant::now();
    loop {
        let a = ask(h, QUAD100, name, t);
        if ok(&a) {
            return (a, t0.elapsed().as_secs_f64());
        }
        assert!(
            t0.elapsed() < PROPAGATION_LIMIT,
            "{what}: {name} {t} at 100.100.100.100 from {} still answers {a} after {:?}",
            h.name(),
            PROPAGATION_LIMIT
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn addrs_are(a: &DnsAnswer, want: &[IpAddr]) -> bool {
    a.is_noerror() && a.addrs == want
}

/// Waits until `t` wrote its resolver into the namespace's resolv.conf; returns the seconds.
fn wait_resolv_conf(t: &Tailscaled, what: &str, ok: impl Fn(&str) -> bool) -> f64 {
    let t0 = Instant::now();
    loop {
        let conf = t.host().resolv_conf();
        if ok(&conf) {
            return t0.elapsed().as_secs_f64();
        }
        assert!(
            t0.elapsed() < PROPAGATION_LIMIT,
            "{what}: {}'s resolv.conf is still:\n{conf}",
            t.host().name()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn points_at_quad100(conf: &str) -> bool {
    conf.lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["nameserver", "100.100.100.100"])
}

/// Four DNS servers in the lab, each answering every name with its own address: for the
/// server's `split`, `restricted` and `global` nameservers, and the nodes' own (`local`, in
/// their namespace's resolv.conf before tailscaled starts).
struct Resolvers {
    split: DnsServer,
    restricted: DnsServer,
    global: DnsServer,
    local: DnsServer,
}

fn resolvers(lab: &Lab) -> Resolvers {
    let mk = |host: &str, last: u8| {
        let h = must(lab.add_host(host));
        must(h.dns_server(
            "dns",
            h.ip(),
            Ipv4Addr::new(192, 0, 2, last),
            Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, u16::from(last))),
        ))
    };
    Resolvers {
        split: mk("dnssplit", 11),
        restricted: mk("dnsrestr", 12),
        global: mk("dnsglobal", 13),
        local: mk("dnslocal", 14),
    }
}

/// Which of the resolvers was asked for `name`.
fn asked(r: &Resolvers, name: &str) -> Vec<&'static str> {
    let mut v = Vec::new();
    for (label, s) in [
        ("split", &r.split),
        ("restricted", &r.restricted),
        ("global", &r.global),
        ("local", &r.local),
    ] {
        if s.was_asked(name) {
            v.push(label);
        }
    }
    v
}

/// One lab: the server, its user, DNS nodes, optionally the four resolvers.
struct Setup {
    before: HostDnsFiles,
    nodes: Vec<Tailscaled>,
    server: ServerProc,
    resolvers: Option<Resolvers>,
    lab: Lab,
}

impl Setup {
    /// A lab `prefix` (with the four resolvers if `with_resolvers`, `local` then in every
    /// node's resolv.conf), the server with the default lab config merged with
    /// `cfg(lab, resolvers)`, and one DNS node per name.
    fn new(
        prefix: &str,
        with_resolvers: bool,
        cfg: impl FnOnce(&Lab, Option<&Resolvers>) -> Value,
        names: &[&str],
    ) -> Setup {
        let before = HostDnsFiles::now();
        let t0 = Instant::now();
        must(require_root());
        let clients = must(install_clients());
        let lab = must(Lab::new(prefix));
        let resolvers = with_resolvers.then(|| resolvers(&lab));
        let overrides = cfg(&lab, resolvers.as_ref());
        let server = must(ServerProc::start(&lab, Some(Path::new(BIN)), overrides));
        must(server.create_user("alice"));
        let key = must(server.reusable_key("alice"));
        let nodes: Vec<Tailscaled> = names
            .iter()
            .map(|n| {
                let own = resolvers.as_ref().map(|r| r.local.ip());
                dns_node(&lab, &clients, &server, &key, n, own)
            })
            .collect();
        for n in &nodes {
            let t = wait_resolv_conf(n, "after up", points_at_quad100);
            assert!(
                n.private_etc_file("resolv.pre-tailscale-backup.conf")
                    .is_some(),
                "{}: tailscaled's backup is not in the node's private /etc",
                n.host().name()
            );
            eprintln!(
                "{}'s resolv.conf points at 100.100.100.100 ({t:.1}s after up)",
                n.host().name()
            );
        }
        before.assert_unchanged("with the DNS nodes running");
        eprintln!("setup {prefix}: {:.1}s", t0.elapsed().as_secs_f64());
        Setup {
            before,
            nodes,
            server,
            resolvers,
            lab,
        }
    }

    /// Stops the nodes (tailscaled restores the namespace's resolv.conf) and checks the
    /// machine's files once more.
    fn finish(mut self) {
        for mut n in self.nodes.drain(..) {
            n.stop();
            assert!(
                !points_at_quad100(&n.host().resolv_conf()),
                "{}: the namespace's resolv.conf still points at 100.100.100.100 after stop",
                n.host().name()
            );
        }
        self.before.assert_unchanged("after the DNS nodes stopped");
        drop(self.server);
        drop(self.lab);
    }
}

/// `<peer>`/`<peer>.tail.test` at 100.100.100.100 (A), through the OS resolver and by TCP,
/// `status --json` names, inline extra records, a rename, and `--accept-dns=false`.
#[test]
fn magic_dns_names_extra_records_rename_and_accept_dns_false() {
    let s = Setup::new(
        "isi-dns",
        false,
        |_, _| {
            json!({"dns": {"extra_records": [
                {"name": "grafana.vpn.example.com", "type": "A", "value": "100.64.99.1"},
                {"name": "grafana.vpn.example.com", "type": "AAAA", "value": "fd7a:115c:a1e0::99:1"},
            ]}})
        },
        &["alpha", "bravo"],
    );
    let (alpha, bravo) = (&s.nodes[0], &s.nodes[1]);
    let (b4, _) = self_ips(bravo);
    let (a4, _) = self_ips(alpha);
    let ha = alpha.host().clone();

    // `tailscale status --json` shows the names.
    must(alpha.wait_peer(b4, false, Duration::from_secs(30)));
    let st = must(alpha.status_json());
    assert_eq!(
        st["Self"]["DNSName"], "alpha.tail.test.",
        "alpha's own name"
    );
    assert_eq!(
        peer_dns_name(alpha, b4),
        "bravo.tail.test.",
        "bravo as alpha sees it"
    );

    // <peer>.tail.test at 100.100.100.100, over UDP and TCP. (The short name `bravo` is the
    // OS resolver's business: tailscaled's resolver forwards a single-label query upstream
    // like any name outside its domains; the search domain below turns it into the FQDN.)
    for name in ["bravo.tail.test", "bravo.tail.test.", "BRAVO.Tail.Test"] {
        let a = ask(&ha, QUAD100, name, DnsType::A);
        assert!(addrs_are(&a, &[IpAddr::V4(b4)]), "{name} A: {a}");
    }
    let a = must(ha.dns_query_with(
        QUAD100,
        "bravo.tail.test",
        DnsType::A,
        true,
        Duration::from_secs(3),
    ));
    assert!(
        addrs_are(&a, &[IpAddr::V4(b4)]),
        "bravo.tail.test A over TCP: {a}"
    );
    let a = ask(&ha, QUAD100, "nosuchnode.tail.test", DnsType::A);
    assert!(
        a.is_nxdomain(),
        "an unknown name in the tailnet domain: {a}"
    );

    // Through the OS resolver (the namespace's resolv.conf that tailscaled wrote, with its
    // search domain for the short name), and a TCP connection by name.
    for name in ["bravo", "bravo.tail.test"] {
        let got = must(ha.resolve_os(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got.contains(&IpAddr::V4(b4)),
            "getaddrinfo({name}) in alpha's namespace: {got:?}"
        );
    }
    let _echo = must(bravo.host().tcp_echo("echo", b4, 7100));
    for name in ["bravo", "bravo.tail.test"] {
        let reply = must(ha.tcp_roundtrip_name(name, 7100, &format!("hello {name}")));
        assert_eq!(
            reply,
            format!("echo from {b4} to {a4}: hello {name}"),
            "TCP to {name}:7100"
        );
    }

    // Extra records from the config.
    let a = ask(&ha, QUAD100, "grafana.vpn.example.com", DnsType::A);
    assert!(addrs_are(&a, &[ip("100.64.99.1")]), "extra record A: {a}");
    let a = ask(&ha, QUAD100, "grafana.vpn.example.com", DnsType::Aaaa);
    assert!(
        addrs_are(&a, &[ip("fd7a:115c:a1e0::99:1")]),
        "extra record AAAA: {a}"
    );
    let got = must(ha.resolve_os("grafana.vpn.example.com"))
        .unwrap_or_else(|e| panic!("grafana.vpn.example.com: {e}"));
    assert!(
        got.contains(&ip("100.64.99.1")),
        "getaddrinfo(grafana...): {got:?}"
    );

    // A rename: the new name resolves on the peer, the old one no longer does.
    let id = node_id(&s.server, "bravo");
    let t0 = Instant::now();
    must(
        s.server
            .cli_ok(&["nodes", "rename", "-i", &id.to_string(), "charlie"]),
    );
    let (_, t_new) = wait_answer(&ha, "charlie.tail.test", DnsType::A, "after rename", |a| {
        addrs_are(a, &[IpAddr::V4(b4)])
    });
    wait_answer(&ha, "bravo.tail.test", DnsType::A, "after rename", |a| {
        a.is_nxdomain()
    });
    let t_old = t0.elapsed().as_secs_f64();
    eprintln!(
        "RENAME bravo -> charlie: the new name resolves on alpha after {t_new:.2}s, \
         the old one is NXDOMAIN after {t_old:.2}s"
    );
    let got = must(ha.resolve_os("charlie")).unwrap_or_else(|e| panic!("charlie: {e}"));
    assert!(
        got.contains(&IpAddr::V4(b4)),
        "getaddrinfo(charlie): {got:?}"
    );
    let old = must(ha.resolve_os("bravo"));
    assert!(
        old.as_ref().map_or(true, |a| !a.contains(&IpAddr::V4(b4))),
        "getaddrinfo(bravo) after the rename: {old:?}"
    );
    let reply = must(ha.tcp_roundtrip_name("charlie", 7100, "renamed"));
    assert_eq!(reply, format!("echo from {b4} to {a4}: renamed"));
    assert_eq!(peer_dns_name(alpha, b4), "charlie.tail.test.");
    let st = must(bravo.status_json());
    assert_eq!(
        st["Self"]["DNSName"], "charlie.tail.test.",
        "the renamed node's own DNSName"
    );

    // `tailscale set --accept-dns=false`: the client stops managing DNS (tailscaled restores
    // the namespace's resolv.conf), and the server does not insist.
    let out = must(alpha.cli(&["set", "--accept-dns=false"]));
    assert!(
        out.status.success(),
        "set --accept-dns=false: {}",
        output_text(&out)
    );
    let t = wait_resolv_conf(alpha, "after --accept-dns=false", |c| !points_at_quad100(c));
    eprintln!(
        "--accept-dns=false: alpha's resolv.conf restored after {t:.2}s:\n{}",
        ha.resolv_conf()
    );
    assert_eq!(corp_dns(alpha), Some(false));
    // A new map (a rename of the peer) still reaches alpha, which keeps its choice.
    must(
        s.server
            .cli_ok(&["nodes", "rename", "-i", &id.to_string(), "delta"]),
    );
    let t0 = Instant::now();
    while peer_dns_name(alpha, b4) != "delta.tail.test." {
        assert!(
            t0.elapsed() < PROPAGATION_LIMIT,
            "alpha (--accept-dns=false) never saw the rename to delta"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !points_at_quad100(&ha.resolv_conf()),
        "a new map turned alpha's DNS management back on:\n{}",
        ha.resolv_conf()
    );
    assert_eq!(
        corp_dns(alpha),
        Some(false),
        "alpha's CorpDNS pref after a new map"
    );
    must(alpha.wait_running(Duration::from_secs(10)));
    let reply = must(ha.tcp_roundtrip(None, b4, 7100, "by-ip"));
    assert_eq!(reply, format!("echo from {b4} to {a4}: by-ip"));
    // 100.100.100.100 still answers MagicDNS names for alpha (tailscaled keeps the names
    // whatever --accept-dns says); a deleted node's name goes. (Without --accept-dns the
    // client does not take tail.test as its own domain, so an unknown name there is forwarded
    // upstream like any other: SERVFAIL here, where there is none.)
    let a = ask(&ha, QUAD100, "delta.tail.test", DnsType::A);
    assert!(addrs_are(&a, &[IpAddr::V4(b4)]), "delta.tail.test A: {a}");
    let t0 = Instant::now();
    must(s.server.delete_node(id));
    let (_, t) = wait_answer(
        &ha,
        "delta.tail.test",
        DnsType::A,
        "after nodes delete",
        |a| a.no_reply.is_none() && a.addrs.is_empty(),
    );
    eprintln!("DELETE: the deleted node's name no longer answers on alpha after {t:.2}s");
    must(alpha.wait_peer_gone(
        &b4.to_string(),
        PROPAGATION_LIMIT.saturating_sub(t0.elapsed()),
    ));
    s.finish();
}

/// AAAA: with the default config the server grants `magicdns-aaaa` and a peer's name answers
/// AAAA with its IPv6 address; with `dns.magic_dns_aaaa: false` (server restarted) the same
/// query gives no address while A still answers.
#[test]
fn magic_dns_aaaa_by_default_and_not_with_magic_dns_aaaa_false() {
    let mut s = Setup::new("isi-dns6", false, |_, _| json!({}), &["alpha", "bravo"]);
    let (b4, b6) = self_ips(&s.nodes[1]);
    let ha = s.nodes[0].host().clone();
    must(s.nodes[0].wait_peer(b4, false, Duration::from_secs(30)));
    let a = ask(&ha, QUAD100, "bravo.tail.test", DnsType::A);
    assert!(addrs_are(&a, &[IpAddr::V4(b4)]), "bravo.tail.test A: {a}");
    let a = ask(&ha, QUAD100, "bravo.tail.test", DnsType::Aaaa);
    assert!(
        addrs_are(&a, &[IpAddr::V6(b6)]),
        "bravo.tail.test AAAA: {a}"
    );
    for name in ["bravo", "bravo.tail.test"] {
        let got = must(ha.resolve_os(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got.contains(&IpAddr::V4(b4)) && got.contains(&IpAddr::V6(b6)),
            "getaddrinfo({name}) has both addresses: {got:?}"
        );
    }

    must(
        s.server
            .update_config(&json!({"dns": {"magic_dns_aaaa": false}})),
    );
    must(s.server.restart());
    let (a, t) = wait_answer(
        &ha,
        "bravo.tail.test",
        DnsType::Aaaa,
        "magic_dns_aaaa: false",
        |a| a.is_noerror() && a.addrs.is_empty(),
    );
    eprintln!(
        "magic_dns_aaaa: false: AAAA for bravo gives no address {t:.2}s after the restart ({a})"
    );
    let a = ask(&ha, QUAD100, "bravo.tail.test", DnsType::A);
    assert!(addrs_are(&a, &[IpAddr::V4(b4)]), "bravo.tail.test A: {a}");
    s.finish();
}

/// Split DNS: `nameservers.split` and `nameservers.restricted` at once, each domain answered by
/// its own resolver in the lab, and with `override_local_dns: true` every other name by the
/// global one, with `false` by the node's own resolver; the resolvers' logs say which was
/// asked.
#[test]
fn split_and_restricted_nameservers_with_a_global_resolver() {
    let mut s = Setup::new(
        "isi-dnssplit",
        true,
        |_, r| {
            let r = r.unwrap_or_else(|| panic!("no resolvers"));
            json!({"dns": {
                "override_local_dns": true,
                "nameservers": {
                    "global": [r.global.ip().to_string()],
                    "split": {"corp.test": [r.split.ip().to_string()]},
                    "restricted": {"other.test": [r.restricted.ip().to_string()]},
                },
            }})
        },
        &["alpha"],
    );
    let r = s
        .resolvers
        .as_ref()
        .unwrap_or_else(|| panic!("no resolvers"));
    let ha = s.nodes[0].host().clone();
    let cases = [
        ("x.corp.test", &r.split, "split"),
        ("x.other.test", &r.restricted, "restricted"),
        ("www.example.com", &r.global, "global"),
    ];
    for (name, srv, label) in cases {
        let a = ask(&ha, QUAD100, name, DnsType::A);
        assert!(
            addrs_are(&a, &[IpAddr::V4(srv.answer_v4())]),
            "{name} should be answered by the {label} resolver ({}): {a}\n{}",
            srv.ip(),
            dns_status(&s.nodes[0])
        );
        assert_eq!(asked(r, name), vec![label], "who was asked for {name}");
        let a = ask(&ha, QUAD100, name, DnsType::Aaaa);
        let want = srv.answer_v6().map(IpAddr::V6);
        assert_eq!(a.addrs.first().copied(), want, "{name} AAAA: {a}");
    }
    // Through the OS resolver too.
    for (name, srv, label) in [
        ("y.corp.test", &r.split, "split"),
        ("y.other.test", &r.restricted, "restricted"),
        ("y.example.org", &r.global, "global"),
    ] {
        let got = must(ha.resolve_os(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            got.contains(&IpAddr::V4(srv.answer_v4())),
            "getaddrinfo({name}): {got:?}"
        );
        assert_eq!(asked(r, name), vec![label], "who was asked for {name}");
    }
    // MagicDNS names stay local: no resolver is asked for them.
    let a = ask(&ha, QUAD100, "alpha.tail.test", DnsType::A);
    assert!(a.is_noerror() && a.addrs.len() == 1, "alpha.tail.test: {a}");
    assert!(asked(r, "alpha.tail.test").is_empty());

    // override_local_dns: false (the server restarted with it): names outside the routes go
    // to the node's own resolver (from its resolv.conf before tailscaled took it over), the
    // routes still to theirs. Polled with a new name each time, so the logs stay unambiguous.
    must(
        s.server
            .update_config(&json!({"dns": {"override_local_dns": false}})),
    );
    let t0 = Instant::now();
    must(s.server.restart());
    for i in 0.. {
        let name = format!("probe{i}.example.net");
        let a = ask(&ha, QUAD100, &name, DnsType::A);
        if addrs_are(&a, &[IpAddr::V4(r.local.answer_v4())]) {
            break;
        }
        assert!(
            t0.elapsed() < PROPAGATION_LIMIT,
            "override_local_dns: false: {name} is still answered {a} (asked: {:?})\n{}",
            asked(r, &name),
            dns_status(&s.nodes[0])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "override_local_dns: false: names outside the routes go to the node's own resolver \
         {:.2}s after the server restart began",
        t0.elapsed().as_secs_f64()
    );
    for (name, srv, label) in [
        ("z.example.net", &r.local, "local"),
        ("z.corp.test", &r.split, "split"),
        ("z.other.test", &r.restricted, "restricted"),
    ] {
        let a = ask(&ha, QUAD100, name, DnsType::A);
        assert!(
            addrs_are(&a, &[IpAddr::V4(srv.answer_v4())]),
            "override_local_dns: false: {name} should be answered by the {label} resolver: {a}"
        );
        assert_eq!(asked(r, name), vec![label], "who was asked for {name}");
    }
    s.finish();
}

/// `dns.extra_records_path` (Headscale's JSON list): its records resolve, and after rewriting
/// the file in place and replacing it by a rename while the server runs, the new records
/// resolve within seconds (printed); a broken file is reported at its line and changes
/// nothing.
#[test]
fn extra_records_file_is_reloaded_when_rewritten_or_replaced() {
    let records = |v: &[(&str, &str, &str)]| {
        let list: Vec<Value> = v
            .iter()
            .map(|(n, t, val)| json!({"name": n, "type": t, "value": val}))
            .collect();
        serde_json::to_string_pretty(&list).unwrap_or_default()
    };
    let mut file = None;
    let s = Setup::new(
        "isi-dnsfile",
        false,
        |lab, _| {
            let p = lab.dir().join("extra-records.json");
            let body = records(&[
                ("app.vpn.example.com", "A", "100.64.50.1"),
                ("app.vpn.example.com", "AAAA", "fd7a:115c:a1e0::50:1"),
            ]);
            std::fs::write(&p, body).unwrap_or_else(|e| panic!("{e}"));
            let v = json!({"dns": {"extra_records_path": p.to_string_lossy()}});
            file = Some(p);
            v
        },
        &["alpha"],
    );
    let file = file.unwrap_or_else(|| panic!("no records file"));
    let ha = s.nodes[0].host().clone();
    let a = ask(&ha, QUAD100, "app.vpn.example.com", DnsType::A);
    assert!(
        addrs_are(&a, &[ip("100.64.50.1")]),
        "app A from the file: {a}"
    );
    let a = ask(&ha, QUAD100, "app.vpn.example.com", DnsType::Aaaa);
    assert!(
        addrs_are(&a, &[ip("fd7a:115c:a1e0::50:1")]),
        "app AAAA from the file: {a}"
    );

    // Rewritten in place (same inode: truncate and write).
    let t0 = Instant::now();
    std::fs::write(
        &file,
        records(&[
            ("app.vpn.example.com", "A", "100.64.50.2"),
            ("new.vpn.example.com", "A", "100.64.50.3"),
        ]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_answer(
        &ha,
        "new.vpn.example.com",
        DnsType::A,
        "file rewritten in place",
        |a| addrs_are(a, &[ip("100.64.50.3")]),
    );
    wait_answer(
        &ha,
        "app.vpn.example.com",
        DnsType::A,
        "file rewritten in place",
        |a| addrs_are(a, &[ip("100.64.50.2")]),
    );
    eprintln!(
        "EXTRA RECORDS file rewritten in place: the new records resolve after {:.2}s",
        t0.elapsed().as_secs_f64()
    );
    let a = ask(&ha, QUAD100, "app.vpn.example.com", DnsType::Aaaa);
    assert!(
        a.addrs.is_empty(),
        "the removed AAAA record still answers: {a}"
    );

    // Replaced by a rename (a new inode, as editors and config tools do).
    let tmp = file.with_extension("json.tmp");
    std::fs::write(
        &tmp,
        records(&[("moved.vpn.example.com", "A", "100.64.50.4")]),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    std::fs::rename(&tmp, &file).unwrap_or_else(|e| panic!("{e}"));
    wait_answer(
        &ha,
        "moved.vpn.example.com",
        DnsType::A,
        "file replaced by rename",
        |a| addrs_are(a, &[ip("100.64.50.4")]),
    );
    wait_answer(
        &ha,
        "new.vpn.example.com",
        DnsType::A,
        "file replaced by rename",
        |a| a.addrs.is_empty(),
    );
    eprintln!(
        "EXTRA RECORDS file replaced by rename: the new records resolve after {:.2}s",
        t0.elapsed().as_secs_f64()
    );

    // A broken file (line 3 is not an address) is rejected with its line, and the records in
    // force stay: none of the broken file's records is installed.
    std::fs::write(
        &file,
        "[\n  {\"name\": \"partial.vpn.example.com\", \"type\": \"A\", \"value\": \"100.64.50.5\"},\n  {\"name\": \"bad.vpn.example.com\", \"type\": \"A\", \"value\": \"nope\"}\n]\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    let at_line = format!("{}:3:", file.display());
    while grep_file(s.server.log_path(), &[&at_line], 1).is_empty() {
        assert!(
            t0.elapsed() < PROPAGATION_LIMIT,
            "the server never reported the broken records file at {at_line}\n{}",
            s.server.log_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = grep_file(s.server.log_path(), &[&at_line], 1).join("");
    assert!(
        line.contains("nope"),
        "the error names the bad value: {line}"
    );
    eprintln!(
        "EXTRA RECORDS broken file reported after {:.2}s: {}",
        t0.elapsed().as_secs_f64(),
        line.trim()
    );
    let a = ask(&ha, QUAD100, "moved.vpn.example.com", DnsType::A);
    assert!(
        addrs_are(&a, &[ip("100.64.50.4")]),
        "the records in force before the broken file: {a}"
    );
    let a = ask(&ha, QUAD100, "partial.vpn.example.com", DnsType::A);
    assert!(
        a.addrs.is_empty(),
        "a record of the broken file was installed: {a}"
    );
    s.finish();
}

/// SIGHUP after editing the config's dns section (a new extra record, a search domain,
/// `magic_dns_aaaa` turned on): the change reaches the client (answers at 100.100.100.100,
/// its resolv.conf's search line) without a restart.
#[test]
fn sighup_reloads_the_dns_section() {
    let mut s = Setup::new(
        "isi-dnshup",
        false,
        |_, _| {
            json!({"dns": {"magic_dns_aaaa": false, "extra_records": [
                {"name": "old.vpn.example.com", "type": "A", "value": "100.64.60.1"},
            ]}})
        },
        &["alpha"],
    );
    let ha = s.nodes[0].host().clone();
    let (a4, a6) = self_ips(&s.nodes[0]);
    let a = ask(&ha, QUAD100, "alpha.tail.test", DnsType::Aaaa);
    assert!(
        a.is_noerror() && a.addrs.is_empty(),
        "AAAA with magic_dns_aaaa: false: {a}"
    );
    let a = ask(&ha, QUAD100, "old.vpn.example.com", DnsType::A);
    assert!(addrs_are(&a, &[ip("100.64.60.1")]), "old record: {a}");
    let a = ask(&ha, QUAD100, "hup.vpn.example.com", DnsType::A);
    assert!(
        a.addrs.is_empty(),
        "the new record answers before the reload: {a}"
    );
    assert!(!ha.resolv_conf().contains("corp.example"));

    must(s.server.update_config(&json!({"dns": {
        "magic_dns_aaaa": true,
        "search_domains": ["corp.example"],
        "extra_records": [
            {"name": "old.vpn.example.com", "type": "A", "value": "100.64.60.1"},
            {"name": "hup.vpn.example.com", "type": "A", "value": "100.64.60.2"},
        ],
    }})));
    let t0 = Instant::now();
    must(s.server.signal(Signal::SIGHUP));
    wait_answer(
        &ha,
        "hup.vpn.example.com",
        DnsType::A,
        "after SIGHUP",
        |a| addrs_are(a, &[ip("100.64.60.2")]),
    );
    let t_rec = t0.elapsed().as_secs_f64();
    let t_search = wait_resolv_conf(&s.nodes[0], "search domain after SIGHUP", |c| {
        c.lines().any(|l| {
            l.starts_with("search")
                && l.split_whitespace()
                    .any(|d| d.trim_end_matches('.') == "corp.example")
        })
    });
    eprintln!(
        "SIGHUP: the new extra record resolves after {t_rec:.2}s, the search domain is in \
         resolv.conf {t_search:.2}s later:\n{}",
        ha.resolv_conf()
    );
    // magic_dns_aaaa turned on: the node's capability follows.
    let (_, t_aaaa) = wait_answer(
        &ha,
        "alpha.tail.test",
        DnsType::Aaaa,
        "magic_dns_aaaa: true after SIGHUP",
        |a| addrs_are(a, &[IpAddr::V6(a6)]),
    );
    eprintln!(
        "SIGHUP: magic_dns_aaaa: true answers AAAA after {:.2}s",
        t_aaaa + t_rec
    );
    let a = ask(&ha, QUAD100, "alpha.tail.test", DnsType::A);
    assert!(addrs_are(&a, &[IpAddr::V4(a4)]), "alpha.tail.test A: {a}");
    assert!(s.server.is_running(), "SIGHUP stopped the server");
    let a = ask(&ha, QUAD100, "old.vpn.example.com", DnsType::A);
    assert!(
        addrs_are(&a, &[ip("100.64.60.1")]),
        "old record after SIGHUP: {a}"
    );
    s.finish();
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The DNSName of the peer with tailnet IPv4 `v4` in `t`'s status ("" if not listed).
fn peer_dns_name(t: &Tailscaled, v4: Ipv4Addr) -> String {
    must(t.peers())
        .into_iter()
        .find(|p| p.ips.contains(&v4.to_string()))
        .map(|p| p.dns_name)
        .unwrap_or_default()
}

/// The node's `CorpDNS` pref (`--accept-dns`) from `tailscale debug prefs`.
fn corp_dns(t: &Tailscaled) -> Option<bool> {
    let out = must(t.cli(&["debug", "prefs"]));
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()?
        .get("CorpDNS")?
        .as_bool()
}

/// `tailscale dns status` (for failure messages).
fn dns_status(t: &Tailscaled) -> String {
    t.cli(&["dns", "status"])
        .map(|o| output_text(&o))
        .unwrap_or_default()
}
