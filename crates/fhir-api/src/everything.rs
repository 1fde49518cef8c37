//! `Patient/[id]/$everything` (FHIR R4 patient-operation-everything): the patient, every
//! resource in its compartment (R4's Patient CompartmentDefinition), and the resources those
//! reference (Practitioner, Organization, Location, Medication, …), as one `searchset`
//! Bundle paged with `_count` through the usual links.
//!
//! Parameters: `start` and `end` (care dates: the `date` search parameter of the types that
//! have one; the types without one are not narrowed), `_since` (`meta.lastUpdated`), `_type`
//! (the types returned, the patient's own included only when `Patient` is among them) and
//! `_count`; by GET, or by POST with them in a Parameters body. Any other parameter is a 400.
//!
//! The set is computed whole on every page (compartment searches by the store's index, one
//! per type, then the references read one by one) and ordered patient first, then the
//! compartment by type and id, then the referenced resources by type and id, so that the
//! pages of one request line up. Each type is authorized as a read of it alone: a `patient/`
//! scope gets its own compartment, and referenced resources outside it only where another
//! scope grants that type in full.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhir_model::IssueCode;
use fhir_search::{ParseOptions, Total};
use fhir_store::StoredResource;
use serde_json::{json, Map, Value};

use crate::access::{Op, Reach};
use crate::error::FhirError;
use crate::request::{read_body, Ctx};
use crate::search::{compartment_filter, splice_bundle, Entry};

/// The canonical OperationDefinition (FHIR R4).
pub(crate) const DEFINITION: &str = "http://hl7.org/fhir/OperationDefinition/Patient-everything";

/// Matches read per store page.
const PAGE: usize = 1000;

/// The parameters, as one request gave them.
#[derive(Default)]
struct Params {
    start: Option<String>,
    end: Option<String>,
    since: Option<String>,
    types: Option<BTreeSet<String>>,
    count: Option<usize>,
    offset: usize,
}

impl Params {
    fn parse(pairs: &[(String, String)], max_count: usize) -> Result<Params, FhirError> {
        let mut p = Params::default();
        for (k, v) in pairs {
            let bad = |m: String| FhirError::bad_request(m).at(k.clone());
            match k.as_str() {
                "_format" | "_pretty" => {}
                "start" => p.start = Some(checked_date(k, v)?),
                "end" => p.end = Some(checked_date(k, v)?),
                "_since" => p.since = Some(checked_instant(k, v)?),
                "_type" => {
                    let set = p.types.get_or_insert_with(BTreeSet::new);
                    for t in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                        if !fhir_model::r4().is_resource_type(t) {
                            return Err(bad(format!("_type: '{t}' is not a resource type")));
                        }
                        set.insert(t.to_owned());
                    }
                }
                "_count" => {
                    let n: usize = v
                        .parse()
                        .map_err(|_| bad(format!("_count must be a number, not '{v}'")))?;
                    p.count = Some(n.min(max_count));
                }
                "_offset" => {
                    p.offset = v
                        .parse()
                        .map_err(|_| bad(format!("_offset must be a number, not '{v}'")))?;
                }
                other => {
                    return Err(FhirError::new(
                        StatusCode::BAD_REQUEST,
                        IssueCode::NotSupported,
                        format!(
                            "$everything takes start, end, _since, _type and _count, not '{other}'"
                        ),
                    )
                    .at(other.to_owned()))
                }
            }
        }
        Ok(p)
    }

    /// The search parameters that narrow the compartment search of `rtype`.
    fn search_params(&self, rtype: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(since) = &self.since {
            out.push(("_lastUpdated".to_owned(), format!("ge{since}")));
        }
        let dated = fhir_search::registry().get(rtype, "date").is_some();
        if dated {
            if let Some(start) = &self.start {
                out.push(("date".to_owned(), format!("ge{start}")));
            }
            if let Some(end) = &self.end {
                out.push(("date".to_owned(), format!("le{end}")));
            }
        }
        out
    }

    fn wants(&self, rtype: &str) -> bool {
        self.types.as_ref().is_none_or(|t| t.contains(rtype))
    }
}

/// A FHIR date (`2020`, `2020-03`, `2020-03-04`) or dateTime.
fn checked_date(param: &str, v: &str) -> Result<String, FhirError> {
    let ok = v.len() >= 4
        && v[..4].bytes().all(|b| b.is_ascii_digit())
        && v.bytes()
            .all(|b| b.is_ascii_digit() || b"-:T+.Z".contains(&b));
    if ok {
        Ok(v.to_owned())
    } else {
        Err(
            FhirError::bad_request(format!("{param} must be a date like 2020-03-04, not '{v}'"))
                .at(param),
        )
    }
}

fn checked_instant(param: &str, v: &str) -> Result<String, FhirError> {
    match chrono::DateTime::parse_from_rfc3339(v) {
        Ok(_) => Ok(v.to_owned()),
        Err(_) => Err(FhirError::bad_request(format!(
            "{param} must be an instant like 2020-03-04T05:06:07Z, not '{v}'"
        ))
        .at(param)),
    }
}

/// The parameters of a POST: a Parameters resource, its values as their text.
fn from_parameters(v: &Value) -> Result<Vec<(String, String)>, FhirError> {
    if v["resourceType"] != "Parameters" {
        return Err(FhirError::bad_request(
            "the body of $everything must be a Parameters resource",
        ));
    }
    let mut out = Vec::new();
    for p in v["parameter"].as_array().into_iter().flatten() {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let value = p.as_object().and_then(|o| {
            o.iter()
                .find(|(k, _)| k.starts_with("value"))
                .map(|(_, v)| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
        });
        match value {
            Some(value) => out.push((name, value)),
            None => {
                return Err(
                    FhirError::bad_request(format!("parameter '{name}' has no value[x]"))
                        .at(format!("Parameters.parameter.where(name='{name}')")),
                )
            }
        }
    }
    Ok(out)
}

pub(crate) async fn everything(
    ctx: &Ctx,
    id: &str,
    post: bool,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    let max = ctx.state.inner.config.max_page_size;
    let mut pairs = ctx.params.clone();
    if post {
        let bytes = read_body(body, limit).await?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            pairs.extend(from_parameters(&ctx.parse_json(&bytes)?)?);
        }
    }
    let params = Params::parse(&pairs, max)?;
    let store = &ctx.state.inner.store;
    let patient = store
        .read(&ctx.service, "Patient", id)
        .await?
        .filter(|r| !r.is_deleted())
        .ok_or_else(|| FhirError::not_found(format!("Patient/{id} is not known")))?;

    // What each type may be read as: in full, or only inside this patient's compartment
    // (the permit already checked that a patient/ reach is this patient's).
    let reach = |t: &str| ctx.access.check(t, Op::Read).ok();

    let mut matched: BTreeMap<(String, String), StoredResource> = BTreeMap::new();
    let opts = ParseOptions {
        base: Some(ctx.base.clone()),
        default_count: PAGE,
        max_count: PAGE,
    };
    let defs = ctx.state.inner.defs;
    // The references of each resource are taken as it arrives.
    let mut wanted: BTreeSet<(String, String)> = BTreeSet::new();
    let own = format!("{}/", ctx.base);
    let mut take_references = |r: &StoredResource| {
        let Some(body) = &r.body else { return };
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        references(&v, &mut |reference| {
            let local = reference.strip_prefix(&own).unwrap_or(reference);
            let mut parts = local.split('/');
            if let (Some(t), Some(rid), None) = (parts.next(), parts.next(), parts.next()) {
                if defs.is_resource_type(t) && crate::interaction::valid_id(rid) {
                    wanted.insert((t.to_owned(), rid.to_owned()));
                }
            }
        });
    };
    take_references(&patient);
    // Past the budget (ApiConfig::everything_memory_bytes), bodies are dropped once their
    // references are taken, and read again for the page that shows them: a patient with a
    // hundred thousand resources costs keys, not gigabytes.
    let budget = ctx.state.inner.config.everything_memory_bytes;
    let mut kept = 0usize;
    for t in defs.resource_types() {
        // Every type is searched, `_type` or not: what the others reference is part of the
        // record (`_type=Organization` is the organizations the record names).
        if t == "Patient" || reach(t).is_none() {
            continue;
        }
        let filter = compartment_filter("Patient", id, t);
        if filter.is_empty() {
            continue;
        }
        let mut query = fhir_search::parse(Some(t), &params.search_params(t), &opts)
            .map_err(|e| FhirError::bad_request(e.to_string()))?;
        query.filters.push(filter);
        query.total = Some(Total::None);
        loop {
            let page = store.search(&ctx.service, &query).await?;
            for mut r in page.matches {
                take_references(&r);
                let len = r.body.as_ref().map_or(0, |b| b.len());
                if kept + len > budget {
                    r.body = None;
                } else {
                    kept += len;
                }
                matched.insert((r.resource_type.clone(), r.id.clone()), r);
            }
            match page.next {
                Some(next) => query.cursor = Some(next),
                None => break,
            }
        }
    }

    // The resources they reference, read once each.
    let mut included: BTreeMap<(String, String), StoredResource> = BTreeMap::new();
    for (t, rid) in wanted {
        let key = (t, rid);
        if matched.contains_key(&key) || (key.0 == "Patient" && key.1 == id) {
            continue;
        }
        // Referenced resources outside the compartment only for a reach over the whole type.
        if !params.wants(&key.0) || reach(&key.0) != Some(Reach::All) {
            continue;
        }
        if let Some(r) = store.read(&ctx.service, &key.0, &key.1).await? {
            let since_ok = params.since.as_deref().is_none_or(|s| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .is_ok_and(|s| r.last_updated >= s.with_timezone(&chrono::Utc))
            });
            if !r.is_deleted() && since_ok {
                included.insert(key, r);
            }
        }
    }

    let patient_wanted = params.wants("Patient")
        && params.since.as_deref().is_none_or(|s| {
            chrono::DateTime::parse_from_rfc3339(s)
                .is_ok_and(|s| patient.last_updated >= s.with_timezone(&chrono::Utc))
        });
    let all: Vec<(&StoredResource, &'static str)> = patient_wanted
        .then_some((&patient, "match"))
        .into_iter()
        .chain(
            matched
                .values()
                .filter(|r| params.wants(&r.resource_type))
                .map(|r| (r, "match")),
        )
        .chain(included.values().map(|r| (r, "include")))
        .collect();
    let total = all.len();
    let count = params.count.unwrap_or(50.min(max));
    let offset = params.offset.min(total);
    let end = offset.saturating_add(count).min(total);

    let link = |offset: usize| -> String {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &pairs {
            if k != "_offset" && k != "_count" {
                ser.append_pair(k, v);
            }
        }
        ser.append_pair("_count", &count.to_string());
        ser.append_pair("_offset", &offset.to_string());
        format!("{}/Patient/{id}/$everything?{}", ctx.base, ser.finish())
    };
    let mut links = vec![json!({"relation": "self", "url": link(offset)})];
    if end < total && count > 0 {
        links.push(json!({"relation": "next", "url": link(end)}));
    }
    if offset > 0 && count > 0 {
        links.push(json!({"relation": "previous", "url": link(offset.saturating_sub(count))}));
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("type".into(), json!("searchset"));
    bundle.insert("total".into(), json!(total));
    bundle.insert("link".into(), Value::Array(links));
    // Bodies dropped past the budget are read again for this page (a resource deleted in
    // between is left out of it).
    let mut reread: Vec<(StoredResource, &'static str)> = Vec::new();
    for (r, mode) in &all[offset..end] {
        if r.body.is_some() {
            reread.push(((*r).clone(), mode));
        } else if let Some(again) = store.read(&ctx.service, &r.resource_type, &r.id).await? {
            if !again.is_deleted() {
                reread.push((again, mode));
            }
        }
    }
    let entries: Vec<Entry<'_>> = reread.iter().map(|(r, mode)| Entry::Raw(r, mode)).collect();
    let body = if ctx.pretty {
        // Pretty output re-serialises the whole Bundle.
        let raw = splice_bundle(ctx, &Value::Object(bundle), &entries);
        let v: Value = serde_json::from_slice(&raw).map_err(|e| {
            FhirError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                IssueCode::Exception,
                e.to_string(),
            )
        })?;
        return Ok(crate::respond::json(ctx, StatusCode::OK, &v));
    } else {
        splice_bundle(ctx, &Value::Object(bundle), &entries)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(ctx.repr.content_type()),
    );
    Ok(resp)
}

/// Calls `f` with every `reference` string in `v`.
fn references(v: &Value, f: &mut impl FnMut(&str)) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => f(s),
                    _ => references(x, f),
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                references(x, f);
            }
        }
        _ => {}
    }
}
