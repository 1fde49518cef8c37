//! `fhir_store::copy::copy` from the SQLite store into PostgreSQL (what `fhirlink store copy`
//! runs): every service, every version with its number, instant and bytes, deletions, the
//! history in the same order, the search index rebuilt, and the control plane's documents;
//! a target that holds anything is refused.

use std::sync::Arc;

use fhir_store::copy::{copy, Silent};
use fhir_store::{
    DocumentWrite, Expected, HistoryQuery, HistoryScope, Method, Store, StoredResource,
};
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

async fn history(store: &dyn Store, service: &str) -> Vec<StoredResource> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(
                service,
                &HistoryScope::System,
                &HistoryQuery {
                    since: None,
                    at: None,
                    count: 7,
                    before,
                },
            )
            .await
            .expect("history");
        all.extend(page.entries);
        match page.next {
            Some(n) => before = Some(n),
            None => return all,
        }
    }
}

fn key(r: &StoredResource) -> (String, String, u64, String, Option<Vec<u8>>) {
    (
        r.resource_type.clone(),
        r.id.clone(),
        r.version,
        fhir_store::format_instant(&r.last_updated),
        r.body.as_ref().map(|b| b.to_vec()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_serves_what_the_source_did() {
    let dir = tempfile::tempdir().unwrap();
    let source: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path()).expect("sqlite"));
    for s in ["default", "second"] {
        source.create_service(s).await.unwrap();
    }
    // Interleaved writes across types and services: versions, a deletion, a re-creation, and
    // a decimal that must keep its digits.
    for round in 0..3 {
        for svc in ["default", "second"] {
            let mut tx = source.begin(svc).await.unwrap();
            for i in 0..12 {
                tx.put(
                    "Patient",
                    &format!("p{i}"),
                    json!({"resourceType": "Patient", "gender": if round % 2 == 0 {"female"} else {"male"},
                           "name": [{"family": format!("F{i}-{round}")}]}),
                    Method::Put,
                )
                .await
                .unwrap();
                tx.put(
                    "Observation",
                    &format!("o{i}"),
                    serde_json::from_str(&format!(
                        r#"{{"resourceType":"Observation","status":"final","code":{{"text":"w"}},"subject":{{"reference":"Patient/p{i}"}},"valueQuantity":{{"value":70.10{round}0}}}}"#
                    ))
                    .unwrap(),
                    Method::Put,
                )
                .await
                .unwrap();
            }
            tx.commit().await.unwrap();
        }
        let mut tx = source.begin("default").await.unwrap();
        tx.delete("Patient", &format!("p{round}")).await.unwrap();
        tx.commit().await.unwrap();
    }
    let mut tx = source.begin("default").await.unwrap();
    tx.put(
        "Patient",
        "p0",
        json!({"resourceType": "Patient", "name": [{"family": "Back"}]}),
        Method::Put,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // An absolute reference under the base it was written through is indexed as relative.
    let mut tx = source.begin("second").await.unwrap();
    tx.put_prepared(
        "Observation",
        "abs",
        fhir_store::Prepared::with_base(
            "abs",
            json!({"resourceType": "Observation", "status": "final", "code": {"text": "a"},
                   "subject": {"reference": "https://fhir.example/r4/Patient/p5"}}),
            "https://fhir.example/r4",
        ),
        Method::Put,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    source
        .write_documents(vec![DocumentWrite::Put {
            collection: "arm".into(),
            key: "/subscriptions/s/resourcegroups/rg".into(),
            body: json!({"name": "rg", "etag": "\"3\""}),
            expected: Expected::Absent,
        }])
        .await
        .unwrap();

    let db = ScratchDatabase::create().await.expect("scratch database");
    let target: Arc<dyn Store> = Arc::new(
        PgStore::connect(&db.url(), PgConfig::default())
            .await
            .expect("postgres"),
    );
    let report = copy(&*source, &*target, &["arm", "bulk-jobs"], &Silent)
        .await
        .expect("copy");
    assert_eq!(report.services, 2);
    assert_eq!(report.documents, 1);

    assert_eq!(
        target.list_services().await.unwrap(),
        source.list_services().await.unwrap()
    );
    for svc in ["default", "second"] {
        let a: Vec<_> = history(&*source, svc).await.iter().map(key).collect();
        let b: Vec<_> = history(&*target, svc).await.iter().map(key).collect();
        assert_eq!(a.len(), b.len(), "{svc}: every version");
        assert_eq!(
            a, b,
            "{svc}: the same versions, instants and bytes, in the same order"
        );
    }
    assert_eq!(report.versions, 3 * 2 * 24 + 3 + 1 + 1);
    // p2 was deleted in the last round and not written again.
    let p2 = target
        .read("default", "Patient", "p2")
        .await
        .unwrap()
        .unwrap();
    assert!(p2.is_deleted(), "a deletion stays a deletion");
    let q = fhir_search::parse(
        Some("Observation"),
        &[("value-quantity".into(), "70.1020".into())],
        &Default::default(),
    )
    .unwrap();
    let (x, y) = (
        source.search("second", &q).await.unwrap(),
        target.search("second", &q).await.unwrap(),
    );
    assert_eq!(x.total, Some(12));
    assert_eq!(
        x.total, y.total,
        "the index is rebuilt for the current versions"
    );
    let q = fhir_search::parse(
        Some("Observation"),
        &[("subject".into(), "Patient/p5".into())],
        &Default::default(),
    )
    .unwrap();
    let (x, y) = (
        source.search("second", &q).await.unwrap(),
        target.search("second", &q).await.unwrap(),
    );
    assert_eq!(x.total, Some(2), "o5 and the absolute reference");
    assert_eq!(x.total, y.total, "the source's own bases came along");
    assert_eq!(
        target.own_bases().await.unwrap(),
        vec!["https://fhir.example/r4".to_owned()]
    );
    let doc = target
        .get_document("arm", "/subscriptions/s/resourcegroups/rg")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.body, json!({"name": "rg", "etag": "\"3\""}));

    // A second copy into the same, no longer empty, store is refused.
    let again = copy(&*source, &*target, &["arm"], &Silent).await;
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.to_string().contains("empty store only")),
        "{again:?}"
    );
}
