//! The one writer connection, group commit, and the checkpointer beside it.
//!
//! SQLite admits one writer, and a commit in WAL mode with `synchronous=FULL` costs an fsync
//! plus the writing of every page the transaction dirtied. Under concurrent writes that cost
//! is paid once per *group*: each [`crate::tx::SqliteTx`] is a `SAVEPOINT` inside one SQLite
//! transaction that stays open while other writers are queued for the connection. A logical
//! commit `RELEASE`s its savepoint, joins the group's `pending` list and lets the queued
//! writers run; the first member to get the connection back commits the whole group with one
//! `COMMIT` and tells every member the outcome. So:
//!
//! - nothing is acknowledged before the `COMMIT` that contains it returned (durable);
//! - a logical transaction is still all-or-nothing: a failure rolls back to its savepoint,
//!   leaving the group's other members intact;
//! - readers see a group only when it is committed, like any SQLite transaction, so no one
//!   reads what a crash could take back;
//! - a failed `COMMIT` fails every member of the group, none of which was acknowledged, and
//!   is rolled back, so that the next group starts from the last commit: a full disk fails
//!   the writes made while it is full (`StoreError::StorageFull`), and the first group after
//!   space is freed commits as usual — SQLite ignores WAL frames after the last commit frame.
//!
//! The checkpointer is a thread with its own connection that copies committed WAL frames
//! into the database file, so that the writer never does it inside a commit (the writer's
//! automatic checkpoints are off); when the WAL grows long it also restarts it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fhir_store::{Result, StoreError};
use rusqlite::Connection;
use tokio::sync::{oneshot, Mutex, OwnedMutexGuard};

use crate::backend;

/// The most logical transactions one `COMMIT` makes durable: bounds how long the first of
/// them waits for its acknowledgement.
const MAX_GROUP: usize = 16;

/// WAL frames (pages) after which the checkpointer restarts the WAL, waiting for the writer
/// to be between groups: about 1 GiB at 4 KiB pages. A safety valve only: passive rounds
/// copy everything while the writer works, and the writer starts the WAL over by itself
/// whenever it finds it all copied (during the Synthea ingest the WAL peaked near 600 MiB
/// and was restarted every few seconds), while a restarting round makes the writer wait.
const RESTART_FRAMES: i64 = 262_144;

/// How often the checkpointer looks at the WAL when nobody tells it to.
const CHECKPOINT_IDLE: Duration = Duration::from_secs(1);

/// How long the checkpointer rests after a round. The Synthea ingest wrote 4.3 GB with a
/// round after every commit, 3.2 GB with a second's rest (and ran faster).
const CHECKPOINT_REST: Duration = Duration::from_secs(1);

pub(crate) struct Writer {
    pub(crate) conn: Connection,
    /// Members of the open group: released savepoints waiting for their `COMMIT`. The SQLite
    /// transaction is open exactly when this is not empty (or a member is running).
    pending: Vec<oneshot::Sender<Result<()>>>,
    checkpoints: Option<mpsc::SyncSender<()>>,
}

pub(crate) type SharedWriter = Arc<Mutex<Writer>>;

impl Writer {
    pub(crate) fn new(conn: Connection, checkpoints: Option<mpsc::SyncSender<()>>) -> Writer {
        Writer {
            conn,
            pending: Vec::new(),
            checkpoints,
        }
    }

    /// Starts a logical transaction: the group's SQLite transaction if none is open, then a
    /// savepoint for this member.
    pub(crate) fn begin(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            ensure_idle(&self.conn);
            self.conn
                .execute_batch("BEGIN IMMEDIATE")
                .map_err(backend)?;
        }
        self.conn.execute_batch("SAVEPOINT tx").map_err(backend)
    }

    /// Undoes the running member: to its savepoint when the group holds others, else the
    /// whole SQLite transaction. Logged, not returned: callers are dropping a transaction.
    pub(crate) fn rollback(&mut self) {
        if self.pending.is_empty() {
            ensure_idle(&self.conn);
            return;
        }
        if let Err(e) = self.conn.execute_batch("ROLLBACK TO tx; RELEASE tx") {
            // Cannot happen short of a broken connection; then the group cannot be trusted.
            tracing::error!(error = %e, "rolling back to a savepoint failed; failing the group");
            ensure_idle(&self.conn);
            self.notify(Err(StoreError::Backend(format!(
                "the transaction group was rolled back: {e}"
            ))));
        }
    }

    /// Ends the running member successfully and adds it to the group. The receiver gets
    /// the outcome of the `COMMIT` that makes it durable.
    pub(crate) fn release(&mut self) -> Result<oneshot::Receiver<Result<()>>> {
        if let Err(e) = self.conn.execute_batch("RELEASE tx") {
            self.rollback();
            return Err(backend(e));
        }
        let (tx, rx) = oneshot::channel();
        self.pending.push(tx);
        Ok(rx)
    }

    pub(crate) fn group_is_full(&self) -> bool {
        self.pending.len() >= MAX_GROUP
    }

    /// Commits the open group, if any, and tells its members. Blocking: it fsyncs.
    pub(crate) fn flush(&mut self) {
        if self.pending.is_empty() {
            ensure_idle(&self.conn);
            return;
        }
        let result = self.conn.execute_batch("COMMIT").map_err(backend);
        if result.is_err() {
            ensure_idle(&self.conn);
        }
        self.notify(result);
        if let Some(c) = &self.checkpoints {
            // A full channel means the checkpointer already has work to look at.
            let _ = c.try_send(());
        }
    }

    fn notify(&mut self, result: Result<()>) {
        for member in self.pending.drain(..) {
            // A member whose waiter is gone has nobody left to tell.
            let _ = member.send(result.clone());
        }
    }
}

/// Rolls back a transaction that a failure left open, so that the next user starts clean.
/// Logged, not returned: the caller has nothing to do about it.
pub(crate) fn ensure_idle(conn: &Connection) {
    if !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "rolling back a stale write transaction failed");
        }
    }
}

/// Waits until the member behind `outcome` is durable (or failed), after releasing the
/// writer in `guard` so that queued writers can join its group. Runs as its own task, so
/// a dropped request cannot leave a group uncommitted.
pub(crate) async fn commit(
    shared: SharedWriter,
    mut guard: OwnedMutexGuard<Writer>,
    mut outcome: oneshot::Receiver<Result<()>>,
) -> Result<()> {
    if !guard.group_is_full() {
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
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .map_err(|e| StoreError::Backend(format!("commit task failed: {e}")))?;
    outcome.await.unwrap_or_else(|_| Err(lost()))
}

fn lost() -> StoreError {
    StoreError::Backend("the transaction group ended without an outcome".into())
}

/// The checkpointer thread: a passive checkpoint whenever the writer committed (or every
/// second), a restarting one when the WAL has grown past [`RESTART_FRAMES`].
pub(crate) struct Checkpointer {
    signal: mpsc::SyncSender<()>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(crate) fn spawn(conn: Connection) -> std::io::Result<Checkpointer> {
        let (signal, rx) = mpsc::sync_channel::<()>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("fhirlink-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    let woken = rx.recv_timeout(CHECKPOINT_IDLE);
                    if stopped.load(Ordering::Acquire)
                        || woken == Err(mpsc::RecvTimeoutError::Disconnected)
                    {
                        return;
                    }
                    failing = checkpoint(&conn, failing);
                    // The rest, so that a page written by several commits in a row is copied once.
                    let until = Instant::now() + CHECKPOINT_REST;
                    while let Some(left) = until
                        .checked_duration_since(Instant::now())
                        .filter(|d| !d.is_zero())
                    {
                        let woken = rx.recv_timeout(left);
                        if stopped.load(Ordering::Acquire)
                            || woken == Err(mpsc::RecvTimeoutError::Disconnected)
                        {
                            return;
                        }
                    }
                }
            })?;
        Ok(Checkpointer {
            signal,
            stop,
            thread: Some(thread),
        })
    }

    /// What the writer wakes the thread with after each commit.
    pub(crate) fn signal(&self) -> mpsc::SyncSender<()> {
        self.signal.clone()
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.signal.try_send(());
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("the checkpointer thread panicked");
            }
        }
    }
}

/// One checkpoint round; true when it failed. Errors are logged when they start and when they
/// end (a full disk fails every round until space is freed): the next round tries again, and
/// a WAL that is not checkpointed is still a correct database, only a longer one.
fn checkpoint(conn: &Connection, failing: bool) -> bool {
    let passive = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?))
    });
    match passive {
        Ok((log, _)) if log > RESTART_FRAMES => {
            // Waits (busy timeout) for the writer to be between groups and for readers to
            // leave the WAL, so that the next group writes it from its start again.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                tracing::debug!(error = %e, "restarting checkpoint postponed");
            }
        }
        Ok(_) => {}
        Err(e) => {
            if !failing {
                tracing::warn!(error = %e, "checkpoint failed; retried every second");
            }
            return true;
        }
    }
    if failing {
        tracing::info!("checkpoints pass again");
    }
    false
}
