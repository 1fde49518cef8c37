//! A write transaction: the writer connection held from `BEGIN IMMEDIATE` to `COMMIT`.
//!
//! Holding the connection's owned mutex guard is what serialises writers: a second
//! [`fhir_store::Store::begin`] waits for the guard, then sees everything the first committed.
//! Reads and writes inside the transaction run inline (microseconds, no fsync); the `COMMIT`,
//! which fsyncs the WAL, runs on tokio's blocking pool. Dropping the transaction without
//! committing rolls it back, so a cancelled request or a panic leaves nothing behind.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fhir_store::{Method, MonotonicClock, Result, StoreError, StoredResource, WriteTx};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::{backend, index, stored_from_row, VERSION_COLUMNS};

pub(crate) struct SqliteTx {
    /// `None` once committed.
    conn: Option<OwnedMutexGuard<Connection>>,
    sid: i64,
    clock: Arc<MonotonicClock>,
}

/// Rolls back a transaction that a failure left open on the writer connection, so that the
/// next user starts clean. Logged, not returned: the caller has nothing to do about it.
pub(crate) fn ensure_idle(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "rolling back a stale write transaction failed");
        }
    }
}

impl SqliteTx {
    pub(crate) fn begin(
        conn: OwnedMutexGuard<Connection>,
        service: &str,
        clock: Arc<MonotonicClock>,
    ) -> Result<SqliteTx> {
        ensure_idle(&conn);
        conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
        // From here on, Drop rolls back whatever happens.
        let mut tx = SqliteTx {
            conn: Some(conn),
            sid: 0,
            clock,
        };
        tx.sid = crate::service_id(tx.conn()?, service)?
            .ok_or_else(|| StoreError::NoSuchService(service.to_owned()))?;
        Ok(tx)
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn
            .as_deref()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))
    }

    /// The current version number of a resource, whether it is a deletion, and its `seq`.
    fn head(&self, rtype: &str, id: &str) -> Result<Option<(i64, bool, i64)>> {
        self.conn()?
            .prepare_cached(
                "SELECT version, deleted, seq FROM resources \
                 WHERE sid = ?1 AND rtype = ?2 AND id = ?3",
            )
            .and_then(|mut st| {
                st.query_row(params![self.sid, rtype, id], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                })
                .optional()
            })
            .map_err(backend)
    }

    /// Appends a version and points the resource at it. Returns the new version's `seq`.
    fn append(
        &self,
        rtype: &str,
        id: &str,
        version: i64,
        micros: i64,
        method: Method,
        body: Option<&[u8]>,
    ) -> Result<i64> {
        let conn = self.conn()?;
        conn.prepare_cached(
            "INSERT INTO versions (sid, rtype, id, version, last_updated, method, body) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .and_then(|mut st| {
            st.execute(params![
                self.sid,
                rtype,
                id,
                version,
                micros,
                method.code(),
                body
            ])
        })
        .map_err(backend)?;
        let seq = conn.last_insert_rowid();
        conn.prepare_cached(
            "INSERT INTO resources (sid, rtype, id, version, seq, deleted) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
             ON CONFLICT (sid, rtype, id) DO UPDATE \
             SET version = excluded.version, seq = excluded.seq, deleted = excluded.deleted",
        )
        .and_then(|mut st| st.execute(params![self.sid, rtype, id, version, seq, body.is_none()]))
        .map_err(backend)?;
        conn.prepare_cached(
            "INSERT INTO version_counts (sid, rtype, n) VALUES (?1, ?2, 1) \
             ON CONFLICT (sid, rtype) DO UPDATE SET n = n + 1",
        )
        .and_then(|mut st| st.execute(params![self.sid, rtype]))
        .map_err(backend)?;
        Ok(seq)
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            ensure_idle(&conn);
        }
    }
}

#[async_trait]
impl WriteTx for SqliteTx {
    async fn current(&mut self, rtype: &str, id: &str) -> Result<Option<StoredResource>> {
        self.conn()?
            .prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v ON v.seq = r.seq \
                 WHERE r.sid = ?1 AND r.rtype = ?2 AND r.id = ?3"
            ))
            .and_then(|mut st| {
                st.query_row(params![self.sid, rtype, id], |row| {
                    stored_from_row(row, 0, rtype.to_owned(), id.to_owned())
                })
                .optional()
            })
            .map_err(backend)
    }

    async fn put(
        &mut self,
        rtype: &str,
        id: &str,
        mut resource: Value,
        method: Method,
    ) -> Result<StoredResource> {
        let head = self.head(rtype, id)?;
        let version = head.map_or(1, |(v, _, _)| v + 1);
        let last_updated = self.clock.now();
        let number = u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("version {version} out of range")))?;
        fhir_store::stamp(&mut resource, id, number, &last_updated);
        let body = serde_json::to_vec(&resource)
            .map_err(|e| StoreError::Backend(format!("cannot serialise {rtype}/{id}: {e}")))?;
        // Only the current version is indexed: the previous one's rows go.
        if let Some((_, false, old)) = head {
            index::remove(self.conn()?, old)?;
        }
        let entries = fhir_search::extract(&resource);
        let seq = self.append(
            rtype,
            id,
            version,
            last_updated.timestamp_micros(),
            method,
            Some(&body),
        )?;
        index::insert(self.conn()?, self.sid, seq, &entries)?;
        Ok(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version: number,
            last_updated,
            method,
            body: Some(Bytes::from(body)),
        })
    }

    async fn delete(&mut self, rtype: &str, id: &str) -> Result<Option<StoredResource>> {
        let version = match self.head(rtype, id)? {
            Some((version, false, old)) => {
                index::remove(self.conn()?, old)?;
                version + 1
            }
            Some((_, true, _)) | None => return Ok(None),
        };
        let last_updated = self.clock.now();
        self.append(
            rtype,
            id,
            version,
            last_updated.timestamp_micros(),
            Method::Delete,
            None,
        )?;
        Ok(Some(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version: u64::try_from(version)
                .map_err(|_| StoreError::Backend(format!("version {version} out of range")))?,
            last_updated,
            method: Method::Delete,
            body: None,
        }))
    }

    async fn matching(
        &mut self,
        query: &fhir_store::SearchQuery,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        crate::search::matching(self.conn()?, self.sid, query, limit)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))?;
        // The fsync happens here; keep it off the async workers. Should this future be
        // dropped meanwhile, the blocking task still finishes (commit or rollback) and only
        // then releases the writer.
        tokio::task::spawn_blocking(move || {
            let result = conn.execute_batch("COMMIT").map_err(backend);
            if result.is_err() {
                ensure_idle(&conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))?
    }
}
