//! `POST /api/v1/node/{id}/user` (MoveNode) and
//! `POST /api/v1/node/backfillips` (BackfillNodeIPs): answers, what they
//! change, and that a refusal changes nothing.

use super::*;

#[tokio::test]
async fn move_node() {
    let e = env().await;
    e.user("alice").await;
    let bob = e.user("bob").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let uri = format!("/api/v1/node/{}/user", a.0);
    // Headscale's body: the user id, as a number or a string.
    let (s, v) = e.post(&uri, json!({"user": bob})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["node"]["user"]["name"], "bob", "{v}");
    assert_eq!(v["node"]["id"], a.0.to_string(), "{v}");
    // A node's shape (Headscale's MoveNodeResponse is `{node}`); ids differ.
    let mut g = golden("TestAPIV1NodeGet_happy_parity").body;
    let mut ours = v.clone();
    for x in [&mut ours, &mut g] {
        x["node"]["user"] = json!("-");
        if x["node"]["preAuthKey"].is_object() {
            x["node"]["preAuthKey"]["user"]["id"] = json!("-");
        }
    }
    assert_shape(&ours, &g, Lenient::live_nodes());
    assert_eq!(
        e.state.get_node(a).expect("node").user_id,
        Some(UserId(bob))
    );
    let (s, v) = e.post(&uri, json!({"user": "1"})).await;
    assert_eq!(
        (s, &v["node"]["user"]["name"]),
        (StatusCode::OK, &json!("alice")),
        "{v}"
    );
    // Before Headscale 0.26 the body named the user.
    let (s, v) = e.post(&uri, json!({"user": "bob"})).await;
    assert_eq!(
        (s, &v["node"]["user"]["name"]),
        (StatusCode::OK, &json!("bob")),
        "{v}"
    );
}

#[tokio::test]
async fn refused_moves_change_nothing() {
    let e = env().await;
    e.user("alice").await;
    e.user("bob").await;
    let a = e.node("node-a", Some("alice"), &[]).await;
    let t = e.node("node-t", Some("bob"), &["tag:server"]).await;
    let before = e.state.snapshot();
    let cases = [
        (
            format!("/api/v1/node/{}/user", a.0),
            json!({"user": 99}),
            404,
            "user id 99 not found",
        ),
        (
            format!("/api/v1/node/{}/user", a.0),
            json!({"user": "ghost"}),
            404,
            "user \"ghost\" not found",
        ),
        (
            format!("/api/v1/node/{}/user", a.0),
            json!({}),
            400,
            "give the user",
        ),
        (
            format!("/api/v1/node/{}/user", a.0),
            json!({"user": "-3"}),
            400,
            "invalid user id",
        ),
        (
            "/api/v1/node/99/user".to_string(),
            json!({"user": 1}),
            404,
            "node 99 not found",
        ),
        (
            "/api/v1/node/x/user".to_string(),
            json!({"user": 1}),
            400,
            "invalid node id",
        ),
        (
            format!("/api/v1/node/{}/user", t.0),
            json!({"user": 1}),
            400,
            "is tagged (tag:server)",
        ),
    ];
    for (uri, body, status, want) in cases {
        let (s, v) = e.post(&uri, body.clone()).await;
        assert_eq!(s.as_u16(), status, "{uri} {body}: {v}");
        assert_error_body(&v);
        let msg = v["message"].as_str().unwrap_or_default();
        assert!(msg.contains(want), "{uri} {body}: {msg}");
    }
    let after = e.state.snapshot();
    for (id, n) in before.nodes.iter() {
        assert_eq!(after.nodes.get(id), Some(n), "node {id:?} changed");
    }
}

/// An env on the database of `dir` with these prefixes.
async fn env_in(dir: tempfile::TempDir, v4: Option<&str>, v6: Option<&str>) -> Env {
    let store = ironscale_store::Store::open(&ironscale_store::sqlite_config(
        dir.path().join("db.sqlite"),
    ))
    .await
    .expect("store");
    let settings = ironscale_state::Settings {
        prefix_v4: v4.map(|p| p.parse().expect("prefix")),
        prefix_v6: v6.map(|p| p.parse().expect("prefix")),
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

#[tokio::test]
async fn backfill_node_ips() {
    let e = env().await;
    e.user("alice").await;
    e.node("node-a", Some("alice"), &[]).await;
    // Unconfirmed: refused, nothing changes.
    let before = e.state.snapshot();
    assert_status(
        e.post("/api/v1/node/backfillips", json!({})).await,
        "TestAPIV1NodeBackfillIPs_unconfirmed_parity",
    );
    assert_status(
        e.post("/api/v1/node/backfillips?confirmed=false", json!({}))
            .await,
        "TestAPIV1NodeBackfillIPs_unconfirmed_parity",
    );
    assert!(
        Arc::ptr_eq(&before, &e.state.snapshot()),
        "a refusal committed"
    );
    // Every node has both families: nothing to do.
    assert_golden(
        e.post("/api/v1/node/backfillips?confirmed=true", json!({}))
            .await,
        "TestAPIV1NodeBackfillIPs_confirmed_empty_parity",
        Lenient::none(),
    );

    // Nodes registered with IPv4 only, then prefixes.v6 is added.
    let v4_only = env_in(
        tempfile::tempdir().expect("tempdir"),
        Some("100.64.0.0/10"),
        None,
    )
    .await;
    v4_only.user("alice").await;
    let a = v4_only.node("node-a", Some("alice"), &[]).await;
    let b = v4_only.node("node-b", Some("alice"), &[]).await;
    let Env {
        _dir: dir, state, ..
    } = v4_only;
    assert_eq!(state.get_node(a).expect("node").ipv6, None);
    drop(state);
    let e = env_in(dir, Some("100.64.0.0/10"), Some("fd7a:115c:a1e0::/48")).await;
    let v4_before = e.state.get_node(a).expect("node").ipv4;
    let (s, v) = e
        .post("/api/v1/node/backfillips?confirmed=true", json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let changes: Vec<&str> = v["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(changes.len(), 2, "{v}");
    for (id, host, line) in [(a, "node-a", changes[0]), (b, "node-b", changes[1])] {
        let n = e.state.get_node(id).expect("node");
        let v6 = n.ipv6.expect("an IPv6 address now");
        assert_eq!(
            line,
            format!("assigned IPv6 \"{v6}\" to Node({}) \"{host}\"", id.0)
        );
    }
    assert_eq!(
        e.state.get_node(a).expect("node").ipv4,
        v4_before,
        "IPv4 kept"
    );
    let (s, v) = e.get(&format!("/api/v1/node/{}", a.0)).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["node"]["ipAddresses"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
    // Done: a second run changes nothing.
    let (_, v) = e
        .post("/api/v1/node/backfillips?confirmed=true", json!({}))
        .await;
    assert_eq!(v, json!({"changes": []}));
}

#[tokio::test]
async fn set_tags_without_an_owner_is_refused() {
    let e = env().await;
    e.user("alice").await;
    e.state
        .set_policy_text(
            r#"{"tagOwners": {"tag:server": ["alice@"]}, "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#,
            "policy.json",
        )
        .await
        .expect("policy");
    let a = e.node("node-a", Some("alice"), &[]).await;
    let before = e.state.snapshot();
    let v = assert_status(
        e.post(
            &format!("/api/v1/node/{}/tags", a.0),
            json!({"tags": ["tag:ghost"]}),
        )
        .await,
        "TestAPIV1NodeSetTags_unauthorized_tag_parity",
    );
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("\"tag:ghost\"") && msg.contains("tagOwners"),
        "{msg}"
    );
    assert!(
        Arc::ptr_eq(&before, &e.state.snapshot()),
        "a refusal committed"
    );
}
