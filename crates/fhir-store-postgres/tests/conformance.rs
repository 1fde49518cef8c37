//! The shared store conformance suite, run against [`PgStore`] on the PostgreSQL at
//! 127.0.0.1:5432, each test in a freshly created database that is dropped when it ends. The
//! tests fail, never skip, when that server is not there.

use std::sync::Arc;

use fhir_store::Store;
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};

async fn fresh() -> (ScratchDatabase, Arc<dyn Store>) {
    let db = ScratchDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("scratch database: {e}"));
    let config = PgConfig {
        pool_size: 8,
        ..PgConfig::default()
    };
    let store = PgStore::connect(&db.url(), config)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
    (db, Arc::new(store))
}

fhir_store::conformance_tests!(fresh());
