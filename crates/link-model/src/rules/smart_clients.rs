//! SMART Backend Services clients of a FHIR service (`Microsoft.HealthcareApis/services/
//! smartClients`, fhirlink's own type: Azure registered such clients in Entra ID, which
//! fhirlink stands in for). A client is its id (the resource name, the `iss` and `sub` of its
//! assertions), its public keys — a JWK Set given inline (`jwks`) or where to fetch it
//! (`jwksUrl`) — and the `system/` scopes the service's token endpoint may grant it. What the
//! client may then do with the data is, as for every principal, its FHIR data roles on the
//! service: the scopes only narrow them.
//!
//! Only the shape is checked here (this crate does no cryptography): keys are public EC (P-256,
//! P-384) or RSA JWKs whose `alg`, when given, is one the token endpoint verifies; a private key
//! is refused, so that a registration never holds a secret. Whether a key verifies is the token
//! endpoint's business.

use serde_json::{json, Map, Value};

use super::{props_of, store};
use crate::error::{bad_request, ArmError};
use crate::path::Addr;
use crate::state::Resource;
use crate::txn::Txn;

/// The most keys one registration carries (rotation needs two or three).
const MAX_KEYS: usize = 10;
/// The most scopes one registration allows.
const MAX_SCOPES: usize = 64;
/// The signature algorithms of client assertions (SMART Backend Services requires RS384 and
/// ES384; the 256-bit ones are accepted too).
const ASSERTION_ALGORITHMS: &[&str] = &["RS384", "ES384", "RS256", "ES256"];
/// JWK members that only a private key has (RFC 7518 §6.2.2, §6.3.2).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn invalid(message: impl Into<String>) -> ArmError {
    bad_request("InvalidSmartClient", message)
}

pub(super) fn put_client(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    props.remove("provisioningState");
    let jwks = props.get("jwks").filter(|v| !v.is_null());
    let url = props.get("jwksUrl").filter(|v| !v.is_null());
    match (jwks, url) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "Give the client's keys either inline (properties.jwks) or by URL (properties.jwksUrl), not both.",
            ))
        }
        (None, None) => {
            return Err(invalid(
                "A SMART client needs its public keys: properties.jwks (a JWK Set) or properties.jwksUrl (https).",
            ))
        }
        (Some(jwks), None) => check_jwks(jwks)?,
        (None, Some(url)) => check_url(url)?,
    }
    let scopes = check_scopes(props.get("scopes"))?;
    props.insert("scopes".into(), json!(scopes));
    if let Some(name) = props.get("displayName") {
        if name.as_str().is_none_or(|n| n.chars().count() > 256) {
            return Err(invalid(
                "properties.displayName must be a string of at most 256 characters.",
            ));
        }
    }
    props.insert("clientId".into(), json!(addr.name));
    store(tx, addr, input, existing, props, &[], None).map(drop)
}

fn check_jwks(jwks: &Value) -> Result<(), ArmError> {
    let keys = jwks.get("keys").and_then(Value::as_array).ok_or_else(|| {
        invalid("properties.jwks must be a JWK Set: an object with a 'keys' array.")
    })?;
    if keys.is_empty() || keys.len() > MAX_KEYS {
        return Err(invalid(format!(
            "properties.jwks must hold 1 to {MAX_KEYS} keys."
        )));
    }
    for (i, key) in keys.iter().enumerate() {
        check_key(key).map_err(|m| invalid(format!("properties.jwks.keys[{i}]: {m}")))?;
    }
    Ok(())
}

fn check_key(key: &Value) -> Result<(), String> {
    let key: &Map<String, Value> = key.as_object().ok_or("not an object")?;
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| key.contains_key(**m)) {
        return Err(format!(
            "'{m}' is a private key member: register the public key only."
        ));
    }
    let text = |name: &str| key.get(name).and_then(Value::as_str);
    let b64 = |name: &str| {
        text(name).is_some_and(|v| {
            !v.is_empty()
                && v.len() <= 2048
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    };
    match text("kty") {
        Some("EC") => {
            if !matches!(text("crv"), Some("P-256" | "P-384")) {
                return Err("an EC key's crv must be P-256 or P-384.".into());
            }
            if !b64("x") || !b64("y") {
                return Err("an EC key needs base64url 'x' and 'y'.".into());
            }
        }
        Some("RSA") => {
            if !b64("n") || !b64("e") {
                return Err("an RSA key needs base64url 'n' and 'e'.".into());
            }
        }
        _ => return Err("kty must be EC or RSA.".into()),
    }
    if let Some(alg) = key.get("alg") {
        if !alg
            .as_str()
            .is_some_and(|a| ASSERTION_ALGORITHMS.contains(&a))
        {
            return Err(format!(
                "alg must be one of {}.",
                ASSERTION_ALGORITHMS.join(", ")
            ));
        }
    }
    if let Some(kid) = key.get("kid") {
        if !kid
            .as_str()
            .is_some_and(|k| !k.is_empty() && k.len() <= 256)
        {
            return Err("kid must be a string of 1 to 256 characters.".into());
        }
    }
    if key.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return Err("use must be 'sig'.".into());
    }
    if let Some(ops) = key.get("key_ops") {
        if !ops
            .as_array()
            .is_some_and(|o| o.iter().any(|op| op == "verify"))
        {
            return Err("key_ops must allow 'verify' (a public key verifies).".into());
        }
    }
    Ok(())
}

fn check_url(url: &Value) -> Result<(), ArmError> {
    let ok = url.as_str().is_some_and(|u| {
        u.len() <= 2048
            && u.strip_prefix("https://")
                .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/'))
            && u.bytes().all(|b| b.is_ascii_graphic())
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "properties.jwksUrl must be an https URL of at most 2048 characters.",
        ))
    }
}

/// A `system/` scope in SMART v1 (`system/Patient.read`) or v2 (`system/Patient.rs`) form.
fn valid_system_scope(scope: &str) -> bool {
    let Some((ty, perm)) = scope
        .strip_prefix("system/")
        .and_then(|r| r.split_once('.'))
    else {
        return false;
    };
    let ty_ok = ty == "*"
        || (ty.len() <= 64
            && ty.starts_with(|c: char| c.is_ascii_uppercase())
            && ty.chars().all(|c| c.is_ascii_alphanumeric()));
    let v2 = !perm.is_empty() && {
        // c, r, u, d, s in that order, each at most once.
        let order = "cruds";
        let mut last = None;
        perm.chars().all(|c| {
            let at = order.find(c);
            let ok = at.is_some() && at > last;
            last = at;
            ok
        })
    };
    ty_ok && (matches!(perm, "read" | "write" | "*") || v2)
}

fn check_scopes(scopes: Option<&Value>) -> Result<Vec<String>, ArmError> {
    let list = scopes.and_then(Value::as_array).ok_or_else(|| {
        invalid("properties.scopes must be an array of system/ scopes, e.g. [\"system/*.read\"].")
    })?;
    if list.is_empty() || list.len() > MAX_SCOPES {
        return Err(invalid(format!(
            "properties.scopes must hold 1 to {MAX_SCOPES} scopes."
        )));
    }
    let mut out = Vec::new();
    for s in list {
        match s.as_str() {
            Some(s) if valid_system_scope(s) => {
                if !out.iter().any(|o| o == s) {
                    out.push(s.to_owned());
                }
            }
            _ => {
                return Err(invalid(format!(
                    "{s} is not a system/ scope (system/<type or *>.<read|write|*|cruds>): a backend services client acts for no user or patient."
                )))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_scopes() {
        for ok in [
            "system/*.read",
            "system/Patient.rs",
            "system/Observation.cruds",
            "system/*.*",
            "system/Group.write",
        ] {
            assert!(valid_system_scope(ok), "{ok}");
        }
        for bad in [
            "patient/*.read",
            "user/Patient.read",
            "system/*.sr",
            "system/*.rr",
            "system/patient.read",
            "system/*.",
            "system/*",
            "launch",
        ] {
            assert!(!valid_system_scope(bad), "{bad}");
        }
    }

    #[test]
    fn keys() {
        let ec = json!({"kty": "EC", "crv": "P-384", "x": "abc", "y": "def", "alg": "ES384"});
        assert!(check_key(&ec).is_ok());
        let mut private = ec.clone();
        private["d"] = json!("secret");
        assert!(check_key(&private).unwrap_err().contains("private"));
        let mut alg = ec.clone();
        alg["alg"] = json!("HS256");
        assert!(check_key(&alg).is_err());
        assert!(check_key(&json!({"kty": "RSA", "n": "AQAB", "e": "AQAB"})).is_ok());
        assert!(check_key(&json!({"kty": "oct", "k": "x"})).is_err());
        assert!(check_key(&json!({"kty": "EC", "crv": "P-521", "x": "a", "y": "b"})).is_err());
    }
}
