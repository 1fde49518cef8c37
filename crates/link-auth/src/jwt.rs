//! JSON Web Tokens (RFC 7519) signed with ES256 (ECDSA P-256 with SHA-256, RFC 7518 §3.4):
//! issuing and verifying, as pure functions of a key, the claims and the current time.
//!
//! One algorithm only, pinned: a token whose header names anything but `ES256` (`none`, the
//! HMAC and RSA families included) is refused before its signature is looked at, and no HMAC
//! or RSA verifier is linked in at all, so the classic algorithm-confusion attacks have nothing
//! to confuse. The signature is checked before any claim is trusted; `exp` is required, `nbf`
//! honoured, both with a small clock skew; `iss` must be the issuer whose key verified the
//! signature and `aud` one of that issuer's audiences. Verification is by [`Verifier`], a list
//! of [`TrustedIssuer`]s, so that issuers other than fhirlink's own (an OIDC provider's keys,
//! fetched elsewhere) can be trusted later without touching this module.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde_json::{json, Map, Value};

/// The one signature algorithm fhirlink issues and accepts.
pub const ALGORITHM: &str = "ES256";

/// Tokens longer than this are refused unread (Azure's own access tokens stay well below).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How far `exp` and `nbf` may be off, in seconds, to allow for clocks that disagree a little.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// A subject longer than this is not a principal id.
const MAX_SUBJECT_LEN: usize = 256;

/// Why a token was not accepted. The variants say what a caller may be told; none carries
/// token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm is not accepted (only {ALGORITHM} is)")]
    UnsupportedAlgorithm,
    #[error("the token was signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token's issuer is not trusted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token's subject is missing or not valid")]
    BadSubject,
    #[error("the token expired at {exp} (now {now}, in seconds since the epoch)")]
    Expired { exp: i64, now: i64 },
    #[error("the token is not valid before {nbf} (now {now}, in seconds since the epoch)")]
    NotYetValid { nbf: i64, now: i64 },
}

/// Why a key could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the key is not a PKCS#8 ECDSA P-256 private key")]
    NotP256,
    #[error("the system random number generator failed")]
    Random,
}

/// A private ES256 key that signs tokens.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key; returns it with its PKCS#8 DER form, to be stored.
    pub fn generate() -> Result<(SigningKey, Vec<u8>), KeyError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| KeyError::Random)?;
        let der = pkcs8.as_ref().to_vec();
        Ok((SigningKey::from_pkcs8_der(&der)?, der))
    }

    /// Reads a PKCS#8 DER ECDSA P-256 private key.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|_| KeyError::NotP256)?;
        let kid = thumbprint(pair.public_key().as_ref()).ok_or(KeyError::NotP256)?;
        Ok(SigningKey { pair, kid })
    }

    /// The key id (`kid`): the key's JWK thumbprint (RFC 7638).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for a [`TrustedIssuer`].
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            point: self.pair.public_key().as_ref().to_vec(),
            kid: self.kid.clone(),
        }
    }

    /// Signs `claims` into a compact JWS (RFC 7515 §7.1).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid});
        let payload = json!({
            "iss": claims.issuer,
            "sub": claims.subject,
            "aud": claims.audience,
            "iat": claims.issued_at,
            "nbf": claims.not_before,
            "exp": claims.expires,
        });
        let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(payload.to_string()));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| KeyError::Random)?;
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(input)
    }
}

/// The claims fhirlink puts in a token it issues. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires: i64,
}

/// A public ES256 key that verifies tokens (an uncompressed P-256 point and its key id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    point: Vec<u8>,
    kid: String,
}

impl VerifyingKey {
    /// A key from its uncompressed SEC1 point (65 bytes) and key id; `None` when the point
    /// is not 65 bytes starting with 4.
    pub fn from_point(point: &[u8], kid: &str) -> Option<VerifyingKey> {
        (point.len() == 65 && point[0] == 4).then(|| VerifyingKey {
            point: point.to_vec(),
            kid: kid.to_string(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .is_ok()
    }
}

/// An issuer whose tokens are accepted: its `iss` value, its keys and the audiences it may
/// address tokens to.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub keys: Vec<VerifyingKey>,
    pub audiences: Vec<String>,
}

/// Who a verified token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the principal id that role assignments name.
    pub subject: String,
    /// The `iss` claim of the issuer that vouched for it.
    pub issuer: String,
}

/// Verifies tokens of a set of trusted issuers.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
}

impl Verifier {
    pub fn new(issuers: Vec<TrustedIssuer>) -> Verifier {
        Verifier { issuers }
    }

    /// Verifies `token` at time `now` (seconds since the Unix epoch).
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed("too long"));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed("not three base64url parts"));
        };
        let header = decode_object(header_b64, "header")?;
        // RFC 7515 §4.1.1: the algorithm is checked first, and only ES256 is known here.
        if header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        // RFC 7515 §4.1.11: extensions marked critical that we do not understand (all of
        // them) make the token invalid.
        if header.contains_key("crit") {
            return Err(TokenError::Malformed("critical header extensions"));
        }
        if let Some(typ) = header.get("typ") {
            let typ = typ.as_str().unwrap_or_default();
            if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("at+jwt") {
                return Err(TokenError::Malformed("typ is not JWT"));
            }
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(TokenError::Malformed("kid is not a string")),
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        if signature.len() != 64 {
            return Err(TokenError::BadSignature);
        }
        let signed = &token[..header_b64.len() + 1 + payload_b64.len()];
        let mut candidates = self
            .issuers
            .iter()
            .flat_map(|i| i.keys.iter().map(move |k| (i, k)))
            .filter(|(_, k)| kid.is_none_or(|kid| k.kid == kid))
            .peekable();
        if candidates.peek().is_none() {
            return Err(TokenError::UnknownKey);
        }
        let issuer = candidates
            .find(|(_, k)| k.verifies(signed.as_bytes(), &signature))
            .map(|(i, _)| i)
            .ok_or(TokenError::BadSignature)?;

        // Only now, with the signature good, are the claims read.
        let claims = decode_object(payload_b64, "payload")?;
        if claims.get("iss").and_then(Value::as_str) != Some(issuer.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let audience_ok = |a: &str| {
            issuer
                .audiences
                .iter()
                .any(|ok| ok.trim_end_matches('/') == a.trim_end_matches('/'))
        };
        let audience_matches = match claims.get("aud") {
            Some(Value::String(a)) => audience_ok(a),
            Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).any(audience_ok),
            _ => false,
        };
        if !audience_matches {
            return Err(TokenError::WrongAudience);
        }
        let exp = numeric_date(&claims, "exp")?.ok_or(TokenError::Malformed("exp is missing"))?;
        if now > exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(TokenError::Expired { exp, now });
        }
        if let Some(nbf) = numeric_date(&claims, "nbf")? {
            if now.saturating_add(CLOCK_SKEW_SECS) < nbf {
                return Err(TokenError::NotYetValid { nbf, now });
            }
        }
        numeric_date(&claims, "iat")?;
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| valid_subject(s))
            .ok_or(TokenError::BadSubject)?;
        Ok(Identity {
            subject: subject.to_string(),
            issuer: issuer.issuer.clone(),
        })
    }
}

/// A principal id: non-empty, bounded, printable (it appears in error messages and logs).
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBJECT_LEN && !s.chars().any(char::is_control)
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(what)),
    }
}

/// A NumericDate claim (RFC 7519 §2): absent, or a JSON number of seconds; anything else
/// makes the token malformed rather than the claim absent.
fn numeric_date(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) => Ok(Some(v)),
            None => n
                .as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                // Fractions of a second are allowed; the whole second is what counts here.
                .map(|f| Some(f.floor() as i64))
                .ok_or(TokenError::Malformed(name)),
        },
        Some(_) => Err(TokenError::Malformed(name)),
    }
}

/// RFC 7638 JWK thumbprint of a P-256 public key given as an uncompressed SEC1 point.
fn thumbprint(point: &[u8]) -> Option<String> {
    if point.len() != 65 || point[0] != 4 {
        return None;
    }
    let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
    let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
    // The members in lexicographic order, no whitespace (RFC 7638 §3.2).
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    Some(URL_SAFE_NO_PAD.encode(digest.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUD: &str = "https://management.azure.com/";
    const ISS: &str = "fhirlink";
    const NOW: i64 = 1_800_000_000;

    fn key() -> SigningKey {
        SigningKey::generate().unwrap().0
    }

    fn claims() -> Claims {
        Claims {
            issuer: ISS.into(),
            subject: "alice".into(),
            audience: AUD.into(),
            issued_at: NOW,
            not_before: NOW,
            expires: NOW + 3600,
        }
    }

    fn verifier(k: &SigningKey) -> Verifier {
        Verifier::new(vec![TrustedIssuer {
            issuer: ISS.into(),
            keys: vec![k.verifying_key()],
            audiences: vec![AUD.into(), "https://management.core.windows.net/".into()],
        }])
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(v.to_string())
    }

    /// A token with a hand-made header and payload, signed by `k` (or with a junk signature).
    fn forge(k: Option<&SigningKey>, header: Value, payload: Value) -> String {
        let input = format!("{}.{}", b64(&header), b64(&payload));
        let sig = match k {
            Some(k) => k
                .pair
                .sign(&SystemRandom::new(), input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            None => vec![7u8; 64],
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    fn payload() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": AUD, "iat": NOW, "nbf": NOW, "exp": NOW + 3600})
    }

    #[test]
    fn round_trip() {
        let k = key();
        let t = k.sign(&claims()).unwrap();
        assert_eq!(
            verifier(&k).verify(&t, NOW + 10),
            Ok(Identity {
                subject: "alice".into(),
                issuer: ISS.into()
            })
        );
    }

    #[test]
    fn key_survives_pkcs8() {
        let (k, der) = SigningKey::generate().unwrap();
        let k2 = SigningKey::from_pkcs8_der(&der).unwrap();
        assert_eq!(k.kid(), k2.kid());
        let t = k2.sign(&claims()).unwrap();
        assert!(verifier(&k).verify(&t, NOW).is_ok());
        assert!(SigningKey::from_pkcs8_der(b"junk").is_err());
    }

    #[test]
    fn other_key_is_refused() {
        let t = key().sign(&claims()).unwrap();
        // Same kid is impossible (thumbprints differ): unknown key.
        assert_eq!(
            verifier(&key()).verify(&t, NOW),
            Err(TokenError::UnknownKey)
        );
        // Without a kid every key is tried, and none verifies.
        let k = key();
        let other = key();
        let forged = forge(Some(&other), json!({"alg": "ES256"}), payload());
        assert_eq!(
            verifier(&k).verify(&forged, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let k = key();
        let t = k.sign(&claims()).unwrap();
        let parts: Vec<&str> = t.split('.').collect();
        let mut p = payload();
        p["sub"] = json!("admin");
        let tampered = format!("{}.{}.{}", parts[0], b64(&p), parts[2]);
        assert_eq!(
            verifier(&k).verify(&tampered, NOW),
            Err(TokenError::BadSignature)
        );
        let junk_sig = forge(None, json!({"alg": "ES256", "kid": k.kid()}), payload());
        assert_eq!(
            verifier(&k).verify(&junk_sig, NOW),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn algorithm_is_pinned() {
        let k = key();
        for alg in [
            "none", "None", "HS256", "RS256", "ES384", "EdDSA", "es256", "",
        ] {
            let mut t = forge(Some(&k), json!({"alg": alg, "kid": k.kid()}), payload());
            assert_eq!(
                verifier(&k).verify(&t, NOW),
                Err(TokenError::UnsupportedAlgorithm),
                "{alg}"
            );
            // `none` with an empty signature, the classic form.
            t.truncate(t.rfind('.').unwrap() + 1);
            assert_eq!(
                verifier(&k).verify(&t, NOW),
                Err(TokenError::UnsupportedAlgorithm),
                "{alg}"
            );
        }
        let no_alg = forge(Some(&k), json!({"kid": k.kid()}), payload());
        assert_eq!(
            verifier(&k).verify(&no_alg, NOW),
            Err(TokenError::UnsupportedAlgorithm)
        );
        let crit = forge(
            Some(&k),
            json!({"alg": "ES256", "crit": ["b64"]}),
            payload(),
        );
        assert!(matches!(
            verifier(&k).verify(&crit, NOW),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn time_claims() {
        let k = key();
        let v = verifier(&k);
        let t = k.sign(&claims()).unwrap();
        assert!(v.verify(&t, NOW + 3600 + CLOCK_SKEW_SECS).is_ok());
        assert_eq!(
            v.verify(&t, NOW + 3600 + CLOCK_SKEW_SECS + 1),
            Err(TokenError::Expired {
                exp: NOW + 3600,
                now: NOW + 3600 + CLOCK_SKEW_SECS + 1
            })
        );
        assert!(v.verify(&t, NOW - CLOCK_SKEW_SECS).is_ok());
        assert!(matches!(
            v.verify(&t, NOW - CLOCK_SKEW_SECS - 1),
            Err(TokenError::NotYetValid { .. })
        ));
        // exp is required, and a non-number is malformed, not absent.
        let mut p = payload();
        p.as_object_mut().unwrap().remove("exp");
        let t = forge(Some(&k), json!({"alg": "ES256"}), p);
        assert_eq!(
            v.verify(&t, NOW),
            Err(TokenError::Malformed("exp is missing"))
        );
        for bad in [json!("9999999999"), json!(null), json!([1]), json!(1e300)] {
            let mut p = payload();
            p["exp"] = bad.clone();
            let t = forge(Some(&k), json!({"alg": "ES256"}), p);
            assert_eq!(
                v.verify(&t, NOW),
                Err(TokenError::Malformed("exp")),
                "{bad}"
            );
        }
        let mut p = payload();
        p["nbf"] = json!("0");
        let t = forge(Some(&k), json!({"alg": "ES256"}), p);
        assert_eq!(v.verify(&t, NOW), Err(TokenError::Malformed("nbf")));
        let mut p = payload();
        p["exp"] = json!((NOW + 10) as f64 + 0.5);
        let t = forge(Some(&k), json!({"alg": "ES256"}), p);
        assert!(v.verify(&t, NOW).is_ok());
    }

    #[test]
    fn issuer_audience_subject() {
        let k = key();
        let v = verifier(&k);
        let with = |f: &dyn Fn(&mut Value)| {
            let mut p = payload();
            f(&mut p);
            v.verify(
                &forge(Some(&k), json!({"alg": "ES256", "typ": "JWT"}), p),
                NOW,
            )
        };
        assert_eq!(
            with(&|p| p["iss"] = json!("someone-else")),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            with(&|p| p["iss"] = json!(null)),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            with(&|p| p["aud"] = json!("https://graph.microsoft.com/")),
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            with(&|p| p["aud"] = json!(42)),
            Err(TokenError::WrongAudience)
        );
        assert!(with(&|p| p["aud"] = json!(["x", "https://management.azure.com"])).is_ok());
        assert!(with(&|p| p["aud"] = json!("https://management.core.windows.net/")).is_ok());
        assert_eq!(with(&|p| p["sub"] = json!("")), Err(TokenError::BadSubject));
        assert_eq!(
            with(&|p| p["sub"] = json!("a\nb")),
            Err(TokenError::BadSubject)
        );
        assert_eq!(with(&|p| p["sub"] = json!(7)), Err(TokenError::BadSubject));
        assert_eq!(
            with(&|p| {
                p.as_object_mut().unwrap().remove("sub");
            }),
            Err(TokenError::BadSubject)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let k = key();
        let v = verifier(&k);
        let good = k.sign(&claims()).unwrap();
        let mut inputs: Vec<String> = vec![
            "".into(),
            ".".into(),
            "..".into(),
            "...".into(),
            "a.b.c".into(),
            "a.b.c.d".into(),
            "é.é.é".into(),
            "x".repeat(MAX_TOKEN_LEN + 1),
            format!("{good}.x"),
            format!("{}.{}.", b64(&json!({"alg":"ES256"})), b64(&json!([]))),
            format!("{}.{}.{}", b64(&json!("str")), b64(&payload()), "AA"),
        ];
        // Every prefix and every single-character corruption of a good token.
        for i in 0..good.len() {
            inputs.push(good[..i].to_string());
            let mut b = good.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            inputs.push(String::from_utf8(b).unwrap());
        }
        for t in inputs {
            if t == good {
                continue;
            }
            assert!(v.verify(&t, NOW).is_err(), "{t}");
        }
    }
}
