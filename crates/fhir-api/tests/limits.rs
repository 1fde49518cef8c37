//! Hostile PATCH requests (issue #15, defects 1 and 3), driven through `router(state)` in
//! process: each used to overflow the stack (aborting the whole server) or to take gigabytes
//! and seconds while holding the store's writer; each is now refused with an
//! OperationOutcome. Every request runs on a thread with a tokio worker's 2 MiB stack, so a
//! bound that only holds on a bigger stack fails here.

use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use fhir_api::{router, ApiConfig, AppState};
use fhir_store::Store;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

const JSON_PATCH: &str = "application/json-patch+json";
const FHIR_JSON: &str = "application/fhir+json";

/// Runs `f` on a current-thread runtime on a 2 MiB thread; a stack overflow aborts the test
/// binary, which fails the test.
fn on_small_stack<T: Send + 'static>(f: impl Future<Output = T> + Send + 'static) -> T {
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f)
        })
        .expect("spawn")
        .join()
        .expect("the test thread panicked")
}

struct Server {
    app: Router,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    body: Value,
}

impl Server {
    async fn start(config: ApiConfig) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: Arc<dyn Store> =
            Arc::new(fhir_store_sqlite::SqliteStore::open(dir.path()).expect("open store"));
        store.create_service("default").await.expect("service");
        let app = router(AppState::new(store, config));
        let s = Server { app, _dir: dir };
        let a = s
            .send(Method::PUT, "/Patient/p1", FHIR_JSON, &patient())
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        s
    }

    async fn send(&self, method: Method, path: &str, content_type: &str, body: &Value) -> Answer {
        let bytes = serde_json::to_vec(body).expect("json");
        self.send_bytes(method, path, content_type, bytes).await
    }

    async fn send_bytes(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Answer {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(Body::from(body))
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        let status = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        Answer {
            status,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn patch(&self, content_type: &str, body: &Value) -> Answer {
        self.send(Method::PATCH, "/Patient/p1", content_type, body)
            .await
    }

    async fn read(&self) -> Value {
        let req = Request::builder()
            .uri("/Patient/p1")
            .body(Body::empty())
            .expect("request");
        let resp = self.app.clone().oneshot(req).await.expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "birthDate": "1974-12-25"
    })
}

/// The diagnostics of an OperationOutcome's issues, joined.
fn diagnostics(outcome: &Value) -> String {
    assert_eq!(outcome["resourceType"], "OperationOutcome", "{outcome}");
    outcome["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["diagnostics"].as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asserts the answer is `status` with an OperationOutcome saying `says`, and that the
/// resource is still at its first version.
async fn assert_refused(s: &Server, a: Answer, status: StatusCode, says: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    let d = diagnostics(&a.body);
    assert!(d.contains(says), "expected '{says}' in: {d}");
    assert_eq!(
        s.read().await["meta"]["versionId"],
        "1",
        "nothing was written"
    );
}

/// A FHIRPath Patch `replace` of `path`.
fn fhirpath_replace(path: &str) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"},
        {"name": "path", "valueString": path},
        {"name": "value", "valueString": "x"}
    ]}]})
}

async fn fhirpath_path_is_refused(path: String, status: StatusCode, says: &'static str) {
    let s = Server::start(ApiConfig::default()).await;
    let a = s.patch(FHIR_JSON, &fhirpath_replace(&path)).await;
    assert_eq!(
        a.body["issue"][0]["expression"][0], "Parameters.parameter[0]",
        "{}",
        a.body
    );
    assert_refused(&s, a, status, says).await;
}

// Regression: issue #15 defect 1, a FHIRPath Patch with `path` = `Patient` + `.name` × 40,000
// (200 KB) overflowed a tokio worker's stack and aborted the process.
#[test]
fn regression_15_1_fhirpath_patch_path_of_40000_segments_is_refused() {
    let path = format!("Patient{}", ".name".repeat(40_000));
    on_small_stack(fhirpath_path_is_refused(
        path,
        StatusCode::BAD_REQUEST,
        "nested too deeply",
    ));
}

// Regression: issue #15 defect 1, `Patient.name.where(1+1+…+1 = 1)` with 50,000 terms.
#[test]
fn regression_15_1_fhirpath_patch_sum_of_50000_terms_is_refused() {
    let path = format!("Patient.name.where({} = 1)", vec!["1"; 50_000].join("+"));
    on_small_stack(fhirpath_path_is_refused(
        path,
        StatusCode::BAD_REQUEST,
        "nested too deeply",
    ));
}

// Regression: issue #15 defect 1, `true and true and …` × 50,000.
#[test]
fn regression_15_1_fhirpath_patch_50000_ands_are_refused() {
    let path = format!("Patient.name.where({})", vec!["true"; 50_000].join(" and "));
    on_small_stack(fhirpath_path_is_refused(
        path,
        StatusCode::BAD_REQUEST,
        "nested too deeply",
    ));
}

// Regression: issue #15 defect 1, `Patient.name[0][0]…` × 50,000.
#[test]
fn regression_15_1_fhirpath_patch_50000_indexers_are_refused() {
    let path = format!("Patient.name{}", "[0]".repeat(50_000));
    on_small_stack(fhirpath_path_is_refused(
        path,
        StatusCode::BAD_REQUEST,
        "nested too deeply",
    ));
}

/// `n` JSON Patch operations that nest the resource `step` levels deeper per pair: `/a` is
/// moved to the bottom of a new `/b` (`{"x": {"x": … {}}}`, `step` levels), then `/b` into
/// a new `/a`, and so on. With `step` 1 it is the issue's `add /b {}`, `move /a → /b/x`.
fn nesting_ops(n: usize, step: usize) -> Value {
    let mut ops = vec![json!({"op": "add", "path": "/a", "value": {}})];
    let mut chain = json!({});
    for _ in 1..step {
        chain = json!({ "x": chain });
    }
    let bottom = "/x".repeat(step);
    let mut from_a = true;
    while ops.len() < n {
        let (from, to) = if from_a { ("a", "b") } else { ("b", "a") };
        ops.push(json!({"op": "add", "path": format!("/{to}"), "value": chain}));
        ops.push(
            json!({"op": "move", "from": format!("/{from}"), "path": format!("/{to}{bottom}")}),
        );
        from_a = !from_a;
    }
    ops.truncate(n);
    Value::Array(ops)
}

// Regression: issue #15 defect 1, a JSON Patch of 50,000 alternating `add /b {}` and
// `move /a → /b/x` operations (4.4 MB, one level deeper per pair) built a resource 25,000
// levels deep, which validating, serialising and dropping overflowed the stack with.
#[test]
fn regression_15_1_json_patch_of_50000_nesting_operations_is_refused() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let body = serde_json::to_vec_pretty(&nesting_ops(50_000, 1)).expect("json");
        assert!(body.len() > 3_000_000, "{}", body.len());
        let a = s
            .send_bytes(Method::PATCH, "/Patient/p1", JSON_PATCH, body)
            .await;
        assert_refused(&s, a, StatusCode::UNPROCESSABLE_ENTITY, "at most 1000").await;
    });
}

// The nesting bound itself, within the operation limit: 1000 operations, every other one
// moving the resource's deepest part 100 levels down, would nest it 50,000 levels deep (the
// old code aborted with a stack overflow on it, on a 2 MiB stack); the operation that passes
// 100 levels is refused.
#[test]
fn regression_15_1_json_patch_nesting_past_the_bound_is_refused() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let a = s.patch(JSON_PATCH, &nesting_ops(1000, 100)).await;
        assert_refused(
            &s,
            a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "deeper than 100 levels",
        )
        .await;
    });
}

// A value deeper than the bound is refused from the patch document alone.
#[test]
fn regression_15_1_json_patch_value_nested_past_the_bound_is_refused() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let mut deep = json!("x");
        for _ in 0..100 {
            deep = json!([deep]);
        }
        let ops = json!([{"op": "add", "path": "/name/0/extra", "value": deep}]);
        let a = s.patch(JSON_PATCH, &ops).await;
        assert_refused(
            &s,
            a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "deeper than 100 levels",
        )
        .await;
    });
}

// Regression: issue #15 defect 3, `[{"op":"copy","from":"/name","path":"/name/-"}] × 22`
// (1,145 bytes) doubled the resource 22 times: 3.2 GB of memory, and the store's writer held
// for seconds. It is refused at the first copy past the growth allowance.
#[test]
fn regression_15_3_json_patch_of_22_doubling_copies_is_refused() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let op = r#"{"op": "copy", "from": "/name", "path": "/name/-"}"#;
        let body = format!("[{}]\n", vec![op; 22].join(", "));
        assert_eq!(body.len(), 1_145);
        let a = s
            .send_bytes(Method::PATCH, "/Patient/p1", JSON_PATCH, body.into_bytes())
            .await;
        assert_refused(
            &s,
            a,
            StatusCode::UNPROCESSABLE_ENTITY,
            "copies, moves or adds more than",
        )
        .await;
    });
}

// Regression: issue #15 defect 3, a FHIRPath Patch path `.select($this.combine($this))` × 20
// doubled a collection to a million items (4.6 s); the patch's evaluation budget stops it.
#[test]
fn regression_15_3_fhirpath_patch_select_combine_20_times_is_refused() {
    let path = format!("Patient{}", ".select($this.combine($this))".repeat(20));
    on_small_stack(fhirpath_path_is_refused(
        path,
        StatusCode::UNPROCESSABLE_ENTITY,
        "too costly",
    ));
}

// A FHIRPath Patch of more operations than are applied is refused before any is.
#[test]
fn regression_15_3_fhirpath_patch_of_50000_operations_is_refused() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let one = json!({"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.birthDate"},
            {"name": "value", "valueDate": "1974-12-25"}
        ]});
        let doc = json!({"resourceType": "Parameters", "parameter": vec![one; 50_000]});
        let a = s.patch(FHIR_JSON, &doc).await;
        assert_refused(&s, a, StatusCode::UNPROCESSABLE_ENTITY, "at most 1000").await;
    });
}

// The patched resource may not outgrow the largest body the server accepts, even within
// the growth allowance.
#[test]
fn patched_resource_may_not_outgrow_the_body_limit() {
    on_small_stack(async {
        let config = ApiConfig {
            max_body_bytes: 4096,
            ..ApiConfig::default()
        };
        let s = Server::start(config).await;
        let long = "x".repeat(3000);
        let ops = json!([{"op": "replace", "path": "/name/0/family", "value": long}]);
        let a = s.patch(JSON_PATCH, &ops).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let ops = json!([{"op": "copy", "from": "/name/0", "path": "/name/-"}]);
        let a = s.patch(JSON_PATCH, &ops).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let d = diagnostics(&a.body);
        assert!(d.contains("larger than 4096 bytes"), "{d}");
        assert_eq!(
            s.read().await["meta"]["versionId"],
            "2",
            "the copy was not written"
        );
    });
}

// Ordinary patches of both formats still apply, copies and moves included.
#[test]
fn ordinary_patches_still_apply() {
    on_small_stack(async {
        let s = Server::start(ApiConfig::default()).await;
        let ops = json!([
            {"op": "test", "path": "/birthDate", "value": "1974-12-25"},
            {"op": "replace", "path": "/birthDate", "value": "1975-01-01"},
            {"op": "copy", "from": "/name/0", "path": "/name/-"},
            {"op": "add", "path": "/name/1/family", "value": "Windsor"},
            {"op": "move", "from": "/name/1", "path": "/name/0"},
            {"op": "remove", "path": "/name/1/given/1"}
        ]);
        let a = s.patch(JSON_PATCH, &ops).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let p = s.read().await;
        assert_eq!(p["birthDate"], "1975-01-01");
        assert_eq!(p["name"][0]["family"], "Windsor");
        assert_eq!(p["name"][1]["given"], json!(["Peter"]));
        let doc = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "Patient"},
            {"name": "name", "valueString": "gender"},
            {"name": "value", "valueCode": "female"}
        ]}, {"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.name.where(family = 'Windsor').given[0]"},
            {"name": "value", "valueString": "Anne"}
        ]}]});
        let a = s.patch(FHIR_JSON, &doc).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let p = s.read().await;
        assert_eq!(p["gender"], "female");
        assert_eq!(p["name"][0]["given"][0], "Anne");
        assert_eq!(p["meta"]["versionId"], "3");
    });
}

// Issue #15, "search time limits that answer with an OperationOutcome instead of running on":
// a search the store stops at its time limit is a 422 too-costly, and the service goes on.
#[tokio::test]
async fn a_search_past_the_store_time_limit_is_422_too_costly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(
        fhir_store_sqlite::SqliteStore::open(dir.path())
            .expect("open store")
            .with_search_time_limit(std::time::Duration::ZERO),
    );
    store.create_service("default").await.expect("service");
    let app = router(AppState::new(store, ApiConfig::default()));
    let s = Server { app, _dir: dir };
    let entries: Vec<Value> = (0..2000)
        .map(|i| {
            serde_json::json!({"request": {"method": "PUT", "url": format!("Patient/p{i}")},
                "resource": {"resourceType": "Patient", "id": format!("p{i}"), "gender": "female"}})
        })
        .collect();
    let bundle =
        serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": entries});
    let a = s.send(Method::POST, "/", FHIR_JSON, &bundle).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let req = Request::get("/Patient?gender=female&_total=accurate")
        .body(Body::empty())
        .expect("request");
    let resp = s.app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let outcome: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(outcome["resourceType"], "OperationOutcome");
    assert_eq!(outcome["issue"][0]["code"], "too-costly", "{outcome}");
    // A read still answers.
    let req = Request::get("/Patient/p1")
        .body(Body::empty())
        .expect("request");
    let resp = s.app.clone().oneshot(req).await.expect("infallible");
    assert_eq!(resp.status(), StatusCode::OK);
}
