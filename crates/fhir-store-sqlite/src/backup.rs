//! Online backups: a consistent copy of the live database in one self-contained file, taken
//! while writers go on, and the check a copy must pass before it is restored.
//!
//! The copy is SQLite's online backup (`sqlite3_backup_step`, a bounded number of pages per
//! step) from a read connection of its own that holds one read transaction from the first
//! page to the last. In WAL mode that snapshot blocks no writer (the checkpointer only stops
//! short of it, so the WAL grows for the backup's duration), and because it does not move,
//! the backup never restarts when a commit lands between two steps (SQLite restarts a backup
//! whose source changed under it). The copy is therefore the database as of the moment the
//! read transaction began: every write acknowledged before [`SqliteStore::backup_to`] was
//! called is in it, and nothing half-written is. The copy is then switched out of WAL
//! (`journal_mode = DELETE`, so no `-wal` file goes with it), checked with
//! `PRAGMA integrity_check` and synced. This module knows files and SQL, nothing of what the
//! caller packs the copy into.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fhir_store::{Result, StoreError};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::{backend, schema, SqliteStore};

/// Pages copied per step (4 MiB with SQLite's default 4 KiB pages): the copy yields between
/// steps, so one backup never holds the database's mutex for long.
const PAGES_PER_STEP: i32 = 1024;
/// Steps that found the source busy or locked, in a row, before the backup gives up.
const BUSY_STEPS: u32 = 500;

/// What [`SqliteStore::backup_to`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The copy's size in bytes (`pages * page_size`).
    pub bytes: u64,
    pub pages: u64,
    pub page_size: u64,
    /// The copy's schema version (`PRAGMA user_version`).
    pub schema_version: i64,
    /// How long the copy took, integrity check and sync included.
    pub elapsed: Duration,
}

/// What [`verify_database`] found in a database file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseInfo {
    pub schema_version: i64,
    /// The FHIR services it holds, by name.
    pub services: Vec<String>,
    /// Current resources (deleted ones included) over all services.
    pub resources: u64,
    /// Control-plane documents.
    pub documents: u64,
}

impl SqliteStore {
    /// Copies the live database into `dest`, a new file (an existing one is refused), as of
    /// the moment of the call, while writes go on (see the module doc). Blocks for the whole
    /// copy: run it off the async workers (`spawn_blocking`).
    pub fn backup_to(&self, dest: &Path) -> Result<BackupReport> {
        let started = Instant::now();
        let source: PathBuf = self
            .readers
            .with(|conn| Ok(conn.path().map(PathBuf::from)))?
            .ok_or_else(|| StoreError::Backend("the store has no database file".into()))?;
        if dest.exists() {
            return Err(StoreError::Backend(format!(
                "backup target {} already exists",
                dest.display()
            )));
        }
        let result = copy(&source, dest);
        if result.is_err() {
            let _ = std::fs::remove_file(dest);
            let _ = std::fs::remove_file(with_suffix(dest, "-journal"));
        }
        let (pages, page_size, schema_version) = result?;
        Ok(BackupReport {
            bytes: pages * page_size,
            pages,
            page_size,
            schema_version,
            elapsed: started.elapsed(),
        })
    }
}

/// The online copy of `source` into the new file `dest`: pages, page size, schema version.
fn copy(source: &Path, dest: &Path) -> Result<(u64, u64, i64)> {
    // A connection of its own, read-only: the pool's readers stay free for requests.
    let src = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    src.busy_timeout(Duration::from_secs(5)).map_err(backend)?;
    let mut dst = Connection::open_with_flags(
        dest,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend)?;
    // The snapshot: one read transaction, begun by its first read, held across every step.
    let snapshot = src.unchecked_transaction().map_err(backend)?;
    snapshot
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| {
            row.get::<_, i64>(0)
        })
        .map_err(backend)?;
    {
        let backup = Backup::new(&src, &mut dst).map_err(backend)?;
        let mut busy = 0;
        loop {
            match backup.step(PAGES_PER_STEP).map_err(backend)? {
                StepResult::Done => break,
                StepResult::More => busy = 0,
                StepResult::Busy | StepResult::Locked => {
                    busy += 1;
                    if busy >= BUSY_STEPS {
                        return Err(StoreError::Busy);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {}
            }
        }
    }
    snapshot.finish().map_err(backend)?;
    drop(src);
    // The copy carries the source's WAL flag in its header: a file that stands alone instead.
    dst.query_row("PRAGMA journal_mode = DELETE", [], |row| {
        row.get::<_, String>(0)
    })
    .map_err(backend)?;
    check_integrity(&dst)?;
    let pages: i64 = dst
        .query_row("PRAGMA page_count", [], |row| row.get(0))
        .map_err(backend)?;
    let page_size: i64 = dst
        .query_row("PRAGMA page_size", [], |row| row.get(0))
        .map_err(backend)?;
    let schema_version: i64 = dst
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(backend)?;
    dst.close().map_err(|(_, e)| backend(e))?;
    std::fs::File::open(dest)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Backend(format!("syncing {}: {e}", dest.display())))?;
    Ok((
        u64::try_from(pages).unwrap_or(0),
        u64::try_from(page_size).unwrap_or(0),
        schema_version,
    ))
}

/// Checks that `path` is a whole, uncorrupted fhirlink database this version can open: SQLite's
/// `integrity_check`, a schema version it knows, and the store's tables. Opens the file
/// read-only and changes nothing.
pub fn verify_database(path: &Path) -> Result<DatabaseInfo> {
    let not_ours = |why: String| {
        StoreError::Backend(format!(
            "{} is not a fhirlink database: {why}",
            path.display()
        ))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| not_ours(e.to_string()))?;
    let schema_version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    check_integrity(&conn)?;
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(|e| not_ours(e.to_string()))?;
    // 0: made before fhirlink stamped its databases (the tables below still say whose it is).
    if app != schema::APPLICATION_ID && app != 0 {
        return Err(not_ours(format!(
            "it is another application's (application_id {app:#010x})"
        )));
    }
    if !(1..=schema::SCHEMA_VERSION).contains(&schema_version) {
        return Err(not_ours(format!(
            "schema version {schema_version} (this fhirlink knows 1 to {})",
            schema::SCHEMA_VERSION
        )));
    }
    let services = conn
        .prepare("SELECT name FROM services ORDER BY name")
        .and_then(|mut st| {
            st.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| not_ours(e.to_string()))?;
    let count = |table: &str| {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            row.get::<_, i64>(0)
        })
        .map(|n| u64::try_from(n).unwrap_or(0))
        .map_err(|e| not_ours(e.to_string()))
    };
    Ok(DatabaseInfo {
        schema_version,
        resources: count("resources")?,
        documents: count("documents")?,
        services,
    })
}

/// The name of the lock file [`lock_data_folder`] takes in a data folder.
pub const FOLDER_LOCK_FILE: &str = crate::LOCK_FILE;

/// Takes the lock a running store holds on the data folder `dir` (which must exist), for work
/// that needs the folder to itself, such as laying a backup down; refused while a store has
/// it. The lock goes with the returned file.
pub fn lock_data_folder(dir: &Path) -> Result<std::fs::File> {
    crate::lock_folder(dir)
}

/// `PRAGMA integrity_check` answers one row, `ok`, or up to a hundred rows naming problems.
fn check_integrity(conn: &Connection) -> Result<()> {
    let problems = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| {
            st.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| StoreError::Backend(format!("integrity check failed: {e}")))?;
    if problems.len() == 1 && problems[0] == "ok" {
        return Ok(());
    }
    Err(StoreError::Backend(format!(
        "integrity check failed: {}",
        problems.into_iter().take(5).collect::<Vec<_>>().join("; ")
    )))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhir_store::{Method, Store};

    async fn write(store: &SqliteStore, id: &str) {
        let mut tx = store.begin("default").await.unwrap();
        tx.put(
            "Patient",
            id,
            serde_json::json!({"resourceType": "Patient", "id": id}),
            Method::Post,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_backup_taken_during_writes_holds_every_write_acknowledged_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("data")).unwrap());
        store.create_service("default").await.unwrap();
        for i in 0..200 {
            write(&store, &format!("before-{i}")).await;
        }
        // Writers go on through the backup.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    write(&store, &format!("during-{n}")).await;
                    n += 1;
                }
                n
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let dest = dir.path().join("copy.db");
        let report = {
            let (store, dest) = (store.clone(), dest.clone());
            tokio::task::spawn_blocking(move || store.backup_to(&dest))
                .await
                .unwrap()
                .unwrap()
        };
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let during = writer.await.unwrap();
        assert!(during > 0, "writes went on");
        assert_eq!(report.bytes, std::fs::metadata(&dest).unwrap().len());
        assert!(
            !with_suffix(&dest, "-wal").exists(),
            "a file that stands alone"
        );
        let info = verify_database(&dest).unwrap();
        assert_eq!(info.services, vec!["default".to_string()]);
        assert!(info.resources >= 200 && info.resources <= 200 + during);
        // The copy opens as a store, with every write from before the backup.
        let copy_dir = dir.path().join("restored");
        std::fs::create_dir(&copy_dir).unwrap();
        std::fs::rename(&dest, copy_dir.join(crate::DATABASE_FILE)).unwrap();
        let restored = SqliteStore::open(&copy_dir).unwrap();
        for i in 0..200 {
            let id = format!("before-{i}");
            assert!(restored
                .read("default", "Patient", &id)
                .await
                .unwrap()
                .is_some());
        }
        // An existing target is refused, not overwritten.
        let existing = dir.path().join("exists.db");
        std::fs::write(&existing, b"keep").unwrap();
        assert!(store.backup_to(&existing).is_err());
        assert_eq!(std::fs::read(&existing).unwrap(), b"keep");
    }

    #[test]
    fn what_is_not_a_whole_fhirlink_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let text = dir.path().join("text.db");
        std::fs::write(&text, b"not a database at all, just some words").unwrap();
        assert!(verify_database(&text).is_err());
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA user_version = 1;")
            .unwrap();
        let e = verify_database(&other).unwrap_err().to_string();
        assert!(e.contains("not a fhirlink database"), "{e}");
        let stamped = dir.path().join("stamped.db");
        Connection::open(&stamped)
            .unwrap()
            .execute_batch("CREATE TABLE t (x); PRAGMA application_id = 42;")
            .unwrap();
        let e = verify_database(&stamped).unwrap_err().to_string();
        assert!(e.contains("another application"), "{e}");
        let missing = dir.path().join("missing.db");
        assert!(verify_database(&missing).is_err());
        assert!(!missing.exists(), "verifying creates nothing");
    }
}
