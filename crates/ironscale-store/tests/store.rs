//! The same suite against SQLite and PostgreSQL.

use std::net::Ipv4Addr;

use chrono::{Duration, TimeZone, Utc};
use ironscale_store::testpg::TestPg;
use ironscale_store::{sqlite_config, Backend, NewUser, Store, StoreError};
use ironscale_types::{
    AuditEntry, DiscoPublic, MachinePublic, Node, NodeId, NodePublic, RegisterMethod, Timestamp,
    UserId,
};

fn t0() -> Timestamp {
    Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .expect("ts")
        + Duration::microseconds(123_456)
}

fn node(n: u8, user: Option<UserId>) -> Node {
    Node {
        id: NodeId(0),
        machine_key: MachinePublic([n; 32]),
        node_key: NodePublic([n.wrapping_add(100); 32]),
        disco_key: DiscoPublic([n.wrapping_add(200); 32]),
        ipv4: Some(Ipv4Addr::new(100, 64, 0, n)),
        ipv6: Some(format!("fd7a:115c:a1e0::{n:x}").parse().expect("ip")),
        hostname: format!("host-{n}"),
        given_name: format!("host-{n}"),
        user_id: user,
        tags: if user.is_none() {
            vec!["tag:server".into()]
        } else {
            vec![]
        },
        hostinfo_json: Some(format!(r#"{{"Hostname":"host-{n}","OS":"linux"}}"#)),
        home_derp: 999,
        announced_routes: vec![
            "10.0.0.0/24".parse().expect("net"),
            "0.0.0.0/0".parse().expect("net"),
        ],
        approved_routes: vec!["10.0.0.0/24".parse().expect("net")],
        endpoints: vec!["192.0.2.1:41641".into(), "[2001:db8::1]:41641".into()],
        expiry: Some(t0() + Duration::days(180)),
        created_at: t0(),
        last_seen: None,
        register_method: RegisterMethod::AuthKey,
        auth_key_id: None,
        ephemeral: false,
        capver: 130,
        approved: true,
    }
}

async fn users(s: &Store) {
    let alice = s
        .create_user(&NewUser::named("alice"), t0())
        .await
        .expect("create");
    assert!(alice.id.0 > 0);
    assert_eq!(alice.created_at, t0());
    let bob = s
        .create_user(
            &NewUser {
                name: "bob".into(),
                display_name: "Bob B".into(),
                email: "bob@example.com".into(),
                provider: "oidc".into(),
                provider_id: "https://sso/sub-1".into(),
                profile_pic_url: "https://pic".into(),
                idp_groups: vec!["eng".into()],
            },
            t0(),
        )
        .await
        .expect("create");
    assert_eq!(bob.idp_groups, vec!["eng".to_string()]);
    let mut bob_moved = bob.clone();
    bob_moved.idp_groups = vec!["ops".into(), "eng".into()];
    let bob = s
        .update_user(&bob_moved, t0())
        .await
        .expect("update groups");
    assert_eq!(bob.idp_groups, vec!["ops".to_string(), "eng".to_string()]);
    assert!(matches!(
        s.create_user(&NewUser::named("alice"), t0()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let dup_identity = NewUser {
        name: "bob2".into(),
        provider: "oidc".into(),
        provider_id: "https://sso/sub-1".into(),
        ..Default::default()
    };
    let e = s
        .create_user(&dup_identity, t0())
        .await
        .expect_err("dup identity");
    assert!(matches!(e, StoreError::AlreadyExists { .. }), "{e}");
    assert!(matches!(
        s.create_user(&NewUser::named(""), t0()).await,
        Err(StoreError::Invalid(_))
    ));

    assert_eq!(
        s.list_users().await.expect("list"),
        vec![alice.clone(), bob.clone()]
    );
    assert_eq!(s.get_user(bob.id).await.expect("get"), Some(bob.clone()));
    assert_eq!(
        s.get_user_by_name("alice").await.expect("get"),
        Some(alice.clone())
    );
    assert_eq!(s.get_user_by_name("nobody").await.expect("get"), None);
    assert_eq!(
        s.get_user_by_provider_id("oidc", "https://sso/sub-1")
            .await
            .expect("get"),
        Some(bob.clone())
    );
    assert_eq!(s.get_user(UserId(999_999)).await.expect("get"), None);

    let renamed = s
        .rename_user(alice.id, "alicia", t0())
        .await
        .expect("rename");
    assert_eq!(renamed.name, "alicia");
    assert!(matches!(
        s.rename_user(alice.id, "bob", t0()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        s.rename_user(UserId(999_999), "x", t0()).await,
        Err(StoreError::NotFound { .. })
    ));

    let mut b2 = bob.clone();
    b2.email = "bob@new.example.com".into();
    assert_eq!(s.update_user(&b2, t0()).await.expect("update"), b2);

    s.delete_user(bob.id).await.expect("delete");
    assert_eq!(s.get_user(bob.id).await.expect("get"), None);
    assert!(matches!(
        s.delete_user(bob.id).await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_user(alice.id).await.expect("delete");
}

async fn nodes(s: &Store) {
    let u = s
        .create_user(&NewUser::named("carol"), t0())
        .await
        .expect("user");
    let a = s.insert_node(&node(1, Some(u.id))).await.expect("insert");
    let b = s.insert_node(&node(2, None)).await.expect("insert tagged");
    assert!(a.id.0 > 0 && b.id.0 > a.id.0);
    let mut want_a = node(1, Some(u.id));
    want_a.id = a.id;
    assert_eq!(a, want_a);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(a.clone()));
    assert_eq!(
        s.get_node_by_node_key(&b.node_key).await.expect("get"),
        Some(b.clone())
    );
    assert_eq!(
        s.list_nodes().await.expect("list"),
        vec![a.clone(), b.clone()]
    );

    // Unique node key / given name / address.
    let mut dup = node(3, Some(u.id));
    dup.node_key = a.node_key;
    match s.insert_node(&dup).await {
        Err(StoreError::AlreadyExists { what }) => assert!(what.contains("node key"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let mut dup = node(3, Some(u.id));
    dup.given_name = "host-1".into();
    match s.insert_node(&dup).await {
        Err(StoreError::AlreadyExists { what }) => {
            assert!(what.contains("named \"host-1\""), "{what}")
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let mut dup = node(3, Some(u.id));
    dup.ipv4 = a.ipv4;
    assert!(matches!(
        s.insert_node(&dup).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    // Unknown owner.
    assert!(matches!(
        s.insert_node(&node(4, Some(UserId(999_999)))).await,
        Err(StoreError::MissingReference { .. })
    ));

    // Whole-row update.
    let mut a2 = a.clone();
    a2.endpoints = vec!["198.51.100.9:1234".into()];
    a2.last_seen = Some(t0() + Duration::seconds(5));
    a2.disco_key = DiscoPublic::ZERO;
    a2.hostinfo_json = None;
    a2.expiry = None;
    a2.ipv6 = None;
    a2.tags = vec!["tag:a".into(), "tag:b".into()];
    a2.user_id = None;
    a2.ephemeral = true;
    a2.register_method = RegisterMethod::Oidc;
    s.update_node(&a2).await.expect("update");
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(a2.clone()));
    let mut ghost = a2.clone();
    ghost.id = NodeId(999_999);
    assert!(matches!(
        s.update_node(&ghost).await,
        Err(StoreError::NotFound { .. })
    ));
    let mut clash = a2.clone();
    clash.given_name = b.given_name.clone();
    assert!(matches!(
        s.update_node(&clash).await,
        Err(StoreError::AlreadyExists { .. })
    ));

    // A user with nodes cannot be deleted.
    let mut owned = node(5, Some(u.id));
    owned = s.insert_node(&owned).await.expect("insert");
    match s.delete_user(u.id).await {
        Err(StoreError::UserHasNodes { nodes, name, .. }) => {
            assert_eq!((nodes, name.as_str()), (1, "carol"))
        }
        other => panic!("expected UserHasNodes, got {other:?}"),
    }
    s.delete_node(owned.id).await.expect("delete");
    assert!(matches!(
        s.delete_node(owned.id).await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_node(a.id).await.expect("delete");
    s.delete_node(b.id).await.expect("delete");
    assert!(s.list_nodes().await.expect("list").is_empty());
    // Ids are never reused.
    let c = s.insert_node(&node(6, Some(u.id))).await.expect("insert");
    assert!(c.id.0 > owned.id.0);
    s.delete_node(c.id).await.expect("delete");
    s.delete_user(u.id).await.expect("delete user");
}

async fn preauth_keys(s: &Store) {
    let u = s
        .create_user(&NewUser::named("dave"), t0())
        .await
        .expect("user");
    let other = s
        .create_user(&NewUser::named("erin"), t0())
        .await
        .expect("user");
    let exp = t0() + Duration::hours(1);
    let (k, text) = s
        .create_preauth_key(
            Some(u.id),
            false,
            true,
            Some(exp),
            &["tag:ci".to_string()],
            t0(),
        )
        .await
        .expect("create");
    assert!(
        text.starts_with(&format!("hskey-auth-{}-", k.prefix)),
        "{text}"
    );
    assert!(!text.contains("--TL") && !text.starts_with("tskey-client-"));
    assert_eq!(k.prefix.len(), 12);
    assert_eq!(
        (k.user_id, k.reusable, k.ephemeral, k.used),
        (Some(u.id), false, true, false)
    );
    assert_eq!((k.expiration, k.created_at), (Some(exp), t0()));
    assert_eq!(k.tags, vec!["tag:ci".to_string()]);
    // Only the hash is stored.
    assert_eq!(k.hash.len(), 64);
    assert!(!k.hash.contains(&text[23..]));

    assert_eq!(
        s.find_preauth_key(&text).await.expect("find"),
        Some(k.clone())
    );
    // Right prefix, wrong secret; garbage; unknown prefix.
    let mut wrong = text.clone();
    wrong.pop();
    wrong.push(if text.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(s.find_preauth_key(&wrong).await.expect("find"), None);
    assert_eq!(
        s.find_preauth_key("hskey-auth-nope").await.expect("find"),
        None
    );
    assert_eq!(
        s.find_preauth_key(&format!("hskey-auth-{}-{}", "Z".repeat(12), "Z".repeat(64)))
            .await
            .expect("find"),
        None
    );

    // Single-use claim: only once.
    assert!(s.claim_preauth_key(k.id).await.expect("claim"));
    assert!(!s.claim_preauth_key(k.id).await.expect("claim again"));
    assert!(
        s.get_preauth_key(k.id)
            .await
            .expect("get")
            .expect("exists")
            .used
    );

    let (r, _) = s
        .create_preauth_key(Some(u.id), true, false, None, &[], t0())
        .await
        .expect("create reusable");
    assert!(s.claim_preauth_key(r.id).await.expect("claim"));
    assert!(s
        .claim_preauth_key(r.id)
        .await
        .expect("claim reusable again"));
    let (tagged, _) = s
        .create_preauth_key(None, false, false, None, &["tag:x".into()], t0())
        .await
        .expect("tagged key");
    let (o, _) = s
        .create_preauth_key(Some(other.id), false, false, None, &[], t0())
        .await
        .expect("other");

    s.mark_preauth_key_used(o.id).await.expect("mark");
    assert!(
        s.get_preauth_key(o.id)
            .await
            .expect("get")
            .expect("exists")
            .used
    );
    s.expire_preauth_key(r.id, t0()).await.expect("expire");
    let r2 = s.get_preauth_key(r.id).await.expect("get").expect("exists");
    assert_eq!(r2.expiration, Some(t0()));
    assert!(r2.is_expired(t0()));

    let ids = |v: Vec<ironscale_types::PreAuthKey>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(s.list_preauth_keys(Some(u.id)).await.expect("list")),
        vec![k.id, r.id]
    );
    assert_eq!(
        ids(s.list_preauth_keys(None).await.expect("list")),
        vec![k.id, r.id, tagged.id, o.id]
    );

    // A node registered with a key survives the key's deletion.
    let mut n = node(9, Some(u.id));
    n.auth_key_id = Some(k.id);
    let n = s.insert_node(&n).await.expect("insert");
    s.delete_preauth_key(k.id).await.expect("delete");
    assert!(matches!(
        s.delete_preauth_key(k.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(
        s.get_node(n.id)
            .await
            .expect("get")
            .expect("exists")
            .auth_key_id,
        None
    );
    s.delete_node(n.id).await.expect("delete node");

    // Deleting a user deletes their keys.
    s.delete_user(other.id).await.expect("delete");
    assert_eq!(s.get_preauth_key(o.id).await.expect("get"), None);
    assert!(matches!(
        s.mark_preauth_key_used(o.id).await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        s.expire_preauth_key(o.id, t0()).await,
        Err(StoreError::NotFound { .. })
    ));
    s.delete_preauth_key(r.id).await.expect("delete");
    s.delete_preauth_key(tagged.id).await.expect("delete");
    s.delete_user(u.id).await.expect("delete");
}

async fn kv(s: &Store) {
    assert_eq!(s.kv_get("policy").await.expect("get"), None);
    s.kv_set("policy", "{}").await.expect("set");
    s.kv_set("policy", r#"{"acls": []}"#)
        .await
        .expect("overwrite");
    assert_eq!(
        s.kv_get("policy").await.expect("get").as_deref(),
        Some(r#"{"acls": []}"#)
    );
    assert!(s.kv_delete("policy").await.expect("delete"));
    assert!(!s.kv_delete("policy").await.expect("delete"));
}

/// Many tasks writing at once through one cloned handle.
async fn concurrency(s: &Store) {
    let owner = s
        .create_user(&NewUser::named("many"), t0())
        .await
        .expect("user");
    let mut tasks = Vec::new();
    for i in 0..40u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let u = s
                .create_user(&NewUser::named(format!("user-{i}")), t0())
                .await?;
            let n = s.insert_node(&node(i + 20, Some(owner.id))).await?;
            let (k, text) = s
                .create_preauth_key(Some(u.id), false, false, None, &[], t0())
                .await?;
            let mut n2 = n.clone();
            n2.last_seen = Some(t0());
            s.update_node(&n2).await?;
            let found = s.find_preauth_key(&text).await?;
            assert_eq!(found.map(|f| f.id), Some(k.id));
            Ok::<_, StoreError>(())
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("task");
    }
    assert_eq!(s.list_nodes().await.expect("list").len(), 40);
    assert_eq!(s.list_users().await.expect("list").len(), 41);
    // Racing claims on one single-use key: exactly one wins.
    let (k, _) = s
        .create_preauth_key(Some(owner.id), false, false, None, &[], t0())
        .await
        .expect("key");
    let mut claims = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        claims.push(tokio::spawn(async move { s.claim_preauth_key(k.id).await }));
    }
    let mut wins = 0;
    for c in claims {
        wins += usize::from(c.await.expect("join").expect("claim"));
    }
    assert_eq!(wins, 1);
}

/// The audit log: appended entries come back newest first, filtered by
/// time and limited; the store keeps every field as given.
async fn audit_log(s: &Store) {
    assert_eq!(s.list_audit(None, 100).await.expect("list"), vec![]);
    let entry = |i: i64, action: &str| AuditEntry {
        id: 0,
        at: t0() + Duration::minutes(i),
        actor: if i % 2 == 0 {
            "local-socket".into()
        } else {
            "api-key:abcdefghijkl".into()
        },
        action: action.into(),
        target: format!("user:{i}"),
        result: if i == 2 {
            "user \"alice\" already exists".into()
        } else {
            "ok".into()
        },
        detail: format!(r#"{{"n":{i},"name":"ünï"}}"#),
    };
    let mut stored = Vec::new();
    for (i, action) in [
        (0, "user.create"),
        (1, "node.rename"),
        (2, "user.create"),
        (3, "policy.set"),
    ] {
        let e = s.append_audit(&entry(i, action)).await.expect("append");
        assert_eq!(
            AuditEntry { id: 0, ..e.clone() },
            entry(i, action),
            "stored as given"
        );
        stored.push(e);
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    // An entry stamped earlier than the last still lists by write order.
    let late = s
        .append_audit(&entry(-10, "apikey.create"))
        .await
        .expect("append");
    stored.push(late.clone());

    let newest_first: Vec<AuditEntry> = stored.iter().rev().cloned().collect();
    assert_eq!(s.list_audit(None, 100).await.expect("list"), newest_first);
    assert_eq!(
        s.list_audit(None, 2).await.expect("list"),
        newest_first[..2].to_vec()
    );
    assert_eq!(s.list_audit(None, 0).await.expect("list"), vec![]);
    // since: at or after, inclusive.
    let since = s
        .list_audit(Some(t0() + Duration::minutes(2)), 100)
        .await
        .expect("list");
    assert_eq!(since, vec![stored[3].clone(), stored[2].clone()]);
    assert_eq!(
        s.list_audit(Some(t0() + Duration::days(1)), 100)
            .await
            .expect("list"),
        vec![]
    );
    // Inside a transaction too (the same operation).
    let mut tx = s.begin().await.expect("begin");
    let in_tx = tx
        .append_audit(&entry(9, "node.delete"))
        .await
        .expect("append");
    tx.rollback().await.expect("rollback");
    assert!(!s
        .list_audit(None, 100)
        .await
        .expect("list")
        .iter()
        .any(|e| e.id == in_tx.id && e.action == "node.delete"));
}

async fn whole_suite(s: &Store) {
    assert_eq!(
        s.schema_version().await.expect("version"),
        ironscale_store::LATEST_VERSION
    );
    users(s).await;
    nodes(s).await;
    preauth_keys(s).await;
    kv(s).await;
    concurrency(s).await;
    audit_log(s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_suite() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Parent directories are created.
    let path = dir.path().join("nested/dir/db.sqlite");
    let s = Store::open(&sqlite_config(&path)).await.expect("open");
    assert_eq!(s.backend(), Backend::Sqlite);
    assert!(path.exists());
    whole_suite(&s).await;
    s.close().await;

    // Reopening keeps the data and does not re-run migrations.
    let s = Store::open(&sqlite_config(&path)).await.expect("reopen");
    assert_eq!(s.list_users().await.expect("list").len(), 41);
    assert_eq!(
        s.schema_version().await.expect("version"),
        ironscale_store::LATEST_VERSION
    );
}

#[tokio::test]
async fn sqlite_open_from_config_and_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let cfg = ironscale_config::DatabaseConfig::Sqlite(ironscale_config::SqliteConfig {
        path: path.clone(),
        write_ahead_log: true,
    });
    let s = Store::open(&cfg).await.expect("open");
    s.kv_set("k", "v").await.expect("set");
    assert!(
        dir.path().join("db.sqlite-wal").exists(),
        "WAL file expected"
    );
}

#[tokio::test]
async fn sqlite_without_write_ahead_log_uses_the_rollback_journal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    // A database that was in WAL mode is switched back.
    let s = Store::open(&sqlite_config(&path)).await.expect("open");
    s.kv_set("k", "v").await.expect("set");
    s.close().await;
    let cfg = ironscale_config::DatabaseConfig::Sqlite(ironscale_config::SqliteConfig {
        path: path.clone(),
        write_ahead_log: false,
    });
    let s = Store::open(&cfg).await.expect("open");
    s.kv_set("k", "w").await.expect("set");
    assert!(
        !dir.path().join("db.sqlite-wal").exists(),
        "no WAL file expected"
    );
    s.close().await;
    // File format versions (header bytes 18, 19): 1 = rollback journal, 2 = WAL.
    let header = std::fs::read(&path).expect("read");
    assert_eq!((header[18], header[19]), (1, 1));
}

#[tokio::test]
async fn nodes_registered_before_device_approval_stay_approved() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    // A database at schema 1 (before the `approved` column), with one node.
    sqlx::any::install_default_drivers();
    {
        use sqlx::Connection;
        let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
            .await
            .expect("connect");
        sqlx::raw_sql(include_str!("../migrations/sqlite/0001_init.sql"))
            .execute(&mut c)
            .await
            .expect("schema 1");
        sqlx::raw_sql(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL); \
             INSERT INTO schema_migrations (version, name, applied_at) VALUES (1, 'init', 0); \
             INSERT INTO nodes (machine_key, node_key, given_name, created_at) VALUES \
             ('mkey:0101010101010101010101010101010101010101010101010101010101010101', \
              'nodekey:0202020202020202020202020202020202020202020202020202020202020202', 'old', 0)",
        )
        .execute(&mut c)
        .await
        .expect("old node");
    }
    let s = Store::open(&sqlite_config(&path)).await.expect("open");
    assert_eq!(
        s.schema_version().await.expect("version"),
        ironscale_store::LATEST_VERSION
    );
    let nodes = s.list_nodes().await.expect("list");
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].approved, "an existing node must stay authorized");
    // New rows store what they are given.
    let mut n = node(9, None);
    n.approved = false;
    let id = s.insert_node(&n).await.expect("insert").id;
    assert!(!s.get_node(id).await.expect("get").expect("node").approved);
}

#[tokio::test]
async fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.sqlite");
    let s = Store::open(&sqlite_config(&path)).await.expect("open");
    s.close().await;
    drop(s);
    // Pretend a newer ironscale migrated this database.
    sqlx::any::install_default_drivers();
    {
        use sqlx::Connection;
        let mut c = sqlx::AnyConnection::connect(&format!("sqlite://{}", path.display()))
            .await
            .expect("connect");
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 0)",
        )
        .execute(&mut c)
        .await
        .expect("insert");
    }
    match Store::open(&sqlite_config(&path)).await {
        Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_suite() {
    // Fails (never skips) when no PostgreSQL can be found or started.
    let pg =
        TestPg::start().unwrap_or_else(|e| panic!("cannot provide PostgreSQL for the test: {e}"));
    let url = pg.fresh_database().await.expect("database");
    // The throwaway cluster trusts local connections, so a password in the URL is
    // accepted and ignored: use one to check that Debug output never shows it.
    // (Only for our own cluster: a server from IRONSCALE_TEST_PG_URL may check passwords.)
    let own_cluster = std::env::var("IRONSCALE_TEST_PG_URL").map_or(true, |v| v.is_empty());
    let open_url = if own_cluster {
        url.replacen("://postgres@", "://postgres:sekrit-pw@", 1)
    } else {
        url.clone()
    };
    let pg_config = |url: &str| {
        ironscale_config::DatabaseConfig::Postgres(
            ironscale_store::testpg::config_for_url(url).expect("config"),
        )
    };
    let s = Store::open(&pg_config(&open_url)).await.expect("open");
    assert!(!own_cluster || open_url.contains("sekrit-pw"));
    assert!(!format!("{s:?}").contains("sekrit-pw"));
    assert_eq!(s.backend(), Backend::Postgres);
    whole_suite(&s).await;
    s.close().await;
    // Reopen: migrations are not re-applied, data is there.
    let s = Store::open(&pg_config(&url)).await.expect("reopen");
    assert_eq!(s.list_users().await.expect("list").len(), 41);
    s.close().await;
}

// ---- transactions --------------------------------------------------------------

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open(&sqlite_config(dir.path().join("db.sqlite")))
        .await
        .expect("open")
}

/// A store on a fresh PostgreSQL database; keep the `TestPg` alive with it.
async fn pg_store() -> (TestPg, Store) {
    let pg =
        TestPg::start().unwrap_or_else(|e| panic!("cannot provide PostgreSQL for the test: {e}"));
    let cfg = pg.fresh_config().await.expect("database");
    let s = Store::open(&ironscale_config::DatabaseConfig::Postgres(cfg))
        .await
        .expect("open");
    (pg, s)
}

/// Writes of every kind inside one transaction.
async fn write_everything(tx: &mut ironscale_store::Tx, name: &str, n: u8) -> (UserId, String) {
    let u = tx
        .create_user(&NewUser::named(name), t0())
        .await
        .expect("user");
    let node = tx.insert_node(&node(n, Some(u.id))).await.expect("node");
    let (k, text) = tx
        .create_preauth_key(Some(u.id), false, false, None, &[], t0())
        .await
        .expect("key");
    assert!(tx.claim_preauth_key(k.id).await.expect("claim"));
    let mut moved = node.clone();
    moved.hostname = format!("{name}-renamed");
    tx.update_node(&moved).await.expect("update");
    tx.kv_set(name, "v").await.expect("kv");
    // The transaction sees its own writes.
    assert_eq!(tx.get_node(node.id).await.expect("get"), Some(moved));
    assert_eq!(
        tx.find_preauth_key(&text)
            .await
            .expect("find")
            .map(|f| f.used),
        Some(true)
    );
    assert_eq!(tx.kv_get(name).await.expect("kv").as_deref(), Some("v"));
    (u.id, text)
}

async fn nothing_of(s: &Store, name: &str, text: &str) {
    assert_eq!(s.get_user_by_name(name).await.expect("get"), None);
    assert!(s.list_nodes().await.expect("list").is_empty());
    assert_eq!(s.find_preauth_key(text).await.expect("find"), None);
    assert_eq!(s.kv_get(name).await.expect("kv"), None);
}

async fn transactions(s: &Store) {
    // Dropped: rolled back.
    let mut tx = s.begin().await.expect("begin");
    assert_eq!(tx.backend(), s.backend());
    let (_, text) = write_everything(&mut tx, "dropped", 1).await;
    drop(tx);
    nothing_of(s, "dropped", &text).await;

    // Rolled back explicitly.
    let mut tx = s.begin().await.expect("begin");
    let (_, text) = write_everything(&mut tx, "undone", 2).await;
    tx.rollback().await.expect("rollback");
    nothing_of(s, "undone", &text).await;

    // Committed: all of it, and none of it visible to others before the commit.
    let mut tx = s.begin().await.expect("begin");
    let (user, text) = write_everything(&mut tx, "kept", 3).await;
    assert_eq!(s.get_user_by_name("kept").await.expect("get"), None);
    assert_eq!(s.find_preauth_key(&text).await.expect("find"), None);
    tx.commit().await.expect("commit");
    assert_eq!(
        s.get_user_by_name("kept").await.expect("get").map(|u| u.id),
        Some(user)
    );
    let nodes = s.list_nodes().await.expect("list");
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].user_id, nodes[0].hostname.as_str()),
        (Some(user), "kept-renamed")
    );
    assert!(
        s.find_preauth_key(&text)
            .await
            .expect("find")
            .expect("key")
            .used
    );
    assert_eq!(s.kv_get("kept").await.expect("kv").as_deref(), Some("v"));

    // Deletes roll back too.
    let mut tx = s.begin().await.expect("begin");
    tx.delete_node(nodes[0].id).await.expect("delete node");
    assert!(tx.kv_delete("kept").await.expect("kv"));
    drop(tx);
    assert_eq!(s.list_nodes().await.expect("list").len(), 1);
    assert_eq!(s.kv_get("kept").await.expect("kv").as_deref(), Some("v"));
}

/// Two transactions claiming one single-use key: exactly one wins, and the
/// second waits for the first to end instead of reading a stale "unused".
async fn claims_in_transactions(s: &Store) {
    let u = s
        .create_user(&NewUser::named("claimer"), t0())
        .await
        .expect("user");
    let key = |s: Store| async move {
        s.create_preauth_key(Some(u.id), false, false, None, &[], t0())
            .await
            .expect("key")
            .0
            .id
    };
    let second_claim = |s: Store, id: u64| {
        tokio::spawn(async move {
            let mut tx = s.begin().await?;
            let won = tx.claim_preauth_key(id).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(won)
        })
    };

    // The first commits: the second finds the key used.
    let k = key(s.clone()).await;
    let mut first = s.begin().await.expect("begin");
    assert!(first.claim_preauth_key(k).await.expect("claim"));
    let second = second_claim(s.clone(), k);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second claim did not wait for the first transaction"
    );
    first.commit().await.expect("commit");
    assert!(!second.await.expect("join").expect("second claim"));

    // The first is dropped (rolled back): the waiting second one wins.
    let k = key(s.clone()).await;
    let mut first = s.begin().await.expect("begin");
    assert!(first.claim_preauth_key(k).await.expect("claim"));
    let second = second_claim(s.clone(), k);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!second.is_finished());
    drop(first);
    assert!(second.await.expect("join").expect("second claim"));

    // Registrations racing on one key: read the key, claim it, insert the node
    // and commit, or roll back. Exactly one node per key.
    for round in 0..8u8 {
        let k = key(s.clone()).await;
        let racers: Vec<_> = (0..2u8)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    let mut tx = s.begin().await?;
                    // Read, then write, as a registration does (on SQLite this
                    // needs the write lock from the start, or the second writer
                    // fails on its stale snapshot instead of waiting).
                    let found = tx.get_preauth_key(k).await?.expect("key exists");
                    tokio::task::yield_now().await;
                    if found.used || !tx.claim_preauth_key(k).await? {
                        tx.rollback().await?;
                        return Ok::<_, StoreError>(false);
                    }
                    let mut n = node(100 + round * 2 + i, Some(u.id));
                    n.auth_key_id = Some(k);
                    tx.insert_node(&n).await?;
                    tx.commit().await?;
                    Ok(true)
                })
            })
            .collect();
        let mut wins = 0;
        for r in racers {
            wins += usize::from(r.await.expect("join").expect("racer"));
        }
        assert_eq!(wins, 1, "round {round}");
        let registered = s
            .list_nodes()
            .await
            .expect("list")
            .into_iter()
            .filter(|n| n.auth_key_id == Some(k))
            .count();
        assert_eq!(registered, 1, "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_transactions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sqlite_store(&dir).await;
    transactions(&s).await;
    claims_in_transactions(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_transactions_without_wal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = ironscale_config::DatabaseConfig::Sqlite(ironscale_config::SqliteConfig {
        path: dir.path().join("db.sqlite"),
        write_ahead_log: false,
    });
    let s = Store::open(&cfg).await.expect("open");
    transactions(&s).await;
    claims_in_transactions(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_transactions() {
    let (_pg, s) = pg_store().await;
    assert_eq!(s.backend(), Backend::Postgres);
    transactions(&s).await;
    claims_in_transactions(&s).await;
    s.close().await;
}

// ---- field-level updates and presence ------------------------------------------

async fn field_updates(s: &Store) {
    use ironscale_store::{NodeOwner, NodeUpdate};
    use ironscale_types::NodePresence;
    let u = s
        .create_user(&NewUser::named("fields"), t0())
        .await
        .expect("user");
    let other = s
        .create_user(&NewUser::named("fields-2"), t0())
        .await
        .expect("user");
    let a = s.insert_node(&node(1, Some(u.id))).await.expect("insert");
    let b = s.insert_node(&node(2, Some(u.id))).await.expect("insert");

    // One field: only that column changes.
    let up = NodeUpdate {
        expiry: Some(None),
        ..Default::default()
    };
    let got = s.update_node_fields(a.id, &up).await.expect("update");
    let mut want = a.clone();
    want.expiry = None;
    assert_eq!(got, want);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));

    // Every field at once.
    let up = NodeUpdate {
        node_key: Some(NodePublic([77; 32])),
        hostname: Some("new-host".into()),
        given_name: Some("new-name".into()),
        owner: Some(NodeOwner {
            user_id: None,
            tags: vec!["tag:x".into(), "tag:y".into()],
        }),
        hostinfo_json: Some(None),
        announced_routes: Some(vec!["192.168.0.0/16".parse().expect("net")]),
        approved_routes: Some(vec![]),
        expiry: Some(Some(t0() + Duration::days(1))),
        register_method: Some(RegisterMethod::Cli),
        auth_key_id: Some(None),
        ephemeral: Some(true),
        capver: Some(131),
        approved: Some(false),
        ipv4: Some(Some(Ipv4Addr::new(100, 64, 9, 1))),
        ipv6: Some(None),
    };
    assert!(!up.is_empty() && NodeUpdate::default().is_empty());
    up.apply_to(&mut want);
    assert_eq!(want.hostname, "new-host");
    assert!(!want.approved);
    let got = s.update_node_fields(a.id, &up).await.expect("update");
    assert_eq!(got, want);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));
    // And back to a user.
    let up = NodeUpdate {
        owner: Some(NodeOwner {
            user_id: Some(other.id),
            tags: vec![],
        }),
        hostinfo_json: Some(Some(r#"{"OS":"windows"}"#.into())),
        ..Default::default()
    };
    up.apply_to(&mut want);
    assert_eq!(s.update_node_fields(a.id, &up).await.expect("update"), want);

    // An empty update reads the node.
    assert_eq!(
        s.update_node_fields(a.id, &NodeUpdate::default())
            .await
            .expect("empty"),
        want
    );

    // Errors.
    let ghost = NodeId(999_999);
    for up in [
        NodeUpdate::default(),
        NodeUpdate {
            capver: Some(1),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            s.update_node_fields(ghost, &up).await,
            Err(StoreError::NotFound { .. })
        ));
    }
    match s
        .update_node_fields(
            a.id,
            &NodeUpdate {
                given_name: Some(b.given_name.clone()),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists { what }) => assert!(what.contains("named"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    match s
        .update_node_fields(
            a.id,
            &NodeUpdate {
                node_key: Some(b.node_key),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists { what }) => assert!(what.contains("node key"), "{what}"),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert!(matches!(
        s.update_node_fields(
            a.id,
            &NodeUpdate {
                owner: Some(NodeOwner {
                    user_id: Some(UserId(999_999)),
                    tags: vec![]
                }),
                ..Default::default()
            }
        )
        .await,
        Err(StoreError::MissingReference { .. })
    ));
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));

    // Presence: only the presence columns.
    let p = NodePresence {
        disco_key: DiscoPublic([9; 32]),
        endpoints: vec!["203.0.113.5:41641".into()],
        home_derp: 3,
        last_seen: Some(t0() + Duration::seconds(30)),
    };
    s.update_node_presence(a.id, &p).await.expect("presence");
    want.set_presence(p.clone());
    assert_eq!(want.presence(), p);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));
    let cleared = NodePresence::default();
    s.update_node_presence(a.id, &cleared)
        .await
        .expect("presence");
    want.set_presence(cleared);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));
    assert!(matches!(
        s.update_node_presence(ghost, &p).await,
        Err(StoreError::NotFound { .. })
    ));

    // Inside a transaction, rolled back.
    let mut tx = s.begin().await.expect("begin");
    tx.update_node_fields(
        a.id,
        &NodeUpdate {
            hostname: Some("in-tx".into()),
            ..Default::default()
        },
    )
    .await
    .expect("update");
    tx.update_node_presence(a.id, &p).await.expect("presence");
    drop(tx);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want));
}

/// Two instances on one database (two stores, two pools): one keeps writing a
/// node's presence, the other its approved routes and expiry, each from its own
/// stale copy of the node. Neither overwrites the other's fields.
async fn two_writers(s1: &Store, s2: &Store) {
    use ironscale_store::NodeUpdate;
    let u = s1
        .create_user(&NewUser::named("writers"), t0())
        .await
        .expect("user");
    let n = s1.insert_node(&node(1, Some(u.id))).await.expect("insert");
    const ROUNDS: i64 = 25;
    let presence = {
        let (s, n) = (s1.clone(), n.clone());
        tokio::spawn(async move {
            for i in 1..=ROUNDS {
                let mut p = n.presence();
                p.last_seen = Some(t0() + Duration::seconds(i));
                p.endpoints = vec![format!("192.0.2.1:{}", 1000 + i)];
                s.update_node_presence(n.id, &p).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, StoreError>(())
        })
    };
    let admin = {
        let (s, id) = (s2.clone(), n.id);
        tokio::spawn(async move {
            for i in 1..=ROUNDS {
                let up = NodeUpdate {
                    approved_routes: Some(vec![format!("10.{i}.0.0/16").parse().expect("net")]),
                    expiry: Some(Some(t0() + Duration::days(i))),
                    ..Default::default()
                };
                s.update_node_fields(id, &up).await?;
                tokio::task::yield_now().await;
            }
            Ok::<_, StoreError>(())
        })
    };
    presence.await.expect("join").expect("presence writer");
    admin.await.expect("join").expect("admin writer");
    let got = s1.get_node(n.id).await.expect("get").expect("node");
    assert_eq!(got.last_seen, Some(t0() + Duration::seconds(ROUNDS)));
    assert_eq!(got.endpoints, vec![format!("192.0.2.1:{}", 1000 + ROUNDS)]);
    assert_eq!(
        got.approved_routes,
        vec![format!("10.{ROUNDS}.0.0/16")
            .parse::<ipnet::IpNet>()
            .expect("net")]
    );
    assert_eq!(got.expiry, Some(t0() + Duration::days(ROUNDS)));
    // Everything else is as inserted.
    let mut want = n.clone();
    want.set_presence(got.presence());
    want.approved_routes = got.approved_routes.clone();
    want.expiry = got.expiry;
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_field_updates_and_presence() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sqlite_store(&dir).await;
    field_updates(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (s1, s2) = (sqlite_store(&dir).await, sqlite_store(&dir).await);
    two_writers(&s1, &s2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_field_updates_and_presence() {
    let (pg, s) = pg_store().await;
    field_updates(&s).await;
    s.close().await;
    let cfg = ironscale_config::DatabaseConfig::Postgres(pg.fresh_config().await.expect("db"));
    let s1 = Store::open(&cfg).await.expect("open");
    let s2 = Store::open(&cfg).await.expect("open");
    two_writers(&s1, &s2).await;
    s1.close().await;
    s2.close().await;
}

/// `nodes backfillips`: an address given or removed by a field-level
/// update; a taken address is refused and changes nothing.
async fn address_updates(s: &Store) {
    use ironscale_store::NodeUpdate;
    let u = s
        .create_user(&NewUser::named("addrs"), t0())
        .await
        .expect("user");
    let mut a = node(41, Some(u.id));
    a.ipv6 = None;
    let a = s.insert_node(&a).await.expect("insert");
    let b = s.insert_node(&node(42, Some(u.id))).await.expect("insert");
    assert_eq!(a.ipv6, None);
    let v6: std::net::Ipv6Addr = "fd7a:115c:a1e0::a1".parse().expect("ip");
    let up = NodeUpdate {
        ipv6: Some(Some(v6)),
        ..Default::default()
    };
    let got = s.update_node_fields(a.id, &up).await.expect("update");
    assert_eq!(got.ipv6, Some(v6));
    assert_eq!(got.ipv4, a.ipv4, "the other family is kept");
    let mut want = a.clone();
    up.apply_to(&mut want);
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want.clone()));
    assert_eq!(NodeUpdate::between(&a, &want), up);
    // Removing one.
    let up = NodeUpdate {
        ipv4: Some(None),
        ..Default::default()
    };
    let got = s.update_node_fields(a.id, &up).await.expect("update");
    assert_eq!((got.ipv4, got.ipv6), (None, Some(v6)));
    up.apply_to(&mut want);
    // A taken address.
    match s
        .update_node_fields(
            a.id,
            &NodeUpdate {
                ipv4: Some(b.ipv4),
                ..Default::default()
            },
        )
        .await
    {
        Err(StoreError::AlreadyExists { what }) => {
            assert!(what.contains("address 100.64.0.42"), "{what}")
        }
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    assert_eq!(s.get_node(a.id).await.expect("get"), Some(want));
}

#[tokio::test]
async fn sqlite_address_updates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let s = sqlite_store(&dir).await;
    address_updates(&s).await;
}

#[tokio::test]
async fn postgres_address_updates() {
    let (_pg, s) = pg_store().await;
    address_updates(&s).await;
    s.close().await;
}
