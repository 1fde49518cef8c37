//! Reading one type of a service as it was at a snapshot ([`fhir_store::Store::scan`]), for
//! bulk export while writes go on. A snapshot is a `seq`: every version at or below it was
//! committed before the snapshot was taken (the one writer gives out `seq` in commit order,
//! and a reader's transaction sees whole commits only).
//!
//! Current versions come from `resources` in its key order (sid, rtype, id): a resource
//! whose current version is at or below the snapshot is read through it; one changed since
//! is read at its newest version at or below the snapshot (`versions_instance`), and one
//! created since has none and is skipped. Every page is one range of the primary key.

use fhir_store::{Result, ScanQuery, ScanVersions, Snapshot, StoredResource};
use rusqlite::{params, Connection, OptionalExtension};

use crate::{backend, micros_to_instant, stored_from_row, VERSION_COLUMNS};

/// The newest `seq` and its `lastUpdated` (`now` when the store holds no version).
pub(crate) fn snapshot(conn: &Connection, now: i64) -> Result<Snapshot> {
    let newest: Option<(i64, i64)> = conn
        .prepare_cached("SELECT seq, last_updated FROM versions ORDER BY seq DESC LIMIT 1")
        .and_then(|mut st| {
            st.query_row([], |row| Ok((row.get(0)?, row.get(1)?)))
                .optional()
        })
        .map_err(backend)?;
    let (position, micros) = newest.unwrap_or((0, now));
    Ok(Snapshot {
        position,
        time: micros_to_instant(micros)?,
    })
}

pub(crate) fn scan(
    conn: &Connection,
    sid: i64,
    rtype: &str,
    query: &ScanQuery,
) -> Result<Vec<StoredResource>> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let since = query.since.map_or(i64::MIN, |t| t.timestamp_micros());
    let till = query.till.map_or(i64::MAX, |t| t.timestamp_micros());
    let (after_id, after_version) = match &query.after {
        Some((id, version)) => (
            Some(id.as_str()),
            i64::try_from(*version).unwrap_or(i64::MAX),
        ),
        None => (None, 0),
    };
    let position = query.snapshot.position;
    let mut out = Vec::new();
    match query.versions {
        ScanVersions::Current | ScanVersions::CurrentAndDeleted => {
            let deleted = query.versions == ScanVersions::CurrentAndDeleted;
            // ?1 sid, ?2 rtype, ?3 after id ('' is before every id), ?4 position, ?5 since,
            // ?6 till, ?7 deletions too, ?8 limit.
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT r.id, {VERSION_COLUMNS} FROM resources r \
                     JOIN versions v ON v.seq = CASE WHEN r.seq <= ?4 THEN r.seq ELSE \
                       (SELECT max(w.seq) FROM versions w INDEXED BY versions_instance \
                        WHERE w.sid = r.sid AND w.rtype = r.rtype AND w.id = r.id \
                        AND w.seq <= ?4) END \
                     WHERE r.sid = ?1 AND r.rtype = ?2 AND r.id > ?3 \
                     AND v.last_updated >= ?5 AND v.last_updated <= ?6 \
                     AND (v.body IS NOT NULL OR ?7) \
                     ORDER BY r.id LIMIT ?8"
                ))
                .map_err(backend)?;
            let mut rows = st
                .query(params![
                    sid,
                    rtype,
                    after_id.unwrap_or(""),
                    position,
                    since,
                    till,
                    deleted,
                    limit
                ])
                .map_err(backend)?;
            while let Some(row) = rows.next().map_err(backend)? {
                let id: String = row.get(0).map_err(backend)?;
                out.push(stored_from_row(row, 1, rtype.to_owned(), id).map_err(backend)?);
            }
        }
        ScanVersions::All => {
            // ?1 sid, ?2 rtype, ?3 after id, ?4 after version, ?5 position, ?6 since, ?7 till,
            // ?8 limit. The (id, version) order is the versions_instance key.
            let mut st = conn
                .prepare_cached(&format!(
                    "SELECT v.id, {VERSION_COLUMNS} FROM versions v INDEXED BY versions_instance \
                     WHERE v.sid = ?1 AND v.rtype = ?2 \
                     AND (v.id > ?3 OR (v.id = ?3 AND v.version > ?4)) \
                     AND v.seq <= ?5 AND v.last_updated >= ?6 AND v.last_updated <= ?7 \
                     ORDER BY v.id, v.version LIMIT ?8"
                ))
                .map_err(backend)?;
            let mut rows = st
                .query(params![
                    sid,
                    rtype,
                    after_id.unwrap_or(""),
                    after_version,
                    position,
                    since,
                    till,
                    limit
                ])
                .map_err(backend)?;
            while let Some(row) = rows.next().map_err(backend)? {
                let id: String = row.get(0).map_err(backend)?;
                out.push(stored_from_row(row, 1, rtype.to_owned(), id).map_err(backend)?);
            }
        }
    }
    Ok(out)
}
