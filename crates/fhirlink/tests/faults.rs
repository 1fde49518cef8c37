//! Faults, end to end against the real binary (issue #15): a full disk (a small tmpfs as the
//! data folder) answers 507 with an OperationOutcome, loses nothing acknowledged, keeps the
//! audit log whole and counts what it dropped, and passes by itself once space is freed; a
//! damaged or foreign database file is refused at start with a message naming it; SIGKILL in
//! the middle of management changes leaves a control plane whose listeners match its stored
//! state after the restart.
//!
//! The tmpfs needs root, which the suite runs as (CI too): the test fails, never skips,
//! without it.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::admin::{AdminServer, BIN, SUB};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------------------
// A full disk.

/// A small tmpfs, unmounted when dropped (also when the test fails).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the disk-full test mounts a tmpfs and must run as root"
        );
        let dir = tempfile::tempdir().expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mount -t tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills what is left with zeros, leaving about `leave` bytes free.
    fn fill(&self, leave: u64) -> PathBuf {
        use std::io::Write;
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            let free = free_bytes(self.path());
            if free <= leave {
                break;
            }
            let n = usize::try_from((free - leave).min(block.len() as u64)).unwrap_or(0);
            if n == 0 || f.write_all(&block[..n]).is_err() {
                break;
            }
        }
        path
    }

    /// Takes what is left too, appending to the filler until the disk refuses.
    fn top_up(&self, filler: &Path) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(filler)
            .expect("filler");
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let mut bytes = 0;
        while bytes < 4096 && f.write_all(&[0]).is_ok() {
            bytes += 1;
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}

fn free_bytes(path: &Path) -> u64 {
    let out = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .expect("df");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

fn series(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// One create on the data plane: status, body, and the request's correlation id.
fn create(client: &reqwest::blocking::Client, base: &str, n: usize) -> (u16, Value, String) {
    let body = json!({"resourceType": "Patient", "name": [{"family": format!("Full{n}"),
        "text": "x".repeat(3000)}]});
    let r = client
        .post(format!("{base}/Patient"))
        .header("content-type", "application/fhir+json")
        .body(body.to_string())
        .send()
        .expect("create");
    let status = r.status().as_u16();
    let rid = r
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let retry_after = r.headers().get("retry-after").is_some();
    let text = r.text().expect("body");
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status == 507 {
        assert!(retry_after, "507 without Retry-After");
    }
    (status, v, rid)
}

// Regression (issue #15, defect 5): on a full disk writes answered 500 "storage failure", and
// audit.ndjson got a torn line (a partial record glued to the next) while the dropped
// records were only logged. Now: 507 with an OperationOutcome and Retry-After, every
// acknowledged write kept, the audit file whole, its drops counted on /metrics, and writes
// and audit records passing again once space is freed, without a restart.
#[test]
fn regression_15_5_disk_full_answers_507_keeps_the_audit_whole_and_recovers() {
    let fs = Tmpfs::mount("24m");
    let data = fs.path().join("data");
    let s = AdminServer::start_in(&data, &["--plain-http", "--auth", "none"]);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut acknowledged = Vec::new();
    for n in 0..5 {
        let (status, v, _) = create(&client, &s.base, n);
        assert_eq!(status, 201, "{v}");
        acknowledged.push(v["id"].as_str().expect("id").to_owned());
    }
    let filler = fs.fill(192 * 1024);

    let mut refused = None;
    for n in 5..3000 {
        let (status, v, _) = create(&client, &s.base, n);
        match status {
            201 => acknowledged.push(v["id"].as_str().expect("id").to_owned()),
            507 => {
                refused = Some(v);
                break;
            }
            other => panic!("a write on a full disk answered {other}: {v}"),
        }
    }
    let outcome = refused.expect("the disk filled up: some write answered 507");
    common::assert_outcome(&outcome, "exception", None);
    let said = outcome["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default();
    assert!(said.contains("insufficient storage"), "{outcome}");
    // More writes while full: each is acknowledged or 507, never anything else.
    for n in 3000..3010 {
        let (status, v, _) = create(&client, &s.base, n);
        match status {
            201 => acknowledged.push(v["id"].as_str().expect("id").to_owned()),
            507 => {}
            other => panic!("a write on a full disk answered {other}: {v}"),
        }
    }
    // Not a byte left: reads still answer, every acknowledged write is there, and the audit
    // records the disk cannot take are dropped whole and counted, visibly.
    fs.top_up(&filler);
    for id in &acknowledged {
        let r = client
            .get(format!("{}/Patient/{id}", s.base))
            .send()
            .expect("read");
        assert_eq!(
            r.status().as_u16(),
            200,
            "acknowledged Patient/{id} is there"
        );
    }
    let token = s.token("admin");
    let deadline = Instant::now() + Duration::from_secs(10);
    let (dropped, errors) = loop {
        let (status, metrics, _) = s.call("GET", "/metrics", Some(&token), None);
        assert_eq!(status, 200, "{metrics}");
        let metrics = metrics.as_str().unwrap_or_default();
        let dropped = series(metrics, "fhirlink_audit_dropped_total").unwrap_or(0.0);
        let errors = series(metrics, "fhirlink_audit_write_errors_total").unwrap_or(0.0);
        if (dropped >= 1.0 && errors >= 1.0) || Instant::now() > deadline {
            break (dropped, errors);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        dropped >= 1.0 && errors >= 1.0,
        "the records lost to the full disk are counted: dropped {dropped}, write errors {errors}"
    );

    // Space comes back: writes pass again, without a restart.
    std::fs::remove_file(&filler).expect("free the space");
    let (status, v, rid) = create(&client, &s.base, 9000);
    assert_eq!(status, 201, "a write once space is freed: {v}");
    acknowledged.push(v["id"].as_str().expect("id").to_owned());
    let (status, v, _) = create(&client, &s.base, 9001);
    assert_eq!(status, 201, "and the next: {v}");

    // The audit log resumed by itself and holds whole lines only.
    let audit = data.join("audit").join("audit.ndjson");
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&audit).expect("audit.ndjson");
        if text.contains(&rid) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        text.contains(&rid),
        "the record of the write after the disk had room again is in audit.ndjson"
    );
    assert!(text.ends_with('\n'), "audit.ndjson ends with a whole line");
    for (i, line) in text.lines().enumerate() {
        let parsed: Result<Value, _> = serde_json::from_str(line);
        assert!(
            parsed
                .as_ref()
                .is_ok_and(|v| v["correlationId"].is_string()),
            "audit.ndjson line {} is not one whole record: {line:?}",
            i + 1
        );
    }
    drop(s);

    // Nothing was damaged: the folder serves again, with every acknowledged write.
    let s = AdminServer::start_in(&data, &["--plain-http", "--auth", "none"]);
    for id in &acknowledged {
        let r = client
            .get(format!("{}/Patient/{id}", s.base))
            .send()
            .expect("read");
        assert_eq!(r.status().as_u16(), 200, "Patient/{id} after the restart");
    }
}

// ---------------------------------------------------------------------------------------
// A database file that is not fhirlink's.

/// Runs `fhirlink serve` on `data`, which must refuse to start: its exit status and stderr.
fn serve_refused(data: &Path) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--plain-http",
            "--auth",
            "none",
        ])
        .arg("--data")
        .arg(data)
        .env("FHIRLINK_LOG", "warn")
        .env("FHIRLINK_DNS_LISTEN", "127.0.0.1:0")
        .env("FHIRLINK_ADMIN_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fhirlink");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = o.read_to_string(&mut out);
            }
            panic!(
                "fhirlink served {} instead of refusing it: {out}",
                data.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    assert!(!out.contains("listening on"), "nothing was served: {out}");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, err)
}

#[test]
fn regression_15_faults_corrupted_database_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data folder");
    let db = data.join("fhirlink.db");
    let garbage: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&db, &garbage).expect("garbage");
    let (status, err) = serve_refused(&data);
    assert!(!status.success(), "exit status {status}: {err}");
    assert!(
        err.contains(&db.display().to_string()) && err.contains("not a SQLite database"),
        "the message names the file and says what is wrong: {err}"
    );
    assert_eq!(std::fs::read(&db).expect("read"), garbage, "left as it was");
}

#[test]
fn regression_15_faults_foreign_sqlite_database_is_refused_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data folder");
    let db = data.join("fhirlink.db");
    // Another application's database, with its own tables and id (made with Python's
    // sqlite3 module, as the SDK tests' Python is there anyway).
    let script = "import sqlite3, sys\n\
        c = sqlite3.connect(sys.argv[1])\n\
        c.executescript('PRAGMA application_id = 1598903374; PRAGMA user_version = 3; \
        CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT, balance REAL); \
        INSERT INTO accounts (owner, balance) VALUES (\\'alice\\', 10.5);')\n\
        c.commit()\n\
        c.close()\n";
    let made = Command::new("python3")
        .args(["-c", script])
        .arg(&db)
        .output()
        .expect("python3");
    assert!(
        made.status.success(),
        "python3: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let before = std::fs::read(&db).expect("read");
    let (status, err) = serve_refused(&data);
    assert!(!status.success(), "exit status {status}: {err}");
    assert!(
        err.contains(&db.display().to_string()) && err.contains("is not a fhirlink database"),
        "the message names the file and says what is wrong: {err}"
    );
    assert_eq!(std::fs::read(&db).expect("read"), before, "left as it was");
    assert!(
        !data.join("fhirlink.db-wal").exists(),
        "never switched to WAL"
    );
}

// ---------------------------------------------------------------------------------------
// SIGKILL during management changes.

const RG_API: &str = "api-version=2021-04-01";
const FHIR_API: &str = "api-version=2024-03-31";
const NET_API: &str = "api-version=2024-07-01";
const SVC: &str = "killfhir";

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn service_id() -> String {
    format!("{}/providers/Microsoft.HealthcareApis/services/{SVC}", rg())
}

fn net(path: &str) -> String {
    format!("{}/providers/Microsoft.Network/{path}", rg())
}

fn pe_body(subnet: &str, manual: bool) -> Value {
    let list = if manual {
        "manualPrivateLinkServiceConnections"
    } else {
        "privateLinkServiceConnections"
    };
    json!({"location": "westus2", "properties": {
        "subnet": {"id": net(&format!("virtualNetworks/hub/subnets/{subnet}"))},
        list: [{"name": "conn", "properties": {
            "privateLinkServiceId": service_id(), "groupIds": ["fhir"],
            "requestMessage": "please"}}]
    }})
}

/// The management calls the killed server is in the middle of, in order.
fn mutations() -> Vec<(&'static str, String, Option<Value>)> {
    let mut m = Vec::new();
    for (name, manual) in [("pe1", false), ("pe2", true), ("pe3", true), ("pe4", false)] {
        m.push((
            "PUT",
            format!("{}?{NET_API}", net(&format!("privateEndpoints/{name}"))),
            Some(pe_body("endpoints", manual)),
        ));
    }
    m.push((
        "PUT",
        format!("{}?{NET_API}", net("virtualNetworks/hub/subnets/more")),
        Some(json!({"properties": {"addressPrefix": "127.10.3.0/24"}})),
    ));
    m.push(("APPROVE", "pe2".into(), None));
    m.push((
        "PUT",
        format!("{}?{NET_API}", net("privateEndpoints/pe5")),
        Some(pe_body("more", false)),
    ));
    m.push(("REJECT", "pe4".into(), None));
    m.push((
        "DELETE",
        format!("{}?{NET_API}", net("privateEndpoints/pe1")),
        None,
    ));
    m.push(("APPROVE", "pe3".into(), None));
    m.push((
        "PUT",
        format!("{}?{NET_API}", net("privateEndpoints/pe6")),
        Some(pe_body("more", true)),
    ));
    m.push((
        "DELETE",
        format!("{}?{NET_API}", net("privateEndpoints/pe5")),
        None,
    ));
    m
}

/// One management call; `None` when the server is not there to answer (killed).
fn try_call(
    s: &AdminServer,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&Value>,
) -> Option<(u16, Value)> {
    let mut req = s
        .client()
        .request(method.parse().ok()?, format!("{}{path}", s.admin_url))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req.send().ok()?;
    let status = resp.status().as_u16();
    let text = resp.text().ok()?;
    Some((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The service's connection of endpoint `pe` (its name on the service side).
fn connection_of(s: &AdminServer, token: &str, pe: &str) -> Option<Value> {
    let (status, list) = try_call(
        s,
        "GET",
        &format!("{}/privateEndpointConnections?{FHIR_API}", service_id()),
        token,
        None,
    )?;
    if status != 200 {
        return None;
    }
    list["value"].as_array()?.iter().find_map(|c| {
        let id = c["properties"]["privateEndpoint"]["id"].as_str()?;
        id.to_lowercase()
            .ends_with(&format!("/privateendpoints/{pe}"))
            .then(|| c.clone())
    })
}

/// Sets the state of `pe`'s connection on the service.
fn set_connection(s: &AdminServer, token: &str, pe: &str, status: &str) -> Option<u16> {
    let c = connection_of(s, token, pe)?;
    let name = c["name"].as_str()?.to_owned();
    let body = json!({"properties": {"privateLinkServiceConnectionState": {
        "status": status, "description": "by the kill test"}}});
    try_call(
        s,
        "PUT",
        &format!(
            "{}/privateEndpointConnections/{name}?{FHIR_API}",
            service_id()
        ),
        token,
        Some(&body),
    )
    .map(|(status, _)| status)
}

/// Runs the mutations one after the other until the server goes away; how many answered.
/// `started` counts the mutations sent so far.
fn run_mutations(s: &AdminServer, token: &str, started: &AtomicUsize) -> usize {
    let mut done = 0;
    for (method, path, body) in mutations() {
        started.fetch_add(1, Ordering::SeqCst);
        let answered = match method {
            "APPROVE" => set_connection(s, token, &path, "Approved"),
            "REJECT" => set_connection(s, token, &path, "Rejected"),
            _ => try_call(s, method, &path, token, body.as_ref()).map(|(status, _)| status),
        };
        match answered {
            Some(_) => done += 1,
            // The server is gone (killed): the rest is never sent.
            None => break,
        }
    }
    done
}

fn ip_of(pe: &Value) -> Option<String> {
    pe.pointer("/properties/customDnsConfigs/0/ipAddresses/0")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn pe_connection_status(pe: &Value) -> String {
    [
        "privateLinkServiceConnections",
        "manualPrivateLinkServiceConnections",
    ]
    .iter()
    .find_map(|list| {
        pe["properties"][list][0]["properties"]["privateLinkServiceConnectionState"]["status"]
            .as_str()
            .map(str::to_owned)
    })
    .unwrap_or_default()
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// The control plane after the restart: every resource answers, both sides of every
/// connection agree, and exactly the Approved endpoints have a listener.
fn assert_consistent(s: &AdminServer, token: &str, ctx: &str) {
    for path in [
        format!("{}?{RG_API}", rg()),
        format!("{}?{FHIR_API}", service_id()),
        format!("{}?{NET_API}", net("virtualNetworks/hub")),
    ] {
        let (status, v, _) = s.call("GET", &path, Some(token), None);
        assert_eq!(status, 200, "{ctx}: GET {path}: {v}");
    }
    let (status, list, _) = s.call(
        "GET",
        &format!("{}?{NET_API}", net("privateEndpoints")),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{ctx}: list endpoints: {list}");
    let pes = list["value"].as_array().cloned().unwrap_or_default();
    let port: u16 = s
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    for pe in &pes {
        let name = pe["name"].as_str().unwrap_or_default().to_owned();
        let id = pe["id"].as_str().unwrap_or_default();
        let (status, shown, _) = s.call("GET", &format!("{id}?{NET_API}"), Some(token), None);
        assert_eq!(status, 200, "{ctx}: GET {id}: {shown}");
        assert_eq!(
            shown["properties"]["provisioningState"], "Succeeded",
            "{ctx}: {name}: {shown}"
        );
        let endpoint_side = pe_connection_status(&shown);
        let service_side = connection_of(s, token, &name.to_lowercase())
            .and_then(|c| {
                c["properties"]["privateLinkServiceConnectionState"]["status"]
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        assert_eq!(
            endpoint_side, service_side,
            "{ctx}: {name}: both sides of the connection agree"
        );
        let ip = ip_of(&shown).unwrap_or_else(|| panic!("{ctx}: {name} has an address: {shown}"));
        let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
        let want = endpoint_side == "Approved";
        // The plan is applied as the server starts; give the listeners a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while listening(addr) != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            listening(addr),
            want,
            "{ctx}: {name} ({endpoint_side}) at {addr}: a listener exactly when Approved"
        );
    }
    // No connection on the service side without its endpoint.
    let (status, conns, _) = s.call(
        "GET",
        &format!("{}/privateEndpointConnections?{FHIR_API}", service_id()),
        Some(token),
        None,
    );
    assert_eq!(status, 200, "{ctx}: {conns}");
    for c in conns["value"].as_array().cloned().unwrap_or_default() {
        let pe = c["properties"]["privateEndpoint"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        assert!(
            pes.iter()
                .any(|p| p["id"].as_str().is_some_and(|i| i.to_lowercase() == pe)),
            "{ctx}: connection {} names a missing endpoint {pe}",
            c["name"]
        );
    }
    // Addresses where no endpoint is stored have no listener either.
    for last in 4..12 {
        let ip = format!("127.10.1.{last}");
        let stored = pes.iter().any(|p| ip_of(p).as_deref() == Some(&ip));
        if !stored {
            let addr: SocketAddr = format!("{ip}:{port}").parse().expect("address");
            assert!(
                !listening(addr),
                "{ctx}: a listener at {addr} for no endpoint"
            );
        }
    }
}

/// A pseudo-random number from the clock, printed so that a failure can be replayed.
fn jitter(bound: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    nanos.wrapping_mul(6_364_136_223_846_793_005) % bound.max(1)
}

#[test]
fn fault_sigkill_during_management_changes_leaves_listeners_matching_state() {
    let started = Instant::now();
    let total = mutations().len();
    // Killed while mutation `k` is in flight (or just after it), for a spread of `k`: a
    // management call takes milliseconds, so the kill lands within `k`'s few milliseconds.
    for k in [1, 2, 3, 4, 6, 7, 8, 10, 11, 12] {
        let k = k.min(total);
        let within = Duration::from_micros(jitter(15_000));
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("data");
        let s = AdminServer::start_in(&data, &[]);
        let token = s.token("admin");
        for (path, body) in [
            (format!("{}?{RG_API}", rg()), json!({"location": "westus2"})),
            (
                format!("{}?{FHIR_API}", service_id()),
                json!({"location": "westus2", "kind": "fhir-R4",
                    "properties": {"accessPolicies": []}}),
            ),
            (
                format!("{}?{NET_API}", net("virtualNetworks/hub")),
                json!({"location": "westus2", "properties": {
                    "addressSpace": {"addressPrefixes": ["127.10.0.0/16"]},
                    "subnets": [{"name": "endpoints",
                        "properties": {"addressPrefix": "127.10.1.0/24"}}]}}),
            ),
        ] {
            let (status, v, _) = s.call("PUT", &path, Some(&token), Some(&body));
            assert!(status == 200 || status == 201, "PUT {path}: {status} {v}");
        }
        let pid = s.pid();
        let sent = AtomicUsize::new(0);
        let done = std::thread::scope(|scope| {
            let worker = scope.spawn(|| run_mutations(&s, &token, &sent));
            let deadline = Instant::now() + Duration::from_secs(10);
            while sent.load(Ordering::SeqCst) < k && Instant::now() < deadline {
                std::thread::sleep(Duration::from_micros(200));
            }
            std::thread::sleep(within);
            let killed = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status()
                .expect("kill");
            assert!(killed.success(), "SIGKILL {pid}");
            worker.join().unwrap_or(0)
        });
        let ctx =
            format!("SIGKILL {within:?} after sending mutation {k} of {total} ({done} answered)");
        println!("{ctx}");
        s.kill();
        let s = AdminServer::start_in(&data, &[]);
        let token = s.token("admin");
        assert_consistent(&s, &token, &ctx);
        drop(s);
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: took {:?}",
        started.elapsed()
    );
}
