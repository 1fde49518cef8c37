//! Per-thread shards: the audit log's pending buffers and the metrics tables are split over
//! [`SHARDS`] slots, each request's thread writing to its own, so that threads rarely share one
//! (and then only contend, never wait on IO). Its own module so that audit, metrics and
//! telemetry all depend on it and not on each other in a circle.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Shards of the audit log's pending buffers and of the metrics tables: threads are spread
/// over them, so that two threads rarely share one (and then only contend, never wait on IO).
pub(crate) const SHARDS: usize = 16;

/// This thread's shard, `0..SHARDS`, handed out round-robin on the thread's first request.
pub(crate) fn thread_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        s.get()
    })
}
