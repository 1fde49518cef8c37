//! Index extraction: the values a resource holds for each of its type's search parameters, in
//! the normal forms that queries compare (FHIR R4 §3.1.1.4, one section per parameter type).
//!
//! Each parameter's precompiled FHIRPath expression is evaluated over the resource JSON, and
//! every result node becomes zero or more [`IndexValue`]s according to the parameter type and
//! the node's FHIR type (a token may come from a code, Coding, CodeableConcept, Identifier,
//! ContactPoint or boolean). A composite over the resource itself (`code-value-quantity`) is not
//! indexed: queries combine its components' own rows, since the resource is its one tuple. Any
//! other composite is indexed tuple by tuple: each node its expression selects is a tuple, each
//! component's values are rows under [`component_param`] with the tuple's number as their
//! `group`, so that a query can demand that every component match in the same tuple (FHIR R4
//! §3.1.1.4.8). A reference's `identifier` is indexed as a token of the same parameter, which is
//! what `:identifier` searches.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::normalize::{date_range, fold};
use crate::registry::{component_param, registry, ParamType, SearchParam};

/// One indexed value of one parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexValue {
    /// `norm` is [`fold`]ed for prefix and `:contains` matches; `exact` for `:exact`.
    String {
        norm: String,
        exact: String,
    },
    /// `text` is the folded display/text, for `:text`.
    Token {
        system: Option<String>,
        code: Option<String>,
        text: Option<String>,
    },
    /// A local reference (`Type/id`) or, for anything else, its `url`.
    Reference {
        ttype: Option<String>,
        tid: Option<String>,
        url: Option<String>,
    },
    /// Microseconds since the epoch, both ends inclusive.
    Date {
        lo: i64,
        hi: i64,
    },
    Number {
        lo: f64,
        hi: f64,
    },
    Quantity {
        system: Option<String>,
        code: Option<String>,
        lo: f64,
        hi: f64,
    },
    Uri(String),
}

/// One index row: a parameter's stable number and a value.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    /// A registry number, or a [`component_param`] key for a composite's tuple rows.
    pub param: u32,
    pub value: IndexValue,
    /// The tuple (1, 2, …) a composite component's value belongs to; 0 for any other row.
    pub group: u32,
}

/// Every index entry of a resource, for every search parameter of its type.
pub fn extract(resource: &Value) -> Vec<IndexEntry> {
    extract_with_bases(resource, &[])
}

/// [`extract`], knowing the base URLs this server answers on: an absolute reference under one
/// of them is indexed as the relative reference it spells out, since `[base]/Patient/1` on
/// this server and `Patient/1` are the same resource (FHIR R4 references.html §2.3.0.1, and
/// search.html §3.1.1.4.5: a reference search by either form finds both).
pub fn extract_with_bases(resource: &Value, own_bases: &[String]) -> Vec<IndexEntry> {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in registry().for_type(rtype) {
        let before = out.len();
        if p.kind == ParamType::Composite {
            if !p.whole_resource {
                extract_tuples(p, resource, own_bases, &mut out);
            }
        } else {
            extract_param(p, resource, own_bases, &mut out);
        }
        dedup_tail(&mut out, before);
    }
    out
}

/// Replaces the `_lastUpdated` entries of `entries`, extracted from `resource` before the store
/// stamped `meta.lastUpdated` into it, by those of the stamped value. Every other parameter
/// reads nothing that stamping changes (`id` is set before extraction, and no R4 parameter
/// reads `meta.versionId`), so a store can extract a resource's index before its write
/// transaction begins and fix only this one parameter inside it.
pub fn restamp_last_updated(resource: &Value, entries: &mut Vec<IndexEntry>) {
    let Some(rtype) = resource.get("resourceType").and_then(Value::as_str) else {
        return;
    };
    let Some(p) = registry().get(rtype, "_lastUpdated") else {
        return;
    };
    entries.retain(|e| e.param != p.id);
    let before = entries.len();
    extract_param(p, resource, &[], entries);
    dedup_tail(entries, before);
}

fn extract_param(
    p: &SearchParam,
    resource: &Value,
    own_bases: &[String],
    out: &mut Vec<IndexEntry>,
) {
    let Some(expr) = &p.compiled else {
        return;
    };
    let Ok(items) = fhir_path::evaluate(expr, resource) else {
        return;
    };
    let mut emit = |value| {
        out.push(IndexEntry {
            param: p.id,
            value,
            group: 0,
        })
    };
    for item in &items {
        item_values(p.kind, item, own_bases, &mut emit);
    }
}

fn item_values(
    kind: ParamType,
    item: &fhir_path::Item<'_>,
    own_bases: &[String],
    emit: &mut dyn FnMut(IndexValue),
) {
    match item {
        fhir_path::Item::Node(n) => {
            values_of(kind, n.json(), n.type_name().as_deref(), own_bases, emit)
        }
        fhir_path::Item::Value(v) => values_of(kind, &v.to_json(), None, own_bases, emit),
    }
}

/// The tuple rows of a composite that is not over the whole resource. A tuple in which some
/// component has no value can match no search, so it is not written.
fn extract_tuples(
    p: &SearchParam,
    resource: &Value,
    own_bases: &[String],
    out: &mut Vec<IndexEntry>,
) {
    let reg = registry();
    let Some(expr) = &p.compiled else {
        return;
    };
    let Ok(tuples) = fhir_path::evaluate(expr, resource) else {
        return;
    };
    // Each component's type is the type of the parameter it is defined by.
    let kinds: Option<Vec<ParamType>> = p
        .components
        .iter()
        .map(|c| reg.get(&p.rtype, c).map(|cp| cp.kind))
        .collect();
    let Some(kinds) = kinds else {
        return;
    };
    let mut group = 0_u32;
    for tuple in &tuples {
        let mut rows = Vec::new();
        let mut complete = true;
        for (i, (component, kind)) in p.component_exprs.iter().zip(&kinds).enumerate() {
            let Some(component) = component else {
                return;
            };
            let before = rows.len();
            if let Ok(items) = fhir_path::evaluate_on(component, tuple, resource) {
                let param = component_param(p.id, i);
                for item in &items {
                    item_values(*kind, item, own_bases, &mut |value| {
                        rows.push(IndexEntry {
                            param,
                            value,
                            group: 0,
                        })
                    });
                }
            }
            complete &= rows.len() > before;
        }
        if complete {
            group += 1;
            out.extend(rows.into_iter().map(|r| IndexEntry { group, ..r }));
        }
    }
}

/// Below this many values of one parameter, duplicates are found by comparing each with
/// those before it: cheaper than hashing for the one to three values most parameters have.
const DEDUP_BY_SCAN: usize = 16;

/// Removes duplicates among `out[from..]` (a code repeated in two codings, say), keeping the
/// first of each in order. Linear in the number of values: a Patient with 50,000 `telecom`
/// entries has 100,000 values of `telecom`, `phone` and `email`, and the pairwise scan this
/// replaces took 20 s on them (issue #15, defect 2).
fn dedup_tail(out: &mut Vec<IndexEntry>, from: usize) {
    let n = out.len().saturating_sub(from);
    if n < 2 {
        return;
    }
    if n <= DEDUP_BY_SCAN {
        let mut i = from;
        while i < out.len() {
            if out[from..i].contains(&out[i]) {
                out.remove(i);
            } else {
                i += 1;
            }
        }
        return;
    }
    let tail = out.split_off(from);
    // Hash → positions in `out` of the kept entries with that hash; equality decides, so a
    // collision only costs a comparison.
    let mut seen: HashMap<u64, Vec<usize>> = HashMap::with_capacity(tail.len());
    for e in tail {
        let slot = seen.entry(entry_hash(&e)).or_default();
        if slot.iter().any(|&j| out[j] == e) {
            continue;
        }
        slot.push(out.len());
        out.push(e);
    }
}

/// A hash consistent with `IndexEntry`'s `PartialEq`: equal entries hash alike. Floats are
/// hashed by their bits after adding 0.0, which turns -0.0 (equal to 0.0) into 0.0; a NaN
/// equals nothing, so whatever it hashes to is kept.
fn entry_hash(e: &IndexEntry) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.param.hash(&mut h);
    e.group.hash(&mut h);
    let float =
        |f: f64, h: &mut std::collections::hash_map::DefaultHasher| (f + 0.0).to_bits().hash(h);
    match &e.value {
        IndexValue::String { norm, exact } => (0u8, norm, exact).hash(&mut h),
        IndexValue::Token { system, code, text } => (1u8, system, code, text).hash(&mut h),
        IndexValue::Reference { ttype, tid, url } => (2u8, ttype, tid, url).hash(&mut h),
        IndexValue::Date { lo, hi } => (3u8, lo, hi).hash(&mut h),
        IndexValue::Number { lo, hi } => {
            4u8.hash(&mut h);
            float(*lo, &mut h);
            float(*hi, &mut h);
        }
        IndexValue::Quantity {
            system,
            code,
            lo,
            hi,
        } => {
            (5u8, system, code).hash(&mut h);
            float(*lo, &mut h);
            float(*hi, &mut h);
        }
        IndexValue::Uri(u) => (6u8, u).hash(&mut h),
    }
    h.finish()
}

fn s(o: &Map<String, Value>, key: &str) -> Option<String> {
    o.get(key).and_then(Value::as_str).map(str::to_string)
}

fn values_of(
    kind: ParamType,
    v: &Value,
    tname: Option<&str>,
    own_bases: &[String],
    emit: &mut dyn FnMut(IndexValue),
) {
    match kind {
        ParamType::String => strings(v, emit),
        ParamType::Token => tokens(v, tname, emit),
        ParamType::Reference => references(v, own_bases, emit),
        ParamType::Date => dates(v, emit),
        ParamType::Number => {
            if let Some(n) = number(v) {
                emit(IndexValue::Number { lo: n, hi: n });
            }
        }
        ParamType::Quantity => quantities(v, emit),
        ParamType::Uri => {
            if let Some(u) = v.as_str() {
                emit(IndexValue::Uri(strip_version(u).to_string()));
            }
        }
        ParamType::Composite | ParamType::Special => {}
    }
}

fn strings(v: &Value, emit: &mut dyn FnMut(IndexValue)) {
    let mut one = |t: &str| {
        if !t.is_empty() {
            emit(IndexValue::String {
                norm: fold(t),
                exact: t.to_string(),
            })
        }
    };
    match v {
        Value::String(t) => one(t),
        Value::Object(o) => {
            // HumanName and Address: every part is searchable (§3.1.1.4.6).
            for key in [
                "text",
                "family",
                "given",
                "prefix",
                "suffix",
                "line",
                "city",
                "district",
                "state",
                "postalCode",
                "country",
            ] {
                match o.get(key) {
                    Some(Value::String(t)) => one(t),
                    Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).for_each(&mut one),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

fn tokens(v: &Value, tname: Option<&str>, emit: &mut dyn FnMut(IndexValue)) {
    match v {
        Value::String(t) => emit(IndexValue::Token {
            system: None,
            code: Some(t.clone()),
            text: None,
        }),
        Value::Bool(b) => emit(IndexValue::Token {
            system: None,
            code: Some(b.to_string()),
            text: None,
        }),
        Value::Object(o) => {
            let text = s(o, "text").map(|t| fold(&t));
            if let Some(codings) = o.get("coding").and_then(Value::as_array) {
                // CodeableConcept.
                for c in codings.iter().filter_map(Value::as_object) {
                    let display = s(c, "display").map(|t| fold(&t));
                    emit(IndexValue::Token {
                        system: s(c, "system"),
                        code: s(c, "code"),
                        text: text.clone().or(display),
                    });
                }
                if codings.is_empty() && text.is_some() {
                    emit(IndexValue::Token {
                        system: None,
                        code: None,
                        text,
                    });
                }
            } else if tname == Some("Identifier") || tname == Some("ContactPoint") {
                let ttext = o
                    .get("type")
                    .and_then(|t| t.get("text"))
                    .and_then(Value::as_str)
                    .map(fold);
                emit(IndexValue::Token {
                    system: s(o, "system"),
                    code: s(o, "value"),
                    text: ttext,
                });
                // `:of-type` (§3.1.1.4.4): the identifier's type coding with its value, kept
                // under a system no real one can equal.
                if let (Some(value), Some(codings)) = (
                    s(o, "value"),
                    o.get("type")
                        .and_then(|t| t.get("coding"))
                        .and_then(Value::as_array),
                ) {
                    for c in codings.iter().filter_map(Value::as_object) {
                        if let (Some(ts), Some(tc)) = (s(c, "system"), s(c, "code")) {
                            emit(IndexValue::Token {
                                system: Some(of_type_system(&ts, &tc)),
                                code: Some(value.clone()),
                                text: None,
                            });
                        }
                    }
                }
            } else if o.contains_key("code") {
                emit(IndexValue::Token {
                    system: s(o, "system"),
                    code: s(o, "code"),
                    text: s(o, "display").map(|t| fold(&t)),
                });
            } else if o.contains_key("value") {
                emit(IndexValue::Token {
                    system: s(o, "system"),
                    code: s(o, "value"),
                    text: None,
                });
            } else if text.is_some() {
                emit(IndexValue::Token {
                    system: None,
                    code: None,
                    text,
                });
            }
        }
        _ => {}
    }
}

/// The system under which `:of-type` rows are indexed: a control character first, so that it
/// never equals a real system.
pub fn of_type_system(type_system: &str, type_code: &str) -> String {
    format!("\u{1}{type_system}|{type_code}")
}

/// Splits a reference into (type, id) when it is relative (`Patient/1`, with or without
/// `/_history/n`); `None` for absolute, `urn:`, contained or malformed references.
pub fn local_reference(r: &str) -> Option<(String, String)> {
    if r.contains(':') || r.starts_with('#') {
        return None;
    }
    let mut parts = r.split('/');
    let t = parts.next()?;
    let id = parts.next()?;
    match (parts.next(), parts.next(), parts.next()) {
        (None, _, _) | (Some("_history"), Some(_), None) => {}
        _ => return None,
    }
    if t.is_empty()
        || !t.starts_with(|c: char| c.is_ascii_uppercase())
        || !t.bytes().all(|b| b.is_ascii_alphanumeric())
        || id.is_empty()
    {
        return None;
    }
    Some((t.to_string(), id.to_string()))
}

/// `[base]/Type/id` under one of our own bases, as (type, id).
fn own_reference(r: &str, own_bases: &[String]) -> Option<(String, String)> {
    own_bases.iter().find_map(|base| {
        let rest = r
            .strip_prefix(base.trim_end_matches('/'))?
            .strip_prefix('/')?;
        local_reference(rest)
    })
}

fn references(v: &Value, own_bases: &[String], emit: &mut dyn FnMut(IndexValue)) {
    match v {
        Value::String(u) => emit(IndexValue::Reference {
            ttype: None,
            tid: None,
            url: Some(strip_version(u).to_string()),
        }),
        Value::Object(o) => {
            if let Some(r) = o.get("reference").and_then(Value::as_str) {
                if r.starts_with('#') {
                    // A contained resource is not a search target of its own.
                } else if let Some((t, id)) =
                    local_reference(r).or_else(|| own_reference(r, own_bases))
                {
                    emit(IndexValue::Reference {
                        ttype: Some(t),
                        tid: Some(id),
                        url: None,
                    });
                } else {
                    emit(IndexValue::Reference {
                        ttype: None,
                        tid: None,
                        url: Some(r.to_string()),
                    });
                }
            }
            if let Some(ident) = o.get("identifier").and_then(Value::as_object) {
                emit(IndexValue::Token {
                    system: s(ident, "system"),
                    code: s(ident, "value"),
                    text: None,
                });
            }
        }
        _ => {}
    }
}

fn dates(v: &Value, emit: &mut dyn FnMut(IndexValue)) {
    match v {
        Value::String(t) => {
            if let Some((lo, hi)) = date_range(t) {
                emit(IndexValue::Date { lo, hi });
            }
        }
        Value::Object(o) => {
            if o.contains_key("start") || o.contains_key("end") {
                // Period: an open end is unbounded (§3.1.1.4.3).
                let lo = o
                    .get("start")
                    .and_then(Value::as_str)
                    .and_then(date_range)
                    .map_or(i64::MIN, |r| r.0);
                let hi = o
                    .get("end")
                    .and_then(Value::as_str)
                    .and_then(date_range)
                    .map_or(i64::MAX, |r| r.1);
                emit(IndexValue::Date { lo, hi });
            } else if o.contains_key("event") || o.contains_key("repeat") {
                // Timing: from the first event to the last, or the repeat bounds.
                let mut lo = i64::MAX;
                let mut hi = i64::MIN;
                for e in o
                    .get("event")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(date_range)
                {
                    lo = lo.min(e.0);
                    hi = hi.max(e.1);
                }
                if let Some(b) = o.get("repeat").and_then(|r| r.get("boundsPeriod")) {
                    dates(b, emit);
                }
                if lo <= hi {
                    emit(IndexValue::Date { lo, hi });
                }
            }
        }
        _ => {}
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(t) => t.parse().ok(),
        _ => None,
    }
}

fn quantities(v: &Value, emit: &mut dyn FnMut(IndexValue)) {
    match v {
        Value::Number(_) => {
            if let Some(n) = number(v) {
                emit(IndexValue::Quantity {
                    system: None,
                    code: None,
                    lo: n,
                    hi: n,
                });
            }
        }
        Value::Object(o) => {
            if let Some(n) = o.get("value").and_then(number) {
                let code = s(o, "code");
                let unit = s(o, "unit");
                emit(IndexValue::Quantity {
                    system: s(o, "system"),
                    code: code.clone().or(unit.clone()),
                    lo: n,
                    hi: n,
                });
                // `value||unit` matches the human unit too (§3.1.1.4.4).
                if unit.is_some() && code.is_some() && unit != code {
                    emit(IndexValue::Quantity {
                        system: None,
                        code: unit,
                        lo: n,
                        hi: n,
                    });
                }
            } else if o.contains_key("low") || o.contains_key("high") {
                // Range.
                let low = o.get("low").and_then(|l| l.get("value")).and_then(number);
                let high = o.get("high").and_then(|l| l.get("value")).and_then(number);
                let q = o.get("low").or(o.get("high")).and_then(Value::as_object);
                emit(IndexValue::Quantity {
                    system: q.and_then(|q| s(q, "system")),
                    code: q.and_then(|q| s(q, "code").or(s(q, "unit"))),
                    lo: low.unwrap_or(f64::MIN),
                    hi: high.unwrap_or(f64::MAX),
                });
            }
        }
        _ => {}
    }
}

/// `http://x/ValueSet/a|1.0` searches as `http://x/ValueSet/a` (§3.1.1.4.7 canonical).
fn strip_version(u: &str) -> &str {
    u.split_once('|').map_or(u, |(a, _)| a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(resource: Value, code: &str) -> Vec<IndexValue> {
        let rtype = resource["resourceType"].as_str().unwrap().to_string();
        let id = registry().get(&rtype, code).unwrap().id;
        extract(&resource)
            .into_iter()
            .filter(|e| e.param == id)
            .map(|e| e.value)
            .collect()
    }

    #[test]
    fn observation_values() {
        let obs = json!({
            "resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2", "display": "Body Height"}], "text": "Body Height"},
            "subject": {"reference": "Patient/p1"},
            "effectiveDateTime": "2013-01-14T10:00:00Z",
            "valueQuantity": {"value": 180.5, "unit": "cm", "system": "http://unitsofmeasure.org", "code": "cm"}
        });
        assert_eq!(
            values(obs.clone(), "code"),
            vec![IndexValue::Token {
                system: Some("http://loinc.org".into()),
                code: Some("8302-2".into()),
                text: Some("body height".into())
            }]
        );
        assert_eq!(
            values(obs.clone(), "subject"),
            vec![IndexValue::Reference {
                ttype: Some("Patient".into()),
                tid: Some("p1".into()),
                url: None
            }]
        );
        assert_eq!(values(obs.clone(), "patient").len(), 1);
        assert_eq!(values(obs.clone(), "date").len(), 1);
        assert_eq!(values(obs.clone(), "value-quantity").len(), 1);
        assert_eq!(values(obs, "_id").len(), 1);
    }

    #[test]
    fn patient_name_is_folded() {
        let p = json!({"resourceType": "Patient", "name": [{"family": "Muñoz", "given": ["Ana"]}], "gender": "female", "birthDate": "1970-03"});
        let names = values(p.clone(), "name");
        assert!(names.contains(&IndexValue::String {
            norm: "munoz".into(),
            exact: "Muñoz".into()
        }));
        assert_eq!(values(p.clone(), "gender").len(), 1);
        assert_eq!(values(p, "birthdate").len(), 1);
    }

    #[test]
    fn own_absolute_references_are_relative() {
        let obs = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"},
            "subject": {"reference": "https://fhir.example.org/r4/Patient/p1"},
            "performer": [{"reference": "https://elsewhere.example.org/Practitioner/d1"}]});
        let bases = vec!["https://fhir.example.org/r4/".to_string()];
        let id = |code: &str| registry().get("Observation", code).unwrap().id;
        let of = |entries: &[IndexEntry], code: &str| -> Vec<IndexValue> {
            entries
                .iter()
                .filter(|e| e.param == id(code))
                .map(|e| e.value.clone())
                .collect()
        };
        let entries = extract_with_bases(&obs, &bases);
        assert_eq!(
            of(&entries, "subject"),
            vec![IndexValue::Reference {
                ttype: Some("Patient".into()),
                tid: Some("p1".into()),
                url: None
            }]
        );
        assert_eq!(
            of(&entries, "performer"),
            vec![IndexValue::Reference {
                ttype: None,
                tid: None,
                url: Some("https://elsewhere.example.org/Practitioner/d1".into())
            }],
            "another server's URL stays a URL"
        );
        // Without knowing the base, it is a URL.
        assert!(matches!(
            of(&extract(&obs), "subject")[0],
            IndexValue::Reference { url: Some(_), .. }
        ));
    }

    // Regression (issue #15, defect 2): extraction was quadratic in the values of one
    // parameter; this Patient took 20 s to extract before (about 0.3 s in a release build now).
    #[test]
    fn regression_15_2_fifty_thousand_telecoms_extract_in_linear_time() {
        let telecom: Vec<Value> = (0..50_000)
            .map(|i| json!({"system": "phone", "value": format!("555-{}", i % 40_000)}))
            .collect();
        let p = json!({"resourceType": "Patient", "id": "big", "telecom": telecom});
        let phones = values(p.clone(), "phone");
        // 10,000 numbers appear twice: each is indexed once, in first-seen order.
        assert_eq!(phones.len(), 40_000);
        assert_eq!(
            phones[39_999],
            IndexValue::Token {
                system: Some("phone".into()),
                code: Some("555-39999".into()),
                text: None
            }
        );
        assert_eq!(values(p, "telecom").len(), 40_000);
    }

    #[test]
    fn dedup_keeps_first_of_each_in_order_above_and_below_the_scan_limit() {
        for n in [3, DEDUP_BY_SCAN, DEDUP_BY_SCAN + 1, 200] {
            let mut out = vec![IndexEntry {
                param: 9,
                value: IndexValue::Uri("before".into()),
                group: 0,
            }];
            for i in 0..n {
                out.push(IndexEntry {
                    param: 1,
                    value: IndexValue::Number {
                        lo: (i % 3) as f64,
                        hi: if i % 2 == 0 { 0.0 } else { -0.0 },
                    },
                    group: 0,
                });
            }
            dedup_tail(&mut out, 1);
            let kept: Vec<f64> = out[1..]
                .iter()
                .map(|e| match e.value {
                    IndexValue::Number { lo, .. } => lo,
                    _ => f64::NAN,
                })
                .collect();
            // -0.0 equals 0.0, so the sign of `hi` makes no second copy.
            assert_eq!(kept, [0.0, 1.0, 2.0], "n = {n}");
            assert_eq!(out[0].value, IndexValue::Uri("before".into()));
        }
    }

    #[test]
    fn local_references() {
        assert_eq!(
            local_reference("Patient/1/_history/2"),
            Some(("Patient".into(), "1".into()))
        );
        assert_eq!(local_reference("urn:uuid:1"), None);
        assert_eq!(local_reference("http://x/Patient/1"), None);
    }
}
