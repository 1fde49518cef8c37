//! The desired network plan: what the network plane must make true on the wire, computed
//! from the control-plane state. Listeners come from [`Plan::services`] (public access and
//! the private endpoints that carry traffic), the DNS server's answers from [`Plan::zones`]
//! and [`Plan::networks`] (which network a source address is in, and which zones it is
//! linked to), access decisions from the networks' security rules and peerings.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::ipnet::{parse_ip, Prefix};
use crate::kind::Kind;
use crate::path::parent_key;
use crate::reconcile::endpoint_ip;
use crate::state::{ref_key, s, Resource, State};

/// Everything the network plane needs, by value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub services: Vec<ServicePlan>,
    pub networks: Vec<NetworkPlan>,
    pub zones: Vec<ZonePlan>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServicePlan {
    /// The data-plane name (Host `<name>.<suffix>`).
    pub name: String,
    pub id: String,
    /// `publicNetworkAccess: Enabled`.
    pub public_access: bool,
    pub endpoints: Vec<EndpointPlan>,
    pub diagnostics: Vec<DiagnosticExport>,
    /// `authenticationConfiguration.authority`: the token issuer the service trusts (empty:
    /// fhirlink's own issuer).
    pub authority: String,
    /// `authenticationConfiguration.audience`: the `aud` its tokens must carry.
    pub audience: String,
    /// `authenticationConfiguration.smartProxyEnabled`.
    pub smart_proxy: bool,
    /// Who may do what with the service's data: principal (object) id → rights, from FHIR
    /// data role assignments at the service's scope or above and from `accessPolicies`.
    pub data_access: BTreeMap<String, DataRights>,
    /// The SMART Backend Services clients registered with the service (`smartClients`), by
    /// client id.
    pub clients: Vec<ClientPlan>,
}

/// A SMART Backend Services client of a service: its public keys and the `system/` scopes
/// its token endpoint may grant.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientPlan {
    /// The client id (the `smartClients` resource's name, as registered).
    pub client_id: String,
    /// The client's JWK Set, when registered inline.
    pub jwks: Option<Value>,
    /// Where its JWK Set is fetched from, when registered by URL.
    pub jwks_url: Option<String>,
    pub scopes: Vec<String>,
}

/// The data actions a principal holds on a FHIR service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataRights {
    pub read: bool,
    pub write: bool,
    pub delete: bool,
    pub hard_delete: bool,
    pub export: bool,
    pub import: bool,
}

impl DataRights {
    /// Everything (an `accessPolicies` entry: Azure API for FHIR gives listed object ids
    /// full access to the data).
    pub const ALL: DataRights = DataRights {
        read: true,
        write: true,
        delete: true,
        hard_delete: true,
        export: true,
        import: true,
    };

    fn union(self, o: DataRights) -> DataRights {
        DataRights {
            read: self.read || o.read,
            write: self.write || o.write,
            delete: self.delete || o.delete,
            hard_delete: self.hard_delete || o.hard_delete,
            export: self.export || o.export,
            import: self.import || o.import,
        }
    }

    fn of_role(role: &crate::Role) -> DataRights {
        DataRights {
            read: role.permits_data(crate::DATA_READ),
            write: role.permits_data(crate::DATA_WRITE),
            delete: role.permits_data(crate::DATA_DELETE),
            hard_delete: role.permits_data(crate::DATA_HARD_DELETE),
            export: role.permits_data(crate::DATA_EXPORT),
            import: role.permits_data(crate::DATA_IMPORT),
        }
    }

    pub fn any(self) -> bool {
        self.read || self.write || self.delete || self.hard_delete || self.export || self.import
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointPlan {
    pub id: String,
    /// The endpoint's resource name.
    pub name: String,
    pub ip: Ipv4Addr,
    pub subnet_id: String,
    pub network_id: String,
    /// `Approved`, `Pending`, `Rejected` or `Disconnected`.
    pub status: String,
}

impl EndpointPlan {
    /// Only approved connections carry traffic.
    pub fn carries_traffic(&self) -> bool {
        self.status == "Approved"
    }
}

/// A diagnostic setting of a service: where its audit logs and metrics go.
#[derive(Debug, Clone, PartialEq)]
pub struct DiagnosticExport {
    pub name: String,
    /// The destination's id (`storageAccountId`, else `workspaceId`, …).
    pub destination: String,
    pub audit_logs: bool,
    pub metrics: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPlan {
    pub id: String,
    /// The network's resource name.
    pub name: String,
    pub location: String,
    pub prefixes: Vec<Prefix>,
    pub subnets: Vec<SubnetPlan>,
    /// Networks this one is peered with, `Connected` on both sides.
    pub peers: Vec<String>,
    /// Every peering of this network, whatever its state.
    pub peerings: Vec<PeeringPlan>,
    /// Names of the private DNS zones linked to this network.
    pub linked_zones: Vec<String>,
}

/// One side of a virtual network peering.
#[derive(Debug, Clone, PartialEq)]
pub struct PeeringPlan {
    pub name: String,
    /// The remote network's id (as the peering names it; it may no longer exist).
    pub remote_id: String,
    /// `Initiated`, `Connected` or `Disconnected`.
    pub state: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SubnetPlan {
    pub id: String,
    /// The subnet's resource name.
    pub name: String,
    pub prefix: Prefix,
    /// The rules of the subnet's network security group, if it has one (Azure's defaults
    /// included), by priority.
    pub security_rules: Option<Vec<SecurityRule>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SecurityRule {
    pub name: String,
    pub priority: i64,
    /// `Inbound` or `Outbound`.
    pub direction: String,
    /// `Allow` or `Deny`.
    pub access: String,
    /// `Tcp`, `Udp`, `Icmp`, `Esp`, `Ah` or `*`.
    pub protocol: String,
    /// `*`, a service tag (`Internet`, `VirtualNetwork`, …), an address or a prefix.
    pub source_prefixes: Vec<String>,
    pub destination_prefixes: Vec<String>,
    pub source_ports: Vec<String>,
    pub destination_ports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ZonePlan {
    pub name: String,
    pub id: String,
    /// Ids of the networks linked to the zone (the only ones it answers).
    pub linked_networks: Vec<String>,
    /// A records: relative name (lower case, `@` for the apex) → addresses.
    pub a_records: BTreeMap<String, Vec<Ipv4Addr>>,
}

fn strings(p: &Value, single: &str, many: &str) -> Vec<String> {
    let mut out: Vec<String> = p
        .get(single)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .into_iter()
        .collect();
    out.extend(
        p.get(many)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned),
    );
    out
}

fn rule(r: &Value) -> SecurityRule {
    let p = r.get("properties").cloned().unwrap_or(Value::Null);
    SecurityRule {
        name: s(r, "name").to_owned(),
        priority: p.get("priority").and_then(Value::as_i64).unwrap_or(65500),
        direction: s(&p, "direction").to_owned(),
        access: s(&p, "access").to_owned(),
        protocol: s(&p, "protocol").to_owned(),
        source_prefixes: strings(&p, "sourceAddressPrefix", "sourceAddressPrefixes"),
        destination_prefixes: strings(&p, "destinationAddressPrefix", "destinationAddressPrefixes"),
        source_ports: strings(&p, "sourcePortRange", "sourcePortRanges"),
        destination_ports: strings(&p, "destinationPortRange", "destinationPortRanges"),
    }
}

fn nsg_rules(state: &State, nsg_key: &str) -> Option<Vec<SecurityRule>> {
    let nsg = state.resources.get(nsg_key)?;
    let mut rules: Vec<SecurityRule> = state
        .children(nsg_key, Kind::SecurityRule)
        .map(|r| rule(&r.body))
        .chain(
            crate::render::default_security_rules(&nsg.id)
                .iter()
                .map(rule),
        )
        .collect();
    rules.sort_by_key(|r| r.priority);
    Some(rules)
}

fn service_plan(state: &State, svc: &Resource) -> ServicePlan {
    let key = svc.key();
    let mut endpoints = Vec::new();
    for c in state.children(&key, Kind::PrivateEndpointConnection) {
        let props = c.body.get("properties").cloned().unwrap_or(Value::Null);
        let Some(pe) = ref_key(&props, "privateEndpoint").and_then(|k| state.resources.get(&k))
        else {
            continue;
        };
        let Some(ip) = endpoint_ip(state, pe).and_then(|ip| parse_ip(&ip)) else {
            continue;
        };
        let subnet = ref_key(pe.body.get("properties").unwrap_or(&Value::Null), "subnet")
            .unwrap_or_default();
        let subnet_id = state
            .resources
            .get(&subnet)
            .map(|r| r.id.clone())
            .unwrap_or_default();
        let network_id = state
            .resources
            .get(&parent_key(&subnet))
            .map(|r| r.id.clone())
            .unwrap_or_default();
        endpoints.push(EndpointPlan {
            id: pe.id.clone(),
            name: pe.name().to_owned(),
            ip: Ipv4Addr::from(ip),
            subnet_id,
            network_id,
            status: props
                .get("privateLinkServiceConnectionState")
                .map(|st| s(st, "status").to_owned())
                .unwrap_or_default(),
        });
    }
    let diagnostics = state
        .children(&key, Kind::DiagnosticSetting)
        .map(|d| {
            let p = d.body.get("properties").cloned().unwrap_or(Value::Null);
            let enabled = |list: &str| {
                p.get(list).and_then(Value::as_array).is_some_and(|a| {
                    a.iter()
                        .any(|x| x.get("enabled").and_then(Value::as_bool) == Some(true))
                })
            };
            let destination = [
                "storageAccountId",
                "workspaceId",
                "eventHubAuthorizationRuleId",
                "serviceBusRuleId",
                "marketplacePartnerId",
            ]
            .iter()
            .map(|f| s(&p, f))
            .find(|v| !v.is_empty())
            .unwrap_or("")
            .to_owned();
            DiagnosticExport {
                name: d.name().to_owned(),
                destination,
                audit_logs: enabled("logs"),
                metrics: enabled("metrics"),
            }
        })
        .collect();
    let auth = svc
        .prop("authenticationConfiguration")
        .cloned()
        .unwrap_or(Value::Null);
    let mut data_access: BTreeMap<String, DataRights> = BTreeMap::new();
    for ra in state.of_kind(Kind::RoleAssignment) {
        let p = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        let scope = crate::path::key_of_scope(s(&p, "scope"));
        if !crate::authz::covers(&scope, &key) {
            continue;
        }
        let Some(role) = crate::authz::role(crate::authz::role_guid(s(&p, "roleDefinitionId")))
        else {
            continue;
        };
        let rights = DataRights::of_role(role);
        if rights.any() {
            let e = data_access
                .entry(s(&p, "principalId").to_owned())
                .or_default();
            *e = e.union(rights);
        }
    }
    for policy in svc
        .prop("accessPolicies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let id = s(policy, "objectId");
        if !id.is_empty() {
            data_access.insert(id.to_owned(), DataRights::ALL);
        }
    }
    let clients = state
        .children(&key, Kind::SmartClient)
        .map(|c| {
            let p = c.body.get("properties").cloned().unwrap_or(Value::Null);
            ClientPlan {
                client_id: c.name().to_owned(),
                jwks: p.get("jwks").filter(|v| v.is_object()).cloned(),
                jwks_url: p.get("jwksUrl").and_then(Value::as_str).map(str::to_owned),
                scopes: crate::rules::strings(p.get("scopes")),
            }
        })
        .collect();
    ServicePlan {
        name: svc.name().to_owned(),
        id: svc.id.clone(),
        public_access: svc.prop("publicNetworkAccess").and_then(Value::as_str) != Some("Disabled"),
        endpoints,
        diagnostics,
        authority: s(&auth, "authority").to_owned(),
        audience: s(&auth, "audience").to_owned(),
        smart_proxy: auth.get("smartProxyEnabled").and_then(Value::as_bool) == Some(true),
        data_access,
        clients,
    }
}

/// The desired network plan of a state.
pub fn plan(state: &State) -> Plan {
    let services = state
        .of_kind(Kind::FhirService)
        .map(|s| service_plan(state, s))
        .collect();
    let mut zones = Vec::new();
    for z in state.of_kind(Kind::PrivateDnsZone) {
        let zk = z.key();
        let linked_networks = state
            .children(&zk, Kind::VirtualNetworkLink)
            .filter_map(|l| {
                ref_key(
                    l.body.get("properties").unwrap_or(&Value::Null),
                    "virtualNetwork",
                )
            })
            .filter_map(|k| state.resources.get(&k).map(|r| r.id.clone()))
            .collect();
        let a_records = state
            .children(&zk, Kind::ARecordSet)
            .map(|r| {
                let ips = r
                    .prop("aRecords")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|a| parse_ip(s(a, "ipv4Address")))
                    .map(Ipv4Addr::from)
                    .collect();
                (r.name().to_lowercase(), ips)
            })
            .collect();
        zones.push(ZonePlan {
            name: z.name().to_lowercase(),
            id: z.id.clone(),
            linked_networks,
            a_records,
        });
    }
    let networks = state
        .of_kind(Kind::VirtualNetwork)
        .map(|v| {
            let vk = v.key();
            let subnets = state
                .children(&vk, Kind::Subnet)
                .filter_map(|sn| {
                    let prefix = sn
                        .prop("addressPrefix")
                        .and_then(Value::as_str)
                        .and_then(Prefix::parse)?;
                    let security_rules = ref_key(
                        sn.body.get("properties").unwrap_or(&Value::Null),
                        "networkSecurityGroup",
                    )
                    .and_then(|k| nsg_rules(state, &k));
                    Some(SubnetPlan {
                        id: sn.id.clone(),
                        name: sn.name().to_owned(),
                        prefix,
                        security_rules,
                    })
                })
                .collect();
            let peers = state
                .children(&vk, Kind::VirtualNetworkPeering)
                .filter(|p| p.prop("peeringState").and_then(Value::as_str) == Some("Connected"))
                .filter_map(|p| {
                    ref_key(
                        p.body.get("properties").unwrap_or(&Value::Null),
                        "remoteVirtualNetwork",
                    )
                })
                .filter_map(|k| state.resources.get(&k).map(|r| r.id.clone()))
                .collect();
            let peerings = state
                .children(&vk, Kind::VirtualNetworkPeering)
                .map(|p| {
                    let props = p.body.get("properties").unwrap_or(&Value::Null);
                    let remote = props
                        .get("remoteVirtualNetwork")
                        .map(|r| s(r, "id"))
                        .unwrap_or("");
                    let remote_id = state
                        .get(remote)
                        .map_or_else(|| remote.to_owned(), |r| r.id.clone());
                    PeeringPlan {
                        name: p.name().to_owned(),
                        remote_id,
                        state: s(props, "peeringState").to_owned(),
                    }
                })
                .collect();
            let linked_zones = state
                .of_kind(Kind::VirtualNetworkLink)
                .filter(|l| {
                    ref_key(
                        l.body.get("properties").unwrap_or(&Value::Null),
                        "virtualNetwork",
                    )
                    .as_deref()
                        == Some(vk.as_str())
                })
                .filter_map(|l| {
                    state
                        .resources
                        .get(&parent_key(&l.key()))
                        .map(|z| z.name().to_lowercase())
                })
                .collect();
            NetworkPlan {
                id: v.id.clone(),
                name: v.name().to_owned(),
                location: v.location().to_owned(),
                prefixes: v
                    .prop("addressSpace")
                    .and_then(|a| a.get("addressPrefixes"))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .filter_map(Prefix::parse)
                    .collect(),
                subnets,
                peers,
                peerings,
                linked_zones,
            }
        })
        .collect();
    Plan {
        services,
        networks,
        zones,
    }
}

impl Plan {
    /// The network whose address space holds `ip` (address spaces are unique, so at most one).
    pub fn network_of(&self, ip: Ipv4Addr) -> Option<&NetworkPlan> {
        let ip = u32::from(ip);
        self.networks
            .iter()
            .find(|n| n.prefixes.iter().any(|p| p.contains_ip(ip)))
    }
}
