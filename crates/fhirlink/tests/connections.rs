//! The connection limits as `fhirlink serve` wires them from its flags (issue #15, defects 4
//! and 7): the binary on 127.0.0.1 with small limits, raw sockets. The behaviour itself is
//! tested in link-gateway and link-auth; this proves the flags reach it.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::Server;

const PATIENCE: Duration = Duration::from_secs(10);

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(&server.addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

/// Everything until the server closes; panics if it is still open after [`PATIENCE`].
fn until_closed(s: &mut TcpStream) -> String {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("still open after {:?}", started.elapsed())
            }
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn regression_15_4_serve_flags_time_connections_out() {
    let server = Server::start_with(&[
        "--header-timeout",
        "300ms",
        "--idle-timeout",
        "300ms",
        "--body-timeout",
        "300ms",
    ]);
    // Nothing sent: closed.
    let mut silent = connect(&server);
    assert_eq!(until_closed(&mut silent), "");
    // One request, then idle: closed.
    let mut idle = connect(&server);
    idle.write_all(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let got = until_closed(&mut idle);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    // A body that stops: 408 with an OperationOutcome.
    let mut stalled = connect(&server);
    stalled
        .write_all(b"POST /Patient HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\nContent-Length: 100\r\n\r\n{")
        .expect("send");
    let got = until_closed(&mut stalled);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("OperationOutcome"), "{got}");
}

#[test]
fn regression_15_4_serve_flags_cap_connections_and_refuse_declared_bodies() {
    let server = Server::start_with(&[
        "--max-connections-per-source",
        "2",
        "--max-body-bytes",
        "1024",
    ]);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = connect(&server);
        s.write_all(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("read");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = connect(&server);
    assert_eq!(until_closed(&mut third), "", "over the per-source cap");
    drop(held);
    // Room again once they are closed; then a declared body over --max-body-bytes is
    // refused at once, without 100 Continue.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let mut s = connect(&server);
        let sent = s.write_all(
            b"POST /Patient HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/fhir+json\r\nContent-Length: 1025\r\nExpect: 100-continue\r\n\r\n",
        );
        let got = if sent.is_ok() {
            until_closed(&mut s)
        } else {
            String::new()
        };
        if !got.is_empty() {
            assert!(got.starts_with("HTTP/1.1 413"), "{got}");
            assert!(!got.contains("100 Continue"), "{got}");
            assert!(got.contains("OperationOutcome"), "{got}");
            break;
        }
        assert!(Instant::now() < deadline, "no room after the others closed");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The management API runs the same loop under the same flags: over TLS (the default) a
/// client that never starts its handshake is closed at --handshake-timeout, and with
/// --admin-plain-http a silent connection at --header-timeout, a stalled body at
/// --body-timeout, and a fourth connection from one source over the cap at accept.
#[test]
fn regression_15_4_serve_flags_reach_the_management_api() {
    let flags = [
        "--handshake-timeout",
        "300ms",
        "--header-timeout",
        "300ms",
        "--body-timeout",
        "300ms",
    ];
    let tls = common::admin::AdminServer::start_with(&flags);
    let addr = tls.admin_url.trim_start_matches("https://").to_string();
    let mut silent = TcpStream::connect(&addr).expect("connect");
    silent.set_read_timeout(Some(PATIENCE)).expect("timeout");
    assert_eq!(until_closed(&mut silent), "", "TLS handshake never started");
    drop(tls);

    let mut plain_flags = flags.to_vec();
    plain_flags.extend(["--admin-plain-http", "--max-connections-per-source", "3"]);
    let plain = common::admin::AdminServer::start_with(&plain_flags);
    let addr = plain.admin_url.trim_start_matches("http://").to_string();
    let mut silent = TcpStream::connect(&addr).expect("connect");
    silent.set_read_timeout(Some(PATIENCE)).expect("timeout");
    assert_eq!(until_closed(&mut silent), "", "no request head");
    let mut stalled = TcpStream::connect(&addr).expect("connect");
    stalled.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let head = format!(
        "PUT /subscriptions/s/resourceGroups/g?api-version=2021-04-01 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{",
        plain.token("admin")
    );
    stalled.write_all(head.as_bytes()).expect("send");
    let got = until_closed(&mut stalled);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");

    // Three held open (each has answered, so each is accepted and counted).
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.set_read_timeout(Some(PATIENCE)).expect("timeout");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .expect("send");
            let mut buf = [0u8; 16];
            let n = s.read(&mut buf).expect("read");
            assert!(buf[..n].starts_with(b"HTTP/1.1 "), "answered");
            s
        })
        .collect();
    // A whole request on the fourth: unanswered, so closed at accept (under the cap it
    // would get a status line).
    let mut over = TcpStream::connect(&addr).expect("connect");
    over.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let _ = over.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(until_closed(&mut over), "", "over the per-source cap");
    drop(held);
}
