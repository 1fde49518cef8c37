//! Network interfaces and private endpoints (`Microsoft.Network/networkInterfaces`,
//! `privateEndpoints[/privateDnsZoneGroups]`): the subnet in the endpoint's region, address
//! allocation, the endpoint's managed interface, the service side of its connection (auto or
//! manual approval), and its one DNS zone group.

use serde_json::{json, Map, Value};

use super::vnets::used_ips;
use super::{array, canonical_id, child_addr, normalize_location, props_of, store, strings};
use crate::action::{action, Verb};
use crate::authz::check_linked;
use crate::error::{bad_request, invalid_content, invalid_reference, ArmError};
use crate::ipnet::{ip_string, parse_ip, Prefix};
use crate::kind::Kind;
use crate::path::{key_of, parent_key, Addr};
use crate::state::{ref_key, s, Resource};
use crate::txn::{guid_from, Txn};
use crate::SERVICE_DNS_SUFFIX;

/// The subnet (and its virtual network) that a body references, in the resource's region.
pub(super) fn subnet_for(
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
pub(super) fn choose_ip(
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

pub(super) fn put_nic(
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
            action(Kind::NetworkInterface, Verb::Write),
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

pub(super) fn put_private_endpoint(
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
    let own_action = action(Kind::PrivateEndpoint, Verb::Write);
    check_linked(
        tx.old,
        tx.who,
        own_action,
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
            own_action,
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

pub(super) fn put_zone_group(
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
            action(Kind::PrivateDnsZoneGroup, Verb::Write),
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
