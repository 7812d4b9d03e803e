//! SQL persistence for ironscale: SQLite (default) and PostgreSQL through one
//! code path (sqlx `Any` with runtime queries and `$N` placeholders).
//!
//! * Only this crate knows SQL. Row ↔ domain conversion lives in `rows.rs`.
//! * [`Store::open`] with the configuration's [`DatabaseConfig`] is the only way
//!   in, so every `database.*` key is honoured ([`sqlite_config`] and
//!   `testpg::TestPg::fresh_config` build configurations for tests).
//! * [`Store`] is a cheap-to-clone handle on a connection pool, safe to use
//!   from many tasks at once.
//! * [`Store::begin`] opens a transaction, [`Tx`], with the same operations;
//!   [`Tx::commit`] makes them visible, dropping the `Tx` rolls them back. Every
//!   operation is written once (`ops.rs`, on a connection) and listed once
//!   (`operations!`), which makes it a method of both.
//! * Nodes are written field by field: [`Store::update_node_fields`] with a
//!   [`NodeUpdate`] writes the durable fields it names, and
//!   [`Store::update_node_presence`] a node's presence
//!   ([`ironscale_types::NodePresence`]: disco key, endpoints, home DERP, last
//!   seen). [`Store::update_node`] is the whole-record write (every column).
//! * Migrations are append-only numbered SQL files, one copy per backend under
//!   `migrations/sqlite/` and `migrations/postgres/` with the same numbering,
//!   embedded in the binary and tracked in `schema_migrations`.
//! * Pre-auth keys are stored as a public prefix plus the SHA-256 of the key
//!   text; the key itself is returned once, at creation.
//! * Deleting a user who still owns nodes is refused ([`StoreError::UserHasNodes`]);
//!   the user's pre-auth keys are deleted with the user (`ON DELETE CASCADE`).
//! * The audit log (`audit_log`) is append-only: [`Store::append_audit`] and
//!   [`Store::list_audit`] (newest first); its `detail` is JSON text the
//!   store does not read.

mod keys;
mod migrate;
mod ops;
mod rows;
#[cfg(feature = "test-pg")]
pub mod testpg;
mod tx;

use std::path::Path;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ironscale_config::DatabaseConfig;
use ironscale_types::{
    ApiKey, AuditEntry, Node, NodeId, NodePresence, NodePublic, PreAuthKey, RegisterMethod,
    Timestamp, User, UserId,
};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};

pub use keys::{AUTH_KEY_PREFIX, PREFIX_LEN, SECRET_LEN};
pub use migrate::LATEST_VERSION;
pub use tx::Tx;

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
    /// The identity provider's groups at creation (see `User::idp_groups`).
    pub idp_groups: Vec<String>,
}

impl NewUser {
    pub fn named(name: impl Into<String>) -> Self {
        NewUser {
            name: name.into(),
            ..Default::default()
        }
    }
}

/// Who a node belongs to: a user, or (tagged node) its tags. Set together, so
/// that a node's identity never mixes an old owner with new tags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOwner {
    pub user_id: Option<UserId>,
    pub tags: Vec<String>,
}

/// A field-level update of a node's durable record: the fields that are
/// `Some` are written, every other column keeps what the database holds (so
/// two writers changing different fields do not overwrite each other). The
/// presence fields (disco key, endpoints, home DERP, last seen) are not here:
/// they are written by [`Store::update_node_presence`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeUpdate {
    pub node_key: Option<NodePublic>,
    /// The hostname the client reports.
    pub hostname: Option<String>,
    /// The unique DNS label.
    pub given_name: Option<String>,
    pub owner: Option<NodeOwner>,
    /// The client's Hostinfo JSON (`Some(None)` clears it).
    pub hostinfo_json: Option<Option<String>>,
    pub announced_routes: Option<Vec<ipnet::IpNet>>,
    pub approved_routes: Option<Vec<ipnet::IpNet>>,
    /// `Some(None)`: never expires.
    pub expiry: Option<Option<Timestamp>>,
    pub register_method: Option<RegisterMethod>,
    pub auth_key_id: Option<Option<u64>>,
    pub ephemeral: Option<bool>,
    pub capver: Option<u32>,
    /// Device approval (see `Node::approved`).
    pub approved: Option<bool>,
    /// The node's IPv4 address (`Some(None)` removes it; `nodes backfillips`).
    pub ipv4: Option<Option<std::net::Ipv4Addr>>,
    /// The node's IPv6 address (`Some(None)` removes it).
    pub ipv6: Option<Option<std::net::Ipv6Addr>>,
}

impl NodeUpdate {
    /// The durable fields in which `new` differs from `old` (presence is not
    /// compared: see [`Store::update_node_presence`]).
    pub fn between(old: &Node, new: &Node) -> NodeUpdate {
        fn ch<T: PartialEq + Clone>(a: &T, b: &T) -> Option<T> {
            (a != b).then(|| b.clone())
        }
        NodeUpdate {
            node_key: ch(&old.node_key, &new.node_key),
            hostname: ch(&old.hostname, &new.hostname),
            given_name: ch(&old.given_name, &new.given_name),
            owner: (old.user_id != new.user_id || old.tags != new.tags).then(|| NodeOwner {
                user_id: new.user_id,
                tags: new.tags.clone(),
            }),
            hostinfo_json: ch(&old.hostinfo_json, &new.hostinfo_json),
            announced_routes: ch(&old.announced_routes, &new.announced_routes),
            approved_routes: ch(&old.approved_routes, &new.approved_routes),
            expiry: ch(&old.expiry, &new.expiry),
            register_method: ch(&old.register_method, &new.register_method),
            auth_key_id: ch(&old.auth_key_id, &new.auth_key_id),
            ephemeral: ch(&old.ephemeral, &new.ephemeral),
            capver: ch(&old.capver, &new.capver),
            approved: ch(&old.approved, &new.approved),
            ipv4: ch(&old.ipv4, &new.ipv4),
            ipv6: ch(&old.ipv6, &new.ipv6),
        }
    }

    /// No field is set.
    pub fn is_empty(&self) -> bool {
        *self == NodeUpdate::default()
    }

    /// `node` with this update applied (what the database holds after
    /// [`Store::update_node_fields`] if `node` was the stored row).
    pub fn apply_to(&self, node: &mut Node) {
        let u = self.clone();
        if let Some(v) = u.node_key {
            node.node_key = v;
        }
        if let Some(v) = u.hostname {
            node.hostname = v;
        }
        if let Some(v) = u.given_name {
            node.given_name = v;
        }
        if let Some(o) = u.owner {
            node.user_id = o.user_id;
            node.tags = o.tags;
        }
        if let Some(v) = u.hostinfo_json {
            node.hostinfo_json = v;
        }
        if let Some(v) = u.announced_routes {
            node.announced_routes = v;
        }
        if let Some(v) = u.approved_routes {
            node.approved_routes = v;
        }
        if let Some(v) = u.expiry {
            node.expiry = v;
        }
        if let Some(v) = u.register_method {
            node.register_method = v;
        }
        if let Some(v) = u.auth_key_id {
            node.auth_key_id = v;
        }
        if let Some(v) = u.ephemeral {
            node.ephemeral = v;
        }
        if let Some(v) = u.capver {
            node.capver = v;
        }
        if let Some(v) = u.approved {
            node.approved = v;
        }
        if let Some(v) = u.ipv4 {
            node.ipv4 = v;
        }
        if let Some(v) = u.ipv6 {
            node.ipv6 = v;
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

/// SQLITE_BUSY (5) or SQLITE_LOCKED (6): another connection holds the file.
fn is_busy(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("5" | "6")))
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
        let set_journal = || async {
            use sqlx::Connection;
            let mut c = sqlx::AnyConnection::connect(&url).await?;
            c.execute("PRAGMA busy_timeout = 10000").await?;
            c.execute(format!("PRAGMA journal_mode = {journal}").as_str())
                .await?;
            c.close().await
        };
        // Leaving WAL needs an exclusive lock, for which SQLite's busy handler
        // does not wait: a connection still closing (this process's previous
        // pool, another process) makes it fail with SQLITE_BUSY at once. Retry
        // for as long as the busy timeout would have waited.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            match set_journal().await {
                Ok(()) => break,
                Err(e) if is_busy(&e) && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(source) => {
                    return Err(StoreError::Open {
                        target: target.clone(),
                        source,
                    })
                }
            }
        }
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

    /// Start a transaction: run writes (and the reads they depend on) on the
    /// returned [`Tx`], then [`Tx::commit`]; dropping it rolls back.
    ///
    /// On SQLite the transaction takes the write lock at once (`BEGIN
    /// IMMEDIATE`), so transactions run one after another and a second `begin`
    /// waits for the first to end (up to the 10 s busy timeout). While a `Tx` is
    /// open, write through it, not through the `Store`: on SQLite a store write
    /// would wait for the lock the `Tx` holds.
    pub async fn begin(&self) -> Result<Tx> {
        let tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        Ok(Tx::new(tx, self.backend))
    }

    /// Close every connection (waits for borrowed ones to come back).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The operations, each defined once in `ops` on a connection, as methods of
/// [`Store`] (on a pooled connection, every statement its own transaction)
/// and of [`Tx`] (inside the transaction).
macro_rules! operations {
    ($(
        $(#[$attr:meta])*
        fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;
    )*) => {
        impl Store {
            $(
                $(#[$attr])*
                pub async fn $name(&self, $($arg: $ty),*) -> Result<$ret> {
                    let mut conn = self.pool.acquire().await?;
                    ops::$name(&mut conn, $($arg),*).await
                }
            )*
        }
        impl Tx {
            $(
                $(#[$attr])*
                pub async fn $name(&mut self, $($arg: $ty),*) -> Result<$ret> {
                    ops::$name(self.conn(), $($arg),*).await
                }
            )*
        }
    };
}

operations! {
    // ---- users
    /// Create a user; the id and timestamps are assigned.
    fn create_user(new: &NewUser, now: Timestamp) -> User;
    /// Every user, by id.
    fn list_users() -> Vec<User>;
    fn get_user(id: UserId) -> Option<User>;
    fn get_user_by_name(name: &str) -> Option<User>;
    /// Find the user an identity provider knows as (`provider`, `provider_id`).
    fn get_user_by_provider_id(provider: &str, provider_id: &str) -> Option<User>;
    fn rename_user(id: UserId, new_name: &str, now: Timestamp) -> User;
    /// Update a user's profile fields (name, display name, e-mail, provider identity, picture).
    fn update_user(user: &User, now: Timestamp) -> User;
    /// Delete a user and their pre-auth keys. Refused while the user owns nodes.
    fn delete_user(id: UserId) -> ();

    // ---- nodes
    /// Insert a node; `node.id` is ignored and the assigned id returned in the result.
    fn insert_node(node: &Node) -> Node;
    /// The whole-record write: overwrite every column of a node's row. Two
    /// writers of one node overwrite each other's fields; prefer the
    /// field-level updates for new code.
    fn update_node(node: &Node) -> ();
    /// Write the fields an update names, and only those; the node as stored
    /// afterwards is returned. An empty update reads the node.
    fn update_node_fields(id: NodeId, update: &NodeUpdate) -> Node;
    /// Write a node's presence (disco key, endpoints, home DERP, last seen)
    /// and nothing else.
    fn update_node_presence(id: NodeId, presence: &NodePresence) -> ();
    fn delete_node(id: NodeId) -> ();
    fn get_node(id: NodeId) -> Option<Node>;
    fn get_node_by_node_key(key: &NodePublic) -> Option<Node>;
    /// Every node, by id.
    fn list_nodes() -> Vec<Node>;

    // ---- pre-auth keys
    /// Create a pre-auth key. Returns the stored key and the full key text
    /// (`hskey-auth-<prefix>-<secret>`), which is shown once and never stored.
    fn create_preauth_key(
        user: Option<UserId>,
        reusable: bool,
        ephemeral: bool,
        expiration: Option<Timestamp>,
        tags: &[String],
        now: Timestamp
    ) -> (PreAuthKey, String);
    /// Look a key up by its text. `None` for malformed or unknown keys and for
    /// a wrong secret. Whether the key may still be used (expired, used) is the
    /// caller's decision.
    fn find_preauth_key(key_text: &str) -> Option<PreAuthKey>;
    fn get_preauth_key(id: u64) -> Option<PreAuthKey>;
    fn mark_preauth_key_used(id: u64) -> ();
    /// Atomically mark a key used if it may still be used: reusable keys always,
    /// single-use keys only the first time. `false`: a single-use key already
    /// used, so two registrations racing on one key cannot both win. In a
    /// [`Tx`], the claim holds until the transaction ends: a concurrent claim
    /// waits for it, and sees the key used if it committed, unused if it rolled back.
    fn claim_preauth_key(id: u64) -> bool;
    /// Expire a key now (`expiration = now`).
    fn expire_preauth_key(id: u64, now: Timestamp) -> ();
    /// Delete a key. Nodes registered with it keep existing (their `auth_key_id` becomes empty).
    fn delete_preauth_key(id: u64) -> ();
    /// Keys by id; with `Some(user)`, only that user's keys.
    fn list_preauth_keys(user: Option<UserId>) -> Vec<PreAuthKey>;

    // ---- API keys
    /// Store an API key: its prefix and the hash of its secret (made by the
    /// caller: the store never sees the key).
    fn create_api_key(prefix: &str, hash: &str, expiration: Option<Timestamp>, now: Timestamp) -> ApiKey;
    fn get_api_key_by_prefix(prefix: &str) -> Option<ApiKey>;
    fn get_api_key(id: u64) -> Option<ApiKey>;
    /// Every API key, by id.
    fn list_api_keys() -> Vec<ApiKey>;
    /// Expire a key now (`expiration = now`).
    fn expire_api_key(id: u64, now: Timestamp) -> ();
    fn delete_api_key(id: u64) -> ();
    /// Record that the key authenticated a request at `now`.
    fn touch_api_key(id: u64, now: Timestamp) -> ();

    // ---- audit log
    /// Append an entry (`entry.id` is ignored; the stored entry, with its
    /// id, is returned).
    fn append_audit(entry: &AuditEntry) -> AuditEntry;
    /// The newest `limit` entries written at or after `since` (all when
    /// `None`), newest first (by id: the order they were written).
    fn list_audit(since: Option<Timestamp>, limit: u32) -> Vec<AuditEntry>;

    // ---- settings
    fn kv_get(key: &str) -> Option<String>;
    fn kv_set(key: &str, value: &str) -> ();
    /// `true` if the key existed.
    fn kv_delete(key: &str) -> bool;
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
