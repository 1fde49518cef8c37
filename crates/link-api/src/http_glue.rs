//! HTTP in and out: the request line, query, conditional headers and body become a
//! [`link_model::Request`]; an [`link_model::Outcome`] or [`link_model::ArmError`] becomes
//! the ARM response. Reads run on the current snapshot; mutations run one at a time and are
//! durable and published before the response is sent.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use link_model::{ArmError, Kind, Method, Outcome, Principal};
use serde_json::Value;

use crate::{persist, ControlPlane};

/// Bodies larger than this are refused (ARM's own limit is 4 MB).
const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The management API. Every request must carry an `Extension<Principal>` (inserted by the
/// authentication layer in front); without one the answer is 401 `AuthenticationFailed`.
pub fn router(cp: Arc<ControlPlane>) -> Router {
    Router::new().fallback(move |req: Request| {
        let cp = cp.clone();
        async move { handle(cp, req).await }
    })
}

fn json_response(status: u16, body: Option<&Value>, extra: &[(&str, String)]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match body {
        Some(b) => (status, b.to_string()).into_response(),
        None => status.into_response(),
    };
    let h = resp.headers_mut();
    if body.is_some() {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        );
    }
    let rid = uuid::Uuid::new_v4().to_string();
    for (name, value) in [
        ("x-ms-request-id", &rid),
        ("x-ms-correlation-request-id", &rid),
    ]
    .into_iter()
    .chain(extra.iter().map(|(n, v)| (*n, v)))
    {
        if let (Ok(n), Ok(v)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    resp
}

fn error_response(e: &ArmError) -> Response {
    if e.status >= 500 {
        tracing::error!(code = %e.code, message = %e.message, "management request failed");
    }
    // A busy or full store is passing: say when to come back (RFC 9110 §10.2.3).
    let retry = match e.status {
        503 => Some("1"),
        507 => Some("5"),
        _ => None,
    };
    let extra: Vec<(&str, String)> = retry
        .map(|s| ("retry-after", s.to_owned()))
        .into_iter()
        .collect();
    json_response(e.status, Some(&e.to_json()), &extra)
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn store_error(e: &fhir_store::StoreError) -> ArmError {
    match e {
        fhir_store::StoreError::Busy => ArmError::new(
            503,
            "ServiceUnavailable",
            "The store is busy; retry the request.",
        ),
        // The disk is full: nothing was changed, and the same request succeeds once space
        // is freed (the store recovers by itself).
        fhir_store::StoreError::StorageFull(_) => ArmError::new(
            507,
            "InsufficientStorage",
            "The server's disk is full; the request was not applied. Retry it later.",
        ),
        other => ArmError::new(
            500,
            "InternalServerError",
            format!("The store failed: {other}"),
        ),
    }
}

/// Answers one management request, with its [`link_model::ArmAction`] in the response's
/// extensions: the action `link_model` authorized it as, for the audit record and the metrics
/// (which never parse the path again).
async fn handle(cp: Arc<ControlPlane>, req: Request) -> Response {
    let decided = link_model::classify(Method::parse(req.method().as_str()), req.uri().path());
    let mut resp = answer(cp, req).await;
    resp.extensions_mut().insert(decided);
    resp
}

async fn answer(cp: Arc<ControlPlane>, req: Request) -> Response {
    let Some(who) = req.extensions().get::<Principal>().cloned() else {
        return error_response(&ArmError::new(
            401,
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing or does not carry a valid bearer token.",
        ));
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
        Ok(b) => b,
        Err(_) => {
            return error_response(&ArmError::new(
                413,
                "RequestEntityTooLarge",
                "The request body is larger than 4 MB.",
            ))
        }
    };
    let mut api_version = None;
    let mut filter = None;
    let mut top = None;
    let mut skip_token = None;
    if let Some(q) = parts.uri.query() {
        for (k, v) in form_urlencoded::parse(q.as_bytes()) {
            if k.eq_ignore_ascii_case("api-version") {
                api_version = Some(v.into_owned());
            } else if k.eq_ignore_ascii_case("$filter") {
                filter = Some(v.into_owned());
            } else if k.eq_ignore_ascii_case("$top") {
                top = Some(v.into_owned());
            } else if k.eq_ignore_ascii_case("$skiptoken") {
                skip_token = Some(v.into_owned());
            }
        }
    }
    let head = parts.method == http::Method::HEAD;
    let method = Method::parse(parts.method.as_str());
    let path = parts.uri.path().to_owned();
    let if_match = header_str(&parts.headers, header::IF_MATCH).map(str::to_owned);
    let if_none_match = header_str(&parts.headers, header::IF_NONE_MATCH).map(str::to_owned);
    let empty = BTreeSet::new();
    let request = link_model::Request {
        method,
        path: &path,
        api_version: api_version.as_deref(),
        filter: filter.as_deref(),
        top: top.as_deref(),
        skip_token: skip_token.as_deref(),
        if_match: if_match.as_deref(),
        if_none_match: if_none_match.as_deref(),
        body: &bytes,
        taken_service_names: &empty,
    };
    let mut lagging = Vec::new();
    let result = if method.is_mutation() {
        match mutate(&cp, request, &who, None).await {
            Ok((out, Some(target))) => {
                // Answered once every live node enforces the change, or after the bound.
                lagging = cp.confirm(target).await;
                Ok(out)
            }
            Ok((out, None)) => Ok(out),
            Err(e) => Err(e),
        }
    } else {
        let state = cp.snapshot();
        link_model::handle(&state, &request, &who, chrono::Utc::now()).map(|mut out| {
            if let Some(body) = out.response.body.as_mut() {
                state.mark_endpoint_faults(body);
            }
            out
        })
    };
    match result {
        Ok(out) if head => {
            let status = if out.response.status == 200 {
                204
            } else {
                out.response.status
            };
            json_response(status, None, &[])
        }
        Ok(out) => {
            let mut extra = out
                .response
                .body
                .as_ref()
                .and_then(|b| b.get("etag"))
                .and_then(Value::as_str)
                .map(|e| vec![("etag", e.to_owned())])
                .unwrap_or_default();
            if !lagging.is_empty() {
                extra.push((LAGGING_NODES_HEADER, lagging.join(",")));
            }
            json_response(out.response.status, out.response.body.as_ref(), &extra)
        }
        Err(e) if head => json_response(e.status, None, &[]),
        Err(e) => error_response(&e),
    }
}

/// Names of data-plane services in the store that no ARM service claims: they are taken.
async fn taken_names(
    cp: &ControlPlane,
    state: &link_model::State,
) -> Result<BTreeSet<String>, ArmError> {
    let owned: BTreeSet<String> = state
        .of_kind(Kind::FhirService)
        .map(|r| r.name().to_lowercase())
        .collect();
    let all = cp
        .store
        .list_services()
        .await
        .map_err(|e| store_error(&e))?;
    Ok(all
        .into_iter()
        .map(|n| n.to_lowercase())
        .filter(|n| !owned.contains(n))
        .collect())
}

/// The response header that names the nodes which had not applied a management change when
/// its answer was sent (comma-separated node ids; absent when every live node had).
pub const LAGGING_NODES_HEADER: &str = "x-fhirlink-lagging-nodes";

/// How often a mutation decides again after another node's write got in between.
const ATTEMPTS: u32 = 10;

/// Runs one mutation: catch up with the other nodes' changes, decide, create new services'
/// stores, persist, publish. `adopting` names a data-plane service that already exists in
/// the store and is being made an ARM resource: it is not taken, and its data is never
/// removed if the write fails. Returns the outcome and, for a change, the feed position the
/// other nodes must reach before it is answered.
pub(crate) async fn mutate(
    cp: &ControlPlane,
    request: link_model::Request<'_>,
    who: &Principal,
    adopting: Option<&str>,
) -> Result<(Outcome, Option<u64>), ArmError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut tracked = cp.writer.lock().await;
        // Decide on the newest state: another node may have changed it a moment ago.
        cp.catch_up(&mut tracked)
            .await
            .map_err(|e| open_error(&e))?;
        let state = cp.snapshot();
        let needs_names = request
            .path
            .to_ascii_lowercase()
            .contains("microsoft.healthcareapis");
        let mut taken = if needs_names {
            taken_names(cp, &state).await?
        } else {
            BTreeSet::new()
        };
        if let Some(name) = adopting {
            taken.remove(&name.to_lowercase());
        }
        let req = link_model::Request {
            taken_service_names: &taken,
            ..request.clone()
        };
        let mut out = link_model::handle(&state, &req, who, chrono::Utc::now())?;
        let Some(next) = out.state.take() else {
            return Ok((out, None));
        };
        for name in &out.changes.services_created {
            cp.store
                .create_service(name)
                .await
                .map_err(|e| store_error(&e))?;
        }
        match persist::write(cp.store.as_ref(), &mut tracked, &out.changes).await {
            Ok(()) => {}
            Err(e) => {
                for name in &out.changes.services_created {
                    if adopting.is_none_or(|a| !a.eq_ignore_ascii_case(name)) {
                        let _ = cp.store.delete_service(name).await;
                    }
                }
                if matches!(e, fhir_store::StoreError::Conflict { .. }) {
                    if attempt < ATTEMPTS {
                        // Another node changed the state: reload and decide again.
                        cp.reload_locked(&mut tracked)
                            .await
                            .map_err(|e| open_error(&e))?;
                        continue;
                    }
                    return Err(ArmError::new(
                        503,
                        "ServiceUnavailable",
                        "The resource kept changing under this request; retry it.",
                    ));
                }
                return Err(store_error(&e));
            }
        }
        cp.publish(next);
        // The feed now holds this write: the position the other nodes must reach. A change
        // another node made in between is applied here too (the state reloaded).
        let target = match cp.catch_up(&mut tracked).await {
            Ok(_) => tracked.position,
            Err(e) => {
                tracing::error!(error = %e, "reading the change feed after a management write");
                tracked.position + 1
            }
        };
        let published = cp.snapshot();
        drop(tracked);
        if let Some(body) = out.response.body.as_mut() {
            published.mark_endpoint_faults(body);
        }
        for name in &out.changes.services_deleted {
            if let Err(e) = cp.store.delete_service(name).await {
                tracing::error!(service = %name, error = %e, "deleting the data of a FHIR service failed");
            }
        }
        return Ok((out, Some(target)));
    }
}

fn open_error(e: &crate::OpenError) -> ArmError {
    match e {
        crate::OpenError::Store(e) => store_error(e),
        other => ArmError::new(500, "InternalServerError", other.to_string()),
    }
}
