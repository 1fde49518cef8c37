//! The SQLite schema of a fhirlink store and the connection settings it is opened with.
//!
//! Five tables, and the search index. `services` names each FHIR service and gives it a never-reused number
//! (`sid`). `versions` holds every version of every resource, each under a global `seq`
//! (the rowid) that only grows: history is listed by `seq` and pages are cut by it.
//! `resources` points at the current version of each resource, so that a read is one
//! primary-key lookup and one rowid lookup. `version_counts` keeps the number of versions
//! per type for history totals, `resource_counts` the live resources per type for search
//! totals; `documents` holds the control plane's state; the `ix_*` tables are the search index.
//! No other module writes SQL DDL.
//!
//! One invariant the history queries rely on: `last_updated` grows with `seq`. Every version
//! is written under the single writer connection with an instant from the store's one
//! [`fhir_store::MonotonicClock`], which is advanced past the newest stored instant at open,
//! so a `_since`/`_at` instant can be turned into a `seq` bound with the `versions_time` index.
//!
//! A fhirlink database says so in its header (`PRAGMA application_id`, [`APPLICATION_ID`]),
//! and the file is identified before anything is written to it: bytes that are no SQLite
//! database, a damaged one, or another application's are refused at open, never served nor
//! converted; a fhirlink database from before the stamp is recognised by its tables.

use fhir_store::StoreError;
use rusqlite::Connection;

/// The schema version kept in `PRAGMA user_version`.
/// Version 2 added the search index tables; version 3 gave their rows a tuple group (`grp`,
/// composite parameters) and changed what is extracted. An older database is reindexed from
/// its current versions when opened. Version 4 added `resource_counts` (computed once from
/// `resources` when a version 3 database is opened) and the `resources_type_seq` and
/// `ix_date_hi` indexes.
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// The oldest schema version whose search index is kept as it is.
const INDEX_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS services (
    sid  INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS versions (
    seq          INTEGER PRIMARY KEY,
    sid          INTEGER NOT NULL,
    rtype        TEXT NOT NULL,
    id           TEXT NOT NULL,
    version      INTEGER NOT NULL,
    last_updated INTEGER NOT NULL,
    method       INTEGER NOT NULL,
    body         BLOB
);
-- vread and instance history. The rowid (seq) is the implicit last column of every index.
CREATE UNIQUE INDEX IF NOT EXISTS versions_instance ON versions (sid, rtype, id, version);
-- type history, ordered by the implicit seq.
CREATE INDEX IF NOT EXISTS versions_type ON versions (sid, rtype);
-- system history and delete_service, ordered by the implicit seq.
CREATE INDEX IF NOT EXISTS versions_system ON versions (sid);
-- _since/_at to seq bounds, and the newest instant at open.
CREATE INDEX IF NOT EXISTS versions_time ON versions (last_updated);

CREATE TABLE IF NOT EXISTS resources (
    sid     INTEGER NOT NULL,
    rtype   TEXT NOT NULL,
    id      TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq     INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    PRIMARY KEY (sid, rtype, id)
) WITHOUT ROWID;
-- A type's live resources in seq order: the default order of a search, walked from the
-- cursor and stopped after the page, never sorted.
CREATE INDEX IF NOT EXISTS resources_type_seq ON resources (sid, rtype, seq) WHERE deleted = 0;

-- Control-plane documents (fhir_store::Document), versioned for optimistic concurrency.
CREATE TABLE IF NOT EXISTS documents (
    collection TEXT NOT NULL,
    key        TEXT NOT NULL,
    version    INTEGER NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (collection, key)
) WITHOUT ROWID;

-- How many versions each type has, so that an unfiltered history total is not a count(*)
-- over the whole index.
CREATE TABLE IF NOT EXISTS version_counts (
    sid   INTEGER NOT NULL,
    rtype TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (sid, rtype)
) WITHOUT ROWID;

-- How many live (not deleted) resources each type has, kept in the write transaction, so
-- that an unfiltered search total or _summary=count is one row, not a count of the type.
CREATE TABLE IF NOT EXISTS resource_counts (
    sid   INTEGER NOT NULL,
    rtype TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (sid, rtype)
) WITHOUT ROWID;

-- The base URLs resources were written through (fhir_store::Prepared::with_base): an
-- absolute reference under one of them is indexed as relative, also when the index is rebuilt.
CREATE TABLE IF NOT EXISTS own_bases (
    url TEXT PRIMARY KEY
) WITHOUT ROWID;

-- The search index (see crate::index): rows of the current version of each resource only,
-- keyed by that version's seq. One table per value kind; each primary key starts with
-- (sid, pid, value…) so that a selective parameter is a range scan of it, and ends with seq.
-- The (seq, pid) indexes serve removal on update, per-resource probes of the other
-- conditions of a search, _include and sorting. Absent parts are '' (never NULL in a key).
-- grp is 0 except in the tuple rows of a composite parameter, where it numbers the tuple
-- (fhir_search::component_param): components of one tuple share seq and grp.
CREATE TABLE IF NOT EXISTS ix_string (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
    seq INTEGER NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, norm, exact, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_string_seq ON ix_string (seq, pid);

CREATE TABLE IF NOT EXISTS ix_token (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    seq INTEGER NOT NULL, grp INTEGER NOT NULL, text TEXT,
    PRIMARY KEY (sid, pid, code, system, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_token_seq ON ix_token (seq, pid);

CREATE TABLE IF NOT EXISTS ix_ref (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, ttype TEXT NOT NULL, tid TEXT NOT NULL,
    url TEXT NOT NULL, seq INTEGER NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, ttype, tid, url, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_ref_seq ON ix_ref (seq, pid);

CREATE TABLE IF NOT EXISTS ix_date (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    seq INTEGER NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, lo, hi, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_date_seq ON ix_date (seq, pid);
-- ge/gt/eb bound the end of a period (hi), which the primary key cannot range over.
CREATE INDEX IF NOT EXISTS ix_date_hi ON ix_date (sid, pid, hi);

CREATE TABLE IF NOT EXISTS ix_number (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    seq INTEGER NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, lo, hi, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_number_seq ON ix_number (seq, pid);

CREATE TABLE IF NOT EXISTS ix_quantity (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL,
    lo REAL NOT NULL, hi REAL NOT NULL, seq INTEGER NOT NULL, grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, code, system, lo, hi, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_quantity_seq ON ix_quantity (seq, pid);

CREATE TABLE IF NOT EXISTS ix_uri (
    sid INTEGER NOT NULL, pid INTEGER NOT NULL, value TEXT NOT NULL, seq INTEGER NOT NULL,
    grp INTEGER NOT NULL,
    PRIMARY KEY (sid, pid, value, seq, grp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ix_uri_seq ON ix_uri (seq, pid);
";

/// Settings of the writer connection. `synchronous=FULL` in WAL mode fsyncs the log on every
/// commit, so a commit that returned survives a crash or power loss. The page cache and the
/// checkpoint interval are sized for the search index, whose inserts land all over its
/// B-trees: with 64 MB and 16 MB the Synthea ingest ran at ~2,500 resources/s, with 256 MB and
/// 64 MB at ~3,200.
const WRITER_PRAGMAS: &str = "
PRAGMA synchronous = FULL;
PRAGMA cache_size = -262144;
PRAGMA mmap_size = 268435456;
PRAGMA journal_size_limit = 67108864;
PRAGMA wal_autocheckpoint = 16384;
PRAGMA temp_store = MEMORY;
";

/// Settings of each read connection: they never write.
/// The readers' `mmap_size` (READER_PRAGMAS), restored after a scan turned it off.
pub(crate) const READER_MMAP_SIZE: i64 = 268_435_456;

const READER_PRAGMAS: &str = "
PRAGMA cache_size = -16384;
PRAGMA mmap_size = 268435456;
PRAGMA temp_store = MEMORY;
PRAGMA query_only = 1;
";

const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings every connection needs before its first statement.
///
/// The query planner stability guarantee matters for speed: without it SQLite (built with
/// STAT4, as rusqlite bundles it) marks statements whose plan could depend on a bound value,
/// and re-prepares them on every new binding — which made each point read parse its SQL again.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(())
}

/// `PRAGMA application_id` of a fhirlink database ("FHLK"): what tells it from the database
/// of another application (<https://www.sqlite.org/fileformat.html#application_id>).
pub(crate) const APPLICATION_ID: i32 = 0x4648_4C4B;

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Tables every fhirlink database has had since its first schema: a database without the
/// application id (made before it was stamped) is recognised as fhirlink's by them.
const FHIRLINK_TABLES: [&str; 3] = ["resources", "services", "versions"];

/// What the file at `path` holds, judged before anything is written to it (switching a
/// foreign database to WAL would already change it): `None` for a new or empty database,
/// else the schema version of a fhirlink database. Anything else — bytes that are no SQLite
/// database, a damaged one, another application's — is refused with a message naming the file.
fn identify(conn: &Connection, path: &std::path::Path) -> Result<Option<i64>, StoreError> {
    check_header(path)?;
    let unreadable = |e: rusqlite::Error| refused(path, &e);
    let app: i32 = conn
        .query_row("PRAGMA application_id", [], |row| row.get(0))
        .map_err(unreadable)?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(unreadable)?;
    let tables: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .and_then(|mut st| {
            st.query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(unreadable)?;
    let foreign = |why: String| {
        let listed = if tables.is_empty() {
            "none".to_owned()
        } else {
            tables.join(", ")
        };
        StoreError::Backend(format!(
            "{} is not a fhirlink database: {why} (tables: {listed}); fhirlink will not serve \
             it. Point --data at another folder, or move the file away to start an empty store",
            path.display()
        ))
    };
    let newer = || {
        StoreError::Backend(format!(
            "{} has schema version {version}, newer than this fhirlink knows ({SCHEMA_VERSION})",
            path.display()
        ))
    };
    let ours = FHIRLINK_TABLES
        .iter()
        .all(|t| tables.iter().any(|have| have == t));
    match app {
        APPLICATION_ID if version > SCHEMA_VERSION => Err(newer()),
        APPLICATION_ID if version >= 1 && ours => Ok(Some(version)),
        APPLICATION_ID if tables.is_empty() => Ok(None),
        APPLICATION_ID => Err(foreign(format!(
            "it carries fhirlink's application id but not its schema (schema version {version})"
        ))),
        0 if tables.is_empty() && version == 0 => Ok(None),
        // Made before fhirlink stamped its databases: its tables say whose it is.
        0 if ours && version > SCHEMA_VERSION => Err(newer()),
        0 if ours && version >= 1 => Ok(Some(version)),
        0 => Err(foreign(format!(
            "it is the SQLite database of another application (schema version {version})"
        ))),
        other => Err(foreign(format!(
            "it is the SQLite database of another application (application_id {other:#010x})"
        ))),
    }
}

/// Refuses a file that is there but does not start like a SQLite database. An empty file is
/// a new database (SQLite writes the header with the first transaction).
fn check_header(path: &std::path::Path) -> Result<(), StoreError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(SQLITE_HEADER.len());
    match std::fs::File::open(path) {
        Ok(f) => f
            .take(SQLITE_HEADER.len() as u64)
            .read_to_end(&mut head)
            .map_err(|e| StoreError::Backend(format!("cannot read {}: {e}", path.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(StoreError::Backend(format!(
                "cannot open {}: {e}",
                path.display()
            )))
        }
    };
    if head.is_empty() || head.as_slice() == SQLITE_HEADER {
        return Ok(());
    }
    Err(StoreError::Backend(format!(
        "{} is not a SQLite database (it does not start with SQLite's header): it is damaged, \
         or another kind of file; fhirlink will not serve it. Restore it from a backup, or move \
         it away to start an empty store",
        path.display()
    )))
}

/// The refusal of a file SQLite cannot read as a database.
fn refused(path: &std::path::Path, e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => StoreError::Backend(format!(
            "{} is damaged or not a SQLite database ({e}); fhirlink will not serve it. \
                 Restore it from a backup, or move it away to start an empty store",
            path.display()
        )),
        _ => opening(path, e),
    }
}

/// Any other failure while opening the database, naming it (a full disk stays recognisable).
fn opening(path: &std::path::Path, e: &rusqlite::Error) -> StoreError {
    match crate::backend(clone_error(e)) {
        StoreError::StorageFull(m) => {
            StoreError::StorageFull(format!("opening {}: {m}", path.display()))
        }
        _ => StoreError::Backend(format!("cannot open {}: {e}", path.display())),
    }
}

/// The parts of a SQLite error that [`crate::backend`] looks at.
fn clone_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(f, m) => rusqlite::Error::SqliteFailure(*f, m.clone()),
        other => rusqlite::Error::InvalidParameterName(other.to_string()),
    }
}

/// Opens the writer connection, checks that the file is a fhirlink database (or a new one),
/// switches it to WAL and creates or upgrades the schema. The flag is true when the database
/// predates the search index, which must then be built.
pub(crate) fn open_writer(path: &std::path::Path) -> Result<(Connection, bool), StoreError> {
    let fail = |e: rusqlite::Error| opening(path, &e);
    let conn = Connection::open(path).map_err(|e| refused(path, &e))?;
    configure(&conn).map_err(fail)?;
    let found = identify(&conn, path)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Backend(format!(
            "could not switch {} to WAL (got {mode})",
            path.display()
        )));
    }
    conn.execute_batch(WRITER_PRAGMAS).map_err(fail)?;
    // An older index has another shape: dropped here, rebuilt by the caller.
    let reindex = found.is_some_and(|v| v < INDEX_VERSION);
    let drop_index: String = if reindex {
        crate::index::TABLES
            .iter()
            .map(|t| format!("DROP TABLE IF EXISTS {t};"))
            .collect()
    } else {
        String::new()
    };
    // The live counts of a database from before they were kept are computed once.
    let count = if found.is_some_and(|v| v < SCHEMA_VERSION) {
        "DELETE FROM resource_counts; INSERT INTO resource_counts (sid, rtype, n) \
         SELECT sid, rtype, count(*) FROM resources WHERE deleted = 0 GROUP BY sid, rtype;"
    } else {
        ""
    };
    // The application id is stamped with the schema, on a new database and on one made
    // before fhirlink stamped its databases alike.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {drop_index} {SCHEMA} {count} PRAGMA user_version = {SCHEMA_VERSION}; \
         PRAGMA application_id = {APPLICATION_ID}; COMMIT;"
    ))
    .map_err(|e| {
        crate::writer::ensure_idle(&conn);
        fail(e)
    })?;
    Ok((conn, reindex))
}

/// Settings of the checkpointer's connection. `synchronous=FULL` makes a checkpoint fsync
/// the database file before the WAL may be reused.
const CHECKPOINTER_PRAGMAS: &str = "
PRAGMA synchronous = FULL;
PRAGMA cache_size = -2048;
";

/// Opens the checkpointer's connection on a database that [`open_writer`] has prepared.
pub(crate) fn open_checkpointer(path: &std::path::Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    configure(&conn).map_err(|e| e.to_string())?;
    conn.execute_batch(CHECKPOINTER_PRAGMAS)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Opens one read connection on a database that [`open_writer`] has prepared.
pub(crate) fn open_reader(path: &std::path::Path) -> Result<Connection, String> {
    let conn = Connection::open(path).map_err(|e| e.to_string())?;
    configure(&conn).map_err(|e| e.to_string())?;
    conn.execute_batch(READER_PRAGMAS)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}
