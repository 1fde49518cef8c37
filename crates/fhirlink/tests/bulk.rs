//! Bulk export end to end against the binary with its defaults (HTTPS, tokens): kick-off,
//! polling, the manifest, downloads, `_type`, `_since` with deletions, `_typeFilter`, a
//! Group export, cancel then 404, the job limit, output expiry, a restart mid-export, and
//! who may do what (FHIR Data Exporter; a reader is refused; no token is 401).

mod common;

use std::time::{Duration, Instant};

use common::admin::{client_trusting, data_token, AdminServer};
use serde_json::{json, Value};

const HOME: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fhirlink";

struct Data<'a> {
    s: &'a AdminServer,
    client: reqwest::blocking::Client,
}

struct Answer {
    status: u16,
    body: Value,
    text: String,
    headers: reqwest::header::HeaderMap,
}

impl<'a> Data<'a> {
    fn new(s: &'a AdminServer) -> Data<'a> {
        Data {
            s,
            client: client_trusting(s.ca.as_deref()),
        }
    }

    /// `path` relative to the base, or an absolute URL (a status or file URL).
    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let url = if path.starts_with("https://") {
            path.to_owned()
        } else {
            format!("{}/{}", self.s.base, path.trim_start_matches('/'))
        };
        let mut req = self.client.request(method.parse().expect("method"), url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/fhir+json")
                .body(b.to_string());
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().expect("data-plane request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().expect("body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer {
            status,
            body,
            text,
            headers,
        }
    }

    fn put(&self, token: &str, resource: Value) {
        let path = format!(
            "{}/{}",
            resource["resourceType"].as_str().unwrap(),
            resource["id"].as_str().unwrap()
        );
        let a = self.send("PUT", &path, Some(token), Some(&resource), &[]);
        assert!(a.status == 200 || a.status == 201, "PUT {path}: {}", a.text);
    }

    /// Kicks off and returns the status URL.
    fn kick_off(&self, token: &str, path: &str) -> String {
        let a = self.send(
            "GET",
            path,
            Some(token),
            None,
            &[
                ("prefer", "respond-async"),
                ("accept", "application/fhir+json"),
            ],
        );
        assert_eq!(a.status, 202, "kick-off {path}: {}", a.text);
        a.headers["content-location"].to_str().unwrap().to_owned()
    }

    /// Polls until done (honouring Retry-After); the manifest.
    fn wait(&self, token: &str, status_url: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let a = self.send(
                "GET",
                status_url,
                Some(token),
                None,
                &[("accept", "application/json")],
            );
            match a.status {
                200 => {
                    assert!(
                        a.headers["content-type"]
                            .to_str()
                            .unwrap()
                            .starts_with("application/json"),
                        "{:?}",
                        a.headers
                    );
                    assert!(a.headers.contains_key("expires"), "{:?}", a.headers);
                    return a.body;
                }
                202 => {
                    assert!(a.headers.contains_key("retry-after"), "{:?}", a.headers);
                    assert!(a.headers.contains_key("x-progress"), "{:?}", a.headers);
                }
                429 => {}
                other => panic!("poll: {other} {}", a.text),
            }
            assert!(Instant::now() < deadline, "the export did not finish");
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The resources of every file of `list`, by type (each line checked as one JSON).
    fn files(&self, token: &str, manifest: &Value, list: &str) -> Vec<Value> {
        let mut out = Vec::new();
        for f in manifest[list].as_array().expect("a file list") {
            let url = f["url"].as_str().unwrap();
            let a = self.send("GET", url, Some(token), None, &[]);
            assert_eq!(a.status, 200, "{url}: {}", a.text);
            assert_eq!(a.headers["content-type"], "application/fhir+ndjson");
            let lines: Vec<Value> = a
                .text
                .lines()
                .map(|l| serde_json::from_str(l).expect("NDJSON"))
                .collect();
            assert_eq!(lines.len() as u64, f["count"].as_u64().unwrap(), "{url}");
            out.extend(lines);
        }
        out
    }
}

fn grant(s: &AdminServer, principal: &str, role: &str) {
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        principal,
        "--role",
        role,
        "--scope",
        &format!("{HOME}/providers/Microsoft.HealthcareApis/services/default"),
    ]);
}

fn refs(resources: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

fn patient(id: &str, gender: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "gender": gender})
}

fn observation(id: &str, subject: &str, status: &str) -> Value {
    json!({"resourceType": "Observation", "id": id, "status": status, "code": {"text": "x"},
           "subject": {"reference": format!("Patient/{subject}")}})
}

#[test]
fn export_kick_off_poll_manifest_download_and_who_may() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    for (id, g) in [("p1", "female"), ("p2", "male")] {
        d.put(&owner, patient(id, g));
    }
    d.put(&owner, observation("o1", "p1", "final"));
    d.put(&owner, observation("o2", "p2", "preliminary"));
    d.put(
        &owner,
        json!({"resourceType": "Group", "id": "g1", "type": "person", "actual": true,
               "member": [{"entity": {"reference": "Patient/p2"}}]}),
    );
    grant(&s, "exporter", "FHIR Data Exporter");
    grant(&s, "reader", "FHIR Data Reader");
    let exporter = data_token(&s.data, "exporter", "default", &[]);
    let reader = data_token(&s.data, "reader", "default", &[]);

    // Who may: a reader is refused (403), no token is 401, a patient/ scope is refused.
    let a = d.send(
        "GET",
        "$export",
        Some(&reader),
        None,
        &[("prefer", "respond-async")],
    );
    assert_eq!(a.status, 403, "{}", a.text);
    assert_eq!(a.body["issue"][0]["code"], "forbidden");
    assert_eq!(d.send("GET", "$export", None, None, &[]).status, 401);
    let scoped = data_token(&s.data, "exporter", "default", &["patient/*.read"]);
    assert_eq!(
        d.send("GET", "$export", Some(&scoped), None, &[]).status,
        403
    );
    let system = data_token(&s.data, "exporter", "default", &["system/*.read"]);

    // System level, with system/*.read.
    let url = d.kick_off(&system, "$export");
    assert!(
        url.starts_with(&format!("{}/_operations/export/", s.base)),
        "{url}"
    );
    let manifest = d.wait(&system, &url);
    assert_eq!(manifest["requiresAccessToken"], true);
    assert_eq!(manifest["request"], format!("{}/$export", s.base));
    assert_eq!(manifest["error"], json!([]));
    let all = d.files(&exporter, &manifest, "output");
    assert_eq!(
        refs(&all),
        [
            "Group/g1",
            "Observation/o1",
            "Observation/o2",
            "Patient/p1",
            "Patient/p2"
        ]
    );
    // The files are the exporter's: a reader and an anonymous caller get none.
    let file = manifest["output"][0]["url"].as_str().unwrap();
    assert_eq!(d.send("GET", file, Some(&reader), None, &[]).status, 403);
    assert_eq!(d.send("GET", file, None, None, &[]).status, 401);
    assert_eq!(d.send("GET", &url, Some(&reader), None, &[]).status, 403);

    // _type and _typeFilter; POST with the parameters in the query and no body (Medplum).
    let a = d.send(
        "POST",
        "$export?_type=Observation&_typeFilter=Observation%3Fstatus%3Dfinal",
        Some(&exporter),
        None,
        &[("prefer", "respond-async")],
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let url = a.headers["content-location"].to_str().unwrap().to_owned();
    let got = d.files(&exporter, &d.wait(&exporter, &url), "output");
    assert_eq!(refs(&got), ["Observation/o1"]);

    // POST with a Parameters body, at the Patient level.
    let body = json!({"resourceType": "Parameters", "parameter": [
        {"name": "_type", "valueString": "Patient,Observation"},
        {"name": "patient", "valueReference": {"reference": "Patient/p1"}}]});
    let a = d.send(
        "POST",
        "Patient/$export",
        Some(&exporter),
        Some(&body),
        &[("prefer", "respond-async")],
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let url = a.headers["content-location"].to_str().unwrap().to_owned();
    let got = d.files(&exporter, &d.wait(&exporter, &url), "output");
    assert_eq!(refs(&got), ["Observation/o1", "Patient/p1"]);

    // A Group: its members' compartments (the Group itself is in Patient/p2's, by its
    // `member` parameter in R4's CompartmentDefinition).
    let url = d.kick_off(&exporter, "Group/g1/$export");
    let got = d.files(&exporter, &d.wait(&exporter, &url), "output");
    assert_eq!(refs(&got), ["Group/g1", "Observation/o2", "Patient/p2"]);
    let a = d.send("GET", "Group/nope/$export", Some(&exporter), None, &[]);
    assert_eq!(a.status, 404, "{}", a.text);

    // Bad parameters: 400 naming the parameter; lenient handling ignores unknown ones.
    let a = d.send(
        "GET",
        "$export?_outputFormat=text/csv",
        Some(&exporter),
        None,
        &[],
    );
    assert_eq!(a.status, 400, "{}", a.text);
    assert_eq!(a.body["issue"][0]["expression"][0], "_outputFormat");
    let a = d.send("GET", "$export?_bogus=1", Some(&exporter), None, &[]);
    assert_eq!(a.status, 400, "{}", a.text);
    let a = d.send(
        "GET",
        "$export?_bogus=1&_type=Patient",
        Some(&exporter),
        None,
        &[("prefer", "respond-async, handling=lenient")],
    );
    assert_eq!(a.status, 202, "{}", a.text);
    let url = a.headers["content-location"].to_str().unwrap().to_owned();
    d.wait(&exporter, &url);

    // Cancel: 202, then the status URL is 404 with an OperationOutcome.
    let url = d.kick_off(&exporter, "$export");
    let a = d.send("DELETE", &url, Some(&exporter), None, &[]);
    assert_eq!(a.status, 202, "{}", a.text);
    let a = d.send("GET", &url, Some(&exporter), None, &[]);
    assert_eq!(a.status, 404, "{}", a.text);
    assert_eq!(a.body["resourceType"], "OperationOutcome");

    // The CapabilityStatement instantiates the Bulk Data server and names the operations.
    let cs = d.send("GET", "metadata", None, None, &[]).body;
    assert_eq!(
        cs["instantiates"],
        json!(["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"])
    );
    assert_eq!(
        cs["rest"][0]["operation"][0],
        json!({"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"})
    );
    assert_eq!(cs["rest"][0]["operation"][1]["name"], "import");
    // Then the system-level operations every server has ($meta).
    assert_eq!(cs["rest"][0]["operation"][2]["name"], "meta");
    assert_eq!(cs["rest"][0]["operation"].as_array().map(Vec::len), Some(3));
    let of = |t: &str| {
        let r = cs["rest"][0]["resource"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["type"] == t)
            .unwrap();
        r["operation"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "export")
            .unwrap()["definition"]
            .clone()
    };
    assert_eq!(
        of("Patient"),
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
    );
    assert_eq!(
        of("Group"),
        "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
    );

    // Every kick-off, poll and download left its audit record, under its own action.
    let audit = s.data.join("audit").join("audit.ndjson");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records: Vec<Value> = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let count = |action: &str, status: u64| {
            records
                .iter()
                .filter(|r| r["action"] == action && r["status"] == status)
                .count()
        };
        let done = count("operation", 202) >= 6
            && count("operation", 403) >= 2
            && count("job-status", 200) >= 5
            && count("job-status", 403) >= 1
            && count("job-file", 200) >= 5
            && count("job-file", 403) >= 1;
        if done {
            let file = records
                .iter()
                .find(|r| r["action"] == "job-file" && r["status"] == 200)
                .unwrap();
            assert_eq!(file["principal"], "exporter", "{file}");
            assert!(file["path"]
                .as_str()
                .unwrap()
                .starts_with("/_operations/export/"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "audit records of the export missing"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn since_reports_deletions_and_history_keeps_versions() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    d.put(&owner, patient("old", "male"));
    d.put(&owner, patient("gone", "male"));
    let first = d.kick_off(&owner, "$export");
    let since = d.wait(&owner, &first)["transactionTime"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(5));
    d.put(&owner, patient("new", "female"));
    assert_eq!(
        d.send("DELETE", "Patient/gone", Some(&owner), None, &[])
            .status,
        204
    );

    let url = d.kick_off(
        &owner,
        &format!("$export?_since={}", since.replace('+', "%2B")),
    );
    let manifest = d.wait(&owner, &url);
    let got = d.files(&owner, &manifest, "output");
    assert_eq!(refs(&got), ["Patient/new"]);
    let deleted = d.files(&owner, &manifest, "deleted");
    assert_eq!(
        deleted[0]["entry"],
        json!([{"request": {"method": "DELETE", "url": "Patient/gone"}}])
    );

    let url = d.kick_off(&owner, "$export?includeAssociatedData=_history,_deleted");
    let got = d.files(&owner, &d.wait(&owner, &url), "output");
    let versions: Vec<String> = got
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["id"].as_str().unwrap(),
                r["meta"]["versionId"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(versions, ["gone@1", "gone@2", "new@1", "old@1"]);
}

#[test]
fn the_job_limit_expiry_and_a_restart_mid_export() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let flags = [
        "--bulk-max-jobs",
        "1",
        "--bulk-retention",
        "5s",
        "--bulk-file-lines",
        "20",
    ];
    let s = AdminServer::start_in(&data, &flags);
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    let entries: Vec<Value> = (0..2000)
        .map(|i| {
            json!({"resource": patient(&format!("p{i}"), "female"),
                   "request": {"method": "PUT", "url": format!("Patient/p{i}")}})
        })
        .collect();
    let a = d.send(
        "POST",
        "",
        Some(&owner),
        Some(&json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})),
        &[],
    );
    assert_eq!(a.status, 200, "{}", a.text);

    // One job at a time: the second kick-off is 429 with Retry-After.
    let url = d.kick_off(&owner, "$export");
    let a = d.send("GET", "$export", Some(&owner), None, &[]);
    if a.status != 202 {
        assert_eq!(a.status, 429, "{}", a.text);
        assert!(a.headers.contains_key("retry-after"));
    }
    // Killed right after the kick-off: the job is taken up again after the restart (from its
    // snapshot) and completes with every file, or it had completed already.
    drop(d);
    s.kill();
    let s = AdminServer::start_in(&data, &flags);
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    let url = url.replace(url.split("/_operations").next().unwrap(), &s.base);
    let manifest = d.wait(&owner, &url);
    let got = d.files(&owner, &manifest, "output");
    assert_eq!(got.len(), 2000, "every patient, in files of 20");
    assert_eq!(manifest["output"].as_array().unwrap().len(), 100);

    // Kept for the retention, then gone (the sweep runs within a second or so).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let a = d.send("GET", &url, Some(&owner), None, &[]);
        if a.status == 404 {
            break;
        }
        assert!(matches!(a.status, 200 | 429), "{}", a.text);
        assert!(Instant::now() < deadline, "the finished job did not expire");
        std::thread::sleep(Duration::from_millis(300));
    }
    let file = manifest["output"][0]["url"].as_str().unwrap().to_owned();
    assert_eq!(d.send("GET", &file, Some(&owner), None, &[]).status, 404);
}

/// `fhirlink export`: kick-off, poll and download into a folder, over HTTPS with a token it
/// mints from the data folder's key; every file whole, the manifest beside them, progress as
/// log lines (stderr is not a terminal here); a refused export is a failure naming why.
#[test]
fn the_export_command_downloads_every_file() {
    let s = AdminServer::start_with(&["--bulk-file-lines", "2"]);
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    for i in 0..5 {
        d.put(&owner, patient(&format!("p{i}"), "female"));
    }
    d.put(&owner, observation("o1", "p1", "final"));
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    let run = s.cli(&[
        "export",
        "--fhir-url",
        &s.base,
        "--out",
        out.to_str().unwrap(),
        "--type",
        "Patient,Observation",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("exported 6 resources in 4 files"),
        "{stderr}"
    );
    assert!(
        stderr.contains("downloaded Patient-1.ndjson: 2 resources"),
        "{stderr}"
    );
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "Observation-1.ndjson",
            "Patient-1.ndjson",
            "Patient-2.ndjson",
            "Patient-3.ndjson",
            "manifest.json"
        ]
    );
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["output"].as_array().unwrap().len(), 4);
    let mut ids = Vec::new();
    for n in &names[..4] {
        for line in std::fs::read_to_string(out.join(n)).unwrap().lines() {
            let r: Value = serde_json::from_str(line).unwrap();
            ids.push(format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            ));
        }
    }
    ids.sort();
    assert_eq!(
        ids,
        [
            "Observation/o1",
            "Patient/p0",
            "Patient/p1",
            "Patient/p2",
            "Patient/p3",
            "Patient/p4"
        ]
    );

    // A principal without the export right: the server's refusal, in words.
    let run = s.cli(&[
        "export",
        "--fhir-url",
        &s.base,
        "--out",
        tmp.path().join("refused").to_str().unwrap(),
        "--principal",
        "stranger",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("403") && stderr.contains("export"),
        "{stderr}"
    );
}

/// `$import` end to end, as a migration uses it: one fhirlink exports its history with
/// Azure's `includeAssociatedData=_history,_deleted`, the files go unchanged into another
/// fhirlink's import folder, and an IncrementalLoad there brings the same resources with the
/// same versions, instants, history and soft deletes. A file with broken lines lands its good
/// lines and reports each bad one with its line number; the server stays healthy. Who may:
/// a FHIR Data Importer, not a reader; files outside the import folder are refused.
#[test]
fn import_keeps_history_reports_broken_lines_and_who_may() {
    let a = AdminServer::start();
    let da = Data::new(&a);
    let owner_a = data_token(&a.data, "admin", "default", &[]);
    da.put(&owner_a, patient("p1", "female"));
    da.put(&owner_a, patient("p1", "male"));
    da.put(&owner_a, patient("p2", "female"));
    assert_eq!(
        da.send("DELETE", "Patient/p2", Some(&owner_a), None, &[])
            .status,
        204
    );
    da.put(&owner_a, observation("o1", "p1", "final"));
    let url = da.kick_off(&owner_a, "$export?includeAssociatedData=_history,_deleted");
    let manifest = da.wait(&owner_a, &url);

    let inbox = tempfile::tempdir().unwrap();
    let mut inputs = Vec::new();
    for f in manifest["output"].as_array().unwrap() {
        let file_url = f["url"].as_str().unwrap();
        let got = da.send("GET", file_url, Some(&owner_a), None, &[]);
        assert_eq!(got.status, 200);
        let name = file_url.rsplit('/').next().unwrap();
        let path = inbox.path().join(name);
        std::fs::write(&path, &got.text).unwrap();
        inputs.push((f["type"].as_str().unwrap().to_owned(), path));
    }
    let broken = inbox.path().join("Patient-broken.ndjson");
    std::fs::write(
        &broken,
        format!(
            "{}\n{{\"resourceType\": \"Patient\", \"id\": \"p9\", \"gender\": 5}}\nnot json\n{}\n",
            patient("p7", "female"),
            patient("p8", "male")
        ),
    )
    .unwrap();
    inputs.push(("Patient".into(), broken.clone()));

    let b = AdminServer::start_with(&["--import-dir", &inbox.path().to_string_lossy()]);
    let db = Data::new(&b);
    grant(&b, "importer", "FHIR Data Importer");
    grant(&b, "reader", "FHIR Data Reader");
    let importer = data_token(&b.data, "importer", "default", &[]);
    let reader = data_token(&b.data, "reader", "default", &[]);
    let owner_b = data_token(&b.data, "admin", "default", &[]);
    let parameters = |inputs: &[(String, std::path::PathBuf)]| {
        let mut p = vec![
            json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"}),
            json!({"name": "mode", "valueString": "IncrementalLoad"}),
        ];
        for (t, path) in inputs {
            p.push(json!({"name": "input", "part": [
                {"name": "type", "valueString": t},
                {"name": "url", "valueString": format!("file://{}", path.display())}
            ]}));
        }
        json!({"resourceType": "Parameters", "parameter": p})
    };
    let body = parameters(&inputs);
    let async_ = [("prefer", "respond-async")];

    // Who may.
    let r = db.send("POST", "$import", Some(&reader), Some(&body), &async_);
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("FHIR Data Importer"), "{}", r.text);
    assert_eq!(
        db.send("POST", "$import", None, Some(&body), &async_)
            .status,
        401
    );
    let r = db.send("GET", "$import", Some(&importer), None, &[]);
    assert_eq!(r.status, 405, "{}", r.text);
    let scoped = data_token(&b.data, "importer", "default", &["system/*.read"]);
    let r = db.send("POST", "$import", Some(&scoped), Some(&body), &async_);
    assert_eq!(
        r.status, 403,
        "a read-only scope may not import: {}",
        r.text
    );
    // A file outside the import folder is a 400 naming the input's url.
    let outside = tempfile::NamedTempFile::new().unwrap();
    let r = db.send(
        "POST",
        "$import",
        Some(&importer),
        Some(&parameters(&[(
            "Patient".into(),
            outside.path().to_path_buf(),
        )])),
        &async_,
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        r.body["issue"][0]["expression"][0],
        "Parameters.parameter[2].part[1]"
    );

    // The import.
    let r = db.send("POST", "$import", Some(&importer), Some(&body), &async_);
    assert_eq!(r.status, 202, "{}", r.text);
    let status = r.headers["content-location"].to_str().unwrap().to_owned();
    assert!(
        status.starts_with(&format!("{}/_operations/import/", b.base)),
        "{status}"
    );
    assert_eq!(
        db.send("GET", &status, Some(&reader), None, &[]).status,
        403
    );
    let done = db.wait(&importer, &status);
    let count = |t: &str| -> u64 {
        done["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == t)
            .map(|o| o["count"].as_u64().unwrap())
            .sum()
    };
    // p1 v1, v2; p2 v1 and its deletion; p7, p8; o1.
    assert_eq!((count("Patient"), count("Observation")), (6, 1), "{done}");
    let errors = done["error"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{done}");
    assert_eq!(errors[0]["count"], 2);
    assert_eq!(
        errors[0]["inputUrl"],
        format!("file://{}", broken.display())
    );
    let e = db.send(
        "GET",
        errors[0]["url"].as_str().unwrap(),
        Some(&importer),
        None,
        &[],
    );
    assert_eq!(e.status, 200, "{}", e.text);
    let said: Vec<Value> = e
        .text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        said[0]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .starts_with("line 2 of "),
        "{}",
        e.text
    );
    assert_eq!(said[0]["issue"][0]["expression"][0], "Patient.gender");
    assert!(said[1]["issue"][0]["diagnostics"]
        .as_str()
        .unwrap()
        .starts_with("line 3 of "));

    // The same resources, versions, instants and history on both sides.
    for path in ["Patient/p1", "Observation/o1", "Patient/p1/_history/1"] {
        let x = da.send("GET", path, Some(&owner_a), None, &[]);
        let y = db.send("GET", path, Some(&owner_b), None, &[]);
        assert_eq!((x.status, y.status), (200, 200), "{path}: {}", y.text);
        assert_eq!(x.body, y.body, "{path}");
    }
    let h = db.send("GET", "Patient/p1/_history", Some(&owner_b), None, &[]);
    let versions: Vec<&str> = h.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["meta"]["versionId"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"]);
    let gone = db.send("GET", "Patient/p2", Some(&owner_b), None, &[]);
    assert_eq!(
        gone.status, 410,
        "the soft delete came along: {}",
        gone.text
    );
    let s = db.send("GET", "Patient?gender=male", Some(&owner_b), None, &[]);
    assert_eq!(
        s.body["total"], 2,
        "imported resources are indexed: {}",
        s.text
    );
    assert_eq!(db.send("GET", "metadata", None, None, &[]).status, 200);

    // Cancel (of a finished job) forgets it: 404 after.
    assert_eq!(
        db.send("DELETE", &status, Some(&importer), None, &[])
            .status,
        202
    );
    let r = db.send("GET", &status, Some(&importer), None, &[]);
    assert_eq!(r.status, 404, "{}", r.text);
    assert_eq!(r.body["resourceType"], "OperationOutcome");
}

/// `fhirlink import`: a folder of export output (file names as an export writes them) into a
/// service, with a token it mints for an importer; the summary line, and a refused line as a
/// failure exit that names its error file while the good lines are in.
/// `$import` of `https:` inputs, straight from another fhirlink's export files: only URLs
/// under an operator's `--import-url` prefix are taken (others, and `http:`, are a 400 naming
/// the input), the prefix's token file is sent (the longest prefix decides which), the source's
/// private CA is trusted by `--import-ca`, and the resources arrive with their versions and
/// history. A URL under a prefix without a token reaches the source unauthenticated: its 401
/// fails the job with an OperationOutcome saying so.
#[test]
fn import_reads_https_inputs_under_an_allowed_prefix_only() {
    let a = AdminServer::start();
    let da = Data::new(&a);
    let owner_a = data_token(&a.data, "admin", "default", &[]);
    da.put(&owner_a, patient("p1", "female"));
    da.put(&owner_a, patient("p1", "male"));
    da.put(&owner_a, patient("p2", "female"));
    da.put(&owner_a, observation("o1", "p1", "final"));
    let url = da.kick_off(&owner_a, "$export?includeAssociatedData=_history");
    let manifest = da.wait(&owner_a, &url);

    let tmp = tempfile::tempdir().unwrap();
    let token = tmp.path().join("source-token");
    std::fs::write(&token, &owner_a).unwrap();
    let root = format!("{}/", a.base);
    let exports = format!("{}/_operations/export/", a.base);
    let b = AdminServer::start_with(&[
        "--import-url",
        &root,
        "--import-url",
        &exports,
        "--import-url-token",
        &format!("{exports}={}", token.display()),
        "--import-ca",
        &a.ca.as_ref().expect("the source's CA").to_string_lossy(),
    ]);
    let db = Data::new(&b);
    let owner_b = data_token(&b.data, "admin", "default", &[]);
    let parameters = |urls: &[(&str, &str)]| {
        let mut p = vec![json!({"name": "inputFormat", "valueString": "application/fhir+ndjson"})];
        for (t, u) in urls {
            p.push(json!({"name": "input", "part": [
                {"name": "type", "valueString": t},
                {"name": "url", "valueUri": u}
            ]}));
        }
        json!({"resourceType": "Parameters", "parameter": p})
    };
    let async_ = [("prefer", "respond-async")];

    // Not under a prefix, or not https: refused at the kick-off, naming the input's url.
    let port = a.base.rsplit(':').next().unwrap().trim_end_matches('/');
    for outside in [
        format!("https://127.0.0.2:{port}/_operations/export/x/Patient-1.ndjson"),
        format!(
            "{}/_operations/export/x/Patient-1.ndjson",
            a.base.replacen("https", "http", 1)
        ),
        "https://storage.example/Patient-1.ndjson".to_owned(),
    ] {
        let r = db.send(
            "POST",
            "$import",
            Some(&owner_b),
            Some(&parameters(&[("Patient", &outside)])),
            &async_,
        );
        assert_eq!(r.status, 400, "{outside}: {}", r.text);
        assert_eq!(
            r.body["issue"][0]["expression"][0], "Parameters.parameter[1].part[1]",
            "{}",
            r.text
        );
    }

    // The export's files, fetched with the token of their prefix.
    let inputs: Vec<(String, String)> = manifest["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["type"].as_str().unwrap().to_owned(),
                f["url"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        inputs.iter().all(|(_, u)| u.starts_with(&exports)),
        "{inputs:?}"
    );
    let pairs: Vec<(&str, &str)> = inputs
        .iter()
        .map(|(t, u)| (t.as_str(), u.as_str()))
        .collect();
    let r = db.send(
        "POST",
        "$import",
        Some(&owner_b),
        Some(&parameters(&pairs)),
        &async_,
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let status = r.headers["content-location"].to_str().unwrap().to_owned();
    let done = db.wait(&owner_b, &status);
    let count = |t: &str| -> u64 {
        done["output"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == t)
            .map(|o| o["count"].as_u64().unwrap())
            .sum()
    };
    assert_eq!((count("Patient"), count("Observation")), (3, 1), "{done}");
    assert_eq!(done["error"], json!([]), "{done}");
    for path in [
        "Patient/p1",
        "Patient/p1/_history/1",
        "Patient/p2",
        "Observation/o1",
    ] {
        let x = da.send("GET", path, Some(&owner_a), None, &[]);
        let y = db.send("GET", path, Some(&owner_b), None, &[]);
        assert_eq!((x.status, y.status), (200, 200), "{path}: {}", y.text);
        assert_eq!(x.body, y.body, "{path}");
    }

    // Under the root prefix, which has no token: the source answers 401 and the job fails
    // saying so.
    let unauthenticated = format!("{}/Patient", a.base);
    let r = db.send(
        "POST",
        "$import",
        Some(&owner_b),
        Some(&parameters(&[("Patient", &unauthenticated)])),
        &async_,
    );
    assert_eq!(r.status, 202, "{}", r.text);
    let status = r.headers["content-location"].to_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let failed = loop {
        let p = db.send("GET", &status, Some(&owner_b), None, &[]);
        if p.status != 202 && p.status != 429 {
            break p;
        }
        assert!(Instant::now() < deadline, "the import did not end");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(failed.status >= 400, "{} {}", failed.status, failed.text);
    assert_eq!(
        failed.body["resourceType"], "OperationOutcome",
        "{}",
        failed.text
    );
    assert!(failed.text.contains("401"), "{}", failed.text);
}

#[test]
fn the_import_command_imports_a_folder() {
    let inbox = tempfile::tempdir().unwrap();
    let dir = inbox.path().join("from-azure");
    std::fs::create_dir(&dir).unwrap();
    let line = |v: Value| v.to_string() + "\n";
    std::fs::write(
        dir.join("Patient-1.ndjson"),
        line(patient("p1", "female")) + &line(patient("p2", "male")),
    )
    .unwrap();
    std::fs::write(
        dir.join("Observation.000.ndjson"),
        line(observation("o1", "p1", "final")),
    )
    .unwrap();
    std::fs::write(dir.join("manifest.json"), "{}").unwrap();
    let s = AdminServer::start_with(&["--import-dir", &inbox.path().to_string_lossy()]);
    grant(&s, "importer", "FHIR Data Importer");
    let run = s.cli(&[
        "import",
        dir.to_str().unwrap(),
        "--fhir-url",
        &s.base,
        "--principal",
        "importer",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains("imported 3 resources from 2 files") && stderr.contains("0 lines refused"),
        "{stderr}"
    );
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    assert_eq!(
        d.send("GET", "Observation/o1", Some(&owner), None, &[])
            .status,
        200
    );

    // A broken line: the good one lands, the run fails naming the error file.
    let broken = dir.join("Patient-2.ndjson");
    std::fs::write(&broken, "{oops\n".to_owned() + &line(patient("p3", "male"))).unwrap();
    let run = s.cli(&[
        "import",
        broken.to_str().unwrap(),
        "--fhir-url",
        &s.base,
        "--principal",
        "importer",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success(), "{stderr}");
    assert!(stderr.contains("1 lines were refused"), "{stderr}");
    assert!(stderr.contains("/_operations/import/"), "{stderr}");
    assert_eq!(
        d.send("GET", "Patient/p3", Some(&owner), None, &[]).status,
        200
    );

    // Without the import right: the server's refusal, in words.
    let run = s.cli(&[
        "import",
        dir.to_str().unwrap(),
        "--fhir-url",
        &s.base,
        "--principal",
        "stranger",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains("403") && stderr.contains("import"),
        "{stderr}"
    );
    // A file outside every import folder: the server's 400.
    let elsewhere = tempfile::tempdir().unwrap();
    let outside = elsewhere.path().join("Patient-1.ndjson");
    std::fs::write(&outside, line(patient("p9", "male"))).unwrap();
    let run = s.cli(&[
        "import",
        outside.to_str().unwrap(),
        "--fhir-url",
        &s.base,
        "--principal",
        "importer",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(stderr.contains("not under an import folder"), "{stderr}");
}

/// `fhirlink migrate`: another fhirlink as the source (any IG server would do), its history
/// exported with Azure's `includeAssociatedData`, downloaded into a folder under the target's
/// import folder, imported, and verified (counts per type and sampled resources equal); then
/// a catch-up window with the `--since` the first run printed brings a later change and a
/// new resource, verified again; a run after a finished download goes on from it.
#[test]
fn migrate_moves_history_catches_up_and_verifies() {
    let a = AdminServer::start();
    let da = Data::new(&a);
    let owner_a = data_token(&a.data, "admin", "default", &[]);
    da.put(&owner_a, patient("p1", "female"));
    da.put(&owner_a, patient("p1", "male"));
    da.put(&owner_a, patient("p2", "female"));
    da.put(&owner_a, observation("o1", "p1", "final"));
    assert_eq!(
        da.send("DELETE", "Patient/p2", Some(&owner_a), None, &[])
            .status,
        204
    );
    let source_token = data_token(&a.data, "admin", "default", &["system/*.read"]);

    let inbox = tempfile::tempdir().unwrap();
    let work = inbox.path().join("migration");
    let b = AdminServer::start_with(&["--import-dir", &inbox.path().to_string_lossy()]);
    let migrate = |extra: &[&str]| {
        let mut args = vec![
            "migrate",
            "--from",
            &a.base,
            "--from-token",
            &source_token,
            "--from-ca-cert",
            a.ca.as_ref().unwrap().to_str().unwrap(),
            "--history",
            "--work",
            work.to_str().unwrap(),
            "--fhir-url",
            &b.base,
            "--verify",
        ];
        args.extend_from_slice(extra);
        let run = b.cli(&args);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        assert!(run.status.success(), "{stderr}");
        stderr
    };
    let first = migrate(&[]);
    assert!(first.contains("verified: the same count"), "{first}");
    assert!(first.contains("verify Patient: 1 on both"), "{first}");
    let since = first
        .split("--since ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no catch-up instant: {first}"))
        .to_owned();
    let db = Data::new(&b);
    let owner_b = data_token(&b.data, "admin", "default", &[]);
    let h = db.send("GET", "Patient/p1/_history", Some(&owner_b), None, &[]);
    assert_eq!(h.body["total"], 2, "history came along: {}", h.text);
    assert_eq!(
        db.send("GET", "Patient/p2", Some(&owner_b), None, &[])
            .status,
        410
    );

    // Run again as it is: the download is reused, nothing is written twice.
    let again = migrate(&[]);
    assert!(again.contains("downloaded by an earlier run"), "{again}");
    assert!(again.contains("migrated 0 resources"), "{again}");

    // A catch-up window.
    da.put(&owner_a, observation("o1", "p1", "amended"));
    da.put(&owner_a, patient("p3", "female"));
    let catch_up = migrate(&["--since", &since]);
    assert!(catch_up.contains("migrated 2 resources"), "{catch_up}");
    assert!(catch_up.contains("verified"), "{catch_up}");
    let o1 = db.send("GET", "Observation/o1", Some(&owner_b), None, &[]);
    assert_eq!(o1.body["status"], "amended");
    assert_eq!(o1.body["meta"]["versionId"], "2");
}
