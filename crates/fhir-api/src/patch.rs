//! The two patch formats (FHIR R4 http.html#patch): JSON Patch (RFC 6902,
//! `application/json-patch+json`) and FHIRPath Patch (a Parameters resource, fhirpatch.html).

use axum::http::StatusCode;
use fhir_model::IssueCode;
use serde_json::Value;

use crate::error::FhirError;

/// A parsed patch document, ready to apply to the current version of a resource.
pub(crate) enum Patch {
    Json(json_patch::Patch),
    FhirPath(Value),
}

impl Patch {
    pub(crate) fn json(doc: Value) -> Result<Patch, FhirError> {
        serde_json::from_value::<json_patch::Patch>(doc)
            .map(Patch::Json)
            .map_err(|e| {
                FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::Structure,
                    format!("not a JSON Patch document: {e}"),
                )
            })
    }

    pub(crate) fn fhirpath(doc: Value) -> Result<Patch, FhirError> {
        if doc.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                "a FHIRPath Patch is a Parameters resource; for JSON Patch send \
                 Content-Type application/json-patch+json",
            ));
        }
        let issues = fhir_model::r4().validate(&doc);
        if issues.iter().any(|i| i.is_error()) {
            return Err(FhirError::invalid(issues));
        }
        Ok(Patch::FhirPath(doc))
    }

    pub(crate) fn apply(&self, resource: &mut Value) -> Result<(), FhirError> {
        match self {
            Patch::Json(p) => json_patch::patch(resource, &p.0).map_err(|e| {
                FhirError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    IssueCode::Processing,
                    format!("the JSON Patch cannot be applied: {e}"),
                )
            }),
            Patch::FhirPath(params) => {
                let defs = fhir_model::r4();
                let repeats = |path: &str| defs.is_repeating(path).unwrap_or(false);
                fhir_path::patch::apply_with(resource, params, &repeats).map_err(|e| {
                    let status = if e.is_malformed() {
                        StatusCode::BAD_REQUEST
                    } else {
                        StatusCode::UNPROCESSABLE_ENTITY
                    };
                    FhirError::new(
                        status,
                        IssueCode::Processing,
                        format!("the FHIRPath Patch cannot be applied: {e}"),
                    )
                })
            }
        }
    }
}
