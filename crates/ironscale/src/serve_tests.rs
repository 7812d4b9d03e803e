//! `open_store` honours every `database.*` key.

use super::*;

/// `database.postgres.max_open_conns` reaches the pool (it was ignored: the pool
/// always had 10 connections). Against the PostgreSQL of `IRONSCALE_TEST_PG_URL`
/// (or a throwaway cluster); fails, never skips, when there is none.
#[tokio::test]
async fn open_store_honours_the_postgres_pool_size() {
    let pg = ironscale_store::testpg::TestPg::start()
        .unwrap_or_else(|e| panic!("cannot provide PostgreSQL for the test: {e}"));
    let dir = tempfile::tempdir().expect("tempdir");
    for max in [1, 3] {
        let mut pcfg = pg.fresh_config().await.expect("database");
        pcfg.max_open_conns = max;
        let mut cfg = Config::default_local(dir.path());
        cfg.database = DatabaseConfig::Postgres(pcfg);
        let store = open_store(&cfg).await.expect("open");
        assert_eq!(store.pool_status().max_connections, max);
        store.close().await;
    }
}
