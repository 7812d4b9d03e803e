//! Every store operation, once, on a connection: [`crate::Store`] runs them on
//! a pooled connection (each statement its own transaction), [`crate::Tx`]
//! inside its transaction. Only this module and `rows.rs` hold SQL.

use ironscale_types::{
    ApiKey, AuditEntry, Node, NodeId, NodePresence, NodePublic, PreAuthKey, Timestamp, User, UserId,
};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::rows::{
    self, bool_to_db, id_to_db, json_strings, ts, ts_opt, DbValue, NodeRow, APIKEY_COLUMNS,
    AUDIT_COLUMNS, NODE_COLUMNS, PREAUTH_COLUMNS, USER_COLUMNS,
};
use crate::{column_in, keys, map_err, NewUser, NodeUpdate, Result, StoreError};

// ---- users ---------------------------------------------------------------

pub(crate) async fn create_user(
    c: &mut AnyConnection,
    new: &NewUser,
    now: Timestamp,
) -> Result<User> {
    if new.name.is_empty() {
        return Err(StoreError::Invalid("a user name must not be empty".into()));
    }
    let sql = format!(
        "INSERT INTO users (name, display_name, email, provider, provider_id, profile_pic_url, idp_groups, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING {USER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&new.name)
        .bind(&new.display_name)
        .bind(&new.email)
        .bind(&new.provider)
        .bind(&new.provider_id)
        .bind(&new.profile_pic_url)
        .bind(rows::json_strings(&new.idp_groups))
        .bind(ts(now))
        .fetch_one(&mut *c)
        .await
        .map_err(|e| {
            map_err(e, |d| match column_in(d, &["provider"]) {
                Some(_) => {
                    format!("a user for {} identity {:?}", new.provider, new.provider_id)
                }
                None => format!("user {:?}", new.name),
            })
        })?;
    rows::user_from_row(&row)
}

pub(crate) async fn list_users(c: &mut AnyConnection) -> Result<Vec<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
    let rows = sqlx::query(&sql).fetch_all(&mut *c).await?;
    rows.iter().map(rows::user_from_row).collect()
}

pub(crate) async fn get_user(c: &mut AnyConnection, id: UserId) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id_to_db(id.0)?)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::user_from_row).transpose()
}

pub(crate) async fn get_user_by_name(c: &mut AnyConnection, name: &str) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
    let row = sqlx::query(&sql).bind(name).fetch_optional(&mut *c).await?;
    row.as_ref().map(rows::user_from_row).transpose()
}

pub(crate) async fn get_user_by_provider_id(
    c: &mut AnyConnection,
    provider: &str,
    provider_id: &str,
) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE provider = $1 AND provider_id = $2");
    let row = sqlx::query(&sql)
        .bind(provider)
        .bind(provider_id)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::user_from_row).transpose()
}

pub(crate) async fn rename_user(
    c: &mut AnyConnection,
    id: UserId,
    new_name: &str,
    now: Timestamp,
) -> Result<User> {
    if new_name.is_empty() {
        return Err(StoreError::Invalid("a user name must not be empty".into()));
    }
    let sql = format!(
        "UPDATE users SET name = $1, updated_at = $2 WHERE id = $3 RETURNING {USER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(new_name)
        .bind(ts(now))
        .bind(id_to_db(id.0)?)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_err(e, |_| format!("user {new_name:?}")))?;
    match row {
        Some(r) => rows::user_from_row(&r),
        None => Err(StoreError::NotFound {
            what: format!("user {}", id.0),
        }),
    }
}

pub(crate) async fn update_user(
    c: &mut AnyConnection,
    user: &User,
    now: Timestamp,
) -> Result<User> {
    let sql = format!(
        "UPDATE users SET name = $1, display_name = $2, email = $3, provider = $4, provider_id = $5, \
         profile_pic_url = $6, idp_groups = $7, updated_at = $8 WHERE id = $9 RETURNING {USER_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&user.name)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(&user.provider)
        .bind(&user.provider_id)
        .bind(&user.profile_pic_url)
        .bind(rows::json_strings(&user.idp_groups))
        .bind(ts(now))
        .bind(id_to_db(user.id.0)?)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_err(e, |_| format!("user {:?}", user.name)))?;
    match row {
        Some(r) => rows::user_from_row(&r),
        None => Err(StoreError::NotFound {
            what: format!("user {}", user.id.0),
        }),
    }
}

pub(crate) async fn delete_user(c: &mut AnyConnection, id: UserId) -> Result<()> {
    let Some(user) = get_user(&mut *c, id).await? else {
        return Err(StoreError::NotFound {
            what: format!("user {}", id.0),
        });
    };
    let nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE user_id = $1")
        .bind(id_to_db(id.0)?)
        .fetch_one(&mut *c)
        .await?;
    if nodes > 0 {
        return Err(StoreError::UserHasNodes {
            user: id,
            name: user.name,
            nodes: nodes.unsigned_abs(),
        });
    }
    let res = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(id_to_db(id.0)?)
        .execute(&mut *c)
        .await;
    match res {
        Ok(r) if r.rows_affected() == 1 => Ok(()),
        Ok(_) => Err(StoreError::NotFound {
            what: format!("user {}", id.0),
        }),
        // A node registered between the count and the delete: the FK refuses.
        Err(e) => match map_err(e, |d| d.to_string()) {
            StoreError::MissingReference { .. } => Err(StoreError::UserHasNodes {
                user: id,
                name: user.name,
                nodes: 1,
            }),
            other => Err(other),
        },
    }
}

// ---- nodes ---------------------------------------------------------------

pub(crate) fn node_conflict(detail: &str, n: &Node) -> String {
    match column_in(detail, &["node_key", "given_name", "ipv4", "ipv6"]) {
        Some("node_key") => format!("a node with node key {}", n.node_key.short()),
        Some("given_name") => format!("a node named {:?}", n.given_name),
        Some("ipv4") => format!(
            "a node with address {}",
            n.ipv4.map(|a| a.to_string()).unwrap_or_default()
        ),
        Some("ipv6") => format!(
            "a node with address {}",
            n.ipv6.map(|a| a.to_string()).unwrap_or_default()
        ),
        _ => "the node".to_string(),
    }
}

pub(crate) async fn insert_node(c: &mut AnyConnection, node: &Node) -> Result<Node> {
    let r = NodeRow::from_domain(node)?;
    let sql = "INSERT INTO nodes (machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, user_id, tags, \
               hostinfo, home_derp, announced_routes, approved_routes, endpoints, expiry, created_at, last_seen, \
               register_method, auth_key_id, ephemeral, capver, approved) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22) \
               RETURNING id";
    let id: i64 = bind_node(sqlx::query_scalar(sql), r)
        .fetch_one(&mut *c)
        .await
        .map_err(|e| map_err(e, |d| node_conflict(d, node)))?;
    let mut out = node.clone();
    out.id = NodeId(id.unsigned_abs());
    Ok(out)
}

pub(crate) async fn update_node(c: &mut AnyConnection, node: &Node) -> Result<()> {
    let r = NodeRow::from_domain(node)?;
    let sql = "UPDATE nodes SET machine_key = $1, node_key = $2, disco_key = $3, ipv4 = $4, ipv6 = $5, hostname = $6, \
               given_name = $7, user_id = $8, tags = $9, hostinfo = $10, home_derp = $11, announced_routes = $12, \
               approved_routes = $13, endpoints = $14, expiry = $15, created_at = $16, last_seen = $17, \
               register_method = $18, auth_key_id = $19, ephemeral = $20, capver = $21, approved = $22 WHERE id = $23";
    let res = bind_node_q(sqlx::query(sql), r)
        .bind(id_to_db(node.id.0)?)
        .execute(&mut *c)
        .await
        .map_err(|e| map_err(e, |d| node_conflict(d, node)))?;
    one_row(res.rows_affected(), || format!("node {}", node.id.0))
}

fn update_conflict(detail: &str, u: &NodeUpdate) -> String {
    match column_in(detail, &["node_key", "given_name", "ipv4", "ipv6"]) {
        Some("ipv4") => format!(
            "a node with address {}",
            u.ipv4.flatten().map(|a| a.to_string()).unwrap_or_default()
        ),
        Some("ipv6") => format!(
            "a node with address {}",
            u.ipv6.flatten().map(|a| a.to_string()).unwrap_or_default()
        ),
        Some("node_key") => format!(
            "a node with node key {}",
            u.node_key.map(|k| k.short()).unwrap_or_default()
        ),
        Some("given_name") => format!(
            "a node named {:?}",
            u.given_name.as_deref().unwrap_or_default()
        ),
        _ => "the node".to_string(),
    }
}

pub(crate) async fn update_node_fields(
    c: &mut AnyConnection,
    id: NodeId,
    update: &NodeUpdate,
) -> Result<Node> {
    let not_found = || StoreError::NotFound {
        what: format!("node {}", id.0),
    };
    let columns = rows::node_update_columns(update)?;
    if columns.is_empty() {
        return get_node(c, id).await?.ok_or_else(not_found);
    }
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (col, _))| format!("{col} = ${}", i + 1))
        .collect();
    let sql = format!(
        "UPDATE nodes SET {} WHERE id = ${} RETURNING {NODE_COLUMNS}",
        sets.join(", "),
        columns.len() + 1
    );
    let mut q = sqlx::query(&sql);
    for (_, v) in columns {
        q = match v {
            DbValue::Text(s) => q.bind(s),
            DbValue::OptText(s) => q.bind(s),
            DbValue::Int(i) => q.bind(i),
            DbValue::OptInt(i) => q.bind(i),
        };
    }
    let row = q
        .bind(id_to_db(id.0)?)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| map_err(e, |d| update_conflict(d, update)))?;
    match row {
        Some(r) => rows::node_from_row(&r),
        None => Err(not_found()),
    }
}

pub(crate) async fn update_node_presence(
    c: &mut AnyConnection,
    id: NodeId,
    presence: &NodePresence,
) -> Result<()> {
    let (disco_key, endpoints, home_derp, last_seen) = rows::presence_columns(presence);
    let res = sqlx::query(
        "UPDATE nodes SET disco_key = $1, endpoints = $2, home_derp = $3, last_seen = $4 WHERE id = $5",
    )
    .bind(disco_key)
    .bind(endpoints)
    .bind(home_derp)
    .bind(last_seen)
    .bind(id_to_db(id.0)?)
    .execute(&mut *c)
    .await?;
    one_row(res.rows_affected(), || format!("node {}", id.0))
}

pub(crate) async fn delete_node(c: &mut AnyConnection, id: NodeId) -> Result<()> {
    let res = sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(id_to_db(id.0)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("node {}", id.0))
}

pub(crate) async fn get_node(c: &mut AnyConnection, id: NodeId) -> Result<Option<Node>> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id_to_db(id.0)?)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::node_from_row).transpose()
}

pub(crate) async fn get_node_by_node_key(
    c: &mut AnyConnection,
    key: &NodePublic,
) -> Result<Option<Node>> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_key = $1");
    let row = sqlx::query(&sql)
        .bind(key.to_string())
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::node_from_row).transpose()
}

pub(crate) async fn list_nodes(c: &mut AnyConnection) -> Result<Vec<Node>> {
    let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id");
    let rows: Vec<AnyRow> = sqlx::query(&sql).fetch_all(&mut *c).await?;
    rows.iter().map(rows::node_from_row).collect()
}

// ---- API keys -------------------------------------------------------------

pub(crate) async fn create_api_key(
    c: &mut AnyConnection,
    prefix: &str,
    hash: &str,
    expiration: Option<Timestamp>,
    now: Timestamp,
) -> Result<ApiKey> {
    let sql = format!(
        "INSERT INTO api_keys (prefix, hash, expiration, created_at) VALUES ($1, $2, $3, $4) RETURNING {APIKEY_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(prefix)
        .bind(hash)
        .bind(ts_opt(expiration))
        .bind(ts(now))
        .fetch_one(&mut *c)
        .await
        .map_err(|e| map_err(e, |_| "an API key with this prefix".to_string()))?;
    rows::apikey_from_row(&row)
}

pub(crate) async fn get_api_key_by_prefix(
    c: &mut AnyConnection,
    prefix: &str,
) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {APIKEY_COLUMNS} FROM api_keys WHERE prefix = $1");
    let row = sqlx::query(&sql)
        .bind(prefix)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::apikey_from_row).transpose()
}

pub(crate) async fn get_api_key(c: &mut AnyConnection, id: u64) -> Result<Option<ApiKey>> {
    let sql = format!("SELECT {APIKEY_COLUMNS} FROM api_keys WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id_to_db(id)?)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::apikey_from_row).transpose()
}

pub(crate) async fn list_api_keys(c: &mut AnyConnection) -> Result<Vec<ApiKey>> {
    let sql = format!("SELECT {APIKEY_COLUMNS} FROM api_keys ORDER BY id");
    let rows: Vec<AnyRow> = sqlx::query(&sql).fetch_all(&mut *c).await?;
    rows.iter().map(rows::apikey_from_row).collect()
}

pub(crate) async fn expire_api_key(c: &mut AnyConnection, id: u64, now: Timestamp) -> Result<()> {
    let res = sqlx::query("UPDATE api_keys SET expiration = $1 WHERE id = $2")
        .bind(ts(now))
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("API key {id}"))
}

pub(crate) async fn delete_api_key(c: &mut AnyConnection, id: u64) -> Result<()> {
    let res = sqlx::query("DELETE FROM api_keys WHERE id = $1")
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("API key {id}"))
}

pub(crate) async fn touch_api_key(c: &mut AnyConnection, id: u64, now: Timestamp) -> Result<()> {
    sqlx::query("UPDATE api_keys SET last_seen = $1 WHERE id = $2")
        .bind(ts(now))
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    Ok(())
}

// ---- pre-auth keys -------------------------------------------------------

pub(crate) async fn create_preauth_key(
    c: &mut AnyConnection,
    user: Option<UserId>,
    reusable: bool,
    ephemeral: bool,
    expiration: Option<Timestamp>,
    tags: &[String],
    now: Timestamp,
) -> Result<(PreAuthKey, String)> {
    let generated = keys::generate()?;
    let sql = format!(
        "INSERT INTO pre_auth_keys (prefix, hash, user_id, reusable, ephemeral, used, tags, expiration, created_at) \
         VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8) RETURNING {PREAUTH_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(&generated.prefix)
        .bind(keys::hash(&generated.text))
        .bind(user.map(|u| id_to_db(u.0)).transpose()?)
        .bind(bool_to_db(reusable))
        .bind(bool_to_db(ephemeral))
        .bind(json_strings(tags))
        .bind(ts_opt(expiration))
        .bind(ts(now))
        .fetch_one(&mut *c)
        .await
        .map_err(|e| map_err(e, |_| "a pre-auth key with this prefix".to_string()))?;
    Ok((rows::preauth_from_row(&row)?, generated.text))
}

pub(crate) async fn find_preauth_key(
    c: &mut AnyConnection,
    key_text: &str,
) -> Result<Option<PreAuthKey>> {
    let Some(prefix) = keys::parse_prefix(key_text) else {
        return Ok(None);
    };
    let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE prefix = $1");
    let Some(row) = sqlx::query(&sql)
        .bind(prefix)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    let key = rows::preauth_from_row(&row)?;
    if keys::hash_matches(key_text, &key.hash) {
        Ok(Some(key))
    } else {
        Ok(None)
    }
}

pub(crate) async fn get_preauth_key(c: &mut AnyConnection, id: u64) -> Result<Option<PreAuthKey>> {
    let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE id = $1");
    let row = sqlx::query(&sql)
        .bind(id_to_db(id)?)
        .fetch_optional(&mut *c)
        .await?;
    row.as_ref().map(rows::preauth_from_row).transpose()
}

pub(crate) async fn mark_preauth_key_used(c: &mut AnyConnection, id: u64) -> Result<()> {
    let res = sqlx::query("UPDATE pre_auth_keys SET used = 1 WHERE id = $1")
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("pre-auth key {id}"))
}

pub(crate) async fn claim_preauth_key(c: &mut AnyConnection, id: u64) -> Result<bool> {
    let res = sqlx::query(
        "UPDATE pre_auth_keys SET used = 1 WHERE id = $1 AND (reusable = 1 OR used = 0)",
    )
    .bind(id_to_db(id)?)
    .execute(&mut *c)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub(crate) async fn expire_preauth_key(
    c: &mut AnyConnection,
    id: u64,
    now: Timestamp,
) -> Result<()> {
    let res = sqlx::query("UPDATE pre_auth_keys SET expiration = $1 WHERE id = $2")
        .bind(ts(now))
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("pre-auth key {id}"))
}

pub(crate) async fn delete_preauth_key(c: &mut AnyConnection, id: u64) -> Result<()> {
    let res = sqlx::query("DELETE FROM pre_auth_keys WHERE id = $1")
        .bind(id_to_db(id)?)
        .execute(&mut *c)
        .await?;
    one_row(res.rows_affected(), || format!("pre-auth key {id}"))
}

pub(crate) async fn list_preauth_keys(
    c: &mut AnyConnection,
    user: Option<UserId>,
) -> Result<Vec<PreAuthKey>> {
    let rows = match user {
        Some(u) => {
            let sql = format!(
                "SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE user_id = $1 ORDER BY id"
            );
            sqlx::query(&sql)
                .bind(id_to_db(u.0)?)
                .fetch_all(&mut *c)
                .await?
        }
        None => {
            let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys ORDER BY id");
            sqlx::query(&sql).fetch_all(&mut *c).await?
        }
    };
    rows.iter().map(rows::preauth_from_row).collect()
}

// ---- audit log -----------------------------------------------------------

pub(crate) async fn append_audit(c: &mut AnyConnection, entry: &AuditEntry) -> Result<AuditEntry> {
    let sql = format!(
        "INSERT INTO audit_log (at, actor, action, target, result, detail) VALUES ($1, $2, $3, $4, $5, $6) RETURNING {AUDIT_COLUMNS}"
    );
    let row = sqlx::query(&sql)
        .bind(ts(entry.at))
        .bind(entry.actor.as_str())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.result.as_str())
        .bind(entry.detail.as_str())
        .fetch_one(&mut *c)
        .await?;
    rows::audit_from_row(&row)
}

pub(crate) async fn list_audit(
    c: &mut AnyConnection,
    since: Option<Timestamp>,
    limit: u32,
) -> Result<Vec<AuditEntry>> {
    let sql =
        format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE at >= $1 ORDER BY id DESC LIMIT $2");
    let rows: Vec<AnyRow> = sqlx::query(&sql)
        .bind(since.map_or(i64::MIN, ts))
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?;
    rows.iter().map(rows::audit_from_row).collect()
}

// ---- settings --------------------------------------------------------------

pub(crate) async fn kv_get(c: &mut AnyConnection, key: &str) -> Result<Option<String>> {
    Ok(sqlx::query_scalar("SELECT value FROM kv WHERE key = $1")
        .bind(key)
        .fetch_optional(&mut *c)
        .await?)
}

pub(crate) async fn kv_set(c: &mut AnyConnection, key: &str, value: &str) -> Result<()> {
    sqlx::query("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .bind(key)
        .bind(value)
        .execute(&mut *c)
        .await?;
    Ok(())
}

pub(crate) async fn kv_delete(c: &mut AnyConnection, key: &str) -> Result<bool> {
    let res = sqlx::query("DELETE FROM kv WHERE key = $1")
        .bind(key)
        .execute(&mut *c)
        .await?;
    Ok(res.rows_affected() > 0)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
type AnyScalar<'q> = sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments<'q>>;

macro_rules! bind_node_fields {
    ($q:expr, $r:expr) => {{
        let r = $r;
        $q.bind(r.machine_key)
            .bind(r.node_key)
            .bind(r.disco_key)
            .bind(r.ipv4)
            .bind(r.ipv6)
            .bind(r.hostname)
            .bind(r.given_name)
            .bind(r.user_id)
            .bind(r.tags)
            .bind(r.hostinfo)
            .bind(r.home_derp)
            .bind(r.announced_routes)
            .bind(r.approved_routes)
            .bind(r.endpoints)
            .bind(r.expiry)
            .bind(r.created_at)
            .bind(r.last_seen)
            .bind(r.register_method)
            .bind(r.auth_key_id)
            .bind(r.ephemeral)
            .bind(r.capver)
            .bind(r.approved)
    }};
}

fn bind_node(q: AnyScalar<'_>, r: NodeRow) -> AnyScalar<'_> {
    bind_node_fields!(q, r)
}

fn bind_node_q(q: AnyQuery<'_>, r: NodeRow) -> AnyQuery<'_> {
    bind_node_fields!(q, r)
}

/// An update or delete of one row by id: no row affected means it is not there.
fn one_row(affected: u64, what: impl FnOnce() -> String) -> Result<()> {
    if affected == 0 {
        return Err(StoreError::NotFound { what: what() });
    }
    Ok(())
}
