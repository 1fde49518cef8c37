//! Scratch databases for tests: each a freshly named database on the PostgreSQL server at
//! `127.0.0.1:5432` (user `postgres`, trust authentication, as `scripts/test` starts it),
//! dropped again when its [`ScratchDatabase`] is dropped — also when the test fails. The
//! first one a process makes also drops what crashed test processes left behind (databases
//! named after a process that no longer runs).
//!
//! Tests of this crate and of the crates above it use it to run on PostgreSQL; nothing else
//! should: it only ever talks to 127.0.0.1.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use fhir_store::{Result, StoreError};
use tokio_postgres::NoTls;

/// The server every scratch database is made on, and the maintenance database its
/// `CREATE DATABASE` and `DROP DATABASE` run in.
const SERVER: &str = "host=127.0.0.1 port=5432 user=postgres connect_timeout=10";
const ADMIN_DATABASE: &str = "postgres";

/// The names of scratch databases start with this, then the process id.
const PREFIX: &str = "fhirlink_test_";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static SWEPT: AtomicBool = AtomicBool::new(false);

/// A database that exists until this is dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    name: String,
}

async fn admin() -> Result<tokio_postgres::Client> {
    let (client, connection) =
        tokio_postgres::connect(&format!("{SERVER} dbname={ADMIN_DATABASE}"), NoTls)
            .await
            .map_err(|e| {
                StoreError::Backend(format!(
                    "no PostgreSQL at 127.0.0.1:5432 for the tests ({e}); start it with \
                     `pg_ctlcluster --skip-systemctl-redirect 15 main start` (scripts/test does)"
                ))
            })?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `name` quoted as an SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl ScratchDatabase {
    /// Creates a new, empty database.
    pub async fn create() -> Result<ScratchDatabase> {
        let client = admin().await?;
        if !SWEPT.swap(true, Ordering::AcqRel) {
            sweep(&client).await;
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let name = format!(
            "{PREFIX}{}_{}_{nanos:08x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        client
            .batch_execute(&format!(
                "CREATE DATABASE {} TEMPLATE template0 ENCODING 'UTF8'",
                ident(&name)
            ))
            .await
            .map_err(|e| StoreError::Backend(format!("cannot create database {name}: {e}")))?;
        Ok(ScratchDatabase { name })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address to give [`crate::PgStore::connect`].
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

/// Drops the scratch databases of processes that are gone.
async fn sweep(client: &tokio_postgres::Client) {
    let Ok(rows) = client
        .query(
            "SELECT datname FROM pg_database WHERE datname LIKE 'fhirlink\\_test\\_%'",
            &[],
        )
        .await
    else {
        return;
    };
    for row in rows {
        let name: String = row.get(0);
        let pid = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let _ = client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                ident(&name)
            ))
            .await;
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        // Its own thread and runtime: a test's runtime may be shutting down, or single-threaded
        // and blocked right here.
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = admin().await.map_err(|e| e.to_string())?;
                client
                    .batch_execute(&format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        ident(&name)
                    ))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(database = %self.name, error = %e, "scratch database left")
            }
            Err(_) => tracing::warn!(database = %self.name, "scratch database left"),
        }
    }
}
