//! The claims an [`Identity`](crate::jwt::Identity) carries beyond `sub` and `iss`, read from
//! a token's payload only after its signature has verified, and bounded, because even a signed
//! token comes from outside: an issuer's misconfiguration or a compromised client registration
//! must not make us hold megabytes or log control characters.
//!
//! A claim that is present but not of the expected shape refuses the whole token instead of
//! being ignored: several of these claims *narrow* access (a SMART `patient` launch context
//! confines `patient/` scopes to one compartment), and silently dropping a narrowing claim
//! would widen what the token grants. This module also holds the syntax checks the local issuer
//! applies to what it mints, so that it never issues a token it would refuse.

use serde_json::{Map, Value};

use crate::jwt::TokenError;

/// The longest `oid`, `azp`/`appid`/`client_id` or role accepted (Azure's are 36-character
/// GUIDs; app role values are at most 120 characters).
const MAX_ID_LEN: usize = 256;
/// The longest single scope (`patient/Observation.rs?category=laboratory` and its kin).
const MAX_SCOPE_LEN: usize = 256;
/// The most scopes, and the most roles, one token may carry.
pub(crate) const MAX_SCOPES: usize = 256;
const MAX_ROLES: usize = 256;
/// FHIR R4 §2.24.0.1 `id`: 1 to 64 characters of `[A-Za-z0-9\-\.]`.
const MAX_FHIR_ID_LEN: usize = 64;
/// `fhirUser` is a relative or absolute FHIR resource URL (SMART App Launch 2.0 §"fhirUser").
const MAX_FHIR_USER_LEN: usize = 1024;

/// What authorization needs of a verified token, besides its subject and issuer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Extra {
    pub object_id: Option<String>,
    pub client_id: Option<String>,
    pub scopes: Vec<String>,
    pub roles: Vec<String>,
    pub patient: Option<String>,
    pub fhir_user: Option<String>,
}

/// Reads the authorization claims of a verified payload.
pub(crate) fn extract(claims: &Map<String, Value>) -> Result<Extra, TokenError> {
    // `azp` (OIDC Core §2) names the client a token was issued to; Azure AD v1 tokens say
    // `appid`, RFC 9068 §2.2 access tokens `client_id`. The first one present is the one used.
    let client_id = match optional_id(claims, "azp")? {
        Some(id) => Some(id),
        None => match optional_id(claims, "appid")? {
            Some(id) => Some(id),
            None => optional_id(claims, "client_id")?,
        },
    };
    // Azure AD says `scp`, RFC 8693 §4.2 and SMART say `scope`. When both are present `scp`
    // wins: it is the claim Azure's FHIR service reads.
    let scopes = match claims.get("scp") {
        Some(v) => scope_list(v, "scp")?,
        None => match claims.get("scope") {
            Some(v) => scope_list(v, "scope")?,
            None => Vec::new(),
        },
    };
    let roles = match claims.get("roles") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.len() <= MAX_ROLES => list
            .iter()
            .map(|r| r.as_str().filter(|r| valid_id(r)).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or(TokenError::Malformed("roles"))?,
        Some(_) => return Err(TokenError::Malformed("roles")),
    };
    let patient = match claims.get("patient") {
        None => None,
        Some(Value::String(p)) if valid_fhir_id(p) => Some(p.clone()),
        Some(_) => return Err(TokenError::Malformed("patient")),
    };
    let fhir_user = match claims.get("fhirUser") {
        None => None,
        Some(Value::String(u)) if valid_fhir_user(u) => Some(u.clone()),
        Some(_) => return Err(TokenError::Malformed("fhirUser")),
    };
    Ok(Extra {
        object_id: optional_id(claims, "oid")?,
        client_id,
        scopes,
        roles,
        patient,
        fhir_user,
    })
}

/// A string claim naming an object or a client: absent, or a bounded printable string.
fn optional_id(
    claims: &Map<String, Value>,
    name: &'static str,
) -> Result<Option<String>, TokenError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) if valid_id(s) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed(name)),
    }
}

/// Scopes as RFC 6749 §3.3 writes them (one string, space-delimited), or as a JSON array of
/// scope strings (how some issuers, Okta's among them, write `scp`).
fn scope_list(value: &Value, name: &'static str) -> Result<Vec<String>, TokenError> {
    let scopes: Vec<&str> = match value {
        Value::String(s) => s.split(' ').filter(|s| !s.is_empty()).collect(),
        Value::Array(list) => list
            .iter()
            .map(Value::as_str)
            .collect::<Option<Vec<_>>>()
            .ok_or(TokenError::Malformed(name))?,
        _ => return Err(TokenError::Malformed(name)),
    };
    if scopes.len() > MAX_SCOPES || !scopes.iter().all(|s| valid_scope(s)) {
        return Err(TokenError::Malformed(name));
    }
    let mut out: Vec<String> = Vec::with_capacity(scopes.len());
    for s in scopes {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

/// An identifier claim: non-empty, bounded, free of control characters.
pub(crate) fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_ID_LEN && !s.chars().any(char::is_control)
}

/// One scope token: RFC 6749 §3.3 `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`, bounded.
pub(crate) fn valid_scope(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SCOPE_LEN
        && s.bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// A FHIR resource id (FHIR R4 §2.24.0.1): the patient context becomes part of compartment
/// queries, so nothing else may pass.
pub(crate) fn valid_fhir_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_FHIR_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A `fhirUser` URL: bounded, visible ASCII (URLs have no spaces or controls).
pub(crate) fn valid_fhir_user(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FHIR_USER_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(claims: Value) -> Result<Extra, TokenError> {
        extract(claims.as_object().unwrap())
    }

    #[test]
    fn azure_access_token_claims() {
        let e = check(json!({
            "oid": "8f1c4a9e-1d5b-4a6e-9a43-0f2f6d2b9c11",
            "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
            "scp": "user_impersonation",
            "roles": ["Task.Read", "Task.Write"],
        }))
        .unwrap();
        assert_eq!(
            e.object_id.as_deref(),
            Some("8f1c4a9e-1d5b-4a6e-9a43-0f2f6d2b9c11")
        );
        assert_eq!(
            e.client_id.as_deref(),
            Some("04b07795-8ddb-461a-bbee-02f9e1bf7b46")
        );
        assert_eq!(e.scopes, ["user_impersonation"]);
        assert_eq!(e.roles, ["Task.Read", "Task.Write"]);
    }

    #[test]
    fn smart_v2_launch_context() {
        let e = check(json!({
            "client_id": "growth-chart",
            "scope": "launch/patient  patient/Observation.rs patient/*.read openid patient/Observation.rs",
            "patient": "123-abc.4",
            "fhirUser": "Practitioner/9",
        }))
        .unwrap();
        assert_eq!(e.client_id.as_deref(), Some("growth-chart"));
        // Split on single spaces, empty pieces dropped, duplicates once.
        assert_eq!(
            e.scopes,
            [
                "launch/patient",
                "patient/Observation.rs",
                "patient/*.read",
                "openid"
            ]
        );
        assert_eq!(e.patient.as_deref(), Some("123-abc.4"));
        assert_eq!(e.fhir_user.as_deref(), Some("Practitioner/9"));
        assert_eq!(check(json!({})).unwrap(), Extra::default());
    }

    #[test]
    fn client_id_precedence_and_scope_arrays() {
        let e = check(json!({"azp": "a", "appid": "b", "client_id": "c",
                             "scp": ["user/*.cruds", "system/Patient.r"], "scope": "other"}))
        .unwrap();
        assert_eq!(e.client_id.as_deref(), Some("a"));
        assert_eq!(e.scopes, ["user/*.cruds", "system/Patient.r"]);
        let e = check(json!({"appid": "b", "client_id": "c"})).unwrap();
        assert_eq!(e.client_id.as_deref(), Some("b"));
    }

    #[test]
    fn hostile_claims_refuse_the_token() {
        let long = "x".repeat(MAX_ID_LEN + 1);
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        let many_roles: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
        for (claims, what) in [
            (json!({"oid": 7}), "oid"),
            (json!({"oid": long}), "oid"),
            (json!({"oid": ""}), "oid"),
            (json!({"azp": "a\u{0}"}), "azp"),
            (json!({"appid": ["a"]}), "appid"),
            (json!({"client_id": null}), "client_id"),
            (json!({"scp": 1}), "scp"),
            (json!({"scp": ["a b"]}), "scp"),
            (json!({"scp": ["ok", 3]}), "scp"),
            (json!({"scope": "patient/\"x\""}), "scope"),
            (json!({"scope": "a\tb"}), "scope"),
            (json!({"scope": "é"}), "scope"),
            (json!({"scope": "y".repeat(MAX_SCOPE_LEN + 1)}), "scope"),
            (json!({"scope": many.join(" ")}), "scope"),
            (json!({"roles": "Admin"}), "roles"),
            (json!({"roles": [1]}), "roles"),
            (json!({"roles": many_roles}), "roles"),
            (json!({"patient": "../Patient/1"}), "patient"),
            (json!({"patient": "a b"}), "patient"),
            (json!({"patient": ""}), "patient"),
            (json!({"patient": 12}), "patient"),
            (
                json!({"patient": "p".repeat(MAX_FHIR_ID_LEN + 1)}),
                "patient",
            ),
            (json!({"fhirUser": "Practitioner/1 x"}), "fhirUser"),
            (json!({"fhirUser": {}}), "fhirUser"),
        ] {
            assert_eq!(
                check(claims.clone()),
                Err(TokenError::Malformed(what)),
                "{claims}"
            );
        }
        // Bounds are inclusive.
        assert!(check(json!({"patient": "p".repeat(MAX_FHIR_ID_LEN)})).is_ok());
        assert!(check(json!({"scope": many[..MAX_SCOPES].join(" ")})).is_ok());
    }
}
