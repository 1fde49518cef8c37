//! One request, one classification (issue #14): the ARM action `link_model` authorizes a
//! request as is the one the router hands on in the response's extensions (which the audit
//! record and the metrics take), for every action the management API serves; ARM's generic
//! endpoints (resources, providers); and `api-version` checked against each type's versions.

mod common;

use std::collections::BTreeSet;

use axum::body::Body;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use link_model::{ArmAction, Principal};
use serde_json::{json, Value};
use tower::ServiceExt;

/// One request as `who` (None: no principal), with the response's status, body and the
/// action in its extensions.
async fn send(
    env: &Env,
    who: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<&Value>,
) -> (u16, Value, Option<ArmAction>) {
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.map(Value::to_string).unwrap_or_default()))
        .expect("request");
    if let Some(w) = who {
        req.extensions_mut().insert(Principal {
            id: w.to_owned(),
            issuer: "fhirlink".to_owned(),
        });
    }
    let resp = env.app.clone().oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let action = resp.extensions().get::<ArmAction>().cloned();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, action)
}

/// The action a 403 `AuthorizationFailed` names (`… perform action 'X' over scope …`).
fn refused_action(body: &Value) -> Option<String> {
    let m = body["error"]["message"].as_str()?;
    let (_, rest) = m.split_once("perform action '")?;
    Some(rest.split('\'').next()?.to_owned())
}

#[tokio::test]
async fn every_served_action_is_authorized_and_handed_on_under_one_name() {
    let env = env().await;
    let rg = rg("rg1");
    let sub = format!("/subscriptions/{SUB}");
    let svc = service_id("rg1", "myfhir");
    let net = format!("{rg}/providers/Microsoft.Network");
    let vnet = vnet_id("rg1", "v1");
    let nsg = format!("{net}/networkSecurityGroups/n1");
    let pe = pe_id("rg1", "pe1");
    let zone = zone_id("rg1");
    let ra = format!("{rg}/providers/Microsoft.Authorization/roleAssignments/0b0b0b0b-0000-4000-8000-000000000001");
    let rd = format!(
        "{sub}/providers/Microsoft.Authorization/roleDefinitions/{}",
        link_model::READER
    );
    let ds = format!("{svc}/providers/Microsoft.Insights/diagnosticSettings/export");
    let body =
        json!({"location": "westus2", "name": "x", "targetResourceGroup": rg, "resources": []});
    // (method, path, action): each asked by a principal without any role, so that every
    // action that is checked is refused with its name.
    let mut cases: Vec<(&str, String, &str)> = vec![
        (
            "GET",
            "/subscriptions".into(),
            "Microsoft.Resources/subscriptions/read",
        ),
        ("GET", sub.clone(), "Microsoft.Resources/subscriptions/read"),
        (
            "GET",
            format!("{sub}/resourcegroups"),
            "Microsoft.Resources/subscriptions/resourceGroups/read",
        ),
        (
            "POST",
            format!("{rg}/moveResources"),
            "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action",
        ),
        (
            "GET",
            format!("{sub}/resources"),
            "Microsoft.Resources/subscriptions/resources/read",
        ),
        (
            "GET",
            format!("{rg}/resources"),
            "Microsoft.Resources/subscriptions/resourceGroups/resources/read",
        ),
        (
            "GET",
            format!("{sub}/providers"),
            "Microsoft.Resources/subscriptions/providers/read",
        ),
        (
            "GET",
            format!("{sub}/providers/Microsoft.HealthcareApis"),
            "Microsoft.Resources/subscriptions/providers/read",
        ),
        (
            "POST",
            format!("{sub}/providers/Microsoft.HealthcareApis/checkNameAvailability"),
            "Microsoft.HealthcareApis/checkNameAvailability/read",
        ),
        (
            "GET",
            format!("{svc}/privateEndpointConnections"),
            "Microsoft.HealthcareApis/services/privateEndpointConnections/read",
        ),
        (
            "GET",
            format!("{svc}/privateLinkResources"),
            "Microsoft.HealthcareApis/services/privateLinkResources/read",
        ),
        (
            "GET",
            format!("{zone}/aLL"),
            "Microsoft.Network/privateDnsZones/ALL/read",
        ),
        (
            "GET",
            format!("{net}/virtualNetworks"),
            "Microsoft.Network/virtualNetworks/read",
        ),
        (
            "GET",
            format!("{rg}/providers/Microsoft.Authorization/roleAssignments"),
            "Microsoft.Authorization/roleAssignments/read",
        ),
        (
            "GET",
            format!("{sub}/providers/Microsoft.Authorization/roleDefinitions"),
            "Microsoft.Authorization/roleDefinitions/read",
        ),
    ];
    for ns in [
        "Microsoft.Resources",
        "Microsoft.HealthcareApis",
        "Microsoft.Network",
        "Microsoft.Compute",
        "Microsoft.Insights",
        "Microsoft.Authorization",
    ] {
        let register: &'static str = Box::leak(format!("{ns}/register/action").into_boxed_str());
        cases.push(("POST", format!("{sub}/providers/{ns}/register"), register));
    }
    let items = [
        (
            rg.clone(),
            "Microsoft.Resources/subscriptions/resourceGroups",
        ),
        (svc.clone(), "Microsoft.HealthcareApis/services"),
        (
            format!("{svc}/privateEndpointConnections/c1"),
            "Microsoft.HealthcareApis/services/privateEndpointConnections",
        ),
        (
            format!("{svc}/privateLinkResources/fhir"),
            "Microsoft.HealthcareApis/services/privateLinkResources",
        ),
        (
            format!("{svc}/smartClients/etl"),
            "Microsoft.HealthcareApis/services/smartClients",
        ),
        (vnet.clone(), "Microsoft.Network/virtualNetworks"),
        (
            format!("{vnet}/subnets/s1"),
            "Microsoft.Network/virtualNetworks/subnets",
        ),
        (
            format!("{vnet}/virtualNetworkPeerings/p1"),
            "Microsoft.Network/virtualNetworks/virtualNetworkPeerings",
        ),
        (nsg.clone(), "Microsoft.Network/networkSecurityGroups"),
        (
            format!("{nsg}/securityRules/r1"),
            "Microsoft.Network/networkSecurityGroups/securityRules",
        ),
        (
            format!("{net}/networkInterfaces/nic1"),
            "Microsoft.Network/networkInterfaces",
        ),
        (pe.clone(), "Microsoft.Network/privateEndpoints"),
        (
            format!("{pe}/privateDnsZoneGroups/default"),
            "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
        ),
        (zone.clone(), "Microsoft.Network/privateDnsZones"),
        (
            format!("{zone}/A/www"),
            "Microsoft.Network/privateDnsZones/A",
        ),
        (
            format!("{zone}/virtualNetworkLinks/l1"),
            "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
        ),
        (
            format!("{rg}/providers/Microsoft.Compute/virtualMachines/vm1"),
            "Microsoft.Compute/virtualMachines",
        ),
        (ds.clone(), "Microsoft.Insights/diagnosticSettings"),
        (ra.clone(), "Microsoft.Authorization/roleAssignments"),
        (rd.clone(), "Microsoft.Authorization/roleDefinitions"),
    ];
    let mut names: Vec<&'static str> = Vec::new();
    for (path, prefix) in &items {
        for (method, verb) in [
            ("GET", "read"),
            ("PUT", "write"),
            ("PATCH", "write"),
            ("DELETE", "delete"),
        ] {
            let name: &'static str = Box::leak(format!("{prefix}/{verb}").into_boxed_str());
            names.push(name);
            cases.push((method, path.clone(), name));
        }
    }
    let mut seen = BTreeSet::new();
    for (method, path, want) in &cases {
        let uri = with_version(path, version_for(path));
        let (status, v, action) = send(&env, Some("mallory"), method, &uri, Some(&body)).await;
        let action = action.unwrap_or_else(|| panic!("{method} {path}: no action handed on"));
        assert_eq!(action.name, *want, "{method} {path} ({status} {v})");
        if status == 403 {
            assert_eq!(
                refused_action(&v).as_deref(),
                Some(*want),
                "{method} {path}: authorized under another name: {v}"
            );
        }
        seen.insert(action.name);
        // The same request refused before the router (401 at the auth layer) is classified
        // by the same function.
        let bare = link_model::classify(link_model::Method::parse(method), path);
        assert_eq!(bare, action, "{method} {path}");
        let (status, _, action) = send(&env, None, method, &uri, Some(&body)).await;
        assert_eq!(status, 401);
        assert_eq!(action.map(|a| a.name), Some(*want), "{method} {path}");
    }
    // Every action the management API serves is in this list (the binary's own /metrics
    // and /fhirlink/backup aside, and the names of requests that name nothing).
    let served: BTreeSet<&str> = link_model::actions()
        .filter(|a| {
            !a.starts_with("unknown/")
                && *a != link_model::METRICS_READ
                && *a != link_model::BACKUP_ACTION
        })
        .collect();
    assert_eq!(seen, served);
    // Those checked were refused under their name by a principal without roles. Not checked:
    // subscriptions and the lists that show each caller what it may read, the built-in role
    // definitions (public knowledge), and the types that cannot be written (405 first).
    let unchecked: Vec<(&str, String)> = vec![
        ("GET", "/subscriptions".into()),
        ("GET", sub.clone()),
        ("GET", format!("{sub}/resourcegroups")),
        (
            "GET",
            format!("{rg}/providers/Microsoft.Authorization/roleAssignments"),
        ),
        (
            "GET",
            format!("{sub}/providers/Microsoft.Authorization/roleDefinitions"),
        ),
        ("GET", rd.clone()),
        ("PUT", rd.clone()),
        ("PUT", format!("{svc}/privateLinkResources/fhir")),
    ];
    for (method, path, want) in &cases {
        if unchecked.iter().any(|(m, p)| m == method && p == path) {
            continue;
        }
        let uri = with_version(path, version_for(path));
        let (status, v, _) = send(&env, Some("mallory"), method, &uri, Some(&body)).await;
        assert_eq!(status, 403, "{method} {path} ({want}): {v}");
    }

    // The ids and services handed on.
    let uri = with_version(&format!("{svc}/privateEndpointConnections/c1"), HC);
    let (_, _, a) = send(&env, Some("admin"), "GET", &uri, None).await;
    let a = a.expect("action");
    assert_eq!(a.service.as_deref(), Some("myfhir"));
    assert_eq!(
        a.resource_id.as_deref(),
        Some(format!("{svc}/privateEndpointConnections/c1").as_str())
    );
    let uri = with_version(&format!("{rg}/providers/Contoso.Widgets/gadgets/g1"), RES);
    let (status, _, a) = send(&env, Some("admin"), "GET", &uri, None).await;
    assert_eq!(status, 400);
    assert_eq!(a.map(|a| a.name), Some(link_model::UNKNOWN_READ));
}

async fn setup(env: &Env) {
    ok(
        env,
        "admin",
        "PUT",
        &rg("rg1"),
        Some(json!({"location": "westus2"})),
    )
    .await;
    ok(
        env,
        "admin",
        "PUT",
        &rg("rg2"),
        Some(json!({"location": "westus2"})),
    )
    .await;
    ok(
        env,
        "admin",
        "PUT",
        &service_id("rg1", "myfhir"),
        Some(json!({"location": "westus2", "kind": "fhir-R4", "properties": {}})),
    )
    .await;
    for (g, name, space) in [
        ("rg1", "v1", "10.1.0.0/16"),
        ("rg1", "v2", "10.2.0.0/16"),
        ("rg2", "v3", "10.3.0.0/16"),
    ] {
        ok(
            env,
            "admin",
            "PUT",
            &vnet_id(g, name),
            Some(json!({"location": "westus2", "tags": {"env": "test"}, "properties": {"addressSpace": {"addressPrefixes": [space]}, "subnets": [{"name": "s1", "properties": {"addressPrefix": space.replace(".0.0/16", ".1.0/24")}}]}})),
        )
        .await;
    }
    ok(
        env,
        "admin",
        "PUT",
        &zone_id("rg1"),
        Some(json!({"location": "global"})),
    )
    .await;
    ok(
        env,
        "admin",
        "PUT",
        &format!("{}/virtualNetworkLinks/l1", zone_id("rg1")),
        Some(json!({"location": "global", "properties": {"virtualNetwork": {"id": vnet_id("rg1", "v1")}, "registrationEnabled": false}})),
    )
    .await;
}

#[tokio::test]
async fn resources_list_as_arm_lists_them() {
    let env = env().await;
    setup(&env).await;
    let list = ok(
        &env,
        "admin",
        "GET",
        &format!("{}/resources", rg("rg1")),
        None,
    )
    .await;
    let types: Vec<&str> = list["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|r| r["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        types,
        [
            "Microsoft.HealthcareApis/services",
            "Microsoft.Network/privateDnsZones",
            "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
            "Microsoft.Network/virtualNetworks",
            "Microsoft.Network/virtualNetworks",
        ],
        "{list}"
    );
    let v1 = &list["value"][3];
    assert_eq!(v1["id"], vnet_id("rg1", "v1"));
    assert_eq!(v1["name"], "v1");
    assert_eq!(v1["location"], "westus2");
    assert_eq!(v1["tags"], json!({"env": "test"}));
    assert!(v1.get("properties").is_none(), "{v1}");
    assert_eq!(list["value"][0]["kind"], "fhir-R4");
    assert!(list.get("nextLink").is_none());

    // By type, across the subscription, as tools look for networks.
    let path = format!("/subscriptions/{SUB}/resources?$filter=resourceType%20eq%20'Microsoft.Network/virtualNetworks'");
    let list = ok(&env, "admin", "GET", &path, None).await;
    let ids: Vec<&str> = list["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        ids,
        [
            vnet_id("rg1", "v1"),
            vnet_id("rg1", "v2"),
            vnet_id("rg2", "v3")
        ]
    );

    // $top pages, and nextLink continues where the page stopped.
    let path = format!("/subscriptions/{SUB}/resources?$filter=resourceType%20eq%20'microsoft.network/virtualnetworks'&$top=2");
    let page = ok(&env, "admin", "GET", &path, None).await;
    assert_eq!(page["value"].as_array().map(Vec::len), Some(2), "{page}");
    let next = page["nextLink"].as_str().expect("nextLink");
    let (s, rest, _) = raw(&env, Some("admin"), "GET", next, None, &[]).await;
    assert_eq!(s, 200, "{rest}");
    assert_eq!(rest["value"][0]["id"], vnet_id("rg2", "v3"));
    assert!(rest.get("nextLink").is_none());

    // Refusals as ARM words them.
    let bad = format!("{}/resources?$filter=tagName%20eq%20'x'", rg("rg1"));
    expect_error(
        call(&env, "admin", "GET", &bad, None).await,
        400,
        "InvalidFilterInQueryString",
    );
    expect_error(
        call(
            &env,
            "admin",
            "GET",
            &format!("{}/resources", rg("nope")),
            None,
        )
        .await,
        404,
        "ResourceGroupNotFound",
    );
    // Read on the scope is needed, and only what the caller may read is listed.
    expect_error(
        call(
            &env,
            "bob",
            "GET",
            &format!("{}/resources", rg("rg1")),
            None,
        )
        .await,
        403,
        "AuthorizationFailed",
    );
    ok(
        &env,
        "admin",
        "PUT",
        &format!("{}/providers/Microsoft.Authorization/roleAssignments/0b0b0b0b-0000-4000-8000-0000000000b0", rg("rg2")),
        Some(json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{}", link_model::READER), "principalId": "bob"}})),
    )
    .await;
    let list = ok(
        &env,
        "bob",
        "GET",
        &format!("{}/resources", rg("rg2")),
        None,
    )
    .await;
    assert_eq!(list["value"].as_array().map(Vec::len), Some(1), "{list}");
    expect_error(
        call(
            &env,
            "bob",
            "GET",
            &format!("/subscriptions/{SUB}/resources"),
            None,
        )
        .await,
        403,
        "AuthorizationFailed",
    );
}

#[tokio::test]
async fn providers_answer_as_arm_does() {
    let env = env().await;
    // `az provider show -n Microsoft.HealthcareApis`.
    let p = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/providers/microsoft.healthcareapis"),
        None,
    )
    .await;
    assert_eq!(
        p["id"],
        format!("/subscriptions/{SUB}/providers/Microsoft.HealthcareApis")
    );
    assert_eq!(p["namespace"], "Microsoft.HealthcareApis");
    assert_eq!(p["registrationState"], "Registered");
    let types = p["resourceTypes"].as_array().expect("resourceTypes");
    let services = types
        .iter()
        .find(|t| t["resourceType"] == "services")
        .expect("services");
    let versions = services["apiVersions"].as_array().expect("apiVersions");
    assert!(versions.contains(&json!("2024-03-31")), "{services}");
    assert!(services["locations"]
        .as_array()
        .is_some_and(|l| l.contains(&json!("West US 2"))));
    assert!(types
        .iter()
        .any(|t| t["resourceType"] == "services/privateEndpointConnections"));

    let net = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Network"),
        None,
    )
    .await;
    let pe = net["resourceTypes"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["resourceType"] == "privateEndpoints")
        .cloned()
        .expect("privateEndpoints");
    assert!(
        pe["apiVersions"]
            .as_array()
            .is_some_and(|v| v.contains(&json!(NET))),
        "{pe}"
    );
    let zones = net["resourceTypes"]
        .as_array()
        .expect("types")
        .iter()
        .find(|t| t["resourceType"] == "privateDnsZones")
        .cloned()
        .expect("zones");
    assert_eq!(zones["locations"], json!(["global"]));

    let all = ok(
        &env,
        "admin",
        "GET",
        &format!("/subscriptions/{SUB}/providers"),
        None,
    )
    .await;
    let namespaces: Vec<&str> = all["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|p| p["namespace"].as_str().unwrap_or(""))
        .collect();
    for ns in [
        "Microsoft.Resources",
        "Microsoft.HealthcareApis",
        "Microsoft.Network",
        "Microsoft.Authorization",
        "Microsoft.Insights",
        "Microsoft.Compute",
    ] {
        assert!(namespaces.contains(&ns), "{namespaces:?}");
    }
    let reg = ok(
        &env,
        "admin",
        "POST",
        &format!("/subscriptions/{SUB}/providers/Microsoft.Network/register"),
        None,
    )
    .await;
    assert_eq!(reg["registrationState"], "Registered");
    assert_eq!(reg["namespace"], "Microsoft.Network");
    expect_error(
        call(
            &env,
            "admin",
            "GET",
            &format!("/subscriptions/{SUB}/providers/Contoso.Widgets"),
            None,
        )
        .await,
        404,
        "InvalidResourceNamespace",
    );
    expect_error(
        call(
            &env,
            "bob",
            "GET",
            &format!("/subscriptions/{SUB}/providers/Microsoft.Network"),
            None,
        )
        .await,
        403,
        "AuthorizationFailed",
    );
}

#[tokio::test]
async fn api_versions_are_those_of_the_type() {
    let env = env().await;
    setup(&env).await;
    let vnet = vnet_id("rg1", "v1");
    // A version the type never had: ARM's NoRegisteredProviderFound, worded as ARM words it.
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{vnet}?api-version=1999-01-01"),
        None,
        &[],
    )
    .await;
    let v = expect_error((s, v), 400, "NoRegisteredProviderFound");
    let m = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        m.starts_with("No registered resource provider found for location 'westus2' and API version '1999-01-01' for type 'virtualNetworks'. The supported api-versions are '2026-03-01, "),
        "{m}"
    );
    assert!(m.contains("The supported locations are 'eastus, "), "{m}");
    // A version of the namespace from before the type existed.
    let pe = pe_id("rg1", "pe1");
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{pe}?api-version=2018-08-01"),
        None,
        &[],
    )
    .await;
    let v = expect_error((s, v), 400, "NoRegisteredProviderFound");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("for type 'privateEndpoints'")));
    // Another namespace's version is not this one's.
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{}?api-version={NET}", service_id("rg1", "myfhir")),
        None,
        &[],
    )
    .await;
    expect_error((s, v), 400, "NoRegisteredProviderFound");
    // Microsoft.Resources' own: InvalidApiVersionParameter with the supported list.
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{}?api-version=1999-01-01", rg("rg1")),
        None,
        &[],
    )
    .await;
    let v = expect_error((s, v), 400, "InvalidApiVersionParameter");
    assert!(
        v["error"]["message"].as_str().is_some_and(|m| m.starts_with("The api-version '1999-01-01' is invalid. The supported versions are '2025-04-01,2025-03-01,")),
        "{v}"
    );
    // Malformed, and missing.
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!("{vnet}?api-version=latest"),
        None,
        &[],
    )
    .await;
    expect_error((s, v), 400, "InvalidApiVersionParameter");
    let (s, v, _) = raw(&env, Some("admin"), "GET", &vnet, None, &[]).await;
    let v = expect_error((s, v), 400, "MissingApiVersionParameter");
    assert_eq!(
        v["error"]["message"],
        "The api-version query parameter (?api-version=) is required for all requests."
    );
    // An unknown type of a known namespace.
    let (s, v, _) = raw(
        &env,
        Some("admin"),
        "GET",
        &format!(
            "{}/providers/Microsoft.Network/gadgets/g?api-version={NET}",
            rg("rg1")
        ),
        None,
        &[],
    )
    .await;
    expect_error((s, v), 400, "InvalidResourceType");
    // The versions the pinned SDKs send (sdk-tests/requirements.txt) and older ones work.
    for (path, version) in [
        (rg("rg1"), "2025-04-01"),
        (rg("rg1"), "2021-04-01"),
        (service_id("rg1", "myfhir"), "2024-03-31"),
        (service_id("rg1", "myfhir"), "2021-11-01"),
        (vnet.clone(), "2026-03-01"),
        (vnet.clone(), "2024-07-01"),
        (zone_id("rg1"), "2024-06-01"),
        (format!("{}/aLL", zone_id("rg1")), "2024-06-01"),
        (
            format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions"),
            "2022-04-01",
        ),
        (
            format!(
                "{}/providers/Microsoft.Authorization/roleAssignments",
                rg("rg1")
            ),
            "2022-04-01",
        ),
        (
            format!(
                "{}/providers/Microsoft.Insights/diagnosticSettings",
                service_id("rg1", "myfhir")
            ),
            "2021-05-01-preview",
        ),
    ] {
        let (s, v, _) = raw(
            &env,
            Some("admin"),
            "GET",
            &format!("{path}?api-version={version}"),
            None,
            &[],
        )
        .await;
        assert_eq!(s, 200, "{path} {version}: {v}");
    }
}
