//! fhirlink's own token issuer: the signing key kept in the data folder, the tokens
//! `fhirlink token` mints with it, and the [`Verifier`] the management listener checks them
//! with.
//!
//! The key is made on first start (`<data>/identity/signing-key.pem`, PKCS#8, mode 0600)
//! and read on every later one; whoever can read it can act as any principal, exactly as with
//! a cloud provider's token service. Tokens carry `iss` [`LOCAL_ISSUER`] and the audience
//! Azure's management SDKs ask for, so that a credential class that hands out a fhirlink
//! token is all an SDK needs.

use std::path::{Path, PathBuf};

use crate::files;
use crate::jwt::{Claims, SigningKey, TrustedIssuer, Verifier};

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

    /// This issuer as one a [`Verifier`] trusts.
    pub fn trusted(&self) -> TrustedIssuer {
        TrustedIssuer {
            issuer: LOCAL_ISSUER.to_string(),
            keys: vec![self.key.verifying_key()],
            audiences: ACCEPTED_AUDIENCES.iter().map(|a| a.to_string()).collect(),
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
