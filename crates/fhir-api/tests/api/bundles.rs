//! Bundle entries are full interactions (FHIR R4 http.html#transaction): searches at every
//! level, histories, `HEAD`, conditional reads and writes, in batches and transactions, each
//! answered as the same request alone would be.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::{backends, bundle, entry_status, Server};

fn observation(id: &str, patient: &str, code: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")}})
}

async fn seeded(b: &crate::common::Backend) -> Server {
    let s = Server::start(b).await;
    s.put(json!({"resourceType": "Patient", "id": "p1", "gender": "female"}))
        .await;
    s.put(json!({"resourceType": "Patient", "id": "p2", "gender": "male"}))
        .await;
    s.put(observation("o1", "p1", "8302-2")).await;
    s.put(observation("o2", "p2", "8302-2")).await;
    s
}

fn ids(searchset: &Value) -> Vec<String> {
    let mut ids: Vec<String> = searchset["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] != "outcome")
        .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn batch_search_entries_at_every_level_answer_as_the_requests_do() {
    for b in backends() {
        let s = seeded(&b).await;
        let urls = [
            "Patient?gender=female",
            "Observation?code=http://loinc.org|8302-2&_count=10",
            "Patient/p1/Observation",
            "?_type=Patient&_count=5",
            "Patient/p1/_history",
            "Patient/_history",
            "_history?_count=3",
            "Observation?subject=Patient/p2&_summary=count",
        ];
        let entries: Vec<(&str, &str, Option<Value>)> =
            urls.iter().map(|u| ("GET", *u, None)).collect();
        let a = s.bundle(&bundle("batch", &entries), None).await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", b.name, a.body);
        assert_eq!(a.body["type"], "batch-response");
        for (i, url) in urls.iter().enumerate() {
            let entry = &a.body["entry"][i];
            let alone = s.get(&format!("/{url}"), None).await;
            assert_eq!(alone.status, StatusCode::OK, "{url}");
            assert_eq!(entry_status(entry), 200, "{url}: {entry}");
            let r = &entry["resource"];
            assert_eq!(r["resourceType"], "Bundle", "{url}");
            assert_eq!(r["type"], alone.body["type"], "{url}");
            assert_eq!(r["total"], alone.body["total"], "{url}");
            assert_eq!(ids(r), ids(&alone.body), "{url}");
        }
        assert_eq!(ids(&a.body["entry"][0]["resource"]), vec!["p1"]);
        assert_eq!(ids(&a.body["entry"][1]["resource"]), vec!["o1", "o2"]);
        assert_eq!(ids(&a.body["entry"][2]["resource"]), vec!["o1"]);
        assert_eq!(a.body["entry"][7]["resource"]["total"], 1);
    }
}

#[tokio::test]
async fn head_and_conditional_read_entries() {
    for b in backends() {
        let s = seeded(&b).await;
        let doc = json!({"resourceType": "Bundle", "type": "batch", "entry": [
            {"request": {"method": "HEAD", "url": "Patient/p1"}},
            {"request": {"method": "GET", "url": "Patient/p1", "ifNoneMatch": "W/\"1\""}},
            {"request": {"method": "GET", "url": "Patient/p1", "ifNoneMatch": "W/\"7\""}},
            {"request": {"method": "GET", "url": "Patient/p1?_elements=gender"}},
            {"request": {"method": "GET", "url": "Patient/nope"}},
        ]});
        let a = s.bundle(&doc, None).await;
        let e = |i: usize| &a.body["entry"][i];
        assert_eq!(entry_status(e(0)), 200, "{}", a.body);
        assert!(
            e(0).get("resource").is_none(),
            "HEAD carries no resource: {}",
            e(0)
        );
        assert_eq!(e(0)["response"]["etag"], "W/\"1\"");
        assert_eq!(entry_status(e(1)), 304, "{}", e(1));
        assert_eq!(entry_status(e(2)), 200, "{}", e(2));
        assert_eq!(e(2)["resource"]["id"], "p1");
        assert_eq!(e(3)["resource"]["gender"], "female", "{}", e(3));
        assert_eq!(entry_status(e(4)), 404);
        assert_eq!(
            e(4)["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
    }
}

#[tokio::test]
async fn a_transactions_search_entries_see_its_writes_and_conditional_patch_works() {
    for b in backends() {
        let s = seeded(&b).await;
        let patch = json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.gender"},
            {"name": "value", "valueCode": "other"}]}]});
        let doc = bundle(
            "transaction",
            &[
                ("GET", "Patient?gender=female", None),
                (
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient", "gender": "female"})),
                ),
                ("PATCH", "Patient?_id=p2", Some(patch)),
                ("GET", "Patient/p2", None),
            ],
        );
        let a = s.bundle(&doc, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", b.name, a.body);
        assert_eq!(a.body["type"], "transaction-response");
        let search = &a.body["entry"][0]["resource"];
        assert_eq!(search["type"], "searchset", "{}", a.body);
        // p1 and the patient this transaction created.
        assert_eq!(search["total"], 2, "{search}");
        assert_eq!(entry_status(&a.body["entry"][2]), 200, "{}", a.body);
        assert_eq!(a.body["entry"][3]["resource"]["gender"], "other");
        // A conditional patch that matches nothing fails the whole transaction.
        let none = json!({"resourceType": "Parameters", "parameter": []});
        let doc = bundle(
            "transaction",
            &[
                (
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient", "gender": "unknown"})),
                ),
                ("PATCH", "Patient?_id=nobody", Some(none)),
            ],
        );
        let a = s.bundle(&doc, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        let after = s.get("/Patient?gender=unknown", None).await;
        assert_eq!(after.body["total"], 0, "rolled back: {}", after.body);
    }
}

#[tokio::test]
async fn entries_that_are_no_interaction_are_refused_with_their_path() {
    for b in backends() {
        let s = seeded(&b).await;
        for (method, url, field) in [
            ("FETCH", "Patient", "request.method"),
            ("POST", "", "request.url"),
            ("GET", "Banana/1", "request.url"),
            ("POST", "Patient?name=x", "request.url"),
            ("PUT", "Patient", "request.url"),
        ] {
            let a = s
                .bundle(&bundle("transaction", &[(method, url, None)]), None)
                .await;
            assert!(a.status.is_client_error(), "{method} {url}: {}", a.body);
            let expr = a.body["issue"][0]["expression"][0]
                .as_str()
                .unwrap_or_default();
            assert!(
                expr.starts_with("Bundle.entry[0]"),
                "{method} {url}: {expr} ({field})"
            );
        }
    }
}

// Regression: a transaction whose search or history entry was refused for its parameters
// committed its writes and answered 200 with a 400 entry; it is all or nothing (FHIR R4
// http.html#transaction), so it now fails before anything is written.
#[tokio::test]
async fn a_transaction_with_a_refused_search_entry_writes_nothing() {
    for b in backends() {
        let s = seeded(&b).await;
        let strict = [("prefer", "handling=strict")];
        for (url, headers, code) in [
            ("Patient?birthdate=notadate", &[][..], "invalid"),
            ("Patient?_count=many", &[][..], "invalid"),
            ("Patient/_history?_since=yesterday", &[][..], "invalid"),
            ("Patient?nosuchparam=1", &strict[..], "not-supported"),
        ] {
            let doc = bundle(
                "transaction",
                &[
                    (
                        "POST",
                        "Patient",
                        Some(json!({"resourceType": "Patient", "gender": "unknown"})),
                    ),
                    (
                        "PUT",
                        "Patient/p1",
                        Some(json!({"resourceType": "Patient", "id": "p1", "gender": "other"})),
                    ),
                    ("GET", url, None),
                ],
            );
            let a = s
                .send(axum::http::Method::POST, "/", Some(&doc), None, headers)
                .await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{}: {url}: {}",
                b.name,
                a.body
            );
            assert_eq!(a.body["issue"][0]["code"], code, "{url}: {}", a.body);
            assert_eq!(
                a.body["issue"][0]["expression"][0], "Bundle.entry[2]",
                "{url}: {}",
                a.body
            );
            let created = s.get("/Patient?gender=unknown", None).await;
            assert_eq!(
                created.body["total"], 0,
                "{url}: rolled back: {}",
                created.body
            );
            let p1 = s.get("/Patient/p1", None).await;
            assert_eq!(
                p1.body["gender"], "female",
                "{url}: rolled back: {}",
                p1.body
            );
            assert_eq!(p1.body["meta"]["versionId"], "1", "{url}: {}", p1.body);
        }
        // Without the refusal, the same transaction writes and its search sees the writes; a
        // read of what does not exist yet is not refused beforehand (the writes may make it).
        let doc = bundle(
            "transaction",
            &[
                (
                    "PUT",
                    "Patient/p9",
                    Some(json!({"resourceType": "Patient", "id": "p9", "gender": "unknown"})),
                ),
                ("GET", "Patient?gender=unknown", None),
                ("GET", "Patient/p9?_elements=gender", None),
            ],
        );
        let a = s.bundle(&doc, None).await;
        assert_eq!(a.status, StatusCode::OK, "{}: {}", b.name, a.body);
        assert_eq!(a.body["entry"][1]["resource"]["total"], 1, "{}", a.body);
        assert_eq!(entry_status(&a.body["entry"][2]), 200, "{}", a.body);
    }
}
