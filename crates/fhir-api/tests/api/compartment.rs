//! One compartment rule for `patient/` scopes: a request and a bundle entry that do the same
//! thing get the same answer (SMART App Launch 2.0 §scopes; FHIR R4
//! compartmentdefinition-patient).

use axum::http::{Method, StatusCode};
use fhir_api::access::Rights;
use serde_json::{json, Value};

use crate::common::{backends, bundle, caller, entry_status, reader, Server};

fn observation(id: &str, patient: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": "final",
        "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{patient}")}})
}

/// p1 and p2; o1 is p1's, o2 was p2's and is deleted, o3 was p1's and is deleted.
async fn seeded(b: &crate::common::Backend) -> Server {
    let s = Server::start(b).await;
    for p in ["p1", "p2"] {
        s.put(json!({"resourceType": "Patient", "id": p})).await;
    }
    s.put(observation("o1", "p1")).await;
    s.put(observation("o2", "p2")).await;
    s.put(observation("o3", "p1")).await;
    s.delete("/Observation/o2").await;
    s.delete("/Observation/o3").await;
    s
}

// Regression: a patient/ token reading a deleted resource outside its compartment got 404 as
// a request but 410 "was deleted (version n)" as a batch entry, which told it the resource
// had existed.
#[tokio::test]
async fn regression_deleted_resource_outside_the_compartment_is_404_as_request_and_entry() {
    for b in backends() {
        let s = seeded(&b).await;
        let p1 = caller(reader(), &["patient/Observation.read"], Some("p1"));
        let alone = s.get("/Observation/o2", Some(&p1)).await;
        assert_eq!(
            alone.status,
            StatusCode::NOT_FOUND,
            "{}: {}",
            b.name,
            alone.body
        );
        for kind in ["batch", "transaction"] {
            let a = s
                .bundle(&bundle(kind, &[("GET", "Observation/o2", None)]), Some(&p1))
                .await;
            let status = match kind {
                "batch" => entry_status(&a.body["entry"][0]),
                _ => a.status.as_u16(),
            };
            assert_eq!(status, 404, "{} {kind}: {}", b.name, a.body);
            assert!(
                !a.body.to_string().contains("deleted"),
                "{kind}: {}",
                a.body
            );
        }
        // Its own deleted resource is Gone, as a request and as an entry.
        let alone = s.get("/Observation/o3", Some(&p1)).await;
        assert_eq!(alone.status, StatusCode::GONE, "{}", alone.body);
        let a = s
            .bundle(
                &bundle("batch", &[("GET", "Observation/o3", None)]),
                Some(&p1),
            )
            .await;
        assert_eq!(entry_status(&a.body["entry"][0]), 410, "{}", a.body);
        // And what is inside is read.
        let a = s
            .bundle(
                &bundle("batch", &[("GET", "Observation/o1", None)]),
                Some(&p1),
            )
            .await;
        assert_eq!(entry_status(&a.body["entry"][0]), 200, "{}", a.body);
    }
}

// Regression: a PUT onto a deleted id outside the compartment was refused as a request but
// written as a bundle entry, reviving another patient's resource (and its history) under
// this patient.
#[tokio::test]
async fn regression_put_onto_a_deleted_id_outside_the_compartment_is_refused_everywhere() {
    for b in backends() {
        let s = seeded(&b).await;
        let writer = Rights {
            read: true,
            write: true,
            ..Rights::default()
        };
        let p1 = caller(writer, &["patient/Observation.rus"], Some("p1"));
        let mine = observation("o2", "p1");
        let alone = s
            .send(Method::PUT, "/Observation/o2", Some(&mine), Some(&p1), &[])
            .await;
        assert_eq!(
            alone.status,
            StatusCode::NOT_FOUND,
            "{}: {}",
            b.name,
            alone.body
        );
        let a = s
            .bundle(
                &bundle("batch", &[("PUT", "Observation/o2", Some(mine.clone()))]),
                Some(&p1),
            )
            .await;
        assert_eq!(entry_status(&a.body["entry"][0]), 404, "{}", a.body);
        let a = s
            .bundle(
                &bundle(
                    "transaction",
                    &[("PUT", "Observation/o2", Some(mine.clone()))],
                ),
                Some(&p1),
            )
            .await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        // Nothing was written: o2 is still deleted, at its version 2.
        let h = s.get("/Observation/o2/_history", None).await;
        assert_eq!(h.body["total"], 2, "{}", h.body);
        // Its own deleted id may be written again, both ways.
        let again = observation("o3", "p1");
        let alone = s
            .send(Method::PUT, "/Observation/o3", Some(&again), Some(&p1), &[])
            .await;
        assert!(alone.status.is_success(), "{}", alone.body);
        let a = s
            .bundle(
                &bundle("batch", &[("PUT", "Observation/o3", Some(again))]),
                Some(&p1),
            )
            .await;
        assert_eq!(entry_status(&a.body["entry"][0]), 200, "{}", a.body);
    }
}

// A patient-scoped search as a batch entry is narrowed to the compartment exactly as the same
// request alone.
#[tokio::test]
async fn a_patient_scoped_search_entry_is_narrowed_as_the_request_is() {
    for b in backends() {
        let s = seeded(&b).await;
        s.put(observation("o4", "p2")).await;
        let p1 = caller(reader(), &["patient/Observation.rs"], Some("p1"));
        let alone = s.get("/Observation", Some(&p1)).await;
        assert_eq!(alone.status, StatusCode::OK, "{}", alone.body);
        let a = s
            .bundle(&bundle("batch", &[("GET", "Observation", None)]), Some(&p1))
            .await;
        let entry = &a.body["entry"][0];
        assert_eq!(entry_status(entry), 200, "{}", a.body);
        let ids = |v: &Value| -> Vec<String> {
            v["entry"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        };
        assert_eq!(ids(&alone.body), vec!["o1".to_string()]);
        assert_eq!(ids(&entry["resource"]), ids(&alone.body));
        // What the request is refused, the entry is refused.
        let alone = s
            .get("/Observation?_include=Observation:subject", Some(&p1))
            .await;
        assert_eq!(alone.status, StatusCode::FORBIDDEN);
        let a = s
            .bundle(
                &bundle(
                    "batch",
                    &[("GET", "Observation?_include=Observation:subject", None)],
                ),
                Some(&p1),
            )
            .await;
        assert_eq!(entry_status(&a.body["entry"][0]), 403, "{}", a.body);
    }
}
