//! The OIDC harness against the real provider (npm oidc-provider 9.13.3): an authorization-code
//! flow with PKCE driven by `Browser`, the token exchange done here as the relying party, key
//! rotation by `restart_with`, the consent page, wrong passwords, cleanup on drop (also on
//! panic), a provider plus browsers inside a lab namespace (needs root, like the lab), and the
//! same login in headless Chromium (Debian's, driven by npm playwright-core).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ironscale_testkit::oidc::{self, CLIENT_ID, CLIENT_SECRET};
use ironscale_testkit::{query_param, Browser, Lab, OidcProvider};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn must<T>(r: ironscale_testkit::Result<T>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

/// A relying-party stand-in: answers `200 callback ok` to every request (at most `n`).
fn callback_listener(n: usize) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for conn in l.incoming().take(n) {
            let Ok(mut s) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 11\r\nconnection: close\r\n\r\ncallback ok",
            );
        }
    });
    format!("http://127.0.0.1:{port}/oidc/callback")
}

/// A value no two calls share (state, nonce).
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!(
        "{tag}-{nanos}-{}",
        std::process::id()
    )))
}

struct AuthRequest {
    url: String,
    state: String,
    nonce: String,
    verifier: String,
}

fn auth_request(p: &OidcProvider, redirect_uri: &str) -> AuthRequest {
    let state = unique("state");
    let nonce = unique("nonce");
    let verifier = unique("verifier");
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let url = reqwest::Url::parse_with_params(
        &p.authorization_endpoint(),
        [
            ("client_id", CLIENT_ID),
            ("redirect_uri", redirect_uri),
            ("response_type", "code"),
            ("scope", "openid profile email groups"),
            ("state", &state),
            ("nonce", &nonce),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .unwrap_or_else(|e| panic!("auth url: {e}"));
    AuthRequest {
        url: url.into(),
        state,
        nonce,
        verifier,
    }
}

/// The token exchange (client_secret_basic), as the relying party does it: (status, body).
fn exchange(p: &OidcProvider, code: &str, redirect_uri: &str, verifier: &str) -> (u16, Value) {
    let resp = must(p.http())
        .post(p.token_endpoint())
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .send()
        .unwrap_or_else(|e| panic!("token request: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().unwrap_or_default();
    let v = serde_json::from_str(&body).unwrap_or_else(|e| panic!("token body {body:?}: {e}"));
    (status, v)
}

/// Header and payload of a JWT (the signature is the relying party's business).
fn jwt_parts(jwt: &str) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS compact serialization: {jwt}");
    let dec = |s: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .unwrap_or_else(|e| panic!("base64url: {e}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("jwt json: {e}"))
    };
    (dec(parts[0]), dec(parts[1]))
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[test]
fn authorization_code_flow_and_key_rotation() {
    let redirect = callback_listener(8);
    let cfg = oidc::config_with(&[&redirect], &json!({"pkce_required": true}));
    let mut p = must(OidcProvider::start(&cfg));
    assert!(
        p.issuer().starts_with("http://127.0.0.1:"),
        "{}",
        p.issuer()
    );
    assert_eq!(p.issuer(), format!("http://127.0.0.1:{}", p.port()));
    let disc = must(p.discovery());
    assert_eq!(disc["issuer"], json!(p.issuer()));
    assert_eq!(disc["token_endpoint"], json!(p.token_endpoint()));
    assert_eq!(
        disc["authorization_endpoint"],
        json!(p.authorization_endpoint())
    );

    // Stop at the relying party's redirect URI: the callback URL is in the page.
    let req = auth_request(&p, &redirect);
    let mut b = must(Browser::new());
    b.stop_at_prefix(redirect.as_str());
    let page = must(b.login(&req.url, "alice", "alice-password"));
    assert!(page.stopped, "not stopped at the callback: {page:?}");
    assert!(page.url.starts_with(&redirect), "{}", page.url);
    let q = page.query();
    assert_eq!(q.get("state"), Some(&req.state), "{q:?}");
    assert_eq!(q.get("iss").map(String::as_str), Some(p.issuer()));
    let code = q
        .get("code")
        .cloned()
        .unwrap_or_else(|| panic!("no code: {q:?}"));
    // The hops: the provider's /auth with our query, its login form, the login post.
    let auth_hop = page
        .hop(&format!("{}/auth?", p.issuer()))
        .unwrap_or_else(|| panic!("no /auth hop: {:?}", page.hops));
    assert_eq!(
        query_param(auth_hop, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert!(
        page.hops
            .iter()
            .any(|(s, u)| *s == 303 && u.contains("/interaction/") && u.ends_with("/login")),
        "no login post among {:?}",
        page.hops
    );
    // What the provider saw.
    let seen = must(p.authorizations());
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].get("state"), Some(&json!(req.state)));
    assert_eq!(seen[0].get("code_challenge_method"), Some(&json!("S256")));

    // The token exchange; a wrong verifier first (PKCE is required), then the right one.
    let (st, bad) = exchange(&p, &code, &redirect, &unique("wrong"));
    assert_eq!(st, 400, "{bad}");
    assert_eq!(bad["error"], json!("invalid_grant"), "{bad}");
    // A fresh code for the right verifier (the provider session is reused).
    let req = auth_request(&p, &redirect);
    let page = must(b.login(&req.url, "alice", "alice-password"));
    assert!(page.stopped, "{page:?}");
    // The provider session is kept: no login form the second time.
    assert!(
        !page.hops.iter().any(|(_, u)| u.ends_with("/login")),
        "logged in twice: {:?}",
        page.hops
    );
    let code = query_param(&page.url, "code").unwrap_or_else(|| panic!("no code: {}", page.url));
    let (st, tok) = exchange(&p, &code, &redirect, &req.verifier);
    assert_eq!(st, 200, "{tok}");
    let id_token = tok["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token: {tok}"));
    let (hdr, claims) = jwt_parts(id_token);
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(claims["iss"], json!(p.issuer()));
    assert_eq!(claims["aud"], json!(CLIENT_ID));
    assert_eq!(claims["nonce"], json!(req.nonce));
    assert_eq!(claims["email"], json!("alice@example.com"));
    assert_eq!(claims["groups"], json!(["admins"]));
    let kids = must(p.jwks_kids());
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(hdr["kid"], json!(kids[0]));

    // Without a stop prefix the browser follows to the relying party (the listener here).
    let mut b2 = must(Browser::new());
    let req = auth_request(&p, &redirect);
    let page = must(b2.login(&req.url, "bob", "bob-password"));
    assert!(!page.stopped);
    assert_eq!(page.status, 200, "{page:?}");
    assert_eq!(page.body, "callback ok");
    assert!(page.url.starts_with(&redirect), "{}", page.url);
    assert_eq!(query_param(&page.url, "state"), Some(req.state.clone()));
    // A wrong password: the form again, 401, no redirect to the relying party.
    b2 = must(Browser::new());
    let req = auth_request(&p, &redirect);
    let page = must(b2.login(&req.url, "bob", "not-bobs-password"));
    assert_eq!(page.status, 401, "{page:?}");
    assert!(page.body.contains("id=\"error\""), "{}", page.body);
    assert!(page.form_action("login").is_some());
    assert!(page.hop(&redirect).is_none(), "{:?}", page.hops);

    // Key rotation: same port and issuer, a new process with a new signing key.
    let (issuer, port, pid) = (p.issuer().to_owned(), p.port(), p.pid());
    must(p.restart());
    assert_eq!(p.issuer(), issuer);
    assert_eq!(p.port(), port);
    assert_ne!(p.pid(), pid);
    assert!(!pid_alive(pid), "old provider {pid} still runs");
    let kids2 = must(p.jwks_kids());
    assert_eq!(kids2.len(), 1, "{kids2:?}");
    assert_ne!(kids2, kids, "restart kept the signing key");
    assert!(must(p.authorizations()).is_empty());

    // restart_with a changed config: consent shown, and Browser::login approves it.
    let cfg = oidc::config_with(&[&redirect], &json!({"auto_consent": false}));
    must(p.restart_with(&cfg));
    assert_eq!(p.issuer(), issuer);
    let mut b3 = must(Browser::new());
    b3.stop_at_prefix(redirect.as_str());
    let req = auth_request(&p, &redirect);
    let page = must(b3.login(&req.url, "carol", "carol-password"));
    assert!(page.stopped, "{page:?}");
    assert!(
        page.hops.iter().any(|(_, u)| u.ends_with("/confirm")),
        "no consent step: {:?}",
        page.hops
    );
    let code = query_param(&page.url, "code").unwrap_or_else(|| panic!("{}", page.url));
    let (st, tok) = exchange(&p, &code, &redirect, &req.verifier);
    assert_eq!(st, 200, "{tok}");
    let (_, claims) = jwt_parts(tok["id_token"].as_str().unwrap_or_default());
    assert_eq!(claims["email_verified"], json!(false));
    assert!(
        p.log_tail(200).contains("login ok carol"),
        "{}",
        p.log_tail(50)
    );
}

#[test]
fn dropping_stops_the_provider_also_on_panic() {
    let cfg = oidc::config(&["http://127.0.0.1:9/cb"]);
    let p = must(OidcProvider::start(&cfg));
    let (pid, dir) = (p.pid(), p.dir().to_owned());
    assert!(pid_alive(pid));
    drop(p);
    assert!(!pid_alive(pid), "provider {pid} survived drop");
    assert!(!dir.exists(), "{} kept", dir.display());

    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let p = must(OidcProvider::start(&cfg));
        let _ = tx.send((p.pid(), p.dir().to_owned()));
        panic!("test failure with a running provider");
    })
    .join();
    assert!(r.is_err());
    let (pid, dir) = rx.recv().unwrap_or_else(|e| panic!("{e}"));
    assert!(!pid_alive(pid), "provider {pid} survived a panic");
    // kept for the failure report: its log
    assert!(dir.join("provider.log").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn provider_and_browser_in_lab_hub() {
    ironscale_testkit::require_root().unwrap_or_else(|e| panic!("{e}"));
    let lab = must(Lab::new("itk-oidc"));
    let redirect = format!("http://{}:8080/oidc/callback", lab.hub_ip());
    let cfg = oidc::config_with(&[&redirect], &json!({"host": lab.hub_ip().to_string()}));
    let p = must(OidcProvider::start_in(lab.hub(), &cfg));
    assert_eq!(p.issuer(), format!("http://{}:{}", lab.hub_ip(), p.port()));
    let mut b = must(p.browser());
    b.stop_at_prefix(redirect.as_str());
    let req = auth_request(&p, &redirect);
    let page = must(b.login(&req.url, "alice", "alice-password"));
    assert!(page.stopped, "{page:?}");
    assert_eq!(query_param(&page.url, "state"), Some(req.state));
    let code = query_param(&page.url, "code").unwrap_or_else(|| panic!("{}", page.url));
    let (st, tok) = exchange(&p, &code, &redirect, &req.verifier);
    assert_eq!(st, 200, "{tok}");
    // Chromium in the hub namespace, stopped at the callback (nothing listens there).
    let mut opts = ironscale_testkit::ChromiumOptions::in_host(lab.hub());
    opts.stop_at_prefix = Some(redirect.clone());
    let req = auth_request(&p, &redirect);
    let page = must(ironscale_testkit::chromium_login_with(
        &opts,
        &req.url,
        "bob",
        "bob-password",
    ));
    assert!(page.stopped, "{page:?}");
    assert_eq!(query_param(&page.url, "state"), Some(req.state));
    // A browser in a client host reaches the hub's provider too (same bridge).
    let host = must(lab.add_host("c1"));
    let b = must(Browser::in_host(&host));
    let page = must(b.get(&p.discovery_url()));
    assert_eq!(page.status, 200, "{page:?}");
}

#[test]
fn chromium_login_against_real_provider() {
    let redirect = callback_listener(4);
    let p = must(OidcProvider::start(&oidc::config(&[&redirect])));
    // To the end: the relying party's page (the listener here).
    let req = auth_request(&p, &redirect);
    let page = must(ironscale_testkit::chromium_login(
        &req.url,
        "alice",
        "alice-password",
    ));
    assert!(!page.stopped);
    assert_eq!(page.status, Some(200), "{page:?}");
    assert_eq!(page.text.trim(), "callback ok", "{page:?}");
    assert!(page.url.starts_with(&redirect), "{}", page.url);
    assert_eq!(query_param(&page.url, "state"), Some(req.state));
    assert!(query_param(&page.url, "code").is_some(), "{}", page.url);
    assert!(
        page.hops
            .iter()
            .any(|u| u.starts_with(&format!("{}/auth?", p.issuer()))),
        "{:?}",
        page.hops
    );
    assert!(
        p.log_tail(100).contains("login ok alice"),
        "{}",
        p.log_tail(30)
    );
    // Stopping at the redirect URI, the code is still unused: it can be exchanged here.
    let opts = ironscale_testkit::ChromiumOptions {
        stop_at_prefix: Some(redirect.clone()),
        ..Default::default()
    };
    let req = auth_request(&p, &redirect);
    let page = must(ironscale_testkit::chromium_login_with(
        &opts,
        &req.url,
        "bob",
        "bob-password",
    ));
    assert!(page.stopped, "{page:?}");
    let code = query_param(&page.url, "code").unwrap_or_else(|| panic!("{}", page.url));
    let (st, tok) = exchange(&p, &code, &redirect, &req.verifier);
    assert_eq!(st, 200, "{tok}");
    let (_, claims) = jwt_parts(tok["id_token"].as_str().unwrap_or_default());
    assert_eq!(claims["sub"], json!("bob"));
    // A wrong password ends on the provider's form.
    let req = auth_request(&p, &redirect);
    let page = must(ironscale_testkit::chromium_login(&req.url, "bob", "wrong"));
    assert_eq!(page.status, Some(401), "{page:?}");
    assert!(
        page.text.contains("Invalid username or password"),
        "{}",
        page.text
    );
}
