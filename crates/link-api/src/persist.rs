//! The control-plane state in the store: one document per ARM resource in the collection
//! [`link_model::DOCUMENT_COLLECTION`], keyed by lowercase id, written all-or-nothing with
//! the version each was last read at.

use std::collections::HashMap;

use fhir_store::{DocumentWrite, Expected, Store, StoreError};
use link_model::{Changes, Resource, State, DOCUMENT_COLLECTION};

/// The stored version of every document, by key.
pub(crate) type Versions = HashMap<String, u64>;

/// What the control plane's state was loaded from: the version of each of its documents, and
/// the position of the store's change feed that the state includes every change up to.
#[derive(Debug, Default)]
pub(crate) struct Tracked {
    pub(crate) versions: Versions,
    pub(crate) position: u64,
}

impl Tracked {
    /// Whether the state already holds `change` (this process wrote it, or it is a write of
    /// another collection).
    pub(crate) fn holds(&self, change: &fhir_store::DocumentChange) -> bool {
        change.collection != DOCUMENT_COLLECTION
            || self.versions.get(&change.key).copied() == change.version
    }
}

/// Why the control plane could not start (or reload).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("stored control-plane document {0} is not a valid ARM resource")]
    Corrupt(String),
}

/// The store's change feed position now (asked from past any position, so no changes come).
pub(crate) async fn feed_position(store: &dyn Store) -> Result<u64, StoreError> {
    const PAST_ANY: u64 = i64::MAX as u64;
    Ok(store
        .document_changes(PAST_ANY, std::time::Duration::ZERO)
        .await?
        .position)
}

/// Loads the state, and the feed position it includes every change up to (read first).
pub(crate) async fn load(store: &dyn Store) -> Result<(State, Tracked), OpenError> {
    let position = feed_position(store).await?;
    let docs = store.list_documents(DOCUMENT_COLLECTION).await?;
    let mut versions = Versions::new();
    let mut resources = Vec::with_capacity(docs.len());
    for d in docs {
        let r =
            Resource::from_document(&d.body).ok_or_else(|| OpenError::Corrupt(d.key.clone()))?;
        versions.insert(d.key, d.version);
        resources.push(r);
    }
    Ok((
        State::from_resources(resources),
        Tracked { versions, position },
    ))
}

/// Writes a mutation's documents at once, decided on the state as of `tracked.position`;
/// on success the versions follow. The batch is conditional on no control-plane document
/// having changed since that position ([`DocumentWrite::Unchanged`]), not only on the
/// versions of the documents it writes: the rules span resources (an endpoint needs its
/// subnet, a network cannot go while endpoints use it), so a decision made while another
/// process changed any document is refused ([`StoreError::Conflict`]) and made again.
pub(crate) async fn write(
    store: &dyn Store,
    tracked: &mut Tracked,
    changes: &Changes,
) -> Result<(), StoreError> {
    if changes.documents.is_empty() {
        return Ok(());
    }
    let versions = &mut tracked.versions;
    let precondition = DocumentWrite::Unchanged {
        collection: DOCUMENT_COLLECTION.to_owned(),
        since: tracked.position,
    };
    let writes: Vec<DocumentWrite> = std::iter::once(precondition)
        .chain(changes.documents.iter().map(|(key, doc)| {
            let expected = versions
                .get(key)
                .map_or(Expected::Absent, |v| Expected::Version(*v));
            match doc {
                Some(body) => DocumentWrite::Put {
                    collection: DOCUMENT_COLLECTION.to_owned(),
                    key: key.clone(),
                    body: body.clone(),
                    expected,
                },
                None => DocumentWrite::Delete {
                    collection: DOCUMENT_COLLECTION.to_owned(),
                    key: key.clone(),
                    expected: if versions.contains_key(key) {
                        expected
                    } else {
                        Expected::Any
                    },
                },
            }
        }))
        .collect();
    let written = store.write_documents(writes).await?;
    for (key, doc) in &changes.documents {
        if doc.is_none() {
            versions.remove(key);
        }
    }
    for d in written {
        versions.insert(d.key, d.version);
    }
    Ok(())
}
