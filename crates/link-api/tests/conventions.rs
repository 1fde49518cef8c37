//! ARM conventions beyond the seed's flows: role assignments and definitions, diagnostic
//! settings on a service, resource group lists and HEAD, subscriptions, and two control
//! planes on one store (another process's write is noticed, not overwritten).

mod common;

use std::sync::Arc;

use common::*;
use link_api::{router, ControlPlane};
use link_model::{CONTRIBUTOR, OWNER, READER};
use serde_json::json;

#[tokio::test]
async fn role_assignments_at_every_scope_and_role_definitions() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let ra = format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/3fa85f64-5717-4562-b3fc-2c963f66afa6");
    let body = json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{READER}"), "principalId": "gina", "principalType": "User"}});
    let (s, v) = put(&env, "admin", &ra, body.clone()).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["properties"]["scope"], format!("/subscriptions/{SUB}"));
    assert_eq!(v["type"], "Microsoft.Authorization/roleAssignments");
    // Idempotent PUT, duplicate under another name, change refused.
    assert_eq!(put(&env, "admin", &ra, body.clone()).await.0, 200);
    let dup = format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments/4fa85f64-5717-4562-b3fc-2c963f66afa6");
    expect_error(
        put(&env, "admin", &dup, body).await,
        409,
        "RoleAssignmentExists",
    );
    let other = json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"), "principalId": "gina"}});
    expect_error(
        put(&env, "admin", &ra, other).await,
        400,
        "RoleAssignmentUpdateNotPermitted",
    );
    let unknown = json!({"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/00000000-0000-0000-0000-000000000000", "principalId": "gina"}});
    expect_error(
        put(&env, "admin", &dup, unknown).await,
        400,
        "RoleDefinitionDoesNotExist",
    );
    // The reader reads at the subscription and below, and cannot write.
    ok(&env, "gina", "GET", &rg("rg1"), None).await;
    expect_error(
        put(&env, "gina", &rg("rg2"), json!({"location": "eastus"})).await,
        403,
        "AuthorizationFailed",
    );
    // Lists with filters.
    let list = ok(&env, "admin", "GET", &format!("{}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId%20eq%20'gina'", rg("rg1")), None).await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
    let all = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleAssignments"),
        None,
    )
    .await;
    // The root owner and gina's.
    assert_eq!(all["value"].as_array().map(Vec::len), Some(2));
    // Role definitions, for SDKs that look them up by name.
    let defs = ok(&env, "gina", "GET", &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions?$filter=roleName%20eq%20'Contributor'"), None).await;
    assert_eq!(defs["value"][0]["name"], CONTRIBUTOR);
    let def = ok(
        &env,
        "gina",
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{OWNER}"),
        None,
    )
    .await;
    assert_eq!(def["properties"]["roleName"], "Owner");
    // Delete answers with the assignment; gina loses access.
    let (s, v) = call(&env, "admin", "DELETE", &ra, None).await;
    assert_eq!(s, 200);
    assert_eq!(v["properties"]["principalId"], "gina");
    expect_error(
        get(&env, "gina", &rg("rg1")).await,
        403,
        "AuthorizationFailed",
    );
}

#[tokio::test]
async fn diagnostic_settings_on_a_service() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let svc = service_id("rg1", "fhirdiag");
    ok(
        &env,
        "admin",
        "PUT",
        &svc,
        Some(json!({"location": "eastus", "kind": "fhir-R4"})),
    )
    .await;
    let ds = format!("{svc}/providers/Microsoft.Insights/diagnosticSettings/export");
    let body = json!({"properties": {
        "storageAccountId": format!("{}/providers/Microsoft.Storage/storageAccounts/auditlogs", rg("rg1")),
        "logs": [{"category": "AuditLogs", "enabled": true}],
        "metrics": [{"category": "AllMetrics", "enabled": true}]
    }});
    let (s, v) = put(&env, "admin", &ds, body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["type"], "Microsoft.Insights/diagnosticSettings");
    let list = ok(
        &env,
        "admin",
        "GET",
        &format!("{svc}/providers/Microsoft.Insights/diagnosticSettings"),
        None,
    )
    .await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
    let bad = json!({"properties": {"storageAccountId": "x", "logs": [{"category": "Nonsense", "enabled": true}]}});
    expect_error(put(&env, "admin", &ds, bad).await, 400, "BadRequest");
    expect_error(
        put(&env, "admin", &ds, json!({"properties": {"logs": []}})).await,
        400,
        "BadRequest",
    );
    // The setting is part of the service: it goes with it.
    ok(&env, "admin", "DELETE", &svc, None).await;
    assert!(env.cp.snapshot().get(&ds).is_none());
}

#[tokio::test]
async fn resource_groups_list_head_patch_delete() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "East US", "tags": {"a": "1"}})),
    )
    .await;
    let v = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups/RG1"),
        None,
    )
    .await;
    assert_eq!(v["id"], rg("rg1"));
    assert_eq!(v["location"], "eastus");
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    let list = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/resourcegroups"),
        None,
    )
    .await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1));
    let (s, _, _) = raw(
        &env,
        Some("admin"),
        "HEAD",
        &with_version(&rg("rg1"), RES),
        None,
        &[],
    )
    .await;
    assert_eq!(s, 204);
    let (s, _, _) = raw(
        &env,
        Some("admin"),
        "HEAD",
        &with_version(&rg("nope"), RES),
        None,
        &[],
    )
    .await;
    assert_eq!(s, 404);
    let v = ok(
        &env,
        "admin",
        "PATCH",
        &rg("rg1"),
        Some(json!({"tags": {"b": "2"}})),
    )
    .await;
    assert_eq!(v["tags"], json!({"b": "2"}));
    expect_error(
        put(&env, "admin", &rg("rg1"), json!({"location": "westus"})).await,
        400,
        "InvalidResourceGroupLocation",
    );
    let subs = ok(&env, "admin", "GET", "/subscriptions", None).await;
    assert_eq!(subs["value"][0]["subscriptionId"], SUB);
    let none = ok(&env, "stranger", "GET", "/subscriptions", None).await;
    assert_eq!(none["value"].as_array().map(Vec::len), Some(0));
    // Deleting the group deletes what is in it, FHIR data included.
    ok(
        &env,
        "admin",
        "PUT",
        &service_id("rg1", "fhirgone"),
        Some(json!({"location": "eastus", "kind": "fhir-R4"})),
    )
    .await;
    assert!(env.store.service_exists("fhirgone").await.expect("store"));
    ok(&env, "admin", "DELETE", &rg("rg1"), None).await;
    assert!(!env.store.service_exists("fhirgone").await.expect("store"));
    expect_error(
        get(&env, "admin", &service_id("rg1", "fhirgone")).await,
        404,
        "ResourceGroupNotFound",
    );
}

#[tokio::test]
async fn two_control_planes_on_one_store_notice_each_other() {
    let env = env().await;
    let other = Arc::new(
        ControlPlane::open(env.store.clone(), "admin")
            .await
            .expect("second"),
    );
    let other_app = router(other.clone());
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus", "tags": {"from": "a"}})),
    )
    .await;
    // The second process has not seen rg1; its write meets a conflict, reloads and decides again.
    let env2 = Env {
        dir: tempfile::tempdir().expect("tmp"),
        store: env.store.clone(),
        cp: other,
        app: other_app,
    };
    let (s, v) = put(
        &env2,
        "admin",
        &rg("rg1"),
        json!({"location": "eastus", "tags": {"from": "b"}}),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    env.cp.reload().await.expect("reload");
    let v = ok(&env, "admin", "GET", &rg("rg1"), None).await;
    assert_eq!(v["tags"], json!({"from": "b"}));
}
