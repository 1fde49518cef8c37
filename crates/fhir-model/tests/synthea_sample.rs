//! The Synthea sample bundles (`shared/data/synthea-r4/sample`), the data the server ingests
//! most, are valid R4: a false reject here would refuse real-world uploads.

use std::path::PathBuf;

#[test]
fn synthea_sample_bundles_are_valid() {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/synthea-r4/sample");
    let mut bundles = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let issues = fhir_model::r4().validate(&bundle);
        assert!(
            issues.is_empty(),
            "{}: {:#?}",
            path.display(),
            &issues[..issues.len().min(5)]
        );
        bundles += 1;
    }
    assert_eq!(bundles, 5);
}
