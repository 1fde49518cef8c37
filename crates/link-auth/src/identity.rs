//! fhirlink's own token issuer: the signing key kept in the data folder, the tokens
//! `fhirlink token` mints with it (for the management API, and for a FHIR service's data plane
//! with an audience, scopes and a patient context), and the [`Verifier`] that checks them.
//!
//! The key is made on first start (`<data>/identity/signing-key.pem`, PKCS#8, mode 0600)
//! and read on every later one; whoever can read it can act as any principal, exactly as with
//! a cloud provider's token service. Tokens carry `iss` [`LOCAL_ISSUER`]; management tokens the
//! audience Azure's management SDKs ask for, so that a credential class that hands out a
//! fhirlink token is all an SDK needs. The issuer checks what it is asked to mint with the
//! verifier's own rules, so it never issues a token the verifier would refuse.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use crate::claims;
use crate::files;
use crate::jwt::{Claims, SigningKey, TrustedIssuer, Verifier, MAX_TOKEN_LEN};

/// The `iss` of tokens fhirlink issues itself.
pub const LOCAL_ISSUER: &str = "fhirlink";

/// The audience fhirlink puts in its tokens: the resource Azure's management SDKs request
/// (scope `https://management.azure.com/.default`).
pub const MANAGEMENT_AUDIENCE: &str = "https://management.azure.com/";

/// Every audience accepted on the management API: the two names Azure gives its management
/// resource (compared without a trailing slash).
pub const ACCEPTED_AUDIENCES: [&str; 2] = [
    "https://management.azure.com/",
    "https://management.core.windows.net/",
];

/// The longest lifetime `fhirlink token` issues: a year.
pub const MAX_LIFETIME_SECS: i64 = 366 * 24 * 3600;

const PEM_LABEL: &str = "PRIVATE KEY";

/// Why the local issuer could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: not a PEM PKCS#8 ECDSA P-256 private key")]
    BadKey(PathBuf),
    #[error(
        "no signing key at {0}: start `fhirlink serve` with this --data once, or pass --token"
    )]
    NoKey(PathBuf),
    #[error("{0}")]
    Key(#[from] crate::jwt::KeyError),
    #[error("the principal name must be 1-256 printable characters")]
    BadPrincipal,
    #[error("the lifetime must be between 1 second and 366 days")]
    BadLifetime,
    #[error("the audience must be 1-512 visible ASCII characters (a resource URI)")]
    BadAudience,
    #[error("{0:?} is not a scope (RFC 6749 §3.3: visible ASCII without quotes, backslashes or spaces), or there are more than 256")]
    BadScope(String),
    #[error("the patient must be a FHIR id (1-64 of A-Z a-z 0-9 - .)")]
    BadPatient,
    #[error("fhirUser must be a FHIR resource URL (1-1024 visible ASCII characters)")]
    BadFhirUser,
    #[error("the client id must be 1-256 printable characters")]
    BadClientId,
    #[error("the token would be longer than {MAX_TOKEN_LEN} bytes; ask for fewer scopes")]
    TooLarge,
}

/// What a data-plane token minted by [`LocalIssuer::mint_with`] says. Times are seconds since
/// the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenRequest {
    /// `sub`: the principal.
    pub subject: String,
    /// `aud`: the FHIR service's `authenticationConfiguration.audience` (or
    /// [`MANAGEMENT_AUDIENCE`]).
    pub audience: String,
    /// `scope`, space-separated: SMART scopes such as `patient/Observation.rs`; none when empty.
    pub scopes: Vec<String>,
    /// `patient`: the SMART launch context.
    pub patient: Option<String>,
    /// `fhirUser`: the FHIR resource the user is, e.g. `Practitioner/7`.
    pub fhir_user: Option<String>,
    /// `azp`: the client the token is for.
    pub client_id: Option<String>,
    /// `iat` and `nbf`.
    pub now: i64,
    /// `exp` is `now` plus this.
    pub lifetime_secs: i64,
}

/// The local issuer: its signing key.
#[derive(Debug)]
pub struct LocalIssuer {
    key: SigningKey,
    path: PathBuf,
}

impl LocalIssuer {
    /// Where the signing key of data folder `data` lives.
    pub fn key_path(data: &Path) -> PathBuf {
        data.join("identity").join("signing-key.pem")
    }

    /// Reads the signing key, creating it first when there is none.
    pub fn load_or_create(data: &Path) -> Result<LocalIssuer, IdentityError> {
        let path = LocalIssuer::key_path(data);
        if !path.exists() {
            let (_, der) = SigningKey::generate()?;
            let pem = files::pem_encode(PEM_LABEL, &der);
            // Another process may have won the race to create it: then its key is the key.
            files::write_new_private(&path, pem.as_bytes()).map_err(|source| {
                IdentityError::Io {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        LocalIssuer::load(data)
    }

    /// Reads an existing signing key.
    pub fn load(data: &Path) -> Result<LocalIssuer, IdentityError> {
        let path = LocalIssuer::key_path(data);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(IdentityError::NoKey(path))
            }
            Err(source) => return Err(IdentityError::Io { path, source }),
        };
        files::warn_if_readable_by_others(&path);
        let der = files::pem_decode(&text, PEM_LABEL)
            .ok_or_else(|| IdentityError::BadKey(path.clone()))?;
        let key =
            SigningKey::from_pkcs8_der(&der).map_err(|_| IdentityError::BadKey(path.clone()))?;
        Ok(LocalIssuer { key, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A token for `principal`, valid from `now` for `lifetime_secs`.
    pub fn mint(
        &self,
        principal: &str,
        now: i64,
        lifetime_secs: i64,
    ) -> Result<String, IdentityError> {
        if !crate::jwt::valid_subject(principal) {
            return Err(IdentityError::BadPrincipal);
        }
        if !(1..=MAX_LIFETIME_SECS).contains(&lifetime_secs) {
            return Err(IdentityError::BadLifetime);
        }
        Ok(self.key.sign(&Claims {
            issuer: LOCAL_ISSUER.to_string(),
            subject: principal.to_string(),
            audience: MANAGEMENT_AUDIENCE.to_string(),
            issued_at: now,
            not_before: now,
            expires: now.saturating_add(lifetime_secs),
        })?)
    }

    /// A data-plane token: `request`'s audience, scopes and launch context, every value checked
    /// with the rules the verifier reads it by.
    pub fn mint_with(&self, request: &TokenRequest) -> Result<String, IdentityError> {
        self.mint_as(LOCAL_ISSUER, request)
    }

    /// [`mint_with`](Self::mint_with) under another `iss`: the URL a service's token endpoint
    /// names its issuer by (its SMART configuration's `issuer`). The verifier of that service
    /// trusts this key under that name too ([`LocalIssuer::trusted_as`]).
    pub fn mint_as(&self, issuer: &str, request: &TokenRequest) -> Result<String, IdentityError> {
        if !crate::jwt::valid_subject(&request.subject) {
            return Err(IdentityError::BadPrincipal);
        }
        if !(1..=MAX_LIFETIME_SECS).contains(&request.lifetime_secs) {
            return Err(IdentityError::BadLifetime);
        }
        if !crate::jwt::valid_audience(&request.audience) {
            return Err(IdentityError::BadAudience);
        }
        if let Some(bad) = request.scopes.iter().find(|s| !claims::valid_scope(s)) {
            return Err(IdentityError::BadScope(bad.clone()));
        }
        if request.scopes.len() > claims::MAX_SCOPES {
            return Err(IdentityError::BadScope(format!(
                "{} scopes",
                request.scopes.len()
            )));
        }
        let mut payload = Map::new();
        payload.insert("iss".into(), issuer.into());
        payload.insert("sub".into(), request.subject.clone().into());
        payload.insert("aud".into(), request.audience.clone().into());
        payload.insert("iat".into(), request.now.into());
        payload.insert("nbf".into(), request.now.into());
        payload.insert(
            "exp".into(),
            request.now.saturating_add(request.lifetime_secs).into(),
        );
        if !request.scopes.is_empty() {
            payload.insert("scope".into(), request.scopes.join(" ").into());
        }
        if let Some(patient) = &request.patient {
            if !claims::valid_fhir_id(patient) {
                return Err(IdentityError::BadPatient);
            }
            payload.insert("patient".into(), patient.clone().into());
        }
        if let Some(user) = &request.fhir_user {
            if !claims::valid_fhir_user(user) {
                return Err(IdentityError::BadFhirUser);
            }
            payload.insert("fhirUser".into(), user.clone().into());
        }
        if let Some(client) = &request.client_id {
            if !claims::valid_id(client) {
                return Err(IdentityError::BadClientId);
            }
            payload.insert("azp".into(), client.clone().into());
        }
        let token = self.key.sign_payload(&payload)?;
        if token.len() > MAX_TOKEN_LEN {
            return Err(IdentityError::TooLarge);
        }
        Ok(token)
    }

    /// The issuer's public key as a JWK Set (RFC 7517 §5), for clients that verify its tokens
    /// themselves.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.key.verifying_key().to_jwk()]})
    }

    /// This issuer as one a [`Verifier`] trusts.
    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer {
            issuer: LOCAL_ISSUER.to_string(),
            keys: vec![self.key.verifying_key()],
            audiences: ACCEPTED_AUDIENCES.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// This issuer's key trusted under another `iss` (see [`mint_as`](Self::mint_as)).
    pub fn trusted_as(&self, issuer: &str) -> TrustedIssuer {
        TrustedIssuer {
            issuer: issuer.to_string(),
            keys: vec![self.key.verifying_key()],
            audiences: Vec::new(),
        }
    }

    /// A verifier that trusts this issuer alone.
    pub fn verifier(&self) -> Verifier {
        Verifier::new(vec![self.trusted()])
    }
}

/// Seconds since the Unix epoch, as token times count them.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            LocalIssuer::load(dir.path()),
            Err(IdentityError::NoKey(_))
        ));
        let a = LocalIssuer::load_or_create(dir.path()).unwrap();
        let b = LocalIssuer::load_or_create(dir.path()).unwrap();
        let token = a.mint("alice", unix_now(), 60).unwrap();
        let id = b.verifier().verify(&token, unix_now()).unwrap();
        assert_eq!(
            (id.subject.as_str(), id.issuer.as_str()),
            ("alice", LOCAL_ISSUER)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(a.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }

    fn request(now: i64) -> TokenRequest {
        TokenRequest {
            subject: "alice".into(),
            audience: "https://myfhir.azurehealthcareapis.com".into(),
            scopes: vec!["launch/patient".into(), "patient/Observation.rs".into()],
            patient: Some("p-1".into()),
            fhir_user: Some("Patient/p-1".into()),
            client_id: Some("fhirlink-cli".into()),
            now,
            lifetime_secs: 300,
        }
    }

    #[test]
    fn data_plane_tokens_carry_audience_scopes_and_launch_context() {
        let dir = tempfile::tempdir().unwrap();
        let i = LocalIssuer::load_or_create(dir.path()).unwrap();
        let now = unix_now();
        let token = i.mint_with(&request(now)).unwrap();
        let id = i
            .verifier()
            .verify_for(&token, now, &["https://myfhir.azurehealthcareapis.com/"])
            .unwrap();
        assert_eq!(
            id,
            crate::jwt::Identity {
                subject: "alice".into(),
                issuer: LOCAL_ISSUER.into(),
                audience: "https://myfhir.azurehealthcareapis.com/".into(),
                object_id: None,
                client_id: Some("fhirlink-cli".into()),
                scopes: vec!["launch/patient".into(), "patient/Observation.rs".into()],
                roles: vec![],
                patient: Some("p-1".into()),
                fhir_user: Some("Patient/p-1".into()),
                expires: now + 300,
                not_before: Some(now),
            }
        );
        // Not a management token, and not one for another service.
        assert_eq!(
            i.verifier().verify(&token, now),
            Err(crate::jwt::TokenError::WrongAudience)
        );
        // A bare request: no scope claim at all.
        let bare = TokenRequest {
            scopes: vec![],
            patient: None,
            fhir_user: None,
            client_id: None,
            ..request(now)
        };
        let id = i
            .verifier()
            .verify_for(&i.mint_with(&bare).unwrap(), now, &[&bare.audience])
            .unwrap();
        assert!(id.scopes.is_empty() && id.patient.is_none());
        // The management audience works through mint_with as through mint.
        let mgmt = TokenRequest {
            audience: MANAGEMENT_AUDIENCE.into(),
            ..bare
        };
        assert!(i
            .verifier()
            .verify(&i.mint_with(&mgmt).unwrap(), now)
            .is_ok());
    }

    #[test]
    fn mint_with_refuses_what_the_verifier_would() {
        let dir = tempfile::tempdir().unwrap();
        let i = LocalIssuer::load_or_create(dir.path()).unwrap();
        let r = request(0);
        let refused = |req: TokenRequest| i.mint_with(&req).unwrap_err();
        assert!(matches!(
            refused(TokenRequest {
                subject: "".into(),
                ..r.clone()
            }),
            IdentityError::BadPrincipal
        ));
        assert!(matches!(
            refused(TokenRequest {
                lifetime_secs: 0,
                ..r.clone()
            }),
            IdentityError::BadLifetime
        ));
        for aud in ["", "https://x y", "https://\u{e9}"] {
            assert!(matches!(
                refused(TokenRequest {
                    audience: aud.into(),
                    ..r.clone()
                }),
                IdentityError::BadAudience
            ));
        }
        for scope in ["", "patient/*.rs user/*.rs", "a\"b", "patient/\u{e9}"] {
            assert!(matches!(
                refused(TokenRequest {
                    scopes: vec![scope.into()],
                    ..r.clone()
                }),
                IdentityError::BadScope(_)
            ));
        }
        assert!(matches!(
            refused(TokenRequest {
                scopes: (0..=claims::MAX_SCOPES).map(|n| format!("s{n}")).collect(),
                ..r.clone()
            }),
            IdentityError::BadScope(_)
        ));
        assert!(matches!(
            refused(TokenRequest {
                patient: Some("Patient/1".into()),
                ..r.clone()
            }),
            IdentityError::BadPatient
        ));
        assert!(matches!(
            refused(TokenRequest {
                fhir_user: Some("Practitioner 1".into()),
                ..r.clone()
            }),
            IdentityError::BadFhirUser
        ));
        assert!(matches!(
            refused(TokenRequest {
                client_id: Some("\u{7}".into()),
                ..r.clone()
            }),
            IdentityError::BadClientId
        ));
        // 200 long scopes fit the scope rules but not the token size.
        assert!(matches!(
            refused(TokenRequest {
                scopes: (0..200)
                    .map(|n| format!("patient/Observation.rs?code=http://loinc.org|{n}"))
                    .collect(),
                ..r
            }),
            IdentityError::TooLarge
        ));
    }

    #[test]
    fn jwks_publishes_the_signing_key() {
        let dir = tempfile::tempdir().unwrap();
        let i = LocalIssuer::load_or_create(dir.path()).unwrap();
        let (keys, skipped) = crate::jwk::parse_jwks(&i.jwks()).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(keys, i.trusted().keys);
    }

    #[test]
    fn bad_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let i = LocalIssuer::load_or_create(dir.path()).unwrap();
        assert!(matches!(
            i.mint("", 0, 60),
            Err(IdentityError::BadPrincipal)
        ));
        assert!(matches!(i.mint("a", 0, 0), Err(IdentityError::BadLifetime)));
        assert!(matches!(
            i.mint("a", 0, MAX_LIFETIME_SECS + 1),
            Err(IdentityError::BadLifetime)
        ));
        std::fs::write(LocalIssuer::key_path(dir.path()), "not a key").unwrap();
        assert!(matches!(
            LocalIssuer::load(dir.path()),
            Err(IdentityError::BadKey(_))
        ));
    }
}
