//! Bulk data through the router on every backend: `$export` of a service with history and
//! a deletion, then `$import` of those files into another server — the same resources,
//! versions, instants and history on the other side, a broken line reported by number — so
//! the bulk paths (`Store::snapshot`/`scan`, `WriteTx::put_version`) are exercised on
//! PostgreSQL as on SQLite.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{backends, Server};

async fn wait(s: &Server, status_url: &str) -> Value {
    let path = status_url.trim_start_matches("http://localhost");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = s.send(Method::GET, path, None, None, &[]).await;
        match a.status {
            StatusCode::OK => return a.body,
            StatusCode::ACCEPTED | StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("[{}] poll {path}: {other} {}", s.backend, a.body),
        }
        assert!(
            Instant::now() < deadline,
            "[{}] {path} did not finish",
            s.backend
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn put(s: &Server, body: Value) {
    let path = format!(
        "/{}/{}",
        body["resourceType"].as_str().unwrap(),
        body["id"].as_str().unwrap()
    );
    let a = s.send(Method::PUT, &path, Some(&body), None, &[]).await;
    assert!(
        a.status.is_success(),
        "[{}] PUT {path}: {}",
        s.backend,
        a.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_keeps_versions_on_every_backend() {
    for backend in backends() {
        let inbox = tempfile::tempdir().unwrap();
        let a = Server::start_with_bulk(&backend, inbox.path()).await;
        put(
            &a,
            json!({"resourceType": "Patient", "id": "p1", "gender": "female"}),
        )
        .await;
        put(
            &a,
            json!({"resourceType": "Patient", "id": "p1", "gender": "male"}),
        )
        .await;
        put(
            &a,
            json!({"resourceType": "Patient", "id": "p2", "gender": "female"}),
        )
        .await;
        put(
            &a,
            json!({"resourceType": "Observation", "id": "o1", "status": "final",
                   "code": {"text": "w"}, "subject": {"reference": "Patient/p1"},
                   "valueQuantity": {"value": 70.10}}),
        )
        .await;
        let d = a.send(Method::DELETE, "/Patient/p2", None, None, &[]).await;
        assert_eq!(d.status, StatusCode::NO_CONTENT);
        let k = a
            .send(
                Method::GET,
                "/$export?includeAssociatedData=_history,_deleted",
                None,
                None,
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(k.status, StatusCode::ACCEPTED, "[{}] {}", a.backend, k.body);
        let url = k.headers["content-location"].to_str().unwrap().to_owned();
        let manifest = wait(&a, &url).await;
        let mut inputs = Vec::new();
        for f in manifest["output"].as_array().unwrap() {
            let file = f["url"].as_str().unwrap();
            let raw = a
                .raw(
                    "GET",
                    file.trim_start_matches("http://localhost"),
                    &[],
                    Vec::new(),
                )
                .await;
            assert_eq!(raw.status, StatusCode::OK);
            let name = file.rsplit('/').next().unwrap();
            let path = inbox.path().join(name);
            std::fs::write(&path, &raw.bytes).unwrap();
            inputs.push(json!({"name": "input", "part": [
                {"name": "type", "valueString": f["type"]},
                {"name": "url", "valueUri": format!("file://{}", path.display())}]}));
        }
        let broken = inbox.path().join("Patient-broken.ndjson");
        std::fs::write(
            &broken,
            "{\"resourceType\": \"Patient\", \"id\": \"p7\"}\nnot json\n",
        )
        .unwrap();
        inputs.push(json!({"name": "input", "part": [
            {"name": "type", "valueString": "Patient"},
            {"name": "url", "valueUri": format!("file://{}", broken.display())}]}));
        let mut parameter =
            vec![json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"})];
        parameter.extend(inputs);
        let body = json!({"resourceType": "Parameters", "parameter": parameter});

        let b = Server::start_with_bulk(&backend, inbox.path()).await;
        let k = b
            .send(
                Method::POST,
                "/$import",
                Some(&body),
                None,
                &[("prefer", "respond-async")],
            )
            .await;
        assert_eq!(k.status, StatusCode::ACCEPTED, "[{}] {}", b.backend, k.body);
        let url = k.headers["content-location"].to_str().unwrap().to_owned();
        assert!(url.contains("/_operations/import/"), "{url}");
        let done = wait(&b, &url).await;
        let written: u64 = done["output"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["count"].as_u64().unwrap())
            .sum();
        // p1 v1 and v2, p2 and its deletion, o1, p7.
        assert_eq!(written, 6, "[{}] {done}", b.backend);
        assert_eq!(done["error"][0]["count"], 1, "[{}] {done}", b.backend);
        for path in [
            "/Patient/p1",
            "/Patient/p1/_history/1",
            "/Observation/o1",
            "/Patient/p1/_history",
        ] {
            let x = a.send(Method::GET, path, None, None, &[]).await;
            let y = b.send(Method::GET, path, None, None, &[]).await;
            assert_eq!(x.status, StatusCode::OK, "[{}] {path}", a.backend);
            if path.ends_with("_history") {
                let resources = |v: &Value| -> Vec<Value> {
                    v["entry"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|e| e["resource"].clone())
                        .collect()
                };
                assert_eq!(
                    resources(&x.body),
                    resources(&y.body),
                    "[{}] {path}",
                    b.backend
                );
            } else {
                assert_eq!(x.body, y.body, "[{}] {path}", b.backend);
            }
        }
        let gone = b.send(Method::GET, "/Patient/p2", None, None, &[]).await;
        assert_eq!(gone.status, StatusCode::GONE, "[{}]", b.backend);
        let found = b
            .send(
                Method::GET,
                "/Observation?value-quantity=70.1",
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(found.body["total"], 1, "[{}] {}", b.backend, found.body);
    }
}
