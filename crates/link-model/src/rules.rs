//! The rules of each resource type on PUT, PATCH and DELETE: validation, Azure's defaults,
//! address allocation, private endpoints and their connections (auto and manual approval),
//! DNS zone groups and links, role assignments, diagnostic settings and moves. The
//! consequences that span resources (peering states, DNS records, public access) are
//! recomputed afterwards by `reconcile`.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::authz::{self, check, check_linked};
use crate::error::{
    bad_request, invalid_content, invalid_reference, not_found, rg_not_found, ArmError,
};
use crate::handle::{action, Request};
use crate::ipnet::{ip_string, parse_ip, Prefix};
use crate::kind::{Kind, Parent};
use crate::path::{key_of, key_of_scope, parent_key, Addr};
use crate::state::{ref_key, s, Resource, State};
use crate::txn::{guid_from, Txn};
use crate::{PRIVATELINK_ZONE, SERVICE_DNS_SUFFIX};

/// Azure's location form: lower case without spaces (`West US 2` → `westus2`).
pub(crate) fn normalize_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The strings of a JSON array (other items skipped); empty when it is not an array.
fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

fn props_of(v: &Value) -> Map<String, Value> {
    v.get("properties")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

fn array<'a>(v: &'a Map<String, Value>, field: &str) -> Result<Vec<&'a Value>, ArmError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => Ok(a.iter().collect()),
        Some(_) => Err(invalid_content(format!("'{field}' must be an array"))),
    }
}

/// The canonical id of a resource about to be created at `addr`.
fn canonical_id(tx: &Txn<'_>, addr: &Addr) -> String {
    if let Some(r) = tx.get(&addr.key) {
        return r.id.clone();
    }
    let parent = if addr.parent.key.is_empty() {
        String::new()
    } else {
        tx.get(&addr.parent.key)
            .map(|r| r.id.clone())
            .unwrap_or_else(|| addr.parent.path.clone())
    };
    match addr.kind {
        Kind::ResourceGroup => format!("{parent}/resourceGroups/{}", addr.name),
        k if matches!(k.parent(), Parent::Resource(_)) => {
            format!("{parent}/{}/{}", k.segment(), addr.name)
        }
        k => format!(
            "{parent}/providers/{}/{}/{}",
            k.namespace(),
            k.segment(),
            addr.name
        ),
    }
}

/// The etag style of a kind: weak GUIDs for Microsoft.Network, bare GUIDs for private DNS,
/// quoted GUIDs elsewhere; none for resource groups and role assignments.
fn etag_for(tx: &mut Txn<'_>, kind: Kind, key: &str) -> Option<String> {
    let g = tx.new_guid(key);
    match kind {
        Kind::ResourceGroup | Kind::RoleAssignment | Kind::DiagnosticSetting => None,
        Kind::PrivateDnsZone | Kind::ARecordSet | Kind::VirtualNetworkLink => Some(g),
        k if k.namespace() == "Microsoft.Network" => Some(format!("W/\"{g}\"")),
        _ => Some(format!("\"{g}\"")),
    }
}

/// Builds and stores the body of `addr`: name, id, type, location, tags, etag, properties,
/// systemData.
fn store(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
    mut props: Map<String, Value>,
    extra: &[(&str, Value)],
    owner: Option<String>,
) -> Result<Resource, ArmError> {
    let id = canonical_id(tx, addr);
    let mut out = Map::new();
    out.insert(
        "name".into(),
        json!(id.rsplit('/').next().unwrap_or(&addr.name)),
    );
    out.insert("id".into(), json!(id));
    if let Some(e) = etag_for(tx, addr.kind, &addr.key) {
        out.insert("etag".into(), json!(e));
    }
    out.insert("type".into(), json!(addr.kind.type_name()));
    if addr.kind.tracked() {
        let global = matches!(addr.kind, Kind::PrivateDnsZone | Kind::VirtualNetworkLink);
        let given = input
            .get("location")
            .and_then(Value::as_str)
            .map(normalize_location);
        let loc = match (given, global) {
            (None, true) => "global".to_owned(),
            (Some(l), true) if l == "global" => l,
            (Some(l), true) => {
                return Err(bad_request(
                    "LocationNotAvailableForResourceType",
                    format!("The provided location '{l}' is not available for resource type '{}'. List of available regions for the resource type is 'global'.", addr.kind.type_name()),
                ))
            }
            (Some(l), false) if !l.is_empty() => l,
            _ => {
                return Err(bad_request(
                    "LocationRequired",
                    "The location property is required for this definition.",
                ))
            }
        };
        if let Some(old) = existing.map(Resource::location) {
            if addr.kind == Kind::ResourceGroup && !old.is_empty() && old != loc {
                return Err(bad_request(
                    "InvalidResourceGroupLocation",
                    format!("Invalid resource group location '{loc}'. The Resource group already exists in location '{old}'."),
                ));
            }
        }
        out.insert("location".into(), json!(loc));
        let tags = match input.get("tags") {
            Some(Value::Object(t)) => Value::Object(t.clone()),
            Some(Value::Null) | None => json!({}),
            Some(_) => return Err(invalid_content("'tags' must be an object")),
        };
        out.insert("tags".into(), tags);
    }
    for (k, v) in extra {
        out.insert((*k).into(), v.clone());
    }
    if !matches!(addr.kind, Kind::RoleAssignment | Kind::DiagnosticSetting) {
        props.insert("provisioningState".into(), json!("Succeeded"));
    }
    out.insert("properties".into(), Value::Object(props));
    out.insert("systemData".into(), tx.system_data(existing));
    let r = Resource {
        id,
        kind: addr.kind,
        body: Value::Object(out),
        owner,
    };
    tx.put(r.clone());
    Ok(r)
}

/// An address of a child resource of `parent` (a stored resource).
fn child_addr(parent: &Resource, kind: Kind, name: &str) -> Addr {
    let pkey = parent.key();
    Addr {
        kind,
        key: format!(
            "{pkey}/{}/{}",
            kind.segment().to_ascii_lowercase(),
            name.to_lowercase()
        ),
        path: format!("{}/{}/{name}", parent.id, kind.segment()),
        name: name.to_owned(),
        parent: crate::path::Scope {
            key: pkey,
            path: parent.id.clone(),
            sub: parent.id.split('/').nth(2).map(str::to_owned),
            rg: parent.id.split('/').nth(4).map(str::to_owned),
            kind: Some(parent.kind),
        },
    }
}

pub(crate) fn put(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
    req: &Request<'_>,
) -> Result<(), ArmError> {
    match addr.kind {
        Kind::ResourceGroup => {
            let mut extra = Vec::new();
            if let Some(m) = input.get("managedBy") {
                extra.push(("managedBy", m.clone()));
            }
            store(tx, addr, input, existing, Map::new(), &extra, None).map(drop)
        }
        Kind::FhirService => put_service(tx, addr, input, existing, req),
        Kind::PrivateEndpointConnection => put_connection(tx, addr, input, existing),
        Kind::VirtualNetwork => put_vnet(tx, addr, input, existing),
        Kind::Subnet => {
            let vnet = tx
                .get(&addr.parent.key)
                .cloned()
                .ok_or_else(|| not_found(Kind::VirtualNetwork.type_name(), "", None))?;
            put_subnet(tx, &vnet, addr, input, existing)
        }
        Kind::VirtualNetworkPeering => put_peering(tx, addr, input, existing),
        Kind::NetworkSecurityGroup => put_nsg(tx, addr, input, existing),
        Kind::SecurityRule => {
            let nsg = tx
                .get(&addr.parent.key)
                .cloned()
                .ok_or_else(|| not_found(Kind::NetworkSecurityGroup.type_name(), "", None))?;
            let mut siblings: Vec<(String, Map<String, Value>)> = tx
                .st
                .children(&nsg.key(), Kind::SecurityRule)
                .filter(|r| r.key() != addr.key)
                .map(|r| (r.name().to_owned(), props_of(&r.body)))
                .collect();
            let props = validate_rule(&addr.name, &props_of(input))?;
            siblings.push((addr.name.clone(), props.clone()));
            check_rule_conflicts(&siblings)?;
            store(tx, addr, input, existing, props, &[], None).map(drop)
        }
        Kind::NetworkInterface => put_nic(tx, addr, input, existing),
        Kind::PrivateEndpoint => put_private_endpoint(tx, addr, input, existing),
        Kind::PrivateDnsZoneGroup => put_zone_group(tx, addr, input, existing),
        Kind::PrivateDnsZone => {
            let mut props = props_of(input);
            for k in [
                "numberOfRecordSets",
                "numberOfVirtualNetworkLinks",
                "numberOfVirtualNetworkLinksWithRegistration",
                "provisioningState",
            ] {
                props.remove(k);
            }
            props.insert("maxNumberOfRecordSets".into(), json!(25000));
            props.insert("maxNumberOfVirtualNetworkLinks".into(), json!(1000));
            props.insert(
                "maxNumberOfVirtualNetworkLinksWithRegistration".into(),
                json!(100),
            );
            store(tx, addr, input, existing, props, &[], None).map(drop)
        }
        Kind::ARecordSet => put_record_set(tx, addr, input, existing),
        Kind::VirtualNetworkLink => put_link(tx, addr, input, existing),
        Kind::VirtualMachine => put_vm(tx, addr, input, existing),
        Kind::DiagnosticSetting => put_diagnostic_setting(tx, addr, input, existing),
        Kind::RoleAssignment => put_role_assignment(tx, addr, input, existing),
        Kind::PrivateLinkResource | Kind::RoleDefinition | Kind::AllRecordSets => {
            Err(ArmError::new(
                405,
                "MethodNotAllowed",
                "This resource type cannot be written.",
            ))
        }
    }
}

// ---------------------------------------------------------------------------------------
// FHIR services

fn name_taken(state: &State, name: &str, except_key: &str, taken: &BTreeSet<String>) -> bool {
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

fn put_service(
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

fn public_network_access(v: &Value) -> Result<String, ArmError> {
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
fn put_connection(
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

// ---------------------------------------------------------------------------------------
// Virtual networks, subnets, peerings

fn prefixes_of(vnet: &Value) -> Vec<Prefix> {
    vnet.get("properties")
        .and_then(|p| p.get("addressSpace"))
        .and_then(|a| a.get("addressPrefixes"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(Prefix::parse)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_prefix(s: &str) -> Result<Prefix, ArmError> {
    Prefix::parse(s).ok_or_else(|| {
        bad_request(
            "InvalidAddressPrefixFormat",
            format!("Address prefix '{s}' is not a valid IPv4 prefix in CIDR notation with its host bits zero."),
        )
    })
}

fn put_vnet(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let given = strings(
        props
            .get("addressSpace")
            .and_then(|a| a.get("addressPrefixes")),
    );
    if given.is_empty() {
        return Err(bad_request(
            "InvalidAddressSpace",
            "A virtual network needs at least one address prefix in addressSpace.addressPrefixes.",
        ));
    }
    let prefixes = given
        .iter()
        .map(|p| parse_prefix(p))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in prefixes.iter().enumerate() {
        if let Some(b) = prefixes[i + 1..].iter().find(|b| a.overlaps(**b)) {
            return Err(bad_request(
                "VnetAddressSpacesOverlap",
                format!(
                    "The address prefixes {a} and {b} of virtual network '{}' overlap.",
                    addr.name
                ),
            ));
        }
    }
    // Address spaces are unique within a deployment: the source address of a connection must
    // name exactly one network.
    for other in tx.st.of_kind(Kind::VirtualNetwork) {
        if other.key() == addr.key {
            continue;
        }
        for p in prefixes_of(&other.body) {
            if let Some(mine) = prefixes.iter().find(|m| m.overlaps(p)) {
                return Err(bad_request(
                    "VnetAddressSpacesOverlap",
                    format!(
                        "The address space {mine} of virtual network '{}' overlaps the address space {p} of virtual network '{}'. Address spaces must be unique within a fhirlink deployment.",
                        addr.name, other.id
                    ),
                ));
            }
        }
    }
    let subnets: Vec<Value> = array(&props, "subnets")?.into_iter().cloned().collect();
    props.remove("subnets");
    props.remove("virtualNetworkPeerings");
    props.remove("provisioningState");
    props.insert(
        "addressSpace".into(),
        json!({"addressPrefixes": prefixes.iter().map(ToString::to_string).collect::<Vec<_>>()}),
    );
    props
        .entry("resourceGuid")
        .or_insert_with(|| json!(guid_from(&addr.key)));
    if let Some(rg) = existing.and_then(|e| e.prop("resourceGuid")) {
        props.insert("resourceGuid".into(), rg.clone());
    }
    let vnet = store(tx, addr, input, existing, props, &[], None)?;
    // PUT replaces the set of subnets, as in Azure: subnets not listed are deleted.
    let listed: BTreeSet<String> = subnets
        .iter()
        .map(|sn| s(sn, "name").to_lowercase())
        .collect();
    let old: Vec<Resource> = tx
        .st
        .children(&vnet.key(), Kind::Subnet)
        .filter(|r| !listed.contains(&r.name().to_lowercase()))
        .cloned()
        .collect();
    for sn in old {
        subnet_not_in_use(&tx.st, &sn)?;
        for k in tx.st.subtree(&sn.key()) {
            tx.remove(&k);
        }
    }
    let mut seen = BTreeSet::new();
    for sn in &subnets {
        let name = s(sn, "name");
        if name.is_empty() {
            return Err(invalid_content("every subnet needs a name"));
        }
        if !seen.insert(name.to_lowercase()) {
            return Err(bad_request(
                "InvalidRequestFormat",
                format!("Subnet '{name}' is listed twice."),
            ));
        }
        let a = child_addr(&vnet, Kind::Subnet, name);
        let ex = tx.get(&a.key).cloned();
        if ex.is_none() {
            crate::names::validate(Kind::Subnet, name)?;
        }
        put_subnet(tx, &vnet, &a, sn, ex.as_ref())?;
    }
    Ok(())
}

/// Private IPs used in a subnet by network interfaces (other than `except_nic`).
fn used_ips(state: &State, subnet_key: &str, except_nic: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for nic in state.of_kind(Kind::NetworkInterface) {
        if nic.key() == except_nic {
            continue;
        }
        for ipc in nic
            .prop("ipConfigurations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = ipc.get("properties").cloned().unwrap_or(Value::Null);
            if ref_key(&p, "subnet").as_deref() == Some(subnet_key) {
                if let Some(ip) = parse_ip(s(&p, "privateIPAddress")) {
                    out.push((ip, s(ipc, "id").to_owned()));
                }
            }
        }
    }
    out
}

fn subnet_not_in_use(state: &State, subnet: &Resource) -> Result<(), ArmError> {
    if let Some((_, by)) = used_ips(state, &subnet.key(), "").first() {
        return Err(bad_request(
            "InUseSubnetCannotBeDeleted",
            format!(
                "Subnet {} is in use by {by} and cannot be deleted. In order to delete the subnet, delete all the resources within the subnet. See aka.ms/deletesubnet.",
                subnet.name()
            ),
        ));
    }
    Ok(())
}

fn put_subnet(
    tx: &mut Txn<'_>,
    vnet: &Resource,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let raw = props
        .get("addressPrefix")
        .and_then(Value::as_str)
        .or_else(|| {
            props
                .get("addressPrefixes")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
        })
        .unwrap_or("")
        .to_owned();
    if raw.is_empty() {
        return Err(bad_request(
            "InvalidAddressPrefixFormat",
            format!("Subnet '{}' needs an addressPrefix.", addr.name),
        ));
    }
    let prefix = parse_prefix(&raw)?;
    if prefix.len > 29 {
        return Err(bad_request(
            "NetcfgInvalidSubnet",
            format!("Subnet '{}' is not valid: {prefix} is smaller than the smallest supported subnet, /29.", addr.name),
        ));
    }
    if !prefixes_of(&vnet.body).iter().any(|p| p.contains(prefix)) {
        return Err(bad_request(
            "NetcfgSubnetRangeOutsideVnet",
            format!("Subnet '{}' is not valid because its IP address range {prefix} is outside the IP address range of virtual network '{}'.", addr.name, vnet.name()),
        ));
    }
    for sib in tx.st.children(&vnet.key(), Kind::Subnet) {
        if sib.key() == addr.key {
            continue;
        }
        let sp = sib
            .prop("addressPrefix")
            .and_then(Value::as_str)
            .and_then(Prefix::parse);
        if let Some(sp) = sp.filter(|sp| sp.overlaps(prefix)) {
            return Err(bad_request(
                "NetcfgSubnetRangesOverlap",
                format!("Subnet '{}' is not valid because its IP address range {prefix} overlaps with that of an existing subnet '{}' ({sp}) in the virtual network.", addr.name, sib.name()),
            ));
        }
    }
    if existing.is_some() {
        if let Some((ip, by)) = used_ips(&tx.st, &addr.key, "")
            .into_iter()
            .find(|(ip, _)| !prefix.contains_ip(*ip))
        {
            return Err(bad_request(
                "InUseSubnetCannotBeUpdated",
                format!("Subnet {} is in use by {by} (address {}) and its address prefix cannot be changed to {prefix}.", addr.name, ip_string(ip)),
            ));
        }
    }
    if let Some(nsg) = ref_key(&Value::Object(props.clone()), "networkSecurityGroup") {
        let Some(n) = tx
            .get(&nsg)
            .filter(|r| r.kind == Kind::NetworkSecurityGroup)
        else {
            return Err(invalid_reference(&nsg, &addr.path));
        };
        props.insert("networkSecurityGroup".into(), json!({"id": n.id}));
    }
    for k in [
        "ipConfigurations",
        "privateEndpoints",
        "provisioningState",
        "addressPrefixes",
    ] {
        props.remove(k);
    }
    props.insert("addressPrefix".into(), json!(prefix.to_string()));
    props
        .entry("privateEndpointNetworkPolicies")
        .or_insert_with(|| json!("Disabled"));
    props
        .entry("privateLinkServiceNetworkPolicies")
        .or_insert_with(|| json!("Enabled"));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

fn put_peering(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let Some(remote_key) = ref_key(&Value::Object(props.clone()), "remoteVirtualNetwork") else {
        return Err(invalid_content(
            "properties.remoteVirtualNetwork.id is required",
        ));
    };
    let Some(remote) = tx
        .get(&remote_key)
        .filter(|r| r.kind == Kind::VirtualNetwork)
        .cloned()
    else {
        return Err(invalid_reference(&remote_key, &addr.path));
    };
    let local = tx
        .get(&addr.parent.key)
        .cloned()
        .ok_or_else(|| not_found(Kind::VirtualNetwork.type_name(), "", None))?;
    if remote.key() == local.key() {
        return Err(bad_request(
            "CannotPeerVirtualNetworkToItself",
            format!("Virtual network {} cannot be peered with itself.", local.id),
        ));
    }
    check_linked(
        tx.old,
        tx.who,
        &action(Kind::VirtualNetworkPeering, "write"),
        &addr.path,
        "Microsoft.Network/virtualNetworks/peer/action",
        &remote.key(),
        &remote.id,
    )?;
    for a in prefixes_of(&local.body) {
        if let Some(b) = prefixes_of(&remote.body)
            .into_iter()
            .find(|b| a.overlaps(*b))
        {
            return Err(bad_request(
                "VnetAddressSpacesOverlap",
                format!(
                    "Cannot create or update peering {}. Virtual networks {} and {} cannot be peered because their address spaces overlap. Overlapping address prefixes: {a}, {b}",
                    addr.path, local.id, remote.id
                ),
            ));
        }
    }
    if let Some(dup) = tx
        .st
        .children(&local.key(), Kind::VirtualNetworkPeering)
        .find(|p| {
            p.key() != addr.key
                && ref_key(
                    p.body.get("properties").unwrap_or(&Value::Null),
                    "remoteVirtualNetwork",
                )
                .as_deref()
                    == Some(remote.key().as_str())
        })
    {
        return Err(bad_request(
            "VnetPeeringAlreadyExists",
            format!(
                "Peering {} already connects virtual network {} to {}.",
                dup.id, local.id, remote.id
            ),
        ));
    }
    for (k, d) in [
        ("allowVirtualNetworkAccess", true),
        ("allowForwardedTraffic", false),
        ("allowGatewayTransit", false),
        ("useRemoteGateways", false),
    ] {
        props.entry(k).or_insert_with(|| json!(d));
    }
    props.insert("remoteVirtualNetwork".into(), json!({"id": remote.id}));
    let state = existing
        .and_then(|e| e.prop("peeringState"))
        .cloned()
        .unwrap_or_else(|| json!("Initiated"));
    props.insert("peeringState".into(), state);
    props.insert("peeringSyncLevel".into(), json!("FullyInSync"));
    props.remove("remoteAddressSpace");
    props.remove("remoteVirtualNetworkAddressSpace");
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

// ---------------------------------------------------------------------------------------
// Network security groups

fn valid_port_range(v: &str) -> bool {
    if v == "*" {
        return true;
    }
    let port = |p: &str| p.trim().parse::<u32>().is_ok_and(|n| n <= 65535);
    match v.split_once('-') {
        Some((a, b)) => {
            port(a) && port(b) && a.trim().parse::<u32>().ok() <= b.trim().parse::<u32>().ok()
        }
        None => port(v),
    }
}

fn valid_address_prefix(v: &str) -> bool {
    v == "*"
        || parse_ip(v).is_some()
        || Prefix::parse(v).is_some()
        || (v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
}

/// Validates one security rule (Azure's limits: priority 100–4096, direction, access,
/// protocol, prefixes and ports) and returns its properties with canonical casing.
pub(crate) fn validate_rule(
    name: &str,
    p: &Map<String, Value>,
) -> Result<Map<String, Value>, ArmError> {
    let mut out = p.clone();
    out.remove("provisioningState");
    let pick =
        |field: &str, allowed: &[&'static str], code: &str| -> Result<&'static str, ArmError> {
            let v = p.get(field).and_then(Value::as_str).unwrap_or("");
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .copied()
                .ok_or_else(|| {
                    bad_request(
                        code,
                        format!(
                        "Security rule {name} has invalid {field} '{v}'. Allowed values are {}.",
                        allowed.join(", ")
                    ),
                    )
                })
        };
    out.insert(
        "protocol".into(),
        json!(pick(
            "protocol",
            &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
            "SecurityRuleInvalidProtocol"
        )?),
    );
    out.insert(
        "access".into(),
        json!(pick(
            "access",
            &["Allow", "Deny"],
            "SecurityRuleInvalidAccess"
        )?),
    );
    out.insert(
        "direction".into(),
        json!(pick(
            "direction",
            &["Inbound", "Outbound"],
            "SecurityRuleInvalidDirection"
        )?),
    );
    let priority = p.get("priority").and_then(Value::as_i64);
    match priority {
        Some(n) if (100..=4096).contains(&n) => {
            out.insert("priority".into(), json!(n));
        }
        _ => {
            return Err(bad_request(
                "SecurityRuleInvalidPriority",
                format!(
                    "Security rule {name} has invalid Priority. Value provided: {}. Allowed values are from 100 to 4096.",
                    p.get("priority").map(ToString::to_string).unwrap_or_else(|| "none".into())
                ),
            ))
        }
    }
    for side in ["source", "destination"] {
        let single = p
            .get(&format!("{side}AddressPrefix"))
            .and_then(Value::as_str);
        let many: Vec<&str> = p
            .get(&format!("{side}AddressPrefixes"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all: Vec<&str> = single.into_iter().chain(many).collect();
        if all.is_empty() || all.iter().any(|v| !valid_address_prefix(v)) {
            return Err(bad_request(
                "SecurityRuleInvalidAddressPrefix",
                format!("Security rule {name} has invalid {side} address prefix {all:?}: use '*', a service tag such as Internet or VirtualNetwork, an IPv4 address or a CIDR prefix."),
            ));
        }
        let single = p.get(&format!("{side}PortRange")).and_then(Value::as_str);
        let many: Vec<&str> = p
            .get(&format!("{side}PortRanges"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all: Vec<&str> = single.into_iter().chain(many).collect();
        if all.is_empty() || all.iter().any(|v| !valid_port_range(v)) {
            return Err(bad_request(
                "SecurityRuleInvalidPortRange",
                format!("Security rule {name} has invalid {side} port range {all:?}: use '*', a port or a range such as 80-88 within 0-65535."),
            ));
        }
    }
    Ok(out)
}

fn check_rule_conflicts(rules: &[(String, Map<String, Value>)]) -> Result<(), ArmError> {
    for (i, (a, pa)) in rules.iter().enumerate() {
        for (b, pb) in &rules[i + 1..] {
            if pa.get("priority") == pb.get("priority")
                && pa.get("direction") == pb.get("direction")
            {
                return Err(bad_request(
                    "SecurityRuleConflict",
                    format!("Rules '{a}' and '{b}' have the same Priority and Direction. Priority and Direction must be unique for each rule in a security group."),
                ));
            }
        }
    }
    Ok(())
}

fn put_nsg(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let given: Vec<Value> = array(&props, "securityRules")?
        .into_iter()
        .cloned()
        .collect();
    let mut rules = Vec::new();
    for r in &given {
        let name = s(r, "name");
        crate::names::validate(Kind::SecurityRule, name)?;
        rules.push((name.to_owned(), validate_rule(name, &props_of(r))?));
    }
    let mut names = BTreeSet::new();
    for (n, _) in &rules {
        if !names.insert(n.to_lowercase()) {
            return Err(bad_request(
                "InvalidRequestFormat",
                format!("Security rule '{n}' is listed twice."),
            ));
        }
    }
    check_rule_conflicts(&rules)?;
    for k in [
        "securityRules",
        "defaultSecurityRules",
        "subnets",
        "networkInterfaces",
        "provisioningState",
    ] {
        props.remove(k);
    }
    props
        .entry("resourceGuid")
        .or_insert_with(|| json!(guid_from(&addr.key)));
    let nsg = store(tx, addr, input, existing, props, &[], None)?;
    let stale: Vec<String> = tx
        .st
        .children(&nsg.key(), Kind::SecurityRule)
        .filter(|r| !names.contains(&r.name().to_lowercase()))
        .map(Resource::key)
        .collect();
    for k in stale {
        tx.remove(&k);
    }
    for ((name, p), raw) in rules.into_iter().zip(&given) {
        let a = child_addr(&nsg, Kind::SecurityRule, &name);
        let ex = tx.get(&a.key).cloned();
        store(tx, &a, raw, ex.as_ref(), p, &[], None)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Network interfaces and private endpoints

/// The subnet (and its virtual network) that a body references, in the resource's region.
fn subnet_for(
    tx: &Txn<'_>,
    subnet_key: &str,
    location: &str,
    by: &str,
) -> Result<(Resource, Resource), ArmError> {
    let Some(subnet) = tx
        .get(subnet_key)
        .filter(|r| r.kind == Kind::Subnet)
        .cloned()
    else {
        return Err(invalid_reference(subnet_key, by));
    };
    let vnet = tx
        .get(&parent_key(subnet_key))
        .cloned()
        .ok_or_else(|| invalid_reference(subnet_key, by))?;
    // The region rule: an interface (a private endpoint's included) lives in the region of
    // its virtual network.
    if normalize_location(vnet.location()) != normalize_location(location) {
        return Err(invalid_reference(&vnet.id, by));
    }
    Ok((subnet, vnet))
}

/// Chooses a private IP in `subnet`: the pinned one if free and usable, else the first free
/// address from `.4`.
fn choose_ip(
    tx: &Txn<'_>,
    subnet: &Resource,
    pinned: Option<&str>,
    keep: Option<u32>,
    nic_key: &str,
) -> Result<u32, ArmError> {
    let prefix = subnet
        .prop("addressPrefix")
        .and_then(Value::as_str)
        .and_then(Prefix::parse)
        .ok_or_else(|| {
            bad_request(
                "InvalidAddressPrefixFormat",
                "The subnet has no valid address prefix.",
            )
        })?;
    let used = used_ips(&tx.st, &subnet.key(), nic_key);
    let used_ips: Vec<u32> = used.iter().map(|(ip, _)| *ip).collect();
    if let Some(p) = pinned.filter(|p| !p.is_empty()) {
        let Some(ip) = parse_ip(p) else {
            return Err(bad_request(
                "InvalidPrivateIPAddress",
                format!("'{p}' is not a valid IPv4 address."),
            ));
        };
        if !prefix.usable(ip) {
            return Err(bad_request(
                "PrivateIPAddressNotInSubnet",
                format!("Private static IP address {p} does not belong to the range of subnet prefix {prefix}, or is one of the addresses Azure reserves (the first four and the last)."),
            ));
        }
        if let Some((_, by)) = used.iter().find(|(u, _)| *u == ip) {
            return Err(bad_request(
                "PrivateIPAddressInUse",
                format!("IP configuration {by} is using the private IP address {p} which is already allocated to another resource."),
            ));
        }
        return Ok(ip);
    }
    if let Some(k) = keep.filter(|k| prefix.usable(*k) && !used_ips.contains(k)) {
        return Ok(k);
    }
    prefix.allocate(&used_ips).ok_or_else(|| {
        bad_request(
            "SubnetIsFull",
            format!("Subnet {} with address prefix {prefix} does not have enough capacity for 1 IP address.", subnet.name()),
        )
    })
}

fn put_nic(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if let Some(owner) = existing.and_then(|e| e.owner.clone()) {
        return Err(bad_request(
            "CannotModifyNicAttachedToPrivateEndpoint",
            format!("Network interface {} is managed by private endpoint {owner} and cannot be modified.", addr.path),
        ));
    }
    let location = normalize_location(s(input, "location"));
    let mut props = props_of(input);
    let configs: Vec<Value> = array(&props, "ipConfigurations")?
        .into_iter()
        .cloned()
        .collect();
    if configs.is_empty() {
        return Err(bad_request(
            "NetworkInterfaceMustHaveIpConfiguration",
            "A network interface needs at least one IP configuration.",
        ));
    }
    let nic_id = canonical_id(tx, addr);
    let mut out = Vec::new();
    let mut taken: Vec<u32> = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let name = match s(c, "name") {
            "" => format!("ipconfig{}", i + 1),
            n => n.to_owned(),
        };
        let p = props_of(c);
        let Some(subnet_key) = ref_key(&Value::Object(p.clone()), "subnet") else {
            return Err(invalid_content(format!(
                "ipConfigurations[{i}].properties.subnet.id is required"
            )));
        };
        let (subnet, _) = subnet_for(tx, &subnet_key, &location, &addr.path)?;
        check_linked(
            tx.old,
            tx.who,
            &action(Kind::NetworkInterface, "write"),
            &addr.path,
            "Microsoft.Network/virtualNetworks/subnets/join/action",
            &subnet.key(),
            &subnet.id,
        )?;
        let pinned = p.get("privateIPAddress").and_then(Value::as_str);
        let static_ = s(&Value::Object(p.clone()), "privateIPAllocationMethod")
            .eq_ignore_ascii_case("Static");
        let keep = existing
            .and_then(|e| e.prop("ipConfigurations"))
            .and_then(Value::as_array)
            .and_then(|a| a.iter().find(|x| s(x, "name").eq_ignore_ascii_case(&name)))
            .and_then(|x| x.get("properties"))
            .filter(|x| ref_key(x, "subnet").as_deref() == Some(subnet.key().as_str()))
            .and_then(|x| parse_ip(s(x, "privateIPAddress")));
        let pinned = if static_ || keep.is_none() {
            pinned
        } else {
            None
        };
        let mut ip = choose_ip(tx, &subnet, pinned, keep, &addr.key)?;
        if taken.contains(&ip) {
            ip = choose_ip(tx, &subnet, None, None, &addr.key)?;
        }
        taken.push(ip);
        let mut np = p.clone();
        np.insert("privateIPAddress".into(), json!(ip_string(ip)));
        np.insert(
            "privateIPAllocationMethod".into(),
            json!(if static_ { "Static" } else { "Dynamic" }),
        );
        np.insert("subnet".into(), json!({"id": subnet.id}));
        np.insert("primary".into(), json!(i == 0));
        np.insert("privateIPAddressVersion".into(), json!("IPv4"));
        np.insert("provisioningState".into(), json!("Succeeded"));
        out.push(json!({"name": name, "id": format!("{nic_id}/ipConfigurations/{name}"), "type": "Microsoft.Network/networkInterfaces/ipConfigurations", "properties": np}));
    }
    props.insert("ipConfigurations".into(), Value::Array(out));
    if let Some(nsg) = ref_key(&Value::Object(props.clone()), "networkSecurityGroup") {
        let Some(n) = tx
            .get(&nsg)
            .filter(|r| r.kind == Kind::NetworkSecurityGroup)
        else {
            return Err(invalid_reference(&nsg, &addr.path));
        };
        props.insert("networkSecurityGroup".into(), json!({"id": n.id}));
    }
    for k in ["virtualMachine", "privateEndpoint", "provisioningState"] {
        props.remove(k);
    }
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

/// The name of the service side of the connection made by private endpoint `pe`.
pub(crate) fn service_connection_name(pe_name: &str, pe_key: &str) -> String {
    format!("{pe_name}.{}", &guid_from(pe_key)[..8])
}

fn put_private_endpoint(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if let Some(e) = existing {
        // An endpoint's subnet, address and connection are fixed once made; tags and other
        // top-level fields may change.
        let props = props_of(&e.body);
        let owner = e.owner.clone();
        return store(tx, addr, input, Some(e), props, &[], owner).map(drop);
    }
    let location = normalize_location(s(input, "location"));
    if location.is_empty() {
        return Err(bad_request(
            "LocationRequired",
            "The location property is required for this definition.",
        ));
    }
    let props = props_of(input);
    let Some(subnet_key) = ref_key(&Value::Object(props.clone()), "subnet") else {
        return Err(invalid_content("properties.subnet.id is required"));
    };
    let (subnet, _vnet) = subnet_for(tx, &subnet_key, &location, &addr.path)?;
    let own_action = action(Kind::PrivateEndpoint, "write");
    check_linked(
        tx.old,
        tx.who,
        &own_action,
        &addr.path,
        "Microsoft.Network/virtualNetworks/subnets/join/action",
        &subnet.key(),
        &subnet.id,
    )?;
    let auto = array(&props, "privateLinkServiceConnections")?;
    let manual = array(&props, "manualPrivateLinkServiceConnections")?;
    if auto.len() + manual.len() != 1 {
        return Err(bad_request(
            "PrivateEndpointMustHaveOneConnection",
            "A private endpoint needs exactly one connection, in privateLinkServiceConnections (auto approval) or manualPrivateLinkServiceConnections (manual approval).",
        ));
    }
    let is_auto = !auto.is_empty();
    let conn = auto
        .first()
        .or(manual.first())
        .copied()
        .cloned()
        .unwrap_or(Value::Null);
    let cp = props_of(&conn);
    let target_id = s(&Value::Object(cp.clone()), "privateLinkServiceId").to_owned();
    let Some(service) = tx
        .get(&key_of(&target_id))
        .filter(|r| r.kind == Kind::FhirService)
        .cloned()
    else {
        return Err(invalid_reference(&target_id, &addr.path));
    };
    let group_ids = strings(cp.get("groupIds"));
    if let Some(bad) = group_ids.iter().find(|g| !g.eq_ignore_ascii_case("fhir")) {
        return Err(bad_request(
            "PrivateEndpointBadRequest",
            format!("Call to Microsoft.HealthcareApis/services failed. Error message: the group id '{bad}' is not valid; the only private link resource of a FHIR service is 'fhir'."),
        ));
    }
    if is_auto {
        // Auto approval needs the right to approve on the service itself (Owner or
        // Contributor on it or above); without it, the caller must ask for manual approval.
        check_linked(
            tx.old,
            tx.who,
            &own_action,
            &addr.path,
            "Microsoft.HealthcareApis/services/privateEndpointConnectionsApproval/action",
            &service.key(),
            &service.id,
        )?;
    }
    let request_message = cp
        .get("requestMessage")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let pe_id = canonical_id(tx, addr);
    let rg_id = tx
        .get(&addr.parent.key)
        .map(|r| r.id.clone())
        .unwrap_or_else(|| addr.parent.path.clone());
    // The endpoint's network interface, managed by the endpoint.
    let pinned = array(&props, "ipConfigurations")?
        .first()
        .and_then(|c| c.get("properties"))
        .and_then(|p| p.get("privateIPAddress"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let nic_name = match s(&Value::Object(props.clone()), "customNetworkInterfaceName") {
        "" => format!(
            "{}.nic.{}",
            addr.name,
            guid_from(&format!("{}#nic", addr.key))
        ),
        n => n.to_owned(),
    };
    crate::names::validate(Kind::NetworkInterface, &nic_name)?;
    let nic_id = format!("{rg_id}/providers/Microsoft.Network/networkInterfaces/{nic_name}");
    let nic_key = nic_id.to_lowercase();
    if tx.get(&nic_key).is_some() {
        return Err(ArmError::new(
            409,
            "NetworkInterfaceAlreadyExists",
            format!("Network interface {nic_id} already exists; choose another customNetworkInterfaceName."),
        ));
    }
    let ip = choose_ip(tx, &subnet, pinned.as_deref(), None, &nic_key)?;
    let fqdn = format!("{}.{SERVICE_DNS_SUFFIX}", service.name());
    let ipc_name = format!(
        "privateEndpointIpConfig.{}",
        guid_from(&format!("{}#ipc", addr.key))
    );
    let nic_addr = Addr {
        kind: Kind::NetworkInterface,
        key: nic_key.clone(),
        path: nic_id.clone(),
        name: nic_name.clone(),
        parent: addr.parent.clone(),
    };
    let nic_props = json!({
        "ipConfigurations": [{
            "name": ipc_name,
            "id": format!("{nic_id}/ipConfigurations/{ipc_name}"),
            "type": "Microsoft.Network/networkInterfaces/ipConfigurations",
            "properties": {
                "provisioningState": "Succeeded",
                "privateIPAddress": ip_string(ip),
                "privateIPAllocationMethod": if pinned.is_some() { "Static" } else { "Dynamic" },
                "subnet": {"id": subnet.id},
                "primary": true,
                "privateIPAddressVersion": "IPv4",
                "privateLinkConnectionProperties": {"groupId": "fhir", "requiredMemberName": "fhir", "fqdns": [fqdn]}
            }
        }],
        "privateEndpoint": {"id": pe_id}
    });
    store(
        tx,
        &nic_addr,
        &json!({"location": location}),
        None,
        nic_props.as_object().cloned().unwrap_or_default(),
        &[],
        Some(addr.key.clone()),
    )?;
    // The service side of the connection.
    let (status, description) = if is_auto {
        ("Approved", "Auto-Approved".to_owned())
    } else {
        (
            "Pending",
            request_message
                .clone()
                .unwrap_or_else(|| "Awaiting approval".into()),
        )
    };
    let sc_name = service_connection_name(&addr.name, &addr.key);
    let sc_addr = child_addr(&service, Kind::PrivateEndpointConnection, &sc_name);
    let sc_props = json!({
        "privateEndpoint": {"id": pe_id},
        "privateLinkServiceConnectionState": {"status": status, "description": description, "actionsRequired": "None"}
    });
    store(
        tx,
        &sc_addr,
        &Value::Null,
        None,
        sc_props.as_object().cloned().unwrap_or_default(),
        &[],
        Some(addr.key.clone()),
    )?;
    // The endpoint itself.
    let conn_name = match s(&conn, "name") {
        "" => addr.name.clone(),
        n => n.to_owned(),
    };
    let list_name = if is_auto {
        "privateLinkServiceConnections"
    } else {
        "manualPrivateLinkServiceConnections"
    };
    let mut conn_props = json!({
        "provisioningState": "Succeeded",
        "privateLinkServiceId": service.id,
        "groupIds": ["fhir"],
        "privateLinkServiceConnectionState": {
            "status": status,
            "description": if is_auto { "Auto-Approved" } else { "Awaiting approval" },
            "actionsRequired": "None"
        }
    });
    if let (Some(m), Some(o)) = (&request_message, conn_props.as_object_mut()) {
        o.insert("requestMessage".into(), json!(m));
    }
    let conn_json = json!({
        "name": conn_name,
        "id": format!("{pe_id}/{list_name}/{conn_name}"),
        "type": "Microsoft.Network/privateEndpoints/privateLinkServiceConnections",
        "properties": conn_props
    });
    let mut out = Map::new();
    out.insert(
        "privateLinkServiceConnections".into(),
        if is_auto {
            json!([conn_json.clone()])
        } else {
            json!([])
        },
    );
    out.insert(
        "manualPrivateLinkServiceConnections".into(),
        if is_auto {
            json!([])
        } else {
            json!([conn_json])
        },
    );
    out.insert("subnet".into(), json!({"id": subnet.id}));
    out.insert("networkInterfaces".into(), json!([{"id": nic_id}]));
    out.insert(
        "customDnsConfigs".into(),
        json!([{"fqdn": fqdn, "ipAddresses": [ip_string(ip)]}]),
    );
    out.insert("applicationSecurityGroups".into(), json!([]));
    out.insert(
        "ipConfigurations".into(),
        props
            .get("ipConfigurations")
            .cloned()
            .unwrap_or_else(|| json!([])),
    );
    if let Some(n) = props.get("customNetworkInterfaceName") {
        out.insert("customNetworkInterfaceName".into(), n.clone());
    }
    store(tx, addr, input, None, out, &[], None).map(drop)
}

fn put_zone_group(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if let Some(other) = tx
        .st
        .children(&addr.parent.key, Kind::PrivateDnsZoneGroup)
        .find(|g| g.key() != addr.key)
    {
        return Err(bad_request(
            "OnlyOneDnsZoneGroupAllowed",
            format!("Private endpoint {} already has the private DNS zone group {}; a private endpoint has at most one.", addr.parent.path, other.id),
        ));
    }
    let props = props_of(input);
    let mut configs = Vec::new();
    for c in array(&props, "privateDnsZoneConfigs")? {
        let p = props_of(c);
        let zone_id = s(&Value::Object(p.clone()), "privateDnsZoneId").to_owned();
        let Some(zone) = tx
            .get(&key_of(&zone_id))
            .filter(|r| r.kind == Kind::PrivateDnsZone)
            .cloned()
        else {
            return Err(invalid_reference(&zone_id, &addr.path));
        };
        check_linked(
            tx.old,
            tx.who,
            &action(Kind::PrivateDnsZoneGroup, "write"),
            &addr.path,
            "Microsoft.Network/privateDnsZones/join/action",
            &zone.key(),
            &zone.id,
        )?;
        let name = match s(c, "name") {
            "" => zone.name().replace('.', "-"),
            n => n.to_owned(),
        };
        configs.push(json!({"name": name, "properties": {"privateDnsZoneId": zone.id}}));
    }
    let mut out = Map::new();
    out.insert("privateDnsZoneConfigs".into(), Value::Array(configs));
    store(tx, addr, input, existing, out, &[], None).map(drop)
}

// ---------------------------------------------------------------------------------------
// Private DNS

fn put_record_set(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if let Some(owner) = existing.and_then(|e| e.owner.as_ref()) {
        return Err(bad_request(
            "BadRequest",
            format!("The record set {} is managed by {owner} and cannot be modified; change that resource instead.", addr.path),
        ));
    }
    let mut props = props_of(input);
    let ttl = props.get("ttl").map_or(Some(3600), Value::as_i64);
    let Some(ttl) = ttl.filter(|t| (0..=2_147_483_647).contains(t)) else {
        return Err(bad_request(
            "BadRequest",
            "ttl must be an integer from 0 to 2147483647.",
        ));
    };
    let mut records = Vec::new();
    for r in array(&props, "aRecords")? {
        let ip = s(r, "ipv4Address");
        if parse_ip(ip).is_none() {
            return Err(bad_request(
                "BadRequest",
                format!("'{ip}' is not a valid IPv4 address."),
            ));
        }
        records.push(json!({"ipv4Address": ip}));
    }
    let zone = tx
        .get(&addr.parent.key)
        .map(|z| z.name().to_owned())
        .unwrap_or_default();
    props.insert("ttl".into(), json!(ttl));
    props.insert("aRecords".into(), Value::Array(records));
    props.insert("fqdn".into(), json!(record_fqdn(&addr.name, &zone)));
    props.insert("isAutoRegistered".into(), json!(false));
    props.entry("metadata").or_insert_with(|| json!({}));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

pub(crate) fn record_fqdn(name: &str, zone: &str) -> String {
    if name == "@" {
        format!("{zone}.")
    } else {
        format!("{name}.{zone}.")
    }
}

fn put_link(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let Some(vnet_key) = ref_key(&Value::Object(props.clone()), "virtualNetwork") else {
        return Err(invalid_content("properties.virtualNetwork.id is required"));
    };
    let Some(vnet) = tx
        .get(&vnet_key)
        .filter(|r| r.kind == Kind::VirtualNetwork)
        .cloned()
    else {
        return Err(invalid_reference(&vnet_key, &addr.path));
    };
    check_linked(
        tx.old,
        tx.who,
        &action(Kind::VirtualNetworkLink, "write"),
        &addr.path,
        "Microsoft.Network/virtualNetworks/join/action",
        &vnet.key(),
        &vnet.id,
    )?;
    let registration = match props.get("registrationEnabled") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid_content("registrationEnabled must be a boolean")),
    };
    let links_of_vnet = |st: &State| -> Vec<Resource> {
        st.of_kind(Kind::VirtualNetworkLink)
            .filter(|l| {
                l.key() != addr.key
                    && ref_key(
                        l.body.get("properties").unwrap_or(&Value::Null),
                        "virtualNetwork",
                    )
                    .as_deref()
                        == Some(vnet.key().as_str())
            })
            .cloned()
            .collect()
    };
    let others = links_of_vnet(&tx.st);
    if let Some(dup) = others
        .iter()
        .find(|l| parent_key(&l.key()) == addr.parent.key)
    {
        return Err(ArmError::new(
            409,
            "Conflict",
            format!("A virtual network cannot be linked to the same private DNS zone more than once: {} already links {}.", dup.id, vnet.id),
        ));
    }
    if registration {
        if let Some(reg) = others
            .iter()
            .find(|l| l.prop("registrationEnabled").and_then(Value::as_bool) == Some(true))
        {
            return Err(ArmError::new(
                409,
                "Conflict",
                format!("Virtual network {} already has auto-registration enabled through {}; a virtual network can be linked with auto-registration to only one private DNS zone.", vnet.id, reg.id),
            ));
        }
    }
    props.insert("virtualNetwork".into(), json!({"id": vnet.id}));
    props.insert("registrationEnabled".into(), json!(registration));
    props.insert("virtualNetworkLinkState".into(), json!("Completed"));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

// ---------------------------------------------------------------------------------------
// Virtual machines, diagnostic settings, role assignments

fn put_vm(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let location = normalize_location(s(input, "location"));
    let mut props = props_of(input);
    let nics: Vec<Value> = props
        .get("networkProfile")
        .and_then(|n| n.get("networkInterfaces"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if nics.is_empty() {
        return Err(bad_request(
            "InvalidParameter",
            "properties.networkProfile.networkInterfaces must name at least one network interface.",
        ));
    }
    let mut out = Vec::new();
    for (i, n) in nics.iter().enumerate() {
        let id = s(n, "id");
        let Some(nic) = tx
            .get(&key_of(id))
            .filter(|r| r.kind == Kind::NetworkInterface)
            .cloned()
        else {
            return Err(invalid_reference(id, &addr.path));
        };
        if normalize_location(nic.location()) != location {
            return Err(invalid_reference(&nic.id, &addr.path));
        }
        if let Some(owner) = &nic.owner {
            return Err(bad_request(
                "NicInUse",
                format!(
                    "Network interface {} is used by private endpoint {owner}.",
                    nic.id
                ),
            ));
        }
        if let Some(vm) = tx
            .st
            .of_kind(Kind::VirtualMachine)
            .find(|vm| vm.key() != addr.key && vm_nics(vm).contains(&nic.key()))
        {
            return Err(bad_request(
                "NicInUse",
                format!("Network interface {} is used by existing resource {}. In order to use it, it must be dissociated from that resource.", nic.id, vm.id),
            ));
        }
        let primary = n
            .get("properties")
            .and_then(|p| p.get("primary"))
            .and_then(Value::as_bool)
            .unwrap_or(i == 0);
        out.push(json!({"id": nic.id, "properties": {"primary": primary}}));
    }
    let mut np = props
        .get("networkProfile")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    np.insert("networkInterfaces".into(), Value::Array(out));
    props.insert("networkProfile".into(), Value::Object(np));
    props
        .entry("vmId")
        .or_insert_with(|| json!(guid_from(&addr.key)));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

pub(crate) fn vm_nics(vm: &Resource) -> Vec<String> {
    vm.prop("networkProfile")
        .and_then(|n| n.get("networkInterfaces"))
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|n| key_of(s(n, "id"))).collect())
        .unwrap_or_default()
}

const DESTINATIONS: &[&str] = &[
    "storageAccountId",
    "workspaceId",
    "eventHubAuthorizationRuleId",
    "serviceBusRuleId",
    "marketplacePartnerId",
];

fn put_diagnostic_setting(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if addr.parent.kind != Some(Kind::FhirService) {
        return Err(bad_request(
            "ResourceTypeNotSupported",
            "fhirlink exports diagnostics of Microsoft.HealthcareApis/services only.",
        ));
    }
    let props = props_of(input);
    if !DESTINATIONS.iter().any(|d| {
        props
            .get(*d)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    }) {
        return Err(bad_request(
            "BadRequest",
            "A diagnostic setting needs a destination: storageAccountId (exported to files), workspaceId, eventHubAuthorizationRuleId or marketplacePartnerId.",
        ));
    }
    for l in array(&props, "logs")? {
        let cat = s(l, "category");
        let group = s(l, "categoryGroup");
        let ok = cat.eq_ignore_ascii_case("AuditLogs")
            || (cat.is_empty()
                && (group.eq_ignore_ascii_case("allLogs") || group.eq_ignore_ascii_case("audit")));
        if !ok {
            return Err(bad_request(
                "BadRequest",
                format!("Category '{}' is not supported: a FHIR service exports the log category 'AuditLogs'.", if cat.is_empty() { group } else { cat }),
            ));
        }
    }
    for m in array(&props, "metrics")? {
        let cat = s(m, "category");
        if !cat.eq_ignore_ascii_case("AllMetrics") {
            return Err(bad_request(
                "BadRequest",
                format!("Category '{cat}' is not supported: a FHIR service exports the metric category 'AllMetrics'."),
            ));
        }
    }
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

fn put_role_assignment(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let props = props_of(input);
    let pv = Value::Object(props.clone());
    let role_id = s(&pv, "roleDefinitionId");
    let Some(role) = authz::role(authz::role_guid(role_id)) else {
        return Err(bad_request(
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                authz::role_guid(role_id)
            ),
        ));
    };
    let principal = s(&pv, "principalId");
    if principal.is_empty() {
        return Err(bad_request(
            "InvalidPrincipalId",
            "properties.principalId is required.",
        ));
    }
    let scope_id = if addr.parent.key.is_empty() {
        "/".to_owned()
    } else {
        tx.get(&addr.parent.key)
            .map(|r| r.id.clone())
            .unwrap_or_else(|| addr.parent.path.clone())
    };
    if let Some(e) = existing {
        let ep = e.body.get("properties").cloned().unwrap_or(Value::Null);
        if authz::role_guid(s(&ep, "roleDefinitionId")) != role.id
            || s(&ep, "principalId") != principal
        {
            return Err(bad_request(
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            ));
        }
    }
    let scope_key = key_of_scope(&scope_id);
    if tx.st.of_kind(Kind::RoleAssignment).any(|ra| {
        let p = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        ra.key() != addr.key
            && s(&p, "principalId") == principal
            && authz::role_guid(s(&p, "roleDefinitionId")) == role.id
            && key_of_scope(s(&p, "scope")) == scope_key
    }) {
        return Err(ArmError::new(
            409,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    let def_scope = addr
        .parent
        .sub
        .as_ref()
        .map(|s| format!("/subscriptions/{s}"))
        .unwrap_or_default();
    let now = tx.now_string();
    let created = existing
        .and_then(|e| e.prop("createdOn"))
        .cloned()
        .unwrap_or_else(|| json!(now));
    let mut out = Map::new();
    out.insert(
        "roleDefinitionId".into(),
        json!(format!(
            "{def_scope}/providers/Microsoft.Authorization/roleDefinitions/{}",
            role.id
        )),
    );
    out.insert("principalId".into(), json!(principal));
    out.insert(
        "principalType".into(),
        json!(match s(&pv, "principalType") {
            "" => "User",
            t => t,
        }),
    );
    out.insert("scope".into(), json!(scope_id));
    for k in ["description", "condition", "conditionVersion"] {
        if let Some(v) = props.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("createdOn".into(), created);
    out.insert("updatedOn".into(), json!(now));
    out.insert("createdBy".into(), json!(tx.who.id));
    out.insert("updatedBy".into(), json!(tx.who.id));
    store(tx, addr, input, existing, out, &[], None).map(drop)
}

/// Makes `owner` Owner at the root scope, if no assignment says so yet (run at start).
pub fn ensure_owner(
    state: &State,
    owner: &str,
    who: &crate::Principal,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(State, crate::Changes)> {
    let has = state.of_kind(Kind::RoleAssignment).any(|ra| {
        let p = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        s(&p, "principalId") == owner
            && authz::role_guid(s(&p, "roleDefinitionId")) == authz::OWNER
            && key_of_scope(s(&p, "scope")).is_empty()
    });
    if has {
        return None;
    }
    let name = guid_from(&format!("fhirlink-root-owner|{owner}"));
    let addr = Addr {
        kind: Kind::RoleAssignment,
        key: format!("/providers/microsoft.authorization/roleassignments/{name}"),
        path: format!("/providers/Microsoft.Authorization/roleAssignments/{name}"),
        name,
        parent: crate::path::Scope {
            key: String::new(),
            path: String::new(),
            sub: None,
            rg: None,
            kind: None,
        },
    };
    let mut tx = Txn::new(state, who, now);
    tx.remove(&addr.key);
    let body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", authz::OWNER), "principalId": owner, "principalType": "User", "description": "The owner named at start (--owner)."}});
    put_role_assignment(&mut tx, &addr, &body, None).ok()?;
    Some(tx.finish())
}

// ---------------------------------------------------------------------------------------
// PATCH

pub(crate) fn patch(tx: &mut Txn<'_>, existing: &Resource, input: &Value) -> Result<(), ArmError> {
    let mut body = existing.body.clone();
    if let Some(tags) = input.get("tags") {
        if !tags.is_object() {
            return Err(invalid_content("'tags' must be an object"));
        }
        if let Some(o) = body.as_object_mut() {
            o.insert("tags".into(), tags.clone());
        }
    }
    if existing.kind == Kind::FhirService {
        if let Some(v) = input
            .get("properties")
            .and_then(|p| p.get("publicNetworkAccess"))
        {
            let pna = public_network_access(v)?;
            if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
                p.insert("publicNetworkAccess".into(), json!(pna));
            }
        }
    }
    let key = existing.key();
    let etag = etag_for(tx, existing.kind, &key);
    if let Some(o) = body.as_object_mut() {
        if let Some(e) = etag {
            o.insert("etag".into(), json!(e));
        }
        o.insert("systemData".into(), tx.system_data(Some(existing)));
    }
    tx.put(Resource {
        body,
        ..existing.clone()
    });
    Ok(())
}

// ---------------------------------------------------------------------------------------
// DELETE

fn nsg_in_use(state: &State, nsg: &Resource) -> Option<String> {
    let k = nsg.key();
    state
        .resources()
        .filter(|r| matches!(r.kind, Kind::Subnet | Kind::NetworkInterface))
        .find(|r| {
            ref_key(
                r.body.get("properties").unwrap_or(&Value::Null),
                "networkSecurityGroup",
            )
            .as_deref()
                == Some(k.as_str())
        })
        .map(|r| r.id.clone())
}

pub(crate) fn delete(tx: &mut Txn<'_>, existing: &Resource) -> Result<(), ArmError> {
    let key = existing.key();
    match existing.kind {
        Kind::ResourceGroup => {
            for k in tx.st.subtree(&key) {
                if let Some(r) = tx.get(&k) {
                    if r.kind == Kind::FhirService {
                        let n = r.name().to_owned();
                        tx.services_deleted.push(n);
                    }
                }
            }
            // Role assignments at the group's scope go with it.
        }
        Kind::FhirService => tx.services_deleted.push(existing.name().to_owned()),
        Kind::VirtualNetwork => {
            let subnets: Vec<Resource> = tx.st.children(&key, Kind::Subnet).cloned().collect();
            for sn in &subnets {
                subnet_not_in_use(&tx.st, sn)?;
            }
        }
        Kind::Subnet => subnet_not_in_use(&tx.st, existing)?,
        Kind::NetworkSecurityGroup => {
            if let Some(by) = nsg_in_use(&tx.st, existing) {
                return Err(bad_request(
                    "InUseNetworkSecurityGroupCannotBeDeleted",
                    format!(
                        "Network security group {} cannot be deleted because it is in use by {by}.",
                        existing.id
                    ),
                ));
            }
        }
        Kind::NetworkInterface => {
            if let Some(owner) = &existing.owner {
                return Err(bad_request(
                    "NicInUse",
                    format!("Network interface {} is used by private endpoint {owner}; delete the private endpoint instead.", existing.id),
                ));
            }
            if let Some(vm) = tx
                .st
                .of_kind(Kind::VirtualMachine)
                .find(|vm| vm_nics(vm).contains(&key))
            {
                return Err(bad_request(
                    "NicInUse",
                    format!("Network Interface {} is used by existing resource {}. In order to delete the network interface, it must be dissociated from the resource.", existing.id, vm.id),
                ));
            }
        }
        Kind::PrivateDnsZone => {
            if let Some(link) = tx.st.children(&key, Kind::VirtualNetworkLink).next() {
                return Err(ArmError::new(
                    409,
                    "Conflict",
                    format!("You cannot delete a Private DNS zone that has virtual network links, such as {}. Delete the links first.", link.id),
                ));
            }
        }
        Kind::ARecordSet => {
            if let Some(owner) = &existing.owner {
                return Err(bad_request(
                    "BadRequest",
                    format!("The record set {} is managed by {owner} and cannot be deleted; change that resource instead.", existing.id),
                ));
            }
        }
        _ => {}
    }
    for k in tx.st.subtree(&key) {
        tx.remove(&k);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Moves

fn rewrite(v: &mut Value, old: &str, new: &str) {
    match v {
        Value::String(s) => {
            let lower = s.to_lowercase();
            if lower.len() == s.len() && (lower == old || lower.starts_with(&format!("{old}/"))) {
                if let Some(rest) = s.get(old.len()..) {
                    *s = format!("{new}{rest}");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, old, new)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite(x, old, new)),
        _ => {}
    }
}

pub(crate) fn move_resources(
    tx: &mut Txn<'_>,
    source: &crate::path::Scope,
    body: &Value,
) -> Result<(), ArmError> {
    check(
        tx.old,
        tx.who,
        "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
        &source.key,
        &source.path,
    )?;
    let Some(src) = tx.get(&source.key).cloned() else {
        return Err(rg_not_found(source.rg.as_deref().unwrap_or_default()));
    };
    let target_id = s(body, "targetResourceGroup");
    let target_key = key_of(target_id);
    let Some(dst) = tx
        .get(&target_key)
        .filter(|r| r.kind == Kind::ResourceGroup)
        .cloned()
    else {
        return Err(rg_not_found(
            target_id.rsplit('/').next().unwrap_or(target_id),
        ));
    };
    check(
        tx.old,
        tx.who,
        "Microsoft.Resources/subscriptions/resourceGroups/write",
        &dst.key(),
        &dst.id,
    )?;
    let ids = strings(body.get("resources"));
    if ids.is_empty() {
        return Err(invalid_content(
            "'resources' must list the ids of the resources to move",
        ));
    }
    let mut moves = Vec::new();
    for id in &ids {
        let k = key_of(id);
        let Some(r) = tx.get(&k).cloned() else {
            return Err(not_found("resource", id, source.rg.as_deref()));
        };
        if parent_key(&k) != src.key() {
            return Err(bad_request(
                "InvalidResourceMoveRequest",
                format!(
                    "Resource {id} is not a top-level resource of resource group {}.",
                    src.id
                ),
            ));
        }
        let has_link = r.kind == Kind::PrivateEndpoint
            || r.owner.is_some()
            || (r.kind == Kind::FhirService
                && tx
                    .st
                    .children(&k, Kind::PrivateEndpointConnection)
                    .next()
                    .is_some());
        if has_link {
            return Err(bad_request(
                "ResourceMoveNotSupported",
                format!("Resource {} cannot be moved while Private Link is enabled. To make a move, delete the Private Link first, then move the resource, and create a new Private Link once the move is complete.", r.id),
            ));
        }
        check(tx.old, tx.who, &action(r.kind, "write"), &k, &r.id)?;
        let new_id = format!("{}{}", dst.id, r.id.get(src.id.len()..).unwrap_or_default());
        if tx.get(&new_id.to_lowercase()).is_some() {
            return Err(ArmError::new(
                409,
                "ResourceExists",
                format!("Resource {new_id} already exists in the target resource group."),
            ));
        }
        moves.push((k, new_id));
    }
    for (old_key, new_id) in moves {
        let new_key = new_id.to_lowercase();
        let keys = tx.st.subtree(&old_key);
        let moved: Vec<Resource> = keys.iter().filter_map(|k| tx.remove(k)).collect();
        for mut r in moved {
            rewrite(&mut r.body, &old_key, &new_id);
            r.id = format!("{new_id}{}", r.id.get(old_key.len()..).unwrap_or_default());
            tx.put(r);
        }
        let others: Vec<Resource> = tx.st.resources().cloned().collect();
        for mut r in others {
            let before = r.clone();
            rewrite(&mut r.body, &old_key, &new_id);
            if let Some(o) = r.owner.as_mut() {
                if *o == old_key || o.starts_with(&format!("{old_key}/")) {
                    *o = format!("{new_key}{}", o.get(old_key.len()..).unwrap_or_default());
                }
            }
            if r != before {
                tx.put(r);
            }
        }
    }
    Ok(())
}
