//! The PostgreSQL backend of the fhirlink store: the same [`fhir_store::Store`] contract as the
//! embedded SQLite store, on a database that several fhirlink processes can share.
//!
//! The driver is `tokio-postgres` with the `deadpool-postgres` pool: asynchronous from end to
//! end (no blocking thread per query), maintained, with pipelining (concurrent statements on
//! one connection are sent back to back: a write transaction's `BEGIN` and its lock go out
//! together) and `COPY` for the bulk paths to come; unlike sqlx it needs no database at
//! compile time. TLS to the database follows libpq's `sslmode` and `sslrootcert` in the
//! address (`tls.rs`: rustls through tokio-postgres-rustls; `prefer` by default, as libpq).
//!
//! [`PgStore::connect`] creates the schema on first use and refuses a database whose schema
//! is newer than this build's (`schema.rs`). Writers of one service are serialised by the
//! service's counter row, locked by `SELECT … FOR UPDATE` in the transaction's first statement
//! (across processes), and, in this process, by one writer per service whose queued
//! transactions are savepoints of one PostgreSQL transaction, committed together (`writer.rs`),
//! so that waiting writers hold no connection and a commit's WAL flush is shared. Reads run on
//! the pool without taking any lock; a history, a search or a scan reads one `REPEATABLE READ`
//! snapshot. Errors that a retry may cure — a lost connection, a serialisation failure
//! (40001), a deadlock (40P01), a lock, statement or connection timeout — are
//! [`StoreError::Busy`], the contract's one retryable error (503); the contract has no
//! separate retryable variant yet. This crate knows SQL, and nothing of HTTP.

mod docs;
mod index;
mod scan;
mod schema;
pub mod scratch;
mod search;
mod stats;
pub mod tls;
mod tx;
mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use fhir_store::{
    Document, DocumentChanges, DocumentStore, DocumentWrite, HistoryPage, HistoryQuery,
    HistoryScope, Method, Result, ScanQuery, SearchPage, SearchQuery, Snapshot, Store, StoreError,
    StoredResource, WriteTx,
};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// How a [`PgStore`] uses its database.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// The most connections the pool opens.
    pub pool_size: usize,
    /// The longest one statement may run (PostgreSQL's `statement_timeout`); waiting for a
    /// service's writer lock counts. A statement stopped by it is [`StoreError::Busy`].
    pub statement_timeout: Duration,
    /// The longest opening a connection, or waiting for a free one, may take.
    pub connect_timeout: Duration,
    /// The longest one search may run before it is stopped with [`StoreError::TooCostly`].
    pub search_time_limit: Duration,
    /// How often a reader of the documents' change feed that is waiting for a change asks
    /// the database again; a `NOTIFY` (where the engine has `LISTEN`) wakes it sooner.
    pub feed_poll: Duration,
}

impl Default for PgConfig {
    fn default() -> Self {
        PgConfig {
            pool_size: 16,
            statement_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            search_time_limit: Duration::from_secs(10),
            feed_poll: Duration::from_millis(100),
        }
    }
}

/// A store in one PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    /// One writer per service ([`writer`]): this process's writers of a service queue here,
    /// holding no connection, and run as members of one transaction, committed together.
    writers: Arc<Mutex<HashMap<String, writer::SharedGroup>>>,
    search_time_limit: Duration,
    /// Planner statistics refreshed as the data grows (`stats.rs`).
    stats: Arc<stats::Stats>,
    /// Woken by the documents' `NOTIFY` ([`listen`]), for readers of the change feed.
    wake: Arc<tokio::sync::Notify>,
    feed_poll: Duration,
    /// Dropped with the store, which ends the listener.
    _listener: tokio::sync::watch::Sender<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("pool", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user@host:port/db` or the key=value
    /// form), creating fhirlink's schema if the database has none.
    pub async fn connect(url: &str, config: PgConfig) -> Result<PgStore> {
        let tls = tls::settings(url)?;
        let mut pg: tokio_postgres::Config = tls
            .address
            .parse()
            .map_err(|e| StoreError::Backend(format!("bad PostgreSQL address: {e}")))?;
        pg.ssl_mode(tls.ssl_mode());
        let connector = tls.connector()?;
        pg.connect_timeout(config.connect_timeout);
        let timeout_ms = config.statement_timeout.as_millis().max(1);
        pg.options(format!("-c statement_timeout={timeout_ms}"));
        if pg.get_application_name().is_none() {
            pg.application_name("fhirlink");
        }
        // The schema first, on a connection of its own, so that a bad address or a refused
        // database fails here with its reason.
        let (mut client, connection) = pg
            .connect(connector.clone())
            .await
            .map_err(|e| connect_error(url, e))?;
        let task = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "schema connection ended");
            }
        });
        let prepared = schema::prepare(&mut client).await;
        drop(client);
        let _ = task.await;
        prepared?;
        let wake = Arc::new(tokio::sync::Notify::new());
        let (stop, stopped) = tokio::sync::watch::channel(());
        tokio::spawn(listen(pg.clone(), connector.clone(), wake.clone(), stopped));
        let manager = Manager::from_config(
            pg,
            connector,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        Ok(PgStore {
            pool,
            writers: Arc::new(Mutex::new(HashMap::new())),
            search_time_limit: config.search_time_limit,
            stats: Arc::new(stats::Stats::default()),
            wake,
            feed_poll: config.feed_poll.max(Duration::from_millis(1)),
            _listener: stop,
        })
    }

    /// A connection from the pool.
    async fn conn(&self) -> Result<Conn> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        Ok(Conn {
            obj: Some(obj),
            in_tx: false,
        })
    }

    /// This process's writer of a service.
    fn group(&self, service: &str) -> writer::SharedGroup {
        let mut map = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(service.to_owned()).or_default().clone()
    }

    /// Forgets the writer of a service that does not exist, unless a writer holds it: the
    /// map holds no entry per name a caller merely tried.
    fn forget_group(&self, service: &str) {
        let mut map = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(service).is_some_and(|g| Arc::strong_count(g) == 1) {
            map.remove(service);
        }
    }

    /// A connection inside a read-only `REPEATABLE READ` transaction: one snapshot for all
    /// that is read through it.
    async fn snapshot_conn(&self) -> Result<Conn> {
        let mut conn = self.conn().await?;
        conn.begin("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        Ok(conn)
    }
}

/// A pooled connection that knows whether it is inside a transaction: one dropped inside
/// one is rolled back before the pool hands it out again (or, with no runtime to do that
/// on, closed, which rolls back too).
pub(crate) struct Conn {
    obj: Option<Object>,
    in_tx: bool,
}

impl Conn {
    pub(crate) fn client(&self) -> Result<&Object> {
        self.obj
            .as_ref()
            .ok_or_else(|| StoreError::Backend("connection already released".into()))
    }

    pub(crate) async fn begin(&mut self, sql: &str) -> Result<()> {
        self.in_tx = true;
        self.client()?.batch_execute(sql).await.map_err(pg_error)
    }

    pub(crate) async fn commit(&mut self) -> Result<()> {
        let r = self.client()?.batch_execute("COMMIT").await;
        // A failed COMMIT leaves no transaction open either (PostgreSQL ends it either way).
        if r.is_ok() || r.as_ref().is_err_and(|e| e.code().is_some()) {
            self.in_tx = false;
        }
        r.map_err(pg_error)
    }

    pub(crate) async fn rollback(&mut self) -> Result<()> {
        let r = self.client()?.batch_execute("ROLLBACK").await;
        if r.is_ok() {
            self.in_tx = false;
        }
        r.map_err(pg_error)
    }

    pub(crate) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        let c = self.client()?;
        let st = c.prepare_cached(sql).await.map_err(pg_error)?;
        c.query(&st, params).await.map_err(pg_error)
    }

    pub(crate) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>> {
        let c = self.client()?;
        let st = c.prepare_cached(sql).await.map_err(pg_error)?;
        c.query_opt(&st, params).await.map_err(pg_error)
    }

    pub(crate) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let c = self.client()?;
        let st = c.prepare_cached(sql).await.map_err(pg_error)?;
        c.execute(&st, params).await.map_err(pg_error)
    }

    /// A statement built per query (searches): prepared unnamed, not cached.
    pub(crate) async fn query_dynamic(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>> {
        self.client()?.query(sql, params).await.map_err(pg_error)
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        let Some(obj) = self.obj.take() else { return };
        if !self.in_tx {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    if obj.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(obj));
                    }
                });
            }
            Err(_) => drop(Object::take(obj)),
        }
    }
}

/// Maps a driver error. Retryable failures are [`StoreError::Busy`]: the contract has no
/// separate retryable variant yet, and Busy is the one the API answers with 503.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    if let Some(code) = e.code() {
        let retryable = [
            SqlState::T_R_SERIALIZATION_FAILURE,
            SqlState::T_R_DEADLOCK_DETECTED,
            SqlState::LOCK_NOT_AVAILABLE,
            SqlState::QUERY_CANCELED,
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
            SqlState::TOO_MANY_CONNECTIONS,
            SqlState::CONNECTION_EXCEPTION,
            SqlState::CONNECTION_FAILURE,
        ];
        if retryable.contains(code) {
            tracing::debug!(error = %e, "retryable database error");
            return StoreError::Busy;
        }
        if *code == SqlState::DISK_FULL {
            return StoreError::StorageFull(e.to_string());
        }
        return StoreError::Backend(db_message(&e));
    }
    // No SQLSTATE: the connection broke or closed.
    tracing::debug!(error = %e, "database connection error");
    StoreError::Busy
}

/// The server's own message, which the driver's `Display` leaves out.
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    use deadpool_postgres::PoolError;
    match e {
        PoolError::Backend(e) => pg_error(e),
        PoolError::Timeout(_) => StoreError::Busy,
        other => StoreError::Backend(format!("connection pool: {other}")),
    }
}

fn connect_error(url: &str, e: tokio_postgres::Error) -> StoreError {
    // The address without its password.
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://…@{host}"),
            None => url.to_owned(),
        },
        None => "the PostgreSQL database".to_owned(),
    };
    let why = e
        .as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_else(|| {
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        });
    StoreError::Backend(format!("cannot connect to {shown}: {why}"))
}

pub(crate) fn version_to_sql(version: u64) -> Result<i64> {
    i64::try_from(version).map_err(|_| StoreError::Backend(format!("version {version} too large")))
}

pub(crate) fn micros_to_instant(micros: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(micros)
        .ok_or_else(|| StoreError::Backend(format!("stored instant {micros} is out of range")))
}

/// The columns every version query selects, in this order, after any leading ones.
pub(crate) const VERSION_COLUMNS: &str = "v.version, v.last_updated, v.method, v.body";

/// Builds a [`StoredResource`] from [`VERSION_COLUMNS`] starting at column `at`.
pub(crate) fn stored_from_row(
    row: &Row,
    at: usize,
    rtype: String,
    id: String,
) -> Result<StoredResource> {
    let version: i64 = row.try_get(at).map_err(pg_error)?;
    let last_updated: DateTime<Utc> = row.try_get(at + 1).map_err(pg_error)?;
    let method: i16 = row.try_get(at + 2).map_err(pg_error)?;
    let body: Option<&[u8]> = row.try_get(at + 3).map_err(pg_error)?;
    Ok(StoredResource {
        resource_type: rtype,
        id,
        version: u64::try_from(version)
            .map_err(|_| StoreError::Backend(format!("stored version {version} is negative")))?,
        last_updated,
        method: Method::from_code(i64::from(method)),
        body: body.map(Bytes::copy_from_slice),
    })
}

/// The number of a service, if it exists.
pub(crate) async fn service_id(conn: &Conn, service: &str) -> Result<Option<i64>> {
    Ok(conn
        .query_opt("SELECT sid FROM services WHERE name = $1", &[&service])
        .await?
        .map(|row| row.get(0)))
}

async fn require_service(conn: &Conn, service: &str) -> Result<i64> {
    service_id(conn, service)
        .await?
        .ok_or_else(|| StoreError::NoSuchService(service.to_owned()))
}

/// One version read by a point query whose first column is the service's number (NULL when
/// the service does not exist, see [`Store::read`]) followed by [`VERSION_COLUMNS`].
fn point_read(
    row: Option<Row>,
    service: &str,
    rtype: &str,
    id: &str,
) -> Result<Option<StoredResource>> {
    let Some(row) = row else {
        return Err(StoreError::NoSuchService(service.to_owned()));
    };
    let version: Option<i64> = row.try_get(1).map_err(pg_error)?;
    if version.is_none() {
        return Ok(None);
    }
    stored_from_row(&row, 1, rtype.to_owned(), id.to_owned()).map(Some)
}

#[async_trait]
impl Store for PgStore {
    async fn create_service(&self, name: &str) -> Result<()> {
        let conn = self.conn().await?;
        conn.execute(
            "WITH s AS (INSERT INTO services (name) VALUES ($1) \
                        ON CONFLICT (name) DO NOTHING RETURNING sid) \
             INSERT INTO service_clock (sid, seq, last_micros) SELECT sid, 0, 0 FROM s",
            &[&name],
        )
        .await?;
        Ok(())
    }

    async fn delete_service(&self, name: &str) -> Result<bool> {
        // This process's writers first: a group still open is committed.
        let group = self.group(name);
        let mut turn = group.lock().await;
        turn.flush().await;
        let mut conn = self.conn().await?;
        conn.begin("BEGIN").await?;
        let Some(row) = conn
            .query_opt(
                "SELECT sid FROM services WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await?
        else {
            conn.rollback().await?;
            return Ok(false);
        };
        let sid: i64 = row.get(0);
        // Waits for the service's writer of the moment, if any, in every process.
        conn.query(
            "SELECT 1 FROM service_clock WHERE sid = $1 FOR UPDATE",
            &[&sid],
        )
        .await?;
        let tables = [
            "versions",
            "resources",
            "version_counts",
            "resource_counts",
            "service_clock",
        ]
        .into_iter()
        .chain(schema::INDEX_TABLES.iter().copied());
        for t in tables {
            conn.execute(&format!("DELETE FROM {t} WHERE sid = $1"), &[&sid])
                .await?;
        }
        conn.execute("DELETE FROM services WHERE sid = $1", &[&sid])
            .await?;
        conn.commit().await?;
        drop(turn);
        drop(group);
        self.forget_group(name);
        Ok(true)
    }

    async fn list_services(&self) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let rows = conn
            .query("SELECT name FROM services ORDER BY name", &[])
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn service_exists(&self, name: &str) -> Result<bool> {
        let conn = self.conn().await?;
        Ok(service_id(&conn, name).await?.is_some())
    }

    async fn read(&self, service: &str, rtype: &str, id: &str) -> Result<Option<StoredResource>> {
        let conn = self.conn().await?;
        // One statement, one snapshot: the service row, and the current version if any.
        let row = conn
            .query_opt(
                &format!(
                    "SELECT s.sid, {VERSION_COLUMNS} FROM services s \
                     LEFT JOIN resources r ON r.sid = s.sid AND r.rtype = $2 AND r.id = $3 \
                     LEFT JOIN versions v ON v.sid = r.sid AND v.rtype = r.rtype \
                       AND v.id = r.id AND v.version = r.version \
                     WHERE s.name = $1"
                ),
                &[&service, &rtype, &id],
            )
            .await?;
        point_read(row, service, rtype, id)
    }

    async fn vread(
        &self,
        service: &str,
        rtype: &str,
        id: &str,
        version: u64,
    ) -> Result<Option<StoredResource>> {
        let version = version_to_sql(version)?;
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT s.sid, {VERSION_COLUMNS} FROM services s \
                     LEFT JOIN versions v ON v.sid = s.sid AND v.rtype = $2 AND v.id = $3 \
                       AND v.version = $4 \
                     WHERE s.name = $1"
                ),
                &[&service, &rtype, &id, &version],
            )
            .await?;
        point_read(row, service, rtype, id)
    }

    async fn history(
        &self,
        service: &str,
        scope: &HistoryScope,
        query: &HistoryQuery,
    ) -> Result<HistoryPage> {
        let mut conn = self.snapshot_conn().await?;
        let sid = require_service(&conn, service).await?;
        let page = history(&conn, sid, scope, query).await?;
        conn.commit().await?;
        Ok(page)
    }

    async fn search(&self, service: &str, query: &SearchQuery) -> Result<SearchPage> {
        let limit = self.search_time_limit;
        let mut conn = self.conn().await?;
        conn.begin(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
             SET LOCAL statement_timeout = {}",
            limit.as_millis().max(1)
        ))
        .await?;
        let page = async {
            let sid = require_service(&conn, service).await?;
            search::search(&conn, sid, query, Utc::now().timestamp_micros()).await
        }
        .await;
        match page {
            Ok(page) => {
                conn.commit().await?;
                Ok(page)
            }
            Err(StoreError::Busy) if conn.rollback().await.is_ok() => {
                // A statement stopped by the search's own timeout is the search's fault.
                Err(StoreError::TooCostly(format!(
                    "the search ran longer than its limit of {} ms and was stopped; narrow it \
                     (more selective parameters, _total=none, a smaller _count)",
                    limit.as_millis()
                )))
            }
            Err(e) => Err(e),
        }
    }

    async fn snapshot(&self, service: &str) -> Result<Snapshot> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT c.seq, c.last_micros FROM services s \
                 JOIN service_clock c ON c.sid = s.sid WHERE s.name = $1",
                &[&service],
            )
            .await?
            .ok_or_else(|| StoreError::NoSuchService(service.to_owned()))?;
        let seq: i64 = row.get(0);
        let micros: i64 = row.get(1);
        Ok(Snapshot {
            position: seq,
            time: if seq == 0 {
                Utc::now()
            } else {
                micros_to_instant(micros)?
            },
        })
    }

    async fn scan(
        &self,
        service: &str,
        rtype: &str,
        query: &ScanQuery,
    ) -> Result<Vec<StoredResource>> {
        let mut conn = self.snapshot_conn().await?;
        let sid = require_service(&conn, service).await?;
        let page = scan::scan(&conn, sid, rtype, query).await?;
        conn.commit().await?;
        Ok(page)
    }

    async fn begin(&self, service: &str) -> Result<Box<dyn WriteTx>> {
        match tx::PgTx::begin(self, self.group(service), service).await {
            Ok(tx) => Ok(Box::new(tx)),
            Err(e) => {
                if matches!(e, StoreError::NoSuchService(_)) {
                    self.forget_group(service);
                }
                Err(e)
            }
        }
    }

    async fn own_bases(&self) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        Ok(conn
            .query("SELECT url FROM own_bases ORDER BY url", &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }
}

#[async_trait]
impl DocumentStore for PgStore {
    async fn get_document(&self, collection: &str, key: &str) -> Result<Option<Document>> {
        let conn = self.conn().await?;
        docs::get(&conn, collection, key).await
    }
    async fn list_documents(&self, collection: &str) -> Result<Vec<Document>> {
        let conn = self.conn().await?;
        docs::list(&conn, collection).await
    }
    async fn write_documents(&self, writes: Vec<DocumentWrite>) -> Result<Vec<Document>> {
        let mut conn = self.conn().await?;
        docs::write(&mut conn, writes).await
    }
    async fn document_changes(&self, after: u64, wait: Duration) -> Result<DocumentChanges> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before the query, so that a NOTIFY during it is not missed.
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let found = {
                let conn = self.conn().await?;
                docs::changes(&conn, after).await?
            };
            let now = tokio::time::Instant::now();
            if found.position != after || now >= deadline {
                return Ok(found);
            }
            let nap = (deadline - now).min(self.feed_poll);
            let _ = tokio::time::timeout(nap, woken).await;
        }
    }
}

/// Listens for the documents' `NOTIFY` on a connection of its own and wakes the feed's
/// readers; reconnects after a second when the connection is lost, and gives up (leaving the
/// readers to poll) on an engine that has no `LISTEN`. Ends when `stop`'s sender is dropped.
async fn listen(
    pg: tokio_postgres::Config,
    connector: tokio_postgres_rustls::MakeRustlsConnect,
    wake: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    loop {
        let session = async {
            let (client, mut connection) = match pg.connect(connector.clone()).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "document feed listener cannot connect");
                    return true;
                }
            };
            let messages = async {
                while let Some(m) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    match m {
                        Ok(tokio_postgres::AsyncMessage::Notification(_)) => {
                            wake.notify_waiters();
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            };
            let subscribe = async {
                match client
                    .batch_execute(&format!("LISTEN {}", docs::CHANNEL))
                    .await
                {
                    Ok(()) => {
                        // Anything written while the listener was away.
                        wake.notify_waiters();
                        std::future::pending::<bool>().await
                    }
                    Err(e) if e.code().is_some() => {
                        tracing::info!(error = %e, "no LISTEN on this engine: the document feed polls");
                        false
                    }
                    Err(_) => true,
                }
            };
            tokio::select! {
                () = messages => true,
                again = subscribe => again,
            }
        };
        let again = tokio::select! {
            again = session => again,
            _ = stop.changed() => return,
        };
        if !again {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// One page of a history. `_since` and `_at` become `seq` bounds (see [`schema`]), so that
/// every query is a range scan of one index, newest first, that stops after the page.
async fn history(
    conn: &Conn,
    sid: i64,
    scope: &HistoryScope,
    query: &HistoryQuery,
) -> Result<HistoryPage> {
    let mut lo = 0_i64;
    let mut hi = i64::MAX;
    if let Some(since) = &query.since {
        lo = conn
            .query_opt(
                "SELECT seq FROM versions WHERE sid = $1 AND last_updated >= $2 \
                 ORDER BY last_updated ASC LIMIT 1",
                &[&sid, since],
            )
            .await?
            .map_or(i64::MAX, |r| r.get(0));
    }
    if let Some(at) = &query.at {
        hi = conn
            .query_opt(
                "SELECT seq FROM versions WHERE sid = $1 AND last_updated <= $2 \
                 ORDER BY last_updated DESC LIMIT 1",
                &[&sid, at],
            )
            .await?
            .map_or(-1, |r| r.get(0));
    }
    let page_hi = match query.before {
        Some(before) => hi.min(before.saturating_sub(1)),
        None => hi,
    };
    // Parameters: $1 sid, then the scope's, then the bounds.
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&sid];
    let (filter, order) = match scope {
        HistoryScope::System => ("v.sid = $1".to_owned(), "v.seq"),
        HistoryScope::Type(rtype) => {
            params.push(rtype);
            ("v.sid = $1 AND v.rtype = $2".to_owned(), "v.seq")
        }
        // Within one resource, version order is seq order.
        HistoryScope::Instance(rtype, id) => {
            params.push(rtype);
            params.push(id);
            (
                "v.sid = $1 AND v.rtype = $2 AND v.id = $3".to_owned(),
                "v.version",
            )
        }
    };
    let n = params.len();
    let filtered = query.since.is_some() || query.at.is_some();
    let total: i64 = match (scope, filtered) {
        // Unfiltered type and system totals come from the kept counts.
        (HistoryScope::System, false) => {
            conn.query_opt(
                "SELECT coalesce(sum(n), 0)::bigint FROM version_counts WHERE sid = $1",
                &params,
            )
            .await?
        }
        (HistoryScope::Type(_), false) => {
            conn.query_opt(
                "SELECT coalesce(sum(n), 0)::bigint FROM version_counts \
                 WHERE sid = $1 AND rtype = $2",
                &params,
            )
            .await?
        }
        _ => {
            let mut p = params.clone();
            p.push(&lo);
            p.push(&hi);
            conn.query_opt(
                &format!(
                    "SELECT count(*) FROM versions v WHERE {filter} \
                     AND v.seq BETWEEN ${} AND ${}",
                    n + 1,
                    n + 2
                ),
                &p,
            )
            .await?
        }
    }
    .map_or(0, |r| r.get(0));
    let mut entries = Vec::new();
    let mut next = None;
    if query.count > 0 && page_hi >= lo {
        // One row more than the page tells whether there is a next page.
        let limit = i64::try_from(query.count).unwrap_or(i64::MAX - 1) + 1;
        let mut p = params.clone();
        p.push(&lo);
        p.push(&page_hi);
        p.push(&limit);
        let rows = conn
            .query(
                &format!(
                    "SELECT v.seq, v.rtype, v.id, {VERSION_COLUMNS} FROM versions v \
                     WHERE {filter} AND v.seq BETWEEN ${} AND ${} \
                     ORDER BY {order} DESC LIMIT ${}",
                    n + 1,
                    n + 2,
                    n + 3
                ),
                &p,
            )
            .await?;
        let mut last_seq = None;
        for row in &rows {
            if entries.len() == query.count {
                next = last_seq;
                break;
            }
            let seq: i64 = row.get(0);
            let rtype: String = row.get(1);
            let id: String = row.get(2);
            entries.push(stored_from_row(row, 3, rtype, id)?);
            last_seq = Some(seq);
        }
    }
    Ok(HistoryPage {
        entries,
        total: u64::try_from(total).unwrap_or(0),
        next,
    })
}
