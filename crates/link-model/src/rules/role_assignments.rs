//! Role assignments (`Microsoft.Authorization/roleAssignments`) at any scope: a built-in role,
//! a principal, no duplicate; and the root Owner named at start.

use serde_json::{json, Map, Value};

use super::{props_of, store};
use crate::authz;
use crate::error::{bad_request, ArmError};
use crate::kind::Kind;
use crate::path::{key_of_scope, Addr};
use crate::state::{s, Resource, State};
use crate::txn::{guid_from, Txn};

pub(super) fn put_role_assignment(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let props = props_of(input);
    let pv = Value::Object(props.clone());
    let role_id = s(&pv, "roleDefinitionId");
    let Some(role) = authz::role(authz::role_guid(role_id)) else {
        return Err(bad_request(
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                authz::role_guid(role_id)
            ),
        ));
    };
    let principal = s(&pv, "principalId");
    if principal.is_empty() {
        return Err(bad_request(
            "InvalidPrincipalId",
            "properties.principalId is required.",
        ));
    }
    let scope_id = if addr.parent.key.is_empty() {
        "/".to_owned()
    } else {
        tx.get(&addr.parent.key)
            .map(|r| r.id.clone())
            .unwrap_or_else(|| addr.parent.path.clone())
    };
    if let Some(e) = existing {
        let ep = e.body.get("properties").cloned().unwrap_or(Value::Null);
        if authz::role_guid(s(&ep, "roleDefinitionId")) != role.id
            || s(&ep, "principalId") != principal
        {
            return Err(bad_request(
                "RoleAssignmentUpdateNotPermitted",
                "Tenant ID, application ID, principal ID, and scope are not allowed to be updated.",
            ));
        }
    }
    let scope_key = key_of_scope(&scope_id);
    if tx.st.of_kind(Kind::RoleAssignment).any(|ra| {
        let p = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        ra.key() != addr.key
            && s(&p, "principalId") == principal
            && authz::role_guid(s(&p, "roleDefinitionId")) == role.id
            && key_of_scope(s(&p, "scope")) == scope_key
    }) {
        return Err(ArmError::new(
            409,
            "RoleAssignmentExists",
            "The role assignment already exists.",
        ));
    }
    let def_scope = addr
        .parent
        .sub
        .as_ref()
        .map(|s| format!("/subscriptions/{s}"))
        .unwrap_or_default();
    let now = tx.now_string();
    let created = existing
        .and_then(|e| e.prop("createdOn"))
        .cloned()
        .unwrap_or_else(|| json!(now));
    let mut out = Map::new();
    out.insert(
        "roleDefinitionId".into(),
        json!(format!(
            "{def_scope}/providers/Microsoft.Authorization/roleDefinitions/{}",
            role.id
        )),
    );
    out.insert("principalId".into(), json!(principal));
    out.insert(
        "principalType".into(),
        json!(match s(&pv, "principalType") {
            "" => "User",
            t => t,
        }),
    );
    out.insert("scope".into(), json!(scope_id));
    for k in ["description", "condition", "conditionVersion"] {
        if let Some(v) = props.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    out.insert("createdOn".into(), created);
    out.insert("updatedOn".into(), json!(now));
    out.insert("createdBy".into(), json!(tx.who.id));
    out.insert("updatedBy".into(), json!(tx.who.id));
    store(tx, addr, input, existing, out, &[], None).map(drop)
}

/// Makes `owner` Owner at the root scope, if no assignment says so yet (run at start).
pub fn ensure_owner(
    state: &State,
    owner: &str,
    who: &crate::Principal,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(State, crate::Changes)> {
    let has = state.of_kind(Kind::RoleAssignment).any(|ra| {
        let p = ra.body.get("properties").cloned().unwrap_or(Value::Null);
        s(&p, "principalId") == owner
            && authz::role_guid(s(&p, "roleDefinitionId")) == authz::OWNER
            && key_of_scope(s(&p, "scope")).is_empty()
    });
    if has {
        return None;
    }
    let name = guid_from(&format!("fhirlink-root-owner|{owner}"));
    let addr = Addr {
        kind: Kind::RoleAssignment,
        key: format!("/providers/microsoft.authorization/roleassignments/{name}"),
        path: format!("/providers/Microsoft.Authorization/roleAssignments/{name}"),
        name,
        parent: crate::path::Scope {
            key: String::new(),
            path: String::new(),
            sub: None,
            rg: None,
            kind: None,
        },
    };
    let mut tx = Txn::new(state, who, now);
    tx.remove(&addr.key);
    let body = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{}", authz::OWNER), "principalId": owner, "principalType": "User", "description": "The owner named at start (--owner)."}});
    put_role_assignment(&mut tx, &addr, &body, None).ok()?;
    Some(tx.finish())
}
