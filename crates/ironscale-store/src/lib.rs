//! SQL persistence for ironscale: SQLite (default) and PostgreSQL through one
//! code path (sqlx `Any` with runtime queries and `$N` placeholders).
//!
//! * Only this crate knows SQL. Row ↔ domain conversion lives in `rows.rs`.
//! * [`Store::open`] with the configuration's [`DatabaseConfig`] is the only way
//!   in, so every `database.*` key is honoured ([`sqlite_config`] and
//!   `testpg::TestPg::fresh_config` build configurations for tests).
//! * [`Store`] is a cheap-to-clone handle on a connection pool, safe to use
//!   from many tasks at once.
//! * Migrations are append-only numbered SQL files, one copy per backend under
//!   `migrations/sqlite/` and `migrations/postgres/` with the same numbering,
//!   embedded in the binary and tracked in `schema_migrations`.
//! * Pre-auth keys are stored as a public prefix plus the SHA-256 of the key
//!   text; the key itself is returned once, at creation.
//! * Deleting a user who still owns nodes is refused ([`StoreError::UserHasNodes`]);
//!   the user's pre-auth keys are deleted with the user (`ON DELETE CASCADE`).

mod keys;
mod migrate;
mod rows;
#[cfg(feature = "test-pg")]
pub mod testpg;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ironscale_config::DatabaseConfig;
use ironscale_types::{Node, NodeId, NodePublic, PreAuthKey, Timestamp, User, UserId};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

use rows::{
    bool_to_db, id_to_db, json_strings, ts, ts_opt, NodeRow, NODE_COLUMNS, PREAUTH_COLUMNS,
    USER_COLUMNS,
};

pub use keys::{AUTH_KEY_PREFIX, PREFIX_LEN, SECRET_LEN};
pub use migrate::LATEST_VERSION;

/// Every way a store operation can fail.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint was violated (e.g. a user name or node key already in use).
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error(
        "user {name:?} still owns {nodes} node(s); delete them or move them to another user first"
    )]
    UserHasNodes {
        user: UserId,
        name: String,
        nodes: u64,
    },
    #[error("a referenced row does not exist: {detail}")]
    MissingReference { detail: String },
    /// A row that cannot be turned into a domain value.
    #[error("corrupt row in {table} (id {id}), column {column}: {reason}")]
    Corrupt {
        table: &'static str,
        id: i64,
        column: &'static str,
        reason: String,
    },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cannot open the database at {target}: {source}")]
    Open {
        /// The path or URL (password removed).
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("database migration {version} ({name}) failed: {source}")]
    Migration {
        version: i64,
        name: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the database schema is at version {found}, newer than this ironscale knows ({known}); upgrade ironscale")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("random number generator failed: {0}")]
    Rng(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Fields of a new user (the id and timestamps are assigned by the store).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewUser {
    pub name: String,
    pub display_name: String,
    pub email: String,
    pub provider: String,
    pub provider_id: String,
    pub profile_pic_url: String,
}

impl NewUser {
    pub fn named(name: impl Into<String>) -> Self {
        NewUser {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// Connection pool settings for PostgreSQL (from `database.postgres.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct PoolSettings {
    /// `max_open_conns`.
    max_connections: u32,
    /// `max_idle_conns`: a connection handed back while this many are idle is
    /// closed (`None`: no limit beyond `max_connections`).
    max_idle: Option<u32>,
    /// `conn_max_idle_time_secs`: close connections idle this long (`None`: never).
    idle_timeout: Option<Duration>,
    /// How long opening the store (and any later query) waits for a connection.
    acquire_timeout: Duration,
}

impl PoolSettings {
    fn from_config(p: &ironscale_config::PostgresConfig) -> PoolSettings {
        let max_connections = p.max_open_conns.max(1);
        PoolSettings {
            max_connections,
            max_idle: Some(p.max_idle_conns).filter(|&i| i < max_connections),
            idle_timeout: Some(p.conn_max_idle_time).filter(|d| !d.is_zero()),
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// A snapshot of the connection pool (for diagnostics and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections open now (idle or in use).
    pub size: u32,
    /// Of those, idle.
    pub idle: usize,
    /// The most connections the pool opens (`database.postgres.max_open_conns`).
    pub max_connections: u32,
}

/// The configuration of a SQLite database at `path` with Headscale's defaults
/// (write-ahead log on), for [`Store::open`] in tests and tools.
pub fn sqlite_config(path: impl Into<std::path::PathBuf>) -> DatabaseConfig {
    DatabaseConfig::Sqlite(ironscale_config::SqliteConfig {
        path: path.into(),
        write_ahead_log: true,
    })
}

/// The database handle: a connection pool. Clone freely.
#[derive(Clone, Debug)]
pub struct Store {
    /// In an `Arc` so that the idle trimmer (`trim_idle`) can hold a `Weak`
    /// to it without keeping it alive.
    pool: Arc<AnyPool>,
    backend: Backend,
}

/// Map a unique/foreign-key violation to a domain error; anything else stays `Db`.
fn map_err(e: sqlx::Error, what: impl FnOnce(&str) -> String) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        let detail = match d.constraint() {
            Some(c) => format!("{c}: {}", d.message()),
            None => d.message().to_string(),
        };
        if d.is_unique_violation() {
            return StoreError::AlreadyExists {
                what: what(&detail),
            };
        }
        if d.is_foreign_key_violation() {
            return StoreError::MissingReference { detail };
        }
    }
    StoreError::Db(e)
}

/// Which of `columns` a constraint error mentions (for a readable message).
fn column_in(detail: &str, columns: &[&'static str]) -> Option<&'static str> {
    columns.iter().copied().find(|c| detail.contains(c))
}

/// How often [`trim_idle`] looks at the pool.
const TRIM_INTERVAL: Duration = Duration::from_millis(500);

/// `max_idle_conns`, which sqlx's pool lacks: close idle connections beyond
/// `max_idle`, every [`TRIM_INTERVAL`], until the pool is dropped or closed.
async fn trim_idle(pool: Weak<AnyPool>, max_idle: u32) {
    let max_idle = max_idle as usize;
    loop {
        tokio::time::sleep(TRIM_INTERVAL).await;
        let Some(pool) = pool.upgrade() else { return };
        if pool.is_closed() {
            return;
        }
        while pool.num_idle() > max_idle {
            match pool.try_acquire() {
                Some(conn) => {
                    let _ = conn.close().await;
                }
                None => break,
            }
        }
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let Some(at) = rest.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    match userinfo.find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &userinfo[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

fn sqlite_url(path: &Path) -> String {
    let mut enc = String::new();
    for ch in path.to_string_lossy().chars() {
        match ch {
            '%' => enc.push_str("%25"),
            '?' => enc.push_str("%3F"),
            '#' => enc.push_str("%23"),
            c => enc.push(c),
        }
    }
    format!("sqlite://{enc}?mode=rwc")
}

impl Store {
    /// Open the database a configuration names and bring its schema up to date.
    /// The only way to open a store, so that every `database.*` key is honoured:
    ///
    /// * SQLite: the file and its parent directory are created if missing;
    ///   `write_ahead_log` selects WAL or the rollback journal (`DELETE`);
    ///   foreign keys on, a 10 s busy timeout, `synchronous = NORMAL`.
    /// * PostgreSQL: `max_open_conns` is the pool size, `max_idle_conns` the
    ///   most idle connections kept (more are closed when handed back),
    ///   `conn_max_idle_time_secs` closes connections idle that long (0: never).
    pub async fn open(cfg: &DatabaseConfig) -> Result<Store> {
        match cfg {
            DatabaseConfig::Sqlite(s) => Self::open_sqlite(&s.path, s.write_ahead_log).await,
            DatabaseConfig::Postgres(p) => {
                Self::open_postgres(&p.url(), &PoolSettings::from_config(p)).await
            }
        }
    }

    async fn open_sqlite(path: &Path, write_ahead_log: bool) -> Result<Store> {
        let target = path.display().to_string();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
                target: target.clone(),
                source: sqlx::Error::Io(e),
            })?;
        }
        sqlx::any::install_default_drivers();
        let url = sqlite_url(path);
        // The journal mode is a property of the file: set it once, on one
        // connection (leaving WAL needs the database to itself).
        let journal = if write_ahead_log { "WAL" } else { "DELETE" };
        let set_journal = async {
            use sqlx::Connection;
            let mut c = sqlx::AnyConnection::connect(&url).await?;
            c.execute("PRAGMA busy_timeout = 10000").await?;
            c.execute(format!("PRAGMA journal_mode = {journal}").as_str())
                .await?;
            c.close().await
        };
        set_journal.await.map_err(|source| StoreError::Open {
            target: target.clone(),
            source,
        })?;
        let pool = AnyPoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _meta| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(|source| StoreError::Open { target, source })?;
        let store = Store {
            pool: Arc::new(pool),
            backend: Backend::Sqlite,
        };
        migrate::run(&store.pool, store.backend).await?;
        Ok(store)
    }

    /// `url`: `postgres://user:pass@host:port/db`.
    async fn open_postgres(url: &str, settings: &PoolSettings) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let pool = AnyPoolOptions::new()
            .max_connections(settings.max_connections)
            .idle_timeout(settings.idle_timeout)
            .acquire_timeout(settings.acquire_timeout)
            .connect(url)
            .await
            .map_err(|source| StoreError::Open {
                target: redact_url(url),
                source,
            })?;
        let pool = Arc::new(pool);
        if let Some(max_idle) = settings.max_idle {
            tokio::spawn(trim_idle(Arc::downgrade(&pool), max_idle));
        }
        let store = Store {
            pool,
            backend: Backend::Postgres,
        };
        migrate::run(&store.pool, store.backend).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: self.pool.size(),
            idle: self.pool.num_idle(),
            max_connections: self.pool.options().get_max_connections(),
        }
    }

    /// The highest applied migration.
    pub async fn schema_version(&self) -> Result<i64> {
        migrate::current_version(&self.pool).await
    }

    /// Close every connection (waits for borrowed ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- users ---------------------------------------------------------------

    pub async fn create_user(&self, new: &NewUser, now: Timestamp) -> Result<User> {
        if new.name.is_empty() {
            return Err(StoreError::Invalid("a user name must not be empty".into()));
        }
        let sql = format!(
            "INSERT INTO users (name, display_name, email, provider, provider_id, profile_pic_url, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&new.name)
            .bind(&new.display_name)
            .bind(&new.email)
            .bind(&new.provider)
            .bind(&new.provider_id)
            .bind(&new.profile_pic_url)
            .bind(ts(now))
            .fetch_one(&*self.pool)
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

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY id");
        let rows = sqlx::query(&sql).fetch_all(&*self.pool).await?;
        rows.iter().map(rows::user_from_row).collect()
    }

    pub async fn get_user(&self, id: UserId) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id_to_db(id.0)?)
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::user_from_row).transpose()
    }

    pub async fn get_user_by_name(&self, name: &str) -> Result<Option<User>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1");
        let row = sqlx::query(&sql)
            .bind(name)
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::user_from_row).transpose()
    }

    /// Find the user an identity provider knows as (`provider`, `provider_id`).
    pub async fn get_user_by_provider_id(
        &self,
        provider: &str,
        provider_id: &str,
    ) -> Result<Option<User>> {
        let sql =
            format!("SELECT {USER_COLUMNS} FROM users WHERE provider = $1 AND provider_id = $2");
        let row = sqlx::query(&sql)
            .bind(provider)
            .bind(provider_id)
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::user_from_row).transpose()
    }

    pub async fn rename_user(&self, id: UserId, new_name: &str, now: Timestamp) -> Result<User> {
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
            .fetch_optional(&*self.pool)
            .await
            .map_err(|e| map_err(e, |_| format!("user {new_name:?}")))?;
        match row {
            Some(r) => rows::user_from_row(&r),
            None => Err(StoreError::NotFound {
                what: format!("user {}", id.0),
            }),
        }
    }

    /// Update a user's profile fields (name, display name, e-mail, provider identity, picture).
    pub async fn update_user(&self, user: &User, now: Timestamp) -> Result<User> {
        let sql = format!(
            "UPDATE users SET name = $1, display_name = $2, email = $3, provider = $4, provider_id = $5, \
             profile_pic_url = $6, updated_at = $7 WHERE id = $8 RETURNING {USER_COLUMNS}"
        );
        let row = sqlx::query(&sql)
            .bind(&user.name)
            .bind(&user.display_name)
            .bind(&user.email)
            .bind(&user.provider)
            .bind(&user.provider_id)
            .bind(&user.profile_pic_url)
            .bind(ts(now))
            .bind(id_to_db(user.id.0)?)
            .fetch_optional(&*self.pool)
            .await
            .map_err(|e| map_err(e, |_| format!("user {:?}", user.name)))?;
        match row {
            Some(r) => rows::user_from_row(&r),
            None => Err(StoreError::NotFound {
                what: format!("user {}", user.id.0),
            }),
        }
    }

    /// Delete a user and their pre-auth keys. Refused while the user owns nodes.
    pub async fn delete_user(&self, id: UserId) -> Result<()> {
        let Some(user) = self.get_user(id).await? else {
            return Err(StoreError::NotFound {
                what: format!("user {}", id.0),
            });
        };
        let nodes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE user_id = $1")
            .bind(id_to_db(id.0)?)
            .fetch_one(&*self.pool)
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
            .execute(&*self.pool)
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

    fn node_conflict(detail: &str, n: &Node) -> String {
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

    /// Insert a node; `node.id` is ignored and the assigned id returned in the result.
    pub async fn insert_node(&self, node: &Node) -> Result<Node> {
        let r = NodeRow::from_domain(node)?;
        let sql = "INSERT INTO nodes (machine_key, node_key, disco_key, ipv4, ipv6, hostname, given_name, user_id, tags, \
                   hostinfo, home_derp, announced_routes, approved_routes, endpoints, expiry, created_at, last_seen, \
                   register_method, auth_key_id, ephemeral, capver) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21) \
                   RETURNING id";
        let id: i64 = bind_node(sqlx::query_scalar(sql), r)
            .fetch_one(&*self.pool)
            .await
            .map_err(|e| map_err(e, |d| Self::node_conflict(d, node)))?;
        let mut out = node.clone();
        out.id = NodeId(id.unsigned_abs());
        Ok(out)
    }

    /// Overwrite a node's whole row.
    pub async fn update_node(&self, node: &Node) -> Result<()> {
        let r = NodeRow::from_domain(node)?;
        let sql = "UPDATE nodes SET machine_key = $1, node_key = $2, disco_key = $3, ipv4 = $4, ipv6 = $5, hostname = $6, \
                   given_name = $7, user_id = $8, tags = $9, hostinfo = $10, home_derp = $11, announced_routes = $12, \
                   approved_routes = $13, endpoints = $14, expiry = $15, created_at = $16, last_seen = $17, \
                   register_method = $18, auth_key_id = $19, ephemeral = $20, capver = $21 WHERE id = $22";
        let res = bind_node_q(sqlx::query(sql), r)
            .bind(id_to_db(node.id.0)?)
            .execute(&*self.pool)
            .await
            .map_err(|e| map_err(e, |d| Self::node_conflict(d, node)))?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("node {}", node.id.0),
            });
        }
        Ok(())
    }

    pub async fn delete_node(&self, id: NodeId) -> Result<()> {
        let res = sqlx::query("DELETE FROM nodes WHERE id = $1")
            .bind(id_to_db(id.0)?)
            .execute(&*self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("node {}", id.0),
            });
        }
        Ok(())
    }

    pub async fn get_node(&self, id: NodeId) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id_to_db(id.0)?)
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::node_from_row).transpose()
    }

    pub async fn get_node_by_node_key(&self, key: &NodePublic) -> Result<Option<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_key = $1");
        let row = sqlx::query(&sql)
            .bind(key.to_string())
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::node_from_row).transpose()
    }

    /// Every node, by id.
    pub async fn list_nodes(&self) -> Result<Vec<Node>> {
        let sql = format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY id");
        let rows: Vec<AnyRow> = sqlx::query(&sql).fetch_all(&*self.pool).await?;
        rows.iter().map(rows::node_from_row).collect()
    }

    // ---- pre-auth keys -------------------------------------------------------

    /// Create a pre-auth key. Returns the stored key and the full key text
    /// (`hskey-auth-<prefix>-<secret>`), which is shown once and never stored.
    pub async fn create_preauth_key(
        &self,
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
            .fetch_one(&*self.pool)
            .await
            .map_err(|e| map_err(e, |_| "a pre-auth key with this prefix".to_string()))?;
        Ok((rows::preauth_from_row(&row)?, generated.text))
    }

    /// Look a key up by its text. `None` for malformed or unknown keys and for
    /// a wrong secret. Whether the key may still be used (expired, used) is the
    /// caller's decision.
    pub async fn find_preauth_key(&self, key_text: &str) -> Result<Option<PreAuthKey>> {
        let Some(prefix) = keys::parse_prefix(key_text) else {
            return Ok(None);
        };
        let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE prefix = $1");
        let Some(row) = sqlx::query(&sql)
            .bind(prefix)
            .fetch_optional(&*self.pool)
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

    pub async fn get_preauth_key(&self, id: u64) -> Result<Option<PreAuthKey>> {
        let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE id = $1");
        let row = sqlx::query(&sql)
            .bind(id_to_db(id)?)
            .fetch_optional(&*self.pool)
            .await?;
        row.as_ref().map(rows::preauth_from_row).transpose()
    }

    pub async fn mark_preauth_key_used(&self, id: u64) -> Result<()> {
        let res = sqlx::query("UPDATE pre_auth_keys SET used = 1 WHERE id = $1")
            .bind(id_to_db(id)?)
            .execute(&*self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("pre-auth key {id}"),
            });
        }
        Ok(())
    }

    /// Atomically mark a key used if it may still be used: reusable keys always,
    /// single-use keys only the first time. `false`: a single-use key already used
    /// (so two registrations racing on one key cannot both win).
    pub async fn claim_preauth_key(&self, id: u64) -> Result<bool> {
        let res = sqlx::query(
            "UPDATE pre_auth_keys SET used = 1 WHERE id = $1 AND (reusable = 1 OR used = 0)",
        )
        .bind(id_to_db(id)?)
        .execute(&*self.pool)
        .await?;
        Ok(res.rows_affected() == 1)
    }

    /// Expire a key now (`expiration = now`).
    pub async fn expire_preauth_key(&self, id: u64, now: Timestamp) -> Result<()> {
        let res = sqlx::query("UPDATE pre_auth_keys SET expiration = $1 WHERE id = $2")
            .bind(ts(now))
            .bind(id_to_db(id)?)
            .execute(&*self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("pre-auth key {id}"),
            });
        }
        Ok(())
    }

    /// Delete a key. Nodes registered with it keep existing (their `auth_key_id` becomes empty).
    pub async fn delete_preauth_key(&self, id: u64) -> Result<()> {
        let res = sqlx::query("DELETE FROM pre_auth_keys WHERE id = $1")
            .bind(id_to_db(id)?)
            .execute(&*self.pool)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: format!("pre-auth key {id}"),
            });
        }
        Ok(())
    }

    /// Keys by id; with `Some(user)`, only that user's keys.
    pub async fn list_preauth_keys(&self, user: Option<UserId>) -> Result<Vec<PreAuthKey>> {
        let rows = match user {
            Some(u) => {
                let sql = format!(
                    "SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys WHERE user_id = $1 ORDER BY id"
                );
                sqlx::query(&sql)
                    .bind(id_to_db(u.0)?)
                    .fetch_all(&*self.pool)
                    .await?
            }
            None => {
                let sql = format!("SELECT {PREAUTH_COLUMNS} FROM pre_auth_keys ORDER BY id");
                sqlx::query(&sql).fetch_all(&*self.pool).await?
            }
        };
        rows.iter().map(rows::preauth_from_row).collect()
    }

    // ---- settings --------------------------------------------------------------

    pub async fn kv_get(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar("SELECT value FROM kv WHERE key = $1")
            .bind(key)
            .fetch_optional(&*self.pool)
            .await?)
    }

    pub async fn kv_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&*self.pool)
            .await?;
        Ok(())
    }

    pub async fn kv_delete(&self, key: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM kv WHERE key = $1")
            .bind(key)
            .execute(&*self.pool)
            .await?;
        Ok(res.rows_affected() > 0)
    }
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;
type AnyScalar<'q> = sqlx::query::QueryScalar<'q, sqlx::Any, i64, sqlx::any::AnyArguments<'q>>;

/// Bind a node row's 21 columns in `NODE_COLUMNS` order (without id).
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
    }};
}

fn bind_node(q: AnyScalar<'_>, r: NodeRow) -> AnyScalar<'_> {
    bind_node_fields!(q, r)
}

fn bind_node_q(q: AnyQuery<'_>, r: NodeRow) -> AnyQuery<'_> {
    bind_node_fields!(q, r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact_url("sqlite://x"), "sqlite://x");
    }

    /// (Moved from tests/store.rs when the URL-level open became private.)
    #[tokio::test]
    async fn open_errors_do_not_leak_passwords() {
        let settings = PoolSettings {
            acquire_timeout: Duration::from_secs(2),
            ..PoolSettings::from_config(&testpg::config_for_url("postgres://u@h/db").expect("cfg"))
        };
        let e = Store::open_postgres("postgres://u:hunter2@127.0.0.1:1/db", &settings)
            .await
            .expect_err("nothing listens on port 1");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn pool_settings_follow_the_config() {
        let mut p = testpg::config_for_url("postgres://u@h/db").expect("cfg");
        // Headscale's defaults: 10 open, 10 idle, 1 h idle time.
        assert_eq!(
            PoolSettings::from_config(&p),
            PoolSettings {
                max_connections: 10,
                max_idle: None,
                idle_timeout: Some(Duration::from_secs(3600)),
                acquire_timeout: Duration::from_secs(30),
            }
        );
        p.max_open_conns = 4;
        p.max_idle_conns = 2;
        p.conn_max_idle_time = Duration::ZERO;
        let s = PoolSettings::from_config(&p);
        assert_eq!(
            (s.max_connections, s.max_idle, s.idle_timeout),
            (4, Some(2), None)
        );
        p.max_open_conns = 0;
        assert_eq!(PoolSettings::from_config(&p).max_connections, 1);
    }

    #[test]
    fn postgres_urls_parse_into_configs() {
        let c =
            testpg::config_for_url("postgres://us%40r:p%3Ass@127.0.0.1:55432/db_1?sslmode=require")
                .expect("parse");
        assert_eq!(
            (
                c.host.as_str(),
                c.port,
                c.name.as_str(),
                c.user.as_str(),
                c.pass.expose(),
                c.ssl.as_str()
            ),
            ("127.0.0.1", 55432, "db_1", "us@r", "p:ss", "require")
        );
        assert_eq!(testpg::config_for_url(&c.url()).expect("round trip"), c);
        let c = testpg::config_for_url("postgres://postgres@[::1]/x").expect("parse");
        assert_eq!(
            (c.host.as_str(), c.port, c.pass.is_empty()),
            ("::1", 5432, true)
        );
        assert!(testpg::config_for_url("mysql://u@h/db").is_err());
    }

    /// The pool keys are honoured by the pool itself, against a real PostgreSQL.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_pool_keys_reach_the_pool() {
        let pg = testpg::TestPg::start()
            .unwrap_or_else(|e| panic!("cannot provide PostgreSQL for the test: {e}"));
        let base = pg.fresh_config().await.expect("database");

        // max_open_conns: a third connection waits until one is handed back.
        let mut p = base.clone();
        p.max_open_conns = 2;
        let s = Store::open(&DatabaseConfig::Postgres(p))
            .await
            .expect("open");
        let c1 = s.pool.acquire().await.expect("acquire");
        let c2 = s.pool.acquire().await.expect("acquire");
        assert!(
            s.pool.try_acquire().is_none(),
            "a third connection was opened"
        );
        assert_eq!(s.pool_status().size, 2);
        drop((c1, c2));
        s.close().await;

        // max_idle_conns: of 3 connections handed back, 1 stays open.
        let mut p = base.clone();
        p.max_open_conns = 3;
        p.max_idle_conns = 1;
        let s = Store::open(&DatabaseConfig::Postgres(p))
            .await
            .expect("open");
        let held: Vec<_> = [(); 3].iter().map(|_| s.pool.acquire()).collect::<Vec<_>>();
        let mut conns = Vec::new();
        for h in held {
            conns.push(h.await.expect("acquire"));
        }
        assert_eq!(s.pool_status().size, 3);
        drop(conns);
        wait_for(
            || s.pool_status().size == 1,
            "idle connections closed down to 1",
        )
        .await;
        assert_eq!(s.pool_status().idle, 1);
        s.close().await;

        // conn_max_idle_time_secs: idle connections are closed after it.
        let mut p = base;
        p.max_open_conns = 2;
        p.conn_max_idle_time = Duration::from_secs(1);
        let s = Store::open(&DatabaseConfig::Postgres(p))
            .await
            .expect("open");
        let c1 = s.pool.acquire().await.expect("acquire");
        let c2 = s.pool.acquire().await.expect("acquire");
        drop((c1, c2));
        wait_for(|| s.pool_status().idle == 2, "both connections idle").await;
        wait_for(
            || s.pool_status().size == 0,
            "idle connections closed after 1 s",
        )
        .await;
        s.close().await;
    }

    async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
        for _ in 0..100 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("timed out waiting: {what}");
    }

    #[test]
    fn sqlite_urls_escape_specials() {
        assert_eq!(
            sqlite_url(Path::new("/a b/c?d#e%f.db")),
            "sqlite:///a b/c%3Fd%23e%25f.db?mode=rwc"
        );
    }
}
