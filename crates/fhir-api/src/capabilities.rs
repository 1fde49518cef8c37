//! The CapabilityStatement (FHIR R4 capabilitystatement.html), generated from what this
//! build really does: the interaction lists here are the ones `route` dispatches.

use std::sync::Mutex;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use fhir_model::{Definitions, Summary};
use fhir_search::ParamType;
use serde_json::{json, Value};

use crate::access::Security;
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

/// The CapabilityStatement of this build, and its rendered bodies.
///
/// The statement is 1.5 MB of JSON: cloning, completing and serialising it took 10 ms a
/// request. It depends only on the definitions (fixed for this state), the base URL the client
/// addressed, the service's [`Security`] (which changes with the service's authentication
/// settings, in a new plan) and the view asked for (`_summary`, `_elements`, `_pretty`), so
/// each combination is rendered once, kept with its ETag, and served from memory after.
/// A new `Security` is a new key: a service's changed settings are never answered from the
/// old body, and the bodies no longer asked for age out.
pub(crate) struct Cached {
    statement: Value,
    rendered: Mutex<Renders>,
}

/// Most bytes of rendered bodies kept: a full statement is 1.5 MB (2.2 MB pretty), a summary
/// a few KB, so this keeps a dozen full ones or many views. `_elements` lists come from
/// clients, so the key space is unbounded and the least recently used render goes first.
const RENDERED_BYTES: usize = 24 << 20;

#[derive(Default)]
struct Renders {
    entries: Vec<Render>,
    bytes: usize,
    clock: u64,
}

#[derive(Clone, PartialEq, Eq)]
struct Key {
    service: String,
    base: String,
    security: Option<Security>,
    summary: Option<Summary>,
    elements: Option<Vec<String>>,
    pretty: bool,
    content_type: &'static str,
}

struct Render {
    key: Key,
    body: Bytes,
    etag: HeaderValue,
    used: u64,
}

impl Cached {
    pub(crate) fn new(defs: &Definitions) -> Cached {
        Cached {
            statement: build(defs, &chrono::Utc::now().format("%Y-%m-%d").to_string()),
            rendered: Mutex::new(Renders::default()),
        }
    }

    /// The statement of a server that runs bulk export: it `instantiates` the Bulk Data
    /// server CapabilityStatement and lists `$export` at the system level and on `Patient`
    /// and `Group`, each with its canonical OperationDefinition (Bulk Data IG 2.0.0), and
    /// `$import` at the system level.
    pub(crate) fn with_bulk(defs: &Definitions) -> Cached {
        let mut statement = build(defs, &chrono::Utc::now().format("%Y-%m-%d").to_string());
        add_bulk(&mut statement);
        Cached {
            statement,
            rendered: Mutex::new(Renders::default()),
        }
    }

    /// The body and ETag for `key`, rendered by `render` on a miss.
    fn get_or_render(&self, key: Key, render: impl FnOnce() -> Bytes) -> (Bytes, HeaderValue) {
        {
            let mut r = self.lock();
            r.clock += 1;
            let now = r.clock;
            if let Some(hit) = r.entries.iter_mut().find(|e| e.key == key) {
                hit.used = now;
                return (hit.body.clone(), hit.etag.clone());
            }
        }
        // Rendered outside the lock: two first requests may both render, and the second
        // insert finds the first.
        let body = render();
        let etag = etag_of(key.content_type, &body);
        let mut r = self.lock();
        if let Some(hit) = r.entries.iter().find(|e| e.key == key) {
            return (hit.body.clone(), hit.etag.clone());
        }
        r.bytes += body.len();
        let used = r.clock;
        r.entries.push(Render {
            key,
            body: body.clone(),
            etag: etag.clone(),
            used,
        });
        while r.bytes > RENDERED_BYTES && r.entries.len() > 1 {
            let Some((oldest, _)) = r.entries.iter().enumerate().min_by_key(|(_, e)| e.used) else {
                break;
            };
            let gone = r.entries.swap_remove(oldest);
            r.bytes -= gone.body.len();
        }
        (body, etag)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Renders> {
        // The cache holds no invariant a panicking render could break.
        self.rendered.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A strong ETag of the representation: the bytes and their media type (RFC 9110 §8.8.3).
fn etag_of(content_type: &str, body: &[u8]) -> HeaderValue {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    content_type.hash(&mut h);
    body.hash(&mut h);
    HeaderValue::from_str(&format!("\"{:016x}\"", h.finish()))
        .unwrap_or_else(|_| HeaderValue::from_static("\"0\""))
}

/// Whether `If-None-Match` names `etag` (RFC 9110 §13.1.2: weak comparison, `*` for any).
fn none_match(header: Option<&str>, etag: &HeaderValue) -> bool {
    let Some(header) = header else {
        return false;
    };
    let ours = etag.to_str().unwrap_or_default();
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
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
            let mut resource = json!({
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
            });
            let mut operations = instance_operations();
            if t == "Patient" {
                operations.insert(
                    0,
                    json!({"name": "everything", "definition": crate::everything::DEFINITION}),
                );
                operations.push(json!({
                    "name": "member-match",
                    "definition": crate::member_match::DEFINITION,
                    "documentation": "Da Vinci HRex 1.0.0: POST a Parameters with MemberPatient, CoverageToMatch, CoverageToLink, Consent; matched on family name, birth date (given names and gender when sent) and the coverage's identifier or subscriberId; 422 when none or several match."
                }));
            }
            match t.as_str() {
                "ValueSet" => operations.extend([
                    json!({"name": "expand", "definition": crate::terminology::EXPAND, "documentation": "Over the built-in R4 expansions and the ValueSets stored here (expansion, or compose with concepts, built-in valueSets, concept is-a filters); filter matches codes; no displays; SNOMED CT, LOINC and other external content: 422."}),
                    json!({"name": "validate-code", "definition": crate::terminology::VALIDATE_CODE}),
                ]),
                "CodeSystem" => operations.push(json!({"name": "subsumes", "definition": crate::terminology::SUBSUMES, "documentation": "Over the is-a hierarchies of the CodeSystems defined in R4."})),
                _ => {}
            }
            resource["operation"] = Value::Array(operations);
            resource
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
            "operation": [{"name": "meta", "definition": crate::meta::META}],
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

/// The operations of every resource type, at the type or instance level, with their
/// canonical OperationDefinitions.
fn instance_operations() -> Vec<Value> {
    vec![
        json!({
            "name": "validate",
            "definition": crate::validate::DEFINITION,
            "documentation": "mode create, update or delete; profile: the base R4 definition, or a StructureDefinition (constraint profile) stored in this service: cardinality, fixed[x], pattern[x], bindings to the built-in ValueSets (required: error, extensible: warning); slices and invariants are not checked (a warning says so)."
        }),
        json!({"name": "meta", "definition": crate::meta::META}),
        json!({"name": "meta-add", "definition": crate::meta::META_ADD}),
        json!({"name": "meta-delete", "definition": crate::meta::META_DELETE}),
        json!({
            "name": "purge-history",
            "definition": crate::purge::DEFINITION,
            "documentation": "Azure API for FHIR's $purge-history (no FHIR OperationDefinition exists; fhirlink names its own): DELETE [type]/[id]/$purge-history removes every version but the current one."
        }),
    ]
}

/// The canonical name fhirlink gives its `$import` (AHDS's shape).
pub(crate) const IMPORT_DEFINITION: &str = "https://fhirlink.dev/fhir/OperationDefinition/import";

fn add_bulk(statement: &mut Value) {
    let op = |level: &str| {
        let (_, url) = crate::bulk::EXPORT_DEFINITIONS
            .iter()
            .find(|(l, _)| *l == level)
            .copied()
            .unwrap_or_default();
        json!([{"name": "export", "definition": url}])
    };
    statement["instantiates"] =
        json!(["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"]);
    let rest = &mut statement["rest"][0];
    if let Some(ops) = rest["operation"].as_array_mut() {
        for (i, o) in op("system").as_array().into_iter().flatten().enumerate() {
            ops.insert(i, o.clone());
        }
    }
    // AHDS's $import (no published canonical OperationDefinition: fhirlink names its own and
    // says what it takes).
    if let Some(ops) = rest["operation"].as_array_mut() {
        ops.insert(1, json!({
            "name": "import",
            "definition": IMPORT_DEFINITION,
            "documentation": "Azure Health Data Services' $import: POST a Parameters body with inputFormat application/fhir+ndjson, mode IncrementalLoad (default: keeps versionId, lastUpdated, history and soft deletes) or InitialLoad, and input entries of type and url (file: URLs under the server's --import-dir); asynchronous, polled at _operations/import/{id}."
        }));
    }
    if let Some(resources) = rest["resource"].as_array_mut() {
        for r in resources {
            let t = r["type"].as_str().unwrap_or_default().to_owned();
            if t == "Group" || t == "Patient" {
                if let Some(ops) = r["operation"].as_array_mut() {
                    ops.extend(op(&t).as_array().cloned().unwrap_or_default());
                }
            }
        }
    }
}

pub(crate) fn capabilities(ctx: &Ctx, security: Option<&Security>) -> Result<Response, FhirError> {
    let key = Key {
        service: ctx.service.clone(),
        base: ctx.base.clone(),
        security: security.cloned(),
        summary: ctx.summary()?,
        elements: ctx.elements(),
        pretty: ctx.pretty,
        content_type: ctx.repr.content_type(),
    };
    let cached = &ctx.state.inner.capabilities;
    let (body, etag) = cached.get_or_render(key.clone(), || {
        let statement = complete(ctx.state.inner.defs, &cached.statement, &key);
        respond::to_bytes(ctx, &statement)
    });
    // FHIR R4 http.html#cread: a client holding this version gets 304 and no body.
    let mut resp = if none_match(ctx.header("if-none-match"), &etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut resp = (StatusCode::OK, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(key.content_type),
        );
        resp
    };
    resp.headers_mut().insert(header::ETAG, etag);
    Ok(resp)
}

/// The statement as served at `key`: this base URL, this service's security, this view.
fn complete(defs: &Definitions, base: &Value, key: &Key) -> Value {
    let mut statement = base.clone();
    let base_url = &key.base;
    statement["implementation"]["url"] = json!(base_url);
    if let Some(sec) = &key.security {
        // FHIR R4 capabilitystatement-definitions.html#CapabilityStatement.rest.security:
        // where clients get a token and what it must say.
        statement["rest"][0]["security"] = json!({
            "cors": false,
            "service": [{"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR"
            }], "text": "OAuth2 bearer tokens (SMART on FHIR scopes)"}],
            "description": format!(
                "Every interaction but this CapabilityStatement needs an OAuth2 bearer token from the issuer {} with the audience {}; FHIR data roles on the service (FHIR Data Reader, Writer, Contributor, Exporter) and SMART scopes (patient/, user/, system/ with cruds) decide what it may do. The issuer and scopes are also at {base_url}/.well-known/smart-configuration.",
                sec.issuer, sec.audience
            )
        });
        // SMART App Launch 1.0 §"Declaring support for OAuth2 endpoints": the token endpoint
        // is what the extension cannot do without.
        if let Some(token) = &sec.token_endpoint_at(base_url) {
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
    if let Some(s) = key.summary.filter(|s| *s != Summary::Count) {
        statement = defs.summarize(&statement, s);
    }
    if let Some(e) = &key.elements {
        statement = defs.select_elements(&statement, e);
    }
    statement
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(base: &str, security: Option<&str>) -> Key {
        Key {
            service: "default".into(),
            base: base.into(),
            security: security.map(|issuer| Security {
                issuer: issuer.into(),
                audience: "aud".into(),
                ..Security::default()
            }),
            summary: None,
            elements: None,
            pretty: false,
            content_type: "application/fhir+json",
        }
    }

    #[test]
    fn each_key_renders_once_and_a_changed_security_renders_anew() {
        let cached = Cached {
            statement: json!({}),
            rendered: Mutex::new(Renders::default()),
        };
        let renders = std::cell::Cell::new(0);
        let render = |text: &'static str| {
            renders.set(renders.get() + 1);
            Bytes::from_static(text.as_bytes())
        };
        let (a, etag_a) = cached.get_or_render(key("http://a", Some("i1")), || render("a"));
        let (again, etag_again) = cached.get_or_render(key("http://a", Some("i1")), || render("x"));
        assert_eq!((a, &etag_a), (again, &etag_again));
        assert_eq!(renders.get(), 1);
        let (b, etag_b) = cached.get_or_render(key("http://a", Some("i2")), || render("b"));
        assert_eq!(b, "b");
        assert_ne!(etag_a, etag_b);
        cached.get_or_render(key("http://a", None), || render("c"));
        cached.get_or_render(key("http://b", Some("i1")), || render("d"));
        assert_eq!(renders.get(), 4);
    }

    #[test]
    fn renders_beyond_the_byte_budget_go_least_recently_used_first() {
        let cached = Cached {
            statement: json!({}),
            rendered: Mutex::new(Renders::default()),
        };
        let big = || Bytes::from(vec![b' '; RENDERED_BYTES / 3 + 1]);
        cached.get_or_render(key("http://1", None), big);
        cached.get_or_render(key("http://2", None), big);
        // 1 used again: 2 is now the oldest, and goes when a fourth would exceed the budget.
        cached.get_or_render(key("http://1", None), || unreachable!());
        cached.get_or_render(key("http://3", None), big);
        let bases: Vec<String> = cached
            .lock()
            .entries
            .iter()
            .map(|e| e.key.base.clone())
            .collect();
        assert_eq!(bases.len(), 2, "{bases:?}");
        assert!(bases.contains(&"http://1".to_string()) && bases.contains(&"http://3".to_string()));
        assert!(cached.lock().bytes <= RENDERED_BYTES);
    }

    #[test]
    fn if_none_match_compares_weakly_and_takes_lists_and_star() {
        let etag = HeaderValue::from_static("\"abc\"");
        assert!(none_match(Some("\"abc\""), &etag));
        assert!(none_match(Some("W/\"abc\""), &etag));
        assert!(none_match(Some("\"x\", \"abc\""), &etag));
        assert!(none_match(Some("*"), &etag));
        assert!(!none_match(Some("\"abd\""), &etag));
        assert!(!none_match(None, &etag));
    }
}
