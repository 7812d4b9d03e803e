//! The router against a real `State` on a temporary SQLite store, compared
//! with Headscale's golden responses where one exists.

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use ironscale_keys::PrivateKey;
use ironscale_state::State;
use ironscale_types::{NodeId, UserId, UserRef};
use ironscale_wire as wire;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::golden::{assert_shape, golden, Lenient};
use crate::{authenticate, router, router_with_auth, Auth, Caller};

mod audit;
mod node_admin;
mod register;

struct Env {
    _dir: tempfile::TempDir,
    state: State,
    app: Router,
}

async fn env() -> Env {
    env_with(Default::default()).await
}

async fn env_with(settings: ironscale_state::Settings) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .expect("store");
    let state = State::load(store, settings, Default::default())
        .await
        .expect("state");
    let app = router(state.clone());
    Env {
        _dir: dir,
        state,
        app,
    }
}

async fn send(app: &Router, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(
            body.map(|b| Body::from(b.to_string()))
                .unwrap_or_else(Body::empty),
        )
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {bytes:?}"))
    };
    (status, v)
}

impl Env {
    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        send(&self.app, Method::GET, uri, None).await
    }
    async fn post(&self, uri: &str, body: Value) -> (StatusCode, Value) {
        send(&self.app, Method::POST, uri, Some(body)).await
    }
    async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        send(&self.app, Method::DELETE, uri, None).await
    }
    async fn user(&self, name: &str) -> u64 {
        self.state
            .create_user(name, "", "")
            .await
            .expect("user")
            .id
            .0
    }
    /// Register a node named `host` with a fresh single-use key.
    async fn node(&self, host: &str, user: Option<&str>, tags: &[&str]) -> NodeId {
        let (_, key) = self
            .state
            .create_preauth_key(
                user.map(|u| UserRef::Name(u.to_string())).as_ref(),
                false,
                false,
                None,
                tags.iter().map(|s| s.to_string()).collect(),
            )
            .await
            .expect("key");
        let req = wire::RegisterRequest {
            version: 100,
            node_key: PrivateKey::generate().node_public(),
            auth: Some(wire::RegisterResponseAuth { auth_key: key }),
            hostinfo: Some(json!({"Hostname": host})),
            ..Default::default()
        };
        let out = self
            .state
            .register(PrivateKey::generate().machine_public(), &req)
            .await;
        out.node()
            .unwrap_or_else(|| panic!("registration refused: {out:?}"))
            .id
    }
}

/// Status equal to the golden one; for errors, Headscale's error body shape.
#[track_caller]
fn assert_status(got: (StatusCode, Value), name: &str) -> Value {
    let g = golden(name);
    assert_eq!(got.0.as_u16(), g.status, "{name}: body {}", got.1);
    if g.status >= 400 {
        assert_error_body(&got.1);
    }
    got.1
}

#[track_caller]
fn assert_error_body(v: &Value) {
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {v}"));
    let mut keys: Vec<_> = o.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["code", "details", "message"], "{v}");
    assert!(v["code"].as_i64().is_some_and(|c| c > 0), "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert_eq!(v["details"], json!([]));
}

#[track_caller]
fn assert_golden(got: (StatusCode, Value), name: &str, l: Lenient) {
    let g = golden(name);
    assert_eq!(got.0.as_u16(), g.status, "{name}: body {}", got.1);
    assert_shape(&got.1, &g.body, l);
}

// ----- users -----

#[tokio::test]
async fn create_user_and_duplicate() {
    let e = env().await;
    let req =
        json!({"name": "test", "displayName": "Test", "email": "t@example.com", "pictureUrl": ""});
    assert_golden(
        e.post("/api/v1/user", req.clone()).await,
        "TestAPIV1CreateUser_parity",
        Lenient::none(),
    );
    let body = assert_status(
        e.post("/api/v1/user", req).await,
        "TestAPIV1CreateUser_duplicate_name_parity",
    );
    assert_eq!(body["code"], 6);
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains("test")),
        "{body}"
    );
    // An invalid name or body is a 400 with the same error shape.
    let (s, b) = e.post("/api/v1/user", json!({"name": ""})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_body(&b);
    let (s, b) = send(
        &e.app,
        Method::POST,
        "/api/v1/user",
        Some(json!("not an object")),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_body(&b);
}

#[tokio::test]
async fn list_users_and_filters() {
    let e = env().await;
    assert_golden(
        e.get("/api/v1/user").await,
        "TestAPIV1ListUsers_empty_parity",
        Lenient::none(),
    );
    for n in ["alice", "bob", "carol"] {
        e.user(n).await;
    }
    assert_golden(
        e.get("/api/v1/user").await,
        "TestAPIV1ListUsers_all_parity",
        Lenient::none(),
    );
    assert_golden(
        e.get("/api/v1/user?id=2").await,
        "TestAPIV1ListUsers_filter_by_id_parity",
        Lenient::none(),
    );
    assert_golden(
        e.get("/api/v1/user?name=alice").await,
        "TestAPIV1ListUsers_filter_by_name_parity",
        Lenient::none(),
    );
    assert_status(
        e.get("/api/v1/user?id=abc").await,
        "TestAPIV1ListUsers_invalid_id_parity",
    );
    let (s, b) = e.get("/api/v1/user?id=9").await;
    assert_eq!((s, b), (StatusCode::OK, json!({"users": []})));
}

#[tokio::test]
async fn rename_user() {
    let e = env().await;
    e.user("alice").await;
    assert_golden(
        e.post("/api/v1/user/1/rename/bob", json!({})).await,
        "TestAPIV1RenameUser_parity",
        Lenient::none(),
    );
    assert_eq!(
        e.state
            .find_user(&UserRef::Id(UserId(1)))
            .expect("user")
            .name,
        "bob"
    );
    assert_status(
        e.post("/api/v1/user/abc/rename/x", json!({})).await,
        "TestAPIV1RenameUser_invalid_id_parity",
    );
    assert_status(
        e.post("/api/v1/user/99/rename/x", json!({})).await,
        "TestAPIV1RenameUser_nonexistent_parity",
    );
}

#[tokio::test]
async fn delete_user_and_user_with_nodes() {
    let e = env().await;
    e.user("alice").await;
    e.user("bob").await;
    e.node("laptop", Some("bob"), &[]).await;
    assert_golden(
        e.delete("/api/v1/user/1").await,
        "TestAPIV1DeleteUser_parity",
        Lenient::none(),
    );
    assert_status(
        e.delete("/api/v1/user/1").await,
        "TestAPIV1DeleteUser_nonexistent_parity",
    );
    let (s, b) = e.delete("/api/v1/user/2").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error_body(&b);
    assert_eq!(b["code"], 9);
    assert!(
        b["message"].as_str().is_some_and(|m| m.contains("node")),
        "{b}"
    );
    assert!(
        e.state.find_user(&UserRef::Name("bob".into())).is_ok(),
        "bob is still there"
    );
    let (s, _) = e.delete("/api/v1/user/x").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

/// The path names a user by id: `DELETE /api/v1/user/5` never deletes the
/// user *named* "5" (it used to, when no user had id 5).
#[tokio::test]
async fn user_paths_take_ids_not_names() {
    let e = env().await;
    e.user("5").await; // id 1
    e.user("alice").await; // id 2
    assert_status(
        e.delete("/api/v1/user/5").await,
        "TestAPIV1DeleteUser_nonexistent_parity",
    );
    assert!(
        e.state.find_user(&UserRef::Name("5".into())).is_ok(),
        "user \"5\" survives"
    );
    assert_status(
        e.post("/api/v1/user/5/rename/bob", json!({})).await,
        "TestAPIV1RenameUser_nonexistent_parity",
    );
    assert_eq!(
        e.state
            .find_user(&UserRef::Id(UserId(1)))
            .expect("user")
            .name,
        "5"
    );
    let (s, b) = e.delete("/api/v1/user/1").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(e.state.find_user(&UserRef::Name("5".into())).is_err());
}

// ----- pre-auth keys -----

#[tokio::test]
async fn create_and_list_preauth_keys() {
    let e = env().await;
    assert_golden(
        e.get("/api/v1/preauthkey").await,
        "TestAPIV1ListPreAuthKeys_empty_parity",
        Lenient::none(),
    );
    e.user("alice").await;
    let exp = "2099-01-01T00:00:00Z";
    let (s, b) = e
        .post(
            "/api/v1/preauthkey",
            json!({"user": "1", "reusable": true, "expiration": exp}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let full = b["preAuthKey"]["key"].as_str().expect("key").to_string();
    assert!(
        full.starts_with("hskey-auth-") && full.len() > 70,
        "the full key, once: {full}"
    );
    assert_eq!(b["preAuthKey"]["id"], "1");
    assert_eq!(b["preAuthKey"]["user"]["name"], "alice");
    assert_eq!(b["preAuthKey"]["expiration"], exp);
    // A tagged key without owner; the id may also come as a number.
    let (s, b) = e
        .post(
            "/api/v1/preauthkey",
            json!({"ephemeral": true, "expiration": exp, "aclTags": ["tag:test"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert!(b["preAuthKey"]["user"].is_null());

    let list = e.get("/api/v1/preauthkey").await;
    assert!(
        !list.1.to_string().contains(&full),
        "listings never show the secret"
    );
    assert!(list.1["preAuthKeys"][0]["key"]
        .as_str()
        .is_some_and(|k| k.ends_with("-***") && full.starts_with(&k[..k.len() - 3])));
    assert_golden(list, "TestAPIV1ListPreAuthKeys_all_parity", Lenient::none());
    let (s, b) = e.get("/api/v1/preauthkey?user=alice").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["preAuthKeys"].as_array().map(Vec::len), Some(1));
    let (s, b) = e.get("/api/v1/preauthkey?user=nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&b);
}

#[tokio::test]
async fn create_preauth_key_errors() {
    let e = env().await;
    e.user("alice").await;
    let post = |b: Value| e.post("/api/v1/preauthkey", b);
    assert_status(
        post(json!({"user": "1", "aclTags": ["web"]})).await,
        "TestAPIV1CreatePreAuthKey_invalid_tag_parity",
    );
    assert_status(
        post(json!({"user": "abc"})).await,
        "TestAPIV1CreatePreAuthKey_invalid_user_id_parity",
    );
    assert_status(
        post(json!({"reusable": true})).await,
        "TestAPIV1CreatePreAuthKey_neither_tagged_nor_owned_parity",
    );
    assert_status(
        post(json!({"user": "42"})).await,
        "TestAPIV1CreatePreAuthKey_nonexistent_user_parity",
    );
    let (s, b) = post(json!({"user": 1, "expiration": "tomorrow"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error_body(&b);
    let (s, _) = post(json!({"user": 1})).await;
    assert_eq!(s, StatusCode::OK, "numeric ids are accepted too");
}

#[tokio::test]
async fn expire_preauth_key() {
    let e = env().await;
    e.user("alice").await;
    let (k, _) = e
        .state
        .create_preauth_key(
            Some(&UserRef::Name("alice".into())),
            true,
            false,
            None,
            vec![],
        )
        .await
        .expect("key");
    let body = json!({"id": k.id.to_string()});
    assert_golden(
        e.post("/api/v1/preauthkey/expire", body).await,
        "TestAPIV1ExpirePreAuthKey_parity",
        Lenient::none(),
    );
    let keys = e.state.list_preauth_keys(None).await.expect("keys");
    assert!(keys[0].is_expired(chrono::Utc::now()));
    assert_status(
        e.post("/api/v1/preauthkey/expire", json!({"id": "x"}))
            .await,
        "TestAPIV1ExpirePreAuthKey_invalid_id_parity",
    );
    assert_status(
        e.post("/api/v1/preauthkey/expire", json!({"id": "77"}))
            .await,
        "TestAPIV1ExpirePreAuthKey_nonexistent_parity",
    );
    let (s, _) = e.post("/api/v1/preauthkey/expire", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

// ----- nodes -----

#[tokio::test]
async fn list_nodes() {
    let e = env().await;
    assert_golden(
        e.get("/api/v1/node").await,
        "TestAPIV1NodeList_empty_parity",
        Lenient::none(),
    );
    e.user("alice").await;
    e.user("bob").await;
    e.node("node-a", Some("alice"), &[]).await;
    e.node("node-b", Some("bob"), &[]).await;
    let all = e.get("/api/v1/node").await;
    assert_eq!(
        all.1["nodes"][0]["ipAddresses"].as_array().map(Vec::len),
        Some(2),
        "v4 and v6: {}",
        all.1
    );
    assert_golden(all, "TestAPIV1NodeList_all_parity", Lenient::live_nodes());
    assert_golden(
        e.get("/api/v1/node?user=alice").await,
        "TestAPIV1NodeList_filter_by_user_parity",
        Lenient::live_nodes(),
    );
    assert_status(
        e.get("/api/v1/node?user=nobody").await,
        "TestAPIV1NodeList_unknown_user_parity",
    );
}

#[tokio::test]
async fn get_node() {
    let e = env().await;
    e.user("alice").await;
    e.user("bob").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let b = e.node("node-b", Some("bob"), &["tag:initial"]).await;
    let (s, v) = e.get(&format!("/api/v1/node/{}", a.0)).await;
    assert_eq!(
        v["node"]["machineKey"]
            .as_str()
            .map(|k| k.starts_with("mkey:")),
        Some(true),
        "{v}"
    );
    assert_golden(
        (s, v),
        "TestAPIV1NodeGet_happy_parity",
        Lenient::live_nodes(),
    );
    // Headscale's tagged fixture is node 1 of user 1; ours is node 2 of user 2: compare without ids.
    let (s, mut v) = e.get(&format!("/api/v1/node/{}", b.0)).await;
    let mut g = golden("TestAPIV1NodeGet_tagged_node_parity").body;
    for x in [&mut v, &mut g] {
        x["node"]["id"] = json!("-");
        x["node"]["preAuthKey"]["id"] = json!("-");
        x["node"]["preAuthKey"]["user"]["id"] = json!("-");
    }
    assert_eq!(s, StatusCode::OK);
    assert_shape(&v, &g, Lenient::live_nodes());
    assert_status(
        e.get("/api/v1/node/abc").await,
        "TestAPIV1NodeGet_invalid_id_parity",
    );
    assert_status(
        e.get("/api/v1/node/999").await,
        "TestAPIV1NodeGet_not_found_parity",
    );
}

#[tokio::test]
async fn delete_node() {
    let e = env().await;
    e.user("alice").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let uri = format!("/api/v1/node/{}", a.0);
    assert_golden(
        e.delete(&uri).await,
        "TestAPIV1NodeDelete_happy_parity",
        Lenient::none(),
    );
    assert_eq!(e.get(&uri).await.0, StatusCode::NOT_FOUND);
    assert_status(e.delete(&uri).await, "TestAPIV1NodeDelete_not_found_parity");
    assert_status(
        e.delete("/api/v1/node/-1").await,
        "TestAPIV1NodeDelete_invalid_id_parity",
    );
    // Now alice owns nothing and can go.
    assert_eq!(e.delete("/api/v1/user/1").await.0, StatusCode::OK);
}

#[tokio::test]
async fn expire_node() {
    let e = env().await;
    e.user("alice").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let (s, v) = e
        .post(&format!("/api/v1/node/{}/expire", a.0), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let exp = v["node"]["expiry"]
        .as_str()
        .and_then(|t| crate::dto::parse_ts(t).ok().flatten())
        .expect("expiry");
    assert!(exp <= chrono::Utc::now());
    assert!(e
        .state
        .get_node(a)
        .expect("node")
        .is_expired(chrono::Utc::now()));
    // An explicit time, in the query as Headscale's CLI sends it.
    let (s, v) = e
        .post(
            &format!("/api/v1/node/{}/expire?expiry=2099-01-01T00:00:00Z", a.0),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, &v["node"]["expiry"]),
        (StatusCode::OK, &json!("2099-01-01T00:00:00Z"))
    );
    assert_status(
        e.post("/api/v1/node/zz/expire", json!({})).await,
        "TestAPIV1NodeExpire_invalid_id_parity",
    );
    assert_status(
        e.post("/api/v1/node/999/expire", json!({})).await,
        "TestAPIV1NodeExpire_not_found_parity",
    );
}

#[tokio::test]
async fn approve_node() {
    let e = env_with(ironscale_state::Settings {
        device_approval: true,
        ..Default::default()
    })
    .await;
    e.user("alice").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    assert!(!e.state.get_node(a).expect("node").approved);
    let (s, v) = e
        .post(&format!("/api/v1/node/{}/approve", a.0), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"]["id"], json!(a.0.to_string()));
    assert!(e.state.get_node(a).expect("node").approved);
    // Again: nothing to do, the same answer.
    let (s, _) = e
        .post(&format!("/api/v1/node/{}/approve", a.0), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = e.post("/api/v1/node/999/approve", json!({})).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["message"].as_str().unwrap_or_default().contains("999"),
        "{v}"
    );
    let (s, _) = e.post("/api/v1/node/zz/approve", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn rename_node() {
    let e = env().await;
    e.user("alice").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let (s, v) = e
        .post(&format!("/api/v1/node/{}/rename/web-1", a.0), json!({}))
        .await;
    assert_eq!(
        (s, &v["node"]["givenName"]),
        (StatusCode::OK, &json!("web-1")),
        "{v}"
    );
    assert_eq!(v["node"]["name"], "node-a", "the hostname stays");
    let (s, b) = e
        .post(&format!("/api/v1/node/{}/rename/Not%20OK", a.0), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error_body(&b);
    assert_status(
        e.post("/api/v1/node/x/rename/y", json!({})).await,
        "TestAPIV1NodeRename_invalid_id_parity",
    );
    assert_status(
        e.post("/api/v1/node/999/rename/y", json!({})).await,
        "TestAPIV1NodeRename_not_found_parity",
    );
}

// ----- health, fallbacks, auth -----

#[tokio::test]
async fn health_and_fallbacks() {
    let e = env().await;
    assert_golden(
        e.get("/api/v1/health").await,
        "TestAPIV1Health_parity_with_gateway",
        Lenient::none(),
    );
    let (s, b) = e.get("/api/v1/nothing").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&b);
    let (s, b) = send(&e.app, Method::PUT, "/api/v1/user", None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    assert_error_body(&b);
}

/// Accepts one key; the identity it hands back is the key's public prefix.
struct OneKey {
    key: &'static str,
    prefix: &'static str,
}

impl OneKey {
    fn new(key: &'static str) -> Arc<OneKey> {
        Arc::new(OneKey {
            key,
            prefix: "key-1",
        })
    }
}

impl crate::ApiKeyVerifier for OneKey {
    fn verify<'a>(
        &'a self,
        key: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Option<String>> + Send + 'a>> {
        Box::pin(async move { (key == self.key).then(|| self.prefix.to_string()) })
    }
}

#[tokio::test]
async fn api_key_auth() {
    let e = env().await;
    let app = router_with_auth(e.state.clone(), Auth::ApiKey(OneKey::new("good-key")));
    assert!(!format!("{:?}", Auth::ApiKey(OneKey::new("good-key"))).contains("good-key"));
    let call = |auth: Option<&'static str>| {
        let app = app.clone();
        async move {
            let mut req = Request::builder().uri("/api/v1/user");
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            let resp = app
                .oneshot(req.body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            resp.status()
        }
    };
    assert_eq!(call(None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(Some("Bearer bad-key")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(Some("good-key")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(Some("Bearer good-key")).await, StatusCode::OK);
}

// ----- callers -----

/// A router whose one handler reports the caller it was given and counts its calls.
fn probe(calls: Arc<std::sync::atomic::AtomicUsize>) -> Router {
    Router::new().route(
        "/probe",
        axum::routing::get(move |c: Caller| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.to_string()
            }
        }),
    )
}

async fn call_text(app: &Router, uri: &str, auth: Option<&str>) -> (StatusCode, String) {
    let mut req = Request::builder().uri(uri);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).expect("request"))
        .await
        .expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test]
async fn handlers_see_the_caller_of_each_auth_mode() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let local = authenticate(probe(calls.clone()), Auth::None);
    assert_eq!(
        call_text(&local, "/probe", None).await,
        (StatusCode::OK, "local-socket".to_string())
    );
    let keyed = authenticate(
        probe(calls.clone()),
        Auth::ApiKey(Arc::new(OneKey {
            key: "ops.s3cret",
            prefix: "ops",
        })),
    );
    assert_eq!(
        call_text(&keyed, "/probe", Some("Bearer ops.s3cret")).await,
        (StatusCode::OK, "api-key:ops".to_string())
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    // Without an auth layer there is no caller: refused, not guessed.
    let bare = probe(calls.clone());
    assert_eq!(
        call_text(&bare, "/probe", None).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_key_never_reaches_a_handler() {
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let keyed = authenticate(probe(calls.clone()), Auth::ApiKey(OneKey::new("good-key")));
    for auth in [
        None,
        Some("Bearer bad-key"),
        Some("Bearer "),
        Some("good-key"),
        Some("Basic good-key"),
    ] {
        let (s, b) = call_text(&keyed, "/probe", auth).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{auth:?}: {b}");
        assert_error_body(&serde_json::from_str(&b).expect("JSON error body"));
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);

    // Through the real API: a refused create writes nothing, unknown paths
    // are refused too (the layer sits around the fallback).
    let e = env().await;
    let app = router_with_auth(e.state.clone(), Auth::ApiKey(OneKey::new("good-key")));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/api/v1/user")
        .header("authorization", "Bearer bad-key")
        .body(Body::from(json!({"name": "mallory"}).to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(e.state.list_users().is_empty(), "nothing was created");
    assert_eq!(
        call_text(&app, "/api/v1/nothing", Some("Bearer bad-key"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call_text(&app, "/elsewhere", Some("Bearer good-key"))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

/// A `tracing` subscriber writing into a buffer, for the calling thread
/// (the tests run on a current-thread runtime, so every task logs here).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn capture(&self) -> tracing::subscriber::DefaultGuard {
        let buf = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || buf.clone())
            .finish();
        tracing::subscriber::set_default(sub)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
    /// The lines containing `what`.
    fn lines_with(&self, what: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(what))
            .map(str::to_owned)
            .collect()
    }
}

async fn send_as(
    app: &Router,
    auth: &str,
    method: Method,
    uri: &str,
    body: Value,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("authorization", auth)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    let resp = app.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("JSON")
    };
    (status, v)
}

#[tokio::test]
async fn mutations_log_the_caller_and_never_a_secret() {
    let logs = LogBuf::default();
    let _guard = logs.capture();
    let e = env().await;
    const API_SECRET: &str = "ops.TOPSECRET-api-key";
    let app = router_with_auth(
        e.state.clone(),
        Auth::ApiKey(Arc::new(OneKey {
            key: API_SECRET,
            prefix: "ops",
        })),
    );
    let auth = format!("Bearer {API_SECRET}");
    let call = |m: Method, uri: String, b: Value| {
        let (app, auth) = (app.clone(), auth.clone());
        async move {
            let (s, v) = send_as(&app, &auth, m, &uri, b).await;
            assert_eq!(s, StatusCode::OK, "{uri}: {v}");
            v
        }
    };
    call(
        Method::POST,
        "/api/v1/user".into(),
        json!({"name": "alice"}),
    )
    .await;
    call(Method::POST, "/api/v1/user/1/rename/bob".into(), json!({})).await;
    call(
        Method::POST,
        "/api/v1/user".into(),
        json!({"name": "carol"}),
    )
    .await;
    call(Method::DELETE, "/api/v1/user/2".into(), json!({})).await;
    let v = call(
        Method::POST,
        "/api/v1/preauthkey".into(),
        json!({"user": "1", "reusable": true}),
    )
    .await;
    let full_key = v["preAuthKey"]["key"].as_str().expect("key").to_string();
    let id = e.node("node-a", Some("bob"), &[]).await.0;
    call(
        Method::POST,
        format!("/api/v1/node/{id}/rename/web-1"),
        json!({}),
    )
    .await;
    call(
        Method::POST,
        format!("/api/v1/node/{id}/approve_routes"),
        json!({"routes": ["10.0.0.0/24"]}),
    )
    .await;
    call(Method::POST, format!("/api/v1/node/{id}/expire"), json!({})).await;
    // Expiring by the key's full text: the text is not what gets logged.
    call(
        Method::POST,
        "/api/v1/preauthkey/expire".into(),
        json!({"key": full_key}),
    )
    .await;
    call(Method::DELETE, format!("/api/v1/node/{id}"), json!({})).await;
    // A refused request logs neither the key it carried nor a caller.
    let (s, _) = send_as(
        &app,
        "Bearer ops.WRONG-secret",
        Method::POST,
        "/api/v1/user",
        json!({"name": "mallory"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    for what in [
        "user created",
        "user renamed",
        "user deleted",
        "pre-auth key created",
        "node renamed",
        "node routes approved",
        "node expired",
        "pre-auth key expired",
        "node deleted",
    ] {
        let lines = logs.lines_with(what);
        assert!(
            lines.iter().any(|l| l.contains("caller=api-key:ops")),
            "{what}: no line names the caller in\n{}",
            logs.text()
        );
    }
    assert!(logs
        .lines_with("user created")
        .iter()
        .any(|l| l.contains("alice")));
    assert!(logs
        .lines_with("node routes approved")
        .iter()
        .any(|l| l.contains("10.0.0.0/24")));
    let text = logs.text();
    assert!(!text.contains("TOPSECRET"), "the API key leaked:\n{text}");
    assert!(
        !text.contains("WRONG-secret"),
        "a refused key leaked:\n{text}"
    );
    let secret = full_key.rsplit('-').next().expect("secret part");
    assert!(secret.len() >= 32, "{full_key}");
    assert!(!text.contains(secret), "the pre-auth key leaked:\n{text}");
    assert!(!logs.lines_with("refused").is_empty(), "{text}");
}

// ----- the unix socket -----

async fn get_over_unix(path: &std::path::Path, uri: &str) -> std::io::Result<(StatusCode, Value)> {
    let stream = tokio::net::UnixStream::connect(path).await?;
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(uri)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let resp = tx.send_request(req).await.map_err(std::io::Error::other)?;
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((
        status,
        serde_json::from_slice(&bytes).map_err(std::io::Error::other)?,
    ))
}

async fn wait_for(path: &std::path::Path) {
    for _ in 0..500 {
        if get_over_unix(path, "/api/v1/health").await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("no server on {}", path.display());
}

#[tokio::test]
async fn serve_unix_socket() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let e = env().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sock = dir.path().join("sub/ironscale.sock");
    // A stale socket from a crashed server is replaced.
    std::fs::create_dir_all(sock.parent().expect("parent")).expect("mkdir");
    drop(std::os::unix::net::UnixListener::bind(&sock).expect("stale"));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let (sock, app) = (sock.clone(), e.app.clone());
        async move {
            ironscale_http::serve_unix(&sock, 0o760, app, async {
                let _ = stopped.await;
            })
            .await
        }
    });
    wait_for(&sock).await;
    let meta = std::fs::metadata(&sock).expect("socket");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o760);
    e.user("alice").await;
    let (s, v) = get_over_unix(&sock, "/api/v1/user").await.expect("request");
    assert_eq!(
        (s, &v["users"][0]["name"]),
        (StatusCode::OK, &json!("alice"))
    );

    // A second server on a live socket is refused, and the first keeps it.
    let err = ironscale_http::serve_unix(&sock, 0o700, e.app.clone(), async {})
        .await
        .expect_err("in use");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(get_over_unix(&sock, "/api/v1/health").await.is_ok());

    let _ = stop.send(());
    server.await.expect("join").expect("served");
    assert!(!sock.exists(), "the socket is removed on shutdown");

    // A regular file in the way is never deleted.
    std::fs::write(&sock, "data").expect("write");
    let err = ironscale_http::serve_unix(&sock, 0o700, e.app.clone(), async {})
        .await
        .expect_err("not a socket");
    assert_eq!(err.kind(), std::io::ErrorKind::AlreadyExists, "{err}");
    assert_eq!(std::fs::read_to_string(&sock).expect("kept"), "data");
}

// ----- API keys -----

#[tokio::test]
async fn api_keys_list_create_expire_delete_as_headscale() {
    let e = env().await;
    assert_golden(
        e.get("/api/v1/apikey").await,
        "TestAPIV1ApiKeyList_empty_parity",
        Lenient::none(),
    );
    let (st, created) = e.post("/api/v1/apikey", json!({})).await;
    assert_eq!(st, StatusCode::OK, "{created}");
    let key = created["apiKey"].as_str().expect("apiKey").to_string();
    assert!(key.starts_with("hskey-api-") && key.len() == 87, "{key}");
    let (st, _) = e
        .post(
            "/api/v1/apikey",
            json!({"expiration": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let listed = e.get("/api/v1/apikey").await;
    assert_eq!(listed.1["apiKeys"][1]["expiration"], "2999-01-01T00:00:00Z");
    let mut first = listed.clone();
    first.1["apiKeys"].as_array_mut().expect("keys").truncate(1);
    assert_golden(
        first,
        "TestAPIV1ApiKeyList_nil_timestamps_emitted_as_null_parity",
        Lenient::none(),
    );
    // The listing shows Headscale 0.28's masked prefix, never the secret.
    let shown = listed.1["apiKeys"][0]["prefix"]
        .as_str()
        .expect("prefix")
        .to_string();
    assert_eq!(shown, format!("{}-***", &key[..22]));
    assert!(!listed.1.to_string().contains(&key[23..]));

    // A past expiration is refused.
    let (st, _) = e
        .post(
            "/api/v1/apikey",
            json!({"expiration": "2001-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);

    // Expire: by prefix (the listing's spelling), by id; neither/both 400; unknown 404.
    assert_golden(
        e.post("/api/v1/apikey/expire", json!({"prefix": shown}))
            .await,
        "TestAPIV1ApiKeyExpire_by_prefix_parity",
        Lenient::none(),
    );
    assert_golden(
        e.post("/api/v1/apikey/expire", json!({"id": "2"})).await,
        "TestAPIV1ApiKeyExpire_by_id_parity",
        Lenient::none(),
    );
    assert_status(
        e.post("/api/v1/apikey/expire", json!({})).await,
        "TestAPIV1ApiKeyExpire_neither_id_nor_prefix_parity",
    );
    assert_status(
        e.post("/api/v1/apikey/expire", json!({"id": "1", "prefix": shown}))
            .await,
        "TestAPIV1ApiKeyExpire_both_id_and_prefix_parity",
    );
    assert_status(
        e.post("/api/v1/apikey/expire", json!({"id": "99"})).await,
        "TestAPIV1ApiKeyExpire_not_found_by_id_parity",
    );
    assert!(
        e.state.verify_api_key(&key).await.is_none(),
        "expired key still valid"
    );

    // Delete: by prefix in the path; a path prefix with ?id= is 400; bad id 400; unknown 404.
    assert_status(
        e.delete(&format!("/api/v1/apikey/{}?id=1", &key[10..22]))
            .await,
        "TestAPIV1ApiKeyDelete_path_prefix_with_id_query_is_both_to_400_parity",
    );
    assert_status(
        e.delete("/api/v1/apikey/?id=abc").await,
        "TestAPIV1ApiKeyDelete_invalid_id_parity",
    );
    assert_status(
        e.delete("/api/v1/apikey/nosuchprefix").await,
        "TestAPIV1ApiKeyDelete_not_found_by_prefix_parity",
    );
    let (st, body) = e.delete(&format!("/api/v1/apikey/{}", &key[10..22])).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body, json!({}));
    let (st, _) = e.delete("/api/v1/apikey/?id=2").await;
    assert_eq!(st, StatusCode::OK);
    assert_golden(
        e.get("/api/v1/apikey").await,
        "TestAPIV1ApiKeyList_empty_parity",
        Lenient::none(),
    );
}

/// A real key from the state authenticates the router over its verifier;
/// expired, deleted or wrong keys get 401.
#[tokio::test]
async fn state_api_keys_authenticate_requests() {
    let e = env().await;
    let app = router_with_auth(
        e.state.clone(),
        Auth::ApiKey(Arc::new(crate::StateApiKeys::new(e.state.clone()))),
    );
    let (_, key) = e.state.create_api_key(None).await.expect("key");
    let bearer = format!("Bearer {key}");
    let (st, _) = call_text(&app, "/api/v1/user", Some(&bearer)).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = call_text(
        &app,
        "/api/v1/user",
        Some("Bearer hskey-api-abcdefghijkl-wrong"),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert!(
        serde_json::from_str::<Value>(&body).is_ok(),
        "JSON error: {body}"
    );
    let (st, _) = call_text(&app, "/api/v1/user", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    e.state
        .expire_api_key(None, Some(&key[10..22]))
        .await
        .expect("expire");
    let (st, _) = call_text(&app, "/api/v1/user", Some(&bearer)).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}

#[test]
fn repeated_key_failures_from_one_source_are_slowed_down() {
    let l = crate::FailureLimiter::default();
    let ip: std::net::IpAddr = "192.0.2.7".parse().expect("ip");
    let other: std::net::IpAddr = "192.0.2.8".parse().expect("ip");
    for _ in 0..2 {
        l.record(ip, false);
    }
    assert!(l.delay(ip).is_zero(), "two failures are free");
    l.record(ip, false);
    assert_eq!(l.delay(ip), std::time::Duration::from_millis(250));
    l.record(ip, false);
    assert_eq!(l.delay(ip), std::time::Duration::from_millis(500));
    for _ in 0..20 {
        l.record(ip, false);
    }
    assert_eq!(l.delay(ip), std::time::Duration::from_secs(8), "capped");
    assert!(l.delay(other).is_zero(), "per source");
    l.record(ip, true);
    assert!(l.delay(ip).is_zero(), "a success forgets the source");
}

/// The network router merged into the control listener: its routes need a
/// key, a path that is no route stays a plain 404 (Headplane probes
/// `/swagger/v1/openapiv2.json` and reads a 404 as "Headscale 0.28").
#[tokio::test]
async fn the_network_router_guards_its_routes_and_leaves_other_paths_alone() {
    let e = env().await;
    let app = crate::network_router(e.state.clone());
    let (st, _) = call_text(&app, "/api/v1/user", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = call_text(&app, "/swagger/v1/openapiv2.json", None).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (_, key) = e.state.create_api_key(None).await.expect("key");
    let (st, body) = call_text(&app, "/api/v1/user", Some(&format!("Bearer {key}"))).await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

// ----- the OpenAPI document and Headplane's expectations -----

/// The document lists exactly the routed operations: every entry of the
/// route table is a path and method of the document, and every documented
/// operation reaches a handler (not the 404/405 fallbacks) on the router.
#[tokio::test]
async fn openapi_documents_every_routed_operation() {
    let e = env().await;
    let (s, doc) = e.get("/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK, "{doc}");
    assert_eq!(&doc, crate::routes::openapi());
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().expect("paths");
    let table = crate::routes::table();
    for r in &table {
        let op = &paths[&format!("/api/v1{}", r.path)][r.method];
        assert!(op.is_object(), "{} {} is not documented", r.method, r.path);
        assert!(op["responses"]["200"]["content"]["application/json"]["schema"].is_object());
    }
    let mut documented = 0;
    for (path, item) in paths {
        for (method, _) in item.as_object().expect("path item") {
            documented += 1;
            let uri = path
                .split('/')
                .map(|seg| if seg.starts_with('{') { "1" } else { seg })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (s, v) = send(&e.app, m, &uri, None).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}: {v}");
            assert_ne!(
                v["message"], "Not Found",
                "{method} {uri} is not routed: {v}"
            );
            assert!(!v.is_null(), "{method} {uri}: empty body");
        }
    }
    assert_eq!(documented, table.len());
    // The fallback is what an unrouted path gets, so the checks above can fail.
    let (s, v) = e.get("/api/v1/nope").await;
    assert_eq!(
        (s, v["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not Found"))
    );
    // Every schema reference resolves.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let name = r.split('"').next().expect("ref");
        let name = name
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling $ref {name}"
        );
    }
}

/// The document is behind the API's auth; Headscale's swagger path, which
/// Headplane hashes to tell Headscale versions apart, stays 404.
#[tokio::test]
async fn openapi_is_behind_auth_and_swagger_path_is_absent() {
    let e = env().await;
    let (s, _) = e.get("/swagger/v1/openapiv2.json").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let keys: Arc<dyn crate::ApiKeyVerifier> = Arc::new(crate::StateApiKeys::new(e.state.clone()));
    let app = router_with_auth(e.state.clone(), Auth::ApiKey(keys));
    let (s, v) = send(&app, Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert_error_body(&v);
}
/// Client libraries send `{}` with a GET and `null` for unset fields.
#[tokio::test]
async fn get_with_a_body_and_null_fields_are_accepted() {
    let e = env().await;
    let (s, v) = send(&e.app, Method::GET, "/api/v1/user", Some(json!({}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = e
        .post(
            "/api/v1/user",
            json!({"name": "alice", "displayName": null, "email": null, "pictureUrl": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["user"]["id"].as_str().expect("id").to_string();
    let (s, v) = e
        .post(
            "/api/v1/preauthkey",
            json!({"user": id, "reusable": null, "ephemeral": null, "expiration": null, "aclTags": null}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["preAuthKey"]["reusable"], false);
    // A body that is not JSON is still refused, as JSON.
    let (s, v) = send(&e.app, Method::GET, "/api/v1/user", Some(json!(null))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = e.post("/api/v1/user", json!("alice")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error_body(&v);
}

/// Headplane's ACL editor: in database mode with nothing stored the error
/// says `acl policy not found`; a stored policy has an `updatedAt`; a bad
/// policy is a 400 starting `parsing policy from bytes:`.
#[tokio::test]
async fn policy_in_database_mode_as_headplane_expects() {
    let e = env_with(ironscale_state::Settings {
        policy_in_database: true,
        ..Default::default()
    })
    .await;
    let (s, v) = e.get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    assert_error_body(&v);
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("acl policy not found"),
        "{v}"
    );

    let (s, v) = send(
        &e.app,
        Method::PUT,
        "/api/v1/policy",
        Some(json!({"policy": "{\"acls\": [}"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["message"].as_str().expect("message");
    assert!(msg.starts_with("parsing policy from bytes: "), "{v}");
    let (s, v) = e
        .post("/api/v1/policy/check", json!({"policy": "{\"acls\": 5}"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .starts_with("parsing policy from bytes: "),
        "{v}"
    );

    let policy = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    let (s, v) = send(
        &e.app,
        Method::PUT,
        "/api/v1/policy",
        Some(json!({"policy": policy})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["updatedAt"].is_string(), "{v}");
    let (s, v) = e.get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["policy"], policy);
    assert!(v["updatedAt"].is_string(), "{v}");
}

/// In file mode the policy is read-only over the API, in Headscale's words.
#[tokio::test]
async fn policy_update_in_file_mode_is_disabled() {
    let e = env().await;
    let (s, v) = send(
        &e.app,
        Method::PUT,
        "/api/v1/policy",
        Some(json!({"policy": "{}"})),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error_body(&v);
    assert!(
        v["message"]
            .as_str()
            .expect("message")
            .contains("update is disabled"),
        "{v}"
    );
    // Reading it is fine (no policy: empty text).
    let (s, v) = e.get("/api/v1/policy").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

/// Headplane renames with no body at all, and reads the answer as JSON.
#[tokio::test]
async fn rename_without_a_body_answers_the_node() {
    let e = env().await;
    e.user("alice").await;
    let id = e.node("laptop", Some("alice"), &[]).await;
    let (s, v) = send(
        &e.app,
        Method::POST,
        &format!("/api/v1/node/{}/rename/desk", id.0),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"]["givenName"], "desk");
}

/// Every 2xx answer has a JSON body, the empty ones included.
#[tokio::test]
async fn every_success_has_a_json_body() {
    let e = env().await;
    let uid = e.user("bob").await;
    let id = e.node("box", Some("bob"), &[]).await;
    let (_, k) = e.post("/api/v1/apikey", json!({})).await;
    let prefix = k["apiKey"]
        .as_str()
        .expect("key")
        .split('-')
        .nth(2)
        .expect("prefix")
        .to_string();
    for (m, uri, b) in [
        (Method::GET, "/api/v1/health".to_string(), None),
        (Method::POST, format!("/api/v1/node/{}/expire", id.0), None),
        (
            Method::POST,
            "/api/v1/preauthkey/expire".to_string(),
            Some(json!({"id": "1"})),
        ),
        (
            Method::POST,
            "/api/v1/apikey/expire".to_string(),
            Some(json!({"prefix": prefix})),
        ),
        (Method::DELETE, format!("/api/v1/apikey/{prefix}"), None),
        (Method::DELETE, format!("/api/v1/node/{}", id.0), None),
        (Method::DELETE, format!("/api/v1/user/{uid}"), None),
    ] {
        let (s, v) = send(&e.app, m.clone(), &uri, b).await;
        assert!(s.is_success(), "{m} {uri}: {s} {v}");
        assert!(v.is_object(), "{m} {uri}: {v}");
    }
}

/// A body over the limit is refused with a JSON error.
#[tokio::test]
async fn a_huge_body_is_refused_as_json() {
    let e = env().await;
    let big = "x".repeat(3 << 20);
    let (s, v) = e.post("/api/v1/user", json!({"name": big})).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_error_body(&v);
}

/// Refusals from a source are slowed down (each waits at least its delay:
/// a lower bound, which a slow machine cannot break); a valid key from the
/// same source is let through and makes the source forgotten.
#[tokio::test]
async fn failures_slow_down_refusals_but_never_a_valid_key() {
    let e = env().await;
    let limiter = Arc::new(crate::FailureLimiter::default());
    let keys: Arc<dyn crate::ApiKeyVerifier> = Arc::new(crate::StateApiKeys::new(e.state.clone()));
    let app = crate::network_router_with(e.state.clone(), keys, limiter.clone());
    let (_, key) = e.state.create_api_key(None).await.expect("key");
    let ip = std::net::IpAddr::from([192, 0, 2, 9]);
    let from = |auth: String| {
        let mut req = Request::builder()
            .uri("/api/v1/user")
            .header("authorization", auth)
            .body(Body::empty())
            .expect("request");
        req.extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::new(
                ip, 40000,
            )));
        req
    };
    let bad = "Bearer hskey-api-abcdefghijkl-nope".to_string();
    let mut last_refusal = std::time::Duration::ZERO;
    for _ in 0..4 {
        let t = std::time::Instant::now();
        let resp = app
            .clone()
            .oneshot(from(bad.clone()))
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        last_refusal = t.elapsed();
    }
    assert!(
        last_refusal >= std::time::Duration::from_millis(250),
        "{last_refusal:?}"
    );
    assert!(
        !limiter.delay(ip).is_zero(),
        "the source is being slowed down"
    );
    let resp = app
        .clone()
        .oneshot(from(format!("Bearer {key}")))
        .await
        .expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(limiter.delay(ip).is_zero(), "a success forgets the source");
}

/// Expiring a pre-auth key by its text compares the prefix only, and an
/// unknown key's error does not repeat its secret.
#[tokio::test]
async fn expiring_an_unknown_preauth_key_does_not_echo_its_secret() {
    let e = env().await;
    let secret = "s".repeat(64);
    let (st, body) = e
        .post(
            "/api/v1/preauthkey/expire",
            json!({"key": format!("hskey-auth-AAAAAAAAAAAA-{secret}")}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{body}");
    assert!(!body.to_string().contains(&secret), "{body}");
    // Text that merely contains a real key's prefix does not expire it.
    let user = e.user("alice").await;
    let (k, _) = e
        .state
        .create_preauth_key(Some(&UserRef::Id(UserId(user))), false, false, None, vec![])
        .await
        .expect("key");
    let (st, _) = e
        .post(
            "/api/v1/preauthkey/expire",
            json!({"key": format!("xx{}yy", k.prefix)}),
        )
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _) = e
        .post("/api/v1/preauthkey/expire", json!({"key": k.prefix}))
        .await;
    assert_eq!(st, StatusCode::OK);
}

/// Found by schemathesis: `disableExpiry` (not supported) was a 501; bad
/// input is never a 5xx.
#[tokio::test]
async fn disabling_expiry_is_a_client_error() {
    let e = env().await;
    e.user("alice").await;
    let id = e.node("laptop", Some("alice"), &[]).await;
    let uri = format!("/api/v1/node/{}/expire", id.0);
    let (s, v) = e.post(&uri, json!({"disableExpiry": true})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_error_body(&v);
    let (s, v) = e
        .post(&format!("{uri}?disableExpiry=true"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}

/// Found by schemathesis: an id past `i64::MAX` reached the store (500).
#[tokio::test]
async fn ids_past_the_stores_range_are_bad_ids() {
    let e = env().await;
    let big = "9223372036854775808";
    for (m, uri, b) in [
        (
            Method::POST,
            "/api/v1/apikey/expire".to_string(),
            Some(json!({"id": 9223372036854775808u64})),
        ),
        (Method::DELETE, format!("/api/v1/apikey/?id={big}"), None),
        (
            Method::POST,
            "/api/v1/preauthkey/expire".to_string(),
            Some(json!({"id": big})),
        ),
        (Method::GET, format!("/api/v1/node/{big}"), None),
        (Method::DELETE, format!("/api/v1/user/{big}"), None),
    ] {
        let (s, v) = send(&e.app, m.clone(), &uri, b).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{m} {uri}: {v}");
        assert_error_body(&v);
    }
}

#[test]
fn the_failure_limiter_counts_ipv6_by_64_and_stays_bounded() {
    let l = crate::FailureLimiter::default();
    let a: std::net::IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let other: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    for _ in 0..3 {
        l.record(a, false);
    }
    assert!(!l.delay(b).is_zero(), "same /64");
    assert!(l.delay(other).is_zero(), "another /64");
    for i in 0..(crate::FailureLimiter::MAX_SOURCES as u32 + 10) {
        l.record(
            std::net::IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)),
            false,
        );
    }
    let n = l.by_source.lock().expect("lock").len();
    assert!(n <= crate::FailureLimiter::MAX_SOURCES, "{n}");
}
