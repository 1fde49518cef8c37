//! The HTTP face of bulk export (Bulk Data Access IG 2.0.0, in the shape Azure API for FHIR
//! served it): the `$export` kick-off at the system, `Patient` and `Group/[id]` levels, the
//! status URL `[base]/_operations/export/[id]` (poll with GET, cancel with DELETE), and the
//! output files under it. The jobs themselves are [`fhir_bulk::Bulk`]'s; this module turns
//! requests into its calls and its answers into responses, every error an OperationOutcome.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_bulk::{BulkError, ExportLevel, ExportParams, KickOff, Status};
use fhir_model::IssueCode;
use serde_json::Value;

use crate::error::FhirError;
use crate::interaction::Level;
use crate::request::{read_body, Ctx};
use crate::respond;

/// The canonical OperationDefinitions of the three kick-offs (Bulk Data IG 2.0.0).
pub(crate) const EXPORT_DEFINITIONS: [(&str, &str); 3] = [
    (
        "system",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
    ),
    (
        "Patient",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export",
    ),
    (
        "Group",
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export",
    ),
];

fn engine(ctx: &Ctx) -> Result<&std::sync::Arc<fhir_bulk::Bulk>, FhirError> {
    ctx.state.inner.bulk.as_ref().ok_or_else(|| {
        FhirError::new(
            StatusCode::NOT_IMPLEMENTED,
            IssueCode::NotSupported,
            "bulk export is not enabled on this server",
        )
    })
}

pub(crate) fn bulk_error(e: BulkError) -> FhirError {
    match e {
        BulkError::Invalid { param, message } => FhirError::bad_request(message).at(param),
        BulkError::NotFound(m) => FhirError::not_found(m),
        // Retry-After comes with the 429 (error.rs).
        BulkError::TooMany { .. } | BulkError::PolledTooFast { .. } => FhirError::new(
            StatusCode::TOO_MANY_REQUESTS,
            IssueCode::Throttled,
            e.to_string(),
        ),
        BulkError::Store(s) => s.into(),
        BulkError::Io(m) => {
            FhirError::new(StatusCode::INTERNAL_SERVER_ERROR, IssueCode::Exception, m)
        }
    }
}

/// `Prefer: handling=lenient` (FHIR R4 search.html#errors, as the IG uses it).
fn lenient(ctx: &Ctx) -> bool {
    ctx.headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=lenient"))
}

/// The export level of an operation's level, or 404 where `$export` is not defined.
fn export_level(level: Level<'_>) -> Result<ExportLevel, FhirError> {
    match level {
        Level::System => Ok(ExportLevel::System),
        Level::Type("Patient") => Ok(ExportLevel::Patient),
        Level::Instance("Group", id) => Ok(ExportLevel::Group(id.to_owned())),
        Level::Type(t) => Err(FhirError::not_found(format!(
            "$export is defined at the system level, on Patient and on Group/[id], not on {t}"
        ))),
        Level::Instance(t, id) | Level::Version(t, id, _) => Err(FhirError::not_found(format!(
            "$export is defined at the system level, on Patient and on Group/[id], not on {t}/{id}"
        ))),
    }
}

/// The kick-off: `202 Accepted` with the absolute status URL in `Content-Location`. Taken
/// with or without `Prefer: respond-async` (the IG lets a server assume it), by GET, and
/// by POST with a Parameters body or with the parameters in the query and no body.
pub(crate) async fn kick_off(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
    limit: usize,
    path: &str,
    query: Option<&str>,
) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    let level = export_level(level)?;
    let lenient = lenient(ctx);
    let query_params: Vec<(String, String)> = ctx
        .params
        .iter()
        .filter(|(k, _)| k != "_format" && k != "_pretty")
        .cloned()
        .collect();
    let params = if post {
        let bytes = read_body(body, limit).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            ExportParams::from_query(level, &query_params, lenient)
        } else {
            let v: Value = fhir_model::json::parse(&bytes)
                .map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))?;
            ExportParams::from_parameters(level, &v, &query_params, lenient)
        }
    } else {
        ExportParams::from_query(level, &query_params, lenient)
    }
    .map_err(bulk_error)?;
    let request = match query {
        Some(q) if !q.is_empty() => format!("{}{path}?{q}", ctx.base),
        _ => format!("{}{path}", ctx.base),
    };
    let job = bulk
        .kick_off_export(
            KickOff {
                service: ctx.service.clone(),
                base: ctx.base.clone(),
                request,
                owner: ctx.access.principal.clone(),
            },
            params,
        )
        .await
        .map_err(bulk_error)?;
    Ok(accepted(
        ctx,
        "export",
        &fhir_bulk::status_url(&ctx.base, &job),
    ))
}

/// A poll (`GET`) or a cancellation (`DELETE`) of the status URL.
pub(crate) async fn status(ctx: &Ctx, id: &str, cancel: bool) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    if cancel {
        bulk.cancel(&ctx.service, id).await.map_err(bulk_error)?;
        return Ok(respond::json(
            ctx,
            StatusCode::ACCEPTED,
            &respond::information(&format!(
                "export job {id} was cancelled and its files removed"
            )),
        ));
    }
    match bulk
        .status(&ctx.service, id, &ctx.base)
        .await
        .map_err(bulk_error)?
    {
        Status::InProgress {
            progress,
            retry_after,
        } => Ok(in_progress(&progress, retry_after)),
        Status::Completed { manifest, expires } => {
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&manifest).unwrap_or_default(),
            )
                .into_response();
            set_expires(&mut resp, expires);
            Ok(resp)
        }
        Status::Failed { message } => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            format!("the export failed: {message}"),
        )),
    }
}

/// A kick-off's `202 Accepted`, the absolute status URL in `Content-Location`.
fn accepted(ctx: &Ctx, what: &str, url: &str) -> Response {
    let mut resp = respond::json(
        ctx,
        StatusCode::ACCEPTED,
        &respond::information(&format!("the {what} was accepted; poll {url}")),
    );
    if let Ok(v) = HeaderValue::from_str(url) {
        resp.headers_mut().insert(header::CONTENT_LOCATION, v);
    }
    resp
}

/// A running job's poll: `202` with `X-Progress` (at most 100 characters, IG 2.0.0) and
/// `Retry-After`.
fn in_progress(progress: &str, retry_after: std::time::Duration) -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    let h = resp.headers_mut();
    let progress: String = progress.chars().take(100).collect();
    if let Ok(v) = HeaderValue::from_str(&progress) {
        h.insert("x-progress", v);
    }
    h.insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after.as_secs().max(1)),
    );
    resp
}

fn set_expires(resp: &mut Response, expires: chrono::DateTime<chrono::Utc>) {
    let expires = std::time::SystemTime::UNIX_EPOCH
        + std::time::Duration::from_secs(u64::try_from(expires.timestamp()).unwrap_or(0));
    if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(expires)) {
        resp.headers_mut().insert(header::EXPIRES, v);
    }
}

/// One output file, streamed as `application/fhir+ndjson`.
pub(crate) async fn file(ctx: &Ctx, id: &str, name: &str) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    let (path, _job) = bulk
        .file(&ctx.service, id, name)
        .await
        .map_err(bulk_error)?;
    stream_ndjson(&path, name).await
}

async fn stream_ndjson(path: &std::path::Path, name: &str) -> Result<Response, FhirError> {
    let file = tokio::fs::File::open(path).await.map_err(|e| {
        FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            format!("bulk file {name}: {e}"),
        )
    })?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        file,
        256 * 1024,
    ));
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/fhir+ndjson")],
        body,
    )
        .into_response();
    if let Some(len) = len {
        resp.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    }
    Ok(resp)
}

/// `POST [base]/$import` (AHDS's shape): `202 Accepted` with the absolute status URL
/// `[base]/_operations/import/[id]` in `Content-Location`.
pub(crate) async fn import_kick_off(
    ctx: &Ctx,
    body: Body,
    limit: usize,
    path: &str,
) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    let bytes = read_body(body, limit).await?;
    let v: Value = fhir_model::json::parse(&bytes)
        .map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))?;
    let params = fhir_bulk::ImportParams::from_parameters(
        &v,
        lenient(ctx),
        &bulk.config().import_dirs,
        &bulk.config().import_urls,
    )
    .map_err(bulk_error)?;
    let job = bulk
        .kick_off_import(
            KickOff {
                service: ctx.service.clone(),
                base: ctx.base.clone(),
                request: format!("{}{path}", ctx.base),
                owner: ctx.access.principal.clone(),
            },
            params,
        )
        .await
        .map_err(bulk_error)?;
    Ok(accepted(
        ctx,
        "import",
        &fhir_bulk::import::status_url(&ctx.base, &job.id),
    ))
}

/// A poll (`GET`) or a cancellation (`DELETE`) of an import's status URL.
pub(crate) async fn import_status(
    ctx: &Ctx,
    id: &str,
    cancel: bool,
) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    if cancel {
        bulk.cancel_import(&ctx.service, id)
            .await
            .map_err(bulk_error)?;
        return Ok(respond::json(
            ctx,
            StatusCode::ACCEPTED,
            &respond::information(&format!(
                "import job {id} was cancelled; what it had written stays"
            )),
        ));
    }
    match bulk
        .import_status(&ctx.service, id, &ctx.base)
        .await
        .map_err(bulk_error)?
    {
        fhir_bulk::ImportStatus::InProgress { progress } => {
            Ok(in_progress(&progress, bulk.config().retry_after))
        }
        fhir_bulk::ImportStatus::Completed { manifest, expires } => {
            let mut resp = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                serde_json::to_vec(&manifest).unwrap_or_default(),
            )
                .into_response();
            set_expires(&mut resp, expires);
            Ok(resp)
        }
        fhir_bulk::ImportStatus::Failed { message, .. } => Err(FhirError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            IssueCode::Exception,
            format!("the import failed (what it wrote before stays): {message}"),
        )),
    }
}

/// An import's error file, streamed as `application/fhir+ndjson`.
pub(crate) async fn import_file(ctx: &Ctx, id: &str, name: &str) -> Result<Response, FhirError> {
    let bulk = engine(ctx)?;
    let path = bulk
        .import_file(&ctx.service, id, name)
        .await
        .map_err(bulk_error)?;
    stream_ndjson(&path, name).await
}
