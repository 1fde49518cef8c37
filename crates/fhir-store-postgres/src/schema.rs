//! The PostgreSQL schema of a fhirlink store, created and checked when a store connects. No
//! other module writes DDL.
//!
//! `services` names each FHIR service and gives it a never-reused number (`sid`); every
//! other key starts with it, so that Citus can distribute every table by `sid` and keep one
//! service's rows together (`services` and `documents` would be reference tables).
//! `service_clock` is the service's counter row: the last `seq` given out and the newest
//! `lastUpdated` stamped. A write transaction locks it (`SELECT … FOR UPDATE`) when it
//! begins and advances it when it commits, so the writers of one service run one after the
//! other, across every process using the database, and `seq` grows in commit order: history,
//! `_since` and snapshots are ranges of it. `versions` holds every version under
//! `(sid, rtype, id, version)`, with its `seq`; `resources` points at the current version
//! of each resource; `version_counts` keeps history totals and `resource_counts` the live
//! resources per type (search totals); `documents` holds the control
//! plane's state; the `ix_*` tables are the search index, rows of current versions only.
//!
//! Resource bodies are `bytea`, the bytes exactly as written: never `jsonb`, which would
//! reorder keys and rewrite number literals. Text that is compared or ordered is `COLLATE
//! "C"`, so that ranges and orders are by code point, as in the SQLite store, whatever the
//! database's collation.
//!
//! One invariant the history queries rely on: within a service, `last_updated` grows with
//! `seq` (each instant is the later of the wall clock and the last instant plus 1 µs, taken
//! under the service's lock), so a `_since`/`_at` instant becomes a `seq` bound.
//!
//! What the store asks of the server, for the Postgres-wire engines (only PostgreSQL 15 was
//! run; the rest is read from their documentation, untested): `SELECT … FOR UPDATE` on one
//! row, `INSERT … ON CONFLICT`, data-modifying `WITH` items, `unnest` of array parameters,
//! identity columns, `COLLATE "C"`, one partial index, `REPEATABLE READ READ ONLY`
//! snapshots, `SET LOCAL statement_timeout`, savepoints, and `NOTIFY`/`LISTEN` only as an
//! optional wake-up of the documents' change feed (engines without them are polled). No
//! triggers, advisory locks, sequences on hot keys or `jsonb`. On Citus every per-service table would be
//! distributed by `sid` and co-located, `services`, `documents`, `own_bases` and
//! `fhirlink_schema` reference tables; the begin statement joins `services` to the locked
//! `service_clock` row, which Citus may want split in two (look the `sid` up, then lock by
//! it). CockroachDB runs `SERIALIZABLE` and answers conflicts with 40001, which this store
//! turns into `Busy` (503) rather than retrying itself.

use fhir_store::{Result, StoreError};
use tokio_postgres::Client;

use crate::pg_error;

/// The schema version kept in `fhirlink_schema`. A database at a newer version is refused:
/// an older fhirlink must not write what it does not understand. Version 2 added
/// `resource_counts`, computed once from `resources` when a version 1 database is upgraded,
/// and `ix_date_hi`; version 3 the documents' change feed.
pub(crate) const SCHEMA_VERSION: i32 = 3;

/// The table that says the database is fhirlink's, and at which schema version.
const VERSION_TABLE: &str = "
CREATE TABLE IF NOT EXISTS fhirlink_schema (
    id      integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
)";

/// Version 1, created on an empty database.
const SCHEMA_V1: &str = r#"
CREATE TABLE IF NOT EXISTS services (
    sid  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS service_clock (
    sid         bigint PRIMARY KEY,
    seq         bigint NOT NULL,
    last_micros bigint NOT NULL
);

CREATE TABLE IF NOT EXISTS versions (
    sid          bigint NOT NULL,
    rtype        text COLLATE "C" NOT NULL,
    id           text COLLATE "C" NOT NULL,
    version      bigint NOT NULL,
    seq          bigint NOT NULL,
    last_updated timestamptz NOT NULL,
    method       smallint NOT NULL,
    body         bytea,
    PRIMARY KEY (sid, rtype, id, version)
);
-- system history, a version by its seq (search results, snapshots).
CREATE UNIQUE INDEX IF NOT EXISTS versions_seq ON versions (sid, seq);
-- type history.
CREATE INDEX IF NOT EXISTS versions_type ON versions (sid, rtype, seq);
-- _since/_at to seq bounds.
CREATE INDEX IF NOT EXISTS versions_time ON versions (sid, last_updated);

CREATE TABLE IF NOT EXISTS resources (
    sid     bigint NOT NULL,
    rtype   text COLLATE "C" NOT NULL,
    id      text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    seq     bigint NOT NULL,
    deleted boolean NOT NULL,
    PRIMARY KEY (sid, rtype, id)
);
-- Searches without an indexed condition (the type's live resources, in seq order).
CREATE INDEX IF NOT EXISTS resources_type ON resources (sid, rtype, seq) WHERE NOT deleted;
CREATE UNIQUE INDEX IF NOT EXISTS resources_seq ON resources (sid, seq);

CREATE TABLE IF NOT EXISTS version_counts (
    sid   bigint NOT NULL,
    rtype text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (sid, rtype)
);

CREATE TABLE IF NOT EXISTS documents (
    collection text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    version    bigint NOT NULL,
    body       bytea NOT NULL,
    PRIMARY KEY (collection, key)
);

CREATE TABLE IF NOT EXISTS own_bases (
    url text COLLATE "C" PRIMARY KEY
);

-- The search index: rows of the current version of each resource only, keyed by that
-- version's seq. Each primary key is (sid, pid, value…, seq, grp), so that a selective
-- parameter is a range scan of it; the (sid, seq, pid) indexes serve removal on update, the
-- per-resource probes of a search's other conditions, _include and sorting. Absent parts
-- are '' (never NULL in a key). grp numbers a composite's tuple, 0 elsewhere. Text values
-- are cut to crate::index::MAX_TEXT bytes: a B-tree entry must fit in a third of a page.
CREATE TABLE IF NOT EXISTS ix_string (
    sid bigint NOT NULL, pid bigint NOT NULL, norm text COLLATE "C" NOT NULL,
    exact text COLLATE "C" NOT NULL, seq bigint NOT NULL, grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, norm, exact, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_string_seq ON ix_string (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_token (
    sid bigint NOT NULL, pid bigint NOT NULL, code text COLLATE "C" NOT NULL,
    system text COLLATE "C" NOT NULL, seq bigint NOT NULL, grp bigint NOT NULL,
    text text COLLATE "C",
    PRIMARY KEY (sid, pid, code, system, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_token_seq ON ix_token (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_ref (
    sid bigint NOT NULL, pid bigint NOT NULL, ttype text COLLATE "C" NOT NULL,
    tid text COLLATE "C" NOT NULL, url text COLLATE "C" NOT NULL, seq bigint NOT NULL,
    grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, ttype, tid, url, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_ref_seq ON ix_ref (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_date (
    sid bigint NOT NULL, pid bigint NOT NULL, lo bigint NOT NULL, hi bigint NOT NULL,
    seq bigint NOT NULL, grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, lo, hi, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_date_seq ON ix_date (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_number (
    sid bigint NOT NULL, pid bigint NOT NULL, lo double precision NOT NULL,
    hi double precision NOT NULL, seq bigint NOT NULL, grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, lo, hi, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_number_seq ON ix_number (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_quantity (
    sid bigint NOT NULL, pid bigint NOT NULL, code text COLLATE "C" NOT NULL,
    system text COLLATE "C" NOT NULL, lo double precision NOT NULL,
    hi double precision NOT NULL, seq bigint NOT NULL, grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, code, system, lo, hi, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_quantity_seq ON ix_quantity (sid, seq, pid);

CREATE TABLE IF NOT EXISTS ix_uri (
    sid bigint NOT NULL, pid bigint NOT NULL, value text COLLATE "C" NOT NULL,
    seq bigint NOT NULL, grp bigint NOT NULL,
    PRIMARY KEY (sid, pid, value, seq, grp)
);
CREATE INDEX IF NOT EXISTS ix_uri_seq ON ix_uri (sid, seq, pid);
"#;

/// Version 2: the live resources per type, kept by the write transactions (added at commit
/// like `version_counts`), so that an unfiltered search total is one row per type. Run on
/// an empty database after version 1, and on a version 1 database it fills the counts from
/// what is there, under the schema row's lock.
const SCHEMA_V2: &str = r#"
CREATE TABLE IF NOT EXISTS resource_counts (
    sid   bigint NOT NULL,
    rtype text COLLATE "C" NOT NULL,
    n     bigint NOT NULL,
    PRIMARY KEY (sid, rtype)
);
DELETE FROM resource_counts;
-- ge/gt/eb bound the end of a period (hi), which the primary key cannot range over.
CREATE INDEX IF NOT EXISTS ix_date_hi ON ix_date (sid, pid, hi, seq);
INSERT INTO resource_counts (sid, rtype, n)
    SELECT sid, rtype, count(*) FROM resources WHERE NOT deleted GROUP BY sid, rtype;
"#;

/// Version 3: the documents' change feed (`docs.rs`): the deployment's position, and each
/// document's latest change (deletions included) at its position.
const SCHEMA_V3: &str = r#"
CREATE TABLE IF NOT EXISTS document_clock (
    id  integer PRIMARY KEY CHECK (id = 1),
    seq bigint NOT NULL
);
INSERT INTO document_clock (id, seq) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;

CREATE TABLE IF NOT EXISTS document_changes (
    collection text COLLATE "C" NOT NULL,
    key        text COLLATE "C" NOT NULL,
    version    bigint,
    seq        bigint NOT NULL,
    PRIMARY KEY (collection, key)
);
CREATE INDEX IF NOT EXISTS document_changes_seq ON document_changes (seq);
"#;

/// SQLSTATEs of a `CREATE … IF NOT EXISTS` that raced another one (the catalog's unique
/// index, the relation itself, or its row type — `42710 type "fhirlink_schema" already
/// exists`, seen once in CI): the other process created it, which is what was wanted.
fn raced(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::UNIQUE_VIOLATION
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_OBJECT
    })
}

/// Creates the schema on an empty database, or checks the one there. Safe when several
/// processes connect at once: the version row is locked for the whole creation, so one
/// creates and the others then find it done. A database at a newer schema version is refused.
pub(crate) async fn prepare(client: &mut Client) -> Result<()> {
    let mut attempts = 0;
    loop {
        match client.batch_execute(VERSION_TABLE).await {
            Ok(()) => break,
            Err(e) if raced(&e) && attempts < 5 => attempts += 1,
            Err(e) => return Err(pg_error(e)),
        }
    }
    let tx = client.transaction().await.map_err(pg_error)?;
    tx.execute(
        "INSERT INTO fhirlink_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
        &[],
    )
    .await
    .map_err(pg_error)?;
    let found: i32 = tx
        .query_one(
            "SELECT version FROM fhirlink_schema WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    if found > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "the database has fhirlink schema version {found}, newer than this fhirlink knows \
             ({SCHEMA_VERSION}); upgrade fhirlink, or point it at another database"
        )));
    }
    if found < SCHEMA_VERSION {
        if found < 1 {
            tx.batch_execute(SCHEMA_V1).await.map_err(pg_error)?;
        }
        if found < 2 {
            tx.batch_execute(SCHEMA_V2).await.map_err(pg_error)?;
        }
        tx.batch_execute(SCHEMA_V3).await.map_err(pg_error)?;
        tx.execute(
            "UPDATE fhirlink_schema SET version = $1 WHERE id = 1",
            &[&SCHEMA_VERSION],
        )
        .await
        .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(())
}

/// Every index table, for removals and for deleting a service.
pub(crate) const INDEX_TABLES: &[&str] = &[
    "ix_string",
    "ix_token",
    "ix_ref",
    "ix_date",
    "ix_number",
    "ix_quantity",
    "ix_uri",
];
