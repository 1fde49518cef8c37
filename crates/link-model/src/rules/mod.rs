//! The rules of each resource type on PUT, PATCH and DELETE, a module per ARM type: validation,
//! Azure's defaults, address allocation, private endpoints and their connections (auto and
//! manual approval), DNS zone groups and links, role assignments, diagnostic settings and
//! moves. What every type shares lives here: the stored body ([`store`]: id, etag, location,
//! tags, systemData) and the dispatch by kind. The consequences that span resources (peering
//! states, DNS records, public access) are recomputed afterwards by `reconcile`.

mod compute;
mod diagnostics;
mod endpoints;
mod moves;
mod peerings;
mod private_dns;
mod role_assignments;
mod security_groups;
mod services;
mod smart_clients;
mod vnets;

use serde_json::{json, Map, Value};

use crate::error::{bad_request, invalid_content, not_found, ArmError};
use crate::handle::Request;
use crate::kind::{Kind, Parent};
use crate::path::Addr;
use crate::state::Resource;
use crate::txn::Txn;

pub(crate) use compute::vm_nics;
pub(crate) use endpoints::service_connection_name;
pub(crate) use moves::move_resources;
pub(crate) use private_dns::record_fqdn;
pub use role_assignments::ensure_owner;
pub(crate) use services::{check_name_availability, private_link_resource};

/// Azure's location form: lower case without spaces (`West US 2` → `westus2`).
pub(crate) fn normalize_location(l: &str) -> String {
    l.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

/// The strings of a JSON array (other items skipped); empty when it is not an array.
pub(crate) fn strings(v: Option<&Value>) -> Vec<String> {
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
        Kind::FhirService => services::put_service(tx, addr, input, existing, req),
        Kind::PrivateEndpointConnection => services::put_connection(tx, addr, input, existing),
        Kind::VirtualNetwork => vnets::put_vnet(tx, addr, input, existing),
        Kind::Subnet => {
            let vnet = tx
                .get(&addr.parent.key)
                .cloned()
                .ok_or_else(|| not_found(Kind::VirtualNetwork.type_name(), "", None))?;
            vnets::put_subnet(tx, &vnet, addr, input, existing, None)
        }
        Kind::VirtualNetworkPeering => peerings::put_peering(tx, addr, input, existing),
        Kind::NetworkSecurityGroup => security_groups::put_nsg(tx, addr, input, existing),
        Kind::SecurityRule => security_groups::put_rule(tx, addr, input, existing),
        Kind::NetworkInterface => endpoints::put_nic(tx, addr, input, existing),
        Kind::PrivateEndpoint => endpoints::put_private_endpoint(tx, addr, input, existing),
        Kind::PrivateDnsZoneGroup => endpoints::put_zone_group(tx, addr, input, existing),
        Kind::PrivateDnsZone => private_dns::put_zone(tx, addr, input, existing),
        Kind::ARecordSet => private_dns::put_record_set(tx, addr, input, existing),
        Kind::VirtualNetworkLink => private_dns::put_link(tx, addr, input, existing),
        Kind::VirtualMachine => compute::put_vm(tx, addr, input, existing),
        Kind::DiagnosticSetting => diagnostics::put_diagnostic_setting(tx, addr, input, existing),
        Kind::RoleAssignment => role_assignments::put_role_assignment(tx, addr, input, existing),
        Kind::SmartClient => smart_clients::put_client(tx, addr, input, existing),
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
            let pna = services::public_network_access(v)?;
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
            let used = vnets::ips_by_subnet(&tx.st);
            for sn in &subnets {
                vnets::not_in_use(sn, &used)?;
            }
        }
        Kind::Subnet => vnets::subnet_not_in_use(&tx.st, existing)?,
        Kind::NetworkSecurityGroup => {
            if let Some(by) = security_groups::nsg_in_use(&tx.st, existing) {
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
                .find(|vm| compute::vm_nics(vm).contains(&key))
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
