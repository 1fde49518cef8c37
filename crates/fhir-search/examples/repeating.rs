//! What validation and index extraction cost as a repeating element grows (issue #15, defect
//! 2): a Patient with N `telecom`, `name`, `identifier` or `address` entries, timed once each.
//! `cargo run --release -p fhir-search --example repeating -- [N ...]`.

use std::time::Instant;

use serde_json::{json, Value};

fn patient(element: &str, n: usize) -> Value {
    let items: Vec<Value> = (0..n)
        .map(|i| match element {
            "telecom" => json!({"system": "phone", "value": format!("555-{i:07}"), "use": "home"}),
            "name" => json!({"family": format!("Family{i}"), "given": [format!("Given{i}")]}),
            "identifier" => json!({"system": "urn:oid:1.2.3", "value": format!("id-{i}")}),
            _ => json!({"line": [format!("{i} Main St")], "city": format!("City{i}"), "postalCode": format!("{i:05}")}),
        })
        .collect();
    json!({"resourceType": "Patient", "id": "big", element: items})
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![12_500, 25_000, 50_000]
    } else {
        sizes
    };
    let defs = fhir_model::r4();
    for element in ["telecom", "name", "identifier", "address"] {
        for &n in &sizes {
            let p = patient(element, n);
            let t = Instant::now();
            let issues = defs.validate(&p);
            let validate = t.elapsed();
            let t = Instant::now();
            let entries = fhir_search::extract(&p);
            let extract = t.elapsed();
            println!(
                "{element:>10} {n:>7}: validate {:>9.1} ms ({} issues), extract {:>9.1} ms ({} entries)",
                validate.as_secs_f64() * 1e3,
                issues.len(),
                extract.as_secs_f64() * 1e3,
                entries.len()
            );
        }
    }
}
