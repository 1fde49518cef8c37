//! Every resource of the official R4 examples package (`hl7.fhir.r4.examples-4.0.1.tgz`, from
//! the npm registry by scripts/fetch-test-data) validates, except the few listed in [`KNOWN_INVALID`], each a genuine R4 violation in the
//! published example.

use std::io::Read;

include!("known_invalid_examples.rs.in");
include!("../../../testdata/locate.rs.in");

#[test]
fn official_examples_validate() {
    let tgz = test_data("fhir-r4-examples/hl7.fhir.r4.examples-4.0.1.tgz");
    let file = std::fs::File::open(&tgz).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let defs = fhir_model::r4();
    let (mut checked, mut rejected) = (0, Vec::new());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let Some(name) = path.strip_prefix("package/") else {
            continue;
        };
        if !name.ends_with(".json")
            || name.contains('/')
            || matches!(name, "package.json" | "ig-r4.json")
        {
            continue;
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let resource: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        checked += 1;
        let issues = defs.validate(&resource);
        if let Some(first) = issues.first() {
            println!(
                "REJECTED {name}: {} issue(s); first: [{}] {} @ {}",
                issues.len(),
                first.code.as_str(),
                first.diagnostics,
                first.expression.as_deref().unwrap_or("-")
            );
            rejected.push(name.to_string());
        }
    }
    println!("{checked} examples checked, {} rejected", rejected.len());
    assert!(checked > 5000, "only {checked} examples found");
    let unexpected: Vec<_> = rejected
        .iter()
        .filter(|r| !KNOWN_INVALID.iter().any(|(k, _)| k == r))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rejected beyond the known-invalid list: {unexpected:?}"
    );
    assert!(rejected.len() <= KNOWN_INVALID.len());
}
