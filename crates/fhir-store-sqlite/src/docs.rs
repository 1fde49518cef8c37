//! Control-plane documents in the `documents` table: reads on the reader pool, writes as one
//! writer transaction that checks every expectation before it changes anything.

use fhir_store::{Document, DocumentChange, DocumentWrite, Expected, Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::backend;

fn decode(collection: String, key: String, version: i64, body: &[u8]) -> Result<Document> {
    let body: Value = serde_json::from_slice(body).map_err(|e| {
        StoreError::Backend(format!("document {collection}/{key} is not JSON: {e}"))
    })?;
    Ok(Document {
        collection,
        key,
        version: u64::try_from(version).unwrap_or(0),
        body,
    })
}

pub(crate) fn get(conn: &Connection, collection: &str, key: &str) -> Result<Option<Document>> {
    let row: Option<(i64, Vec<u8>)> = conn
        .prepare_cached("SELECT version, body FROM documents WHERE collection = ?1 AND key = ?2")
        .and_then(|mut st| {
            st.query_row(params![collection, key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
        .map_err(backend)?;
    row.map(|(v, b)| decode(collection.to_string(), key.to_string(), v, &b))
        .transpose()
}

pub(crate) fn list(conn: &Connection, collection: &str) -> Result<Vec<Document>> {
    let rows: Vec<(String, i64, Vec<u8>)> = conn
        .prepare_cached(
            "SELECT key, version, body FROM documents WHERE collection = ?1 ORDER BY key",
        )
        .and_then(|mut st| {
            st.query_map([collection], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(backend)?;
    rows.into_iter()
        .map(|(k, v, b)| decode(collection.to_string(), k, v, &b))
        .collect()
}

fn check(current: Option<i64>, expected: Expected, collection: &str, key: &str) -> Result<()> {
    let ok = match (expected, current) {
        (Expected::Any, _) | (Expected::Absent, None) => true,
        (Expected::Version(want), Some(have)) => u64::try_from(have) == Ok(want),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    Err(StoreError::Conflict {
        collection: collection.to_string(),
        key: key.to_string(),
        detail: match current {
            Some(v) => format!("it is at version {v}, not {expected:?}"),
            None => format!("it does not exist, not {expected:?}"),
        },
    })
}

/// Applies the writes in one transaction on the writer connection (already idle). Returns
/// the documents written and, for the change feed, every change made.
pub(crate) fn write(
    conn: &mut Connection,
    writes: Vec<DocumentWrite>,
) -> Result<(Vec<Document>, Vec<DocumentChange>)> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(backend)?;
    let mut written = Vec::new();
    let mut changes = Vec::new();
    for w in writes {
        let (collection, key, expected) = match &w {
            DocumentWrite::Put {
                collection,
                key,
                expected,
                ..
            }
            | DocumentWrite::Delete {
                collection,
                key,
                expected,
            } => (collection.clone(), key.clone(), *expected),
            // Checked against the feed before the batch (`SqliteStore::write_documents`).
            DocumentWrite::Unchanged { .. } => continue,
        };
        let current: Option<i64> = tx
            .prepare_cached("SELECT version FROM documents WHERE collection = ?1 AND key = ?2")
            .and_then(|mut st| {
                st.query_row(params![collection, key], |r| r.get(0))
                    .optional()
            })
            .map_err(backend)?;
        check(current, expected, &collection, &key)?;
        match w {
            DocumentWrite::Put { body, .. } => {
                let version = current.unwrap_or(0) + 1;
                let bytes = serde_json::to_vec(&body)
                    .map_err(|e| StoreError::Backend(format!("document JSON: {e}")))?;
                tx.prepare_cached(
                    "INSERT INTO documents (collection, key, version, body) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (collection, key) DO UPDATE SET version = ?3, body = ?4",
                )
                .and_then(|mut st| st.execute(params![collection, key, version, bytes]))
                .map_err(backend)?;
                changes.push(DocumentChange {
                    collection: collection.clone(),
                    key: key.clone(),
                    version: u64::try_from(version).ok(),
                });
                written.push(Document {
                    collection,
                    key,
                    version: u64::try_from(version).unwrap_or(0),
                    body,
                });
            }
            DocumentWrite::Unchanged { .. } => {}
            DocumentWrite::Delete { .. } => {
                tx.prepare_cached("DELETE FROM documents WHERE collection = ?1 AND key = ?2")
                    .and_then(|mut st| st.execute(params![collection, key]))
                    .map_err(backend)?;
                changes.push(DocumentChange {
                    collection,
                    key,
                    version: None,
                });
            }
        }
    }
    // Dropping `tx` on an early return above rolls everything back.
    tx.commit().map_err(backend)?;
    Ok((written, changes))
}
