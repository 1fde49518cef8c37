//! Terminology operations over the built-in R4 terminology (`fhir_model::terminology`: the
//! complete expansions of R4's ValueSets and the is-a hierarchies of its CodeSystems) and the
//! ValueSets stored in the service: `ValueSet/$expand` (FHIR R4 valueset-operation-expand:
//! `url` or `[id]`, `filter`, `count`, `offset`), `ValueSet/$validate-code`
//! (valueset-operation-validate-code: `url` or `[id]`, `code` with `system`, or `coding`)
//! and `CodeSystem/$subsumes` (codesystem-operation-subsumes: `system`, `codeA`, `codeB`).
//!
//! A stored ValueSet is expanded from its own `expansion` when it has one, else from its
//! `compose.include`: listed `concept`s of a system, every code of a built-in ValueSet
//! (`valueSet`), or an `is-a` / `descendent-of` filter over a built-in hierarchy;
//! `compose.exclude` of listed concepts is applied. The vendored data holds codes, not
//! displays, so `filter` matches the code (case-insensitive substring) and the expansion
//! carries no `display`. What needs content this server does not have — SNOMED CT, LOINC,
//! RxNorm, a ValueSet whose R4 expansion is partial, another filter — is a 422 saying so.
//! `CodeSystem/$lookup` is not served: it answers a display, which the vendored data lacks.
//!
//! Authorized as reads of ValueSet or CodeSystem (type level: a read of the type; at an id, a
//! read of that resource).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::{terminology, IssueCode};
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::interaction::Level;
use crate::params::{OpParams, Shape, Spec};
use crate::request::Ctx;
use crate::respond;

pub(crate) const EXPAND: &str = "http://hl7.org/fhir/OperationDefinition/ValueSet-expand";
pub(crate) const VALIDATE_CODE: &str =
    "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code";
pub(crate) const SUBSUMES: &str = "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes";

/// The most codes one `$expand` returns.
const MAX_COUNT: usize = 10_000;

/// Code systems whose content is not vendored: large external terminologies.
const EXTERNAL: &[(&str, &str)] = &[
    ("http://snomed.info/sct", "SNOMED CT"),
    ("http://loinc.org", "LOINC"),
    ("http://www.nlm.nih.gov/research/umls/rxnorm", "RxNorm"),
    ("http://hl7.org/fhir/sid/icd-10", "ICD-10"),
    ("http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"),
    ("http://unitsofmeasure.org", "UCUM"),
];

fn unavailable(what: &str) -> FhirError {
    FhirError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        IssueCode::NotSupported,
        format!("{what}: this server has only the terminology defined in FHIR R4 itself, not the content of large external terminologies"),
    )
}

fn external(system: &str) -> Option<&'static str> {
    EXTERNAL.iter().find(|(s, _)| *s == system).map(|(_, n)| *n)
}

/// The codes of a ValueSet, as (system, code).
type Codes = Vec<(String, String)>;

/// The ValueSet `$expand`/`$validate-code` is about: by `url` (built-in, or stored with that
/// url) or by the id in the path (stored).
async fn value_set_codes(
    ctx: &Ctx,
    op: &str,
    id: Option<&str>,
    params: &OpParams,
) -> Result<(String, Codes), FhirError> {
    let stored = match (id, params.text("url")) {
        (Some(id), None) => {
            let r = ctx
                .state
                .inner
                .store
                .read(&ctx.service, "ValueSet", id)
                .await?
                .filter(|r| !r.is_deleted())
                .ok_or_else(|| FhirError::not_found(format!("ValueSet/{id} is not known")))?;
            Some(parse(r.body.as_deref().unwrap_or_default())?)
        }
        (Some(_), Some(_)) => {
            return Err(FhirError::bad_request(format!(
                "${op}: give the ValueSet by its id in the path or by url, not both"
            ))
            .at(params.at("url")))
        }
        (None, Some(url)) => {
            if let Some(codes) = terminology().expansion(url) {
                return Ok((url.to_owned(), codes.to_vec()));
            }
            find_stored(ctx, url).await?
        }
        (None, None) => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Required,
                format!("${op}: the parameter 'url' is required at ValueSet/${op}"),
            )
            .at("url"))
        }
    };
    match stored {
        Some(vs) => {
            let url = vs
                .get("url")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Ok((url, compose(&vs)?))
        }
        None => {
            let url = params.text("url").unwrap_or_default();
            if url.starts_with("http://hl7.org/fhir/ValueSet/") {
                Err(unavailable(&format!(
                    "the R4 ValueSet {url} has no complete expansion here (it draws on an external terminology, or is not defined in R4)"
                )))
            } else {
                Err(FhirError::not_found(format!(
                    "no ValueSet with url {url} is known: neither built in nor stored in this service"
                ))
                .at(params.at("url")))
            }
        }
    }
}

fn parse(body: &[u8]) -> Result<Value, FhirError> {
    serde_json::from_slice(body).map_err(|e| {
        FhirError::from(fhir_store::StoreError::Backend(format!(
            "stored ValueSet: {e}"
        )))
    })
}

async fn find_stored(ctx: &Ctx, url: &str) -> Result<Option<Value>, FhirError> {
    let criteria: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", url)
        .finish();
    let query = crate::search::criteria(ctx, "ValueSet", &criteria, "a ValueSet by url")?;
    let page = ctx.state.inner.store.search(&ctx.service, &query).await?;
    for r in &page.matches {
        if let Some(b) = &r.body {
            let v = parse(b)?;
            if v.get("url").and_then(Value::as_str) == Some(url) {
                return Ok(Some(v));
            }
        }
    }
    Ok(None)
}

/// The codes of a stored ValueSet: its expansion, or its compose.
fn compose(vs: &Value) -> Result<Codes, FhirError> {
    let mut out = Codes::new();
    if let Some(exp) = vs.get("expansion") {
        collect_contains(exp, &mut out);
        return Ok(out);
    }
    let compose = vs
        .get("compose")
        .ok_or_else(|| unavailable("the ValueSet has neither an expansion nor a compose"))?;
    for inc in compose
        .get("include")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(include(inc)?);
    }
    let excluded: Codes = compose
        .get("exclude")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(include)
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    out.retain(|c| !excluded.contains(c));
    let mut seen = std::collections::HashSet::new();
    out.retain(|c| seen.insert(c.clone()));
    Ok(out)
}

fn include(inc: &Value) -> Result<Codes, FhirError> {
    let system = inc.get("system").and_then(Value::as_str);
    if let Some(name) = system.and_then(external) {
        return Err(unavailable(&format!("expanding codes of {name}")));
    }
    let mut sets: Vec<Codes> = Vec::new();
    for url in inc
        .get("valueSet")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let url = url.as_str().unwrap_or_default();
        let codes = terminology().expansion(url).ok_or_else(|| {
            unavailable(&format!(
                "the included ValueSet {url} (only built-in R4 ValueSets can be included)"
            ))
        })?;
        sets.push(codes.to_vec());
    }
    if let Some(system) = system {
        let concepts = inc.get("concept").and_then(Value::as_array);
        let filters = inc.get("filter").and_then(Value::as_array);
        let mut codes: Codes = match (concepts, filters) {
            (Some(list), _) => list
                .iter()
                .filter_map(|c| c.get("code").and_then(Value::as_str))
                .map(|c| (system.to_owned(), c.to_owned()))
                .collect(),
            (None, Some(filters)) => {
                let mut acc: Option<Codes> = None;
                for f in filters {
                    let op = f.get("op").and_then(Value::as_str).unwrap_or_default();
                    let value = f.get("value").and_then(Value::as_str).unwrap_or_default();
                    let property = f.get("property").and_then(Value::as_str).unwrap_or_default();
                    if property != "concept" || !matches!(op, "is-a" | "descendent-of") {
                        return Err(unavailable(&format!(
                            "the filter {property} {op} {value} (only concept is-a and descendent-of are evaluated)"
                        )));
                    }
                    let mut below = terminology()
                        .descendants_or_self(system, value)
                        .ok_or_else(|| unavailable(&format!("the hierarchy of {system} at {value}")))?;
                    if op == "descendent-of" {
                        below.retain(|c| c != value);
                    }
                    let these: Codes = below.into_iter().map(|c| (system.to_owned(), c)).collect();
                    acc = Some(match acc {
                        None => these,
                        Some(prev) => prev.into_iter().filter(|c| these.contains(c)).collect(),
                    });
                }
                acc.unwrap_or_default()
            }
            (None, None) => {
                return Err(unavailable(&format!(
                    "every code of the code system {system} (a whole code system is not enumerated here; list concepts or filter is-a)"
                )))
            }
        };
        if !sets.is_empty() {
            codes.retain(|c| sets.iter().all(|s| s.contains(c)));
        }
        return Ok(codes);
    }
    // Only value sets: their intersection.
    let mut iter = sets.into_iter();
    let first = iter.next().unwrap_or_default();
    let rest: Vec<Codes> = iter.collect();
    Ok(first
        .into_iter()
        .filter(|c| rest.iter().all(|s| s.contains(c)))
        .collect())
}

fn collect_contains(node: &Value, out: &mut Codes) {
    for c in node
        .get("contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(s), Some(code)) = (
            c.get("system").and_then(Value::as_str),
            c.get("code").and_then(Value::as_str),
        ) {
            out.push((s.to_owned(), code.to_owned()));
        }
        collect_contains(c, out);
    }
}

fn number(params: &OpParams, name: &str, default: usize, max: usize) -> Result<usize, FhirError> {
    match params.text(name) {
        None => Ok(default),
        Some(t) => match t.parse::<usize>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(FhirError::bad_request(format!(
                "the parameter '{name}' must be a whole number from 0 to {max}, not '{t}'"
            ))
            .at(params.at(name))),
        },
    }
}

fn instance_id<'a>(level: Level<'a>, rtype: &str, op: &str) -> Result<Option<&'a str>, FhirError> {
    match level {
        Level::Type(t) if t == rtype => Ok(None),
        Level::Instance(t, id) if t == rtype => Ok(Some(id)),
        _ => Err(crate::route::unsupported_operation(op)),
    }
}

const EXPAND_PARAMS: &[Spec] = &[
    Spec::text("url"),
    Spec::text("filter"),
    Spec::text("count"),
    Spec::text("offset"),
];

/// `ValueSet/$expand` and `ValueSet/[id]/$expand`.
pub(crate) async fn expand(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    let id = instance_id(level, "ValueSet", "expand")?;
    let params = OpParams::read(ctx, "expand", post, body, EXPAND_PARAMS).await?;
    let count = number(&params, "count", MAX_COUNT, MAX_COUNT)?;
    let offset = number(&params, "offset", 0, usize::MAX)?;
    let (url, mut codes) = value_set_codes(ctx, "expand", id, &params).await?;
    if let Some(f) = params.text("filter") {
        let f = f.to_lowercase();
        codes.retain(|(_, c)| c.to_lowercase().contains(&f));
    }
    let total = codes.len();
    let contains: Vec<Value> = codes
        .iter()
        .skip(offset)
        .take(count)
        .map(|(s, c)| json!({"system": s, "code": c}))
        .collect();
    let mut parameter = vec![
        json!({"name": "offset", "valueInteger": offset}),
        json!({"name": "count", "valueInteger": count}),
    ];
    if let Some(f) = params.text("filter") {
        parameter.push(json!({"name": "filter", "valueString": f}));
    }
    let mut expansion = json!({
        "identifier": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "timestamp": fhir_store::format_instant(&chrono::Utc::now()),
        "total": total,
        "offset": offset,
        "parameter": parameter,
    });
    if !contains.is_empty() {
        expansion["contains"] = Value::Array(contains);
    }
    let mut vs = json!({"resourceType": "ValueSet", "status": "active", "expansion": expansion});
    if !url.is_empty() {
        vs["url"] = Value::String(url);
    }
    if let Some(id) = id {
        vs["id"] = Value::String(id.to_owned());
    }
    Ok(respond::json(ctx, StatusCode::OK, &vs))
}

const VALIDATE_CODE_PARAMS: &[Spec] = &[
    Spec::text("url"),
    Spec::text("code"),
    Spec::text("system"),
    Spec::text("display"),
    Spec {
        name: "coding",
        shape: Shape::Coding,
        repeats: false,
    },
];

/// `ValueSet/$validate-code` and `ValueSet/[id]/$validate-code`.
pub(crate) async fn validate_code(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    let id = instance_id(level, "ValueSet", "validate-code")?;
    let params = OpParams::read(ctx, "validate-code", post, body, VALIDATE_CODE_PARAMS).await?;
    let (system, code) = match (params.json("coding"), params.text("code")) {
        (Some(c), None) => (
            c.get("system").and_then(Value::as_str).map(str::to_owned),
            c.get("code").and_then(Value::as_str).map(str::to_owned),
        ),
        (None, Some(code)) => (
            params.text("system").map(str::to_owned),
            Some(code.to_owned()),
        ),
        _ => (None, None),
    };
    let Some(code) = code else {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Required,
            "$validate-code: give code (with system) or coding",
        )
        .at("code"));
    };
    if let Some(name) = system.as_deref().and_then(external) {
        return Err(unavailable(&format!("validating a {name} code")));
    }
    let (url, codes) = value_set_codes(ctx, "validate-code", id, &params).await?;
    let result = codes
        .iter()
        .any(|(s, c)| *c == code && system.as_deref().is_none_or(|x| x == s));
    let shown = match &system {
        Some(s) => format!("{s}|{code}"),
        None => code.clone(),
    };
    let message = if result {
        format!("{shown} is in the value set {url}")
    } else {
        format!("{shown} is not in the value set {url}")
    };
    Ok(respond::json(
        ctx,
        StatusCode::OK,
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "result", "valueBoolean": result},
            {"name": "message", "valueString": message}
        ]}),
    ))
}

const SUBSUMES_PARAMS: &[Spec] = &[
    Spec::text("system"),
    Spec::text("codeA"),
    Spec::text("codeB"),
    Spec::text("version"),
];

/// `CodeSystem/$subsumes` over the built-in is-a hierarchies.
pub(crate) async fn subsumes(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    if instance_id(level, "CodeSystem", "subsumes")?.is_some() {
        return Err(FhirError::new(
            StatusCode::NOT_FOUND,
            IssueCode::NotSupported,
            "$subsumes is answered at CodeSystem/$subsumes with system, over the built-in R4 hierarchies",
        ));
    }
    let params = OpParams::read(ctx, "subsumes", post, body, SUBSUMES_PARAMS).await?;
    for name in ["system", "codeA", "codeB"] {
        params.require("subsumes", name)?;
    }
    let system = params.text("system").unwrap_or_default();
    let (a, b) = (
        params.text("codeA").unwrap_or_default(),
        params.text("codeB").unwrap_or_default(),
    );
    if let Some(name) = external(system) {
        return Err(unavailable(&format!("subsumption in {name}")));
    }
    let t = terminology();
    let above = |code: &str, which: &str| {
        t.ancestors_or_self(system, code).ok_or_else(|| {
            FhirError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                IssueCode::NotSupported,
                format!("$subsumes: {code} is not in a known is-a hierarchy of {system}"),
            )
            .at(params.at(which))
        })
    };
    let (above_a, above_b) = (above(a, "codeA")?, above(b, "codeB")?);
    let outcome = if a == b {
        "equivalent"
    } else if above_b.iter().any(|c| c == a) {
        "subsumes"
    } else if above_a.iter().any(|c| c == b) {
        "subsumed-by"
    } else {
        "not-subsumed"
    };
    Ok(respond::json(
        ctx,
        StatusCode::OK,
        &json!({"resourceType": "Parameters", "parameter": [{"name": "outcome", "valueCode": outcome}]}),
    ))
}
