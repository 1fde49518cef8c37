//! A write transaction: one pooled connection inside `BEGIN … COMMIT`, holding its service's
//! counter row (`service_clock`) locked from the start.
//!
//! The lock is what serialises writers, across every process on the database: a second
//! [`fhir_store::Store::begin`] on the service waits in `SELECT … FOR UPDATE` until the first
//! ends, then reads the counter as the first left it (`READ COMMITTED` reads the newest
//! committed row after a lock wait), and every statement after sees what the first wrote. So
//! `If-Match`, conditional creates and read-modify-write hold without retries, and `seq`,
//! handed out from the counter, grows in commit order. The counter and the type totals are
//! written back once, at commit. A write is two round trips: the resource's current version,
//! then one statement that appends the version, moves the resource's pointer and replaces its
//! index rows. Dropping the transaction rolls it back (see [`crate::Conn`]).

use std::collections::HashMap;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use fhir_store::{Method, Prepared, Result, StoreError, StoredResource, WriteTx};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use crate::{index, micros_to_instant, pg_error, stored_from_row, Conn, VERSION_COLUMNS};

pub(crate) struct PgTx {
    /// `None` once committed.
    conn: Option<Conn>,
    sid: i64,
    /// The last `seq` given out (the counter as it will be written back).
    seq: i64,
    /// The newest instant given out, in microseconds.
    last_micros: i64,
    /// Versions written per type, added to `version_counts` at commit.
    counts: HashMap<String, i64>,
    /// Base URLs the resources written came through, recorded at commit.
    bases: Vec<String>,
}

impl PgTx {
    pub(crate) async fn begin(mut conn: Conn, service: &str) -> Result<PgTx> {
        conn.in_tx = true;
        let client = conn.client()?;
        // Pipelined: BEGIN goes out first, the lock right behind it.
        let lock = async {
            let st = client
                .prepare_cached(
                    "SELECT c.sid, c.seq, c.last_micros FROM services s \
                     JOIN service_clock c ON c.sid = s.sid WHERE s.name = $1 FOR UPDATE OF c",
                )
                .await?;
            client.query_opt(&st, &[&service]).await
        };
        let (began, row) = tokio::join!(client.batch_execute("BEGIN"), lock);
        began.map_err(pg_error)?;
        let row = row
            .map_err(pg_error)?
            .ok_or_else(|| StoreError::NoSuchService(service.to_owned()))?;
        Ok(PgTx {
            sid: row.get(0),
            seq: row.get(1),
            last_micros: row.get(2),
            conn: Some(conn),
            counts: HashMap::new(),
            bases: Vec::new(),
        })
    }

    fn conn(&self) -> Result<&Conn> {
        self.conn
            .as_ref()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))
    }

    /// The next instant: the wall clock, or 1 µs past the service's newest instant if that is
    /// not behind it (another process's clock may be ahead of ours).
    fn next_instant(&mut self) -> Result<DateTime<Utc>> {
        let next = Utc::now().timestamp_micros().max(self.last_micros + 1);
        self.last_micros = next;
        micros_to_instant(next)
    }

    /// The current version number of a resource, whether it is a deletion, and its `seq`.
    async fn head(&self, rtype: &str, id: &str) -> Result<Option<(i64, bool, i64)>> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT version, deleted, seq FROM resources \
                 WHERE sid = $1 AND rtype = $2 AND id = $3",
                &[&self.sid, &rtype, &id],
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
        self.seq += 1;
        *self.counts.entry(rtype.to_owned()).or_default() += 1;
        let seq = self.seq;
        let sid = self.sid;
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
                &[&self.sid, &rtype, &id],
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
        if let Some(base) = prepared.base() {
            if !self.bases.iter().any(|b| b == base) {
                self.bases.push(base.to_string());
            }
        }
        let (mut resource, mut entries) = prepared.into_parts();
        let head = self.head(rtype, id).await?;
        let version = head.map_or(1, |(v, _, _)| v + 1);
        let last_updated = self.next_instant()?;
        let number = u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("version {version} out of range")))?;
        fhir_store::stamp(&mut resource, id, number, &last_updated);
        fhir_search::restamp_last_updated(&resource, &mut entries);
        let body = serde_json::to_vec(&resource)
            .map_err(|e| StoreError::Backend(format!("cannot serialise {rtype}/{id}: {e}")))?;
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

    async fn matching(
        &mut self,
        query: &fhir_store::SearchQuery,
        limit: usize,
    ) -> Result<Vec<(String, String)>> {
        crate::search::matching(self.conn()?, self.sid, query, limit).await
    }

    async fn commit(mut self: Box<Self>) -> Result<()> {
        let mut conn = self
            .conn
            .take()
            .ok_or_else(|| StoreError::Backend("transaction already ended".into()))?;
        let (rtypes, counts): (Vec<String>, Vec<i64>) = self.counts.drain().unzip();
        // Dropping `conn` on an error here rolls the transaction back.
        conn.execute(
            "WITH c AS (UPDATE service_clock SET seq = $2, last_micros = $3 WHERE sid = $1), \
             n AS (INSERT INTO version_counts (sid, rtype, n) \
                   SELECT $1, u.rtype, u.n FROM unnest($4::text[], $5::bigint[]) AS u(rtype, n) \
                   ON CONFLICT (sid, rtype) DO UPDATE SET n = version_counts.n + excluded.n) \
             INSERT INTO own_bases (url) SELECT unnest($6::text[]) ON CONFLICT DO NOTHING",
            &[
                &self.sid,
                &self.seq,
                &self.last_micros,
                &rtypes,
                &counts,
                &self.bases,
            ],
        )
        .await?;
        conn.commit().await
    }
}
