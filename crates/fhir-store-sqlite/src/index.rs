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

/// The index rows of a batch of versions ([`fhir_store::WriteTx::put_versions`]), held until
/// the batch ends and then written table by table in key order, many rows per statement: the
/// B-tree inserts of one table then walk its pages once, in order, where one version at a time
/// seeks all over every table.
#[derive(Default)]
pub(crate) struct Pending {
    rows: Vec<(i64, IndexEntry)>,
    /// Versions of this batch whose rows went again before the batch ended (a later version
    /// of the same resource in the batch): their rows are not written.
    gone: std::collections::HashSet<i64>,
    seqs: std::collections::HashSet<i64>,
    /// Versions written and the change in live resources, per type.
    counts: std::collections::HashMap<String, (i64, i64)>,
}

/// Rows per multi-row `INSERT`; the rest of a table's rows go one by one.
const BLOCK: usize = 32;

/// The table, columns and sort key of an index row kind.
fn kind(v: &IndexValue) -> usize {
    match v {
        IndexValue::String { .. } => 0,
        IndexValue::Token { .. } => 1,
        IndexValue::Reference { .. } => 2,
        IndexValue::Date { .. } => 3,
        IndexValue::Number { .. } => 4,
        IndexValue::Quantity { .. } => 5,
        IndexValue::Uri(_) => 6,
    }
}

/// Each table's columns in the order of its primary key (after `sid`, `pid`), then the rest.
const COLUMNS: [&str; 7] = [
    "sid, pid, norm, exact, seq, grp",
    "sid, pid, code, system, seq, grp, text",
    "sid, pid, ttype, tid, url, seq, grp",
    "sid, pid, lo, hi, seq, grp",
    "sid, pid, lo, hi, seq, grp",
    "sid, pid, code, system, lo, hi, seq, grp",
    "sid, pid, value, seq, grp",
];

/// Orders two rows of one table as its primary key does (text as SQLite's BINARY collation:
/// bytes; reals by value).
fn key_order(a: &(i64, IndexEntry), b: &(i64, IndexEntry)) -> std::cmp::Ordering {
    use IndexValue as V;
    let head = a.1.param.cmp(&b.1.param);
    let tail = (a.0, a.1.group).cmp(&(b.0, b.1.group));
    let value = match (&a.1.value, &b.1.value) {
        (
            V::String {
                norm: n1,
                exact: e1,
            },
            V::String {
                norm: n2,
                exact: e2,
            },
        ) => (n1, e1).cmp(&(n2, e2)),
        (
            V::Token {
                system: s1,
                code: c1,
                ..
            },
            V::Token {
                system: s2,
                code: c2,
                ..
            },
        ) => (opt(c1), opt(s1)).cmp(&(opt(c2), opt(s2))),
        (
            V::Reference {
                ttype: t1,
                tid: i1,
                url: u1,
            },
            V::Reference {
                ttype: t2,
                tid: i2,
                url: u2,
            },
        ) => (opt(t1), opt(i1), opt(u1)).cmp(&(opt(t2), opt(i2), opt(u2))),
        (V::Date { lo: l1, hi: h1 }, V::Date { lo: l2, hi: h2 }) => (l1, h1).cmp(&(l2, h2)),
        (V::Number { lo: l1, hi: h1 }, V::Number { lo: l2, hi: h2 }) => {
            l1.total_cmp(l2).then(h1.total_cmp(h2))
        }
        (
            V::Quantity {
                system: s1,
                code: c1,
                lo: l1,
                hi: h1,
            },
            V::Quantity {
                system: s2,
                code: c2,
                lo: l2,
                hi: h2,
            },
        ) => (opt(c1), opt(s1))
            .cmp(&(opt(c2), opt(s2)))
            .then(l1.total_cmp(l2))
            .then(h1.total_cmp(h2)),
        (V::Uri(x), V::Uri(y)) => x.cmp(y),
        _ => std::cmp::Ordering::Equal,
    };
    head.then(value).then(tail)
}

/// Binds one row's values from parameter `at` on (1-based); returns the next free one.
fn bind(
    st: &mut rusqlite::Statement<'_>,
    mut at: usize,
    sid: i64,
    seq: i64,
    e: &IndexEntry,
) -> rusqlite::Result<usize> {
    let mut put = |v: &dyn rusqlite::ToSql| -> rusqlite::Result<()> {
        st.raw_bind_parameter(at, v)?;
        at += 1;
        Ok(())
    };
    put(&sid)?;
    put(&i64::from(e.param))?;
    let grp = i64::from(e.group);
    match &e.value {
        IndexValue::String { norm, exact } => {
            put(norm)?;
            put(exact)?;
            put(&seq)?;
            put(&grp)?;
        }
        IndexValue::Token { system, code, text } => {
            put(&opt(code))?;
            put(&opt(system))?;
            put(&seq)?;
            put(&grp)?;
            put(text)?;
        }
        IndexValue::Reference { ttype, tid, url } => {
            put(&opt(ttype))?;
            put(&opt(tid))?;
            put(&opt(url))?;
            put(&seq)?;
            put(&grp)?;
        }
        IndexValue::Date { lo, hi } => {
            put(lo)?;
            put(hi)?;
            put(&seq)?;
            put(&grp)?;
        }
        IndexValue::Number { lo, hi } => {
            put(lo)?;
            put(hi)?;
            put(&seq)?;
            put(&grp)?;
        }
        IndexValue::Quantity {
            system,
            code,
            lo,
            hi,
        } => {
            put(&opt(code))?;
            put(&opt(system))?;
            put(lo)?;
            put(hi)?;
            put(&seq)?;
            put(&grp)?;
        }
        IndexValue::Uri(v) => {
            put(v)?;
            put(&seq)?;
            put(&grp)?;
        }
    }
    Ok(at)
}

impl Pending {
    /// Holds the rows of version `seq`.
    pub(crate) fn add(&mut self, seq: i64, entries: Vec<IndexEntry>) {
        self.seqs.insert(seq);
        self.rows.extend(entries.into_iter().map(|e| (seq, e)));
    }

    /// Counts one version of `rtype`, changing its live resources by `live`.
    pub(crate) fn count(&mut self, rtype: &str, live: i64) {
        match self.counts.get_mut(rtype) {
            Some((versions, n)) => {
                *versions += 1;
                *n += live;
            }
            None => {
                self.counts.insert(rtype.to_owned(), (1, live));
            }
        }
    }

    /// The counts of the batch, once.
    pub(crate) fn take_counts(&mut self) -> std::collections::HashMap<String, (i64, i64)> {
        std::mem::take(&mut self.counts)
    }

    /// Drops the held rows of version `seq`; false when it is not of this batch (its rows are
    /// in the database).
    pub(crate) fn remove(&mut self, seq: i64) -> bool {
        if self.seqs.remove(&seq) {
            self.gone.insert(seq);
            true
        } else {
            false
        }
    }

    /// Writes the held rows.
    pub(crate) fn flush(self, conn: &Connection, sid: i64) -> Result<()> {
        let Pending { rows, gone, .. } = self;
        let mut tables: [Vec<(i64, IndexEntry)>; 7] = Default::default();
        for row in rows {
            if !gone.contains(&row.0) {
                tables[kind(&row.1.value)].push(row);
            }
        }
        for (k, mut rows) in tables.into_iter().enumerate() {
            if rows.is_empty() {
                continue;
            }
            rows.sort_unstable_by(key_order);
            let table = TABLES[k];
            let columns = COLUMNS[k];
            let one = format!("({})", vec!["?"; columns.split(',').count()].join(", "));
            let mut blocks = rows.chunks_exact(BLOCK);
            if blocks.len() > 0 {
                let sql = format!(
                    "INSERT OR IGNORE INTO {table} ({columns}) VALUES {}",
                    vec![one.as_str(); BLOCK].join(", ")
                );
                let mut st = conn.prepare_cached(&sql).map_err(backend)?;
                for block in blocks.by_ref() {
                    let mut at = 1;
                    for (seq, e) in block {
                        at = bind(&mut st, at, sid, *seq, e).map_err(backend)?;
                    }
                    st.raw_execute().map_err(backend)?;
                }
            }
            let rest = blocks.remainder();
            if !rest.is_empty() {
                let sql = format!("INSERT OR IGNORE INTO {table} ({columns}) VALUES {one}");
                let mut st = conn.prepare_cached(&sql).map_err(backend)?;
                for (seq, e) in rest {
                    bind(&mut st, 1, sid, *seq, e).map_err(backend)?;
                    st.raw_execute().map_err(backend)?;
                }
            }
        }
        Ok(())
    }
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
