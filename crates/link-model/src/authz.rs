//! Authorization: Azure's built-in roles and the check of a caller's permission on a scope
//! against the role assignments at that scope or above (root `/`, subscription, resource
//! group, resource).

use serde_json::{json, Value};

use crate::error::ArmError;
use crate::kind::Kind;
use crate::state::{s, State};
use crate::Principal;

/// A built-in role: Azure's role definition id, name and permissions.
pub struct Role {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub actions: &'static [&'static str],
    pub not_actions: &'static [&'static str],
    /// Data-plane permissions (Azure's `dataActions`): what the role may do with a FHIR
    /// service's data. Management roles (Owner included) have none, as in Azure.
    pub data_actions: &'static [&'static str],
    pub not_data_actions: &'static [&'static str],
}

pub const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
pub const CONTRIBUTOR: &str = "b24988ac-6180-42a0-ab88-20f7382dd24c";
pub const READER: &str = "acdd72a7-3385-48ef-bd42-f606fba81ae7";
pub const NETWORK_CONTRIBUTOR: &str = "4d97b98b-1d4f-4787-a291-c67834d212e7";
pub const FHIR_DATA_READER: &str = "4c8d0bbc-75d3-4935-991f-5f3c56d81508";
pub const FHIR_DATA_WRITER: &str = "3f88fce4-5892-4214-ae73-ba5294559913";
pub const FHIR_DATA_CONTRIBUTOR: &str = "5a1fc7df-4bf1-4951-a576-89034ee01acd";
pub const FHIR_DATA_EXPORTER: &str = "3db33094-8700-4567-8da5-1501d4e7e843";
pub const FHIR_DATA_IMPORTER: &str = "4465e953-8ced-4406-a58e-0f6e3f3b530b";

/// The data actions of a FHIR service (Azure's `Microsoft.HealthcareApis/services/fhir/...`).
pub const DATA_READ: &str = "Microsoft.HealthcareApis/services/fhir/resources/read";
pub const DATA_WRITE: &str = "Microsoft.HealthcareApis/services/fhir/resources/write";
pub const DATA_DELETE: &str = "Microsoft.HealthcareApis/services/fhir/resources/delete";
pub const DATA_HARD_DELETE: &str =
    "Microsoft.HealthcareApis/services/fhir/resources/hardDelete/action";
pub const DATA_EXPORT: &str = "Microsoft.HealthcareApis/services/fhir/resources/export/action";
pub const DATA_IMPORT: &str = "Microsoft.HealthcareApis/services/fhir/resources/import/action";

/// The built-in roles fhirlink knows (Azure's definitions, reduced to their actions).
pub const ROLES: &[Role] = &[
    Role {
        id: OWNER,
        name: "Owner",
        description: "Grants full access to manage all resources, including the ability to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    Role {
        id: CONTRIBUTOR,
        name: "Contributor",
        description: "Grants full access to manage all resources, but does not allow you to assign roles in Azure RBAC.",
        actions: &["*"],
        not_actions: &[
            "Microsoft.Authorization/*/Delete",
            "Microsoft.Authorization/*/Write",
            "Microsoft.Authorization/elevateAccess/Action",
        ],
        data_actions: &[],
        not_data_actions: &[],
    },
    Role {
        id: READER,
        name: "Reader",
        description: "View all resources, but does not allow you to make any changes.",
        actions: &["*/read"],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    Role {
        id: NETWORK_CONTRIBUTOR,
        name: "Network Contributor",
        description: "Lets you manage networks, but not access to them.",
        actions: &[
            "Microsoft.Authorization/*/read",
            "Microsoft.Insights/alertRules/*",
            "Microsoft.Network/*",
            "Microsoft.ResourceHealth/availabilityStatuses/read",
            "Microsoft.Resources/deployments/*",
            "Microsoft.Resources/subscriptions/resourceGroups/read",
            "Microsoft.Support/*",
        ],
        not_actions: &[],
        data_actions: &[],
        not_data_actions: &[],
    },
    Role {
        id: FHIR_DATA_READER,
        name: "FHIR Data Reader",
        description: "Role allows user or principal to read FHIR Data",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.HealthcareApis/services/fhir/resources/read"],
        not_data_actions: &[],
    },
    Role {
        id: FHIR_DATA_WRITER,
        name: "FHIR Data Writer",
        description: "Role allows user or principal to read and write FHIR Data",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.HealthcareApis/services/fhir/resources/*"],
        not_data_actions: &["Microsoft.HealthcareApis/services/fhir/resources/hardDelete/action"],
    },
    Role {
        id: FHIR_DATA_CONTRIBUTOR,
        name: "FHIR Data Contributor",
        description: "Role allows user or principal full access to FHIR Data",
        actions: &[],
        not_actions: &[],
        data_actions: &["Microsoft.HealthcareApis/services/fhir/resources/*"],
        not_data_actions: &[],
    },
    Role {
        id: FHIR_DATA_EXPORTER,
        name: "FHIR Data Exporter",
        description: "Role allows user or principal to read and export FHIR Data",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.HealthcareApis/services/fhir/resources/read",
            "Microsoft.HealthcareApis/services/fhir/resources/export/action",
        ],
        not_data_actions: &[],
    },
    Role {
        id: FHIR_DATA_IMPORTER,
        name: "FHIR Data Importer",
        description: "Role allows user or principal to read and import FHIR Data",
        actions: &[],
        not_actions: &[],
        data_actions: &[
            "Microsoft.HealthcareApis/services/fhir/resources/read",
            "Microsoft.HealthcareApis/services/fhir/resources/import/action",
        ],
        not_data_actions: &[],
    },
];

pub fn role(id: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| r.id.eq_ignore_ascii_case(id))
}

/// Azure's wildcard match of an action pattern: `*` stands for any run of characters.
fn matches(pattern: &str, action: &str) -> bool {
    let p = pattern.to_ascii_lowercase();
    let a = action.to_ascii_lowercase();
    let parts: Vec<&str> = p.split('*').collect();
    if parts.len() == 1 {
        return p == a;
    }
    let mut rest = a.as_str();
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Role {
    pub fn permits(&self, action: &str) -> bool {
        self.actions.iter().any(|p| matches(p, action))
            && !self.not_actions.iter().any(|p| matches(p, action))
    }

    /// Whether the role grants a data action on a FHIR service.
    pub fn permits_data(&self, action: &str) -> bool {
        self.data_actions.iter().any(|p| matches(p, action))
            && !self.not_data_actions.iter().any(|p| matches(p, action))
    }

    /// The role definition as ARM returns it, under `scope_path` (`""` for root).
    pub fn to_json(&self, scope_path: &str) -> Value {
        json!({
            "id": format!("{scope_path}/providers/Microsoft.Authorization/roleDefinitions/{}", self.id),
            "name": self.id,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": {
                "roleName": self.name,
                "type": "BuiltInRole",
                "description": self.description,
                "assignableScopes": ["/"],
                "permissions": [{
                    "actions": self.actions,
                    "notActions": self.not_actions,
                    "dataActions": self.data_actions,
                    "notDataActions": self.not_data_actions
                }]
            }
        })
    }
}

/// The role definition GUID at the end of a `roleDefinitionId`.
pub(crate) fn role_guid(role_definition_id: &str) -> &str {
    role_definition_id.rsplit('/').next().unwrap_or("")
}

/// Whether an assignment at `scope_key` covers `target_key` (equal or an ancestor).
pub(crate) fn covers(scope_key: &str, target_key: &str) -> bool {
    scope_key.is_empty()
        || target_key == scope_key
        || (target_key.starts_with(scope_key) && target_key[scope_key.len()..].starts_with('/'))
}

/// Whether `who` may perform `action` on the scope `target_key` (a lowercase id).
pub fn allowed(state: &State, who: &Principal, action: &str, target_key: &str) -> bool {
    state.of_kind(Kind::RoleAssignment).any(|ra| {
        let props = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        s(&props, "principalId") == who.id
            && covers(&crate::path::key_of_scope(s(&props, "scope")), target_key)
            && role(role_guid(s(&props, "roleDefinitionId"))).is_some_and(|r| r.permits(action))
    })
}

/// Whether `who` may take a backup ([`crate::BACKUP_ACTION`]): the action itself and the
/// power to assign roles, both at the root scope. A backup carries the keys that sign tokens
/// for any principal, so only a caller who could already grant itself any role may have one.
pub fn may_back_up(state: &State, who: &Principal) -> bool {
    allowed(state, who, crate::BACKUP_ACTION, "")
        && allowed(
            state,
            who,
            crate::action::action(Kind::RoleAssignment, crate::action::Verb::Write),
            "",
        )
}

pub(crate) fn denied(who: &Principal, action: &str, scope_path: &str) -> ArmError {
    ArmError::new(
        403,
        "AuthorizationFailed",
        format!(
            "The client '{0}' with object id '{0}' does not have authorization to perform action \
             '{action}' over scope '{scope_path}' or the scope is invalid. If access was recently \
             granted, please refresh your credentials.",
            who.id
        ),
    )
}

/// Checks a permission, or answers 403 `AuthorizationFailed` naming principal, action and scope.
pub(crate) fn check(
    state: &State,
    who: &Principal,
    action: &str,
    target_key: &str,
    scope_path: &str,
) -> Result<(), ArmError> {
    if allowed(state, who, action, target_key) {
        Ok(())
    } else {
        Err(denied(
            who,
            action,
            if scope_path.is_empty() {
                "/"
            } else {
                scope_path
            },
        ))
    }
}

/// Checks a permission on a linked resource (a subnet joined, a service connected to), or
/// answers 403 `LinkedAuthorizationFailed` as Azure does.
pub(crate) fn check_linked(
    state: &State,
    who: &Principal,
    own_action: &str,
    own_scope: &str,
    action: &str,
    linked_key: &str,
    linked_path: &str,
) -> Result<(), ArmError> {
    if allowed(state, who, action, linked_key) {
        return Ok(());
    }
    Err(ArmError::new(
        403,
        "LinkedAuthorizationFailed",
        format!(
            "The client '{0}' with object id '{0}' has permission to perform action \
             '{own_action}' on scope '{own_scope}'; however, it does not have permission to \
             perform action(s) '{action}' on the linked scope(s) '{linked_path}' (respectively) \
             or the linked scope(s) are invalid.",
            who.id
        ),
    ))
}
