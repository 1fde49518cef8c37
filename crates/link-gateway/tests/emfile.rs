//! Out of file descriptors (issue #15, defect 4): when `accept` fails with EMFILE the
//! listener backs off instead of spinning, and serves again once descriptors are free. Its
//! own test binary: it lowers the whole process's open-files limit (with util-linux's
//! `prlimit`) while it runs.

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use link_gateway::{ConnectionLimits, Gateway, GatewayConfig};

fn soft_and_hard() -> (String, String) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let mut fields = line["Max open files".len()..].split_whitespace();
    (
        fields.next().expect("soft").to_owned(),
        fields.next().expect("hard").to_owned(),
    )
}

fn set_soft(soft: &str, hard: &str) -> bool {
    Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={soft}:{hard}"))
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU time this process has used (user + system), from /proc/self/stat (opened before
/// the descriptors ran out), in clock ticks.
fn cpu_ticks(file: &mut std::fs::File) -> u64 {
    let mut stat = String::new();
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.read_to_string(&mut stat).expect("stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn regression_15_4_accept_backs_off_on_emfile_and_keeps_serving() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let app = Router::new().route("/metadata", get(|| async { "ok" }));
    let gateway = Gateway::new(
        app,
        GatewayConfig {
            connections: ConnectionLimits {
                max_per_source: 100_000,
                max_connections: 100_000,
                header_timeout: Duration::from_secs(30),
                idle_timeout: Duration::from_secs(30),
                ..ConnectionLimits::default()
            },
            ..GatewayConfig::default()
        },
    );
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    runtime.spawn(
        gateway
            .clone()
            .serve_public(listener, std::future::pending()),
    );

    let (soft, hard) = soft_and_hard();
    let mut stat = std::fs::File::open("/proc/self/stat").expect("stat");
    let open = std::fs::read_dir("/proc/self/fd").expect("fds").count();
    if !set_soft(&(open + 60).to_string(), &hard) {
        eprintln!("prlimit is not available here; skipping");
        return;
    }
    // Use up every descriptor but one with files, then connect a client: its socket takes
    // the last descriptor, and the server has none left to accept the connection with.
    let mut files = Vec::new();
    while files.len() < 1000 {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(_) => break,
        }
    }
    files.truncate(files.len().saturating_sub(1));
    let clients: Vec<TcpStream> = (0..1)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert!(!clients.is_empty(), "no client could connect");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        gateway.connection_counts().0,
        0,
        "the server accepted a connection without a descriptor to spare"
    );
    let (ticks, wall) = (cpu_ticks(&mut stat), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&mut stat) - ticks;
    let elapsed = wall.elapsed();
    drop(files);
    assert!(set_soft(&soft, &hard), "restoring the limit");
    // Ticks are 1/100 s: a spinning accept loop would burn about as much CPU as time passed.
    assert!(
        Duration::from_millis(used * 10) < elapsed / 2,
        "{used} ticks of CPU in {elapsed:?} while out of descriptors"
    );
    // The client that waited in the backlog is served.
    for mut s in clients {
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .expect("send");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).expect("read");
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // Descriptors free again: the listener serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = TcpStream::connect(addr).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            s.write_all(b"GET /metadata HTTP/1.1\r\nHost: localhost\r\n\r\n")
                .ok()?;
            let mut buf = [0u8; 64];
            let n = s.read(&mut buf).ok()?;
            Some(buf[..n].starts_with(b"HTTP/1.1 200"))
        });
        if served == Some(true) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the listener did not serve again"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
