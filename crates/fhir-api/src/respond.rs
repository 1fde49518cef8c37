//! Writing responses: resource bodies with their version headers (ETag, Last-Modified,
//! Location), `Prefer: return`, `_summary`/`_elements` views and `_pretty`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fhir_model::{operation_outcome, Issue, IssueCode, Severity};
use fhir_store::StoredResource;
use serde_json::Value;

use crate::error::FhirError;
use crate::request::{Ctx, Return};

pub(crate) fn etag(version: u64) -> String {
    format!("W/\"{version}\"")
}

pub(crate) fn last_modified(r: &StoredResource) -> String {
    httpdate::fmt_http_date(std::time::SystemTime::from(r.last_updated))
}

pub(crate) fn version_url(base: &str, r: &StoredResource) -> String {
    format!("{base}/{}/{}/_history/{}", r.resource_type, r.id, r.version)
}

/// Serialises a JSON value as the client asked (`_pretty`).
pub(crate) fn to_bytes(ctx: &Ctx, v: &Value) -> Bytes {
    let out = if ctx.pretty {
        serde_json::to_vec_pretty(v)
    } else {
        serde_json::to_vec(v)
    };
    Bytes::from(out.unwrap_or_default())
}

pub(crate) fn json(ctx: &Ctx, status: StatusCode, v: &Value) -> Response {
    let mut resp = (status, to_bytes(ctx, v)).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ctx.repr.content_type()),
    );
    resp
}

/// The body of a stored resource as this request wants to see it: raw bytes when no view
/// applies (the fast path of a read), else parsed, narrowed and re-serialised.
pub(crate) fn view(ctx: &Ctx, r: &StoredResource) -> Result<Bytes, FhirError> {
    let Some(body) = &r.body else {
        return Ok(Bytes::new());
    };
    let summary = ctx.summary()?;
    let elements = ctx.elements();
    if summary.is_none() && elements.is_none() && !ctx.pretty {
        return Ok(body.clone());
    }
    let mut v: Value = serde_json::from_slice(body).map_err(|e| {
        FhirError::from(fhir_store::StoreError::Backend(format!(
            "stored body of {}/{} is not JSON: {e}",
            r.resource_type, r.id
        )))
    })?;
    v = narrow(ctx, v, summary, elements.as_deref());
    Ok(to_bytes(ctx, &v))
}

/// Applies `_summary` and `_elements` to one resource.
pub(crate) fn narrow(
    ctx: &Ctx,
    mut v: Value,
    summary: Option<fhir_model::Summary>,
    elements: Option<&[String]>,
) -> Value {
    let defs = ctx.state.inner.defs;
    if let Some(s) = summary.filter(|s| *s != fhir_model::Summary::Count) {
        v = defs.summarize(&v, s);
    }
    if let Some(e) = elements {
        v = defs.select_elements(&v, e);
    }
    v
}

/// Adds the version headers of `r` to a response.
pub(crate) fn version_headers(resp: &mut Response, ctx: &Ctx, r: &StoredResource, location: bool) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag(r.version)) {
        h.insert(header::ETAG, v);
    }
    if let Ok(v) = HeaderValue::from_str(&last_modified(r)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    if location {
        if let Ok(v) = HeaderValue::from_str(&version_url(&ctx.base, r)) {
            h.insert(header::LOCATION, v.clone());
            h.insert(header::CONTENT_LOCATION, v);
        }
    }
}

/// A read/vread response: 200 with the resource and its version headers.
pub(crate) fn read_response(ctx: &Ctx, r: &StoredResource) -> Result<Response, FhirError> {
    let body = view(ctx, r)?;
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(ctx.repr.content_type()),
    );
    version_headers(&mut resp, ctx, r, false);
    Ok(resp)
}

/// The response to a create, update or patch, shaped by `Prefer: return`.
pub(crate) fn write_response(
    ctx: &Ctx,
    status: StatusCode,
    r: &StoredResource,
    message: &str,
) -> Result<Response, FhirError> {
    let mut resp = match ctx.prefer_return.unwrap_or(Return::Representation) {
        Return::Minimal => status.into_response(),
        Return::Representation => {
            let body = view(ctx, r)?;
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(ctx.repr.content_type()),
            );
            resp
        }
        Return::OperationOutcome => json(ctx, status, &information(message)),
    };
    version_headers(&mut resp, ctx, r, true);
    Ok(resp)
}

/// An OperationOutcome carrying one informational issue.
pub(crate) fn information(message: &str) -> Value {
    operation_outcome(&[Issue {
        severity: Severity::Information,
        code: IssueCode::Informational,
        diagnostics: message.to_string(),
        expression: None,
    }])
}
