//! Search on the index: a [`SearchQuery`] compiled to one SQL statement over the `ix_*` tables.
//!
//! The plan is always the same shape. One ANDed filter is chosen as the *driver*: its
//! conditions become range scans of the index tables' primary keys (sid, pid, value…, seq),
//! unioned for an OR list. Every other filter becomes a *probe* of the driver's rows: an
//! `EXISTS` point lookup by `(seq, pid)`. A filter that cannot drive (`:not`, `:missing=true`)
//! only probes; with no driver at all, the type's rows in `resources` drive. Chains and `_has`
//! nest the same compilation for the other type inside an uncorrelated `IN`, which SQLite
//! evaluates once. So a selective parameter is an index range scan, never a table scan; the
//! statement and its `EXPLAIN QUERY PLAN` are logged at debug level and returned for
//! `_explain=true`.
//!
//! Which filter drives a type search is chosen from statistics ([`plan`], issue #20): the
//! type's live count kept in `resource_counts` and a bounded count of each filter's index
//! rows. A page of unselective conditions walks the type in `seq` order
//! (`resources_type_seq`) and probes every filter, so it stops after `_count + 1` matches
//! instead of reading them all; the choice is the first line of `_explain`. The total is
//! counted only when R4's `_total` asks for it or it is free ([`fhir_store::total_source`]).
//!
//! Paging in the default order is by `seq` (the row number of the current version): a cursor
//! is the last `seq` seen, so pages stay correct while resources are added. Sorted results page
//! by keyset: the cursor is the last row's sort values and `seq`, and the next page is the rows
//! after it in the sort order — never an offset, which would shift as rows come and go.

use std::collections::HashSet;
use std::fmt::Write as _;

use fhir_search::{
    Cond, Cursor, ParamType, Prefix, SearchQuery, SortKey, SortPosition, SortValue, SystemMatch,
    Test, UriMode,
};
use fhir_store::{Result, SearchPage, StoreError, StoredResource, TotalSource};
use rusqlite::types::Value as Sql;
use rusqlite::{params_from_iter, Connection, OptionalExtension};

use crate::{backend, stored_from_row, VERSION_COLUMNS};

/// The largest code point: `norm < prefix || MAX` bounds a prefix range in binary collation.
const MAX_CHAR: char = '\u{10FFFF}';

/// How many resources `_include`/`_revinclude` may add to one page.
const MAX_INCLUDES: usize = 5000;

/// Collects bound parameters while SQL is written.
struct Builder {
    params: Vec<Sql>,
    sid: i64,
    now: i64,
}

impl Builder {
    fn p(&mut self, v: impl Into<Sql>) -> String {
        self.params.push(v.into());
        format!("?{}", self.params.len())
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
                ("ix_string", "1".into())
            } else {
                let lo = b.p(p.clone());
                let hi = b.p(format!("{p}{MAX_CHAR}"));
                ("ix_string", format!("norm >= {lo} AND norm < {hi}"))
            }
        }
        Test::StringExact(v) => {
            let n = b.p(fhir_search::normalize::fold(v));
            let e = b.p(v.clone());
            ("ix_string", format!("norm = {n} AND exact = {e}"))
        }
        Test::StringContains(v) => {
            let n = b.p(v.clone());
            ("ix_string", format!("instr(norm, {n}) > 0"))
        }
        Test::Token { system, code } => {
            let mut w = String::from("1");
            if let Some(code) = code {
                let p = b.p(code.clone());
                w = format!("code = {p}");
            }
            match system {
                SystemMatch::Any => {}
                SystemMatch::None => w.push_str(" AND system = ''"),
                SystemMatch::Is(s) => {
                    let p = b.p(s.clone());
                    let _ = write!(w, " AND system = {p}");
                }
            }
            ("ix_token", w)
        }
        Test::TokenIn(codes) => {
            if codes.is_empty() {
                ("ix_token", "0".into())
            } else {
                let pairs: Vec<String> = codes
                    .iter()
                    .map(|(system, code)| {
                        let c = b.p(code.clone());
                        let s = b.p(system.clone());
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
            let lo = b.p(t.clone());
            let hi = b.p(format!("{t}{MAX_CHAR}"));
            ("ix_token", format!("text >= {lo} AND text < {hi}"))
        }
        Test::Reference { ttype, tid } => {
            let id = b.p(tid.clone());
            match ttype {
                Some(t) => {
                    let t = b.p(t.clone());
                    ("ix_ref", format!("ttype = {t} AND tid = {id}"))
                }
                None => ("ix_ref", format!("tid = {id}")),
            }
        }
        Test::ReferenceUrl(u) => {
            let u = b.p(u.clone());
            ("ix_ref", format!("ttype = '' AND tid = '' AND url = {u}"))
        }
        Test::Date { prefix, lo, hi } => {
            let w = range_where(b, *prefix, Bound::Int(*lo), Bound::Int(*hi), None)?;
            ("ix_date", w)
        }
        Test::Number {
            prefix,
            value,
            lo,
            hi,
        } => {
            let w = range_where(b, *prefix, Bound::Real(*lo), Bound::Real(*hi), Some(*value))?;
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
                let p = b.p(code.clone());
                let _ = write!(w, "code = {p} AND ");
            }
            if let Some(s) = system {
                let p = b.p(s.clone());
                let _ = write!(w, "system = {p} AND ");
            }
            w.push_str(&range_where(
                b,
                *prefix,
                Bound::Real(*lo),
                Bound::Real(*hi),
                Some(*value),
            )?);
            ("ix_quantity", w)
        }
        Test::Uri { value, mode } => {
            let v = b.p(value.clone());
            let w = match mode {
                UriMode::Eq => format!("value = {v}"),
                UriMode::Below => {
                    let hi = b.p(format!("{value}{MAX_CHAR}"));
                    format!("value >= {v} AND value < {hi}")
                }
                UriMode::Above => format!("substr({v}, 1, length(value)) = value"),
            };
            ("ix_uri", w)
        }
        Test::Missing(_) => {
            let t = table_of(c.kind).ok_or_else(|| unsupported(":missing on a composite"))?;
            (t, "1".into())
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

impl Bound {
    fn sql(self) -> Sql {
        match self {
            Bound::Int(i) => Sql::Integer(i),
            Bound::Real(r) => Sql::Real(r),
        }
    }
}

/// Range semantics of the prefixes (FHIR R4 §3.1.1.4.1): the search value is `[qlo, qhi]`
/// (or `value` itself for ordering prefixes of numbers), a row is `[lo, hi]`.
fn range_where(
    b: &mut Builder,
    prefix: Prefix,
    qlo: Bound,
    qhi: Bound,
    value: Option<f64>,
) -> Result<String> {
    // Ordering prefixes on numbers compare with the value as written.
    let (olo, ohi) = match value {
        Some(v) => (Bound::Real(v), Bound::Real(v)),
        None => (qlo, qhi),
    };
    Ok(match prefix {
        Prefix::Eq => {
            let a = b.p(qlo.sql());
            let z = b.p(qhi.sql());
            format!("lo >= {a} AND hi <= {z}")
        }
        Prefix::Ne => {
            let a = b.p(qlo.sql());
            let z = b.p(qhi.sql());
            format!("NOT (lo >= {a} AND hi <= {z})")
        }
        Prefix::Gt => {
            let z = b.p(ohi.sql());
            format!("hi > {z}")
        }
        Prefix::Lt => {
            let a = b.p(olo.sql());
            format!("lo < {a}")
        }
        Prefix::Ge => {
            let a = b.p(olo.sql());
            format!("hi >= {a}")
        }
        Prefix::Le => {
            let z = b.p(ohi.sql());
            format!("lo <= {z}")
        }
        Prefix::Sa => {
            let z = b.p(ohi.sql());
            format!("lo > {z}")
        }
        Prefix::Eb => {
            let a = b.p(olo.sql());
            format!("hi < {a}")
        }
        Prefix::Ap => {
            // Approximately: within 10% — of the value for numbers, of the distance from now
            // for dates (§3.1.1.4.1 "ap").
            let (a, z) = match (qlo, qhi, value) {
                (_, _, Some(v)) => {
                    let d = (v * 0.1).abs();
                    (Sql::Real(v - d), Sql::Real(v + d))
                }
                (Bound::Int(lo), Bound::Int(hi), None) => {
                    let d = (b.now - lo).abs() / 10;
                    (Sql::Integer(lo - d), Sql::Integer(hi + d))
                }
                (lo, hi, None) => (lo.sql(), hi.sql()),
            };
            let a = b.p(a);
            let z = b.p(z);
            format!("lo <= {z} AND hi >= {a}")
        }
    })
}

/// The first component's table (as `c0`) and the terms that make a row of it the start of a
/// tuple matching every component: the other components' rows must be in the same resource
/// (`seq`) and the same tuple (`grp`), FHIR R4 §3.1.1.4.8. Each component's own terms name
/// its columns unqualified, which SQL resolves to the innermost table: its own.
fn tuple_sql(b: &mut Builder, cs: &[Cond]) -> Result<(String, String)> {
    let mut from = String::new();
    let mut terms = Vec::new();
    for (i, c) in cs.iter().enumerate() {
        let pid = b.p(i64::from(c.param));
        let (table, w) = simple(b, c)?.ok_or_else(|| unsupported("composite component"))?;
        if i == 0 {
            from = format!("{table} c0");
            terms.push(format!("c0.pid = {pid} AND ({w})"));
        } else {
            terms.push(format!(
                "EXISTS (SELECT 1 FROM {table} c{i} WHERE c{i}.seq = c0.seq AND c{i}.grp = c0.grp \
                 AND c{i}.pid = {pid} AND ({w}))"
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
            let sid = b.p(b.sid);
            let pid = b.p(i64::from(c.param));
            let t = b.p(target.clone());
            let inner = set_sql(b, Some(target), &[], std::slice::from_ref(filter))?;
            Ok(format!(
                "SELECT DISTINCT seq FROM ix_ref WHERE sid = {sid} AND pid = {pid} AND ttype = {t} \
                 AND tid IN (SELECT v.id FROM versions v WHERE v.seq IN ({inner}))"
            ))
        }
        Test::Has { source, filter } => {
            let inner = set_sql(b, Some(source), &[], std::slice::from_ref(filter))?;
            let sid = b.p(b.sid);
            let pid = b.p(i64::from(c.param));
            let typed = match rtype {
                Some(t) => format!(" AND x.ttype = {}", b.p(t.to_string())),
                None => String::new(),
            };
            Ok(format!(
                "SELECT DISTINCT r.seq AS seq FROM ix_ref x JOIN resources r \
                 ON r.sid = x.sid AND r.rtype = x.ttype AND r.id = x.tid \
                 WHERE x.sid = {sid} AND x.pid = {pid}{typed} AND x.seq IN ({inner}) \
                 AND r.deleted = 0"
            ))
        }
        Test::All(cs) => {
            let filters: Vec<Vec<Cond>> = cs.iter().map(|c| vec![c.clone()]).collect();
            set_sql(b, rtype, &[], &filters)
        }
        Test::Tuple(cs) => {
            let sid = b.p(b.sid);
            let (from, w) = tuple_sql(b, cs)?;
            Ok(format!(
                "SELECT DISTINCT c0.seq AS seq FROM {from} WHERE c0.sid = {sid} AND {w}"
            ))
        }
        _ => {
            let sid = b.p(b.sid);
            let pid = b.p(i64::from(c.param));
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
                "SELECT {distinct}seq FROM {table} WHERE sid = {sid} AND pid = {pid} AND {w}"
            ))
        }
    }
}

/// A boolean SQL expression: does the resource at `{alias}.seq` satisfy `c`?
fn probe(b: &mut Builder, rtype: Option<&str>, c: &Cond, alias: &str) -> Result<String> {
    let positive = match &c.test {
        Test::Missing(missing) => {
            let t = table_of(c.kind).ok_or_else(|| unsupported(":missing on a composite"))?;
            let pid = b.p(i64::from(c.param));
            let e = format!("EXISTS (SELECT 1 FROM {t} WHERE seq = {alias}.seq AND pid = {pid})");
            return Ok(if *missing { format!("NOT {e}") } else { e });
        }
        Test::Chain { target, filter } => {
            let pid = b.p(i64::from(c.param));
            let t = b.p(target.clone());
            let inner = set_sql(b, Some(target), &[], std::slice::from_ref(filter))?;
            format!(
                "EXISTS (SELECT 1 FROM ix_ref WHERE seq = {alias}.seq AND pid = {pid} \
                 AND ttype = {t} AND tid IN (SELECT v.id FROM versions v WHERE v.seq IN ({inner})))"
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
            format!("EXISTS (SELECT 1 FROM {from} WHERE c0.seq = {alias}.seq AND {w})")
        }
        _ => {
            let pid = b.p(i64::from(c.param));
            let (table, w) = simple(b, c)?.ok_or_else(|| unsupported("compound condition"))?;
            format!(
                "EXISTS (SELECT 1 FROM {table} WHERE seq = {alias}.seq AND pid = {pid} AND {w})"
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
    set_sql_with(b, rtype, types, filters, Pick::Static)
}

/// Which rows drive a search (see [`plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pick {
    /// The filter with the best [`drive_score`]: what nested searches (chains, `_has`) use.
    Static,
    /// This filter's index rows, the others probed.
    Filter(usize),
    /// The type's resources in `seq` order (`resources_type_seq`), every filter probed: a
    /// page of unselective conditions stops after `_count + 1` matches.
    Walk,
}

fn set_sql_with(
    b: &mut Builder,
    rtype: Option<&str>,
    types: &[String],
    filters: &[Vec<Cond>],
    pick: Pick,
) -> Result<String> {
    if filters.iter().any(Vec::is_empty) {
        // An OR of nothing (a `_has` whose reference cannot point here): no match.
        return Ok("SELECT NULL AS seq WHERE 0".into());
    }
    let driver = match pick {
        Pick::Filter(i) if i < filters.len() && drive_score(&filters[i]).is_some() => Some(i),
        Pick::Walk => None,
        _ => filters
            .iter()
            .enumerate()
            .filter_map(|(i, f)| drive_score(f).map(|s| (s, i)))
            .min()
            .map(|(_, i)| i),
    };
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
                    .map(|p| format!("SELECT seq FROM ({p})"))
                    .collect::<Vec<_>>()
                    .join(" UNION ")
            }
        }
        None => {
            let sid = b.p(b.sid);
            match rtype {
                Some(t) => {
                    let t = b.p(t.to_string());
                    format!(
                        "SELECT seq FROM resources WHERE sid = {sid} AND rtype = {t} \
                         AND deleted = 0"
                    )
                }
                None if !types.is_empty() => {
                    let list: Vec<String> = types.iter().map(|t| b.p(t.clone())).collect();
                    format!(
                        "SELECT seq FROM resources WHERE sid = {sid} AND rtype IN ({}) \
                         AND deleted = 0",
                        list.join(", ")
                    )
                }
                None => format!("SELECT seq FROM resources WHERE sid = {sid} AND deleted = 0"),
            }
        }
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
    let pid = b.p(i64::from(k.param));
    Ok(format!(
        "(SELECT {agg}({col}) FROM {table} WHERE seq = {alias}.seq AND pid = {pid})"
    ))
}

fn sort_sql(v: &SortValue) -> Sql {
    match v {
        SortValue::Null => Sql::Null,
        SortValue::Int(i) => Sql::Integer(*i),
        SortValue::Real(r) => Sql::Real(*r),
        SortValue::Text(t) => Sql::Text(t.clone()),
    }
}

/// The rows after `at` in the page's order: key by key, a row is after when it is equal on
/// the keys before and after on this one, and the row number breaks a tie of all keys. SQLite
/// sorts NULL (no value) first ascending and last descending; "after" follows that.
fn keyset_where(b: &mut Builder, sort: &[SortKey], at: &SortPosition, backwards: bool) -> String {
    let mut ors = Vec::new();
    let mut equal: Vec<String> = Vec::new();
    for (i, (k, v)) in sort.iter().zip(&at.values).enumerate() {
        let ascending = k.descending == backwards;
        let after = match (v, ascending) {
            (SortValue::Null, true) => Some(format!("k{i} IS NOT NULL")),
            (SortValue::Null, false) => None,
            (v, true) => Some(format!("k{i} > {}", b.p(sort_sql(v)))),
            (v, false) => Some(format!("(k{i} < {} OR k{i} IS NULL)", b.p(sort_sql(v)))),
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
        equal.push(format!("k{i} IS {}", b.p(sort_sql(v))));
    }
    let seq = b.p(at.seq);
    let cmp = if backwards { "<" } else { ">" };
    equal.push(format!("seq {cmp} {seq}"));
    ors.push(equal.join(" AND "));
    format!("(({}))", ors.join(") OR ("))
}

fn sort_value_of(v: rusqlite::types::ValueRef<'_>) -> SortValue {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Integer(i) => SortValue::Int(i),
        ValueRef::Real(r) => SortValue::Real(r),
        ValueRef::Text(t) => SortValue::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Null | ValueRef::Blob(_) => SortValue::Null,
    }
}

fn query_set(b: &mut Builder, q: &SearchQuery) -> Result<String> {
    set_sql(b, q.rtype.as_deref(), &q.types, &q.filters)
}

/// Is `c` answered by index rows in `seq` order (equality on every key column before `seq`)?
/// Then driving with it streams: a page stops after `_count + 1` matches, unsorted.
fn streams(c: &Cond) -> bool {
    !c.negate
        && matches!(
            &c.test,
            Test::Token {
                system: SystemMatch::Is(_),
                code: Some(_)
            }
        )
}

/// At most `cap` index rows of one simple condition, counted by a range scan of its index:
/// the store's statistic of how selective it is (exact below `cap`). `None` for conditions
/// that are not one table's rows (chains, `_has`, composites).
fn estimate(conn: &Connection, sid: i64, c: &Cond, cap: i64) -> Result<Option<i64>> {
    let mut b = Builder {
        params: Vec::new(),
        sid,
        now: chrono::Utc::now().timestamp_micros(),
    };
    if c.negate || matches!(c.test, Test::Missing(_)) {
        return Ok(None);
    }
    let Some((table, w)) = simple(&mut b, c)? else {
        return Ok(None);
    };
    let s = b.p(sid);
    let pid = b.p(i64::from(c.param));
    let cap = b.p(cap);
    let sql = format!(
        "SELECT count(*) FROM (SELECT 1 FROM {table} WHERE sid = {s} AND pid = {pid} AND {w} \
         LIMIT {cap})"
    );
    let n: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row(params_from_iter(b.params.iter()), |row| row.get(0)))
        .map_err(backend)?;
    Ok(Some(n))
}

/// The top-level plan of a type search (issue #20), from statistics the store keeps: the
/// type's live count (`resource_counts`) and a bounded count of each filter's index rows.
///
/// A page costs what its driver costs. Driving with a filter reads its matches (then sorts
/// them by `seq`, unless its rows come in `seq` order); walking the type in `seq` order and
/// probing every filter stops after `_count + 1` matches, about `(_count + 1) / selectivity`
/// resources. So a filter with fewer than `cap = sqrt((_count + 1) · N)` rows drives (the
/// fewest wins), else a filter whose rows stream in `seq` order drives, else the type is
/// walked. A count (`_summary=count`, `_total=accurate`), a sorted search and a page read
/// backwards are driven by the filter with the fewest rows. Returns the choice and the
/// sentence `_explain` shows.
fn plan(conn: &Connection, sid: i64, q: &SearchQuery) -> Result<(Pick, String)> {
    let Some(rtype) = q.rtype.as_deref() else {
        return Ok((Pick::Static, "plan: system search, static driver".into()));
    };
    let drivable: Vec<usize> = (0..q.filters.len())
        .filter(|&i| drive_score(&q.filters[i]).is_some())
        .collect();
    if drivable.is_empty() {
        return Ok((Pick::Static, "plan: no filter can drive".into()));
    }
    let n = i64::try_from(live_count(conn, sid, q)?).unwrap_or(i64::MAX);
    let counting = q.count == 0
        || matches!(
            q.total,
            Some(fhir_search::Total::Accurate | fhir_search::Total::Estimate)
        );
    let ordered = q.sort.is_empty() && !matches!(q.cursor, Some(Cursor::Before(_)));
    let page = i64::try_from(q.count).unwrap_or(i64::MAX / 2) + 1;
    let cap = if counting || !ordered {
        20_000
    } else {
        // sqrt without floats: the walk and the driver cost the same at m² = page · N.
        let target = page.saturating_mul(n.max(1));
        let mut r: i64 = 1;
        while r.saturating_mul(r) < target && r < 20_000 {
            r *= 2;
        }
        r.clamp(100, 20_000)
    };
    let mut estimates: Vec<(usize, i64)> = Vec::new();
    for &i in &drivable {
        let mut sum = Some(0i64);
        for c in &q.filters[i] {
            sum = match (sum, estimate(conn, sid, c, cap)?) {
                (Some(a), Some(m)) => Some(a.saturating_add(m)),
                _ => None,
            };
        }
        match sum {
            Some(m) => estimates.push((i, m)),
            // A chain or `_has` cannot be counted alone: keep the static choice.
            None => {
                return Ok((
                    Pick::Static,
                    format!("plan: filter {i} (a chain, _has or composite) drives by rule"),
                ))
            }
        }
    }
    let shown: Vec<String> = estimates
        .iter()
        .map(|(i, m)| {
            if *m >= cap {
                format!("filter {i}: >= {cap} rows")
            } else {
                format!("filter {i}: {m} rows")
            }
        })
        .collect();
    let facts = format!("{rtype}: {n} live; {}", shown.join(", "));
    let fewest = estimates
        .iter()
        .min_by_key(|(i, m)| (*m, drive_score(&q.filters[*i]).unwrap_or(9)))
        .map(|(i, m)| (*i, *m));
    let Some((best, m)) = fewest else {
        return Ok((Pick::Static, format!("plan: static ({facts})")));
    };
    if counting || !ordered || m < cap {
        return Ok((
            Pick::Filter(best),
            format!("plan: drive with filter {best}, the fewest rows ({facts})"),
        ));
    }
    if let Some((i, _)) = estimates
        .iter()
        .find(|(i, _)| q.filters[*i].len() == 1 && streams(&q.filters[*i][0]))
    {
        return Ok((
            Pick::Filter(*i),
            format!(
                "plan: drive with filter {i}, its rows in seq order, stop at the page ({facts})"
            ),
        ));
    }
    Ok((
        Pick::Walk,
        format!("plan: walk {rtype} in seq order, probe every filter, stop at the page ({facts})"),
    ))
}

fn explain(conn: &Connection, sql: &str, params: &[Sql]) -> String {
    let mut out = format!("{sql}\n");
    let plan = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .and_then(|mut st| {
            st.query_map(params_from_iter(params.iter()), |row| {
                row.get::<_, String>(3)
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
        });
    match plan {
        Ok(lines) => {
            for l in lines {
                let _ = writeln!(out, "  {l}");
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  (no plan: {e})");
        }
    }
    out
}

/// One page of a search.
pub(crate) fn search(conn: &Connection, sid: i64, q: &SearchQuery, now: i64) -> Result<SearchPage> {
    let mut b = Builder {
        params: Vec::new(),
        sid,
        now,
    };
    let (pick, why) = plan(conn, sid, q)?;
    let set = set_sql_with(&mut b, q.rtype.as_deref(), &q.types, &q.filters, pick)?;
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
        let at = b.p(at);
        let lim = b.p(limit);
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
            order.push(format!("k{i} {}", if ascending { "ASC" } else { "DESC" }));
        }
        order.push(format!("seq {}", if backwards { "DESC" } else { "ASC" }));
        let after = match at {
            Some(p) => keyset_where(&mut b, &q.sort, p, backwards),
            None => "1".into(),
        };
        let lim = b.p(limit);
        let cols: Vec<String> = (0..q.sort.len()).map(|i| format!("k{i}")).collect();
        format!(
            "SELECT seq, {} FROM (SELECT s.seq AS seq, {} FROM ({set}) s) \
             WHERE {after} ORDER BY {} LIMIT {lim}",
            cols.join(", "),
            keys.join(", "),
            order.join(", ")
        )
    };
    if q.explain || tracing::enabled!(tracing::Level::DEBUG) {
        let plan = format!("{why}\n{}", explain(conn, &page_sql, &b.params));
        tracing::debug!(plan = %plan, "search");
        if q.explain {
            page.plan = Some(plan);
        }
    }
    let mut seqs: Vec<i64> = Vec::new();
    let mut positions: Vec<SortPosition> = Vec::new();
    if q.count > 0 {
        let keys = q.sort.len();
        let mut st = conn.prepare_cached(&page_sql).map_err(backend)?;
        let mut rows = st
            .query(params_from_iter(b.params.iter()))
            .map_err(backend)?;
        while let Some(row) = rows.next().map_err(backend)? {
            let seq: i64 = row.get(0).map_err(backend)?;
            seqs.push(seq);
            if keys > 0 {
                let mut values = Vec::with_capacity(keys);
                for i in 1..=keys {
                    values.push(sort_value_of(row.get_ref(i).map_err(backend)?));
                }
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
        TotalSource::Counter => Some(live_count(conn, sid, q)?),
        TotalSource::Count => {
            let n: i64 = conn
                .prepare_cached(&format!("SELECT count(*) FROM ({set})"))
                .and_then(|mut st| {
                    st.query_row(params_from_iter(b.params[..base_params].iter()), |row| {
                        row.get(0)
                    })
                })
                .map_err(backend)?;
            Some(u64::try_from(n).unwrap_or(0))
        }
        TotalSource::Omitted => None,
    };
    let mut matches = Vec::with_capacity(seqs.len());
    for s in &seqs {
        if let Some(r) = by_seq(conn, *s)? {
            matches.push(r);
        }
    }
    if (!q.includes.is_empty() || !q.revincludes.is_empty()) && !seqs.is_empty() {
        let found = includes(conn, sid, q, &seqs, &matches)?;
        for s in found {
            if let Some(r) = by_seq(conn, s)? {
                page.includes.push(r);
            }
        }
    }
    page.matches = matches;
    Ok(page)
}

/// The number of live resources of the searched type (or types, or all of the service's) from
/// the counts kept in the write transaction: an unfiltered total in one row per type.
fn live_count(conn: &Connection, sid: i64, q: &SearchQuery) -> Result<u64> {
    let mut args = vec![Sql::Integer(sid)];
    let types: Vec<&str> = match &q.rtype {
        Some(t) => vec![t.as_str()],
        None => q.types.iter().map(String::as_str).collect(),
    };
    let sql = if types.is_empty() {
        "SELECT coalesce(sum(n), 0) FROM resource_counts WHERE sid = ?1".to_owned()
    } else {
        let list: Vec<String> = types
            .iter()
            .map(|t| {
                args.push(Sql::Text((*t).to_owned()));
                format!("?{}", args.len())
            })
            .collect();
        format!(
            "SELECT coalesce(sum(n), 0) FROM resource_counts WHERE sid = ?1 AND rtype IN ({})",
            list.join(", ")
        )
    };
    let n: i64 = conn
        .prepare_cached(&sql)
        .and_then(|mut st| st.query_row(params_from_iter(args.iter()), |row| row.get(0)))
        .map_err(backend)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The version stored under `seq`.
fn by_seq(conn: &Connection, seq: i64) -> Result<Option<StoredResource>> {
    conn.prepare_cached(&format!(
        "SELECT v.rtype, v.id, {VERSION_COLUMNS} FROM versions v WHERE v.seq = ?1"
    ))
    .and_then(|mut st| {
        st.query_row([seq], |row| {
            let rtype: String = row.get(0)?;
            let id: String = row.get(1)?;
            stored_from_row(row, 2, rtype, id)
        })
        .optional()
    })
    .map_err(backend)
}

fn int_list(seqs: &[i64]) -> String {
    seqs.iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `seq`s of the resources `_include` and `_revinclude` add to a page (§3.1.1.5.4): first
/// round from the matches, further rounds (`:iterate`) from what the previous round added.
fn includes(
    conn: &Connection,
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
        for inc in q.includes.iter().filter(|i| round == 0 || i.iterate) {
            if inc.params.is_empty() {
                continue;
            }
            let pids = inc
                .params
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let target = if inc.target.is_some() {
                " AND x.ttype = ?2"
            } else {
                ""
            };
            let sql = format!(
                "SELECT DISTINCT r.seq FROM ix_ref x INDEXED BY ix_ref_seq \
                 JOIN resources r ON r.sid = ?1 AND r.rtype = x.ttype AND r.id = x.tid \
                 WHERE x.seq IN ({}) AND x.pid IN ({pids}) AND x.ttype != ''{target} \
                 AND r.deleted = 0",
                int_list(&front_seqs)
            );
            let mut st = conn.prepare(&sql).map_err(backend)?;
            let mut args: Vec<Sql> = vec![Sql::Integer(sid)];
            if let Some(t) = &inc.target {
                args.push(Sql::Text(t.clone()));
            }
            let rows = st
                .query_map(params_from_iter(args.iter()), |r| r.get::<_, i64>(0))
                .map_err(backend)?;
            for r in rows {
                found.push(r.map_err(backend)?);
            }
        }
        for inc in q.revincludes.iter().filter(|i| round == 0 || i.iterate) {
            for pid in &inc.params {
                let mut st = conn
                    .prepare_cached(
                        "SELECT seq FROM ix_ref \
                         WHERE sid = ?1 AND pid = ?2 AND ttype = ?3 AND tid = ?4",
                    )
                    .map_err(backend)?;
                for (_, rtype, id) in &frontier {
                    let rows = st
                        .query_map(rusqlite::params![sid, pid, rtype, id], |r| {
                            r.get::<_, i64>(0)
                        })
                        .map_err(backend)?;
                    for r in rows {
                        found.push(r.map_err(backend)?);
                    }
                }
            }
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
        frontier = Vec::with_capacity(next.len());
        for s in next {
            if let Some(r) = by_seq(conn, s)? {
                frontier.push((s, r.resource_type, r.id));
            }
        }
    }
    Ok(out)
}

/// `(type, id)` of up to `limit` resources matching the filters of `q`.
pub(crate) fn matching(
    conn: &Connection,
    sid: i64,
    q: &SearchQuery,
    limit: usize,
) -> Result<Vec<(String, String)>> {
    let mut b = Builder {
        params: Vec::new(),
        sid,
        now: chrono::Utc::now().timestamp_micros(),
    };
    let set = query_set(&mut b, q)?;
    let lim = b.p(i64::try_from(limit).unwrap_or(i64::MAX));
    let sql = format!(
        "SELECT v.rtype, v.id FROM ({set}) s JOIN versions v ON v.seq = s.seq ORDER BY s.seq \
         LIMIT {lim}"
    );
    let mut st = conn.prepare_cached(&sql).map_err(backend)?;
    let rows = st
        .query_map(params_from_iter(b.params.iter()), |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(backend)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
}
