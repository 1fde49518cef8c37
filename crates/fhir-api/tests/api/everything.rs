//! `Patient/[id]/$everything` (FHIR R4 patient-operation-everything) over the five Synthea
//! patients of `testdata/synthea`, on each backend. Each of those bundles holds one patient's
//! whole record: the patient, its compartment, and the Organizations and Practitioners its
//! resources reference; so `$everything` of that patient must be exactly the resources its
//! bundle loaded, whatever the other four patients' bundles hold.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::common::{assert_outcome, backends, caller, reader, synthea_fixtures, Server};

const BASE: &str = "http://localhost";

/// Every page of `path`, following `next`: the references, and the search modes seen.
async fn all_pages(s: &Server, path: &str) -> (Vec<String>, BTreeMap<String, String>, u64) {
    let mut url = path.to_owned();
    let mut refs = Vec::new();
    let mut modes = BTreeMap::new();
    let mut total = None;
    for _ in 0..1000 {
        let a = s.get(&url, None).await;
        assert_eq!(a.status, StatusCode::OK, "{url}: {}", a.body);
        assert_eq!(a.body["type"], "searchset");
        let t = a.body["total"].as_u64().expect("total");
        assert!(
            total.is_none_or(|x| x == t),
            "the total stays put across pages"
        );
        total = Some(t);
        for e in a.body["entry"].as_array().into_iter().flatten() {
            let r = &e["resource"];
            let reference = format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            );
            assert_eq!(e["fullUrl"], format!("{BASE}/{reference}"));
            modes.insert(
                reference.clone(),
                e["search"]["mode"].as_str().unwrap().to_owned(),
            );
            refs.push(reference);
        }
        let next = a.body["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_owned());
        match next {
            Some(n) => {
                url = n
                    .strip_prefix(BASE)
                    .expect("a link on this server")
                    .to_owned()
            }
            None => return (refs, modes, total.unwrap_or(0)),
        }
    }
    panic!("more than 1000 pages");
}

/// The five bundles loaded: per patient id, the references of everything its bundle wrote
/// (with the stored resources, for their dates).
async fn load(s: &Server) -> Vec<(String, BTreeMap<String, Value>)> {
    let mut out = Vec::new();
    for f in synthea_fixtures() {
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_end(&mut body)
            .unwrap();
        let a = s
            .raw(
                "POST",
                "/",
                &[
                    ("content-type", "application/fhir+json"),
                    ("prefer", "return=representation"),
                ],
                body,
            )
            .await;
        let v = a.json();
        assert_eq!(a.status, StatusCode::OK, "{}: {v}", f.display());
        let mut written = BTreeMap::new();
        let mut patient = None;
        for e in v["entry"].as_array().unwrap() {
            let r = e["resource"].clone();
            let t = r["resourceType"].as_str().unwrap().to_owned();
            let id = r["id"].as_str().unwrap().to_owned();
            if t == "Patient" {
                patient = Some(id.clone());
            }
            written.insert(format!("{t}/{id}"), r);
        }
        out.push((patient.expect("a patient per bundle"), written));
    }
    out
}

#[tokio::test]
async fn everything_is_the_patients_bundle_exactly() {
    for b in backends() {
        let s = Server::start(&b).await;
        let loaded = load(&s).await;
        for (pid, written) in &loaded {
            let expected: BTreeSet<String> = written.keys().cloned().collect();
            let (got, modes, total) =
                all_pages(&s, &format!("/Patient/{pid}/$everything?_count=1000")).await;
            let got_set: BTreeSet<String> = got.iter().cloned().collect();
            assert_eq!(got.len(), got_set.len(), "{}: no resource twice", b.name);
            assert_eq!(got_set, expected, "{}: Patient/{pid}", b.name);
            assert_eq!(total as usize, expected.len());
            assert_eq!(got[0], format!("Patient/{pid}"), "the patient comes first");
            // In the compartment: match; referenced from it: include.
            for (r, mode) in &modes {
                let t = r.split('/').next().unwrap();
                let want = if t == "Patient"
                    || !fhir_search::compartment::params("Patient", t).is_empty()
                {
                    "match"
                } else {
                    "include"
                };
                assert_eq!(mode, want, "{r}");
            }
            assert!(
                modes.values().any(|m| m == "include"),
                "Organizations and Practitioners are referenced"
            );

            // Paged by 7: the same resources, in the same order.
            let (paged, _, _) =
                all_pages(&s, &format!("/Patient/{pid}/$everything?_count=7")).await;
            assert_eq!(paged, got, "{}: pages of 7", b.name);

            // _type: only those types (the patient only when asked for).
            let (typed, _, _) = all_pages(
                &s,
                &format!("/Patient/{pid}/$everything?_type=Observation,Organization&_count=1000"),
            )
            .await;
            let want: BTreeSet<String> = expected
                .iter()
                .filter(|r| r.starts_with("Observation/") || r.starts_with("Organization/"))
                .cloned()
                .collect();
            assert_eq!(typed.into_iter().collect::<BTreeSet<_>>(), want);
        }

        // start/end narrow the dated types by their clinical date; others stay.
        let (pid, written) = &loaded[0];
        let dates: Vec<&str> = written
            .values()
            .filter(|r| r["resourceType"] == "Observation")
            .filter_map(|r| r["effectiveDateTime"].as_str())
            .collect();
        let mut sorted = dates.clone();
        sorted.sort();
        let cut = &sorted[sorted.len() / 2][..10];
        let (late, _, _) = all_pages(
            &s,
            &format!("/Patient/{pid}/$everything?start={cut}&_type=Observation&_count=1000"),
        )
        .await;
        let want = written
            .values()
            .filter(|r| r["resourceType"] == "Observation")
            .filter(|r| {
                r["effectiveDateTime"]
                    .as_str()
                    .is_some_and(|d| d[..10] >= *cut)
            })
            .count();
        assert_eq!(late.len(), want, "{}: start={cut}", b.name);
        assert!(late.len() < dates.len() && !late.is_empty());

        // _since after everything was written: nothing.
        let (since, _, total) = all_pages(
            &s,
            &format!("/Patient/{pid}/$everything?_since=2999-01-01T00:00:00Z"),
        )
        .await;
        assert!(since.is_empty() && total == 0, "{since:?}");

        // POST with a Parameters body is the same as GET.
        let a = s
            .send(
                Method::POST,
                &format!("/Patient/{pid}/$everything"),
                Some(&json!({"resourceType": "Parameters", "parameter": [
                    {"name": "_type", "valueString": "Patient"}]})),
                None,
                &[],
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["total"], 1);

        // Errors: an unknown patient 404, an unknown parameter or a bad date 400, and the
        // type level is not served.
        let a = s.get("/Patient/nobody/$everything", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        let a = s
            .get(&format!("/Patient/{pid}/$everything?bogus=1"), None)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "not-supported", Some("bogus"));
        let a = s
            .get(&format!("/Patient/{pid}/$everything?start=yesterday"), None)
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST);
        assert_outcome(&a.body, "invalid", Some("start"));
        let a = s.get("/Patient/$everything", None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);

        // A patient/ scope sees its own patient's record, and nothing outside its
        // compartment; another patient's is refused.
        let own = caller(reader(), &["patient/*.read"], Some(pid.as_str()));
        let a = s
            .get(
                &format!("/Patient/{pid}/$everything?_count=1000"),
                Some(&own),
            )
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let types: BTreeSet<&str> = a.body["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"]["resourceType"].as_str().unwrap())
            .collect();
        assert!(
            !types.contains("Organization") && !types.contains("Practitioner"),
            "{types:?}"
        );
        let in_compartment = written
            .keys()
            .filter(|r| {
                let t = r.split('/').next().unwrap();
                t == "Patient" || !fhir_search::compartment::params("Patient", t).is_empty()
            })
            .count();
        assert_eq!(a.body["total"], in_compartment);
        let other = &loaded[1].0;
        let a = s
            .get(&format!("/Patient/{other}/$everything"), Some(&own))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
        // A reader without a token's scopes reads everything; no read right is 403.
        let nobody = caller(fhir_api::access::Rights::default(), &[], None);
        let a = s
            .get(&format!("/Patient/{pid}/$everything"), Some(&nobody))
            .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
}

/// With a memory budget of a few resources, `$everything` keeps keys and reads each page's
/// resources again: still exactly the patient's bundle, in the same order page for page.
#[tokio::test]
async fn a_record_past_the_memory_budget_is_the_same_record() {
    for b in backends() {
        let tight = Server::start_with(
            &b,
            fhir_api::ApiConfig {
                everything_memory_bytes: 4096,
                ..fhir_api::ApiConfig::default()
            },
        )
        .await;
        for (pid, written) in load(&tight).await.into_iter().take(2) {
            let (whole, _, total) =
                all_pages(&tight, &format!("/Patient/{pid}/$everything?_count=1000")).await;
            let expected: BTreeSet<String> = written.keys().cloned().collect();
            assert_eq!(
                whole.iter().cloned().collect::<BTreeSet<_>>(),
                expected,
                "{}",
                b.name
            );
            assert_eq!(total as usize, expected.len());
            let (paged, _, _) =
                all_pages(&tight, &format!("/Patient/{pid}/$everything?_count=9")).await;
            assert_eq!(paged, whole, "{}: pages of 9", b.name);
        }
    }
}
