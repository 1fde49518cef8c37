//! SMART Backend Services against the real binary (HTTPS and tokens on): a client registered
//! with `fhirlink client create` gets an access token from the service's token endpoint with
//! an ES384 or RS384 assertion, uses it, and is refused with a replayed, expired, too
//! long-lived or wrongly signed assertion, for scopes it was not registered for, and once it
//! is deleted. The SMART configuration names the endpoint.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::admin::{client_trusting, data_token, AdminServer};
use reqwest::blocking::Client;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA384,
};
use serde_json::{json, Value};
use std::time::Duration;

const HOME: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/fhirlink";
/// A test-only RSA key (link-auth's fixtures).
const RSA: &[u8] = include_bytes!("../../link-auth/tests/data/rsa-2048-a.pk8");
const OTHER_RSA: &[u8] = include_bytes!("../../link-auth/tests/data/rsa-2048-b.pk8");

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

impl Key {
    fn es384() -> Key {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.as_ref(), &rng).unwrap(),
        )
    }

    fn rsa(der: &[u8]) -> Key {
        Key::Rsa(RsaKeyPair::from_pkcs8(der).unwrap())
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Ec(_) => "ES384",
            Key::Rsa(_) => "RS384",
        }
    }

    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Ec(pair) => {
                let p = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
                       "x": b64(&p[1..49]), "y": b64(&p[49..97])})
            }
            Key::Rsa(pair) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": kid, "alg": "RS384", "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    fn assertion(&self, kid: &str, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "JWT", "kid": kid});
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Rsa(pair) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA384, &rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(sig))
    }
}

struct Setup {
    s: AdminServer,
    http: Client,
    endpoint: String,
    _tmp: tempfile::TempDir,
}

/// A server with one patient, and two clients: `ec-client` (ES384) and `rsa-client`
/// (RS384), registered for `system/*.read` and holding FHIR Data Exporter.
fn setup(ec: &Key, rsa: &Key) -> Setup {
    let s = AdminServer::start();
    let http = client_trusting(s.ca.as_deref());
    let owner = data_token(&s.data, "admin", "default", &[]);
    let resp = http
        .put(format!("{}/Patient/p1", s.base))
        .bearer_auth(&owner)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "p1"}).to_string())
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    let tmp = tempfile::tempdir().unwrap();
    for (name, key) in [("ec-client", ec), ("rsa-client", rsa)] {
        let file = tmp.path().join(format!("{name}.json"));
        std::fs::write(&file, json!({"keys": [key.jwk("k1")]}).to_string()).unwrap();
        let v = s.cli_json(&[
            "client",
            "create",
            "--service",
            "default",
            "--name",
            name,
            "--jwks",
            file.to_str().unwrap(),
            "--scope",
            "system/*.read",
        ]);
        assert_eq!(v["name"], name, "{v}");
        s.cli_json(&[
            "role",
            "assignment",
            "create",
            "--assignee",
            name,
            "--role",
            "FHIR Data Exporter",
            "--scope",
            &format!("{HOME}/providers/Microsoft.HealthcareApis/services/default"),
        ]);
    }
    // The SMART configuration names the token endpoint and what it takes.
    let config: Value = http
        .get(format!("{}/.well-known/smart-configuration", s.base))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let endpoint = config["token_endpoint"]
        .as_str()
        .unwrap_or_else(|| panic!("no token_endpoint: {config}"))
        .to_owned();
    assert_eq!(endpoint, format!("{}/auth/token", s.base));
    assert_eq!(
        config["grant_types_supported"],
        json!(["client_credentials"])
    );
    assert_eq!(
        config["token_endpoint_auth_methods_supported"],
        json!(["private_key_jwt"])
    );
    let algs = config["token_endpoint_auth_signing_alg_values_supported"].to_string();
    assert!(algs.contains("RS384") && algs.contains("ES384"), "{algs}");
    assert!(
        config["issuer"]
            .as_str()
            .is_some_and(|i| i.starts_with("https://")),
        "the issuer is a URL: {config}"
    );
    Setup {
        s,
        http,
        endpoint,
        _tmp: tmp,
    }
}

fn claims(client: &str, aud: &str, exp_in: i64) -> Value {
    json!({"iss": client, "sub": client, "aud": aud, "exp": now() + exp_in,
           "jti": uuid::Uuid::new_v4().to_string()})
}

fn post_form(st: &Setup, form: &[(&str, &str)]) -> reqwest::blocking::Response {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    st.http
        .post(&st.endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .unwrap()
}

/// Posts a token request; status and JSON body.
fn ask(st: &Setup, assertion: &str, scope: &str) -> (u16, Value) {
    let form = [
        ("grant_type", "client_credentials"),
        ("scope", scope),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
    ];
    let resp = post_form(st, &form);
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    (status, resp.json().unwrap())
}

#[test]
fn a_registered_client_gets_a_token_with_a_signed_assertion() {
    let (ec, rsa) = (Key::es384(), Key::rsa(RSA));
    let st = setup(&ec, &rsa);
    for (client, key) in [("ec-client", &ec), ("rsa-client", &rsa)] {
        let (status, body) = ask(
            &st,
            &key.assertion("k1", &claims(client, &st.endpoint, 290)),
            "system/Patient.read system/Observation.read",
        );
        assert_eq!(status, 200, "{client}: {body}");
        assert_eq!(body["token_type"], "bearer");
        assert_eq!(body["expires_in"], 300);
        assert_eq!(body["scope"], "system/Patient.read system/Observation.read");
        let token = body["access_token"].as_str().unwrap();
        let resp = st
            .http
            .get(format!("{}/Patient/p1", st.s.base))
            .bearer_auth(token)
            .send()
            .unwrap();
        let status = resp.status().as_u16();
        assert_eq!(
            status,
            200,
            "{client}'s token reads: {}",
            resp.text().unwrap()
        );
        // The scopes narrow the roles: no Observation write, no Encounter read.
        let resp = st
            .http
            .get(format!("{}/Encounter", st.s.base))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 403, "outside the granted scopes");
    }
}

#[test]
fn bad_assertions_are_refused() {
    let (ec, rsa) = (Key::es384(), Key::rsa(RSA));
    let st = setup(&ec, &rsa);
    let scope = "system/*.read";
    let refused = |assertion: String, why: &str| {
        let (status, body) = ask(&st, &assertion, scope);
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], "invalid_client", "{why}: {body}");
        assert!(body.get("access_token").is_none());
        body["error_description"].as_str().unwrap_or("").to_owned()
    };
    // Replayed: the same assertion a second time.
    let once = ec.assertion("k1", &claims("ec-client", &st.endpoint, 290));
    assert_eq!(ask(&st, &once, scope).0, 200);
    assert!(refused(once, "replayed").contains("used before"));
    // Expired.
    refused(
        ec.assertion("k1", &claims("ec-client", &st.endpoint, -300)),
        "expired",
    );
    // Living longer than five minutes.
    refused(
        ec.assertion("k1", &claims("ec-client", &st.endpoint, 3600)),
        "an hour",
    );
    // Signed with another key under the registered kid.
    refused(
        Key::rsa(OTHER_RSA).assertion("k1", &claims("rsa-client", &st.endpoint, 290)),
        "wrong key",
    );
    // Signed by one client's key in another's name.
    refused(
        ec.assertion("k1", &claims("rsa-client", &st.endpoint, 290)),
        "another client's name",
    );
    // For another token endpoint.
    refused(
        ec.assertion(
            "k1",
            &claims("ec-client", "https://elsewhere.example/token", 290),
        ),
        "another audience",
    );
    // A client nobody registered.
    refused(
        Key::es384().assertion("k1", &claims("stranger", &st.endpoint, 290)),
        "unregistered",
    );
    // Scopes the registration does not allow.
    let (status, body) = ask(
        &st,
        &ec.assertion("k1", &claims("ec-client", &st.endpoint, 290)),
        "system/*.write",
    );
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
    // Another grant type.
    let resp = post_form(&st, &[("grant_type", "password"), ("username", "x")]);
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.json::<Value>().unwrap()["error"],
        "unsupported_grant_type"
    );
    // Deleted: its assertions are refused from then on.
    st.s.cli_json(&[
        "client",
        "delete",
        "--service",
        "default",
        "--name",
        "ec-client",
    ]);
    refused(
        ec.assertion("k1", &claims("ec-client", &st.endpoint, 290)),
        "deleted",
    );
    // The list shows what is left.
    let list = st.s.cli_json(&["client", "list", "--service", "default"]);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["rsa-client"]);
}

#[test]
fn registrations_hold_public_keys_and_system_scopes_only() {
    let s = AdminServer::start();
    let id = format!("{HOME}/providers/Microsoft.HealthcareApis/services/default/smartClients/c1");
    let token = s.token("admin");
    let key = Key::es384().jwk("k1");
    let mut private = key.clone();
    private["d"] = json!(b64([7u8; 48]));
    for (props, code) in [
        (
            json!({"jwks": {"keys": [private]}, "scopes": ["system/*.read"]}),
            "InvalidSmartClient",
        ),
        (
            json!({"jwks": {"keys": [key.clone()]}, "scopes": ["patient/*.read"]}),
            "InvalidSmartClient",
        ),
        (json!({"scopes": ["system/*.read"]}), "InvalidSmartClient"),
        (
            json!({"jwksUrl": "http://example.com/jwks", "scopes": ["system/*.read"]}),
            "InvalidSmartClient",
        ),
    ] {
        let (status, body, _) = s.call(
            "PUT",
            &format!("{id}?api-version=2024-03-31"),
            Some(&token),
            Some(&json!({"properties": props})),
        );
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
    }
    let (status, body, _) = s.call(
        "PUT",
        &format!("{id}?api-version=2024-03-31"),
        Some(&token),
        Some(&json!({"properties": {"jwks": {"keys": [key]}, "scopes": ["system/*.read"]}})),
    );
    assert!(status == 200 || status == 201, "{body}");
    assert_eq!(
        body["type"],
        "Microsoft.HealthcareApis/services/smartClients"
    );
    // A reader of the service may not register clients.
    let reader = s.token("reader");
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "reader",
        "--role",
        "Reader",
    ]);
    let (status, body, _) = s.call(
        "PUT",
        &format!("{id}2?api-version=2024-03-31"),
        Some(&reader),
        Some(&json!({"properties": {"jwksUrl": "https://example.com/jwks", "scopes": ["system/*.read"]}})),
    );
    assert_eq!(status, 403, "{body}");
}

/// A JWK Set served over HTTPS by its own CA, as a client's `jwksUrl` would be, counting the
/// times it is fetched.
struct JwksSite {
    /// Runs the site for as long as it lives.
    _rt: tokio::runtime::Runtime,
    url: String,
    ca: std::path::PathBuf,
    doc: std::sync::Arc<std::sync::Mutex<Value>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl JwksSite {
    fn start() -> JwksSite {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let tls = link_auth::tls::ServerIdentity::generated(
            dir.path(),
            "127.0.0.1".parse().unwrap(),
            &[],
        )
        .unwrap()
        .server_config()
        .unwrap();
        let doc = Arc::new(Mutex::new(json!({"keys": []})));
        let fetches = Arc::new(AtomicUsize::new(0));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (d, f) = (doc.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                f.fetch_add(1, Ordering::SeqCst);
                let body = d.lock().unwrap().clone();
                async move { axum::Json(body) }
            }),
        );
        rt.spawn(link_auth::https::serve(
            listener,
            tls,
            app,
            std::future::pending(),
        ));
        JwksSite {
            _rt: rt,
            url: format!("https://{addr}/jwks"),
            ca: dir.path().join("tls/ca.pem"),
            doc,
            fetches,
            _dir: dir,
        }
    }

    fn serve(&self, keys: &[(&Key, &str)]) {
        let keys: Vec<Value> = keys.iter().map(|(k, kid)| k.jwk(kid)).collect();
        *self.doc.lock().unwrap() = json!({ "keys": keys });
    }

    fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A client registered by `jwksUrl`: its keys are fetched over HTTPS (the site's CA trusted by
/// `--smart-jwks-ca`), kept for the next assertions, and fetched again when an assertion names
/// a key the kept set lacks — at most every 10 s, so that unknown kids cannot make the server
/// hammer the site; after a rotation the new key works and the old one no longer does.
#[test]
fn a_client_registered_by_jwks_url_is_fetched_kept_and_rotated() {
    let site = JwksSite::start();
    let (k1, k2) = (Key::es384(), Key::rsa(RSA));
    site.serve(&[(&k1, "k1")]);
    let s = AdminServer::start_with(&["--smart-jwks-ca", site.ca.to_str().unwrap()]);
    let http = client_trusting(s.ca.as_deref());
    let v = s.cli_json(&[
        "client",
        "create",
        "--service",
        "default",
        "--name",
        "url-client",
        "--jwks-url",
        &site.url,
        "--scope",
        "system/*.read",
    ]);
    assert_eq!(v["properties"]["jwksUrl"], site.url.as_str(), "{v}");
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "url-client",
        "--role",
        "FHIR Data Exporter",
        "--scope",
        &format!("{HOME}/providers/Microsoft.HealthcareApis/services/default"),
    ]);
    let st = Setup {
        endpoint: format!("{}/auth/token", s.base),
        s,
        http,
        _tmp: tempfile::tempdir().unwrap(),
    };
    let scope = "system/*.read";
    let token = |key: &Key, kid: &str| {
        ask(
            &st,
            &key.assertion(kid, &claims("url-client", &st.endpoint, 290)),
            scope,
        )
    };
    assert_eq!(site.fetches(), 0, "nothing is fetched before it is needed");
    let (status, body) = token(&k1, "k1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(site.fetches(), 1);
    let (status, body) = token(&k1, "k1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(site.fetches(), 1, "the fetched keys are kept");
    let first_fetch = std::time::Instant::now();

    // The client rotates to k2. Right after a fetch, an unknown kid does not fetch again.
    site.serve(&[(&k2, "k2")]);
    let (status, body) = token(&k2, "k2");
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(site.fetches(), 1, "no fetch within 10 s of the last");
    // Once 10 s have passed, the unknown kid fetches the set again and the new key works.
    std::thread::sleep(Duration::from_millis(10_500).saturating_sub(first_fetch.elapsed()));
    let (status, body) = token(&k2, "k2");
    assert_eq!(status, 200, "the rotated key: {body}");
    assert_eq!(site.fetches(), 2);
    let (status, body) = token(&k1, "k1");
    assert_eq!(status, 401, "the retired key: {body}");
    // The token the new key got works on the data plane.
    let (_, body) = token(&k2, "k2");
    let resp = st
        .http
        .get(format!("{}/Patient", st.s.base))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}
