//! The SQLite backend of the fhirlink store: one database file, `fhirlink.db`, in a data folder.
//!
//! [`SqliteStore`] keeps one writer connection, taken whole by each [`WriteTx`] from its start
//! to its commit (SQLite admits one writer at a time anyway), with concurrent transactions
//! committed together ([`writer`]); a checkpointer thread with its own connection; and a small
//! pool of read connections that see the last committed state through WAL snapshots. Point
//! reads run inline on the async worker — they cost microseconds — while anything that fsyncs
//! (a commit, service creation and deletion) runs on tokio's blocking pool. The schema and its
//! invariants are in [`schema`]; this crate knows SQL and files, and nothing of HTTP.

mod backup;
mod docs;
mod index;
mod scan;
mod schema;
mod search;
mod tx;
mod writer;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fhir_store::{
    Document, DocumentChanges, DocumentStore, DocumentWrite, HistoryPage, HistoryQuery,
    HistoryScope, Method, MonotonicClock, Result, ScanQuery, SearchPage, SearchQuery, Snapshot,
    Store, StoreError, StoredResource, WriteTx,
};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

pub use backup::{lock_data_folder, verify_database, BackupReport, DatabaseInfo, FOLDER_LOCK_FILE};

/// The name of the database file inside the data folder.
pub const DATABASE_FILE: &str = "fhirlink.db";

/// The file whose lock keeps a second store off the same data folder.
const LOCK_FILE: &str = "fhirlink.lock";

/// How long [`lock_folder`] waits for a lock that is held.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_secs(2);

/// A store in one SQLite database.
pub struct SqliteStore {
    writer: writer::SharedWriter,
    /// Dropped with the store, which ends its thread.
    _checkpointer: Option<writer::Checkpointer>,
    readers: ReaderPool,
    clock: Arc<MonotonicClock>,
    /// The names of the services in the store. Every request asks whether its service
    /// exists, and the folder lock makes this store the only one that creates or deletes
    /// services, so the set is kept here, loaded at open and changed on the writer right
    /// after each commit (so in commit order), instead of being looked up in the database
    /// per request.
    known_services: Arc<std::sync::RwLock<std::collections::HashSet<String>>>,
    /// The documents' change feed, in this process only (the folder lock makes this store
    /// the only writer of its documents).
    feed: Arc<fhir_store::feed::LocalFeed>,
    /// How long one search may run ([`SEARCH_TIME_LIMIT`] unless set).
    search_time_limit: std::time::Duration,
    /// Held open and locked for the store's life: one store per data folder, so that one
    /// clock stamps every version (see [`schema`]). The OS releases it when the process dies.
    _folder_lock: std::fs::File,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("readers", &self.readers.conns.len())
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens the store in `dir`, creating the folder and `fhirlink.db` on first start.
    pub fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| io_error(format!("cannot create data folder {}", dir.display()), &e))?;
        let folder_lock = lock_folder(dir)?;
        let path = dir.join(DATABASE_FILE);
        let (writer, reindex) = schema::open_writer(&path)?;
        if reindex {
            writer.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
            let built = index::rebuild(&writer);
            writer
                .execute_batch(if built.is_ok() { "COMMIT" } else { "ROLLBACK" })
                .map_err(backend)?;
            built?;
        }
        // The checkpointer takes over the writer's automatic checkpoints, off its commits.
        let (signal, checkpointer) = match schema::open_checkpointer(&path)
            .and_then(|conn| writer::Checkpointer::spawn(conn).map_err(|e| e.to_string()))
        {
            Ok(c) => {
                writer
                    .execute_batch("PRAGMA wal_autocheckpoint = 0")
                    .map_err(backend)?;
                (Some(c.signal()), Some(c))
            }
            Err(e) => {
                tracing::warn!(error = %e, "no checkpointer thread; the writer checkpoints");
                (None, None)
            }
        };
        let clock = MonotonicClock::default();
        let newest: Option<i64> = writer
            .query_row("SELECT max(last_updated) FROM versions", [], |row| {
                row.get(0)
            })
            .map_err(backend)?;
        if let Some(newest) = newest {
            clock.advance_past(&micros_to_instant(newest)?);
        }
        let known_services = writer
            .prepare("SELECT name FROM services")
            .and_then(|mut st| {
                st.query_map([], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()
            })
            .map_err(backend)?;
        let size = std::thread::available_parallelism().map_or(4, |n| n.get() * 2);
        let conns = (0..size.max(2))
            .map(|_| schema::open_reader(&path).map(std::sync::Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StoreError::Backend)?;
        Ok(SqliteStore {
            writer: Arc::new(tokio::sync::Mutex::new(writer::Writer::new(writer, signal))),
            _checkpointer: checkpointer,
            readers: ReaderPool {
                conns,
                next: AtomicUsize::new(0),
            },
            clock: Arc::new(clock),
            known_services: Arc::new(std::sync::RwLock::new(known_services)),
            feed: Arc::default(),
            search_time_limit: SEARCH_TIME_LIMIT,
            _folder_lock: folder_lock,
        })
    }

    /// The longest one search may run before it is stopped (default [`SEARCH_TIME_LIMIT`]).
    pub fn with_search_time_limit(mut self, limit: std::time::Duration) -> SqliteStore {
        self.search_time_limit = limit;
        self
    }

    /// Runs `f` on the writer connection on the blocking pool, for work that commits, after
    /// whatever a group left open is committed. One at a time, in order: what `f` changes
    /// beside the database (the known services) changes in commit order too.
    async fn with_writer<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let mut w = self.writer.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || {
            // Whatever a group left open is committed first, for its members.
            w.flush();
            f(&mut w.conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("storage task failed: {e}")))?
    }
}

/// Takes the exclusive lock on `fhirlink.lock` in the data folder. A lock held a moment
/// longer than its store is waited for, up to [`LOCK_PATIENCE`]: a store closed just before
/// (the process restarting, or a child forked meanwhile that still shares the descriptor
/// until it execs) lets go shortly; another running store does not.
fn lock_folder(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io_error(format!("cannot open {}", path.display()), &e))?;
    let until = std::time::Instant::now() + LOCK_PATIENCE;
    let mut tried = file.try_lock();
    while matches!(tried, Err(std::fs::TryLockError::WouldBlock))
        && std::time::Instant::now() < until
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
        tried = file.try_lock();
    }
    match tried {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Backend(format!(
            "data folder {} is in use by another fhirlink store",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Backend(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// Read connections; each call takes a free one, or waits for one if all are busy.
struct ReaderPool {
    conns: Vec<std::sync::Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReaderPool {
    fn with<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        self.with_mut(|conn| f(conn))
    }

    fn with_mut<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        for i in 0..n {
            if let Ok(mut conn) = self.conns[(start + i) % n].try_lock() {
                return f(&mut conn);
            }
        }
        // All busy: a poisoned connection is still usable, its statements reset when dropped.
        let mut conn = self.conns[start % n]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&mut conn)
    }
}

/// How long one search may run before it is stopped with [`StoreError::TooCostly`], unless
/// [`SqliteStore::with_search_time_limit`] says otherwise: a search the indexes cannot bound
/// must not hold a reader (and a core) without end.
pub const SEARCH_TIME_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// SQLite calls the progress handler every this many virtual-machine steps (a few
/// microseconds; the check is one clock read): often enough to stop on time, rarely enough
/// to cost nothing measurable.
const PROGRESS_STEPS: std::os::raw::c_int = 1_000;

/// Maps a SQLite error to the store's: busy and locked become [`StoreError::Busy`], a full
/// disk [`StoreError::StorageFull`] — `SQLITE_FULL` (a write that got `ENOSPC`), and
/// `SQLITE_IOERR_SHMSIZE`, the shared-memory index that could not grow (on tmpfs, the same).
pub(crate) fn backend(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match &e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(f.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
        {
            StoreError::Busy
        }
        rusqlite::Error::SqliteFailure(f, _)
            if f.code == ErrorCode::DiskFull
                || f.extended_code == rusqlite::ffi::SQLITE_IOERR_SHMSIZE =>
        {
            StoreError::StorageFull(e.to_string())
        }
        // Only the search's progress handler interrupts (see `search`).
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::OperationInterrupted => {
            StoreError::TooCostly(e.to_string())
        }
        _ => StoreError::Backend(e.to_string()),
    }
}

/// Maps a file-system error: `ENOSPC` (and a quota exceeded) is a full disk.
pub(crate) fn io_error(context: String, e: &std::io::Error) -> StoreError {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            StoreError::StorageFull(format!("{context}: {e}"))
        }
        _ => StoreError::Backend(format!("{context}: {e}")),
    }
}

pub(crate) fn micros_to_instant(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Backend(format!("stored instant {micros} is out of range")))
}

fn version_to_sql(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| StoreError::Backend(format!("version {version} too large")))
}

/// The columns every version query selects, in this order, after any leading ones.
pub(crate) const VERSION_COLUMNS: &str = "v.version, v.last_updated, v.method, v.body";

/// Builds a [`StoredResource`] from [`VERSION_COLUMNS`] starting at column `at`.
pub(crate) fn stored_from_row(
    row: &Row<'_>,
    at: usize,
    rtype: String,
    id: String,
) -> rusqlite::Result<StoredResource> {
    let version: i64 = row.get(at)?;
    let micros: i64 = row.get(at + 1)?;
    let method: i64 = row.get(at + 2)?;
    let body = row
        .get_ref(at + 3)?
        .as_blob_or_null()?
        .map(Bytes::copy_from_slice);
    Ok(StoredResource {
        resource_type: rtype,
        id,
        version: u64::try_from(version)
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(at, version))?,
        last_updated: DateTime::from_timestamp_micros(micros)
            .ok_or(rusqlite::Error::IntegralValueOutOfRange(at + 1, micros))?,
        method: Method::from_code(method),
        body,
    })
}

fn service_id(conn: &Connection, service: &str) -> Result<Option<i64>> {
    conn.prepare_cached("SELECT sid FROM services WHERE name = ?1")
        .and_then(|mut st| st.query_row([service], |row| row.get(0)).optional())
        .map_err(backend)
}

fn require_service(conn: &Connection, service: &str) -> Result<i64> {
    service_id(conn, service)?.ok_or_else(|| StoreError::NoSuchService(service.to_owned()))
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_service(&self, name: &str) -> Result<()> {
        if self.service_exists(name).await? {
            return Ok(());
        }
        let name = name.to_owned();
        let known = self.known_services.clone();
        self.with_writer(move |conn| {
            conn.prepare_cached(
                "INSERT INTO services (name) VALUES (?1) ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut st| st.execute([&name]))
            .map_err(backend)?;
            write_known(&known).insert(name);
            Ok(())
        })
        .await
    }

    async fn delete_service(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        let known = self.known_services.clone();
        self.with_writer(move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let Some(sid) = service_id(&tx, &name)? else {
                return Ok(false);
            };
            tx.execute("DELETE FROM versions WHERE sid = ?1", [sid])
                .and_then(|_| tx.execute("DELETE FROM resources WHERE sid = ?1", [sid]))
                .and_then(|_| tx.execute("DELETE FROM version_counts WHERE sid = ?1", [sid]))
                .and_then(|_| tx.execute("DELETE FROM resource_counts WHERE sid = ?1", [sid]))
                .and_then(|_| {
                    index::TABLES.iter().try_for_each(|t| {
                        tx.execute(&format!("DELETE FROM {t} WHERE sid = ?1"), [sid])
                            .map(drop)
                    })
                })
                .and_then(|_| tx.execute("DELETE FROM services WHERE sid = ?1", [sid]))
                .and_then(|_| tx.commit())
                .map_err(backend)?;
            write_known(&known).remove(&name);
            Ok(true)
        })
        .await
    }

    async fn list_services(&self) -> Result<Vec<String>> {
        self.readers.with(|conn| {
            let mut st = conn
                .prepare_cached("SELECT name FROM services ORDER BY name")
                .map_err(backend)?;
            let names = st
                .query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
                .map_err(backend)?;
            Ok(names)
        })
    }

    async fn service_exists(&self, name: &str) -> Result<bool> {
        Ok(self
            .known_services
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(name))
    }

    async fn read(&self, service: &str, rtype: &str, id: &str) -> Result<Option<StoredResource>> {
        self.readers.with(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLUMNS} FROM services s \
                     JOIN resources r ON r.sid = s.sid \
                     JOIN versions v ON v.seq = r.seq \
                     WHERE s.name = ?1 AND r.rtype = ?2 AND r.id = ?3"
                ))
                .and_then(|mut st| {
                    st.query_row(params![service, rtype, id], |row| {
                        stored_from_row(row, 0, rtype.to_owned(), id.to_owned())
                    })
                    .optional()
                })
                .map_err(backend)?;
            if found.is_none() {
                require_service(conn, service)?;
            }
            Ok(found)
        })
    }

    async fn vread(
        &self,
        service: &str,
        rtype: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>> {
        let version = version_to_sql(version)?;
        self.readers.with(|conn| {
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {VERSION_COLUMNS} FROM services s \
                     JOIN versions v ON v.sid = s.sid \
                     WHERE s.name = ?1 AND v.rtype = ?2 AND v.id = ?3 AND v.version = ?4"
                ))
                .and_then(|mut st| {
                    st.query_row(params![service, rtype, id, version], |row| {
                        stored_from_row(row, 0, rtype.to_owned(), id.to_owned())
                    })
                    .optional()
                })
                .map_err(backend)?;
            if found.is_none() {
                require_service(conn, service)?;
            }
            Ok(found)
        })
    }

    async fn history(
        &self,
        service: &str,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<HistoryPage> {
        self.readers.with(|conn| {
            // One snapshot for the bounds, the total and the page, so that they agree.
            let snapshot = conn.unchecked_transaction().map_err(backend)?;
            let page = history(
                &snapshot,
                require_service(&snapshot, service)?,
                scope,
                query,
            )?;
            snapshot.finish().map_err(backend)?;
            Ok(page)
        })
    }

    async fn search(&self, service: &str, query: &SearchQuery) -> Result<SearchPage> {
        let now = self.clock.now().timestamp_micros();
        let limit = self.search_time_limit;
        self.readers.with_mut(|conn| {
            let deadline = std::time::Instant::now() + limit;
            conn.progress_handler(
                PROGRESS_STEPS,
                Some(move || std::time::Instant::now() >= deadline),
            )
            .map_err(backend)?;
            let page = (|| {
                // One snapshot for the page, its total and its includes.
                let snapshot = conn.unchecked_transaction().map_err(backend)?;
                let sid = require_service(&snapshot, service)?;
                let page = search::search(&snapshot, sid, query, now)?;
                snapshot.finish().map_err(backend)?;
                Ok(page)
            })();
            let _ = conn.progress_handler(0, None::<fn() -> bool>);
            page.map_err(|e| match e {
                StoreError::TooCostly(_) => {
                    StoreError::TooCostly(format!(
                        "the search ran longer than its limit of {} ms and was stopped; narrow it (more selective parameters, _total=none, a smaller _count)",
                        limit.as_millis()
                    ))
                }
                other => other,
            })
        })
    }

    async fn snapshot(&self, service: &str) -> Result<Snapshot> {
        let now = self.clock.now().timestamp_micros();
        self.readers.with(|conn| {
            require_service(conn, service)?;
            scan::snapshot(conn, now)
        })
    }

    async fn scan(
        &self,
        service: &str,
        rtype: &str,
        query: &ScanQuery,
    ) -> Result<Vec<StoredResource>> {
        self.readers.with(|conn| {
            // A scan reads a whole type once (a bulk export): through SQLite's own reads, not
            // the memory map the searches use, so that the pages it passes over are the
            // kernel's page cache rather than the server's resident memory (a 640 MB
            // database exported whole put ~800 MB of mapped pages in its RSS).
            conn.pragma_update(None, "mmap_size", 0).map_err(backend)?;
            let read = (|| {
                let snapshot = conn.unchecked_transaction().map_err(backend)?;
                let page = scan::scan(
                    &snapshot,
                    require_service(&snapshot, service)?,
                    rtype,
                    query,
                )?;
                snapshot.finish().map_err(backend)?;
                Ok(page)
            })();
            conn.pragma_update(None, "mmap_size", schema::READER_MMAP_SIZE)
                .map_err(backend)?;
            read
        })
    }

    async fn begin(&self, service: &str) -> Result<Box<dyn WriteTx>> {
        let conn = self.writer.clone().lock_owned().await;
        let tx = tx::SqliteTx::begin(self.writer.clone(), conn, service, self.clock.clone())?;
        Ok(Box::new(tx))
    }

    async fn own_bases(&self) -> Result<Vec<String>> {
        self.readers.with(|conn| {
            conn.prepare_cached("SELECT url FROM own_bases ORDER BY url")
                .and_then(|mut st| {
                    st.query_map([], |row| row.get(0))?
                        .collect::<rusqlite::Result<Vec<String>>>()
                })
                .map_err(backend)
        })
    }
}

#[async_trait]
impl DocumentStore for SqliteStore {
    async fn get_document(&self, collection: &str, key: &str) -> Result<Option<Document>> {
        self.readers.with(|conn| docs::get(conn, collection, key))
    }
    async fn list_documents(&self, collection: &str) -> Result<Vec<Document>> {
        self.readers.with(|conn| docs::list(conn, collection))
    }
    async fn write_documents(&self, writes: Vec<DocumentWrite>) -> Result<Vec<Document>> {
        let feed = self.feed.clone();
        self.with_writer(move |conn| {
            // On the writer, before the batch: every earlier write is in the feed already.
            feed.check_unchanged(&writes)?;
            let (written, changes) = docs::write(conn, writes)?;
            // On the writer, right after the commit: the feed is in commit order.
            feed.record(changes);
            Ok(written)
        })
        .await
    }
    async fn document_changes(
        &self,
        after: u64,
        wait: std::time::Duration,
    ) -> Result<DocumentChanges> {
        Ok(self.feed.changes(after, wait).await)
    }
}

/// One page of a history. `_since` and `_at` become `seq` bounds (see [`schema`]), so that
/// every query is a range scan of one index, newest first, that stops after the page.
fn history(
    conn: &Connection,
    sid: i64,
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> Result<HistoryPage> {
    let mut lo = 0_i64;
    let mut hi = i64::MAX;
    if let Some(since) = &query.since {
        lo = conn
            .prepare_cached(
                "SELECT seq FROM versions WHERE last_updated >= ?1 \
                 ORDER BY last_updated ASC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([since.timestamp_micros()], |row| row.get(0))
                    .optional()
            })
            .map_err(backend)?
            .unwrap_or(i64::MAX);
    }
    if let Some(at) = &query.at {
        hi = conn
            .prepare_cached(
                "SELECT seq FROM versions WHERE last_updated <= ?1 \
                 ORDER BY last_updated DESC LIMIT 1",
            )
            .and_then(|mut st| {
                st.query_row([at.timestamp_micros()], |row| row.get(0))
                    .optional()
            })
            .map_err(backend)?
            .unwrap_or(-1);
    }
    let page_hi = match query.before {
        Some(before) => hi.min(before.saturating_sub(1)),
        None => hi,
    };
    // Parameters: ?1 sid, ?2 lowest seq, ?3 highest seq, ?4 rtype, ?5 id (as the scope needs).
    let (filter, order, rtype, id): (&str, &str, Option<&str>, Option<&str>) = match scope {
        HistoryScope::System => (
            "versions v INDEXED BY versions_system WHERE v.sid = ?1",
            "v.seq",
            None,
            None,
        ),
        HistoryScope::Type(rtype) => (
            "versions v INDEXED BY versions_type WHERE v.sid = ?1 AND v.rtype = ?4",
            "v.seq",
            Some(rtype.as_str()),
            None,
        ),
        // Within one resource, version order is seq order, and the index is in version order.
        HistoryScope::Instance(rtype, id) => (
            "versions v INDEXED BY versions_instance \
             WHERE v.sid = ?1 AND v.rtype = ?4 AND v.id = ?5",
            "v.version",
            Some(rtype.as_str()),
            Some(id.as_str()),
        ),
    };
    let total: i64 = match (scope, query.since.is_some() || query.at.is_some()) {
        // Unfiltered type and system totals come from the kept counts.
        (HistoryScope::System, false) => conn
            .prepare_cached("SELECT coalesce(sum(n), 0) FROM version_counts WHERE sid = ?1")
            .and_then(|mut st| st.query_row(params![sid], |row| row.get(0))),
        (HistoryScope::Type(_), false) => conn
            .prepare_cached(
                "SELECT coalesce(sum(n), 0) FROM version_counts WHERE sid = ?1 AND rtype = ?2",
            )
            .and_then(|mut st| st.query_row(params![sid, rtype], |row| row.get(0))),
        _ => conn
            .prepare_cached(&format!(
                "SELECT count(*) FROM {filter} AND v.seq BETWEEN ?2 AND ?3"
            ))
            .and_then(|mut st| match scope {
                HistoryScope::System => st.query_row(params![sid, lo, hi], |row| row.get(0)),
                HistoryScope::Type(_) => {
                    st.query_row(params![sid, lo, hi, rtype], |row| row.get(0))
                }
                HistoryScope::Instance(..) => {
                    st.query_row(params![sid, lo, hi, rtype, id], |row| row.get(0))
                }
            }),
    }
    .map_err(backend)?;
    let mut entries = Vec::new();
    let mut next = None;
    if query.count > 0 && page_hi >= lo {
        // One row more than the page tells whether there is a next page. ?6 is the limit, so
        // every page statement has six parameter slots; ?4 and ?5 stay unread by narrower scopes.
        let limit = i64::try_from(query.count).unwrap_or(i64::MAX - 1) + 1;
        let mut st = conn
            .prepare_cached(&format!(
                "SELECT v.seq, v.rtype, v.id, {VERSION_COLUMNS} FROM {filter} \
                 AND v.seq BETWEEN ?2 AND ?3 ORDER BY {order} DESC LIMIT ?6"
            ))
            .map_err(backend)?;
        let mut rows = st
            .query(params![sid, lo, page_hi, rtype, id, limit])
            .map_err(backend)?;
        let mut last_seq = None;
        while let Some(row) = rows.next().map_err(backend)? {
            if entries.len() == query.count {
                next = last_seq;
                break;
            }
            let seq: i64 = row.get(0).map_err(backend)?;
            let rtype: String = row.get(1).map_err(backend)?;
            let id: String = row.get(2).map_err(backend)?;
            entries.push(stored_from_row(row, 3, rtype, id).map_err(backend)?);
            last_seq = Some(seq);
        }
    }
    Ok(HistoryPage {
        entries,
        total: u64::try_from(total).unwrap_or(0),
        next,
    })
}

/// The known services, to change (a poisoned lock still holds a whole set: each change is
/// one insert or remove).
fn write_known(
    known: &std::sync::RwLock<std::collections::HashSet<String>>,
) -> std::sync::RwLockWriteGuard<'_, std::collections::HashSet<String>> {
    known
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
