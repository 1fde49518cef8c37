//! The CapabilityStatement (FHIR R4 capabilitystatement.html), generated from what this
//! build really does: the interaction lists here are the ones `route` dispatches.

use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::Definitions;
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::request::Ctx;
use crate::respond;

/// Type-level interactions every resource type supports.
const TYPE_INTERACTIONS: &[&str] = &[
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
];

/// Whole-system interactions.
const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch", "history-system"];

pub(crate) struct Cached {
    statement: Value,
}

impl Cached {
    pub(crate) fn new(defs: &Definitions) -> Cached {
        Cached {
            statement: build(defs, &chrono::Utc::now().format("%Y-%m-%d").to_string()),
        }
    }
}

fn build(defs: &Definitions, date: &str) -> Value {
    let interactions =
        |codes: &[&str]| -> Vec<Value> { codes.iter().map(|c| json!({"code": c})).collect() };
    let resources: Vec<Value> = defs
        .resource_types()
        .iter()
        .map(|t| {
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": interactions(TYPE_INTERACTIONS),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": false,
                "conditionalRead": "full-support",
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
            })
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "fhirlink",
        "kind": "instance",
        "software": {
            "name": "fhirlink",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "implementation": {
            "description": "fhirlink FHIR R4 server",
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/fhir+json", "application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "resource": resources,
            "interaction": interactions(SYSTEM_INTERACTIONS),
        }],
    })
}

pub(crate) fn capabilities(ctx: &Ctx) -> Result<Response, FhirError> {
    let mut statement = ctx.state.inner.capabilities.statement.clone();
    statement["implementation"]["url"] = json!(ctx.base);
    let statement = respond::narrow(ctx, statement, ctx.summary()?, ctx.elements().as_deref());
    Ok(respond::json(ctx, StatusCode::OK, &statement))
}
