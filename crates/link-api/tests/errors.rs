//! Every error path of the management API answers with ARM's status and code, and never a
//! server error: authentication, api-version, malformed JSON, unknown types, names, regions,
//! overlaps, authorization, preconditions, resources in use, moves.

mod common;

use common::*;
use link_model::{NETWORK_CONTRIBUTOR, READER};
use serde_json::{json, Value};

#[tokio::test]
async fn missing_principal_is_401_authentication_failed() {
    let env = env().await;
    let got = raw(
        &env,
        None,
        "GET",
        &format!("{}?api-version={RES}", rg("rg1")),
        None,
        &[],
    )
    .await;
    expect_error((got.0, got.1), 401, "AuthenticationFailed");
}

#[tokio::test]
async fn missing_api_version_is_400() {
    let env = env().await;
    let got = raw(&env, Some("admin"), "GET", &rg("rg1"), None, &[]).await;
    expect_error((got.0, got.1), 400, "MissingApiVersionParameter");
    let got = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{}?api-version=latest", rg("rg1")),
        None,
        &[],
    )
    .await;
    expect_error((got.0, got.1), 400, "InvalidApiVersionParameter");
}

#[tokio::test]
async fn malformed_json_is_invalid_request_content() {
    let env = env().await;
    for body in ["{\"location\": ", "[1,2]", "", "\u{0}garbage"] {
        let got = raw(
            &env,
            Some("admin"),
            "PUT",
            &format!("{}?api-version={RES}", rg("rg1")),
            Some(body),
            &[],
        )
        .await;
        expect_error((got.0, got.1), 400, "InvalidRequestContent");
    }
}

#[tokio::test]
async fn unknown_resource_types_and_namespaces() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let got = get(
        &env,
        "admin",
        &format!(
            "{}/providers/Microsoft.Network/loadBalancers/lb1",
            rg("rg1")
        ),
    )
    .await;
    expect_error(got, 400, "InvalidResourceType");
    let got = get(
        &env,
        "admin",
        &format!(
            "{}/providers/Microsoft.Storage/storageAccounts/sa1",
            rg("rg1")
        ),
    )
    .await;
    expect_error(got, 400, "InvalidResourceNamespace");
    let got = get(
        &env,
        "admin",
        &format!(
            "{}/providers/Microsoft.Network/virtualNetworks/v1/widgets/w",
            rg("rg1")
        ),
    )
    .await;
    expect_error(got, 400, "InvalidResourceType");
    let got = get(
        &env,
        "admin",
        "/subscriptions/not-a-guid/resourceGroups/rg1",
    )
    .await;
    expect_error(got, 400, "InvalidSubscriptionId");
}

#[tokio::test]
async fn bad_names_are_refused_per_type() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    expect_error(
        put(
            &env,
            "admin",
            &rg("bad%20name!"),
            json!({"location": "eastus"}),
        )
        .await,
        400,
        "InvalidResourceGroupName",
    );
    expect_error(
        put(
            &env,
            "admin",
            &rg("ends-with-dot."),
            json!({"location": "eastus"}),
        )
        .await,
        400,
        "InvalidResourceGroupName",
    );
    for bad in [
        "UPPER",
        "ab",
        "-lead",
        "trail-",
        "way-too-long-service-name-x",
    ] {
        let got = put(
            &env,
            "admin",
            &service_id("rg1", bad),
            json!({"location": "westus2", "kind": "fhir-R4"}),
        )
        .await;
        expect_error(got, 400, "InvalidResourceName");
    }
    let got = put(&env, "admin", &vnet_id("rg1", "-vnet"), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["127.40.0.0/16"]}}})).await;
    expect_error(got, 400, "InvalidResourceName");
    let got = put(
        &env,
        "admin",
        &format!(
            "{}/providers/Microsoft.Network/privateDnsZones/nodots",
            rg("rg1")
        ),
        json!({"location": "global"}),
    )
    .await;
    expect_error(got, 400, "InvalidResourceName");
    let got = put(
        &env,
        "admin",
        &format!(
            "{}/providers/Microsoft.Authorization/roleAssignments/not-a-guid",
            rg("rg1")
        ),
        json!({"properties": {"roleDefinitionId": READER, "principalId": "x"}}),
    )
    .await;
    expect_error(got, 400, "InvalidRoleAssignmentId");
}

#[tokio::test]
async fn missing_resource_group_and_resource() {
    let env = env().await;
    expect_error(
        get(&env, "admin", &rg("nope")).await,
        404,
        "ResourceGroupNotFound",
    );
    expect_error(
        get(&env, "admin", &service_id("nope", "svc1")).await,
        404,
        "ResourceGroupNotFound",
    );
    expect_error(
        put(
            &env,
            "admin",
            &service_id("nope", "svc1"),
            json!({"location": "eastus", "kind": "fhir-R4"}),
        )
        .await,
        404,
        "ResourceGroupNotFound",
    );
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    expect_error(
        get(&env, "admin", &service_id("rg1", "svc1")).await,
        404,
        "ResourceNotFound",
    );
    expect_error(
        get(
            &env,
            "admin",
            &format!("{}/subnets/s1", vnet_id("rg1", "nonet")),
        )
        .await,
        404,
        "ResourceNotFound",
    );
    // Deleting what is not there is 204, as ARM does.
    assert_eq!(
        call(&env, "admin", "DELETE", &service_id("rg1", "svc1"), None)
            .await
            .0,
        204
    );
}

#[tokio::test]
async fn private_endpoint_in_another_region_than_its_network_is_refused() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc5",
        "vnet1",
        "127.50.0.0/16",
        "127.50.1.0/24",
        "eastus",
    )
    .await;
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    let got = put(
        &env,
        "admin",
        &pe_id("rg1", "pe1"),
        pe_body(
            "westeurope",
            &subnet,
            &service_id("rg1", "fhirsvc5"),
            false,
            None,
        ),
    )
    .await;
    let e = expect_error(got, 400, "InvalidResourceReference");
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("same region"));
    // The service itself is in westus2: that is allowed.
    let (s, _) = put(
        &env,
        "admin",
        &pe_id("rg1", "pe1"),
        pe_body(
            "East US",
            &subnet,
            &service_id("rg1", "fhirsvc5"),
            false,
            None,
        ),
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn pinned_endpoint_addresses() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc6",
        "vnet1",
        "127.51.0.0/16",
        "127.51.1.0/24",
        "eastus",
    )
    .await;
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    let svc = service_id("rg1", "fhirsvc6");
    let pinned = |ip: &str| {
        let mut b = pe_body("eastus", &subnet, &svc, false, None);
        b["properties"]["ipConfigurations"] = json!([{"name": "cfg", "properties": {"groupId": "fhir", "memberName": "fhir", "privateIPAddress": ip}}]);
        b
    };
    for bad in ["127.51.1.3", "127.51.1.255", "127.51.2.9"] {
        expect_error(
            put(&env, "admin", &pe_id("rg1", "pe-bad"), pinned(bad)).await,
            400,
            "PrivateIPAddressNotInSubnet",
        );
    }
    let (_, pe) = put(&env, "admin", &pe_id("rg1", "pe1"), pinned("127.51.1.50")).await;
    assert_eq!(
        pe["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "127.51.1.50"
    );
    expect_error(
        put(&env, "admin", &pe_id("rg1", "pe2"), pinned("127.51.1.50")).await,
        400,
        "PrivateIPAddressInUse",
    );
    // Dynamic allocation still starts at .4.
    let (_, pe3) = put(
        &env,
        "admin",
        &pe_id("rg1", "pe3"),
        pe_body("eastus", &subnet, &svc, false, None),
    )
    .await;
    assert_eq!(
        pe3["properties"]["customDnsConfigs"][0]["ipAddresses"][0],
        "127.51.1.4"
    );
}

#[tokio::test]
async fn overlapping_address_spaces_are_refused() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let vnet = |space: &str| json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [space]}}});
    ok(
        &env,
        "admin",
        "PUT",
        &vnet_id("rg1", "va"),
        Some(vnet("127.60.0.0/16")),
    )
    .await;
    let got = put(
        &env,
        "admin",
        &vnet_id("rg1", "vb"),
        vnet("127.60.128.0/17"),
    )
    .await;
    expect_error(got, 400, "VnetAddressSpacesOverlap");
    expect_error(
        put(&env, "admin", &vnet_id("rg1", "vc"), vnet("127.61.0.1/16")).await,
        400,
        "InvalidAddressPrefixFormat",
    );
    // Subnets: outside the network, overlapping each other.
    let sn = |p: &str| json!({"properties": {"addressPrefix": p}});
    ok(
        &env,
        "admin",
        "PUT",
        &format!("{}/subnets/s1", vnet_id("rg1", "va")),
        Some(sn("127.60.1.0/24")),
    )
    .await;
    expect_error(
        put(
            &env,
            "admin",
            &format!("{}/subnets/s2", vnet_id("rg1", "va")),
            sn("127.61.1.0/24"),
        )
        .await,
        400,
        "NetcfgSubnetRangeOutsideVnet",
    );
    expect_error(
        put(
            &env,
            "admin",
            &format!("{}/subnets/s2", vnet_id("rg1", "va")),
            sn("127.60.1.128/25"),
        )
        .await,
        400,
        "NetcfgSubnetRangesOverlap",
    );
}

#[tokio::test]
async fn peering_needs_peer_permission_on_the_remote_network() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg2"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let vnet = |space: &str| json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [space]}}});
    ok(
        &env,
        "admin",
        "PUT",
        &vnet_id("rg1", "va"),
        Some(vnet("127.62.0.0/16")),
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &vnet_id("rg2", "vb"),
        Some(vnet("127.63.0.0/16")),
    )
    .await;
    assign(&env, &rg("rg1"), "frank", NETWORK_CONTRIBUTOR).await;
    let body = json!({"properties": {"remoteVirtualNetwork": {"id": vnet_id("rg2", "vb")}}});
    expect_error(
        put(
            &env,
            "frank",
            &format!("{}/virtualNetworkPeerings/p", vnet_id("rg1", "va")),
            body.clone(),
        )
        .await,
        403,
        "LinkedAuthorizationFailed",
    );
    assign(&env, &rg("rg2"), "frank", NETWORK_CONTRIBUTOR).await;
    let (s, _) = put(
        &env,
        "frank",
        &format!("{}/virtualNetworkPeerings/p", vnet_id("rg1", "va")),
        body,
    )
    .await;
    assert_eq!(s, 201);
}

#[tokio::test]
async fn stale_etag_is_412_precondition_failed() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc7",
        "vnet1",
        "127.64.0.0/16",
        "127.64.1.0/24",
        "eastus",
    )
    .await;
    let svc = service_id("rg1", "fhirsvc7");
    let first = ok(&env, "admin", "GET", &svc, None).await;
    let etag = first["etag"].as_str().expect("etag").to_owned();
    let uri = with_version(&svc, HC);
    let patch = json!({"tags": {"a": "b"}}).to_string();
    let (s, v, h) = raw(
        &env,
        Some("admin"),
        "PATCH",
        &uri,
        Some(&patch),
        &[("if-match", &etag)],
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert!(h.get("etag").is_some());
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "PATCH",
        &uri,
        Some(&patch),
        &[("if-match", &etag)],
    )
    .await;
    expect_error((s, v), 412, "PreconditionFailed");
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "PUT",
        &uri,
        Some(&json!({"location": "westus2", "kind": "fhir-R4"}).to_string()),
        &[("if-none-match", "*")],
    )
    .await;
    expect_error((s, v), 412, "PreconditionFailed");
}

#[tokio::test]
async fn authorization_failed_names_principal_action_and_scope() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let got = put(&env, "mallory", &vnet_id("rg1", "v1"), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["127.65.0.0/16"]}}})).await;
    let e = expect_error(got, 403, "AuthorizationFailed");
    let m = e["error"]["message"].as_str().unwrap_or("");
    assert!(
        m.contains("'mallory'")
            && m.contains("Microsoft.Network/virtualNetworks/write")
            && m.contains(&vnet_id("rg1", "v1")),
        "{m}"
    );
    // A Network Contributor may not create FHIR services nor assign roles.
    assign(&env, &rg("rg1"), "nina", NETWORK_CONTRIBUTOR).await;
    expect_error(
        put(
            &env,
            "nina",
            &service_id("rg1", "svc-nina"),
            json!({"location": "eastus", "kind": "fhir-R4"}),
        )
        .await,
        403,
        "AuthorizationFailed",
    );
    let ra = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/11111111-2222-4333-8444-555555555555",
        rg("rg1")
    );
    expect_error(
        put(
            &env,
            "nina",
            &ra,
            json!({"properties": {"roleDefinitionId": READER, "principalId": "x"}}),
        )
        .await,
        403,
        "AuthorizationFailed",
    );
}

#[tokio::test]
async fn in_use_subnets_networks_and_groups_cannot_be_deleted() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc8",
        "vnet1",
        "127.66.0.0/16",
        "127.66.1.0/24",
        "eastus",
    )
    .await;
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    ok(
        &env,
        "admin",
        "PUT",
        &pe_id("rg1", "pe1"),
        Some(pe_body(
            "eastus",
            &subnet,
            &service_id("rg1", "fhirsvc8"),
            false,
            None,
        )),
    )
    .await;
    expect_error(
        call(&env, "admin", "DELETE", &subnet, None).await,
        400,
        "InUseSubnetCannotBeDeleted",
    );
    expect_error(
        call(&env, "admin", "DELETE", &vnet_id("rg1", "vnet1"), None).await,
        400,
        "InUseSubnetCannotBeDeleted",
    );
    // A PUT of the network that drops the subnet is refused the same way.
    let got = put(&env, "admin", &vnet_id("rg1", "vnet1"), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["127.66.0.0/16"]}, "subnets": []}})).await;
    expect_error(got, 400, "InUseSubnetCannotBeDeleted");
    let pe = ok(&env, "admin", "GET", &pe_id("rg1", "pe1"), None).await;
    let nic = pe["properties"]["networkInterfaces"][0]["id"]
        .as_str()
        .expect("nic")
        .to_owned();
    expect_error(
        call(&env, "admin", "DELETE", &nic, None).await,
        400,
        "NicInUse",
    );
    ok(&env, "admin", "DELETE", &pe_id("rg1", "pe1"), None).await;
    expect_error(get(&env, "admin", &nic).await, 404, "ResourceNotFound");
    ok(&env, "admin", "DELETE", &subnet, None).await;
    // Network security groups attached to a subnet.
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/nsg1",
        rg("rg1")
    );
    ok(
        &env,
        "admin",
        "PUT",
        &nsg,
        Some(json!({"location": "eastus"})),
    )
    .await;
    ok(&env, "admin", "PUT", &format!("{}/subnets/s2", vnet_id("rg1", "vnet1")), Some(json!({"properties": {"addressPrefix": "127.66.2.0/24", "networkSecurityGroup": {"id": nsg}}}))).await;
    expect_error(
        call(&env, "admin", "DELETE", &nsg, None).await,
        400,
        "InUseNetworkSecurityGroupCannotBeDeleted",
    );
}

#[tokio::test]
async fn security_rules_are_validated() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/nsg1",
        rg("rg1")
    );
    let rule = |name: &str, prio: i64, dir: &str| json!({"name": name, "properties": {"protocol": "Tcp", "sourceAddressPrefix": "*", "destinationAddressPrefix": "Internet", "access": "Deny", "sourcePortRange": "*", "destinationPortRange": "443", "priority": prio, "direction": dir}});
    let body = |rules: Vec<serde_json::Value>| json!({"location": "eastus", "properties": {"securityRules": rules}});
    expect_error(
        put(&env, "admin", &nsg, body(vec![rule("r1", 99, "Outbound")])).await,
        400,
        "SecurityRuleInvalidPriority",
    );
    expect_error(
        put(
            &env,
            "admin",
            &nsg,
            body(vec![rule("r1", 4097, "Outbound")]),
        )
        .await,
        400,
        "SecurityRuleInvalidPriority",
    );
    expect_error(
        put(
            &env,
            "admin",
            &nsg,
            body(vec![
                rule("r1", 100, "Outbound"),
                rule("r2", 100, "Outbound"),
            ]),
        )
        .await,
        400,
        "SecurityRuleConflict",
    );
    let created = ok(
        &env,
        "admin",
        "PUT",
        &nsg,
        Some(body(vec![
            rule("r1", 100, "Outbound"),
            rule("r2", 100, "Inbound"),
        ])),
    )
    .await;
    assert_eq!(
        created["properties"]["securityRules"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        created["properties"]["defaultSecurityRules"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    // A child PUT that collides with a sibling.
    let got = put(
        &env,
        "admin",
        &format!("{nsg}/securityRules/r3"),
        json!({"properties": rule("r3", 100, "Inbound")["properties"]}),
    )
    .await;
    expect_error(got, 400, "SecurityRuleConflict");
    let mut bad = rule("r4", 200, "Inbound");
    bad["properties"]["destinationPortRange"] = json!("70000");
    expect_error(
        put(
            &env,
            "admin",
            &format!("{nsg}/securityRules/r4"),
            json!({"properties": bad["properties"]}),
        )
        .await,
        400,
        "SecurityRuleInvalidPortRange",
    );
}

#[tokio::test]
async fn services_with_private_links_cannot_move() {
    let env = env().await;
    seed(
        &env,
        "rg1",
        "fhirsvc9",
        "vnet1",
        "127.67.0.0/16",
        "127.67.1.0/24",
        "eastus",
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg2"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    let subnet = format!("{}/subnets/default", vnet_id("rg1", "vnet1"));
    let svc = service_id("rg1", "fhirsvc9");
    ok(
        &env,
        "admin",
        "PUT",
        &pe_id("rg1", "pe1"),
        Some(pe_body("eastus", &subnet, &svc, false, None)),
    )
    .await;
    let mv = |ids: Vec<String>| json!({"resources": ids, "targetResourceGroup": rg("rg2")});
    let path = format!("{}/moveResources", rg("rg1"));
    let e = expect_error(
        call(&env, "admin", "POST", &path, Some(mv(vec![svc.clone()]))).await,
        400,
        "ResourceMoveNotSupported",
    );
    assert!(e["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("delete the Private Link first"));
    expect_error(
        call(
            &env,
            "admin",
            "POST",
            &path,
            Some(mv(vec![pe_id("rg1", "pe1")])),
        )
        .await,
        400,
        "ResourceMoveNotSupported",
    );
    // Once the private link is gone, the move works and the id follows.
    ok(&env, "admin", "DELETE", &pe_id("rg1", "pe1"), None).await;
    let (s, v) = call(&env, "admin", "POST", &path, Some(mv(vec![svc.clone()]))).await;
    assert_eq!(s, 204, "{v}");
    let moved = ok(&env, "admin", "GET", &service_id("rg2", "fhirsvc9"), None).await;
    assert_eq!(moved["id"], service_id("rg2", "fhirsvc9"));
    expect_error(get(&env, "admin", &svc).await, 404, "ResourceNotFound");
}

#[tokio::test]
async fn service_names_are_global_and_checked() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg2"),
        Some(json!({"location": "eastus"})),
    )
    .await;
    env.store.create_service("default").await.expect("store");
    let check = |name: &str| json!({"type": "Microsoft.HealthcareApis/services", "name": name});
    let path =
        format!("/subscriptions/{SUB}/providers/Microsoft.HealthcareApis/checkNameAvailability");
    let v = ok(&env, "admin", "POST", &path, Some(check("fhirsvc10"))).await;
    assert_eq!(v["nameAvailable"], true);
    ok(
        &env,
        "admin",
        "PUT",
        &service_id("rg1", "fhirsvc10"),
        Some(json!({"location": "westus2", "kind": "fhir-R4"})),
    )
    .await;
    let v = ok(&env, "admin", "POST", &path, Some(check("fhirsvc10"))).await;
    assert_eq!(v["nameAvailable"], false);
    assert_eq!(v["reason"], "AlreadyExists");
    let v = ok(&env, "admin", "POST", &path, Some(check("default"))).await;
    assert_eq!(v["nameAvailable"], false);
    expect_error(
        put(
            &env,
            "admin",
            &service_id("rg2", "fhirsvc10"),
            json!({"location": "westus2", "kind": "fhir-R4"}),
        )
        .await,
        409,
        "ServiceNameNotAvailable",
    );
    expect_error(
        put(
            &env,
            "admin",
            &service_id("rg2", "default"),
            json!({"location": "westus2", "kind": "fhir-R4"}),
        )
        .await,
        409,
        "ServiceNameNotAvailable",
    );
    expect_error(
        put(
            &env,
            "admin",
            &service_id("rg2", "stu3svc"),
            json!({"location": "westus2", "kind": "fhir-Stu3"}),
        )
        .await,
        400,
        "InvalidKind",
    );
    // Case-insensitive paths: the SDK's lower-case `resourcegroups` finds the same service.
    let lower = format!("/subscriptions/{SUB}/resourcegroups/RG1/providers/microsoft.healthcareapis/SERVICES/fhirsvc10");
    let v = ok(&env, "admin", "GET", &lower, None).await;
    assert_eq!(v["id"], service_id("rg1", "fhirsvc10"));
    // Lists by resource group and by subscription.
    let by_rg = ok(
        &env,
        "admin",
        "GET",
        &format!("{}/providers/Microsoft.HealthcareApis/services", rg("rg1")),
        None,
    )
    .await;
    assert_eq!(by_rg["value"].as_array().map(Vec::len), Some(1));
    let by_sub = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.HealthcareApis/services"),
        None,
    )
    .await;
    assert_eq!(by_sub["value"].as_array().map(Vec::len), Some(1));
    let other = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB2}/providers/Microsoft.HealthcareApis/services"),
        None,
    )
    .await;
    assert_eq!(other["value"].as_array().map(Vec::len), Some(0));
}

/// A network of `n` /29 subnets in 10.9.0.0/16, as one PUT.
fn vnet_with_subnets(n: u32) -> Value {
    let subnets: Vec<Value> = (0..n)
        .map(|i| {
            let at = i * 8;
            json!({"name": format!("s{i}"), "properties": {"addressPrefix": format!("10.9.{}.{}/29", at / 256, at % 256)}})
        })
        .collect();
    json!({"location": "westus2", "properties": {"addressSpace": {"addressPrefixes": ["10.9.0.0/16"]}, "subnets": subnets}})
}

// Regression (issue #15, defect 6): one PUT of a virtual network with 5,000 subnets took 23.5 s
// and held the management writer meanwhile (every subnet was checked against every sibling).
// Azure's limit is 3,000 subnets per network: beyond it the PUT is refused with QuotaExceeded,
// and up to it the checks are linear (sorted prefixes).
#[tokio::test]
async fn regression_15_6_a_network_holds_at_most_3000_subnets_and_is_checked_in_linear_time() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "westus2"})),
    )
    .await;
    let vnet = vnet_id("rg1", "big");
    let v = expect_error(
        put(&env, "admin", &vnet, vnet_with_subnets(5000)).await,
        400,
        "QuotaExceeded",
    );
    let m = v["error"]["message"].as_str().unwrap_or("");
    assert!(m.contains("Maximum allowed: 3000, requested: 5000"), "{m}");
    let (s, _) = get(&env, "admin", &vnet).await;
    assert_eq!(s, 404, "nothing was written");

    let (s, v) = put(&env, "admin", &vnet, vnet_with_subnets(3000)).await;
    assert_eq!(s, 201, "{}", v["error"]);
    assert_eq!(
        v["properties"]["subnets"].as_array().map(Vec::len),
        Some(3000)
    );
    // The same PUT again (every subnet exists now) is just as welcome.
    let (s, _) = put(&env, "admin", &vnet, vnet_with_subnets(3000)).await;
    assert_eq!(s, 200);
    // A 3,001st subnet on its own is refused as well.
    expect_error(
        put(
            &env,
            "admin",
            &format!("{vnet}/subnets/one-more"),
            json!({"properties": {"addressPrefix": "10.9.200.0/29"}}),
        )
        .await,
        400,
        "QuotaExceeded",
    );
    // Overlaps among the listed subnets are still found, whatever their order.
    let mut body = vnet_with_subnets(3000);
    body["properties"]["subnets"][2999]["properties"]["addressPrefix"] = json!("10.9.0.0/24");
    expect_error(
        put(&env, "admin", &vnet, body).await,
        400,
        "NetcfgSubnetRangesOverlap",
    );
}

// Regression (issue #15, defect 6): security rules are bounded as Azure bounds them (1,000
// per group), and their priorities checked in one pass.
#[tokio::test]
async fn regression_15_6_a_security_group_holds_at_most_1000_rules() {
    let env = env().await;
    ok(
        &env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "westus2"})),
    )
    .await;
    let rules = |n: u32| -> Value {
        let r: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("r{i}"), "properties": {"priority": 100 + i % 3997, "direction": if i < 3997 { "Inbound" } else { "Outbound" }, "access": "Allow", "protocol": "Tcp", "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*", "destinationPortRange": "443"}}))
            .collect();
        json!({"location": "westus2", "properties": {"securityRules": r}})
    };
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/n1",
        rg("rg1")
    );
    expect_error(
        put(&env, "admin", &nsg, rules(1001)).await,
        400,
        "QuotaExceeded",
    );
    let (s, v) = put(&env, "admin", &nsg, rules(1000)).await;
    assert_eq!(s, 201, "{}", v["error"]);
}
