//! Two control planes on one store deciding at once on *different* documents whose rules
//! bind each other (issue #17): two network interfaces asking for the same static address
//! of one subnet, two asking for the next free one, a network deleted while an interface
//! is created in it. Each node decides on its own state; the store refuses a decision made
//! while another node changed any control-plane document (`DocumentWrite::Unchanged`), and
//! the node catches up and decides again, so that never both win where the rules allow one.
//! Run on one SQLite store and on one PostgreSQL store (a scratch database on 127.0.0.1).

use std::sync::Arc;

use axum::body::Body;
use fhir_store::Store;
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};
use fhir_store_sqlite::SqliteStore;
use http::Request;
use http_body_util::BodyExt;
use link_api::{router, ControlPlane};
use link_model::Principal;
use serde_json::{json, Value};
use tower::ServiceExt;

const RG: &str = "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups/race";
const NET: &str = "2026-03-01";
const ROUNDS: usize = 25;

async fn call(
    cp: &Arc<ControlPlane>,
    method: &str,
    path: String,
    body: Option<Value>,
) -> (u16, Value) {
    let version = if path.contains("/providers/") {
        NET
    } else {
        "2025-04-01"
    };
    let req = Request::builder()
        .method(method)
        .uri(format!("{path}?api-version={version}"))
        .header("content-type", "application/json")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .map(|mut r| {
            r.extensions_mut().insert(Principal {
                id: "admin".into(),
                issuer: "fhirlink".into(),
            });
            r
        })
        .expect("request");
    let resp = router(cp.clone()).oneshot(req).await.expect("router");
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

fn vnet(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Network/virtualNetworks/{name}")
}

fn nic(name: &str) -> String {
    format!("{RG}/providers/Microsoft.Network/networkInterfaces/{name}")
}

fn nic_body(vnet_name: &str, ip: Option<&str>) -> Value {
    let mut props = json!({"subnet": {"id": format!("{}/subnets/default", vnet(vnet_name))}});
    if let Some(ip) = ip {
        props["privateIPAddress"] = json!(ip);
        props["privateIPAllocationMethod"] = json!("Static");
    }
    json!({"location": "westus", "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": props}]}})
}

async fn put_vnet(cp: &Arc<ControlPlane>, name: &str, prefix: &str) {
    let (status, body) = call(
        cp,
        "PUT",
        vnet(name),
        Some(json!({"location": "westus", "properties": {"addressSpace": {"addressPrefixes": [prefix]}, "subnets": [{"name": "default", "properties": {"addressPrefix": prefix}}]}})),
    )
    .await;
    assert!((200..300).contains(&status), "{status} {body}");
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// Every network interface's address in the store, as a node that starts now loads it.
async fn stored_addresses(store: Arc<dyn Store>) -> Vec<(String, String)> {
    let fresh = Arc::new(ControlPlane::open(store, "admin").await.expect("fresh"));
    let (status, list) = call(
        &fresh,
        "GET",
        format!("{RG}/providers/Microsoft.Network/networkInterfaces"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{list}");
    list["value"]
        .as_array()
        .expect("value")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap_or("").to_owned(),
                n["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

async fn race(store: Arc<dyn Store>) {
    let one = Arc::new(
        ControlPlane::open(store.clone(), "admin")
            .await
            .expect("one"),
    );
    let two = Arc::new(
        ControlPlane::open(store.clone(), "admin")
            .await
            .expect("two"),
    );
    let (status, body) = call(&one, "PUT", RG.into(), Some(json!({"location": "westus"}))).await;
    assert!(ok(status), "{status} {body}");
    put_vnet(&one, "net", "10.1.0.0/24").await;
    put_vnet(&one, "free", "10.3.0.0/24").await;

    let mut expected = std::collections::BTreeMap::new();
    for i in 0..ROUNDS {
        // The same static address, asked for through both nodes at once: one gets it.
        let ip = format!("10.1.0.{}", 10 + i);
        let (a, b) = tokio::join!(
            call(
                &one,
                "PUT",
                nic(&format!("a{i}")),
                Some(nic_body("net", Some(&ip)))
            ),
            call(
                &two,
                "PUT",
                nic(&format!("b{i}")),
                Some(nic_body("net", Some(&ip)))
            ),
        );
        assert!(
            ok(a.0) != ok(b.0),
            "round {i}: {} {} / {} {}",
            a.0,
            a.1,
            b.0,
            b.1
        );
        let (winner, loser) = if ok(a.0) { ("a", &b) } else { ("b", &a) };
        assert_eq!(loser.0, 400, "round {i}: {}", loser.1);
        assert_eq!(
            code(&loser.1),
            "PrivateIPAddressInUse",
            "round {i}: {}",
            loser.1
        );
        expected.insert(format!("{winner}{i}"), ip);

        // The next free address, through both nodes at once: two different ones.
        let (c, d) = tokio::join!(
            call(
                &one,
                "PUT",
                nic(&format!("c{i}")),
                Some(nic_body("free", None))
            ),
            call(
                &two,
                "PUT",
                nic(&format!("d{i}")),
                Some(nic_body("free", None))
            ),
        );
        assert!(
            ok(c.0) && ok(d.0),
            "round {i}: {} {} / {} {}",
            c.0,
            c.1,
            d.0,
            d.1
        );
        let ip_of = |v: &Value| {
            v["properties"]["ipConfigurations"][0]["properties"]["privateIPAddress"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        };
        assert_ne!(ip_of(&c.1), ip_of(&d.1), "round {i}: both got one address");
        expected.insert(format!("c{i}"), ip_of(&c.1));
        expected.insert(format!("d{i}"), ip_of(&d.1));

        // A network deleted through one node while an interface is made in it through the
        // other: either the interface is refused, or the deletion is (its subnet in use).
        let net = format!("gone{i}");
        put_vnet(&one, &net, "10.2.0.0/24").await;
        let (del, made) = tokio::join!(
            call(&one, "DELETE", vnet(&net), None),
            call(
                &two,
                "PUT",
                nic(&format!("e{i}")),
                Some(nic_body(&net, None))
            ),
        );
        assert!(
            ok(del.0) != ok(made.0),
            "round {i}: delete {} {} / interface {} {}",
            del.0,
            del.1,
            made.0,
            made.1
        );
        if ok(made.0) {
            expected.insert(format!("e{i}"), ip_of(&made.1));
            // Clean up for the next round: the interface, then its network.
            let (s, b) = call(&two, "DELETE", nic(&format!("e{i}")), None).await;
            assert!(ok(s), "{s} {b}");
            expected.remove(&format!("e{i}"));
            let (s, b) = call(&one, "DELETE", vnet(&net), None).await;
            assert!(ok(s), "{s} {b}");
        } else {
            let (s, _) = call(&one, "GET", vnet(&net), None).await;
            assert_eq!(s, 404, "round {i}: the network deleted");
        }
    }

    // What a node starting now reads: exactly the winners, each address once per subnet.
    let stored = stored_addresses(store).await;
    let stored: std::collections::BTreeMap<String, String> = stored.into_iter().collect();
    assert_eq!(stored, expected);
    let mut addresses: Vec<&String> = stored.values().collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        stored.len(),
        "an address given twice: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_sqlite_store_never_both_win() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    race(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_postgres_store_never_both_win() {
    let db = ScratchDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("scratch database: {e}"));
    let store = PgStore::connect(&db.url(), PgConfig::default())
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
    race(Arc::new(store)).await;
}
