//! Test kit shared by the token tests: signers that make tokens with any header (ES256 keys made
//! by ring, RS256 keys from the committed test-only fixtures in tests/data/), and a local OIDC
//! issuer — an HTTP server on 127.0.0.1 serving a discovery document and a JWKS that the test
//! can change while it runs, counting what it is asked for.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use link_auth::jwt::VerifyingKey;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use serde_json::{json, Value};

pub const NOW: i64 = 1_800_000_000;
pub const FHIR_AUD: &str = "https://myfhir.azurehealthcareapis.com";

pub const RSA_A: &[u8] = include_bytes!("../data/rsa-2048-a.pk8");
pub const RSA_B: &[u8] = include_bytes!("../data/rsa-2048-b.pk8");
pub const RSA_4096: &[u8] = include_bytes!("../data/rsa-4096.pk8");

pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A private key that signs whatever header and payload a test hands it.
pub enum Signer {
    Ec { pair: EcdsaKeyPair, kid: String },
    Rsa { pair: RsaKeyPair, kid: String },
}

impl Signer {
    pub fn ec(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Signer::Ec {
            pair,
            kid: kid.into(),
        }
    }

    pub fn rsa(pkcs8: &[u8], kid: &str) -> Signer {
        Signer::Rsa {
            pair: RsaKeyPair::from_pkcs8(pkcs8).unwrap(),
            kid: kid.into(),
        }
    }

    pub fn kid(&self) -> &str {
        match self {
            Signer::Ec { kid, .. } | Signer::Rsa { kid, .. } => kid,
        }
    }

    /// The `alg` this key signs with.
    pub fn alg(&self) -> &'static str {
        match self {
            Signer::Ec { .. } => "ES256",
            Signer::Rsa { .. } => "RS256",
        }
    }

    /// RSA's modulus and exponent, big-endian.
    pub fn rsa_components(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Signer::Rsa { pair, .. } => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                Some((c.n, c.e))
            }
            Signer::Ec { .. } => None,
        }
    }

    /// The public key's own bytes: the SEC1 point, or the PKCS#1 RSAPublicKey DER.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            Signer::Ec { pair, .. } => pair.public_key().as_ref().to_vec(),
            Signer::Rsa { pair, .. } => pair.public().as_ref().to_vec(),
        }
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        match self {
            Signer::Ec { pair, kid } => {
                VerifyingKey::from_point(pair.public_key().as_ref(), kid).unwrap()
            }
            Signer::Rsa { kid, .. } => {
                let (n, e) = self.rsa_components().unwrap();
                VerifyingKey::from_rsa(&n, &e, kid).unwrap()
            }
        }
    }

    pub fn jwk(&self) -> Value {
        self.verifying_key().to_jwk()
    }

    /// The raw signature of `input` under this key.
    pub fn signature(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match self {
            Signer::Ec { pair, .. } => pair.sign(&rng, input).unwrap().as_ref().to_vec(),
            Signer::Rsa { pair, .. } => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &rng, input, &mut sig).unwrap();
                sig
            }
        }
    }

    /// A token with exactly this header and payload, signed by this key.
    pub fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
        let sig = self.signature(input.as_bytes());
        format!("{input}.{}", b64(sig))
    }

    /// A token with the usual header (`alg`, `typ`, `kid`) and `payload`.
    pub fn sign(&self, payload: &Value) -> String {
        self.sign_raw(
            &json!({"alg": self.alg(), "typ": "JWT", "kid": self.kid()}),
            payload,
        )
    }
}

/// A valid payload from `iss` for the FHIR service, with SMART and Azure claims.
pub fn payload(iss: &str) -> Value {
    json!({
        "iss": iss,
        "sub": "user-1",
        "aud": FHIR_AUD,
        "iat": NOW,
        "nbf": NOW,
        "exp": NOW + 3600,
        "oid": "8f1c4a9e-1d5b-4a6e-9a43-0f2f6d2b9c11",
        "azp": "smart-app",
        "scope": "launch/patient patient/Observation.rs patient/Patient.r",
        "roles": ["FHIR.Reader"],
        "patient": "p-42",
        "fhirUser": "Patient/p-42",
    })
}

/// A copy of `v` with `f` applied.
pub fn with(v: &Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut v = v.clone();
    f(v.as_object_mut().unwrap());
    v
}

/// What the local OIDC issuer serves, changeable while it runs.
#[derive(Default)]
struct Served {
    discovery: Mutex<Option<Value>>,
    jwks: Mutex<Value>,
    /// When set, the JWKS answers with this status instead.
    jwks_status: Mutex<Option<StatusCode>>,
    /// When set, the JWKS answer waits this long first.
    jwks_delay: Mutex<Option<Duration>>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// A small OIDC issuer on 127.0.0.1: `/.well-known/openid-configuration` and `/jwks`.
pub struct LocalOidc {
    pub addr: SocketAddr,
    scheme: &'static str,
    served: Arc<Served>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalOidc {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalOidc {
    /// Starts an issuer on plain HTTP whose discovery document is the honest one.
    pub async fn start(jwks: Value) -> LocalOidc {
        LocalOidc::start_with(jwks, None).await
    }

    /// Starts an issuer, over HTTPS when given a TLS configuration.
    pub async fn start_with(jwks: Value, tls: Option<Arc<rustls::ServerConfig>>) -> LocalOidc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Served::default());
        *served.jwks.lock().unwrap() = jwks;
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            // A tenant's authority under the issuer, as Entra's are: the same document.
            .route("/{tenant}/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks_doc))
            .with_state(served.clone());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let task = tokio::spawn(async move {
            match tls {
                Some(tls) => {
                    link_auth::https::serve(listener, tls, app, std::future::pending()).await
                }
                None => axum::serve(listener, app).await.unwrap(),
            }
        });
        let oidc = LocalOidc {
            addr,
            scheme,
            served,
            task,
        };
        oidc.set_discovery(json!({
            "issuer": oidc.issuer(),
            "jwks_uri": format!("{}/jwks", oidc.issuer()),
            "authorization_endpoint": format!("{}/authorize", oidc.issuer()),
            "token_endpoint": format!("{}/token", oidc.issuer()),
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
        }));
        oidc
    }

    /// The issuer (and authority) URL.
    pub fn issuer(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }

    pub fn set_discovery(&self, doc: Value) {
        *self.served.discovery.lock().unwrap() = Some(doc);
    }

    pub fn set_jwks(&self, doc: Value) {
        *self.served.jwks.lock().unwrap() = doc;
    }

    pub fn set_keys(&self, signers: &[&Signer]) {
        self.set_jwks(jwks(signers));
    }

    pub fn fail_jwks(&self, status: Option<StatusCode>) {
        *self.served.jwks_status.lock().unwrap() = status;
    }

    pub fn delay_jwks(&self, delay: Option<Duration>) {
        *self.served.jwks_delay.lock().unwrap() = delay;
    }

    pub fn jwks_hits(&self) -> usize {
        self.served.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.served.discovery_hits.load(Ordering::SeqCst)
    }
}

pub fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk()).collect::<Vec<_>>()})
}

async fn discovery(State(s): State<Arc<Served>>) -> Response {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let doc = s.discovery.lock().unwrap().clone();
    match doc {
        Some(doc) => axum::Json(doc).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn jwks_doc(State(s): State<Arc<Served>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let delay = *s.jwks_delay.lock().unwrap();
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    let status = *s.jwks_status.lock().unwrap();
    if let Some(status) = status {
        return status.into_response();
    }
    let doc = s.jwks.lock().unwrap().clone();
    axum::Json(doc).into_response()
}
