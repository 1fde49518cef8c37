//! The Synthea patient bundles vendored in `testdata/synthea` (the team's five sample
//! patients), the data the server ingests most, are valid R4: a false reject here would refuse
//! real-world uploads.

use std::io::Read;

include!("../../../testdata/locate.rs.in");

#[test]
fn synthea_sample_bundles_are_valid() {
    let files = synthea_fixtures();
    for path in &files {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
            .read_to_end(&mut bytes)
            .unwrap();
        let bundle: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let issues = fhir_model::r4().validate(&bundle);
        assert!(
            issues.is_empty(),
            "{}: {:#?}",
            path.display(),
            &issues[..issues.len().min(5)]
        );
    }
    assert_eq!(files.len(), 5);
}
