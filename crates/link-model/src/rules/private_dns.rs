//! Private DNS (`Microsoft.Network/privateDnsZones[/A|/virtualNetworkLinks]`): zones with
//! Azure's limits, A record sets (not those fhirlink manages), and links of virtual networks
//! (one per zone, at most one with auto-registration).

use serde_json::{json, Map, Value};

use super::{array, props_of, store};
use crate::action::{action, Verb};
use crate::authz::check_linked;
use crate::error::{bad_request, invalid_content, invalid_reference, ArmError};
use crate::ipnet::parse_ip;
use crate::kind::Kind;
use crate::path::{parent_key, Addr};
use crate::state::{ref_key, s, Resource, State};
use crate::txn::Txn;

/// A zone: Azure's limits are shown, the counts are computed when rendered.
pub(super) fn put_zone(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props: Map<String, Value> = props_of(input);
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

pub(super) fn put_record_set(
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

pub(super) fn put_link(
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
        action(Kind::VirtualNetworkLink, Verb::Write),
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
