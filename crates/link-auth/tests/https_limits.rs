//! The management listener's HTTPS loop under hostile connections (issue #15, defect 4):
//! a handshake that never comes, a connection that says nothing after it, an idle
//! kept-alive connection, a stalled body, and the per-source cap. TLS on 127.0.0.1 with the
//! data folder's generated CA; limits of 300 ms, waits of up to 10 s. The same loop serves
//! `--admin-plain-http`, under the same limits (the `plain_` tests).

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::{get, post};
use axum::Router;
use link_auth::conn::ConnectionLimits;
use link_auth::https;
use link_auth::tls::{client_config, ServerIdentity};

const PATIENCE: Duration = Duration::from_secs(10);

struct Server {
    addr: SocketAddr,
    client: Arc<rustls::ClientConfig>,
    _dir: tempfile::TempDir,
    _runtime: tokio::runtime::Runtime,
}

fn start(limits: ConnectionLimits) -> Server {
    start_with(limits, true)
}

/// The management loop over plain HTTP, as `--admin-plain-http` runs it.
fn start_plain(limits: ConnectionLimits) -> Server {
    start_with(limits, false)
}

fn start_with(limits: ConnectionLimits, with_tls: bool) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let identity = ServerIdentity::generated(dir.path(), IpAddr::V4(Ipv4Addr::LOCALHOST), &[])
        .expect("identity");
    let ca = identity.ca_path.clone().expect("generated CA");
    let tls = identity.server_config().expect("server config");
    let client = Arc::new(client_config(&ca).expect("client config"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("{}", body.len()) }),
        );
    runtime.spawn(https::serve_with(
        listener,
        with_tls.then_some(tls),
        app,
        limits,
        std::future::pending(),
    ));
    Server {
        addr,
        client,
        _dir: dir,
        _runtime: runtime,
    }
}

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        handshake_timeout: Duration::from_millis(300),
        header_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(300),
        body_timeout: Duration::from_millis(300),
        max_per_source: 1000,
        max_connections: 1000,
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(PATIENCE)).expect("timeout");
    s
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection with the handshake done.
fn tls(server: &Server) -> Tls {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(server.client.clone(), name).expect("client");
    let mut stream = rustls::StreamOwned::new(conn, tcp(server.addr));
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("handshake");
    }
    stream
}

/// Reads until the server closes (EOF, close_notify or reset); panics past [`PATIENCE`].
fn until_closed(read: &mut impl Read) -> String {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!(
                "still open after {:?}: {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&got)
            ),
            // Reset, or closed without close_notify: closed either way.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn get_ping(s: &mut (impl Read + Write)) -> String {
    s.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .expect("send");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).ends_with("pong") {
        let n = s.read(&mut buf).expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn regression_15_4_management_handshake_that_never_comes_is_timed_out() {
    let server = start(limits());
    let mut s = tcp(server.addr);
    assert_eq!(until_closed(&mut s), "");
}

#[test]
fn regression_15_4_management_silence_after_the_handshake_is_timed_out() {
    let server = start(limits());
    let mut s = tls(&server);
    assert_eq!(until_closed(&mut s), "");
}

#[test]
fn regression_15_4_management_idle_keep_alive_connection_is_closed() {
    let server = start(limits());
    let mut s = tls(&server);
    let reply = get_ping(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(until_closed(&mut s), "");
}

#[test]
fn regression_15_4_management_stalled_body_is_timed_out() {
    let server = start(limits());
    let mut s = tls(&server);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .expect("send");
    let got = until_closed(&mut s);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("RequestTimeout"), "{got}");
}

#[test]
fn regression_15_4_management_connections_per_source_are_capped() {
    let server = start(ConnectionLimits {
        max_per_source: 1,
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    });
    let mut first = tls(&server);
    assert!(get_ping(&mut first).starts_with("HTTP/1.1 200"));
    // The second is closed before its handshake.
    let mut second = tcp(server.addr);
    let _ = second.write_all(b"\x16\x03\x01\x00\x05hello");
    assert_eq!(until_closed(&mut second), "");
    drop(first);
    let deadline = Instant::now() + PATIENCE;
    loop {
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let conn = rustls::ClientConnection::new(server.client.clone(), name).expect("client");
        let mut s = rustls::StreamOwned::new(conn, tcp(server.addr));
        let ok = s
            .write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .is_ok()
            && {
                let mut buf = [0u8; 64];
                matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
            };
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "no room after the first closed");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn regression_15_4_management_plain_http_silence_is_timed_out() {
    let server = start_plain(limits());
    let mut s = tcp(server.addr);
    assert_eq!(until_closed(&mut s), "");
}

#[test]
fn regression_15_4_management_plain_http_idle_keep_alive_connection_is_closed() {
    let server = start_plain(limits());
    let mut s = tcp(server.addr);
    let reply = get_ping(&mut s);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(until_closed(&mut s), "");
}

#[test]
fn regression_15_4_management_plain_http_stalled_body_is_timed_out() {
    let server = start_plain(limits());
    let mut s = tcp(server.addr);
    s.write_all(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{")
        .expect("send");
    let got = until_closed(&mut s);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("RequestTimeout"), "{got}");
}

#[test]
fn regression_15_4_management_plain_http_connections_per_source_are_capped() {
    let server = start_plain(ConnectionLimits {
        max_per_source: 1,
        header_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        ..limits()
    });
    let mut first = tcp(server.addr);
    assert!(get_ping(&mut first).starts_with("HTTP/1.1 200"));
    let mut second = tcp(server.addr);
    let _ = second.write_all(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert_eq!(until_closed(&mut second), "");
}
