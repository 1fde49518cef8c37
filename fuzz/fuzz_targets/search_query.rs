//! Search query strings: `fhir_search::parse` at the type level (a few types) and the system
//! level. The first byte chooses the type.
#![no_main]
use fhir_search::ParseOptions;
use libfuzzer_sys::fuzz_target;

const TYPES: [Option<&str>; 6] = [
    None,
    Some("Patient"),
    Some("Observation"),
    Some("Encounter"),
    Some("Condition"),
    Some("Bundle"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, query)) = data.split_first() else { return };
    let params: Vec<(String, String)> = form_urlencoded::parse(query)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let opts = ParseOptions {
        base: Some("http://localhost:8080".into()),
        ..ParseOptions::default()
    };
    let _ = fhir_search::parse(TYPES[sel as usize % TYPES.len()], &params, &opts);
});
