//! Append-only schema migrations, embedded, one copy per backend with the same
//! numbering, tracked in `schema_migrations`.

use std::collections::BTreeSet;

use sqlx::AnyPool;

use crate::{Backend, StoreError};

pub(crate) struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

/// Every migration, in order. Never edit one that has landed; append.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sqlite: include_str!("../migrations/sqlite/0001_init.sql"),
        postgres: include_str!("../migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "node_approved",
        sqlite: include_str!("../migrations/sqlite/0002_node_approved.sql"),
        postgres: include_str!("../migrations/postgres/0002_node_approved.sql"),
    },
    Migration {
        version: 3,
        name: "audit_log",
        sqlite: include_str!("../migrations/sqlite/0003_audit_log.sql"),
        postgres: include_str!("../migrations/postgres/0003_audit_log.sql"),
    },
    Migration {
        version: 4,
        name: "user_idp_groups",
        sqlite: include_str!("../migrations/sqlite/0004_user_idp_groups.sql"),
        postgres: include_str!("../migrations/postgres/0004_user_idp_groups.sql"),
    },
];

/// The schema version this build brings a database to.
pub const LATEST_VERSION: i64 = 4;

pub(crate) async fn current_version(pool: &AnyPool) -> Result<i64, StoreError> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM schema_migrations")
        .fetch_one(pool)
        .await?;
    Ok(v.unwrap_or(0))
}

pub(crate) async fn run(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
    )
    .execute(pool)
    .await?;
    let applied: BTreeSet<i64> = sqlx::query_scalar("SELECT version FROM schema_migrations")
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    if let Some(&max) = applied.iter().next_back() {
        if max > LATEST_VERSION {
            return Err(StoreError::SchemaTooNew {
                found: max,
                known: LATEST_VERSION,
            });
        }
    }
    for m in MIGRATIONS {
        if applied.contains(&m.version) {
            continue;
        }
        let sql = match backend {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let fail = |source| StoreError::Migration {
            version: m.version,
            name: m.name,
            source,
        };
        let mut tx = pool.begin().await.map_err(fail)?;
        sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
        sqlx::query(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
        )
        .bind(m.version)
        .bind(m.name)
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied database migration"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_and_complete() {
        let mut prev = 0;
        for m in MIGRATIONS {
            assert_eq!(m.version, prev + 1, "versions must be consecutive");
            prev = m.version;
        }
        assert_eq!(prev, LATEST_VERSION);
        // Every file on disk is registered, in both backends, with matching names.
        for backend in ["sqlite", "postgres"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(backend);
            let mut files: Vec<String> = std::fs::read_dir(&dir)
                .expect("migrations dir")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let want: Vec<String> = MIGRATIONS
                .iter()
                .map(|m| format!("{:04}_{}.sql", m.version, m.name))
                .collect();
            assert_eq!(files, want, "{backend} migrations on disk vs MIGRATIONS");
        }
    }
}
