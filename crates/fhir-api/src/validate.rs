//! `$validate` at `[type]/$validate` and `[type]/[id]/$validate` (FHIR R4
//! resource-operation-validate), with `mode` and `profile`: the validation a write runs
//! (`write::check_identity`, then the R4 definitions, `fhir_model::Definitions::validate`),
//! then, with `profile`, the rules of that profile (`fhir_model::profile`): the base R4
//! StructureDefinition of the type adds nothing, a `StructureDefinition` stored in the
//! service is looked up by its `url` (`|version` compared with its `version`).
//!
//! The answer is an OperationOutcome with every issue, each with its `expression`, and `200`
//! whether or not the resource is valid: the validation was performed (R4: the outcome
//! "does not list any errors" is what says the resource is acceptable). A valid resource gets
//! one `information` issue saying so. A request that cannot be validated (no resource, an
//! unknown mode or profile, a malformed parameter) is a 4xx naming the parameter.
//!
//! Modes: none or `create` (the body as a create would take it), `update` (at the instance
//! level only: the body's id must be the URL's), `delete` (instance level: the resource is
//! ignored; this server has no rule that refuses a delete, so the outcome says it would be
//! accepted, or that there is nothing to delete). At the instance level without a resource
//! and without `mode`, the stored current version is validated (with `profile`, against it).
//!
//! Authorized as a read of the type, at the instance level as a read of the resource (a
//! `patient/` scope reaches its compartment's resources only). Profiles are conformance
//! resources, looked up whatever the caller's scopes for `StructureDefinition`.

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::profile::Profile;
use fhir_model::{operation_outcome, Issue, IssueCode, Severity};
use serde_json::Value;

use crate::error::FhirError;
use crate::interaction::Level;
use crate::params::{read_json, OpParams, Shape, Spec};
use crate::request::Ctx;
use crate::respond;

/// The canonical OperationDefinition (FHIR R4).
pub(crate) const DEFINITION: &str = "http://hl7.org/fhir/OperationDefinition/Resource-validate";

const PARAMS: &[Spec] = &[
    Spec {
        name: "resource",
        shape: Shape::Resource,
        repeats: false,
    },
    Spec::text("mode"),
    Spec::text("profile"),
];

const OP: &str = "validate";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    General,
    Create,
    Update,
    Delete,
}

pub(crate) async fn validate(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    let (rtype, id) = match level {
        Level::Type(t) => (t, None),
        Level::Instance(t, id) => (t, Some(id)),
        _ => {
            return Err(FhirError::not_found(
                "$validate is defined at [type]/$validate and [type]/[id]/$validate",
            ))
        }
    };
    let mut params = OpParams::from_query(ctx, OP, PARAMS)?;
    if post {
        match read_json(ctx, body).await? {
            // The resource itself as the body, or a Parameters carrying it.
            Some(v)
                if rtype != "Parameters" && v.get("resourceType") != Some(&"Parameters".into()) =>
            {
                params.add_resource(OP, PARAMS, "resource", v)?
            }
            Some(v) => params.add_parameters(OP, PARAMS, &v)?,
            None => {}
        }
    }
    let mode = match params.text("mode") {
        None => Mode::General,
        Some("create") => Mode::Create,
        Some("update") => Mode::Update,
        Some("delete") => Mode::Delete,
        Some(other) => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::CodeInvalid,
                format!("$validate: mode must be create, update or delete, not '{other}'"),
            )
            .at(params.at("mode")))
        }
    };
    if matches!(mode, Mode::Update | Mode::Delete) && id.is_none() {
        return Err(FhirError::bad_request(format!(
            "$validate: mode {} is for [type]/[id]/$validate only (R4: it names the resource to update or delete)",
            params.text("mode").unwrap_or_default()
        ))
        .at(params.at("mode")));
    }
    let store = &ctx.state.inner.store;
    if mode == Mode::Delete {
        let id = id.unwrap_or_default();
        let current = store.read(&ctx.service, rtype, id).await?;
        let message = match current {
            Some(r) if !r.is_deleted() => format!("{rtype}/{id} may be deleted"),
            _ => format!("{rtype}/{id} does not exist: a delete would change nothing"),
        };
        return Ok(respond::json(
            ctx,
            StatusCode::OK,
            &respond::information(&message),
        ));
    }
    let resource = match (params.json("resource"), id) {
        (Some(r), _) => r.clone(),
        (None, Some(id)) if mode == Mode::General => {
            let stored = store
                .read(&ctx.service, rtype, id)
                .await?
                .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
            let body = stored.body.ok_or_else(|| {
                FhirError::new(
                    StatusCode::GONE,
                    IssueCode::Deleted,
                    format!("{rtype}/{id} was deleted: there is nothing to validate"),
                )
            })?;
            serde_json::from_slice(&body).map_err(|e| {
                FhirError::from(fhir_store::StoreError::Backend(format!(
                    "stored {rtype}/{id}: {e}"
                )))
            })?
        }
        _ => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Required,
                "$validate: the parameter 'resource' is required (the resource as the body, or in a Parameters body)",
            )
            .at("resource"))
        }
    };
    let profile = match params.text("profile") {
        Some(url) => profile_for(ctx, rtype, url, &params.at("profile")).await?,
        None => None,
    };
    let url_id = if mode == Mode::Update { id } else { None };
    let issues = check(
        ctx.state.inner.defs,
        &resource,
        rtype,
        url_id,
        profile.as_ref(),
    );
    Ok(respond::json(ctx, StatusCode::OK, &outcome(issues)))
}

/// Every issue of `resource` as a write of `rtype` (at `url_id` for an update) would find it,
/// and against `profile`.
pub(crate) fn check(
    defs: &fhir_model::Definitions,
    resource: &Value,
    rtype: &str,
    url_id: Option<&str>,
    profile: Option<&Profile>,
) -> Vec<Issue> {
    if let Err(e) = crate::write::check_identity(resource, rtype, url_id) {
        return e.issues;
    }
    let mut issues = defs.validate(resource);
    if let Some(p) = profile {
        issues.extend(p.check(resource));
    }
    issues
}

fn outcome(mut issues: Vec<Issue>) -> Value {
    if !issues.iter().any(Issue::is_error) {
        issues.insert(
            0,
            Issue {
                severity: Severity::Information,
                code: IssueCode::Informational,
                diagnostics: "the resource is valid".into(),
                expression: None,
            },
        );
    }
    operation_outcome(&issues)
}

/// The profile `url` names for `rtype`: `None` for the base R4 definition of the type, else a
/// StructureDefinition stored in the service.
async fn profile_for(
    ctx: &Ctx,
    rtype: &str,
    url: &str,
    at: &str,
) -> Result<Option<Profile>, FhirError> {
    let bad = |status: StatusCode, code: IssueCode, msg: String| {
        FhirError::new(status, code, format!("$validate: profile '{url}': {msg}")).at(at.to_owned())
    };
    let (canonical, version) = match url.split_once('|') {
        Some((u, v)) => (u, Some(v)),
        None => (url, None),
    };
    const BASE: &str = "http://hl7.org/fhir/StructureDefinition/";
    if let Some(t) = canonical.strip_prefix(BASE) {
        if ctx.state.inner.defs.is_resource_type(t) {
            return if t == rtype && version.is_none_or(|v| v == "4.0.1") {
                Ok(None)
            } else {
                Err(bad(
                    StatusCode::BAD_REQUEST,
                    IssueCode::Invalid,
                    format!("the base definition of {t} (4.0.1) does not apply to {rtype}"),
                ))
            };
        }
    }
    if canonical.is_empty() || canonical.len() > 4096 || canonical.contains(char::is_whitespace) {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            IssueCode::Invalid,
            "not a canonical URL".into(),
        ));
    }
    let criteria: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("url", canonical)
        .finish();
    let query =
        crate::search::criteria(ctx, "StructureDefinition", &criteria, "$validate profile")?;
    let page = ctx.state.inner.store.search(&ctx.service, &query).await?;
    let mut found = Vec::new();
    for r in &page.matches {
        let Some(body) = &r.body else { continue };
        let sd: Value = serde_json::from_slice(body).map_err(|e| {
            FhirError::from(fhir_store::StoreError::Backend(format!(
                "stored StructureDefinition/{}: {e}",
                r.id
            )))
        })?;
        if sd.get("url").and_then(Value::as_str) != Some(canonical) {
            continue;
        }
        if version.is_some_and(|v| sd.get("version").and_then(Value::as_str) != Some(v)) {
            continue;
        }
        found.push(sd);
    }
    let sd = match found.as_slice() {
        [] => {
            return Err(bad(
                StatusCode::NOT_FOUND,
                IssueCode::NotFound,
                "no StructureDefinition with this url is stored in this service".into(),
            ))
        }
        [sd] => sd,
        _ => {
            return Err(bad(
                StatusCode::BAD_REQUEST,
                IssueCode::MultipleMatches,
                format!(
                    "{} StructureDefinitions have this url; name one with url|version",
                    found.len()
                ),
            ))
        }
    };
    let profile = Profile::parse(sd).map_err(|why| {
        bad(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueCode::NotSupported,
            format!("the stored StructureDefinition cannot be used: {why}"),
        )
    })?;
    if profile.resource_type != rtype {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            IssueCode::Invalid,
            format!("it constrains {}, not {rtype}", profile.resource_type),
        ));
    }
    Ok(Some(profile))
}
