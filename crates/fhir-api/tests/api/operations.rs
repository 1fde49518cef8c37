//! The operations of issue #18, on each backend, with tokens and roles: `$meta`,
//! `$meta-add` and `$meta-delete` (FHIR R4 resource-operation-meta*), Azure's
//! `$purge-history`; each listed in the CapabilityStatement with its OperationDefinition,
//! authorized like the interaction it resembles (SMART `patient/` scopes included) and
//! classified as an operation for the audit record.

use axum::http::{Method, StatusCode};
use fhir_api::access::Rights;
use fhir_api::interaction::{classify, Kind};
use serde_json::{json, Value};

use crate::common::{assert_outcome, backends, caller, reader, Answer, Server};

const CONF: &str = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality";

fn parameters_meta(meta: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueMeta": meta}]})
}

/// The `return` Meta of a `$meta*` answer.
fn returned(a: &Answer) -> &Value {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["resourceType"], "Parameters", "{}", a.body);
    assert_eq!(a.body["parameter"][0]["name"], "return");
    &a.body["parameter"][0]["valueMeta"]
}

fn codes(meta: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> = meta[key]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| match c.as_str() {
            Some(url) => url.to_owned(),
            None => format!(
                "{}|{}",
                c["system"].as_str().unwrap_or_default(),
                c["code"].as_str().unwrap_or_default()
            ),
        })
        .collect();
    out.sort();
    out
}

async fn ids(s: &Server, query: &str) -> Vec<String> {
    let a = s.get(&format!("/Patient?{query}"), None).await;
    assert_eq!(a.status, StatusCode::OK, "{query}: {}", a.body);
    let mut out: Vec<String> = a.body["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    out.sort();
    out
}

async fn purge(s: &Server, path: &str, who: fhir_api::Access) -> Answer {
    s.send(Method::DELETE, path, None, Some(&who), &[]).await
}

/// The status of a GET (no body) or a POST of `body` as `who`.
async fn status(s: &Server, path: &str, body: Option<&Value>, who: &fhir_api::Access) -> u16 {
    let method = if body.is_some() {
        Method::POST
    } else {
        Method::GET
    };
    let a = s.send(method, path, body, Some(who), &[]).await;
    a.status.as_u16()
}

async fn post(s: &Server, path: &str, body: &Value) -> Answer {
    s.send(Method::POST, path, Some(body), None, &[]).await
}

// FHIR R4 resource-operation-meta-add: "executing this operation does not cause a new
// version of the resource to be created"; the labels are found by _tag and _security at once.
#[tokio::test]
async fn meta_add_and_delete_change_labels_without_a_new_version() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "p",
            "meta": {"tag": [{"system": "urn:t", "code": "old"}]},
            "name": [{"family": "Meta"}]}))
            .await;
        let before = s.get("/Patient/p", None).await;
        let last_updated = before.body["meta"]["lastUpdated"].clone();

        let a = s.get("/Patient/p/$meta", None).await;
        assert_eq!(a.kind, Some(Kind::Operation));
        assert_eq!(codes(returned(&a), "tag"), ["urn:t|old"], "{}", b.name);

        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &parameters_meta(json!({
                "tag": [{"system": "urn:t", "code": "new"}, {"system": "urn:t", "code": "old", "display": "again"}],
                "security": [{"system": CONF, "code": "R"}],
                "profile": ["http://example.org/StructureDefinition/p"]
            })),
        )
        .await;
        let meta = returned(&a);
        assert_eq!(codes(meta, "tag"), ["urn:t|new", "urn:t|old"], "{}", b.name);
        assert_eq!(codes(meta, "security"), [format!("{CONF}|R")]);
        assert_eq!(
            codes(meta, "profile"),
            ["http://example.org/StructureDefinition/p"]
        );

        let now = s.get("/Patient/p", None).await;
        assert_eq!(
            now.body["meta"]["versionId"], "1",
            "{}: no new version",
            b.name
        );
        assert_eq!(now.body["meta"]["lastUpdated"], last_updated);
        assert_eq!(now.headers["etag"], "W/\"1\"");
        assert_eq!(
            now.body["name"],
            json!([{"family": "Meta"}]),
            "content kept"
        );
        assert_eq!(now.body["meta"]["tag"].as_array().map(Vec::len), Some(2));
        let h = s.get("/Patient/p/_history", None).await;
        assert_eq!(h.body["total"], 1, "{}: {}", b.name, h.body);
        assert_eq!(ids(&s, "_tag=urn:t|new").await, ["p"], "{}", b.name);
        assert_eq!(ids(&s, &format!("_security={CONF}|R")).await, ["p"]);
        assert_eq!(
            ids(&s, "_profile=http://example.org/StructureDefinition/p").await,
            ["p"]
        );

        let a = post(
            &s,
            "/Patient/p/$meta-delete",
            &parameters_meta(json!({"tag": [{"system": "urn:t", "code": "old"}], "security": [{"system": CONF, "code": "R"}]})),
        )
        .await;
        let meta = returned(&a);
        assert_eq!(codes(meta, "tag"), ["urn:t|new"], "{}", b.name);
        assert!(meta.get("security").is_none(), "{meta}");
        let now = s.get("/Patient/p", None).await;
        assert_eq!(now.body["meta"]["versionId"], "1");
        assert!(now.body["meta"].get("security").is_none(), "{}", now.body);
        assert!(ids(&s, "_tag=urn:t|old").await.is_empty(), "{}", b.name);
        assert!(ids(&s, &format!("_security={CONF}|R")).await.is_empty());
        assert_eq!(ids(&s, "_tag=urn:t|new").await, ["p"]);

        // A version keeps its own labels: $meta of version 1 after an update.
        s.put(json!({"resourceType": "Patient", "id": "p", "meta": {"tag": [{"system": "urn:t", "code": "v2"}]}}))
            .await;
        let a = s.get("/Patient/p/_history/1/$meta", None).await;
        assert_eq!(codes(returned(&a), "tag"), ["urn:t|new"], "{}", b.name);
        let a = s.get("/Patient/p/$meta", None).await;
        assert_eq!(codes(returned(&a), "tag"), ["urn:t|v2"]);
    }
}

// $meta at the type and system levels: every label of the scope's current resources, once.
#[tokio::test]
async fn meta_of_a_type_and_of_the_system_is_the_union_of_current_labels() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "a", "meta": {"tag": [{"system": "urn:t", "code": "x"}]}})).await;
        s.put(json!({"resourceType": "Patient", "id": "b", "meta": {"tag": [{"system": "urn:t", "code": "x"}, {"system": "urn:t", "code": "y"}], "profile": ["http://e/p"]}})).await;
        s.put(json!({"resourceType": "Patient", "id": "gone", "meta": {"tag": [{"system": "urn:t", "code": "deleted"}]}})).await;
        s.delete("/Patient/gone").await;
        s.put(
            json!({"resourceType": "Observation", "id": "o", "status": "final",
            "code": {"text": "t"}, "meta": {"security": [{"system": CONF, "code": "N"}]}}),
        )
        .await;
        let a = s.get("/Patient/$meta", None).await;
        let meta = returned(&a);
        assert_eq!(codes(meta, "tag"), ["urn:t|x", "urn:t|y"], "{}", b.name);
        assert_eq!(codes(meta, "profile"), ["http://e/p"]);
        assert!(meta.get("security").is_none());
        let a = s.get("/$meta", None).await;
        let meta = returned(&a);
        assert_eq!(codes(meta, "tag"), ["urn:t|x", "urn:t|y"], "{}", b.name);
        assert_eq!(codes(meta, "security"), [format!("{CONF}|N")]);
        // By POST with an empty Parameters body too.
        let a = post(
            &s,
            "/Observation/$meta",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
        assert_eq!(codes(returned(&a), "security"), [format!("{CONF}|N")]);
    }
}

#[tokio::test]
async fn meta_operations_refuse_bad_input_naming_the_parameter() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "p"})).await;
        let a = s.get("/Patient/p/$meta-add", None).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", a.body);
        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &json!({"resourceType": "Parameters"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "required", Some("meta"));
        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &json!({"resourceType": "Parameters", "parameter": [
                {"name": "meta", "valueMeta": {"tag": [{"code": "a"}]}},
                {"name": "metta", "valueString": "x"}]}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("Parameters.parameter[1].name"));
        assert!(a.body.to_string().contains("metta"), "{}", a.body);
        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &parameters_meta(json!({"source": "http://elsewhere"})),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(
            &a.body,
            "invalid",
            Some("Parameters.parameter[0].valueMeta.source"),
        );
        let a = post(
            &s,
            "/Patient/p/$meta-delete",
            &json!({"resourceType": "Parameters", "parameter": [{"name": "meta", "valueString": "tag"}]}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("Parameters.parameter[0]"));
        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        let a = s.get("/Patient/p/$meta?color=red", None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("color"));
        // Unknown resources and versions, deletions, and versions that are not current.
        let a = s.get("/Patient/nobody/$meta", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = post(
            &s,
            "/Patient/nobody/$meta-add",
            &parameters_meta(json!({"tag": [{"code": "a"}]})),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = s.get("/Patient/p/_history/9/$meta", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = post(
            &s,
            "/Patient/p/_history/1/$meta-add",
            &parameters_meta(json!({"tag": [{"code": "a"}]})),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        s.delete("/Patient/p").await;
        let a = s.get("/Patient/p/$meta", None).await;
        assert_eq!(a.status, StatusCode::GONE, "{}", a.body);
        let a = post(
            &s,
            "/Patient/p/$meta-add",
            &parameters_meta(json!({"tag": [{"code": "a"}]})),
        )
        .await;
        assert_eq!(a.status, StatusCode::GONE, "{}", a.body);
        // An operation nobody defines is named in a 404.
        let a = s.get("/Patient/$frobnicate", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert!(a.body.to_string().contains("$frobnicate"), "{}", a.body);
    }
}

// $meta is authorized as a read (of the instance, or as a search of the whole type or
// system); $meta-add and $meta-delete as an update; a patient/ scope reaches its own
// compartment's resources only.
#[tokio::test]
async fn meta_operations_are_authorized_as_reads_and_updates() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "p"})).await;
        s.put(json!({"resourceType": "Patient", "id": "q"})).await;
        s.put(
            json!({"resourceType": "Observation", "id": "o", "status": "final",
            "code": {"text": "t"}, "subject": {"reference": "Patient/p"}}),
        )
        .await;
        let add = parameters_meta(json!({"tag": [{"system": "urn:t", "code": "a"}]}));
        let only_read = caller(reader(), &[], None);
        assert_eq!(status(&s, "/Patient/p/$meta", None, &only_read).await, 200);
        assert_eq!(status(&s, "/$meta", None, &only_read).await, 200);
        assert_eq!(
            status(&s, "/Patient/p/$meta-add", Some(&add), &only_read).await,
            403,
            "{}",
            b.name
        );

        // patient/*.rs for Patient/p: its own resources only, and no type or system scans.
        let own = caller(Rights::ALL, &["patient/*.rs"], Some("p"));
        assert_eq!(status(&s, "/Patient/p/$meta", None, &own).await, 200);
        assert_eq!(status(&s, "/Observation/o/$meta", None, &own).await, 200);
        assert_eq!(status(&s, "/Patient/q/$meta", None, &own).await, 404);
        assert_eq!(status(&s, "/Patient/$meta", None, &own).await, 403);
        assert_eq!(status(&s, "/$meta", None, &own).await, 403);
        assert_eq!(
            status(&s, "/Patient/p/$meta-add", Some(&add), &own).await,
            403,
            "read scopes do not update"
        );

        // patient/*.ru: an update of its own resources.
        let writer = caller(Rights::ALL, &["patient/*.ru"], Some("p"));
        assert_eq!(
            status(&s, "/Observation/o/$meta-add", Some(&add), &writer).await,
            200,
            "{}",
            b.name
        );
        assert_eq!(
            status(&s, "/Patient/q/$meta-add", Some(&add), &writer).await,
            404
        );
        let q = s.get("/Patient/q", None).await;
        assert!(
            q.body["meta"].get("tag").is_none(),
            "Patient/q untouched: {}",
            q.body
        );
    }
}

// Azure's $purge-history: every version but the current one goes; _history shows only it.
#[tokio::test]
async fn purge_history_keeps_only_the_current_version() {
    for b in backends() {
        let s = Server::start(&b).await;
        for family in ["One", "Two", "Three"] {
            s.put(json!({"resourceType": "Patient", "id": "p", "name": [{"family": family}]}))
                .await;
            s.put(json!({"resourceType": "Patient", "id": "other", "name": [{"family": family}]}))
                .await;
        }
        let before = s.get("/Patient/p", None).await;
        let a = s
            .send(Method::DELETE, "/Patient/p/$purge-history", None, None, &[])
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}: {}", b.name, a.body);
        assert_eq!(a.kind, Some(Kind::Operation));
        let h = s.get("/Patient/p/_history", None).await;
        assert_eq!(h.body["total"], 1, "{}: {}", b.name, h.body);
        let entries = h.body["entry"].as_array().expect("entries");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["resource"]["meta"]["versionId"], "3");
        for v in [1, 2] {
            let a = s.get(&format!("/Patient/p/_history/{v}"), None).await;
            assert_eq!(a.status, StatusCode::NOT_FOUND, "version {v}: {}", a.body);
        }
        let after = s.get("/Patient/p", None).await;
        assert_eq!(after.body, before.body, "the current version is intact");
        let other = s.get("/Patient/other/_history", None).await;
        assert_eq!(other.body["total"], 3, "other resources keep their history");
        let typed = s.get("/Patient/_history", None).await;
        assert_eq!(typed.body["total"], 4, "{}", typed.body);

        // Again: nothing left to remove, said in an outcome when asked for.
        let a = s
            .send(
                Method::DELETE,
                "/Patient/p/$purge-history",
                None,
                None,
                &[("prefer", "return=OperationOutcome")],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_outcome(&a.body, "informational", None);
        assert!(a.body.to_string().contains("removed 0"), "{}", a.body);
        // POST is taken too; GET is not, nor parameters, nor unknown resources.
        let a = s
            .send(
                Method::POST,
                "/Patient/other/$purge-history",
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(a.body.to_string().contains("removed 2"), "{}", a.body);
        let a = s.get("/Patient/p/$purge-history", None).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
        let a = s
            .send(
                Method::DELETE,
                "/Patient/p/$purge-history?keep=2",
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("keep"));
        let a = s
            .send(
                Method::DELETE,
                "/Patient/nobody/$purge-history",
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = s
            .send(Method::DELETE, "/Patient/$purge-history", None, None, &[])
            .await;
        assert_eq!(
            a.status,
            StatusCode::NOT_FOUND,
            "an instance operation only: {}",
            a.body
        );
        // A deleted resource keeps its deletion as the current version.
        s.delete("/Patient/other").await;
        let a = s
            .send(
                Method::DELETE,
                "/Patient/other/$purge-history",
                None,
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::NO_CONTENT);
        let h = s.get("/Patient/other/_history", None).await;
        assert_eq!(h.body["total"], 1, "{}", h.body);
        assert_eq!(
            h.body["entry"][0]["request"]["method"], "DELETE",
            "{}",
            h.body
        );
        assert_eq!(s.get("/Patient/other", None).await.status, StatusCode::GONE);
    }
}

// $purge-history is authorized as a delete of the resource.
#[tokio::test]
async fn purge_history_is_authorized_as_a_delete() {
    for b in backends() {
        let s = Server::start(&b).await;
        for family in ["One", "Two"] {
            s.put(json!({"resourceType": "Patient", "id": "p", "name": [{"family": family}]}))
                .await;
            s.put(json!({"resourceType": "Patient", "id": "q", "name": [{"family": family}]}))
                .await;
        }
        let writer = Rights {
            read: true,
            write: true,
            ..Rights::default()
        };
        let a = purge(&s, "/Patient/p/$purge-history", caller(writer, &[], None)).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}: {}", b.name, a.body);
        let a = purge(
            &s,
            "/Patient/p/$purge-history",
            caller(Rights::ALL, &["user/Patient.rs"], None),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        let own = || caller(Rights::ALL, &["patient/Patient.d"], Some("p"));
        let a = purge(&s, "/Patient/q/$purge-history", own()).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        let a = purge(&s, "/Patient/p/$purge-history", own()).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{}", a.body);
        let h = s.get("/Patient/q/_history", None).await;
        assert_eq!(h.body["total"], 2, "Patient/q untouched");
        let h = s.get("/Patient/p/_history", None).await;
        assert_eq!(h.body["total"], 1);
    }
}

// Each operation is in the CapabilityStatement with its OperationDefinition, and the audit
// record's classification names it an operation on its resource.
#[tokio::test]
async fn operations_are_listed_and_classified() {
    let b = &backends()[0];
    let s = Server::start(b).await;
    let cs = s.get("/metadata", None).await.body;
    let rest = &cs["rest"][0];
    assert!(rest["operation"]
        .as_array()
        .expect("system operations")
        .iter()
        .any(|o| o["name"] == "meta"
            && o["definition"] == "http://hl7.org/fhir/OperationDefinition/Resource-meta"));
    for t in ["Patient", "Observation", "ValueSet"] {
        let r = rest["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["type"] == t)
            .expect("type listed");
        let ops: Vec<(String, String)> = r["operation"]
            .as_array()
            .expect("operations")
            .iter()
            .map(|o| {
                (
                    o["name"].as_str().unwrap_or_default().to_owned(),
                    o["definition"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        for (name, definition) in [
            (
                "meta",
                "http://hl7.org/fhir/OperationDefinition/Resource-meta",
            ),
            (
                "meta-add",
                "http://hl7.org/fhir/OperationDefinition/Resource-meta-add",
            ),
            (
                "meta-delete",
                "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete",
            ),
            (
                "purge-history",
                "https://fhirlink.dev/fhir/OperationDefinition/purge-history",
            ),
        ] {
            assert!(
                ops.contains(&(name.to_owned(), definition.to_owned())),
                "{t} lists ${name}: {ops:?}"
            );
        }
    }
    let listed = |t: &str, name: &str| -> String {
        rest["resource"]
            .as_array()
            .expect("resources")
            .iter()
            .find(|r| r["type"] == t)
            .and_then(|r| {
                r["operation"]
                    .as_array()?
                    .iter()
                    .find(|o| o["name"] == name)
                    .map(|o| o["definition"].as_str().unwrap_or_default().to_owned())
            })
            .unwrap_or_default()
    };
    assert_eq!(
        listed("ValueSet", "expand"),
        "http://hl7.org/fhir/OperationDefinition/ValueSet-expand"
    );
    assert_eq!(
        listed("ValueSet", "validate-code"),
        "http://hl7.org/fhir/OperationDefinition/ValueSet-validate-code"
    );
    assert_eq!(
        listed("CodeSystem", "subsumes"),
        "http://hl7.org/fhir/OperationDefinition/CodeSystem-subsumes"
    );
    assert_eq!(
        listed("Patient", "validate"),
        "http://hl7.org/fhir/OperationDefinition/Resource-validate"
    );
    assert_eq!(listed("Patient", "expand"), "");
    for (method, path) in [
        (Method::GET, "/ValueSet/$expand"),
        (Method::GET, "/ValueSet/vs/$validate-code"),
        (Method::POST, "/Patient/p/$validate"),
        (Method::GET, "/Patient/p/$meta"),
        (Method::GET, "/Patient/p/_history/2/$meta"),
        (Method::POST, "/Patient/p/$meta-add"),
        (Method::POST, "/Patient/p/$meta-delete"),
        (Method::DELETE, "/Patient/p/$purge-history"),
    ] {
        let c = classify(&method, path);
        assert_eq!(c.kind, Kind::Operation, "{method} {path}");
        let mut names = path.trim_start_matches('/').split('/');
        assert_eq!(c.resource_type.as_deref(), names.next(), "{path}");
        let id = names.next().filter(|n| !n.starts_with('$'));
        assert_eq!(c.resource_id.as_deref(), id, "{path}");
    }
    assert_eq!(classify(&Method::GET, "/$meta").kind, Kind::Operation);
    assert_eq!(
        classify(&Method::GET, "/Patient/$meta")
            .resource_type
            .as_deref(),
        Some("Patient")
    );
}

/// The issues of an OperationOutcome as (severity, code, first expression).
fn issues(v: &Value) -> Vec<(String, String, String)> {
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    v["issue"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            (
                i["severity"].as_str().unwrap_or_default().to_owned(),
                i["code"].as_str().unwrap_or_default().to_owned(),
                i["expression"][0].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn error_paths(v: &Value) -> Vec<String> {
    issues(v)
        .into_iter()
        .filter(|(s, _, _)| s == "error")
        .map(|(_, _, e)| e)
        .collect()
}

fn is_valid(a: &Answer) -> bool {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    error_paths(&a.body).is_empty() && a.body["issue"][0]["severity"] == "information"
}

// FHIR R4 resource-operation-validate: the same validation a write runs, every issue with
// its expression, 200 whether valid or not; modes create, update and delete.
#[tokio::test]
async fn validate_runs_the_write_paths_validation_with_its_modes() {
    for b in backends() {
        let s = Server::start(&b).await;
        let good =
            json!({"resourceType": "Patient", "gender": "female", "birthDate": "1970-01-01"});
        let a = post(&s, "/Patient/$validate", &good).await;
        assert_eq!(a.kind, Some(Kind::Operation));
        assert!(is_valid(&a), "{}: {}", b.name, a.body);
        let bad = json!({"resourceType": "Patient", "gender": "robot", "birthDate": "1970-13-01", "nickname": "x"});
        let a = post(&s, "/Patient/$validate", &bad).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let mut paths = error_paths(&a.body);
        paths.sort();
        assert_eq!(
            paths,
            ["Patient.birthDate", "Patient.gender", "Patient.nickname"],
            "{}: {}",
            b.name,
            a.body
        );
        // The write path refuses it for the same reasons.
        let w = post(&s, "/Patient", &bad).await;
        assert_eq!(w.status, StatusCode::BAD_REQUEST);
        let mut written = error_paths(&w.body);
        written.sort();
        assert_eq!(written, paths);
        // As a Parameters body, with mode create.
        let a = post(
            &s,
            "/Patient/$validate",
            &json!({"resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": bad}, {"name": "mode", "valueCode": "create"}]}),
        )
        .await;
        assert_eq!(error_paths(&a.body).len(), 3, "{}", a.body);
        let a = post(&s, "/Observation/$validate", &good).await;
        assert_eq!(error_paths(&a.body), ["Patient.resourceType"], "{}", a.body);

        // Instance level: update checks the id, delete ignores the body, GET the stored one.
        s.put(json!({"resourceType": "Patient", "id": "p", "gender": "male"}))
            .await;
        let a = post(
            &s,
            "/Patient/p/$validate?mode=update",
            &json!({"resourceType": "Patient", "id": "q"}),
        )
        .await;
        assert_eq!(error_paths(&a.body), ["Patient.id"], "{}", a.body);
        let a = post(
            &s,
            "/Patient/p/$validate?mode=update",
            &json!({"resourceType": "Patient", "id": "p"}),
        )
        .await;
        assert!(is_valid(&a), "{}", a.body);
        let a = post(
            &s,
            "/Patient/p/$validate?mode=delete",
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert!(is_valid(&a), "{}", a.body);
        let a = s.get("/Patient/p/$validate", None).await;
        assert!(is_valid(&a), "{}", a.body);

        // What cannot be validated is a 4xx naming the parameter.
        let a = post(&s, "/Patient/$validate?mode=update", &good).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("mode"));
        let a = post(&s, "/Patient/$validate?mode=upsert", &good).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "code-invalid", Some("mode"));
        let a = s
            .send(Method::POST, "/Patient/$validate", None, None, &[])
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "required", Some("resource"));
        let a = post(&s, "/Patient/$validate?strict=true", &good).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("strict"));
        let a = s.get("/Patient/nobody/$validate", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = post(&s, "/$validate", &good).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    }
}

/// A constraint profile of Patient, as a client would store it: `identifier` 1..* with the
/// hospital's MRN system fixed, and `gender` required.
fn mrn_profile() -> Value {
    json!({
        "resourceType": "StructureDefinition",
        "id": "mrn-patient",
        "url": "http://hospital.example.org/fhir/StructureDefinition/mrn-patient",
        "version": "1.0.0",
        "name": "MrnPatient",
        "status": "active",
        "kind": "resource",
        "abstract": false,
        "type": "Patient",
        "baseDefinition": "http://hl7.org/fhir/StructureDefinition/Patient",
        "derivation": "constraint",
        "differential": {"element": [
            {"id": "Patient", "path": "Patient"},
            {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1, "mustSupport": true},
            {"id": "Patient.identifier.system", "path": "Patient.identifier.system", "min": 1,
             "fixedUri": "http://hospital.example.org/mrn"},
            {"id": "Patient.gender", "path": "Patient.gender", "min": 1,
             "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/administrative-gender"}}
        ]}
    })
}

// A stored StructureDefinition that constrains Patient is enforced by $validate with the
// profile, each violation reported at its path.
#[tokio::test]
async fn validate_enforces_a_stored_profile_with_its_paths() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(mrn_profile()).await;
        let url = "http://hospital.example.org/fhir/StructureDefinition/mrn-patient";
        let path = format!("/Patient/$validate?profile={url}");
        let a = post(
            &s,
            &path,
            &json!({"resourceType": "Patient", "gender": "female"}),
        )
        .await;
        assert_eq!(
            error_paths(&a.body),
            ["Patient.identifier"],
            "{}: {}",
            b.name,
            a.body
        );
        assert!(a.body.to_string().contains("mrn-patient"), "{}", a.body);
        let a = post(
            &s,
            &path,
            &json!({"resourceType": "Patient", "gender": "female",
                "identifier": [{"system": "http://hospital.example.org/mrn", "value": "1"}, {"system": "urn:other", "value": "2"}, {"value": "3"}]}),
        )
        .await;
        assert_eq!(
            error_paths(&a.body),
            [
                "Patient.identifier[1].system",
                "Patient.identifier[2].system"
            ],
            "{}",
            a.body
        );
        let a = post(&s, &path, &json!({"resourceType": "Patient", "identifier": [{"system": "http://hospital.example.org/mrn", "value": "1"}]})).await;
        assert_eq!(error_paths(&a.body), ["Patient.gender"], "{}", a.body);
        let conforming = json!({"resourceType": "Patient", "gender": "other",
            "identifier": [{"system": "http://hospital.example.org/mrn", "value": "1"}]});
        assert!(is_valid(&post(&s, &path, &conforming).await));
        // Without the profile only R4 applies; with url|version, and by a Parameters body.
        assert!(is_valid(
            &post(
                &s,
                "/Patient/$validate",
                &json!({"resourceType": "Patient"})
            )
            .await
        ));
        let a = post(
            &s,
            &format!("{path}|1.0.0"),
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(
            error_paths(&a.body),
            ["Patient.identifier", "Patient.gender"],
            "{}",
            a.body
        );
        let a = post(
            &s,
            "/Patient/$validate",
            &json!({"resourceType": "Parameters", "parameter": [
                {"name": "resource", "resource": {"resourceType": "Patient"}},
                {"name": "profile", "valueCanonical": url}]}),
        )
        .await;
        assert_eq!(error_paths(&a.body).len(), 2, "{}", a.body);
        // The stored resource of an instance, against the profile.
        s.put(json!({"resourceType": "Patient", "id": "p", "gender": "male"}))
            .await;
        let a = s
            .get(&format!("/Patient/p/$validate?profile={url}"), None)
            .await;
        assert_eq!(error_paths(&a.body), ["Patient.identifier"], "{}", a.body);
        // The base definition of the type adds nothing; other profiles are refused by name.
        let a = post(
            &s,
            "/Patient/$validate?profile=http://hl7.org/fhir/StructureDefinition/Patient",
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert!(is_valid(&a), "{}", a.body);
        let a = post(
            &s,
            "/Patient/$validate?profile=http://hl7.org/fhir/StructureDefinition/Observation",
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("profile"));
        let a = post(
            &s,
            "/Patient/$validate?profile=http://nowhere.example/sd",
            &json!({"resourceType": "Patient"}),
        )
        .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_outcome(&a.body, "not-found", Some("profile"));
        let a = post(
            &s,
            &format!("/Observation/$validate?profile={url}"),
            &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}}),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
        assert_outcome(&a.body, "invalid", Some("profile"));
    }
}

// $validate is a read: of the type, or at the instance level of the stored resource.
#[tokio::test]
async fn validate_is_authorized_as_a_read() {
    for b in backends() {
        let s = Server::start(&b).await;
        s.put(json!({"resourceType": "Patient", "id": "p"})).await;
        s.put(json!({"resourceType": "Patient", "id": "q"})).await;
        let body = json!({"resourceType": "Patient"});
        let none = caller(
            Rights {
                write: true,
                ..Rights::default()
            },
            &[],
            None,
        );
        assert_eq!(
            status(&s, "/Patient/$validate", Some(&body), &none).await,
            403,
            "{}",
            b.name
        );
        assert_eq!(
            status(
                &s,
                "/Patient/$validate",
                Some(&body),
                &caller(reader(), &[], None)
            )
            .await,
            200
        );
        let own = caller(Rights::ALL, &["patient/Patient.r"], Some("p"));
        assert_eq!(
            status(&s, "/Patient/$validate", Some(&body), &own).await,
            200
        );
        assert_eq!(status(&s, "/Patient/p/$validate", None, &own).await, 200);
        assert_eq!(status(&s, "/Patient/q/$validate", None, &own).await, 404);
        let obs = caller(Rights::ALL, &["patient/Observation.r"], Some("p"));
        assert_eq!(
            status(&s, "/Patient/$validate", Some(&body), &obs).await,
            403
        );
    }
}

// The official R4 examples: every one the write path takes is valid through $validate, and
// each known-invalid one is reported with the reasons the write path gives.
#[tokio::test]
async fn validate_agrees_with_the_write_path_on_the_official_examples() {
    let examples = crate::corpus::official_examples();
    let b = &backends()[0];
    let s = Server::start(b).await;
    let known: std::collections::BTreeMap<&str, &str> =
        crate::corpus::KNOWN_INVALID.iter().copied().collect();
    let (mut valid, mut invalid) = (0, 0);
    for (file, resource) in &examples {
        let t = resource["resourceType"].as_str().expect("resourceType");
        let a = post(&s, &format!("/{t}/$validate"), resource).await;
        assert_eq!(a.status, StatusCode::OK, "{file}: {}", a.body);
        let reported = error_paths(&a.body);
        if !known.contains_key(file.as_str()) {
            assert!(reported.is_empty(), "{file} is valid R4: {}", a.body);
            valid += 1;
            continue;
        }
        let w = post(&s, &format!("/{t}"), resource).await;
        assert!(
            w.status.is_client_error(),
            "{file}: the write path refuses it"
        );
        let same = |v: &Value| -> Vec<(String, String)> {
            v["issue"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|i| i["severity"] == "error")
                .map(|i| {
                    (
                        i["diagnostics"].as_str().unwrap_or_default().to_owned(),
                        i["expression"][0].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        };
        assert!(
            !reported.is_empty(),
            "{file} is invalid ({}): {}",
            known[file.as_str()],
            a.body
        );
        assert_eq!(same(&a.body), same(&w.body), "{file}: the same reasons");
        invalid += 1;
    }
    assert_eq!(invalid, known.len(), "every known-invalid example was seen");
    assert!(valid > 5000, "{valid} valid examples");
}

/// `(system|code)` of an expansion's `contains`, in order.
fn expanded(a: &Answer) -> Vec<String> {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["resourceType"], "ValueSet", "{}", a.body);
    a.body["expansion"]["contains"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            format!(
                "{}|{}",
                c["system"].as_str().unwrap_or_default(),
                c["code"].as_str().unwrap_or_default()
            )
        })
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn subsumption(s: &Server, a: &str, b: &str) -> String {
    let path = format!("/CodeSystem/$subsumes?system={CLINICAL}&codeA={a}&codeB={b}");
    let r = s.get(&path, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    r.body["parameter"][0]["valueCode"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

const GENDER: &str = "http://hl7.org/fhir/administrative-gender";
const CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";

// FHIR R4 valueset-operation-expand over the built-in expansions and a stored ValueSet whose
// compose filters a built-in hierarchy; validate-code and subsumes beside it.
#[tokio::test]
async fn terminology_operations_over_the_built_in_r4_terminology() {
    for b in backends() {
        let s = Server::start(&b).await;
        let url = "http://hl7.org/fhir/ValueSet/administrative-gender";
        let a = s.get(&format!("/ValueSet/$expand?url={url}"), None).await;
        assert_eq!(a.kind, Some(Kind::Operation));
        assert_eq!(
            sorted(expanded(&a)),
            [
                format!("{GENDER}|female"),
                format!("{GENDER}|male"),
                format!("{GENDER}|other"),
                format!("{GENDER}|unknown")
            ],
            "{}",
            b.name
        );
        assert_eq!(a.body["expansion"]["total"], 4);
        let all = expanded(&a);
        let a = s
            .get(
                &format!("/ValueSet/$expand?url={url}&count=2&offset=1"),
                None,
            )
            .await;
        assert_eq!(expanded(&a), all[1..3].to_vec());
        assert_eq!(a.body["expansion"]["total"], 4);
        assert_eq!(a.body["expansion"]["offset"], 1);
        let a = s
            .get(&format!("/ValueSet/$expand?url={url}&filter=ALE"), None)
            .await;
        assert_eq!(
            sorted(expanded(&a)),
            [format!("{GENDER}|female"), format!("{GENDER}|male")]
        );
        assert_eq!(a.body["expansion"]["total"], 2);

        // A stored ValueSet: every inactive clinical status (is-a over the R4 hierarchy).
        s.put(json!({"resourceType": "ValueSet", "id": "inactive", "url": "http://example.org/vs/inactive",
            "status": "active", "compose": {"include": [{"system": CLINICAL,
                "filter": [{"property": "concept", "op": "is-a", "value": "inactive"}]}]}}))
            .await;
        let a = s.get("/ValueSet/inactive/$expand", None).await;
        assert_eq!(
            sorted(expanded(&a)),
            [
                format!("{CLINICAL}|inactive"),
                format!("{CLINICAL}|remission"),
                format!("{CLINICAL}|resolved")
            ],
            "{}: {}",
            b.name,
            a.body
        );
        let a = s.get("/ValueSet/inactive/$expand?filter=re", None).await;
        assert_eq!(
            sorted(expanded(&a)),
            [
                format!("{CLINICAL}|remission"),
                format!("{CLINICAL}|resolved")
            ]
        );
        let a = post(
            &s,
            "/ValueSet/$expand",
            &json!({"resourceType": "Parameters", "parameter": [{"name": "url", "valueUri": "http://example.org/vs/inactive"}, {"name": "filter", "valueString": "res"}]}),
        )
        .await;
        assert_eq!(expanded(&a), [format!("{CLINICAL}|resolved")]);

        // $validate-code, by url and code, and by id with a coding.
        let vc = |a: &Answer| {
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            a.body["parameter"][0]["valueBoolean"]
                .as_bool()
                .expect("result")
        };
        assert!(vc(&s
            .get(
                &format!("/ValueSet/$validate-code?url={url}&system={GENDER}&code=male"),
                None
            )
            .await));
        assert!(!vc(&s
            .get(
                &format!("/ValueSet/$validate-code?url={url}&system={GENDER}&code=robot"),
                None
            )
            .await));
        assert!(!vc(&s
            .get(
                &format!("/ValueSet/$validate-code?url={url}&system=urn:other&code=male"),
                None
            )
            .await));
        let coding = |code: &str| json!({"resourceType": "Parameters", "parameter": [{"name": "coding", "valueCoding": {"system": CLINICAL, "code": code}}]});
        assert!(vc(&post(
            &s,
            "/ValueSet/inactive/$validate-code",
            &coding("remission")
        )
        .await));
        assert!(!vc(&post(
            &s,
            "/ValueSet/inactive/$validate-code",
            &coding("active")
        )
        .await));

        // $subsumes over the R4 hierarchy of condition-clinical.
        assert_eq!(subsumption(&s, "inactive", "resolved").await, "subsumes");
        assert_eq!(subsumption(&s, "resolved", "inactive").await, "subsumed-by");
        assert_eq!(subsumption(&s, "active", "resolved").await, "not-subsumed");
        assert_eq!(subsumption(&s, "active", "active").await, "equivalent");
    }
}

// What needs SNOMED CT, LOINC or another external terminology is a clear 4xx, and bad
// parameters are 400s naming them.
#[tokio::test]
async fn terminology_operations_refuse_what_they_cannot_answer() {
    for b in backends() {
        let s = Server::start(&b).await;
        let url = "http://hl7.org/fhir/ValueSet/administrative-gender";
        let a = s.get("/ValueSet/$validate-code?url=http://hl7.org/fhir/ValueSet/condition-code&system=http://snomed.info/sct&code=38341003", None).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}: {}",
            b.name,
            a.body
        );
        assert!(a.body.to_string().contains("SNOMED CT"), "{}", a.body);
        let a = s
            .get(
                "/ValueSet/$expand?url=http://hl7.org/fhir/ValueSet/condition-code",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert_outcome(&a.body, "not-supported", None);
        s.put(json!({"resourceType": "ValueSet", "id": "loinc", "url": "http://example.org/vs/loinc", "status": "active",
            "compose": {"include": [{"system": "http://loinc.org", "concept": [{"code": "8867-4"}]}]}}))
            .await;
        let a = s.get("/ValueSet/loinc/$expand", None).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert!(a.body.to_string().contains("LOINC"), "{}", a.body);
        let a = s
            .get(
                "/CodeSystem/$subsumes?system=http://snomed.info/sct&codeA=1&codeB=2",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
        let a = s
            .get("/ValueSet/$expand?url=http://example.org/nowhere", None)
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_outcome(&a.body, "not-found", Some("url"));
        let a = s.get("/ValueSet/$expand", None).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "required", Some("url"));
        let a = s
            .get(&format!("/ValueSet/$expand?url={url}&count=many"), None)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("count"));
        let a = s
            .get(
                &format!("/ValueSet/$expand?url={url}&activeOnly=true"),
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("activeOnly"));
        let a = s
            .get(
                "/CodeSystem/$subsumes?system=http://hl7.org/fhir/administrative-gender&codeA=male",
                None,
            )
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "required", Some("codeB"));
        let a = s.get("/Patient/$expand", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = s.get("/ValueSet/nobody/$expand", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        // Authorized as reads of ValueSet and CodeSystem.
        let path = format!("/ValueSet/$expand?url={url}");
        let no_read = caller(
            Rights {
                write: true,
                ..Rights::default()
            },
            &[],
            None,
        );
        assert_eq!(status(&s, &path, None, &no_read).await, 403);
        assert_eq!(
            status(&s, &path, None, &caller(reader(), &[], None)).await,
            200
        );
        let other = caller(Rights::ALL, &["user/CodeSystem.r"], None);
        assert_eq!(status(&s, &path, None, &other).await, 403);
        let sub = format!("/CodeSystem/$subsumes?system={CLINICAL}&codeA=inactive&codeB=resolved");
        assert_eq!(status(&s, &sub, None, &other).await, 200);
    }
}

fn member_match_body(family: &str, birth: &str, coverage_id: Option<&str>) -> Value {
    let mut coverage = json!({"resourceType": "Coverage", "status": "active",
        "beneficiary": {"reference": "Patient/1"}, "payor": [{"display": "Old Payer"}]});
    if let Some(id) = coverage_id {
        coverage["identifier"] =
            json!([{"system": "http://oldpayer.example.org/member", "value": id}]);
    }
    json!({"resourceType": "Parameters", "parameter": [
        {"name": "MemberPatient", "resource": {"resourceType": "Patient",
            "name": [{"family": family, "given": ["Ann"]}], "birthDate": birth}},
        {"name": "CoverageToMatch", "resource": coverage},
        {"name": "Consent", "resource": {"resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "64292-6"}]}]}}
    ]})
}

// Da Vinci HRex $member-match: one member matched by demographics and coverage, none, or
// several (422).
#[tokio::test]
async fn member_match_hit_miss_and_ambiguous() {
    for b in backends() {
        let s = Server::start(&b).await;
        let patient = |id: &str, family: &str| {
            json!({"resourceType": "Patient", "id": id, "name": [{"family": family, "given": ["Ann"]}],
                "birthDate": "1980-02-03", "identifier": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MB"}]},
                "system": "http://newpayer.example.org/member", "value": format!("M-{id}")}]})
        };
        s.put(patient("a", "Lee")).await;
        s.put(patient("twin1", "Kim")).await;
        s.put(patient("twin2", "Kim")).await;
        for (cid, who, member) in [
            ("c1", "a", "111"),
            ("c2", "twin1", "222"),
            ("c3", "twin2", "333"),
        ] {
            s.put(json!({"resourceType": "Coverage", "id": cid, "status": "active",
                "identifier": [{"system": "http://oldpayer.example.org/member", "value": member}],
                "beneficiary": {"reference": format!("Patient/{who}")}, "payor": [{"display": "Old Payer"}]}))
                .await;
        }
        let a = post(
            &s,
            "/Patient/$member-match",
            &member_match_body("Lee", "1980-02-03", Some("111")),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", b.name, a.body);
        assert_eq!(a.body["parameter"][0]["name"], "MemberIdentifier");
        assert_eq!(
            a.body["parameter"][0]["valueIdentifier"]["value"], "M-a",
            "{}",
            a.body
        );
        // The coverage decides between demographic twins.
        let a = post(
            &s,
            "/Patient/$member-match",
            &member_match_body("Kim", "1980-02-03", Some("333")),
        )
        .await;
        assert_eq!(
            a.body["parameter"][0]["valueIdentifier"]["value"], "M-twin2",
            "{}",
            a.body
        );
        // Misses: another birth date, or a coverage the member does not hold.
        let a = post(
            &s,
            "/Patient/$member-match",
            &member_match_body("Lee", "1980-02-04", Some("111")),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        let a = post(
            &s,
            "/Patient/$member-match",
            &member_match_body("Lee", "1980-02-03", Some("222")),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        // Ambiguous: the twins without a coverage identifier.
        let a = post(
            &s,
            "/Patient/$member-match",
            &member_match_body("Kim", "1980-02-03", None),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
        assert!(a.body.to_string().contains("2 members match"), "{}", a.body);
        // Bad input names the parameter; a patient/ scope is refused.
        let mut body = member_match_body("Lee", "1980-02-03", Some("111"));
        body["parameter"]
            .as_array_mut()
            .expect("parameters")
            .remove(2);
        let a = post(&s, "/Patient/$member-match", &body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "required", Some("Consent"));
        let body = member_match_body("Lee", "1980-02-03", Some("111"));
        let own = caller(Rights::ALL, &["patient/*.rs"], Some("a"));
        assert_eq!(
            status(&s, "/Patient/$member-match", Some(&body), &own).await,
            403
        );
        assert_eq!(
            status(
                &s,
                "/Patient/$member-match",
                Some(&body),
                &caller(reader(), &[], None)
            )
            .await,
            200
        );
        let a = s.get("/Observation/$member-match", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
    }
}
