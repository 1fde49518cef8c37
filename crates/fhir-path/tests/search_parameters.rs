//! Every FHIR R4 core SearchParameter `expression` must parse, and evaluating them against the
//! FHIRPath suite's example resources must neither error nor panic: the search indexer relies
//! on both. The SearchParameters are the official bundle (`Bundle-searchParams.json` of the npm
//! package `hl7.fhir.r4.examples@4.0.1`, fetched by scripts/fetch-test-data); the resources are
//! the FHIRPath suite's inputs vendored in `testdata/fhirpath-r4`.

use serde_json::Value;

include!("../../../testdata/locate.rs.in");

fn expressions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(test_data("fhir-r4-core/search-parameters.json")).unwrap();
    let bundle: Value = serde_json::from_str(&text).unwrap();
    bundle["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let r = &e["resource"];
            Some((
                r["id"].as_str()?.to_string(),
                r["expression"].as_str()?.to_string(),
            ))
        })
        .collect()
}

// FHIR R4 §3.1.1.4 (SearchParameter.expression): all core expressions are valid FHIRPath.
#[test]
fn all_core_search_parameter_expressions_parse() {
    let exprs = expressions();
    assert!(
        exprs.len() >= 1370,
        "only {} expressions found",
        exprs.len()
    );
    let failures: Vec<String> = exprs
        .iter()
        .filter_map(|(id, e)| {
            fhir_path::parse(e)
                .err()
                .map(|err| format!("{id}: {e}: {err}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn core_search_parameter_expressions_evaluate_on_examples() {
    let dir = fixture("fhirpath-r4/input-json");
    let mut resources = Vec::new();
    for f in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        resources.push(serde_json::from_str::<Value>(&text).unwrap());
    }
    let mut evaluated = 0;
    let mut failures = Vec::new();
    for (id, e) in expressions() {
        let expr = fhir_path::parse(&e).unwrap();
        for r in &resources {
            match fhir_path::evaluate(&expr, r) {
                Ok(items) => evaluated += items.len(),
                Err(err) => failures.push(format!("{id} on {}: {err}", r["resourceType"])),
            }
        }
    }
    assert!(evaluated > 100, "suspiciously few results: {evaluated}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
