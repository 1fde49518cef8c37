//! Reading one type of a service as it was at a snapshot ([`fhir_store::Store::scan`]), for
//! bulk export while writes go on. A snapshot is a `seq` of the service's counter: every
//! version at or below it was committed before the snapshot was taken (writers of a service
//! run one at a time and write the counter back at commit), so the scan needs no long
//! transaction, only `seq <= snapshot`.
//!
//! Current versions come from `resources` in its key order `(sid, rtype, id)`: a resource
//! whose current version is at or below the snapshot is read through it; one changed since
//! is read at its newest version at or below the snapshot, and one created since has none
//! and is skipped. Every page is one range of the primary key.

use chrono::{DateTime, Utc};
use fhir_store::{Result, ScanQuery, ScanVersions, StoredResource};

use crate::{stored_from_row, Conn, VERSION_COLUMNS};

pub(crate) async fn scan(
    conn: &Conn,
    sid: i64,
    rtype: &str,
    query: &ScanQuery,
) -> Result<Vec<StoredResource>> {
    let limit = i64::try_from(query.limit).unwrap_or(i64::MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    let since: Option<DateTime<Utc>> = query.since;
    let till: Option<DateTime<Utc>> = query.till;
    let (after_id, after_version) = match &query.after {
        Some((id, version)) => (id.as_str(), i64::try_from(*version).unwrap_or(i64::MAX)),
        None => ("", 0),
    };
    let position = query.snapshot.position;
    let rows = match query.versions {
        ScanVersions::Current | ScanVersions::CurrentAndDeleted => {
            let deleted = query.versions == ScanVersions::CurrentAndDeleted;
            // $1 sid, $2 rtype, $3 after id ('' is before every id), $4 position, $5 since,
            // $6 till, $7 deletions too, $8 limit.
            conn.query(
                &format!(
                    "SELECT r.id, {VERSION_COLUMNS} FROM resources r \
                     JOIN versions v ON v.sid = r.sid AND v.seq = CASE WHEN r.seq <= $4 \
                       THEN r.seq ELSE \
                       (SELECT max(w.seq) FROM versions w \
                        WHERE w.sid = r.sid AND w.rtype = r.rtype AND w.id = r.id \
                        AND w.seq <= $4) END \
                     WHERE r.sid = $1 AND r.rtype = $2 AND r.id > $3 \
                     AND ($5::timestamptz IS NULL OR v.last_updated >= $5) \
                     AND ($6::timestamptz IS NULL OR v.last_updated <= $6) \
                     AND (v.body IS NOT NULL OR $7) \
                     ORDER BY r.id LIMIT $8"
                ),
                &[
                    &sid, &rtype, &after_id, &position, &since, &till, &deleted, &limit,
                ],
            )
            .await?
        }
        ScanVersions::All => {
            // $1 sid, $2 rtype, $3 after id, $4 after version, $5 position, $6 since, $7 till,
            // $8 limit. The (id, version) order is the primary key's.
            conn.query(
                &format!(
                    "SELECT v.id, {VERSION_COLUMNS} FROM versions v \
                     WHERE v.sid = $1 AND v.rtype = $2 \
                     AND (v.id, v.version) > ($3, $4) \
                     AND v.seq <= $5 \
                     AND ($6::timestamptz IS NULL OR v.last_updated >= $6) \
                     AND ($7::timestamptz IS NULL OR v.last_updated <= $7) \
                     ORDER BY v.id, v.version LIMIT $8"
                ),
                &[
                    &sid,
                    &rtype,
                    &after_id,
                    &after_version,
                    &position,
                    &since,
                    &till,
                    &limit,
                ],
            )
            .await?
        }
    };
    rows.iter()
        .map(|row| stored_from_row(row, 1, rtype.to_owned(), row.get(0)))
        .collect()
}
