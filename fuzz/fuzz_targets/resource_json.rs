//! Resource JSON: the duplicate-key-refusing parser, R4 validation, and the `_summary` and
//! `_elements` views of whatever parses.
#![no_main]
use fhir_model::Summary;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let strict = fhir_model::json::parse(data);
    let Ok(v) = strict.or_else(|_| serde_json::from_slice::<serde_json::Value>(data)) else {
        return;
    };
    let defs = fhir_model::r4();
    let _ = defs.validate(&v);
    for mode in [Summary::True, Summary::Text, Summary::Data, Summary::False] {
        let _ = defs.summarize(&v, mode);
    }
    let elements: Vec<String> = ["name", "value", "code", "status", "id", "meta", "extension"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _ = defs.select_elements(&v, &elements);
});
