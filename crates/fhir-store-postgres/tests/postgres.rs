//! What only the PostgreSQL store can show, beyond the shared conformance suite: the schema's
//! version row, reconnecting, several stores (as several fhirlink nodes would be) on one
//! database serialising their writers, the search time limit, and faults — a lock held too
//! long, connections killed under the pool — surfacing as retryable `Busy`, never as a hang.
//! Each test has its own scratch database on 127.0.0.1:5432.

use std::sync::Arc;
use std::time::Duration;

use fhir_store::{DocumentStore, Method, Store, StoreError};
use fhir_store_postgres::scratch::ScratchDatabase;
use fhir_store_postgres::{PgConfig, PgStore};
use serde_json::{json, Value};

async fn scratch() -> ScratchDatabase {
    ScratchDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("scratch database: {e}"))
}

fn small() -> PgConfig {
    PgConfig {
        pool_size: 6,
        ..PgConfig::default()
    }
}

async fn connect(db: &ScratchDatabase, config: PgConfig) -> PgStore {
    PgStore::connect(&db.url(), config)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", db.name()))
}

/// A plain connection to the scratch database, to look at or change it behind the store.
async fn sql(db: &ScratchDatabase) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

fn query(rtype: &str, params: &[(&str, &str)]) -> fhir_search::SearchQuery {
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fhir_search::parse(Some(rtype), &params, &fhir_search::ParseOptions::default()).expect("query")
}

fn body(stored: &fhir_store::StoredResource) -> Value {
    serde_json::from_slice(stored.body.as_ref().expect("a body")).expect("JSON")
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = scratch().await;
    drop(connect(&db, small()).await);
    sql(&db)
        .await
        .batch_execute("UPDATE fhirlink_schema SET version = version + 1")
        .await
        .expect("bump");
    match PgStore::connect(&db.url(), small()).await {
        Err(StoreError::Backend(m)) => assert!(m.contains("newer"), "{m}"),
        other => panic!("a newer schema must be refused, got {other:?}"),
    }
}

#[tokio::test]
async fn several_stores_connect_at_once_to_an_empty_database() {
    let db = scratch().await;
    let url = db.url();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = url.clone();
        tasks.spawn(async move { PgStore::connect(&url, small()).await.map(drop) });
    }
    while let Some(joined) = tasks.join_next().await {
        joined
            .expect("task")
            .expect("every store connects and finds one schema");
    }
    let version: i32 = sql(&db)
        .await
        .query_one("SELECT version FROM fhirlink_schema", &[])
        .await
        .expect("version row")
        .get(0);
    assert_eq!(version, 3);
}

/// A database at schema version 2 (before the documents' change feed) is upgraded by the
/// next store to connect: its documents are kept and the feed starts from there.
#[tokio::test]
async fn a_version_2_database_is_upgraded_to_the_change_feed() {
    use fhir_store::{DocumentWrite, Expected};
    let db = scratch().await;
    let store = connect(&db, small()).await;
    store
        .write_documents(vec![DocumentWrite::Put {
            collection: "arm".into(),
            key: "kept".into(),
            body: json!({"kept": true}),
            expected: Expected::Absent,
        }])
        .await
        .expect("a document");
    drop(store);
    sql(&db)
        .await
        .batch_execute(
            "DROP TABLE document_clock, document_changes; \
             UPDATE fhirlink_schema SET version = 2",
        )
        .await
        .expect("back to version 2");
    let store = connect(&db, small()).await;
    let version: i32 = sql(&db)
        .await
        .query_one("SELECT version FROM fhirlink_schema", &[])
        .await
        .expect("version row")
        .get(0);
    assert_eq!(version, 3);
    assert!(store
        .get_document("arm", "kept")
        .await
        .expect("get")
        .is_some());
    let start = store
        .document_changes(0, Duration::ZERO)
        .await
        .expect("feed");
    store
        .write_documents(vec![DocumentWrite::Put {
            collection: "arm".into(),
            key: "kept".into(),
            body: json!({"kept": 2}),
            expected: Expected::Version(1),
        }])
        .await
        .expect("a second version");
    let feed = store
        .document_changes(start.position, Duration::ZERO)
        .await
        .expect("feed");
    assert_eq!(feed.changes.len(), 1, "{feed:?}");
    assert_eq!(feed.changes[0].version, Some(2));
}

/// Two stores on one database, as two nodes: a document one writes is in the other's
/// feed, woken by its NOTIFY or found by its poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_change_feed_crosses_processes() {
    use fhir_store::{DocumentWrite, Expected};
    let db = scratch().await;
    let (one, other) = (connect(&db, small()).await, connect(&db, small()).await);
    let now = other
        .document_changes(0, Duration::ZERO)
        .await
        .expect("feed")
        .position;
    let reader = tokio::spawn(async move {
        let found = other.document_changes(now, Duration::from_secs(30)).await;
        (other, found)
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    one.write_documents(vec![DocumentWrite::Put {
        collection: "arm".into(),
        key: "x".into(),
        body: json!(1),
        expected: Expected::Absent,
    }])
    .await
    .expect("write on one");
    let (_other, found) = reader.await.expect("reader");
    let found = found.expect("feed on the other");
    assert!(found.position > now);
    assert_eq!(found.changes[0].key, "x");
}

#[tokio::test]
async fn reconnecting_finds_everything_committed() {
    let db = scratch().await;
    let created = {
        let store = connect(&db, small()).await;
        store.create_service("a").await.expect("service");
        let mut tx = store.begin("a").await.expect("begin");
        let created = tx
            .put(
                "Observation",
                "o",
                json!({"resourceType": "Observation", "valueQuantity": {"value": 1.50}}),
                Method::Post,
            )
            .await
            .expect("put");
        tx.commit().await.expect("commit");
        created
    };
    let store = connect(&db, small()).await;
    let read = store
        .read("a", "Observation", "o")
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.body, created.body, "the same bytes after reconnecting");
    assert_eq!(read.last_updated, created.last_updated);
    let mut tx = store.begin("a").await.expect("begin");
    let later = tx
        .put(
            "Observation",
            "o",
            json!({"resourceType": "Observation"}),
            Method::Put,
        )
        .await
        .expect("put");
    tx.commit().await.expect("commit");
    assert_eq!(later.version, 2);
    assert!(later.last_updated > created.last_updated);
}

/// Two stores on one database are two fhirlink nodes: their writers of one service are
/// serialised by the database, not by either process, so no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_database_never_lose_an_update() {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 15;
    let db = scratch().await;
    let nodes = [
        Arc::new(connect(&db, small()).await),
        Arc::new(connect(&db, small()).await),
    ];
    nodes[0].create_service("a").await.expect("service");
    let mut tx = nodes[0].begin("a").await.expect("begin");
    tx.put(
        "Basic",
        "counter",
        json!({"resourceType": "Basic", "count": 0}),
        Method::Put,
    )
    .await
    .expect("put");
    tx.commit().await.expect("commit");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = nodes[(task % 2) as usize].clone();
        tasks.spawn(async move {
            for _ in 0..ROUNDS {
                let mut tx = store.begin("a").await.expect("begin");
                let current = tx
                    .current("Basic", "counter")
                    .await
                    .expect("current")
                    .expect("counter");
                let mut b = body(&current);
                let count = b["count"].as_u64().expect("count");
                b["count"] = json!(count + 1);
                tokio::task::yield_now().await;
                tx.put("Basic", "counter", b, Method::Put)
                    .await
                    .expect("put");
                tx.commit().await.expect("commit");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a writer task failed");
    }
    for node in &nodes {
        let counter = node
            .read("a", "Basic", "counter")
            .await
            .expect("read")
            .expect("counter");
        assert_eq!(counter.version, TASKS * ROUNDS + 1);
        assert_eq!(body(&counter)["count"], TASKS * ROUNDS);
    }
}

/// Conditional create from two nodes at once: each decides inside its transaction, and the
/// second decides on what the first committed, so one resource is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_creating_one_conditional_resource_create_one() {
    let db = scratch().await;
    let nodes = [
        Arc::new(connect(&db, small()).await),
        Arc::new(connect(&db, small()).await),
    ];
    nodes[0].create_service("a").await.expect("service");
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = nodes[i % 2].clone();
        tasks.spawn(async move {
            let q = query("Patient", &[("identifier", "urn:x|42")]);
            let mut tx = store.begin("a").await.expect("begin");
            let found = tx.matching(&q, 2).await.expect("matching");
            tokio::task::yield_now().await;
            let created = found.is_empty();
            if created {
                tx.put(
                    "Patient",
                    &format!("p{i}"),
                    json!({"resourceType": "Patient",
                           "identifier": [{"system": "urn:x", "value": "42"}]}),
                    Method::Post,
                )
                .await
                .expect("put");
            }
            tx.commit().await.expect("commit");
            created
        });
    }
    let mut creations = 0;
    while let Some(joined) = tasks.join_next().await {
        creations += usize::from(joined.expect("task"));
    }
    assert_eq!(creations, 1, "one node created, the others found it");
    let page = nodes[1]
        .search("a", &query("Patient", &[("identifier", "urn:x|42")]))
        .await
        .expect("search");
    assert_eq!(page.matches.len(), 1);
}

/// A transaction dropped without commit releases its service at once, for the other nodes
/// too.
#[tokio::test]
async fn a_dropped_transaction_releases_the_service_for_other_stores() {
    let db = scratch().await;
    let a = connect(&db, small()).await;
    let b = connect(
        &db,
        PgConfig {
            statement_timeout: Duration::from_secs(5),
            ..small()
        },
    )
    .await;
    a.create_service("s").await.expect("service");
    let mut tx = a.begin("s").await.expect("begin");
    tx.put(
        "Patient",
        "p",
        json!({"resourceType": "Patient"}),
        Method::Post,
    )
    .await
    .expect("put");
    drop(tx);
    let mut tx = b.begin("s").await.expect("begin on the other store");
    assert!(tx.current("Patient", "p").await.expect("current").is_none());
    tx.commit().await.expect("commit");
}

/// A writer that waits longer than the statement timeout for a service another node holds
/// gets `Busy`, the retryable error, not a hang; once the holder commits it gets in.
#[tokio::test]
async fn waiting_past_the_statement_timeout_is_busy() {
    let db = scratch().await;
    let holder = connect(&db, small()).await;
    let waiter = connect(
        &db,
        PgConfig {
            statement_timeout: Duration::from_millis(300),
            ..small()
        },
    )
    .await;
    holder.create_service("s").await.expect("service");
    let tx = holder.begin("s").await.expect("begin");
    let started = std::time::Instant::now();
    match waiter.begin("s").await {
        Err(StoreError::Busy) => {}
        Err(other) => panic!("expected Busy, got {other}"),
        Ok(_) => panic!("expected Busy, got a transaction"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "no hang");
    tx.commit().await.expect("commit");
    waiter
        .begin("s")
        .await
        .expect("the service is free again")
        .commit()
        .await
        .expect("commit");
}

/// Connections killed under the pool (a database restart looks the same to it): requests
/// fail with `Busy` or succeed on a fresh connection, and the pool recovers by itself.
#[tokio::test]
async fn killed_connections_are_busy_and_the_pool_recovers() {
    let db = scratch().await;
    let store = connect(&db, small()).await;
    store.create_service("s").await.expect("service");
    let mut tx = store.begin("s").await.expect("begin");
    tx.put(
        "Patient",
        "p",
        json!({"resourceType": "Patient"}),
        Method::Post,
    )
    .await
    .expect("put");
    tx.commit().await.expect("commit");
    // Warm several pooled connections, then kill them all.
    let reads: Vec<_> = (0..4).map(|_| store.read("s", "Patient", "p")).collect();
    for r in reads {
        r.await.expect("read");
    }
    let killer = sql(&db).await;
    let killed = killer
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "there were connections to kill");
    let mut failures = 0;
    let mut recovered = false;
    for _ in 0..20 {
        match store.read("s", "Patient", "p").await {
            Ok(Some(_)) => {
                recovered = true;
                break;
            }
            Ok(None) => panic!("the resource vanished"),
            Err(StoreError::Busy) => failures += 1,
            Err(other) => panic!("a killed connection must be Busy, got {other}"),
        }
    }
    assert!(
        recovered,
        "the pool did not recover after {failures} failures"
    );
    let mut tx = store.begin("s").await.expect("begin after recovery");
    tx.put(
        "Patient",
        "q",
        json!({"resourceType": "Patient"}),
        Method::Post,
    )
    .await
    .expect("put");
    tx.commit().await.expect("commit");
}

/// Ported from the SQLite store's search_limits.rs: a search past the store's limit is
/// stopped with `TooCostly`, and the connection it ran on serves the next search normally.
#[tokio::test]
async fn a_search_past_the_time_limit_is_stopped_and_the_store_recovers() {
    let db = scratch().await;
    let store = connect(
        &db,
        PgConfig {
            search_time_limit: Duration::from_millis(1),
            pool_size: 1,
            ..small()
        },
    )
    .await;
    store.create_service("s").await.expect("service");
    let mut tx = store.begin("s").await.expect("begin");
    for i in 0..2000 {
        let id = format!("p{i}");
        let p = json!({"resourceType": "Patient", "id": id, "gender": "female",
            "name": [{"family": format!("F{i}")}]});
        tx.put("Patient", &id, p, Method::Put).await.expect("put");
    }
    tx.commit().await.expect("commit");
    // With a millisecond, a search that sorts and counts 2,000 matches is stopped.
    let q = query(
        "Patient",
        &[
            ("gender", "female"),
            ("_sort", "family"),
            ("_total", "accurate"),
        ],
    );
    match store.search("s", &q).await {
        Err(StoreError::TooCostly(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("expected TooCostly, got {other:?}"),
    }
    // The one connection serves what follows as usual.
    store
        .read("s", "Patient", "p7")
        .await
        .expect("read")
        .expect("p7");
    let store = connect(&db, small()).await;
    for _ in 0..4 {
        let page = store.search("s", &q).await.expect("search");
        assert_eq!(page.total, Some(2000));
        assert_eq!(page.matches[0].id, "p0", "F0 sorts first");
    }
}

/// A scratch database is gone once its guard is dropped.
#[tokio::test]
async fn scratch_databases_are_dropped() {
    let db = scratch().await;
    let name = db.name().to_owned();
    let check = sql(&db).await;
    drop(check);
    drop(db);
    let other = scratch().await;
    let n: i64 = sql(&other)
        .await
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(n, 0, "{name} still exists");
}

/// `_explain=true` returns the statement and PostgreSQL's plan for it.
#[tokio::test]
async fn explain_returns_the_plan() {
    let db = scratch().await;
    let store = connect(&db, small()).await;
    store.create_service("s").await.expect("service");
    let page = store
        .search(
            "s",
            &query("Patient", &[("gender", "female"), ("_explain", "true")]),
        )
        .await
        .expect("search");
    let plan = page.plan.expect("a plan");
    assert!(plan.contains("ix_token"), "the statement: {plan}");
    assert!(
        plan.contains("Scan") || plan.contains("Result"),
        "PostgreSQL's plan: {plan}"
    );
}

/// A writer whose connection dies mid-transaction (its node killed, the database restarted)
/// leaves nothing half-written: its commit fails as `Busy`, none of its writes is visible,
/// and the service takes the next writer.
#[tokio::test]
async fn a_transaction_cut_off_mid_way_leaves_nothing() {
    let db = scratch().await;
    let store = connect(&db, small()).await;
    store.create_service("s").await.expect("service");
    let mut tx = store.begin("s").await.expect("begin");
    for id in ["a", "b", "c"] {
        tx.put(
            "Patient",
            id,
            json!({"resourceType": "Patient"}),
            Method::Post,
        )
        .await
        .expect("put");
    }
    let killed = sql(&db)
        .await
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction'",
            &[],
        )
        .await
        .expect("terminate");
    assert_eq!(killed.len(), 1, "one transaction open");
    match tx.commit().await {
        Err(StoreError::Busy) => {}
        other => panic!("the commit of a cut-off transaction must be Busy, got {other:?}"),
    }
    for id in ["a", "b", "c"] {
        assert!(
            store
                .read("s", "Patient", id)
                .await
                .expect("read")
                .is_none(),
            "Patient/{id} half-written"
        );
    }
    let mut tx = store.begin("s").await.expect("the next writer");
    let p = tx
        .put(
            "Patient",
            "a",
            json!({"resourceType": "Patient"}),
            Method::Post,
        )
        .await
        .expect("put");
    tx.commit().await.expect("commit");
    assert_eq!(p.version, 1, "nothing of the cut-off transaction counted");
}

/// Group commit keeps its members apart: a transaction whose statement fails (an id
/// PostgreSQL's text cannot hold) is rolled back to its savepoint, and the transactions
/// committed beside it in the same group are all there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_member_leaves_its_group_intact() {
    let db = scratch().await;
    let store = Arc::new(connect(&db, small()).await);
    store.create_service("s").await.expect("service");
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..6 {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 0..10 {
                let mut tx = store.begin("s").await.expect("begin");
                tx.put(
                    "Patient",
                    &format!("t{task}-r{round}"),
                    json!({"resourceType": "Patient"}),
                    Method::Put,
                )
                .await
                .expect("put");
                if (task + round) % 4 == 0 {
                    let bad = tx
                        .put(
                            "Patient",
                            "nul\u{0}id",
                            json!({"resourceType": "Patient"}),
                            Method::Put,
                        )
                        .await;
                    assert!(bad.is_err(), "an id with NUL is refused");
                    drop(tx);
                    continue;
                }
                tokio::task::yield_now().await;
                tx.commit().await.expect("commit");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a writer task failed");
    }
    for task in 0..6 {
        for round in 0..10 {
            let id = format!("t{task}-r{round}");
            let found = store.read("s", "Patient", &id).await.expect("read");
            assert_eq!(
                found.is_some(),
                (task + round) % 4 != 0,
                "Patient/{id}: committed or rolled back as its transaction said"
            );
        }
    }
}

/// The store refreshes the planner's statistics itself as data grows (autovacuum may be off,
/// or late after a bulk load): after a thousand versions the search tables have been analysed
/// (`last_analyze`, which autovacuum's own runs leave alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_are_refreshed_as_data_grows() {
    let db = scratch().await;
    let store = connect(&db, small()).await;
    store.create_service("a").await.expect("service");
    let before: Option<std::time::SystemTime> = sql(&db)
        .await
        .query_one(
            "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'ix_token'",
            &[],
        )
        .await
        .expect("pg_stat_user_tables")
        .get(0);
    assert!(before.is_none(), "a new database has not been analysed");
    for batch in 0..12 {
        let mut tx = store.begin("a").await.expect("begin");
        for i in 0..100 {
            let n = batch * 100 + i;
            tx.put(
                "Observation",
                &format!("o{n}"),
                serde_json::json!({"resourceType": "Observation", "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
                    "subject": {"reference": format!("Patient/p{}", n % 50)}}),
                fhir_store::Method::Put,
            )
            .await
            .expect("put");
        }
        tx.commit().await.expect("commit");
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let analysed: Option<std::time::SystemTime> = sql(&db)
            .await
            .query_one(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'ix_token'",
                &[],
            )
            .await
            .expect("pg_stat_user_tables")
            .get(0);
        if analysed.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "ix_token was not analysed after 1,200 versions"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
