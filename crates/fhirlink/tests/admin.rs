//! The management listener end to end: HTTPS with the CA generated into the data folder (or
//! the operator's own certificate, or plain HTTP when asked), bearer-token authentication
//! with ARM's 401 answers, `fhirlink token`, and graceful shutdown of both planes.

mod common;

use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use common::admin::{client_trusting, token_for, AdminServer, BIN, SUB};
use link_auth::identity::{unix_now, LocalIssuer};
use link_auth::jwt::{Claims, SigningKey};
use serde_json::{json, Value};

fn groups_path() -> String {
    format!("/subscriptions/{SUB}/resourcegroups?api-version=2025-04-01")
}

/// The server's own signing key, read from its data folder as an attacker with the file
/// (or a test) would.
fn server_key(s: &AdminServer) -> SigningKey {
    let pem = std::fs::read_to_string(LocalIssuer::key_path(&s.data)).unwrap();
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    SigningKey::from_pkcs8_der(&STANDARD.decode(b64).unwrap()).unwrap()
}

fn claims(now: i64) -> Claims {
    Claims {
        issuer: "fhirlink".into(),
        subject: "admin".into(),
        audience: "https://management.azure.com/".into(),
        issued_at: now,
        not_before: now,
        expires: now + 600,
    }
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Asserts a 401 with ARM's error body and a Bearer challenge.
#[track_caller]
fn assert_401(s: &AdminServer, token: Option<&str>, code: &str) {
    let (status, body, headers) = s.call("GET", &groups_path(), token, None);
    assert_eq!(status, 401, "{token:?}: {body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate: {challenge:?}"
    );
}

#[test]
fn https_with_the_generated_ca_verifies_by_name_and_address() {
    let s = AdminServer::start();
    assert!(
        s.admin_url.starts_with("https://127.0.0.1:"),
        "{}",
        s.admin_url
    );
    let ca = s.ca.clone().expect("CA path printed");
    assert_eq!(ca, s.data.join("tls").join("ca.pem"));
    let token = s.token("admin");
    // By address (the certificate names the listener's IP) ...
    let (status, body, _) = s.call("GET", &groups_path(), Some(&token), None);
    assert_ne!(status, 401, "{body}");
    // ... and by the name localhost.
    let port = s.admin_url.rsplit(':').next().unwrap();
    let r = client_trusting(Some(&ca))
        .get(format!("https://localhost:{port}{}", groups_path()))
        .bearer_auth(&token)
        .send()
        .expect("TLS to localhost verifies");
    assert_ne!(r.status().as_u16(), 401);
    // A client that trusts another CA refuses the connection.
    let other = AdminServer::start();
    let err = client_trusting(other.ca.as_deref())
        .get(format!("{}{}", s.admin_url, groups_path()))
        .send()
        .expect_err("another CA must not verify this server");
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP to the TLS port gets no management answer.
    let plain = reqwest::blocking::Client::new()
        .get(format!("http://127.0.0.1:{port}{}", groups_path()))
        .bearer_auth(&token)
        .send();
    assert!(plain.map(|r| r.status().as_u16() >= 400).unwrap_or(true));
}

#[test]
fn ca_and_signing_key_survive_restart_and_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = AdminServer::start_in(&data, &[]);
    let ca = std::fs::read(s.ca.as_ref().unwrap()).unwrap();
    let token = s.token("admin");
    s.kill();
    let s = AdminServer::start_in(&data, &[]);
    assert_eq!(
        std::fs::read(s.ca.as_ref().unwrap()).unwrap(),
        ca,
        "same CA"
    );
    let (status, body, _) = s.call("GET", &groups_path(), Some(&token), None);
    assert_ne!(
        status, 401,
        "a token from before the restart still verifies: {body}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for secret in [LocalIssuer::key_path(&data), data.join("tls/ca-key.pem")] {
            let mode = std::fs::metadata(&secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", secret.display());
        }
    }
}

#[test]
fn missing_malformed_forged_expired_and_unsigned_tokens_get_401() {
    let s = AdminServer::start();
    let now = unix_now();
    let key = server_key(&s);

    assert_401(&s, None, "AuthenticationFailed");
    // Not a bearer token at all.
    let (status, body, _) = {
        let r = s
            .client()
            .get(format!("{}{}", s.admin_url, groups_path()))
            .header("authorization", "Basic YWRtaW46YWRtaW4=")
            .send()
            .unwrap();
        let st = r.status().as_u16();
        let h = r.headers().clone();
        (
            st,
            serde_json::from_str::<Value>(&r.text().unwrap()).unwrap(),
            h,
        )
    };
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("AuthenticationFailed"))
    );

    assert_401(&s, Some("not-a-jwt"), "InvalidAuthenticationToken");
    // Signed by another fhirlink's key.
    let other = tempfile::tempdir().unwrap();
    let forged = LocalIssuer::load_or_create(other.path())
        .unwrap()
        .mint("admin", now, 600)
        .unwrap();
    assert_401(&s, Some(&forged), "InvalidAuthenticationToken");
    // A good token with one byte of its payload changed.
    let good = key.sign(&claims(now)).unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let mut payload: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = json!("root");
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    assert_401(&s, Some(&tampered), "InvalidAuthenticationToken");
    // Expired an hour ago, with the server's own key.
    let expired = LocalIssuer::load(&s.data)
        .unwrap()
        .mint("admin", now - 7200, 3600)
        .unwrap();
    assert_401(&s, Some(&expired), "ExpiredAuthenticationToken");
    // Not valid for another hour.
    let mut early = claims(now + 3600);
    early.expires = now + 7200;
    assert_401(
        &s,
        Some(&key.sign(&early).unwrap()),
        "InvalidAuthenticationToken",
    );
    // Another audience, another issuer.
    let mut aud = claims(now);
    aud.audience = "https://graph.microsoft.com/".into();
    assert_401(
        &s,
        Some(&key.sign(&aud).unwrap()),
        "InvalidAuthenticationToken",
    );
    let mut iss = claims(now);
    iss.issuer = "https://login.microsoftonline.com/x/v2.0".into();
    assert_401(
        &s,
        Some(&key.sign(&iss).unwrap()),
        "InvalidAuthenticationToken",
    );
    // alg none (unsigned) and HS256 (the public key as an HMAC secret): refused by header.
    let claims_json = json!({"iss": "fhirlink", "sub": "admin", "aud": "https://management.azure.com/",
        "iat": now, "nbf": now, "exp": now + 600});
    for alg in ["none", "HS256", "RS256"] {
        let unsigned = format!(
            "{}.{}.",
            b64(&json!({"alg": alg, "typ": "JWT"})),
            b64(&claims_json)
        );
        assert_401(&s, Some(&unsigned), "InvalidAuthenticationToken");
        let junk = format!("{unsigned}{}", URL_SAFE_NO_PAD.encode([1u8; 32]));
        assert_401(&s, Some(&junk), "InvalidAuthenticationToken");
    }
    // And the good one passes authentication.
    let (status, body, _) = s.call("GET", &groups_path(), Some(&good), None);
    assert_ne!(status, 401, "{body}");
}

#[test]
fn token_command() {
    let s = AdminServer::start();
    let t = token_for(&s.data, "alice", "90m");
    let parts: Vec<&str> = t.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    assert_eq!(c["iss"], "fhirlink");
    assert_eq!(c["sub"], "alice");
    assert_eq!(c["aud"], "https://management.azure.com/");
    assert_eq!(
        c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(),
        5400
    );
    assert!(c["nbf"].is_i64());

    let run = |args: &[&str]| std::process::Command::new(BIN).args(args).output().unwrap();
    let data = s.data.to_str().unwrap();
    for bad in [
        vec!["token", "--principal", "", "--data", data],
        vec![
            "token",
            "--principal",
            "a",
            "--expires",
            "0",
            "--data",
            data,
        ],
        vec![
            "token",
            "--principal",
            "a",
            "--expires",
            "400d",
            "--data",
            data,
        ],
        vec![
            "token",
            "--principal",
            "a",
            "--expires",
            "soon",
            "--data",
            data,
        ],
    ] {
        let out = run(&bad);
        assert!(!out.status.success(), "{bad:?}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = run(&[
        "token",
        "--principal",
        "a",
        "--data",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no signing key"), "{err}");
    assert!(
        !empty.path().join("identity").exists(),
        "token never creates a key"
    );
}

#[test]
fn plain_http_only_when_asked() {
    let s = AdminServer::start_with(&["--admin-plain-http"]);
    assert!(s.admin_url.starts_with("http://"), "{}", s.admin_url);
    assert!(s.ca.is_none());
    let token = s.token("admin");
    let (status, body, _) = s.call("GET", &groups_path(), Some(&token), None);
    assert_ne!(status, 401, "{body}");
    assert_401(&s, None, "AuthenticationFailed");
}

#[test]
fn own_certificate_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    // The operator's certificate for both listeners.
    let s = AdminServer::start_with(&[
        "--admin-tls-cert",
        cert.to_str().unwrap(),
        "--admin-tls-key",
        key.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        !s.data.join("tls").exists(),
        "no CA is made when the operator brings the certificates"
    );
    let port = s.admin_url.rsplit(':').next().unwrap();
    let r = client_trusting(Some(&cert))
        .get(format!("https://localhost:{port}{}", groups_path()))
        .send()
        .expect("the operator's certificate verifies");
    assert_eq!(r.status().as_u16(), 401);
}

#[test]
fn bad_admin_options_are_refused_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let run = |extra: &[&str]| {
        std::process::Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--data",
            ])
            .arg(&data)
            .args(extra)
            .env("FHIRLINK_LOG", "error")
            .env("FHIRLINK_DNS_LISTEN", "127.0.0.1:0")
            .output()
            .unwrap()
    };
    let missing = tmp.path().join("missing.pem");
    let missing = missing.to_str().unwrap();
    for extra in [
        vec!["--admin-tls-cert", missing],
        vec!["--admin-tls-cert", missing, "--admin-tls-key", missing],
        vec![
            "--admin-plain-http",
            "--admin-tls-cert",
            missing,
            "--admin-tls-key",
            missing,
        ],
        vec!["--owner", ""],
        vec!["--admin-tls-names", "not a name"],
    ] {
        let out = run(&extra);
        assert!(!out.status.success(), "{extra:?} must be refused");
    }
}

#[test]
fn sigterm_stops_both_planes_gracefully() {
    let s = AdminServer::start();
    let token = s.token("admin");
    let (status, _, _) = s.call("GET", &groups_path(), Some(&token), None);
    assert_ne!(status, 401);
    let status = s.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
}
