//! Search (FHIR R4 http.html#search, search.html): type, system and compartment searches by
//! GET or POST `_search`, answered with a `searchset` Bundle; and the criteria of conditional
//! create, update and delete and of conditional references in transactions.
//!
//! The query grammar lives in `fhir-search`, the execution in the store; this module turns URL
//! parameters into a [`SearchQuery`], applies `Prefer: handling=strict`, and shapes the page
//! into a Bundle with `self`/`next`/`previous` links, `total`, `search.mode` and, for
//! ignored parameters or `_explain=true`, an OperationOutcome entry of mode `outcome`.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fhir_model::{operation_outcome, Issue, IssueCode, Severity, Summary};
use fhir_search::{Cond, ParamType, ParseOptions, SearchQuery, Test};
use fhir_store::{StoredResource, WriteTx};
use serde_json::{json, Map, Value};

use crate::error::FhirError;
use crate::request::{parse_summary, read_body, Ctx};
use crate::respond;

/// Where a search is addressed.
pub(crate) enum Scope<'a> {
    System,
    Type(&'a str),
    /// `Patient/123/Observation`: the compartment type and id, and the type searched.
    Compartment(&'a str, &'a str, &'a str),
}

fn parse_options(ctx: &Ctx) -> ParseOptions {
    ParseOptions {
        base: Some(ctx.base.clone()),
        default_count: 50,
        max_count: ctx.state.inner.config.max_page_size,
    }
}

fn search_error(e: fhir_search::SearchError) -> FhirError {
    let param = e.param.clone();
    FhirError::new(StatusCode::BAD_REQUEST, IssueCode::Invalid, e.to_string()).at(param)
}

/// `Prefer: handling=strict` (FHIR R4 search.html#errors).
fn strict(ctx: &Ctx) -> bool {
    ctx.headers.get_all("prefer").iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split([',', ';']).any(|p| p.trim() == "handling=strict"))
    })
}

/// The filter that puts a search inside a compartment: any of the compartment's reference
/// parameters of `rtype` points at `ctype/cid`.
pub(crate) fn compartment_filter(ctype: &str, cid: &str, rtype: &str) -> Vec<Cond> {
    let reg = fhir_search::registry();
    fhir_search::compartment::params(ctype, rtype)
        .iter()
        .filter_map(|code| reg.get(rtype, code))
        .filter(|p| p.kind == ParamType::Reference)
        .map(|p| Cond {
            param: p.id,
            kind: ParamType::Reference,
            negate: false,
            test: Test::Reference {
                ttype: Some(ctype.to_string()),
                tid: cid.to_string(),
            },
        })
        .collect()
}

/// GET search, or POST `_search` whose form body adds to the URL's parameters.
pub(crate) async fn search(
    ctx: &Ctx,
    scope: Scope<'_>,
    body: Option<Body>,
) -> Result<Response, FhirError> {
    let mut params = ctx.params.clone();
    if let Some(body) = body {
        let bytes = read_body(body, ctx.state.inner.config.max_body_bytes).await?;
        params.extend(form_urlencoded::parse(&bytes).into_owned());
    }
    let (rtype, path) = match &scope {
        Scope::System => (None, String::new()),
        Scope::Type(t) => (Some(*t), (*t).to_string()),
        Scope::Compartment(ct, cid, t) => {
            if !fhir_search::compartment::is_compartment(ct) {
                return Err(FhirError::not_found(format!("{ct} is not a compartment")));
            }
            (Some(*t), format!("{ct}/{cid}/{t}"))
        }
    };
    let mut query =
        fhir_search::parse(rtype, &params, &parse_options(ctx)).map_err(search_error)?;
    if let Scope::Compartment(ct, cid, t) = scope {
        query.filters.push(compartment_filter(ct, cid, t));
    }
    if strict(ctx) && !query.unknown.is_empty() {
        let names: Vec<String> = query
            .unknown
            .iter()
            .map(|(k, why)| format!("'{k}' ({why})"))
            .collect();
        let first = query.unknown[0].0.clone();
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::NotSupported,
            format!("unknown search parameters: {}", names.join(", ")),
        )
        .at(first));
    }
    let summary = parse_summary(query.summary.as_deref())?;
    if summary == Some(Summary::Count) {
        query.count = 0;
        query.total = Some(fhir_search::Total::Accurate);
    }
    let page = ctx.state.inner.store.search(&ctx.service, &query).await?;

    let link_params: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "_cursor")
        .cloned()
        .collect();
    let url = |cursor: Option<&fhir_search::Cursor>| {
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &link_params {
            ser.append_pair(k, v);
        }
        if let Some(c) = cursor {
            ser.append_pair("_cursor", &c.encode());
        }
        let qs = ser.finish();
        let sep = if path.is_empty() { "" } else { "/" };
        if qs.is_empty() {
            format!("{}{sep}{path}", ctx.base)
        } else {
            format!("{}{sep}{path}?{qs}", ctx.base)
        }
    };
    let mut links = vec![json!({"relation": "self", "url": url(query.cursor.as_ref())})];
    if let Some(n) = &page.next {
        links.push(json!({"relation": "next", "url": url(Some(n))}));
    }
    if let Some(p) = &page.previous {
        links.push(json!({"relation": "previous", "url": url(Some(p))}));
    }
    let elements = query.elements.clone();
    // Without a view to apply, each resource goes out as the bytes the store holds (compact
    // JSON it wrote itself), spliced into the Bundle: no parse and re-serialisation per entry.
    let raw = summary.is_none() && elements.is_none() && !ctx.pretty;
    let mut entries = Vec::new();
    for (r, mode) in page
        .matches
        .iter()
        .map(|r| (r, "match"))
        .chain(page.includes.iter().map(|r| (r, "include")))
    {
        entries.push(if raw {
            Entry::Raw(r, mode)
        } else {
            Entry::Json(entry(ctx, r, mode, summary, elements.as_deref())?)
        });
    }
    let mut issues: Vec<Issue> = query
        .unknown
        .iter()
        .map(|(k, why)| Issue {
            severity: Severity::Warning,
            code: IssueCode::NotSupported,
            diagnostics: format!("search parameter '{k}' was ignored: {why}"),
            expression: Some(k.clone()),
        })
        .collect();
    if let Some(plan) = &page.plan {
        issues.push(Issue {
            severity: Severity::Information,
            code: IssueCode::Informational,
            diagnostics: plan.clone(),
            expression: None,
        });
    }
    if !issues.is_empty() {
        entries.push(Entry::Json(json!({
            "resource": operation_outcome(&issues),
            "search": {"mode": "outcome"},
        })));
    }
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("type".into(), json!("searchset"));
    if let Some(total) = page.total {
        bundle.insert("total".into(), json!(total));
    }
    bundle.insert("link".into(), Value::Array(links));
    if !raw {
        let entries: Vec<Value> = entries
            .into_iter()
            .filter_map(|e| match e {
                Entry::Json(v) => Some(v),
                Entry::Raw(..) => None,
            })
            .collect();
        if !entries.is_empty() {
            bundle.insert("entry".into(), Value::Array(entries));
        }
        return Ok(respond::json(ctx, StatusCode::OK, &Value::Object(bundle)));
    }
    let body = splice_bundle(ctx, &Value::Object(bundle), &entries);
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(ctx.repr.content_type()),
    );
    Ok(resp)
}

/// An entry of a searchset: built as JSON, or a stored resource to splice in as it is.
pub(crate) enum Entry<'a> {
    Json(Value),
    Raw(&'a StoredResource, &'static str),
}

/// The compact JSON of `bundle` with `"entry": [...]` appended, raw entries written around
/// their stored bytes. The keys come out in the order the Bundle has them elsewhere.
pub(crate) fn splice_bundle(ctx: &Ctx, bundle: &Value, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = serde_json::to_vec(bundle).unwrap_or_default();
    if entries.is_empty() {
        return out;
    }
    // Reopen the object: drop its closing brace.
    out.pop();
    out.extend_from_slice(b",\"entry\":[");
    for (i, e) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match e {
            Entry::Json(v) => {
                let _ = serde_json::to_writer(&mut out, v);
            }
            Entry::Raw(r, mode) => {
                out.extend_from_slice(b"{\"fullUrl\":");
                let full = format!("{}/{}/{}", ctx.base, r.resource_type, r.id);
                let _ = serde_json::to_writer(&mut out, &full);
                if let Some(body) = &r.body {
                    out.extend_from_slice(b",\"resource\":");
                    out.extend_from_slice(body);
                }
                out.extend_from_slice(b",\"search\":{\"mode\":");
                let _ = serde_json::to_writer(&mut out, mode);
                out.extend_from_slice(b"}}");
            }
        }
    }
    out.extend_from_slice(b"]}");
    out
}

fn entry(
    ctx: &Ctx,
    r: &StoredResource,
    mode: &str,
    summary: Option<Summary>,
    elements: Option<&[String]>,
) -> Result<Value, FhirError> {
    let mut e = Map::new();
    e.insert(
        "fullUrl".into(),
        json!(format!("{}/{}/{}", ctx.base, r.resource_type, r.id)),
    );
    if let Some(body) = &r.body {
        let v: Value = serde_json::from_slice(body).map_err(|err| {
            fhir_store::StoreError::Backend(format!("stored {}/{}: {err}", r.resource_type, r.id))
        })?;
        let v = if summary.is_some() || elements.is_some() {
            respond::narrow(ctx, v, summary, elements)
        } else {
            v
        };
        e.insert("resource".into(), v);
    }
    e.insert("search".into(), json!({"mode": mode}));
    Ok(Value::Object(e))
}

/// The criteria of a conditional operation (`identifier=a|b&…`, with or without a leading
/// `Type?` or `?`). Criteria must be understood completely: an unknown parameter is a 400,
/// never silently dropped, because dropping it would widen what the operation touches.
pub(crate) fn criteria(
    ctx: &Ctx,
    rtype: &str,
    text: &str,
    what: &str,
) -> Result<SearchQuery, FhirError> {
    let text = text.trim();
    let text = text
        .strip_prefix(rtype)
        .unwrap_or(text)
        .trim_start_matches('?');
    let params: Vec<(String, String)> = form_urlencoded::parse(text.as_bytes())
        .into_owned()
        .filter(|(k, _)| !matches!(k.as_str(), "_format" | "_pretty"))
        .collect();
    if params.is_empty() {
        return Err(FhirError::bad_request(format!(
            "{what} needs search criteria"
        )));
    }
    let query =
        fhir_search::parse(Some(rtype), &params, &parse_options(ctx)).map_err(search_error)?;
    if let Some((k, why)) = query.unknown.first() {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::NotSupported,
            format!("{what}: search parameter '{k}' is not understood ({why})"),
        )
        .at(k.clone()));
    }
    Ok(query)
}

/// Ids of the resources matching `query` inside `tx`: at most two, enough to tell 0, 1, many.
pub(crate) async fn matches_in(
    tx: &mut dyn WriteTx,
    query: &SearchQuery,
) -> Result<Vec<String>, FhirError> {
    Ok(tx
        .matching(query, 2)
        .await?
        .into_iter()
        .map(|(_, id)| id)
        .collect())
}

/// 412 for criteria that match more than one resource (FHIR R4 http.html#cond-update).
pub(crate) fn too_many(what: &str, criteria: &str) -> FhirError {
    FhirError::new(
        StatusCode::PRECONDITION_FAILED,
        IssueCode::MultipleMatches,
        format!("{what}: the criteria '{criteria}' match more than one resource"),
    )
}
