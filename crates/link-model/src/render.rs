//! Rendering a stored resource as ARM returns it: children embedded (a network's subnets and
//! peerings, a group's security rules, a service's private endpoint connections) and
//! back-references computed (a subnet's IP configurations, a zone's counts).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::kind::Kind;
use crate::path::{key_of, parent_key};
use crate::reconcile::endpoint_ip;
use crate::rules::vm_nics;
use crate::state::{ref_key, s, Resource, State};

fn with_props(r: &Resource, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut body = r.body.clone();
    if let Some(p) = body.get_mut("properties").and_then(Value::as_object_mut) {
        f(p);
    }
    body
}

const DEFAULT_RULES: &[(&str, &str, &str, &str, &str, i64, &str)] = &[
    (
        "AllowVnetInBound",
        "Allow inbound traffic from all VMs in VNET",
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        65000,
        "Inbound",
    ),
    (
        "AllowAzureLoadBalancerInBound",
        "Allow inbound traffic from azure load balancer",
        "AzureLoadBalancer",
        "*",
        "Allow",
        65001,
        "Inbound",
    ),
    (
        "DenyAllInBound",
        "Deny all inbound traffic",
        "*",
        "*",
        "Deny",
        65500,
        "Inbound",
    ),
    (
        "AllowVnetOutBound",
        "Allow outbound traffic from all VMs to all VMs in VNET",
        "VirtualNetwork",
        "VirtualNetwork",
        "Allow",
        65000,
        "Outbound",
    ),
    (
        "AllowInternetOutBound",
        "Allow outbound traffic from all VMs to Internet",
        "*",
        "Internet",
        "Allow",
        65001,
        "Outbound",
    ),
    (
        "DenyAllOutBound",
        "Deny all outbound traffic",
        "*",
        "*",
        "Deny",
        65500,
        "Outbound",
    ),
];

/// Azure's default security rules of every network security group.
pub fn default_security_rules(nsg_id: &str) -> Vec<Value> {
    DEFAULT_RULES
        .iter()
        .map(|(name, desc, src, dst, access, prio, dir)| {
            json!({
                "name": name,
                "id": format!("{nsg_id}/defaultSecurityRules/{name}"),
                "type": "Microsoft.Network/networkSecurityGroups/defaultSecurityRules",
                "properties": {
                    "provisioningState": "Succeeded",
                    "description": desc,
                    "protocol": "*",
                    "sourcePortRange": "*",
                    "destinationPortRange": "*",
                    "sourceAddressPrefix": src,
                    "destinationAddressPrefix": dst,
                    "access": access,
                    "priority": prio,
                    "direction": dir
                }
            })
        })
        .collect()
}

/// By lowercase subnet key: the ids of the interface IP configurations in it, and of the
/// private endpoints in it.
#[derive(Default)]
struct SubnetUsers {
    ip_configurations: HashMap<String, Vec<Value>>,
    private_endpoints: HashMap<String, Vec<Value>>,
}

fn subnet_users(state: &State) -> SubnetUsers {
    let mut users = SubnetUsers::default();
    for nic in state.of_kind(Kind::NetworkInterface) {
        for c in nic
            .prop("ipConfigurations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(subnet) = ref_key(c.get("properties").unwrap_or(&Value::Null), "subnet") {
                users
                    .ip_configurations
                    .entry(subnet)
                    .or_default()
                    .push(json!({"id": s(c, "id")}));
            }
        }
    }
    for pe in state.of_kind(Kind::PrivateEndpoint) {
        if let Some(subnet) = ref_key(pe.body.get("properties").unwrap_or(&Value::Null), "subnet") {
            users
                .private_endpoints
                .entry(subnet)
                .or_default()
                .push(json!({"id": pe.id}));
        }
    }
    users
}

fn render_subnet(r: &Resource, users: &SubnetUsers) -> Value {
    let key = r.key();
    let ipcs = users.ip_configurations.get(&key).cloned();
    let pes = users.private_endpoints.get(&key).cloned();
    with_props(r, |p| {
        if let Some(ipcs) = ipcs {
            p.insert("ipConfigurations".into(), Value::Array(ipcs));
        }
        if let Some(pes) = pes {
            p.insert("privateEndpoints".into(), Value::Array(pes));
        }
    })
}

/// The resource as ARM returns it.
pub fn render(state: &State, r: &Resource) -> Value {
    let key = r.key();
    match r.kind {
        Kind::VirtualNetwork => {
            // What uses the subnets, found in one pass for all of them: a network with
            // thousands of subnets renders in linear time.
            let users = subnet_users(state);
            let subnets: Vec<Value> = state
                .children(&key, Kind::Subnet)
                .map(|sn| render_subnet(sn, &users))
                .collect();
            let peerings: Vec<Value> = state
                .children(&key, Kind::VirtualNetworkPeering)
                .map(|p| p.body.clone())
                .collect();
            with_props(r, |p| {
                p.insert("subnets".into(), Value::Array(subnets));
                p.insert("virtualNetworkPeerings".into(), Value::Array(peerings));
            })
        }
        Kind::Subnet => render_subnet(r, &subnet_users(state)),
        Kind::NetworkSecurityGroup => {
            let rules: Vec<Value> = state
                .children(&key, Kind::SecurityRule)
                .map(|x| x.body.clone())
                .collect();
            let users = |kind: Kind| -> Vec<Value> {
                state
                    .of_kind(kind)
                    .filter(|x| {
                        ref_key(
                            x.body.get("properties").unwrap_or(&Value::Null),
                            "networkSecurityGroup",
                        )
                        .as_deref()
                            == Some(key.as_str())
                    })
                    .map(|x| json!({"id": x.id}))
                    .collect()
            };
            let subnets = users(Kind::Subnet);
            let nics = users(Kind::NetworkInterface);
            with_props(r, |p| {
                p.insert("securityRules".into(), Value::Array(rules));
                p.insert(
                    "defaultSecurityRules".into(),
                    Value::Array(default_security_rules(&r.id)),
                );
                if !subnets.is_empty() {
                    p.insert("subnets".into(), Value::Array(subnets));
                }
                if !nics.is_empty() {
                    p.insert("networkInterfaces".into(), Value::Array(nics));
                }
            })
        }
        Kind::NetworkInterface => {
            let vm = state
                .of_kind(Kind::VirtualMachine)
                .find(|vm| vm_nics(vm).contains(&key))
                .map(|vm| vm.id.clone());
            with_props(r, |p| {
                if let Some(vm) = vm {
                    p.insert("virtualMachine".into(), json!({"id": vm}));
                }
            })
        }
        Kind::FhirService => {
            let conns: Vec<Value> = state
                .children(&key, Kind::PrivateEndpointConnection)
                .map(|c| render(state, c))
                .collect();
            with_props(r, |p| {
                p.insert("privateEndpointConnections".into(), Value::Array(conns));
            })
        }
        Kind::PrivateEndpointConnection | Kind::ARecordSet | Kind::RoleAssignment => {
            let mut body = r.body.clone();
            if let Some(o) = body.as_object_mut() {
                if r.kind != Kind::ARecordSet {
                    o.remove("etag");
                }
            }
            body
        }
        Kind::PrivateDnsZoneGroup => {
            let pe = state.resources.get(&parent_key(&key));
            let ip = pe.and_then(|pe| endpoint_ip(state, pe));
            let zg_key = key.clone();
            let mut body = r.body.clone();
            if let Some(configs) = body
                .get_mut("properties")
                .and_then(|p| p.get_mut("privateDnsZoneConfigs"))
                .and_then(Value::as_array_mut)
            {
                for c in configs.iter_mut() {
                    let zk = key_of(s(
                        c.get("properties").unwrap_or(&Value::Null),
                        "privateDnsZoneId",
                    ));
                    let sets: Vec<Value> = state
                        .children(&zk, Kind::ARecordSet)
                        .filter(|rec| rec.owner.as_deref() == Some(zg_key.as_str()))
                        .map(|rec| {
                            json!({
                                "recordType": "A",
                                "recordSetName": rec.name(),
                                "fqdn": s(rec.body.get("properties").unwrap_or(&Value::Null), "fqdn").trim_end_matches('.'),
                                "ttl": 10,
                                "ipAddresses": ip.iter().collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    if let Some(p) = c.get_mut("properties").and_then(Value::as_object_mut) {
                        p.insert("recordSets".into(), Value::Array(sets));
                    }
                }
            }
            body
        }
        Kind::PrivateDnsZone => {
            let records = state.children(&key, Kind::ARecordSet).count();
            let links: Vec<&Resource> = state.children(&key, Kind::VirtualNetworkLink).collect();
            let with_reg = links
                .iter()
                .filter(|l| l.prop("registrationEnabled").and_then(Value::as_bool) == Some(true))
                .count();
            with_props(r, |p| {
                p.insert("numberOfRecordSets".into(), json!(records));
                p.insert("numberOfVirtualNetworkLinks".into(), json!(links.len()));
                p.insert(
                    "numberOfVirtualNetworkLinksWithRegistration".into(),
                    json!(with_reg),
                );
            })
        }
        _ => r.body.clone(),
    }
}
