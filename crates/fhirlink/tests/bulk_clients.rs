//! Two real bulk export clients against the binary with its defaults (HTTPS, tokens): SMART's
//! `smart-fetch` (PyPI, pinned in sdk-tests/bulk-requirements.txt, venv made by
//! sdk-tests/setup-bulk-venv: FHIRLINK_BULK_PYTHON) and Medplum's `MedplumClient.bulkExport`
//! (npm @medplum/core, sdk-tests/js/bulk.mjs). Each kicks off, polls and downloads with a
//! bearer token of a FHIR Data Exporter holding `system/*.read` — smart-fetch also with SMART
//! Backend Services credentials, getting its token from the service's token endpoint — and
//! what it wrote must be exactly what was loaded. Installed by scripts/test; never skipped.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::admin::{client_trusting, data_token, AdminServer};
use serde_json::{json, Value};

const HOME: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fhirlink";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A server with three patients, their observations and a Group, and a token file of an
/// exporter with `system/*.read`.
fn loaded() -> (
    AdminServer,
    tempfile::TempDir,
    PathBuf,
    BTreeMap<String, Vec<String>>,
) {
    let s = AdminServer::start();
    let client = client_trusting(s.ca.as_deref());
    let owner = data_token(&s.data, "admin", "default", &[]);
    let mut resources = Vec::new();
    for i in 0..3 {
        resources
            .push(json!({"resourceType": "Patient", "id": format!("p{i}"), "gender": "female"}));
        for j in 0..4 {
            resources.push(
                json!({"resourceType": "Observation", "id": format!("o{i}-{j}"),
                "status": "final", "code": {"text": "weight"},
                "subject": {"reference": format!("Patient/p{i}")}}),
            );
        }
    }
    resources.push(
        json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true,
        "member": [{"entity": {"reference": "Patient/p1"}}]}),
    );
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &resources {
        let (t, id) = (
            r["resourceType"].as_str().unwrap(),
            r["id"].as_str().unwrap(),
        );
        let resp = client
            .put(format!("{}/{t}/{id}", s.base))
            .bearer_auth(&owner)
            .header("content-type", "application/fhir+json")
            .body(r.to_string())
            .send()
            .expect("PUT");
        assert!(resp.status().is_success(), "{t}/{id}: {}", resp.status());
        expected
            .entry(t.to_owned())
            .or_default()
            .push(format!("{t}/{id}"));
    }
    for v in expected.values_mut() {
        v.sort();
    }
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "exporter",
        "--role",
        "FHIR Data Exporter",
        "--scope",
        &format!("{HOME}/providers/Microsoft.HealthcareApis/services/default"),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("token");
    std::fs::write(
        &token,
        data_token(&s.data, "exporter", "default", &["system/*.read"]),
    )
    .unwrap();
    (s, tmp, token, expected)
}

fn ca(s: &AdminServer) -> &Path {
    s.ca.as_deref()
        .expect("the binary's own CA (HTTPS by default)")
}

/// The references in every NDJSON file under `dir`, by type.
fn ndjson_refs(dir: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if p.is_dir() {
                stack.push(p);
            } else if name.ends_with(".ndjson") && name != "log.ndjson" {
                for line in std::fs::read_to_string(&p).unwrap().lines() {
                    if line.trim().is_empty() {
                        continue;
                    }
                    let r: Value = serde_json::from_str(line).expect("NDJSON");
                    let (Some(t), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
                        panic!("{}: not a resource: {line}", p.display());
                    };
                    let t = t.to_owned();
                    out.entry(t.clone()).or_default().push(format!("{t}/{id}"));
                }
            }
        }
    }
    for v in out.values_mut() {
        v.sort();
        v.dedup();
    }
    out
}

/// The smart-fetch venv's python and its `smart-fetch` script.
fn smart_fetch() -> (PathBuf, PathBuf) {
    let python = std::env::var_os("FHIRLINK_BULK_PYTHON").unwrap_or_else(|| {
        panic!(
            "FHIRLINK_BULK_PYTHON is not set: run the tests with scripts/test, which makes \
             the smart-fetch venv with sdk-tests/setup-bulk-venv"
        )
    });
    let bin = Path::new(&python).with_file_name("smart-fetch");
    assert!(
        bin.is_file(),
        "{} is missing: run sdk-tests/setup-bulk-venv",
        bin.display()
    );
    (PathBuf::from(python), bin)
}

/// Runs `smart-fetch bulk` for Observation and Patient with `auth` (its credential
/// arguments) and checks that it wrote exactly what was loaded, and logged the exchange.
fn smart_fetch_exports(
    s: &AdminServer,
    tmp: &Path,
    expected: &BTreeMap<String, Vec<String>>,
    auth: &[&std::ffi::OsStr],
) {
    let (_, bin) = smart_fetch();
    let out = tmp.join("smart-fetch");
    let run = Command::new(&bin)
        .args([
            "bulk",
            "--no-compression",
            // Its defaults are a list of US Core types and an Observation category filter.
            "--type",
            "Observation,Patient",
            "--no-default-filters",
            "--fhir-url",
            &s.base,
        ])
        .args(auth)
        .arg(&out)
        .env("SSL_CERT_FILE", ca(s))
        .env("REQUESTS_CA_BUNDLE", ca(s))
        .env("HOME", tmp)
        .output()
        .expect("run smart-fetch");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "smart-fetch failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    let mut expected = expected.clone();
    expected.remove("Group"); // not a type smart-fetch knows
    assert_eq!(ndjson_refs(&out), expected, "{stdout}\n{stderr}");
    // Its log (the Bulk Data client log format) records the whole exchange.
    let log = std::fs::read_to_string(out.join("log.ndjson")).expect("smart-fetch's log");
    let events: Vec<String> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["eventId"].as_str().map(str::to_owned))
        .collect();
    for event in ["kickoff", "status_complete", "export_complete"] {
        assert!(
            events.iter().any(|e| e == event),
            "{event} not in {events:?}"
        );
    }
}

#[test]
fn smart_fetch_exports_with_a_bearer_token() {
    let (s, tmp, token, expected) = loaded();
    smart_fetch_exports(
        &s,
        tmp.path(),
        &expected,
        &["--bearer-token".as_ref(), token.as_os_str()],
    );
}

/// SMART Backend Services end to end with a real client: smart-fetch reads the service's
/// SMART configuration, signs an RS384 assertion with its JWK Set (made by jwcrypto, the
/// library it signs with), gets a token from the service's token endpoint and exports.
#[test]
fn smart_fetch_exports_with_backend_services_credentials() {
    let (python, _) = smart_fetch();
    let (s, tmp, _, expected) = loaded();
    // The client's key pair as smart-fetch keeps it: a private JWK Set, `key_ops: [sign]`.
    let private = tmp.path().join("client.jwks");
    let made = Command::new(&python)
        .arg("-c")
        .arg(
            "import json, sys\n\
             from jwcrypto import jwk\n\
             k = jwk.JWK.generate(kty='RSA', size=2048, kid='bulk-1', alg='RS384', key_ops=['sign'])\n\
             open(sys.argv[1], 'w').write(json.dumps({'keys': [json.loads(k.export(private_key=True))]}))\n",
        )
        .arg(&private)
        .output()
        .expect("run python");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // Registered with its public half (the CLI drops the private members), as an exporter.
    s.cli_json(&[
        "client",
        "create",
        "--service",
        "default",
        "--name",
        "smart-fetch",
        "--jwks",
        private.to_str().unwrap(),
        "--scope",
        "system/*.read",
    ]);
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "smart-fetch",
        "--role",
        "FHIR Data Exporter",
        "--scope",
        &format!("{HOME}/providers/Microsoft.HealthcareApis/services/default"),
    ]);
    smart_fetch_exports(
        &s,
        tmp.path(),
        &expected,
        &[
            "--smart-client-id".as_ref(),
            "smart-fetch".as_ref(),
            "--smart-key".as_ref(),
            private.as_os_str(),
        ],
    );
}

#[test]
fn medplum_bulk_export_completes() {
    let root = workspace();
    let module = root.join("sdk-tests/js/node_modules/@medplum/core/package.json");
    assert!(
        module.is_file(),
        "@medplum/core is not installed: run scripts/test (npm ci in sdk-tests/js)"
    );
    let (s, _tmp, token, expected) = loaded();
    let run = |level: &str, types: Option<&str>| -> Value {
        let mut cmd = Command::new("node");
        cmd.arg("sdk-tests/js/bulk.mjs")
            .arg(&s.base)
            .arg(&token)
            .arg(level);
        if let Some(t) = types {
            cmd.arg(t);
        }
        let out = cmd
            .current_dir(&root)
            .env("NODE_EXTRA_CA_CERTS", ca(&s))
            .output()
            .unwrap_or_else(|e| panic!("run node (Node.js 20 or later is needed): {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "bulk.mjs {level} failed ({}):\n{stdout}\n{stderr}",
            out.status
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let all = run("", None);
    assert_eq!(all["request"], format!("{}/$export", s.base));
    assert_eq!(all["found"], json!(expected));
    let group = run("Group/g1", Some("Patient,Observation"));
    assert_eq!(
        group["found"],
        json!({"Observation": ["Observation/o1-0", "Observation/o1-1", "Observation/o1-2", "Observation/o1-3"],
               "Patient": ["Patient/p1"]})
    );
}
