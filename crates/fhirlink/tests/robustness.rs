//! Never a 500 for client input, at the binary's front door: what reaches the gateway (the
//! HTTP server and the network decision, which reads the Host) before fhir-api. The router's
//! own handling of hostile requests is tested in process (fhir-api's tests/api/robustness.rs).

mod common;

use common::Server;

#[test]
fn an_oversized_host_through_the_gateway_is_no_server_error() {
    let s = Server::start();
    let r = s
        .get("metadata")
        .header("host", "x".repeat(2000))
        .send()
        .unwrap();
    assert!(r.status().as_u16() < 500, "{}", r.status());
    assert_eq!(
        s.get("metadata").send().unwrap().status(),
        200,
        "still answering"
    );
}
