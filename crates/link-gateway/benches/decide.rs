//! What the access decision costs per request: `decide` on the public listener and on a
//! private endpoint's listener whose subnets have security groups (the client's outbound
//! and the endpoint's inbound rules, Azure's defaults included), against a 30 µs request.
//!
//! `cargo bench -p link-gateway --bench decide`

#[path = "../tests/common/mod.rs"]
mod common;

use common::{plan, rule, with_defaults, PE1};
use criterion::{criterion_group, criterion_main, Criterion};
use link_gateway::{decide, Connection, GatewayView, Listener};

fn bench(c: &mut Criterion) {
    let rules = |n: usize| {
        with_defaults(
            (0..n)
                .map(|i| {
                    rule(
                        &format!("r{i}"),
                        100 + i as i64,
                        "Inbound",
                        "Deny",
                        &format!("127.99.{i}.0/24"),
                        "*",
                    )
                })
                .collect(),
        )
    };
    let p = plan(true, rules(10), rules(10));
    let view = GatewayView::new(&p, "azurehealthcareapis.com");
    let endpoint = Listener::Endpoint(PE1.to_owned());
    let host = Some("myfhir.azurehealthcareapis.com");
    let mut g = c.benchmark_group("decide");
    g.bench_function("public listener", |b| {
        let conn = Connection {
            listener: &Listener::Public,
            source: "127.10.2.5:50000".parse().expect("addr"),
            local: "127.0.0.1:8080".parse().expect("addr"),
            host,
        };
        b.iter(|| decide(std::hint::black_box(&view), std::hint::black_box(&conn)));
    });
    g.bench_function("endpoint listener, peered source, 2x16 rules", |b| {
        let conn = Connection {
            listener: &endpoint,
            source: "127.20.1.5:50000".parse().expect("addr"),
            local: "127.10.1.4:8080".parse().expect("addr"),
            host,
        };
        b.iter(|| decide(std::hint::black_box(&view), std::hint::black_box(&conn)));
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
