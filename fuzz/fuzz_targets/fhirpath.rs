//! FHIRPath expressions: parse, then evaluate against a fixed small Patient under a tight
//! budget (the one a request's expression gets, not the default for trusted expressions).
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fn patient() -> &'static Value {
    static P: OnceLock<Value> = OnceLock::new();
    P.get_or_init(|| {
        json!({
            "resourceType": "Patient",
            "id": "p1",
            "meta": {"versionId": "1", "lastUpdated": "2024-01-01T00:00:00Z"},
            "active": true,
            "name": [{"use": "official", "family": "Chalmers", "given": ["Peter", "James"]},
                     {"use": "usual", "given": ["Jim"]}],
            "telecom": [{"system": "phone", "value": "(03) 5555 6473", "use": "work", "rank": 1}],
            "gender": "male",
            "birthDate": "1974-12-25",
            "deceasedBoolean": false,
            "address": [{"use": "home", "line": ["534 Erewhon St"], "city": "PleasantVille",
                         "postalCode": "3999", "period": {"start": "1974-12-25"}}],
            "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}],
                         "name": {"family": "du Marché", "given": ["Bénédicte"]}, "gender": "female"}],
            "extension": [{"url": "http://example.org/weight", "valueQuantity": {"value": 72.5, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"}}],
            "managingOrganization": {"reference": "Organization/1"}
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(expr) = fhir_path::parse(text) else { return };
    let opts = fhir_path::Options::default()
        .max_steps(100_000)
        .max_string_bytes(1 << 20)
        .variable("ucum", json!("http://unitsofmeasure.org"));
    let _ = fhir_path::evaluate_with(&expr, patient(), &opts);
});
