//! Query plans (issue #20, "search whose cost follows the page"): read from `_explain`, which
//! carries the planner's choice and SQLite's `EXPLAIN QUERY PLAN`. A page of unselective
//! conditions walks the type in `seq` order and stops after the page (no temporary B-tree for
//! the order, no count of every match); a selective condition drives; the counts a database
//! from before `resource_counts` lacks are computed when it is opened.

use fhir_store::{Method, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

fn query(rtype: &str, params: &[(&str, &str)]) -> fhir_search::SearchQuery {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fhir_search::parse(Some(rtype), &params, &fhir_search::ParseOptions::default()).expect("query")
}

/// 600 Observations of one code, one patient each of three, half of them from 2016 on.
async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(dir.path()).expect("open");
    store.create_service("s").await.expect("service");
    let mut tx = store.begin("s").await.expect("begin");
    for i in 0..600 {
        let id = format!("o{i}");
        let year = if i % 2 == 0 { 2010 } else { 2017 };
        let o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "subject": {"reference": format!("Patient/p{}", i % 3)},
            "effectiveDateTime": format!("{year}-03-04T10:00:00Z"),
            "valueQuantity": {"value": i, "unit": "cm"}});
        tx.put("Observation", &id, o, Method::Put)
            .await
            .expect("put");
    }
    tx.put(
        "Observation",
        "rare",
        json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "rare-1"}]},
            "effectiveDateTime": "2018-01-01"}),
        Method::Put,
    )
    .await
    .expect("put");
    tx.commit().await.expect("commit");
    (dir, store)
}

async fn plan(store: &SqliteStore, rtype: &str, params: &[(&str, &str)]) -> String {
    let mut p = params.to_vec();
    p.push(("_explain", "true"));
    store
        .search("s", &query(rtype, &p))
        .await
        .expect("search")
        .plan
        .expect("a plan")
}

#[tokio::test]
async fn a_type_in_default_order_walks_its_index_and_stops_at_the_page() {
    let (_dir, store) = store().await;
    let p = plan(&store, "Observation", &[("_count", "1")]).await;
    assert!(p.contains("resources_type_seq"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    let page = store
        .search("s", &query("Observation", &[("_count", "1")]))
        .await
        .expect("search");
    assert_eq!(
        page.total,
        Some(601),
        "an unfiltered total is the kept count"
    );
}

#[tokio::test]
async fn an_unselective_page_walks_the_type_and_probes() {
    let (_dir, store) = store().await;
    let p = plan(
        &store,
        "Observation",
        &[("date", "ge2016-01-01"), ("_count", "5")],
    )
    .await;
    assert!(p.contains("plan: walk Observation"), "{p}");
    assert!(p.contains("resources_type_seq"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
    // The same page, the same matches as driving would give: in seq order, from 2016 on.
    let page = store
        .search(
            "s",
            &query("Observation", &[("date", "ge2016-01-01"), ("_count", "5")]),
        )
        .await
        .expect("search");
    let ids: Vec<&str> = page.matches.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["o1", "o3", "o5", "o7", "o9"]);
    assert_eq!(page.total, None, "no count of every match by default");
    assert!(page.next.is_some());
}

#[tokio::test]
async fn a_code_whose_rows_come_in_seq_order_drives_and_streams() {
    let (_dir, store) = store().await;
    let p = plan(
        &store,
        "Observation",
        &[
            ("code", "http://loinc.org|8302-2"),
            ("value-quantity", "gt300"),
            ("_count", "5"),
        ],
    )
    .await;
    assert!(p.contains("its rows in seq order"), "{p}");
    assert!(!p.contains("TEMP B-TREE"), "{p}");
}

#[tokio::test]
async fn the_most_selective_condition_drives() {
    let (_dir, store) = store().await;
    // The rare code has one row, the date range hundreds: the code drives, whatever the order.
    let p = plan(
        &store,
        "Observation",
        &[
            ("date", "ge2016-01-01"),
            ("code", "http://loinc.org|rare-1"),
        ],
    )
    .await;
    assert!(
        p.contains("plan: drive with filter 1, the fewest rows"),
        "{p}"
    );
    let p = plan(
        &store,
        "Observation",
        &[
            ("code", "http://loinc.org|rare-1"),
            ("date", "ge2016-01-01"),
        ],
    )
    .await;
    assert!(
        p.contains("plan: drive with filter 0, the fewest rows"),
        "{p}"
    );
    // A range from its end (ge: hi >= …) is a range scan of ix_date_hi, not a scan.
    let p = plan(
        &store,
        "Observation",
        &[("date", "ge2018-01-01"), ("_total", "accurate")],
    )
    .await;
    assert!(p.contains("ix_date_hi"), "{p}");
    let page = store
        .search(
            "s",
            &query(
                "Observation",
                &[("date", "ge2016-01-01"), ("_total", "accurate")],
            ),
        )
        .await
        .expect("search");
    assert_eq!(page.total, Some(301));
}

/// Regression (issue #20): a database from before `resource_counts` (schema version 3) gets
/// its counts computed once when it is opened, and its search index is kept.
#[tokio::test]
async fn live_counts_are_computed_when_an_older_database_is_opened() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(dir.path()).expect("open");
        store.create_service("s").await.expect("service");
        let mut tx = store.begin("s").await.expect("begin");
        for i in 0..5 {
            let p = json!({"resourceType": "Patient", "gender": "male"});
            tx.put("Patient", &format!("p{i}"), p, Method::Put)
                .await
                .expect("put");
        }
        tx.delete("Patient", "p4").await.expect("delete");
        tx.commit().await.expect("commit");
    }
    {
        let conn = rusqlite::Connection::open(dir.path().join("fhirlink.db")).expect("sqlite");
        conn.execute_batch("DROP TABLE resource_counts; PRAGMA user_version = 3;")
            .expect("downgrade");
    }
    let store = SqliteStore::open(dir.path()).expect("reopen");
    let page = store
        .search("s", &query("Patient", &[("_count", "1")]))
        .await
        .expect("search");
    assert_eq!(page.total, Some(4));
    let page = store
        .search("s", &query("Patient", &[("gender", "male")]))
        .await
        .expect("search");
    assert_eq!(page.matches.len(), 4, "the index was kept");
}
