//! FHIR services (`Microsoft.HealthcareApis/services`): their globally unique names, Azure's
//! defaults, `publicNetworkAccess`, the one private link resource (`fhir`), and the service
//! side of private endpoint connections (approve, reject, leave pending).

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{props_of, store};
use crate::error::{bad_request, not_found, ArmError};
use crate::handle::Request;
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{s, Resource, State};
use crate::txn::{guid_from, Txn};
use crate::{PRIVATELINK_ZONE, SERVICE_DNS_SUFFIX};

pub(super) fn name_taken(
    state: &State,
    name: &str,
    except_key: &str,
    taken: &BTreeSet<String>,
) -> bool {
    let lower = name.to_lowercase();
    taken.contains(&lower)
        || state
            .of_kind(Kind::FhirService)
            .any(|r| r.key() != except_key && r.name().eq_ignore_ascii_case(name))
}

pub(crate) fn check_name_availability(
    state: &State,
    body: &Value,
    taken: &BTreeSet<String>,
) -> Value {
    let name = s(body, "name");
    if crate::names::validate(Kind::FhirService, name).is_err() {
        return json!({
            "nameAvailable": false,
            "reason": "Invalid",
            "message": "Service names are 3 to 24 characters: lower-case letters, digits and hyphens, beginning and ending with a letter or digit."
        });
    }
    if name_taken(state, name, "", taken) {
        return json!({"nameAvailable": false, "reason": "AlreadyExists", "message": "Service name is not available."});
    }
    json!({"nameAvailable": true})
}

pub(super) fn put_service(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
    req: &Request<'_>,
) -> Result<(), ArmError> {
    let kind = s(input, "kind");
    if !kind.eq_ignore_ascii_case("fhir-R4") {
        return Err(bad_request(
            "InvalidKind",
            format!("The kind '{kind}' is not supported: fhirlink serves FHIR R4, kind 'fhir-R4'."),
        ));
    }
    if existing.is_none() && name_taken(tx.old, &addr.name, &addr.key, req.taken_service_names) {
        return Err(ArmError::new(
            409,
            "ServiceNameNotAvailable",
            format!("The service name '{}' is not available: service names are global and this one is taken.", addr.name),
        ));
    }
    let mut props = props_of(input);
    props.remove("provisioningState");
    props.remove("privateEndpointConnections");
    props.entry("accessPolicies").or_insert_with(|| json!([]));
    props
        .entry("cosmosDbConfiguration")
        .or_insert_with(|| json!({"offerThroughput": 1000}));
    props.entry("authenticationConfiguration").or_insert_with(|| {
        json!({"authority": "", "audience": format!("https://{}.{SERVICE_DNS_SUFFIX}", addr.name), "smartProxyEnabled": false})
    });
    props.entry("corsConfiguration").or_insert_with(
        || json!({"origins": [], "headers": [], "methods": [], "maxAge": null, "allowCredentials": false}),
    );
    let pna = match props.get("publicNetworkAccess") {
        None | Some(Value::Null) => existing
            .and_then(|e| e.prop("publicNetworkAccess"))
            .and_then(Value::as_str)
            .unwrap_or("Enabled")
            .to_owned(),
        Some(v) => public_network_access(v)?,
    };
    props.insert("publicNetworkAccess".into(), json!(pna));
    let mut extra = vec![("kind", json!("fhir-R4"))];
    // A managed identity is echoed with ids of its own, as Azure assigns them.
    if let Some(ty) = input
        .get("identity")
        .map(|i| s(i, "type"))
        .filter(|t| !t.is_empty())
    {
        let mut identity = json!({"type": ty});
        if !ty.eq_ignore_ascii_case("None") {
            identity["principalId"] = json!(guid_from(&format!("{}#identity", addr.key)));
            identity["tenantId"] = json!(guid_from("fhirlink-tenant"));
        }
        extra.push(("identity", identity));
    }
    let r = store(tx, addr, input, existing, props, &extra, None)?;
    if existing.is_none() {
        tx.services_created.push(r.name().to_owned());
    }
    Ok(())
}

pub(super) fn public_network_access(v: &Value) -> Result<String, ArmError> {
    match v.as_str() {
        Some(x) if x.eq_ignore_ascii_case("Enabled") => Ok("Enabled".into()),
        Some(x) if x.eq_ignore_ascii_case("Disabled") => Ok("Disabled".into()),
        _ => Err(bad_request(
            "InvalidRequestContent",
            format!("publicNetworkAccess must be 'Enabled' or 'Disabled', not {v}."),
        )),
    }
}

pub(crate) fn private_link_resource(service_id: &str) -> Value {
    json!({
        "id": format!("{service_id}/privateLinkResources/fhir"),
        "name": "fhir",
        "type": Kind::PrivateLinkResource.type_name(),
        "properties": {
            "groupId": "fhir",
            "requiredMembers": ["fhir"],
            "requiredZoneNames": [PRIVATELINK_ZONE]
        }
    })
}

/// The service side of a private endpoint connection: approve, reject (or leave pending).
pub(super) fn put_connection(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let Some(existing) = existing else {
        return Err(not_found(
            Kind::PrivateEndpointConnection.type_name(),
            &addr.name,
            addr.parent.rg.as_deref(),
        ));
    };
    let state = input
        .get("properties")
        .and_then(|p| p.get("privateLinkServiceConnectionState"))
        .cloned()
        .unwrap_or(Value::Null);
    let status = match s(&state, "status").to_ascii_lowercase().as_str() {
        "approved" => "Approved",
        "rejected" => "Rejected",
        "pending" => "Pending",
        other => {
            return Err(bad_request(
                "InvalidRequestContent",
                format!("privateLinkServiceConnectionState.status must be Approved, Rejected or Pending, not '{other}'."),
            ))
        }
    };
    let current = existing
        .prop("privateLinkServiceConnectionState")
        .map(|v| s(v, "status").to_owned())
        .unwrap_or_default();
    if current == "Rejected" && status != "Rejected" {
        return Err(bad_request(
            "PrivateEndpointConnectionCannotBeChanged",
            "A rejected private endpoint connection cannot be approved or made pending again; the endpoint's owner must create a new private endpoint.",
        ));
    }
    if current == "Approved" && status == "Pending" {
        return Err(bad_request(
            "PrivateEndpointConnectionCannotBeChanged",
            "An approved private endpoint connection cannot be made pending again.",
        ));
    }
    let description = match s(&state, "description") {
        "" => status.to_owned(),
        d => d.to_owned(),
    };
    let mut props = props_of(&existing.body);
    props.insert(
        "privateLinkServiceConnectionState".into(),
        json!({"status": status, "description": description, "actionsRequired": if s(&state, "actionsRequired").is_empty() { "None" } else { s(&state, "actionsRequired") }}),
    );
    let owner = existing.owner.clone();
    store(tx, addr, input, Some(existing), props, &[], owner).map(drop)
}
