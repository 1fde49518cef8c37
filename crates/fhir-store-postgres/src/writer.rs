//! Group commit, per service, as the SQLite store does it (`fhir-store-sqlite/src/writer.rs`).
//!
//! A service's writers are serialised by its counter row, locked `FOR UPDATE` until the end of
//! the PostgreSQL transaction, and that transaction's `COMMIT` waits for the WAL flush. Paying
//! that flush once per logical transaction would make a service's write rate one fsync's
//! worth. So this process keeps, per service, one [`Group`]: a connection inside `BEGIN`, the
//! counter row locked, in which each logical transaction ([`crate::tx::PgTx`]) is a
//! `SAVEPOINT`. A logical commit `RELEASE`s its savepoint, joins the group's `pending` list
//! and lets the writers queued behind it run in the same transaction; the first member to get
//! the group back commits it with one `COMMIT` and tells every member the outcome. So:
//!
//! - nothing is acknowledged before the `COMMIT` that contains it returned (durable);
//! - a logical transaction is still all-or-nothing: a failure rolls back to its savepoint,
//!   leaving the group's other members intact;
//! - other readers, and other processes, see a group only once it is committed;
//! - a failed `COMMIT`, or a connection lost while a group is open, fails every member of the
//!   group, none of which was acknowledged.
//!
//! The queue is this process's only: writers of other processes wait on the row lock, and a
//! group holds it for no longer than its members run plus one commit.

use std::collections::HashMap;
use std::sync::Arc;

use fhir_store::{Result, StoreError};
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::{pg_error, Conn, PgStore};

/// The most logical transactions one `COMMIT` makes durable: bounds how long the first of
/// them waits for its acknowledgement.
const MAX_GROUP: usize = 16;

/// The open transaction of a group: its connection (inside `BEGIN`, the service's counter row
/// locked) and the counter as its members advanced it.
pub(crate) struct Open {
    pub(crate) conn: Conn,
    pub(crate) sid: i64,
    /// The last `seq` given out.
    pub(crate) seq: i64,
    /// The newest instant given out, in microseconds.
    pub(crate) last_micros: i64,
    /// Versions written per type by released members, added to `version_counts` at commit.
    pub(crate) counts: HashMap<String, i64>,
    /// Live resources gained or lost per type by released members, added to
    /// `resource_counts` at commit.
    pub(crate) live: HashMap<String, i64>,
    /// Base URLs released members wrote through, recorded at commit.
    pub(crate) bases: Vec<String>,
}

/// One service's writer in this process.
#[derive(Default)]
pub(crate) struct Group {
    /// Open exactly when a member runs or `pending` is not empty.
    pub(crate) open: Option<Open>,
    /// Released members waiting for their `COMMIT`.
    pending: Vec<oneshot::Sender<Result<()>>>,
}

pub(crate) type SharedGroup = Arc<Mutex<Group>>;

impl Group {
    /// Starts a member: the group's transaction if none is open (on a connection from the
    /// store's pool), then its savepoint.
    pub(crate) async fn begin(&mut self, store: &PgStore, service: &str) -> Result<()> {
        if self.open.is_none() {
            self.open = Some(open(store.conn().await?, service).await?);
        }
        let savepoint = match &self.open {
            Some(open) => open.conn.client()?.batch_execute("SAVEPOINT tx").await,
            None => return Err(StoreError::Backend("no open group".into())),
        };
        if let Err(e) = savepoint {
            let e = pg_error(e);
            self.abort(&e);
            return Err(e);
        }
        Ok(())
    }

    /// Undoes the running member: to its savepoint when the group holds others, else the
    /// whole transaction.
    pub(crate) async fn rollback(&mut self) {
        let Some(open) = &mut self.open else { return };
        if self.pending.is_empty() {
            // Should this fail, the connection, dropped inside its transaction, is rolled
            // back or closed before it is reused.
            let _ = open.conn.rollback().await;
            self.open = None;
            return;
        }
        let undone = match open.conn.client() {
            Ok(c) => c
                .batch_execute("ROLLBACK TO tx; RELEASE tx")
                .await
                .map_err(pg_error),
            Err(e) => Err(e),
        };
        if let Err(e) = undone {
            tracing::warn!(error = %e, "rolling back to a savepoint failed; failing the group");
            self.abort(&e);
        }
    }

    /// Ends the running member successfully and adds it to the group, with what it counted.
    /// The receiver gets the outcome of the `COMMIT` that makes it durable.
    pub(crate) async fn release(
        &mut self,
        counts: HashMap<String, i64>,
        live: HashMap<String, i64>,
        bases: Vec<String>,
    ) -> Result<oneshot::Receiver<Result<()>>> {
        let released = match &self.open {
            Some(open) => open
                .conn
                .client()?
                .batch_execute("RELEASE tx")
                .await
                .map_err(pg_error),
            None => Err(StoreError::Backend("no open group".into())),
        };
        if let Err(e) = released {
            self.rollback().await;
            return Err(e);
        }
        if let Some(open) = &mut self.open {
            for (rtype, n) in counts {
                *open.counts.entry(rtype).or_default() += n;
            }
            for (rtype, n) in live {
                *open.live.entry(rtype).or_default() += n;
            }
            for base in bases {
                if !open.bases.contains(&base) {
                    open.bases.push(base);
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push(tx);
        Ok(rx)
    }

    fn is_full(&self) -> bool {
        self.pending.len() >= MAX_GROUP
    }

    /// Commits the open group, if any, and tells its members.
    pub(crate) async fn flush(&mut self) {
        let Some(mut open) = self.open.take() else {
            return;
        };
        let result = write_back(&mut open).await;
        self.notify(result);
    }

    /// Ends the group without committing: every pending member fails with `e`.
    pub(crate) fn abort(&mut self, e: &StoreError) {
        // Dropped inside its transaction, the connection is rolled back or closed.
        self.open = None;
        self.notify(Err(match e {
            StoreError::Busy => StoreError::Busy,
            other => StoreError::Backend(format!("the transaction group was rolled back: {other}")),
        }));
    }

    fn notify(&mut self, result: Result<()>) {
        for member in self.pending.drain(..) {
            // A member whose waiter is gone has nobody left to tell.
            let _ = member.send(result.clone());
        }
    }
}

/// `BEGIN`, and the service's counter row locked (pipelined: one round trip).
async fn open(mut conn: Conn, service: &str) -> Result<Open> {
    conn.in_tx = true;
    let client = conn.client()?;
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
    Ok(Open {
        sid: row.get(0),
        seq: row.get(1),
        last_micros: row.get(2),
        conn,
        counts: HashMap::new(),
        live: HashMap::new(),
        bases: Vec::new(),
    })
}

/// Writes the counter, the type totals and the bases back, and commits.
async fn write_back(open: &mut Open) -> Result<()> {
    let (rtypes, counts): (Vec<String>, Vec<i64>) = open.counts.drain().unzip();
    let (live_types, live): (Vec<String>, Vec<i64>) =
        open.live.drain().filter(|(_, n)| *n != 0).unzip();
    let bases = std::mem::take(&mut open.bases);
    open.conn
        .execute(
            "WITH c AS (UPDATE service_clock SET seq = $2, last_micros = $3 WHERE sid = $1), \
             n AS (INSERT INTO version_counts (sid, rtype, n) \
                   SELECT $1, u.rtype, u.n FROM unnest($4::text[], $5::bigint[]) AS u(rtype, n) \
                   ON CONFLICT (sid, rtype) DO UPDATE SET n = version_counts.n + excluded.n), \
             l AS (INSERT INTO resource_counts (sid, rtype, n) \
                   SELECT $1, u.rtype, u.n FROM unnest($7::text[], $8::bigint[]) AS u(rtype, n) \
                   ON CONFLICT (sid, rtype) DO UPDATE SET n = resource_counts.n + excluded.n) \
             INSERT INTO own_bases (url) SELECT unnest($6::text[]) ON CONFLICT DO NOTHING",
            &[
                &open.sid,
                &open.seq,
                &open.last_micros,
                &rtypes,
                &counts,
                &bases,
                &live_types,
                &live,
            ],
        )
        .await?;
    open.conn.commit().await
}

/// Waits until the member behind `outcome` is durable (or failed), after releasing the group
/// in `guard` so that queued writers can join it. Runs as its own task, so that a dropped
/// request cannot leave a group uncommitted.
pub(crate) async fn commit(
    shared: SharedGroup,
    mut guard: OwnedMutexGuard<Group>,
    mut outcome: oneshot::Receiver<Result<()>>,
) -> Result<()> {
    if !guard.is_full() {
        drop(guard);
        // The lock is fair: this waits behind every writer queued now, each of which joins
        // the group, unless one of them commits it first.
        tokio::select! {
            biased;
            r = &mut outcome => return r.unwrap_or_else(|_| Err(lost())),
            g = shared.lock_owned() => guard = g,
        }
        if let Ok(r) = outcome.try_recv() {
            return r;
        }
    }
    guard.flush().await;
    drop(guard);
    outcome.await.unwrap_or_else(|_| Err(lost()))
}

fn lost() -> StoreError {
    StoreError::Backend("the transaction group ended without an outcome".into())
}
