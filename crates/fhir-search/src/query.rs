//! The query model: `[(name, value)]` pairs of a search URL parsed into a typed
//! [`SearchQuery`] (FHIR R4 §3.1.1 search.html).
//!
//! Repeating a parameter ANDs (one [`SearchQuery::filters`] entry each); commas inside a value
//! OR (`\,` escapes a comma). Modifiers, prefixes, chains (`subject:Patient.name=…`, any depth)
//! and reverse chains (`_has:Observation:patient:code=…`, nested) become [`Cond`]s whose
//! parameters are already resolved to their registry numbers, so that a store only maps tests
//! onto its index. Result parameters (`_sort`, `_count`, `_include`, …) are parsed here too.
//! Unknown parameters are collected in [`SearchQuery::unknown`] for the caller to report or
//! refuse; a malformed value is a [`SearchError`] naming the parameter.

use crate::extract::local_reference;
use crate::normalize::{date_range, fold, number_range};
use crate::registry::{registry, ParamType, SearchParam};

/// A malformed search parameter: HTTP 400, naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("search parameter '{param}': {message}")]
pub struct SearchError {
    pub param: String,
    pub message: String,
}

fn err(param: &str, message: impl Into<String>) -> SearchError {
    SearchError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// Comparison prefixes of number, date and quantity values (§3.1.1.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

/// Which system a token test requires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    None,
    /// `system|code` or `system|`.
    Is(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriMode {
    Eq,
    Below,
    Above,
}

/// What one condition tests on the index rows of its parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Test {
    /// `:missing=true|false`.
    Missing(bool),
    /// Folded prefix (the default string match).
    StringStarts(String),
    StringExact(String),
    /// Folded substring.
    StringContains(String),
    Token {
        system: SystemMatch,
        code: Option<String>,
    },
    /// `:text`: folded prefix of the display or text.
    TokenText(String),
    /// Any of these (system, code) pairs: what `:in` (a ValueSet's expansion), `:below` and
    /// `:above` (a code and the codes below or above it) become; negated for `:not-in`.
    TokenIn(Vec<(String, String)>),
    /// A local reference; `ttype` is `None` for a bare id.
    Reference {
        ttype: Option<String>,
        tid: String,
    },
    /// An absolute or canonical reference.
    ReferenceUrl(String),
    Date {
        prefix: Prefix,
        lo: i64,
        hi: i64,
    },
    /// `value` as written, `[lo, hi]` its implicit precision range.
    Number {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        lo: f64,
        hi: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri {
        value: String,
        mode: UriMode,
    },
    /// `param.x=…` on the referenced resources of type `target` (any of the OR list).
    Chain {
        target: String,
        filter: Vec<Cond>,
    },
    /// `_has:source:param:…`: resources referenced by `param` (of `source`) from a resource
    /// matching any of `filter`.
    Has {
        source: String,
        filter: Vec<Cond>,
    },
    /// Composite over the whole resource: every component holds, each on its own parameter.
    All(Vec<Cond>),
    /// Composite over repeating elements: every component holds within one tuple. Each
    /// condition's `param` is the component's [`crate::component_param`] key.
    Tuple(Vec<Cond>),
}

/// One condition on one parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Cond {
    /// The registry number of the parameter tested (for `Has`, the source's reference).
    pub param: u32,
    pub kind: ParamType,
    /// `:not`: resources that have no value matching.
    pub negate: bool,
    pub test: Test,
}

/// `_include` / `_revinclude` (§3.1.1.5.4).
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// The type holding the reference.
    pub source: String,
    /// The reference parameters followed (all of the source type's for `*`).
    pub params: Vec<u32>,
    pub target: Option<String>,
    pub iterate: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub param: u32,
    pub kind: ParamType,
    pub descending: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Total {
    None,
    Estimate,
    Accurate,
}

/// Where a page starts: opaque to clients, carried in `_cursor`. Both orders page by position,
/// never by offset, so that a link stays correct while resources are added or removed before
/// it (FHIR R4 §3.1.1.5.6 paging: the server decides how links work).
#[derive(Debug, Clone, PartialEq)]
pub enum Cursor {
    /// Default order: resources with a row number above this one.
    After(i64),
    /// Default order, backwards: the page ending just before this row number.
    Before(i64),
    /// A sorted result: the rows after this one in the sort order.
    SortedAfter(SortPosition),
    /// A sorted result, backwards: the page ending just before this row.
    SortedBefore(SortPosition),
}

/// A row of a sorted result: its value for each sort key (in `_sort` order) and its row
/// number, which breaks ties.
#[derive(Debug, Clone, PartialEq)]
pub struct SortPosition {
    pub values: Vec<SortValue>,
    pub seq: i64,
}

/// One sort key's value, as the store compares it; `Null` when the resource has none.
#[derive(Debug, Clone, PartialEq)]
pub enum SortValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Cursor {
    pub fn encode(&self) -> String {
        match self {
            Cursor::After(n) => format!("a{n}"),
            Cursor::Before(n) => format!("b{n}"),
            Cursor::SortedAfter(p) => format!("s{}", p.encode()),
            Cursor::SortedBefore(p) => format!("r{}", p.encode()),
        }
    }

    pub fn decode(s: &str) -> Option<Cursor> {
        let (k, n) = s.split_at_checked(1)?;
        match k {
            "a" => n.parse().ok().map(Cursor::After),
            "b" => n.parse().ok().map(Cursor::Before),
            "s" => SortPosition::decode(n).map(Cursor::SortedAfter),
            "r" => SortPosition::decode(n).map(Cursor::SortedBefore),
            _ => None,
        }
    }
}

impl SortPosition {
    /// Hex of a JSON array `[seq, value…]` with each value tagged by its kind, so that the
    /// cursor needs no escaping in a URL and decodes to the same SQL types.
    fn encode(&self) -> String {
        let mut parts = vec![serde_json::json!(self.seq)];
        for v in &self.values {
            parts.push(match v {
                SortValue::Null => serde_json::json!(null),
                SortValue::Int(i) => serde_json::json!({ "i": i }),
                SortValue::Real(r) => serde_json::json!({ "r": r }),
                SortValue::Text(t) => serde_json::json!({ "t": t }),
            });
        }
        let text = serde_json::Value::Array(parts).to_string();
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    fn decode(hex: &str) -> Option<SortPosition> {
        if !hex.len().is_multiple_of(2) || hex.len() > 8192 {
            return None;
        }
        let bytes: Option<Vec<u8>> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect();
        let v: serde_json::Value = serde_json::from_slice(&bytes?).ok()?;
        let parts = v.as_array()?;
        let (seq, rest) = parts.split_first()?;
        let values = rest
            .iter()
            .map(|p| match p {
                serde_json::Value::Null => Some(SortValue::Null),
                serde_json::Value::Object(o) => match o.iter().next()? {
                    (k, v) if k == "i" => v.as_i64().map(SortValue::Int),
                    (k, v) if k == "r" => v.as_f64().map(SortValue::Real),
                    (k, v) if k == "t" => v.as_str().map(|t| SortValue::Text(t.to_string())),
                    _ => None,
                },
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SortPosition {
            values,
            seq: seq.as_i64()?,
        })
    }
}

/// A parsed search.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchQuery {
    /// The type searched; `None` for a system search over `types` (every type when empty).
    pub rtype: Option<String>,
    pub types: Vec<String>,
    /// ANDed; each an OR list.
    pub filters: Vec<Vec<Cond>>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub sort: Vec<SortKey>,
    pub count: usize,
    pub total: Option<Total>,
    pub summary: Option<String>,
    pub elements: Option<Vec<String>>,
    pub cursor: Option<Cursor>,
    /// Parameters ignored, with the reason, for an OperationOutcome or a strict refusal.
    pub unknown: Vec<(String, String)>,
    /// `_explain=true`: return the backend's query plan with the page.
    pub explain: bool,
}

/// How to parse.
#[derive(Debug, Clone)]
pub struct ParseOptions {
    /// This server's base URL: absolute references to it are local.
    pub base: Option<String>,
    pub default_count: usize,
    pub max_count: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            base: None,
            default_count: 50,
            max_count: 1000,
        }
    }
}

/// Parameters that other layers handle (format, pretty printing) and search ignores silently.
const PASSTHROUGH: &[&str] = &["_format", "_pretty"];

/// Parses a search on `rtype` (or a system search when `None`).
pub fn parse(
    rtype: Option<&str>,
    params: &[(String, String)],
    opts: &ParseOptions,
) -> Result<SearchQuery, SearchError> {
    let mut q = SearchQuery {
        rtype: rtype.map(str::to_string),
        types: Vec::new(),
        filters: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        sort: Vec::new(),
        count: opts.default_count,
        total: None,
        summary: None,
        elements: None,
        cursor: None,
        unknown: Vec::new(),
        explain: false,
    };
    // _type first: system-search filters are checked against these types.
    for (k, v) in params {
        if k == "_type" {
            for t in split_or(v) {
                if !fhir_model::r4().is_resource_type(&t) {
                    return Err(err("_type", format!("'{t}' is not a resource type")));
                }
                q.types.push(t);
            }
        }
    }
    for (key, value) in params {
        let key = key.as_str();
        match key {
            "_type" if rtype.is_none() => {}
            k if PASSTHROUGH.contains(&k) => {}
            "_count" => {
                let n: usize = value
                    .parse()
                    .map_err(|_| err(key, "must be a non-negative integer"))?;
                q.count = n.min(opts.max_count);
            }
            "_explain" => q.explain = value == "true",
            "_cursor" => {
                q.cursor =
                    Some(Cursor::decode(value).ok_or_else(|| err(key, "is not a page cursor"))?)
            }
            "_total" => {
                q.total = Some(match value.as_str() {
                    "none" => Total::None,
                    "estimate" => Total::Estimate,
                    "accurate" => Total::Accurate,
                    _ => return Err(err(key, "must be none, estimate or accurate")),
                })
            }
            "_summary" => {
                if !matches!(value.as_str(), "true" | "false" | "count" | "data" | "text") {
                    return Err(err(key, "must be true, false, count, data or text"));
                }
                q.summary = Some(value.clone());
            }
            "_elements" => {
                q.elements = Some(
                    value
                        .split(',')
                        .map(|s| s.trim().to_string())
                        .filter(|s| !s.is_empty())
                        .collect(),
                )
            }
            "_sort" => {
                for part in value.split(',').filter(|p| !p.is_empty()) {
                    let (desc, code) = match part.strip_prefix('-') {
                        Some(c) => (true, c),
                        None => (false, part),
                    };
                    let t = sort_type(rtype, &q.types);
                    let p = registry()
                        .get(&t, code)
                        .filter(|p| p.kind != ParamType::Composite && p.compiled.is_some())
                        .ok_or_else(|| err(key, format!("cannot sort {t} by '{code}'")))?;
                    q.sort.push(SortKey {
                        param: p.id,
                        kind: p.kind,
                        descending: desc,
                    });
                }
            }
            k if k == "_include" || k.starts_with("_include:") => {
                let iterate = include_iterate(k)?;
                q.includes.push(parse_include(k, value, iterate, false)?);
            }
            k if k == "_revinclude" || k.starts_with("_revinclude:") => {
                let iterate = include_iterate(k)?;
                q.revincludes.push(parse_include(k, value, iterate, true)?);
            }
            _ if q.filters.len() >= MAX_AND => {
                return Err(err(
                    key,
                    format!("at most {MAX_AND} search parameters may be ANDed"),
                ))
            }
            _ => {
                let types: Vec<String> = match rtype {
                    Some(t) => vec![t.to_string()],
                    None if q.types.is_empty() => fhir_model::r4().resource_types().to_vec(),
                    None => q.types.clone(),
                };
                let mut ors = Vec::new();
                let mut unknown = None;
                for t in &types {
                    match parse_filter(t, key, value, opts, 0)? {
                        Some(mut c) => ors.append(&mut c),
                        None => unknown = Some(t),
                    }
                }
                if ors.len() > MAX_OR * 4 {
                    return Err(err(
                        key,
                        "too many values over too many types: narrow the search with _type",
                    ));
                }
                if let (Some(t), true) = (unknown, rtype.is_some() || ors.is_empty()) {
                    q.unknown.push((
                        key.to_string(),
                        format!("not a search parameter of {t} that this server supports"),
                    ));
                } else {
                    q.filters.push(ors);
                }
            }
        }
    }
    // A cursor is a position in one order: one from another search's links is refused.
    let fits = match &q.cursor {
        None => true,
        Some(Cursor::After(_) | Cursor::Before(_)) => q.sort.is_empty(),
        Some(Cursor::SortedAfter(p) | Cursor::SortedBefore(p)) => p.values.len() == q.sort.len(),
    };
    if !fits {
        return Err(err("_cursor", "is not a position in this search's order"));
    }
    Ok(q)
}

fn sort_type(rtype: Option<&str>, types: &[String]) -> String {
    rtype
        .map(str::to_string)
        .or_else(|| types.first().cloned())
        .unwrap_or_else(|| "Patient".into())
}

fn include_iterate(k: &str) -> Result<bool, SearchError> {
    match k.split_once(':').map(|(_, m)| m) {
        None => Ok(false),
        Some("iterate" | "recurse") => Ok(true),
        Some(m) => Err(err(k, format!("unknown modifier ':{m}'"))),
    }
}

/// `Source:param[:Target]`, or `Source:*` / `*`.
fn parse_include(key: &str, value: &str, iterate: bool, rev: bool) -> Result<Include, SearchError> {
    let reg = registry();
    let mut parts = value.split(':');
    let source = parts.next().unwrap_or_default();
    let code = parts.next();
    let target = parts.next().map(str::to_string);
    if value == "*" {
        return Err(err(key, "'*' needs a source type: Type:*"));
    }
    if !fhir_model::r4().is_resource_type(source) {
        return Err(err(key, format!("'{source}' is not a resource type")));
    }
    if let Some(t) = &target {
        if !fhir_model::r4().is_resource_type(t) {
            return Err(err(key, format!("'{t}' is not a resource type")));
        }
    }
    let params: Vec<u32> = match code {
        Some("*") => reg
            .for_type(source)
            .filter(|p| p.kind == ParamType::Reference && p.compiled.is_some())
            .map(|p| p.id)
            .collect(),
        Some(c) => {
            let p = reg
                .get(source, c)
                .filter(|p| p.kind == ParamType::Reference)
                .ok_or_else(|| {
                    err(
                        key,
                        format!("'{c}' is not a reference parameter of {source}"),
                    )
                })?;
            vec![p.id]
        }
        None => return Err(err(key, "must be Type:parameter[:target]")),
    };
    let _ = rev;
    Ok(Include {
        source: source.to_string(),
        params,
        target,
        iterate,
    })
}

/// Splits a value on unescaped commas and unescapes it (§3.1.1.3 escaping).
fn split_or(v: &str) -> Vec<String> {
    split_escaped(v, ',')
        .into_iter()
        .map(|s| unescape(&s))
        .collect()
}

/// Splits on `sep` where not preceded by a backslash; escapes are kept for a later split.
fn split_escaped(v: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            cur.push(c);
            if let Some(n) = chars.next() {
                cur.push(n);
            }
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

const MAX_DEPTH: usize = 4;

/// The most comma-separated values one parameter may OR, and the most parameters one search
/// may AND: beyond them a query is refused rather than compiled into a statement SQLite
/// cannot bind.
const MAX_OR: usize = 500;
const MAX_AND: usize = 100;

/// The OR list of conditions for `key=value` on `rtype`; `None` if `key` names no parameter
/// of `rtype`.
fn parse_filter(
    rtype: &str,
    key: &str,
    value: &str,
    opts: &ParseOptions,
    depth: usize,
) -> Result<Option<Vec<Cond>>, SearchError> {
    if depth > MAX_DEPTH {
        return Err(err(key, "chains nest too deeply"));
    }
    let reg = registry();
    if let Some(rest) = key.strip_prefix("_has:") {
        // _has:Source:param:rest
        let mut parts = rest.splitn(3, ':');
        let (Some(source), Some(pcode), Some(inner)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(err(key, "must be _has:Type:reference:parameter"));
        };
        if !fhir_model::r4().is_resource_type(source) {
            return Err(err(key, format!("'{source}' is not a resource type")));
        }
        let p = reg
            .get(source, pcode)
            .filter(|p| p.kind == ParamType::Reference)
            .ok_or_else(|| {
                err(
                    key,
                    format!("'{pcode}' is not a reference parameter of {source}"),
                )
            })?;
        if !p.targets.is_empty() && !p.targets.iter().any(|t| t == rtype) {
            return Ok(Some(Vec::new()));
        }
        let filter = parse_filter(source, inner, value, opts, depth + 1)?.ok_or_else(|| {
            err(
                key,
                format!("'{inner}' is not a search parameter of {source}"),
            )
        })?;
        return Ok(Some(vec![Cond {
            param: p.id,
            kind: ParamType::Reference,
            negate: false,
            test: Test::Has {
                source: source.to_string(),
                filter,
            },
        }]));
    }
    let (head, chain) = match key.split_once('.') {
        Some((h, c)) => (h, Some(c)),
        None => (key, None),
    };
    let (code, modifier) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let Some(p) = reg.get(rtype, code) else {
        return Ok(None);
    };
    if p.kind == ParamType::Special || p.compiled.is_none() {
        // `_text`, `_content`, `_query` & co.: known to R4, not searchable here; reported as
        // unsupported like an unknown parameter (ignored, or 400 under handling=strict).
        return Ok(None);
    }
    if let Some(chain) = chain {
        if p.kind != ParamType::Reference {
            return Err(err(key, "only reference parameters can be chained"));
        }
        let targets: Vec<String> = match modifier {
            Some(t) if fhir_model::r4().is_resource_type(t) => vec![t.to_string()],
            Some(m) => return Err(err(key, format!("unknown modifier ':{m}' for a chain"))),
            None => p.targets.clone(),
        };
        let mut ors = Vec::new();
        let mut known = false;
        for t in targets {
            if let Some(filter) = parse_filter(&t, chain, value, opts, depth + 1)? {
                known = true;
                ors.push(Cond {
                    param: p.id,
                    kind: ParamType::Reference,
                    negate: false,
                    test: Test::Chain { target: t, filter },
                });
            }
        }
        if !known {
            return Err(err(
                key,
                format!("'{chain}' is not a search parameter of the types {code} refers to"),
            ));
        }
        return Ok(Some(ors));
    }
    if modifier == Some("missing") && p.kind == ParamType::Composite {
        return Err(err(
            key,
            "':missing' does not apply to a composite parameter",
        ));
    }
    if modifier == Some("missing") {
        let missing = match value {
            "true" => true,
            "false" => false,
            _ => return Err(err(key, "must be true or false")),
        };
        return Ok(Some(vec![Cond {
            param: p.id,
            kind: p.kind,
            negate: false,
            test: Test::Missing(missing),
        }]));
    }
    let values = split_escaped(value, ',');
    if values.len() > MAX_OR {
        return Err(err(key, format!("at most {MAX_OR} values may be ORed")));
    }
    let mut out = Vec::new();
    for v in values {
        out.push(parse_value(p, key, modifier, &v, opts)?);
    }
    Ok(Some(out))
}

/// One value (still escaped for `|` and `$`) of parameter `p` with `modifier`.
fn parse_value(
    p: &SearchParam,
    key: &str,
    modifier: Option<&str>,
    raw: &str,
    opts: &ParseOptions,
) -> Result<Cond, SearchError> {
    let bad_modifier = |m: &str| err(key, format!("unknown or unsupported modifier ':{m}'"));
    let mut negate = false;
    let mut kind = p.kind;
    let test = match p.kind {
        ParamType::String => {
            let v = unescape(raw);
            match modifier {
                None => Test::StringStarts(fold(&v)),
                Some("exact") => Test::StringExact(v),
                Some("contains") => Test::StringContains(fold(&v)),
                Some(m) => return Err(bad_modifier(m)),
            }
        }
        ParamType::Token => match modifier {
            None => token(raw),
            Some("not") => {
                negate = true;
                token(raw)
            }
            Some("text") => Test::TokenText(fold(&unescape(raw))),
            // FHIR R4 §3.1.1.4.4: membership in a ValueSet, answered from the expansions this
            // binary embeds (fhir_model::terminology); an unknown one is an error, not "none".
            Some(m @ ("in" | "not-in")) => {
                let url = unescape(raw);
                let codes = fhir_model::terminology().expansion(&url).ok_or_else(|| {
                    err(
                        key,
                        format!("ValueSet '{url}' has no complete expansion known to this server"),
                    )
                })?;
                negate = m == "not-in";
                Test::TokenIn(codes.to_vec())
            }
            // Subsumption: the code and those below (above) it in its code system's hierarchy.
            Some(m @ ("below" | "above")) => {
                let parts = split_escaped(raw, '|');
                let [system, code] = parts.as_slice() else {
                    return Err(err(key, format!("':{m}' takes system|code")));
                };
                let (system, code) = (unescape(system), unescape(code));
                let t = fhir_model::terminology();
                let codes = if m == "below" {
                    t.descendants_or_self(&system, &code)
                } else {
                    t.ancestors_or_self(&system, &code)
                }
                .ok_or_else(|| {
                    err(
                        key,
                        format!(
                            "no hierarchy holding '{code}' is known to this server for '{system}'"
                        ),
                    )
                })?;
                Test::TokenIn(codes.into_iter().map(|c| (system.clone(), c)).collect())
            }
            Some("of-type") => {
                let parts = split_escaped(raw, '|');
                let [ts, tc, value] = parts.as_slice() else {
                    return Err(err(key, "':of-type' takes type-system|type-code|value"));
                };
                Test::Token {
                    system: SystemMatch::Is(crate::extract::of_type_system(
                        &unescape(ts),
                        &unescape(tc),
                    )),
                    code: Some(unescape(value)),
                }
            }
            Some(m) => return Err(bad_modifier(m)),
        },
        ParamType::Reference => match modifier {
            Some("identifier") => {
                kind = ParamType::Token;
                token(raw)
            }
            Some(t) if fhir_model::r4().is_resource_type(t) => {
                let v = unescape(raw);
                match reference(&v, opts) {
                    Test::Reference { tid, .. } => Test::Reference {
                        ttype: Some(t.to_string()),
                        tid,
                    },
                    other => other,
                }
            }
            Some(m) => return Err(bad_modifier(m)),
            None => reference(&unescape(raw), opts),
        },
        ParamType::Date => {
            if let Some(m) = modifier {
                return Err(bad_modifier(m));
            }
            let v = unescape(raw);
            let (prefix, rest) = prefix(key, &v)?;
            let (lo, hi) = date_range(rest).ok_or_else(|| {
                err(
                    key,
                    format!("'{rest}' is not a date (YYYY[-MM[-DD[Thh:mm[:ss]]]])"),
                )
            })?;
            Test::Date { prefix, lo, hi }
        }
        ParamType::Number => {
            if let Some(m) = modifier {
                return Err(bad_modifier(m));
            }
            let v = unescape(raw);
            let (prefix, rest) = prefix(key, &v)?;
            let (value, lo, hi) =
                number_range(rest).ok_or_else(|| err(key, format!("'{rest}' is not a number")))?;
            Test::Number {
                prefix,
                value,
                lo,
                hi,
            }
        }
        ParamType::Quantity => {
            if let Some(m) = modifier {
                return Err(bad_modifier(m));
            }
            quantity(key, raw)?
        }
        ParamType::Uri => {
            let value = unescape(raw);
            let mode = match modifier {
                None => UriMode::Eq,
                Some("below") => UriMode::Below,
                Some("above") => UriMode::Above,
                Some(m) => return Err(bad_modifier(m)),
            };
            Test::Uri { value, mode }
        }
        ParamType::Composite => {
            if let Some(m) = modifier {
                return Err(bad_modifier(m));
            }
            let parts = split_escaped(raw, '$');
            if parts.len() != p.components.len() {
                return Err(err(
                    key,
                    format!(
                        "a composite value has {} parts separated by '$'",
                        p.components.len()
                    ),
                ));
            }
            let mut all = Vec::new();
            for (i, (c, v)) in p.components.iter().zip(parts).enumerate() {
                let cp = registry()
                    .get(&p.rtype, c)
                    .ok_or_else(|| err(key, format!("component '{c}' is unknown")))?;
                let mut cond = parse_value(cp, key, None, &v, opts)?;
                if !p.whole_resource {
                    cond.param = crate::registry::component_param(p.id, i);
                }
                all.push(cond);
            }
            if p.whole_resource {
                Test::All(all)
            } else {
                Test::Tuple(all)
            }
        }
        ParamType::Special => return Err(err(key, "this parameter is not supported")),
    };
    Ok(Cond {
        param: p.id,
        kind,
        negate,
        test,
    })
}

fn token(raw: &str) -> Test {
    let parts = split_escaped(raw, '|');
    match parts.as_slice() {
        [code] => Test::Token {
            system: SystemMatch::Any,
            code: Some(unescape(code)),
        },
        [system, code, ..] => {
            let system = unescape(system);
            let code = unescape(code);
            Test::Token {
                system: if system.is_empty() {
                    SystemMatch::None
                } else {
                    SystemMatch::Is(system)
                },
                code: (!code.is_empty()).then_some(code),
            }
        }
        [] => Test::Token {
            system: SystemMatch::Any,
            code: None,
        },
    }
}

fn reference(v: &str, opts: &ParseOptions) -> Test {
    let local = match &opts.base {
        Some(base) => v
            .strip_prefix(base.trim_end_matches('/'))
            .and_then(|r| r.strip_prefix('/'))
            .unwrap_or(v),
        None => v,
    };
    if let Some((t, id)) = local_reference(local) {
        return Test::Reference {
            ttype: Some(t),
            tid: id,
        };
    }
    if !local.contains(['/', ':']) {
        return Test::Reference {
            ttype: None,
            tid: local.to_string(),
        };
    }
    Test::ReferenceUrl(local.split_once('|').map_or(local, |(a, _)| a).to_string())
}

fn prefix<'v>(key: &str, v: &'v str) -> Result<(Prefix, &'v str), SearchError> {
    let head = v.get(..2).unwrap_or_default();
    if head.bytes().all(|b| b.is_ascii_lowercase()) && head.len() == 2 {
        let p = match head {
            "eq" => Prefix::Eq,
            "ne" => Prefix::Ne,
            "gt" => Prefix::Gt,
            "lt" => Prefix::Lt,
            "ge" => Prefix::Ge,
            "le" => Prefix::Le,
            "sa" => Prefix::Sa,
            "eb" => Prefix::Eb,
            "ap" => Prefix::Ap,
            other => return Err(err(key, format!("unknown prefix '{other}'"))),
        };
        Ok((p, &v[2..]))
    } else {
        Ok((Prefix::Eq, v))
    }
}

fn quantity(key: &str, raw: &str) -> Result<Test, SearchError> {
    let parts = split_escaped(raw, '|');
    let first = unescape(parts.first().map(String::as_str).unwrap_or_default());
    let (prefix, num) = prefix(key, &first)?;
    let (value, lo, hi) =
        number_range(num).ok_or_else(|| err(key, format!("'{num}' is not a number")))?;
    let nonempty = |s: Option<&String>| s.map(|s| unescape(s)).filter(|s| !s.is_empty());
    Ok(Test::Quantity {
        prefix,
        value,
        lo,
        hi,
        system: nonempty(parts.get(1)),
        code: nonempty(parts.get(2)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(rtype: &str, pairs: &[(&str, &str)]) -> Result<SearchQuery, SearchError> {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(Some(rtype), &params, &ParseOptions::default())
    }

    #[test]
    fn or_and_escapes() {
        let s = q("Patient", &[("name", "a\\,b,c"), ("name", "d")]).unwrap();
        assert_eq!(s.filters.len(), 2);
        assert_eq!(s.filters[0].len(), 2);
        assert_eq!(s.filters[0][0].test, Test::StringStarts("a,b".into()));
    }

    #[test]
    fn malformed_values_name_the_parameter() {
        let e = q("Observation", &[("date", "2013-13")]).unwrap_err();
        assert_eq!(e.param, "date");
        let e = q("Observation", &[("date", "xx2013")]).unwrap_err();
        assert!(e.message.contains("prefix"));
        let e = q("Patient", &[("name:foo", "x")]).unwrap_err();
        assert!(e.message.contains("modifier"));
    }

    #[test]
    fn unknown_parameters_are_listed() {
        let s = q("Patient", &[("nonsense", "1")]).unwrap();
        assert_eq!(s.unknown.len(), 1);
        assert!(s.filters.is_empty());
    }

    #[test]
    fn chains_and_has() {
        let s = q("Observation", &[("subject:Patient.name", "x")]).unwrap();
        assert!(matches!(s.filters[0][0].test, Test::Chain { .. }));
        let s = q(
            "Patient",
            &[(
                "_has:Observation:patient:_has:Provenance:target:agent",
                "Practitioner/1",
            )],
        )
        .unwrap();
        let Test::Has { filter, .. } = &s.filters[0][0].test else {
            panic!()
        };
        assert!(matches!(filter[0].test, Test::Has { .. }));
    }

    #[test]
    fn composite_and_quantity() {
        let s = q(
            "Observation",
            &[(
                "code-value-quantity",
                "http://loinc.org|8302-2$gt100|http://unitsofmeasure.org|cm",
            )],
        )
        .unwrap();
        let Test::All(parts) = &s.filters[0][0].test else {
            panic!()
        };
        assert_eq!(parts.len(), 2);
    }
}
