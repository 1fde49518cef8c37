//! The embedded compartments (`data/compartments.json`) are exactly the five official R4
//! CompartmentDefinitions they were reduced from, as published in the definitions bundle of
//! the npm package `hl7.fhir.r4.examples@4.0.1` (scripts/fetch-test-data).

use serde_json::{Map, Value};

include!("../../../testdata/locate.rs.in");

// FHIR R4 compartmentdefinition.html: each definition lists, per resource type, the search
// parameters (`param`) that put a resource in the compartment; a type without any is not in it.
#[test]
fn embedded_compartments_equal_the_official_definitions() {
    let bundle =
        fhir_model::vendor::read_json(&test_data("fhir-r4-core/profiles-resources.json.gz"))
            .unwrap();
    let mut fresh = Map::new();
    for e in bundle["entry"].as_array().unwrap() {
        let r = &e["resource"];
        if r["resourceType"] != "CompartmentDefinition" {
            continue;
        }
        let mut types = Map::new();
        for t in r["resource"].as_array().into_iter().flatten() {
            if let Some(params) = t["param"].as_array().filter(|p| !p.is_empty()) {
                types.insert(t["code"].as_str().unwrap().into(), params.clone().into());
            }
        }
        fresh.insert(r["code"].as_str().unwrap().into(), types.into());
    }
    let embedded: Value = serde_json::from_str(include_str!("../data/compartments.json")).unwrap();
    assert_eq!(fresh.len(), 5);
    assert_eq!(
        Value::Object(fresh),
        embedded,
        "data/compartments.json differs from the official CompartmentDefinitions"
    );
    assert_eq!(
        fhir_search::compartment::params("Patient", "Observation"),
        ["subject", "performer"]
    );
}
