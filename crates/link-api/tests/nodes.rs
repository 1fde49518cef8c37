//! Several control planes on one store, as several nodes (issue #17), in one process: two
//! `ControlPlane`s on one SQLite store follow each other through its change feed. A change
//! made through one is in the other's state (and so its network plane) before it is
//! answered; a node that cannot read the feed stops serving, and serves again once it
//! reads the feed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use fhir_store::{
    Document, DocumentChanges, DocumentStore, DocumentWrite, HistoryPage, HistoryQuery,
    HistoryScope, Result, ScanQuery, SearchPage, SearchQuery, Snapshot, Store, StoreError,
    StoredResource, WriteTx,
};
use fhir_store_sqlite::SqliteStore;
use http::Request;
use link_api::{router, ControlPlane, NodeConfig, LAGGING_NODES_HEADER};
use link_model::Principal;
use serde_json::json;
use tower::ServiceExt;

const RG: &str = "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups";

/// A store whose change feed can be cut off (every other call passes through).
struct Cut {
    inner: Arc<SqliteStore>,
    cut: AtomicBool,
}

#[async_trait]
impl Store for Cut {
    async fn create_service(&self, name: &str) -> Result<()> {
        self.inner.create_service(name).await
    }
    async fn delete_service(&self, name: &str) -> Result<bool> {
        self.inner.delete_service(name).await
    }
    async fn list_services(&self) -> Result<Vec<String>> {
        self.inner.list_services().await
    }
    async fn service_exists(&self, name: &str) -> Result<bool> {
        self.inner.service_exists(name).await
    }
    async fn read(&self, s: &str, t: &str, id: &str) -> Result<Option<StoredResource>> {
        self.inner.read(s, t, id).await
    }
    async fn vread(&self, s: &str, t: &str, id: &str, v: u64) -> Result<Option<StoredResource>> {
        self.inner.vread(s, t, id, v).await
    }
    async fn history(&self, s: &str, sc: &HistoryScope, q: &HistoryQuery) -> Result<HistoryPage> {
        self.inner.history(s, sc, q).await
    }
    async fn search(&self, s: &str, q: &SearchQuery) -> Result<SearchPage> {
        self.inner.search(s, q).await
    }
    async fn snapshot(&self, s: &str) -> Result<Snapshot> {
        self.inner.snapshot(s).await
    }
    async fn scan(&self, s: &str, t: &str, q: &ScanQuery) -> Result<Vec<StoredResource>> {
        self.inner.scan(s, t, q).await
    }
    async fn begin(&self, s: &str) -> Result<Box<dyn WriteTx>> {
        self.inner.begin(s).await
    }
    async fn own_bases(&self) -> Result<Vec<String>> {
        self.inner.own_bases().await
    }
}

#[async_trait]
impl DocumentStore for Cut {
    async fn get_document(&self, c: &str, k: &str) -> Result<Option<Document>> {
        self.inner.get_document(c, k).await
    }
    async fn list_documents(&self, c: &str) -> Result<Vec<Document>> {
        self.inner.list_documents(c).await
    }
    async fn write_documents(&self, w: Vec<DocumentWrite>) -> Result<Vec<Document>> {
        self.inner.write_documents(w).await
    }
    async fn document_changes(&self, after: u64, wait: Duration) -> Result<DocumentChanges> {
        if self.cut.load(Ordering::Acquire) {
            tokio::time::sleep(wait.min(Duration::from_millis(50))).await;
            return Err(StoreError::Busy);
        }
        self.inner.document_changes(after, wait).await
    }
}

fn node(id: &str, plan_wait: Duration) -> NodeConfig {
    NodeConfig {
        id: id.to_owned(),
        addresses: vec![format!("test {id}")],
        heartbeat: Duration::from_millis(100),
        plan_wait,
    }
}

async fn put_group(cp: &Arc<ControlPlane>, name: &str) -> (u16, Option<String>) {
    let req = Request::builder()
        .method("PUT")
        .uri(format!("{RG}/{name}?api-version=2025-04-01"))
        .header("content-type", "application/json")
        .body(Body::from(json!({"location": "westus2"}).to_string()))
        .map(|mut r| {
            r.extensions_mut().insert(Principal {
                id: "admin".into(),
                issuer: "fhirlink".into(),
            });
            r
        })
        .expect("request");
    let resp = router(cp.clone()).oneshot(req).await.expect("router");
    let lagging = resp
        .headers()
        .get(LAGGING_NODES_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (resp.status().as_u16(), lagging)
}

fn has_group(cp: &ControlPlane, name: &str) -> bool {
    cp.snapshot()
        .get(&format!("{RG}/{name}").to_lowercase())
        .is_some()
}

/// Waits (at most a minute, polling) until `done` holds.
async fn eventually(what: &str, done: impl Fn() -> bool) {
    for _ in 0..1200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_in_every_nodes_state_before_it_is_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Arc::new(SqliteStore::open(dir.path()).expect("store"));
    let store = Arc::new(Cut {
        inner: sqlite,
        cut: AtomicBool::new(false),
    });
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
    one.join(node("one", Duration::from_secs(30)));
    two.join(node("two", Duration::from_millis(500)));
    // Both registered and live before the first change.
    let mut registered = Vec::new();
    for _ in 0..1200 {
        registered = one.nodes().await.expect("nodes");
        if registered.len() == 2 && registered.iter().all(|(_, live)| *live) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(registered.len(), 2, "{registered:?}");

    for i in 0..20 {
        let name = format!("rg{i}");
        let (status, lagging) = put_group(&one, &name).await;
        assert!((200..300).contains(&status), "{status}");
        assert_eq!(lagging, None);
        assert!(
            has_group(&two, &name),
            "{name} not on two when one answered"
        );
    }
    // And the other way round.
    let (status, lagging) = put_group(&two, "fromtwo").await;
    assert!((200..300).contains(&status));
    assert_eq!(lagging, None);
    assert!(has_group(&one, "fromtwo"));

    // The feed cut off: two stops serving once it has not read it for its plan_wait, and
    // serves again when it reads it; then it takes part in the next change as before.
    assert!(two.serving());
    store.cut.store(true, Ordering::Release);
    eventually("two stops serving", || !two.serving()).await;
    store.cut.store(false, Ordering::Release);
    eventually("two serves again", || two.serving()).await;
    let (status, lagging) = put_group(&one, "after").await;
    assert!((200..300).contains(&status));
    assert_eq!(lagging, None);
    assert!(has_group(&two, "after"));
}
