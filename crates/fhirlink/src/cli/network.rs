//! `fhirlink network`: virtual networks with their subnets and peerings, private endpoints
//! with their DNS zone groups, and private DNS zones with their virtual network links and
//! record sets (`Microsoft.Network`) — the `az network` commands of the Private Link
//! walkthrough, with the same flag names where az has them.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{ArmClient, Connection};
use super::output::{self, at, col, id_name, resource_group, text, Column};
use super::{api, Ids};

const VNETS: &str = "Microsoft.Network/virtualNetworks";
const ENDPOINTS: &str = "Microsoft.Network/privateEndpoints";
const ZONES: &str = "Microsoft.Network/privateDnsZones";
const SERVICES: &str = "Microsoft.HealthcareApis/services";
/// The FHIR service's only private-link group.
const FHIR_GROUP_ID: &str = "fhir";

#[derive(Args)]
pub(crate) struct NetworkCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    area: Area,
}

#[derive(Subcommand)]
enum Area {
    /// Virtual networks, their subnets and peerings.
    #[command(subcommand)]
    Vnet(VnetAction),
    /// Private endpoints to FHIR services.
    #[command(subcommand, name = "private-endpoint")]
    PrivateEndpoint(EndpointAction),
    /// Private DNS zones, their virtual network links and record sets.
    #[command(subcommand, name = "private-dns")]
    PrivateDns(DnsArea),
}

#[derive(Subcommand)]
enum VnetAction {
    /// Create (or update) a virtual network, optionally with a first subnet.
    Create {
        #[arg(short, long)]
        name: String,
        /// Address prefixes (CIDR), e.g. 127.10.0.0/16; repeat or comma-separate for more.
        #[arg(
            long = "address-prefixes",
            alias = "address-prefix",
            value_delimiter = ',',
            required = true
        )]
        address_prefixes: Vec<String>,
        /// Name of a subnet to create with the network.
        #[arg(long, requires = "subnet_prefix")]
        subnet_name: Option<String>,
        /// Address prefix of that subnet, e.g. 127.10.1.0/24.
        #[arg(long, requires = "subnet_name")]
        subnet_prefix: Option<String>,
        /// Region.
        #[arg(short, long, env = "FHIRLINK_LOCATION", default_value = "westus2")]
        location: String,
    },
    /// List the resource group's virtual networks.
    List,
    /// Show a virtual network.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Delete a virtual network.
    Delete {
        #[arg(short, long)]
        name: String,
    },
    /// Subnets of a virtual network.
    #[command(subcommand)]
    Subnet(SubnetAction),
    /// Peerings of a virtual network.
    #[command(subcommand)]
    Peering(PeeringAction),
}

#[derive(Subcommand)]
enum SubnetAction {
    /// Create (or update) a subnet.
    Create {
        #[arg(long)]
        vnet_name: String,
        #[arg(short, long)]
        name: String,
        /// The subnet's address prefix (CIDR).
        #[arg(long = "address-prefixes", alias = "address-prefix")]
        address_prefix: String,
    },
    /// List a virtual network's subnets.
    List {
        #[arg(long)]
        vnet_name: String,
    },
    /// Delete a subnet.
    Delete {
        #[arg(long)]
        vnet_name: String,
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum PeeringAction {
    /// Peer a virtual network with another (create the peering on both sides to connect).
    Create {
        #[arg(long)]
        vnet_name: String,
        #[arg(short, long)]
        name: String,
        /// The remote virtual network: a name in --remote-vnet-resource-group (default: this
        /// group), or a full resource id.
        #[arg(long)]
        remote_vnet: String,
        #[arg(long)]
        remote_vnet_resource_group: Option<String>,
    },
    /// List a virtual network's peerings.
    List {
        #[arg(long)]
        vnet_name: String,
    },
    /// Delete a peering.
    Delete {
        #[arg(long)]
        vnet_name: String,
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum EndpointAction {
    /// Create a private endpoint to a FHIR service: approved at once when you may approve on
    /// the service, or a pending request with --manual-request.
    Create {
        #[arg(short, long)]
        name: String,
        /// The virtual network of the endpoint's subnet.
        #[arg(long)]
        vnet_name: String,
        /// The subnet the endpoint takes its address from.
        #[arg(long)]
        subnet: String,
        /// The FHIR service to connect to (a name in --service-resource-group).
        #[arg(long, required_unless_present = "private_connection_resource_id")]
        service: Option<String>,
        /// Resource group of --service [default: --resource-group].
        #[arg(long)]
        service_resource_group: Option<String>,
        /// The resource id of the FHIR service, instead of --service.
        #[arg(long, conflicts_with = "service")]
        private_connection_resource_id: Option<String>,
        /// Name of the connection.
        #[arg(long)]
        connection_name: Option<String>,
        /// Ask the service's owner for approval instead of connecting at once.
        #[arg(long)]
        manual_request: bool,
        /// The message the service's owner sees with a manual request.
        #[arg(long, default_value = "Please approve my connection.")]
        request_message: String,
        /// A fixed private IP address from the subnet (default: the first free one).
        #[arg(long)]
        private_ip_address: Option<String>,
        /// Region [default: the virtual network's].
        #[arg(short, long)]
        location: Option<String>,
    },
    /// List the resource group's private endpoints.
    List,
    /// Show a private endpoint.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Delete a private endpoint (its DNS records go with it).
    Delete {
        #[arg(short, long)]
        name: String,
    },
    /// DNS zone groups: the private DNS zones that hold the endpoint's A record.
    #[command(subcommand, name = "dns-zone-group")]
    DnsZoneGroup(ZoneGroupAction),
}

#[derive(Subcommand)]
enum ZoneGroupAction {
    /// Put the endpoint's A record into a private DNS zone.
    Create {
        #[arg(long)]
        endpoint_name: String,
        /// Name of the zone group.
        #[arg(short, long, default_value = "default")]
        name: String,
        /// The private DNS zone (a name in --zone-resource-group, or a full resource id).
        #[arg(long)]
        private_dns_zone: String,
        #[arg(long)]
        zone_resource_group: Option<String>,
        /// Name of the zone's entry in the group [default: the zone's name with dots as
        /// dashes].
        #[arg(long)]
        zone_name: Option<String>,
    },
    /// List an endpoint's zone groups.
    List {
        #[arg(long)]
        endpoint_name: String,
    },
    /// Delete a zone group (its A records go with it).
    Delete {
        #[arg(long)]
        endpoint_name: String,
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum DnsArea {
    /// Private DNS zones.
    #[command(subcommand)]
    Zone(ZoneAction),
    /// Links between a zone and the virtual networks it answers.
    #[command(subcommand)]
    Link(LinkArea),
    /// Record sets of a zone.
    #[command(subcommand, name = "record-set")]
    RecordSet(RecordSetAction),
}

#[derive(Subcommand)]
enum ZoneAction {
    /// Create a private DNS zone, e.g. privatelink.azurehealthcareapis.com.
    Create {
        #[arg(short, long)]
        name: String,
    },
    List,
    Show {
        #[arg(short, long)]
        name: String,
    },
    Delete {
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum LinkArea {
    /// Virtual network links.
    #[command(subcommand)]
    Vnet(LinkAction),
}

#[derive(Subcommand)]
enum LinkAction {
    /// Link a virtual network to a zone, so the zone answers that network's queries.
    Create {
        #[arg(long)]
        zone_name: String,
        #[arg(short, long)]
        name: String,
        /// The virtual network: a name in --resource-group, or a full resource id.
        #[arg(short = 'v', long)]
        virtual_network: String,
        /// Also keep an A record for every virtual machine of the network.
        #[arg(short = 'e', long, default_value = "false", action = clap::ArgAction::Set)]
        registration_enabled: bool,
    },
    List {
        #[arg(long)]
        zone_name: String,
    },
    Show {
        #[arg(long)]
        zone_name: String,
        #[arg(short, long)]
        name: String,
    },
    Delete {
        #[arg(long)]
        zone_name: String,
        #[arg(short, long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum RecordSetAction {
    /// List every record set of a zone: the private IPs of services and virtual machines.
    List {
        #[arg(long)]
        zone_name: String,
    },
}

const VNET_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("ResourceGroup", resource_group),
    col("Location", |v| at(v, "/location")),
    col("AddressPrefixes", |v| {
        at(v, "/properties/addressSpace/addressPrefixes")
    }),
    col("Subnets", |v| names(v.pointer("/properties/subnets"))),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const SUBNET_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("AddressPrefix", |v| at(v, "/properties/addressPrefix")),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const PEERING_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("RemoteVnet", |v| {
        id_name(v, "/properties/remoteVirtualNetwork/id")
    }),
    col("PeeringState", |v| at(v, "/properties/peeringState")),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const ENDPOINT_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("Location", |v| at(v, "/location")),
    col("Subnet", |v| id_name(v, "/properties/subnet/id")),
    col("PrivateIP", private_ip),
    col("Connection", |v| {
        connection(v)
            .map(|c| at(c, "/properties/privateLinkServiceConnectionState/status"))
            .unwrap_or_default()
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const ZONE_GROUP_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("Zones", |v| {
        v.pointer("/properties/privateDnsZoneConfigs")
            .and_then(Value::as_array)
            .map(|configs| {
                configs
                    .iter()
                    .map(|c| id_name(c, "/properties/privateDnsZoneId"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const ZONE_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("ResourceGroup", resource_group),
    col("RecordSets", |v| at(v, "/properties/numberOfRecordSets")),
    col("VirtualNetworkLinks", |v| {
        at(v, "/properties/numberOfVirtualNetworkLinks")
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const LINK_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("VirtualNetwork", |v| {
        id_name(v, "/properties/virtualNetwork/id")
    }),
    col("RegistrationEnabled", |v| {
        at(v, "/properties/registrationEnabled")
    }),
    col("LinkState", |v| {
        at(v, "/properties/virtualNetworkLinkState")
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const RECORD_SET_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("Type", |v| {
        at(v, "/type")
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }),
    col("TTL", |v| at(v, "/properties/ttl")),
    col("Records", |v| {
        let a = v
            .pointer("/properties/aRecords")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(|r| at(r, "/ipv4Address")).collect::<Vec<_>>());
        match a {
            Some(ips) if !ips.is_empty() => ips.join(", "),
            _ => at(v, "/properties/soaRecord/host"),
        }
    }),
    col("AutoRegistered", |v| at(v, "/properties/isAutoRegistered")),
];

/// The names of a list of child resources.
fn names(list: Option<&Value>) -> String {
    list.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|s| at(s, "/name"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// The endpoint's one connection, automatic or manual.
fn connection(v: &Value) -> Option<&Value> {
    [
        "privateLinkServiceConnections",
        "manualPrivateLinkServiceConnections",
    ]
    .iter()
    .filter_map(|k| v.pointer(&format!("/properties/{k}/0")))
    .next()
}

/// The endpoint's private address, from its DNS configs or its IP configurations.
fn private_ip(v: &Value) -> String {
    let from_dns = at(v, "/properties/customDnsConfigs/0/ipAddresses/0");
    if !from_dns.is_empty() {
        return from_dns;
    }
    text(
        v.pointer("/properties/ipConfigurations/0/properties/privateIPAddress")
            .unwrap_or(&Value::Null),
    )
}

/// A resource given as a name (in `ids`' group) or as a full id.
fn name_or_id(ids: &Ids<'_>, provider_type: &str, given: &str) -> String {
    if given.starts_with('/') {
        given.to_string()
    } else {
        ids.resource(provider_type, given)
    }
}

pub(crate) async fn run_network(cmd: NetworkCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let ids = Ids::new(&cmd.conn);
    let out = cmd.conn.output;
    match cmd.area {
        Area::Vnet(action) => vnet(&client, &ids, out, action).await,
        Area::PrivateEndpoint(action) => endpoint(&client, &ids, out, action).await,
        Area::PrivateDns(area) => dns(&client, &ids, out, area).await,
    }
}

async fn vnet(
    client: &ArmClient,
    ids: &Ids<'_>,
    out: super::client::Output,
    action: VnetAction,
) -> anyhow::Result<()> {
    let vnet_id = |name: &str| ids.resource(VNETS, name);
    match action {
        VnetAction::Create {
            name,
            address_prefixes,
            subnet_name,
            subnet_prefix,
            location,
        } => {
            let mut properties = json!({"addressSpace": {"addressPrefixes": address_prefixes}});
            if let (Some(subnet), Some(prefix)) = (subnet_name, subnet_prefix) {
                properties["subnets"] =
                    json!([{"name": subnet, "properties": {"addressPrefix": prefix}}]);
            }
            let body = json!({"location": location, "properties": properties});
            let v = client.put(&vnet_id(&name), api::NETWORK, &body).await?;
            output::one(out, &v, VNET_COLUMNS);
        }
        VnetAction::List => {
            let items = client
                .list(&format!("{}/providers/{VNETS}", ids.group()), api::NETWORK)
                .await?;
            output::many(out, &items, VNET_COLUMNS);
        }
        VnetAction::Show { name } => {
            let v = client.get(&vnet_id(&name), api::NETWORK).await?;
            output::one(out, &v, VNET_COLUMNS);
        }
        VnetAction::Delete { name } => {
            client.delete(&vnet_id(&name), api::NETWORK).await?;
        }
        VnetAction::Subnet(action) => match action {
            SubnetAction::Create {
                vnet_name,
                name,
                address_prefix,
            } => {
                let id = format!("{}/subnets/{name}", vnet_id(&vnet_name));
                let body = json!({"properties": {"addressPrefix": address_prefix}});
                let v = client.put(&id, api::NETWORK, &body).await?;
                output::one(out, &v, SUBNET_COLUMNS);
            }
            SubnetAction::List { vnet_name } => {
                let id = format!("{}/subnets", vnet_id(&vnet_name));
                let items = client.list(&id, api::NETWORK).await?;
                output::many(out, &items, SUBNET_COLUMNS);
            }
            SubnetAction::Delete { vnet_name, name } => {
                let id = format!("{}/subnets/{name}", vnet_id(&vnet_name));
                client.delete(&id, api::NETWORK).await?;
            }
        },
        VnetAction::Peering(action) => match action {
            PeeringAction::Create {
                vnet_name,
                name,
                remote_vnet,
                remote_vnet_resource_group,
            } => {
                let remote_ids = match &remote_vnet_resource_group {
                    Some(g) => ids.in_group(g),
                    None => ids.in_group(ids.group_name()),
                };
                let remote = name_or_id(&remote_ids, VNETS, &remote_vnet);
                let id = format!("{}/virtualNetworkPeerings/{name}", vnet_id(&vnet_name));
                let body = json!({"properties": {
                    "remoteVirtualNetwork": {"id": remote},
                    "allowVirtualNetworkAccess": true,
                    "allowForwardedTraffic": false,
                    "allowGatewayTransit": false,
                    "useRemoteGateways": false
                }});
                let v = client.put(&id, api::NETWORK, &body).await?;
                output::one(out, &v, PEERING_COLUMNS);
            }
            PeeringAction::List { vnet_name } => {
                let id = format!("{}/virtualNetworkPeerings", vnet_id(&vnet_name));
                let items = client.list(&id, api::NETWORK).await?;
                output::many(out, &items, PEERING_COLUMNS);
            }
            PeeringAction::Delete { vnet_name, name } => {
                let id = format!("{}/virtualNetworkPeerings/{name}", vnet_id(&vnet_name));
                client.delete(&id, api::NETWORK).await?;
            }
        },
    }
    Ok(())
}

async fn endpoint(
    client: &ArmClient,
    ids: &Ids<'_>,
    out: super::client::Output,
    action: EndpointAction,
) -> anyhow::Result<()> {
    let pe_id = |name: &str| ids.resource(ENDPOINTS, name);
    match action {
        EndpointAction::Create {
            name,
            vnet_name,
            subnet,
            service,
            service_resource_group,
            private_connection_resource_id,
            connection_name,
            manual_request,
            request_message,
            private_ip_address,
            location,
        } => {
            let vnet = ids.resource(VNETS, &vnet_name);
            let service_id = match (private_connection_resource_id, service) {
                (Some(id), _) => id,
                (None, Some(svc)) => {
                    let group = service_resource_group
                        .as_deref()
                        .unwrap_or(ids.group_name());
                    ids.in_group(group).resource(SERVICES, &svc)
                }
                (None, None) => {
                    anyhow::bail!("--service or --private-connection-resource-id is required")
                }
            };
            // The region rule: an endpoint lives in its network's region, so that is the
            // default rather than a guess.
            let location = match location {
                Some(l) => l,
                None => client
                    .get(&vnet, api::NETWORK)
                    .await
                    .context("reading the virtual network's region")?
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("westus2")
                    .to_string(),
            };
            let mut link = json!({
                "name": connection_name.unwrap_or_else(|| format!("{name}-connection")),
                "properties": {"privateLinkServiceId": service_id, "groupIds": [FHIR_GROUP_ID]}
            });
            if manual_request {
                link["properties"]["requestMessage"] = json!(request_message);
            }
            let links_key = if manual_request {
                "manualPrivateLinkServiceConnections"
            } else {
                "privateLinkServiceConnections"
            };
            let mut properties = json!({
                "subnet": {"id": format!("{vnet}/subnets/{subnet}")},
                links_key: [link],
            });
            if let Some(ip) = private_ip_address {
                properties["ipConfigurations"] = json!([{
                    "name": "ipconfig1",
                    "properties": {"groupId": FHIR_GROUP_ID, "memberName": FHIR_GROUP_ID, "privateIPAddress": ip}
                }]);
            }
            let body = json!({"location": location, "properties": properties});
            let v = client.put(&pe_id(&name), api::NETWORK, &body).await?;
            output::one(out, &v, ENDPOINT_COLUMNS);
        }
        EndpointAction::List => {
            let items = client
                .list(
                    &format!("{}/providers/{ENDPOINTS}", ids.group()),
                    api::NETWORK,
                )
                .await?;
            output::many(out, &items, ENDPOINT_COLUMNS);
        }
        EndpointAction::Show { name } => {
            let v = client.get(&pe_id(&name), api::NETWORK).await?;
            output::one(out, &v, ENDPOINT_COLUMNS);
        }
        EndpointAction::Delete { name } => {
            client.delete(&pe_id(&name), api::NETWORK).await?;
        }
        EndpointAction::DnsZoneGroup(action) => match action {
            ZoneGroupAction::Create {
                endpoint_name,
                name,
                private_dns_zone,
                zone_resource_group,
                zone_name,
            } => {
                let zone_ids =
                    ids.in_group(zone_resource_group.as_deref().unwrap_or(ids.group_name()));
                let zone = name_or_id(&zone_ids, ZONES, &private_dns_zone);
                let config_name = zone_name.unwrap_or_else(|| {
                    zone.rsplit('/')
                        .next()
                        .unwrap_or_default()
                        .replace('.', "-")
                });
                let id = format!("{}/privateDnsZoneGroups/{name}", pe_id(&endpoint_name));
                let body = json!({"properties": {"privateDnsZoneConfigs": [
                    {"name": config_name, "properties": {"privateDnsZoneId": zone}}
                ]}});
                let v = client.put(&id, api::NETWORK, &body).await?;
                output::one(out, &v, ZONE_GROUP_COLUMNS);
            }
            ZoneGroupAction::List { endpoint_name } => {
                let id = format!("{}/privateDnsZoneGroups", pe_id(&endpoint_name));
                let items = client.list(&id, api::NETWORK).await?;
                output::many(out, &items, ZONE_GROUP_COLUMNS);
            }
            ZoneGroupAction::Delete {
                endpoint_name,
                name,
            } => {
                let id = format!("{}/privateDnsZoneGroups/{name}", pe_id(&endpoint_name));
                client.delete(&id, api::NETWORK).await?;
            }
        },
    }
    Ok(())
}

async fn dns(
    client: &ArmClient,
    ids: &Ids<'_>,
    out: super::client::Output,
    area: DnsArea,
) -> anyhow::Result<()> {
    let zone_id = |name: &str| ids.resource(ZONES, name);
    match area {
        DnsArea::Zone(action) => match action {
            ZoneAction::Create { name } => {
                let v = client
                    .put(
                        &zone_id(&name),
                        api::PRIVATE_DNS,
                        &json!({"location": "global"}),
                    )
                    .await?;
                output::one(out, &v, ZONE_COLUMNS);
            }
            ZoneAction::List => {
                let items = client
                    .list(
                        &format!("{}/providers/{ZONES}", ids.group()),
                        api::PRIVATE_DNS,
                    )
                    .await?;
                output::many(out, &items, ZONE_COLUMNS);
            }
            ZoneAction::Show { name } => {
                let v = client.get(&zone_id(&name), api::PRIVATE_DNS).await?;
                output::one(out, &v, ZONE_COLUMNS);
            }
            ZoneAction::Delete { name } => {
                client.delete(&zone_id(&name), api::PRIVATE_DNS).await?;
            }
        },
        DnsArea::Link(LinkArea::Vnet(action)) => match action {
            LinkAction::Create {
                zone_name,
                name,
                virtual_network,
                registration_enabled,
            } => {
                let id = format!("{}/virtualNetworkLinks/{name}", zone_id(&zone_name));
                let vnet = name_or_id(ids, VNETS, &virtual_network);
                let body = json!({"location": "global", "properties": {
                    "virtualNetwork": {"id": vnet},
                    "registrationEnabled": registration_enabled
                }});
                let v = client.put(&id, api::PRIVATE_DNS, &body).await?;
                output::one(out, &v, LINK_COLUMNS);
            }
            LinkAction::List { zone_name } => {
                let id = format!("{}/virtualNetworkLinks", zone_id(&zone_name));
                let items = client.list(&id, api::PRIVATE_DNS).await?;
                output::many(out, &items, LINK_COLUMNS);
            }
            LinkAction::Show { zone_name, name } => {
                let id = format!("{}/virtualNetworkLinks/{name}", zone_id(&zone_name));
                let v = client.get(&id, api::PRIVATE_DNS).await?;
                output::one(out, &v, LINK_COLUMNS);
            }
            LinkAction::Delete { zone_name, name } => {
                let id = format!("{}/virtualNetworkLinks/{name}", zone_id(&zone_name));
                client.delete(&id, api::PRIVATE_DNS).await?;
            }
        },
        DnsArea::RecordSet(RecordSetAction::List { zone_name }) => {
            let id = format!("{}/ALL", zone_id(&zone_name));
            let items = client.list(&id, api::PRIVATE_DNS).await?;
            output::many(out, &items, RECORD_SET_COLUMNS);
        }
    }
    Ok(())
}
