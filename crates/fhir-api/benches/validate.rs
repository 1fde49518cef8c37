//! What `POST Patient/$validate` costs through `router(state)` (no socket): a Synthea Patient
//! (the first of testdata/synthea) validated as R4, and against a stored constraint profile
//! (identifier 1..* with a fixed system, gender required). Target (issue #18): under 1 ms
//! median. `cargo bench -p fhir-api --bench validate`.

use std::io::Read;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use fhir_api::{router, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

include!("../../../testdata/locate.rs.in");

/// The Patient of the first vendored Synthea bundle.
fn synthea_patient() -> Value {
    let mut text = Vec::new();
    let first = synthea_fixtures().into_iter().next().expect("a bundle");
    flate2::read::GzDecoder::new(std::fs::File::open(first).expect("bundle"))
        .read_to_end(&mut text)
        .expect("gzip");
    let bundle: Value = serde_json::from_slice(&text).expect("json");
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["resource"].clone())
        .find(|r| r["resourceType"] == "Patient")
        .expect("a Patient")
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> =
        Arc::new(fhir_store_sqlite::SqliteStore::open(dir.path()).expect("open store"));
    rt.block_on(store.create_service("default"))
        .expect("service");
    let app = router(AppState::new(store, ApiConfig::default()));
    let send = |method: &str, uri: &str, body: &[u8]| {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/fhir+json")
            .body(Body::from(body.to_vec()))
            .expect("request");
        rt.block_on(async {
            let resp = app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, body)
        })
    };
    let profile = json!({
    "resourceType": "StructureDefinition", "id": "mrn", "url": "http://example.org/sd/mrn",
    "name": "Mrn", "status": "active", "kind": "resource", "abstract": false, "type": "Patient",
    "derivation": "constraint", "differential": {"element": [
        {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1},
        {"id": "Patient.identifier.system", "path": "Patient.identifier.system", "min": 1,
         "fixedUri": "https://github.com/synthetichealth/synthea"},
        {"id": "Patient.gender", "path": "Patient.gender", "min": 1,
         "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/administrative-gender"}}
    ]}});
    let (status, _) = send(
        "PUT",
        "/StructureDefinition/mrn",
        &serde_json::to_vec(&profile).expect("json"),
    );
    assert!(status.is_success(), "{status}");
    let patient = serde_json::to_vec(&synthea_patient()).expect("json");
    let (status, out) = send("POST", "/Patient/$validate", &patient);
    assert_eq!(status, StatusCode::OK);
    let out: Value = serde_json::from_slice(&out).expect("outcome");
    assert_eq!(out["issue"][0]["severity"], "information", "{out}");

    let mut g = c.benchmark_group("POST Patient/$validate");
    g.bench_function("Synthea Patient, R4", |b| {
        b.iter(|| {
            assert_eq!(
                send("POST", "/Patient/$validate", &patient).0,
                StatusCode::OK
            )
        })
    });
    g.bench_function("Synthea Patient, stored profile", |b| {
        b.iter(|| {
            assert_eq!(
                send(
                    "POST",
                    "/Patient/$validate?profile=http://example.org/sd/mrn",
                    &patient
                )
                .0,
                StatusCode::OK
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
