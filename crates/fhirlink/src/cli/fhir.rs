//! `fhirlink fhir`: FHIR services (`Microsoft.HealthcareApis/services`, kind `fhir-R4`) and
//! the private endpoint connections an owner approves, rejects or removes — the
//! `az healthcareapis` commands of the Private Link walkthrough.

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{json, Value};

use super::client::{ArmClient, Connection};
use super::output::{self, at, col, id_name, resource_group, Column};
use super::{api, Ids};

const SERVICES: &str = "Microsoft.HealthcareApis/services";

#[derive(Args)]
pub(crate) struct FhirCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    action: FhirAction,
}

#[derive(Clone, Copy, ValueEnum)]
enum Access {
    #[value(name = "Enabled")]
    Enabled,
    #[value(name = "Disabled")]
    Disabled,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Access::Enabled => "Enabled",
            Access::Disabled => "Disabled",
        }
    }
}

#[derive(Subcommand)]
enum FhirAction {
    /// Create (or update) a FHIR service.
    Create {
        /// Service name: 3-24 lowercase letters and digits; it becomes the host name
        /// `<name>.azurehealthcareapis.com`.
        #[arg(short, long)]
        name: String,
        /// Region.
        #[arg(short, long, env = "FHIRLINK_LOCATION", default_value = "westus2")]
        location: String,
        /// Whether the public endpoint answers.
        #[arg(long, value_enum, ignore_case = true)]
        public_network_access: Option<Access>,
    },
    /// List the FHIR services of the resource group (or of the subscription with --all).
    List {
        /// Every resource group of the subscription.
        #[arg(long)]
        all: bool,
    },
    /// Show a FHIR service.
    Show {
        #[arg(short, long)]
        name: String,
    },
    /// Change a FHIR service: its public network access.
    Update {
        #[arg(short, long)]
        name: String,
        /// Whether the public endpoint answers.
        #[arg(long, value_enum, ignore_case = true)]
        public_network_access: Access,
    },
    /// Delete a FHIR service and its data.
    Delete {
        #[arg(short, long)]
        name: String,
    },
    /// The private link resources of a service (group `fhir`).
    PrivateLinkResource {
        /// The FHIR service.
        #[arg(long)]
        service: String,
    },
    /// Private endpoint connections of a service: list, show, approve, reject, delete.
    #[command(subcommand, name = "private-endpoint-connection", alias = "pec")]
    Connection(ConnectionAction),
}

#[derive(Subcommand)]
enum ConnectionAction {
    /// List a service's private endpoint connections.
    List {
        /// The FHIR service.
        #[arg(long)]
        service: String,
    },
    /// Show one connection.
    Show {
        #[arg(long)]
        service: String,
        /// The connection's name, or the name of its private endpoint.
        #[arg(short, long)]
        name: String,
    },
    /// Approve a pending connection: its endpoint starts carrying traffic.
    Approve {
        /// The FHIR service.
        #[arg(long)]
        service: String,
        /// The connection's name, or the name of its private endpoint.
        #[arg(short, long)]
        name: String,
        /// Why (shown to the endpoint's owner).
        #[arg(long, default_value = "Approved")]
        description: String,
    },
    /// Reject a connection: its endpoint carries no traffic.
    Reject {
        /// The FHIR service.
        #[arg(long)]
        service: String,
        /// The connection's name, or the name of its private endpoint.
        #[arg(short, long)]
        name: String,
        #[arg(long, default_value = "Rejected")]
        description: String,
    },
    /// Remove a connection: its endpoint becomes Disconnected.
    Delete {
        /// The FHIR service.
        #[arg(long)]
        service: String,
        /// The connection's name, or the name of its private endpoint.
        #[arg(short, long)]
        name: String,
    },
}

const SERVICE_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("ResourceGroup", resource_group),
    col("Location", |v| at(v, "/location")),
    col("Kind", |v| at(v, "/kind")),
    col("PublicNetworkAccess", |v| {
        at(v, "/properties/publicNetworkAccess")
    }),
    col("Connections", |v| {
        v.pointer("/properties/privateEndpointConnections")
            .and_then(Value::as_array)
            .map(|a| a.len().to_string())
            .unwrap_or_default()
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

pub(crate) const CONNECTION_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("PrivateEndpoint", |v| {
        id_name(v, "/properties/privateEndpoint/id")
    }),
    col("Status", |v| {
        at(v, "/properties/privateLinkServiceConnectionState/status")
    }),
    col("Description", |v| {
        at(
            v,
            "/properties/privateLinkServiceConnectionState/description",
        )
    }),
    col("State", |v| at(v, "/properties/provisioningState")),
];

const LINK_RESOURCE_COLUMNS: &[Column] = &[
    col("Name", |v| at(v, "/name")),
    col("GroupId", |v| at(v, "/properties/groupId")),
    col("RequiredMembers", |v| at(v, "/properties/requiredMembers")),
    col("RequiredZoneNames", |v| {
        at(v, "/properties/requiredZoneNames")
    }),
];

pub(crate) async fn run_fhir(cmd: FhirCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let ids = Ids::new(&cmd.conn);
    let out = cmd.conn.output;
    let service = |name: &str| ids.resource(SERVICES, name);
    match cmd.action {
        FhirAction::Create {
            name,
            location,
            public_network_access,
        } => {
            let mut properties = json!({"accessPolicies": []});
            if let Some(access) = public_network_access {
                properties["publicNetworkAccess"] = json!(access.as_str());
            }
            let body = json!({"location": location, "kind": "fhir-R4", "properties": properties});
            let v = client.put(&service(&name), api::HEALTHCARE, &body).await?;
            output::one(out, &v, SERVICE_COLUMNS);
        }
        FhirAction::List { all } => {
            let scope = if all { ids.subscription() } else { ids.group() };
            let items = client
                .list(&format!("{scope}/providers/{SERVICES}"), api::HEALTHCARE)
                .await?;
            output::many(out, &items, SERVICE_COLUMNS);
        }
        FhirAction::Show { name } => {
            let v = client.get(&service(&name), api::HEALTHCARE).await?;
            output::one(out, &v, SERVICE_COLUMNS);
        }
        FhirAction::Update {
            name,
            public_network_access,
        } => {
            let body =
                json!({"properties": {"publicNetworkAccess": public_network_access.as_str()}});
            let v = client
                .patch(&service(&name), api::HEALTHCARE, &body)
                .await?;
            output::one(out, &v, SERVICE_COLUMNS);
        }
        FhirAction::Delete { name } => {
            client.delete(&service(&name), api::HEALTHCARE).await?;
        }
        FhirAction::PrivateLinkResource { service: name } => {
            let items = client
                .list(
                    &format!("{}/privateLinkResources", service(&name)),
                    api::HEALTHCARE,
                )
                .await?;
            output::many(out, &items, LINK_RESOURCE_COLUMNS);
        }
        FhirAction::Connection(action) => {
            let connections = |svc: &str| format!("{}/privateEndpointConnections", service(svc));
            let set_state = |status: &str, description: String| {
                json!({"properties": {"privateLinkServiceConnectionState": {
                    "status": status, "description": description}}})
            };
            match action {
                ConnectionAction::List { service } => {
                    let items = client.list(&connections(&service), api::HEALTHCARE).await?;
                    output::many(out, &items, CONNECTION_COLUMNS);
                }
                ConnectionAction::Show { service, name } => {
                    let id = connection_id(&client, &connections(&service), &name).await?;
                    let v = client.get(&id, api::HEALTHCARE).await?;
                    output::one(out, &v, CONNECTION_COLUMNS);
                }
                ConnectionAction::Approve {
                    service,
                    name,
                    description,
                } => {
                    let id = connection_id(&client, &connections(&service), &name).await?;
                    let v = client
                        .put(&id, api::HEALTHCARE, &set_state("Approved", description))
                        .await?;
                    output::one(out, &v, CONNECTION_COLUMNS);
                }
                ConnectionAction::Reject {
                    service,
                    name,
                    description,
                } => {
                    let id = connection_id(&client, &connections(&service), &name).await?;
                    let v = client
                        .put(&id, api::HEALTHCARE, &set_state("Rejected", description))
                        .await?;
                    output::one(out, &v, CONNECTION_COLUMNS);
                }
                ConnectionAction::Delete { service, name } => {
                    let id = connection_id(&client, &connections(&service), &name).await?;
                    client.delete(&id, api::HEALTHCARE).await?;
                }
            }
        }
    }
    Ok(())
}

/// The id of a service's connection given its name or its private endpoint's name (Azure
/// names connections `<endpoint>.<id>`, which nobody types).
async fn connection_id(
    client: &ArmClient,
    connections: &str,
    given: &str,
) -> anyhow::Result<String> {
    let items = client.list(connections, api::HEALTHCARE).await?;
    let name_of = |c: &Value| c.get("name").and_then(Value::as_str).map(str::to_string);
    let by_name = items
        .iter()
        .find(|c| name_of(c).is_some_and(|n| n.eq_ignore_ascii_case(given)));
    let by_endpoint = || {
        items
            .iter()
            .find(|c| id_name(c, "/properties/privateEndpoint/id").eq_ignore_ascii_case(given))
    };
    let name = by_name
        .or_else(by_endpoint)
        .and_then(name_of)
        .unwrap_or_else(|| given.to_string());
    Ok(format!("{connections}/{name}"))
}
