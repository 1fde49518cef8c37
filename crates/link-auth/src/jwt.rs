//! JSON Web Tokens (RFC 7519) in the JWS compact serialisation (RFC 7515 §7.1): issuing them
//! with ES256 (ECDSA P-256 with SHA-256, RFC 7518 §3.4) and verifying ES256 and RS256
//! (RSASSA-PKCS1-v1_5 with SHA-256, RFC 7518 §3.3), as pure functions of the keys, the token
//! and the current time. No IO happens here; [`crate::oidc`] fetches other issuers' keys.
//!
//! The algorithm is pinned by the key, never chosen by the token (RFC 8725 §3.1): each
//! [`VerifyingKey`] is either a P-256 key, which verifies ES256 only, or an RSA key of 2048 to
//! 8192 bits, which verifies RS256 only. A header naming any other algorithm (`none`, the HMAC
//! family, PS*, ES384, …) is refused before a key is looked at, and one naming an algorithm
//! that its key does not have (RS256 against an EC key, ES256 against an RSA key) is refused
//! before any signature is checked. No HMAC verifier is linked in at all, so the classic
//! confusion — an RSA public key used as an HMAC secret — has nothing to confuse. Keys named
//! by the token itself (`jwk`, `jku`, `x5u`, `x5c`; RFC 7515 §4.1.2-§4.1.6) are never used.
//!
//! The signature is checked before any claim is read. Then `iss` must be the issuer whose key
//! verified the signature, `aud` one of the accepted audiences (the issuer's own, or those the
//! caller names for this request), `exp` is required and `nbf` honoured, both with a small
//! clock skew; and the claims authorization needs (`oid`, client id, scopes, roles, SMART's
//! `patient` and `fhirUser`) are read, bounded, into the [`Identity`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair as _, RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED, RSA_PKCS1_2048_8192_SHA256,
    RSA_PKCS1_2048_8192_SHA384,
};
use serde_json::{json, Map, Value};

use crate::claims;

/// The signature algorithm fhirlink issues its own tokens with.
pub const ALGORITHM: &str = "ES256";

/// Tokens longer than this are refused unread (Azure's own access tokens stay well below).
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// How far `exp` and `nbf` may be off, in seconds, to allow for clocks that disagree a little.
pub const CLOCK_SKEW_SECS: i64 = 60;

/// A subject longer than this is not a principal id.
const MAX_SUBJECT_LEN: usize = 256;
/// A key id longer than this is not one any issuer hands out.
const MAX_KID_LEN: usize = 256;
/// An audience longer than this is not a resource URI.
const MAX_AUDIENCE_LEN: usize = 512;
/// The most audiences one token may name.
const MAX_AUDIENCES: usize = 16;
/// RSA moduli accepted, in bits: ring's `RSA_PKCS1_2048_8192_SHA256` bounds (RFC 7518 §3.3
/// requires at least 2048).
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;

/// A signature algorithm a key verifies (RFC 7518 §3.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA using P-256 and SHA-256.
    Es256,
    /// RSASSA-PKCS1-v1_5 using SHA-256.
    Rs256,
    /// ECDSA using P-384 and SHA-384: SMART Backend Services' client assertions only.
    Es384,
    /// RSASSA-PKCS1-v1_5 using SHA-384: SMART Backend Services' client assertions only.
    Rs384,
}

impl Algorithm {
    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Es256 => "ES256",
            Algorithm::Rs256 => "RS256",
            Algorithm::Es384 => "ES384",
            Algorithm::Rs384 => "RS384",
        }
    }

    /// The algorithm an `alg` value names, compared exactly (RFC 7515 §4.1.1: case-sensitive).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "ES256" => Some(Algorithm::Es256),
            "RS256" => Some(Algorithm::Rs256),
            "ES384" => Some(Algorithm::Es384),
            "RS384" => Some(Algorithm::Rs384),
            _ => None,
        }
    }
}

/// Why a token was not accepted. Every variant is an RFC 6750 §3.1 `invalid_token`;
/// [`TokenError::description`] is a short reason fit for `error_description`. None carries
/// token content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed: {0}")]
    Malformed(&'static str),
    #[error("the token's algorithm is not accepted for its key (ES256 for EC P-256 keys, RS256 for RSA keys)")]
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
    /// The issuer's keys could not be had (a fetch failed, or the issuer's documents are not
    /// acceptable), so the token could not be checked: it is refused, never waved through.
    /// The detail is for logs; the message does not include it, as it names internal URLs.
    #[error("the token's issuer could not be consulted")]
    IssuerUnreachable(#[source] crate::oidc::OidcError),
}

impl TokenError {
    /// A short reason for RFC 6750 §3's `error_description` (only characters the attribute
    /// allows: no quotes, no backslashes).
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "The access token is malformed",
            TokenError::UnsupportedAlgorithm => "The access token's algorithm is not accepted",
            TokenError::UnknownKey => "The access token was signed by an unknown key",
            TokenError::BadSignature => "The access token's signature is invalid",
            TokenError::WrongIssuer => "The access token's issuer is not trusted",
            TokenError::WrongAudience => "The access token's audience is not accepted",
            TokenError::BadSubject => "The access token's subject is invalid",
            TokenError::Expired { .. } => "The access token has expired",
            TokenError::NotYetValid { .. } => "The access token is not valid yet",
            TokenError::IssuerUnreachable(_) => "The access token's issuer could not be reached",
        }
    }
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
        let kid = ec_thumbprint(pair.public_key().as_ref()).ok_or(KeyError::NotP256)?;
        Ok(SigningKey { pair, kid })
    }

    /// The key id (`kid`): the key's JWK thumbprint (RFC 7638).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public half, for a [`TrustedIssuer`].
    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            material: Material::Ec {
                point: self.pair.public_key().as_ref().to_vec(),
                p384: false,
            },
            kid: self.kid.clone(),
        }
    }

    /// Signs `claims` into a compact JWS (RFC 7515 §7.1).
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut payload = Map::new();
        payload.insert("iss".into(), claims.issuer.clone().into());
        payload.insert("sub".into(), claims.subject.clone().into());
        payload.insert("aud".into(), claims.audience.clone().into());
        payload.insert("iat".into(), claims.issued_at.into());
        payload.insert("nbf".into(), claims.not_before.into());
        payload.insert("exp".into(), claims.expires.into());
        self.sign_payload(&payload)
    }

    /// Signs any payload; the callers in this crate check what they put in it.
    pub(crate) fn sign_payload(&self, payload: &Map<String, Value>) -> Result<String, KeyError> {
        let header = json!({"alg": ALGORITHM, "typ": "JWT", "kid": self.kid});
        let mut input = URL_SAFE_NO_PAD.encode(header.to_string());
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(payload.clone()).to_string()));
        let signature = self
            .pair
            .sign(&SystemRandom::new(), input.as_bytes())
            .map_err(|_| KeyError::Random)?;
        input.push('.');
        input.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(input)
    }
}

/// The claims of a management token fhirlink issues. Times are seconds since the Unix epoch.
/// (Data-plane tokens with scopes are minted by
/// [`LocalIssuer::mint_with`](crate::identity::LocalIssuer::mint_with).)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub issuer: String,
    pub subject: String,
    pub audience: String,
    pub issued_at: i64,
    pub not_before: i64,
    pub expires: i64,
}

/// A public key that verifies tokens, with its key id; the key's type fixes the one
/// algorithm it verifies.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    material: Material,
    kid: String,
}

#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// An uncompressed SEC1 point: P-256 (65 bytes, starting with 4), or P-384 (97 bytes).
    Ec { point: Vec<u8>, p384: bool },
    /// Big-endian modulus and exponent, without leading zeros, and the hash it signs with
    /// (SHA-256 unless the key was registered for RS384).
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        sha384: bool,
    },
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("alg", &self.algorithm().name())
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// A P-256 key from its uncompressed SEC1 point (65 bytes) and key id; `None` when the
    /// point is not 65 bytes starting with 4. (Whether the point is on the curve is checked by
    /// ring at verification: a key that is not verifies nothing.)
    pub fn from_point(point: &[u8], kid: &str) -> Option<VerifyingKey> {
        (point.len() == 65 && point[0] == 4).then(|| VerifyingKey {
            material: Material::Ec {
                point: point.to_vec(),
                p384: false,
            },
            kid: kid.to_string(),
        })
    }

    /// A P-384 key (ES384) from its uncompressed SEC1 point (97 bytes) and key id.
    pub fn from_p384_point(point: &[u8], kid: &str) -> Option<VerifyingKey> {
        (point.len() == 97 && point[0] == 4).then(|| VerifyingKey {
            material: Material::Ec {
                point: point.to_vec(),
                p384: true,
            },
            kid: kid.to_string(),
        })
    }

    /// This RSA key verifying RS384 instead of RS256 (a key's algorithm is one, fixed when it
    /// is registered). `None` for an EC key.
    pub fn for_rs384(self) -> Option<VerifyingKey> {
        match self.material {
            Material::Rsa { n, e, .. } => Some(VerifyingKey {
                material: Material::Rsa { n, e, sha384: true },
                kid: self.kid,
            }),
            Material::Ec { .. } => None,
        }
    }

    /// An RSA key from its big-endian modulus and public exponent and its key id; `None`
    /// unless the modulus has 2048 to 8192 bits and the exponent is odd, at least 3 and at
    /// most 33 bits (what ring's RS256 verifier accepts, so that a key taken here verifies).
    pub fn from_rsa(n: &[u8], e: &[u8], kid: &str) -> Option<VerifyingKey> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let n_bits = bit_len(n);
        let e_ok = match e {
            [] => false,
            [.., last] => last & 1 == 1 && bit_len(e) <= 33 && (e.len() > 1 || e[0] >= 3),
        };
        ((RSA_MIN_BITS..=RSA_MAX_BITS).contains(&n_bits) && e_ok).then(|| VerifyingKey {
            material: Material::Rsa {
                n: n.to_vec(),
                e: e.to_vec(),
                sha384: false,
            },
            kid: kid.to_string(),
        })
    }

    /// The key id tokens name it by.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Ec { p384: false, .. } => Algorithm::Es256,
            Material::Ec { p384: true, .. } => Algorithm::Es384,
            Material::Rsa { sha384: false, .. } => Algorithm::Rs256,
            Material::Rsa { sha384: true, .. } => Algorithm::Rs384,
        }
    }

    /// The key as a public JWK (RFC 7517 §4, RFC 7518 §6.2.1 and §6.3.1), for a JWKS document.
    pub fn to_jwk(&self) -> Value {
        let alg = self.algorithm().name();
        match &self.material {
            Material::Ec { point, p384 } => {
                let half = (point.len() - 1) / 2;
                json!({
                    "kty": "EC", "crv": if *p384 { "P-384" } else { "P-256" }, "use": "sig",
                    "alg": alg, "kid": self.kid,
                    "x": URL_SAFE_NO_PAD.encode(&point[1..=half]),
                    "y": URL_SAFE_NO_PAD.encode(&point[half + 1..]),
                })
            }
            Material::Rsa { n, e, .. } => json!({
                "kty": "RSA", "use": "sig", "alg": alg, "kid": self.kid,
                "n": URL_SAFE_NO_PAD.encode(n), "e": URL_SAFE_NO_PAD.encode(e),
            }),
        }
    }

    pub(crate) fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Ec { point, p384 } => {
                let alg = if *p384 {
                    &ECDSA_P384_SHA384_FIXED
                } else {
                    &ECDSA_P256_SHA256_FIXED
                };
                UnparsedPublicKey::new(alg, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Material::Rsa { n, e, sha384 } => {
                let alg = if *sha384 {
                    &RSA_PKCS1_2048_8192_SHA384
                } else {
                    &RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }
                    .verify(alg, message, signature)
                    .is_ok()
            }
        }
    }
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// The bit length of a big-endian number without leading zero bytes.
fn bit_len(b: &[u8]) -> usize {
    match b.first() {
        None => 0,
        Some(&top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// An issuer whose tokens are accepted: its `iss` value, its keys and the audiences it may
/// address tokens to (used by [`Verifier::verify`]; [`Verifier::verify_for`] names its own).
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    pub issuer: String,
    pub keys: Vec<VerifyingKey>,
    pub audiences: Vec<String>,
}

/// Who a verified token names, and what it says about the caller's grants. Everything but
/// `subject`, `issuer` and `audience` is optional in a token; absent claims are `None` or empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The `sub` claim: the principal id that role assignments name.
    pub subject: String,
    /// The `iss` claim of the issuer that vouched for it.
    pub issuer: String,
    /// The accepted audience the token's `aud` matched, as the verifier was given it.
    pub audience: String,
    /// `oid`: Azure AD's object id of the caller, which a FHIR service's `accessPolicies` name.
    pub object_id: Option<String>,
    /// The client the token was issued to: `azp`, else `appid`, else `client_id`.
    pub client_id: Option<String>,
    /// `scp`, else `scope` (a space-separated string or an array), each scope once, in order:
    /// SMART on FHIR scopes such as `patient/Observation.rs` or `user/*.read`, not interpreted
    /// here.
    pub scopes: Vec<String>,
    /// `roles`: app roles granted to the caller.
    pub roles: Vec<String>,
    /// SMART's launch context `patient`: a FHIR id whose compartment `patient/` scopes are
    /// confined to.
    pub patient: Option<String>,
    /// SMART's `fhirUser`: the FHIR resource (Practitioner/…, Patient/…) the user is.
    pub fhir_user: Option<String>,
    /// `exp` and `nbf` (seconds since the epoch), for callers that remember a verified
    /// token and must stop trusting it when it expires.
    pub expires: i64,
    pub not_before: Option<i64>,
}

/// Verifies tokens of a set of trusted issuers whose keys are in memory.
#[derive(Debug, Clone)]
pub struct Verifier {
    issuers: Vec<TrustedIssuer>,
}

impl Verifier {
    pub fn new(issuers: Vec<TrustedIssuer>) -> Verifier {
        Verifier { issuers }
    }

    /// The issuers this verifier trusts.
    pub fn issuers(&self) -> &[TrustedIssuer] {
        &self.issuers
    }

    /// Verifies `token` at time `now` (seconds since the Unix epoch) against the audiences of
    /// the issuer that signed it (the management API's call).
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, TokenError> {
        verify_jws(&parse(token)?, &self.issuers, None, now)
    }

    /// Verifies `token` at time `now` for a use the caller names: `aud` must match one of
    /// `audiences` (compared without a trailing `/`); the issuers' own audiences do not count.
    /// An empty `audiences` accepts no token.
    pub fn verify_for(
        &self,
        token: &str,
        now: i64,
        audiences: &[&str],
    ) -> Result<Identity, TokenError> {
        verify_jws(&parse(token)?, &self.issuers, Some(audiences), now)
    }
}

/// A compact JWS whose header has been read and judged, its signature not yet checked.
pub(crate) struct Jws<'a> {
    alg: Algorithm,
    kid: Option<String>,
    /// The JWS Signing Input (RFC 7515 §5.2 step 8): header and payload as sent.
    signed: &'a str,
    payload: &'a str,
    signature: Vec<u8>,
}

/// Reads a token's structure and header, refusing what no key could ever accept. Pure and
/// cheap, so callers that would fetch keys can refuse garbage without any IO.
pub(crate) fn parse(token: &str) -> Result<Jws<'_>, TokenError> {
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
    // RFC 7515 §4.1.1 and RFC 8725 §3.1: the algorithm is checked first, against the short
    // list this verifier implements; whether it fits the key is checked once the key is known.
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Algorithm::from_name)
        .ok_or(TokenError::UnsupportedAlgorithm)?;
    // RFC 7515 §4.1.11: extensions marked critical that we do not understand (all of them)
    // make the token invalid.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed("critical header extensions"));
    }
    // RFC 8725 §3.11 and RFC 9068 §2.1: a JWT access token says `JWT` or `at+jwt`, if anything.
    if let Some(typ) = header.get("typ") {
        let typ = typ.as_str().unwrap_or_default();
        if !typ.eq_ignore_ascii_case("JWT") && !typ.eq_ignore_ascii_case("at+jwt") {
            return Err(TokenError::Malformed("typ is not JWT"));
        }
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) if k.len() <= MAX_KID_LEN => Some(k.clone()),
        Some(_) => return Err(TokenError::Malformed("kid is not a short string")),
    };
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    Ok(Jws {
        alg,
        kid,
        signed: &token[..header_b64.len() + 1 + payload_b64.len()],
        payload: payload_b64,
        signature,
    })
}

/// Checks a parsed token's signature against `keys` (the one named by its `kid`, or any when
/// it names none; only keys of the header's algorithm are asked) and returns its claims,
/// unchecked. For client assertions, whose issuer is the client itself.
pub(crate) fn signed_claims(
    jws: &Jws<'_>,
    keys: &[VerifyingKey],
) -> Result<Map<String, Value>, TokenError> {
    let mut named = keys
        .iter()
        .filter(|k| jws.kid.as_ref().is_none_or(|kid| &k.kid == kid))
        .peekable();
    if named.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    let mut candidates = named.filter(|k| k.algorithm() == jws.alg).peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    if !candidates.any(|k| k.verifies(jws.signed.as_bytes(), &jws.signature)) {
        return Err(TokenError::BadSignature);
    }
    decode_object(jws.payload, "payload")
}

/// A parsed token's claims, its signature NOT checked: only to find out which keys to check
/// it with (a client assertion names its client in `iss`).
pub(crate) fn unverified_claims(jws: &Jws<'_>) -> Result<Map<String, Value>, TokenError> {
    decode_object(jws.payload, "payload")
}

/// Checks a parsed token against `issuers`: signature first, then the claims. `audiences`
/// replaces each issuer's own list when given.
pub(crate) fn verify_jws(
    jws: &Jws<'_>,
    issuers: &[TrustedIssuer],
    audiences: Option<&[&str]>,
    now: i64,
) -> Result<Identity, TokenError> {
    // The keys the token could mean: those with its kid, or every key when it names none.
    let named: Vec<(&TrustedIssuer, &VerifyingKey)> = issuers
        .iter()
        .flat_map(|i| i.keys.iter().map(move |k| (i, k)))
        .filter(|(_, k)| jws.kid.as_ref().is_none_or(|kid| &k.kid == kid))
        .collect();
    if named.is_empty() {
        return Err(TokenError::UnknownKey);
    }
    // The key decides the algorithm (RFC 8725 §2.1): a key of another type is never asked
    // to verify, so an RS256 header cannot steer an EC key or the other way round.
    let mut candidates = named
        .into_iter()
        .filter(|(_, k)| k.algorithm() == jws.alg)
        .peekable();
    if candidates.peek().is_none() {
        return Err(TokenError::UnsupportedAlgorithm);
    }
    let (first, key) = candidates
        .find(|(_, k)| k.verifies(jws.signed.as_bytes(), &jws.signature))
        .ok_or(TokenError::BadSignature)?;

    // Only now, with the signature good, are the claims read.
    let claims = decode_object(jws.payload, "payload")?;
    // RFC 7519 §4.1.1 and OIDC Core §3.1.3.7 step 2: exact match with the key's issuer — one
    // of them, when one key is trusted under several names (fhirlink's own key is `fhirlink`
    // and each service's issuer URL).
    let iss = claims.get("iss").and_then(Value::as_str);
    let issuer = if iss == Some(first.issuer.as_str()) {
        first
    } else {
        issuers
            .iter()
            .find(|i| Some(i.issuer.as_str()) == iss && i.keys.iter().any(|k| k == key))
            .ok_or(TokenError::WrongIssuer)?
    };
    let audience = match audiences {
        Some(list) => matched_audience(&claims, list.iter().copied()),
        None => matched_audience(&claims, issuer.audiences.iter().map(String::as_str)),
    }
    .ok_or(TokenError::WrongAudience)?;
    let exp = numeric_date(&claims, "exp")?.ok_or(TokenError::Malformed("exp is missing"))?;
    if now > exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(TokenError::Expired { exp, now });
    }
    let not_before = numeric_date(&claims, "nbf")?;
    if let Some(nbf) = not_before {
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
    let extra = claims::extract(&claims)?;
    Ok(Identity {
        subject: subject.to_string(),
        issuer: issuer.issuer.clone(),
        audience,
        object_id: extra.object_id,
        client_id: extra.client_id,
        scopes: extra.scopes,
        roles: extra.roles,
        patient: extra.patient,
        fhir_user: extra.fhir_user,
        expires: exp,
        not_before,
    })
}

/// The first accepted audience that the token's `aud` (RFC 7519 §4.1.3: a string or an array
/// of strings) names, compared without a trailing slash (Azure writes resource URIs both ways).
fn matched_audience<'a>(
    claims: &Map<String, Value>,
    accepted: impl Iterator<Item = &'a str>,
) -> Option<String> {
    let named: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) if list.len() <= MAX_AUDIENCES => {
            list.iter().filter_map(Value::as_str).collect()
        }
        _ => return None,
    };
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    for ok in accepted {
        if !ok.is_empty()
            && named
                .iter()
                .any(|a| a.len() <= MAX_AUDIENCE_LEN && same(a, ok))
        {
            return Some(ok.to_string());
        }
    }
    None
}

/// A principal id: non-empty, bounded, printable (it appears in error messages and logs).
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_SUBJECT_LEN && !s.chars().any(char::is_control)
}

/// An audience the local issuer may put in a token: a bounded, visible-ASCII resource URI.
pub(crate) fn valid_audience(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_AUDIENCE_LEN && s.bytes().all(|b| b.is_ascii_graphic())
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
pub(crate) fn numeric_date(
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
pub(crate) fn ec_thumbprint(point: &[u8]) -> Option<String> {
    let crv = match point.len() {
        65 => "P-256",
        97 => "P-384",
        _ => return None,
    };
    if point[0] != 4 {
        return None;
    }
    let half = (point.len() - 1) / 2;
    let x = URL_SAFE_NO_PAD.encode(&point[1..=half]);
    let y = URL_SAFE_NO_PAD.encode(&point[half + 1..]);
    // The members in lexicographic order, no whitespace (RFC 7638 §3.2).
    Some(sha256_b64(&format!(
        r#"{{"crv":"{crv}","kty":"EC","x":"{x}","y":"{y}"}}"#
    )))
}

/// RFC 7638 JWK thumbprint of an RSA public key (RFC 7638 §3.2: `e`, `kty`, `n`).
pub(crate) fn rsa_thumbprint(n: &[u8], e: &[u8]) -> String {
    let n = URL_SAFE_NO_PAD.encode(strip_leading_zeros(n));
    let e = URL_SAFE_NO_PAD.encode(strip_leading_zeros(e));
    sha256_b64(&format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#))
}

fn sha256_b64(canonical: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
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
                issuer: ISS.into(),
                audience: AUD.into(),
                expires: claims().expires,
                not_before: Some(claims().not_before),
                ..Identity::default()
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
