//! `fhirlink serve --store postgres://…` (issue #17): the binary with its defaults (HTTPS,
//! tokens) on a scratch database of the PostgreSQL at 127.0.0.1:5432 — FHIR data and the
//! control plane's documents written there survive a kill and restart (with only the data
//! folder's keys kept beside it), a bad URL is refused at start with the password hidden,
//! and `fhirlink backup` says to use PostgreSQL's own tools. Fails, never skips, without
//! PostgreSQL (scripts/test starts it).

mod common;

use std::process::Command;

use common::admin::{client_trusting, data_token, AdminServer};
use fhir_store_postgres::scratch::ScratchDatabase;
use serde_json::{json, Value};

fn scratch() -> ScratchDatabase {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(ScratchDatabase::create())
        .unwrap_or_else(|e| panic!("scratch database: {e}"))
}

#[test]
fn serve_on_postgres_keeps_data_across_a_restart() {
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = ["--store", url.as_str()];
    let s = AdminServer::start_in(&data, &flags);
    let client = client_trusting(s.ca.as_deref());
    let token = data_token(&s.data, "admin", "default", &[]);
    let r = client
        .put(format!("{}/Patient/p1", s.base))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    // A control-plane document: a resource group.
    s.cli_json(&["group", "create", "-n", "rg-pg", "-l", "westus2"]);
    // Backups are PostgreSQL's own business.
    let backup = s.cli(&["backup", "--to", tmp.path().join("b.tar").to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&backup.stderr);
    assert!(!backup.status.success());
    assert!(
        stderr.contains("BackupNotSupported") && stderr.contains("PostgreSQL"),
        "{stderr}"
    );
    s.kill();

    let s = AdminServer::start_in(&data, &flags);
    let client = client_trusting(s.ca.as_deref());
    let token = data_token(&s.data, "admin", "default", &[]);
    let r = client
        .get(format!("{}/Patient?birthdate=1970-01-01", s.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let bundle: Value = r.json().unwrap();
    assert_eq!(bundle["total"], 1, "{bundle}");
    assert_eq!(bundle["entry"][0]["resource"]["id"], "p1");
    let groups = s.cli_json(&["group", "list"]);
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "rg-pg"),
        "{groups}"
    );
    drop(s);
}

#[test]
fn a_store_that_cannot_be_opened_is_refused_at_start_without_its_password() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fhirlink"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--dns-listen", "127.0.0.1:0", "--data"])
        .arg(tmp.path().join("data"))
        .args([
            "--store",
            "postgres://postgres:s3cret@127.0.0.1:5432/fhirlink_no_such_database",
            "--store-connect-timeout",
            "5s",
        ])
        .env("FHIRLINK_LOG", "warn")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("opening the store postgres://postgres:***@127.0.0.1:5432"),
        "{stderr}"
    );
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let out = Command::new(env!("CARGO_BIN_EXE_fhirlink"))
        .args(["serve", "--store", "mysql://x", "--data"])
        .arg(tmp.path().join("data2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--store must be sqlite or a postgres:// URL"));
}

/// `fhirlink store copy`: a deployment run on SQLite, stopped, copied into PostgreSQL, and
/// run again with `--store` on the same data folder serves what it did — the resource, its
/// history and versions, a deletion, a search, and the control plane's resource group; a
/// running server's folder is refused (its lock), and so is a second copy into the now
/// non-empty database.
#[test]
fn store_copy_moves_a_deployment_to_postgres() {
    let db = scratch();
    let url = db.url();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = AdminServer::start_in(&data, &[]);
    let client = client_trusting(s.ca.as_deref());
    let token = data_token(&s.data, "admin", "default", &[]);
    let put = |body: Value| {
        let r = client
            .put(format!(
                "{}/Patient/{}",
                s.base,
                body["id"].as_str().unwrap()
            ))
            .bearer_auth(&token)
            .header("content-type", "application/fhir+json")
            .body(body.to_string())
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    };
    put(json!({"resourceType": "Patient", "id": "p1", "birthDate": "1970-01-01"}));
    put(json!({"resourceType": "Patient", "id": "p1", "birthDate": "1971-01-01"}));
    put(json!({"resourceType": "Patient", "id": "p2", "birthDate": "1980-01-01"}));
    let r = client
        .delete(format!("{}/Patient/p2", s.base))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 204);
    s.cli_json(&["group", "create", "-n", "rg-copied", "-l", "westus2"]);
    let get = |s: &AdminServer, path: &str| -> (u16, Value) {
        let client = client_trusting(s.ca.as_deref());
        let token = data_token(&s.data, "admin", "default", &[]);
        let r = client
            .get(format!("{}/{path}", s.base))
            .bearer_auth(&token)
            .send()
            .unwrap();
        (r.status().as_u16(), r.json().unwrap_or(Value::Null))
    };
    let before: Vec<(u16, Value)> = ["Patient/p1", "Patient/p1/_history/1", "Patient/p1/_history"]
        .iter()
        .map(|p| get(&s, p))
        .collect();

    // Refused while the server holds the folder.
    let copy = || {
        Command::new(env!("CARGO_BIN_EXE_fhirlink"))
            .args([
                "store",
                "copy",
                "--from",
                data.to_str().unwrap(),
                "--to",
                &url,
            ])
            .env("FHIRLINK_LOG", "warn")
            .output()
            .unwrap()
    };
    let run = copy();
    assert!(
        !run.status.success(),
        "a running server's store is not copied"
    );
    s.kill();
    let run = copy();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(stderr.contains("copied 1 services, 4 versions"), "{stderr}");

    let s = AdminServer::start_in(&data, &["--store", url.as_str()]);
    let after: Vec<(u16, Value)> = ["Patient/p1", "Patient/p1/_history/1", "Patient/p1/_history"]
        .iter()
        .map(|p| get(&s, p))
        .collect();
    assert_eq!(before[0], after[0], "the current version");
    assert_eq!(before[1], after[1], "an old version");
    assert_eq!(before[2].1["total"], after[2].1["total"], "the history");
    let entries = |v: &Value| -> Vec<Value> {
        v["entry"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["resource"].clone())
            .collect()
    };
    assert_eq!(entries(&before[2].1), entries(&after[2].1));
    assert_eq!(get(&s, "Patient/p2").0, 410, "the deletion");
    let (_, found) = get(&s, "Patient?birthdate=1971-01-01");
    assert_eq!(found["total"], 1, "searchable: {found}");
    let groups = s.cli_json(&["group", "list"]);
    assert!(
        groups
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "rg-copied"),
        "{groups}"
    );
    s.kill();
    let run = copy();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("empty store only"), "{stderr}");
}
