//! An in-process change feed of documents, for a store that is its own only writer (the
//! SQLite store, behind its folder lock): positions start at 0 when the store opens, and a
//! bounded window of recent changes is kept in memory. A reader further behind than the
//! window is told so ([`DocumentChanges::truncated`]) and reads everything again.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::{DocumentChange, DocumentChanges, DocumentWrite, StoreError};

/// How many changes the feed remembers.
const WINDOW: usize = 4096;

/// The feed: [`LocalFeed::record`] on the store's one writer, right after each commit (so
/// in commit order), [`LocalFeed::changes`] for readers.
#[derive(Debug)]
pub struct LocalFeed {
    log: Mutex<VecDeque<(u64, DocumentChange)>>,
    position: watch::Sender<u64>,
}

impl Default for LocalFeed {
    fn default() -> Self {
        LocalFeed {
            log: Mutex::new(VecDeque::new()),
            position: watch::Sender::new(0),
        }
    }
}

impl LocalFeed {
    /// Adds the changes of one committed write, each at the next position.
    pub fn record(&self, changes: impl IntoIterator<Item = DocumentChange>) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let mut position = *self.position.borrow();
        for change in changes {
            position += 1;
            log.push_back((position, change));
            if log.len() > WINDOW {
                log.pop_front();
            }
        }
        self.position.send_replace(position);
    }

    fn since(&self, after: u64) -> DocumentChanges {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let position = *self.position.borrow();
        let oldest = log.front().map_or(position + 1, |(p, _)| *p);
        let mut changes: Vec<DocumentChange> = Vec::new();
        for (_, change) in log.iter().filter(|(p, _)| *p > after) {
            changes.retain(|c| c.collection != change.collection || c.key != change.key);
            changes.push(change.clone());
        }
        DocumentChanges {
            position,
            changes,
            // Positions after `after` that the window has already let go of.
            truncated: after < position && after.saturating_add(1) < oldest,
        }
    }

    /// Refuses a batch with a [`DocumentWrite::Unchanged`] precondition that no longer holds:
    /// a change of its collection after its position, or a position this feed cannot vouch
    /// for (beyond the feed, or before the window it remembers). Call on the store's one
    /// writer before the batch, so that no write comes in between.
    pub fn check_unchanged(&self, writes: &[DocumentWrite]) -> Result<(), StoreError> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let position = *self.position.borrow();
        let oldest = log.front().map_or(position + 1, |(p, _)| *p);
        for w in writes {
            let DocumentWrite::Unchanged { collection, since } = w else {
                continue;
            };
            let since = *since;
            let detail = if since > position {
                Some(format!(
                    "position {since} is beyond the change feed's {position}"
                ))
            } else if since < position && since.saturating_add(1) < oldest {
                Some(format!(
                    "the change feed no longer remembers what changed after position {since}"
                ))
            } else {
                log.iter()
                    .find(|(p, c)| *p > since && c.collection == *collection)
                    .map(|(p, c)| format!("{} changed at position {p}, after {since}", c.key))
            };
            if let Some(detail) = detail {
                return Err(StoreError::Conflict {
                    collection: collection.clone(),
                    key: "*".to_owned(),
                    detail,
                });
            }
        }
        Ok(())
    }

    /// The changes after `after`, waiting up to `wait` for one.
    pub async fn changes(&self, after: u64, wait: Duration) -> DocumentChanges {
        let mut rx = self.position.subscribe();
        if *rx.borrow_and_update() <= after && !wait.is_zero() {
            let _ = tokio::time::timeout(wait, rx.wait_for(|p| *p > after)).await;
        }
        self.since(after)
    }
}
