//! Completing interactive registrations: `POST /api/v1/node/register`,
//! `/api/v1/auth/{register,approve,reject}` against Headscale's goldens, and
//! what they change (or, on errors, do not change).

use ironscale_state::{RegisterResult, RegistrationId, RegistrationStatus, Settings};

use super::*;

async fn interactive_env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .expect("store");
    let settings = Settings {
        interactive_login: true,
        ..Default::default()
    };
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

impl Env {
    /// A machine named `host` asks to register without a key: its pending id.
    async fn pending(&self, host: &str) -> RegistrationId {
        let req = wire::RegisterRequest {
            version: 100,
            node_key: PrivateKey::generate().node_public(),
            hostinfo: Some(json!({"Hostname": host})),
            ..Default::default()
        };
        match self
            .state
            .register(PrivateKey::generate().machine_public(), &req)
            .await
        {
            RegisterResult::NeedsLogin(p) => p.id,
            other => panic!("expected a pending registration, got {other:?}"),
        }
    }

    async fn node_count(&self) -> usize {
        self.state
            .node_views(&Default::default())
            .await
            .expect("nodes")
            .len()
    }
}

/// A well-formed id that names no registration.
const UNKNOWN_ID: &str = "AAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn node_register_completes_a_pending_registration() {
    let e = interactive_env().await;
    e.user("alice").await;
    let id = e.pending("registered-node").await;
    let mut watch = e.state.watch_registration(&id).expect("watchable");

    // Errors first: nothing changes.
    let got = e
        .post("/api/v1/node/register?user=alice&key=not-an-id", json!({}))
        .await;
    let b = assert_status(got, "TestAPIV1NodeRegister_invalid_key_parity");
    assert!(
        b["message"]
            .as_str()
            .is_some_and(|m| m.contains("not-an-id")),
        "{b}"
    );
    let got = e
        .post(
            &format!("/api/v1/node/register?user=ghost&key={id}"),
            json!({}),
        )
        .await;
    let b = assert_status(got, "TestAPIV1NodeRegister_unknown_user_parity");
    assert!(
        b["message"].as_str().is_some_and(|m| m.contains("ghost")),
        "{b}"
    );
    let got = e
        .post(
            &format!("/api/v1/node/register?user=alice&key={UNKNOWN_ID}"),
            json!({}),
        )
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    assert_error_body(&got.1);
    assert_eq!(e.node_count().await, 0);
    assert!(e.state.pending_registration(&id).is_some());
    assert!(matches!(*watch.borrow(), RegistrationStatus::Waiting));

    // The operator completes it.
    let got = e
        .post(
            &format!("/api/v1/node/register?user=alice&key={id}"),
            json!({}),
        )
        .await;
    let body = got.1.clone();
    assert_golden(
        got,
        "TestAPIV1NodeRegister_happy_parity",
        Lenient::live_nodes(),
    );
    assert_eq!(body["node"]["user"]["name"], "alice");
    assert_eq!(body["node"]["givenName"], "registered-node");
    assert_eq!(e.node_count().await, 1);
    assert!(e.state.pending_registration(&id).is_none());
    watch.changed().await.expect("told");
    match &*watch.borrow() {
        RegistrationStatus::Approved(n) => {
            assert_eq!(n.id.0.to_string(), body["node"]["id"].as_str().expect("id"))
        }
        other => panic!("expected approved, got {other:?}"),
    }

    // Done once: the same id again is 404 and creates nothing.
    let got = e
        .post(
            &format!("/api/v1/node/register?user=alice&key={id}"),
            json!({}),
        )
        .await;
    assert_eq!(got.0, StatusCode::NOT_FOUND, "{}", got.1);
    assert_error_body(&got.1);
    assert_eq!(e.node_count().await, 1);
}

#[tokio::test]
async fn auth_register_goldens_and_behaviour() {
    let e = interactive_env().await;
    e.user("alice").await;
    let id = e.pending("regnode").await;

    assert_status(
        e.post(
            "/api/v1/auth/register",
            json!({"user": "alice", "authId": "short"}),
        )
        .await,
        "TestAPIV1AuthRegister_invalid_auth_id_parity",
    );
    assert_status(
        e.post(
            "/api/v1/auth/register",
            json!({"user": "alice", "authId": UNKNOWN_ID}),
        )
        .await,
        "TestAPIV1AuthRegister_no_pending_session_parity",
    );
    assert_status(
        e.post(
            "/api/v1/auth/register",
            json!({"user": "nobody", "authId": id.as_str()}),
        )
        .await,
        "TestAPIV1AuthRegister_unknown_user_parity",
    );
    // No user at all is a bad request, not a tagged node.
    let (s, b) = e
        .post("/api/v1/auth/register", json!({"authId": id.as_str()}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error_body(&b);
    assert_eq!(e.node_count().await, 0);
    assert!(e.state.pending_registration(&id).is_some());

    let got = e
        .post(
            "/api/v1/auth/register",
            json!({"user": "alice", "authId": id.as_str()}),
        )
        .await;
    let body = got.1.clone();
    assert_golden(
        got,
        "TestAPIV1AuthRegister_happy_path_parity",
        Lenient::live_nodes(),
    );
    assert_eq!(body["node"]["registerMethod"], "REGISTER_METHOD_CLI");
    let node_id: u64 = body["node"]["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("id");
    let v = e.state.node_view(NodeId(node_id)).await.expect("the node");
    assert_eq!(v.node.user_id, Some(UserId(1)));
    assert_eq!(v.node.hostname, "regnode");

    // The protobuf field name is accepted too; the id is spent.
    let (s, b) = e
        .post(
            "/api/v1/auth/register",
            json!({"user": "alice", "auth_id": id.as_str()}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(e.node_count().await, 1);
}

#[tokio::test]
async fn auth_approve_needs_a_user_and_changes_nothing() {
    let e = interactive_env().await;
    e.user("alice").await;
    let id = e.pending("laptop").await;
    assert_status(
        e.post("/api/v1/auth/approve", json!({"authId": "x"})).await,
        "TestAPIV1AuthApprove_invalid_auth_id_parity",
    );
    assert_status(
        e.post("/api/v1/auth/approve", json!({"authId": UNKNOWN_ID}))
            .await,
        "TestAPIV1AuthApprove_no_pending_session_parity",
    );
    let (s, b) = e
        .post("/api/v1/auth/approve", json!({"authId": id.as_str()}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_error_body(&b);
    let m = b["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("auth register") && m.contains(id.as_str()),
        "{m}"
    );
    assert_eq!(e.node_count().await, 0);
    assert!(e.state.pending_registration(&id).is_some());
}

#[tokio::test]
async fn auth_reject_denies_and_tells_the_client() {
    let e = interactive_env().await;
    e.user("alice").await;
    let id = e.pending("intruder").await;
    let mut watch = e.state.watch_registration(&id).expect("watchable");
    assert_status(
        e.post("/api/v1/auth/reject", json!({"authId": "bad id"}))
            .await,
        "TestAPIV1AuthReject_invalid_auth_id_parity",
    );
    assert_status(
        e.post("/api/v1/auth/reject", json!({"authId": UNKNOWN_ID}))
            .await,
        "TestAPIV1AuthReject_no_pending_session_parity",
    );
    assert!(e.state.pending_registration(&id).is_some());

    let (s, b) = e
        .post("/api/v1/auth/reject", json!({"authId": id.as_str()}))
        .await;
    assert_eq!((s, &b), (StatusCode::OK, &json!({})));
    assert!(e.state.pending_registration(&id).is_none());
    watch.changed().await.expect("told");
    assert!(
        matches!(&*watch.borrow(), RegistrationStatus::Denied(why) if why.contains("rejected")),
        "{:?}",
        *watch.borrow()
    );
    // A rejected registration cannot be completed afterwards.
    let (s, b) = e
        .post(
            &format!("/api/v1/node/register?user=alice&key={id}"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    assert_eq!(e.node_count().await, 0);
    // Nor rejected twice.
    let (s, _) = e
        .post("/api/v1/auth/reject", json!({"authId": id.as_str()}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pending_registrations_are_listed_until_completed() {
    let e = interactive_env().await;
    let (s, v) = e.get("/api/v1/auth/pending").await;
    assert_eq!((s, v), (StatusCode::OK, json!({"registrations": []})));
    let id = e.pending("waiting-host").await;
    let (s, v) = e.get("/api/v1/auth/pending").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r = &v["registrations"];
    assert_eq!(r.as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(r[0]["id"], id.as_str());
    assert_eq!(r[0]["hostname"], "waiting-host");
    assert!(
        r[0]["machineKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("mkey:")),
        "{v}"
    );
    assert!(
        r[0]["nodeKey"]
            .as_str()
            .is_some_and(|k| k.starts_with("nodekey:")),
        "{v}"
    );
    let ts = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(r[0][k].as_str().unwrap_or_default()).expect(k)
    };
    assert_eq!(
        (ts("expiresAt") - ts("createdAt")).num_seconds(),
        15 * 60,
        "the default registration_ttl"
    );
    e.state.deny_registration(&id, "test").expect("denied");
    let (_, v) = e.get("/api/v1/auth/pending").await;
    assert_eq!(v, json!({"registrations": []}));
}
