//! batch and transaction Bundles (FHIR R4 http.html#transaction): all or nothing, the
//! processing order, urn:uuid rewriting and the response Bundle, on each backend.

use serde_json::{json, Value};

use crate::common::{assert_outcome, backends, Server};

fn entry(full_url: &str, method: &str, url: &str, resource: Option<Value>) -> Value {
    let mut e = json!({"fullUrl": full_url, "request": {"method": method, "url": url}});
    if let Some(r) = resource {
        e["resource"] = r;
    }
    e
}

fn bundle(kind: &str, entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": kind, "entry": entries})
}

const PAT: &str = "urn:uuid:9f3c7c5e-0000-4000-8000-000000000001";
const ENC: &str = "urn:uuid:9f3c7c5e-0000-4000-8000-000000000002";

#[tokio::test]
async fn transaction_rewrites_urn_uuid_references_everywhere() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let b = bundle(
            "transaction",
            vec![
                // The Observation comes first and refers to entries that come later.
                entry(
                    "urn:uuid:9f3c7c5e-0000-4000-8000-000000000003",
                    "POST",
                    "Observation",
                    Some(json!({
                        "resourceType": "Observation",
                        "status": "final",
                        "code": {"text": "weight"},
                        "subject": {"reference": PAT},
                        "encounter": {"reference": ENC},
                        "performer": [{"reference": PAT, "display": "self"}],
                        "contained": [{"resourceType": "Provenance", "target": [{"reference": PAT}], "recorded": "2020-01-01T00:00:00Z", "agent": [{"who": {"reference": ENC}}]}]
                    })),
                ),
                entry(
                    ENC,
                    "POST",
                    "Encounter",
                    Some(
                        json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": PAT}}),
                    ),
                ),
                entry(
                    PAT,
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient", "name": [{"family": "Doe"}]})),
                ),
            ],
        );
        let (st, resp) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 200, "{}: {resp}", backend.name);
        assert_eq!(resp["type"], "transaction-response");
        let entries = resp["entry"].as_array().unwrap();
        assert_eq!(entries.len(), 3);
        for e in entries {
            assert_eq!(e["response"]["status"], "201 Created");
            assert_eq!(e["response"]["etag"], "W/\"1\"");
            assert!(e["response"]["lastModified"].is_string());
        }
        let loc = |i: usize| {
            entries[i]["response"]["location"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let pat_ref = loc(2).split("/_history").next().unwrap().to_string();
        let enc_ref = loc(1).split("/_history").next().unwrap().to_string();
        assert!(pat_ref.starts_with("Patient/"));
        let obs = s.raw_get(&format!("/{}", loc(0)), &[]).await.json();
        assert_eq!(obs["subject"]["reference"], pat_ref.as_str());
        assert_eq!(obs["encounter"]["reference"], enc_ref.as_str());
        assert_eq!(obs["performer"][0]["reference"], pat_ref.as_str());
        assert_eq!(
            obs["contained"][0]["target"][0]["reference"],
            pat_ref.as_str()
        );
        assert_eq!(
            obs["contained"][0]["agent"][0]["who"]["reference"],
            enc_ref.as_str()
        );
        let enc = s.raw_get(&format!("/{}", loc(1)), &[]).await.json();
        assert_eq!(enc["subject"]["reference"], pat_ref.as_str());
    }
}

#[tokio::test]
async fn transaction_is_all_or_nothing() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let mut p = json!({"resourceType": "Patient", "id": "keep", "gender": "male"});
        s.raw_json("PUT", "/Patient/keep", &p, &[]).await;
        p["gender"] = json!("female");
        // Entry 2 is invalid: nothing of entries 0, 1 and 3 may be written.
        let b = bundle(
            "transaction",
            vec![
                entry(
                    PAT,
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient"})),
                ),
                entry("Patient/keep", "PUT", "Patient/keep", Some(p.clone())),
                entry(
                    ENC,
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient", "birthDate": "not a date"})),
                ),
                entry("Patient/keep", "DELETE", "Patient/keep", None),
            ],
        );
        let (st, oo) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 400, "{}: {oo}", backend.name);
        assert_outcome(&oo, "value", Some("Bundle.entry[2].resource.birthDate"));
        assert_eq!(
            s.raw_get("/_history", &[]).await.json()["total"],
            1,
            "only the setup write"
        );
        assert_eq!(
            s.raw_get("/Patient/keep", &[]).await.json()["gender"],
            "male"
        );

        // A failure found while running (a stale If-Match on the last entry to run) rolls back
        // the writes already made inside the transaction.
        let b = bundle(
            "transaction",
            vec![
                entry(
                    PAT,
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient"})),
                ),
                entry("Patient/keep", "DELETE", "Patient/keep", None),
                json!({"fullUrl": "Patient/other", "resource": {"resourceType": "Patient", "id": "other"},
                       "request": {"method": "PUT", "url": "Patient/other", "ifMatch": "W/\"4\""}}),
            ],
        );
        let (st, oo) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 412, "{}: {oo}", backend.name);
        assert_outcome(&oo, "conflict", Some("Bundle.entry[2]"));
        assert_eq!(s.raw_get("/_history", &[]).await.json()["total"], 1);
        assert_eq!(
            s.raw_get("/Patient/keep", &[]).await.status,
            200,
            "the delete was rolled back"
        );
    }
}

#[tokio::test]
async fn transaction_processes_delete_post_put_get_in_that_order() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        s.raw_json(
            "PUT",
            "/Patient/a",
            &json!({"resourceType": "Patient", "id": "a", "gender": "male"}),
            &[],
        )
        .await;
        // Listed GET, PUT, POST, DELETE: run DELETE, POST, PUT, GET.
        let b = bundle(
            "transaction",
            vec![
                entry("Patient/b", "GET", "Patient/b", None),
                entry(
                    "Patient/b",
                    "PUT",
                    "Patient/b",
                    Some(json!({"resourceType": "Patient", "id": "b", "gender": "female"})),
                ),
                entry(
                    PAT,
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient"})),
                ),
                entry("Patient/a", "DELETE", "Patient/a", None),
            ],
        );
        let (st, resp) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 200, "{}: {resp}", backend.name);
        let e = resp["entry"].as_array().unwrap();
        assert_eq!(e[3]["response"]["status"], "204 No Content");
        assert_eq!(e[3]["response"]["etag"], "W/\"2\"");
        assert_eq!(e[2]["response"]["status"], "201 Created");
        assert_eq!(e[1]["response"]["status"], "201 Created");
        // The GET, listed first, ran last and saw the PUT.
        assert_eq!(e[0]["response"]["status"], "200 OK");
        assert_eq!(e[0]["resource"]["gender"], "female");
        let h = s.raw_get("/_history", &[]).await.json();
        let methods: Vec<&str> = h["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["request"]["method"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["PUT", "POST", "DELETE", "PUT"], "newest first");
    }
}

#[tokio::test]
async fn transaction_touching_one_resource_twice_fails() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let b = bundle(
            "transaction",
            vec![
                entry("Patient/a", "DELETE", "Patient/a", None),
                entry(
                    "Patient/a",
                    "PUT",
                    "Patient/a",
                    Some(json!({"resourceType": "Patient", "id": "a"})),
                ),
            ],
        );
        let (st, oo) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 400, "{}: {oo}", backend.name);
        assert_outcome(&oo, "invalid", Some("Bundle.entry[1]"));
    }
}

#[tokio::test]
async fn batch_entries_succeed_or_fail_independently() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let b = bundle(
            "batch",
            vec![
                entry(
                    "urn:uuid:1",
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient"})),
                ),
                entry(
                    "urn:uuid:2",
                    "POST",
                    "Patient",
                    Some(json!({"resourceType": "Patient", "gender": 12})),
                ),
                entry("Patient/nope", "GET", "Patient/nope", None),
                entry(
                    "urn:uuid:3",
                    "POST",
                    "Unicorn",
                    Some(json!({"resourceType": "Unicorn"})),
                ),
                entry(
                    "Patient/b",
                    "PUT",
                    "Patient/b",
                    Some(json!({"resourceType": "Patient", "id": "b"})),
                ),
            ],
        );
        let (st, resp) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 200, "{}: {resp}", backend.name);
        assert_eq!(resp["type"], "batch-response");
        let e = resp["entry"].as_array().unwrap();
        assert_eq!(e[0]["response"]["status"], "201 Created");
        assert_eq!(e[1]["response"]["status"], "400 Bad Request");
        assert_eq!(
            e[1]["response"]["outcome"]["resourceType"],
            "OperationOutcome"
        );
        assert_eq!(e[2]["response"]["status"], "404 Not Found");
        assert_eq!(e[3]["response"]["status"], "404 Not Found");
        assert_eq!(e[4]["response"]["status"], "201 Created");
        assert_eq!(s.raw_get("/_history", &[]).await.json()["total"], 2);
    }
}

#[tokio::test]
async fn bad_bundles_are_refused() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let (st, oo) = s
            .raw_json(
                "POST",
                "/",
                &json!({"resourceType": "Bundle", "type": "collection"}),
                &[],
            )
            .await
            .status_json();
        assert_eq!(st, 400);
        assert_outcome(&oo, "invalid", Some("Bundle.type"));
        let (st, _) = s
            .raw_json("POST", "/", &json!({"resourceType": "Patient"}), &[])
            .await
            .status_json();
        assert_eq!(st, 400);
        // A urn:uuid that names no entry cannot be resolved.
        let b = bundle(
            "transaction",
            vec![entry(
                PAT,
                "POST",
                "Observation",
                Some(
                    json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                            "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-00000000dead"}}),
                ),
            )],
        );
        let (st, oo) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 400, "{}: {oo}", backend.name);
        assert_outcome(&oo, "not-found", None);
        // A method the Bundle may not carry.
        let b = bundle("transaction", vec![entry(PAT, "BREW", "Patient", None)]);
        let (st, oo) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 400);
        assert_outcome(&oo, "invalid", Some("Bundle.entry[0].request.method"));
        assert_eq!(s.raw_get("/_history", &[]).await.json()["total"], 0);
    }
}

#[tokio::test]
async fn transaction_response_carries_resources_when_asked() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        let b = bundle(
            "transaction",
            vec![entry(
                PAT,
                "POST",
                "Patient",
                Some(json!({"resourceType": "Patient"})),
            )],
        );
        let resp = s
            .raw_json("POST", "/", &b, &[("prefer", "return=representation")])
            .await
            .json();
        assert_eq!(resp["entry"][0]["resource"]["resourceType"], "Patient");
        assert_eq!(resp["entry"][0]["resource"]["meta"]["versionId"], "1");
    }
}

#[tokio::test]
async fn transaction_patch_entries_carry_fhirpath_or_json_patch() {
    for backend in backends() {
        let s = Server::start(&backend).await;
        s.raw_json(
            "PUT",
            "/Patient/p",
            &json!({"resourceType": "Patient", "id": "p", "gender": "male"}),
            &[],
        )
        .await;
        s.raw_json(
            "PUT",
            "/Patient/q",
            &json!({"resourceType": "Patient", "id": "q", "gender": "male"}),
            &[],
        )
        .await;
        // base64 of [{"op":"replace","path":"/gender","value":"female"}]
        let json_patch = "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9nZW5kZXIiLCJ2YWx1ZSI6ImZlbWFsZSJ9XQ==";
        let b = bundle(
            "transaction",
            vec![
                entry(
                    "Patient/p",
                    "PATCH",
                    "Patient/p",
                    Some(
                        json!({"resourceType": "Binary", "contentType": "application/json-patch+json", "data": json_patch}),
                    ),
                ),
                entry(
                    "Patient/q",
                    "PATCH",
                    "Patient/q",
                    Some(
                        json!({"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
                        {"name": "type", "valueCode": "replace"},
                        {"name": "path", "valueString": "Patient.gender"},
                        {"name": "value", "valueCode": "other"}]}]}),
                    ),
                ),
            ],
        );
        let (st, resp) = s.raw_json("POST", "/", &b, &[]).await.status_json();
        assert_eq!(st, 200, "{}: {resp}", backend.name);
        assert_eq!(resp["entry"][0]["response"]["etag"], "W/\"2\"");
        assert_eq!(
            s.raw_get("/Patient/p", &[]).await.json()["gender"],
            "female"
        );
        assert_eq!(s.raw_get("/Patient/q", &[]).await.json()["gender"], "other");
    }
}
