//! Search on the index: a [`SearchQuery`] compiled to one SQL statement over the `ix_*` tables,
//! the same plan as the SQLite store's (`fhir-store-sqlite/src/search.rs`), in PostgreSQL's
//! dialect.
//!
//! One ANDed filter is chosen as the *driver*: its conditions become range scans of the index
//! tables' primary keys `(sid, pid, value…, seq)`, unioned for an OR list. Every other filter
//! becomes a *probe* of the driver's rows: an `EXISTS` lookup by `(sid, seq, pid)`. A filter
//! that cannot drive (`:not`, `:missing=true`) only probes; with no driver at all, the type's
//! live rows in `resources` drive. Chains and `_has` nest the same compilation for the other
//! type inside an `IN`. Every bound value is a typed parameter (`$n::text`, `$n::bigint`,
//! `$n::float8`), never text in the SQL.
//!
//! Paging in the default order is by `seq`; sorted results page by keyset (the last row's sort
//! values and `seq`), never by offset. No value sorts first ascending and last descending, as
//! in the SQLite store (`NULLS FIRST`/`NULLS LAST` say so, PostgreSQL's default being the
//! other way round).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use fhir_search::{
    Cond, Cursor, ParamType, Prefix, SearchQuery, SortKey, SortPosition, SortValue, SystemMatch,
    Test, UriMode,
};
use fhir_store::{Result, SearchPage, StoreError, StoredResource, TotalSource};
use tokio_postgres::types::ToSql;

use crate::index::cut;
use crate::{stored_from_row, Conn, VERSION_COLUMNS};

/// The largest code point: `norm < prefix || MAX` bounds a prefix range in "C" collation.
const MAX_CHAR: char = '\u{10FFFF}';

/// How many resources `_include`/`_revinclude` may add to one page.
const MAX_INCLUDES: usize = 5000;

type Param = Box<dyn ToSql + Sync + Send>;

/// Collects bound parameters while SQL is written. `$1` is always the service's number.
struct Builder {
    params: Vec<Param>,
    now: i64,
}

impl Builder {
    fn new(sid: i64, now: i64) -> Builder {
        Builder {
            params: vec![Box::new(sid)],
            now,
        }
    }

    fn push(&mut self, p: Param, cast: &str) -> String {
        self.params.push(p);
        format!("${}::{cast}", self.params.len())
    }

    /// A text value compared with an index column: cut as the column's values are.
    fn text(&mut self, v: &str) -> String {
        self.push(Box::new(cut(v)), "text")
    }

    /// The upper end of a prefix range.
    fn text_above(&mut self, prefix: &str) -> String {
        self.push(Box::new(format!("{}{MAX_CHAR}", cut(prefix))), "text")
    }

    fn int(&mut self, v: i64) -> String {
        self.push(Box::new(v), "bigint")
    }

    fn real(&mut self, v: f64) -> String {
        self.push(Box::new(v), "float8")
    }

    fn bound(&mut self, v: Bound) -> String {
        match v {
            Bound::Int(i) => self.int(i),
            Bound::Real(r) => self.real(r),
        }
    }

    fn refs(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect()
    }
}

fn table_of(kind: ParamType) -> Option<&'static str> {
    Some(match kind {
        ParamType::String => "ix_string",
        ParamType::Token => "ix_token",
        ParamType::Reference => "ix_ref",
        ParamType::Date => "ix_date",
        ParamType::Number => "ix_number",
        ParamType::Quantity => "ix_quantity",
        ParamType::Uri => "ix_uri",
        ParamType::Composite | ParamType::Special => return None,
    })
}

fn unsupported(what: &str) -> StoreError {
    StoreError::Backend(format!("search condition not supported: {what}"))
}

/// The table and the extra WHERE terms of a simple (single-table) test.
fn simple(b: &mut Builder, c: &Cond) -> Result<Option<(&'static str, String)>> {
    let t = match &c.test {
        Test::StringStarts(p) => {
            if p.is_empty() {
                ("ix_string", "true".into())
            } else {
                let lo = b.text(p);
                let hi = b.text_above(p);
                ("ix_string", format!("norm >= {lo} AND norm < {hi}"))
            }
        }
        Test::StringExact(v) => {
            let n = b.text(&fhir_search::normalize::fold(v));
            let e = b.text(v);
            ("ix_string", format!("norm = {n} AND exact = {e}"))
        }
        Test::StringContains(v) => {
            let n = b.text(v);
            ("ix_string", format!("strpos(norm, {n}) > 0"))
        }
        Test::Token { system, code } => {
            let mut w = String::from("true");
            if let Some(code) = code {
                let p = b.text(code);
                w = format!("code = {p}");
            }
            match system {
                SystemMatch::Any => {}
                SystemMatch::None => w.push_str(" AND system = ''"),
                SystemMatch::Is(s) => {
                    let p = b.text(s);
                    let _ = write!(w, " AND system = {p}");
                }
            }
            ("ix_token", w)
        }
        Test::TokenIn(codes) => {
            if codes.is_empty() {
                ("ix_token", "false".into())
            } else {
                let pairs: Vec<String> = codes
                    .iter()
                    .map(|(system, code)| {
                        let c = b.text(code);
                        let s = b.text(system);
                        format!("({c}, {s})")
                    })
                    .collect();
                (
                    "ix_token",
                    format!("(code, system) IN (VALUES {})", pairs.join(", ")),
                )
            }
        }
        Test::TokenText(t) => {
            let lo = b.text(t);
            let hi = b.text_above(t);
            ("ix_token", format!("text >= {lo} AND text < {hi}"))
        }
        Test::Reference { ttype, tid } => {
            let id = b.text(tid);
            match ttype {
                Some(t) => {
                    let t = b.text(t);
                    ("ix_ref", format!("ttype = {t} AND tid = {id}"))
                }
                None => ("ix_ref", format!("tid = {id}")),
            }
        }
        Test::ReferenceUrl(u) => {
            let u = b.text(u);
            ("ix_ref", format!("ttype = '' AND tid = '' AND url = {u}"))
        }
        Test::Date { prefix, lo, hi } => {
            let w = range_where(b, *prefix, Bound::Int(*lo), Bound::Int(*hi), None);
            ("ix_date", w)
        }
        Test::Number {
            prefix,
            value,
            lo,
            hi,
        } => {
            let w = range_where(b, *prefix, Bound::Real(*lo), Bound::Real(*hi), Some(*value));
            ("ix_number", w)
        }
        Test::Quantity {
            prefix,
            value,
            lo,
            hi,
            system,
            code,
        } => {
            let mut w = String::new();
            if let Some(code) = code {
                let p = b.text(code);
                let _ = write!(w, "code = {p} AND ");
            }
            if let Some(s) = system {
                let p = b.text(s);
                let _ = write!(w, "system = {p} AND ");
            }
            w.push_str(&range_where(
                b,
                *prefix,
                Bound::Real(*lo),
                Bound::Real(*hi),
                Some(*value),
            ));
            ("ix_quantity", w)
        }
        Test::Uri { value, mode } => {
            let v = b.text(value);
            let w = match mode {
                UriMode::Eq => format!("value = {v}"),
                UriMode::Below => {
                    let hi = b.text_above(value);
                    format!("value >= {v} AND value < {hi}")
                }
                UriMode::Above => format!("substr({v}, 1, length(value)) = value"),
            };
            ("ix_uri", w)
        }
        Test::Missing(_) => {
            let t = table_of(c.kind).ok_or_else(|| unsupported(":missing on a composite"))?;
            (t, "true".into())
        }
        Test::Chain { .. } | Test::Has { .. } | Test::All(_) | Test::Tuple(_) => return Ok(None),
    };
    Ok(Some(t))
}

#[derive(Clone, Copy)]
enum Bound {
    Int(i64),
    Real(f64),
}

/// Range semantics of the prefixes (FHIR R4 §3.1.1.4.1): the search value is `[qlo, qhi]`
/// (or `value` itself for ordering prefixes of numbers), a row is `[lo, hi]`.
fn range_where(
    b: &mut Builder,
    prefix: Prefix,
    qlo: Bound,
    qhi: Bound,
    value: Option<f64>,
) -> String {
    // Ordering prefixes on numbers compare with the value as written.
    let (olo, ohi) = match value {
        Some(v) => (Bound::Real(v), Bound::Real(v)),
        None => (qlo, qhi),
    };
    match prefix {
        Prefix::Eq => {
            let a = b.bound(qlo);
            let z = b.bound(qhi);
            format!("lo >= {a} AND hi <= {z}")
        }
        Prefix::Ne => {
            let a = b.bound(qlo);
            let z = b.bound(qhi);
            format!("NOT (lo >= {a} AND hi <= {z})")
        }
        Prefix::Gt => format!("hi > {}", b.bound(ohi)),
        Prefix::Lt => format!("lo < {}", b.bound(olo)),
        Prefix::Ge => format!("hi >= {}", b.bound(olo)),
        Prefix::Le => format!("lo <= {}", b.bound(ohi)),
        Prefix::Sa => format!("lo > {}", b.bound(ohi)),
        Prefix::Eb => format!("hi < {}", b.bound(olo)),
        Prefix::Ap => {
            // Approximately: within 10% — of the value for numbers, of the distance from now
            // for dates (§3.1.1.4.1 "ap").
            let (a, z) = match (qlo, qhi, value) {
                (_, _, Some(v)) => {
                    let d = (v * 0.1).abs();
                    (Bound::Real(v - d), Bound::Real(v + d))
                }
                (Bound::Int(lo), Bound::Int(hi), None) => {
                    let d = (b.now - lo).abs() / 10;
                    (Bound::Int(lo - d), Bound::Int(hi + d))
                }
                (lo, hi, None) => (lo, hi),
            };
            let a = b.bound(a);
            let z = b.bound(z);
            format!("lo <= {z} AND hi >= {a}")
        }
    }
}

/// The first component's table (as `c0`) and the terms that make a row of it the start of a
/// tuple matching every component: the other components' rows must be in the same resource
/// (`seq`) and the same tuple (`grp`), FHIR R4 §3.1.1.4.8. Each component's own terms name
/// its columns unqualified, which SQL resolves to the innermost table: its own.
fn tuple_sql(b: &mut Builder, cs: &[Cond]) -> Result<(String, String)> {
    let mut from = String::new();
    let mut terms = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let pid = b.int(i64::from(c.param));
        let (table, w) = simple(b, c)?.ok_or_else(|| unsupported("composite component"))?;
        if i == 0 {
            from = format!("{table} c0");
            terms.push(format!("c0.pid = {pid} AND ({w})"));
        } else {
            terms.push(format!(
                "EXISTS (SELECT 1 FROM {table} c{i} WHERE c{i}.sid = c0.sid \
                 AND c{i}.seq = c0.seq AND c{i}.grp = c0.grp AND c{i}.pid = {pid} AND ({w}))"
            ));
        }
    }
    if from.is_empty() {
        return Err(unsupported("composite without components"));
    }
    Ok((from, terms.join(" AND ")))
}

/// A filter can drive when every condition can be a positive scan.
fn drive_score(filter: &[Cond]) -> Option<u8> {
    let mut worst = 0;
    for c in filter {
        if c.negate {
            return None;
        }
        let s = match &c.test {
            Test::Missing(true) => return None,
            Test::Missing(false) => 9,
            Test::Token { code: Some(_), .. }
            | Test::Reference { ttype: Some(_), .. }
            | Test::ReferenceUrl(_)
            | Test::StringExact(_) => 1,
            Test::Uri {
                mode: UriMode::Eq, ..
            } => 1,
            Test::Quantity { code: Some(_), .. } | Test::TokenIn(_) => 2,
            Test::StringStarts(p) if p.len() >= 2 => 2,
            Test::Date {
                prefix: Prefix::Eq | Prefix::Ap,
                ..
            } => 3,
            Test::Has { .. } | Test::Chain { .. } => 3,
            Test::All(cs) | Test::Tuple(cs) => cs
                .iter()
                .filter_map(|c| drive_score(std::slice::from_ref(c)))
                .min()
                .unwrap_or(9),
            Test::Reference { ttype: None, .. } => 5,
            _ => 6,
        };
        worst = worst.max(s);
    }
    Some(worst)
}

/// `SELECT seq …` of the rows of a non-negated condition, by a primary-key range scan.
fn cond_set(b: &mut Builder, rtype: Option<&str>, c: &Cond) -> Result<String> {
    match &c.test {
        Test::Chain { target, filter } => {
            let pid = b.int(i64::from(c.param));
            let t = b.text(target);
            let inner = set_sql(b, Some(target), &[], std::slice::from_ref(filter))?;
            Ok(format!(
                "SELECT DISTINCT seq FROM ix_ref WHERE sid = $1 AND pid = {pid} AND ttype = {t} \
                 AND tid IN (SELECT t.id FROM resources t WHERE t.sid = $1 \
                 AND t.seq IN ({inner}))"
            ))
        }
        Test::Has { source, filter } => {
            let inner = set_sql(b, Some(source), &[], std::slice::from_ref(filter))?;
            let pid = b.int(i64::from(c.param));
            let typed = match rtype {
                Some(t) => format!(" AND x.ttype = {}", b.text(t)),
                None => String::new(),
            };
            Ok(format!(
                "SELECT DISTINCT r.seq AS seq FROM ix_ref x JOIN resources r \
                 ON r.sid = x.sid AND r.rtype = x.ttype AND r.id = x.tid \
                 WHERE x.sid = $1 AND x.pid = {pid}{typed} AND x.seq IN ({inner}) \
                 AND NOT r.deleted"
            ))
        }
        Test::All(cs) => {
            let filters: Vec<Vec<Cond>> = cs.iter().map(|c| vec![c.clone()]).collect();
            set_sql(b, rtype, &[], &filters)
        }
        Test::Tuple(cs) => {
            let (from, w) = tuple_sql(b, cs)?;
            Ok(format!(
                "SELECT DISTINCT c0.seq AS seq FROM {from} WHERE c0.sid = $1 AND {w}"
            ))
        }
        _ => {
            let pid = b.int(i64::from(c.param));
            let (table, w) = simple(b, c)?.ok_or_else(|| unsupported("compound condition"))?;
            let unique = matches!(
                &c.test,
                Test::Token {
                    system: SystemMatch::Is(_),
                    code: Some(_)
                }
            );
            let distinct = if unique { "" } else { "DISTINCT " };
            Ok(format!(
                "SELECT {distinct}seq FROM {table} WHERE sid = $1 AND pid = {pid} AND {w}"
            ))
        }
    }
}

/// A boolean SQL expression: does the resource at `{alias}.seq` satisfy `c`?
fn probe(b: &mut Builder, rtype: Option<&str>, c: &Cond, alias: &str) -> Result<String> {
    let positive = match &c.test {
        Test::Missing(missing) => {
            let t = table_of(c.kind).ok_or_else(|| unsupported(":missing on a composite"))?;
            let pid = b.int(i64::from(c.param));
            let e = format!(
                "EXISTS (SELECT 1 FROM {t} WHERE sid = $1 AND seq = {alias}.seq AND pid = {pid})"
            );
            return Ok(if *missing { format!("NOT {e}") } else { e });
        }
        Test::Chain { target, filter } => {
            let pid = b.int(i64::from(c.param));
            let t = b.text(target);
            let inner = set_sql(b, Some(target), &[], std::slice::from_ref(filter))?;
            format!(
                "EXISTS (SELECT 1 FROM ix_ref WHERE sid = $1 AND seq = {alias}.seq \
                 AND pid = {pid} AND ttype = {t} AND tid IN (SELECT t.id FROM resources t \
                 WHERE t.sid = $1 AND t.seq IN ({inner})))"
            )
        }
        Test::Has { .. } => {
            let set = cond_set(
                b,
                rtype,
                &Cond {
                    negate: false,
                    ..c.clone()
                },
            )?;
            format!("{alias}.seq IN ({set})")
        }
        Test::All(cs) => {
            let mut parts = Vec::new();
            for c in cs {
                parts.push(probe(b, rtype, c, alias)?);
            }
            format!("({})", parts.join(" AND "))
        }
        Test::Tuple(cs) => {
            let (from, w) = tuple_sql(b, cs)?;
            format!(
                "EXISTS (SELECT 1 FROM {from} WHERE c0.sid = $1 AND c0.seq = {alias}.seq \
                 AND {w})"
            )
        }
        _ => {
            let pid = b.int(i64::from(c.param));
            let (table, w) = simple(b, c)?.ok_or_else(|| unsupported("compound condition"))?;
            format!(
                "EXISTS (SELECT 1 FROM {table} WHERE sid = $1 AND seq = {alias}.seq \
                 AND pid = {pid} AND {w})"
            )
        }
    };
    Ok(if c.negate {
        format!("NOT {positive}")
    } else {
        positive
    })
}

/// `SELECT seq …` of every current resource matching all `filters`.
fn set_sql(
    b: &mut Builder,
    rtype: Option<&str>,
    types: &[String],
    filters: &[Vec<Cond>],
) -> Result<String> {
    if filters.iter().any(Vec::is_empty) {
        // An OR of nothing (a `_has` whose reference cannot point here): no match.
        return Ok("SELECT seq FROM resources WHERE sid = $1 AND false".into());
    }
    let driver = filters
        .iter()
        .enumerate()
        .filter_map(|(i, f)| drive_score(f).map(|s| (s, i)))
        .min()
        .map(|(_, i)| i);
    let from = match driver {
        Some(i) => {
            let mut parts = Vec::new();
            for c in &filters[i] {
                parts.push(cond_set(b, rtype, c)?);
            }
            if parts.len() == 1 {
                parts.remove(0)
            } else {
                parts
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("SELECT seq FROM ({p}) u{i}"))
                    .collect::<Vec<_>>()
                    .join(" UNION ")
            }
        }
        None => match rtype {
            Some(t) => {
                let t = b.text(t);
                format!("SELECT seq FROM resources WHERE sid = $1 AND rtype = {t} AND NOT deleted")
            }
            None if !types.is_empty() => {
                let list: Vec<String> = types.iter().map(|t| b.text(t)).collect();
                format!(
                    "SELECT seq FROM resources WHERE sid = $1 AND rtype IN ({}) AND NOT deleted",
                    list.join(", ")
                )
            }
            None => "SELECT seq FROM resources WHERE sid = $1 AND NOT deleted".into(),
        },
    };
    let mut probes = Vec::new();
    for (i, f) in filters.iter().enumerate() {
        if Some(i) == driver {
            continue;
        }
        let mut ors = Vec::new();
        for c in f {
            ors.push(probe(b, rtype, c, "d")?);
        }
        probes.push(format!("({})", ors.join(" OR ")));
    }
    let mut sql = format!("SELECT d.seq AS seq FROM ({from}) d");
    if !probes.is_empty() {
        let _ = write!(sql, " WHERE {}", probes.join(" AND "));
    }
    Ok(sql)
}

/// The SQL type of a sort key's values.
#[derive(Clone, Copy)]
enum SortType {
    Int,
    Real,
    Text,
}

fn sort_type(kind: ParamType) -> SortType {
    match kind {
        ParamType::Date => SortType::Int,
        ParamType::Number | ParamType::Quantity => SortType::Real,
        _ => SortType::Text,
    }
}

/// A sort key's value for the resource at `{alias}.seq`: the lowest of its values ascending,
/// the highest descending (FHIR R4 §3.1.1.5.1: which of several values sorts is the server's
/// choice; this one makes `_sort=-date` put the latest first). NULL when it has none.
fn sort_value(b: &mut Builder, k: &SortKey, alias: &str) -> Result<String> {
    let (table, col) = match k.kind {
        ParamType::String => ("ix_string", "norm"),
        ParamType::Token => ("ix_token", "code"),
        ParamType::Reference => ("ix_ref", "tid"),
        ParamType::Date if k.descending => ("ix_date", "hi"),
        ParamType::Date => ("ix_date", "lo"),
        ParamType::Number if k.descending => ("ix_number", "hi"),
        ParamType::Number => ("ix_number", "lo"),
        ParamType::Quantity if k.descending => ("ix_quantity", "hi"),
        ParamType::Quantity => ("ix_quantity", "lo"),
        ParamType::Uri => ("ix_uri", "value"),
        ParamType::Composite | ParamType::Special => {
            return Err(unsupported("sorting by a composite"))
        }
    };
    let agg = if k.descending { "max" } else { "min" };
    let pid = b.int(i64::from(k.param));
    Ok(format!(
        "(SELECT {agg}({col}) FROM {table} WHERE sid = $1 AND seq = {alias}.seq AND pid = {pid})"
    ))
}

/// A cursor's sort value as a parameter of its key's type; `None` for no value.
fn sort_param(b: &mut Builder, k: &SortKey, v: &SortValue) -> Option<String> {
    let as_real = |v: &SortValue| match v {
        SortValue::Int(i) => Some(*i as f64),
        SortValue::Real(r) => Some(*r),
        SortValue::Text(t) => t.parse().ok(),
        SortValue::Null => None,
    };
    Some(match sort_type(k.kind) {
        SortType::Int => {
            let i = match v {
                SortValue::Int(i) => *i,
                SortValue::Real(r) => *r as i64,
                SortValue::Text(t) => t.parse().ok()?,
                SortValue::Null => return None,
            };
            b.int(i)
        }
        SortType::Real => b.real(as_real(v)?),
        SortType::Text => match v {
            SortValue::Text(t) => b.push(Box::new(t.clone()), "text"),
            SortValue::Int(i) => b.push(Box::new(i.to_string()), "text"),
            SortValue::Real(r) => b.push(Box::new(r.to_string()), "text"),
            SortValue::Null => return None,
        },
    })
}

/// The rows after `at` in the page's order: key by key, a row is after when it is equal on
/// the keys before and after on this one, and the row number breaks a tie of all keys. No
/// value sorts first ascending and last descending; "after" follows that.
fn keyset_where(b: &mut Builder, sort: &[SortKey], at: &SortPosition, backwards: bool) -> String {
    let mut ors = Vec::new();
    let mut equal: Vec<String> = Vec::new();
    for (i, (k, v)) in sort.iter().zip(&at.values).enumerate() {
        let ascending = k.descending == backwards;
        let param = sort_param(b, k, v);
        let after = match (&param, ascending) {
            (None, true) => Some(format!("k{i} IS NOT NULL")),
            (None, false) => None,
            (Some(p), true) => Some(format!("k{i} > {p}")),
            (Some(p), false) => Some(format!("(k{i} < {p} OR k{i} IS NULL)")),
        };
        if let Some(after) = after {
            ors.push(
                equal
                    .iter()
                    .cloned()
                    .chain(std::iter::once(after))
                    .collect::<Vec<_>>()
                    .join(" AND "),
            );
        }
        equal.push(match &param {
            Some(p) => format!("k{i} = {p}"),
            None => format!("k{i} IS NULL"),
        });
    }
    let seq = b.int(at.seq);
    let cmp = if backwards { "<" } else { ">" };
    equal.push(format!("seq {cmp} {seq}"));
    ors.push(equal.join(" AND "));
    format!("(({}))", ors.join(") OR ("))
}

fn sort_value_of(row: &tokio_postgres::Row, i: usize, k: &SortKey) -> SortValue {
    let v = match sort_type(k.kind) {
        SortType::Int => row
            .try_get::<_, Option<i64>>(i)
            .ok()
            .flatten()
            .map(SortValue::Int),
        SortType::Real => row
            .try_get::<_, Option<f64>>(i)
            .ok()
            .flatten()
            .map(SortValue::Real),
        SortType::Text => row
            .try_get::<_, Option<String>>(i)
            .ok()
            .flatten()
            .map(SortValue::Text),
    };
    v.unwrap_or(SortValue::Null)
}

fn query_set(b: &mut Builder, q: &SearchQuery) -> Result<String> {
    set_sql(b, q.rtype.as_deref(), &q.types, &q.filters)
}

async fn explain(conn: &Conn, sql: &str, b: &Builder) -> String {
    let mut out = format!("{sql}\n");
    match conn
        .query_dynamic(&format!("EXPLAIN {sql}"), &b.refs())
        .await
    {
        Ok(rows) => {
            for r in rows {
                let line: String = r.get(0);
                let _ = writeln!(out, "  {line}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  (no plan: {e})");
        }
    }
    out
}

/// One page of a search.
pub(crate) async fn search(conn: &Conn, sid: i64, q: &SearchQuery, now: i64) -> Result<SearchPage> {
    let mut b = Builder::new(sid, now);
    let set = query_set(&mut b, q)?;
    let base_params = b.params.len();
    let mut page = SearchPage::default();

    // The page: one row more than asked tells whether there is a next page.
    let limit = i64::try_from(q.count).unwrap_or(i64::MAX - 1) + 1;
    let mut backwards = false;
    let page_sql = if q.sort.is_empty() {
        let (cmp, order) = match q.cursor {
            Some(Cursor::Before(_)) => {
                backwards = true;
                ("<", "DESC")
            }
            _ => (">", "ASC"),
        };
        let at = match q.cursor {
            Some(Cursor::After(n) | Cursor::Before(n)) => n,
            _ => 0,
        };
        let at = b.int(at);
        let lim = b.int(limit);
        format!(
            "SELECT s.seq FROM ({set}) s WHERE s.seq {cmp} {at} ORDER BY s.seq {order} LIMIT {lim}"
        )
    } else {
        // Keyset paging: the cursor is the last (or first) row's sort values and row number.
        let (at, back) = match &q.cursor {
            Some(Cursor::SortedAfter(p)) => (Some(p), false),
            Some(Cursor::SortedBefore(p)) => (Some(p), true),
            _ => (None, false),
        };
        backwards = back;
        let mut keys = Vec::new();
        let mut order = Vec::new();
        for (i, k) in q.sort.iter().enumerate() {
            keys.push(format!("{} AS k{i}", sort_value(&mut b, k, "s")?));
            let ascending = k.descending == backwards;
            order.push(format!(
                "k{i} {}",
                if ascending {
                    "ASC NULLS FIRST"
                } else {
                    "DESC NULLS LAST"
                }
            ));
        }
        order.push(format!("seq {}", if backwards { "DESC" } else { "ASC" }));
        let after = match at {
            Some(p) => keyset_where(&mut b, &q.sort, p, backwards),
            None => "true".into(),
        };
        let lim = b.int(limit);
        let cols: Vec<String> = (0..q.sort.len()).map(|i| format!("k{i}")).collect();
        format!(
            "SELECT seq, {} FROM (SELECT s.seq AS seq, {} FROM ({set}) s) o \
             WHERE {after} ORDER BY {} LIMIT {lim}",
            cols.join(", "),
            keys.join(", "),
            order.join(", ")
        )
    };
    if q.explain || tracing::enabled!(tracing::Level::DEBUG) {
        let plan = explain(conn, &page_sql, &b).await;
        tracing::debug!(plan = %plan, "search");
        if q.explain {
            page.plan = Some(plan);
        }
    }
    let mut seqs: Vec<i64> = Vec::new();
    let mut positions: Vec<SortPosition> = Vec::new();
    if q.count > 0 {
        let rows = conn.query_dynamic(&page_sql, &b.refs()).await?;
        for row in &rows {
            let seq: i64 = row.get(0);
            seqs.push(seq);
            if !q.sort.is_empty() {
                let values = q
                    .sort
                    .iter()
                    .enumerate()
                    .map(|(i, k)| sort_value_of(row, i + 1, k))
                    .collect();
                positions.push(SortPosition { values, seq });
            }
        }
    }
    let more = seqs.len() > q.count;
    seqs.truncate(q.count);
    positions.truncate(q.count);
    if backwards {
        seqs.reverse();
        positions.reverse();
    }
    // Cursors: the first and last row's positions, in the order of the search.
    let reached_by_next = matches!(q.cursor, Some(Cursor::After(n)) if n > 0)
        || matches!(q.cursor, Some(Cursor::SortedAfter(_)));
    let (first, last) = if q.sort.is_empty() {
        (
            seqs.first().copied().map(Cursor::Before),
            seqs.last().copied().map(Cursor::After),
        )
    } else {
        (
            positions.first().cloned().map(Cursor::SortedBefore),
            positions.last().cloned().map(Cursor::SortedAfter),
        )
    };
    if backwards {
        if more {
            page.previous = first;
        }
        page.next = last;
    } else {
        if more {
            page.next = last;
        }
        if reached_by_next {
            page.previous = first;
        }
    }
    // The total as R4 asks for it: by default only when it costs nothing (search.html#total).
    page.total = match fhir_store::total_source(q, seqs.len(), more) {
        TotalSource::Page(n) => Some(n),
        TotalSource::Counter => Some(live_count(conn, sid, q).await?),
        TotalSource::Count => {
            let refs = b.refs();
            let rows = conn
                .query_dynamic(
                    &format!("SELECT count(*) FROM ({set}) c"),
                    &refs[..base_params],
                )
                .await?;
            let n: i64 = rows.first().map_or(0, |r| r.get(0));
            Some(u64::try_from(n).unwrap_or(0))
        }
        TotalSource::Omitted => None,
    };
    page.matches = by_seq(conn, sid, &seqs).await?;
    if (!q.includes.is_empty() || !q.revincludes.is_empty()) && !seqs.is_empty() {
        let found = includes(conn, sid, q, &seqs, &page.matches).await?;
        page.includes = by_seq(conn, sid, &found).await?;
    }
    Ok(page)
}

/// The number of live resources of the searched type (or types, or all of the service's) from
/// the counts kept by the write transactions: an unfiltered total in one row per type.
async fn live_count(conn: &Conn, sid: i64, q: &SearchQuery) -> Result<u64> {
    let types: Vec<String> = match &q.rtype {
        Some(t) => vec![t.clone()],
        None => q.types.clone(),
    };
    let rows = if types.is_empty() {
        conn.query(
            "SELECT coalesce(sum(n), 0)::bigint FROM resource_counts WHERE sid = $1",
            &[&sid],
        )
        .await?
    } else {
        conn.query(
            "SELECT coalesce(sum(n), 0)::bigint FROM resource_counts \
             WHERE sid = $1 AND rtype = ANY($2)",
            &[&sid, &types],
        )
        .await?
    };
    let n: i64 = rows.first().map_or(0, |r| r.get(0));
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The versions stored under `seqs`, in that order.
async fn by_seq(conn: &Conn, sid: i64, seqs: &[i64]) -> Result<Vec<StoredResource>> {
    Ok(by_seq_keyed(conn, sid, seqs)
        .await?
        .into_iter()
        .map(|(_, r)| r)
        .collect())
}

/// [`by_seq`], each with its `seq`.
async fn by_seq_keyed(conn: &Conn, sid: i64, seqs: &[i64]) -> Result<Vec<(i64, StoredResource)>> {
    if seqs.is_empty() {
        return Ok(Vec::new());
    }
    let rows = conn
        .query(
            &format!(
                "SELECT v.seq, v.rtype, v.id, {VERSION_COLUMNS} FROM versions v \
                 WHERE v.sid = $1 AND v.seq = ANY($2::bigint[])"
            ),
            &[&sid, &seqs],
        )
        .await?;
    let mut found: HashMap<i64, StoredResource> = HashMap::with_capacity(rows.len());
    for row in &rows {
        let seq: i64 = row.get(0);
        found.insert(seq, stored_from_row(row, 3, row.get(1), row.get(2))?);
    }
    Ok(seqs
        .iter()
        .filter_map(|s| found.remove(s).map(|r| (*s, r)))
        .collect())
}

/// `seq`s of the resources `_include` and `_revinclude` add to a page (§3.1.1.5.4): first
/// round from the matches, further rounds (`:iterate`) from what the previous round added.
async fn includes(
    conn: &Conn,
    sid: i64,
    q: &SearchQuery,
    seqs: &[i64],
    matches: &[StoredResource],
) -> Result<Vec<i64>> {
    let mut seen: HashSet<i64> = seqs.iter().copied().collect();
    let mut out = Vec::new();
    let mut frontier: Vec<(i64, String, String)> = seqs
        .iter()
        .zip(matches)
        .map(|(s, m)| (*s, m.resource_type.clone(), m.id.clone()))
        .collect();
    for round in 0..4 {
        let mut found: Vec<i64> = Vec::new();
        let front_seqs: Vec<i64> = frontier.iter().map(|f| f.0).collect();
        let front_types: Vec<String> = frontier.iter().map(|f| f.1.clone()).collect();
        let front_ids: Vec<String> = frontier.iter().map(|f| f.2.clone()).collect();
        for inc in q.includes.iter().filter(|i| round == 0 || i.iterate) {
            if inc.params.is_empty() {
                continue;
            }
            let pids: Vec<i64> = inc.params.iter().map(|p| i64::from(*p)).collect();
            let rows = conn
                .query(
                    "SELECT DISTINCT r.seq FROM ix_ref x \
                     JOIN resources r ON r.sid = x.sid AND r.rtype = x.ttype AND r.id = x.tid \
                     WHERE x.sid = $1 AND x.seq = ANY($2::bigint[]) \
                     AND x.pid = ANY($3::bigint[]) AND x.ttype <> '' \
                     AND ($4::text IS NULL OR x.ttype = $4) AND NOT r.deleted \
                     ORDER BY r.seq",
                    &[&sid, &front_seqs, &pids, &inc.target],
                )
                .await?;
            found.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        for inc in q.revincludes.iter().filter(|i| round == 0 || i.iterate) {
            if inc.params.is_empty() {
                continue;
            }
            let pids: Vec<i64> = inc.params.iter().map(|p| i64::from(*p)).collect();
            let rows = conn
                .query(
                    "SELECT DISTINCT x.seq FROM ix_ref x \
                     JOIN unnest($3::text[], $4::text[]) AS f(ttype, tid) \
                       ON x.ttype = f.ttype AND x.tid = f.tid \
                     WHERE x.sid = $1 AND x.pid = ANY($2::bigint[]) ORDER BY x.seq",
                    &[&sid, &pids, &front_types, &front_ids],
                )
                .await?;
            found.extend(rows.iter().map(|r| r.get::<_, i64>(0)));
        }
        let mut next = Vec::new();
        for s in found {
            if seen.insert(s) {
                out.push(s);
                next.push(s);
            }
            if out.len() >= MAX_INCLUDES {
                return Ok(out);
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = by_seq_keyed(conn, sid, &next)
            .await?
            .into_iter()
            .map(|(s, r)| (s, r.resource_type, r.id))
            .collect();
    }
    Ok(out)
}

/// `(type, id)` of up to `limit` resources matching the filters of `q`.
pub(crate) async fn matching(
    conn: &Conn,
    sid: i64,
    q: &SearchQuery,
    limit: usize,
) -> Result<Vec<(String, String)>> {
    let mut b = Builder::new(sid, chrono::Utc::now().timestamp_micros());
    let set = query_set(&mut b, q)?;
    let lim = b.int(i64::try_from(limit).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT r.rtype, r.id FROM ({set}) s JOIN resources r ON r.sid = $1 AND r.seq = s.seq \
         ORDER BY s.seq LIMIT {lim}"
    );
    let rows = conn.query_dynamic(&sql, &b.refs()).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}
