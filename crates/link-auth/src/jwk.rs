//! JSON Web Keys (RFC 7517) and JWK Sets as an OIDC issuer publishes them at its `jwks_uri`:
//! turned into [`VerifyingKey`]s, keeping only keys this crate can verify with and the issuer
//! meant for signatures.
//!
//! A JWKS is read as a whole even when some keys are not usable: issuers publish encryption
//! keys, other algorithms and the odd broken entry next to their signing keys, and one such key
//! must not take the others down (RFC 7517 §5: "implementations SHOULD ignore JWKs within a JWK
//! Set that use `kty` values that are not understood"). Pure: no IO.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{Map, Value};

use crate::jwt::{self, Algorithm, VerifyingKey};

/// The most keys one JWKS may hold (Azure AD publishes about ten; rotation needs two or three).
pub const MAX_JWKS_KEYS: usize = 100;
/// A key id longer than this is not one any issuer hands out.
const MAX_KID_LEN: usize = 256;

/// Why one JWK was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwkError {
    #[error("the key type is not EC P-256 or RSA")]
    UnsupportedKeyType,
    #[error("the key is not for signatures (`use` or `key_ops` say otherwise)")]
    NotForSignatures,
    #[error("the key's `alg` is not ES256 for EC or RS256 for RSA")]
    UnsupportedAlgorithm,
    #[error("the RSA key is shorter than 2048 bits or otherwise outside what RS256 accepts")]
    WeakKey,
    #[error("the key is malformed: {0}")]
    Malformed(&'static str),
}

/// Why a JWK Set as a whole is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWK Set: no `keys` array")]
    NotAJwks,
    #[error("the JWK Set has more than {MAX_JWKS_KEYS} keys")]
    TooManyKeys,
}

/// The usable signing keys of a JWK Set (RFC 7517 §5), and for each skipped key why.
pub fn parse_jwks(doc: &Value) -> Result<(Vec<VerifyingKey>, Vec<JwkError>), JwksError> {
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or(JwksError::NotAJwks)?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(JwksError::TooManyKeys);
    }
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for key in keys {
        match key_from_jwk(key) {
            Ok(k) => usable.push(k),
            Err(e) => skipped.push(e),
        }
    }
    Ok((usable, skipped))
}

/// One JWK as a verifying key: EC keys with `crv` P-256 (RFC 7518 §6.2.1) and RSA keys
/// (RFC 7518 §6.3.1). A key without a `kid` gets its RFC 7638 thumbprint as its id, so that
/// tokens naming no key can still find it and tokens naming another cannot.
pub fn key_from_jwk(jwk: &Value) -> Result<VerifyingKey, JwkError> {
    let jwk = jwk
        .as_object()
        .ok_or(JwkError::Malformed("not an object"))?;
    let kty = member(jwk, "kty")?.ok_or(JwkError::Malformed("kty is missing"))?;
    let algorithm = match kty {
        "EC" => Algorithm::Es256,
        "RSA" => Algorithm::Rs256,
        _ => return Err(JwkError::UnsupportedKeyType),
    };
    let kid = for_signatures(jwk)?;
    // RFC 7517 §4.4: a key restricted to an algorithm is used with that one only; we know
    // one per key type.
    if let Some(alg) = member(jwk, "alg")? {
        if Algorithm::from_name(alg) != Some(algorithm) {
            return Err(JwkError::UnsupportedAlgorithm);
        }
    }
    match algorithm {
        Algorithm::Es256 => {
            if member(jwk, "crv")? != Some("P-256") {
                return Err(JwkError::UnsupportedKeyType);
            }
            let (point, kid) = ec_point(jwk, 32, kid)?;
            VerifyingKey::from_point(&point, &kid).ok_or(JwkError::Malformed("point"))
        }
        Algorithm::Rs256 => {
            let n = big_integer(jwk, "n")?;
            let e = big_integer(jwk, "e")?;
            let kid = match kid {
                Some(kid) => kid.to_string(),
                None => jwt::rsa_thumbprint(&n, &e),
            };
            VerifyingKey::from_rsa(&n, &e, &kid).ok_or(JwkError::WeakKey)
        }
        // Not what `kty` maps to above: access tokens are ES256 or RS256 only.
        Algorithm::Es384 | Algorithm::Rs384 => Err(JwkError::UnsupportedAlgorithm),
    }
}

/// A SMART Backend Services client's public key (RFC 7517) as its client assertions are
/// verified with (SMART App Launch 2.0, client-confidential-asymmetric): EC P-384 (ES384),
/// RSA for RS384 — what an RSA key without an `alg` is taken for, as SMART's clients sign
/// with RS384 — and the access-token pair ES256 (EC P-256) and RS256 (an RSA key whose `alg`
/// says so). As with issuers' keys, one key verifies one algorithm.
pub fn client_key_from_jwk(jwk: &Value) -> Result<VerifyingKey, JwkError> {
    let object = jwk
        .as_object()
        .ok_or(JwkError::Malformed("not an object"))?;
    let kty = member(object, "kty")?;
    let alg = member(object, "alg")?;
    match (kty, member(object, "crv")?) {
        (Some("EC"), Some("P-384")) => {
            if alg.is_some_and(|a| a != "ES384") {
                return Err(JwkError::UnsupportedAlgorithm);
            }
            let kid = for_signatures(object)?;
            let (point, kid) = ec_point(object, 48, kid)?;
            VerifyingKey::from_p384_point(&point, &kid).ok_or(JwkError::Malformed("point"))
        }
        (Some("RSA"), _) if alg.is_none() || alg == Some("RS384") => {
            let mut plain = object.clone();
            plain.remove("alg");
            key_from_jwk(&Value::Object(plain))?
                .for_rs384()
                .ok_or(JwkError::UnsupportedKeyType)
        }
        _ => key_from_jwk(jwk),
    }
}

/// An EC key's uncompressed SEC1 point from its `x` and `y` of `len` bytes each, and its id:
/// the `kid` given, else the point's RFC 7638 thumbprint.
fn ec_point(
    jwk: &Map<String, Value>,
    len: usize,
    kid: Option<&str>,
) -> Result<(Vec<u8>, String), JwkError> {
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&coordinate(jwk, "x", len)?);
    point.extend_from_slice(&coordinate(jwk, "y", len)?);
    let kid = match kid {
        Some(kid) => kid.to_string(),
        None => jwt::ec_thumbprint(&point).ok_or(JwkError::Malformed("point"))?,
    };
    Ok((point, kid))
}

/// What every verifying key must say, whatever its type: `use` and `key_ops` allow
/// signatures, and its `kid`, if any, is a short non-empty string (returned).
fn for_signatures(jwk: &Map<String, Value>) -> Result<Option<&str>, JwkError> {
    // RFC 7517 §4.2: `use` other than `sig` (an encryption key) is not for verifying.
    if member(jwk, "use")?.is_some_and(|u| u != "sig") {
        return Err(JwkError::NotForSignatures);
    }
    // RFC 7517 §4.3: `key_ops`, when present, must allow `verify`.
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops
            .as_array()
            .ok_or(JwkError::Malformed("key_ops is not an array"))?;
        if !ops.iter().any(|o| o.as_str() == Some("verify")) {
            return Err(JwkError::NotForSignatures);
        }
    }
    match member(jwk, "kid")? {
        Some(kid) if kid.is_empty() || kid.len() > MAX_KID_LEN => Err(JwkError::Malformed("kid")),
        kid => Ok(kid),
    }
}

/// A string member: absent, or a string; any other JSON type makes the key malformed.
fn member<'a>(
    jwk: &'a Map<String, Value>,
    name: &'static str,
) -> Result<Option<&'a str>, JwkError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(JwkError::Malformed(name)),
    }
}

/// A curve coordinate: base64url of exactly `len` bytes (32 for P-256, 48 for P-384; RFC 7518
/// §6.2.1.2: "the full coordinate", leading zeros kept).
fn coordinate(
    jwk: &Map<String, Value>,
    name: &'static str,
    len: usize,
) -> Result<Vec<u8>, JwkError> {
    let text = member(jwk, name)?.ok_or(JwkError::Malformed(name))?;
    match URL_SAFE_NO_PAD.decode(text) {
        Ok(bytes) if bytes.len() == len => Ok(bytes),
        _ => Err(JwkError::Malformed(name)),
    }
}

/// An RSA Base64urlUInt (RFC 7518 §2 and §6.3.1): big-endian, at most 8192 bits' worth.
fn big_integer(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, JwkError> {
    let text = member(jwk, name)?.ok_or(JwkError::Malformed(name))?;
    if text.len() > 8192 / 6 + 4 {
        return Err(JwkError::WeakKey);
    }
    match URL_SAFE_NO_PAD.decode(text) {
        Ok(bytes) if !bytes.is_empty() => Ok(bytes),
        _ => Err(JwkError::Malformed(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::SigningKey;
    use serde_json::json;

    /// A well-formed 2048-bit modulus for syntax tests (its top bit set; never used to verify).
    fn modulus(bits: usize) -> String {
        let mut n = vec![0xA5u8; bits / 8];
        n[0] = 0xC0;
        URL_SAFE_NO_PAD.encode(n)
    }

    fn ec() -> Value {
        SigningKey::generate().unwrap().0.verifying_key().to_jwk()
    }

    #[test]
    fn ec_round_trip_and_thumbprint_kid() {
        let key = SigningKey::generate().unwrap().0;
        let jwk = key.verifying_key().to_jwk();
        assert_eq!(key_from_jwk(&jwk).unwrap(), key.verifying_key());
        let mut bare = jwk.clone();
        for m in ["kid", "use", "alg"] {
            bare.as_object_mut().unwrap().remove(m);
        }
        // The local issuer's kid is the thumbprint, so a bare JWK gets the same id back.
        assert_eq!(key_from_jwk(&bare).unwrap().kid(), key.kid());
    }

    #[test]
    fn rsa_keys() {
        let jwk = json!({"kty": "RSA", "n": modulus(2048), "e": "AQAB", "kid": "r1"});
        let k = key_from_jwk(&jwk).unwrap();
        assert_eq!((k.kid(), k.algorithm()), ("r1", Algorithm::Rs256));
        assert_eq!(key_from_jwk(&k.to_jwk()).unwrap(), k);
        // Leading zero bytes do not count towards the size.
        let mut padded = vec![0u8; 3];
        padded.extend(URL_SAFE_NO_PAD.decode(modulus(2048)).unwrap());
        let jwk = json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&padded), "e": "AAEAAQ"});
        assert!(key_from_jwk(&jwk).is_ok());
        for (n, e) in [
            (modulus(1024), "AQAB"),
            (modulus(2040), "AQAB"),
            (modulus(8200), "AQAB"),
            (modulus(2048), "AQ"),
            (modulus(2048), "Ag"),
            (modulus(2048), "AAAA"),
            (modulus(2048), "AQAAAAAB"),
        ] {
            let jwk = json!({"kty": "RSA", "n": n, "e": e});
            assert_eq!(key_from_jwk(&jwk), Err(JwkError::WeakKey), "{e}");
        }
    }

    #[test]
    fn keys_we_must_not_use_are_skipped() {
        let rsa = |extra: Value| {
            let mut k = json!({"kty": "RSA", "n": modulus(2048), "e": "AQAB", "kid": "r"});
            k.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            key_from_jwk(&k)
        };
        assert_eq!(rsa(json!({"use": "enc"})), Err(JwkError::NotForSignatures));
        assert_eq!(
            rsa(json!({"key_ops": ["encrypt"]})),
            Err(JwkError::NotForSignatures)
        );
        assert!(rsa(json!({"key_ops": ["verify"], "use": "sig"})).is_ok());
        for alg in ["RS384", "PS256", "HS256", "ES256", "none", "rs256"] {
            assert_eq!(
                rsa(json!({"alg": alg})),
                Err(JwkError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let mut e = ec();
        e["alg"] = json!("RS256");
        assert_eq!(key_from_jwk(&e), Err(JwkError::UnsupportedAlgorithm));
        let mut e = ec();
        e["crv"] = json!("P-384");
        assert_eq!(key_from_jwk(&e), Err(JwkError::UnsupportedKeyType));
        for kty in json!(["oct", "OKP", "ec", ""]).as_array().unwrap() {
            assert_eq!(
                key_from_jwk(&json!({"kty": kty, "k": "c2VjcmV0"})),
                Err(JwkError::UnsupportedKeyType)
            );
        }
    }

    #[test]
    fn malformed_keys() {
        let mut short_x = ec();
        short_x["x"] = json!(URL_SAFE_NO_PAD.encode([1u8; 31]));
        let mut bad_y = ec();
        bad_y["y"] = json!("!!!");
        let mut num_kid = ec();
        num_kid["kid"] = json!(5);
        for jwk in [
            json!("RSA"),
            json!({}),
            json!({"kty": 1}),
            json!({"kty": "RSA", "e": "AQAB"}),
            json!({"kty": "RSA", "n": "", "e": "AQAB"}),
            json!({"kty": "RSA", "n": "+/+/", "e": "AQAB"}),
            json!({"kty": "RSA", "n": modulus(2048), "e": "AQAB", "key_ops": "verify"}),
            json!({"kty": "RSA", "n": modulus(2048), "e": "AQAB", "kid": ""}),
            short_x,
            bad_y,
            num_kid,
        ] {
            assert!(
                matches!(key_from_jwk(&jwk), Err(JwkError::Malformed(_))),
                "{jwk}"
            );
        }
    }

    #[test]
    fn a_set_keeps_its_good_keys() {
        let good = ec();
        let doc = json!({"keys": [
            {"kty": "RSA", "use": "enc", "n": modulus(2048), "e": "AQAB"},
            good,
            {"kty": "oct", "k": "c2VjcmV0"},
            "junk",
            {"kty": "RSA", "n": modulus(2048), "e": "AQAB", "kid": "r"},
        ]});
        let (keys, skipped) = parse_jwks(&doc).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(skipped.len(), 3);
        assert_eq!(parse_jwks(&json!({"keys": {}})), Err(JwksError::NotAJwks));
        assert_eq!(parse_jwks(&json!([])), Err(JwksError::NotAJwks));
        let many: Vec<Value> = (0..=MAX_JWKS_KEYS).map(|_| good.clone()).collect();
        assert_eq!(
            parse_jwks(&json!({ "keys": many })),
            Err(JwksError::TooManyKeys)
        );
        assert_eq!(parse_jwks(&json!({"keys": []})), Ok((vec![], vec![])));
    }
}
