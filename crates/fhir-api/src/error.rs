//! FHIR errors and their one wire form: an OperationOutcome with the right HTTP status.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_model::{operation_outcome, Issue, IssueCode};
use fhir_store::StoreError;

/// A failed interaction: the status and the issues that explain it.
#[derive(Debug, Clone)]
pub struct FhirError {
    pub status: StatusCode,
    pub issues: Vec<Issue>,
    /// Extra headers (e.g. `Allow` on 405).
    pub allow: Option<&'static str>,
}

impl FhirError {
    pub fn new(status: StatusCode, code: IssueCode, msg: impl Into<String>) -> FhirError {
        FhirError {
            status,
            issues: vec![Issue::error(code, msg)],
            allow: None,
        }
    }

    pub fn bad_request(msg: impl Into<String>) -> FhirError {
        FhirError::new(StatusCode::BAD_REQUEST, IssueCode::Invalid, msg)
    }

    pub fn not_found(msg: impl Into<String>) -> FhirError {
        FhirError::new(StatusCode::NOT_FOUND, IssueCode::NotFound, msg)
    }

    pub fn at(mut self, expression: impl Into<String>) -> FhirError {
        let expression = expression.into();
        for i in &mut self.issues {
            i.expression = Some(expression.clone());
        }
        self
    }

    /// Validation issues: 400 for structure, 422 when every error is a business rule.
    pub fn invalid(issues: Vec<Issue>) -> FhirError {
        let errors = issues.iter().filter(|i| i.is_error());
        let status = if errors.clone().all(Issue::is_business_rule) && errors.count() > 0 {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        FhirError {
            status,
            issues,
            allow: None,
        }
    }

    pub fn method_not_allowed(method: &str, what: &str, allow: &'static str) -> FhirError {
        let mut e = FhirError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            IssueCode::NotSupported,
            format!("{method} is not allowed on {what}; allowed: {allow}"),
        );
        e.allow = Some(allow);
        e
    }

    /// Prefixes every issue's expression (used for bundle entries: `Bundle.entry[3].resource`).
    pub fn within(mut self, prefix: &str, resource_type: Option<&str>) -> FhirError {
        for i in &mut self.issues {
            i.expression = Some(match (&i.expression, resource_type) {
                (Some(e), Some(t)) if e == t || e.starts_with(&format!("{t}.")) => {
                    format!("{prefix}{}", &e[t.len()..])
                }
                (Some(e), _) => format!("{prefix}.{e}"),
                (None, _) => prefix.to_string(),
            });
        }
        self
    }

    pub fn outcome(&self) -> serde_json::Value {
        operation_outcome(&self.issues)
    }
}

impl From<StoreError> for FhirError {
    fn from(e: StoreError) -> FhirError {
        match e {
            StoreError::NoSuchService(s) => {
                FhirError::not_found(format!("FHIR service '{s}' does not exist"))
            }
            StoreError::AlreadyExists(t, id) => FhirError::new(
                StatusCode::CONFLICT,
                IssueCode::Duplicate,
                format!("{t}/{id} already exists"),
            ),
            StoreError::Conflict { .. } => {
                FhirError::new(StatusCode::CONFLICT, IssueCode::Conflict, e.to_string())
            }
            // FHIR R4 valueset-issue-type: too-costly, "the operation was stopped to protect
            // server resources"; the request was understood and cannot be answered as is.
            StoreError::TooCostly(msg) => {
                FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, IssueCode::TooCostly, msg)
            }
            StoreError::Busy => FhirError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                IssueCode::Throttled,
                "the store is busy; try again",
            ),
            // WebDAV's 507 (RFC 4918 §11.5), as other FHIR servers answer a full disk: the
            // request was not applied and may be repeated as it is once space is freed,
            // which the store notices by itself (no restart).
            StoreError::StorageFull(msg) => {
                log_storage_full(&msg);
                FhirError::new(
                    StatusCode::INSUFFICIENT_STORAGE,
                    IssueCode::Exception,
                    "insufficient storage: the server's disk is full; the request was not \
                     applied, try again later",
                )
            }
            StoreError::Backend(msg) => {
                tracing::error!(error = %msg, "storage failure");
                FhirError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    IssueCode::Exception,
                    "storage failure; the request was not applied",
                )
            }
        }
    }
}

impl IntoResponse for FhirError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.outcome()).unwrap_or_default();
        let mut resp = (self.status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::negotiate::FHIR_JSON),
        );
        if let Some(allow) = self.allow {
            h.insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        // A busy or full store is passing: say when to come back (RFC 9110 §10.2.3).
        if let Some(after) = retry_after(self.status) {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static(after));
        }
        resp
    }
}

/// Logs a full disk at most every ten seconds: until space is freed every write fails the
/// same way, and a line per request would flood the log (often on the same disk).
fn log_storage_full(msg: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    if (last == 0 || now >= last + 10)
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let more = SINCE.swap(0, Ordering::Relaxed);
        tracing::error!(
            error = %msg,
            refused_since_last_report = more,
            "storage is full: writes are answered 507 until space is freed"
        );
    } else {
        SINCE.fetch_add(1, Ordering::Relaxed);
    }
}

/// The `Retry-After` of a status that means "not now": seconds, as text.
fn retry_after(status: StatusCode) -> Option<&'static str> {
    match status {
        StatusCode::SERVICE_UNAVAILABLE => Some("1"),
        StatusCode::INSUFFICIENT_STORAGE => Some("5"),
        // A bulk job polled too often, or a kick-off over the job limit.
        StatusCode::TOO_MANY_REQUESTS => Some("2"),
        _ => None,
    }
}

/// The last line of defence: a panic becomes a 500 OperationOutcome, never a dropped
/// connection. A panic is a bug; it is logged where it is handled, here.
pub(crate) fn panic_response(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("unknown");
    tracing::error!(panic = detail, "request handler panicked");
    FhirError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        IssueCode::Exception,
        "internal error",
    )
    .into_response()
}
