//! Copying a whole deployment from one [`Store`] to another (`fhirlink store copy`: SQLite
//! to PostgreSQL), through the contract alone.
//!
//! Every service, every version of every resource — deletions included, each with its
//! version number and `lastUpdated` — and the control plane's documents. Versions are written
//! in the order the source committed them (its system history, oldest first), so the
//! target's histories list them in the same order, and its `_since` and export snapshots see
//! the same instants. Only the keys of the versions are held in memory; each body is read
//! again when its turn comes. The target must be empty: a copy never merges.

use crate::{
    DocumentWrite, Expected, HistoryQuery, HistoryScope, Prepared, Result, Store, StoreError,
};

/// What a copy reports as it works.
pub trait CopyProgress: Send + Sync {
    /// A service is about to be copied: it has this many versions.
    fn service(&self, _name: &str, _versions: u64) {}
    /// This many more versions were written.
    fn copied(&self, _versions: u64) {}
}

/// No reporting.
pub struct Silent;
impl CopyProgress for Silent {}

/// What was copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    pub services: usize,
    pub versions: u64,
    pub documents: usize,
}

/// Versions written per target transaction.
const BATCH: usize = 500;

/// Copies `from` into `to`, which must hold no service and no document in `collections`.
pub async fn copy(
    from: &dyn Store,
    to: &dyn Store,
    collections: &[&str],
    progress: &dyn CopyProgress,
) -> Result<CopyReport> {
    let there = to.list_services().await?;
    if !there.is_empty() {
        return Err(StoreError::Backend(format!(
            "the target already holds services ({}): a copy goes into an empty store only",
            there.join(", ")
        )));
    }
    for c in collections {
        if !to.list_documents(c).await?.is_empty() {
            return Err(StoreError::Backend(format!(
                "the target already holds {c} documents: a copy goes into an empty store only"
            )));
        }
    }
    let mut report = CopyReport::default();
    // References under the source's own base URLs are indexed as relative ones there: the
    // same here.
    let bases = from.own_bases().await?;
    for service in from.list_services().await? {
        to.create_service(&service).await?;
        // The system history, newest first, is every version in commit order reversed.
        let mut keys: Vec<(String, String, u64)> = Vec::new();
        let mut before = None;
        loop {
            let page = from
                .history(
                    &service,
                    &HistoryScope::System,
                    &HistoryQuery {
                        since: None,
                        at: None,
                        count: 1000,
                        before,
                    },
                )
                .await?;
            keys.extend(
                page.entries
                    .into_iter()
                    .map(|e| (e.resource_type, e.id, e.version)),
            );
            match page.next {
                Some(next) => before = Some(next),
                None => break,
            }
        }
        keys.reverse();
        progress.service(&service, keys.len() as u64);
        for batch in keys.chunks(BATCH) {
            let mut tx = to.begin(&service).await?;
            for (rtype, id, version) in batch {
                let stored = from
                    .vread(&service, rtype, id, *version)
                    .await?
                    .ok_or_else(|| {
                        StoreError::Backend(format!(
                            "{service}: {rtype}/{id} version {version} is in the history but cannot be read"
                        ))
                    })?;
                let prepared = match &stored.body {
                    Some(body) => {
                        let v = serde_json::from_slice(body).map_err(|e| {
                            StoreError::Backend(format!(
                                "{service}: {rtype}/{id} version {version} is not JSON: {e}"
                            ))
                        })?;
                        Some(Prepared::with_bases(id, v, &bases))
                    }
                    None => None,
                };
                let written = tx
                    .put_version(rtype, id, *version, stored.last_updated, prepared)
                    .await?;
                if written.is_none() {
                    return Err(StoreError::Backend(format!(
                        "{service}: {rtype}/{id} version {version} came after a later version of it"
                    )));
                }
            }
            tx.commit().await?;
            report.versions += batch.len() as u64;
            progress.copied(batch.len() as u64);
        }
        report.services += 1;
    }
    for c in collections {
        let docs = from.list_documents(c).await?;
        if docs.is_empty() {
            continue;
        }
        report.documents += docs.len();
        to.write_documents(
            docs.into_iter()
                .map(|d| DocumentWrite::Put {
                    collection: d.collection,
                    key: d.key,
                    body: d.body,
                    expected: Expected::Absent,
                })
                .collect(),
        )
        .await?;
    }
    Ok(report)
}
