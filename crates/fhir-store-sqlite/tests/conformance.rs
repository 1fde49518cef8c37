//! The shared store conformance suite, run against [`SqliteStore`] on a fresh temporary
//! folder per test, plus what only a file-backed store can show: reopening finds everything
//! that was committed.

use std::sync::Arc;

use fhir_store::{HistoryQuery, HistoryScope, Method, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

async fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = SqliteStore::open(dir.path()).expect("open a fresh store");
    (dir, Arc::new(store))
}

fhir_store::conformance_tests!(fresh());

#[tokio::test]
async fn open_creates_the_folder_and_the_database_file() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let data = dir.path().join("nested").join("data");
    let store = SqliteStore::open(&data).expect("open");
    store.create_service("a").await.expect("create");
    assert!(data.join("fhirlink.db").is_file(), "fhirlink.db created");
}

#[tokio::test]
async fn reopening_finds_everything_committed() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let (created, deleted, newest) = {
        let store = SqliteStore::open(dir.path()).expect("open");
        store.create_service("a").await.expect("create a");
        store.create_service("b").await.expect("create b");
        let mut tx = store.begin("a").await.expect("begin");
        let created = tx
            .put(
                "Patient",
                "p",
                json!({"resourceType": "Patient", "active": true}),
                Method::Post,
            )
            .await
            .expect("put");
        tx.put(
            "Patient",
            "q",
            json!({"resourceType": "Patient"}),
            Method::Post,
        )
        .await
        .expect("put");
        tx.commit().await.expect("commit");
        let mut tx = store.begin("a").await.expect("begin");
        let deleted = tx
            .delete("Patient", "q")
            .await
            .expect("delete")
            .expect("deletion");
        tx.commit().await.expect("commit");
        // Dropped without commit: must not survive.
        let mut tx = store.begin("b").await.expect("begin");
        tx.put(
            "Patient",
            "uncommitted",
            json!({"resourceType": "Patient"}),
            Method::Post,
        )
        .await
        .expect("put");
        drop(tx);
        (created, deleted, store_newest(&store).await)
    };
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(store.list_services().await.expect("list"), ["a", "b"]);
    let p = store
        .read("a", "Patient", "p")
        .await
        .expect("read")
        .expect("p survives");
    assert_eq!(p.body, created.body, "same bytes after reopening");
    assert_eq!(p.last_updated, created.last_updated);
    let q = store
        .read("a", "Patient", "q")
        .await
        .expect("read")
        .expect("q survives");
    assert!(
        q.is_deleted() && q.version == deleted.version,
        "the deletion survives"
    );
    assert!(store
        .read("b", "Patient", "uncommitted")
        .await
        .expect("read")
        .is_none());

    // The clock continues past what is stored, even if the wall clock were behind it.
    let mut tx = store.begin("a").await.expect("begin");
    let later = tx
        .put(
            "Patient",
            "p",
            json!({"resourceType": "Patient"}),
            Method::Put,
        )
        .await
        .expect("put");
    tx.commit().await.expect("commit");
    assert!(
        later.last_updated > newest,
        "lastUpdated keeps increasing across reopen"
    );
    assert_eq!(later.version, 2);
}

async fn store_newest(store: &SqliteStore) -> chrono::DateTime<chrono::Utc> {
    let query = HistoryQuery {
        since: None,
        at: None,
        count: 1,
        before: None,
    };
    let page = store
        .history("a", &HistoryScope::System, &query)
        .await
        .expect("history");
    page.entries[0].last_updated
}

#[tokio::test]
async fn a_data_folder_takes_one_store_at_a_time() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let first = SqliteStore::open(dir.path()).expect("open");
    let second = SqliteStore::open(dir.path());
    assert!(
        matches!(&second, Err(fhir_store::StoreError::Backend(m)) if m.contains("in use")),
        "second open of a live folder refused: {second:?}"
    );
    drop(first);
    SqliteStore::open(dir.path()).expect("open again once the first is gone");
}
