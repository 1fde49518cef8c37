//! A write transaction: a member of its service's group ([`crate::writer`]), a savepoint in
//! the group's PostgreSQL transaction, which holds the service's counter row
//! (`service_clock`) locked from its first statement.
//!
//! The lock is what serialises writers across every process on the database: another
//! process's writer of the service waits in `SELECT … FOR UPDATE` until the group ends, then
//! reads the counter as the group left it (`READ COMMITTED` reads the newest committed row
//! after a lock wait), and every statement after sees what the group wrote; in this process,
//! writers wait for the group's mutex and then see what the members before them wrote. So
//! `If-Match`, conditional creates and read-modify-write hold without retries, and `seq`,
//! handed out from the counter, grows in commit order. The counter and the type totals are
//! written back once per group, at its commit. A write is two round trips: the resource's
//! current version, then one statement that appends the version, moves the resource's pointer
//! and replaces its index rows. Dropping the transaction rolls it back to its savepoint.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fhir_store::{Method, Prepared, Result, StoreError, StoredResource, WriteTx};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use tokio::sync::OwnedMutexGuard;

use crate::writer::{self, Group, Open, SharedGroup};
use crate::{index, micros_to_instant, stored_from_row, Conn, PgStore, VERSION_COLUMNS};

pub(crate) struct PgTx {
    /// The service's group, held while this member runs; `None` once committed.
    group: Option<OwnedMutexGuard<Group>>,
    shared: SharedGroup,
    /// Versions written per type, added to the group's at commit.
    counts: HashMap<String, i64>,
    /// Live resources gained (or, negative, lost) per type, for `resource_counts`.
    live: HashMap<String, i64>,
    /// Base URLs the resources written came through.
    bases: Vec<String>,
    stats: Arc<crate::stats::Stats>,
    pool: deadpool_postgres::Pool,
}

impl PgTx {
    /// Waits for the service's group, then starts a member of it.
    pub(crate) async fn begin(store: &PgStore, shared: SharedGroup, service: &str) -> Result<PgTx> {
        let group = shared.clone().lock_owned().await;
        // From here on, Drop undoes whatever begin got to.
        let mut tx = PgTx {
            group: Some(group),
            shared,
            counts: HashMap::new(),
            live: HashMap::new(),
            bases: Vec::new(),
            stats: store.stats.clone(),
            pool: store.pool.clone(),
        };
        if let Some(g) = tx.group.as_mut() {
            g.begin(store, service).await?;
        }
        Ok(tx)
    }

    fn open(&self) -> Result<&Open> {
        self.group
            .as_ref()
            .and_then(|g| g.open.as_ref())
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))
    }

    fn open_mut(&mut self) -> Result<&mut Open> {
        self.group
            .as_mut()
            .and_then(|g| g.open.as_mut())
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))
    }

    fn conn(&self) -> Result<&Conn> {
        Ok(&self.open()?.conn)
    }

    fn sid(&self) -> Result<i64> {
        Ok(self.open()?.sid)
    }

    /// The next instant: the wall clock, or 1 µs past the service's newest instant if that is
    /// not behind it (another process's clock may be ahead of ours).
    fn next_instant(&mut self) -> Result<DateTime<Utc>> {
        let open = self.open_mut()?;
        let next = Utc::now().timestamp_micros().max(open.last_micros + 1);
        open.last_micros = next;
        micros_to_instant(next)
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
    async fn head(&self, rtype: &str, id: &str) -> Result<Option<(i64, bool, i64)>> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT version, deleted, seq FROM resources \
                 WHERE sid = $1 AND rtype = $2 AND id = $3",
                &[&self.sid()?, &rtype, &id],
            )
            .await?
            .map(|row| (row.get(0), row.get(1), row.get(2))))
    }

    /// Appends a version, points the resource at it, and replaces the index rows of the old
    /// current version (`old`) with `entries`: one statement, one round trip.
    #[allow(clippy::too_many_arguments)]
    async fn append(
        &mut self,
        rtype: &str,
        id: &str,
        version: i64,
        last_updated: &DateTime<Utc>,
        method: Method,
        body: Option<&[u8]>,
        old: Option<i64>,
        entries: &[fhir_search::IndexEntry],
    ) -> Result<()> {
        let open = self.open_mut()?;
        open.seq += 1;
        let seq = open.seq;
        let sid = open.sid;
        *self.counts.entry(rtype.to_owned()).or_default() += 1;
        // `old` is the live version replaced, if any: the count changes when a resource
        // appears or goes.
        let delta = i64::from(body.is_some()) - i64::from(old.is_some());
        if delta != 0 {
            *self.live.entry(rtype.to_owned()).or_default() += delta;
        }
        let method = i16::try_from(method.code()).unwrap_or(3);
        let deleted = body.is_none();
        let columns = index::columns(entries);
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &sid,
            &rtype,
            &id,
            &version,
            &seq,
            last_updated,
            &method,
            &body,
            &deleted,
            &old,
        ];
        params.extend(columns.params());
        self.conn()?.execute(append_sql(), &params).await?;
        Ok(())
    }
}

/// The statement of [`PgTx::append`]: $1 sid, $2 rtype, $3 id, $4 version, $5 seq,
/// $6 lastUpdated, $7 method, $8 body, $9 deleted, $10 the old current version's seq (NULL
/// for none), then the index arrays.
fn append_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        format!(
            "WITH v AS (INSERT INTO versions \
               (sid, rtype, id, version, seq, last_updated, method, body) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)), \
             r AS (INSERT INTO resources (sid, rtype, id, version, seq, deleted) \
               VALUES ($1, $2, $3, $4, $5, $9) ON CONFLICT (sid, rtype, id) DO UPDATE \
               SET version = excluded.version, seq = excluded.seq, deleted = excluded.deleted), \
             {} SELECT 1",
            index::replace_ctes(1, 5, 10, 11)
        )
    })
}

/// Removes the index rows of one version: $1 sid, $2 seq.
fn delete_index_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| {
        let items: Vec<String> = index::TABLE_NAMES
            .iter()
            .enumerate()
            .map(|(i, t)| format!("d{i} AS (DELETE FROM {t} WHERE sid = $1 AND seq = $2)"))
            .collect();
        format!("WITH {} SELECT 1", items.join(", "))
    })
}

/// Writes the index rows of one version: $1 sid, $2 seq, $3 NULL (no rows to replace), then
/// the index arrays.
fn reindex_sql() -> &'static str {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SQL.get_or_init(|| format!("WITH {} SELECT 1", index::replace_ctes(1, 2, 3, 4)))
}

#[async_trait]
impl WriteTx for PgTx {
    async fn current(&mut self, rtype: &str, id: &str) -> Result<Option<StoredResource>> {
        let row = self
            .conn()?
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM resources r JOIN versions v \
                     ON v.sid = r.sid AND v.rtype = r.rtype AND v.id = r.id \
                     AND v.version = r.version \
                     WHERE r.sid = $1 AND r.rtype = $2 AND r.id = $3"
                ),
                &[&self.sid()?, &rtype, &id],
            )
            .await?;
        row.map(|row| stored_from_row(&row, 0, rtype.to_owned(), id.to_owned()))
            .transpose()
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
        let head = self.head(rtype, id).await?;
        let version = head.map_or(1, |(v, _, _)| v + 1);
        let last_updated = self.next_instant()?;
        let number = u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("version {version} out of range")))?;
        let (body, entries, bases) = prepared.into_version(rtype, id, number, &last_updated)?;
        self.add_bases(bases);
        // Only the current version is indexed: the previous one's rows go.
        let old = match head {
            Some((_, false, old)) => Some(old),
            _ => None,
        };
        self.append(
            rtype,
            id,
            version,
            &last_updated,
            method,
            Some(&body),
            old,
            &entries,
        )
        .await?;
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
        let (version, old) = match self.head(rtype, id).await? {
            Some((version, false, old)) => (version + 1, old),
            Some((_, true, _)) | None => return Ok(None),
        };
        let last_updated = self.next_instant()?;
        self.append(
            rtype,
            id,
            version,
            &last_updated,
            Method::Delete,
            None,
            Some(old),
            &[],
        )
        .await?;
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
        last_updated: DateTime<Utc>,
        prepared: Option<Prepared>,
    ) -> Result<Option<StoredResource>> {
        let number = i64::try_from(version)
            .ok()
            .filter(|v| *v >= 1)
            .ok_or_else(|| StoreError::Backend(format!("version {version} out of range")))?;
        let head = self.head(rtype, id).await?;
        if head.is_some_and(|(v, _, _)| v >= number) {
            return Ok(None);
        }
        {
            let open = self.open_mut()?;
            open.last_micros = open.last_micros.max(last_updated.timestamp_micros());
        }
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
        let old = match head {
            Some((_, false, old)) => Some(old),
            _ => None,
        };
        self.append(
            rtype,
            id,
            number,
            &last_updated,
            method,
            body.as_deref(),
            old,
            &entries,
        )
        .await?;
        Ok(Some(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version,
            last_updated,
            method,
            body: body.map(Bytes::from),
        }))
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
        let sid = self.sid()?;
        let found = self
            .conn()?
            .query_opt(
                "SELECT v.seq, v.last_updated, v.method, v.body IS NULL, r.seq = v.seq \
                 FROM versions v JOIN resources r \
                 ON r.sid = v.sid AND r.rtype = v.rtype AND r.id = v.id \
                 WHERE v.sid = $1 AND v.rtype = $2 AND v.id = $3 AND v.version = $4",
                &[&sid, &rtype, &id, &number],
            )
            .await?;
        let Some(row) = found else {
            return Ok(None);
        };
        let seq: i64 = row.try_get(0).map_err(crate::pg_error)?;
        let last_updated: DateTime<Utc> = row.try_get(1).map_err(crate::pg_error)?;
        let method: i16 = row.try_get(2).map_err(crate::pg_error)?;
        let deleted: bool = row.try_get(3).map_err(crate::pg_error)?;
        let current: bool = row.try_get(4).map_err(crate::pg_error)?;
        if deleted {
            return Ok(None);
        }
        let (body, entries, bases) = prepared.into_version(rtype, id, version, &last_updated)?;
        self.add_bases(bases);
        self.conn()?
            .execute(
                "UPDATE versions SET body = $3 WHERE sid = $1 AND seq = $2",
                &[&sid, &seq, &body],
            )
            .await?;
        if current {
            // Only the current version is indexed: its rows are replaced, the old ones
            // removed by a statement of their own so that the insert never meets them.
            self.conn()?
                .execute(delete_index_sql(), &[&sid, &seq])
                .await?;
            let columns = index::columns(&entries);
            let none: Option<i64> = None;
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sid, &seq, &none];
            params.extend(columns.params());
            self.conn()?.execute(reindex_sql(), &params).await?;
        }
        Ok(Some(StoredResource {
            resource_type: rtype.to_owned(),
            id: id.to_owned(),
            version,
            last_updated,
            method: Method::from_code(i64::from(method)),
            body: Some(Bytes::from(body)),
        }))
    }

    async fn purge_history(&mut self, rtype: &str, id: &str) -> Result<u64> {
        let Some((current, _, _)) = self.head(rtype, id).await? else {
            return Ok(0);
        };
        let removed = self
            .conn()?
            .execute(
                "DELETE FROM versions \
                 WHERE sid = $1 AND rtype = $2 AND id = $3 AND version < $4",
                &[&self.sid()?, &rtype, &id, &current],
            )
            .await?;
        // `version_counts` is moved by the group at commit, as for appended versions.
        let n = i64::try_from(removed).unwrap_or(i64::MAX);
        if n > 0 {
            *self.counts.entry(rtype.to_owned()).or_default() -= n;
        }
        Ok(removed)
    }

    async fn matching(
        &mut self,
        query: &fhir_store::SearchQuery,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        crate::search::matching(self.conn()?, self.sid()?, query, limit).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut group = self
            .group
            .take()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))?;
        let counts = std::mem::take(&mut self.counts);
        let written = counts
            .values()
            .map(|n| u64::try_from(*n).unwrap_or(0))
            .sum();
        let live = std::mem::take(&mut self.live);
        let bases = std::mem::take(&mut self.bases);
        let shared = self.shared.clone();
        // Its own task: should this future be dropped meanwhile, the member is still released
        // and its group committed, and only then is the group free again.
        tokio::spawn(async move {
            let outcome = group.release(counts, live, bases).await?;
            writer::commit(shared, group, outcome).await
        })
        .await
        .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))??;
        self.stats.committed(&self.pool, written);
        Ok(())
    }
}

impl Drop for PgTx {
    fn drop(&mut self) {
        let Some(mut group) = self.group.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            // The group stays taken until the member is undone.
            Ok(rt) => {
                rt.spawn(async move { group.rollback().await });
            }
            Err(_) => group.abort(&StoreError::Backend(
                "a transaction was dropped outside the runtime".into(),
            )),
        }
    }
}
