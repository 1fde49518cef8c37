//! SMART Backend Services client assertions (`link_auth::assertion`): RS384 and ES384 keys
//! as clients register them in a JWK Set, and every way an assertion is refused — wrong
//! signature or key, another client, another audience, expired, living longer than five
//! minutes, no `jti`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use link_auth::assertion::{self, AssertionError};
use link_auth::jwk::client_key_from_jwk;
use link_auth::jwt::{Algorithm, TokenError, VerifyingKey};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
    ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256, RSA_PKCS1_SHA384,
};
use serde_json::{json, Value};

const RSA_A: &[u8] = include_bytes!("data/rsa-2048-a.pk8");
const RSA_B: &[u8] = include_bytes!("data/rsa-2048-b.pk8");
const NOW: i64 = 1_800_000_000;
const CLIENT: &str = "bulk-client";
const ENDPOINT: &str = "https://fhirsvc.azurehealthcareapis.com/auth/token";

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

enum Key {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair, bool),
}

impl Key {
    fn es384() -> Key {
        let rng = SystemRandom::new();
        let der = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        Key::Ec(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, der.as_ref(), &rng).unwrap(),
        )
    }

    fn rs384(der: &[u8]) -> Key {
        Key::Rsa(RsaKeyPair::from_pkcs8(der).unwrap(), true)
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::Ec(_) => "ES384",
            Key::Rsa(_, true) => "RS384",
            Key::Rsa(_, false) => "RS256",
        }
    }

    /// The public JWK as a client registers it.
    fn jwk(&self, kid: &str) -> Value {
        match self {
            Key::Ec(pair) => {
                let p = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-384", "kid": kid, "alg": "ES384",
                       "x": b64(&p[1..49]), "y": b64(&p[49..97])})
            }
            Key::Rsa(pair, _) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": kid, "n": b64(&c.n), "e": b64(&c.e)})
            }
        }
    }

    fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match self {
            Key::Ec(pair) => pair.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Key::Rsa(pair, sha384) => {
                let mut sig = vec![0u8; pair.public().modulus_len()];
                let alg = if *sha384 {
                    &RSA_PKCS1_SHA384
                } else {
                    &RSA_PKCS1_SHA256
                };
                pair.sign(alg, &rng, input.as_bytes(), &mut sig).unwrap();
                sig
            }
        };
        format!("{input}.{}", b64(sig))
    }
}

fn claims() -> Value {
    json!({"iss": CLIENT, "sub": CLIENT, "aud": ENDPOINT, "exp": NOW + 299, "jti": "j-1"})
}

fn with(mut v: Value, f: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    f(v.as_object_mut().unwrap());
    v
}

fn check(token: &str, keys: &[VerifyingKey]) -> Result<assertion::Assertion, AssertionError> {
    assertion::verify(token, CLIENT, keys, &[ENDPOINT], NOW)
}

#[test]
fn es384_and_rs384_assertions_verify() {
    for (key, kid) in [(Key::es384(), "ec-1"), (Key::rs384(RSA_A), "rsa-1")] {
        let registered = client_key_from_jwk(&key.jwk(kid)).unwrap();
        assert_eq!(registered.algorithm().name(), key.alg());
        let token = key.sign(
            &json!({"alg": key.alg(), "typ": "JWT", "kid": kid}),
            &claims(),
        );
        let ok = check(&token, std::slice::from_ref(&registered)).unwrap();
        assert_eq!((ok.jti.as_str(), ok.expires), ("j-1", NOW + 299));
        // Without a kid, every registered key of the algorithm is tried.
        let token = key.sign(&json!({"alg": key.alg()}), &claims());
        assert!(check(&token, &[registered]).is_ok());
    }
}

#[test]
fn the_key_fixes_the_algorithm() {
    let rsa = Key::rs384(RSA_A);
    let registered = client_key_from_jwk(&rsa.jwk("r")).unwrap();
    assert_eq!(registered.algorithm(), Algorithm::Rs384);
    // The same RSA key signing RS256: its registration says RS384 (no alg: SMART's default).
    let rs256 = Key::Rsa(RsaKeyPair::from_pkcs8(RSA_A).unwrap(), false);
    let token = rs256.sign(&json!({"alg": "RS256", "kid": "r"}), &claims());
    assert_eq!(
        check(&token, std::slice::from_ref(&registered)),
        Err(AssertionError::Token(TokenError::UnsupportedAlgorithm))
    );
    // A registration that says RS256 verifies RS256 only.
    let jwk = with(rsa.jwk("r"), |k| {
        k.insert("alg".into(), json!("RS256"));
    });
    assert_eq!(
        client_key_from_jwk(&jwk).unwrap().algorithm(),
        Algorithm::Rs256
    );
    for alg in ["HS256", "none", "PS384", "ES512"] {
        let token = rsa.sign(&json!({"alg": alg, "kid": "r"}), &claims());
        assert_eq!(
            check(&token, std::slice::from_ref(&registered)),
            Err(AssertionError::Token(TokenError::UnsupportedAlgorithm)),
            "{alg}"
        );
    }
}

#[test]
fn wrongly_signed_assertions_are_refused() {
    let registered = client_key_from_jwk(&Key::rs384(RSA_A).jwk("r")).unwrap();
    // Another key under the registered kid.
    let other = Key::rs384(RSA_B);
    let token = other.sign(&json!({"alg": "RS384", "kid": "r"}), &claims());
    assert_eq!(
        check(&token, std::slice::from_ref(&registered)),
        Err(AssertionError::Token(TokenError::BadSignature))
    );
    // A kid that is not registered.
    let token = other.sign(&json!({"alg": "RS384", "kid": "elsewhere"}), &claims());
    assert_eq!(
        check(&token, std::slice::from_ref(&registered)),
        Err(AssertionError::Token(TokenError::UnknownKey))
    );
    // A signature changed in transit.
    let good = Key::rs384(RSA_A).sign(&json!({"alg": "RS384", "kid": "r"}), &claims());
    let mut bent = good.clone();
    let last = bent.pop().unwrap();
    bent.push(if last == 'A' { 'B' } else { 'A' });
    assert!(check(&bent, &[registered]).is_err());
}

#[test]
fn claims_are_checked() {
    let key = Key::es384();
    let registered = vec![client_key_from_jwk(&key.jwk("e")).unwrap()];
    let sign = |c: Value| key.sign(&json!({"alg": "ES384", "kid": "e"}), &c);
    let cases: Vec<(Value, AssertionError)> = vec![
        (
            with(claims(), |c| {
                c.insert("iss".into(), json!("someone-else"));
            }),
            AssertionError::WrongClient,
        ),
        (
            with(claims(), |c| {
                c.insert("sub".into(), json!("someone-else"));
            }),
            AssertionError::WrongClient,
        ),
        (
            with(claims(), |c| {
                c.insert("aud".into(), json!("https://other.example/token"));
            }),
            AssertionError::WrongAudience,
        ),
        (
            with(claims(), |c| {
                c.insert("exp".into(), json!(NOW - 120));
            }),
            AssertionError::Expired,
        ),
        (
            with(claims(), |c| {
                c.insert("exp".into(), json!(NOW + 3600));
            }),
            AssertionError::TooLong,
        ),
        (
            with(claims(), |c| {
                c.insert("iat".into(), json!(NOW - 200));
                c.insert("exp".into(), json!(NOW + 250));
            }),
            AssertionError::TooLong,
        ),
        (
            with(claims(), |c| {
                c.insert("nbf".into(), json!(NOW + 600));
            }),
            AssertionError::NotYetValid,
        ),
        (
            with(claims(), |c| {
                c.remove("jti");
            }),
            AssertionError::BadJti,
        ),
        (
            with(claims(), |c| {
                c.insert("jti".into(), json!("x".repeat(256)));
            }),
            AssertionError::BadJti,
        ),
        (
            with(claims(), |c| {
                c.remove("exp");
            }),
            AssertionError::Token(TokenError::Malformed("exp is missing")),
        ),
    ];
    for (c, want) in cases {
        assert_eq!(check(&sign(c.clone()), &registered), Err(want), "{c}");
    }
    // aud as an array naming the endpoint (with or without a trailing slash) is fine.
    let c = with(claims(), |c| {
        c.insert(
            "aud".into(),
            json!(["https://x.example", format!("{ENDPOINT}/")]),
        );
    });
    assert!(check(&sign(c), &registered).is_ok());
}

#[test]
fn registered_keys_are_public_signing_keys() {
    let ec = Key::es384().jwk("e");
    assert!(client_key_from_jwk(&with(ec.clone(), |k| {
        k.insert("use".into(), json!("enc"));
    }))
    .is_err());
    assert!(client_key_from_jwk(&with(ec.clone(), |k| {
        k.insert("alg".into(), json!("ES256"));
    }))
    .is_err());
    assert!(client_key_from_jwk(&with(ec, |k| {
        k.insert("x".into(), json!(b64([1u8; 32])));
    }))
    .is_err());
    // A P-384 key without a kid gets its RFC 7638 thumbprint.
    let bare = with(Key::es384().jwk("e"), |k| {
        k.remove("kid");
    });
    assert_eq!(client_key_from_jwk(&bare).unwrap().kid().len(), 43);
}
