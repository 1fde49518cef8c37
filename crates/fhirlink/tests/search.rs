//! Search (FHIR R4 search.html) against the real binary. Expectations are computed in the test
//! from the JSON that was loaded (the five Synthea patients of `testdata/synthea`) or from small
//! fixtures whose answers are worked out by hand in the comments, never copied from the server.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Read;

use common::{json, status_json, synthea_fixtures, Server};
use serde_json::{json, Value};

/// The Synthea sample, loaded: every resource as stored (references rewritten to `Type/id`).
struct Loaded {
    s: Server,
    resources: Vec<Value>,
}

fn load_sample() -> Loaded {
    let s = Server::start();
    let mut resources = Vec::new();
    for f in synthea_fixtures() {
        let mut body = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).unwrap())
            .read_to_end(&mut body)
            .unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        let r = s
            .request("POST", "")
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=representation")
            .body(body)
            .send()
            .unwrap();
        let (status, v) = status_json(r);
        assert_eq!(status, 200, "{}: {v}", f.display());
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
fn all_ids(s: &Server, query: &str) -> Vec<String> {
    let mut url = s.url(query);
    let mut ids = Vec::new();
    loop {
        let r = reqwest::blocking::get(&url).unwrap();
        let (status, b) = status_json(r);
        assert_eq!(status, 200, "{query}: {b}");
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

fn count(s: &Server, query: &str) -> u64 {
    let sep = if query.contains('?') { '&' } else { '?' };
    let b = json(
        s.get(&format!("{query}{sep}_summary=count"))
            .send()
            .unwrap(),
    );
    assert!(b.get("entry").is_none(), "{b}");
    b["total"]
        .as_u64()
        .unwrap_or_else(|| panic!("{query}: {b}"))
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

#[test]
fn synthea_sample_searches() {
    let l = load_sample();
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
            sorted(all_ids(s, &format!("Observation?code={loinc}|{code}"))),
            expected
        );
        assert_eq!(
            sorted(all_ids(s, &format!("Observation?code={code}"))),
            expected
        );
        assert_eq!(
            count(s, &format!("Observation?code={loinc}|{code}")),
            expected.len() as u64
        );
        assert!(all_ids(s, &format!("Observation?code=|{code}")).is_empty());
    }
    let all_obs = l.of_type("Observation").count() as u64;
    assert_eq!(count(s, &format!("Observation?code={loinc}|")), all_obs);
    assert_eq!(count(s, "Observation"), all_obs);

    // :not, :text and :missing.
    let not_height = l
        .of_type("Observation")
        .filter(|o| !has_code(o, "code", loinc, "8302-2"))
        .count() as u64;
    assert_eq!(
        count(s, "Observation?code:not=http://loinc.org|8302-2"),
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
    assert_eq!(count(s, "Observation?code:text=Body%20Height"), text_height);
    let without_value = l
        .of_type("Observation")
        .filter(|o| o.get("valueQuantity").is_none())
        .count() as u64;
    assert_eq!(
        count(s, "Observation?value-quantity:missing=true"),
        without_value
    );
    assert_eq!(
        count(s, "Observation?value-quantity:missing=false"),
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
            all_ids(s, &format!("Patient?identifier:of-type={v2}|MR|{value}")),
            [p["id"].as_str().unwrap()]
        );
        assert!(all_ids(s, &format!("Patient?identifier:of-type={v2}|SS|{value}")).is_empty());
    }

    // Reference: Type/id, bare id, :Type, absolute URL of our own base.
    for p in l.of_type("Patient") {
        let pid = p["id"].as_str().unwrap();
        let expected = ids_of(
            l.of_type("Encounter")
                .filter(|e| reference_id(e, "subject") == pid),
        );
        assert_eq!(
            sorted(all_ids(s, &format!("Encounter?subject=Patient/{pid}"))),
            expected
        );
        assert_eq!(
            sorted(all_ids(s, &format!("Encounter?patient={pid}"))),
            expected
        );
        assert_eq!(
            sorted(all_ids(s, &format!("Encounter?subject:Patient={pid}"))),
            expected
        );
        assert_eq!(
            sorted(all_ids(
                s,
                &format!("Encounter?subject={}/Patient/{pid}", s.base)
            )),
            expected
        );
        // Compartment search gives the same.
        assert_eq!(
            sorted(all_ids(s, &format!("Patient/{pid}/Encounter"))),
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
            sorted(all_ids(s, &format!("Patient?name={prefix}"))),
            expected,
            "{prefix}"
        );
        assert_eq!(all_ids(s, &format!("Patient?family:exact={fam}")).len(), 1);
        assert!(all_ids(s, &format!("Patient?family:exact={}", fam.to_lowercase())).is_empty());
        let middle = &fam[1..fam.len() - 1];
        assert!(!all_ids(s, &format!("Patient?family:contains={middle}")).is_empty());
    }

    // Date with prefixes: birthdate before and after a year, computed from the data.
    let born_before_1960 = l
        .of_type("Patient")
        .filter(|p| p["birthDate"].as_str().unwrap() < "1960")
        .count() as u64;
    assert_eq!(count(s, "Patient?birthdate=lt1960"), born_before_1960);
    assert_eq!(
        count(s, "Patient?birthdate=ge1960"),
        l.of_type("Patient").count() as u64 - born_before_1960
    );

    // Quantity: body heights over 170 cm, with and without units.
    let tall = l
        .of_type("Observation")
        .filter(|o| has_code(o, "code", loinc, "8302-2"))
        .filter(|o| o["valueQuantity"]["value"].as_f64().unwrap() > 170.0)
        .count() as u64;
    assert_eq!(
        count(s, "Observation?code=8302-2&value-quantity=gt170"),
        tall
    );
    assert_eq!(
        count(
            s,
            "Observation?code=8302-2&value-quantity=gt170|http://unitsofmeasure.org|cm"
        ),
        tall
    );
    assert_eq!(
        count(s, "Observation?code=8302-2&value-quantity=gt170||cm"),
        tall
    );
    assert_eq!(
        count(s, "Observation?code=8302-2&value-quantity=gt170||kg"),
        0
    );
    // Composite: the same through code-value-quantity.
    assert_eq!(
        count(
            s,
            "Observation?code-value-quantity=http://loinc.org|8302-2$gt170"
        ),
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
        )),
        per_component
    );
    // combo-: the same tuples, and the Observation's own code and value as one more.
    assert_eq!(
        sorted(all_ids(
            s,
            "Observation?combo-code-value-quantity=http://loinc.org|8462-4$gt80&_count=500"
        )),
        per_component
    );
    assert_eq!(
        count(
            s,
            "Observation?combo-code-value-quantity=http://loinc.org|8302-2$gt170"
        ),
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
        sorted(all_ids(
            s,
            &format!("Condition?clinical-status:below={cc}|inactive&_count=500")
        )),
        inactive
    );
    assert_eq!(
        sorted(all_ids(
            s,
            &format!("Condition?clinical-status:above={cc}|resolved&_count=500")
        )),
        with_status(&["resolved", "inactive"])
    );
    assert_eq!(
        sorted(all_ids(
            s,
            &format!("Condition?clinical-status:below={cc}|active&_count=500")
        )),
        with_status(&["active", "recurrence", "relapse"])
    );
    for bad in [
        "Condition?code:below=http://snomed.info/sct|44054006".to_string(),
        format!("Condition?clinical-status:below={cc}|no-such-code"),
        "Condition?clinical-status:below=inactive".to_string(),
    ] {
        let (st, v) = status_json(s.get(&bad).send().unwrap());
        assert_eq!(st, 400, "{bad}: {v}");
        let key = bad.split(['?', '=']).nth(1).unwrap();
        common::assert_outcome(&v, "invalid", Some(key));
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
        sorted(all_ids(
            s,
            &format!("Observation?subject:Patient.family={fam}")
        )),
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
        sorted(all_ids(
            s,
            &format!("Observation?encounter.patient.family={fam}")
        )),
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
        sorted(all_ids(s, "Patient?_has:Observation:patient:code=8302-2")),
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
        sorted(all_ids(
            s,
            "Patient?_has:Encounter:patient:_has:Observation:encounter:code=8302-2"
        )),
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
    let b = json(
        s.get(&format!(
            "Observation?_id={oid}&_include=Observation:encounter&_include:iterate=Encounter:patient"
        ))
        .send()
        .unwrap(),
    );
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
    let b = json(
        s.get(&format!(
            "Observation?_id={oid}&_include=Observation:encounter&_include=Encounter:patient"
        ))
        .send()
        .unwrap(),
    );
    assert_eq!(b["entry"].as_array().unwrap().len(), 2, "{b}");
    let b = json(
        s.get(&format!(
            "Encounter?_id={enc}&_revinclude=Observation:encounter"
        ))
        .send()
        .unwrap(),
    );
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
    assert_eq!(all_ids(s, "Patient?_sort=birthdate&_count=2"), asc);
    let mut desc = asc.clone();
    desc.reverse();
    assert_eq!(all_ids(s, "Patient?_sort=-birthdate"), desc);

    // _total=none leaves the total out; _elements narrows.
    let b = json(s.get("Observation?_total=none&_count=1").send().unwrap());
    assert!(b.get("total").is_none());
    let b = json(s.get("Patient?_elements=gender&_count=1").send().unwrap());
    let p = &b["entry"][0]["resource"];
    assert!(p.get("gender").is_some() && p.get("name").is_none(), "{p}");

    // POST _search with a form body equals GET.
    let r = reqwest::blocking::Client::new()
        .post(s.url("Observation/_search"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=8302-2&_summary=count")
        .send()
        .unwrap();
    assert_eq!(json(r)["total"], count(s, "Observation?code=8302-2"));
}

/// Dates at every precision (FHIR R4 §3.1.1.4.3), worked out by hand:
/// a: 2012-12-31T23:59:59Z, b: 2013-01-14T09:59:59Z, c: 2013-01-14T10:00:30Z,
/// d: 2013-01-15 (the whole day), e: 2013-06 (the whole month), f: 2014-01-01T00:00:00Z.
#[test]
fn date_precision_edges_and_prefixes() {
    let s = Server::start();
    let mut ids = HashMap::new();
    for (k, when) in [
        ("a", "2012-12-31T23:59:59Z"),
        ("b", "2013-01-14T09:59:59Z"),
        ("c", "2013-01-14T10:00:30Z"),
        ("d", "2013-01-15"),
        ("e", "2013-06"),
        ("f", "2014-01-01T00:00:00Z"),
    ] {
        let v = s.create(&json!({"resourceType": "Observation", "status": "final",
            "code": {"text": k}, "effectiveDateTime": when}));
        ids.insert(v["id"].as_str().unwrap().to_string(), k);
    }
    let q = |query: &str| -> String {
        let mut ks: Vec<&str> = all_ids(&s, &format!("Observation?date={query}"))
            .iter()
            .map(|id| ids[id])
            .collect();
        ks.sort();
        ks.concat()
    };
    assert_eq!(q("2013"), "bcde");
    assert_eq!(q("2013-01"), "bcd");
    assert_eq!(q("2013-01-14"), "bc");
    assert_eq!(q("2013-01-14T10:00"), "c");
    assert_eq!(q("2013-01-14T10:00:30Z"), "c");
    assert_eq!(q("ne2013"), "af");
    assert_eq!(q("gt2013-01-14T10:00"), "def");
    assert_eq!(q("ge2013-01-14T10:00"), "cdef");
    assert_eq!(q("lt2013-01-14T10:00"), "ab");
    assert_eq!(q("le2013-01-14T10:00"), "abc");
    assert_eq!(q("sa2013-01-14"), "def");
    assert_eq!(q("eb2013"), "a");
    assert_eq!(q("ge2013&date=lt2014"), "bcde");
    assert_eq!(q("2012,2014"), "af");
    // The +02:00 offset makes 12:00:30 local the same instant as c.
    assert_eq!(q("2013-01-14T12:00:30%2B02:00"), "c");

    // Malformed dates and prefixes are a 400 naming the parameter.
    for bad in ["2013-13", "xx2013", "2013-01-14T25:00", "yesterday"] {
        let (status, v) = status_json(s.get(&format!("Observation?date={bad}")).send().unwrap());
        assert_eq!(status, 400, "{bad}: {v}");
        common::assert_outcome(&v, "invalid", Some("date"));
    }
}

/// Numbers and quantities carry the precision of the literal (FHIR R4 §3.1.1.4.2):
/// `100` is [99.5, 100.5), `100.0` is [99.95, 100.05), `1e2` is [50, 150).
#[test]
fn quantity_precision_and_prefixes() {
    let s = Server::start();
    let mut ids = HashMap::new();
    for (k, v) in [
        ("a", 99.4),
        ("b", 99.97),
        ("c", 100.0),
        ("d", 100.4),
        ("e", 100.6),
        ("f", 140.0),
    ] {
        let r = s.create(&json!({"resourceType": "Observation", "status": "final", "code": {"text": k},
            "valueQuantity": {"value": v, "unit": "mg", "system": "http://unitsofmeasure.org", "code": "mg"}}));
        ids.insert(r["id"].as_str().unwrap().to_string(), k);
    }
    let q = |query: &str| -> String {
        let mut ks: Vec<&str> = all_ids(&s, &format!("Observation?value-quantity={query}"))
            .iter()
            .map(|id| ids[id])
            .collect();
        ks.sort();
        ks.concat()
    };
    assert_eq!(q("100"), "bcd");
    assert_eq!(q("100.0"), "bc");
    assert_eq!(q("100.00"), "c");
    assert_eq!(q("1e2"), "abcdef");
    assert_eq!(q("ne100"), "aef");
    assert_eq!(q("gt100"), "def");
    assert_eq!(q("ge100"), "cdef");
    assert_eq!(q("lt100"), "ab");
    assert_eq!(q("le100"), "abc");
    assert_eq!(q("ap100"), "abcde");
    assert_eq!(q("100|http://unitsofmeasure.org|mg"), "bcd");
    assert_eq!(q("100||mg"), "bcd");
    assert_eq!(q("100|http://unitsofmeasure.org|g"), "");
    let (status, v) = status_json(s.get("Observation?value-quantity=abc").send().unwrap());
    assert_eq!(status, 400);
    common::assert_outcome(&v, "invalid", Some("value-quantity"));
}

/// uri :below and :above, token of identifiers, reference :identifier.
#[test]
fn uri_identifier_and_special_parameters() {
    let s = Server::start();
    let vs = s.create(&json!({"resourceType": "ValueSet", "status": "active",
        "url": "http://example.org/fhir/ValueSet/colours"}));
    s.create(&json!({"resourceType": "ValueSet", "status": "active",
        "url": "http://example.org/other/ValueSet/sizes"}));
    let vid = vs["id"].as_str().unwrap().to_string();
    assert_eq!(
        all_ids(&s, "ValueSet?url=http://example.org/fhir/ValueSet/colours"),
        [vid.as_str()]
    );
    assert_eq!(
        all_ids(&s, "ValueSet?url:below=http://example.org/fhir"),
        [vid.as_str()]
    );
    assert_eq!(
        all_ids(&s, "ValueSet?url:below=http://example.org").len(),
        2
    );
    assert_eq!(
        all_ids(
            &s,
            "ValueSet?url:above=http://example.org/fhir/ValueSet/colours/extra"
        ),
        [vid]
    );

    let p = s.create(&json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": "12\\,34"}],
        "meta": {"tag": [{"system": "urn:t", "code": "vip"}], "profile": ["http://example.org/p"]}}));
    let pid = p["id"].as_str().unwrap().to_string();
    // `\,` escapes a comma inside a value.
    assert_eq!(
        all_ids(&s, "Patient?identifier=urn:mrn|12%5C%5C%5C,34"),
        [pid.as_str()]
    );
    assert_eq!(all_ids(&s, "Patient?_tag=urn:t|vip"), [pid.as_str()]);
    assert_eq!(
        all_ids(&s, "Patient?_profile=http://example.org/p"),
        [pid.as_str()]
    );
    assert_eq!(all_ids(&s, &format!("Patient?_id={pid}")), [pid.as_str()]);
    let b = json(
        s.get("Patient?_lastUpdated=gt2000-01-01&_summary=count")
            .send()
            .unwrap(),
    );
    assert_eq!(b["total"], 1);
    let o = s.create(
        &json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"identifier": {"system": "urn:mrn", "value": "77"}}}),
    );
    assert_eq!(
        all_ids(&s, "Observation?subject:identifier=urn:mrn|77"),
        [o["id"].as_str().unwrap().to_string()]
    );
    // System search across types with _type.
    let b = json(
        s.get("?_type=Patient,ValueSet&_summary=count")
            .send()
            .unwrap(),
    );
    assert_eq!(b["total"], 3);
    let b = json(s.get(&format!("?_id={pid}")).send().unwrap());
    assert_eq!(b["total"], 1, "{b}");
}

/// Unknown parameters are reported in an outcome entry, or refused under handling=strict;
/// unknown modifiers are always a 400.
#[test]
fn unknown_parameters_and_strict_handling() {
    let s = Server::start();
    s.create(&json!({"resourceType": "Patient", "gender": "male"}));
    let b = json(s.get("Patient?gender=male&nonsense=1").send().unwrap());
    assert_eq!(b["total"], 1);
    let outcome = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .expect("an outcome entry");
    assert!(outcome["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .contains("nonsense"));
    let (status, v) = status_json(
        s.get("Patient?gender=male&nonsense=1")
            .header("prefer", "handling=strict")
            .send()
            .unwrap(),
    );
    assert_eq!(status, 400);
    common::assert_outcome(&v, "not-supported", Some("nonsense"));
    // Known to R4 but not searchable here (`_text` has no expression): ignored and reported.
    let b = json(s.get("Patient?gender=male&_text=x").send().unwrap());
    assert_eq!(b["total"], 1);
    // Client mistakes are 400s, never server errors.
    for bad in [
        "Observation?code-value-quantity:missing=true",
        "Observation?_sort=code-value-quantity",
        "Patient?_cursor=o18446744073709551615&_sort=gender",
        "Observation?value-quantity=1e-2147483648",
    ] {
        let status = s.get(bad).send().unwrap().status().as_u16();
        assert!(status == 400 || status == 200, "{bad}: {status}");
    }
    let many = vec!["x"; 600].join(",");
    let (status, _) = status_json(s.get(&format!("Patient?name={many}")).send().unwrap());
    assert_eq!(status, 400);
    let (status, v) = status_json(s.get("Patient?gender:bogus=male").send().unwrap());
    assert_eq!(status, 400);
    common::assert_outcome(&v, "invalid", Some("gender:bogus"));
    // _explain returns the plan: a selective parameter is a primary-key search, not a scan.
    let b = json(s.get("Patient?gender=male&_explain=true").send().unwrap());
    let plan = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap()["resource"]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(plan.contains("SEARCH ix_token USING PRIMARY KEY"), "{plan}");
    assert!(!plan.contains("SCAN ix_"), "{plan}");
}

/// Paging by cursor stays correct while resources are added: every resource exactly once,
/// the new ones at the end; `previous` goes back.
#[test]
fn paging_while_resources_are_added() {
    let s = Server::start();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            s.create(&json!({"resourceType": "Patient", "gender": "other",
            "name": [{"family": format!("Pager{i}")}]}))["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let first = json(s.get("Patient?gender=other&_count=3").send().unwrap());
    assert_eq!(first["total"], 7);
    let mut seen: Vec<String> = first["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    // Two more arrive while the client pages.
    for i in 7..9 {
        created.push(
            s.create(&json!({"resourceType": "Patient", "gender": "other",
            "name": [{"family": format!("Pager{i}")}]}))["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let mut next = first["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "next")
        .map(|l| l["url"].as_str().unwrap().to_string());
    let mut last_page = Value::Null;
    while let Some(url) = next {
        let b = json(reqwest::blocking::get(&url).unwrap());
        seen.extend(
            b["entry"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["resource"]["id"].as_str().unwrap().to_string()),
        );
        next = b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == "next")
            .map(|l| l["url"].as_str().unwrap().to_string());
        last_page = b;
    }
    assert_eq!(seen, created);
    let prev = last_page["link"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["relation"] == "previous")
        .map(|l| l["url"].as_str().unwrap().to_string())
        .expect("a previous link");
    let b = json(reqwest::blocking::get(&prev).unwrap());
    let ids: Vec<String> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, created[3..6]);
}

/// A reference written as this server's own absolute URL (`[base]/Patient/1`) is the same
/// resource as `Patient/1` (FHIR R4 references.html §2.3.0.1): searches by either form, chains,
/// `_has` and `_include` follow it, while the stored resource keeps what was written and
/// another server's URL stays that server's.
#[test]
fn own_absolute_references_search_as_relative() {
    let s = Server::start();
    let p = s.create(&json!({"resourceType": "Patient", "name": [{"family": "Absolute"}]}));
    let pid = p["id"].as_str().unwrap();
    let own = format!("{}/Patient/{pid}", s.base);
    let ours = s.create(&json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "own"}, "subject": {"reference": own}}));
    let foreign = s.create(&json!({"resourceType": "Observation", "status": "final",
        "code": {"text": "foreign"},
        "subject": {"reference": format!("http://elsewhere.example.org/fhir/Patient/{pid}")}}));
    assert_eq!(
        ours["subject"]["reference"],
        own.as_str(),
        "stored as written"
    );
    let ours = vec![ours["id"].as_str().unwrap().to_string()];
    for q in [
        format!("Observation?subject=Patient/{pid}"),
        format!("Observation?patient={pid}"),
        format!("Observation?subject={own}"),
        "Observation?subject:Patient.name=absolute".to_string(),
    ] {
        assert_eq!(sorted(all_ids(&s, &q)), ours, "{q}");
    }
    assert_eq!(
        all_ids(&s, "Patient?_has:Observation:subject:status=final"),
        [pid]
    );
    let b = json(
        s.get(&format!(
            "Observation?_id={}&_include=Observation:subject",
            ours[0]
        ))
        .send()
        .unwrap(),
    );
    let included: Vec<&Value> = b["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .collect();
    assert_eq!(included.len(), 1, "{b}");
    assert_eq!(included[0]["resource"]["id"], pid);
    assert_eq!(
        all_ids(
            &s,
            &format!("Observation?subject=http://elsewhere.example.org/fhir/Patient/{pid}")
        ),
        [foreign["id"].as_str().unwrap()]
    );
}

/// `:in` and `:not-in` test membership in a ValueSet's expansion (FHIR R4 §3.1.1.4.4), here
/// http://hl7.org/fhir/ValueSet/observation-category, whose nine codes are those of
/// http://terminology.hl7.org/CodeSystem/observation-category; a ValueSet this server cannot
/// expand completely is a 400, not an empty answer.
#[test]
fn token_in_and_not_in_a_value_set() {
    let s = Server::start();
    let cat = "http://terminology.hl7.org/CodeSystem/observation-category";
    let obs = |category: Option<(&str, &str)>| {
        let mut o = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]}});
        if let Some((system, code)) = category {
            o["category"] = json!([{"coding": [{"system": system, "code": code}]}]);
        }
        s.create(&o)["id"].as_str().unwrap().to_string()
    };
    let vital = obs(Some((cat, "vital-signs")));
    let lab = obs(Some((cat, "laboratory")));
    let other_system = obs(Some(("http://example.org/categories", "laboratory")));
    let not_in_set = obs(Some((cat, "no-such-category")));
    let none = obs(None);
    let vs = "http://hl7.org/fhir/ValueSet/observation-category";
    assert_eq!(
        sorted(all_ids(&s, &format!("Observation?category:in={vs}"))),
        sorted(vec![vital.clone(), lab.clone()])
    );
    assert_eq!(
        sorted(all_ids(&s, &format!("Observation?category:in={vs}|4.0.1"))),
        sorted(vec![vital.clone(), lab.clone()]),
        "a version on the canonical"
    );
    assert_eq!(
        sorted(all_ids(&s, &format!("Observation?category:not-in={vs}"))),
        sorted(vec![other_system, not_in_set, none])
    );
    assert_eq!(
        all_ids(
            &s,
            &format!("Observation?category:in={vs}&category={cat}|laboratory")
        ),
        [lab]
    );
    for bad in [
        // Published with a partial (SNOMED CT) expansion.
        "Observation?code:in=http://hl7.org/fhir/ValueSet/substance-code",
        "Observation?category:in=http://example.org/ValueSet/unknown",
    ] {
        let (st, v) = status_json(s.get(bad).send().unwrap());
        assert_eq!(st, 400, "{bad}: {v}");
        let key = bad.split(['?', '=']).nth(1).unwrap();
        common::assert_outcome(&v, "invalid", Some(key));
    }
}

/// `_sort` pages by position: patients that sort before the page being read arrive, one
/// already read goes, and the next links still give exactly the rest, in order; the previous
/// link of a later page gives the page before it.
#[test]
fn sorted_paging_while_resources_change() {
    let s = Server::start();
    let mut by_family = Vec::new();
    for i in 0..8 {
        let family = format!("Sorter{}", (b'h' - i) as char);
        let id = s.create(&json!({"resourceType": "Patient", "gender": "unknown",
            "name": [{"family": family}]}))["id"]
            .as_str()
            .unwrap()
            .to_string();
        by_family.push((family, id));
    }
    by_family.sort();
    let expected: Vec<String> = by_family.iter().map(|(_, id)| id.clone()).collect();
    let page_ids = |b: &Value| -> Vec<String> {
        b["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| e["resource"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let link = |b: &Value, rel: &str| {
        b["link"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["relation"] == rel)
            .map(|l| l["url"].as_str().unwrap().to_string())
    };
    let first = json(
        s.get("Patient?gender=unknown&_sort=family&_count=3")
            .send()
            .unwrap(),
    );
    assert_eq!(page_ids(&first), expected[..3]);
    // Two that sort first arrive, and one already read is deleted: an offset would repeat.
    for family in ["Sorteraa", "Sorterab"] {
        s.create(&json!({"resourceType": "Patient", "gender": "unknown",
            "name": [{"family": family}]}));
    }
    let r = s
        .request("DELETE", &format!("Patient/{}", expected[1]))
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    let mut seen = Vec::new();
    let mut next = link(&first, "next");
    let mut pages = Vec::new();
    while let Some(url) = next {
        let b = json(reqwest::blocking::get(&url).unwrap());
        seen.extend(page_ids(&b));
        next = link(&b, "next");
        pages.push(b);
    }
    assert_eq!(seen, expected[3..]);
    let prev = link(pages.last().unwrap(), "previous").expect("a previous link");
    let b = json(reqwest::blocking::get(&prev).unwrap());
    assert_eq!(page_ids(&b), page_ids(&pages[pages.len() - 2]));
}

/// Conditional create, update and delete, and conditional references in a transaction, with
/// 0, 1 and many matches (FHIR R4 http.html#cond-update, #ccreate, #cdelete, #trules).
#[test]
fn conditional_operations_with_zero_one_and_many_matches() {
    let s = Server::start();
    let patient = |mrn: &str| {
        json!({"resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": mrn}]})
    };
    // Conditional create: 0 matches creates, 1 returns it with 200, many is 412.
    let create = |mrn: &str, cond: &str| {
        status_json(
            s.post_json("Patient", &patient(mrn))
                .header("if-none-exist", cond)
                .send()
                .unwrap(),
        )
    };
    let (st, first) = create("1", "identifier=urn:mrn|1");
    assert_eq!(st, 201);
    let (st, again) = create("1", "identifier=urn:mrn|1");
    assert_eq!(st, 200);
    assert_eq!(again["id"], first["id"]);
    s.create(&patient("dup"));
    s.create(&patient("dup"));
    let (st, v) = create("dup", "identifier=urn:mrn|dup");
    assert_eq!(st, 412);
    common::assert_outcome(&v, "multiple-matches", None);
    let (st, _) = create("x", "bogus=1");
    assert_eq!(st, 400);

    // Conditional update: 0 creates, 1 updates that resource, many is 412.
    let (st, v) = status_json(
        s.put_json("Patient?identifier=urn:mrn|2", &patient("2"))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v2) = status_json(
        s.put_json("Patient?identifier=urn:mrn|2", &patient("2"))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);
    assert_eq!(v2["id"], v["id"]);
    assert_eq!(v2["meta"]["versionId"], "2");
    let (st, _) = status_json(
        s.put_json("Patient?identifier=urn:mrn|dup", &patient("dup"))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 412);

    // Conditional delete: many is 412, 1 deletes, 0 does nothing.
    let (st, _) = status_json(s.delete("Patient?identifier=urn:mrn|dup").send().unwrap());
    assert_eq!(st, 412);
    let (st, _) = status_json(s.delete("Patient?identifier=urn:mrn|2").send().unwrap());
    assert_eq!(st, 204);
    assert_eq!(all_ids(&s, "Patient?identifier=urn:mrn|2").len(), 0);
    let (st, _) = status_json(s.delete("Patient?identifier=urn:mrn|2").send().unwrap());
    assert_eq!(st, 204);

    // Conditional patch (FHIR R4 http.html#patch): 1 match is patched, 0 is 404, many is 412,
    // in either patch format, and If-Match holds as for a plain patch.
    let json_patch = |path: &str, ops: Value| {
        status_json(
            s.request("PATCH", path)
                .header("content-type", "application/json-patch+json")
                .body(ops.to_string())
                .send()
                .unwrap(),
        )
    };
    let (st, v) = json_patch(
        "Patient?identifier=urn:mrn|1",
        json!([{"op": "add", "path": "/active", "value": true}]),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["id"], first["id"]);
    assert_eq!(v["active"], true);
    assert_eq!(v["meta"]["versionId"], "2");
    let fhirpath_patch = json!({"resourceType": "Parameters", "parameter": [{
        "name": "operation", "part": [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "Patient.active"},
            {"name": "value", "valueBoolean": false}]}]});
    let (st, v) = status_json(
        s.request("PATCH", "Patient?identifier=urn:mrn|1")
            .header("content-type", "application/fhir+json")
            .header("if-match", "W/\"2\"")
            .body(fhirpath_patch.to_string())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["active"], false);
    let (st, v) = status_json(
        s.request("PATCH", "Patient?identifier=urn:mrn|1")
            .header("content-type", "application/fhir+json")
            .header("if-match", "W/\"2\"")
            .body(fhirpath_patch.to_string())
            .send()
            .unwrap(),
    );
    assert_eq!(st, 412, "a stale If-Match: {v}");
    let (st, v) = json_patch(
        "Patient?identifier=urn:mrn|none",
        json!([{"op": "add", "path": "/active", "value": true}]),
    );
    assert_eq!(st, 404, "{v}");
    let (st, v) = json_patch(
        "Patient?identifier=urn:mrn|dup",
        json!([{"op": "add", "path": "/active", "value": true}]),
    );
    assert_eq!(st, 412, "{v}");
    common::assert_outcome(&v, "multiple-matches", None);
    let (st, _) = json_patch("Patient?bogus=1", json!([]));
    assert_eq!(st, 400);
    let (st, _) = json_patch("Patient", json!([]));
    assert_eq!(st, 400, "no criteria");

    // Transaction: a conditional reference to one match resolves; ifNoneExist finds the match.
    let tx = |entries: Value| {
        status_json(
            s.post_json(
                "",
                &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
            )
            .send()
            .unwrap(),
        )
    };
    let (st, v) = tx(json!([
        {"fullUrl": "urn:uuid:p", "resource": patient("1"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:mrn|1"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "a"},
            "subject": {"reference": "Patient?identifier=urn:mrn|1"}},
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "b"},
            "subject": {"reference": "urn:uuid:p"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["entry"][0]["response"]["status"], "200 OK");
    let pid = first["id"].as_str().unwrap();
    assert_eq!(
        all_ids(&s, &format!("Observation?subject=Patient/{pid}")).len(),
        2
    );
    // Zero matches: 404; many: 412; and the whole transaction is rolled back.
    let before = count(&s, "Observation");
    let (st, _) = tx(json!([
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "c"},
            "subject": {"reference": "Patient?identifier=urn:mrn|nobody"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]));
    assert_eq!(st, 404);
    let (st, _) = tx(json!([
        {"resource": {"resourceType": "Observation", "status": "final", "code": {"text": "c"},
            "subject": {"reference": "Patient?identifier=urn:mrn|dup"}},
         "request": {"method": "POST", "url": "Observation"}}
    ]));
    assert_eq!(st, 412);
    assert_eq!(count(&s, "Observation"), before);
    // Conditional update and delete entries.
    let (st, v) = tx(json!([
        {"resource": patient("3"), "request": {"method": "PUT", "url": "Patient?identifier=urn:mrn|3"}},
        {"request": {"method": "DELETE", "url": "Patient?identifier=urn:mrn|1"}}
    ]));
    assert_eq!(st, 200, "{v}");
    assert_eq!(all_ids(&s, "Patient?identifier=urn:mrn|3").len(), 1);
    assert_eq!(all_ids(&s, "Patient?identifier=urn:mrn|1").len(), 0);
}

#[test]
fn capability_statement_lists_search_parameters() {
    let s = Server::start();
    let cs = json(s.get("metadata").send().unwrap());
    let obs = cs["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["type"] == "Observation")
        .unwrap();
    let params: HashMap<&str, &str> = obs["searchParam"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap(), p["type"].as_str().unwrap()))
        .collect();
    for (n, t) in [
        ("code", "token"),
        ("subject", "reference"),
        ("date", "date"),
        ("value-quantity", "quantity"),
        ("code-value-quantity", "composite"),
        ("_id", "token"),
        ("_lastUpdated", "date"),
    ] {
        assert_eq!(params.get(n), Some(&t), "{n}");
    }
    assert_eq!(obs["conditionalCreate"], true);
    assert_eq!(obs["conditionalDelete"], "single");
    assert!(obs["searchInclude"]
        .as_array()
        .unwrap()
        .iter()
        .any(|i| i == "Observation:subject"));
}
