//! Test harness: a control plane on a SQLite store in a temporary folder, driven through the
//! router with `oneshot` and a `Principal` extension standing in for the auth layer.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::Router;
use fhir_store::Store;
use fhir_store_sqlite::SqliteStore;
use http::Request;
use http_body_util::BodyExt;
use link_api::{router, ControlPlane};
use link_model::Principal;
use serde_json::{json, Value};
use tower::ServiceExt;

pub const SUB: &str = "6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e";
pub const SUB2: &str = "0b7e3c1d-1111-4222-8333-944455566677";
pub const HC: &str = "2024-03-31";
pub const NET: &str = "2026-03-01";
pub const DNS: &str = "2024-06-01";
pub const RES: &str = "2025-04-01";
pub const AUTHZ: &str = "2022-04-01";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub store: Arc<dyn Store>,
    pub cp: Arc<ControlPlane>,
    pub app: Router,
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    open_in(dir).await
}

pub async fn open_in(dir: tempfile::TempDir) -> Env {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("open store"));
    let cp = Arc::new(
        ControlPlane::open(store.clone(), "admin")
            .await
            .expect("open control plane"),
    );
    let app = router(cp.clone());
    Env {
        dir,
        store,
        cp,
        app,
    }
}

/// Reopens the same data folder, as a restart does.
pub async fn restart(env: Env) -> Env {
    let Env {
        dir,
        store,
        cp,
        app,
    } = env;
    drop((store, cp, app));
    open_in(dir).await
}

pub fn rg(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{name}")
}

pub fn with_version(path: &str, v: &str) -> String {
    if path.contains("api-version") || v.is_empty() {
        path.to_owned()
    } else if path.contains('?') {
        format!("{path}&api-version={v}")
    } else {
        format!("{path}?api-version={v}")
    }
}

/// The api-version an SDK would send for a path.
pub fn version_for(path: &str) -> &'static str {
    // The type is the one of the last provider section: an extension resource (a role
    // assignment, a diagnostic setting) takes its own namespace's version.
    let lower = path.split('?').next().unwrap_or(path).to_ascii_lowercase();
    let p = lower.rsplit("/providers/").next().unwrap_or(&lower);
    // ARM's own endpoints take Microsoft.Resources' versions: the generic resource list, the
    // providers (`…/providers`, `…/providers/{namespace}`, `…/register`).
    if lower.ends_with("/resources")
        || lower.ends_with("/providers")
        || lower.ends_with("/register")
        || (lower.contains("/providers/") && !p.contains('/'))
    {
        return RES;
    }
    if p.contains("microsoft.healthcareapis") {
        HC
    } else if p.contains("privatednszones") {
        DNS
    } else if p.contains("microsoft.authorization") {
        AUTHZ
    } else if p.contains("microsoft.network") {
        NET
    } else if p.contains("microsoft.compute") {
        "2024-07-01"
    } else if p.contains("microsoft.insights") {
        "2021-05-01-preview"
    } else {
        RES
    }
}

pub async fn raw(
    env: &Env,
    who: Option<&str>,
    method: &str,
    uri: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value, http::HeaderMap) {
    let mut b = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let mut req = b
        .body(Body::from(body.unwrap_or("").to_owned()))
        .expect("request");
    if let Some(w) = who {
        req.extensions_mut().insert(Principal {
            id: w.to_owned(),
            issuer: "fhirlink".to_owned(),
        });
    }
    let resp = env.app.clone().oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let v = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}))
    };
    (status, v, headers)
}

/// Calls as `who` with the SDK's api-version for the path.
pub async fn call(
    env: &Env,
    who: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let uri = with_version(path, version_for(path));
    let text = body.map(|b| b.to_string());
    let (s, v, _) = raw(env, Some(who), method, &uri, text.as_deref(), &[]).await;
    (s, v)
}

pub async fn put(env: &Env, who: &str, path: &str, body: Value) -> (u16, Value) {
    call(env, who, "PUT", path, Some(body)).await
}

pub async fn get(env: &Env, who: &str, path: &str) -> (u16, Value) {
    call(env, who, "GET", path, None).await
}

/// Asserts a 2xx answer and returns the body.
pub async fn ok(env: &Env, who: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let (s, v) = call(env, who, method, path, body).await;
    assert!((200..300).contains(&s), "{method} {path} answered {s}: {v}");
    v
}

/// Asserts an ARM error with this status and code.
pub fn expect_error(got: (u16, Value), status: u16, code: &str) -> Value {
    assert_eq!(got.0, status, "status; body {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "code; body {}", got.1);
    assert!(got.1["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    got.1
}

pub fn service_id(rg_name: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.HealthcareApis/services/{name}",
        rg(rg_name)
    )
}

pub fn vnet_id(rg_name: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/virtualNetworks/{name}",
        rg(rg_name)
    )
}

pub fn pe_id(rg_name: &str, name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/privateEndpoints/{name}",
        rg(rg_name)
    )
}

pub fn zone_id(rg_name: &str) -> String {
    format!(
        "{}/providers/Microsoft.Network/privateDnsZones/privatelink.azurehealthcareapis.com",
        rg(rg_name)
    )
}

/// The seed's prerequisites: resource group, FHIR service, virtual network with a subnet.
pub async fn seed(
    env: &Env,
    rg_name: &str,
    svc: &str,
    vnet: &str,
    space: &str,
    subnet: &str,
    location: &str,
) {
    ok(
        env,
        "admin",
        "PUT",
        &rg(rg_name),
        Some(json!({"location": location})),
    )
    .await;
    ok(
        env,
        "admin",
        "PUT",
        &service_id(rg_name, svc),
        Some(
            json!({"location": "westus2", "kind": "fhir-R4", "properties": {"accessPolicies": []}}),
        ),
    )
    .await;
    ok(
        env,
        "admin",
        "PUT",
        &vnet_id(rg_name, vnet),
        Some(json!({"location": location, "properties": {"addressSpace": {"addressPrefixes": [space]}, "subnets": [{"name": "default", "properties": {"addressPrefix": subnet}}]}})),
    )
    .await;
}

pub fn pe_body(
    location: &str,
    subnet_id: &str,
    service: &str,
    manual: bool,
    message: Option<&str>,
) -> Value {
    let mut conn = json!({"name": "conn", "properties": {"privateLinkServiceId": service, "groupIds": ["fhir"]}});
    if let Some(m) = message {
        conn["properties"]["requestMessage"] = json!(m);
    }
    let list = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    json!({"location": location, "properties": {"subnet": {"id": subnet_id}, list: [conn]}})
}

/// Gives `principal` a built-in role at `scope`.
pub async fn assign(env: &Env, scope: &str, principal: &str, role: &str) {
    let name = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        fxhash(principal) as u32,
        fxhash(&format!("{scope}{role}")) & 0xffff_ffff_ffff
    );
    ok(
        env,
        "admin",
        "PUT",
        &format!("{scope}/providers/Microsoft.Authorization/roleAssignments/{name}"),
        Some(json!({"properties": {"roleDefinitionId": format!("/subscriptions/{SUB}/providers/Microsoft.Authorization/roleDefinitions/{role}"), "principalId": principal}})),
    )
    .await;
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}
