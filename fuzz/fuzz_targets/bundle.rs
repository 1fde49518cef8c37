//! Bundle processing: bytes POSTed to the base as a batch or transaction Bundle through
//! `fhir_api::router` on a tempdir SQLite store made once per process.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let api = fhirlink_fuzz::api();
    let (status, _) = api.send("POST", "/", "application/fhir+json", data.to_vec());
    assert_ne!(status.as_u16(), 500, "Bundle answered 500");
});
