//! SMART Backend Services client assertions (SMART App Launch 2.0, "client-confidential-
//! asymmetric", which profiles RFC 7523 §2.2 and §3): the signed JWT a registered client
//! sends to a token endpoint instead of a secret. Pure: the keys, the expected audiences and
//! the time are given; remembering `jti`s is the caller's (it must outlive one process).
//!
//! Checked, in this order: the header's algorithm is RS384, ES384, RS256 or ES256 and is the
//! one of the client key it names (`kid`), the signature, then the claims — `iss` and `sub`
//! both the client id, `aud` the token endpoint's URL, `exp` present, not passed and at most
//! [`MAX_LIFETIME_SECS`] ahead (the SMART limit of five minutes, with the usual skew), `nbf`
//! and `iat` if present not in the future, and a `jti` to refuse replays by.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::fetch::{self, Limits, Url};
use crate::jwt::{self, TokenError, VerifyingKey, CLOCK_SKEW_SECS};
use crate::oidc::OidcError;

/// The longest an assertion may live: five minutes (SMART Backend Services: "`exp` … no more
/// than five minutes in the future").
pub const MAX_LIFETIME_SECS: i64 = 300;
/// A `jti` longer than this is not an id (SMART: "at most 255 characters").
pub const MAX_JTI_LEN: usize = 255;

/// A verified client assertion: what the token endpoint still has to check itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assertion {
    /// The assertion's unique id: the token endpoint refuses a second use until `expires`.
    pub jti: String,
    /// `exp`, seconds since the Unix epoch.
    pub expires: i64,
}

/// Why an assertion was refused: each is RFC 6749 §5.2's `invalid_client`; the message is fit
/// for `error_description` and carries no assertion content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    #[error("the client assertion is not valid: {}", .0.description())]
    Token(TokenError),
    #[error("the client assertion's iss and sub must both be the client id")]
    WrongClient,
    #[error("the client assertion's aud must be this token endpoint's URL")]
    WrongAudience,
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion's exp is more than five minutes ahead")]
    TooLong,
    #[error("the client assertion is not valid yet")]
    NotYetValid,
    #[error("the client assertion has no jti, or one longer than 255 characters")]
    BadJti,
    #[error("the client assertion was used before (its jti is spent)")]
    Replayed,
}

/// The client an assertion says it is from (`iss`), read without checking anything, to find
/// the keys that will check it; `None` when the token is not a readable JWT.
pub fn claimed_client(assertion: &str) -> Option<String> {
    let jws = jwt::parse(assertion).ok()?;
    let claims = jwt::unverified_claims(&jws).ok()?;
    claims
        .get("iss")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty() && c.len() <= 256)
        .map(str::to_owned)
}

/// Verifies `assertion` for client `client_id`, whose registered keys are `keys`, at a token
/// endpoint known by `token_endpoints` (any of the URLs it is reached by), at `now`.
pub fn verify(
    assertion: &str,
    client_id: &str,
    keys: &[VerifyingKey],
    token_endpoints: &[&str],
    now: i64,
) -> Result<Assertion, AssertionError> {
    let jws = jwt::parse(assertion).map_err(AssertionError::Token)?;
    let claims = jwt::signed_claims(&jws, keys).map_err(AssertionError::Token)?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str);
    if text("iss") != Some(client_id) || text("sub") != Some(client_id) {
        return Err(AssertionError::WrongClient);
    }
    // RFC 7523 §3 item 3: `aud` (a string or an array) names this token endpoint.
    let same = |a: &str, b: &str| a.trim_end_matches('/') == b.trim_end_matches('/');
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(list)) if list.len() <= 16 => {
            list.iter().filter_map(Value::as_str).collect()
        }
        _ => Vec::new(),
    };
    if !audiences
        .iter()
        .any(|a| token_endpoints.iter().any(|t| same(a, t)))
    {
        return Err(AssertionError::WrongAudience);
    }
    let exp = jwt::numeric_date(&claims, "exp")
        .map_err(AssertionError::Token)?
        .ok_or(AssertionError::Token(TokenError::Malformed(
            "exp is missing",
        )))?;
    if now > exp.saturating_add(CLOCK_SKEW_SECS) {
        return Err(AssertionError::Expired);
    }
    if exp > now.saturating_add(MAX_LIFETIME_SECS + CLOCK_SKEW_SECS) {
        return Err(AssertionError::TooLong);
    }
    for name in ["nbf", "iat"] {
        if let Some(t) = jwt::numeric_date(&claims, name).map_err(AssertionError::Token)? {
            if t > now.saturating_add(CLOCK_SKEW_SECS) {
                return Err(AssertionError::NotYetValid);
            }
            if name == "iat" && exp.saturating_sub(t) > MAX_LIFETIME_SECS + CLOCK_SKEW_SECS {
                return Err(AssertionError::TooLong);
            }
        }
    }
    let jti = text("jti")
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_LEN)
        .ok_or(AssertionError::BadJti)?;
    Ok(Assertion {
        jti: jti.to_owned(),
        expires: exp,
    })
}

/// The usable keys of a client's JWK Set ([`crate::jwk::client_key_from_jwk`]), the others
/// skipped; an error when none is usable or the document is not a JWK Set.
pub fn client_keys(jwks: &Value) -> Result<Vec<VerifyingKey>, String> {
    let keys = jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("not a JWK Set: no `keys` array")?;
    if keys.len() > crate::jwk::MAX_JWKS_KEYS {
        return Err("the JWK Set has too many keys".into());
    }
    let mut usable = Vec::new();
    let mut why = None;
    for key in keys {
        match crate::jwk::client_key_from_jwk(key) {
            Ok(k) => usable.push(k),
            Err(e) => why = Some(e.to_string()),
        }
    }
    if usable.is_empty() {
        return Err(why.unwrap_or_else(|| "the JWK Set has no keys".into()));
    }
    Ok(usable)
}

/// Fetches a client's JWK Set from its registered `jwks_url` (SMART: the client hosts its
/// public keys): https (or http to loopback), at most 64 KiB, within 5 seconds, trusting
/// `tls` or else the system's roots.
pub async fn fetch_client_keys(
    url: &str,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Vec<VerifyingKey>, OidcError> {
    let url = Url::parse(url)?;
    let limits = Limits {
        timeout: Duration::from_secs(5),
        max_bytes: 64 * 1024,
    };
    let doc = fetch::get_json(&url, &limits, || match tls {
        Some(t) => Ok(t),
        None => crate::oidc::system_tls(),
    })
    .await?;
    client_keys(&doc).map_err(|reason| OidcError::BadDocument {
        url: fetch::printable(url.as_str()),
        reason,
    })
}
