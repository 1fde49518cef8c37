//! Writing the search index: the rows of the current version of each resource, one table per
//! value kind (see [`crate::schema`]), keyed by `(sid, …, seq)`.
//!
//! A new version replaces the rows of the previous one; a deletion removes them. The rows of
//! one version go in as arrays, one per column, through `INSERT … SELECT FROM unnest(…)`,
//! inside the one statement that writes the version ([`crate::tx`]), so indexing a resource
//! costs no round trip of its own however many values it has.

use fhir_search::{IndexEntry, IndexValue};
use tokio_postgres::types::ToSql;

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
pub(crate) struct Columns {
    string: StringRows,
    token: TokenRows,
    reference: RefRows,
    date: RangeRows<i64>,
    number: RangeRows<f64>,
    quantity: QuantityRows,
    uri: UriRows,
}

pub(crate) fn columns(entries: &[IndexEntry]) -> Columns {
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

/// The index tables, each with its columns after `sid` and the casts of their arrays, in
/// the order of [`Columns::params`]. `seq` and `sid` are scalars of the statement.
const TABLES: &[(&str, &[(&str, &str)])] = &[
    (
        "ix_string",
        &[
            ("pid", "bigint"),
            ("norm", "text"),
            ("exact", "text"),
            ("grp", "bigint"),
        ],
    ),
    (
        "ix_token",
        &[
            ("pid", "bigint"),
            ("code", "text"),
            ("system", "text"),
            ("grp", "bigint"),
            ("text", "text"),
        ],
    ),
    (
        "ix_ref",
        &[
            ("pid", "bigint"),
            ("ttype", "text"),
            ("tid", "text"),
            ("url", "text"),
            ("grp", "bigint"),
        ],
    ),
    (
        "ix_date",
        &[
            ("pid", "bigint"),
            ("lo", "bigint"),
            ("hi", "bigint"),
            ("grp", "bigint"),
        ],
    ),
    (
        "ix_number",
        &[
            ("pid", "bigint"),
            ("lo", "float8"),
            ("hi", "float8"),
            ("grp", "bigint"),
        ],
    ),
    (
        "ix_quantity",
        &[
            ("pid", "bigint"),
            ("code", "text"),
            ("system", "text"),
            ("lo", "float8"),
            ("hi", "float8"),
            ("grp", "bigint"),
        ],
    ),
    (
        "ix_uri",
        &[("pid", "bigint"), ("value", "text"), ("grp", "bigint")],
    ),
];

/// The index tables' names.
pub(crate) const TABLE_NAMES: [&str; 7] = [
    "ix_string",
    "ix_token",
    "ix_ref",
    "ix_date",
    "ix_number",
    "ix_quantity",
    "ix_uri",
];

/// The `WITH` items that replace the index rows of a resource: delete those of its old
/// version (`seq = ${old}`, NULL for none) and insert those of the new one (`${seq}`) from the
/// arrays numbered from `${first}` on, in [`Columns::params`] order. An empty array inserts
/// nothing, so the statement is the same for every resource and is prepared once.
pub(crate) fn replace_ctes(sid: usize, seq: usize, old: usize, first: usize) -> String {
    let mut items = Vec::new();
    let mut n = first;
    for (i, (table, cols)) in TABLES.iter().enumerate() {
        items.push(format!(
            "d{i} AS (DELETE FROM {table} WHERE sid = ${sid} AND seq = ${old})"
        ));
        let names: Vec<&str> = cols.iter().map(|(c, _)| *c).collect();
        let arrays: Vec<String> = cols
            .iter()
            .enumerate()
            .map(|(k, (_, cast))| format!("${}::{cast}[]", n + k))
            .collect();
        n += cols.len();
        let picked: Vec<String> = names.iter().map(|c| format!("u.{c}")).collect();
        items.push(format!(
            "i{i} AS (INSERT INTO {table} (sid, seq, {}) SELECT ${sid}, ${seq}, {} \
             FROM unnest({}) AS u({}) ON CONFLICT DO NOTHING)",
            names.join(", "),
            picked.join(", "),
            arrays.join(", "),
            names.join(", ")
        ));
    }
    items.join(", ")
}

impl Columns {
    /// The arrays, in the order [`replace_ctes`] numbers them.
    pub(crate) fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let (s, t, r, d, n, q, u) = (
            &self.string,
            &self.token,
            &self.reference,
            &self.date,
            &self.number,
            &self.quantity,
            &self.uri,
        );
        vec![
            &s.pid, &s.norm, &s.exact, &s.grp, //
            &t.pid, &t.code, &t.system, &t.grp, &t.text, //
            &r.pid, &r.ttype, &r.tid, &r.url, &r.grp, //
            &d.pid, &d.lo, &d.hi, &d.grp, //
            &n.pid, &n.lo, &n.hi, &n.grp, //
            &q.pid, &q.code, &q.system, &q.lo, &q.hi, &q.grp, //
            &u.pid, &u.value, &u.grp,
        ]
    }
}
