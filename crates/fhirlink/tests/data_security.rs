//! Identity on the data plane, end to end against the binary with its defaults (HTTPS,
//! tokens): refused tokens, FHIR data roles, SMART `patient/` scopes on every route,
//! headers that never widen access, the certificates clients verify, and an external OIDC
//! issuer with key rotation (a small JWKS server in this test).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::admin::{client_trusting, data_token, data_token_with, AdminServer};
use link_auth::identity::{unix_now, LocalIssuer, TokenRequest};
use link_auth::jwt::{Claims, SigningKey};
use serde_json::{json, Value};

const HOME: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fhirlink";

fn service_id(name: &str) -> String {
    format!("{HOME}/providers/Microsoft.HealthcareApis/services/{name}")
}

/// A data-plane client of one server: HTTPS trusting the data folder's CA.
struct Data<'a> {
    s: &'a AdminServer,
    client: reqwest::blocking::Client,
}

impl<'a> Data<'a> {
    fn new(s: &'a AdminServer) -> Data<'a> {
        Data {
            s,
            client: client_trusting(s.ca.as_deref()),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let url = format!("{}/{}", self.s.base, path.trim_start_matches('/'));
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
        let h = resp.headers().clone();
        let text = resp.text().expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v, h)
    }

    fn get(&self, path: &str, token: &str) -> (u16, Value) {
        let (s, v, _) = self.send("GET", path, Some(token), None, &[]);
        (s, v)
    }
}

fn grant(s: &AdminServer, principal: &str, role: &str, service: &str) {
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        principal,
        "--role",
        role,
        "--scope",
        &service_id(service),
    ]);
}

fn ids(bundle: &Value) -> Vec<String> {
    let mut v: Vec<String> = bundle["entry"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|e| e["search"]["mode"] != "outcome")
                .map(|e| {
                    format!(
                        "{}/{}",
                        e["resource"]["resourceType"].as_str().unwrap_or(""),
                        e["resource"]["id"].as_str().unwrap_or("")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn server_key(s: &AdminServer) -> SigningKey {
    let pem = std::fs::read_to_string(LocalIssuer::key_path(&s.data)).expect("key");
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    SigningKey::from_pkcs8_der(&STANDARD.decode(b64).expect("pem")).expect("key")
}

const AUD: &str = "https://default.azurehealthcareapis.com";

#[test]
fn refused_tokens_get_401_with_a_bearer_challenge() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    let now = unix_now();
    let key = server_key(&s);
    let claims = |iss: &str, aud: &str, nbf: i64, exp: i64| Claims {
        issuer: iss.into(),
        subject: "admin".into(),
        audience: aud.into(),
        issued_at: nbf,
        not_before: nbf,
        expires: exp,
    };
    let good = key
        .sign(&claims("fhirlink", AUD, now, now + 600))
        .expect("sign");
    assert_eq!(d.get("Patient", &good).0, 200, "the owner's token works");

    let (other, _) = SigningKey::generate().expect("key");
    let header = |alg: &str| URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(
        json!({"iss": "fhirlink", "sub": "admin", "aud": AUD, "exp": now + 600}).to_string(),
    );
    let hs256 = {
        use ring::hmac;
        let public = key.verifying_key().to_jwk().to_string();
        let k = hmac::Key::new(hmac::HMAC_SHA256, public.as_bytes());
        let input = format!("{}.{payload}", header("HS256"));
        let sig = hmac::sign(&k, input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    };
    let cases: Vec<(&str, String)> = vec![
        (
            "forged (another key)",
            other
                .sign(&claims("fhirlink", AUD, now, now + 600))
                .expect("sign"),
        ),
        (
            "expired",
            key.sign(&claims("fhirlink", AUD, now - 7200, now - 3600))
                .expect("sign"),
        ),
        (
            "not yet valid",
            key.sign(&claims("fhirlink", AUD, now + 3600, now + 7200))
                .expect("sign"),
        ),
        (
            "wrong audience (another service)",
            key.sign(&claims(
                "fhirlink",
                "https://other.azurehealthcareapis.com",
                now,
                now + 600,
            ))
            .expect("sign"),
        ),
        (
            "management audience",
            key.sign(&claims(
                "fhirlink",
                "https://management.azure.com/",
                now,
                now + 600,
            ))
            .expect("sign"),
        ),
        (
            "wrong issuer",
            key.sign(&claims("https://evil.example", AUD, now, now + 600))
                .expect("sign"),
        ),
        ("alg none", format!("{}.{payload}.", header("none"))),
        ("HS256 keyed with the public key", hs256),
        ("garbage", "not.a.token".into()),
    ];
    for (what, token) in cases {
        let (status, body, h) = d.send("GET", "Patient", Some(&token), None, &[]);
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{what}");
        let challenge = h
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            challenge.starts_with("Bearer realm=\"default\"")
                && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }
    // No token at all: a challenge without an error code (RFC 6750 §3).
    let (status, _, h) = d.send("GET", "Patient", None, None, &[]);
    assert_eq!(status, 401);
    let challenge = h
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(!challenge.contains("error="), "{challenge}");
    assert!(
        !challenge.contains("authorization_uri"),
        "fhirlink's own issuer has no authorization endpoint: {challenge}"
    );
    // The CapabilityStatement and the SMART configuration need none.
    let (status, body, _) = d.send("GET", "metadata", None, None, &[]);
    assert_eq!(
        (status, body["resourceType"].as_str()),
        (200, Some("CapabilityStatement"))
    );
    // Its security section tells clients where tokens come from.
    let security = &body["rest"][0]["security"];
    assert_eq!(
        security["service"][0]["coding"][0]["code"], "SMART-on-FHIR",
        "{security}"
    );
    // fhirlink's own issuer: the service's token endpoint (SMART Backend Services), in
    // SMART 1.0's oauth-uris extension.
    assert!(
        security["extension"][0]["extension"][0]["valueUri"]
            .as_str()
            .is_some_and(|u| u.ends_with("/auth/token")),
        "{security}"
    );
    assert!(
        security["description"].as_str().is_some_and(|d| d
            .contains("the issuer https://default.azurehealthcareapis.com")
            && d.contains(AUD)),
        "{security}"
    );
    let (status, body, _) = d.send("GET", ".well-known/smart-configuration", None, None, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|x| x == "permission-v2")));
}

#[test]
fn data_roles_decide_what_a_principal_may_do() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    let owner = data_token(&s.data, "admin", "default", &[]);
    let patient = json!({"resourceType": "Patient", "id": "p1", "gender": "female"});
    let (status, body, _) = d.send("PUT", "Patient/p1", Some(&owner), Some(&patient), &[]);
    assert_eq!(
        status, 201,
        "the owner is FHIR Data Contributor on default: {body}"
    );

    grant(&s, "reader", "FHIR Data Reader", "default");
    grant(&s, "writer", "FHIR Data Writer", "default");
    let reader = data_token(&s.data, "reader", "default", &[]);
    let writer = data_token(&s.data, "writer", "default", &[]);
    let nobody = data_token(&s.data, "nobody", "default", &[]);
    assert_eq!(d.get("Patient/p1", &reader).0, 200);
    let forbidden = |token: &str, method: &str, path: &str, body: Option<&Value>| {
        let (status, v, _) = d.send(method, path, Some(token), body, &[]);
        assert_eq!(status, 403, "{method} {path}: {v}");
        assert_eq!(v["issue"][0]["code"], "forbidden", "{v}");
    };
    forbidden(&reader, "PUT", "Patient/p1", Some(&patient));
    forbidden(&reader, "POST", "Patient", Some(&patient));
    forbidden(&reader, "DELETE", "Patient/p1", None);
    forbidden(
        &reader,
        "POST",
        "",
        Some(
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}}]}),
        ),
    );
    // Each bundle entry is authorized as what it is: a reader's batch of reads works.
    let reads = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}}]});
    let (status, v, _) = d.send("POST", "", Some(&reader), Some(&reads), &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["entry"][0]["response"]["status"], "200 OK", "{v}");
    assert!(
        v["entry"][1]["response"]["status"]
            .as_str()
            .is_some_and(|st| st.starts_with("403")),
        "{v}"
    );
    forbidden(&nobody, "GET", "Patient/p1", None);
    forbidden(&nobody, "GET", "Patient", None);
    let (status, _, _) = d.send("PUT", "Patient/p1", Some(&writer), Some(&patient), &[]);
    assert_eq!(status, 200, "a writer writes");
    assert_eq!(d.get("Patient/p1", &writer).0, 200, "and reads");
    // Regression: links named http:// and lost the port under HTTP/2 (no Host header there).
    let (status, _, h) = d.send("POST", "Patient", Some(&writer), Some(&patient), &[]);
    let location = h
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert_eq!(status, 201);
    assert!(
        location.starts_with(&format!("{}/Patient/", s.base)),
        "{location}"
    );

    // accessPolicies: the object ids listed get full access, as in Azure API for FHIR.
    let token = s.token("admin");
    let (status, v, _) = s.call(
        "PUT",
        &format!("{}?api-version=2024-03-31", service_id("default")),
        Some(&token),
        Some(&json!({"location": "westus2", "kind": "fhir-R4", "properties": {"accessPolicies": [{"objectId": "carol"}]}})),
    );
    assert_eq!(status, 200, "{v}");
    let carol = data_token(&s.data, "carol", "default", &[]);
    let (status, _, _) = d.send("DELETE", "Patient/p1", Some(&carol), None, &[]);
    assert!(status == 200 || status == 204, "{status}");
    // Removing the role takes effect at once.
    let list = s.cli_json(&[
        "role",
        "assignment",
        "list",
        "--scope",
        &service_id("default"),
    ]);
    let reader_assignment = list
        .as_array()
        .expect("list")
        .iter()
        .find(|a| a["properties"]["principalId"] == "reader")
        .and_then(|a| a["id"].as_str())
        .expect("reader's assignment")
        .to_owned();
    s.cli_json(&["role", "assignment", "delete", "--id", &reader_assignment]);
    forbidden(&reader, "GET", "Patient", None);
}

/// Two patients with an Observation each, written by the owner.
fn two_patients(s: &AdminServer, d: &Data<'_>) {
    let owner = data_token(&s.data, "admin", "default", &[]);
    for (p, o) in [("p1", "o1"), ("p2", "o2")] {
        let (status, v, _) = d.send(
            "PUT",
            &format!("Patient/{p}"),
            Some(&owner),
            Some(&json!({"resourceType": "Patient", "id": p, "name": [{"family": p}]})),
            &[],
        );
        assert_eq!(status, 201, "{v}");
        let (status, v, _) = d.send(
            "PUT",
            &format!("Observation/{o}"),
            Some(&owner),
            Some(
                &json!({"resourceType": "Observation", "id": o, "status": "final",
                "code": {"text": "weight"}, "subject": {"reference": format!("Patient/{p}")}}),
            ),
            &[],
        );
        assert_eq!(status, 201, "{v}");
    }
    grant(s, "app", "FHIR Data Contributor", "default");
}

/// Entra ID cannot register a scope with a `/`, so the tokens Azure API for FHIR's SMART
/// apps carried say `patient.all.read`: they narrow exactly as `patient/*.read` does.
#[test]
fn azure_shaped_patient_scopes_narrow_too() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    two_patients(&s, &d);
    let t = data_token_with(
        &s.data,
        "app",
        "default",
        &["patient.all.read", "launch.patient", "user_impersonation"],
        &["--patient", "p1"],
    );
    assert_eq!(d.get("Patient/p1", &t).0, 200);
    assert_eq!(d.get("Observation/o1", &t).0, 200);
    for path in ["Patient/p2", "Observation/o2"] {
        assert_eq!(d.get(path, &t).0, 404, "{path}");
    }
    let (status, v) = d.get("Observation", &t);
    assert_eq!(
        (status, ids(&v)),
        (200, vec!["Observation/o1".to_owned()]),
        "{v}"
    );
    let (status, _, _) = d.send(
        "PUT",
        "Observation/o1",
        Some(&t),
        Some(
            &json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "weight"}, "subject": {"reference": "Patient/p1"}}),
        ),
        &[],
    );
    assert_eq!(status, 403, "read scopes do not write");
    // Without a patient in its context such a token reaches nothing.
    let t = data_token_with(&s.data, "app", "default", &["patient.all.read"], &[]);
    assert_eq!(d.get("Patient/p1", &t).0, 403);
}

#[test]
fn a_patient_scope_cannot_reach_another_patient_by_any_route() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    two_patients(&s, &d);
    let t = data_token_with(
        &s.data,
        "app",
        "default",
        &[
            "patient/*.rs",
            "patient/Observation.cruds",
            "openid",
            "launch/patient",
        ],
        &["--patient", "p1"],
    );
    // Reads: the patient's own data, and nothing else (as if it did not exist).
    assert_eq!(d.get("Patient/p1", &t).0, 200);
    assert_eq!(d.get("Observation/o1", &t).0, 200);
    assert_eq!(d.get("Observation/o1/_history/1", &t).0, 200);
    for path in [
        "Patient/p2",
        "Observation/o2",
        "Observation/o2/_history/1",
        "Observation/o2/_history",
    ] {
        assert_eq!(d.get(path, &t).0, 404, "{path}");
    }
    // Searches are narrowed to the compartment, whatever they ask for.
    for (path, expected) in [
        ("Observation", vec!["Observation/o1"]),
        ("Observation?subject=Patient/p2", vec![]),
        ("Patient", vec!["Patient/p1"]),
        ("Patient?_id=p2", vec![]),
        ("Patient/p1/Observation", vec!["Observation/o1"]),
    ] {
        let (status, v) = d.get(path, &t);
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(ids(&v), expected, "{path}");
    }
    let (status, v, _) = d.send(
        "POST",
        "Observation/_search",
        Some(&t),
        None,
        &[("content-type", "application/x-www-form-urlencoded")],
    );
    assert_eq!(
        (status, ids(&v)),
        (200, vec!["Observation/o1".to_owned()]),
        "{v}"
    );
    // What could leave the compartment is refused.
    for path in [
        "Patient/p2/Observation",
        "Observation?_include=Observation:subject",
        "Patient?_revinclude=Observation:subject",
        "Observation?subject.name=p2",
        "Patient?_has:Observation:subject:status=final",
        "Observation/_history",
        "_history",
        "?_type=Observation",
    ] {
        let (status, v) = d.get(path, &t);
        assert_eq!(status, 403, "{path}: {v}");
    }
    // Bundle entries: each one as the interaction it names, inside the compartment.
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": "Observation/o2"}},
        {"request": {"method": "GET", "url": "Observation/o1"}},
        {"request": {"method": "GET", "url": "Patient/p2"}},
        {"request": {"method": "DELETE", "url": "Observation/o2"}},
        {"request": {"method": "PUT", "url": "Observation?subject=Patient/p2"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}}]});
    let (status, v, _) = d.send("POST", "", Some(&t), Some(&batch), &[]);
    assert_eq!(status, 200, "{v}");
    let statuses: Vec<&str> = v["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| e["response"]["status"].as_str().unwrap_or(""))
        .map(|st| st.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(statuses, ["404", "200", "404", "404", "403"], "{v}");
    let tx = |p: &str| {
        json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"fullUrl": "urn:uuid:a", "request": {"method": "POST", "url": "Observation"},
             "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "t"},
                          "subject": {"reference": format!("Patient/{p}")}}}]})
    };
    let (status, v, _) = d.send("POST", "", Some(&t), Some(&tx("p2")), &[]);
    assert_eq!(
        status, 403,
        "a transaction writing for another patient: {v}"
    );
    let (status, v, _) = d.send("POST", "", Some(&t), Some(&tx("p1")), &[]);
    assert_eq!(status, 200, "a transaction for the patient: {v}");
    let (status, _, _) = d.send(
        "DELETE",
        "Observation?subject=Patient/p2",
        Some(&t),
        None,
        &[],
    );
    assert_eq!(status, 403, "conditional delete");
    // Writes: only into the patient's compartment.
    let obs = |id: &str, p: &str| {
        json!({"resourceType": "Observation", "id": id, "status": "final", "code": {"text": "x"},
            "subject": {"reference": format!("Patient/{p}")}})
    };
    let (status, _, _) = d.send("POST", "Observation", Some(&t), Some(&obs("n", "p2")), &[]);
    assert_eq!(status, 403, "create for another patient");
    let (status, _, _) = d.send("POST", "Observation", Some(&t), Some(&obs("n", "p1")), &[]);
    assert_eq!(status, 201, "create for the patient");
    let (status, _, _) = d.send(
        "PUT",
        "Observation/o2",
        Some(&t),
        Some(&obs("o2", "p1")),
        &[],
    );
    assert_eq!(status, 404, "update of another patient's resource");
    let (status, _, _) = d.send(
        "PUT",
        "Observation/o1",
        Some(&t),
        Some(&obs("o1", "p2")),
        &[],
    );
    assert_eq!(status, 403, "moving a resource to another patient");
    let (status, _, _) = d.send("DELETE", "Observation/o2", Some(&t), None, &[]);
    assert_eq!(status, 404, "delete of another patient's resource");
    let (status, _, _) = d.send("PATCH", "Observation/o1", Some(&t), Some(&json!([])), &[]);
    assert_eq!(status, 403, "PATCH cannot be bounded");
    // Types outside the scope: refused.
    assert_eq!(
        d.get("Encounter", &t).0,
        200,
        "patient/*.rs covers Encounter searches"
    );
    let (status, _, _) = d.send(
        "POST",
        "Patient",
        Some(&t),
        Some(&json!({"resourceType": "Patient", "id": "p1"})),
        &[],
    );
    assert_eq!(status, 403, "no create scope for Patient");
    // Without a patient in the token a patient/ scope grants nothing.
    let t2 = data_token(&s.data, "app", "default", &["patient/*.rs"]);
    assert_eq!(d.get("Observation/o1", &t2).0, 403);
    // A user/ scope reaches everything its roles allow.
    let u = data_token(&s.data, "app", "default", &["user/Observation.rs"]);
    let (status, v) = d.get("Observation", &u);
    assert_eq!(ids(&v).len(), 4, "{status} {v}");
    assert_eq!(
        d.get("Patient/p2", &u).0,
        403,
        "but only the types it names"
    );
}

#[test]
fn headers_never_widen_access() {
    let s = AdminServer::start();
    let d = Data::new(&s);
    grant(&s, "reader", "FHIR Data Reader", "default");
    let reader = data_token(&s.data, "reader", "default", &[]);
    let patient = json!({"resourceType": "Patient", "id": "h1"});
    for headers in [
        vec![("x-forwarded-for", "127.0.0.1")],
        vec![("forwarded", "for=127.0.0.1;by=admin")],
        vec![
            ("x-ms-client-principal-id", "admin"),
            ("x-ms-client-principal-name", "admin"),
        ],
        vec![("x-forwarded-user", "admin")],
    ] {
        let (status, v, _) = d.send("PUT", "Patient/h1", Some(&reader), Some(&patient), &headers);
        assert_eq!(status, 403, "{headers:?}: {v}");
    }
    // A Host naming another service routes there, where the token's audience is wrong.
    s.cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", "other"]);
    let (status, _, _) = d.send(
        "GET",
        "Patient",
        Some(&reader),
        None,
        &[("host", "other.azurehealthcareapis.com")],
    );
    assert_eq!(status, 401);
}

#[test]
fn certificates_name_localhost_the_services_and_their_private_link_names() {
    let s = AdminServer::start();
    let port: u16 = s
        .base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let ca = s.ca.clone().expect("ca");
    let curl = |url: &str, resolve: Option<&str>| -> String {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&ca);
        if let Some(r) = resolve {
            cmd.args(["--resolve", r]);
        }
        let out = cmd.arg(url).output().expect("curl");
        format!(
            "{}:{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout)
        )
    };
    // The newcomer's command, verbatim.
    assert_eq!(
        curl(&format!("https://localhost:{port}/metadata"), None),
        "0:200"
    );
    assert_eq!(
        curl(&format!("https://127.0.0.1:{port}/metadata"), None),
        "0:200"
    );
    for name in [
        "default.azurehealthcareapis.com",
        "default.privatelink.azurehealthcareapis.com",
    ] {
        assert_eq!(
            curl(
                &format!("https://{name}:{port}/metadata"),
                Some(&format!("{name}:{port}:127.0.0.1"))
            ),
            "0:200",
            "{name}"
        );
    }
    // A new service gets its own certificate, chosen by SNI.
    s.cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", "fresh"]);
    let name = "fresh.privatelink.azurehealthcareapis.com";
    assert_eq!(
        curl(
            &format!("https://{name}:{port}/metadata"),
            Some(&format!("{name}:{port}:127.0.0.1"))
        ),
        "0:200"
    );
    // A name no certificate has fails verification (curl exit 60).
    let bogus = "evil.example.com";
    assert_eq!(
        curl(
            &format!("https://{bogus}:{port}/metadata"),
            Some(&format!("{bogus}:{port}:127.0.0.1"))
        ),
        "60:000"
    );
    // And there is no plain HTTP on the listener.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://127.0.0.1:{port}/metadata"),
        ])
        .output()
        .expect("curl");
    assert_ne!(String::from_utf8_lossy(&out.stdout), "200");
}

/// A minimal OIDC issuer: discovery and a JWKS that the test can change.
struct Issuer {
    url: String,
    jwks: Arc<Mutex<Value>>,
}

impl Issuer {
    fn start() -> Issuer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let jwks = Arc::new(Mutex::new(json!({"keys": []})));
        let (u, j) = (url.clone(), jwks.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut h = String::new();
                while reader.read_line(&mut h).is_ok() && h.trim() != "" {
                    h.clear();
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let tenant = path
                    .strip_suffix("/.well-known/openid-configuration")
                    .and_then(|t| t.strip_prefix('/'));
                let body = if path == "/.well-known/openid-configuration" {
                    json!({"issuer": u, "jwks_uri": format!("{u}/keys"),
                        "authorization_endpoint": format!("{u}/authorize"),
                        "token_endpoint": format!("{u}/token"),
                        "code_challenge_methods_supported": ["S256"]})
                    .to_string()
                } else if let Some(tenant) = tenant {
                    // As Entra's v1 document at login.microsoftonline.com/<tenant> answers.
                    json!({"issuer": format!("https://sts.windows.net/{tenant}/"), "jwks_uri": format!("{u}/keys")})
                        .to_string()
                } else if path == "/keys" {
                    j.lock().expect("lock").to_string()
                } else {
                    String::new()
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.flush();
                let mut rest = Vec::new();
                let _ = reader.read_to_end(&mut rest);
            }
        });
        Issuer { url, jwks }
    }

    fn publish(&self, keys: &[&SigningKey]) {
        *self.jwks.lock().expect("lock") =
            json!({"keys": keys.iter().map(|k| k.verifying_key().to_jwk()).collect::<Vec<_>>()});
    }

    fn token(&self, key: &SigningKey, subject: &str, audience: &str) -> String {
        Issuer::token_of(&self.url, key, subject, audience)
    }

    fn token_of(issuer: &str, key: &SigningKey, subject: &str, audience: &str) -> String {
        let now = unix_now();
        key.sign(&Claims {
            issuer: issuer.into(),
            subject: subject.into(),
            audience: audience.into(),
            issued_at: now,
            not_before: now,
            expires: now + 600,
        })
        .expect("sign")
    }
}

/// A service moved from Azure API for FHIR keeps its authority
/// `https://login.microsoftonline.com/<tenant>`, whose document names the v1 issuer
/// `https://sts.windows.net/<tenant>/` that `az account get-access-token` tokens carry.
#[test]
fn an_entra_v1_authority_takes_its_tenants_tokens() {
    let issuer = Issuer::start();
    let s = AdminServer::start();
    let d = Data::new(&s);
    let tenant = "abfde7b2-df0f-47e6-aabf-2462b07508dc";
    let audience = "https://default.azurehealthcareapis.com";
    let (status, v, _) = s.call(
        "PUT",
        &format!("{}?api-version=2024-03-31", service_id("default")),
        Some(&s.token("admin")),
        Some(&json!({"location": "westus2", "kind": "fhir-R4", "properties": {
            "authenticationConfiguration": {"authority": format!("{}/{tenant}", issuer.url), "audience": audience}}})),
    );
    assert_eq!(status, 200, "{v}");
    grant(&s, "entra-user", "FHIR Data Reader", "default");
    let (key, _) = SigningKey::generate().expect("key");
    issuer.publish(&[&key]);
    let sts = format!("https://sts.windows.net/{tenant}/");
    assert_eq!(
        d.get(
            "Patient",
            &Issuer::token_of(&sts, &key, "entra-user", audience)
        )
        .0,
        200
    );
    // Only that tenant's issuer, compared exactly.
    for iss in [
        "https://sts.windows.net/0b7c3d2e-1f4a-4b5c-8d9e-0f1a2b3c4d5e/".to_owned(),
        format!("https://login.microsoftonline.com/{tenant}/v2.0"),
        format!("{}/{tenant}", issuer.url),
    ] {
        assert_eq!(
            d.get(
                "Patient",
                &Issuer::token_of(&iss, &key, "entra-user", audience)
            )
            .0,
            401,
            "{iss}"
        );
    }
}

#[test]
fn an_external_oidc_issuer_with_key_rotation() {
    let issuer = Issuer::start();
    let s = AdminServer::start_with(&["--oidc-refresh-interval", "1"]);
    let d = Data::new(&s);
    let audience = "api://fhir-ext";
    let token = s.token("admin");
    let (status, v, _) = s.call(
        "PUT",
        &format!("{}?api-version=2024-03-31", service_id("default")),
        Some(&token),
        Some(&json!({"location": "westus2", "kind": "fhir-R4", "properties": {
            "authenticationConfiguration": {"authority": issuer.url, "audience": audience, "smartProxyEnabled": false}}})),
    );
    assert_eq!(status, 200, "{v}");
    grant(&s, "ext-user", "FHIR Data Reader", "default");
    let (k1, _) = SigningKey::generate().expect("key");
    let (k2, _) = SigningKey::generate().expect("key");
    issuer.publish(&[&k1]);
    assert_eq!(
        d.get("Patient", &issuer.token(&k1, "ext-user", audience)).0,
        200
    );
    // Tokens of fhirlink's own issuer are no longer what this service trusts.
    let local = LocalIssuer::load(&s.data)
        .expect("issuer")
        .mint_with(&TokenRequest {
            subject: "ext-user".into(),
            audience: audience.into(),
            now: unix_now(),
            lifetime_secs: 600,
            ..TokenRequest::default()
        })
        .expect("mint");
    let (status, _, h) = d.send("GET", "Patient", Some(&local), None, &[]);
    assert_eq!(status, 401);
    // The challenge names the authority to get a token from, as Azure's did.
    let challenge = h
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.contains(&format!("authorization_uri=\"{}\"", issuer.url))
            && challenge.contains(&format!("resource_id=\"{audience}\"")),
        "{challenge}"
    );
    // The SMART configuration, which needs no token, says where tokens come from: the
    // endpoints of the authority's discovery document.
    let (status, v, _) = d.send("GET", ".well-known/smart-configuration", None, None, &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        (
            &v["issuer"],
            &v["token_endpoint"],
            &v["authorization_endpoint"],
            &v["code_challenge_methods_supported"],
            &v["jwks_uri"]
        ),
        (
            &json!(issuer.url),
            &json!(format!("{}/token", issuer.url)),
            &json!(format!("{}/authorize", issuer.url)),
            &json!(["S256"]),
            &json!(format!("{}/keys", issuer.url))
        ),
        "{v}"
    );
    // So does the CapabilityStatement, in SMART 1.0's oauth-uris extension as Azure's did,
    // once the authority's document is known (it never waits for the authority).
    let (status, v, _) = d.send("GET", "metadata", None, None, &[]);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["rest"][0]["security"]["extension"],
        json!([{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": [
                {"url": "authorize", "valueUri": format!("{}/authorize", issuer.url)},
                {"url": "token", "valueUri": format!("{}/token", issuer.url)}
            ]
        }]),
        "{v}"
    );
    // Rotation: k2 published, k1 withdrawn. The new kid is fetched on first use.
    issuer.publish(&[&k2]);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(
        d.get("Patient", &issuer.token(&k2, "ext-user", audience)).0,
        200
    );
    assert_eq!(
        d.get("Patient", &issuer.token(&k1, "ext-user", audience)).0,
        401,
        "the withdrawn key"
    );
    // The issuer's tokens for another audience are refused too.
    assert_eq!(
        d.get("Patient", &issuer.token(&k2, "ext-user", "api://other"))
            .0,
        401
    );
}
