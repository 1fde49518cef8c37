//! Writing the search index: the rows of the current version of each resource, one table per
//! value kind (see [`crate::schema`]), keyed by `(sid, …, seq)`.
//!
//! A new version replaces the rows of the previous one; a deletion removes them. The rows of
//! one version go in with one `INSERT … SELECT FROM unnest(…)` per table that has any, the
//! tables' statements pipelined, so indexing a resource costs one round trip however many
//! values it has.

use fhir_search::{IndexEntry, IndexValue};
use fhir_store::Result;

use crate::Conn;

/// The longest text kept in an index column, in bytes: a B-tree entry must fit in a third of
/// a page (about 2,700 bytes), and a key has up to three text columns. A longer value is
/// cut at a character boundary, so its prefix still matches; `:exact` and `:contains` beyond
/// the cut cannot see the rest (real data has no such values in searched elements).
pub(crate) const MAX_TEXT: usize = 800;

/// `s` as an index column holds it: cut to [`MAX_TEXT`], without NUL characters (which
/// PostgreSQL's text cannot hold; they only ever appear in garbage).
pub(crate) fn cut(s: &str) -> String {
    if s.contains('\0') {
        return cut(&s.replace('\0', ""));
    }
    if s.len() <= MAX_TEXT {
        return s.to_owned();
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn cut_opt(s: &Option<String>) -> String {
    s.as_deref().map(cut).unwrap_or_default()
}

/// Removes the index rows of version `seq` of service `sid`: one statement for all tables.
pub(crate) async fn remove(conn: &Conn, sid: i64, seq: i64) -> Result<()> {
    conn.execute(
        "WITH a AS (DELETE FROM ix_string WHERE sid = $1 AND seq = $2), \
         b AS (DELETE FROM ix_token WHERE sid = $1 AND seq = $2), \
         c AS (DELETE FROM ix_ref WHERE sid = $1 AND seq = $2), \
         d AS (DELETE FROM ix_date WHERE sid = $1 AND seq = $2), \
         e AS (DELETE FROM ix_number WHERE sid = $1 AND seq = $2), \
         f AS (DELETE FROM ix_quantity WHERE sid = $1 AND seq = $2) \
         DELETE FROM ix_uri WHERE sid = $1 AND seq = $2",
        &[&sid, &seq],
    )
    .await?;
    Ok(())
}

/// The rows of one version for one table, column by column (what `unnest` takes).
#[derive(Default)]
struct StringRows {
    pid: Vec<i64>,
    norm: Vec<String>,
    exact: Vec<String>,
    grp: Vec<i64>,
}

#[derive(Default)]
struct TokenRows {
    pid: Vec<i64>,
    code: Vec<String>,
    system: Vec<String>,
    grp: Vec<i64>,
    text: Vec<Option<String>>,
}

#[derive(Default)]
struct RefRows {
    pid: Vec<i64>,
    ttype: Vec<String>,
    tid: Vec<String>,
    url: Vec<String>,
    grp: Vec<i64>,
}

/// Date rows (`i64` microseconds) and number rows (`f64`).
#[derive(Default)]
struct RangeRows<T> {
    pid: Vec<i64>,
    lo: Vec<T>,
    hi: Vec<T>,
    grp: Vec<i64>,
}

#[derive(Default)]
struct QuantityRows {
    pid: Vec<i64>,
    code: Vec<String>,
    system: Vec<String>,
    lo: Vec<f64>,
    hi: Vec<f64>,
    grp: Vec<i64>,
}

#[derive(Default)]
struct UriRows {
    pid: Vec<i64>,
    value: Vec<String>,
    grp: Vec<i64>,
}

/// The rows of one version, per table.
#[derive(Default)]
struct Columns {
    string: StringRows,
    token: TokenRows,
    reference: RefRows,
    date: RangeRows<i64>,
    number: RangeRows<f64>,
    quantity: QuantityRows,
    uri: UriRows,
}

fn columns(entries: &[IndexEntry]) -> Columns {
    let mut c = Columns::default();
    for e in entries {
        let pid = i64::from(e.param);
        let grp = i64::from(e.group);
        match &e.value {
            IndexValue::String { norm, exact } => {
                c.string.pid.push(pid);
                c.string.norm.push(cut(norm));
                c.string.exact.push(cut(exact));
                c.string.grp.push(grp);
            }
            IndexValue::Token { system, code, text } => {
                c.token.pid.push(pid);
                c.token.code.push(cut_opt(code));
                c.token.system.push(cut_opt(system));
                c.token.grp.push(grp);
                c.token.text.push(text.as_deref().map(cut));
            }
            IndexValue::Reference { ttype, tid, url } => {
                c.reference.pid.push(pid);
                c.reference.ttype.push(cut_opt(ttype));
                c.reference.tid.push(cut_opt(tid));
                c.reference.url.push(cut_opt(url));
                c.reference.grp.push(grp);
            }
            IndexValue::Date { lo, hi } => {
                c.date.pid.push(pid);
                c.date.lo.push(*lo);
                c.date.hi.push(*hi);
                c.date.grp.push(grp);
            }
            IndexValue::Number { lo, hi } => {
                c.number.pid.push(pid);
                c.number.lo.push(*lo);
                c.number.hi.push(*hi);
                c.number.grp.push(grp);
            }
            IndexValue::Quantity {
                system,
                code,
                lo,
                hi,
            } => {
                c.quantity.pid.push(pid);
                c.quantity.code.push(cut_opt(code));
                c.quantity.system.push(cut_opt(system));
                c.quantity.lo.push(*lo);
                c.quantity.hi.push(*hi);
                c.quantity.grp.push(grp);
            }
            IndexValue::Uri(v) => {
                c.uri.pid.push(pid);
                c.uri.value.push(cut(v));
                c.uri.grp.push(grp);
            }
        }
    }
    c
}

/// Writes the rows of `entries` for version `seq` of service `sid`.
pub(crate) async fn insert(conn: &Conn, sid: i64, seq: i64, entries: &[IndexEntry]) -> Result<()> {
    let c = columns(entries);
    let string = async {
        if c.string.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_string (sid, pid, norm, exact, seq, grp) \
             SELECT $1, u.pid, u.norm, u.exact, $2, u.grp \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bigint[]) \
               AS u(pid, norm, exact, grp) \
             ON CONFLICT DO NOTHING",
            &[
                &sid,
                &seq,
                &c.string.pid,
                &c.string.norm,
                &c.string.exact,
                &c.string.grp,
            ],
        )
        .await
    };
    let token = async {
        if c.token.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_token (sid, pid, code, system, seq, grp, text) \
             SELECT $1, u.pid, u.code, u.system, $2, u.grp, u.text \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::bigint[], $7::text[]) \
               AS u(pid, code, system, grp, text) \
             ON CONFLICT DO NOTHING",
            &[
                &sid,
                &seq,
                &c.token.pid,
                &c.token.code,
                &c.token.system,
                &c.token.grp,
                &c.token.text,
            ],
        )
        .await
    };
    let reference = async {
        if c.reference.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_ref (sid, pid, ttype, tid, url, seq, grp) \
             SELECT $1, u.pid, u.ttype, u.tid, u.url, $2, u.grp \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::bigint[]) \
               AS u(pid, ttype, tid, url, grp) \
             ON CONFLICT DO NOTHING",
            &[
                &sid,
                &seq,
                &c.reference.pid,
                &c.reference.ttype,
                &c.reference.tid,
                &c.reference.url,
                &c.reference.grp,
            ],
        )
        .await
    };
    let date = async {
        if c.date.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_date (sid, pid, lo, hi, seq, grp) \
             SELECT $1, u.pid, u.lo, u.hi, $2, u.grp \
             FROM unnest($3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[]) \
               AS u(pid, lo, hi, grp) \
             ON CONFLICT DO NOTHING",
            &[&sid, &seq, &c.date.pid, &c.date.lo, &c.date.hi, &c.date.grp],
        )
        .await
    };
    let number = async {
        if c.number.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_number (sid, pid, lo, hi, seq, grp) \
             SELECT $1, u.pid, u.lo, u.hi, $2, u.grp \
             FROM unnest($3::bigint[], $4::float8[], $5::float8[], $6::bigint[]) \
               AS u(pid, lo, hi, grp) \
             ON CONFLICT DO NOTHING",
            &[
                &sid,
                &seq,
                &c.number.pid,
                &c.number.lo,
                &c.number.hi,
                &c.number.grp,
            ],
        )
        .await
    };
    let quantity = async {
        if c.quantity.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_quantity (sid, pid, code, system, lo, hi, seq, grp) \
             SELECT $1, u.pid, u.code, u.system, u.lo, u.hi, $2, u.grp \
             FROM unnest($3::bigint[], $4::text[], $5::text[], $6::float8[], $7::float8[], \
                         $8::bigint[]) AS u(pid, code, system, lo, hi, grp) \
             ON CONFLICT DO NOTHING",
            &[
                &sid,
                &seq,
                &c.quantity.pid,
                &c.quantity.code,
                &c.quantity.system,
                &c.quantity.lo,
                &c.quantity.hi,
                &c.quantity.grp,
            ],
        )
        .await
    };
    let uri = async {
        if c.uri.pid.is_empty() {
            return Ok(0);
        }
        conn.execute(
            "INSERT INTO ix_uri (sid, pid, value, seq, grp) \
             SELECT $1, u.pid, u.value, $2, u.grp \
             FROM unnest($3::bigint[], $4::text[], $5::bigint[]) AS u(pid, value, grp) \
             ON CONFLICT DO NOTHING",
            &[&sid, &seq, &c.uri.pid, &c.uri.value, &c.uri.grp],
        )
        .await
    };
    tokio::try_join!(string, token, reference, date, number, quantity, uri)?;
    Ok(())
}
