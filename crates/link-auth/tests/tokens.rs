//! Refused tokens, one case each, against the pure verifier with one issuer holding an EC P-256
//! key and an RSA key: forged, expired, not yet valid, wrong audience or issuer, `alg: none`,
//! the HS256-with-the-RSA-public-key confusion (RFC 8725 §2.1), header algorithms that do not
//! fit their key, oversized and malformed tokens. Each names the RFC rule it guards.

mod common;

use std::sync::OnceLock;

use common::*;
use link_auth::jwt::{Identity, TokenError, TrustedIssuer, Verifier, MAX_TOKEN_LEN};
use ring::hmac;
use serde_json::{json, Value};

const ISS: &str = "https://idp.example.com/tenant/v2.0";

struct Keys {
    ec: Signer,
    rsa: Signer,
    verifier: Verifier,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let ec = Signer::ec("ec-1");
        let rsa = Signer::rsa(RSA_A, "rsa-a");
        let verifier = Verifier::new(vec![TrustedIssuer {
            issuer: ISS.into(),
            keys: vec![ec.verifying_key(), rsa.verifying_key()],
            audiences: vec!["https://management.azure.com/".into()],
        }]);
        Keys { ec, rsa, verifier }
    })
}

/// The one boundary every case goes through: the data plane's call for the FHIR service.
fn check(token: &str) -> Result<Identity, TokenError> {
    keys().verifier.verify_for(token, NOW, &[FHIR_AUD])
}

fn good() -> Value {
    payload(ISS)
}

/// A token with `header` and `payload`, the signature given as raw bytes.
fn assemble(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64(header.to_string()),
        b64(payload.to_string()),
        b64(signature)
    )
}

#[test]
fn good_tokens_of_both_key_types_verify() {
    for signer in [&keys().ec, &keys().rsa] {
        let id = check(&signer.sign(&good())).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.audience.as_str()),
            ("user-1", FHIR_AUD)
        );
        // Without a kid, the keys of the header's algorithm are tried.
        let no_kid = signer.sign_raw(&json!({"alg": signer.alg()}), &good());
        assert!(check(&no_kid).is_ok());
        // RFC 9068 §2.1 access-token typ.
        let at = signer.sign_raw(&json!({"alg": signer.alg(), "typ": "at+jwt"}), &good());
        assert!(check(&at).is_ok());
    }
}

#[test]
fn rfc7515_5_2_forged_signature() {
    for signer in [&keys().ec, &keys().rsa] {
        // Another key claiming the trusted key's kid.
        let impostor = match signer {
            Signer::Ec { .. } => Signer::ec(signer.kid()),
            Signer::Rsa { .. } => Signer::rsa(RSA_B, signer.kid()),
        };
        assert_eq!(
            check(&impostor.sign(&good())),
            Err(TokenError::BadSignature)
        );
        // A good token's signature on a changed payload.
        let token = signer.sign(&good());
        let parts: Vec<&str> = token.split('.').collect();
        let elevated = with(&good(), |p| {
            p.insert("scope".into(), json!("system/*.cruds"));
        });
        let spliced = format!("{}.{}.{}", parts[0], b64(elevated.to_string()), parts[2]);
        assert_eq!(check(&spliced), Err(TokenError::BadSignature));
        // A signature of the wrong length, and none at all.
        let header = json!({"alg": signer.alg(), "kid": signer.kid()});
        for sig in [vec![], vec![0u8; 64], vec![0u8; 256], vec![1u8; 300]] {
            assert_eq!(
                check(&assemble(&header, &good(), &sig)),
                Err(TokenError::BadSignature),
                "{} {}",
                signer.alg(),
                sig.len()
            );
        }
    }
}

#[test]
fn rfc7519_4_1_4_expired() {
    let p = with(&good(), |p| {
        p.insert("exp".into(), json!(NOW - 61));
    });
    assert_eq!(
        check(&keys().rsa.sign(&p)),
        Err(TokenError::Expired {
            exp: NOW - 61,
            now: NOW
        })
    );
    let p = with(&good(), |p| {
        p.remove("exp");
    });
    assert_eq!(
        check(&keys().ec.sign(&p)),
        Err(TokenError::Malformed("exp is missing"))
    );
}

#[test]
fn rfc7519_4_1_5_not_yet_valid() {
    let p = with(&good(), |p| {
        p.insert("nbf".into(), json!(NOW + 61));
    });
    assert_eq!(
        check(&keys().rsa.sign(&p)),
        Err(TokenError::NotYetValid {
            nbf: NOW + 61,
            now: NOW
        })
    );
    // Within the skew it is fine.
    let p = with(&good(), |p| {
        p.insert("nbf".into(), json!(NOW + 60));
    });
    assert!(check(&keys().rsa.sign(&p)).is_ok());
}

#[test]
fn rfc7519_4_1_3_wrong_audience() {
    for aud in [
        json!("https://other.azurehealthcareapis.com"),
        json!("https://management.azure.com/"),
        json!(["https://graph.microsoft.com", "https://other.example"]),
        json!(""),
        json!(null),
        json!(7),
    ] {
        let p = with(&good(), |p| {
            p.insert("aud".into(), aud.clone());
        });
        assert_eq!(
            check(&keys().rsa.sign(&p)),
            Err(TokenError::WrongAudience),
            "{aud}"
        );
    }
    // A list naming the service is fine, and a trailing slash does not matter.
    let p = with(&good(), |p| {
        p.insert("aud".into(), json!(["x", format!("{FHIR_AUD}/")]));
    });
    assert_eq!(check(&keys().rsa.sign(&p)).unwrap().audience, FHIR_AUD);
    // The issuer's own audiences serve `verify`, not `verify_for`.
    let p = with(&good(), |p| {
        p.insert("aud".into(), json!("https://management.azure.com"));
    });
    let token = keys().rsa.sign(&p);
    assert_eq!(check(&token), Err(TokenError::WrongAudience));
    assert_eq!(
        keys().verifier.verify(&token, NOW).unwrap().audience,
        "https://management.azure.com/"
    );
}

#[test]
fn rfc7519_4_1_1_wrong_issuer() {
    for iss in [
        json!("https://evil.example.com/tenant/v2.0"),
        json!(format!("{ISS}/")),
        json!("fhirlink"),
        json!(null),
        json!([ISS]),
    ] {
        let p = with(&good(), |p| {
            p.insert("iss".into(), iss.clone());
        });
        assert_eq!(
            check(&keys().ec.sign(&p)),
            Err(TokenError::WrongIssuer),
            "{iss}"
        );
    }
}

#[test]
fn rfc7518_3_6_alg_none() {
    for alg in ["none", "None", "NONE"] {
        for kid in [None, Some("rsa-a"), Some("ec-1")] {
            let mut header = json!({"alg": alg, "typ": "JWT"});
            if let Some(kid) = kid {
                header["kid"] = json!(kid);
            }
            let unsigned = format!("{}.{}.", b64(header.to_string()), b64(good().to_string()));
            assert_eq!(check(&unsigned), Err(TokenError::UnsupportedAlgorithm));
        }
    }
    let no_alg = keys().ec.sign_raw(&json!({"kid": "ec-1"}), &good());
    assert_eq!(check(&no_alg), Err(TokenError::UnsupportedAlgorithm));
}

#[test]
fn rfc8725_2_1_hs256_with_the_rsa_public_key_as_secret() {
    // The classic confusion: an attacker who knows the RSA public key HMACs a token with its
    // bytes (in whatever form a confused verifier might load it) and says HS256.
    let rsa = &keys().rsa;
    let (n, _) = rsa.rsa_components().unwrap();
    let jwk_text = rsa.jwk().to_string();
    let secrets: Vec<Vec<u8>> = vec![rsa.public_bytes(), n, jwk_text.into_bytes()];
    for secret in secrets {
        for alg in ["HS256", "HS384", "HS512"] {
            for kid in [Some("rsa-a"), None] {
                let mut header = json!({"alg": alg, "typ": "JWT"});
                if let Some(kid) = kid {
                    header["kid"] = json!(kid);
                }
                let input = format!("{}.{}", b64(header.to_string()), b64(good().to_string()));
                let tag = hmac::sign(
                    &hmac::Key::new(hmac::HMAC_SHA256, &secret),
                    input.as_bytes(),
                );
                let token = format!("{input}.{}", b64(tag.as_ref()));
                assert_eq!(check(&token), Err(TokenError::UnsupportedAlgorithm));
            }
        }
    }
}

#[test]
fn rfc8725_3_1_header_algorithm_must_fit_the_key() {
    let (ec, rsa) = (&keys().ec, &keys().rsa);
    // RS256 against the EC key: an RSA signature, the EC key's kid.
    let t = rsa.sign_raw(&json!({"alg": "RS256", "kid": "ec-1"}), &good());
    assert_eq!(check(&t), Err(TokenError::UnsupportedAlgorithm));
    // ES256 against the RSA key.
    let t = ec.sign_raw(&json!({"alg": "ES256", "kid": "rsa-a"}), &good());
    assert_eq!(check(&t), Err(TokenError::UnsupportedAlgorithm));
    // Without a kid, an algorithm no key of the issuer has.
    let only_ec = Verifier::new(vec![TrustedIssuer {
        issuer: ISS.into(),
        keys: vec![ec.verifying_key()],
        audiences: vec![],
    }]);
    let t = rsa.sign_raw(&json!({"alg": "RS256"}), &good());
    assert_eq!(
        only_ec.verify_for(&t, NOW, &[FHIR_AUD]),
        Err(TokenError::UnsupportedAlgorithm)
    );
    // Algorithms of the same families that are not implemented, whatever the signature.
    for alg in [
        "PS256", "RS384", "RS512", "ES384", "ES512", "EdDSA", "rs256", "es256",
    ] {
        for signer in [ec, rsa] {
            let t = signer.sign_raw(&json!({"alg": alg, "kid": signer.kid()}), &good());
            assert_eq!(check(&t), Err(TokenError::UnsupportedAlgorithm), "{alg}");
        }
    }
}

#[test]
fn rfc7515_4_1_3_keys_named_by_the_token_are_never_used() {
    // The attacker's own key embedded (`jwk`) or pointed at (`jku`, `x5u`), no kid: the
    // trusted keys are the only candidates, and none verifies.
    let attacker = Signer::ec("attacker");
    for extra in [
        json!({"jwk": attacker.jwk()}),
        json!({"jku": "https://evil.example/jwks"}),
        json!({"x5u": "https://evil.example/cert.pem"}),
    ] {
        let mut header = json!({"alg": "ES256"});
        header
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let t = attacker.sign_raw(&header, &good());
        assert_eq!(check(&t), Err(TokenError::BadSignature), "{extra}");
    }
    let t = attacker.sign(&good());
    assert_eq!(check(&t), Err(TokenError::UnknownKey));
}

#[test]
fn rfc7515_4_1_11_crit_and_odd_typ() {
    let rsa = &keys().rsa;
    for header in [
        json!({"alg": "RS256", "kid": "rsa-a", "crit": ["exp"], "exp": 1}),
        json!({"alg": "RS256", "kid": "rsa-a", "crit": []}),
        json!({"alg": "RS256", "kid": "rsa-a", "typ": "JWE"}),
        json!({"alg": "RS256", "kid": "rsa-a", "typ": "secevent+jwt"}),
        json!({"alg": "RS256", "kid": "rsa-a", "typ": 1}),
        json!({"alg": "RS256", "kid": 1}),
        json!({"alg": "RS256", "kid": "k".repeat(257)}),
    ] {
        assert!(
            matches!(
                check(&rsa.sign_raw(&header, &good())),
                Err(TokenError::Malformed(_))
            ),
            "{header}"
        );
    }
}

#[test]
fn oversized_token_and_claims() {
    let rsa = &keys().rsa;
    // Over the size limit: refused unread.
    let p = with(&good(), |p| {
        p.insert("pad".into(), json!("x".repeat(MAX_TOKEN_LEN)));
    });
    assert_eq!(check(&rsa.sign(&p)), Err(TokenError::Malformed("too long")));
    // Under it, but with claims beyond their bounds.
    let many: Vec<String> = (0..300).map(|i| format!("s{i}")).collect();
    for (name, value) in [
        ("scope", json!(many.join(" "))),
        ("roles", json!(many)),
        ("oid", json!("o".repeat(300))),
        ("patient", json!("p".repeat(65))),
        (
            "fhirUser",
            json!(format!("Practitioner/{}", "1".repeat(1100))),
        ),
        ("sub", json!("u".repeat(300))),
    ] {
        let p = with(&good(), |p| {
            p.insert(name.into(), value.clone());
        });
        let result = check(&rsa.sign(&p));
        assert!(
            matches!(
                result,
                Err(TokenError::Malformed(_) | TokenError::BadSubject)
            ),
            "{name}: {result:?}"
        );
    }
    // More than 16 audiences is not a token for us.
    let auds: Vec<String> = (0..16).map(|i| format!("https://a{i}")).collect();
    let p = with(&good(), |p| {
        let mut list = auds.clone();
        list.push(FHIR_AUD.into());
        p.insert("aud".into(), json!(list));
    });
    assert_eq!(check(&rsa.sign(&p)), Err(TokenError::WrongAudience));
}

#[test]
fn malformed_base64_and_json() {
    let rsa = &keys().rsa;
    let good_token = rsa.sign(&good());
    let parts: Vec<&str> = good_token.split('.').collect();
    let header_b64 = parts[0];
    let cases: Vec<(String, &str)> = vec![
        ("".into(), "empty"),
        (format!("{header_b64}.{}", parts[1]), "two parts"),
        (format!("{good_token}.x"), "four parts"),
        // Standard base64 characters and padding are not base64url (RFC 7515 §2).
        (
            format!("{header_b64}=.{}.{}", parts[1], parts[2]),
            "padded header",
        ),
        (
            format!("{}.{}.{}", header_b64.replace('e', "+"), parts[1], parts[2]),
            "+ in header",
        ),
        (
            format!("{header_b64}.{}./{}", parts[1], parts[2]),
            "/ in signature",
        ),
        (
            format!("{}.{}.{}", b64("{\"alg\":"), parts[1], parts[2]),
            "header not JSON",
        ),
        (
            format!("{}.{}.{}", b64("[\"RS256\"]"), parts[1], parts[2]),
            "header not an object",
        ),
        (format!("é.{}.{}", parts[1], parts[2]), "not ASCII"),
    ];
    for (token, what) in cases {
        assert!(
            matches!(check(&token), Err(TokenError::Malformed(_))),
            "{what}: {:?}",
            check(&token)
        );
    }
    // A payload that is not base64url is not even decoded before the signature, which
    // then fails.
    assert_eq!(
        check(&format!("{header_b64}.%%%.{}", parts[2])),
        Err(TokenError::BadSignature)
    );
    // A payload that is not JSON, or not an object, correctly signed: malformed, after the
    // signature (the claims are not read before).
    for payload in ["not json", "[1,2]", "\"str\"", "{\"iss\": 1,}"] {
        let header = json!({"alg": "RS256", "kid": "rsa-a"}).to_string();
        let input = format!("{}.{}", b64(header), b64(payload));
        let sig = rsa.signature(input.as_bytes());
        let token = format!("{input}.{}", b64(sig));
        assert_eq!(
            check(&token),
            Err(TokenError::Malformed("payload")),
            "{payload}"
        );
    }
}

#[test]
fn garbage_never_panics() {
    let good_token = keys().rsa.sign(&good());
    // Every prefix and every single-character corruption of a good RS256 token.
    for i in 0..good_token.len() {
        assert!(check(&good_token[..i]).is_err());
        let mut b = good_token.clone().into_bytes();
        b[i] = if b[i] == b'A' { b'B' } else { b'A' };
        let t = String::from_utf8(b).unwrap();
        if t != good_token {
            assert!(check(&t).is_err(), "{i}");
        }
    }
}

#[test]
fn every_error_has_a_header_safe_description() {
    for e in [
        TokenError::Malformed("x"),
        TokenError::UnsupportedAlgorithm,
        TokenError::UnknownKey,
        TokenError::BadSignature,
        TokenError::WrongIssuer,
        TokenError::WrongAudience,
        TokenError::BadSubject,
        TokenError::Expired { exp: 0, now: 1 },
        TokenError::NotYetValid { nbf: 1, now: 0 },
        TokenError::IssuerUnreachable(link_auth::oidc::OidcError::Insecure("http://x".into())),
    ] {
        // RFC 6750 §3: error_description is %x20-21 / %x23-5B / %x5D-7E.
        let d = e.description();
        assert!(
            d.bytes().all(|b| b == 0x20
                || b == 0x21
                || (0x23..=0x5B).contains(&b)
                || (0x5D..=0x7E).contains(&b)),
            "{d}"
        );
        // The detail of an unreachable issuer (its URLs) stays out of the message.
        assert!(!e.to_string().contains("http://x"));
    }
}
