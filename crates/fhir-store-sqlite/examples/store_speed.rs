//! A quick measurement of the SQLite store on this machine: puts per second inside
//! transactions of 300 resources (with and without the commit), and point reads per second
//! from one task and from several. Prints figures; asserts nothing about them.
//!
//! `cargo run --release -p fhir-store-sqlite --example store_speed [resources]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use fhir_store::{HistoryQuery, HistoryScope, Method, Store};
use fhir_store_sqlite::SqliteStore;
use serde_json::json;

const BATCH: usize = 300;

fn patient(i: usize) -> serde_json::Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "http://example.org/mrn", "value": format!("MRN{i:08}")}],
        "active": true,
        "name": [{"use": "official", "family": format!("Family{}", i % 997), "given": ["Given", "Middle"]}],
        "telecom": [{"system": "phone", "value": "+1 555 0100", "use": "home"}],
        "gender": if i.is_multiple_of(2) { "female" } else { "male" },
        "birthDate": "1970-01-01",
        "address": [{"line": ["1 Example Street"], "city": "Springfield", "postalCode": "12345", "country": "US"}],
        "extension": [{"url": "http://example.org/weight", "valueDecimal": 71.50}]
    })
}

fn main() {
    let total: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(60_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(total));
}

async fn run(total: usize) {
    let dir = tempfile::tempdir().expect("temporary folder");
    let store = Arc::new(SqliteStore::open(dir.path()).expect("open"));
    store.create_service("bench").await.expect("service");
    let body_len = serde_json::to_vec(&patient(0)).expect("json").len();

    let mut in_tx = Duration::ZERO;
    let started = Instant::now();
    for batch in 0..total.div_ceil(BATCH) {
        let mut tx = store.begin("bench").await.expect("begin");
        let t = Instant::now();
        for i in batch * BATCH..((batch + 1) * BATCH).min(total) {
            tx.put("Patient", &format!("p{i}"), patient(i), Method::Post)
                .await
                .expect("put");
        }
        in_tx += t.elapsed();
        tx.commit().await.expect("commit");
    }
    let elapsed = started.elapsed();
    println!(
        "ingest: {total} Patients (~{body_len} B) in transactions of {BATCH}: {:.0} puts/s with commits, {:.1} µs per put inside the transaction",
        total as f64 / elapsed.as_secs_f64(),
        in_tx.as_secs_f64() * 1e6 / total as f64
    );

    // Updates: a second version of every tenth resource.
    let started = Instant::now();
    let updates = total / 10;
    for batch in 0..updates.div_ceil(BATCH) {
        let mut tx = store.begin("bench").await.expect("begin");
        for i in batch * BATCH..((batch + 1) * BATCH).min(updates) {
            let id = format!("p{}", i * 10);
            tx.current("Patient", &id).await.expect("current");
            tx.put("Patient", &id, patient(i), Method::Put)
                .await
                .expect("put");
        }
        tx.commit().await.expect("commit");
    }
    println!(
        "update: {updates} current+put in transactions of {BATCH}: {:.0} /s",
        updates as f64 / started.elapsed().as_secs_f64()
    );

    let reads = 200_000;
    let started = Instant::now();
    for n in 0..reads {
        let id = format!("p{}", (n * 7919) % total);
        let found = store.read("bench", "Patient", &id).await.expect("read");
        assert!(found.is_some());
    }
    println!(
        "read: {:.0} point reads/s from one task",
        reads as f64 / started.elapsed().as_secs_f64()
    );

    let tasks = 4;
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let store = store.clone();
        set.spawn(async move {
            for n in 0..reads / tasks {
                let id = format!("p{}", (n * 7919 + t * 13) % total);
                let found = store.read("bench", "Patient", &id).await.expect("read");
                assert!(found.is_some());
                if n.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    println!(
        "read: {:.0} point reads/s from {tasks} tasks on 2 worker threads",
        reads as f64 / started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut query = HistoryQuery {
        since: None,
        at: None,
        count: 100,
        before: None,
    };
    let mut pages = 0;
    while pages < 50 {
        let page = store
            .history("bench", &HistoryScope::Type("Patient".into()), &query)
            .await
            .expect("history");
        pages += 1;
        match page.next {
            Some(next) => query.before = Some(next),
            None => break,
        }
    }
    println!(
        "history: {:.2} ms per type-history page of 100 (total counted each time)",
        started.elapsed().as_secs_f64() * 1e3 / f64::from(pages)
    );
    let size = std::fs::metadata(dir.path().join("fhirlink.db")).map_or(0, |m| m.len())
        + std::fs::metadata(dir.path().join("fhirlink.db-wal")).map_or(0, |m| m.len());
    println!("files: {:.1} MiB database + WAL", size as f64 / 1048576.0);
}
