//! The observer is told of every request exactly once: with its status when answered, and
//! with 499 when the client goes away before the answer (hyper then drops the request).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use link_gateway::{Exchange, Gateway, GatewayConfig, Observer, CLIENT_CLOSED_REQUEST};

#[derive(Default)]
struct Recorder(Mutex<Vec<(String, u16, String)>>);

impl Observer for Recorder {
    fn observe(&self, e: &Exchange<'_>) {
        if let Ok(mut seen) = self.0.lock() {
            seen.push((
                e.path.to_owned(),
                e.status.as_u16(),
                e.correlation_id.to_owned(),
            ));
        }
    }
}

fn seen(r: &Recorder) -> Vec<(String, u16, String)> {
    r.0.lock().map(|s| s.clone()).unwrap_or_default()
}

/// Waits until `r` has seen `n` requests (or a few seconds have passed), then a little more.
fn wait_for(r: &Recorder, n: usize) -> Vec<(String, u16, String)> {
    let start = Instant::now();
    while seen(r).len() < n && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    seen(r)
}

#[test]
fn every_request_is_observed_once_answered_or_abandoned() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let recorder = Arc::new(Recorder::default());
    let app = Router::new()
        .route("/metadata", get(|| async { "ok" }))
        // Never answers: only the client going away ends it.
        .route("/slow", get(std::future::pending::<&'static str>));
    let gateway = Gateway::observed(
        app,
        GatewayConfig {
            dns_suffix: "azurehealthcareapis.com".into(),
            port: 0,
            tls: None,
            ..GatewayConfig::default()
        },
        recorder.clone(),
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(gateway.serve_public(listener, std::future::pending()));

    let mut answered = TcpStream::connect(addr).expect("connect");
    answered
        .write_all(b"GET /metadata HTTP/1.1\r\nHost: default.azurehealthcareapis.com\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut reply = String::new();
    answered.read_to_string(&mut reply).expect("reply");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = wait_for(&recorder, 1);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!((seen[0].0.as_str(), seen[0].1), ("/metadata", 200));
    assert!(
        reply.contains(&format!("x-request-id: {}", seen[0].2)),
        "{reply}"
    );

    let mut abandoned = TcpStream::connect(addr).expect("connect");
    abandoned
        .write_all(b"GET /slow HTTP/1.1\r\nHost: default.azurehealthcareapis.com\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_millis(200));
    drop(abandoned);
    let seen = wait_for(&recorder, 2);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(
        (seen[1].0.as_str(), seen[1].1),
        ("/slow", CLIENT_CLOSED_REQUEST)
    );
}
