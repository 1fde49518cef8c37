//! Search (FHIR R4 search.html) over the five Synthea patients of `testdata/synthea`, on each
//! backend. Expectations are computed in the test from the JSON that was loaded, never copied
//! from the server. The searches over small hand-worked fixtures are in search.rs.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use serde_json::Value;

use crate::common::{assert_outcome, backends, synthea_fixtures, Backend, Raw, Server};

/// The base URL in process (no Host header).
const BASE: &str = "http://localhost";

/// `GET` of a path relative to the base (`Patient?…`), or of a link this server gave.
async fn get(s: &Server, url: &str) -> Raw {
    let path = match url.strip_prefix(BASE) {
        Some(p) => p.to_string(),
        None => {
            assert!(!url.starts_with("http"), "a link on this server: {url}");
            format!("/{url}")
        }
    };
    s.raw_get(&path, &[]).await
}

/// The Synthea sample, loaded: every resource as stored (references rewritten to `Type/id`).
struct Loaded {
    s: Server,
    resources: Vec<Value>,
}

async fn load_sample(backend: &Backend) -> Loaded {
    let s = Server::start(backend).await;
    let mut resources = Vec::new();
    for f in synthea_fixtures() {
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_end(&mut body)
            .unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let r = s
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
        let (status, v) = r.status_json();
        assert_eq!(status, 200, "{}: {}: {v}", backend.name, f.display());
        let n = sent["entry"].as_array().unwrap().len();
        let entries = v["entry"].as_array().unwrap();
        assert_eq!(entries.len(), n);
        resources.extend(entries.iter().map(|e| e["resource"].clone()));
    }
    Loaded { s, resources }
}

impl Loaded {
    fn of_type<'a>(&'a self, t: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.resources
            .iter()
            .filter(move |r| r["resourceType"] == t)
    }
}

/// Every page of a search, following `next` links: the ids of the matches.
async fn all_ids(s: &Server, query: &str) -> Vec<String> {
    let mut url = query.to_string();
    let mut ids = Vec::new();
    loop {
        let (status, b) = get(s, &url).await.status_json();
        assert_eq!(status, 200, "{}: {query}: {b}", s.backend);
        assert_eq!(b["type"], "searchset");
        for e in b["entry"].as_array().into_iter().flatten() {
            if e["search"]["mode"] == "match" {
                ids.push(e["resource"]["id"].as_str().unwrap().to_string());
            }
        }
        match b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
        {
            Some(l) => url = l["url"].as_str().unwrap().to_string(),
            None => break,
        }
    }
    ids
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn ids_of<'a>(it: impl Iterator<Item = &'a Value>) -> Vec<String> {
    sorted(it.map(|r| r["id"].as_str().unwrap().to_string()).collect())
}

async fn count(s: &Server, query: &str) -> u64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let b = get(s, &format!("{query}{sep}_summary=count")).await.json();
    assert!(b.get("entry").is_none(), "{b}");
    b["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: {query}: {b}", s.backend))
}

fn has_code(r: &Value, field: &str, system: &str, code: &str) -> bool {
    r[field]["coding"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["system"] == system && c["code"] == code)
}

fn reference_id(r: &Value, field: &str) -> String {
    r[field]["reference"]
        .as_str()
        .unwrap_or_default()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn synthea_sample_searches() {
    for b in backends() {
        let l = load_sample(&b).await;
        let s = &l.s;
        let loinc = "http://loinc.org";

        // Token: system|code, code alone, |code, system|.
        for code in ["8302-2", "29463-7", "72514-3", "6690-2"] {
            let expected = ids_of(
                l.of_type("Observation")
                    .filter(|o| has_code(o, "code", loinc, code)),
            );
            assert!(!expected.is_empty(), "{code} is in the sample");
            assert_eq!(
                sorted(all_ids(s, &format!("Observation?code={loinc}|{code}")).await),
                expected
            );
            assert_eq!(
                sorted(all_ids(s, &format!("Observation?code={code}")).await),
                expected
            );
            assert_eq!(
                count(s, &format!("Observation?code={loinc}|{code}")).await,
                expected.len() as u64
            );
            assert!(all_ids(s, &format!("Observation?code=|{code}"))
                .await
                .is_empty());
        }
        let all_obs = l.of_type("Observation").count() as u64;
        assert_eq!(
            count(s, &format!("Observation?code={loinc}|")).await,
            all_obs
        );
        assert_eq!(count(s, "Observation").await, all_obs);

        // :not, :text and :missing.
        let not_height = l
            .of_type("Observation")
            .filter(|o| !has_code(o, "code", loinc, "8302-2"))
            .count() as u64;
        assert_eq!(
            count(s, "Observation?code:not=http://loinc.org|8302-2").await,
            not_height
        );
        let text_height = l
            .of_type("Observation")
            .filter(|o| {
                o["code"]["text"]
                    .as_str()
                    .is_some_and(|t| t.to_lowercase().starts_with("body height"))
            })
            .count() as u64;
        assert_eq!(
            count(s, "Observation?code:text=Body%20Height").await,
            text_height
        );
        let without_value = l
            .of_type("Observation")
            .filter(|o| o.get("valueQuantity").is_none())
            .count() as u64;
        assert_eq!(
            count(s, "Observation?value-quantity:missing=true").await,
            without_value
        );
        assert_eq!(
            count(s, "Observation?value-quantity:missing=false").await,
            all_obs - without_value
        );

        // :of-type: the medical record number of each patient, by identifier type.
        let v2 = "http://terminology.hl7.org/CodeSystem/v2-0203";
        for p in l.of_type("Patient") {
            let mr = p["identifier"]
                .as_array()
                .unwrap()
                .iter()
                .find(|i| has_code(i, "type", v2, "MR"))
                .expect("a medical record number");
            let value = mr["value"].as_str().unwrap();
            assert_eq!(
                all_ids(s, &format!("Patient?identifier:of-type={v2}|MR|{value}")).await,
                [p["id"].as_str().unwrap()]
            );
            assert!(
                all_ids(s, &format!("Patient?identifier:of-type={v2}|SS|{value}"))
                    .await
                    .is_empty()
            );
        }

        // Reference: Type/id, bare id, :Type, absolute URL of our own base.
        for p in l.of_type("Patient") {
            let pid = p["id"].as_str().unwrap();
            let expected = ids_of(
                l.of_type("Encounter")
                    .filter(|e| reference_id(e, "subject") == pid),
            );
            assert_eq!(
                sorted(all_ids(s, &format!("Encounter?subject=Patient/{pid}")).await),
                expected
            );
            assert_eq!(
                sorted(all_ids(s, &format!("Encounter?patient={pid}")).await),
                expected
            );
            assert_eq!(
                sorted(all_ids(s, &format!("Encounter?subject:Patient={pid}")).await),
                expected
            );
            assert_eq!(
                sorted(all_ids(s, &format!("Encounter?subject={}/Patient/{pid}", BASE)).await),
                expected
            );
            // Compartment search gives the same.
            assert_eq!(
                sorted(all_ids(s, &format!("Patient/{pid}/Encounter")).await),
                expected
            );
        }

        // String: default prefix, case- and accent-insensitive; :exact; :contains.
        let families: Vec<String> = l
            .of_type("Patient")
            .map(|p| p["name"][0]["family"].as_str().unwrap().to_string())
            .collect();
        for fam in &families {
            let prefix = fam[..3].to_uppercase();
            let expected = ids_of(l.of_type("Patient").filter(|p| {
                p["name"].as_array().unwrap().iter().any(|n| {
                    let mut parts: Vec<&str> = n["given"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    parts.extend(n["family"].as_str());
                    parts.extend(
                        n["prefix"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    );
                    parts.iter().any(|x| x.to_uppercase().starts_with(&prefix))
                })
            }));
            assert_eq!(
                sorted(all_ids(s, &format!("Patient?name={prefix}")).await),
                expected,
                "{prefix}"
            );
            assert_eq!(
                all_ids(s, &format!("Patient?family:exact={fam}"))
                    .await
                    .len(),
                1
            );
            assert!(
                all_ids(s, &format!("Patient?family:exact={}", fam.to_lowercase()))
                    .await
                    .is_empty()
            );
            let middle = &fam[1..fam.len() - 1];
            assert!(!all_ids(s, &format!("Patient?family:contains={middle}"))
                .await
                .is_empty());
        }

        // Date with prefixes: birthdate before and after a year, computed from the data.
        let born_before_1960 = l
            .of_type("Patient")
            .filter(|p| p["birthDate"].as_str().unwrap() < "1960")
            .count() as u64;
        assert_eq!(count(s, "Patient?birthdate=lt1960").await, born_before_1960);
        assert_eq!(
            count(s, "Patient?birthdate=ge1960").await,
            l.of_type("Patient").count() as u64 - born_before_1960
        );

        // Quantity: body heights over 170 cm, with and without units.
        let tall = l
            .of_type("Observation")
            .filter(|o| has_code(o, "code", loinc, "8302-2"))
            .filter(|o| o["valueQuantity"]["value"].as_f64().unwrap() > 170.0)
            .count() as u64;
        assert_eq!(
            count(s, "Observation?code=8302-2&value-quantity=gt170").await,
            tall
        );
        assert_eq!(
            count(
                s,
                "Observation?code=8302-2&value-quantity=gt170|http://unitsofmeasure.org|cm"
            )
            .await,
            tall
        );
        assert_eq!(
            count(s, "Observation?code=8302-2&value-quantity=gt170||cm").await,
            tall
        );
        assert_eq!(
            count(s, "Observation?code=8302-2&value-quantity=gt170||kg").await,
            0
        );
        // Composite: the same through code-value-quantity.
        assert_eq!(
            count(
                s,
                "Observation?code-value-quantity=http://loinc.org|8302-2$gt170"
            )
            .await,
            tall
        );

        // Composite over Observation.component (FHIR R4 §3.1.1.4.8): code and value must match
        // in the same component. Blood pressures whose diastolic (8462-4) is over 80, counted
        // here component by component; counted resource by resource (the diastolic code anywhere,
        // a value over 80 anywhere — the systolic is nearly always over 80) the answer is larger,
        // which is what a per-resource match would wrongly give.
        let components = |o: &Value| -> Vec<(String, f64)> {
            o["component"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    let code = c["code"]["coding"][0]["code"].as_str()?.to_string();
                    Some((code, c["valueQuantity"]["value"].as_f64()?))
                })
                .collect()
        };
        let per_component = ids_of(l.of_type("Observation").filter(|o| {
            components(o)
                .iter()
                .any(|(c, v)| c == "8462-4" && *v > 80.0)
        }));
        let per_resource = l
            .of_type("Observation")
            .filter(|o| {
                let cs = components(o);
                cs.iter().any(|(c, _)| c == "8462-4") && cs.iter().any(|(_, v)| *v > 80.0)
            })
            .count();
        assert!(!per_component.is_empty());
        assert!(
            per_resource > per_component.len(),
            "the sample tells the two apart"
        );
        assert_eq!(
        sorted(all_ids(
            s,
            "Observation?component-code-value-quantity=http://loinc.org|8462-4$gt80&_count=500"
        ).await),
        per_component
    );
        // combo-: the same tuples, and the Observation's own code and value as one more.
        assert_eq!(
            sorted(
                all_ids(
                    s,
                    "Observation?combo-code-value-quantity=http://loinc.org|8462-4$gt80&_count=500"
                )
                .await
            ),
            per_component
        );
        assert_eq!(
            count(
                s,
                "Observation?combo-code-value-quantity=http://loinc.org|8302-2$gt170"
            )
            .await,
            tall
        );

        // Token subsumption in an R4 code system's hierarchy (FHIR R4 §3.1.1.4.4 :below/:above):
        // condition-clinical has inactive above remission and resolved, active above recurrence
        // and relapse. Counted from the sample's clinicalStatus codes.
        let cc = "http://terminology.hl7.org/CodeSystem/condition-clinical";
        let with_status = |codes: &[&str]| {
            ids_of(l.of_type("Condition").filter(|c| {
                c["clinicalStatus"]["coding"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|x| x["system"] == cc && codes.contains(&x["code"].as_str().unwrap_or("")))
            }))
        };
        let inactive = with_status(&["inactive", "remission", "resolved"]);
        assert!(!inactive.is_empty());
        assert_eq!(
            sorted(
                all_ids(
                    s,
                    &format!("Condition?clinical-status:below={cc}|inactive&_count=500")
                )
                .await
            ),
            inactive
        );
        assert_eq!(
            sorted(
                all_ids(
                    s,
                    &format!("Condition?clinical-status:above={cc}|resolved&_count=500")
                )
                .await
            ),
            with_status(&["resolved", "inactive"])
        );
        assert_eq!(
            sorted(
                all_ids(
                    s,
                    &format!("Condition?clinical-status:below={cc}|active&_count=500")
                )
                .await
            ),
            with_status(&["active", "recurrence", "relapse"])
        );
        for bad in [
            "Condition?code:below=http://snomed.info/sct|44054006".to_string(),
            format!("Condition?clinical-status:below={cc}|no-such-code"),
            "Condition?clinical-status:below=inactive".to_string(),
        ] {
            let (st, v) = get(s, &bad).await.status_json();
            assert_eq!(st, 400, "{}: {bad}: {v}", b.name);
            let key = bad.split(['?', '=']).nth(1).unwrap();
            assert_outcome(&v, "invalid", Some(key));
        }

        // Chaining, one and two levels.
        let patient_of_family: HashMap<String, String> = l
            .of_type("Patient")
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_string(),
                    p["name"][0]["family"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let fam = &families[0];
        let expected = ids_of(
            l.of_type("Observation")
                .filter(|o| patient_of_family.get(&reference_id(o, "subject")) == Some(fam)),
        );
        assert_eq!(
            sorted(all_ids(s, &format!("Observation?subject:Patient.family={fam}")).await),
            expected
        );
        let encounter_patient: HashMap<String, String> = l
            .of_type("Encounter")
            .map(|e| {
                (
                    e["id"].as_str().unwrap().to_string(),
                    reference_id(e, "subject"),
                )
            })
            .collect();
        let expected = ids_of(l.of_type("Observation").filter(|o| {
            encounter_patient
                .get(&reference_id(o, "encounter"))
                .and_then(|p| patient_of_family.get(p))
                == Some(fam)
        }));
        assert!(!expected.is_empty());
        assert_eq!(
            sorted(all_ids(s, &format!("Observation?encounter.patient.family={fam}")).await),
            expected
        );

        // _has, one and two levels: patients with a body height; patients with an encounter that
        // has a body height observation.
        let with_height: HashSet<String> = l
            .of_type("Observation")
            .filter(|o| has_code(o, "code", loinc, "8302-2"))
            .map(|o| reference_id(o, "subject"))
            .collect();
        assert_eq!(
            sorted(all_ids(s, "Patient?_has:Observation:patient:code=8302-2").await),
            sorted(with_height.into_iter().collect())
        );
        let encounters_with_height: HashSet<String> = l
            .of_type("Observation")
            .filter(|o| has_code(o, "code", loinc, "8302-2"))
            .map(|o| reference_id(o, "encounter"))
            .collect();
        let expected: HashSet<String> = encounters_with_height
            .iter()
            .filter_map(|e| encounter_patient.get(e).cloned())
            .collect();
        assert_eq!(
            sorted(
                all_ids(
                    s,
                    "Patient?_has:Encounter:patient:_has:Observation:encounter:code=8302-2"
                )
                .await
            ),
            sorted(expected.into_iter().collect())
        );

        // _include, _include:iterate and _revinclude.
        let obs = l
            .of_type("Observation")
            .find(|o| o.get("encounter").is_some())
            .unwrap();
        let oid = obs["id"].as_str().unwrap();
        let enc = reference_id(obs, "encounter");
        let pat = reference_id(obs, "subject");
        let b = get(s, &format!(
            "Observation?_id={oid}&_include=Observation:encounter&_include:iterate=Encounter:patient"
        )).await.json();
        let included: HashSet<String> = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .map(|e| {
                format!(
                    "{}/{}",
                    e["resource"]["resourceType"].as_str().unwrap(),
                    e["resource"]["id"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            included,
            HashSet::from([format!("Encounter/{enc}"), format!("Patient/{pat}")]),
            "{b}"
        );
        // Without :iterate, Encounter:patient applies to the matches only (Observations): no patient.
        let b = get(
            s,
            &format!(
                "Observation?_id={oid}&_include=Observation:encounter&_include=Encounter:patient"
            ),
        )
        .await
        .json();
        assert_eq!(b["entry"].as_array().unwrap().len(), 2, "{b}");
        let b = get(
            s,
            &format!("Encounter?_id={enc}&_revinclude=Observation:encounter"),
        )
        .await
        .json();
        let expected = l
            .of_type("Observation")
            .filter(|o| reference_id(o, "encounter") == enc)
            .count();
        let revincluded = b["entry"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["search"]["mode"] == "include")
            .count();
        assert_eq!(revincluded, expected);

        // _sort: birthdate ascending and descending.
        let mut by_birth: Vec<(String, String)> = l
            .of_type("Patient")
            .map(|p| {
                (
                    p["birthDate"].as_str().unwrap().to_string(),
                    p["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        by_birth.sort();
        let asc: Vec<String> = by_birth.iter().map(|(_, id)| id.clone()).collect();
        assert_eq!(all_ids(s, "Patient?_sort=birthdate&_count=2").await, asc);
        let mut desc = asc.clone();
        desc.reverse();
        assert_eq!(all_ids(s, "Patient?_sort=-birthdate").await, desc);

        // _total=none leaves the total out; _elements narrows.
        let b = get(s, "Observation?_total=none&_count=1").await.json();
        assert!(b.get("total").is_none());
        let b = get(s, "Patient?_elements=gender&_count=1").await.json();
        let p = &b["entry"][0]["resource"];
        assert!(p.get("gender").is_some() && p.get("name").is_none(), "{p}");

        // POST _search with a form body equals GET.
        let r = s
            .raw(
                "POST",
                "/Observation/_search",
                &[("content-type", "application/x-www-form-urlencoded")],
                "code=8302-2&_summary=count",
            )
            .await;
        assert_eq!(r.json()["total"], count(s, "Observation?code=8302-2").await);
    }
}
