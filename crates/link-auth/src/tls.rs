//! TLS material of the management listener: a local certificate authority generated into the
//! data folder on first start, a server certificate it signs at every start for the names
//! and addresses the listener answers on, or the operator's own certificate and key; and the
//! client side that trusts such a CA (for the CLI).
//!
//! The CA (`<data>/tls/ca.pem`, key `ca-key.pem` mode 0600) lives as long as the data folder,
//! so clients trust it once. The server certificate is made anew on each start with a fresh
//! key and kept in memory only: it always names the current listen address, and no server
//! key sits on disk. One crypto provider, *ring*, serves TLS, certificates and tokens alike.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SecureRandom as _;
use rustls::client::danger::ServerCertVerifier as _;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use time::{Duration, OffsetDateTime};

use crate::files;

/// The common name of the CA a data folder makes; the issuer of every certificate it signs is
/// rebuilt from it, so it must not change (a new name needs a new CA).
const CA_COMMON_NAME: &str = "fhirlink local CA";
const CA_LIFETIME_DAYS: i64 = 3650;
/// Under the 398 days that browsers and Apple's clients accept for a server certificate.
const SERVER_LIFETIME_DAYS: i64 = 397;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no PEM certificate in it")]
    NoCertificate(PathBuf),
    #[error("{0}: no PEM private key in it (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error(
        "the CA in {0} did not verify the certificate made with it; move the folder's tls/ \
         away to make a new CA"
    )]
    ChainMismatch(PathBuf),
    #[error("{0}")]
    Other(String),
}

/// The crypto provider fhirlink uses everywhere.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The provider fhirlink's listeners use: ring's suites with AES-128-GCM first. Both AES-GCM
/// sizes are strong; the 128-bit key runs 10 AES rounds to the 256-bit key's 14, which is a
/// measurable part of a small keep-alive request (BENCHMARKS.md). Clients that offer only
/// ChaCha20 or AES-256 still get them.
pub fn server_provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| match s.suite() {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 3,
        _ => 4,
    });
    Arc::new(p)
}

/// A listener's rustls configuration: the server's suite order wins (AES-128-GCM first, see
/// [`server_provider`]), and HTTP/2 or HTTP/1.1 by ALPN.
pub(crate) fn for_listener(mut config: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    config.ignore_client_order = true;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A server certificate chain and its key, as the listener serves them.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// The CA file clients should trust, when fhirlink made the certificate.
    pub ca_path: Option<PathBuf>,
}

impl ServerIdentity {
    /// The operator's own certificate chain and private key (PEM files).
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerIdentity, TlsError> {
        let chain = CertificateDer::pem_file_iter(cert)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| pem_error(cert, e, TlsError::NoCertificate))?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate(cert.to_path_buf()));
        }
        let key =
            PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e, TlsError::NoKey))?;
        Ok(ServerIdentity {
            chain,
            key,
            ca_path: None,
        })
    }

    /// A certificate signed by the data folder's CA (made first when missing) for `localhost`,
    /// the loopback addresses, the listener's address `listen_ip` (unless unspecified) and
    /// any `extra_names` (DNS names or IP addresses).
    pub fn generated(
        data: &Path,
        listen_ip: IpAddr,
        extra_names: &[String],
    ) -> Result<ServerIdentity, TlsError> {
        let ca = LocalCa::load_or_create(data)?;
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if !listen_ip.is_unspecified() {
            names.push(listen_ip.to_string());
        }
        names.extend(extra_names.iter().cloned());
        let identity = ca.issue("fhirlink management API", &names)?;
        // The issuer is rebuilt from fixed parameters, not parsed from ca.pem: prove that the
        // stored CA really verifies what it signed before serving it.
        let roots = root_store(&ca.cert_path)?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Other(e.to_string()))?;
        verifier
            .verify_server_cert(
                &identity.chain[0],
                &[],
                &ServerName::try_from("localhost").map_err(|e| TlsError::Other(e.to_string()))?,
                &[],
                UnixTime::now(),
            )
            .map_err(|_| TlsError::ChainMismatch(ca.cert_path.clone()))?;
        Ok(identity)
    }

    /// The rustls configuration that serves this identity (HTTP/2 and HTTP/1.1 by ALPN).
    pub fn server_config(self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(server_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain, self.key)?;
        Ok(for_listener(config))
    }
}

/// The data folder's certificate authority.
pub(crate) struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    pub(crate) cert_path: PathBuf,
}

impl LocalCa {
    /// A server certificate with a fresh key for `names` (DNS names or IP addresses,
    /// duplicates dropped), signed by this CA.
    pub(crate) fn issue(
        &self,
        common_name: &str,
        names: &[String],
    ) -> Result<ServerIdentity, TlsError> {
        let mut sans: Vec<SanType> = Vec::new();
        for name in names {
            let san = match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => {
                    let bad = || {
                        TlsError::Other(format!("'{name}' is neither a DNS name nor an IP address"))
                    };
                    rustls::pki_types::DnsName::try_from(name.as_str()).map_err(|_| bad())?;
                    SanType::DnsName(name.as_str().try_into().map_err(|_| bad())?)
                }
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.subject_alt_names = sans;
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(SERVER_LIFETIME_DAYS);
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(ServerIdentity {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::try_from(key.serialize_der())
                .map_err(|e| TlsError::Other(e.to_string()))?,
            ca_path: Some(self.cert_path.clone()),
        })
    }

    pub(crate) fn load_or_create(data: &Path) -> Result<LocalCa, TlsError> {
        let dir = data.join("tls");
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Io { path, source }
        };
        if !key_path.exists() {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            // A certificate left from an older key would not match the new one.
            let _ = std::fs::remove_file(&cert_path);
            files::write_new_private(&key_path, key.serialize_pem().as_bytes())
                .map_err(io(&key_path))?;
        }
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        files::warn_if_readable_by_others(&key_path);
        let key = KeyPair::from_pem(&key_pem).map_err(|_| TlsError::NoKey(key_path.clone()))?;
        if !cert_path.exists() {
            let mut params = ca_params();
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::hours(1);
            params.not_after = now + Duration::days(CA_LIFETIME_DAYS);
            params.serial_number = Some(random_serial()?);
            let cert = params.self_signed(&key)?;
            files::write_new(&cert_path, cert.pem().as_bytes(), 0o644).map_err(io(&cert_path))?;
        }
        Ok(LocalCa {
            issuer: Issuer::new(ca_params(), key),
            cert_path,
        })
    }
}

/// The parts of the CA certificate that its issuer is rebuilt from.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A random positive 128-bit serial number (RFC 5280 §4.1.2.2).
fn random_serial() -> Result<SerialNumber, TlsError> {
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| TlsError::Other("the system random number generator failed".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// A PEM reading error: the IO error as it is, anything else as `not_found(path)`.
fn pem_error(
    path: &Path,
    e: rustls::pki_types::pem::Error,
    not_found: fn(PathBuf) -> TlsError,
) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Io {
            path: path.to_path_buf(),
            source,
        },
        _ => not_found(path.to_path_buf()),
    }
}

/// The certificates of a PEM file as a root store.
fn root_store(ca: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(ca, e, TlsError::NoCertificate))?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(TlsError::NoCertificate(ca.to_path_buf()));
    }
    Ok(roots)
}

/// A client configuration that trusts exactly the CA certificates in the PEM file `ca`.
pub fn client_config(ca: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let roots = root_store(ca)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_prefer_aes_128_gcm_and_keep_every_default_suite() {
        let ours: Vec<_> = server_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        let mut defaults: Vec<_> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        assert_eq!(ours[0], rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        let mut sorted = ours.clone();
        sorted.sort_by_key(|s| u16::from(*s));
        defaults.sort_by_key(|s| u16::from(*s));
        assert_eq!(sorted, defaults, "the same suites, only reordered");
        let dir = tempfile::tempdir().unwrap();
        let id = ServerIdentity::generated(dir.path(), "127.3.0.1".parse().unwrap(), &[]).unwrap();
        assert!(id.server_config().unwrap().ignore_client_order);
    }

    #[test]
    fn ca_is_made_once_and_server_certificate_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let a = ServerIdentity::generated(
            dir.path(),
            "127.3.0.1".parse().unwrap(),
            &["fhir.example".into()],
        )
        .unwrap();
        let ca1 = std::fs::read(dir.path().join("tls/ca.pem")).unwrap();
        let b = ServerIdentity::generated(dir.path(), "0.0.0.0".parse().unwrap(), &[]).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("tls/ca.pem")).unwrap(),
            ca1,
            "CA kept"
        );
        assert_ne!(a.chain[0], b.chain[0], "server certificate made anew");
        let roots = Arc::new(root_store(&dir.path().join("tls/ca.pem")).unwrap());
        let v = rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
            .build()
            .unwrap();
        for name in ["localhost", "127.0.0.1", "::1", "127.3.0.1", "fhir.example"] {
            let sn = ServerName::try_from(name).unwrap();
            assert!(
                v.verify_server_cert(&a.chain[0], &[], &sn, &[], UnixTime::now())
                    .is_ok(),
                "{name}"
            );
        }
        let other = ServerName::try_from("127.3.0.2").unwrap();
        assert!(v
            .verify_server_cert(&a.chain[0], &[], &other, &[], UnixTime::now())
            .is_err());
        assert!(a.server_config().is_ok());
        assert!(client_config(&dir.path().join("tls/ca.pem")).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("tls/ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
    }

    #[test]
    fn own_files() {
        let dir = tempfile::tempdir().unwrap();
        let missing =
            ServerIdentity::from_files(&dir.path().join("c.pem"), &dir.path().join("k.pem"));
        assert!(matches!(missing, Err(TlsError::Io { .. })));
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        std::fs::write(dir.path().join("c.pem"), ck.cert.pem()).unwrap();
        std::fs::write(dir.path().join("k.pem"), ck.signing_key.serialize_pem()).unwrap();
        let id = ServerIdentity::from_files(&dir.path().join("c.pem"), &dir.path().join("k.pem"))
            .unwrap();
        assert!(id.ca_path.is_none());
        assert!(id.server_config().is_ok());
        std::fs::write(dir.path().join("k.pem"), "nothing").unwrap();
        assert!(matches!(
            ServerIdentity::from_files(&dir.path().join("c.pem"), &dir.path().join("k.pem")),
            Err(TlsError::NoKey(_))
        ));
        assert!(matches!(
            ServerIdentity::from_files(&dir.path().join("k.pem"), &dir.path().join("k.pem")),
            Err(TlsError::NoCertificate(_))
        ));
        assert!(matches!(
            ServerIdentity::generated(
                dir.path(),
                "127.0.0.1".parse().unwrap(),
                &["bad name!".into()]
            ),
            Err(TlsError::Other(_))
        ));
    }
}
