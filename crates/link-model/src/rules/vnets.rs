//! Virtual networks and their subnets (`Microsoft.Network/virtualNetworks[/subnets]`):
//! address spaces, unique within a deployment, subnets inside them without overlap, and the
//! private IPs in use that keep a subnet from being changed or deleted.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{array, child_addr, props_of, store, strings};
use crate::error::{bad_request, invalid_content, invalid_reference, ArmError};
use crate::ipnet::{ip_string, parse_ip, Prefix};
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{ref_key, s, Resource, State};
use crate::txn::{guid_from, Txn};

pub(super) fn prefixes_of(vnet: &Value) -> Vec<Prefix> {
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

pub(super) fn parse_prefix(s: &str) -> Result<Prefix, ArmError> {
    Prefix::parse(s).ok_or_else(|| {
        bad_request(
            "InvalidAddressPrefixFormat",
            format!("Address prefix '{s}' is not a valid IPv4 prefix in CIDR notation with its host bits zero."),
        )
    })
}

pub(super) fn put_vnet(
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
pub(super) fn used_ips(state: &State, subnet_key: &str, except_nic: &str) -> Vec<(u32, String)> {
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

pub(super) fn subnet_not_in_use(state: &State, subnet: &Resource) -> Result<(), ArmError> {
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

pub(super) fn put_subnet(
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
