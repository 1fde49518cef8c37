//! `/.well-known/smart-configuration` (SMART App Launch 2.0 §conformance): which issuer's
//! tokens the service takes and what they may say, from the service's [`Security`] as the
//! authentication layer in front found it.
//!
//! For an external authority the endpoints to get a token from are those its discovery
//! document names (an authority that could not be reached leaves them out). fhirlink's own
//! issuer has one token endpoint per service, `[base]/auth/token`, for SMART Backend Services
//! clients (`client_credentials` with a `private_key_jwt` assertion); its other tokens come
//! from `fhirlink token`. This module asks no issuer itself; it renders what it is handed.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::access::Security;
use crate::error::FhirError;

/// The SMART configuration document of a service with `security`; without it (no
/// authentication layer in front) there is none.
pub(crate) fn configuration(
    security: Option<&Security>,
    base: &str,
) -> Result<Response, FhirError> {
    let Some(security) = security else {
        return Err(FhirError::not_found(
            "this server has no SMART configuration without its authentication layer",
        ));
    };
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        document(security, base).to_string(),
    )
        .into_response())
}

/// The document: the issuer (as its discovery document names it, when known), the scopes
/// and capabilities this server honours, the audience, then whatever the issuer's discovery
/// document said about getting a token.
fn document(security: &Security, base: &str) -> Value {
    let mut capabilities = vec![
        "permission-v1",
        "permission-v2",
        "permission-patient",
        "permission-user",
        "context-standalone-patient",
    ];
    if security.backend_services {
        capabilities.push("client-confidential-asymmetric");
    }
    let mut body = json!({
        "issuer": security.discovered_issuer.as_deref().unwrap_or(&security.issuer),
        "scopes_supported": [
            "openid", "fhirUser", "launch/patient",
            "patient/*.cruds", "user/*.cruds", "system/*.cruds",
            "patient/*.read", "user/*.read", "system/*.read"
        ],
        "capabilities": capabilities,
        "audience": security.audience,
    });
    let optional = [
        ("jwks_uri", security.jwks_uri.clone().map(Value::from)),
        (
            "authorization_endpoint",
            security.authorize_endpoint.clone().map(Value::from),
        ),
        (
            "token_endpoint",
            security.token_endpoint_at(base).map(Value::from),
        ),
        (
            "grant_types_supported",
            security
                .grant_types_supported
                .clone()
                .or_else(|| {
                    security
                        .backend_services
                        .then(|| vec!["client_credentials".to_owned()])
                })
                .map(Value::from),
        ),
        (
            "token_endpoint_auth_methods_supported",
            security
                .backend_services
                .then(|| json!(["private_key_jwt"])),
        ),
        (
            "token_endpoint_auth_signing_alg_values_supported",
            security
                .backend_services
                .then(|| json!(crate::access::ASSERTION_ALGORITHMS)),
        ),
        (
            "code_challenge_methods_supported",
            security
                .code_challenge_methods_supported
                .clone()
                .map(Value::from),
        ),
    ];
    for (name, value) in optional {
        if let Some(v) = value {
            body[name] = v;
        }
    }
    body
}
