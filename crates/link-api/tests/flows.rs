//! The seed's flows end to end through the router: auto and manual approval, approve,
//! reject and remove, public access switched off, DNS zone groups and links, peering, and
//! restart persistence.

mod common;

use common::*;
use link_model::{CONTRIBUTOR, NETWORK_CONTRIBUTOR, READER};
use serde_json::json;

#[tokio::test]
async fn auto_approval_flow_allocates_dot_four_and_disables_public_access() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc1",
        "vnet1",
        "127.10.0.0/16",
        "127.10.1.0/24",
        "eastus",
    )
    .await;
    let svc = service_id("rg1", "fhirsvc1");
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    let (s, pe) = put(
        &env,
        "admin",
        &pe_id("rg1", "pe1"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    assert_eq!(s, 201, "{pe}");
    let conn = &pe["properties"]["privateLinkServiceConnections"][0]["properties"];
    assert_eq!(
        conn["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    assert_eq!(
        pe["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "127.10.1.4"
    );
    assert_eq!(
        pe["properties"]["customDnsConfigs"][0]["fqdn"],
        "fhirsvc1.azurehealthcareapis.com"
    );
    assert_eq!(pe["properties"]["provisioningState"], "Succeeded");
    // The service side.
    let service = ok(&env, "admin", "GET", &svc, None).await;
    assert_eq!(service["properties"]["publicNetworkAccess"], "Disabled");
    let conns = ok(
        &env,
        "admin",
        "GET",
        &format!("{svc}/privateEndpointConnections"),
        None,
    )
    .await;
    assert_eq!(
        conns["value"][0]["properties"]["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    assert_eq!(
        conns["value"][0]["properties"]["privateLinkServiceConnectionState"]["description"],
        "Auto-Approved"
    );
    assert_eq!(
        conns["value"][0]["properties"]["privateEndpoint"]["id"],
        pe_id("rg1", "pe1")
    );
    // The endpoint's network interface is visible and carries the address.
    let nic_id = pe["properties"]["networkInterfaces"][0]["id"]
        .as_str()
        .expect("nic id")
        .to_owned();
    let nic = ok(&env, "admin", "GET", &nic_id, None).await;
    assert_eq!(
        nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "127.10.1.4"
    );
    // A second endpoint gets the next address.
    let (_, pe2) = put(
        &env,
        "admin",
        &pe_id("rg1", "pe2"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    assert_eq!(
        pe2["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "127.10.1.5"
    );
    // The snapshot seen by subscribers already holds the endpoint.
    assert!(env
        .cp
        .subscribe()
        .borrow()
        .get(&pe_id("rg1", "pe2"))
        .is_some());
}

#[tokio::test]
async fn manual_approval_flow_pending_then_approved_rejected_and_removed() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc2",
        "vnet1",
        "127.11.0.0/16",
        "127.11.1.0/24",
        "eastus",
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("netrg"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    // "bob" may manage networks in his group but has no rights on the service.
    assign(&env, &rg("rg1"), "bob", NETWORK_CONTRIBUTOR).await;
    let svc = service_id("rg1", "fhirsvc2");
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    // Unauthorised auto approval is refused.
    let refused = put(
        &env,
        "bob",
        &pe_id("rg1", "pe-auto"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    let e = expect_error(refused, 403, "LinkedAuthorizationFailed");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("privateEndpointConnectionsApproval/action"));
    // Manual approval with a request message.
    let (s, pe) = put(
        &env,
        "bob",
        &pe_id("rg1", "pe-manual"),
        pe_body("eastus", &subnet, &svc, true, Some("Please approve")),
    )
    .await;
    assert_eq!(s, 201, "{pe}");
    let c = &pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"];
    assert_eq!(c["privateLinkServiceConnectionState"]["status"], "Pending");
    assert_eq!(
        c["privateLinkServiceConnectionState"]["description"],
        "Awaiting approval"
    );
    assert_eq!(c["requestMessage"], "Please approve");
    let conns = ok(
        &env,
        "admin",
        "GET",
        &format!("{svc}/privateEndpointConnections"),
        None,
    )
    .await;
    let conn = &conns["value"][0];
    assert_eq!(
        conn["properties"]["privateLinkServiceConnectionState"]["status"],
        "Pending"
    );
    assert_eq!(
        conn["properties"]["privateLinkServiceConnectionState"]["description"],
        "Please approve"
    );
    let conn_id = conn["id"].as_str().expect("id").to_owned();
    // Public access stays on while the connection is pending.
    let service = ok(&env, "admin", "GET", &svc, None).await;
    assert_eq!(service["properties"]["publicNetworkAccess"], "Enabled");
    // bob cannot approve his own request.
    let body = json!({"properties": {"privateLinkServiceConnectionState": {"status": "Approved", "description": "ok"}}});
    expect_error(
        put(&env, "bob", &conn_id, body.clone()).await,
        403,
        "AuthorizationFailed",
    );
    // The owner approves: the endpoint follows and public access goes off.
    let (s, approved) = put(&env, "admin", &conn_id, body).await;
    assert_eq!(s, 200, "{approved}");
    assert_eq!(
        approved["properties"]["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    let pe = ok(&env, "bob", "GET", &pe_id("rg1", "pe-manual"), None).await;
    assert_eq!(
        pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    let service = ok(&env, "admin", "GET", &svc, None).await;
    assert_eq!(service["properties"]["publicNetworkAccess"], "Disabled");
    // Remove: the endpoint is Disconnected.
    let (s, _) = call(&env, "admin", "DELETE", &conn_id, None).await;
    assert_eq!(s, 200);
    let pe = ok(&env, "bob", "GET", &pe_id("rg1", "pe-manual"), None).await;
    assert_eq!(
        pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Disconnected"
    );
    // A second manual request, rejected.
    let (_, _) = put(
        &env,
        "bob",
        &pe_id("rg1", "pe-manual2"),
        pe_body("eastus", &subnet, &svc, true, Some("again")),
    )
    .await;
    let conns = ok(
        &env,
        "admin",
        "GET",
        &format!("{svc}/privateEndpointConnections"),
        None,
    )
    .await;
    let id2 = conns["value"][0]["id"].as_str().expect("id").to_owned();
    let rejected = ok(&env, "admin", "PUT", &id2, Some(json!({"properties": {"privateLinkServiceConnectionState": {"status": "Rejected", "description": "no"}}}))).await;
    assert_eq!(
        rejected["properties"]["privateLinkServiceConnectionState"]["status"],
        "Rejected"
    );
    let pe = ok(&env, "bob", "GET", &pe_id("rg1", "pe-manual2"), None).await;
    assert_eq!(
        pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Rejected"
    );
    // A contributor on the service may auto-approve.
    assign(&env, &svc, "carol", CONTRIBUTOR).await;
    assign(&env, &rg("rg1"), "carol", NETWORK_CONTRIBUTOR).await;
    let (s, pe) = put(
        &env,
        "carol",
        &pe_id("rg1", "pe-carol"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    assert_eq!(s, 201, "{pe}");
    // A reader can look but not touch.
    assign(&env, &rg("rg1"), "dave", READER).await;
    ok(&env, "dave", "GET", &svc, None).await;
    expect_error(
        call(&env, "dave", "DELETE", &svc, None).await,
        403,
        "AuthorizationFailed",
    );
}

#[tokio::test]
async fn zone_group_and_links_keep_a_records() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc3",
        "vnet1",
        "127.12.0.0/16",
        "127.12.1.0/24",
        "eastus",
    )
    .await;
    let svc = service_id("rg1", "fhirsvc3");
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    ok(
        &env,
        "admin",
        "PUT",
        &pe_id("rg1", "pe1"),
        Some(pe_body("eastus", &subnet, &svc, false, None)),
    )
    .await;
    let zone = zone_id("rg1");
    ok(
        &env,
        "admin",
        "PUT",
        &zone,
        Some(json!({"location": "Global"})),
    )
    .await;
    let zg = ok(
        &env,
        "admin",
        "PUT",
        &format!("{}/privateDnsZoneGroups/default", pe_id("rg1", "pe1")),
        Some(json!({"properties": {"privateDnsZoneConfigs": [{"name": "cfg", "properties": {"privateDnsZoneId": zone}}]}})),
    )
    .await;
    assert_eq!(
        zg["properties"]["privateDnsZoneConfigs"][0]["properties"]["recordSets"][0]["ipAddresses"]
            [0],
        "127.12.1.4"
    );
    let rec = ok(&env, "admin", "GET", &format!("{zone}/A/fhirsvc3"), None).await;
    assert_eq!(
        rec["properties"]["aRecords"][0]["ipv4Address"],
        "127.12.1.4"
    );
    assert_eq!(
        rec["properties"]["fqdn"],
        "fhirsvc3.privatelink.azurehealthcareapis.com."
    );
    // A second network with a VM, linked with auto-registration.
    ok(&env, "admin", "PUT", &vnet_id("rg1", "vnet2"), Some(json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["127.20.0.0/16"]}, "subnets": [{"name": "vms", "properties": {"addressPrefix": "127.20.1.0/24"}}]}}))).await;
    let nic = format!(
        "{}/providers/Microsoft.Network/networkInterfaces/vm1-nic",
        rg("rg1")
    );
    let nic_body = ok(&env, "admin", "PUT", &nic, Some(json!({"location": "westus", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": format!("{}/subnets/vms", vnet_id("rg1", "vnet2"))}}}]}}))).await;
    assert_eq!(
        nic_body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "127.20.1.4"
    );
    let vm = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm1",
        rg("rg1")
    );
    ok(&env, "admin", "PUT", &vm, Some(json!({"location": "westus", "properties": {"networkProfile": {"networkInterfaces": [{"id": nic}]}}}))).await;
    let link = format!("{zone}/virtualNetworkLinks/link2");
    let l = ok(&env, "admin", "PUT", &link, Some(json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet_id("rg1", "vnet2")}, "registrationEnabled": true}}))).await;
    assert_eq!(l["properties"]["virtualNetworkLinkState"], "Completed");
    let all = ok(&env, "admin", "GET", &format!("{zone}/aLL"), None).await;
    let names: Vec<&str> = all["value"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["fhirsvc3", "vm1"]);
    let vmrec = ok(&env, "admin", "GET", &format!("{zone}/A/vm1"), None).await;
    assert_eq!(vmrec["properties"]["isAutoRegistered"], true);
    assert_eq!(
        vmrec["properties"]["aRecords"][0]["ipv4Address"],
        "127.20.1.4"
    );
    // The VM goes: its record goes.
    ok(&env, "admin", "DELETE", &vm, None).await;
    expect_error(
        get(&env, "admin", &format!("{zone}/A/vm1")).await,
        404,
        "ResourceNotFound",
    );
    // Back again, then the link goes: the record goes.
    ok(&env, "admin", "PUT", &vm, Some(json!({"location": "westus", "properties": {"networkProfile": {"networkInterfaces": [{"id": nic}]}}}))).await;
    ok(&env, "admin", "GET", &format!("{zone}/A/vm1"), None).await;
    ok(&env, "admin", "DELETE", &link, None).await;
    expect_error(
        get(&env, "admin", &format!("{zone}/A/vm1")).await,
        404,
        "ResourceNotFound",
    );
    // The endpoint goes: its record goes.
    ok(&env, "admin", "DELETE", &pe_id("rg1", "pe1"), None).await;
    expect_error(
        get(&env, "admin", &format!("{zone}/A/fhirsvc3")).await,
        404,
        "ResourceNotFound",
    );
}

#[tokio::test]
async fn peering_initiated_connected_disconnected() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    for (n, space) in [("va", "127.30.0.0/16"), ("vb", "127.31.0.0/16")] {
        ok(&env, "admin", "PUT", &vnet_id("rg1", n), Some(json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [space]}}}))).await;
    }
    let ab = format!("{}/virtualNetworkPeerings/a-to-b", vnet_id("rg1", "va"));
    let ba = format!("{}/virtualNetworkPeerings/b-to-a", vnet_id("rg1", "vb"));
    let p = ok(&env, "admin", "PUT", &ab, Some(json!({"properties": {"remoteVirtualNetwork": {"id": vnet_id("rg1", "vb")}, "allowVirtualNetworkAccess": true}}))).await;
    assert_eq!(p["properties"]["peeringState"], "Initiated");
    assert_eq!(
        p["properties"]["remoteAddressSpace"]["addressPrefixes"][0],
        "127.31.0.0/16"
    );
    ok(
        &env,
        "admin",
        "PUT",
        &ba,
        Some(json!({"properties": {"remoteVirtualNetwork": {"id": vnet_id("rg1", "va")}}})),
    )
    .await;
    assert_eq!(
        ok(&env, "admin", "GET", &ab, None).await["properties"]["peeringState"],
        "Connected"
    );
    assert_eq!(
        ok(&env, "admin", "GET", &ba, None).await["properties"]["peeringState"],
        "Connected"
    );
    ok(&env, "admin", "DELETE", &vnet_id("rg1", "vb"), None).await;
    assert_eq!(
        ok(&env, "admin", "GET", &ab, None).await["properties"]["peeringState"],
        "Disconnected"
    );
}

#[tokio::test]
async fn state_survives_restart() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc4",
        "vnet1",
        "127.13.0.0/16",
        "127.13.1.0/24",
        "eastus",
    )
    .await;
    let svc = service_id("rg1", "fhirsvc4");
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    ok(
        &env,
        "admin",
        "PUT",
        &pe_id("rg1", "pe1"),
        Some(pe_body("eastus", &subnet, &svc, true, Some("hi"))),
    )
    .await;
    assign(&env, &rg("rg1"), "erin", READER).await;
    let before = ok(&env, "admin", "GET", &svc, None).await;
    assert!(env.store.service_exists("fhirsvc4").await.expect("store"));
    let env = restart(env).await;
    let after = ok(&env, "admin", "GET", &svc, None).await;
    assert_eq!(before, after);
    ok(&env, "erin", "GET", &pe_id("rg1", "pe1"), None).await;
    // The next endpoint does not reuse the first one's address.
    let (_, pe2) = put(
        &env,
        "admin",
        &pe_id("rg1", "pe2"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    assert_eq!(
        pe2["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "127.13.1.5"
    );
    // Deleting the service deletes its data.
    ok(&env, "admin", "DELETE", &pe_id("rg1", "pe2"), None).await;
    ok(&env, "admin", "DELETE", &pe_id("rg1", "pe1"), None).await;
    ok(&env, "admin", "DELETE", &svc, None).await;
    assert!(!env.store.service_exists("fhirsvc4").await.expect("store"));
}
