//! What `GET /metadata` costs through `router(state)` (no socket): the 1.5 MB
//! CapabilityStatement served from its cache, a `_summary=true` view of it, a 304 for a
//! client that has it, and a render (a Host not seen before, so a cache miss).
//! `cargo bench -p fhir-api --bench capabilities`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::{criterion_group, criterion_main, Criterion};
use fhir_api::{router, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use tower::ServiceExt;

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
    let get = |uri: &str, host: &str, if_none_match: Option<&str>| {
        let mut req = Request::builder().uri(uri).header(header::HOST, host);
        if let Some(tag) = if_none_match {
            req = req.header(header::IF_NONE_MATCH, tag);
        }
        let req = req.body(Body::empty()).expect("request");
        rt.block_on(async {
            let resp = app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let etag = resp.headers().get(header::ETAG).cloned();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, etag, body.len())
        })
    };
    let (status, etag, len) = get("/metadata", "localhost", None);
    assert_eq!(status, StatusCode::OK);
    assert!(len > 1_000_000, "{len} bytes");
    let etag = etag
        .and_then(|e| e.to_str().ok().map(str::to_owned))
        .unwrap_or_default();

    let mut g = c.benchmark_group("GET /metadata");
    g.bench_function("full statement", |b| {
        b.iter(|| assert_eq!(get("/metadata", "localhost", None).0, StatusCode::OK))
    });
    g.bench_function("_summary=true", |b| {
        b.iter(|| {
            assert_eq!(
                get("/metadata?_summary=true", "localhost", None).0,
                StatusCode::OK
            )
        })
    });
    g.bench_function("If-None-Match (304)", |b| {
        b.iter(|| {
            assert_eq!(
                get("/metadata", "localhost", Some(&etag)).0,
                StatusCode::NOT_MODIFIED
            )
        })
    });
    let mut n = 0u64;
    g.bench_function("render (new Host, cache miss)", |b| {
        b.iter(|| {
            n += 1;
            let host = format!("h{n}.example");
            assert_eq!(get("/metadata", &host, None).0, StatusCode::OK)
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
