//! The conformance suite every [`crate::Store`] backend must pass, unchanged.
//!
//! Each check is a public async function that takes a fresh, empty store and panics with a
//! message naming the broken promise. A backend runs the whole list by expanding
//! [`conformance_tests!`](crate::conformance_tests) in its `tests/conformance.rs`, the way
//! ripgrep runs one test list on each regex engine. The checks use only the [`crate::Store`]
//! and [`crate::WriteTx`] contract, never a backend's internals, and they are the written
//! form of what the trait's documentation promises — including what the trait leaves
//! implicit: an unknown service is [`StoreError::NoSuchService`](crate::StoreError) for reads,
//! history and `begin` alike.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::{
    HistoryPage, HistoryQuery, HistoryScope, Method, Prepared, ScanQuery, ScanVersions, Snapshot,
    Store, StoreError, StoredResource,
};

/// Expands to one `#[tokio::test]` per conformance check.
///
/// `$make` is an expression evaluated afresh in each test, a future that yields
/// `(guard, Arc<dyn Store>)`: a new empty store, and whatever must live as long as it (a
/// temporary folder, a scratch database) — dropped when the test ends.
///
/// ```text
/// async fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) { … }
/// fhir_store::conformance_tests!(fresh());
/// ```
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            create_read_vread,
            versions_increment,
            stamp_keeps_key_order_and_number_literals,
            delete_then_read_shows_a_deletion,
            delete_of_missing_writes_nothing,
            rollback_on_drop_leaves_nothing,
            uncommitted_writes_are_invisible,
            transaction_sees_its_own_writes,
            services_are_isolated,
            delete_service_removes_its_data,
            services_are_listed_and_created_idempotently,
            unknown_service_is_reported,
            history_scopes,
            history_since_and_at,
            history_paging_with_cursor_while_writing,
            last_updated_strictly_increasing,
            documents_are_versioned_and_listed,
            document_writes_are_all_or_nothing,
            document_changes_follow_every_write,
            document_batches_can_require_a_collection_unchanged,
            search_matches_current_versions_only,
            search_pages_by_cursor_while_writing,
            search_totals_as_r4_defines_them,
            live_counts_follow_writes_and_rollbacks,
            sorted_search_pages_by_position_while_writing,
            search_chains_has_and_includes,
            search_composites_match_within_one_tuple,
            search_tokens_in_value_sets_and_hierarchies,
            transaction_matching_sees_its_own_writes,
            scan_reads_the_snapshot_while_writing,
            scan_pages_and_filters,
            put_version_keeps_versions_and_instants,
            put_versions_writes_a_batch_as_its_loop_would,
            own_bases_are_recorded_at_commit,
            rewrite_version_changes_content_in_place,
            purge_history_keeps_only_the_current_version,
        );

        #[tokio::test]
        async fn concurrent_writers_never_lose_an_update_current_thread() {
            let (_guard, store) = $make.await;
            $crate::conformance::concurrent_writers_never_lose_an_update(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_writers_never_lose_an_update_multi_thread() {
            let (_guard, store) = $make.await;
            $crate::conformance::concurrent_writers_never_lose_an_update(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn concurrent_transactions_are_each_all_or_nothing_multi_thread() {
            let (_guard, store) = $make.await;
            $crate::conformance::concurrent_transactions_are_each_all_or_nothing(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn document_changes_wake_a_waiting_reader_multi_thread() {
            let (_guard, store) = $make.await;
            $crate::conformance::document_changes_wake_a_waiting_reader(store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn readers_and_writers_run_concurrently_multi_thread() {
            let (_guard, store) = $make.await;
            $crate::conformance::readers_and_writers_run_concurrently(store).await;
        }
    };
    (@each $make:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $check() {
                let (_guard, store) = $make.await;
                $crate::conformance::$check(&*store).await;
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn patient(family: &str) -> Value {
    json!({"resourceType": "Patient", "name": [{"family": family}]})
}

/// Creates the service, panicking if that fails.
async fn service(store: &dyn Store, name: &str) {
    store
        .create_service(name)
        .await
        .unwrap_or_else(|e| panic!("create_service({name}) failed: {e}"));
}

/// Puts one resource in its own committed transaction.
async fn put(store: &dyn Store, svc: &str, rtype: &str, id: &str, body: Value) -> StoredResource {
    let mut tx = store
        .begin(svc)
        .await
        .unwrap_or_else(|e| panic!("begin({svc}) failed: {e}"));
    let stored = tx
        .put(rtype, id, body, Method::Put)
        .await
        .unwrap_or_else(|e| panic!("put {rtype}/{id} failed: {e}"));
    tx.commit()
        .await
        .unwrap_or_else(|e| panic!("commit of {rtype}/{id} failed: {e}"));
    stored
}

/// Deletes one resource in its own committed transaction.
async fn delete(store: &dyn Store, svc: &str, rtype: &str, id: &str) -> Option<StoredResource> {
    let mut tx = store.begin(svc).await.expect("begin");
    let deleted = tx
        .delete(rtype, id)
        .await
        .unwrap_or_else(|e| panic!("delete {rtype}/{id} failed: {e}"));
    tx.commit().await.expect("commit of a delete");
    deleted
}

async fn read(store: &dyn Store, svc: &str, rtype: &str, id: &str) -> Option<StoredResource> {
    store
        .read(svc, rtype, id)
        .await
        .unwrap_or_else(|e| panic!("read {svc}/{rtype}/{id} failed: {e}"))
}

fn body_json(stored: &StoredResource) -> Value {
    let body = stored
        .body
        .as_ref()
        .unwrap_or_else(|| panic!("{}/{} has no body", stored.resource_type, stored.id));
    serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{}/{} body is not JSON ({e}): {}",
            stored.resource_type,
            stored.id,
            String::from_utf8_lossy(body)
        )
    })
}

fn query(count: usize) -> HistoryQuery {
    HistoryQuery {
        since: None,
        at: None,
        count,
        before: None,
    }
}

async fn history(
    store: &dyn Store,
    svc: &str,
    scope: &HistoryScope,
    q: &HistoryQuery,
) -> HistoryPage {
    store
        .history(svc, scope, q)
        .await
        .unwrap_or_else(|e| panic!("history {scope:?} {q:?} failed: {e}"))
}

/// `(type/id, version)` of each entry, for readable assertions.
fn keys(page: &HistoryPage) -> Vec<(String, u64)> {
    page.entries
        .iter()
        .map(|e| (format!("{}/{}", e.resource_type, e.id), e.version))
        .collect()
}

fn key(reference: &str, version: u64) -> (String, u64) {
    (reference.to_owned(), version)
}

/// Checks that `stored` is the same version as `expected`: number, instant, method, body.
fn assert_same(what: &str, stored: &StoredResource, expected: &StoredResource) {
    assert_eq!(stored.resource_type, expected.resource_type, "{what}: type");
    assert_eq!(stored.id, expected.id, "{what}: id");
    assert_eq!(stored.version, expected.version, "{what}: version");
    assert_eq!(
        stored.last_updated, expected.last_updated,
        "{what}: lastUpdated"
    );
    assert_eq!(stored.method, expected.method, "{what}: method");
    assert_eq!(stored.body, expected.body, "{what}: body bytes");
}

// ---------------------------------------------------------------------------------------------
// Checks

/// A put creates version 1; read and vread return exactly what put returned.
pub async fn create_read_vread(store: &dyn Store) {
    service(store, "a").await;
    assert!(
        read(store, "a", "Patient", "p1").await.is_none(),
        "read before create"
    );
    let created = put(store, "a", "Patient", "p1", patient("Chalmers")).await;
    assert_eq!(created.version, 1, "first version is 1");
    assert_eq!(created.resource_type, "Patient");
    assert_eq!(created.id, "p1");
    assert!(!created.is_deleted(), "a put is not a deletion");
    let body = body_json(&created);
    assert_eq!(body["id"], "p1", "put stamps the id");
    assert_eq!(
        body["name"][0]["family"], "Chalmers",
        "put keeps the content"
    );

    let current = read(store, "a", "Patient", "p1")
        .await
        .expect("read after create");
    assert_same("read after create", &current, &created);
    let v1 = store
        .vread("a", "Patient", "p1", 1)
        .await
        .expect("vread")
        .expect("vread of version 1");
    assert_same("vread 1", &v1, &created);
    assert!(
        store
            .vread("a", "Patient", "p1", 2)
            .await
            .expect("vread")
            .is_none(),
        "vread of a version that does not exist"
    );
    assert!(
        store
            .vread("a", "Patient", "nope", 1)
            .await
            .expect("vread")
            .is_none(),
        "vread of a resource that does not exist"
    );
    assert!(
        read(store, "a", "Observation", "p1").await.is_none(),
        "read is keyed by type as well as id"
    );
}

/// Each put makes the next version; every old version stays readable.
pub async fn versions_increment(store: &dyn Store) {
    service(store, "a").await;
    let mut all = Vec::new();
    for (i, family) in ["One", "Two", "Three"].into_iter().enumerate() {
        let stored = put(store, "a", "Patient", "p", patient(family)).await;
        assert_eq!(
            stored.version,
            i as u64 + 1,
            "put number {} gives version {}",
            i + 1,
            i + 1
        );
        assert_eq!(
            body_json(&stored)["meta"]["versionId"],
            (i + 1).to_string(),
            "meta.versionId follows the version"
        );
        all.push(stored);
    }
    for stored in &all {
        let old = store
            .vread("a", "Patient", "p", stored.version)
            .await
            .expect("vread")
            .unwrap_or_else(|| panic!("version {} is gone", stored.version));
        assert_same(&format!("vread {}", stored.version), &old, stored);
    }
    let current = read(store, "a", "Patient", "p").await.expect("read");
    assert_eq!(current.version, 3, "read gives the newest version");
}

/// The stored body is the resource with id, meta.versionId and meta.lastUpdated stamped, its
/// keys in their original order and its number literals as written (FHIR R4 §2.6.2: decimal
/// precision is significant, so 1.50 must stay 1.50).
pub async fn stamp_keeps_key_order_and_number_literals(store: &dyn Store) {
    service(store, "a").await;
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"weight"},"valueQuantity":{"value":1.50,"unit":"kg"},"component":[{"valueInteger":12345678901234567890},{"valueDecimal":0.000100}]}"#;
    let resource: Value = serde_json::from_str(text).expect("fixture is JSON");
    let stored = put(store, "a", "Observation", "o1", resource).await;
    let body = stored.body.clone().expect("body");
    let body_text = std::str::from_utf8(&body).expect("body is UTF-8");
    let stamped: Value = serde_json::from_slice(&body).expect("body is JSON");
    for literal in [r#""value":1.50"#, "12345678901234567890", "0.000100"] {
        assert!(
            body_text.contains(literal),
            "number literal {literal} kept: {body_text}"
        );
    }
    let keys: Vec<&str> = stamped
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "resourceType",
            "id",
            "meta",
            "status",
            "code",
            "valueQuantity",
            "component"
        ],
        "id and meta go after resourceType, the rest keeps its order"
    );
    assert_eq!(stamped["meta"]["versionId"], "1");
    assert_eq!(
        stamped["meta"]["lastUpdated"],
        crate::format_instant(&stored.last_updated),
        "meta.lastUpdated is the version's instant"
    );
    let read_back = read(store, "a", "Observation", "o1").await.expect("read");
    assert_eq!(
        read_back.body,
        Some(body),
        "read returns the stored bytes unchanged"
    );

    // A resource that has an id and a meta keeps their places and the other meta elements.
    let resource = json!({
        "resourceType": "Patient",
        "meta": {"profile": ["http://example.org/p"], "versionId": "99"},
        "id": "wrong",
        "active": true
    });
    let stored = put(store, "a", "Patient", "p1", resource).await;
    let stamped = body_json(&stored);
    let keys: Vec<&String> = stamped.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["resourceType", "meta", "id", "active"],
        "existing key order kept"
    );
    assert_eq!(stamped["id"], "p1", "the id is the store's, not the body's");
    assert_eq!(
        stamped["meta"]["versionId"], "1",
        "meta.versionId overwritten"
    );
    assert_eq!(
        stamped["meta"]["profile"][0], "http://example.org/p",
        "meta.profile kept"
    );
}

/// A delete writes a deletion version: read shows it, the old version stays readable, and a
/// later put revives the resource with the next version.
pub async fn delete_then_read_shows_a_deletion(store: &dyn Store) {
    service(store, "a").await;
    let created = put(store, "a", "Patient", "p", patient("A")).await;
    let deleted = delete(store, "a", "Patient", "p")
        .await
        .expect("delete of an existing resource writes a version");
    assert_eq!(deleted.version, 2, "the deletion is version 2");
    assert_eq!(deleted.method, Method::Delete);
    assert!(deleted.is_deleted(), "a deletion has no body");
    assert!(
        deleted.last_updated > created.last_updated,
        "the deletion is newer"
    );

    let current = read(store, "a", "Patient", "p")
        .await
        .expect("read shows the deletion");
    assert_same("read after delete", &current, &deleted);
    let v1 = store
        .vread("a", "Patient", "p", 1)
        .await
        .expect("vread")
        .expect("version 1");
    assert_same("vread 1 after delete", &v1, &created);
    let v2 = store
        .vread("a", "Patient", "p", 2)
        .await
        .expect("vread")
        .expect("version 2");
    assert!(
        v2.is_deleted(),
        "vread of the deletion version is a deletion"
    );

    let revived = put(store, "a", "Patient", "p", patient("B")).await;
    assert_eq!(
        revived.version, 3,
        "a put after a delete continues the versions"
    );
    assert!(!read(store, "a", "Patient", "p")
        .await
        .expect("read")
        .is_deleted());
}

/// Deleting what does not exist, or is already deleted, writes nothing.
pub async fn delete_of_missing_writes_nothing(store: &dyn Store) {
    service(store, "a").await;
    assert!(
        delete(store, "a", "Patient", "ghost").await.is_none(),
        "delete of missing"
    );
    assert!(
        read(store, "a", "Patient", "ghost").await.is_none(),
        "still nothing to read"
    );
    put(store, "a", "Patient", "p", patient("A")).await;
    assert!(
        delete(store, "a", "Patient", "p").await.is_some(),
        "first delete"
    );
    assert!(
        delete(store, "a", "Patient", "p").await.is_none(),
        "second delete"
    );
    let page = history(store, "a", &HistoryScope::System, &query(10)).await;
    assert_eq!(
        keys(&page),
        [key("Patient/p", 2), key("Patient/p", 1)],
        "only the put and one deletion are recorded"
    );
    assert_eq!(page.total, 2);
}

/// A transaction dropped without commit leaves nothing, and the store takes the next writer.
pub async fn rollback_on_drop_leaves_nothing(store: &dyn Store) {
    service(store, "a").await;
    put(store, "a", "Patient", "kept", patient("K")).await;
    {
        let mut tx = store.begin("a").await.expect("begin");
        tx.put("Patient", "p", patient("A"), Method::Post)
            .await
            .expect("put");
        tx.put("Patient", "kept", patient("changed"), Method::Put)
            .await
            .expect("put");
        tx.delete("Patient", "kept").await.expect("delete");
        // dropped here
    }
    assert!(
        read(store, "a", "Patient", "p").await.is_none(),
        "rolled-back create invisible"
    );
    let kept = read(store, "a", "Patient", "kept").await.expect("kept");
    assert_eq!(
        kept.version, 1,
        "rolled-back update and delete left no version"
    );
    let page = history(store, "a", &HistoryScope::System, &query(10)).await;
    assert_eq!(
        keys(&page),
        [key("Patient/kept", 1)],
        "history has no rolled-back version"
    );

    let stored = put(store, "a", "Patient", "p", patient("A")).await;
    assert_eq!(
        stored.version, 1,
        "a later transaction starts from the committed state"
    );
}

/// Readers see nothing of a transaction until it commits, then all of it.
pub async fn uncommitted_writes_are_invisible(store: &dyn Store) {
    service(store, "a").await;
    let mut tx = store.begin("a").await.expect("begin");
    tx.put("Patient", "p1", patient("A"), Method::Post)
        .await
        .expect("put");
    tx.put("Patient", "p2", patient("B"), Method::Post)
        .await
        .expect("put");
    assert!(
        read(store, "a", "Patient", "p1").await.is_none(),
        "uncommitted put visible"
    );
    let page = history(store, "a", &HistoryScope::System, &query(10)).await;
    assert_eq!(page.total, 0, "uncommitted versions in history");
    tx.commit().await.expect("commit");
    assert!(
        read(store, "a", "Patient", "p1").await.is_some(),
        "committed p1 visible"
    );
    assert!(
        read(store, "a", "Patient", "p2").await.is_some(),
        "committed p2 visible"
    );
}

/// Within a transaction, `current` and version numbers reflect the transaction's own writes.
pub async fn transaction_sees_its_own_writes(store: &dyn Store) {
    service(store, "a").await;
    let mut tx = store.begin("a").await.expect("begin");
    assert!(tx.current("Patient", "p").await.expect("current").is_none());
    let v1 = tx
        .put("Patient", "p", patient("A"), Method::Post)
        .await
        .expect("put");
    let cur = tx
        .current("Patient", "p")
        .await
        .expect("current")
        .expect("own put");
    assert_same("current after own put", &cur, &v1);
    let v2 = tx
        .put("Patient", "p", patient("B"), Method::Put)
        .await
        .expect("put");
    assert_eq!(v2.version, 2, "second put in one transaction is version 2");
    let deleted = tx
        .delete("Patient", "p")
        .await
        .expect("delete")
        .expect("deletion");
    assert_eq!(deleted.version, 3);
    assert!(tx
        .current("Patient", "p")
        .await
        .expect("current")
        .expect("v3")
        .is_deleted());
    tx.commit().await.expect("commit");
    let page = history(
        store,
        "a",
        &HistoryScope::Instance("Patient".into(), "p".into()),
        &query(10),
    )
    .await;
    let methods: Vec<Method> = page.entries.iter().map(|e| e.method).collect();
    assert_eq!(
        methods,
        [Method::Delete, Method::Put, Method::Post],
        "methods recorded"
    );
}

/// Two services hold the same type/id independently.
pub async fn services_are_isolated(store: &dyn Store) {
    service(store, "a").await;
    service(store, "b").await;
    put(store, "a", "Patient", "p", patient("InA")).await;
    put(store, "a", "Patient", "p", patient("InA2")).await;
    let in_b = put(store, "b", "Patient", "p", patient("InB")).await;
    assert_eq!(in_b.version, 1, "versions count per service");
    let a = read(store, "a", "Patient", "p").await.expect("a");
    let b = read(store, "b", "Patient", "p").await.expect("b");
    assert_eq!(body_json(&a)["name"][0]["family"], "InA2");
    assert_eq!(body_json(&b)["name"][0]["family"], "InB");
    assert!(delete(store, "b", "Patient", "p").await.is_some());
    assert!(
        !read(store, "a", "Patient", "p")
            .await
            .expect("a")
            .is_deleted(),
        "a untouched"
    );
    for (svc, total) in [("a", 2), ("b", 2)] {
        for scope in [
            HistoryScope::System,
            HistoryScope::Type("Patient".into()),
            HistoryScope::Instance("Patient".into(), "p".into()),
        ] {
            let page = history(store, svc, &scope, &query(10)).await;
            assert_eq!(
                page.total, total,
                "history {scope:?} of {svc} counts only its own"
            );
        }
    }
}

/// delete_service removes the service and all its versions; a new service of the same name
/// starts empty; other services are untouched.
pub async fn delete_service_removes_its_data(store: &dyn Store) {
    service(store, "a").await;
    service(store, "b").await;
    put(store, "a", "Patient", "p", patient("A")).await;
    put(
        store,
        "a",
        "Observation",
        "o",
        json!({"resourceType": "Observation"}),
    )
    .await;
    put(store, "b", "Patient", "p", patient("B")).await;
    assert!(
        store.delete_service("a").await.expect("delete_service"),
        "existing service"
    );
    assert!(
        !store.service_exists("a").await.expect("service_exists"),
        "service gone"
    );
    assert_eq!(store.list_services().await.expect("list"), ["b"]);
    assert!(
        !store
            .delete_service("a")
            .await
            .expect("delete_service again"),
        "deleting a missing service says so"
    );
    service(store, "a").await;
    assert!(
        read(store, "a", "Patient", "p").await.is_none(),
        "recreated service is empty"
    );
    let page = history(store, "a", &HistoryScope::System, &query(10)).await;
    assert_eq!(page.total, 0, "recreated service has no history");
    let created = put(store, "a", "Patient", "p", patient("A")).await;
    assert_eq!(
        created.version, 1,
        "versions start over in a recreated service"
    );
    assert!(
        read(store, "b", "Patient", "p").await.is_some(),
        "other service untouched"
    );
}

/// Services are listed sorted; creating one twice is harmless.
pub async fn services_are_listed_and_created_idempotently(store: &dyn Store) {
    assert!(
        store.list_services().await.expect("list").is_empty(),
        "a fresh store is empty"
    );
    for name in ["zeta", "alpha", "mid", "alpha"] {
        service(store, name).await;
    }
    put(store, "mid", "Patient", "p", patient("M")).await;
    service(store, "mid").await;
    assert_eq!(
        store.list_services().await.expect("list"),
        ["alpha", "mid", "zeta"]
    );
    assert!(store.service_exists("mid").await.expect("exists"));
    assert!(!store.service_exists("nope").await.expect("exists"));
    assert!(
        read(store, "mid", "Patient", "p").await.is_some(),
        "creating an existing service keeps its data"
    );
}

/// Reads, history and writes on a service that does not exist fail with NoSuchService.
pub async fn unknown_service_is_reported(store: &dyn Store) {
    fn check<T: std::fmt::Debug>(what: &str, result: crate::Result<T>) {
        match result {
            Err(StoreError::NoSuchService(name)) => assert_eq!(name, "nope", "{what}"),
            other => panic!("{what} on an unknown service gave {other:?}"),
        }
    }
    check("read", store.read("nope", "Patient", "p").await);
    check("vread", store.vread("nope", "Patient", "p", 1).await);
    check(
        "history",
        store
            .history("nope", &HistoryScope::System, &query(10))
            .await,
    );
    check("begin", store.begin("nope").await.map(|_| ()));
}

/// System, type and instance history list the right versions, newest first, deletions
/// included, with totals.
pub async fn history_scopes(store: &dyn Store) {
    service(store, "a").await;
    put(store, "a", "Patient", "p1", patient("A")).await;
    put(
        store,
        "a",
        "Observation",
        "o1",
        json!({"resourceType": "Observation"}),
    )
    .await;
    put(store, "a", "Patient", "p2", patient("B")).await;
    put(store, "a", "Patient", "p1", patient("A2")).await;
    delete(store, "a", "Observation", "o1")
        .await
        .expect("deletion");

    let system = history(store, "a", &HistoryScope::System, &query(10)).await;
    assert_eq!(
        keys(&system),
        [
            key("Observation/o1", 2),
            key("Patient/p1", 2),
            key("Patient/p2", 1),
            key("Observation/o1", 1),
            key("Patient/p1", 1),
        ],
        "system history, newest first"
    );
    assert_eq!(system.total, 5);
    assert!(system.next.is_none(), "one page holds it all");
    assert!(
        system.entries[0].is_deleted(),
        "deletions appear in history"
    );
    assert!(
        system.entries[1].body.is_some(),
        "versions carry their bodies"
    );
    for pair in system.entries.windows(2) {
        assert!(
            pair[0].last_updated > pair[1].last_updated,
            "newest first by lastUpdated"
        );
    }

    let types = history(
        store,
        "a",
        &HistoryScope::Type("Patient".into()),
        &query(10),
    )
    .await;
    assert_eq!(
        keys(&types),
        [
            key("Patient/p1", 2),
            key("Patient/p2", 1),
            key("Patient/p1", 1)
        ],
        "type history"
    );
    assert_eq!(types.total, 3);

    let instance = HistoryScope::Instance("Patient".into(), "p1".into());
    let inst = history(store, "a", &instance, &query(10)).await;
    assert_eq!(
        keys(&inst),
        [key("Patient/p1", 2), key("Patient/p1", 1)],
        "instance history"
    );
    assert_eq!(inst.total, 2);

    let none = history(
        store,
        "a",
        &HistoryScope::Type("Encounter".into()),
        &query(10),
    )
    .await;
    assert!(none.entries.is_empty() && none.total == 0 && none.next.is_none());
    let none = HistoryScope::Instance("Patient".into(), "zz".into());
    assert_eq!(history(store, "a", &none, &query(10)).await.total, 0);

    let counted = history(store, "a", &HistoryScope::System, &query(0)).await;
    assert!(counted.entries.is_empty(), "count 0 returns no entries");
    assert_eq!(counted.total, 5, "count 0 still gives the total");
}

/// `_since` keeps versions at or after an instant, `_at` those at or before it, in every
/// scope, and the total counts what the filters keep.
pub async fn history_since_and_at(store: &dyn Store) {
    service(store, "a").await;
    service(store, "other").await;
    let mut versions = Vec::new();
    for i in 0..6 {
        let id = if i % 2 == 0 { "p" } else { "q" };
        versions.push(put(store, "a", "Patient", id, patient(&i.to_string())).await);
        // Interleave another service so that instants and positions are shared.
        put(store, "other", "Patient", id, patient("X")).await;
    }
    let middle = versions[3].last_updated;
    // p has versions[0], [2], [4]; q has versions[1], [3], [5].
    let scopes = [
        (HistoryScope::System, 3, 4),
        (HistoryScope::Type("Patient".into()), 3, 4),
        (HistoryScope::Instance("Patient".into(), "q".into()), 2, 2),
    ];
    for (scope, since_total, at_total) in scopes {
        let mut q = query(10);
        q.since = Some(middle);
        let page = history(store, "a", &scope, &q).await;
        assert!(
            page.entries.iter().all(|e| e.last_updated >= middle),
            "{scope:?} _since keeps only newer versions"
        );
        assert_eq!(
            page.total, since_total,
            "{scope:?} _since total includes the version at exactly that instant"
        );
        assert_eq!(
            page.entries.len() as u64,
            page.total,
            "{scope:?} _since entries"
        );

        let mut q = query(10);
        q.at = Some(middle);
        let page = history(store, "a", &scope, &q).await;
        assert!(
            page.entries.iter().all(|e| e.last_updated <= middle),
            "{scope:?} _at keeps only older versions"
        );
        assert_eq!(
            page.total, at_total,
            "{scope:?} _at total includes the version at exactly that instant"
        );
        assert_eq!(
            page.entries.len() as u64,
            page.total,
            "{scope:?} _at entries"
        );

        let mut q = query(10);
        q.since = Some(versions[1].last_updated);
        q.at = Some(versions[4].last_updated);
        let page = history(store, "a", &scope, &q).await;
        assert!(page
            .entries
            .iter()
            .all(|e| e.last_updated >= versions[1].last_updated
                && e.last_updated <= versions[4].last_updated));
    }
    let mut q = query(10);
    q.since = Some(versions[5].last_updated + chrono::Duration::microseconds(1));
    let page = history(store, "a", &HistoryScope::System, &q).await;
    assert_eq!(page.total, 0, "_since after the newest version is empty");
    let mut q = query(10);
    q.at = Some(versions[0].last_updated - chrono::Duration::microseconds(1));
    let page = history(store, "a", &HistoryScope::System, &q).await;
    assert_eq!(page.total, 0, "_at before the oldest version is empty");
}

/// Paging with the `next` cursor visits every version once, newest first, even while new
/// versions are written between pages; the total counts everything that matches.
pub async fn history_paging_with_cursor_while_writing(store: &dyn Store) {
    service(store, "a").await;
    let mut written = Vec::new();
    for i in 0..25 {
        let id = format!("p{}", i % 7);
        written.push(put(store, "a", "Patient", &id, patient("P")).await);
    }
    let oldest_first: Vec<(String, u64)> = written
        .iter()
        .map(|s| (format!("Patient/{}", s.id), s.version))
        .collect();
    for scope in [HistoryScope::System, HistoryScope::Type("Patient".into())] {
        let expected = keys(&history(store, "a", &scope, &query(1000)).await);
        assert!(
            expected.iter().rev().take(25).eq(oldest_first.iter()),
            "{scope:?}: history ends with the 25 versions written, oldest last"
        );
        let mut seen = Vec::new();
        let mut q = query(10);
        let mut pages = 0;
        loop {
            let page = history(store, "a", &scope, &q).await;
            pages += 1;
            assert!(page.entries.len() <= 10, "page size respected");
            assert!(
                page.total >= expected.len() as u64,
                "total counts what was there"
            );
            seen.extend(keys(&page));
            // New versions must not shift the pages being read.
            put(store, "a", "Patient", "late", patient("L")).await;
            match page.next {
                Some(next) => q.before = Some(next),
                None => break,
            }
            assert!(pages < 10, "paging does not end");
        }
        assert_eq!(pages, expected.len().div_ceil(10), "{scope:?}: pages of 10");
        assert_eq!(
            seen, expected,
            "{scope:?}: every version once, newest first"
        );
    }
    // Exactly one page's worth has no next page.
    let page = history(
        store,
        "a",
        &HistoryScope::Type("Patient".into()),
        &query(10),
    )
    .await;
    let total = page.total;
    let all = history(store, "a", &HistoryScope::System, &query(total as usize)).await;
    assert_eq!(all.entries.len() as u64, total);
    assert!(all.next.is_none(), "a page holding the rest has no next");

    // Instance history pages too.
    let instance = HistoryScope::Instance("Patient".into(), "p0".into());
    let mut q = query(2);
    let mut versions = Vec::new();
    loop {
        let page = history(store, "a", &instance, &q).await;
        assert_eq!(page.total, 4, "p0 has 4 versions");
        versions.extend(page.entries.iter().map(|e| e.version));
        match page.next {
            Some(next) => q.before = Some(next),
            None => break,
        }
    }
    assert_eq!(
        versions,
        [4, 3, 2, 1],
        "instance history paged newest first"
    );
}

/// Every version gets its own lastUpdated, strictly later than every earlier one, within one
/// transaction and across transactions and resources.
pub async fn last_updated_strictly_increasing(store: &dyn Store) {
    service(store, "a").await;
    let mut instants = Vec::new();
    for round in 0..5 {
        let mut tx = store.begin("a").await.expect("begin");
        for i in 0..20 {
            let id = format!("p{}", (round * 20 + i) % 13);
            let stored = tx
                .put("Patient", &id, patient("T"), Method::Put)
                .await
                .expect("put");
            instants.push(stored.last_updated);
        }
        if let Some(deleted) = tx.delete("Patient", "p0").await.expect("delete") {
            instants.push(deleted.last_updated);
        }
        tx.commit().await.expect("commit");
    }
    for pair in instants.windows(2) {
        assert!(
            pair[0] < pair[1],
            "lastUpdated {} then {}",
            pair[0],
            pair[1]
        );
    }
    let page = history(store, "a", &HistoryScope::System, &query(1000)).await;
    assert_eq!(page.total as usize, instants.len());
    let mut listed: Vec<_> = page.entries.iter().map(|e| e.last_updated).collect();
    listed.reverse();
    assert_eq!(
        listed, instants,
        "history lists the instants the writes returned"
    );
}

/// Many writers doing read-modify-write on one resource never lose an update: 8 tasks × 25
/// increments of a counter end at version 201 with the counter at 200.
/// Many writers at once, some of whose transactions fail (are dropped) after writing: each
/// commit, once it returned, is visible in full to every reader, and nothing of a dropped
/// transaction ever is — however a backend batches commits (group commit must keep the
/// members of a group apart).
pub async fn concurrent_transactions_are_each_all_or_nothing(store: Arc<dyn Store>) {
    const TASKS: usize = 8;
    const ROUNDS: usize = 12;
    const PER_TX: usize = 15;
    service(&*store, "a").await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                let keep = (task + round) % 3 != 0;
                let mut tx = store.begin("a").await.expect("begin");
                for i in 0..PER_TX {
                    tx.put(
                        "Basic",
                        &format!("t{task}-r{round}-{i}"),
                        json!({"resourceType": "Basic", "task": task, "round": round}),
                        Method::Put,
                    )
                    .await
                    .expect("put");
                    if i == PER_TX / 2 {
                        tokio::task::yield_now().await;
                    }
                }
                if !keep {
                    drop(tx);
                    continue;
                }
                tx.commit().await.expect("commit");
                // Acknowledged means visible to any reader, at once and in full.
                for i in 0..PER_TX {
                    let id = format!("t{task}-r{round}-{i}");
                    let found = store.read("a", "Basic", &id).await.expect("read");
                    assert!(
                        found.is_some_and(|r| !r.is_deleted()),
                        "Basic/{id} is not readable after its commit returned"
                    );
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            panic!("a writer task failed: {e}");
        }
    }
    for task in 0..TASKS {
        for round in 0..ROUNDS {
            let keep = (task + round) % 3 != 0;
            for i in 0..PER_TX {
                let id = format!("t{task}-r{round}-{i}");
                let found = store.read("a", "Basic", &id).await.expect("read").is_some();
                assert_eq!(
                    found, keep,
                    "Basic/{id}: committed {keep}, but found {found}"
                );
            }
        }
    }
}

pub async fn concurrent_writers_never_lose_an_update(store: Arc<dyn Store>) {
    const TASKS: u64 = 8;
    const ROUNDS: u64 = 25;
    service(&*store, "a").await;
    put(
        &*store,
        "a",
        "Basic",
        "counter",
        json!({"resourceType": "Basic", "count": 0}),
    )
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..TASKS {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 0..ROUNDS {
                // Now and then a transaction that rolls back must not disturb the count.
                if (task + round) % 5 == 0 {
                    let mut scratch = store.begin("a").await.expect("begin");
                    let counter = scratch.current("Basic", "counter").await.expect("current");
                    let mut body = body_json(&counter.expect("the counter exists"));
                    body["count"] = json!(-1);
                    scratch
                        .put("Basic", "counter", body, Method::Put)
                        .await
                        .expect("put");
                    scratch
                        .put(
                            "Basic",
                            "scratch",
                            json!({"resourceType": "Basic"}),
                            Method::Put,
                        )
                        .await
                        .expect("put");
                    tokio::task::yield_now().await;
                    drop(scratch);
                }
                let mut tx = store.begin("a").await.expect("begin");
                let current = tx
                    .current("Basic", "counter")
                    .await
                    .expect("current")
                    .expect("the counter exists");
                let mut body = body_json(&current);
                let count = body["count"].as_u64().expect("count is a whole number");
                body["count"] = json!(count + 1);
                // Yield inside the transaction so that other writers get every chance to race.
                tokio::task::yield_now().await;
                tx.put("Basic", "counter", body, Method::Put)
                    .await
                    .expect("put");
                tx.commit().await.expect("commit");
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            panic!("a writer task failed: {e}");
        }
    }
    let counter = read(&*store, "a", "Basic", "counter")
        .await
        .expect("counter");
    assert_eq!(
        counter.version,
        TASKS * ROUNDS + 1,
        "one version per increment"
    );
    assert_eq!(
        body_json(&counter)["count"],
        TASKS * ROUNDS,
        "no increment lost"
    );
    assert!(
        read(&*store, "a", "Basic", "scratch").await.is_none(),
        "rolled-back writes stay invisible"
    );
}

/// Readers keep reading committed versions while writers commit, each read seeing a whole
/// version whose body matches its version number.
pub async fn readers_and_writers_run_concurrently(store: Arc<dyn Store>) {
    service(&*store, "a").await;
    for i in 0..10 {
        put(&*store, "a", "Patient", &format!("p{i}"), patient("0")).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..2 {
        let store = store.clone();
        tasks.spawn(async move {
            for round in 1..=20 {
                let mut tx = store.begin("a").await.expect("begin");
                for i in (w * 5)..(w * 5 + 5) {
                    tx.put(
                        "Patient",
                        &format!("p{i}"),
                        patient(&round.to_string()),
                        Method::Put,
                    )
                    .await
                    .expect("put");
                }
                tx.commit().await.expect("commit");
            }
        });
    }
    for r in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            for n in 0..300 {
                let id = format!("p{}", (r + n) % 10);
                let stored = read(&*store, "a", "Patient", &id).await.expect("exists");
                let body = body_json(&stored);
                assert_eq!(
                    body["meta"]["versionId"],
                    stored.version.to_string(),
                    "a read returns a whole version"
                );
                if n % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
    }
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined {
            panic!("a task failed: {e}");
        }
    }
    for i in 0..10 {
        let stored = read(&*store, "a", "Patient", &format!("p{i}"))
            .await
            .expect("p");
        assert_eq!(stored.version, 21, "p{i}: every committed write counted");
    }
}

// ---------------------------------------------------------------------------------------------
// Control-plane documents

fn put_doc(
    collection: &str,
    key: &str,
    body: Value,
    expected: crate::Expected,
) -> crate::DocumentWrite {
    crate::DocumentWrite::Put {
        collection: collection.into(),
        key: key.into(),
        body,
        expected,
    }
}

/// Documents get version 1, 2, … per key; `Expected` guards every write; lists are by key.
pub async fn documents_are_versioned_and_listed(store: &dyn Store) {
    use crate::{DocumentWrite, Expected, StoreError};
    assert!(store.get_document("svc", "a").await.expect("get").is_none());
    let w = store
        .write_documents(vec![put_doc(
            "svc",
            "b",
            json!({"n": 1.50}),
            Expected::Absent,
        )])
        .await
        .expect("create b");
    assert_eq!(w[0].version, 1);
    store
        .write_documents(vec![put_doc("svc", "a", json!({"n": 1}), Expected::Any)])
        .await
        .expect("create a");
    let w = store
        .write_documents(vec![put_doc(
            "svc",
            "b",
            json!({"n": 2}),
            Expected::Version(1),
        )])
        .await
        .expect("update b");
    assert_eq!(w[0].version, 2);
    match store
        .write_documents(vec![put_doc(
            "svc",
            "b",
            json!({"n": 3}),
            Expected::Version(1),
        )])
        .await
    {
        Err(StoreError::Conflict { key, .. }) => assert_eq!(key, "b"),
        other => panic!("a stale version must conflict, got {other:?}"),
    }
    match store
        .write_documents(vec![put_doc("svc", "a", json!({}), Expected::Absent)])
        .await
    {
        Err(StoreError::Conflict { .. }) => {}
        other => panic!("Absent on an existing key must conflict, got {other:?}"),
    }
    store
        .write_documents(vec![put_doc(
            "other",
            "a",
            json!({"elsewhere": true}),
            Expected::Absent,
        )])
        .await
        .expect("collections are separate");
    let list = store.list_documents("svc").await.expect("list");
    let keys: Vec<&str> = list.iter().map(|d| d.key.as_str()).collect();
    assert_eq!(keys, ["a", "b"]);
    assert_eq!(list[1].body, json!({"n": 2}));
    assert_eq!(list[1].version, 2);
    store
        .write_documents(vec![DocumentWrite::Delete {
            collection: "svc".into(),
            key: "a".into(),
            expected: Expected::Version(1),
        }])
        .await
        .expect("delete a");
    assert!(store.get_document("svc", "a").await.expect("get").is_none());
    let b = store
        .get_document("svc", "b")
        .await
        .expect("get")
        .expect("b");
    assert_eq!(b.body["n"], json!(2));
}

/// A batch whose last expectation fails writes none of its earlier changes.
pub async fn document_writes_are_all_or_nothing(store: &dyn Store) {
    use crate::{Expected, StoreError};
    store
        .write_documents(vec![put_doc("c", "x", json!(1), Expected::Absent)])
        .await
        .expect("x");
    let r = store
        .write_documents(vec![
            put_doc("c", "y", json!(2), Expected::Absent),
            put_doc("c", "x", json!(3), Expected::Version(1)),
            put_doc("c", "z", json!(4), Expected::Version(9)),
        ])
        .await;
    assert!(matches!(r, Err(StoreError::Conflict { .. })), "{r:?}");
    assert!(store.get_document("c", "y").await.expect("get").is_none());
    assert_eq!(
        store
            .get_document("c", "x")
            .await
            .expect("get")
            .expect("x")
            .version,
        1
    );
}

/// The change feed: every committed write moves the position on and names the document
/// (its latest change once, deletions included); a refused batch changes nothing; a reader
/// at the current position finds nothing new.
pub async fn document_changes_follow_every_write(store: &dyn Store) {
    use crate::{DocumentChange, DocumentWrite, Expected};
    use std::time::Duration;
    let start = store
        .document_changes(0, Duration::ZERO)
        .await
        .expect("feed at start");
    let p0 = start.position;
    store
        .write_documents(vec![
            put_doc("feed", "x", json!(1), Expected::Absent),
            put_doc("feed", "y", json!(1), Expected::Absent),
        ])
        .await
        .expect("x, y");
    let first = store
        .document_changes(p0, Duration::ZERO)
        .await
        .expect("feed after x, y");
    assert!(first.position > p0, "{first:?}");
    assert!(!first.truncated);
    let named: Vec<(&str, Option<u64>)> = first
        .changes
        .iter()
        .map(|c| (c.key.as_str(), c.version))
        .collect();
    assert_eq!(named, vec![("x", Some(1)), ("y", Some(1))]);
    let refused = store
        .write_documents(vec![
            put_doc("feed", "y", json!(2), Expected::Version(1)),
            put_doc("feed", "x", json!(2), Expected::Version(7)),
        ])
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let unchanged = store
        .document_changes(first.position, Duration::ZERO)
        .await
        .expect("feed after a refused batch");
    assert_eq!(unchanged.position, first.position, "{unchanged:?}");
    assert!(unchanged.changes.is_empty(), "{unchanged:?}");
    store
        .write_documents(vec![put_doc("feed", "y", json!(2), Expected::Version(1))])
        .await
        .expect("y again");
    store
        .write_documents(vec![DocumentWrite::Delete {
            collection: "feed".into(),
            key: "x".into(),
            expected: Expected::Version(1),
        }])
        .await
        .expect("delete x");
    store
        .write_documents(vec![put_doc("feed", "y", json!(3), Expected::Version(2))])
        .await
        .expect("y a third time");
    let later = store
        .document_changes(first.position, Duration::ZERO)
        .await
        .expect("feed after the deletion");
    assert!(later.position > first.position);
    assert_eq!(
        later.changes,
        vec![
            DocumentChange {
                collection: "feed".into(),
                key: "x".into(),
                version: None
            },
            DocumentChange {
                collection: "feed".into(),
                key: "y".into(),
                version: Some(3)
            },
        ]
    );
    let from_start = store
        .document_changes(p0, Duration::ZERO)
        .await
        .expect("feed from the start");
    assert_eq!(from_start.position, later.position);
    assert_eq!(from_start.changes, later.changes);
}

/// [`crate::DocumentWrite::Unchanged`]: a batch decided on a collection as of a feed position
/// commits only while no document of that collection changed after it (a write or a
/// deletion, by any writer); changes of other collections do not count; a refused batch
/// writes nothing; a position beyond the feed is refused.
pub async fn document_batches_can_require_a_collection_unchanged(store: &dyn Store) {
    use crate::{DocumentWrite, Expected, StoreError};
    use std::time::Duration;
    async fn position(store: &dyn Store) -> u64 {
        store
            .document_changes(u64::MAX >> 1, Duration::ZERO)
            .await
            .expect("feed position")
            .position
    }
    let unchanged = |since: u64| DocumentWrite::Unchanged {
        collection: "rules".into(),
        since,
    };
    store
        .write_documents(vec![put_doc("rules", "a", json!(1), Expected::Absent)])
        .await
        .expect("a");
    let p1 = position(store).await;
    // Nothing changed since p1: the batch commits, the precondition writes nothing itself.
    let written = store
        .write_documents(vec![
            unchanged(p1),
            put_doc("rules", "b", json!(1), Expected::Absent),
        ])
        .await
        .expect("b on an unchanged collection");
    assert_eq!(written.len(), 1, "{written:?}");
    let p2 = position(store).await;
    let feed = store
        .document_changes(p1, Duration::ZERO)
        .await
        .expect("feed after b");
    assert_eq!(
        feed.changes
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>(),
        vec!["b"],
        "{feed:?}"
    );
    // Another collection changing does not count.
    store
        .write_documents(vec![put_doc("other", "x", json!(1), Expected::Any)])
        .await
        .expect("other/x");
    store
        .write_documents(vec![
            put_doc("rules", "c", json!(1), Expected::Absent),
            unchanged(p2),
        ])
        .await
        .expect("c: only another collection changed since p2");
    // A decision made at p2 is stale now (c came after it), even for a document c's writer
    // never touched, wherever the precondition stands in the batch.
    for batch in [
        vec![
            unchanged(p2),
            put_doc("rules", "d", json!(1), Expected::Absent),
        ],
        vec![
            put_doc("rules", "d", json!(1), Expected::Absent),
            put_doc("other", "y", json!(1), Expected::Absent),
            unchanged(p2),
        ],
    ] {
        let before = position(store).await;
        let refused = store.write_documents(batch).await;
        assert!(
            matches!(refused, Err(StoreError::Conflict { ref collection, .. }) if collection == "rules"),
            "{refused:?}"
        );
        assert_eq!(
            position(store).await,
            before,
            "a refused batch moved the feed"
        );
        assert!(store
            .get_document("rules", "d")
            .await
            .expect("get d")
            .is_none());
        assert!(store
            .get_document("other", "y")
            .await
            .expect("get y")
            .is_none());
    }
    // A deletion counts as a change.
    let p3 = position(store).await;
    store
        .write_documents(vec![DocumentWrite::Delete {
            collection: "rules".into(),
            key: "a".into(),
            expected: Expected::Version(1),
        }])
        .await
        .expect("delete a");
    let refused = store
        .write_documents(vec![
            unchanged(p3),
            put_doc("rules", "d", json!(1), Expected::Absent),
        ])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    // Caught up, the same decision commits.
    let p4 = position(store).await;
    store
        .write_documents(vec![
            unchanged(p4),
            put_doc("rules", "d", json!(1), Expected::Absent),
        ])
        .await
        .expect("d once caught up");
    // A position the feed has not reached cannot be vouched for.
    let ahead = position(store).await + 10;
    let refused = store
        .write_documents(vec![
            unchanged(ahead),
            put_doc("rules", "e", json!(1), Expected::Absent),
        ])
        .await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "{refused:?}"
    );
    assert!(store
        .get_document("rules", "e")
        .await
        .expect("get e")
        .is_none());
}

/// A reader waiting on the feed is answered with a write made while it waits.
pub async fn document_changes_wake_a_waiting_reader(store: Arc<dyn Store>) {
    use crate::Expected;
    use std::time::Duration;
    let now = store
        .document_changes(0, Duration::ZERO)
        .await
        .expect("feed")
        .position;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move { store.document_changes(now, Duration::from_secs(30)).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    store
        .write_documents(vec![put_doc("feed", "w", json!(1), Expected::Absent)])
        .await
        .expect("w");
    let seen = reader
        .await
        .expect("reader task")
        .expect("feed while waiting");
    assert!(seen.position > now, "{seen:?}");
    assert_eq!(
        seen.changes
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>(),
        vec!["w"]
    );
}

// ---------------------------------------------------------------------------------------------
// Search

fn search_query(rtype: &str, pairs: &[(&str, &str)]) -> crate::SearchQuery {
    let params: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fhir_search::parse(Some(rtype), &params, &fhir_search::ParseOptions::default())
        .unwrap_or_else(|e| panic!("{rtype}?{pairs:?} does not parse: {e}"))
}

async fn search_ids(
    store: &dyn Store,
    svc: &str,
    rtype: &str,
    pairs: &[(&str, &str)],
) -> Vec<String> {
    let page = store
        .search(svc, &search_query(rtype, pairs))
        .await
        .unwrap_or_else(|e| panic!("search {rtype}?{pairs:?} failed: {e}"));
    let mut ids: Vec<String> = page.matches.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    ids
}

/// The index follows updates and deletions: only the current version of a live resource
/// matches, and services do not see each other's resources.
pub async fn search_matches_current_versions_only(store: &dyn Store) {
    service(store, "s").await;
    service(store, "other").await;
    put(store, "s", "Patient", "a", patient("Smith")).await;
    put(store, "s", "Patient", "b", patient("Smythe")).await;
    put(store, "other", "Patient", "c", patient("Smith")).await;
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "smi")]).await,
        ["a"]
    );
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "sm")]).await,
        ["a", "b"]
    );
    put(store, "s", "Patient", "a", patient("Jones")).await;
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "smi")]).await,
        Vec::<String>::new()
    );
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "jones")]).await,
        ["a"]
    );
    delete(store, "s", "Patient", "a").await;
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "jones")]).await,
        Vec::<String>::new()
    );
    assert_eq!(search_ids(store, "s", "Patient", &[]).await, ["b"]);
    assert_eq!(
        search_ids(store, "s", "Patient", &[("_id", "b")]).await,
        ["b"]
    );
}

/// A cursor page continues after the last resource seen, whatever was added meanwhile.
pub async fn search_pages_by_cursor_while_writing(store: &dyn Store) {
    service(store, "s").await;
    for i in 0..5 {
        put(store, "s", "Patient", &format!("p{i}"), patient("Page")).await;
    }
    let mut q = search_query("Patient", &[("name", "page"), ("_count", "2")]);
    let first = store.search("s", &q).await.expect("first page");
    assert_eq!(first.matches.len(), 2);
    // Regression (issue #20): by default a filtered page that does not hold every match
    // gives no total (counting would cost a pass over all matches); the links work without.
    assert_eq!(first.total, None);
    put(store, "s", "Patient", "new", patient("Page")).await;
    let mut seen: Vec<String> = first.matches.iter().map(|m| m.id.clone()).collect();
    let mut cursor = first.next;
    while let Some(c) = cursor {
        q.cursor = Some(c);
        let page = store.search("s", &q).await.expect("next page");
        seen.extend(page.matches.iter().map(|m| m.id.clone()));
        cursor = page.next;
    }
    assert_eq!(seen, ["p0", "p1", "p2", "p3", "p4", "new"]);
}

fn with_total(mut q: crate::SearchQuery, total: Option<fhir_search::Total>) -> crate::SearchQuery {
    q.total = total;
    q
}

async fn total_of(store: &dyn Store, svc: &str, q: &crate::SearchQuery) -> Option<u64> {
    store
        .search(svc, q)
        .await
        .unwrap_or_else(|e| panic!("search {q:?} failed: {e}"))
        .total
}

/// `_total` (FHIR R4 search.html#total): `accurate` and `estimate` give the number of matches,
/// `none` none; without it a total is given only when it is free — the first page holds every
/// match, or the search has no filter (the type's kept count) — and a search whose total is
/// left out still pages to its end. `_summary=count` is `_count=0` with an accurate total.
pub async fn search_totals_as_r4_defines_them(store: &dyn Store) {
    use fhir_search::Total;
    service(store, "s").await;
    for i in 0..5 {
        put(store, "s", "Patient", &format!("t{i}"), patient("Total")).await;
    }
    put(store, "s", "Patient", "other", patient("Other")).await;
    put(
        store,
        "s",
        "Observation",
        "o",
        json!({"resourceType": "Observation",
        "status": "final", "code": {"text": "x"}}),
    )
    .await;
    let small = search_query("Patient", &[("name", "total"), ("_count", "2")]);
    let large = search_query("Patient", &[("name", "total"), ("_count", "10")]);
    assert_eq!(
        total_of(store, "s", &small).await,
        None,
        "default, page short of the matches"
    );
    assert_eq!(
        total_of(store, "s", &large).await,
        Some(5),
        "default, every match on the page"
    );
    for total in [Total::Accurate, Total::Estimate] {
        assert_eq!(
            total_of(store, "s", &with_total(small.clone(), Some(total))).await,
            Some(5),
            "_total={total:?}"
        );
    }
    assert_eq!(
        total_of(store, "s", &with_total(large.clone(), Some(Total::None))).await,
        None,
        "_total=none"
    );
    let mut count = with_total(small.clone(), Some(Total::Accurate));
    count.count = 0;
    let page = store.search("s", &count).await.expect("count");
    assert!(page.matches.is_empty());
    assert_eq!(page.total, Some(5), "_summary=count");
    // Unfiltered: the type's count, whatever the page size.
    let all = search_query("Patient", &[("_count", "2")]);
    assert_eq!(total_of(store, "s", &all).await, Some(6), "unfiltered type");
    assert_eq!(
        total_of(store, "s", &with_total(all.clone(), Some(Total::None))).await,
        None
    );
    let system = |pairs: &[(&str, &str)]| {
        let params: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fhir_search::parse(None, &params, &fhir_search::ParseOptions::default())
            .expect("system query")
    };
    assert_eq!(
        total_of(store, "s", &system(&[("_count", "1")])).await,
        Some(7)
    );
    assert_eq!(
        total_of(
            store,
            "s",
            &system(&[("_type", "Observation,Patient"), ("_count", "1")])
        )
        .await,
        Some(7)
    );
    // Deep paging without a total: one resource a page, to the end, each once.
    let mut q = search_query("Patient", &[("name", "total"), ("_count", "1")]);
    let mut seen = Vec::new();
    loop {
        let page = store.search("s", &q).await.expect("page");
        assert_eq!(page.total, None, "no total on page {}", seen.len());
        seen.extend(page.matches.iter().map(|m| m.id.clone()));
        match page.next {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
}

/// The kept count of a type's live resources (an unfiltered total) follows creates, updates,
/// deletions and re-creations, counts nothing of a rolled-back transaction, and is per
/// service.
pub async fn live_counts_follow_writes_and_rollbacks(store: &dyn Store) {
    service(store, "s").await;
    service(store, "other").await;
    let mut all = search_query("Patient", &[("_count", "1")]);
    all.total = Some(fhir_search::Total::Accurate);
    assert_eq!(total_of(store, "s", &all).await, Some(0), "empty");
    for i in 0..3 {
        put(store, "s", "Patient", &format!("p{i}"), patient("Count")).await;
    }
    assert_eq!(total_of(store, "s", &all).await, Some(3), "three created");
    put(store, "s", "Patient", "p0", patient("Updated")).await;
    assert_eq!(
        total_of(store, "s", &all).await,
        Some(3),
        "an update is no new resource"
    );
    delete(store, "s", "Patient", "p1").await;
    assert_eq!(total_of(store, "s", &all).await, Some(2), "one deleted");
    delete(store, "s", "Patient", "p1").await;
    assert_eq!(
        total_of(store, "s", &all).await,
        Some(2),
        "deleting a deletion"
    );
    put(store, "s", "Patient", "p1", patient("Back")).await;
    assert_eq!(total_of(store, "s", &all).await, Some(3), "re-created");
    {
        let mut tx = store.begin("s").await.expect("begin");
        tx.put("Patient", "gone", patient("Rolled"), Method::Post)
            .await
            .expect("put");
        tx.delete("Patient", "p0").await.expect("delete");
        drop(tx);
    }
    assert_eq!(total_of(store, "s", &all).await, Some(3), "rolled back");
    let mut tx = store.begin("s").await.expect("begin");
    tx.put("Patient", "brief", patient("Brief"), Method::Post)
        .await
        .expect("put");
    tx.delete("Patient", "brief").await.expect("delete");
    tx.put("Patient", "p3", patient("New"), Method::Post)
        .await
        .expect("put");
    tx.commit().await.expect("commit");
    assert_eq!(
        total_of(store, "s", &all).await,
        Some(4),
        "created and deleted in one"
    );
    let mut tx = store.begin("s").await.expect("begin");
    tx.put_version("Patient", "p3", 9, chrono::Utc::now(), None)
        .await
        .expect("put_version of a deletion");
    tx.commit().await.expect("commit");
    assert_eq!(
        total_of(store, "s", &all).await,
        Some(3),
        "a deletion by put_version"
    );
    assert_eq!(
        total_of(store, "other", &all).await,
        Some(0),
        "other service"
    );
    assert!(store.delete_service("s").await.expect("delete service"));
    service(store, "s").await;
    assert_eq!(
        total_of(store, "s", &all).await,
        Some(0),
        "service recreated"
    );
}

/// A sorted search pages by position (keyset), not by offset: a resource added before the
/// current page or one removed from a page already read neither repeats nor skips anything on
/// the next pages; ties and resources without a value keep one order (value, then row), both
/// ways, and previous links walk back over the same pages.
pub async fn sorted_search_pages_by_position_while_writing(store: &dyn Store) {
    service(store, "s").await;
    let born = |year: Option<u32>| match year {
        Some(y) => json!({"resourceType": "Patient", "name": [{"family": "Sorted"}],
                          "birthDate": format!("{y}-01-01")}),
        None => json!({"resourceType": "Patient", "name": [{"family": "Sorted"}]}),
    };
    // Years with ties, and two patients without a birthDate.
    let years = [
        Some(1990),
        Some(1970),
        None,
        Some(1980),
        Some(1970),
        Some(2000),
        Some(1980),
        None,
        Some(1960),
        Some(1990),
    ];
    for (i, y) in years.iter().enumerate() {
        put(store, "s", "Patient", &format!("p{i}"), born(*y)).await;
    }
    // Expected orders, worked out from `years` (ties in the order written):
    // ascending, no value first: p2 p7 | p8 | p1 p4 | p3 p6 | p0 p9 | p5.
    let ascending = ["p2", "p7", "p8", "p1", "p4", "p3", "p6", "p0", "p9", "p5"];
    // descending, no value last: p5 | p0 p9 | p3 p6 | p1 p4 | p8 | p2 p7.
    let descending = ["p5", "p0", "p9", "p3", "p6", "p1", "p4", "p8", "p2", "p7"];
    for (sort, expected) in [("birthdate", ascending), ("-birthdate", descending)] {
        let mut q = search_query(
            "Patient",
            &[("name", "sorted"), ("_sort", sort), ("_count", "3")],
        );
        let mut pages: Vec<Vec<String>> = Vec::new();
        let previous = loop {
            let page = store.search("s", &q).await.expect("sorted page");
            pages.push(page.matches.iter().map(|m| m.id.clone()).collect());
            match page.next {
                Some(c) => q.cursor = Some(c),
                None => break page.previous,
            }
        };
        assert_eq!(pages.concat(), expected, "_sort={sort}, page by page");
        // Back from the last page by previous links: the same pages.
        q.cursor = Some(previous.unwrap_or_else(|| panic!("_sort={sort}: no previous link")));
        let mut back: Vec<Vec<String>> = Vec::new();
        loop {
            let page = store.search("s", &q).await.expect("previous page");
            back.push(page.matches.iter().map(|m| m.id.clone()).collect());
            match page.previous {
                Some(c) => q.cursor = Some(c),
                None => break,
            }
        }
        back.reverse();
        assert_eq!(
            back.concat(),
            expected[..expected.len() - pages.last().map_or(0, Vec::len)],
            "_sort={sort}, walking back"
        );
    }
    // While writing: read the first page, then add two patients that sort before it and remove
    // one already read (an offset would now repeat p8); the rest follows as if nothing happened
    // before the cursor.
    let mut q = search_query(
        "Patient",
        &[("name", "sorted"), ("_sort", "birthdate"), ("_count", "3")],
    );
    let first = store.search("s", &q).await.expect("first page");
    let read: Vec<String> = first.matches.iter().map(|m| m.id.clone()).collect();
    assert_eq!(read, ["p2", "p7", "p8"]);
    put(store, "s", "Patient", "early", born(Some(1900))).await;
    put(store, "s", "Patient", "earlier", born(Some(1890))).await;
    delete(store, "s", "Patient", "p7").await;
    let mut rest = Vec::new();
    let mut cursor = first.next;
    while let Some(c) = cursor {
        q.cursor = Some(c);
        let page = store.search("s", &q).await.expect("next page");
        rest.extend(page.matches.iter().map(|m| m.id.clone()));
        cursor = page.next;
    }
    assert_eq!(rest, ascending[3..], "no repeat, no skip");
}

/// Chains, reverse chains and includes follow references between types.
pub async fn search_chains_has_and_includes(store: &dyn Store) {
    service(store, "s").await;
    put(store, "s", "Patient", "p1", patient("Chain")).await;
    put(store, "s", "Patient", "p2", patient("Other")).await;
    let obs = |subject: &str, code: &str| {
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
               "subject": {"reference": subject}})
    };
    put(store, "s", "Observation", "o1", obs("Patient/p1", "1-1")).await;
    put(store, "s", "Observation", "o2", obs("Patient/p2", "2-2")).await;
    assert_eq!(
        search_ids(
            store,
            "s",
            "Observation",
            &[("subject:Patient.name", "chain")]
        )
        .await,
        ["o1"]
    );
    assert_eq!(
        search_ids(
            store,
            "s",
            "Patient",
            &[("_has:Observation:subject:code", "http://loinc.org|2-2")]
        )
        .await,
        ["p2"]
    );
    let page = store
        .search(
            "s",
            &search_query(
                "Observation",
                &[("code", "1-1"), ("_include", "Observation:subject")],
            ),
        )
        .await
        .expect("include");
    assert_eq!(page.includes.len(), 1);
    assert_eq!(page.includes[0].id, "p1");
}

/// A composite parameter over repeating elements matches only when every component matches in
/// the same element (FHIR R4 §3.1.1.4.8): a blood pressure whose systolic is 120 and whose
/// diastolic is 150 is not a "systolic > 140". A composite over the resource itself matches its
/// components on the resource, and a tuple's values are kept apart from other parameters'.
pub async fn search_composites_match_within_one_tuple(store: &dyn Store) {
    service(store, "s").await;
    let bp = |systolic: u32, diastolic: u32| {
        let part = |code: &str, v: u32| {
            json!({"code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                   "valueQuantity": {"value": v, "unit": "mm[Hg]",
                                     "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}})
        };
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
               "component": [part("8480-6", systolic), part("8462-4", diastolic)]})
    };
    put(store, "s", "Observation", "high", bp(150, 90)).await;
    put(store, "s", "Observation", "crossed", bp(120, 150)).await;
    put(
        store,
        "s",
        "Observation",
        "height",
        json!({"resourceType": "Observation", "status": "final",
               "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
               "valueQuantity": {"value": 180, "unit": "cm",
                                 "system": "http://unitsofmeasure.org", "code": "cm"}}),
    )
    .await;
    let ids = |pairs: &'static [(&'static str, &'static str)]| {
        search_ids(store, "s", "Observation", pairs)
    };
    assert_eq!(
        ids(&[(
            "component-code-value-quantity",
            "http://loinc.org|8480-6$gt140"
        )])
        .await,
        ["high"],
        "systolic > 140 within one component"
    );
    assert_eq!(
        ids(&[(
            "component-code-value-quantity",
            "http://loinc.org|8462-4$gt140"
        )])
        .await,
        ["crossed"]
    );
    assert_eq!(
        ids(&[(
            "component-code-value-quantity",
            "http://loinc.org|8480-6$lt100"
        )])
        .await,
        Vec::<String>::new()
    );
    // OR of tuples, and AND with another parameter.
    assert_eq!(
        ids(&[(
            "component-code-value-quantity",
            "http://loinc.org|8480-6$gt140,http://loinc.org|8462-4$gt140",
        )])
        .await,
        ["crossed", "high"]
    );
    assert_eq!(
        ids(&[
            (
                "component-code-value-quantity",
                "http://loinc.org|8462-4$ge90"
            ),
            (
                "component-code-value-quantity",
                "http://loinc.org|8480-6$lt130"
            ),
        ])
        .await,
        ["crossed"],
        "each composite value is matched by a tuple of its own"
    );
    assert_eq!(
        ids(&[
            ("code", "http://loinc.org|85354-9"),
            (
                "component-code-value-quantity",
                "http://loinc.org|8480-6$gt140"
            ),
        ])
        .await,
        ["high"]
    );
    // combo-: the resource's own code and value are one tuple, each component another.
    assert_eq!(
        ids(&[("combo-code-value-quantity", "http://loinc.org|8302-2$180")]).await,
        ["height"]
    );
    assert_eq!(
        ids(&[("combo-code-value-quantity", "http://loinc.org|85354-9$150")]).await,
        Vec::<String>::new(),
        "the panel's code with a component's value is no tuple"
    );
    assert_eq!(
        ids(&[("combo-code-value-quantity", "http://loinc.org|8462-4$150")]).await,
        ["crossed"]
    );
    // Over the resource itself.
    assert_eq!(
        ids(&[("code-value-quantity", "http://loinc.org|8302-2$gt179")]).await,
        ["height"]
    );
}

/// `:in`, `:not-in`, `:below` and `:above` become sets of codes (FHIR R4 §3.1.1.4.4); the store
/// matches a resource when any of its codings is in the set (none of them, negated).
pub async fn search_tokens_in_value_sets_and_hierarchies(store: &dyn Store) {
    service(store, "s").await;
    let cc = "http://terminology.hl7.org/CodeSystem/condition-clinical";
    let condition = |system: &str, code: &str| {
        json!({"resourceType": "Condition",
               "clinicalStatus": {"coding": [{"system": system, "code": code}]},
               "subject": {"reference": "Patient/p"}})
    };
    put(
        store,
        "s",
        "Condition",
        "resolved",
        condition(cc, "resolved"),
    )
    .await;
    put(
        store,
        "s",
        "Condition",
        "remission",
        condition(cc, "remission"),
    )
    .await;
    put(store, "s", "Condition", "active", condition(cc, "active")).await;
    put(
        store,
        "s",
        "Condition",
        "foreign",
        condition("urn:x", "resolved"),
    )
    .await;
    let below = format!("{cc}|inactive");
    assert_eq!(
        search_ids(
            store,
            "s",
            "Condition",
            &[("clinical-status:below", &below)]
        )
        .await,
        ["remission", "resolved"]
    );
    let above = format!("{cc}|resolved");
    assert_eq!(
        search_ids(
            store,
            "s",
            "Condition",
            &[("clinical-status:above", &above)]
        )
        .await,
        ["resolved"]
    );
    let vs = "http://hl7.org/fhir/ValueSet/condition-clinical";
    assert_eq!(
        search_ids(store, "s", "Condition", &[("clinical-status:in", vs)]).await,
        ["active", "remission", "resolved"]
    );
    assert_eq!(
        search_ids(store, "s", "Condition", &[("clinical-status:not-in", vs)]).await,
        ["foreign"]
    );
    assert_eq!(
        search_ids(
            store,
            "s",
            "Condition",
            &[
                ("clinical-status:in", vs),
                ("clinical-status:below", &below)
            ]
        )
        .await,
        ["remission", "resolved"]
    );
}

/// Conditional operations decide inside their transaction, on its own uncommitted writes too.
pub async fn transaction_matching_sees_its_own_writes(store: &dyn Store) {
    service(store, "s").await;
    put(
        store,
        "s",
        "Patient",
        "a",
        json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:x", "value": "1"}]}),
    )
    .await;
    let mut tx = store.begin("s").await.expect("begin");
    let q = search_query("Patient", &[("identifier", "urn:x|1")]);
    let found = tx.matching(&q, 2).await.expect("matching");
    assert_eq!(found, [("Patient".to_string(), "a".to_string())]);
    tx.put(
        "Patient",
        "b",
        json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:x", "value": "1"}]}),
        Method::Post,
    )
    .await
    .expect("put");
    assert_eq!(tx.matching(&q, 5).await.expect("matching").len(), 2);
}

/// All `(id, version)` of a scan, read page by page (`page` at a time).
async fn scan_all(
    store: &dyn Store,
    svc: &str,
    rtype: &str,
    snapshot: Snapshot,
    versions: ScanVersions,
    since: Option<chrono::DateTime<chrono::Utc>>,
    page: usize,
) -> Vec<(String, u64, bool)> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let q = ScanQuery {
            snapshot,
            versions,
            since,
            till: None,
            after: after.clone(),
            limit: page,
        };
        let got = store
            .scan(svc, rtype, &q)
            .await
            .unwrap_or_else(|e| panic!("scan {svc}/{rtype} failed: {e}"));
        for r in &got {
            assert_eq!(r.resource_type, rtype, "scan returns its type only");
            out.push((r.id.clone(), r.version, r.is_deleted()));
        }
        if got.len() < page {
            return out;
        }
        let last = got.last().expect("a full page");
        after = Some((last.id.clone(), last.version));
    }
}

/// A scan reads the service as it was when the snapshot was taken: writes, deletions and
/// creations made after it are not seen; the versions it returns are the ones then current,
/// byte for byte.
pub async fn scan_reads_the_snapshot_while_writing(store: &dyn Store) {
    service(store, "a").await;
    service(store, "b").await;
    let p1 = put(store, "a", "Patient", "p1", patient("One")).await;
    let p2 = put(store, "a", "Patient", "p2", patient("Two")).await;
    put(store, "a", "Patient", "p3", patient("Three")).await;
    delete(store, "a", "Patient", "p3").await;
    put(store, "b", "Patient", "other", patient("Other")).await;
    let snap = store.snapshot("a").await.expect("snapshot");
    assert!(
        snap.time >= p2.last_updated,
        "the snapshot's time is no earlier than its newest version"
    );

    // After the snapshot: p1 changes, p2 is deleted, p4 is created, p3 comes back.
    put(store, "a", "Patient", "p1", patient("One again")).await;
    delete(store, "a", "Patient", "p2").await;
    put(store, "a", "Patient", "p4", patient("Four")).await;
    put(store, "a", "Patient", "p3", patient("Three again")).await;

    let current = scan_all(
        store,
        "a",
        "Patient",
        snap,
        ScanVersions::Current,
        None,
        100,
    )
    .await;
    assert_eq!(
        current,
        vec![("p1".into(), 1, false), ("p2".into(), 1, false)],
        "the current versions as of the snapshot"
    );
    let first = store
        .scan(
            "a",
            "Patient",
            &ScanQuery {
                snapshot: snap,
                versions: ScanVersions::Current,
                since: None,
                till: None,
                after: None,
                limit: 1,
            },
        )
        .await
        .expect("scan");
    assert_same("scanned p1", &first[0], &p1);

    let with_deleted = scan_all(
        store,
        "a",
        "Patient",
        snap,
        ScanVersions::CurrentAndDeleted,
        None,
        100,
    )
    .await;
    assert_eq!(
        with_deleted,
        vec![
            ("p1".into(), 1, false),
            ("p2".into(), 1, false),
            ("p3".into(), 2, true)
        ],
        "deletions as of the snapshot"
    );
    let all = scan_all(store, "a", "Patient", snap, ScanVersions::All, None, 100).await;
    assert_eq!(
        all,
        vec![
            ("p1".into(), 1, false),
            ("p2".into(), 1, false),
            ("p3".into(), 1, false),
            ("p3".into(), 2, true)
        ],
        "every version up to the snapshot"
    );
    let later = store.snapshot("a").await.expect("snapshot");
    let now = scan_all(
        store,
        "a",
        "Patient",
        later,
        ScanVersions::Current,
        None,
        100,
    )
    .await;
    assert_eq!(
        now,
        vec![
            ("p1".into(), 2, false),
            ("p3".into(), 3, false),
            ("p4".into(), 1, false)
        ],
        "a new snapshot sees the writes"
    );
    assert!(
        scan_all(
            store,
            "a",
            "Observation",
            later,
            ScanVersions::All,
            None,
            10
        )
        .await
        .is_empty(),
        "a type without resources scans empty"
    );
    assert!(
        matches!(
            store.snapshot("nope").await,
            Err(StoreError::NoSuchService(_))
        ),
        "snapshot of an unknown service"
    );
}

/// Pages of a scan, small or large, read the same rows once each; `since` keeps the versions
/// written at or after it.
pub async fn scan_pages_and_filters(store: &dyn Store) {
    service(store, "a").await;
    let mut expected = Vec::new();
    for i in 0..25 {
        let id = format!("o{i:02}");
        put(
            store,
            "a",
            "Observation",
            &id,
            json!({"resourceType": "Observation", "status": "final"}),
        )
        .await;
        if i % 3 == 0 {
            put(
                store,
                "a",
                "Observation",
                &id,
                json!({"resourceType": "Observation", "status": "amended"}),
            )
            .await;
            expected.push((id, 2, false));
        } else {
            expected.push((id, 1, false));
        }
    }
    let middle = put(
        store,
        "a",
        "Observation",
        "z-late",
        json!({"resourceType": "Observation", "status": "final"}),
    )
    .await;
    expected.push(("z-late".into(), 1, false));
    let snap = store.snapshot("a").await.expect("snapshot");
    for page in [1, 2, 7, 1000] {
        let got = scan_all(
            store,
            "a",
            "Observation",
            snap,
            ScanVersions::Current,
            None,
            page,
        )
        .await;
        assert_eq!(got, expected, "current versions in pages of {page}");
        let all = scan_all(
            store,
            "a",
            "Observation",
            snap,
            ScanVersions::All,
            None,
            page,
        )
        .await;
        assert_eq!(all.len(), 25 + 9 + 1, "every version in pages of {page}");
    }
    let since = scan_all(
        store,
        "a",
        "Observation",
        snap,
        ScanVersions::Current,
        Some(middle.last_updated),
        10,
    )
    .await;
    assert_eq!(
        since,
        vec![("z-late".into(), 1, false)],
        "since keeps later versions"
    );
}

/// [`crate::WriteTx::put_version`] keeps the version and instant it is given (imported
/// history), writes nothing for a version at or below the current one, records deletions,
/// indexes only the current version, and moves the clock past what it stored: a later
/// ordinary write is newer than an imported instant in the future.
pub async fn put_version_keeps_versions_and_instants(store: &dyn Store) {
    use chrono::TimeZone;
    service(store, "a").await;
    let t1 = chrono::Utc.with_ymd_and_hms(2020, 1, 1, 8, 0, 0).unwrap();
    let t3 = chrono::Utc.with_ymd_and_hms(2020, 3, 1, 8, 0, 0).unwrap();
    let t5 = chrono::Utc.with_ymd_and_hms(2020, 5, 1, 8, 0, 0).unwrap();
    let ahead = chrono::Utc::now() + chrono::Duration::hours(1);
    let mut tx = store.begin("a").await.expect("begin");
    let v1 = tx
        .put_version(
            "Patient",
            "x",
            1,
            t1,
            Some(Prepared::new("x", patient("Old"))),
        )
        .await
        .expect("put_version 1")
        .expect("version 1 is written");
    assert_eq!(
        (v1.version, v1.last_updated, v1.method),
        (1, t1, Method::Post)
    );
    let v3 = tx
        .put_version(
            "Patient",
            "x",
            3,
            t3,
            Some(Prepared::new("x", patient("New"))),
        )
        .await
        .expect("put_version 3")
        .expect("version 3 is written (versions need not be contiguous)");
    assert_eq!((v3.version, v3.method), (3, Method::Put));
    for again in [1, 2, 3] {
        let none = tx
            .put_version(
                "Patient",
                "x",
                again,
                t5,
                Some(Prepared::new("x", patient("X"))),
            )
            .await
            .expect("put_version at or below the current version");
        assert!(
            none.is_none(),
            "version {again} of Patient/x is not written again"
        );
    }
    let gone = tx
        .put_version("Patient", "y", 2, t5, None)
        .await
        .expect("put_version of a deletion")
        .expect("a deletion is written");
    assert!(gone.is_deleted());
    tx.put_version(
        "Patient",
        "z",
        7,
        ahead,
        Some(Prepared::new("z", patient("Ahead"))),
    )
    .await
    .expect("put_version ahead")
    .expect("written");
    let later = tx
        .put("Patient", "w", patient("Later"), Method::Put)
        .await
        .expect("an ordinary put after the imports");
    assert!(
        later.last_updated > ahead,
        "a write after an imported instant ({ahead}) is newer: {}",
        later.last_updated
    );
    tx.commit().await.expect("commit");

    let x = read(store, "a", "Patient", "x").await.expect("Patient/x");
    assert_same("read Patient/x", &x, &v3);
    let body = body_json(&x);
    assert_eq!(body["meta"]["versionId"], "3");
    assert_eq!(body["meta"]["lastUpdated"], "2020-03-01T08:00:00.000000Z");
    let old = store
        .vread("a", "Patient", "x", 1)
        .await
        .expect("vread")
        .expect("version 1 of Patient/x");
    assert_same("vread Patient/x/1", &old, &v1);
    let y = read(store, "a", "Patient", "y").await.expect("Patient/y");
    assert!(
        y.is_deleted() && y.version == 2,
        "Patient/y is deleted at version 2"
    );
    let page = history(
        store,
        "a",
        &HistoryScope::Instance("Patient".into(), "x".into()),
        &query(10),
    )
    .await;
    assert_eq!(keys(&page), vec![key("Patient/x", 3), key("Patient/x", 1)]);
    let since = history(
        store,
        "a",
        &HistoryScope::Instance("Patient".into(), "x".into()),
        &HistoryQuery {
            since: Some(chrono::Utc.with_ymd_and_hms(2020, 2, 1, 0, 0, 0).unwrap()),
            ..query(10)
        },
    )
    .await;
    assert_eq!(
        keys(&since),
        vec![key("Patient/x", 3)],
        "_since reads the kept instants"
    );
    let q = search_query("Patient", &[("name", "Old")]);
    let found = store.search("a", &q).await.expect("search");
    assert!(
        found.matches.is_empty(),
        "only the current version is indexed"
    );
    let q = search_query("Patient", &[("name", "New")]);
    let found = store.search("a", &q).await.expect("search");
    assert_eq!(
        found.matches.len(),
        1,
        "the current imported version is indexed"
    );
}

/// [`crate::WriteTx::put_versions`] is the loop of `put_version` over its batch, whatever a
/// backend does to go faster: several versions of one resource in one batch (only the last
/// indexed), a deletion then a new version, a version at or below the stored one skipped,
/// bodies stamped ahead ([`Prepared::stamp_ahead`]) or not, index rows of every kind, and
/// the live counts.
pub async fn put_versions_writes_a_batch_as_its_loop_would(store: &dyn Store) {
    use crate::VersionWrite;
    use chrono::TimeZone;
    service(store, "a").await;
    let at = |month: u32| {
        chrono::Utc
            .with_ymd_and_hms(2021, month, 1, 8, 0, 0)
            .unwrap()
    };
    let obs = |code: &str, value: f64| {
        json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": "Patient/p"},
            "effectiveDateTime": "2021-01-01",
            "valueQuantity": {"value": value, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}
        })
    };
    let write =
        |rtype: &str, id: &str, version: u64, month: u32, body: Option<Value>, ahead: bool| {
            let prepared = body.map(|b| {
                let mut p = Prepared::new(id, b);
                if ahead {
                    p.stamp_ahead(rtype, id, version, &at(month), None)
                        .expect("stamp_ahead");
                }
                p
            });
            VersionWrite {
                rtype: rtype.into(),
                id: id.into(),
                version,
                last_updated: at(month),
                prepared,
            }
        };
    // Stored before the batch: Patient/p at version 2.
    let mut tx = store.begin("a").await.expect("begin");
    tx.put_version(
        "Patient",
        "p",
        2,
        at(1),
        Some(Prepared::new("p", patient("Before"))),
    )
    .await
    .expect("put_version")
    .expect("written");
    tx.commit().await.expect("commit");

    let line = |version: &str| {
        format!(
            r#"{{"resourceType":"Patient","id":"v","meta":{{"versionId":"{version}","lastUpdated":"2021-08-01T08:00:00.000000Z"}},"name":[{{"family":"Verbatim"}}],"birthDate":"1970-01-01" }}"#
        )
    };
    let as_written = |id: &str, version: u64, text: &str| {
        let mut p = Prepared::new(id, serde_json::from_str(text).unwrap());
        p.stamp_ahead("Patient", id, version, &at(8), Some(text.as_bytes()))
            .expect("stamp_ahead");
        VersionWrite {
            rtype: "Patient".into(),
            id: id.into(),
            version,
            last_updated: at(8),
            prepared: Some(p),
        }
    };
    let verbatim = as_written("v", 1, &line("1"));
    let restamped = as_written("r", 2, &line("1").replace(r#""id":"v""#, r#""id":"r""#));
    let mut tx = store.begin("a").await.expect("begin");
    let written = tx
        .put_versions(vec![
            write("Observation", "o", 1, 2, Some(obs("1111-1", 10.0)), true),
            write("Observation", "o", 2, 3, Some(obs("2222-2", 20.0)), false),
            write("Observation", "o", 3, 4, Some(obs("3333-3", 30.0)), true),
            write("Patient", "p", 1, 2, Some(patient("Stale")), true),
            write("Patient", "p", 3, 5, Some(patient("After")), true),
            write("Observation", "gone", 1, 2, Some(obs("4444-4", 40.0)), true),
            write("Observation", "gone", 2, 3, None, false),
            write("Observation", "back", 1, 2, Some(obs("5555-5", 50.0)), true),
            write("Observation", "back", 2, 3, None, false),
            write("Observation", "back", 3, 6, Some(obs("6666-6", 60.0)), true),
            // Stamped ahead for another instant than it is written with: stamped again.
            VersionWrite {
                last_updated: at(7),
                ..write(
                    "Observation",
                    "moved",
                    1,
                    6,
                    Some(obs("7777-7", 70.0)),
                    true,
                )
            },
            // Stamped ahead from the bytes it was written as, which already say this id,
            // version and instant: kept byte for byte.
            verbatim,
            // From bytes that say another version: stamped and serialised.
            restamped,
        ])
        .await
        .expect("put_versions");
    tx.commit().await.expect("commit");
    assert_eq!(
        written,
        vec![true, true, true, false, true, true, true, true, true, true, true, true, true],
        "only Patient/p version 1 (below the stored 2) is not written"
    );
    let v = read(store, "a", "Patient", "v").await.expect("Patient/v");
    assert_eq!(
        v.body.as_deref(),
        Some(line("1").trim().as_bytes()),
        "kept as written"
    );
    let r = read(store, "a", "Patient", "r").await.expect("Patient/r");
    let body = body_json(&r);
    assert_eq!(
        (body["id"].as_str(), body["meta"]["versionId"].as_str()),
        (Some("r"), Some("2"))
    );
    assert_eq!(body["name"][0]["family"], "Verbatim");

    let o = read(store, "a", "Observation", "o")
        .await
        .expect("Observation/o");
    assert_eq!((o.version, o.last_updated), (3, at(4)));
    let body = body_json(&o);
    assert_eq!(body["meta"]["versionId"], "3");
    assert_eq!(body["meta"]["lastUpdated"], "2021-04-01T08:00:00.000000Z");
    assert_eq!(body["code"]["coding"][0]["code"], "3333-3");
    let v2 = store
        .vread("a", "Observation", "o", 2)
        .await
        .expect("vread")
        .expect("version 2 is kept");
    assert_eq!(body_json(&v2)["meta"]["versionId"], "2");
    let moved = read(store, "a", "Observation", "moved")
        .await
        .expect("moved");
    assert_eq!(moved.last_updated, at(7));
    assert_eq!(
        body_json(&moved)["meta"]["lastUpdated"],
        "2021-07-01T08:00:00.000000Z"
    );
    let p = read(store, "a", "Patient", "p").await.expect("Patient/p");
    assert_eq!(p.version, 3);
    assert!(read(store, "a", "Observation", "gone")
        .await
        .expect("gone")
        .is_deleted());

    // Only the current version of each live resource is indexed, in every table.
    for (code, want) in [
        ("http://loinc.org|1111-1", vec![]),
        ("http://loinc.org|2222-2", vec![]),
        ("http://loinc.org|3333-3", vec!["o"]),
        ("http://loinc.org|4444-4", vec![]),
        ("http://loinc.org|5555-5", vec![]),
        ("http://loinc.org|6666-6", vec!["back"]),
        ("http://loinc.org|7777-7", vec!["moved"]),
    ] {
        assert_eq!(
            search_ids(store, "a", "Observation", &[("code", code)]).await,
            want,
            "code={code}"
        );
    }
    assert_eq!(
        search_ids(store, "a", "Observation", &[("value-quantity", "gt25")]).await,
        vec!["back", "moved", "o"]
    );
    assert_eq!(
        search_ids(store, "a", "Observation", &[("subject", "Patient/p")]).await,
        vec!["back", "moved", "o"]
    );
    assert_eq!(
        search_ids(store, "a", "Observation", &[("date", "2021-01-01")]).await,
        vec!["back", "moved", "o"]
    );
    assert_eq!(
        search_ids(store, "a", "Patient", &[("name", "After")]).await,
        vec!["p"]
    );
    assert_eq!(
        search_ids(store, "a", "Patient", &[("name", "Verbatim")]).await,
        vec!["r", "v"]
    );
    assert!(search_ids(store, "a", "Patient", &[("name", "Before")])
        .await
        .is_empty());
    let count = with_total(
        search_query("Observation", &[]),
        Some(fhir_search::Total::Accurate),
    );
    let all = store.search("a", &count).await.expect("search");
    assert_eq!(all.total, Some(3), "three live Observations");
}

/// The base URLs of [`Prepared::with_base`] writes are listed by [`Store::own_bases`] once
/// committed (and not before, nor for a rolled-back transaction).
pub async fn own_bases_are_recorded_at_commit(store: &dyn Store) {
    service(store, "a").await;
    assert!(store.own_bases().await.expect("own_bases").is_empty());
    let mut tx = store.begin("a").await.expect("begin");
    tx.put_prepared(
        "Patient",
        "x",
        Prepared::with_base("x", patient("X"), "https://gone.example/fhir"),
        Method::Put,
    )
    .await
    .expect("put");
    drop(tx);
    assert!(
        store.own_bases().await.expect("own_bases").is_empty(),
        "a rolled-back transaction records no base"
    );
    let mut tx = store.begin("a").await.expect("begin");
    tx.put_prepared(
        "Patient",
        "x",
        Prepared::with_base("x", patient("X"), "https://fhir.example/r4/"),
        Method::Put,
    )
    .await
    .expect("put");
    tx.commit().await.expect("commit");
    assert_eq!(
        store.own_bases().await.expect("own_bases"),
        vec!["https://fhir.example/r4".to_owned()]
    );
}

/// `rewrite_version` replaces a version's content without adding a version: the number,
/// `lastUpdated` and method stay, read and vread see the new content, the current version's
/// search index follows it, an older version can be rewritten without touching the index,
/// a deletion or a missing version is not rewritten, and a rollback undoes it.
pub async fn rewrite_version_changes_content_in_place(store: &dyn Store) {
    service(store, "s").await;
    let tagged = |code: &str| {
        json!({"resourceType": "Patient", "meta": {"tag": [{"system": "urn:t", "code": code}]},
               "name": [{"family": "Rewrite"}]})
    };
    let v1 = put(store, "s", "Patient", "p", tagged("one")).await;
    let v2 = put(store, "s", "Patient", "p", tagged("two")).await;
    assert_eq!(
        search_ids(store, "s", "Patient", &[("_tag", "urn:t|two")]).await,
        ["p"]
    );

    let mut tx = store.begin("s").await.expect("begin");
    let rewritten = tx
        .rewrite_version("Patient", "p", 2, Prepared::new("p", tagged("three")))
        .await
        .expect("rewrite_version")
        .expect("version 2 exists");
    tx.commit().await.expect("commit");
    assert_eq!(rewritten.version, 2, "no new version");
    assert_eq!(rewritten.last_updated, v2.last_updated, "lastUpdated kept");
    assert_eq!(rewritten.method, v2.method, "method kept");
    let now = read(store, "s", "Patient", "p").await.expect("current");
    assert_same("read after rewrite", &now, &rewritten);
    let body = body_json(&now);
    assert_eq!(body["meta"]["tag"][0]["code"], "three");
    assert_eq!(body["meta"]["versionId"], "2");
    assert_eq!(
        body["meta"]["lastUpdated"],
        crate::format_instant(&v2.last_updated)
    );
    let page = history(
        store,
        "s",
        &HistoryScope::Instance("Patient".into(), "p".into()),
        &query(10),
    )
    .await;
    assert_eq!(page.total, 2, "still two versions");
    assert_eq!(
        search_ids(store, "s", "Patient", &[("_tag", "urn:t|three")]).await,
        ["p"]
    );
    assert!(
        search_ids(store, "s", "Patient", &[("_tag", "urn:t|two")])
            .await
            .is_empty(),
        "the old content's index rows are gone"
    );

    // An older version: its content changes, the index (the current version's) does not.
    let mut tx = store.begin("s").await.expect("begin");
    let old = tx
        .rewrite_version("Patient", "p", 1, Prepared::new("p", tagged("zero")))
        .await
        .expect("rewrite_version")
        .expect("version 1 exists");
    tx.commit().await.expect("commit");
    assert_eq!((old.version, old.last_updated), (1, v1.last_updated));
    let vread = store
        .vread("s", "Patient", "p", 1)
        .await
        .expect("vread")
        .expect("v1");
    assert_eq!(body_json(&vread)["meta"]["tag"][0]["code"], "zero");
    assert!(search_ids(store, "s", "Patient", &[("_tag", "urn:t|zero")])
        .await
        .is_empty());
    assert_eq!(
        search_ids(store, "s", "Patient", &[("_tag", "urn:t|three")]).await,
        ["p"]
    );

    // Nothing to rewrite: a missing version, a missing resource, a deletion.
    delete(store, "s", "Patient", "p").await.expect("deleted");
    let mut tx = store.begin("s").await.expect("begin");
    for (id, v) in [("p", 9), ("nobody", 1), ("p", 3)] {
        assert!(
            tx.rewrite_version("Patient", id, v, Prepared::new(id, tagged("x")))
                .await
                .expect("rewrite_version")
                .is_none(),
            "Patient/{id} version {v} is not rewritten"
        );
    }
    // A rollback undoes a rewrite.
    tx.rewrite_version("Patient", "p", 2, Prepared::new("p", tagged("rolled")))
        .await
        .expect("rewrite_version")
        .expect("version 2");
    drop(tx);
    let v2_now = store
        .vread("s", "Patient", "p", 2)
        .await
        .expect("vread")
        .expect("v2");
    assert_same("version 2 after a rolled-back rewrite", &v2_now, &rewritten);
}

/// `purge_history` removes every version but the current one: history, vread and scans
/// see only it, its content and index are untouched, the history totals follow, other
/// resources keep their history, and a deletion stays as the current version.
pub async fn purge_history_keeps_only_the_current_version(store: &dyn Store) {
    service(store, "s").await;
    for n in 0..3 {
        put(
            store,
            "s",
            "Patient",
            "p",
            json!({"resourceType": "Patient", "name": [{"family": format!("P{n}")}]}),
        )
        .await;
        put(store, "s", "Patient", "q", patient(&format!("Q{n}"))).await;
    }
    let current = read(store, "s", "Patient", "p").await.expect("p");
    let mut tx = store.begin("s").await.expect("begin");
    assert_eq!(tx.purge_history("Patient", "p").await.expect("purge"), 2);
    assert_eq!(
        tx.purge_history("Patient", "nobody").await.expect("purge"),
        0
    );
    tx.commit().await.expect("commit");

    let instance = HistoryScope::Instance("Patient".into(), "p".into());
    let page = history(store, "s", &instance, &query(10)).await;
    assert_eq!(keys(&page), [key("Patient/p", 3)]);
    assert_eq!(page.total, 1);
    assert_same("the current version", &page.entries[0], &current);
    assert_same(
        "read",
        &read(store, "s", "Patient", "p").await.expect("p"),
        &current,
    );
    for v in [1, 2] {
        assert!(
            store
                .vread("s", "Patient", "p", v)
                .await
                .expect("vread")
                .is_none(),
            "version {v} is gone"
        );
    }
    let typed = history(
        store,
        "s",
        &HistoryScope::Type("Patient".into()),
        &query(100),
    )
    .await;
    assert_eq!(typed.total, 4, "p's one version and q's three");
    assert_eq!(typed.entries.len(), 4);
    assert_eq!(
        search_ids(store, "s", "Patient", &[("name", "P2")]).await,
        ["p"]
    );
    let snapshot = store.snapshot("s").await.expect("snapshot");
    let all = scan_all(store, "s", "Patient", snapshot, ScanVersions::All, None, 10).await;
    assert_eq!(
        all,
        [
            ("p".to_owned(), 3, false),
            ("q".to_owned(), 1, false),
            ("q".to_owned(), 2, false),
            ("q".to_owned(), 3, false)
        ]
    );

    // A second purge has nothing left to remove; after a delete the deletion is current.
    let mut tx = store.begin("s").await.expect("begin");
    assert_eq!(tx.purge_history("Patient", "p").await.expect("purge"), 0);
    tx.commit().await.expect("commit");
    delete(store, "s", "Patient", "q").await.expect("q deleted");
    let mut tx = store.begin("s").await.expect("begin");
    assert_eq!(tx.purge_history("Patient", "q").await.expect("purge"), 3);
    tx.commit().await.expect("commit");
    let q = read(store, "s", "Patient", "q").await.expect("q");
    assert!(
        q.is_deleted() && q.version == 4,
        "the deletion stays current"
    );
    let page = history(
        store,
        "s",
        &HistoryScope::Instance("Patient".into(), "q".into()),
        &query(10),
    )
    .await;
    assert_eq!(keys(&page), [key("Patient/q", 4)]);

    // A new version after a purge continues the numbering.
    let next = put(store, "s", "Patient", "p", patient("P3")).await;
    assert_eq!(next.version, 4);
}
