//! Content negotiation (FHIR R4 http.html#mime-type): JSON only, said plainly otherwise.

use axum::http::{HeaderMap, StatusCode};
use fhir_model::IssueCode;

use crate::error::FhirError;

pub(crate) const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
pub(crate) const PLAIN_JSON: &str = "application/json; charset=utf-8";

/// The representation a response is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Representation {
    FhirJson,
    Json,
}

impl Representation {
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Representation::FhirJson => FHIR_JSON,
            Representation::Json => PLAIN_JSON,
        }
    }
}

fn essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

fn is_xml(essence: &str) -> bool {
    matches!(
        essence,
        "application/fhir+xml" | "application/xml" | "text/xml" | "application/xml+fhir" | "xml"
    )
}

/// Chooses the response representation from `_format` (which wins) or `Accept`.
pub(crate) fn response_format(
    headers: &HeaderMap,
    format_param: Option<&str>,
) -> Result<Representation, FhirError> {
    if let Some(f) = format_param {
        let e = essence(f);
        return match e.as_str() {
            "json" | "application/fhir+json" | "application/json+fhir" => {
                Ok(Representation::FhirJson)
            }
            "application/json" => Ok(Representation::Json),
            _ if is_xml(&e) => Err(not_acceptable("XML is not supported yet; use _format=json")),
            _ => Err(not_acceptable(&format!(
                "_format '{f}' is not supported; use json or application/fhir+json"
            ))),
        };
    }
    let Some(accept) = headers.get(axum::http::header::ACCEPT) else {
        return Ok(Representation::FhirJson);
    };
    let Ok(accept) = accept.to_str() else {
        return Err(not_acceptable("the Accept header is not valid text"));
    };
    if accept.trim().is_empty() {
        return Ok(Representation::FhirJson);
    }
    let mut plain_json = false;
    let mut xml = false;
    for range in accept.split(',') {
        let q_zero = range.split(';').skip(1).any(|p| {
            matches!(
                p.trim().replace(' ', "").as_str(),
                "q=0" | "q=0.0" | "q=0.00" | "q=0.000"
            )
        });
        if q_zero {
            continue;
        }
        match essence(range).as_str() {
            "application/fhir+json" | "application/json+fhir" | "*/*" | "application/*" => {
                return Ok(Representation::FhirJson)
            }
            "application/json" => plain_json = true,
            e if is_xml(e) => xml = true,
            _ => {}
        }
    }
    if plain_json {
        Ok(Representation::Json)
    } else if xml {
        Err(not_acceptable(
            "XML is not supported yet; accept application/fhir+json",
        ))
    } else {
        Err(not_acceptable(&format!(
            "cannot produce any of '{accept}'; this server speaks application/fhir+json"
        )))
    }
}

fn not_acceptable(msg: &str) -> FhirError {
    FhirError::new(StatusCode::NOT_ACCEPTABLE, IssueCode::NotSupported, msg)
}

/// The kind of body a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    FhirJson,
    JsonPatch,
}

/// Checks the request's Content-Type; `json_patch` says whether JSON Patch is acceptable here.
pub(crate) fn request_body_kind(
    headers: &HeaderMap,
    json_patch: bool,
) -> Result<BodyKind, FhirError> {
    let Some(ct) = headers.get(axum::http::header::CONTENT_TYPE) else {
        return Err(unsupported(
            "a Content-Type header is required: application/fhir+json",
        ));
    };
    let ct = ct.to_str().map(essence).unwrap_or_default();
    match ct.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => {
            Ok(BodyKind::FhirJson)
        }
        "application/json-patch+json" if json_patch => Ok(BodyKind::JsonPatch),
        e if is_xml(e) => Err(unsupported(
            "XML is not supported yet; send application/fhir+json",
        )),
        other => Err(unsupported(&format!(
            "Content-Type '{other}' is not supported; send application/fhir+json{}",
            if json_patch {
                " (FHIRPath Patch) or application/json-patch+json"
            } else {
                ""
            }
        ))),
    }
}

fn unsupported(msg: &str) -> FhirError {
    FhirError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        IssueCode::NotSupported,
        msg,
    )
}
