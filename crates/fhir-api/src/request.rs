//! What every interaction needs to know about its request: the service, the base URL, the
//! query parameters, the negotiated format and the client's preferences.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use fhir_model::json::JsonError;
use fhir_model::{IssueCode, Summary};
use serde_json::Value;

use crate::error::FhirError;
use crate::negotiate::{self, Representation};
use crate::AppState;

/// `Prefer: return=…` (FHIR R4 http.html#ops).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

pub(crate) struct Ctx {
    pub(crate) state: AppState,
    pub(crate) service: String,
    /// The FHIR base URL as the client addressed us, without a trailing slash.
    pub(crate) base: String,
    pub(crate) headers: HeaderMap,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) repr: Representation,
    pub(crate) pretty: bool,
    /// `Prefer: return=…` when the client said it.
    pub(crate) prefer_return: Option<Return>,
    /// What the caller may do (checked per interaction, and per bundle entry); shared with
    /// the authentication layer, which prepares one per verified token.
    pub(crate) access: std::sync::Arc<crate::access::Access>,
}

impl Ctx {
    pub(crate) fn new(
        state: AppState,
        service: String,
        headers: HeaderMap,
        host: Option<&str>,
        query: Option<&str>,
        access: std::sync::Arc<crate::access::Access>,
    ) -> Result<Ctx, FhirError> {
        let params: Vec<(String, String)> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let format = params
            .iter()
            .find(|(k, _)| k == "_format")
            .map(|(_, v)| v.as_str());
        let repr = negotiate::response_format(&headers, format)?;
        let pretty = match params.iter().find(|(k, _)| k == "_pretty") {
            None => false,
            Some((_, v)) if v == "true" => true,
            Some((_, v)) if v == "false" => false,
            Some((_, v)) => {
                return Err(FhirError::bad_request(format!(
                    "_pretty must be true or false, not '{v}'"
                ))
                .at("_pretty"))
            }
        };
        let prefer_return = prefer_return(&headers);
        let base = base_url(host, state.inner.config.https);
        Ok(Ctx {
            state,
            service,
            base,
            headers,
            params,
            repr,
            pretty,
            prefer_return,
            access,
        })
    }

    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `_summary` on a read or a history (`count` is not a view of one resource).
    pub(crate) fn summary(&self) -> Result<Option<Summary>, FhirError> {
        parse_summary(self.param("_summary"))
    }

    /// `_elements`, split on commas.
    pub(crate) fn elements(&self) -> Option<Vec<String>> {
        self.param("_elements").map(|v| {
            v.split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        })
    }

    /// Parses a request body as one JSON value (400 when malformed).
    pub(crate) fn parse_json(&self, body: &[u8]) -> Result<Value, FhirError> {
        parse_json(body)
    }
}

pub(crate) fn parse_json(body: &[u8]) -> Result<Value, FhirError> {
    if body.is_empty() {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            "the request body is empty; a FHIR resource in JSON is required",
        ));
    }
    // Duplicate keys are refused with their path (fhir_model::json), where serde_json alone
    // would keep the last silently.
    fhir_model::json::parse(body).map_err(|e| {
        let err = FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            match &e {
                JsonError::Syntax(e) => format!("the request body is not valid JSON: {e}"),
                dup => dup.to_string(),
            },
        );
        match e.expression() {
            Some(at) => err.at(at),
            None => err,
        }
    })
}

pub(crate) fn parse_summary(v: Option<&str>) -> Result<Option<Summary>, FhirError> {
    Ok(match v {
        None | Some("false") => None,
        Some("true") => Some(Summary::True),
        Some("text") => Some(Summary::Text),
        Some("data") => Some(Summary::Data),
        Some("count") => Some(Summary::Count),
        Some(other) => {
            return Err(FhirError::bad_request(format!(
                "_summary must be one of true, text, data, count, false; not '{other}'"
            ))
            .at("_summary"))
        }
    })
}

fn prefer_return(headers: &HeaderMap) -> Option<Return> {
    for v in headers.get_all("prefer") {
        let Ok(v) = v.to_str() else { continue };
        for pref in v.split([',', ';']) {
            let pref = pref.trim();
            if let Some(r) = pref.strip_prefix("return=") {
                match r.trim_matches('"') {
                    "minimal" => return Some(Return::Minimal),
                    "OperationOutcome" => return Some(Return::OperationOutcome),
                    "representation" => return Some(Return::Representation),
                    _ => {}
                }
            }
        }
    }
    None
}

/// `http(s)://<Host>` when the Host (HTTP/1.1) or `:authority` (HTTP/2) is a plausible host
/// name, else `…://localhost`. The Host is only echoed in links; it decides nothing.
pub(crate) fn base_url(host: Option<&str>, https: bool) -> String {
    let host = host
        .filter(|h| {
            !h.is_empty()
                && h.len() <= 255
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
        })
        .unwrap_or("localhost");
    let scheme = if https { "https" } else { "http" };
    format!("{scheme}://{host}")
}

/// The most of a refused request's body read (and dropped) before answering.
pub const DRAIN_LIMIT: usize = 1024 * 1024;

/// Reads and drops what is left of a request body, up to [`DRAIN_LIMIT`] and for at most
/// two seconds: a client still sending a body it will not need then reads the answer
/// instead of a reset. A larger or slower body is cut off.
pub async fn drain(body: Body) {
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        axum::body::to_bytes(body, DRAIN_LIMIT),
    )
    .await;
}

/// Reads the whole body, refusing with 413 what exceeds the configured limit.
pub(crate) async fn read_body(body: Body, limit: usize) -> Result<Bytes, FhirError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .map(|s| s.is::<http_body_util::LengthLimitError>())
            .unwrap_or(false)
            || e.to_string().contains("length limit");
        if too_large {
            FhirError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueCode::TooLong,
                format!("the request body exceeds the limit of {limit} bytes"),
            )
        } else {
            FhirError::bad_request(format!("the request body could not be read: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Regression (issue #15, defect 8): a body naming a property twice was stored with the
    // last value; it is a 400 whose issue names the duplicated element.
    #[test]
    fn regression_15_8_duplicate_keys_are_a_400_with_the_element_path() {
        let e = parse_json(br#"{"resourceType":"Patient","name":[{"family":"a","family":"b"}]}"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert_eq!(e.issues.len(), 1);
        assert_eq!(e.issues[0].code, IssueCode::Structure);
        assert_eq!(
            e.issues[0].expression.as_deref(),
            Some("Patient.name[0].family")
        );
        assert!(e.issues[0].diagnostics.contains("'family' appears twice"));
        let e = parse_json(b"{\"a\":").unwrap_err();
        assert_eq!(e.issues[0].expression, None);
        assert!(parse_json(br#"{"resourceType":"Patient","gender":"male"}"#).is_ok());
    }
}
