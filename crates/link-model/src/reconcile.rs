//! Consequences that span resources, recomputed after every mutation so that they hold no
//! matter which request caused them: managed resources go with their owner, peering states,
//! the endpoint side of private endpoint connections, public network access switched off by
//! the first approved connection, and the A records of zone groups and auto-registration.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::ipnet::parse_ip;
use crate::kind::Kind;
use crate::path::{key_of, parent_key};
use crate::rules::{record_fqdn, service_connection_name, vm_nics};
use crate::state::{ref_key, s, Resource, State};
use crate::txn::Txn;

pub(crate) fn reconcile(tx: &mut Txn<'_>) {
    drop_orphans(tx);
    peerings(tx);
    endpoint_connections(tx);
    public_access(tx);
    dns_records(tx);
}

fn drop_orphans(tx: &mut Txn<'_>) {
    loop {
        let orphans: Vec<String> = tx
            .st
            .resources()
            .filter(|r| r.owner.as_ref().is_some_and(|o| tx.get(o).is_none()))
            .map(Resource::key)
            .collect();
        if orphans.is_empty() {
            return;
        }
        for k in orphans {
            for sub in tx.st.subtree(&k) {
                tx.remove(&sub);
            }
        }
    }
}

fn set_prop(tx: &mut Txn<'_>, key: &str, field: &str, value: Value) {
    let Some(mut r) = tx.get(key).cloned() else {
        return;
    };
    if r.prop(field) == Some(&value) {
        return;
    }
    if let Some(p) = r.body.get_mut("properties").and_then(Value::as_object_mut) {
        p.insert(field.to_owned(), value);
    }
    tx.put(r);
}

/// `Initiated` until both sides exist, then `Connected`; `Disconnected` once a connected side
/// goes.
fn peerings(tx: &mut Txn<'_>) {
    let all: Vec<Resource> = tx
        .st
        .of_kind(Kind::VirtualNetworkPeering)
        .cloned()
        .collect();
    for p in all {
        let local = parent_key(&p.key());
        let props = p.body.get("properties").cloned().unwrap_or(Value::Null);
        let remote_key = ref_key(&props, "remoteVirtualNetwork").unwrap_or_default();
        let remote = tx.get(&remote_key).cloned();
        let back = remote.as_ref().is_some_and(|_| {
            tx.st
                .children(&remote_key, Kind::VirtualNetworkPeering)
                .any(|q| {
                    ref_key(
                        q.body.get("properties").unwrap_or(&Value::Null),
                        "remoteVirtualNetwork",
                    )
                    .as_deref()
                        == Some(local.as_str())
                })
        });
        let prev = s(&props, "peeringState");
        let state = if back {
            "Connected"
        } else if remote.is_none() || prev == "Connected" || prev == "Disconnected" {
            "Disconnected"
        } else {
            "Initiated"
        };
        set_prop(tx, &p.key(), "peeringState", json!(state));
        if let Some(space) = remote
            .as_ref()
            .and_then(|r| r.prop("addressSpace"))
            .cloned()
        {
            set_prop(tx, &p.key(), "remoteAddressSpace", space.clone());
            set_prop(tx, &p.key(), "remoteVirtualNetworkAddressSpace", space);
        }
    }
}

/// The endpoint side mirrors the service side; a connection the service removed is
/// `Disconnected`.
fn endpoint_connections(tx: &mut Txn<'_>) {
    let pes: Vec<Resource> = tx.st.of_kind(Kind::PrivateEndpoint).cloned().collect();
    for pe in pes {
        let sc_name = service_connection_name(pe.name(), &pe.key());
        let mut body = pe.body.clone();
        for list in [
            "privateLinkServiceConnections",
            "manualPrivateLinkServiceConnections",
        ] {
            let Some(conns) = body
                .get_mut("properties")
                .and_then(|p| p.get_mut(list))
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for c in conns.iter_mut() {
                let svc = key_of(s(
                    c.get("properties").unwrap_or(&Value::Null),
                    "privateLinkServiceId",
                ));
                let sc_key = format!(
                    "{svc}/privateendpointconnections/{}",
                    sc_name.to_lowercase()
                );
                let state = match tx
                    .get(&sc_key)
                    .and_then(|sc| sc.prop("privateLinkServiceConnectionState"))
                {
                    Some(st) => {
                        let status = s(st, "status");
                        let description = if status == "Pending" {
                            "Awaiting approval"
                        } else {
                            s(st, "description")
                        };
                        json!({"status": status, "description": description, "actionsRequired": "None"})
                    }
                    None => json!({
                        "status": "Disconnected",
                        "description": "The private endpoint connection was removed by the owner of the service.",
                        "actionsRequired": "None"
                    }),
                };
                if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                    p.insert("privateLinkServiceConnectionState".into(), state);
                }
            }
        }
        if body != pe.body {
            tx.put(Resource { body, ..pe });
        }
    }
}

fn approved(state: &State, service_key: &str) -> bool {
    state
        .children(service_key, Kind::PrivateEndpointConnection)
        .any(|c| {
            c.prop("privateLinkServiceConnectionState")
                .map(|v| s(v, "status"))
                == Some("Approved")
        })
}

/// "When an approved private endpoint is created for Azure API for FHIR, public traffic to
/// it is automatically disabled."
fn public_access(tx: &mut Txn<'_>) {
    let services: Vec<String> = tx
        .st
        .of_kind(Kind::FhirService)
        .map(Resource::key)
        .collect();
    for k in services {
        if approved(&tx.st, &k) && !approved(tx.old, &k) {
            set_prop(tx, &k, "publicNetworkAccess", json!("Disabled"));
        }
    }
}

/// The private IP of a private endpoint (its interface's first address).
pub(crate) fn endpoint_ip(state: &State, pe: &Resource) -> Option<String> {
    let nic = pe
        .prop("networkInterfaces")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .map(|n| key_of(s(n, "id")))?;
    nic_ips(state, &nic).into_iter().next().map(|(_, ip)| ip)
}

/// The (subnet key, IP) pairs of a network interface.
pub(crate) fn nic_ips(state: &State, nic_key: &str) -> Vec<(String, String)> {
    state
        .resources
        .get(nic_key)
        .and_then(|n| n.prop("ipConfigurations"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| {
                    let p = c.get("properties")?;
                    Some((ref_key(p, "subnet")?, s(p, "privateIPAddress").to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

struct Desired {
    ips: Vec<String>,
    owner: String,
    auto: bool,
    name: String,
    zone_id: String,
}

fn dns_records(tx: &mut Txn<'_>) {
    let mut want: BTreeMap<String, Desired> = BTreeMap::new();
    let mut add =
        |key: String, name: String, zone_id: String, ip: String, owner: String, auto: bool| {
            let d = want.entry(key).or_insert_with(|| Desired {
                ips: Vec::new(),
                owner,
                auto,
                name,
                zone_id,
            });
            if !d.ips.contains(&ip) {
                d.ips.push(ip);
            }
        };
    // Zone groups: `A <service>` → the endpoint's IP.
    for zg in tx.st.of_kind(Kind::PrivateDnsZoneGroup) {
        let Some(pe) = tx.get(&parent_key(&zg.key())) else {
            continue;
        };
        let Some(ip) = endpoint_ip(&tx.st, pe) else {
            continue;
        };
        let service = pe
            .prop("privateLinkServiceConnections")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .or_else(|| {
                pe.prop("manualPrivateLinkServiceConnections")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
            })
            .map(|c| {
                key_of(s(
                    c.get("properties").unwrap_or(&Value::Null),
                    "privateLinkServiceId",
                ))
            })
            .and_then(|k| tx.get(&k))
            .map(|svc| svc.name().to_lowercase());
        let Some(service) = service else {
            continue;
        };
        for c in zg
            .prop("privateDnsZoneConfigs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let zk = key_of(s(
                c.get("properties").unwrap_or(&Value::Null),
                "privateDnsZoneId",
            ));
            if let Some(zone) = tx.get(&zk) {
                add(
                    format!("{zk}/a/{service}"),
                    service.clone(),
                    zone.id.clone(),
                    ip.clone(),
                    zg.key(),
                    false,
                );
            }
        }
    }
    // Auto-registration: every VM of a network linked with registrationEnabled.
    for link in tx.st.of_kind(Kind::VirtualNetworkLink) {
        if link.prop("registrationEnabled").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let zk = parent_key(&link.key());
        let Some(zone) = tx.get(&zk) else {
            continue;
        };
        let vnet = ref_key(
            link.body.get("properties").unwrap_or(&Value::Null),
            "virtualNetwork",
        )
        .unwrap_or_default();
        let prefix = format!("{vnet}/subnets/");
        for vm in tx.st.of_kind(Kind::VirtualMachine) {
            for nic in vm_nics(vm) {
                for (subnet, ip) in nic_ips(&tx.st, &nic) {
                    if subnet.starts_with(&prefix) && parse_ip(&ip).is_some() {
                        let name = vm.name().to_lowercase();
                        add(
                            format!("{zk}/a/{name}"),
                            name,
                            zone.id.clone(),
                            ip,
                            link.key(),
                            true,
                        );
                    }
                }
            }
        }
    }
    // Drop managed records no longer wanted.
    let stale: Vec<String> = tx
        .st
        .of_kind(Kind::ARecordSet)
        .filter(|r| r.owner.is_some() && !want.contains_key(&r.key()))
        .map(Resource::key)
        .collect();
    for k in stale {
        tx.remove(&k);
    }
    for (key, d) in want {
        let records: Vec<Value> = d.ips.iter().map(|ip| json!({"ipv4Address": ip})).collect();
        if let Some(r) = tx.get(&key) {
            if r.owner.as_deref() == Some(d.owner.as_str())
                && r.prop("aRecords") == Some(&Value::Array(records.clone()))
                && r.prop("isAutoRegistered") == Some(&json!(d.auto))
            {
                continue;
            }
        }
        let zone_name = d.zone_id.rsplit('/').next().unwrap_or_default().to_owned();
        let id = format!("{}/A/{}", d.zone_id, d.name);
        let etag = tx.new_guid(&key);
        let existing = tx.get(&key).cloned();
        let sd = tx.system_data(existing.as_ref());
        tx.put(Resource {
            id: id.clone(),
            kind: Kind::ARecordSet,
            body: json!({
                "name": d.name,
                "id": id,
                "etag": etag,
                "type": Kind::ARecordSet.type_name(),
                "properties": {
                    "metadata": {},
                    "ttl": 10,
                    "fqdn": record_fqdn(&d.name, &zone_name),
                    "isAutoRegistered": d.auto,
                    "aRecords": records,
                    "provisioningState": "Succeeded"
                },
                "systemData": sd
            }),
            owner: Some(d.owner),
        });
    }
}
