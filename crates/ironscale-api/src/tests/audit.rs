//! The audit log: every mutating request, accepted or refused, leaves one
//! entry with its actor, action, target and result; reads leave none; no
//! key text reaches the table or the listing.

use super::*;
use crate::dto;

/// The entries, oldest first (the listing is newest first).
async fn entries(e: &Env) -> Vec<Value> {
    let (s, v) = e.get("/api/v1/audit?limit=1000").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let mut list = v["entries"].as_array().expect("entries").clone();
    list.reverse();
    list
}

/// (actor, action, target, result) of an entry.
fn summary(v: &Value) -> (String, String, String, String) {
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
    (s("actor"), s("action"), s("target"), s("result"))
}

fn row(actor: &str, action: &str, target: &str, result: &str) -> (String, String, String, String) {
    (actor.into(), action.into(), target.into(), result.into())
}

/// Every byte of the SQLite database (its file and its write-ahead log).
fn database_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        if entry.file_name().to_string_lossy().starts_with("db.sqlite") {
            all.extend(std::fs::read(entry.path()).expect("read"));
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn changes_and_refusals_are_recorded_without_secrets() {
    let e = env().await;
    // Requests with a real API key, and over the socket (e.app).
    let (admin, admin_text) = e.state.create_api_key(None).await.expect("key");
    let keyed = router_with_auth(
        e.state.clone(),
        Auth::ApiKey(Arc::new(crate::StateApiKeys::new(e.state.clone()))),
    );
    let bearer = format!("Bearer {admin_text}");
    let as_key = |m: Method, uri: &'static str, b: Value| send_as(&keyed, &bearer, m, uri, b);
    let by_key = format!("api-key:{}", admin.prefix);

    let (s, v) = as_key(Method::POST, "/api/v1/user", json!({"name": "alice"})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let alice = v["user"]["id"].as_str().expect("id").to_string();
    // A refusal: the same name again.
    let (s, dup) = as_key(Method::POST, "/api/v1/user", json!({"name": "alice"})).await;
    assert_eq!(s, StatusCode::CONFLICT, "{dup}");
    let (s, v) = as_key(
        Method::POST,
        "/api/v1/preauthkey",
        json!({"user": alice, "reusable": true, "aclTags": []}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let pak = v["preAuthKey"]["key"].as_str().expect("key").to_string();
    let pak_prefix = &pak[11..23];

    let id = e.node("node-a", Some("alice"), &[]).await.0;
    let (s, v) = e
        .post(&format!("/api/v1/node/{id}/rename/web-1"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = e.post("/api/v1/apikey", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let new_key = v["apiKey"].as_str().expect("key").to_string();
    let new_prefix = &new_key[10..22];

    // Refusals: an unknown node, a malformed id, a key named by its whole
    // text that does not exist, a whole API key given as the prefix.
    assert_eq!(
        e.post("/api/v1/node/999/rename/x", json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        e.post("/api/v1/node/zz/approve", json!({})).await.0,
        StatusCode::BAD_REQUEST
    );
    let missing = format!("hskey-auth-AAAAAAAAAAAA-{}", "Q".repeat(64));
    assert_eq!(
        e.post("/api/v1/preauthkey/expire", json!({"key": missing}))
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    // Accepted: expiring a pre-auth key by its text, deleting an API key
    // named by its whole text.
    let (s, v) = e
        .post("/api/v1/preauthkey/expire", json!({"key": pak}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = e.delete(&format!("/api/v1/apikey/{new_key}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Not changes: reads, a policy check, a request refused for its key.
    let before = entries(&e).await.len();
    assert_eq!(e.get("/api/v1/user").await.0, StatusCode::OK);
    assert_eq!(e.get("/api/v1/node").await.0, StatusCode::OK);
    let _ = e
        .post("/api/v1/policy/check", json!({"policy": "{}"}))
        .await;
    let (s, _) = send_as(
        &keyed,
        "Bearer hskey-api-abcdefghijkl-wrong",
        Method::POST,
        "/api/v1/user",
        json!({"name": "mallory"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let all = entries(&e).await;
    assert_eq!(
        all.len(),
        before,
        "reads and unauthenticated requests are not recorded"
    );

    let got: Vec<_> = all.iter().map(summary).collect();
    let sock = "local-socket";
    assert_eq!(
        got,
        vec![
            row(&by_key, "user.create", "user:alice", "ok"),
            row(
                &by_key,
                "user.create",
                "user:alice",
                dup["message"].as_str().expect("message")
            ),
            row(
                &by_key,
                "preauthkey.create",
                &format!("preauthkey:{pak_prefix}"),
                "ok"
            ),
            row(sock, "node.rename", &format!("node:{id}"), "ok"),
            row(sock, "apikey.create", &format!("apikey:{new_prefix}"), "ok"),
            row(sock, "node.rename", "node:999", "node 999 not found"),
            row(
                sock,
                "node.approve",
                "node:zz",
                "invalid node id \"zz\": expected a positive integer"
            ),
            row(
                sock,
                "preauthkey.expire",
                "preauthkey:hskey-auth-AAAAAAAAAAAA-***",
                "pre-auth key \"hskey-auth-AAAAAAAAAAAA-***\" not found",
            ),
            row(
                sock,
                "preauthkey.expire",
                &format!("preauthkey:{pak_prefix}"),
                "ok"
            ),
            row(sock, "apikey.delete", &format!("apikey:{new_prefix}"), "ok"),
        ],
        "{all:#?}"
    );
    assert!(got[1].3.contains("already exists"), "{:?}", got[1]);
    // Details: what changed, by id and name.
    assert_eq!(all[0]["detail"]["id"], json!(alice));
    assert_eq!(all[2]["detail"]["reusable"], json!(true));
    assert_eq!(all[2]["detail"]["user"], json!(alice));
    assert_eq!(all[3]["detail"]["newName"], json!("web-1"));
    // Ids are strings, times RFC 3339, ids increase.
    assert!(all.iter().all(|v| v["id"].is_string()), "{all:?}");
    assert!(all
        .iter()
        .all(|v| dto::parse_ts(v["at"].as_str().unwrap_or_default()).is_ok()));
    let ids: Vec<u64> = all
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().parse().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    // No key's text, in the listing or anywhere in the database file.
    let listing = e.get("/api/v1/audit?limit=1000").await.1.to_string();
    let db = database_bytes(e._dir.path());
    for secret in [
        &pak[24..],
        &new_key[23..],
        &admin_text[23..],
        &"Q".repeat(64),
    ] {
        assert!(secret.len() >= 32, "{secret}");
        assert!(
            !listing.contains(secret),
            "a key's secret is listed: {listing}"
        );
    }
    for text in [&pak, &new_key, &admin_text] {
        assert!(!contains(&db, text), "a key's text is in the database");
        assert!(
            !contains(&db, &text[text.len() - 40..]),
            "a key's secret is in the database"
        );
    }
    assert!(
        contains(&db, "preauthkey.create"),
        "the scan sees the audit table"
    );
}

#[tokio::test]
async fn listing_takes_since_and_limit() {
    let e = env().await;
    for name in ["a", "b", "c"] {
        assert_eq!(
            e.post("/api/v1/user", json!({"name": name})).await.0,
            StatusCode::OK
        );
    }
    let (s, v) = e.get("/api/v1/audit").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let targets = |v: &Value| -> Vec<String> {
        v["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["target"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert_eq!(targets(&v), ["user:c", "user:b", "user:a"], "newest first");
    let (_, two) = e.get("/api/v1/audit?limit=2").await;
    assert_eq!(targets(&two), ["user:c", "user:b"]);
    let last_at = v["entries"][0]["at"].as_str().expect("at").to_string();
    let (_, since) = e
        .get(&format!(
            "/api/v1/audit?since={}",
            last_at.replace('+', "%2B")
        ))
        .await;
    assert!(targets(&since).contains(&"user:c".to_string()), "{since}");
    let (_, none) = e.get("/api/v1/audit?since=2999-01-01T00:00:00Z").await;
    assert_eq!(targets(&none), Vec::<String>::new());
    for bad in ["since=yesterday", "limit=-1", "limit=many", "limit=10001"] {
        let (s, b) = e.get(&format!("/api/v1/audit?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {b}");
        assert_error_body(&b);
    }
    // Listing is not a change.
    let (_, again) = e.get("/api/v1/audit").await;
    assert_eq!(targets(&again).len(), 3);
}

/// On the network listener's router, too, an entry names the key's prefix.
#[tokio::test]
async fn the_network_router_records_its_callers() {
    let e = env().await;
    let (k, text) = e.state.create_api_key(None).await.expect("key");
    let net = crate::network_router(e.state.clone());
    let (s, v) = send_as(
        &net,
        &format!("Bearer {text}"),
        Method::POST,
        "/api/v1/user",
        json!({"name": "dave"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<_> = entries(&e).await.iter().map(summary).collect();
    assert_eq!(
        got,
        vec![row(
            &format!("api-key:{}", k.prefix),
            "user.create",
            "user:dave",
            "ok"
        )]
    );
}
