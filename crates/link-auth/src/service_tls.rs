//! TLS for the data plane's listeners (public and private endpoints): a certificate per FHIR
//! service, naming `<service>.<suffix>` and `<service>.privatelink.<suffix>`, chosen by the
//! client's SNI; and a default certificate, for clients that send no SNI or an unknown
//! name, that names `localhost`, the loopback addresses, the public listener's address and
//! the endpoints' addresses — so that `curl --cacert <data>/tls/ca.pem
//! https://localhost:8080/metadata` just works. All are signed by the data folder's CA and
//! kept in memory; the set is updated as services and endpoints come and go. An operator's
//! own certificate replaces all of them.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::tls::{provider, server_provider, LocalCa, ServerIdentity, TlsError};

/// The names one certificate must carry.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Name {
    Dns(String),
    Ip(IpAddr),
}

/// What the data plane's certificates must cover right now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataPlaneNames {
    /// FHIR service names (`default`, `myfhir`, …).
    pub services: BTreeSet<String>,
    /// Addresses clients may connect to without SNI: the public listener's and the
    /// endpoints'.
    pub addresses: BTreeSet<IpAddr>,
}

/// The certificates of the data plane, resolved by SNI.
pub struct DataPlaneCertificates {
    source: Source,
    dns_suffix: String,
    by_name: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    default: ArcSwap<CertifiedKey>,
    /// What the current certificates were made for, to make only what changed.
    made: Mutex<Made>,
}

#[derive(Default)]
struct Made {
    services: HashMap<String, Arc<CertifiedKey>>,
    default_names: BTreeSet<Name>,
}

enum Source {
    Ca(Box<LocalCa>),
    /// The operator's certificate, for every name.
    Fixed,
}

impl fmt::Debug for DataPlaneCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataPlaneCertificates")
            .field("dns_suffix", &self.dns_suffix)
            .finish_non_exhaustive()
    }
}

fn certified(
    identity: ServerIdentity,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let key = provider
        .key_provider
        .load_private_key(identity.key)
        .map_err(TlsError::Rustls)?;
    Ok(CertifiedKey::new(identity.chain, key))
}

impl DataPlaneCertificates {
    /// Certificates signed by the CA of `data` (made first when missing).
    pub fn generated(
        data: &Path,
        dns_suffix: &str,
    ) -> Result<Arc<DataPlaneCertificates>, TlsError> {
        let ca = LocalCa::load_or_create(data)?;
        let default_names = default_names(&DataPlaneNames::default(), dns_suffix);
        let default = certified(
            ca.issue("fhirlink data plane", &sans(&default_names))?,
            &provider(),
        )?;
        Ok(Arc::new(DataPlaneCertificates {
            source: Source::Ca(Box::new(ca)),
            dns_suffix: dns_suffix.trim_matches('.').to_ascii_lowercase(),
            by_name: ArcSwap::from_pointee(HashMap::new()),
            default: ArcSwap::from_pointee(default),
            made: Mutex::new(Made {
                services: HashMap::new(),
                default_names,
            }),
        }))
    }

    /// The operator's own certificate chain and key (PEM files), for every name.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        dns_suffix: &str,
    ) -> Result<Arc<DataPlaneCertificates>, TlsError> {
        let identity = ServerIdentity::from_files(cert, key)?;
        let default = certified(identity, &provider())?;
        Ok(Arc::new(DataPlaneCertificates {
            source: Source::Fixed,
            dns_suffix: dns_suffix.trim_matches('.').to_ascii_lowercase(),
            by_name: ArcSwap::from_pointee(HashMap::new()),
            default: ArcSwap::from_pointee(default),
            made: Mutex::new(Made::default()),
        }))
    }

    /// Makes certificates for new services and addresses (and drops those of services that
    /// are gone). Existing certificates are kept.
    pub fn update(&self, names: &DataPlaneNames) -> Result<(), TlsError> {
        let Source::Ca(ca) = &self.source else {
            return Ok(());
        };
        let Ok(mut made) = self.made.lock() else {
            return Ok(());
        };
        let Made {
            services,
            default_names: default_made,
        } = &mut *made;
        let mut changed = false;
        services.retain(|s, _| {
            let keep = names.services.contains(s);
            changed |= !keep;
            keep
        });
        for s in &names.services {
            if services.contains_key(s) {
                continue;
            }
            let wanted: BTreeSet<Name> = [
                Name::Dns(format!("{s}.{}", self.dns_suffix)),
                Name::Dns(format!("{s}.privatelink.{}", self.dns_suffix)),
            ]
            .into_iter()
            .collect();
            let key = certified(
                ca.issue(&format!("{s}.{}", self.dns_suffix), &sans(&wanted))?,
                &provider(),
            )?;
            services.insert(s.clone(), Arc::new(key));
            changed = true;
        }
        let wanted_default = default_names(names, &self.dns_suffix);
        if wanted_default != *default_made {
            let key = certified(
                ca.issue("fhirlink data plane", &sans(&wanted_default))?,
                &provider(),
            )?;
            self.default.store(Arc::new(key));
            *default_made = wanted_default;
        }
        if changed {
            let mut by_name = HashMap::new();
            for (s, key) in services.iter() {
                by_name.insert(format!("{s}.{}", self.dns_suffix), key.clone());
                by_name.insert(format!("{s}.privatelink.{}", self.dns_suffix), key.clone());
            }
            self.by_name.store(Arc::new(by_name));
        }
        Ok(())
    }

    /// The rustls configuration that serves these certificates (HTTP/2 and HTTP/1.1).
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let config = rustls::ServerConfig::builder_with_provider(server_provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        Ok(crate::tls::for_listener(config))
    }
}

fn default_names(names: &DataPlaneNames, suffix: &str) -> BTreeSet<Name> {
    let suffix = suffix.trim_matches('.').to_ascii_lowercase();
    let mut out: BTreeSet<Name> = [
        Name::Dns("localhost".into()),
        Name::Ip(IpAddr::from([127, 0, 0, 1])),
        Name::Ip(IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1])),
        Name::Dns(format!("default.{suffix}")),
    ]
    .into_iter()
    .collect();
    out.extend(
        names
            .addresses
            .iter()
            .filter(|a| !a.is_unspecified())
            .map(|a| Name::Ip(*a)),
    );
    out
}

fn sans(names: &BTreeSet<Name>) -> Vec<String> {
    names
        .iter()
        .map(|n| match n {
            Name::Dns(d) => d.clone(),
            Name::Ip(ip) => ip.to_string(),
        })
        .collect()
}

#[derive(Debug)]
struct Resolver(Arc<DataPlaneCertificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(sni) = hello.server_name() {
            if let Some(key) = self.0.by_name.load().get(&sni.to_ascii_lowercase()) {
                return Some(key.clone());
            }
        }
        Some(self.0.default.load_full())
    }
}
