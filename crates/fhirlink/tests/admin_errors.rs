//! The management API's error paths over HTTPS with real tokens, against the real binary:
//! each one the control-plane issue lists, with its ARM error code. (link-api's own tests
//! prove the same rules in-process, in more depth; this proves them on the wire.)

mod common;

use common::admin::{AdminServer, SUB};
use serde_json::{json, Value};

const RG_API: &str = "api-version=2021-04-01";
const FHIR_API: &str = "api-version=2024-03-31";
const NET_API: &str = "api-version=2024-07-01";

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn service_id() -> String {
    format!(
        "{}/providers/Microsoft.HealthcareApis/services/fhirerrs",
        rg()
    )
}

fn vnet_id(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/virtualNetworks/{name}",
        rg()
    )
}

fn pe_id(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/privateEndpoints/{name}",
        rg()
    )
}

/// Asserts an ARM error: the status and `error.code`, with a message.
fn expect_error(got: (u16, Value, reqwest::header::HeaderMap), status: u16, code: &str) -> Value {
    let (s, body, _) = got;
    assert_eq!(s, status, "{code}: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

fn ok(got: (u16, Value, reqwest::header::HeaderMap)) -> Value {
    let (s, body, _) = got;
    assert!((200..300).contains(&s), "{s}: {body}");
    body
}

fn pe_body(location: &str, manual: bool) -> Value {
    let list = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    json!({"location": location, "properties": {
        "subnet": {"id": format!("{}/subnets/default", vnet_id("hub"))},
        list: [{"name": "conn", "properties": {
            "privateLinkServiceId": service_id(), "groupIds": ["fhir"],
            "requestMessage": "please"}}]
    }})
}

#[test]
fn management_error_paths_over_https() {
    let s = AdminServer::start();
    let admin = s.token("admin");
    let call = |method: &str, path: &str, token: &str, body: Option<&Value>| {
        s.call(method, path, Some(token), body)
    };

    ok(call(
        "PUT",
        &format!("{}?{RG_API}", rg()),
        &admin,
        Some(&json!({"location": "eastus"})),
    ));
    ok(call(
        "PUT",
        &format!("{}?{FHIR_API}", service_id()),
        &admin,
        Some(
            &json!({"location": "westus2", "kind": "fhir-R4", "properties": {"accessPolicies": []}}),
        ),
    ));
    ok(call(
        "PUT",
        &format!("{}?{NET_API}", vnet_id("hub")),
        &admin,
        Some(&json!({"location": "eastus", "properties": {
            "addressSpace": {"addressPrefixes": ["127.60.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "127.60.1.0/24"}}]}})),
    ));

    // Missing api-version.
    expect_error(
        call("GET", &service_id(), &admin, None),
        400,
        "MissingApiVersionParameter",
    );

    // Malformed JSON.
    let resp = s
        .client()
        .put(format!("{}{}?{NET_API}", s.admin_url, vnet_id("broken")))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{\"location\": ")
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    // Unknown resource type.
    let (st, body, _) = call(
        "GET",
        &format!("{}/providers/Microsoft.Network/unicorns/x?{NET_API}", rg()),
        &admin,
        None,
    );
    assert!(st == 400 || st == 404, "{st}: {body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    // Bad name.
    expect_error(
        call(
            "PUT",
            &format!(
                "{}/providers/Microsoft.HealthcareApis/services/Bad_Name!?{FHIR_API}",
                rg()
            ),
            &admin,
            Some(&json!({"location": "westus2", "kind": "fhir-R4", "properties": {}})),
        ),
        400,
        "InvalidResourceName",
    );

    // Overlapping address space.
    expect_error(
        call(
            "PUT",
            &format!("{}?{NET_API}", vnet_id("spoke")),
            &admin,
            Some(&json!({"location": "eastus", "properties": {
                "addressSpace": {"addressPrefixes": ["127.60.128.0/17"]}}})),
        ),
        400,
        "VnetAddressSpacesOverlap",
    );

    // Wrong region: the endpoint must be where its network is.
    let e = expect_error(
        call(
            "PUT",
            &format!("{}?{NET_API}", pe_id("pe1")),
            &admin,
            Some(&pe_body("westeurope", false)),
        ),
        400,
        "InvalidResourceReference",
    );
    assert!(
        e["error"]["message"].as_str().unwrap().contains("region"),
        "{e}"
    );

    // Unauthorised auto approval: a Network Contributor on the group may not approve on the
    // service, so a privateLinkServiceConnections endpoint is refused...
    let assignment = format!(
        "{}/providers/Microsoft.Authorization/roleAssignments/6f1c2a3b-0000-4000-8000-000000000001?api-version=2022-04-01",
        rg()
    );
    ok(call(
        "PUT",
        &assignment,
        &admin,
        Some(&json!({"properties": {
            "roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/4d97b98b-1d4f-4787-a291-c67834d212e7"),
            "principalId": "bob"}})),
    ));
    let bob = s.token("bob");
    let (st, body, _) = call(
        "PUT",
        &format!("{}?{NET_API}", pe_id("pe2")),
        &bob,
        Some(&pe_body("eastus", false)),
    );
    assert_eq!(st, 403, "{body}");
    assert!(
        body["error"]["code"]
            .as_str()
            .unwrap()
            .contains("AuthorizationFailed"),
        "{body}"
    );
    // ...while the manual flow is his to use: Pending until the owner acts.
    let pe = ok(call(
        "PUT",
        &format!("{}?{NET_API}", pe_id("pe2")),
        &bob,
        Some(&pe_body("eastus", true)),
    ));
    assert_eq!(
        pe["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Pending",
        "{pe}"
    );
    // Bob may not read the service at all.
    expect_error(
        call("GET", &format!("{}?{FHIR_API}", service_id()), &bob, None),
        403,
        "AuthorizationFailed",
    );

    // Stale etag.
    let svc = ok(call(
        "GET",
        &format!("{}?{FHIR_API}", service_id()),
        &admin,
        None,
    ));
    let etag = svc["etag"].as_str().expect("etag").to_string();
    ok(call(
        "PATCH",
        &format!("{}?{FHIR_API}", service_id()),
        &admin,
        Some(&json!({"tags": {"a": "1"}})),
    ));
    let resp = s
        .client()
        .patch(format!("{}{}?{FHIR_API}", s.admin_url, service_id()))
        .bearer_auth(&admin)
        .header("if-match", etag)
        .header("content-type", "application/json")
        .body(json!({"tags": {"a": "2"}}).to_string())
        .send()
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap();
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["error"]["code"], "PreconditionFailed", "{body}");

    // No token at all.
    let (st, body, headers) = s.call("GET", &format!("{}?{FHIR_API}", service_id()), None, None);
    assert_eq!(st, 401, "{body}");
    assert!(headers.contains_key("www-authenticate"));
}

#[test]
fn network_rules_over_https() {
    let s = AdminServer::start();
    let admin = s.token("admin");
    let call =
        |method: &str, path: &str, body: Option<&Value>| s.call(method, path, Some(&admin), body);
    let net = |path: String| format!("{path}?{NET_API}");
    let dns_api = "api-version=2024-06-01";

    ok(call(
        "PUT",
        &format!("{}?{RG_API}", rg()),
        Some(&json!({"location": "eastus"})),
    ));
    ok(call(
        "PUT",
        &format!("{}?{RG_API}", rg().replace("rg1", "rg2")),
        Some(&json!({"location": "eastus"})),
    ));
    ok(call(
        "PUT",
        &format!("{}?{FHIR_API}", service_id()),
        Some(&json!({"location": "westus2", "kind": "fhir-R4", "properties": {}})),
    ));
    ok(call(
        "PUT",
        &net(vnet_id("hub")),
        Some(&json!({"location": "eastus", "properties": {
            "addressSpace": {"addressPrefixes": ["127.61.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": "127.61.1.0/24"}}]}})),
    ));
    let pe = ok(call(
        "PUT",
        &net(pe_id("pe1")),
        Some(&json!({"location": "eastus", "properties": {
        "subnet": {"id": format!("{}/subnets/default", vnet_id("hub"))},
        "privateLinkServiceConnections": [{"name": "c", "properties": {"privateLinkServiceId": service_id(), "groupIds": ["fhir"]}}]}})),
    ));
    // Auto approval by the owner, and the endpoint's address is the subnet's first free one.
    assert_eq!(
        pe["properties"]["privateLinkServiceConnections"][0]["properties"]
            ["privateLinkServiceConnectionState"]["status"],
        "Approved",
        "{pe}"
    );
    let nic_id = pe["properties"]["networkInterfaces"][0]["id"]
        .as_str()
        .expect("nic")
        .to_string();
    let pe_nic = ok(call("GET", &net(nic_id), None));
    assert_eq!(
        pe_nic["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"], "127.61.1.4",
        "{pe_nic}"
    );
    // The first approved connection turned public access off.
    let svc = ok(call("GET", &format!("{}?{FHIR_API}", service_id()), None));
    assert_eq!(
        svc["properties"]["publicNetworkAccess"], "Disabled",
        "{svc}"
    );

    // A subnet (and its network) in use cannot be deleted.
    expect_error(
        call(
            "DELETE",
            &net(format!("{}/subnets/default", vnet_id("hub"))),
            None,
        ),
        400,
        "InUseSubnetCannotBeDeleted",
    );
    expect_error(
        call("DELETE", &net(vnet_id("hub")), None),
        400,
        "InUseSubnetCannotBeDeleted",
    );

    // A service with a private endpoint connection, and the endpoint, cannot move.
    let mv =
        |id: String| json!({"resources": [id], "targetResourceGroup": rg().replace("rg1", "rg2")});
    let e = expect_error(
        call(
            "POST",
            &format!("{}/moveResources?{RG_API}", rg()),
            Some(&mv(service_id())),
        ),
        400,
        "ResourceMoveNotSupported",
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Private Link"),
        "{e}"
    );
    expect_error(
        call(
            "POST",
            &format!("{}/moveResources?{RG_API}", rg()),
            Some(&mv(pe_id("pe1"))),
        ),
        400,
        "ResourceMoveNotSupported",
    );

    // Security rules: priority 100-4096, unique per direction.
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/nsg1",
        rg()
    );
    let rule = |name: &str, prio: i64| {
        json!({"name": name, "properties": {"protocol": "Tcp",
        "sourceAddressPrefix": "*", "destinationAddressPrefix": "Internet", "access": "Deny",
        "sourcePortRange": "*", "destinationPortRange": "443", "priority": prio, "direction": "Outbound"}})
    };
    let (st, body, _) = call(
        "PUT",
        &net(nsg.clone()),
        Some(&json!({"location": "eastus", "properties": {"securityRules": [rule("r", 50)]}})),
    );
    assert_eq!(st, 400, "{body}");
    let (st, body, _) = call(
        "PUT",
        &net(nsg.clone()),
        Some(
            &json!({"location": "eastus", "properties": {"securityRules": [rule("a", 200), rule("b", 200)]}}),
        ),
    );
    assert_eq!(st, 400, "{body}");
    ok(call(
        "PUT",
        &net(nsg),
        Some(
            &json!({"location": "eastus", "properties": {"securityRules": [rule("a", 200), rule("b", 300)]}}),
        ),
    ));

    // Auto-registration: a VM of a network linked with registrationEnabled gets an A record,
    // which goes with the VM.
    let zone = format!(
        "{}/providers/Microsoft.Network/privateDnsZones/privatelink.azurehealthcareapis.com",
        rg()
    );
    ok(call(
        "PUT",
        &format!("{zone}?{dns_api}"),
        Some(&json!({"location": "global"})),
    ));
    ok(call(
        "PUT",
        &net(vnet_id("vms")),
        Some(&json!({"location": "westus", "properties": {
            "addressSpace": {"addressPrefixes": ["127.62.0.0/16"]},
            "subnets": [{"name": "vms", "properties": {"addressPrefix": "127.62.1.0/24"}}]}})),
    ));
    let nic = format!(
        "{}/providers/Microsoft.Network/networkInterfaces/vm1-nic",
        rg()
    );
    let nic_body = ok(call(
        "PUT",
        &net(nic.clone()),
        Some(
            &json!({"location": "westus", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": format!("{}/subnets/vms", vnet_id("vms"))}}}]}}),
        ),
    ));
    assert_eq!(
        nic_body["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"],
        "127.62.1.4"
    );
    let vm = format!(
        "{}/providers/Microsoft.Compute/virtualMachines/vm1?api-version=2024-07-01",
        rg()
    );
    ok(call(
        "PUT",
        &vm,
        Some(
            &json!({"location": "westus", "properties": {"networkProfile": {"networkInterfaces": [{"id": nic}]}}}),
        ),
    ));
    ok(call(
        "PUT",
        &format!("{zone}/virtualNetworkLinks/vms-link?{dns_api}"),
        Some(
            &json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet_id("vms")}, "registrationEnabled": true}}),
        ),
    ));
    let rec = ok(call("GET", &format!("{zone}/A/vm1?{dns_api}"), None));
    assert_eq!(
        rec["properties"]["aRecords"][0]["ipv4Address"], "127.62.1.4",
        "{rec}"
    );
    ok(call("DELETE", &vm, None));
    expect_error(
        call("GET", &format!("{zone}/A/vm1?{dns_api}"), None),
        404,
        "ResourceNotFound",
    );
}
