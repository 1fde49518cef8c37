//! `Patient/$member-match` (Da Vinci HRex 1.0.0, OperationDefinition-member-match): a
//! POSTed Parameters with `MemberPatient` (a Patient), `CoverageToMatch` (the Coverage the
//! member holds, as the new payer knows it), `CoverageToLink` (optional) and `Consent`
//! (required by HRex, checked to be a Consent; its policy is not evaluated). The member is the
//! stored Patient whose demographics match — family name, birth date, and the given names
//! and gender when sent — and, when `CoverageToMatch` carries an `identifier` or a
//! `subscriberId`, who is the beneficiary of a stored Coverage with that identifier or
//! subscriber id. Exactly one match answers `200` with `MemberIdentifier`: the Patient's
//! identifier typed `MB` (v2-0203), or one made of its id under the service's base URL. No
//! match, or more than one, is `422` (HRex: "unable to match").
//!
//! Authorized as searches of Patient and Coverage in full: a `patient/` scope is refused
//! (matching looks across members).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::IssueCode;
use fhir_store::StoredResource;
use serde_json::{json, Value};

use crate::error::FhirError;
use crate::params::{read_json, OpParams, Shape, Spec};
use crate::request::Ctx;
use crate::respond;

pub(crate) const DEFINITION: &str =
    "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match";

const OP: &str = "member-match";

const PARAMS: &[Spec] = &[
    Spec {
        name: "MemberPatient",
        shape: Shape::Resource,
        repeats: false,
    },
    Spec {
        name: "CoverageToMatch",
        shape: Shape::Resource,
        repeats: false,
    },
    Spec {
        name: "CoverageToLink",
        shape: Shape::Resource,
        repeats: false,
    },
    Spec {
        name: "Consent",
        shape: Shape::Resource,
        repeats: false,
    },
];

/// The most candidates one demographic search considers.
const CANDIDATES: usize = 100;

const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

fn unmatched(msg: String) -> FhirError {
    FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, IssueCode::Processing, msg)
}

fn resource<'p>(params: &'p OpParams, name: &str, rtype: &str) -> Result<&'p Value, FhirError> {
    params.require(OP, name)?;
    let r = params.json(name).ok_or_else(|| {
        FhirError::bad_request(format!("$member-match: {name} must be a resource"))
            .at(params.at(name))
    })?;
    if r.get("resourceType").and_then(Value::as_str) != Some(rtype) {
        return Err(
            FhirError::bad_request(format!("$member-match: {name} must be a {rtype}"))
                .at(format!("{}.resource", params.at(name))),
        );
    }
    let issues = fhir_model::r4().validate(r);
    if issues.iter().any(|i| i.is_error()) {
        let prefix = format!("{}.resource", params.at(name));
        return Err(FhirError::invalid(issues).within(&prefix, Some(rtype)));
    }
    Ok(r)
}

fn bodies(page: &[StoredResource]) -> Vec<(String, Value)> {
    page.iter()
        .filter_map(|r| {
            let v = serde_json::from_slice(r.body.as_deref()?).ok()?;
            Some((r.id.clone(), v))
        })
        .collect()
}

pub(crate) async fn member_match(ctx: &Ctx, post: bool, body: Body) -> Result<Response, FhirError> {
    let mut params = OpParams::from_query(ctx, OP, PARAMS)?;
    if post {
        if let Some(v) = read_json(ctx, body).await? {
            params.add_parameters(OP, PARAMS, &v)?;
        }
    }
    let patient = resource(&params, "MemberPatient", "Patient")?;
    let coverage = resource(&params, "CoverageToMatch", "Coverage")?;
    resource(&params, "Consent", "Consent")?;
    if params.json("CoverageToLink").is_some() {
        resource(&params, "CoverageToLink", "Coverage")?;
    }

    // Demographics: family name and birth date are required to match at all.
    let name = patient.pointer("/name/0");
    let family = name.and_then(|n| n.get("family")).and_then(Value::as_str);
    let birth = patient.get("birthDate").and_then(Value::as_str);
    let (Some(family), Some(birth)) = (family, birth) else {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Required,
            "$member-match: MemberPatient needs name[0].family and birthDate to be matched",
        )
        .at(format!("{}.resource", params.at("MemberPatient"))));
    };
    // Built apart: the serializer is not Send and must not live across an await.
    let criteria = {
        let mut criteria = form_urlencoded::Serializer::new(String::new());
        criteria
            .append_pair("family:exact", family)
            .append_pair("birthdate", birth)
            .append_pair("_count", &CANDIDATES.to_string());
        for g in name
            .and_then(|n| n.get("given"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            criteria.append_pair("given:exact", g);
        }
        if let Some(g) = patient.get("gender").and_then(Value::as_str) {
            criteria.append_pair("gender", g);
        }
        criteria.finish()
    };
    let query = crate::search::criteria(ctx, "Patient", &criteria, "$member-match")?;
    let store = &ctx.state.inner.store;
    let candidates = bodies(&store.search(&ctx.service, &query).await?.matches);

    // Coverage: the identifiers and subscriber id the member's coverage carries.
    let wanted_ids: Vec<&Value> = coverage
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let subscriber = coverage.get("subscriberId").and_then(Value::as_str);
    let mut matches = Vec::new();
    for (id, p) in candidates {
        if wanted_ids.is_empty() && subscriber.is_none() {
            matches.push((id, p));
            continue;
        }
        let criteria: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("beneficiary", &format!("Patient/{id}"))
            .append_pair("_count", &CANDIDATES.to_string())
            .finish();
        let q = crate::search::criteria(ctx, "Coverage", &criteria, "$member-match")?;
        let held = bodies(&store.search(&ctx.service, &q).await?.matches);
        let covered = held.iter().any(|(_, c)| {
            let same_id = c
                .get("identifier")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|i| {
                    wanted_ids.iter().any(|w| {
                        w.get("value").is_some()
                            && w.get("value") == i.get("value")
                            && w.get("system") == i.get("system")
                    })
                });
            let same_subscriber =
                subscriber.is_some() && c.get("subscriberId").and_then(Value::as_str) == subscriber;
            same_id || same_subscriber
        });
        if covered {
            matches.push((id, p));
        }
    }
    let (id, member) = match matches.len() {
        1 => matches.remove(0),
        0 => return Err(unmatched("$member-match: no member matches the patient and coverage given".into())),
        n => {
            return Err(unmatched(format!(
                "$member-match: {n} members match the patient and coverage given; no single member can be named"
            )))
        }
    };
    let typed_mb = member
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|i| {
            i.pointer("/type/coding")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .any(|c| {
                    c.get("system").and_then(Value::as_str) == Some(V2_0203)
                        && c.get("code").and_then(Value::as_str) == Some("MB")
                })
        })
        .cloned();
    let identifier = typed_mb.unwrap_or_else(|| {
        json!({
            "type": {"coding": [{"system": V2_0203, "code": "MB"}]},
            "system": format!("{}/Patient", ctx.base),
            "value": id,
        })
    });
    Ok(respond::json(
        ctx,
        StatusCode::OK,
        &json!({"resourceType": "Parameters", "parameter": [
            {"name": "MemberIdentifier", "valueIdentifier": identifier}
        ]}),
    ))
}
