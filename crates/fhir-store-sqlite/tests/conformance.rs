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
    // The store keeps the set of services in memory: reopening loads it from the file.
    for name in ["a", "b"] {
        assert!(
            store.service_exists(name).await.expect("exists"),
            "{name} known after reopening"
        );
    }
    assert!(!store.service_exists("c").await.expect("exists"));
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

/// A database written by an older schema (user_version 2: index rows without tuple groups) is
/// reindexed from its current versions when opened, so that searches see what this version
/// extracts — here the composite tuple rows that version did not write.
async fn search(store: &SqliteStore, pairs: &[(&str, &str)]) -> Vec<String> {
    let params: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let q = fhir_search::parse(
        Some("Observation"),
        &params,
        &fhir_search::ParseOptions::default(),
    )
    .expect("query");
    let page = store.search("a", &q).await.expect("search");
    page.matches.into_iter().map(|m| m.id).collect()
}

#[tokio::test]
async fn an_older_index_is_rebuilt_on_open() {
    let dir = tempfile::tempdir().expect("temporary folder");
    {
        let store = SqliteStore::open(dir.path()).expect("open");
        store.create_service("a").await.expect("create");
        let mut tx = store.begin("a").await.expect("begin");
        tx.put(
            "Observation",
            "bp",
            json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
            "component": [{
                "code": {"coding": [{"system": "http://loinc.org", "code": "8480-6"}]},
                "valueQuantity": {"value": 150}
            }]}),
            Method::Post,
        )
        .await
        .expect("put");
        // Written through https://fhir.example.org/r4: its own absolute reference is local.
        tx.put_prepared(
            "Observation",
            "own",
            fhir_store::Prepared::with_base(
                "own",
                json!({"resourceType": "Observation", "status": "final",
                       "code": {"text": "own"},
                       "subject": {"reference": "https://fhir.example.org/r4/Patient/p1"}}),
                "https://fhir.example.org/r4",
            ),
            Method::Post,
        )
        .await
        .expect("put");
        tx.commit().await.expect("commit");
        assert_eq!(search(&store, &[("subject", "Patient/p1")]).await, ["own"]);
    }
    {
        // What a version-2 store left: no tuple rows (here: no index rows at all).
        let conn = rusqlite::Connection::open(dir.path().join("fhirlink.db")).expect("sqlite");
        for t in [
            "ix_string",
            "ix_token",
            "ix_ref",
            "ix_date",
            "ix_number",
            "ix_quantity",
            "ix_uri",
        ] {
            conn.execute(&format!("DELETE FROM {t}"), [])
                .expect("clear");
        }
        conn.execute_batch("PRAGMA user_version = 2")
            .expect("version");
    }
    let store = SqliteStore::open(dir.path()).expect("reopen");
    assert_eq!(
        search(&store, &[("code", "http://loinc.org|85354-9")]).await,
        ["bp"]
    );
    assert_eq!(
        search(
            &store,
            &[(
                "component-code-value-quantity",
                "http://loinc.org|8480-6$gt140"
            )]
        )
        .await,
        ["bp"]
    );
    assert_eq!(
        search(&store, &[("subject", "Patient/p1")]).await,
        ["own"],
        "the rebuilt index knows the base it was written through"
    );
}

/// The store answers "does this service exist" from memory; creates and deletes racing on
/// one name must leave that answer as the database has it. (This catches a change that
/// forgets the memory on one side; it cannot force the rare interleaving where an update
/// made after the writer was released lands out of commit order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creates_and_deletes_leave_memory_as_the_database() {
    let (_dir, store) = fresh().await;
    for round in 0..20 {
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        store.create_service("s").await.expect("create");
                    } else {
                        store.delete_service("s").await.expect("delete");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        let listed = store
            .list_services()
            .await
            .expect("list")
            .contains(&"s".to_owned());
        let known = store.service_exists("s").await.expect("exists");
        assert_eq!(known, listed, "round {round}");
    }
}
