//! Writing the search index: the rows of the current version of each resource, one table per
//! value kind (see [`crate::schema`]), keyed by the version's `seq`.
//!
//! A new version replaces the rows of the previous one; a deletion removes them. Extraction is
//! `fhir_search::extract`, run once per written version over the JSON already parsed for the
//! write, so indexing costs one pass of precompiled FHIRPath expressions and a few inserts.

use fhir_search::{IndexEntry, IndexValue};
use rusqlite::{params, Connection};

use crate::backend;
use fhir_store::Result;

/// Every index table, for removals.
pub(crate) const TABLES: &[&str] = &[
    "ix_string",
    "ix_token",
    "ix_ref",
    "ix_date",
    "ix_number",
    "ix_quantity",
    "ix_uri",
];

/// Removes the index rows of version `seq`.
pub(crate) fn remove(conn: &Connection, seq: i64) -> Result<()> {
    for t in TABLES {
        conn.prepare_cached(&format!("DELETE FROM {t} WHERE seq = ?1"))
            .and_then(|mut st| st.execute([seq]))
            .map_err(backend)?;
    }
    Ok(())
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or_default()
}

/// Writes the rows of `entries` for version `seq` of service `sid`.
pub(crate) fn insert(conn: &Connection, sid: i64, seq: i64, entries: &[IndexEntry]) -> Result<()> {
    for e in entries {
        let pid = i64::from(e.param);
        let grp = i64::from(e.group);
        let r = match &e.value {
            IndexValue::String { norm, exact } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_string (sid, pid, norm, exact, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut st| st.execute(params![sid, pid, norm, exact, seq, grp])),
            IndexValue::Token { system, code, text } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_token (sid, pid, code, system, seq, grp, text) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut st| {
                    st.execute(params![sid, pid, opt(code), opt(system), seq, grp, text])
                }),
            IndexValue::Reference { ttype, tid, url } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_ref (sid, pid, ttype, tid, url, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .and_then(|mut st| {
                    st.execute(params![sid, pid, opt(ttype), opt(tid), opt(url), seq, grp])
                }),
            IndexValue::Date { lo, hi } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_date (sid, pid, lo, hi, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut st| st.execute(params![sid, pid, lo, hi, seq, grp])),
            IndexValue::Number { lo, hi } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_number (sid, pid, lo, hi, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut st| st.execute(params![sid, pid, lo, hi, seq, grp])),
            IndexValue::Quantity {
                system,
                code,
                lo,
                hi,
            } => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_quantity (sid, pid, code, system, lo, hi, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut st| {
                    st.execute(params![sid, pid, opt(code), opt(system), lo, hi, seq, grp])
                }),
            IndexValue::Uri(v) => conn
                .prepare_cached(
                    "INSERT OR IGNORE INTO ix_uri (sid, pid, value, seq, grp) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )
                .and_then(|mut st| st.execute(params![sid, pid, v, seq, grp])),
        };
        r.map_err(backend)?;
    }
    Ok(())
}

/// Rebuilds the whole index from the current versions: run once when a database made before
/// the index existed is opened.
pub(crate) fn rebuild(conn: &Connection) -> Result<()> {
    for t in TABLES {
        conn.execute(&format!("DELETE FROM {t}"), [])
            .map_err(backend)?;
    }
    let bases: Vec<String> = conn
        .prepare("SELECT url FROM own_bases")
        .and_then(|mut st| {
            st.query_map([], |row| row.get(0))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        })
        .map_err(backend)?;
    let mut st = conn
        .prepare(
            "SELECT r.sid, r.seq, v.body FROM resources r JOIN versions v ON v.seq = r.seq \
             WHERE r.deleted = 0",
        )
        .map_err(backend)?;
    let mut rows = st.query([]).map_err(backend)?;
    while let Some(row) = rows.next().map_err(backend)? {
        let sid: i64 = row.get(0).map_err(backend)?;
        let seq: i64 = row.get(1).map_err(backend)?;
        let body: Option<Vec<u8>> = row.get(2).map_err(backend)?;
        let Some(body) = body else { continue };
        if let Ok(json) = serde_json::from_slice::<serde_json::Value>(&body) {
            insert(
                conn,
                sid,
                seq,
                &fhir_search::extract_with_bases(&json, &bases),
            )?;
        }
    }
    Ok(())
}
