//! JWTs and JWKs: the input is tried as a compact JWS verified by a `Verifier` with a fixed
//! ES256 key (header, base64url, claims; the signature fails for anything not signed by it),
//! and as a JWK Set document and a single JWK.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use link_auth::jwt::{SigningKey, TrustedIssuer, Verifier};

fn verifier() -> &'static Verifier {
    static V: OnceLock<Verifier> = OnceLock::new();
    V.get_or_init(|| {
        let (key, _) = SigningKey::generate().expect("key");
        Verifier::new(vec![TrustedIssuer {
            issuer: "https://issuer.example".into(),
            keys: vec![key.verifying_key()],
            audiences: vec!["https://management.azure.com".into()],
        }])
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        let _ = verifier().verify(token, 1_767_225_600);
        let _ = verifier().verify_for(token, 1_767_225_600, &["https://fhir.example"]);
    }
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = link_auth::jwk::parse_jwks(&doc);
        let _ = link_auth::jwk::key_from_jwk(&doc);
    }
});
