//! The harness: a data plane over a store in a temporary folder, requests sent with
//! `oneshot`, the caller's [`Access`] as the request extension the authentication layer
//! would insert.

#![allow(dead_code)]

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use fhir_api::access::{Rights, Scopes};
use fhir_api::interaction::Kind;
use fhir_api::{router, Access, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A store backend the suite runs on.
pub struct Backend {
    pub name: &'static str,
    kind: Kind_,
}

#[derive(Clone, Copy)]
enum Kind_ {
    Sqlite,
    Postgres,
}

/// Every backend this build has: the embedded SQLite store, and PostgreSQL at
/// 127.0.0.1:5432 with a freshly created database per server, dropped with it (the tests fail,
/// never skip, when that PostgreSQL is not running; scripts/test starts it).
pub fn backends() -> Vec<Backend> {
    vec![
        Backend {
            name: "sqlite",
            kind: Kind_::Sqlite,
        },
        Backend {
            name: "postgres",
            kind: Kind_::Postgres,
        },
    ]
}

/// What keeps a store's data alive for as long as its server: a folder or a database.
enum Keep {
    Dir(tempfile::TempDir),
    Database(fhir_store_postgres::scratch::ScratchDatabase),
    /// The store's, and the bulk engine's output folder.
    Bulk(Box<Keep>, tempfile::TempDir),
}

impl Backend {
    async fn open(&self) -> (Arc<dyn Store>, Keep) {
        match self.kind {
            Kind_::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = fhir_store_sqlite::SqliteStore::open(dir.path()).expect("open store");
                (Arc::new(store), Keep::Dir(dir))
            }
            Kind_::Postgres => {
                let db = fhir_store_postgres::scratch::ScratchDatabase::create()
                    .await
                    .unwrap_or_else(|e| panic!("scratch database: {e}"));
                let store = fhir_store_postgres::PgStore::connect(
                    &db.url(),
                    fhir_store_postgres::PgConfig::default(),
                )
                .await
                .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()));
                (Arc::new(store), Keep::Database(db))
            }
        }
    }
}

pub struct Server {
    pub backend: &'static str,
    pub store: Arc<dyn Store>,
    app: Router,
    _keep: Keep,
}

/// An answer: status, body (JSON or `Null`), headers, and the interaction the router said
/// it served.
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: HeaderMap,
    pub kind: Option<Kind>,
}

impl Server {
    pub async fn start(backend: &Backend) -> Server {
        Server::start_with(backend, ApiConfig::default()).await
    }

    /// Sends a request as `access` (none: the router's own unrestricted default).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        access: Option<&Access>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(v) => {
                req = req.header("content-type", "application/fhir+json");
                Body::from(serde_json::to_vec(v).expect("json"))
            }
            None => Body::empty(),
        };
        let mut req = req.body(body).expect("request");
        if let Some(a) = access {
            req.extensions_mut().insert(Arc::new(a.clone()));
        }
        answer(self.app.clone().oneshot(req).await.expect("infallible")).await
    }

    /// Sends a body with its own content type (in `headers`).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        access: Option<&Access>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = body
            .map(|v| Body::from(serde_json::to_vec(v).expect("json")))
            .unwrap_or_else(Body::empty);
        let mut req = req.body(body).expect("request");
        if let Some(a) = access {
            req.extensions_mut().insert(Arc::new(a.clone()));
        }
        answer(self.app.clone().oneshot(req).await.expect("infallible")).await
    }

    pub async fn get(&self, path: &str, access: Option<&Access>) -> Answer {
        self.send(Method::GET, path, None, access, &[]).await
    }

    /// PUTs a resource as the unrestricted caller; panics unless it is written.
    pub async fn put(&self, resource: Value) {
        let path = format!(
            "/{}/{}",
            resource["resourceType"].as_str().expect("type"),
            resource["id"].as_str().expect("id")
        );
        let a = self
            .send(Method::PUT, &path, Some(&resource), None, &[])
            .await;
        assert!(a.status.is_success(), "{path}: {} {}", a.status, a.body);
    }

    pub async fn delete(&self, path: &str) {
        let a = self.send(Method::DELETE, path, None, None, &[]).await;
        assert!(a.status.is_success(), "{path}: {} {}", a.status, a.body);
    }

    /// POSTs a batch or transaction Bundle.
    pub async fn bundle(&self, bundle: &Value, access: Option<&Access>) -> Answer {
        self.send(Method::POST, "/", Some(bundle), access, &[])
            .await
    }
}

async fn answer(resp: axum::response::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let kind = resp.extensions().get::<Kind>().copied();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        headers,
        kind,
    }
}

/// A caller with `rights` and the SMART `scopes`, in `patient`'s launch context.
pub fn caller(rights: Rights, scopes: &[&str], patient: Option<&str>) -> Access {
    Access {
        principal: "tester".into(),
        rights,
        scopes: Scopes::parse(scopes.iter().copied()),
        patient: patient.map(str::to_owned),
    }
}

pub fn reader() -> Rights {
    Rights {
        read: true,
        ..Rights::default()
    }
}

/// A Bundle of `kind` with `entries` (`(method, url, resource)`).
pub fn bundle(kind: &str, entries: &[(&str, &str, Option<Value>)]) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(m, u, r)| {
            let mut e = serde_json::json!({"request": {"method": m, "url": u}});
            if let Some(r) = r {
                e["resource"] = r.clone();
            }
            e
        })
        .collect();
    serde_json::json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

/// The status code of a response entry (`"404 Not Found"` → 404).
pub fn entry_status(e: &Value) -> u16 {
    e["response"]["status"]
        .as_str()
        .and_then(|s| s.split(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A response as the client got it: status, headers and the body's bytes unparsed (for
/// tests about the bytes themselves, empty bodies and bodies that are not JSON).
pub struct Raw {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn text(&self) -> String {
        String::from_utf8(self.bytes.clone()).expect("UTF-8 body")
    }

    /// The body as JSON (panics with the text when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.bytes)))
    }

    /// Status and JSON body (`Null` when empty).
    pub fn status_json(&self) -> (u16, Value) {
        let v = if self.bytes.is_empty() {
            Value::Null
        } else {
            self.json()
        };
        (self.status.as_u16(), v)
    }

    /// A header's value as text (panics when it is absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header: {:?}", self.headers))
            .to_str()
            .expect("header text")
    }
}

impl Server {
    /// A data plane with `config` (what the binary's flags set: `--max-body-bytes`, …).
    /// A server with the bulk engine: export files under a temporary folder, `$import`
    /// allowed to read `import_dir`, polls never refused as too fast.
    pub async fn start_with_bulk(backend: &Backend, import_dir: &std::path::Path) -> Server {
        let (store, keep) = backend.open().await;
        store.create_service("default").await.expect("service");
        let out = tempfile::tempdir().expect("tempdir");
        let mut config = fhir_bulk::BulkConfig::new(out.path());
        config.min_poll_interval = std::time::Duration::ZERO;
        config.import_dirs = vec![import_dir.to_path_buf()];
        config.import_chunk_lines = 3;
        let bulk = fhir_bulk::Bulk::new(store.clone(), config);
        bulk.start().await.expect("bulk engine");
        let app = router(AppState::with_bulk(
            store.clone(),
            ApiConfig::default(),
            bulk,
        ));
        Server {
            backend: backend.name,
            store,
            app,
            _keep: Keep::Bulk(Box::new(keep), out),
        }
    }

    pub async fn start_with(backend: &Backend, config: ApiConfig) -> Server {
        let (store, keep) = backend.open().await;
        store.create_service("default").await.expect("service");
        let app = router(AppState::new(store.clone(), config));
        Server {
            backend: backend.name,
            store,
            app,
            _keep: keep,
        }
    }

    /// Sends `body` as it is, with exactly `headers` (no content type added), as the
    /// unrestricted caller.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
    ) -> Raw {
        let method = Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.into())).expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Raw {
            status,
            headers,
            bytes: bytes.to_vec(),
        }
    }

    /// Sends `body` as `application/fhir+json` with `headers`.
    pub async fn raw_json(
        &self,
        method: &str,
        path: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> Raw {
        let mut all = vec![("content-type", "application/fhir+json")];
        all.extend_from_slice(headers);
        self.raw(method, path, &all, serde_json::to_vec(body).expect("json"))
            .await
    }

    /// Creates a resource (`POST /<type>`) and returns its stored form.
    pub async fn create(&self, resource: &Value) -> Value {
        let t = resource["resourceType"].as_str().expect("resourceType");
        let r = self.raw_json("POST", &format!("/{t}"), resource, &[]).await;
        let (status, body) = r.status_json();
        assert_eq!(status, 201, "{}: create {t}: {body}", self.backend);
        body
    }
}

/// Asserts that `v` is an OperationOutcome with an issue of this code, and that some issue's
/// expression equals `expression` when given.
pub fn assert_outcome(v: &Value, code: &str, expression: Option<&str>) {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    let issues = v["issue"].as_array().expect("issues");
    assert!(
        issues.iter().any(|i| i["code"] == code),
        "no issue with code {code}: {v}"
    );
    if let Some(e) = expression {
        assert!(
            issues.iter().any(|i| i["expression"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == e))),
            "no issue at {e}: {v}"
        );
    }
}

impl Server {
    /// `GET path` with `headers`, as the unrestricted caller.
    pub async fn raw_get(&self, path: &str, headers: &[(&str, &str)]) -> Raw {
        self.raw("GET", path, headers, Vec::new()).await
    }
}

// Where the test data lives: `test_data` (the fetched R4 packages), `fixture`,
// `synthea_fixtures` (testdata/) and `full_data` (FHIRLINK_FULL_DATA, only when asked).
include!("../../../../testdata/locate.rs.in");
