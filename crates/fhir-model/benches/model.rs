//! What the data plane pays to the model: decoding the embedded definitions at start, and
//! validating one resource on every write. `cargo bench -p fhir-model`.

use std::io::Read;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::Value;

include!("../../../testdata/locate.rs.in");

/// Every resource of the five Synthea patients in testdata/synthea (the team's sample).
fn sample_resources() -> Vec<Value> {
    let mut out = Vec::new();
    for f in synthea_fixtures() {
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(std::fs::File::open(&f).expect("open"))
            .read_to_end(&mut bytes)
            .expect("gunzip");
        let bundle: Value = serde_json::from_slice(&bytes).expect("json");
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
