//! OIDC login with a real, OpenID Certified identity provider (npm `oidc-provider` 9.13.3, run by
//! the testkit in the lab's hub namespace beside `ironscale serve`) and real, unmodified
//! `tailscaled` 1.96.4 clients: `tailscale up` without a key prints our login URL; a headless
//! browser (Debian's Chromium driven by playwright-core for the main flow, the testkit's
//! cookie-keeping HTTP browser for the refusals) opens it, logs in at the provider, and the
//! waiting client is registered to the user the ID token names. Refusals (domain, user, group,
//! unverified e-mail, tampered state, replayed callback, the provider's own error) each get a
//! page that says why and register nothing. Provider groups in the policy
//! (`oidc-group:admins`) grant access, and lose it after the provider drops the user from the
//! group and the user logs in again, after the provider rotated its signing key.
//!
//! Needs root (network namespaces, TUN); see `ironscale-testkit`.

use std::path::Path;
use std::time::Duration;

use ironscale_testkit::{
    chromium_login_with, install_clients, oidc, output_text, query_param, wait_until,
    with_query_param, Browser, ChromiumOptions, Clients, Lab, OidcProvider, Page, Result,
    ServerProc, Tailscaled, CONTROL_PORT,
};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_ironscale");

fn must<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

struct Setup {
    // Field order is drop order: clients and server before the provider and the lab.
    server: ServerProc,
    provider: OidcProvider,
    lab: Lab,
    clients: Clients,
}

impl Setup {
    fn url(&self) -> String {
        self.server.url()
    }
    fn callback(&self) -> String {
        format!("{}/oidc/callback", self.url())
    }
}

/// A lab whose hub runs the provider (`provider` merged into the testkit's default provider
/// config) and `ironscale serve` with `oidc` (merged into an `oidc` section naming the
/// provider) and `server` (merged into the server config).
fn setup(prefix: &str, provider: Value, oidc_keys: Value, server: Value) -> Setup {
    let clients = must(install_clients());
    let lab = must(Lab::new(prefix));
    let server_url = format!("http://{}:{CONTROL_PORT}", lab.hub_ip());
    let callback = format!("{server_url}/oidc/callback");
    let p = must(OidcProvider::start_in(
        lab.hub(),
        &oidc::config_with(&[&callback], &provider),
    ));
    let mut keys = json!({
        "issuer": p.issuer(),
        "client_id": oidc::CLIENT_ID,
        "client_secret": oidc::CLIENT_SECRET,
        "scope": ["openid", "profile", "email", "groups"],
    });
    ironscale_testkit::merge_json(&mut keys, &oidc_keys);
    let mut cfg = json!({ "oidc": keys });
    ironscale_testkit::merge_json(&mut cfg, &server);
    let s = must(ServerProc::start(&lab, Some(Path::new(BIN)), cfg));
    Setup {
        server: s,
        provider: p,
        lab,
        clients,
    }
}

/// The login URL the waiting client shows (`tailscale status --json` `AuthURL`).
fn wait_auth_url(n: &Tailscaled) -> String {
    must(
        wait_until(
            &format!("{} to show a login URL", n.name()),
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                let st = n.status_json()?;
                let url = st["AuthURL"].as_str().unwrap_or_default().to_string();
                Ok((!url.is_empty()).then_some(url))
            },
        )
        .map_err(|e| n.err(e)),
    )
}

/// `data-reason` of our refusal page (`None`: not a refusal page).
fn refusal_reason(page: &Page) -> Option<String> {
    let b = &page.body;
    let at = b.find("data-reason=\"")? + "data-reason=\"".len();
    Some(b[at..].split('"').next()?.to_string())
}

fn users(server: &ServerProc) -> Vec<Value> {
    let out = must(server.cli_ok(&["users", "list", "-o", "json"]));
    serde_json::from_str::<Vec<Value>>(&out).unwrap_or_default()
}

#[test]
fn tailscale_up_without_a_key_logs_in_at_the_provider_with_pkce_and_reaches_a_peer() {
    let s = setup(
        "isi-oidc",
        json!({"pkce_required": true, "extra_params": ["domain_hint"]}),
        json!({"pkce": {"enabled": true}, "extra_params": {"domain_hint": "example.com"}}),
        json!({}),
    );
    let url = s.url();
    must(s.server.create_user("ops"));
    let ha = must(s.lab.add_host("a"));
    let hb = must(s.lab.add_host("b"));
    let a = must(Tailscaled::start(&ha, &s.clients, "ts", &[]));
    let b = must(Tailscaled::start(&hb, &s.clients, "ts", &[]));
    let key = must(s.server.reusable_key("ops"));
    must(b.up_ok(&url, Some(&key), "b", &[]));
    let ib = must(b.ip4());

    let login = std::thread::scope(|sc| {
        let up = sc.spawn(|| a.up(&url, None, "laptop", &["--timeout=120s"]));
        let login = wait_auth_url(&a);
        assert!(
            login.starts_with(&format!("{url}/register/")),
            "unexpected login URL {login:?}"
        );
        // Nothing is registered before the login.
        assert!(must(s.server.nodes())
            .iter()
            .all(|n| n.given_name != "laptop"));
        // A real browser: headless Chromium in the hub namespace.
        let page = must(chromium_login_with(
            &ChromiumOptions::in_host(s.lab.hub()),
            &login,
            "alice",
            "alice-password",
        ));
        assert_eq!(page.status, Some(200), "{page:#?}");
        assert!(page.title.contains("Logged in"), "{page:#?}");
        assert!(
            page.text.contains("Logged in as alice") && page.text.contains("laptop"),
            "{page:#?}"
        );
        let out = must(
            up.join()
                .unwrap_or_else(|_| panic!("the `tailscale up` thread panicked")),
        );
        assert!(
            out.status.success(),
            "{}",
            a.err(format!("`tailscale up` failed:\n{}", output_text(&out)))
        );
        login
    });

    // The authorization request carried PKCE S256, the scopes and the extra parameter.
    let auths = must(s.provider.authorizations());
    let auth = auths
        .last()
        .unwrap_or_else(|| panic!("the provider saw no authorization request"));
    assert_eq!(auth["code_challenge_method"], "S256", "{auth:?}");
    assert!(auth["code_challenge"]
        .as_str()
        .is_some_and(|c| c.len() >= 43));
    assert_eq!(auth["domain_hint"], "example.com", "{auth:?}");
    assert_eq!(auth["redirect_uri"].as_str(), Some(s.callback().as_str()));
    let scope = auth["scope"].as_str().unwrap_or_default();
    assert!(scope.split(' ').any(|x| x == "groups"), "{scope}");

    // The node belongs to alice, registered by OIDC; alice is a provider user with her e-mail.
    must(a.wait_running(Duration::from_secs(20)));
    let ia = must(a.ip4());
    let nodes = must(s.server.nodes());
    let laptop = nodes
        .iter()
        .find(|n| n.given_name == "laptop")
        .unwrap_or_else(|| panic!("laptop not listed: {nodes:#?}"));
    assert_eq!(laptop.user.as_deref(), Some("alice"), "{}", laptop.raw);
    assert_eq!(
        laptop.raw["register_method"].as_str(),
        Some("REGISTER_METHOD_OIDC"),
        "{}",
        laptop.raw
    );
    let us = users(&s.server);
    let alice = us
        .iter()
        .find(|u| u["name"] == "alice")
        .unwrap_or_else(|| panic!("no user alice: {us:#?}"));
    assert_eq!(alice["email"], "alice@example.com", "{alice}");
    assert_eq!(alice["display_name"], "Alice Admin", "{alice}");
    assert_eq!(alice["provider"], "oidc", "{alice}");
    assert_eq!(
        alice["provider_id"].as_str(),
        Some(format!("{}/alice", s.provider.issuer()).as_str()),
        "{alice}"
    );
    let table = must(s.server.cli_ok(&["users", "list"]));
    assert!(
        table.contains("alice@example.com")
            && table.contains(&format!("oidc {}/alice", s.provider.issuer())),
        "{table}"
    );

    // Traffic crosses the tailnet.
    must(a.wait_peer(ib, true, Duration::from_secs(20)));
    let _echo = must(b.host().tcp_echo("echo", ib, 7000));
    let reply = must(a.host().tcp_roundtrip(Some(ia), ib, 7000, "via-oidc"));
    assert_eq!(reply, format!("echo from {ib} to {ia}: via-oidc"));

    // The login URL is spent: opening it again is an unknown registration, not a second login.
    let browser = must(Browser::in_host(s.lab.hub()));
    let again = must(browser.get(&login));
    assert_eq!(
        refusal_reason(&again).as_deref(),
        Some("registration"),
        "{}",
        again.body
    );
    assert_eq!(must(s.server.nodes()).len(), 2);
}

#[test]
fn refused_logins_say_why_and_register_nothing_until_an_allowed_user_logs_in() {
    let users_cfg = json!([
        {"username": "alice", "password": "pw", "email": "alice@example.com", "email_verified": true,
         "name": "Alice", "groups": ["admins"]},
        {"username": "bob", "password": "pw", "email": "bob@other.org", "email_verified": true,
         "name": "Bob", "groups": ["staff"]},
        {"username": "carol", "password": "pw", "email": "carol@example.com", "email_verified": false,
         "name": "Carol", "groups": ["eng"]},
        {"username": "dave", "password": "pw", "email": "dave@example.com", "email_verified": true,
         "name": "Dave", "groups": ["eng"]},
        {"username": "erin", "password": "pw", "email": "erin@example.com", "email_verified": true,
         "name": "Erin", "groups": []},
    ]);
    // Allow all, and one tag with an owner (so `tag:nope` is a tag nobody may use).
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policy_path = dir.path().join("policy.hujson");
    std::fs::write(
        &policy_path,
        r#"{"tagOwners": {"tag:server": ["ops@"]},
            "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let s = setup(
        "isi-oidcno",
        json!({ "users": users_cfg, "id_token_ttl": 7200 }),
        json!({
            "allowed_groups": ["admins", "staff", "eng"],
            "allowed_domains": ["example.com"],
            "allowed_users": ["alice@example.com"],
            "use_expiry_from_token": true,
        }),
        json!({
            "node": {"expiry": "30d"},
            "policy": {"mode": "file", "path": policy_path.to_string_lossy()},
        }),
    );
    let url = s.url();
    let callback = s.callback();
    let ha = must(s.lab.add_host("a"));
    let a = must(Tailscaled::start(&ha, &s.clients, "ts", &[]));
    let hc = must(s.lab.add_host("c"));
    let c = must(Tailscaled::start(&hc, &s.clients, "ts", &[]));

    std::thread::scope(|sc| {
        // A refusal after the provider said yes: alice asks for a tag nobody owns. The user
        // made for the login goes again; nothing is left behind.
        let _up_c = sc.spawn(|| {
            c.up(
                &url,
                None,
                "tagged",
                &["--timeout=20s", "--advertise-tags=tag:nope"],
            )
        });
        let login_c = wait_auth_url(&c);
        let page = must(must(Browser::in_host(s.lab.hub())).login(&login_c, "alice", "pw"));
        assert_eq!(
            refusal_reason(&page).as_deref(),
            Some("approval"),
            "{}",
            page.body
        );
        assert!(must(s.server.nodes()).is_empty());
        assert!(
            users(&s.server).is_empty(),
            "the refused login left its user behind"
        );

        let up = sc.spawn(|| a.up(&url, None, "laptop", &["--timeout=180s"]));
        let login = wait_auth_url(&a);
        let nothing_registered = |why: &str| {
            assert!(
                must(s.server.nodes()).is_empty(),
                "{why}: a node was registered"
            );
            assert!(users(&s.server).is_empty(), "{why}: a user was created");
        };

        // Each refusal, in a fresh browser (no provider session), with its page.
        for (user, reason, status) in [
            ("erin", "group", 403),
            ("bob", "domain", 403),
            ("carol", "email-unverified", 403),
            ("dave", "user", 403),
        ] {
            let b = must(Browser::in_host(s.lab.hub()));
            let page = must(b.login(&login, user, "pw"));
            assert_eq!(
                (page.status, refusal_reason(&page).as_deref()),
                (status, Some(reason)),
                "{user}: {}",
                page.body
            );
            assert!(
                page.body.contains("Nothing was registered"),
                "{}",
                page.body
            );
            nothing_registered(user);
        }

        // The provider's own refusal: the user cancels at the provider.
        let b = must(Browser::in_host(s.lab.hub()));
        let form = must(b.get(&login));
        let action = form
            .form_action("login")
            .unwrap_or_else(|| panic!("no login form: {}", form.body));
        let abort = action.replace("/login", "/abort");
        let page = must(b.post_form(&abort, &[]));
        assert_eq!(
            refusal_reason(&page).as_deref(),
            Some("provider-denied"),
            "{}",
            page.body
        );
        assert!(page.body.contains("access_denied"), "{}", page.body);
        nothing_registered("cancel");

        // A tampered state is refused and spends nothing; the genuine answer still works once;
        // its replay is refused.
        let mut b = must(Browser::in_host(s.lab.hub()));
        b.stop_at_prefix(callback.clone());
        let stopped = must(b.login(&login, "alice", "pw"));
        assert!(
            stopped.stopped && stopped.url.starts_with(&callback),
            "{stopped:#?}"
        );
        assert!(
            query_param(&stopped.url, "code").is_some(),
            "{}",
            stopped.url
        );
        // A second login started in the same browser (another tab) does not break the first.
        let second = must(b.login(&login, "alice", "pw"));
        assert!(second.stopped && second.url != stopped.url, "{second:#?}");
        // Our cookie is not one of the provider's, though both live on the same host.
        let cookies = b.cookie_header(&callback).unwrap_or_default();
        assert!(cookies.contains("ironscale_oidc_login="), "{cookies}");
        let tampered = must(with_query_param(
            &stopped.url,
            "state",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ));
        b.clear_stop_at();
        let page = must(b.get(&tampered));
        assert_eq!(
            (page.status, refusal_reason(&page).as_deref()),
            (400, Some("state")),
            "{}",
            page.body
        );
        nothing_registered("tampered state");
        // The same answer from another browser (no login cookie): refused, and not spent.
        let other = must(Browser::in_host(s.lab.hub()));
        let page = must(other.get(&stopped.url));
        assert_eq!(
            refusal_reason(&page).as_deref(),
            Some("browser"),
            "{}",
            page.body
        );
        nothing_registered("other browser");

        let page = must(b.get(&stopped.url));
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(
            page.body.contains("data-outcome=\"registered\""),
            "{}",
            page.body
        );
        // The second tab's answer now finds its registration done.
        let late = must(b.get(&second.url));
        assert_eq!(
            refusal_reason(&late).as_deref(),
            Some("registration"),
            "{}",
            late.body
        );
        let replay = must(b.get(&stopped.url));
        assert_eq!(
            (replay.status, refusal_reason(&replay).as_deref()),
            (400, Some("replayed")),
            "{}",
            replay.body
        );

        let out = must(
            up.join()
                .unwrap_or_else(|_| panic!("the `tailscale up` thread panicked")),
        );
        assert!(out.status.success(), "{}", a.err(output_text(&out)));
    });
    let nodes = must(s.server.nodes());
    assert_eq!(nodes.len(), 1, "{nodes:#?}");
    assert_eq!(nodes[0].user.as_deref(), Some("alice"));
    // use_expiry_from_token: the node key expires with the ID token (2 h), not node.expiry (30 d).
    let expiry = nodes[0].raw["expiry"]
        .as_str()
        .and_then(|e| chrono::DateTime::parse_from_rfc3339(e).ok())
        .unwrap_or_else(|| panic!("no expiry: {}", nodes[0].raw));
    let left = expiry.timestamp() - chrono::Utc::now().timestamp();
    assert!(
        (6900..=7300).contains(&left),
        "expiry in {left} s: {}",
        nodes[0].raw
    );
    let us = users(&s.server);
    assert_eq!(us.len(), 1, "only the allowed user exists: {us:#?}");
    // Every attempt is in the audit log: the refusals with their reason, the login with its user.
    let audit = must(s.server.cli_ok(&["audit", "list", "-o", "json"]));
    let entries: Vec<Value> = serde_json::from_str(&audit).unwrap_or_default();
    let logins: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "oidc.login")
        .collect();
    assert!(
        logins
            .iter()
            .any(|e| e["actor"] == "oidc:alice" && e["result"] == "ok" && e["target"] == "laptop"),
        "{audit}"
    );
    for why in [
        "allowed_groups",
        "allowed_domains",
        "not verified",
        "allowed_users",
        "access_denied",
        "tag:nope",
    ] {
        assert!(
            logins
                .iter()
                .any(|e| e["result"].as_str().is_some_and(|r| r.contains(why))),
            "no refusal {why:?} in the audit log: {audit}"
        );
    }
    // Callbacks that name no login of their browser are anyone's requests: counted, not audited.
    assert!(
        !logins.iter().any(|e| e["result"].as_str().is_some_and(|r| {
            r.contains("replayed") || r.contains("another browser") || r.contains("state unknown")
        })),
        "{audit}"
    );

    // /metrics counts the logins by result and reason.
    let metrics = must(s.lab.hub().http_get(
        &format!(
            "http://{}:{}/metrics",
            s.lab.hub_ip(),
            ironscale_testkit::METRICS_PORT
        ),
        Duration::from_secs(5),
    ));
    for line in [
        "ironscale_oidc_logins_total{result=\"ok\"} 1",
        "ironscale_oidc_logins_total{result=\"refused\",reason=\"group\"} 1",
        "ironscale_oidc_logins_total{result=\"refused\",reason=\"replayed\"} 1",
        "ironscale_oidc_logins_total{result=\"refused\",reason=\"state\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }

    // `oidc check` against the live provider: all good; a wrong secret and a wrong issuer are named.
    let check = |cfg: &Path| {
        let mut c = s.lab.hub().command(BIN);
        c.args(["oidc", "check", "-c"]).arg(cfg);
        must(ironscale_testkit::Context::context(
            c.output(),
            "running oidc check",
        ))
    };
    let out = check(s.server.config_path());
    assert!(out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains("client credentials") && text.contains("accepted"),
        "{text}"
    );
    let bad_dir = s.lab.dir().join("badcfg");
    std::fs::create_dir_all(&bad_dir).unwrap_or_else(|e| panic!("{e}"));
    for (name, oidc_patch, expect) in [
        (
            "secret",
            json!({"client_secret": "wrong"}),
            "rejected client",
        ),
        (
            "issuer",
            json!({"issuer": format!("{}/", s.provider.issuer())}),
            "must be identical",
        ),
    ] {
        let mut cfg = s.server.config().clone();
        ironscale_testkit::merge_json(&mut cfg, &json!({ "oidc": oidc_patch }));
        let path = bad_dir.join(format!("{name}.yaml"));
        std::fs::write(&path, ironscale_testkit::to_yaml(&cfg)).unwrap_or_else(|e| panic!("{e}"));
        let out = check(&path);
        assert!(!out.status.success(), "{name}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(expect),
            "{name}: {}",
            output_text(&out)
        );
    }
}

#[test]
fn provider_groups_in_the_policy_grant_access_and_lose_it_at_the_next_login() {
    let policy = r#"{
        "groups": { "group:idp-admins": ["oidc-group:admins"] },
        "tagOwners": { "tag:server": ["ops@"] },
        "acls": [
            { "action": "accept", "src": ["group:idp-admins"], "dst": ["tag:server:*"] },
            { "action": "accept", "src": ["tag:server"], "dst": ["*:*"] }
        ]
    }"#;
    // The policy file lives beside the test; the server watches it.
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let policy_path = dir.path().join("policy.hujson");
    std::fs::write(&policy_path, policy).unwrap_or_else(|e| panic!("{e}"));
    let mut s = setup(
        "isi-oidcgrp",
        json!({}),
        json!({}),
        json!({"policy": {"mode": "file", "path": policy_path.to_string_lossy()}}),
    );
    let url = s.url();
    must(s.server.create_user("ops"));
    let hs = must(s.lab.add_host("srv"));
    let ha = must(s.lab.add_host("a"));
    let hb = must(s.lab.add_host("b"));
    let srv = must(Tailscaled::start(&hs, &s.clients, "ts", &[]));
    let a = must(Tailscaled::start(&ha, &s.clients, "ts", &[]));
    let b = must(Tailscaled::start(&hb, &s.clients, "ts", &[]));
    let key = must(s.server.create_preauthkey(
        "ops",
        &ironscale_testkit::KeyOpts {
            reusable: true,
            tags: vec!["tag:server".into()],
            expiration: Some("1h".into()),
            ..Default::default()
        },
    ));
    must(srv.up_ok(&url, Some(&key), "srv", &[]));
    let isrv = must(srv.ip4());
    let _echo = must(srv.host().tcp_echo("echo", isrv, 7000));

    let login_as = |n: &Tailscaled, host: &str, user: &str, password: &str| {
        std::thread::scope(|sc| {
            let up = sc.spawn(|| n.up(&url, None, host, &["--timeout=120s"]));
            let login = wait_auth_url(n);
            let b = must(Browser::in_host(s.lab.hub()));
            let page = must(b.login(&login, user, password));
            assert!(
                page.body.contains("data-outcome=\"registered\""),
                "{user}: {}",
                page.body
            );
            let out = must(up.join().unwrap_or_else(|_| panic!("up thread panicked")));
            assert!(out.status.success(), "{}", n.err(output_text(&out)));
        });
        must(n.wait_running(Duration::from_secs(20)));
    };
    login_as(&a, "alice-laptop", "alice", "alice-password");
    login_as(&b, "bob-laptop", "bob", "bob-password");
    let (ia, ib) = (must(a.ip4()), must(b.ip4()));

    // alice (provider group admins) reaches the server; bob (staff) does not.
    must(a.wait_peer(isrv, true, Duration::from_secs(20)));
    let reply = must(a.host().tcp_roundtrip(Some(ia), isrv, 7000, "admin"));
    assert_eq!(reply, format!("echo from {isrv} to {ia}: admin"));
    // Positive control: bob is on the tailnet and reachable (tag:server may reach everyone)…
    must(srv.wait_peer(ib, true, Duration::from_secs(20)));
    let _echo_b = must(b.host().tcp_echo("echo-b", ib, 7001));
    let reply = must(srv.host().tcp_roundtrip(Some(isrv), ib, 7001, "to-bob"));
    assert_eq!(reply, format!("echo from {ib} to {isrv}: to-bob"));
    // … but he is not in the provider group admins, so he cannot reach the server.
    assert!(
        b.host()
            .tcp_roundtrip(Some(ib), isrv, 7000, "staff")
            .is_err(),
        "bob is not in the provider group admins and must not reach the server"
    );

    // The provider drops alice from admins and restarts with a new signing key.
    let kid_before = must(s.provider.jwks_kids());
    let mut pcfg = s.provider.config().clone();
    if let Some(us) = pcfg["users"].as_array_mut() {
        for u in us.iter_mut().filter(|u| u["username"] == "alice") {
            u["groups"] = json!(["staff"]);
        }
    }
    must(s.provider.restart_with(&pcfg));
    let kid_after = must(s.provider.jwks_kids());
    assert_ne!(kid_before, kid_after, "the provider signs with a new key");

    // Until she logs in again the server still has her old groups; make her log in again.
    let nodes = must(s.server.nodes());
    let node = nodes
        .iter()
        .find(|n| n.given_name == "alice-laptop")
        .unwrap_or_else(|| panic!("{nodes:#?}"));
    let (node_id, node_ip) = (node.id, node.ipv4());
    must(
        s.server
            .cli_ok(&["nodes", "expire", "-i", &node_id.to_string()]),
    );
    login_as(&a, "alice-laptop", "alice", "alice-password");
    let nodes = must(s.server.nodes());
    let again = nodes
        .iter()
        .find(|n| n.given_name == "alice-laptop")
        .unwrap_or_else(|| panic!("{nodes:#?}"));
    assert_eq!(
        (again.id, again.ipv4()),
        (node_id, node_ip),
        "the re-login kept the node"
    );
    let alice = users(&s.server)
        .into_iter()
        .find(|u| u["name"] == "alice")
        .unwrap_or_else(|| panic!("no alice"));
    assert_eq!(alice["email"], "alice@example.com");
    // The access is gone, while the node itself is fine: the server still reaches alice.
    let _echo_a = must(a.host().tcp_echo("echo-a", ia, 7001));
    must(srv.wait_peer(ia, true, Duration::from_secs(20)));
    let reached = wait_until(
        "the server to reach alice after her re-login",
        Duration::from_secs(20),
        Duration::from_millis(500),
        || {
            Ok(srv
                .host()
                .tcp_roundtrip(Some(isrv), ia, 7001, "to-alice")
                .ok())
        },
    );
    must(reached);
    for attempt in 0..3 {
        assert!(
            a.host().tcp_roundtrip(Some(ia), isrv, 7000, "x").is_err(),
            "attempt {attempt}: alice left the provider group admins and still reaches the server"
        );
    }
}

#[test]
fn serve_does_not_start_while_the_issuer_is_unreachable_unless_told_to() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let write = |only: bool| {
        let cfg = json!({
            "server_url": "http://127.0.0.1:1",
            "listen_addr": "127.0.0.1:0",
            "metrics_listen_addr": "127.0.0.1:0",
            "noise": {"private_key_path": dir.path().join("noise.key").to_string_lossy()},
            "database": {"type": "sqlite", "sqlite": {"path": dir.path().join("db.sqlite").to_string_lossy()}},
            "unix_socket": dir.path().join("s.sock").to_string_lossy(),
            "derp": {"server": {"enabled": false}, "urls": [], "paths": [], "auto_update_enabled": false},
            "dns": {"magic_dns": false},
            "oidc": {"issuer": format!("http://127.0.0.1:{port}"), "client_id": "x", "client_secret": "y",
                     "only_start_if_oidc_is_available": only},
        });
        let path = dir.path().join(format!("config-{only}.yaml"));
        std::fs::write(&path, ironscale_testkit::to_yaml(&cfg)).unwrap_or_else(|e| panic!("{e}"));
        path
    };
    let out = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(write(true))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("OIDC issuer") && text.contains("not available"),
        "{text}"
    );
    // With the flag off, serve starts (and would discover the issuer at the first login).
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "-c"])
        .arg(write(false))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let started = wait_until(
        "serve to open its socket",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || Ok(dir.path().join("s.sock").exists().then_some(())),
    );
    let _ = child.kill();
    let _ = child.wait();
    must(started);
}
