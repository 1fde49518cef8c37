//! FHIRPath Patch: bytes as a Parameters resource, parsed under the default limits and
//! applied to a fixed Patient.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(params) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let Ok(patch) = fhir_path::patch::Patch::parse(&params, fhir_path::patch::Limits::default())
    else {
        return;
    };
    let mut resource = json!({
        "resourceType": "Patient",
        "id": "p1",
        "active": true,
        "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "identifier": [{"system": "urn:oid:1.2.36.146.595.217.0.1", "value": "12345"}],
        "contact": [{"name": {"family": "du Marché"}}]
    });
    let defs = fhir_model::r4();
    let is_array = |path: &str| defs.is_repeating(path).unwrap_or(false);
    if patch.apply(&mut resource, &is_array).is_ok() {
        let _ = defs.validate(&resource);
    }
});
