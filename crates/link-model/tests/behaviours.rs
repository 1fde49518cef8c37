//! The behaviours the source documents define (DESIGN.md, "The behaviours that the source
//! documents define"), proven on the pure model: one `check` helper per boundary, many small
//! cases, each named for the behaviour it proves.

use std::collections::BTreeSet;

use chrono::{TimeZone, Utc};
use link_model::{
    ensure_owner, handle, may_back_up, plan, ArmError, Method, Prefix, Principal, Request,
    Resource, State, CONTRIBUTOR, NETWORK_CONTRIBUTOR, OWNER, READER, ROLES,
};
use serde_json::{json, Value};

const SUB: &str = "6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e";

fn who(id: &str) -> Principal {
    Principal {
        id: id.into(),
        issuer: "test".into(),
    }
}

/// The api-version an SDK sends for a path.
fn version_for(path: &str) -> &'static str {
    // The type is the one of the last provider section: an extension resource (a role
    // assignment, a diagnostic setting) takes its own namespace's version.
    let lower = path.to_ascii_lowercase();
    let p = lower.rsplit("/providers/").next().unwrap_or(&lower);
    if p.contains("microsoft.healthcareapis") {
        "2024-03-31"
    } else if p.contains("privatednszones") {
        "2024-06-01"
    } else if p.contains("microsoft.authorization") {
        "2022-04-01"
    } else if p.contains("microsoft.network") {
        "2026-03-01"
    } else if p.contains("microsoft.compute") {
        "2024-07-01"
    } else if p.contains("microsoft.insights") {
        "2021-05-01-preview"
    } else {
        "2025-04-01"
    }
}

/// The model driven request by request, as link-api drives it.
struct Model {
    state: State,
    taken: BTreeSet<String>,
}

impl Model {
    fn new() -> Model {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let (state, _) =
            ensure_owner(&State::default(), "admin", &who("admin"), now).expect("owner");
        let mut m = Model {
            state,
            taken: BTreeSet::new(),
        };
        m.ok(
            "admin",
            Method::Put,
            &rg("rg1"),
            json!({"location": "eastus"}),
        );
        m
    }

    fn call(
        &mut self,
        caller: &str,
        method: Method,
        path: &str,
        body: Value,
    ) -> Result<Value, ArmError> {
        let text = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let req = Request {
            method,
            path,
            api_version: Some(version_for(path)),
            filter: None,
            top: None,
            skip_token: None,
            if_match: None,
            if_none_match: None,
            body: text.as_bytes(),
            taken_service_names: &self.taken,
        };
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let out = handle(&self.state, &req, &who(caller), now)?;
        if let Some(s) = out.state {
            // What link-api persists is exactly what it loads again.
            let docs: Vec<Resource> = s
                .resources()
                .map(|r| Resource::from_document(&r.to_document()).expect("doc"))
                .collect();
            assert_eq!(State::from_resources(docs), s);
            self.state = s;
        }
        Ok(out.response.body.unwrap_or(Value::Null))
    }

    fn ok(&mut self, caller: &str, method: Method, path: &str, body: Value) -> Value {
        match self.call(caller, method, path, body) {
            Ok(v) => v,
            Err(e) => panic!("{method:?} {path}: {e}"),
        }
    }

    fn assign(&mut self, scope: &str, principal: &str, role: &str, n: u32) {
        let name = format!("00000000-0000-4000-8000-{n:012}");
        self.ok(
            "admin",
            Method::Put,
            &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
            json!({"properties": {"roleDefinitionId": format!("/providers/Microsoft.Authorization/roleDefinitions/{role}"), "principalId": principal}}),
        );
    }

    /// Resource group, FHIR service `svc`, network `vnet` in `location` with subnet `default`.
    fn seed(&mut self, location: &str, space: &str, subnet: &str) {
        self.ok(
            "admin",
            Method::Put,
            &svc(),
            json!({"location": "westus2", "kind": "fhir-R4"}),
        );
        self.ok(
            "admin",
            Method::Put,
            &vnet("vnet"),
            json!({"location": location, "properties": {"addressSpace": {"addressPrefixes": [space]}, "subnets": [{"name": "default", "properties": {"addressPrefix": subnet}}]}}),
        );
    }
}

fn rg(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{name}")
}
fn svc() -> String {
    format!(
        "{}/providers/Microsoft.HealthcareApis/services/svc",
        rg("rg1")
    )
}
fn vnet(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/virtualNetworks/{name}",
        rg("rg1")
    )
}
fn pe(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/privateEndpoints/{name}",
        rg("rg1")
    )
}
fn pe_body(location: &str, manual: bool, ip: Option<&str>) -> Value {
    let list = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    let mut b = json!({"location": location, "properties": {"subnet": {"id": format!("{}/subnets/default", vnet("vnet"))}, list: [{"name": "c", "properties": {"privateLinkServiceId": svc(), "groupIds": ["fhir"], "requestMessage": "please"}}]}});
    if let Some(ip) = ip {
        b["properties"]["ipConfigurations"] = json!([{"name": "ip", "properties": {"groupId": "fhir", "memberName": "fhir", "privateIPAddress": ip}}]);
    }
    b
}
fn err_code(r: Result<Value, ArmError>) -> String {
    match r {
        Ok(_) => "ok".into(),
        Err(e) => e.code,
    }
}

// -- Private endpoint: its IP is the first free address of the subnet, from .4 -------------

fn check_allocation(prefix: &str, used: &[&str], expected: Option<&str>) {
    let p = Prefix::parse(prefix).expect("prefix");
    let used: Vec<u32> = used
        .iter()
        .map(|u| u32::from(u.parse::<std::net::Ipv4Addr>().expect("ip")))
        .collect();
    let got = p
        .allocate(&used)
        .map(|ip| std::net::Ipv4Addr::from(ip).to_string());
    assert_eq!(got.as_deref(), expected, "{prefix} with {used:?}");
}

#[test]
fn endpoint_ip_is_first_free_address_from_dot_four() {
    check_allocation("127.10.1.0/24", &[], Some("127.10.1.4"));
    check_allocation("127.10.1.0/24", &["127.10.1.4"], Some("127.10.1.5"));
    check_allocation("127.10.1.0/24", &["127.10.1.5"], Some("127.10.1.4"));
    check_allocation("10.0.0.0/29", &["10.0.0.4", "10.0.0.5"], Some("10.0.0.6"));
    // The last address is reserved too.
    check_allocation("10.0.0.0/29", &["10.0.0.4", "10.0.0.5", "10.0.0.6"], None);
    check_allocation("172.21.0.0/16", &[], Some("172.21.0.4"));
}

#[test]
fn prefixes_parse_as_azure_requires() {
    for (s, ok) in [
        ("10.0.0.0/16", true),
        ("10.0.0.1/16", false),
        ("10.0.0.0/33", false),
        ("nonsense", false),
        ("127.0.0.0/8", true),
    ] {
        assert_eq!(Prefix::parse(s).is_some(), ok, "{s}");
    }
}

fn check_pinned(ip: &str, expected: &str) {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    let got = m.call(
        "admin",
        Method::Put,
        &pe("pe"),
        pe_body("eastus", false, Some(ip)),
    );
    let got = got.map(|v| {
        v["properties"]["customDnsConfigs"][0]["ipAddresses"][0]
            .as_str()
            .unwrap_or("")
            .to_owned()
    });
    let got = match got {
        Ok(ip) => ip,
        Err(e) => e.code,
    };
    assert_eq!(got, expected, "pinned {ip}");
}

#[test]
fn endpoint_pinned_by_ip_configuration_private_ip_address() {
    check_pinned("127.10.1.4", "127.10.1.4");
    check_pinned("127.10.1.200", "127.10.1.200");
    check_pinned("127.10.1.0", "PrivateIPAddressNotInSubnet");
    check_pinned("127.10.1.3", "PrivateIPAddressNotInSubnet");
    check_pinned("127.10.1.255", "PrivateIPAddressNotInSubnet");
    check_pinned("127.10.2.4", "PrivateIPAddressNotInSubnet");
    check_pinned("not-an-ip", "InvalidPrivateIPAddress");
}

// -- Region rule -----------------------------------------------------------------------------

fn check_region(vnet_location: &str, pe_location: &str, expected: &str) {
    let mut m = Model::new();
    m.seed(vnet_location, "127.10.0.0/16", "127.10.1.0/24");
    assert_eq!(
        err_code(m.call(
            "admin",
            Method::Put,
            &pe("pe"),
            pe_body(pe_location, false, None)
        )),
        expected,
        "{vnet_location} / {pe_location}"
    );
}

#[test]
fn region_rule_endpoint_in_the_region_of_its_network() {
    check_region("eastus", "eastus", "ok");
    check_region("eastus", "East US", "ok");
    // The service is in westus2: the endpoint may still be elsewhere.
    check_region("westeurope", "westeurope", "ok");
    check_region("eastus", "westus2", "InvalidResourceReference");
    check_region("eastus", "westeurope", "InvalidResourceReference");
}

// -- Auto and manual approval -----------------------------------------------------------

/// The state of the connection an endpoint gets when `caller` (holding `roles`) creates it.
fn check_approval(roles: &[(&str, &str)], manual: bool, expected: &str) {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    for (i, (scope, role)) in roles.iter().enumerate() {
        let scope = match *scope {
            "rg" => rg("rg1"),
            "service" => svc(),
            "vnet" => vnet("vnet"),
            _ => format!("/subscriptions/{SUB}"),
        };
        m.assign(&scope, "bob", role, i as u32 + 1);
    }
    let got = m.call(
        "bob",
        Method::Put,
        &pe("pe"),
        pe_body("eastus", manual, None),
    );
    let list = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    let got = match got {
        Ok(v) => v["properties"][list][0]["properties"]["privateLinkServiceConnectionState"]
            ["status"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
        Err(e) => e.code,
    };
    assert_eq!(got, expected, "{roles:?} manual={manual}");
}

#[test]
fn auto_approval_only_for_callers_allowed_to_approve_on_the_service() {
    check_approval(&[("rg", OWNER)], false, "Approved");
    check_approval(&[("rg", CONTRIBUTOR)], false, "Approved");
    check_approval(&[("sub", CONTRIBUTOR)], false, "Approved");
    check_approval(
        &[("rg", NETWORK_CONTRIBUTOR), ("service", CONTRIBUTOR)],
        false,
        "Approved",
    );
    // Network rights on the network alone do not let one create an endpoint in the group.
    check_approval(
        &[("vnet", NETWORK_CONTRIBUTOR), ("service", CONTRIBUTOR)],
        false,
        "AuthorizationFailed",
    );
    check_approval(
        &[("rg", NETWORK_CONTRIBUTOR)],
        false,
        "LinkedAuthorizationFailed",
    );
    check_approval(
        &[("rg", NETWORK_CONTRIBUTOR), ("service", READER)],
        false,
        "LinkedAuthorizationFailed",
    );
    check_approval(&[("rg", READER)], false, "AuthorizationFailed");
    check_approval(&[], false, "AuthorizationFailed");
}

#[test]
fn manual_approval_is_pending_for_anyone_who_may_create_the_endpoint() {
    check_approval(&[("rg", NETWORK_CONTRIBUTOR)], true, "Pending");
    check_approval(&[("rg", OWNER)], true, "Pending");
    check_approval(&[("rg", READER)], true, "AuthorizationFailed");
}

/// The endpoint-side state after the owner acts on the service side.
fn check_owner_action(action: &str, expected_endpoint: &str, expected_public: &str) {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    m.ok(
        "admin",
        Method::Put,
        &pe("pe"),
        pe_body("eastus", true, None),
    );
    let conns = m.ok(
        "admin",
        Method::Get,
        &format!("{}/privateEndpointConnections", svc()),
        Value::Null,
    );
    let id = conns["value"][0]["id"].as_str().expect("id").to_owned();
    match action {
        "approve" | "reject" => {
            let status = if action == "approve" {
                "Approved"
            } else {
                "Rejected"
            };
            m.ok("admin", Method::Put, &id, json!({"properties": {"privateLinkServiceConnectionState": {"status": status, "description": "by owner"}}}));
        }
        "remove" => {
            m.ok("admin", Method::Delete, &id, Value::Null);
        }
        _ => {}
    }
    let e = m.ok("admin", Method::Get, &pe("pe"), Value::Null);
    let st = &e["properties"]["manualPrivateLinkServiceConnections"][0]["properties"]
        ["privateLinkServiceConnectionState"]["status"];
    assert_eq!(st, expected_endpoint, "{action}");
    let s = m.ok("admin", Method::Get, &svc(), Value::Null);
    assert_eq!(
        s["properties"]["publicNetworkAccess"], expected_public,
        "{action}"
    );
}

#[test]
fn approve_reject_remove_and_public_access_switched_off_by_first_approval() {
    check_owner_action("none", "Pending", "Enabled");
    check_owner_action("approve", "Approved", "Disabled");
    check_owner_action("reject", "Rejected", "Enabled");
    check_owner_action("remove", "Disconnected", "Enabled");
}

// -- Peering and address spaces -----------------------------------------------------------

fn check_address_space(existing: &[&str], new: &str, expected: &str) {
    let mut m = Model::new();
    for (i, space) in existing.iter().enumerate() {
        m.ok("admin", Method::Put, &vnet(&format!("v{i}")), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [space]}}}));
    }
    let got = m.call(
        "admin",
        Method::Put,
        &vnet("new"),
        json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [new]}}}),
    );
    assert_eq!(err_code(got), expected, "{existing:?} + {new}");
}

#[test]
fn address_spaces_unique_within_a_deployment() {
    check_address_space(&[], "127.10.0.0/16", "ok");
    check_address_space(&["127.10.0.0/16"], "127.11.0.0/16", "ok");
    check_address_space(
        &["127.10.0.0/16"],
        "127.10.0.0/16",
        "VnetAddressSpacesOverlap",
    );
    check_address_space(
        &["127.10.0.0/16"],
        "127.10.5.0/24",
        "VnetAddressSpacesOverlap",
    );
    check_address_space(
        &["127.10.5.0/24"],
        "127.0.0.0/8",
        "VnetAddressSpacesOverlap",
    );
    check_address_space(&["127.10.0.0/16", "127.20.0.0/16"], "127.30.0.0/16", "ok");
}

/// Peering states as the two sides come and go.
fn check_peering(steps: &[&str], expected_ab: &str) {
    let mut m = Model::new();
    m.ok("admin", Method::Put, &vnet("va"), json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": ["127.10.0.0/16"]}}}));
    m.ok("admin", Method::Put, &vnet("vb"), json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": ["127.20.0.0/16"]}}}));
    let ab = format!("{}/virtualNetworkPeerings/ab", vnet("va"));
    let ba = format!("{}/virtualNetworkPeerings/ba", vnet("vb"));
    for step in steps {
        match *step {
            "a->b" => {
                m.ok(
                    "admin",
                    Method::Put,
                    &ab,
                    json!({"properties": {"remoteVirtualNetwork": {"id": vnet("vb")}}}),
                );
            }
            "b->a" => {
                m.ok(
                    "admin",
                    Method::Put,
                    &ba,
                    json!({"properties": {"remoteVirtualNetwork": {"id": vnet("va")}}}),
                );
            }
            "-b->a" => {
                m.ok("admin", Method::Delete, &ba, Value::Null);
            }
            "-vb" => {
                m.ok("admin", Method::Delete, &vnet("vb"), Value::Null);
            }
            _ => unreachable!(),
        }
    }
    let p = m.ok("admin", Method::Get, &ab, Value::Null);
    assert_eq!(p["properties"]["peeringState"], expected_ab, "{steps:?}");
}

#[test]
fn peering_initiated_until_both_sides_then_connected_then_disconnected() {
    check_peering(&["a->b"], "Initiated");
    check_peering(&["a->b", "b->a"], "Connected");
    check_peering(&["b->a", "a->b"], "Connected");
    check_peering(&["a->b", "b->a", "-b->a"], "Disconnected");
    check_peering(&["a->b", "-vb"], "Disconnected");
}

// -- Network security groups -------------------------------------------------------------

fn check_rules(rules: &[(i64, &str)], expected: &str) {
    let mut m = Model::new();
    let rules: Vec<Value> = rules
        .iter()
        .enumerate()
        .map(|(i, (prio, dir))| json!({"name": format!("r{i}"), "properties": {"protocol": "*", "sourceAddressPrefix": "VirtualNetwork", "destinationAddressPrefix": "Internet", "access": "Deny", "sourcePortRange": "*", "destinationPortRange": "*", "priority": prio, "direction": dir}}))
        .collect();
    let got = m.call(
        "admin",
        Method::Put,
        &format!(
            "{}/providers/Microsoft.Network/networkSecurityGroups/nsg",
            rg("rg1")
        ),
        json!({"location": "eastus", "properties": {"securityRules": rules}}),
    );
    assert_eq!(err_code(got), expected, "{rules:?}");
}

#[test]
fn nsg_priority_100_to_4096_unique_per_direction() {
    check_rules(&[(100, "Inbound")], "ok");
    check_rules(&[(4096, "Outbound")], "ok");
    check_rules(&[(99, "Inbound")], "SecurityRuleInvalidPriority");
    check_rules(&[(4097, "Inbound")], "SecurityRuleInvalidPriority");
    check_rules(&[(200, "Inbound"), (200, "Outbound")], "ok");
    check_rules(
        &[(200, "Inbound"), (200, "Inbound")],
        "SecurityRuleConflict",
    );
    check_rules(&[(200, "Sideways")], "SecurityRuleInvalidDirection");
}

// -- Names -------------------------------------------------------------------------------

fn check_name(path: &str, body: Value, expected: &str) {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    assert_eq!(
        err_code(m.call("admin", Method::Put, path, body)),
        expected,
        "{path}"
    );
}

#[test]
fn names_validated_as_azure_does() {
    let service = |n: &str| {
        format!(
            "{}/providers/Microsoft.HealthcareApis/services/{n}",
            rg("rg1")
        )
    };
    let fhir = json!({"location": "westus2", "kind": "fhir-R4"});
    check_name(&service("abc"), fhir.clone(), "ok");
    check_name(&service("a1-b2"), fhir.clone(), "ok");
    check_name(&service("ab"), fhir.clone(), "InvalidResourceName");
    check_name(&service("Abc"), fhir.clone(), "InvalidResourceName");
    check_name(&service("abc_d"), fhir.clone(), "InvalidResourceName");
    check_name(&service(&"a".repeat(25)), fhir, "InvalidResourceName");
    let space = |p: &str| json!({"location": "eastus", "properties": {"addressSpace": {"addressPrefixes": [p]}}});
    check_name(&vnet("v.net_1"), space("127.30.0.0/16"), "ok");
    check_name(&vnet("v"), space("127.30.0.0/16"), "InvalidResourceName");
    check_name(
        &vnet("vnet."),
        space("127.30.0.0/16"),
        "InvalidResourceName",
    );
    check_name(&vnet("vnet_"), space("127.30.0.0/16"), "ok");
    check_name(&rg("a(b).c-d_e"), json!({"location": "eastus"}), "ok");
    check_name(
        &rg("abc."),
        json!({"location": "eastus"}),
        "InvalidResourceGroupName",
    );
    let zone = |z: &str| {
        format!(
            "{}/providers/Microsoft.Network/privateDnsZones/{z}",
            rg("rg1")
        )
    };
    check_name(
        &zone("privatelink.azurehealthcareapis.com"),
        json!({"location": "global"}),
        "ok",
    );
    check_name(
        &zone("localhost"),
        json!({"location": "global"}),
        "InvalidResourceName",
    );
    check_name(
        &zone("bad..zone"),
        json!({"location": "global"}),
        "InvalidResourceName",
    );
}

// -- Built-in roles ----------------------------------------------------------------------

fn check_role(role: &str, action: &str, allowed: bool) {
    let r = ROLES.iter().find(|r| r.name == role).expect("role");
    assert_eq!(r.permits(action), allowed, "{role} {action}");
}

#[test]
fn built_in_roles_permit_what_azure_lets_them() {
    check_role(
        "Owner",
        "Microsoft.Authorization/roleAssignments/write",
        true,
    );
    check_role(
        "Contributor",
        "Microsoft.Authorization/roleAssignments/write",
        false,
    );
    check_role(
        "Contributor",
        "Microsoft.Authorization/roleAssignments/read",
        true,
    );
    check_role(
        "Contributor",
        "Microsoft.HealthcareApis/services/privateEndpointConnectionsApproval/action",
        true,
    );
    check_role("Reader", "Microsoft.Network/virtualNetworks/read", true);
    check_role("Reader", "Microsoft.Network/virtualNetworks/write", false);
    check_role(
        "Network Contributor",
        "Microsoft.Network/privateEndpoints/write",
        true,
    );
    check_role(
        "Network Contributor",
        "Microsoft.Network/virtualNetworks/peer/action",
        true,
    );
    check_role(
        "Network Contributor",
        "Microsoft.HealthcareApis/services/write",
        false,
    );
    check_role(
        "Network Contributor",
        "Microsoft.HealthcareApis/services/privateEndpointConnectionsApproval/action",
        false,
    );
    check_role(
        "Network Contributor",
        "Microsoft.Resources/subscriptions/resourceGroups/read",
        true,
    );
}

// -- Moves -------------------------------------------------------------------------------

fn check_move(with_endpoint: bool, what: &str, expected: &str) {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    m.ok(
        "admin",
        Method::Put,
        &rg("rg2"),
        json!({"location": "eastus"}),
    );
    if with_endpoint {
        m.ok(
            "admin",
            Method::Put,
            &pe("pe"),
            pe_body("eastus", true, None),
        );
    }
    let id = match what {
        "service" => svc(),
        "endpoint" => pe("pe"),
        _ => vnet("vnet"),
    };
    let got = m.call(
        "admin",
        Method::Post,
        &format!("{}/moveResources", rg("rg1")),
        json!({"resources": [id], "targetResourceGroup": rg("rg2")}),
    );
    assert_eq!(
        err_code(got),
        expected,
        "{what} with endpoint {with_endpoint}"
    );
}

#[test]
fn moves_refused_while_private_link_is_enabled() {
    check_move(false, "service", "ok");
    check_move(true, "service", "ResourceMoveNotSupported");
    check_move(true, "endpoint", "ResourceMoveNotSupported");
}

// -- The desired network plan -----------------------------------------------------------

#[test]
fn plan_lists_what_the_network_plane_must_make_true() {
    let mut m = Model::new();
    m.seed("eastus", "127.10.0.0/16", "127.10.1.0/24");
    let nsg = format!(
        "{}/providers/Microsoft.Network/networkSecurityGroups/nsg",
        rg("rg1")
    );
    m.ok("admin", Method::Put, &nsg, json!({"location": "eastus", "properties": {"securityRules": [{"name": "no-internet", "properties": {"protocol": "*", "sourceAddressPrefix": "*", "destinationAddressPrefix": "Internet", "access": "Deny", "sourcePortRange": "*", "destinationPortRange": "*", "priority": 100, "direction": "Outbound"}}]}}));
    m.ok("admin", Method::Put, &format!("{}/subnets/vms", vnet("vnet")), json!({"properties": {"addressPrefix": "127.10.2.0/24", "networkSecurityGroup": {"id": nsg}}}));
    m.ok(
        "admin",
        Method::Put,
        &pe("pe"),
        pe_body("eastus", false, None),
    );
    m.ok(
        "admin",
        Method::Put,
        &pe("pe2"),
        pe_body("eastus", true, None),
    );
    let zone = format!(
        "{}/providers/Microsoft.Network/privateDnsZones/privatelink.azurehealthcareapis.com",
        rg("rg1")
    );
    m.ok("admin", Method::Put, &zone, json!({"location": "global"}));
    m.ok(
        "admin",
        Method::Put,
        &format!("{zone}/virtualNetworkLinks/l"),
        json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet("vnet")}}}),
    );
    m.ok("admin", Method::Put, &format!("{}/privateDnsZoneGroups/g", pe("pe")), json!({"properties": {"privateDnsZoneConfigs": [{"properties": {"privateDnsZoneId": zone}}]}}));
    let p = plan(&m.state);
    let svc = &p.services[0];
    assert_eq!(svc.name, "svc");
    assert!(!svc.public_access);
    let mut eps: Vec<(String, bool)> = svc
        .endpoints
        .iter()
        .map(|e| (e.ip.to_string(), e.carries_traffic()))
        .collect();
    eps.sort();
    assert_eq!(
        eps,
        [
            ("127.10.1.4".to_owned(), true),
            ("127.10.1.5".to_owned(), false)
        ]
    );
    let net = p
        .network_of("127.10.2.7".parse().expect("ip"))
        .expect("network");
    assert_eq!(net.linked_zones, ["privatelink.azurehealthcareapis.com"]);
    let vms = net
        .subnets
        .iter()
        .find(|s| s.id.ends_with("/vms"))
        .expect("subnet");
    let rules = vms.security_rules.as_ref().expect("nsg");
    assert_eq!(
        (rules[0].name.as_str(), rules[0].access.as_str()),
        ("no-internet", "Deny")
    );
    assert_eq!(rules.len(), 7);
    assert!(p.network_of("127.99.0.1".parse().expect("ip")).is_none());
    let z = &p.zones[0];
    assert_eq!(
        z.a_records
            .get("svc")
            .map(|ips| ips.iter().map(ToString::to_string).collect::<Vec<_>>()),
        Some(vec!["127.10.1.4".to_owned()])
    );
}

// -- Backups -------------------------------------------------------------------------------

#[test]
fn a_backup_is_for_the_owner_at_the_root_scope_only() {
    let mut m = Model::new();
    m.assign("", "carol", CONTRIBUTOR, 1);
    m.assign(&rg("rg1"), "dave", OWNER, 2);
    m.assign("", "rita", READER, 3);
    assert!(may_back_up(&m.state, &who("admin")));
    for refused in ["carol", "dave", "rita", "mallory"] {
        assert!(!may_back_up(&m.state, &who(refused)), "{refused}");
    }
    let a = link_model::classify(Method::Post, link_model::BACKUP_PATH);
    assert_eq!(a.name, link_model::BACKUP_ACTION);
    assert!(link_model::actions().any(|n| n == link_model::BACKUP_ACTION));
}
