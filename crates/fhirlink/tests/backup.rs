//! Backups (issue #15), end to end with the real binary: `fhirlink backup --to FILE` taken
//! while Patients are being written, `fhirlink restore` into a new folder, and a server on it
//! that has every write acknowledged before the backup began, the control plane's resources,
//! and the original issuer and CA. And what restore refuses.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::admin::{token_for, AdminServer, BIN, SUB};
use serde_json::{json, Value};

/// The data plane without TLS or tokens (this is about the store); the management API runs
/// its defaults: HTTPS with the data folder's CA, and tokens.
const DATA_PLANE: &[&str] = &["--plain-http", "--auth", "none"];

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn vnet() -> String {
    format!("{}/providers/Microsoft.Network/virtualNetworks/vnet1", rg())
}

fn restore(from: &Path, data: &Path, extra: &[&str]) -> Output {
    Command::new(BIN)
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("FHIRLINK_LOG", "warn")
        .output()
        .expect("run fhirlink restore")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn take_backup(server: &AdminServer, to: &Path) -> Output {
    server.cli(&["backup", "--to", to.to_str().expect("utf-8 path")])
}

#[test]
fn a_backup_taken_during_ingest_restores_every_acknowledged_write_and_the_control_plane() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let server = AdminServer::start_in(&data, DATA_PLANE);
    // A token of the original server's issuer, used again against the restored one.
    let token = server.token("admin");
    let (status, v, _) = server.call(
        "PUT",
        &format!("{}?api-version=2025-04-01", rg()),
        Some(&token),
        Some(&json!({"location": "westus2"})),
    );
    assert!(status == 200 || status == 201, "{status} {v}");
    let (status, v, _) = server.call(
        "PUT",
        &format!("{}?api-version=2024-07-01", vnet()),
        Some(&token),
        Some(&json!({"location": "westus2", "properties": {"addressSpace": {"addressPrefixes": ["127.20.0.0/16"]}}})),
    );
    assert!(status == 200 || status == 201, "{status} {v}");

    // The writer: each Patient's id with the instant its 201 arrived.
    let acked: Arc<Mutex<Vec<(String, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop, base) = (acked.clone(), stop.clone(), server.base.clone());
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client");
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let body = json!({"resourceType": "Patient", "name": [{"family": format!("Writer{n}")}], "text": {"status": "generated", "div": format!("<div xmlns=\"http://www.w3.org/1999/xhtml\">{}</div>", "x".repeat(500))}});
                let r = client
                    .post(format!("{base}/Patient"))
                    .header("content-type", "application/fhir+json")
                    .body(body.to_string())
                    .send()
                    .expect("create");
                assert_eq!(r.status().as_u16(), 201);
                let v: Value = r.json().expect("json");
                let id = v["id"].as_str().expect("id").to_owned();
                acked.lock().expect("lock").push((id, Instant::now()));
            }
        })
    };
    let waited = Instant::now();
    while acked.lock().expect("lock").len() < 3000 {
        assert!(
            waited.elapsed() < Duration::from_secs(30),
            "the writer is too slow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let file = tmp.path().join("backup.tar");
    let began = Instant::now();
    let out = take_backup(&server, &file);
    let took = began.elapsed();
    assert!(out.status.success(), "fhirlink backup: {}", text(&out));
    let during_backup = acked
        .lock()
        .expect("lock")
        .iter()
        .filter(|(_, t)| *t >= began)
        .count();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let acked = acked.lock().expect("lock").clone();
    let before: Vec<&String> = acked
        .iter()
        .filter(|(_, t)| *t < began)
        .map(|(id, _)| id)
        .collect();
    let size = std::fs::metadata(&file).expect("backup file").len();
    eprintln!(
        "backup: {size} bytes in {took:?}; {} Patients acknowledged before it, {during_backup} during it, {} in all\n{}",
        before.len(),
        acked.len(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a backup holds secret keys");
    }
    let status = server.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status}");

    let restored = tmp.path().join("restored");
    let out = restore(&file, &restored, &[]);
    assert!(out.status.success(), "fhirlink restore: {}", text(&out));
    let server = AdminServer::start_in(&restored, DATA_PLANE);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    for id in &before {
        let r = client
            .get(format!("{}/Patient/{id}", server.base))
            .send()
            .expect("read");
        assert_eq!(
            r.status().as_u16(),
            200,
            "Patient/{id}, acknowledged before the backup"
        );
    }
    let v: Value = client
        .get(format!("{}/Patient?_summary=count", server.base))
        .send()
        .expect("count")
        .json()
        .expect("json");
    let total = v["total"].as_u64().expect("total") as usize;
    assert!(
        total >= before.len() && total <= acked.len(),
        "{total} Patients restored: {} acknowledged before, {} in all",
        before.len(),
        acked.len()
    );
    // The control plane's state, asked with a token the original server's issuer signed.
    for id in [rg(), vnet()] {
        let version = if id.contains("Microsoft.Network") {
            "2024-07-01"
        } else {
            "2025-04-01"
        };
        let (status, v, _) = server.call(
            "GET",
            &format!("{id}?api-version={version}"),
            Some(&token),
            None,
        );
        assert_eq!(status, 200, "{id}: {v}");
    }
    // The CA came back too: clients that trust the old ca.pem trust the restored server.
    assert_eq!(
        std::fs::read(data.join("tls/ca.pem")).expect("old CA"),
        std::fs::read(restored.join("tls/ca.pem")).expect("restored CA")
    );
}

#[test]
fn restore_refuses_what_is_not_a_whole_backup_and_a_folder_in_use() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let server = AdminServer::start_in(&data, DATA_PLANE);
    // Only the Owner at the root scope may take a backup: it holds the signing key.
    let mallory = token_for(&data, "mallory", "10m");
    let (status, v, _) = server.call("POST", "/fhirlink/backup", Some(&mallory), None);
    assert_eq!(status, 403, "{v}");
    assert_eq!(v["error"]["code"], "AuthorizationFailed");
    let (status, _, _) = server.call("POST", "/fhirlink/backup", None, None);
    assert_eq!(status, 401);

    let good = tmp.path().join("good.tar");
    let out = take_backup(&server, &good);
    assert!(out.status.success(), "fhirlink backup: {}", text(&out));

    // The running server's folder, even with --force.
    let out = restore(&good, &data, &["--force"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("stop the fhirlink server"),
        "{}",
        text(&out)
    );

    // One byte changed in the middle (the database).
    let mut bytes = std::fs::read(&good).expect("read");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    let corrupted = tmp.path().join("corrupted.tar");
    std::fs::write(&corrupted, &bytes).expect("write");
    let target = tmp.path().join("target");
    let out = restore(&corrupted, &target, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is corrupted"), "{}", text(&out));
    assert!(!target.exists(), "nothing laid down");

    // Cut short.
    let truncated = tmp.path().join("truncated.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).expect("write");
    let out = restore(&truncated, &target, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(!target.exists(), "nothing laid down");

    // No backup at all.
    let other = tmp.path().join("notes.txt");
    std::fs::write(&other, "these are not the files you are looking for\n").expect("write");
    let out = restore(&other, &target, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is not a fhirlink backup"),
        "{}",
        text(&out)
    );

    // A folder with something in it, unless --force, which moves it aside.
    std::fs::create_dir_all(&target).expect("mkdir");
    std::fs::write(target.join("keep.txt"), "mine").expect("write");
    let out = restore(&good, &target, &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("is not empty"), "{}", text(&out));
    let out = restore(&good, &target, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(target.join("fhirlink.db").exists());
    let aside: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("ls")
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("target.replaced-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read_to_string(aside[0].path().join("keep.txt")).expect("kept"),
        "mine"
    );
}
