//! Control-plane documents in the `documents` table. A batch is one transaction whose every
//! write is a compare-and-set on the row, so that expectations hold between processes: a
//! write that expects a version updates only that version (waiting for, then re-reading, a
//! row another writer holds), one that expects no document inserts only where there is none.
//! The first expectation that fails rolls the whole batch back.
//!
//! The change feed: a batch first locks the deployment's one `document_clock` row (`FOR
//! UPDATE`), gives each of its writes the next position and records it in
//! `document_changes` (one row per document, deletions included, holding its latest
//! change), and stores the clock's new position, all in the batch's transaction. Document
//! batches are thus serialised across every process on the database, and positions grow in
//! commit order: a reader that asks for the rows after the position it last saw, in one
//! statement (one snapshot), misses nothing. After the commit a `NOTIFY` wakes the other
//! processes' listeners where the engine has it; readers poll either way.

use fhir_store::{
    Document, DocumentChange, DocumentChanges, DocumentWrite, Expected, Result, StoreError,
};
use serde_json::Value;

use crate::{version_to_sql, Conn};

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

pub(crate) async fn get(conn: &Conn, collection: &str, key: &str) -> Result<Option<Document>> {
    let row = conn
        .query_opt(
            "SELECT version, body FROM documents WHERE collection = $1 AND key = $2",
            &[&collection, &key],
        )
        .await?;
    row.map(|r| {
        decode(
            collection.to_owned(),
            key.to_owned(),
            r.get(0),
            r.get::<_, &[u8]>(1),
        )
    })
    .transpose()
}

pub(crate) async fn list(conn: &Conn, collection: &str) -> Result<Vec<Document>> {
    let rows = conn
        .query(
            "SELECT key, version, body FROM documents WHERE collection = $1 ORDER BY key",
            &[&collection],
        )
        .await?;
    rows.iter()
        .map(|r| {
            decode(
                collection.to_owned(),
                r.get(0),
                r.get(1),
                r.get::<_, &[u8]>(2),
            )
        })
        .collect()
}

/// The refusal of a write whose expectation failed, with what is there now.
async fn conflict(
    conn: &Conn,
    collection: &str,
    key: &str,
    expected: Expected,
) -> Result<StoreError> {
    let current: Option<i64> = conn
        .query_opt(
            "SELECT version FROM documents WHERE collection = $1 AND key = $2",
            &[&collection, &key],
        )
        .await?
        .map(|r| r.get(0));
    Ok(StoreError::Conflict {
        collection: collection.to_owned(),
        key: key.to_owned(),
        detail: match current {
            Some(v) => format!("it is at version {v}, not {expected:?}"),
            None => format!("it does not exist, not {expected:?}"),
        },
    })
}

/// Refuses the batch when a [`DocumentWrite::Unchanged`] of it no longer holds: a change of
/// its collection after its position, or a position beyond the clock's (`clock`, the
/// position before the batch, read with the clock row locked, so no batch comes between).
async fn check_unchanged(conn: &Conn, writes: &[DocumentWrite], clock: i64) -> Result<()> {
    for w in writes {
        let DocumentWrite::Unchanged { collection, since } = w else {
            continue;
        };
        let since_sql = version_to_sql(*since)?;
        let detail = if since_sql > clock {
            Some(format!(
                "position {since} is beyond the change feed's {clock}"
            ))
        } else {
            conn.query_opt(
                "SELECT key, seq FROM document_changes WHERE seq > $2 AND collection = $1 \
                 ORDER BY seq LIMIT 1",
                &[collection, &since_sql],
            )
            .await?
            .map(|r| {
                format!(
                    "{} changed at position {}, after {since}",
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1)
                )
            })
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

/// One write of a batch, inside its transaction: the version written, `None` for a delete
/// (and for a precondition, which writes nothing).
async fn apply(conn: &Conn, w: &DocumentWrite) -> Result<std::result::Result<Option<i64>, ()>> {
    let written: Option<i64> = match w {
        DocumentWrite::Unchanged { .. } => None,
        DocumentWrite::Put {
            collection,
            key,
            body,
            expected,
        } => {
            let bytes = serde_json::to_vec(body)
                .map_err(|e| StoreError::Backend(format!("document JSON: {e}")))?;
            let row = match expected {
                Expected::Any => {
                    conn.query_opt(
                        "INSERT INTO documents (collection, key, version, body) \
                         VALUES ($1, $2, 1, $3) ON CONFLICT (collection, key) DO UPDATE \
                         SET version = documents.version + 1, body = excluded.body \
                         RETURNING version",
                        &[collection, key, &bytes],
                    )
                    .await?
                }
                Expected::Absent => {
                    conn.query_opt(
                        "INSERT INTO documents (collection, key, version, body) \
                         VALUES ($1, $2, 1, $3) ON CONFLICT (collection, key) DO NOTHING \
                         RETURNING version",
                        &[collection, key, &bytes],
                    )
                    .await?
                }
                Expected::Version(v) => {
                    let v = version_to_sql(*v)?;
                    conn.query_opt(
                        "UPDATE documents SET version = version + 1, body = $4 \
                         WHERE collection = $1 AND key = $2 AND version = $3 \
                         RETURNING version",
                        &[collection, key, &v, &bytes],
                    )
                    .await?
                }
            };
            match row {
                Some(r) => Some(r.get(0)),
                None => return Ok(Err(())),
            }
        }
        DocumentWrite::Delete {
            collection,
            key,
            expected,
        } => {
            let ok = match expected {
                Expected::Any => {
                    conn.execute(
                        "DELETE FROM documents WHERE collection = $1 AND key = $2",
                        &[collection, key],
                    )
                    .await?;
                    true
                }
                Expected::Absent => conn
                    .query_opt(
                        "SELECT 1 FROM documents WHERE collection = $1 AND key = $2 \
                         FOR UPDATE",
                        &[collection, key],
                    )
                    .await?
                    .is_none(),
                Expected::Version(v) => {
                    let v = version_to_sql(*v)?;
                    conn.execute(
                        "DELETE FROM documents \
                         WHERE collection = $1 AND key = $2 AND version = $3",
                        &[collection, key, &v],
                    )
                    .await?
                        == 1
                }
            };
            if !ok {
                return Ok(Err(()));
            }
            None
        }
    };
    Ok(Ok(written))
}

/// The channel the documents' writers notify after each commit.
pub(crate) const CHANNEL: &str = "fhirlink_documents";

/// Records one change of the feed at `seq`, inside the batch's transaction.
async fn record(conn: &Conn, w: &DocumentWrite, version: Option<i64>, seq: i64) -> Result<()> {
    let (DocumentWrite::Put {
        collection, key, ..
    }
    | DocumentWrite::Delete {
        collection, key, ..
    }) = w
    else {
        return Ok(());
    };
    conn.execute(
        "INSERT INTO document_changes (collection, key, version, seq) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (collection, key) DO UPDATE SET version = excluded.version, seq = excluded.seq",
        &[collection, key, &version, &seq],
    )
    .await?;
    Ok(())
}

/// The feed after position `after`, read in one statement (one snapshot).
pub(crate) async fn changes(conn: &Conn, after: u64) -> Result<DocumentChanges> {
    let after = version_to_sql(after)?;
    let rows = conn
        .query(
            "SELECT c.seq, d.collection, d.key, d.version FROM document_clock c \
             LEFT JOIN document_changes d ON d.seq > $1 WHERE c.id = 1 ORDER BY d.seq",
            &[&after],
        )
        .await?;
    let mut feed = DocumentChanges::default();
    for r in &rows {
        feed.position = u64::try_from(r.get::<_, i64>(0)).unwrap_or(0);
        if let (Some(collection), Some(key)) = (r.get(1), r.get(2)) {
            feed.changes.push(DocumentChange {
                collection,
                key,
                version: r
                    .get::<_, Option<i64>>(3)
                    .and_then(|v| u64::try_from(v).ok()),
            });
        }
    }
    Ok(feed)
}

/// Applies the writes in one transaction, or none of them.
pub(crate) async fn write(conn: &mut Conn, writes: Vec<DocumentWrite>) -> Result<Vec<Document>> {
    conn.begin("BEGIN").await?;
    let mut seq: i64 = conn
        .query_opt(
            "SELECT seq FROM document_clock WHERE id = 1 FOR UPDATE",
            &[],
        )
        .await?
        .ok_or_else(|| StoreError::Backend("the document clock row is missing".into()))?
        .get(0);
    if let Err(refusal) = check_unchanged(conn, &writes, seq).await {
        conn.rollback().await?;
        return Err(refusal);
    }
    let mut written = Vec::new();
    for w in writes {
        if matches!(w, DocumentWrite::Unchanged { .. }) {
            continue;
        }
        let applied = apply(conn, &w).await?;
        if let Ok(version) = applied {
            seq += 1;
            record(conn, &w, version, seq).await?;
        }
        match applied {
            Ok(Some(version)) => {
                if let DocumentWrite::Put {
                    collection,
                    key,
                    body,
                    ..
                } = w
                {
                    written.push(Document {
                        collection,
                        key,
                        version: u64::try_from(version).unwrap_or(0),
                        body,
                    });
                }
            }
            Ok(None) => {}
            Err(()) => {
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
                    } => (collection, key, *expected),
                    DocumentWrite::Unchanged { .. } => continue,
                };
                let refusal = conflict(conn, collection, key, expected).await?;
                conn.rollback().await?;
                return Err(refusal);
            }
        }
    }
    conn.execute("UPDATE document_clock SET seq = $1 WHERE id = 1", &[&seq])
        .await?;
    conn.commit().await.map_err(|e| match e {
        StoreError::Backend(m) => StoreError::Backend(format!("committing documents: {m}")),
        other => other,
    })?;
    // A wake-up for the other processes' feeds; an engine without NOTIFY refuses it, and
    // their polling finds the change all the same.
    let _ = conn
        .client()?
        .batch_execute(&format!("NOTIFY {CHANNEL}"))
        .await;
    Ok(written)
}
