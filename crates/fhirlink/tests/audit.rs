//! Audit records and metrics end to end, against the real binary: every request on either
//! plane, allowed or refused (network denial, management 401 and 403), leaves exactly one
//! complete record in `<data>/audit/audit.ndjson`, found by the `x-request-id` the client got
//! back; a service's records are exported to the files of its diagnostic settings with
//! AuditLogs enabled and to no other; requests through a private endpoint name it; and
//! `/metrics` exposes the series with their labels to principals who may read metrics at the
//! root, and to no one else. Networks live in 127.0.0.0/8 as in network_plane.rs.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::admin::{AdminServer, SUB};
use serde_json::{json, Value};

const SUFFIX: &str = "azurehealthcareapis.com";
const HUB_VM: &str = "127.10.2.5";
const ENDPOINT_IP: &str = "127.10.1.4";
/// How long a record may take to reach the file (the writer flushes every 25 ms).
const PATIENCE: Duration = Duration::from_secs(10);

/// Every key a record carries, `null` when there is no value.
const KEYS: &[&str] = &[
    "time",
    "service",
    "action",
    "resourceType",
    "resourceId",
    "method",
    "path",
    "query",
    "networkPath",
    "sourceAddress",
    "sourcePort",
    "status",
    "durationMs",
    "correlationId",
    "principal",
    "clientId",
    "verdict",
];

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn service_id(name: &str) -> String {
    format!(
        "{}/providers/Microsoft.HealthcareApis/services/{name}",
        rg()
    )
}

fn audit_file(s: &AdminServer) -> PathBuf {
    s.data.join("audit").join("audit.ndjson")
}

fn lines(file: &Path) -> Vec<Value> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The records of `file` with this correlation id, once at least one is there (and a few
/// flush intervals later, so that a second one would have arrived too).
fn records_for(file: &Path, correlation_id: &str) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let found = || -> Vec<Value> {
            lines(file)
                .into_iter()
                .filter(|r| r["correlationId"] == correlation_id)
                .collect()
        };
        if !found().is_empty() {
            std::thread::sleep(Duration::from_millis(150));
            return found();
        }
        assert!(
            start.elapsed() < PATIENCE,
            "no record {correlation_id} in {}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one record of this request in `audit.ndjson`, checked for completeness.
fn the_record(s: &AdminServer, correlation_id: &str) -> Value {
    let found = records_for(&audit_file(s), correlation_id);
    assert_eq!(found.len(), 1, "exactly one record: {found:?}");
    let r = found.into_iter().next().unwrap_or_default();
    let obj = r.as_object().expect("a record is an object");
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    assert_eq!(keys, KEYS, "{r}");
    let time = r["time"].as_str().expect("time");
    let t = chrono::DateTime::parse_from_rfc3339(time).expect("RFC 3339");
    assert!(time.ends_with('Z'), "UTC: {time}");
    let age = chrono::Utc::now().signed_duration_since(t);
    assert!(
        age >= chrono::Duration::zero() && age < chrono::Duration::seconds(60),
        "{time}"
    );
    assert!(r["durationMs"].as_f64().is_some_and(|d| d >= 0.0), "{r}");
    assert!(r["sourcePort"].as_u64().is_some_and(|p| p > 0), "{r}");
    r
}

fn request_id(headers: &BTreeMap<String, String>) -> String {
    headers
        .get("x-request-id")
        .cloned()
        .unwrap_or_else(|| panic!("no x-request-id in {headers:?}"))
}

struct Reply {
    status: u16,
    headers: BTreeMap<String, String>,
    body: Value,
}

/// One data-plane request with curl from `from` to `addr` (Host and SNI
/// `<service>.<suffix>`), over HTTPS with a token of `admin` (client `audit-tests`).
fn curl(
    s: &AdminServer,
    from: &str,
    addr: &str,
    service: &str,
    method: &str,
    target: &str,
    body: Option<&Value>,
) -> Reply {
    let port = s.base.rsplit(':').next().expect("port");
    let host = format!("{service}.{SUFFIX}");
    let token = common::admin::data_token_with(
        &s.data,
        "admin",
        service,
        &[],
        &["--client-id", "audit-tests"],
    );
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "-i",
        "--max-time",
        "10",
        "--cacert",
        &s.ca.as_ref().expect("CA").to_string_lossy(),
        "-H",
        &format!("Authorization: Bearer {token}"),
        "--interface",
        from,
        "--resolve",
        &format!("{host}:{port}:{addr}"),
        "-X",
        method,
    ]);
    if let Some(b) = body {
        cmd.args(["-H", "Content-Type: application/fhir+json", "--data-binary"])
            .arg(b.to_string());
    }
    cmd.arg(format!("https://{host}:{port}{target}"));
    let out = cmd.output().expect("curl");
    assert!(out.status.success(), "curl {method} {target} from {from}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut head_lines = head.lines();
    let status = head_lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers = head_lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())),
    }
}

fn cli(s: &AdminServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-g", "rg1"]);
    s.cli_json(&all)
}

/// Resource group rg1 with the FHIR services `names`.
fn services(s: &AdminServer, names: &[&str]) {
    cli(s, &["group", "create", "-n", "rg1", "-l", "westus2"]);
    for n in names {
        cli(s, &["fhir", "create", "-n", n]);
        // The test's caller may use each service's data.
        cli(
            s,
            &[
                "role",
                "assignment",
                "create",
                "--assignee",
                "admin",
                "--role",
                "FHIR Data Contributor",
                "--scope",
                &service_id(n),
            ],
        );
    }
}

/// Hub 127.10.0.0/16 with an endpoint subnet and a VM subnet, the private zone linked to it,
/// and an approved endpoint `pe1` for `service` at 127.10.1.4 (which turns its public access
/// off).
fn private_endpoint(s: &AdminServer, service: &str) {
    common::seed::hub(s);
    common::seed::endpoint(s, "pe1", service);
}

/// A diagnostic setting of `service` exporting to `destination` (a storage account id).
fn diagnostic_setting(s: &AdminServer, service: &str, name: &str, destination: &str, logs: bool) {
    let path = format!(
        "{}/providers/Microsoft.Insights/diagnosticSettings/{name}?api-version=2021-05-01-preview",
        service_id(service)
    );
    let body = json!({"properties": {
        "storageAccountId": destination,
        "logs": [{"category": "AuditLogs", "enabled": logs}],
        "metrics": [{"category": "AllMetrics", "enabled": true}]
    }});
    let (status, v, _) = s.call("PUT", &path, Some(&s.token("admin")), Some(&body));
    assert!(status == 200 || status == 201, "{status} {v}");
}

fn storage(account: &str) -> String {
    format!(
        "{}/providers/Microsoft.Storage/storageAccounts/{account}",
        rg()
    )
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

// Allowed data-plane requests of several interactions, each with exactly one complete record;
// the query string is in the record (and only there).
#[test]
fn every_allowed_data_plane_request_leaves_one_complete_record() {
    let s = AdminServer::start();
    let patient = json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}]});
    let created = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "default",
        "POST",
        "/Patient",
        Some(&patient),
    );
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().expect("id").to_owned();
    let read = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "default",
        "GET",
        &format!("/Patient/{id}?_elements=name"),
        None,
    );
    assert_eq!(read.status, 200);
    let search = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "default",
        "GET",
        "/Patient?family=Chalmers&_count=5",
        None,
    );
    assert_eq!(search.status, 200);
    let history = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "default",
        "GET",
        &format!("/Patient/{id}/_history/1"),
        None,
    );
    assert_eq!(history.status, 200);
    let missing = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "default",
        "GET",
        "/Patient/nope",
        None,
    );
    assert_eq!(missing.status, 404);

    let cases = [
        (&created, "create", "POST", "/Patient", None, None, 201),
        (
            &read,
            "read",
            "GET",
            &*format!("/Patient/{id}"),
            Some(id.as_str()),
            Some("_elements=name"),
            200,
        ),
        (
            &search,
            "search-type",
            "GET",
            "/Patient",
            None,
            Some("family=Chalmers&_count=5"),
            200,
        ),
        (
            &history,
            "vread",
            "GET",
            &*format!("/Patient/{id}/_history/1"),
            Some(id.as_str()),
            None,
            200,
        ),
        (
            &missing,
            "read",
            "GET",
            "/Patient/nope",
            Some("nope"),
            None,
            404,
        ),
    ];
    for (reply, action, method, path, resource_id, query, status) in cases {
        let r = the_record(&s, &request_id(&reply.headers));
        let want = json!({
            "service": "default",
            "action": action,
            "resourceType": "Patient",
            "resourceId": resource_id,
            "method": method,
            "path": path,
            "query": query,
            "networkPath": "public",
            "sourceAddress": "127.0.0.1",
            "status": status,
            "correlationId": request_id(&reply.headers),
            "principal": "admin",
            "clientId": "audit-tests",
            "verdict": "allowed",
        });
        for (k, v) in want.as_object().into_iter().flatten() {
            assert_eq!(&r[k], v, "{k} of {action}: {r}");
        }
    }
}

// A network denial (public access disabled by the first approved endpoint) leaves one record
// with the gateway's verdict; a request through the private endpoint names the endpoint as
// its network path and comes from the VM's address.
#[test]
fn denied_and_private_endpoint_requests_leave_one_record_each() {
    let s = AdminServer::start();
    services(&s, &["myfhir"]);
    private_endpoint(&s, "myfhir");

    let denied = curl(
        &s,
        "127.30.1.5",
        "127.0.0.1",
        "myfhir",
        "GET",
        "/metadata",
        None,
    );
    assert_eq!(denied.status, 403, "{}", denied.body);
    let r = the_record(&s, &request_id(&denied.headers));
    assert_eq!(r["verdict"], "public-access-disabled", "{r}");
    assert_eq!(r["status"], 403);
    assert_eq!(r["networkPath"], "public");
    assert_eq!(r["sourceAddress"], "127.30.1.5");
    assert_eq!(r["service"], "myfhir");
    assert_eq!(r["action"], "capabilities");
    assert_eq!(r["resourceType"], Value::Null);

    let through = curl(
        &s,
        HUB_VM,
        ENDPOINT_IP,
        "myfhir",
        "GET",
        "/Patient?name=x",
        None,
    );
    assert_eq!(through.status, 200, "{}", through.body);
    let r = the_record(&s, &request_id(&through.headers));
    let endpoint =
        format!("{}/providers/Microsoft.Network/privateEndpoints/pe1", rg()).to_lowercase();
    assert_eq!(r["networkPath"], endpoint.as_str(), "{r}");
    assert_eq!(r["sourceAddress"], HUB_VM);
    assert_eq!(r["verdict"], "allowed");
    assert_eq!(r["action"], "search-type");
    assert_eq!(r["query"], "name=x");
    assert_eq!(r["service"], "myfhir");
}

// Management requests: allowed, refused for a missing or bad token (401, principal unknown)
// and refused for want of a role (403), each with one complete record carrying the same
// correlation id as x-request-id and ARM's request id headers.
#[test]
fn every_management_request_leaves_one_record_refused_or_not() {
    let s = AdminServer::start();
    services(&s, &["myfhir"]);
    let api = "api-version=2021-04-01";
    let group = format!("{}?{api}", rg());
    let admin = s.token("admin");

    let (status, _, h) = s.call("GET", &group, Some(&admin), None);
    assert_eq!(status, 200);
    let id = h["x-request-id"].to_str().expect("x-request-id").to_owned();
    assert_eq!(h["x-ms-request-id"], id.as_str());
    assert_eq!(h["x-ms-correlation-request-id"], id.as_str());
    let r = the_record(&s, &id);
    let want = json!({
        "service": null,
        "action": "Microsoft.Resources/subscriptions/resourceGroups/read",
        "resourceType": "Microsoft.Resources/resourceGroups",
        "resourceId": rg(),
        "method": "GET",
        "path": rg(),
        "query": api,
        "networkPath": "management",
        "sourceAddress": "127.0.0.1",
        "status": 200,
        "correlationId": id,
        "principal": "admin",
        "clientId": null,
        "verdict": "allowed",
    });
    for (k, v) in want.as_object().into_iter().flatten() {
        assert_eq!(&r[k], v, "{k}: {r}");
    }

    // A write names the service it is about.
    let svc = format!("{}?api-version=2021-11-01", service_id("myfhir"));
    let (status, v, h) = s.call(
        "PATCH",
        &svc,
        Some(&admin),
        Some(&json!({"tags": {"team": "audit"}})),
    );
    assert!(status == 200 || status == 202, "{status} {v}");
    let r = the_record(&s, h["x-request-id"].to_str().expect("id"));
    assert_eq!(
        r["action"], "Microsoft.HealthcareApis/services/write",
        "{r}"
    );
    assert_eq!(r["service"], "myfhir");
    assert_eq!(r["resourceId"], service_id("myfhir").as_str());

    for token in [None, Some("not.a.token")] {
        let (status, _, h) = s.call("GET", &group, token, None);
        assert_eq!(status, 401);
        let r = the_record(&s, h["x-request-id"].to_str().expect("id"));
        assert_eq!(r["verdict"], "unauthenticated", "{r}");
        assert_eq!(r["status"], 401);
        assert_eq!(r["principal"], Value::Null);
        assert_eq!(
            r["action"],
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
        assert_eq!(r["networkPath"], "management");
    }

    let (status, v, h) = s.call("GET", &group, Some(&s.token("mallory")), None);
    assert_eq!(status, 403, "{v}");
    let r = the_record(&s, h["x-request-id"].to_str().expect("id"));
    assert_eq!(r["verdict"], "forbidden", "{r}");
    assert_eq!(r["status"], 403);
    assert_eq!(r["principal"], "mallory");
}

// Diagnostic settings with AuditLogs enabled get the service's records in their own file
// (one per destination, names sanitised); a setting with AuditLogs off, a service without
// settings and the management plane export nothing; the main file has everything.
#[test]
fn diagnostic_settings_with_audit_logs_receive_their_service_records_only() {
    let s = AdminServer::start();
    services(&s, &["withdiag", "nodiag"]);
    diagnostic_setting(&s, "withdiag", "export", &storage("auditstore"), true);
    diagnostic_setting(
        &s,
        "withdiag",
        "metricsonly",
        &storage("metricstore"),
        false,
    );
    // A destination id is user input: this one tries to climb out of the folder.
    diagnostic_setting(
        &s,
        "withdiag",
        "sneaky",
        &format!("{}/../..", storage("x")),
        true,
    );

    let with = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "withdiag",
        "GET",
        "/metadata",
        None,
    );
    assert_eq!(with.status, 200);
    let without = curl(
        &s,
        "127.0.0.1",
        "127.0.0.1",
        "nodiag",
        "GET",
        "/metadata",
        None,
    );
    assert_eq!(without.status, 200);
    let (status, _, h) = s.call(
        "GET",
        &format!("{}?api-version=2021-11-01", service_id("withdiag")),
        Some(&s.token("admin")),
        None,
    );
    assert_eq!(status, 200);
    let management = h["x-request-id"].to_str().expect("id").to_owned();

    let with_id = request_id(&with.headers);
    let main = the_record(&s, &with_id);
    let diagnostics = s.data.join("audit").join("diagnostics");
    let export = diagnostics.join("withdiag/export/auditstore.ndjson");
    let exported = records_for(&export, &with_id);
    assert_eq!(exported, [main], "the same record, once");
    let sneaky = diagnostics.join("withdiag/sneaky/_..ndjson");
    assert_eq!(records_for(&sneaky, &with_id).len(), 1);

    the_record(&s, &request_id(&without.headers));
    the_record(&s, &management);
    let files = files_under(&diagnostics);
    assert_eq!(files, [export, sneaky], "no file for metricsonly or nodiag");
    for f in &files {
        for r in lines(f) {
            assert_eq!(r["service"], "withdiag", "{}: {r}", f.display());
        }
    }
    // Nothing was written outside the audit folder.
    assert!(!s.data.join("audit").join("..").join("_..ndjson").exists());
    assert_eq!(files_under(&s.data.join("audit")).len(), 3);
}

/// The value of the series `name{labels}` in a scrape.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

// /metrics: requests by service, interaction, status and network path (endpoint name,
// public, management), denials by reason, the latency histogram, DNS queries by view and
// response code, audit drops; refused to principals without read at the root scope.
#[test]
fn metrics_expose_the_series_to_readers_at_the_root_only() {
    let s = AdminServer::start();
    services(&s, &["myfhir"]);
    private_endpoint(&s, "myfhir");
    cli(
        &s,
        &[
            "role",
            "assignment",
            "create",
            "--assignee",
            "rgreader",
            "--role",
            "Reader",
        ],
    );
    cli(
        &s,
        &[
            "role",
            "assignment",
            "create",
            "--assignee",
            "rootreader",
            "--role",
            "Reader",
            "--scope",
            "/",
        ],
    );
    for _ in 0..3 {
        let r = curl(&s, HUB_VM, ENDPOINT_IP, "myfhir", "GET", "/metadata", None);
        assert_eq!(r.status, 200);
    }
    let denied = curl(
        &s,
        "127.30.1.5",
        "127.0.0.1",
        "myfhir",
        "GET",
        "/Patient/p1",
        None,
    );
    assert_eq!(denied.status, 403);
    let (status, _, _) = s.call("GET", "/metrics", None, None);
    assert_eq!(status, 401);
    // DNS: the hub view answers the service's name, the public view knows no such name.
    let (ip, port) = s.dns.split_once(':').expect("dns");
    for (from, name) in [
        (HUB_VM, "myfhir.azurehealthcareapis.com"),
        ("127.30.1.5", "nope.azurehealthcareapis.com"),
    ] {
        let out = Command::new("dig")
            .args([
                "-b",
                from,
                "-p",
                port,
                &format!("@{ip}"),
                name,
                "A",
                "+time=2",
                "+tries=2",
                "+short",
            ])
            .output()
            .expect("dig (bind9-dnsutils)");
        assert!(out.status.success());
    }

    for who in ["mallory", "rgreader"] {
        let (status, v, _) = s.call("GET", "/metrics", Some(&s.token(who)), None);
        assert_eq!(status, 403, "{who}: {v}");
        assert_eq!(v["error"]["code"], "AuthorizationFailed", "{v}");
    }
    let (status, v, h) = s.call("GET", "/metrics", Some(&s.token("rootreader")), None);
    assert_eq!(status, 200, "{v}");
    assert!(h["content-type"]
        .to_str()
        .unwrap_or("")
        .starts_with("text/plain; version=0.0.4"));
    let text = v.as_str().expect("text");

    let at_least = |series_name: &str, n: f64| {
        let v = series(text, series_name).unwrap_or_else(|| panic!("no {series_name} in\n{text}"));
        assert!(v >= n, "{series_name} = {v}, want at least {n}");
    };
    at_least(
        r#"fhirlink_http_requests_total{service="myfhir",interaction="capabilities",status="200",path="pe1"}"#,
        3.0,
    );
    at_least(
        r#"fhirlink_http_requests_total{service="myfhir",interaction="read",status="403",path="public"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_access_denials_total{service="myfhir",reason="public-access-disabled"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_http_requests_total{service="",interaction="Microsoft.Network/privateEndpoints/write",status="201",path="management"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_http_requests_total{service="",interaction="Microsoft.Insights/metrics/read",status="401",path="management"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_access_denials_total{service="",reason="unauthenticated"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_access_denials_total{service="",reason="forbidden"}"#,
        2.0,
    );
    at_least(
        r#"fhirlink_http_request_duration_seconds_bucket{service="myfhir",interaction="capabilities",le="+Inf"}"#,
        3.0,
    );
    at_least(
        r#"fhirlink_http_request_duration_seconds_count{service="myfhir",interaction="capabilities"}"#,
        3.0,
    );
    assert!(series(
        text,
        r#"fhirlink_http_request_duration_seconds_sum{service="myfhir",interaction="capabilities"}"#
    )
    .is_some_and(|v| v > 0.0));
    at_least(
        r#"fhirlink_dns_queries_total{view="hub",rcode="NOERROR"}"#,
        1.0,
    );
    at_least(
        r#"fhirlink_dns_queries_total{view="public",rcode="NXDOMAIN"}"#,
        1.0,
    );
    assert_eq!(series(text, "fhirlink_audit_dropped_total"), Some(0.0));
    assert_eq!(series(text, "fhirlink_audit_write_errors_total"), Some(0.0));
    for metric in [
        "fhirlink_http_requests_total counter",
        "fhirlink_access_denials_total counter",
        "fhirlink_http_request_duration_seconds histogram",
        "fhirlink_dns_queries_total counter",
        "fhirlink_audit_dropped_total counter",
    ] {
        assert!(text.contains(&format!("# TYPE {metric}\n")), "{metric}");
    }
    // A Host naming no service is no label of its own. (No certificate names it: the
    // client connects by address, where the default certificate answers.)
    let port = s.base.rsplit(':').next().expect("port");
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &s.ca.as_ref().expect("CA").to_string_lossy(),
            "-H",
            "Host: nosuchsvc.azurehealthcareapis.com",
            &format!("https://127.0.0.1:{port}/metadata"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
    let (_, v, _) = s.call("GET", "/metrics", Some(&s.token("admin")), None);
    let text = v.as_str().expect("text");
    assert!(!text.contains("nosuchsvc"), "{text}");
    assert!(
        text.contains(r#"service="unknown",interaction="capabilities",status="404",path="public""#),
        "{text}"
    );
}

// Refused by the identity layers: no token (401) and a token whose principal may not write
// (403) each leave one record, with the principal when one is known.
#[test]
fn refused_data_plane_requests_leave_one_record_each() {
    let s = AdminServer::start();
    services(&s, &[]);
    cli(
        &s,
        &[
            "role",
            "assignment",
            "create",
            "--assignee",
            "reader",
            "--role",
            "FHIR Data Reader",
            "--scope",
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fhirlink/providers/Microsoft.HealthcareApis/services/default",
        ],
    );
    let port = s.base.rsplit(':').next().expect("port").to_owned();
    let ca = s.ca.as_ref().expect("CA").to_string_lossy().into_owned();
    let send = |token: Option<&str>| -> (u16, String) {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "-i", "--cacert", &ca, "-X", "POST"])
            .args(["-H", "Content-Type: application/fhir+json", "--data-binary"])
            .arg(r#"{"resourceType":"Patient"}"#);
        if let Some(t) = token {
            cmd.args(["-H", &format!("Authorization: Bearer {t}")]);
        }
        let out = cmd
            .arg(format!("https://127.0.0.1:{port}/Patient"))
            .output()
            .expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let id = text
            .lines()
            .find_map(|l| l.strip_prefix("x-request-id: "))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| {
                panic!(
                    "no x-request-id: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (status, id)
    };
    let (status, id) = send(None);
    assert_eq!(status, 401);
    let r = the_record(&s, &id);
    assert_eq!(
        (
            r["verdict"].as_str(),
            r["principal"].as_str(),
            r["status"].as_u64()
        ),
        (Some("unauthenticated"), None, Some(401)),
        "{r}"
    );
    let reader = common::admin::data_token(&s.data, "reader", "default", &[]);
    let (status, id) = send(Some(&reader));
    assert_eq!(status, 403);
    let r = the_record(&s, &id);
    assert_eq!(
        (
            r["verdict"].as_str(),
            r["principal"].as_str(),
            r["action"].as_str()
        ),
        (Some("forbidden"), Some("reader"), Some("create")),
        "{r}"
    );
}
