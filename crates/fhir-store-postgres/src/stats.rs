//! Planner statistics kept fresh by the store itself.
//!
//! The search SQL leans on PostgreSQL's planner choosing the selective side of a join (a
//! patient's index rows, not every row of a common code). With no statistics — a database
//! just loaded, on a server where autovacuum is off or has not come round yet — the planner
//! takes every index table for a few rows and picks plans that read whole parameters: on this
//! machine (autovacuum off) `Observation?patient=&code=` took 250 ms on the 615-patient set
//! before `ANALYZE` and under 1 ms after. So the store counts the versions it commits and,
//! when they have grown by a fifth since the last time (at least [`FIRST`] versions), runs
//! `ANALYZE` on the tables search reads, in the background, one at a time per process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use deadpool_postgres::Pool;

/// Versions committed before the first `ANALYZE`.
pub(crate) const FIRST: u64 = 1_000;

/// The tables search reads.
const TABLES: &str = "resources, versions, ix_string, ix_token, ix_ref, ix_date, ix_number, \
                      ix_quantity, ix_uri";

#[derive(Debug, Default)]
pub(crate) struct Stats {
    /// Versions committed by this process since its last `ANALYZE`.
    since: AtomicU64,
    /// Versions committed by this process up to its last `ANALYZE`.
    at_last: AtomicU64,
    running: AtomicBool,
    /// `ANALYZE` runs finished (for tests).
    pub(crate) runs: AtomicU64,
}

impl Stats {
    /// Counts `n` committed versions, and starts an `ANALYZE` when they are due.
    pub(crate) fn committed(self: &Arc<Self>, pool: &Pool, n: u64) {
        let since = self.since.fetch_add(n, Ordering::Relaxed) + n;
        let due = FIRST.max(self.at_last.load(Ordering::Relaxed) / 5);
        if since < due || self.running.swap(true, Ordering::AcqRel) {
            return;
        }
        let stats = self.clone();
        let pool = pool.clone();
        tokio::spawn(async move {
            let taken = stats.since.swap(0, Ordering::AcqRel);
            stats.at_last.fetch_add(taken, Ordering::Relaxed);
            match pool.get().await {
                Ok(conn) => match conn.batch_execute(&format!("ANALYZE {TABLES}")).await {
                    Ok(()) => {
                        stats.runs.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(versions = taken, "planner statistics refreshed");
                    }
                    Err(e) => tracing::warn!(error = %e, "ANALYZE failed"),
                },
                Err(e) => tracing::warn!(error = %e, "no connection for ANALYZE"),
            }
            stats.running.store(false, Ordering::Release);
        });
    }
}
