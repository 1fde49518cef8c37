//! Virtual networks and their subnets (`Microsoft.Network/virtualNetworks[/subnets]`):
//! address spaces, unique within a deployment, subnets inside them without overlap, and the
//! private IPs in use that keep a subnet from being changed or deleted.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};

use super::{array, child_addr, props_of, store, strings};
use crate::error::{bad_request, invalid_content, invalid_reference, ArmError};
use crate::ipnet::{ip_string, parse_ip, Prefix};
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{ref_key, s, Resource, State};
use crate::txn::{guid_from, Txn};

/// Azure's limit of subnets in one virtual network ("Networking limits", Azure subscription
/// and service limits: learn.microsoft.com/azure/azure-resource-manager/management/
/// azure-subscription-service-limits#azure-resource-manager-virtual-networking-limits, "Subnets
/// per virtual network: 3,000"). Beyond it a PUT is refused before any rule is checked, so no
/// request can make the writer work on an unbounded set.
pub(crate) const MAX_SUBNETS: usize = 3000;

fn too_many_subnets(vnet: &str, count: usize) -> ArmError {
    bad_request(
        "QuotaExceeded",
        format!(
            "Operation results in exceeding quota limits of Subnets per virtual network. Maximum \
             allowed: {MAX_SUBNETS}, requested: {count}, virtual network: '{vnet}'. See \
             aka.ms/azurelimits for the networking limits."
        ),
    )
}

/// The first pair of overlapping prefixes (by index into `prefixes`), in O(n log n): CIDR
/// prefixes either nest or are disjoint, so once sorted by first address a prefix overlaps an
/// earlier one exactly when it starts at or before the furthest end seen so far.
pub(crate) fn first_overlap(prefixes: &[Prefix]) -> Option<(usize, usize)> {
    let mut order: Vec<usize> = (0..prefixes.len()).collect();
    order.sort_by_key(|&i| (prefixes[i].first(), prefixes[i].len));
    let mut widest: Option<usize> = None;
    for &i in &order {
        if let Some(w) = widest {
            if prefixes[i].first() <= prefixes[w].last() {
                return Some((w.min(i), w.max(i)));
            }
        }
        if widest.is_none_or(|w| prefixes[i].last() > prefixes[w].last()) {
            widest = Some(i);
        }
    }
    None
}

/// The private IPs in use in each subnet (by lowercase subnet key), from one pass over the
/// network interfaces, for checks that look at many subnets at once.
pub(super) fn ips_by_subnet(state: &State) -> HashMap<String, Vec<(u32, String)>> {
    let mut out: HashMap<String, Vec<(u32, String)>> = HashMap::new();
    for nic in state.of_kind(Kind::NetworkInterface) {
        for ipc in nic
            .prop("ipConfigurations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let p = ipc.get("properties").unwrap_or(&Value::Null);
            if let (Some(subnet), Some(ip)) =
                (ref_key(p, "subnet"), parse_ip(s(p, "privateIPAddress")))
            {
                out.entry(subnet)
                    .or_default()
                    .push((ip, s(ipc, "id").to_owned()));
            }
        }
    }
    out
}

/// What a virtual network's PUT has already checked for all its subnets at once.
pub(super) struct Batch<'a> {
    /// The network's address prefixes, sorted by first address (they do not overlap).
    space: &'a [Prefix],
    used: &'a HashMap<String, Vec<(u32, String)>>,
}

impl Batch<'_> {
    fn inside(&self, p: Prefix) -> bool {
        let at = self.space.partition_point(|s| s.first() <= p.first());
        at > 0 && self.space[at - 1].contains(p)
    }
}

/// The prefix a subnet's body gives (`addressPrefix`, else the first of `addressPrefixes`).
fn raw_prefix(props: &serde_json::Map<String, Value>) -> &str {
    props
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
}

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
    let subnets: Vec<Value> = array(&props, "subnets")?.into_iter().cloned().collect();
    if subnets.len() > MAX_SUBNETS {
        return Err(too_many_subnets(&addr.name, subnets.len()));
    }
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
    if let Some((a, b)) = first_overlap(&prefixes) {
        return Err(bad_request(
            "VnetAddressSpacesOverlap",
            format!(
                "The address prefixes {} and {} of virtual network '{}' overlap.",
                prefixes[a], prefixes[b], addr.name
            ),
        ));
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
    let used = ips_by_subnet(&tx.st);
    for sn in old {
        not_in_use(&sn, &used)?;
        for k in tx.st.subtree(&sn.key()) {
            tx.remove(&k);
        }
    }
    // The listed subnets must not overlap one another: checked once for all of them (sorted),
    // where checking each against every sibling made a large network quadratic.
    let listed_prefixes: Vec<(Prefix, &str)> = subnets
        .iter()
        .filter_map(|sn| Prefix::parse(raw_prefix(&props_of(sn))).map(|p| (p, s(sn, "name"))))
        .collect();
    let only: Vec<Prefix> = listed_prefixes.iter().map(|(p, _)| *p).collect();
    if let Some((a, b)) = first_overlap(&only) {
        let ((pa, na), (pb, nb)) = (listed_prefixes[a], listed_prefixes[b]);
        return Err(bad_request(
            "NetcfgSubnetRangesOverlap",
            format!("Subnet '{nb}' is not valid because its IP address range {pb} overlaps with that of an existing subnet '{na}' ({pa}) in the virtual network."),
        ));
    }
    let mut space = prefixes.clone();
    space.sort_by_key(|p| p.first());
    let batch = Batch {
        space: &space,
        used: &used,
    };
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
        put_subnet(tx, &vnet, &a, sn, ex.as_ref(), Some(&batch))?;
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
    in_use(subnet, used_ips(state, &subnet.key(), "").first())
}

/// [`subnet_not_in_use`] with the addresses of every subnet looked up once.
pub(super) fn not_in_use(
    subnet: &Resource,
    used: &HashMap<String, Vec<(u32, String)>>,
) -> Result<(), ArmError> {
    in_use(subnet, used.get(&subnet.key()).and_then(|u| u.first()))
}

fn in_use(subnet: &Resource, first_use: Option<&(u32, String)>) -> Result<(), ArmError> {
    if let Some((_, by)) = first_use {
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
    batch: Option<&Batch<'_>>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let raw = raw_prefix(&props).to_owned();
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
    let inside = match batch {
        Some(b) => b.inside(prefix),
        None => prefixes_of(&vnet.body).iter().any(|p| p.contains(prefix)),
    };
    if !inside {
        return Err(bad_request(
            "NetcfgSubnetRangeOutsideVnet",
            format!("Subnet '{}' is not valid because its IP address range {prefix} is outside the IP address range of virtual network '{}'.", addr.name, vnet.name()),
        ));
    }
    if batch.is_none() && existing.is_none() {
        let count = tx.st.children(&vnet.key(), Kind::Subnet).count();
        if count >= MAX_SUBNETS {
            return Err(too_many_subnets(vnet.name(), count + 1));
        }
    }
    // A network's PUT checked its subnets against one another already.
    let vnet_key = vnet.key();
    let siblings = match batch {
        None => tx.st.children(&vnet_key, Kind::Subnet).collect(),
        Some(_) => Vec::new(),
    };
    for sib in siblings {
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
        let used = match batch {
            Some(b) => b.used.get(&addr.key).cloned().unwrap_or_default(),
            None => used_ips(&tx.st, &addr.key, ""),
        };
        if let Some((ip, by)) = used.into_iter().find(|(ip, _)| !prefix.contains_ip(*ip)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).expect(s)
    }

    #[test]
    fn overlaps_are_found_sorted() {
        assert_eq!(first_overlap(&[]), None);
        assert_eq!(first_overlap(&[p("10.0.0.0/24"), p("10.0.1.0/24")]), None);
        assert_eq!(
            first_overlap(&[p("10.0.1.0/24"), p("10.1.0.0/16"), p("10.0.0.0/16")]),
            Some((0, 2))
        );
        // A wide prefix early on hides no later overlap with a narrow one after it.
        assert_eq!(
            first_overlap(&[p("10.0.0.0/8"), p("10.200.0.0/24"), p("11.0.0.0/24")]),
            Some((0, 1))
        );
        assert_eq!(
            first_overlap(&[p("10.0.0.8/29"), p("10.0.0.0/29"), p("10.0.0.8/29")]),
            Some((0, 2))
        );
        let many: Vec<Prefix> = (0..3000u32)
            .map(|i| Prefix {
                addr: (10 << 24) | (i << 3),
                len: 29,
            })
            .collect();
        assert_eq!(first_overlap(&many), None);
    }
}
