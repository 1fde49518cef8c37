//! Shared set-up of the fuzz targets that drive `fhir_api::router`: one tempdir SQLite store
//! and one current-thread tokio runtime per process, made once (the targets are real requests
//! through the real router, so they are slower than the pure ones).

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fhir_api::{router, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use tower::ServiceExt;

pub struct Api {
    pub rt: tokio::runtime::Runtime,
    pub app: axum::Router,
    _dir: tempfile::TempDir,
}

/// The process's router on a fresh store with the service `default`.
pub fn api() -> &'static Api {
    static API: OnceLock<Api> = OnceLock::new();
    API.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(fhir_store_sqlite::SqliteStore::open(dir.path()).expect("open store"));
        rt.block_on(store.create_service("default")).expect("service");
        let app = router(AppState::new(store, ApiConfig::default()));
        Api { rt, app, _dir: dir }
    })
}

impl Api {
    /// Sends one request and returns its status and body. A panic in a handler aborts the
    /// process (libFuzzer's panic hook runs before the router's catch-panic layer).
    pub fn send(&self, method: &str, uri: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        self.rt.block_on(async {
            let resp = self.app.clone().oneshot(req).await.expect("infallible");
            let status = resp.status();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, body.to_vec())
        })
    }
}
