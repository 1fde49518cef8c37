//! Hostile or odd requests never get a server error: odd paths, encodings, methods, bodies
//! and headers all answer with a 4xx ARM error (or a success).

mod common;

use common::*;
use serde_json::json;

#[tokio::test]
async fn odd_requests_never_get_a_server_error() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirodd",
        "vnet1",
        "127.90.0.0/16",
        "127.90.1.0/24",
        "eastus",
    )
    .await;
    let svc = service_id("rg1", "fhirodd");
    let paths = [
        "/".to_owned(),
        "/subscriptions/".to_owned(),
        format!("/subscriptions/{SUB}/resourceGroups/"),
        format!("/subscriptions/{SUB}/providers"),
        format!("/subscriptions/{SUB}/providers/Microsoft.Network"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks/vnet1/providers"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/privateDnsZones/z.com/ALL/x"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/privateDnsZones/z.com/AAAA/x"),
        format!("/subscriptions/{SUB}/resourceGroups/%E2%82%AC%C3%A9/providers/Microsoft.HealthcareApis/services/x"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.HealthcareApis/services/%FF%FE"),
        format!("{svc}/privateEndpointConnections/..%2F..%2F"),
        format!("{svc}/providers/Microsoft.Insights/diagnosticSettings/a/b/c"),
        format!("{svc}/providers/Microsoft.Authorization/roleAssignments/{}", "x".repeat(5000)),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/moveResources/extra"),
        format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm/extensions/e"),
        "/providers/Microsoft.Authorization/roleAssignments".to_owned(),
    ];
    let bodies = [
        None,
        Some("null"),
        Some("{}"),
        Some("{\"location\": 5, \"properties\": []}"),
        Some("{\"location\": \"eastus\", \"properties\": {\"addressSpace\": {\"addressPrefixes\": [1, null, \"999.1.1.1/8\"]}, \"subnets\": \"x\"}}"),
        Some("{\"resources\": [\"/subscriptions\"], \"targetResourceGroup\": 7}"),
        Some("{\"properties\": {\"privateLinkServiceConnectionState\": {\"status\": 1}}}"),
        Some("{\"tags\": \"x\"}"),
        Some("{\"kind\": \"fhir-R4\", \"location\": \"eastus\", \"properties\": {\"publicNetworkAccess\": 3}}"),
    ];
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    for path in &paths {
        for method in ["GET", "PUT", "PATCH", "DELETE", "POST", "OPTIONS", "HEAD"] {
            for body in bodies.iter().copied().chain([Some(deep.as_str())]) {
                let uri = with_version(path, "2024-03-31");
                let (s, v, _) = raw(
                    &env,
                    Some("admin"),
                    method,
                    &uri,
                    body,
                    &[("if-match", "W/\"bogus\", ,*x")],
                )
                .await;
                assert!(s < 500, "{method} {path} {body:?} answered {s}: {v}");
            }
        }
    }
    // Every resource kind with hostile bodies.
    let targets = [
        svc.clone(),
        format!("{svc}/privateEndpointConnections/c1"),
        vnet_id("rg1", "vnet1"),
        format!("{}/subnets/default", vnet_id("rg1", "vnet1")),
        format!("{}/virtualNetworkPeerings/p", vnet_id("rg1", "vnet1")),
        format!("{}/providers/Microsoft.Network/networkSecurityGroups/n", rg("rg1")),
        format!("{}/providers/Microsoft.Network/networkSecurityGroups/n/securityRules/r", rg("rg1")),
        format!("{}/providers/Microsoft.Network/networkInterfaces/nic", rg("rg1")),
        pe_id("rg1", "pe"),
        format!("{}/privateDnsZoneGroups/g", pe_id("rg1", "pe")),
        zone_id("rg1"),
        format!("{}/A/rec", zone_id("rg1")),
        format!("{}/virtualNetworkLinks/l", zone_id("rg1")),
        format!("{}/providers/Microsoft.Compute/virtualMachines/vm", rg("rg1")),
        format!("{svc}/providers/Microsoft.Insights/diagnosticSettings/d"),
        format!("{}/providers/Microsoft.Authorization/roleAssignments/11111111-2222-4333-8444-555555555555", rg("rg1")),
    ];
    let hostile = [
        json!({}),
        json!({"location": "eastus", "properties": null}),
        json!({"location": "eastus", "properties": {"ipConfigurations": [{"properties": {"subnet": {"id": 5}}}], "subnet": {"id": "/x"}, "privateLinkServiceConnections": [{}], "securityRules": [{"name": "r", "properties": {"priority": "high"}}]}}),
        json!({"location": "eastus", "properties": {"networkProfile": {"networkInterfaces": [{"id": null}]}, "virtualNetwork": {"id": ""}, "privateDnsZoneConfigs": [{"properties": {}}], "aRecords": [{"ipv4Address": 1}], "ttl": -5}}),
        json!({"location": "eastus", "properties": {"roleDefinitionId": 5, "principalId": [], "remoteVirtualNetwork": {"id": vnet_id("rg1", "vnet1")}, "addressPrefix": "127.90.1.0/24"}}),
    ];
    for t in &targets {
        for b in &hostile {
            let (s, v) = put(&env, "admin", t, b.clone()).await;
            assert!(s < 500, "PUT {t} {b} answered {s}: {v}");
            let (s, v) = call(&env, "admin", "PATCH", t, Some(b.clone())).await;
            assert!(s < 500, "PATCH {t} {b} answered {s}: {v}");
        }
        let (s, v) = get(&env, "admin", t).await;
        assert!(s < 500, "GET {t} answered {s}: {v}");
    }
}
