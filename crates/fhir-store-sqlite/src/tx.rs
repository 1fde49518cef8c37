//! A write transaction: the writer connection held from its savepoint to its release (see
//! [`crate::writer`] for how released transactions are committed together).
//!
//! Holding the connection's owned mutex guard is what serialises writers: a second
//! [`fhir_store::Store::begin`] waits for the guard, then sees everything the first released.
//! Reads and writes inside the transaction run inline (microseconds, no fsync); the `COMMIT`,
//! which fsyncs the WAL, runs on tokio's blocking pool. Dropping the transaction without
//! committing rolls it back to its savepoint, so a cancelled request or a panic leaves nothing
//! behind.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use fhir_store::{
    Method, MonotonicClock, Prepared, Result, StoreError, StoredResource, VersionWrite, WriteTx,
};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::writer::{SharedWriter, Writer};
use crate::{backend, index, stored_from_row, VERSION_COLUMNS};

pub(crate) struct SqliteTx {
    /// `None` once committed.
    conn: Option<OwnedMutexGuard<Writer>>,
    shared: SharedWriter,
    sid: i64,
    clock: Arc<MonotonicClock>,
    /// Base URLs the resources written came through, recorded once at commit.
    bases: Vec<String>,
}

impl SqliteTx {
    pub(crate) fn begin(
        shared: SharedWriter,
        mut conn: OwnedMutexGuard<Writer>,
        service: &str,
        clock: Arc<MonotonicClock>,
    ) -> Result<SqliteTx> {
        conn.begin()?;
        // From here on, Drop rolls back whatever happens.
        let mut tx = SqliteTx {
            conn: Some(conn),
            shared,
            sid: 0,
            clock,
            bases: Vec::new(),
        };
        tx.sid = crate::service_id(tx.conn()?, service)?
            .ok_or_else(|| StoreError::NoSuchService(service.to_owned()))?;
        Ok(tx)
    }

    fn conn(&self) -> Result<&Connection> {
        self.conn
            .as_deref()
            .map(|w| &w.conn)
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))
    }

    /// Remembers the base URLs a written resource came through, once each, for the commit.
    fn add_bases(&mut self, bases: Vec<String>) {
        for base in bases {
            if !self.bases.contains(&base) {
                self.bases.push(base);
            }
        }
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
    /// `was_live` says whether the version before it (if any) was live, so that the type's
    /// live count changes exactly when a resource appears or goes.
    #[allow(clippy::too_many_arguments)]
    fn append(
        &self,
        was_live: bool,
        rtype: &str,
        id: &str,
        version: i64,
        micros: i64,
        method: Method,
        body: Option<&[u8]>,
    ) -> Result<i64> {
        let seq = self.append_version(rtype, id, version, micros, method, body)?;
        let delta = i64::from(body.is_some()) - i64::from(was_live);
        count(self.conn()?, self.sid, rtype, 1, delta)?;
        Ok(seq)
    }

    /// The version row and the resource's pointer to it (what [`SqliteTx::append`] writes
    /// besides the counts).
    fn append_version(
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
        Ok(seq)
    }
}

/// Adds `versions` to a type's version count and `live` to its live count.
fn count(conn: &Connection, sid: i64, rtype: &str, versions: i64, live: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO version_counts (sid, rtype, n) VALUES (?1, ?2, ?3) \
         ON CONFLICT (sid, rtype) DO UPDATE SET n = n + excluded.n",
    )
    .and_then(|mut st| st.execute(params![sid, rtype, versions]))
    .map_err(backend)?;
    if live != 0 {
        conn.prepare_cached(
            "INSERT INTO resource_counts (sid, rtype, n) VALUES (?1, ?2, ?3) \
             ON CONFLICT (sid, rtype) DO UPDATE SET n = n + excluded.n",
        )
        .and_then(|mut st| st.execute(params![sid, rtype, live]))
        .map_err(backend)?;
    }
    Ok(())
}

impl SqliteTx {
    /// [`WriteTx::put_version`]; with `pending`, the index rows are held there for the end
    /// of the batch instead of written now.
    fn write_version(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        last_updated: chrono::DateTime<chrono::Utc>,
        prepared: Option<Prepared>,
        mut pending: Option<&mut index::Pending>,
    ) -> Result<Option<StoredResource>> {
        let number = i64::try_from(version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| StoreError::Backend(format!("version {version} out of range")))?;
        let head = self.head(rtype, id)?;
        if head.is_some_and(|(v, _, _)| v >= number) {
            return Ok(None);
        }
        self.clock.advance_past(&last_updated);
        let (method, body, entries) = match prepared {
            Some(prepared) => {
                let (body, entries, bases) =
                    prepared.into_version(rtype, id, version, &last_updated)?;
                self.add_bases(bases);
                let method = if head.is_none() {
                    Method::Post
                } else {
                    Method::Put
                };
                (method, Some(body), entries)
            }
            None => (Method::Delete, None, Vec::new()),
        };
        if let Some((_, false, old)) = head {
            // Rows of a version written earlier in this batch are still held, not stored.
            if !pending.as_deref_mut().is_some_and(|p| p.remove(old)) {
                index::remove(self.conn()?, old)?;
            }
        }
        let was_live = matches!(head, Some((_, false, _)));
        let micros = last_updated.timestamp_micros();
        let seq = match pending.as_deref_mut() {
            // The batch's counts are added once per type at its end.
            Some(p) => {
                p.count(rtype, i64::from(body.is_some()) - i64::from(was_live));
                self.append_version(rtype, id, number, micros, method, body.as_deref())?
            }
            None => self.append(was_live, rtype, id, number, micros, method, body.as_deref())?,
        };
        if body.is_some() {
            match pending {
                Some(p) => p.add(seq, entries),
                None => index::insert(self.conn()?, self.sid, seq, &entries)?,
            }
        }
        Ok(Some(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version,
            last_updated,
            method,
            body: body.map(Bytes::from),
        }))
    }
}

impl Drop for SqliteTx {
    fn drop(&mut self) {
        if let Some(mut conn) = self.conn.take() {
            conn.rollback();
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
        resource: Value,
        method: Method,
    ) -> Result<StoredResource> {
        self.put_prepared(rtype, id, Prepared::new(id, resource), method)
            .await
    }

    async fn put_prepared(
        &mut self,
        rtype: &str,
        id: &str,
        prepared: Prepared,
        method: Method,
    ) -> Result<StoredResource> {
        let head = self.head(rtype, id)?;
        let version = head.map_or(1, |(v, _, _)| v + 1);
        let last_updated = self.clock.now();
        let number = u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("version {version} out of range")))?;
        let (body, entries, bases) = prepared.into_version(rtype, id, number, &last_updated)?;
        self.add_bases(bases);
        // Only the current version is indexed: the previous one's rows go.
        if let Some((_, false, old)) = head {
            index::remove(self.conn()?, old)?;
        }
        let seq = self.append(
            matches!(head, Some((_, false, _))),
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
            true,
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

    async fn put_version(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        last_updated: chrono::DateTime<chrono::Utc>,
        prepared: Option<Prepared>,
    ) -> Result<Option<StoredResource>> {
        self.write_version(rtype, id, version, last_updated, prepared, None)
    }

    async fn put_versions(&mut self, batch: Vec<VersionWrite>) -> Result<Vec<bool>> {
        let mut pending = index::Pending::default();
        let mut written = Vec::with_capacity(batch.len());
        for v in batch {
            let put = self.write_version(
                &v.rtype,
                &v.id,
                v.version,
                v.last_updated,
                v.prepared,
                Some(&mut pending),
            )?;
            written.push(put.is_some());
        }
        for (rtype, (versions, live)) in pending.take_counts() {
            count(self.conn()?, self.sid, &rtype, versions, live)?;
        }
        pending.flush(self.conn()?, self.sid)?;
        Ok(written)
    }

    async fn rewrite_version(
        &mut self,
        rtype: &str,
        id: &str,
        version: u64,
        prepared: Prepared,
    ) -> Result<Option<StoredResource>> {
        let Ok(number) = i64::try_from(version) else {
            return Ok(None);
        };
        let found: Option<(i64, i64, i64, bool)> = self
            .conn()?
            .prepare_cached(
                "SELECT seq, last_updated, method, body IS NULL FROM versions \
                 WHERE sid = ?1 AND rtype = ?2 AND id = ?3 AND version = ?4",
            )
            .and_then(|mut st| {
                st.query_row(params![self.sid, rtype, id, number], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
                })
                .optional()
            })
            .map_err(backend)?;
        let Some((seq, micros, method, false)) = found else {
            return Ok(None);
        };
        let last_updated = crate::micros_to_instant(micros)?;
        let (body, entries, bases) = prepared.into_version(rtype, id, version, &last_updated)?;
        self.add_bases(bases);
        let conn = self.conn()?;
        conn.prepare_cached("UPDATE versions SET body = ?1 WHERE seq = ?2")
            .and_then(|mut st| st.execute(params![body, seq]))
            .map_err(backend)?;
        // Only the current version is indexed.
        if self
            .head(rtype, id)?
            .is_some_and(|(_, _, head)| head == seq)
        {
            index::remove(conn, seq)?;
            index::insert(conn, self.sid, seq, &entries)?;
        }
        Ok(Some(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version,
            last_updated,
            method: Method::from_code(method),
            body: Some(Bytes::from(body)),
        }))
    }

    async fn purge_history(&mut self, rtype: &str, id: &str) -> Result<u64> {
        let Some((current, _, _)) = self.head(rtype, id)? else {
            return Ok(0);
        };
        let conn = self.conn()?;
        let removed = conn
            .prepare_cached(
                "DELETE FROM versions WHERE sid = ?1 AND rtype = ?2 AND id = ?3 AND version < ?4",
            )
            .and_then(|mut st| st.execute(params![self.sid, rtype, id, current]))
            .map_err(backend)?;
        let removed = i64::try_from(removed).unwrap_or(i64::MAX);
        if removed > 0 {
            conn.prepare_cached(
                "UPDATE version_counts SET n = n - ?3 WHERE sid = ?1 AND rtype = ?2",
            )
            .and_then(|mut st| st.execute(params![self.sid, rtype, removed]))
            .map_err(backend)?;
        }
        Ok(u64::try_from(removed).unwrap_or(0))
    }

    async fn matching(
        &mut self,
        query: &fhir_store::SearchQuery,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        crate::search::matching(self.conn()?, self.sid, query, limit)
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))?;
        for base in &self.bases {
            // Dropping `conn` here (an error) rolls the transaction back.
            conn.conn
                .prepare_cached("INSERT OR IGNORE INTO own_bases (url) VALUES (?1)")
                .and_then(|mut st| st.execute([base]))
                .map_err(backend)?;
        }
        let outcome = conn.release()?;
        // Its own task: should this future be dropped meanwhile, the group is still
        // committed, and only then is the writer free again.
        tokio::spawn(crate::writer::commit(self.shared.clone(), conn, outcome))
            .await
            .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))?
    }
}
