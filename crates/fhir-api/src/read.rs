//! read and vread (FHIR R4 http.html#read, #vread), with conditional read
//! (`If-None-Match`, `If-Modified-Since` → 304).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_model::IssueCode;
use fhir_store::StoredResource;

use crate::error::FhirError;
use crate::request::Ctx;
use crate::respond;

pub(crate) async fn read(ctx: &Ctx, rtype: &str, id: &str) -> Result<Response, FhirError> {
    let r = ctx
        .state
        .inner
        .store
        .read(&ctx.service, rtype, id)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
    if r.is_deleted() {
        return Err(gone(&r));
    }
    if not_modified(ctx, &r) {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        respond::version_headers(&mut resp, ctx, &r, false);
        return Ok(resp);
    }
    respond::read_response(ctx, &r)
}

pub(crate) async fn vread(
    ctx: &Ctx,
    rtype: &str,
    id: &str,
    vid: &str,
) -> Result<Response, FhirError> {
    let version: u64 = vid
        .parse()
        .map_err(|_| FhirError::not_found(format!("{rtype}/{id} has no version '{vid}'")))?;
    let r = ctx
        .state
        .inner
        .store
        .vread(&ctx.service, rtype, id, version)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} has no version {vid}")))?;
    if r.is_deleted() {
        return Err(gone(&r));
    }
    respond::read_response(ctx, &r)
}

/// 410 Gone for a deleted resource (FHIR R4 http.html#delete).
fn gone(r: &StoredResource) -> FhirError {
    FhirError::new(
        StatusCode::GONE,
        IssueCode::Deleted,
        format!(
            "{}/{} was deleted (version {})",
            r.resource_type, r.id, r.version
        ),
    )
}

fn not_modified(ctx: &Ctx, r: &StoredResource) -> bool {
    if let Some(inm) = ctx.header(header::IF_NONE_MATCH.as_str()) {
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || parse_etag(t) == Some(r.version));
    }
    if let Some(ims) = ctx.header(header::IF_MODIFIED_SINCE.as_str()) {
        if let Ok(t) = httpdate::parse_http_date(ims) {
            let last = std::time::SystemTime::from(r.last_updated);
            // HTTP dates have whole seconds: compare at that precision.
            let secs = |s: std::time::SystemTime| {
                s.duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            };
            return secs(last) <= secs(t);
        }
    }
    false
}

/// The version number in an entity tag: `W/"3"` or `"3"`.
pub(crate) fn parse_etag(tag: &str) -> Option<u64> {
    let t = tag.trim();
    let t = t.strip_prefix("W/").unwrap_or(t);
    t.strip_prefix('"')?.strip_suffix('"')?.parse().ok()
}
