//! TLS to the database, as libpq's `sslmode` says it (PostgreSQL docs, libpq-ssl.html):
//!
//! | `sslmode` | encrypted | certificate checked |
//! | --- | --- | --- |
//! | `disable` | no | — |
//! | `prefer` (the default) | if the server offers it | no |
//! | `require` | yes | no (with `sslrootcert`: as `verify-ca`, as libpq does) |
//! | `verify-ca` | yes | chain to a trusted root |
//! | `verify-full` | yes | chain, and the host name the URL gives |
//!
//! `sslrootcert` names a PEM file of trusted roots; without it `verify-ca` and `verify-full`
//! trust the system's roots. tokio-postgres knows only `disable`, `prefer` and `require`, so
//! both parameters are taken out of the address here and the rest is left to it. The TLS is
//! rustls (ring), through `tokio-postgres-rustls`.

use std::sync::Arc;

use fhir_store::{Result, StoreError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_postgres::config::SslMode;

/// The `sslmode` of an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// An address with its TLS settings taken out.
#[derive(Debug)]
pub(crate) struct Settings {
    /// The address as tokio-postgres reads it.
    pub(crate) address: String,
    pub(crate) mode: Mode,
    pub(crate) root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of a URL's query or a key=value address.
pub(crate) fn settings(url: &str) -> Result<Settings> {
    let mut mode = None;
    let mut root_cert = None;
    let mut take = |key: &str, value: &str| -> Result<bool> {
        match key {
            "sslmode" => {
                mode = Some(match value {
                    "disable" => Mode::Disable,
                    "prefer" | "allow" => Mode::Prefer,
                    "require" => Mode::Require,
                    "verify-ca" => Mode::VerifyCa,
                    "verify-full" => Mode::VerifyFull,
                    other => {
                        return Err(StoreError::Backend(format!(
                            "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
                        )))
                    }
                });
                Ok(true)
            }
            "sslrootcert" => {
                root_cert = Some(value.to_owned());
                Ok(true)
            }
            _ => Ok(false),
        }
    };
    let address = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        match url.split_once('?') {
            None => url.to_owned(),
            Some((head, query)) => {
                let mut kept = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
                    if !take(k, &v)? {
                        kept.push(pair);
                    }
                }
                if kept.is_empty() {
                    head.to_owned()
                } else {
                    format!("{head}?{}", kept.join("&"))
                }
            }
        }
    } else {
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            let (k, v) = word.split_once('=').unwrap_or((word, ""));
            if !take(k, v)? {
                kept.push(word);
            }
        }
        kept.join(" ")
    };
    Ok(Settings {
        address,
        mode: mode.unwrap_or(Mode::Prefer),
        root_cert,
    })
}

impl Settings {
    /// tokio-postgres's own mode for these settings.
    pub(crate) fn ssl_mode(&self) -> SslMode {
        match self.mode {
            Mode::Disable => SslMode::Disable,
            Mode::Prefer => SslMode::Prefer,
            Mode::Require | Mode::VerifyCa | Mode::VerifyFull => SslMode::Require,
        }
    }

    /// The rustls connector for these settings.
    pub(crate) fn connector(&self) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::Backend(format!("TLS settings: {e}")))?;
        let verify = match self.mode {
            Mode::Disable | Mode::Prefer => None,
            Mode::Require if self.root_cert.is_none() => None,
            Mode::Require | Mode::VerifyCa => Some(false),
            Mode::VerifyFull => Some(true),
        };
        let config = match verify {
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
                .with_no_client_auth(),
            Some(names) => {
                let roots = Arc::new(self.roots()?);
                let webpki =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| StoreError::Backend(format!("TLS roots: {e}")))?;
                if names {
                    builder.with_webpki_verifier(webpki).with_no_client_auth()
                } else {
                    builder
                        .dangerous()
                        .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                        .with_no_client_auth()
                }
            }
        };
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    fn roots(&self) -> Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                let pem = std::fs::read(path)
                    .map_err(|e| StoreError::Backend(format!("sslrootcert {path}: {e}")))?;
                let mut added = 0;
                for cert in rustls_pemfile_certs(&pem) {
                    roots
                        .add(cert)
                        .map_err(|e| StoreError::Backend(format!("sslrootcert {path}: {e}")))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(StoreError::Backend(format!(
                        "sslrootcert {path}: no PEM certificate in it"
                    )));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(StoreError::Backend(
                        "no system root certificates to verify the database with: give sslrootcert"
                            .into(),
                    ));
                }
            }
        }
        Ok(roots)
    }
}

/// The certificates of a PEM file.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(|c| c.ok())
        .collect()
}

/// `sslmode=require` without roots: encrypted, the certificate not checked (what libpq does;
/// it protects against a passive listener only).
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted root; the name is not compared.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls_parameters_leave_the_address() {
        let s = settings("postgres://u@h:5432/db?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x")
            .unwrap();
        assert_eq!(s.address, "postgres://u@h:5432/db?application_name=x");
        assert_eq!(s.mode, Mode::VerifyFull);
        assert_eq!(s.root_cert.as_deref(), Some("/etc/ca.pem"));
        let s = settings("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(
            (s.address.as_str(), s.mode),
            ("postgres://u@h/db", Mode::Require)
        );
        let s = settings("host=h user=u sslmode=disable dbname=d").unwrap();
        assert_eq!(
            (s.address.as_str(), s.mode),
            ("host=h user=u dbname=d", Mode::Disable)
        );
        assert_eq!(settings("postgres://h/db").unwrap().mode, Mode::Prefer);
        assert!(settings("postgres://h/db?sslmode=sometimes").is_err());
    }
}
