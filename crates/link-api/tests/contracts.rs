//! The request bodies of the ARM examples in `shared/contracts` are accepted verbatim (only
//! ids, regions and the private-link group ids adjusted to this deployment), and the answers
//! carry the fields the examples' responses show.

mod common;

use common::*;
use serde_json::{json, Value};

/// Asserts that `ours` has every key `example` has, at the top level and in `properties`.
fn has_fields(ours: &Value, example: &Value, skip: &[&str]) {
    for (k, v) in example.as_object().into_iter().flatten() {
        if skip.contains(&k.as_str()) {
            continue;
        }
        assert!(ours.get(k).is_some(), "missing '{k}' in {ours}");
        if k == "properties" {
            for pk in v.as_object().into_iter().flatten().map(|(pk, _)| pk) {
                if !skip.contains(&pk.as_str()) {
                    assert!(
                        ours["properties"].get(pk).is_some(),
                        "missing properties.{pk} in {ours}"
                    );
                }
            }
        }
    }
}

#[tokio::test]
async fn healthcareapis_examples() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "westus2"})),
    )
    .await;
    // ServiceCreate.json
    let create = json!({
      "location": "westus2", "tags": {}, "kind": "fhir-R4",
      "properties": {
        "accessPolicies": [{"objectId": "c487e7d1-3210-41a3-8ccc-e9372b78da47"}, {"objectId": "5b307da8-43d4-492b-8b66-b0294ade872f"}],
        "cosmosDbConfiguration": {"offerThroughput": 1000, "keyVaultKeyUri": "https://my-vault.vault.azure.net/keys/my-key"},
        "authenticationConfiguration": {"authority": "https://login.microsoftonline.com/abfde7b2-df0f-47e6-aabf-2462b07508dc", "audience": "https://azurehealthcareapis.com", "smartProxyEnabled": true},
        "corsConfiguration": {"origins": ["*"], "headers": ["*"], "methods": ["DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT"], "maxAge": 1440, "allowCredentials": false},
        "exportConfiguration": {"storageAccountName": "existingStorageAccount"},
        "privateEndpointConnections": [],
        "publicNetworkAccess": "Disabled"
      },
      "identity": {"type": "SystemAssigned"}
    });
    let (s, v) = put(&env, "admin", &service_id("rg1", "service1"), create).await;
    assert_eq!(s, 201, "{v}");
    let example = json!({"id": "", "name": "", "location": "", "type": "", "kind": "", "etag": "", "tags": {}, "properties": {"provisioningState": "", "accessPolicies": [], "cosmosDbConfiguration": {}, "authenticationConfiguration": {}, "corsConfiguration": {}, "exportConfiguration": {}, "privateEndpointConnections": [], "publicNetworkAccess": ""}});
    has_fields(&v, &example, &[]);
    assert_eq!(v["properties"]["provisioningState"], "Succeeded");
    assert_eq!(v["properties"]["publicNetworkAccess"], "Disabled");
    assert_eq!(v["type"], "Microsoft.HealthcareApis/services");
    assert_eq!(v["identity"]["type"], "SystemAssigned");
    assert!(v["identity"]["principalId"].is_string());
    // ServiceCreateMinimum.json
    let (s, v) = put(&env, "admin", &service_id("rg1", "service2"), json!({"location": "westus2", "tags": {}, "kind": "fhir-R4", "properties": {"accessPolicies": [{"objectId": "c487e7d1-3210-41a3-8ccc-e9372b78da47"}]}})).await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"properties": {"accessPolicies": [], "cosmosDbConfiguration": {}, "authenticationConfiguration": {}, "corsConfiguration": {}, "privateEndpointConnections": [], "publicNetworkAccess": ""}}),
        &[],
    );
    // ServicePatch.json
    let v = ok(
        &env,
        "admin",
        "PATCH",
        &service_id("rg1", "service1"),
        Some(json!({"tags": {"tag1": "value1", "tag2": "value2"}})),
    )
    .await;
    assert_eq!(v["tags"], json!({"tag1": "value1", "tag2": "value2"}));
    // CheckNameAvailabilityPost.json
    let v = ok(
        &env,
        "admin",
        "POST",
        &format!("/subscriptions/{SUB}/providers/Microsoft.HealthcareApis/checkNameAvailability"),
        Some(json!({"type": "Microsoft.HealthcareApis/services", "name": "service1"})),
    )
    .await;
    assert_eq!(
        v,
        json!({"nameAvailable": false, "reason": "AlreadyExists", "message": "Service name is not available."})
    );
    // PrivateLinkResourceGet.json / PrivateLinkResourcesListByService.json
    let v = ok(
        &env,
        "admin",
        "GET",
        &format!(
            "{}/privateLinkResources/fhir",
            service_id("rg1", "service1")
        ),
        None,
    )
    .await;
    assert_eq!(
        v["properties"],
        json!({"groupId": "fhir", "requiredMembers": ["fhir"], "requiredZoneNames": ["privatelink.azurehealthcareapis.com"]})
    );
    assert_eq!(
        v["id"],
        format!(
            "{}/privateLinkResources/fhir",
            service_id("rg1", "service1")
        )
    );
    let v = ok(
        &env,
        "admin",
        "GET",
        &format!("{}/privateLinkResources", service_id("rg1", "service1")),
        None,
    )
    .await;
    assert_eq!(v["value"][0]["name"], "fhir");
    // ServiceCreatePrivateEndpointConnection.json on a pending connection.
    ok(&env, "admin", "PUT", &vnet_id("rg1", "myVnet"), Some(json!({"location": "westus2", "properties": {"addressSpace": {"addressPrefixes": ["127.70.0.0/16"]}, "subnets": [{"name": "mySubnet", "properties": {"addressPrefix": "127.70.0.0/24"}}]}}))).await;
    let subnet = format!("{}/subnets/mySubnet", vnet_id("rg1", "myVnet"));
    ok(
        &env,
        "admin",
        "PUT",
        &pe_id("rg1", "peexample01"),
        Some(pe_body(
            "westus2",
            &subnet,
            &service_id("rg1", "service1"),
            true,
            Some("please"),
        )),
    )
    .await;
    let list = ok(
        &env,
        "admin",
        "GET",
        &format!(
            "{}/privateEndpointConnections",
            service_id("rg1", "service1")
        ),
        None,
    )
    .await;
    let conn_id = list["value"][0]["id"].as_str().expect("id").to_owned();
    let v = ok(&env, "admin", "PUT", &conn_id, Some(json!({"properties": {"privateLinkServiceConnectionState": {"status": "Approved", "description": "Auto-Approved"}}}))).await;
    has_fields(
        &v,
        &json!({"id": "", "name": "", "type": "", "properties": {"provisioningState": "", "privateEndpoint": {}, "privateLinkServiceConnectionState": {}}}),
        &[],
    );
    assert_eq!(
        v["properties"]["privateLinkServiceConnectionState"],
        json!({"status": "Approved", "description": "Auto-Approved", "actionsRequired": "None"})
    );
    assert_eq!(
        v["type"],
        "Microsoft.HealthcareApis/services/privateEndpointConnections"
    );
    // ServiceDeletePrivateEndpointConnection.json / ServiceDelete.json
    assert_eq!(call(&env, "admin", "DELETE", &conn_id, None).await.0, 200);
    ok(&env, "admin", "DELETE", &pe_id("rg1", "peexample01"), None).await;
    assert_eq!(
        call(
            &env,
            "admin",
            "DELETE",
            &service_id("rg1", "service1"),
            None
        )
        .await
        .0,
        200
    );
}

#[tokio::test]
async fn network_examples() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    // VirtualNetworkCreateSubnet.json
    let (s, v) = put(&env, "admin", &vnet_id("rg1", "test-vnet"), json!({"properties": {"addressSpace": {"addressPrefixes": ["10.0.0.0/16"]}, "subnets": [{"name": "test-1", "properties": {"addressPrefix": "10.0.0.0/24"}}]}, "location": "eastus"})).await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"name": "", "id": "", "type": "", "location": "", "properties": {"provisioningState": "", "addressSpace": {}, "subnets": [], "virtualNetworkPeerings": []}}),
        &[],
    );
    assert_eq!(
        v["properties"]["subnets"][0]["id"],
        format!("{}/subnets/test-1", vnet_id("rg1", "test-vnet"))
    );
    assert_eq!(
        v["properties"]["subnets"][0]["properties"]["provisioningState"],
        "Succeeded"
    );
    // SubnetCreate.json (a /24 inside the network rather than the whole /16: another subnet is there).
    let (s, v) = put(
        &env,
        "admin",
        &format!("{}/subnets/subnet1", vnet_id("rg1", "test-vnet")),
        json!({"properties": {"addressPrefix": "10.0.1.0/24"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"id": "", "name": "", "properties": {"addressPrefix": "", "provisioningState": ""}}),
        &[],
    );
    // VirtualNetworkPeeringCreate.json
    ok(&env, "admin", "PUT", &vnet_id("rg1", "vnet2"), Some(json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["12.0.0.0/8"]}}}))).await;
    let (s, v) = put(&env, "admin", &format!("{}/virtualNetworkPeerings/peer", vnet_id("rg1", "test-vnet")), json!({"properties": {"allowVirtualNetworkAccess": true, "allowForwardedTraffic": true, "allowGatewayTransit": false, "useRemoteGateways": false, "remoteVirtualNetwork": {"id": vnet_id("rg1", "vnet2")}}})).await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"id": "", "name": "", "properties": {"allowVirtualNetworkAccess": true, "allowForwardedTraffic": true, "allowGatewayTransit": false, "useRemoteGateways": false, "remoteVirtualNetwork": {}, "remoteAddressSpace": {}, "remoteVirtualNetworkAddressSpace": {}, "peeringState": "", "peeringSyncLevel": "", "provisioningState": ""}}),
        &[],
    );
    assert_eq!(
        v["properties"]["remoteAddressSpace"]["addressPrefixes"][0],
        "12.0.0.0/8"
    );
    // NetworkSecurityGroupCreateWithRule.json
    let (s, v) = put(&env, "admin", &format!("{}/providers/Microsoft.Network/networkSecurityGroups/testnsg", rg("rg1")), json!({"properties": {"securityRules": [{"name": "rule1", "properties": {"protocol": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*", "access": "Allow", "destinationPortRange": "80", "sourcePortRange": "*", "priority": 130, "direction": "Inbound"}}]}, "location": "eastus"})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["properties"]["securityRules"][0]["properties"]["priority"],
        130
    );
    assert_eq!(
        v["properties"]["securityRules"][0]["id"],
        format!(
            "{}/providers/Microsoft.Network/networkSecurityGroups/testnsg/securityRules/rule1",
            rg("rg1")
        )
    );
    let names: Vec<&str> = v["properties"]["defaultSecurityRules"]
        .as_array()
        .expect("defaults")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "AllowVnetInBound",
            "AllowAzureLoadBalancerInBound",
            "DenyAllInBound",
            "AllowVnetOutBound",
            "AllowInternetOutBound",
            "DenyAllOutBound"
        ]
    );
}

#[tokio::test]
async fn private_endpoint_and_dns_examples() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus2euap"})),
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &service_id("rg1", "testpls"),
        Some(json!({"location": "westus2", "kind": "fhir-R4"})),
    )
    .await;
    ok(&env, "admin", "PUT", &vnet_id("rg1", "myVnet"), Some(json!({"location": "eastus2euap", "properties": {"addressSpace": {"addressPrefixes": ["192.168.0.0/16"]}, "subnets": [{"name": "mySubnet", "properties": {"addressPrefix": "192.168.0.0/24"}}]}}))).await;
    let subnet = format!("{}/subnets/mySubnet", vnet_id("rg1", "myVnet"));
    let svc = service_id("rg1", "testpls");
    // PrivateEndpointCreate.json
    let body = json!({
      "location": "eastus2euap",
      "properties": {
        "privateLinkServiceConnections": [{"properties": {"privateLinkServiceId": svc, "groupIds": ["fhir"], "requestMessage": "Please approve my connection."}}],
        "subnet": {"id": subnet},
        "ipConfigurations": [{"name": "pestaticconfig", "properties": {"groupId": "fhir", "memberName": "fhir", "privateIPAddress": "192.168.0.6"}}],
        "customNetworkInterfaceName": "testPeNic"
      }
    });
    let (s, v) = put(&env, "admin", &pe_id("rg1", "testPe"), body).await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"name": "", "id": "", "location": "", "properties": {"provisioningState": "", "privateLinkServiceConnections": [], "manualPrivateLinkServiceConnections": [], "subnet": {}, "networkInterfaces": [], "customDnsConfigs": [], "applicationSecurityGroups": [], "ipConfigurations": [], "customNetworkInterfaceName": ""}}),
        &[],
    );
    assert_eq!(
        v["properties"]["privateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    assert_eq!(
        v["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "192.168.0.6"
    );
    assert!(v["properties"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap_or("")
        .ends_with("/networkInterfaces/testPeNic"));
    // PrivateEndpointCreateForManualApproval.json
    let body = json!({
      "location": "eastus2euap",
      "properties": {
        "manualPrivateLinkServiceConnections": [{"properties": {"privateLinkServiceId": svc, "groupIds": ["fhir"], "requestMessage": "Please manually approve my connection."}}],
        "subnet": {"id": subnet},
        "ipConfigurations": [{"name": "pestaticconfig", "properties": {"groupId": "fhir", "memberName": "fhir", "privateIPAddress": "192.168.0.5"}}],
        "customNetworkInterfaceName": "testPeNic2"
      }
    });
    let (s, v) = put(&env, "admin", &pe_id("rg1", "testPe2"), body).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"],
        json!({"status": "Pending", "description": "Awaiting approval", "actionsRequired": "None"})
    );
    // PrivateZonePut.json
    let zone = format!(
        "{}/providers/Microsoft.Network/privateDnsZones/privatezone1.com",
        rg("rg1")
    );
    let (s, v) = put(
        &env,
        "admin",
        &zone,
        json!({"location": "Global", "tags": {"key1": "value1"}}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"id": "", "name": "", "type": "", "location": "", "etag": "", "properties": {"maxNumberOfRecordSets": 0, "numberOfRecordSets": 0, "maxNumberOfVirtualNetworkLinks": 0, "numberOfVirtualNetworkLinks": 0, "maxNumberOfVirtualNetworkLinksWithRegistration": 0, "numberOfVirtualNetworkLinksWithRegistration": 0, "provisioningState": ""}, "tags": {}}),
        &[],
    );
    assert_eq!(v["location"], "global");
    // RecordSetAPut.json
    let (s, v) = put(&env, "admin", &format!("{zone}/A/recordA"), json!({"properties": {"metadata": {"key1": "value1"}, "ttl": 3600, "aRecords": [{"ipv4Address": "1.2.3.4"}]}})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "recorda");
    assert_eq!(v["properties"]["fqdn"], "recorda.privatezone1.com.");
    assert_eq!(v["properties"]["isAutoRegistered"], false);
    assert_eq!(v["type"], "Microsoft.Network/privateDnsZones/A");
    // VirtualNetworkLinkPut.json
    let (s, v) = put(&env, "admin", &format!("{zone}/virtualNetworkLinks/virtualNetworkLink1"), json!({"location": "Global", "tags": {"key1": "value1"}, "properties": {"virtualNetwork": {"id": vnet_id("rg1", "myVnet")}, "registrationEnabled": false}})).await;
    assert_eq!(s, 201, "{v}");
    has_fields(
        &v,
        &json!({"id": "", "name": "", "type": "", "location": "", "etag": "", "properties": {"virtualNetwork": {}, "registrationEnabled": false, "virtualNetworkLinkState": "", "provisioningState": ""}, "tags": {}}),
        &[],
    );
    // PrivateEndpointDnsZoneGroupCreate.json
    let (s, v) = put(&env, "admin", &format!("{}/privateDnsZoneGroups/testPdnsgroup", pe_id("rg1", "testPe")), json!({"properties": {"privateDnsZoneConfigs": [{"properties": {"privateDnsZoneId": zone}}]}})).await;
    assert_eq!(s, 201, "{v}");
    let rs = &v["properties"]["privateDnsZoneConfigs"][0]["properties"]["recordSets"][0];
    assert_eq!(rs["recordSetName"], "testpls");
    assert_eq!(rs["fqdn"], "testpls.privatezone1.com");
    assert_eq!(rs["ipAddresses"][0], "192.168.0.6");
    // PrivateEndpointDelete.json
    assert_eq!(
        call(&env, "admin", "DELETE", &pe_id("rg1", "testPe"), None)
            .await
            .0,
        200
    );
}
