//! The CapabilityStatement (FHIR R4 capabilitystatement.html), generated from what this
//! build really does: the interaction lists here are the ones `route` dispatches.

use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::Definitions;
use fhir_search::ParamType;
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
    "search-type",
];

/// Whole-system interactions.
const SYSTEM_INTERACTIONS: &[&str] = &["transaction", "batch", "history-system", "search-system"];

/// Result parameters every search understands (FHIR R4 search.html#all).
const RESULT_PARAMS: &[(&str, &str, &str)] = &[
    (
        "_count",
        "number",
        "Page size: default 50, at most the server's maximum (1000).",
    ),
    (
        "_sort",
        "special",
        "Sort keys, comma-separated; '-' for descending. Ties break by resource order.",
    ),
    (
        "_include",
        "special",
        "Type:param[:target], Type:*; :iterate follows included resources.",
    ),
    (
        "_revinclude",
        "special",
        "Type:param; :iterate follows included resources.",
    ),
    (
        "_total",
        "token",
        "none, estimate or accurate (accurate by default).",
    ),
    ("_summary", "token", "true, text, data, count or false."),
    ("_elements", "string", "Top-level elements to return."),
    (
        "_has",
        "special",
        "Reverse chaining: _has:Type:reference:parameter=value, nestable.",
    ),
    (
        "_explain",
        "token",
        "fhirlink: true returns the SQL and query plan in an outcome entry.",
    ),
];

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
    let reg = fhir_search::registry();
    let resources: Vec<Value> = defs
        .resource_types()
        .iter()
        .map(|t| {
            let mut params: Vec<Value> = reg
                .for_type(t)
                .filter(|p| p.kind == ParamType::Composite || !p.expression.is_empty())
                .filter(|p| p.kind != ParamType::Special)
                .map(|p| {
                    json!({
                        "name": p.code,
                        "definition": p.url,
                        "type": p.kind.as_str(),
                        "documentation": p.description,
                    })
                })
                .collect();
            params.extend(RESULT_PARAMS.iter().map(
                |(name, kind, doc)| json!({"name": name, "type": kind, "documentation": doc}),
            ));
            let includes: Vec<String> = std::iter::once(format!("{t}:*"))
                .chain(
                    reg.for_type(t)
                        .filter(|p| p.kind == ParamType::Reference && !p.expression.is_empty())
                        .map(|p| format!("{t}:{}", p.code)),
                )
                .collect();
            let revincludes: Vec<String> = reg
                .all()
                .iter()
                .filter(|p| {
                    p.kind == ParamType::Reference
                        && !p.expression.is_empty()
                        && (p.targets.is_empty() || p.targets.iter().any(|x| x == t))
                })
                .map(|p| format!("{}:{}", p.rtype, p.code))
                .collect();
            json!({
                "type": t,
                "profile": format!("http://hl7.org/fhir/StructureDefinition/{t}"),
                "interaction": interactions(TYPE_INTERACTIONS),
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalRead": "full-support",
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchRevInclude": revincludes,
                "searchParam": params,
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
            "searchParam": [
                {"name": "_id", "type": "token", "documentation": "Logical id of the resource."},
                {"name": "_lastUpdated", "type": "date", "documentation": "When the resource last changed."},
                {"name": "_tag", "type": "token", "documentation": "Tags in meta.tag."},
                {"name": "_profile", "type": "uri", "documentation": "Profiles in meta.profile."},
                {"name": "_security", "type": "token", "documentation": "Security labels in meta.security."},
                {"name": "_source", "type": "uri", "documentation": "meta.source."},
                {"name": "_type", "type": "token", "documentation": "Resource types a system search covers."},
            ],
        }],
    })
}

pub(crate) fn capabilities(
    ctx: &Ctx,
    security: Option<&crate::access::Security>,
) -> Result<Response, FhirError> {
    let mut statement = ctx.state.inner.capabilities.statement.clone();
    statement["implementation"]["url"] = json!(ctx.base);
    if let Some(sec) = security {
        // FHIR R4 capabilitystatement-definitions.html#CapabilityStatement.rest.security:
        // where clients get a token and what it must say.
        statement["rest"][0]["security"] = json!({
            "cors": false,
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }], "text": "OAuth2 bearer tokens (SMART on FHIR scopes)"}],
            "description": format!(
                "Every interaction but this CapabilityStatement needs an OAuth2 bearer token from the issuer {} with the audience {}; FHIR data roles on the service (FHIR Data Reader, Writer, Contributor, Exporter) and SMART scopes (patient/, user/, system/ with cruds) decide what it may do. The issuer and scopes are also at {}/.well-known/smart-configuration.",
                sec.issuer, sec.audience, ctx.base
            )
        });
        // SMART App Launch 1.0 §"Declaring support for OAuth2 endpoints": the token endpoint
        // is what the extension cannot do without.
        if let Some(token) = &sec.token_endpoint {
            let mut uris = vec![json!({"url": "token", "valueUri": token})];
            if let Some(authorize) = &sec.authorize_endpoint {
                uris.insert(0, json!({"url": "authorize", "valueUri": authorize}));
            }
            statement["rest"][0]["security"]["extension"] = json!([{
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": uris
            }]);
        }
    }
    let statement = respond::narrow(ctx, statement, ctx.summary()?, ctx.elements().as_deref());
    Ok(respond::json(ctx, StatusCode::OK, &statement))
}
