//! `fhirlink role assignment`: who may do what where (`Microsoft.Authorization/
//! roleAssignments` with Azure's built-in roles), as `az role assignment` does it — e.g. a
//! Network Contributor on a resource group who may create private endpoints there but must
//! ask a FHIR service's owner for approval.

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{ArmClient, Connection};
use super::output::{self, at, col, Column};
use super::{api, Ids};

#[derive(Args)]
pub(crate) struct RoleCommand {
    #[command(flatten)]
    conn: Connection,
    #[command(subcommand)]
    area: RoleArea,
}

#[derive(Subcommand)]
enum RoleArea {
    /// Role assignments.
    #[command(subcommand)]
    Assignment(AssignmentAction),
}

#[derive(Subcommand)]
enum AssignmentAction {
    /// Give a principal a role at a scope.
    Create {
        /// The principal (a token's `sub`).
        #[arg(long)]
        assignee: String,
        /// Owner, Contributor, Reader, Network Contributor, FHIR Data Reader, FHIR Data
        /// Writer, FHIR Data Contributor, FHIR Data Exporter or FHIR Data Importer (or a role
        /// definition GUID).
        #[arg(long)]
        role: String,
        /// The scope: a resource id, a resource group's or a subscription's id, or `/`
        /// [default: the resource group].
        #[arg(long)]
        scope: Option<String>,
    },
    /// List the role assignments at a scope and above.
    List {
        #[arg(long)]
        scope: Option<String>,
    },
    /// Delete a role assignment by its id.
    Delete {
        #[arg(long)]
        id: String,
    },
}

const ASSIGNMENT_COLUMNS: &[Column] = &[
    col("Principal", |v| at(v, "/properties/principalId")),
    col("Role", |v| {
        let guid = at(v, "/properties/roleDefinitionId");
        let guid = guid.rsplit('/').next().unwrap_or_default();
        link_model::role(guid)
            .map(|r| r.name.to_string())
            .unwrap_or_else(|| guid.to_string())
    }),
    col("Scope", |v| at(v, "/properties/scope")),
    col("Name", |v| at(v, "/name")),
];

fn role_guid(role: &str) -> anyhow::Result<&'static str> {
    link_model::ROLES
        .iter()
        .find(|r| r.name.eq_ignore_ascii_case(role) || r.id.eq_ignore_ascii_case(role))
        .map(|r| r.id)
        .ok_or_else(|| {
            let names: Vec<&str> = link_model::ROLES.iter().map(|r| r.name).collect();
            anyhow::anyhow!("unknown role '{role}': {}", names.join(", "))
        })
}

/// A new assignment name: a random (version 4) GUID, as Azure's clients make them.
fn new_guid() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub(crate) async fn run_role(cmd: RoleCommand) -> anyhow::Result<()> {
    let client = ArmClient::new(&cmd.conn)?;
    let ids = Ids::new(&cmd.conn);
    let out = cmd.conn.output;
    let scope_of = |s: Option<String>| {
        let s = s.unwrap_or_else(|| ids.group());
        if s == "/" {
            String::new()
        } else {
            s.trim_end_matches('/').to_string()
        }
    };
    match cmd.area {
        RoleArea::Assignment(AssignmentAction::Create {
            assignee,
            role,
            scope,
        }) => {
            let scope = scope_of(scope);
            let guid = role_guid(&role)?;
            let definition = format!(
                "{}/providers/Microsoft.Authorization/roleDefinitions/{guid}",
                ids.subscription()
            );
            let id = format!(
                "{scope}/providers/Microsoft.Authorization/roleAssignments/{}",
                new_guid()
            );
            let body =
                json!({"properties": {"roleDefinitionId": definition, "principalId": assignee}});
            let v = client.put(&id, api::AUTHORIZATION, &body).await?;
            output::one(out, &v, ASSIGNMENT_COLUMNS);
        }
        RoleArea::Assignment(AssignmentAction::List { scope }) => {
            let id = format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                scope_of(scope)
            );
            let items: Vec<Value> = client.list(&id, api::AUTHORIZATION).await?;
            output::many(out, &items, ASSIGNMENT_COLUMNS);
        }
        RoleArea::Assignment(AssignmentAction::Delete { id }) => {
            client.delete(&id, api::AUTHORIZATION).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_by_name_or_guid() {
        assert_eq!(
            role_guid("network contributor").unwrap(),
            link_model::NETWORK_CONTRIBUTOR
        );
        assert_eq!(
            role_guid("FHIR Data Reader").unwrap(),
            link_model::FHIR_DATA_READER
        );
        assert_eq!(role_guid(link_model::OWNER).unwrap(), link_model::OWNER);
        assert!(role_guid("Superuser").is_err());
        let g = new_guid();
        assert_eq!(g.len(), 36);
        assert_eq!(&g[14..15], "4");
    }
}
