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
