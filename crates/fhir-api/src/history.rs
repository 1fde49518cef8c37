//! history of an instance, a type and the whole service (FHIR R4 http.html#history), newest
//! first, with `_since`, `_at`, `_count` and paging links that stay correct as data changes
//! (the cursor is a position in the version sequence, not an offset).

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use fhir_store::{format_instant, HistoryQuery, HistoryScope, Method, StoredResource};
use serde_json::{json, Map, Value};

use crate::error::FhirError;
use crate::request::Ctx;
use crate::respond;

const DEFAULT_COUNT: usize = 50;

pub(crate) async fn system(ctx: &Ctx) -> Result<Response, FhirError> {
    run(ctx, HistoryScope::System, "_history".into()).await
}

pub(crate) async fn type_level(ctx: &Ctx, rtype: &str) -> Result<Response, FhirError> {
    run(
        ctx,
        HistoryScope::Type(rtype.into()),
        format!("{rtype}/_history"),
    )
    .await
}

pub(crate) async fn instance(ctx: &Ctx, rtype: &str, id: &str) -> Result<Response, FhirError> {
    let r = ctx.state.inner.store.read(&ctx.service, rtype, id).await?;
    if r.is_none() {
        return Err(FhirError::not_found(format!("{rtype}/{id} is not known")));
    }
    run(
        ctx,
        HistoryScope::Instance(rtype.into(), id.into()),
        format!("{rtype}/{id}/_history"),
    )
    .await
}

async fn run(ctx: &Ctx, scope: HistoryScope, path: String) -> Result<Response, FhirError> {
    let query = HistoryQuery {
        since: instant_param(ctx, "_since")?,
        at: instant_param(ctx, "_at")?,
        count: count_param(ctx)?,
        before: match ctx.param("_cursor") {
            None => None,
            Some(c) => Some(c.parse().map_err(|_| {
                FhirError::bad_request(format!("_cursor '{c}' is not a position from a next link"))
                    .at("_cursor")
            })?),
        },
    };
    let summary = ctx.summary()?;
    let elements = ctx.elements();
    let page = ctx
        .state
        .inner
        .store
        .history(&ctx.service, &scope, &query)
        .await?;

    let mut links = vec![link("self", &page_url(ctx, &path, query.before))];
    if let Some(next) = page.next {
        links.push(link("next", &page_url(ctx, &path, Some(next))));
    }
    let entries: Vec<Value> = if summary == Some(fhir_model::Summary::Count) {
        Vec::new()
    } else {
        page.entries
            .iter()
            .map(|r| entry(ctx, r, summary, elements.as_deref()))
            .collect::<Result<_, _>>()?
    };
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), json!("Bundle"));
    bundle.insert("type".into(), json!("history"));
    bundle.insert("total".into(), json!(page.total));
    bundle.insert("link".into(), Value::Array(links));
    if !entries.is_empty() {
        bundle.insert("entry".into(), Value::Array(entries));
    }
    Ok(respond::json(ctx, StatusCode::OK, &Value::Object(bundle)))
}

fn entry(
    ctx: &Ctx,
    r: &StoredResource,
    summary: Option<fhir_model::Summary>,
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
        e.insert(
            "resource".into(),
            respond::narrow(ctx, v, summary, elements),
        );
    }
    let url = match r.method {
        Method::Post => r.resource_type.clone(),
        _ => format!("{}/{}", r.resource_type, r.id),
    };
    e.insert(
        "request".into(),
        json!({"method": r.method.as_str(), "url": url}),
    );
    let status = match r.method {
        Method::Post => "201 Created",
        Method::Delete => "204 No Content",
        Method::Put if r.version == 1 => "201 Created",
        _ => "200 OK",
    };
    e.insert(
        "response".into(),
        json!({
            "status": status,
            "etag": respond::etag(r.version),
            "lastModified": format_instant(&r.last_updated),
        }),
    );
    Ok(Value::Object(e))
}

fn link(relation: &str, url: &str) -> Value {
    json!({"relation": relation, "url": url})
}

/// The URL of a page: the request's own parameters with `_cursor` set (or removed).
fn page_url(ctx: &Ctx, path: &str, cursor: Option<i64>) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &ctx.params {
        if k != "_cursor" {
            q.append_pair(k, v);
        }
    }
    if let Some(c) = cursor {
        q.append_pair("_cursor", &c.to_string());
    }
    let q = q.finish();
    if q.is_empty() {
        format!("{}/{path}", ctx.base)
    } else {
        format!("{}/{path}?{q}", ctx.base)
    }
}

pub(crate) fn count_param(ctx: &Ctx) -> Result<usize, FhirError> {
    let max = ctx.state.inner.config.max_page_size;
    match ctx.param("_count") {
        None => Ok(DEFAULT_COUNT.min(max)),
        Some(c) => match c.parse::<usize>() {
            Ok(n) => Ok(n.min(max)),
            Err(_) => Err(FhirError::bad_request(format!(
                "_count must be a whole number, not '{c}'"
            ))
            .at("_count")),
        },
    }
}

/// An instant parameter: a full instant, or a date/dateTime taken as its earliest moment.
fn instant_param(ctx: &Ctx, name: &str) -> Result<Option<DateTime<Utc>>, FhirError> {
    let Some(v) = ctx.param(name) else {
        return Ok(None);
    };
    parse_instant(v).map(Some).ok_or_else(|| {
        FhirError::bad_request(format!(
            "{name} must be an instant such as 2026-01-02T03:04:05Z, not '{v}'"
        ))
        .at(name.to_string())
    })
}

pub(crate) fn parse_instant(v: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Some(t.with_timezone(&Utc));
    }
    let date = match v.len() {
        4 => NaiveDate::parse_from_str(&format!("{v}-01-01"), "%Y-%m-%d").ok()?,
        7 => NaiveDate::parse_from_str(&format!("{v}-01"), "%Y-%m-%d").ok()?,
        10 => NaiveDate::parse_from_str(v, "%Y-%m-%d").ok()?,
        _ => return None,
    };
    Some(date.and_hms_opt(0, 0, 0)?.and_utc())
}
