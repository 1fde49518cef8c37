//! What the data plane pays to the model: decoding the embedded definitions at start, and
//! validating one resource on every write. `cargo bench -p fhir-model`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

fn sample_resources() -> Vec<Value> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/synthea-r4/sample");
    let mut out = Vec::new();
    for f in std::fs::read_dir(&dir).expect("synthea sample folder") {
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(f.expect("entry").path()).expect("read"))
                .expect("json");
        for e in bundle["entry"].as_array().expect("entries") {
            out.push(e["resource"].clone());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    c.bench_function("decode embedded R4 definitions", |b| {
        b.iter(|| fhir_model::Definitions::decode().expect("decode"))
    });
    let defs = fhir_model::r4();
    let resources = sample_resources();
    let mut g = c.benchmark_group("validate");
    g.throughput(Throughput::Elements(resources.len() as u64));
    g.bench_function("synthea sample resources", |b| {
        b.iter(|| {
            for r in &resources {
                assert!(defs.validate(r).is_empty());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
