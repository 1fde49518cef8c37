//! Search time limits (issue #15, "limits that hold under abuse"): a search that runs past the
//! store's limit is stopped with `StoreError::TooCostly` instead of running on, and the reader
//! it ran on serves the next search normally.

use std::time::Duration;

use fhir_store::{Method, Store, StoreError};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

fn query(params: &[(&str, &str)]) -> fhir_search::SearchQuery {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fhir_search::parse(
        Some("Patient"),
        &params,
        &fhir_search::ParseOptions::default(),
    )
    .expect("query")
}

#[tokio::test]
async fn a_search_past_the_time_limit_is_stopped_and_the_reader_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path())
        .expect("open")
        .with_search_time_limit(Duration::ZERO);
    store.create_service("s").await.expect("service");
    let mut tx = store.begin("s").await.expect("begin");
    for i in 0..2000 {
        let id = format!("p{i}");
        let p = json!({"resourceType": "Patient", "id": id, "gender": "female",
            "name": [{"family": format!("F{i}")}]});
        tx.put("Patient", &id, p, Method::Put).await.expect("put");
    }
    tx.commit().await.expect("commit");
    // With no time at all, a search that counts 2,000 matches is stopped.
    let q = query(&[("gender", "female"), ("_total", "accurate")]);
    match store.search("s", &q).await {
        Err(StoreError::TooCostly(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("expected TooCostly, got {other:?}"),
    }
    // The same store with a generous limit answers, on the same readers.
    let store = {
        drop(store);
        SqliteStore::open(dir.path()).expect("reopen")
    };
    for _ in 0..8 {
        let page = store.search("s", &q).await.expect("search");
        assert_eq!(page.total, Some(2000));
    }
}
