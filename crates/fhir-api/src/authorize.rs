//! The [`Access`] check of each interaction, made once per request before its module runs.
//!
//! Role rights and type-level scopes are checked for every interaction. A `patient/` scope
//! (reach: one Patient's compartment) is enforced here too: reads, instance history and
//! deletes check that the resource is in the compartment; searches are narrowed to it (a
//! type search becomes the compartment search `Patient/<id>/<type>`); creates and updates
//! check the resource they write (and, for updates, the one they replace). Interactions
//! whose effect this layer cannot bound to the compartment — `_include`/`_revinclude`,
//! chained and `_has` parameters, type and system history, PATCH, conditional update and
//! delete — are refused for a patient-scoped token rather than let through. Batch and
//! transaction entries are checked one by one, the same way, in bundle.rs.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use fhir_model::IssueCode;
use fhir_search::IndexValue;
use serde_json::Value;

use crate::access::{Access, Op, Reach, Refusal};
use crate::error::FhirError;
use crate::request::read_body;
use crate::AppState;

/// How an admitted request continues.
pub(crate) enum Admitted {
    /// As it came.
    AsIs,
    /// A type search narrowed to a Patient's compartment: run it as `Patient/<id>/<type>`.
    InCompartment(String),
}

fn forbid(r: Refusal) -> FhirError {
    FhirError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, r.0)
}

fn patient_only(what: &str) -> FhirError {
    FhirError::new(
        StatusCode::FORBIDDEN,
        IssueCode::Forbidden,
        format!("{what} is not allowed with a patient/ scope: its results could reach beyond the patient's compartment"),
    )
}

/// Checks one request; `segs` are its path segments. A check that reads the body (a write
/// in a compartment) puts it back as it was; a refusal leaves it unread.
pub(crate) async fn authorize(
    state: &AppState,
    service: &str,
    access: &Access,
    method: &Method,
    segs: &[&str],
    params: &[(String, String)],
    body: &mut Body,
) -> Result<Admitted, FhirError> {
    let defs = state.inner.defs;
    let typed = |t: &str| defs.is_resource_type(t);
    let read_like = matches!(*method, Method::GET | Method::HEAD);
    match segs {
        // The CapabilityStatement needs no token (the network rules still apply).
        ["metadata"] => Ok(Admitted::AsIs),
        // Batches and transactions: each entry is checked as the interaction it names
        // (bundle.rs).
        [] if *method == Method::POST => Ok(Admitted::AsIs),
        [] | ["_search"] | ["_history"] => {
            access.check_all_types(Op::Search).map_err(forbid)?;
            Ok(Admitted::AsIs)
        }
        [t, rest @ ..] if typed(t) => {
            let t = *t;
            match (method, rest) {
                (m, []) if *m == Method::POST => {
                    let reach = access.check(t, Op::Create).map_err(forbid)?;
                    body_in_reach(state, &reach, t, None, body).await
                }
                (m, [] | ["_search"]) if read_like || (*m == Method::POST && !rest.is_empty()) => {
                    match access.check(t, Op::Search).map_err(forbid)? {
                        Reach::All => Ok(Admitted::AsIs),
                        Reach::Patient(p) => {
                            narrowing_allowed(params)?;
                            if !rest.is_empty() {
                                // POST _search: the form body holds more parameters.
                                let bytes = read_body(
                                    std::mem::take(body),
                                    state.inner.config.max_body_bytes,
                                )
                                .await?;
                                let form: Vec<(String, String)> =
                                    form_urlencoded::parse(&bytes).into_owned().collect();
                                *body = Body::from(bytes);
                                narrowing_allowed(&form)?;
                            }
                            compartment_search(t, p)
                        }
                    }
                }
                (m, []) if *m == Method::PUT || *m == Method::DELETE => {
                    let op = if *m == Method::PUT {
                        Op::Update
                    } else {
                        Op::Delete
                    };
                    let what = if *m == Method::PUT {
                        "a conditional update"
                    } else {
                        "a conditional delete"
                    };
                    match (access.check(t, op), access.check(t, Op::Search)) {
                        (Ok(Reach::All), Ok(Reach::All)) => Ok(Admitted::AsIs),
                        (Err(e), _) | (_, Err(e)) => Err(forbid(e)),
                        _ => Err(patient_only(what)),
                    }
                }
                // Before `[id]`: `_history` is not an id.
                (_, ["_history"]) => match access.check(t, Op::Read).map_err(forbid)? {
                    Reach::All => Ok(Admitted::AsIs),
                    Reach::Patient(_) => Err(patient_only("type history")),
                },
                (m, [id]) if read_like || *m == Method::DELETE => {
                    let op = if read_like { Op::Read } else { Op::Delete };
                    let reach = access.check(t, op).map_err(forbid)?;
                    stored_in_reach(state, service, &reach, t, id).await?;
                    Ok(Admitted::AsIs)
                }
                (m, [id]) if *m == Method::PUT => {
                    let reach = access.check(t, Op::Update).map_err(forbid)?;
                    if let Reach::Patient(_) = reach {
                        // What it replaces must be the patient's too (a new id is fine).
                        if state.inner.store.read(service, t, id).await?.is_some() {
                            stored_in_reach(state, service, &reach, t, id).await?;
                        }
                    }
                    body_in_reach(state, &reach, t, Some(id), body).await
                }
                (m, [_]) if *m == Method::PATCH => {
                    match access.check(t, Op::Update).map_err(forbid)? {
                        Reach::All => Ok(Admitted::AsIs),
                        Reach::Patient(_) => Err(patient_only("PATCH")),
                    }
                }
                (m, []) if *m == Method::PATCH => {
                    match access.check(t, Op::Update).map_err(forbid)? {
                        Reach::All => Ok(Admitted::AsIs),
                        Reach::Patient(_) => Err(patient_only("a conditional PATCH")),
                    }
                }
                (_, [id, "_history", ..]) => {
                    let reach = access.check(t, Op::Read).map_err(forbid)?;
                    stored_in_reach(state, service, &reach, t, id).await?;
                    Ok(Admitted::AsIs)
                }
                // Compartment search: `Patient/123/Observation`.
                (_, [id, ct, ..]) if typed(ct) => {
                    match access.check(ct, Op::Search).map_err(forbid)? {
                        Reach::All => Ok(Admitted::AsIs),
                        Reach::Patient(p) if t == "Patient" && *id == p => {
                            narrowing_allowed(params)?;
                            Ok(Admitted::AsIs)
                        }
                        Reach::Patient(_) => Err(forbid(Refusal(format!(
                            "a patient/ scope reaches only its own patient's compartment, not {t}/{id}"
                        )))),
                    }
                }
                // Anything else is not an interaction; the router answers it.
                _ => Ok(Admitted::AsIs),
            }
        }
        _ => Ok(Admitted::AsIs),
    }
}

/// A patient-scoped search may not follow references out of the compartment.
fn narrowing_allowed(params: &[(String, String)]) -> Result<(), FhirError> {
    for (k, _) in params {
        let name = k.split(':').next().unwrap_or(k);
        if matches!(name, "_include" | "_revinclude") || name == "_has" || k.contains('.') {
            return Err(patient_only(&format!("the search parameter '{k}'")));
        }
    }
    Ok(())
}

fn compartment_search(t: &str, patient: String) -> Result<Admitted, FhirError> {
    if t != "Patient" && fhir_search::compartment::params("Patient", t).is_empty() {
        return Err(forbid(Refusal(format!(
            "{t} is not in the Patient compartment, so a patient/ scope cannot reach it"
        ))));
    }
    Ok(Admitted::InCompartment(patient))
}

/// Whether a resource's content puts it in `patient`'s compartment (FHIR R4
/// compartmentdefinition-patient: the Patient itself, or a resource whose compartment
/// parameters reference it).
pub(crate) fn in_patient_compartment(
    resource: &Value,
    rtype: &str,
    id: Option<&str>,
    patient: &str,
) -> bool {
    if rtype == "Patient" {
        return id.or_else(|| resource.get("id").and_then(Value::as_str)) == Some(patient);
    }
    let codes = fhir_search::compartment::params("Patient", rtype);
    if codes.is_empty() {
        return false;
    }
    let reg = fhir_search::registry();
    let ids: Vec<u32> = codes
        .iter()
        .filter_map(|c| reg.get(rtype, c))
        .map(|p| p.id)
        .collect();
    fhir_search::extract(resource).iter().any(|e| {
        ids.contains(&e.param)
            && matches!(&e.value, IndexValue::Reference { ttype: Some(tt), tid: Some(ti), .. }
                if tt == "Patient" && ti == patient)
    })
}

/// For a patient reach: the stored resource must be in the compartment. A resource outside
/// it answers as if it did not exist (404), so that its existence does not leak.
async fn stored_in_reach(
    state: &AppState,
    service: &str,
    reach: &Reach,
    t: &str,
    id: &str,
) -> Result<(), FhirError> {
    let Reach::Patient(p) = reach else {
        return Ok(());
    };
    let current = state.inner.store.read(service, t, id).await?;
    let inside = match current.as_ref().and_then(|r| r.body.as_ref()) {
        Some(bytes) => serde_json::from_slice::<Value>(bytes)
            .map(|v| in_patient_compartment(&v, t, Some(id), p))
            .unwrap_or(false),
        // Deleted or unknown: nothing to reveal either way.
        None => t == "Patient" && id == p,
    };
    if inside {
        Ok(())
    } else {
        Err(FhirError::not_found(format!(
            "{t}/{id} is not known in the compartment of Patient/{p}"
        )))
    }
}

/// For a patient reach: the resource in the request body must be in the compartment.
async fn body_in_reach(
    state: &AppState,
    reach: &Reach,
    t: &str,
    id: Option<&str>,
    body: &mut Body,
) -> Result<Admitted, FhirError> {
    let Reach::Patient(p) = reach else {
        return Ok(Admitted::AsIs);
    };
    let bytes = read_body(std::mem::take(body), state.inner.config.max_body_bytes).await?;
    let resource: Value = serde_json::from_slice(&bytes)
        .map_err(|e| FhirError::bad_request(format!("the body is not JSON: {e}")))?;
    *body = Body::from(bytes);
    if !in_patient_compartment(&resource, t, id, p) {
        return Err(forbid(Refusal(format!(
            "a patient/ scope may only write resources in the compartment of Patient/{p}"
        ))));
    }
    Ok(Admitted::AsIs)
}
