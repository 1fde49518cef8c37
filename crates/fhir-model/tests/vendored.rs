//! The embedded definitions are exactly what the generator extracts from the official R4
//! bundles (regenerate with `examples/vendor.rs`): the definition bundles of the npm package
//! `hl7.fhir.r4.examples@4.0.1` and the package `hl7.fhir.r4.expansions@4.0.1`, as
//! scripts/fetch-test-data fetches and checks them.

use std::path::PathBuf;

use fhir_model::vendor;

include!("../../../testdata/locate.rs.in");

fn core_dir() -> PathBuf {
    test_data("fhir-r4-core")
}

#[test]
fn embedded_model_equals_a_fresh_extraction() {
    let fresh = vendor::build_compact_model(&core_dir()).unwrap();
    let embedded: serde_json::Value =
        serde_json::from_slice(&vendor::embedded_model_json().unwrap()).unwrap();
    // Compare as JSON values, not gzip bytes.
    assert_eq!(
        serde_json::to_value(&fresh).unwrap(),
        embedded,
        "data/r4-model.json.gz is stale: run `cargo run -p fhir-model --example vendor -- <fhir-r4-core>`"
    );
}

#[test]
fn embedded_search_parameters_equal_the_official_bundle() {
    let official = vendor::read_json(&core_dir().join("search-parameters.json")).unwrap();
    assert_eq!(fhir_model::search_parameters_bundle(), official);
}

#[test]
fn the_146_concrete_resource_types_are_known() {
    let defs = fhir_model::r4();
    assert_eq!(defs.resource_types().len(), 146);
    assert!(defs.resource_types().windows(2).all(|w| w[0] < w[1]));
    assert!(defs.is_resource_type("Patient"));
    assert!(defs.is_resource_type("VisionPrescription"));
    assert!(!defs.is_resource_type("DomainResource"));
    assert!(!defs.is_resource_type("Resource"));
    assert!(!defs.is_resource_type("patient"));
}

#[test]
fn embedded_terminology_equals_a_fresh_extraction() {
    use std::io::Read;
    let tgz = test_data("fhir-r4-expansions/hl7.fhir.r4.expansions-4.0.1.tgz");
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&tgz).unwrap(),
    ));
    let mut expansions = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        if name.ends_with(".json") && !name.ends_with("package.json") {
            let mut text = Vec::new();
            entry.read_to_end(&mut text).unwrap();
            if let Ok(v) = serde_json::from_slice(&text) {
                expansions.push(v);
            }
        }
    }
    let valuesets = vendor::read_json(&core_dir().join("valuesets.json.gz")).unwrap();
    let fresh = fhir_model::terminology::build(&valuesets, &expansions);
    let embedded = vendor::read_json(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("data")
            .join(fhir_model::terminology::TERMINOLOGY_FILE),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&fresh).unwrap(),
        embedded,
        "data/r4-terminology.json.gz is stale: run the vendor example"
    );
    assert!(fresh.value_sets.len() > 400 && fresh.hierarchies.len() > 20);
}
