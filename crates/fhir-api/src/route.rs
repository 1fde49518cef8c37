//! The one entry point: parse the request line into an interaction (FHIR R4 http.html §3.1.0)
//! and call its module. Resource types are data (146 of them), so routing is a match on path
//! segments rather than 146 axum routes.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_model::IssueCode;

use crate::access::Access;
use crate::authorize::{authorize, Admitted};
use crate::error::FhirError;
use crate::request::Ctx;
use crate::search::{self, Scope};
use crate::service::{request_host, service_for_host, AdmittedService};
use crate::{bundle, capabilities, history, read, write, AppState};

pub(crate) async fn dispatch(State(state): State<AppState>, req: Request) -> Response {
    match handle(state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: AppState, req: Request) -> Result<Response, FhirError> {
    let (mut parts, body) = req.into_parts();
    let host = request_host(&parts.headers, &parts.uri);
    let service = match parts.extensions.get::<AdmittedService>() {
        Some(AdmittedService(name)) => name.clone(),
        None => service_for_host(host, &state.inner.config.dns_suffix),
    };
    if !state.inner.store.service_exists(&service).await? {
        return Err(FhirError::not_found(format!(
            "FHIR service '{service}' does not exist"
        )));
    }
    let access = match parts.extensions.remove::<Arc<Access>>() {
        Some(a) => a,
        None if state.inner.config.require_access => {
            return Err(FhirError::new(
                StatusCode::FORBIDDEN,
                IssueCode::Forbidden,
                "no identity was established for this request",
            ))
        }
        None => Arc::new(Access::unrestricted("anonymous")),
    };
    let security = parts.extensions.get::<crate::access::Security>().cloned();
    let segments = decode_segments(parts.uri.path())?;
    let method = parts.method.clone();
    let host = host.map(str::to_owned);
    let mut ctx = Ctx::new(
        state,
        service,
        parts.headers,
        host.as_deref(),
        parts.uri.query(),
        access,
    )?;
    let limit = ctx.state.inner.config.max_body_bytes;
    let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
    let mut body = body;
    let admitted = authorize(
        &ctx.state,
        &ctx.service,
        &ctx.access,
        &method,
        &segs,
        &ctx.params,
        &mut body,
    )
    .await;
    match admitted {
        Err(e) => {
            // Read what the client is still sending before refusing, so that it hears the
            // answer instead of a reset stream (HTTP/2) or connection (HTTP/1.1).
            crate::request::drain(body).await;
            return Err(e);
        }
        Ok(Admitted::AsIs) => {}
        // A patient-scoped type search runs inside the patient's compartment.
        Ok(Admitted::InCompartment(patient)) => {
            return match segs.as_slice() {
                ["Patient", rest @ ..] => {
                    ctx.params.push(("_id".into(), patient));
                    let body = (!rest.is_empty()).then_some(body);
                    search::search(&ctx, Scope::Type("Patient"), body).await
                }
                [t, rest @ ..] => {
                    let body = (!rest.is_empty()).then_some(body);
                    search::search(&ctx, Scope::Compartment("Patient", &patient, t), body).await
                }
                [] => Err(FhirError::bad_request("no type to search")),
            };
        }
    }

    match segs.as_slice() {
        [] => match method {
            Method::POST => bundle::batch_or_transaction(&ctx, body, limit).await,
            Method::GET | Method::HEAD => search::search(&ctx, Scope::System, None).await,
            _ => Err(FhirError::method_not_allowed(
                method.as_str(),
                "the base",
                "GET, POST",
            )),
        },
        ["metadata"] => match method {
            Method::GET | Method::HEAD => capabilities::capabilities(&ctx, security.as_ref()),
            _ => Err(FhirError::method_not_allowed(
                method.as_str(),
                "/metadata",
                "GET",
            )),
        },
        ["_search"] => match method {
            Method::POST => search::search(&ctx, Scope::System, Some(body)).await,
            _ => Err(FhirError::method_not_allowed(
                method.as_str(),
                "/_search",
                "POST",
            )),
        },
        ["_history"] => match method {
            Method::GET => history::system(&ctx).await,
            _ => Err(FhirError::method_not_allowed(
                method.as_str(),
                "/_history",
                "GET",
            )),
        },
        [t, rest @ ..] => {
            let t = *t;
            if !ctx.state.inner.defs.is_resource_type(t) {
                return Err(FhirError::not_found(format!("Unknown resource type '{t}'")));
            }
            match rest {
                [] => match method {
                    Method::POST => write::create(&ctx, t, body, limit).await,
                    Method::GET | Method::HEAD => search::search(&ctx, Scope::Type(t), None).await,
                    Method::PUT => write::conditional_update(&ctx, t, body, limit).await,
                    Method::DELETE => write::conditional_delete(&ctx, t).await,
                    Method::PATCH => write::conditional_patch(&ctx, t, body, limit).await,
                    _ => Err(FhirError::method_not_allowed(
                        method.as_str(),
                        t,
                        "GET, POST, PUT, DELETE",
                    )),
                },
                ["_history"] => match method {
                    Method::GET => history::type_level(&ctx, t).await,
                    _ => Err(FhirError::method_not_allowed(
                        method.as_str(),
                        &format!("{t}/_history"),
                        "GET",
                    )),
                },
                ["_search"] => match method {
                    Method::POST => search::search(&ctx, Scope::Type(t), Some(body)).await,
                    _ => Err(FhirError::method_not_allowed(
                        method.as_str(),
                        &format!("{t}/_search"),
                        "POST",
                    )),
                },
                [id] => {
                    let id = *id;
                    check_id(id)?;
                    match method {
                        Method::GET | Method::HEAD => read::read(&ctx, t, id).await,
                        Method::PUT => write::update(&ctx, t, id, body, limit).await,
                        Method::DELETE => write::delete(&ctx, t, id).await,
                        Method::PATCH => write::patch(&ctx, t, id, body, limit).await,
                        _ => Err(FhirError::method_not_allowed(
                            method.as_str(),
                            &format!("{t}/{id}"),
                            "GET, PUT, PATCH, DELETE",
                        )),
                    }
                }
                [id, "_history"] => {
                    check_id(id)?;
                    match method {
                        Method::GET => history::instance(&ctx, t, id).await,
                        _ => Err(FhirError::method_not_allowed(
                            method.as_str(),
                            &format!("{t}/{id}/_history"),
                            "GET",
                        )),
                    }
                }
                [id, "_history", vid] => {
                    check_id(id)?;
                    match method {
                        Method::GET | Method::HEAD => read::vread(&ctx, t, id, vid).await,
                        _ => Err(FhirError::method_not_allowed(
                            method.as_str(),
                            &format!("{t}/{id}/_history/{vid}"),
                            "GET",
                        )),
                    }
                }
                [id, ct] if *ct != "_history" && ctx.state.inner.defs.is_resource_type(ct) => {
                    check_id(id)?;
                    match method {
                        Method::GET | Method::HEAD => {
                            search::search(&ctx, Scope::Compartment(t, id, ct), None).await
                        }
                        _ => Err(FhirError::method_not_allowed(
                            method.as_str(),
                            &format!("{t}/{id}/{ct}"),
                            "GET",
                        )),
                    }
                }
                [id, ct, "_search"] if ctx.state.inner.defs.is_resource_type(ct) => {
                    check_id(id)?;
                    match method {
                        Method::POST => {
                            search::search(&ctx, Scope::Compartment(t, id, ct), Some(body)).await
                        }
                        _ => Err(FhirError::method_not_allowed(
                            method.as_str(),
                            &format!("{t}/{id}/{ct}/_search"),
                            "POST",
                        )),
                    }
                }
                _ => Err(FhirError::not_found(format!(
                    "no FHIR interaction at '{}'",
                    segments.join("/")
                ))),
            }
        }
    }
}

/// Splits a path into percent-decoded segments, ignoring one trailing slash.
fn decode_segments(path: &str) -> Result<Vec<String>, FhirError> {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    trimmed
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| FhirError::bad_request("the request path is not valid UTF-8"))
        })
        .collect()
}

/// Logical ids are `[A-Za-z0-9\-\.]{1,64}` (FHIR R4 datatypes.html#id).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn check_id(id: &str) -> Result<(), FhirError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Value,
            format!("'{id}' is not a valid resource id: 1-64 of A-Z a-z 0-9 - ."),
        ))
    }
}
