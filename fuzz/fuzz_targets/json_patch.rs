//! JSON Patch as fhir-api applies it: fhir-api's patch module is private, so each input is a
//! `PATCH /Patient/p1` (application/json-patch+json) through `fhir_api::router` on a tempdir
//! SQLite store. A patch that succeeds is undone by putting the original back, so every input
//! meets the same resource.
#![no_main]
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

const ORIGINAL: &str = r#"{"resourceType":"Patient","id":"p1","active":true,"name":[{"family":"Chalmers","given":["Peter","James"]}],"gender":"male","birthDate":"1974-12-25","telecom":[{"system":"phone","value":"555"}]}"#;

fuzz_target!(|data: &[u8]| {
    let api = fhirlink_fuzz::api();
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let (s, _) = api.send("PUT", "/Patient/p1", "application/fhir+json", ORIGINAL.into());
        assert!(s.is_success(), "seed resource: {s}");
    });
    let (status, _) = api.send("PATCH", "/Patient/p1", "application/json-patch+json", data.to_vec());
    assert_ne!(status.as_u16(), 500, "PATCH answered 500");
    if status.is_success() {
        let (s, _) = api.send("PUT", "/Patient/p1", "application/fhir+json", ORIGINAL.into());
        assert!(s.is_success(), "restore: {s}");
    }
});
