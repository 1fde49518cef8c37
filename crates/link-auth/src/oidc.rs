//! Issuers other than fhirlink's own, found through OpenID Connect Discovery: an [`OidcIssuer`]
//! for an authority URL reads `<authority>/.well-known/openid-configuration` (OIDC Discovery
//! §4), takes its `issuer` and `jwks_uri`, fetches the JWK Set and caches it; an [`Authority`]
//! is what a FHIR service's `authenticationConfiguration.authority` resolves to — the local
//! issuer's keys in memory, or such an OIDC issuer — with one async `verify_for`.
//!
//! Keys rotate (OIDC Core §10.1.1): an issuer publishes the new key before signing with it. So a
//! token naming a `kid` we do not hold makes us fetch the JWKS again and retry once. Such
//! refreshes are rate-limited ([`OidcConfig::min_refresh_interval`]) and single-flight, so a
//! flood of tokens with made-up `kid`s costs the issuer at most one fetch per interval. Cached
//! keys are also refreshed after [`OidcConfig::refresh_after`], and used past that while the
//! issuer cannot be reached, but never beyond [`OidcConfig::max_key_age`]. When there are no
//! usable keys, every token is refused with [`TokenError::IssuerUnreachable`]: a failed fetch
//! never lets a token through.
//!
//! Verification itself is the pure core in [`crate::jwt`]; this module only decides which keys
//! to hand it and when to fetch new ones.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fetch::{self, printable, Limits, Url};
use crate::jwk;
use crate::jwt::{self, Identity, TokenError, TrustedIssuer, Verifier};

/// Why an OIDC issuer's keys could not be had. Messages name the issuer's URLs and are meant
/// for operators' logs, not for the caller whose token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("{url}: not a usable URL: {reason}")]
    BadUrl { url: String, reason: &'static str },
    #[error("{0}: only https:// is allowed (http:// only to a loopback host)")]
    Insecure(String),
    #[error("{url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url}: no complete answer within {millis} ms")]
    Timeout { url: String, millis: u128 },
    #[error("{url}: answered HTTP {status} instead of 200")]
    Status { url: String, status: u16 },
    #[error("{url}: the document is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: {reason}")]
    BadDocument { url: String, reason: String },
    /// OIDC Discovery §4.3: the `issuer` of the document must be the authority it was fetched
    /// for, or an impostor's discovery document could vouch for its own keys.
    #[error("the discovery document names issuer {found:?}, not the authority {expected:?}")]
    IssuerMismatch { expected: String, found: String },
    #[error("no trusted root certificates for https:// issuers: {0}")]
    NoRoots(String),
}

/// How an [`OidcIssuer`] fetches and caches. The defaults suit a production issuer; tests
/// shorten the intervals.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Deadline for one fetch, connect to last byte.
    pub fetch_timeout: Duration,
    /// The largest discovery document or JWKS read.
    pub max_document_bytes: usize,
    /// At most one refresh (discovery and JWKS) per this interval, however many tokens name
    /// unknown keys.
    pub min_refresh_interval: Duration,
    /// Cached keys older than this are refreshed when next used.
    pub refresh_after: Duration,
    /// Keys not refreshed successfully for this long are no longer used.
    pub max_key_age: Duration,
    /// The TLS client for `https://` issuers; `None` trusts the operating system's roots.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Default for OidcConfig {
    fn default() -> OidcConfig {
        OidcConfig {
            fetch_timeout: Duration::from_secs(10),
            max_document_bytes: 512 * 1024,
            min_refresh_interval: Duration::from_secs(30),
            refresh_after: Duration::from_secs(3600),
            max_key_age: Duration::from_secs(24 * 3600),
            tls: None,
        }
    }
}

/// An OIDC issuer's keys, fetched when first needed and cached.
pub struct OidcIssuer {
    /// The configured authority without a trailing `/`.
    authority: String,
    discovery: Url,
    config: OidcConfig,
    /// The keys in use; read on every verification, so not behind the async lock.
    keys: RwLock<Option<Arc<KeySet>>>,
    /// Held while fetching: one refresh at a time, and its bookkeeping.
    refresh: tokio::sync::Mutex<RefreshState>,
    jwks_fetches: std::sync::atomic::AtomicU64,
}

struct KeySet {
    /// One issuer: the discovered `issuer` with the JWKS's keys, no audiences of its own
    /// (every call names them).
    issuers: Vec<TrustedIssuer>,
    /// What the discovery document says about getting tokens, for clients.
    metadata: Arc<IssuerMetadata>,
    fetched_at: Instant,
}

/// What an issuer's discovery document tells a client about getting tokens (OIDC Discovery
/// §3, RFC 8414 §2), as far as fhirlink passes it on in a service's
/// `/.well-known/smart-configuration`. Only well-formed values are kept: URLs the fetch rules
/// take (https, or http to a loopback host; at most 2048 characters), and short lists of
/// short names, so that a document cannot make fhirlink serve anything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerMetadata {
    /// The discovered `issuer`: the `iss` of the issuer's tokens.
    pub issuer: String,
    pub jwks_uri: String,
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub grant_types_supported: Option<Vec<String>>,
    pub code_challenge_methods_supported: Option<Vec<String>>,
}

/// The most names passed on from one of a discovery document's lists, and the longest.
const MAX_NAMES: usize = 16;
const MAX_NAME_LEN: usize = 64;

impl IssuerMetadata {
    fn read(issuer: String, jwks_uri: &Url, doc: &Value) -> IssuerMetadata {
        let endpoint = |name: &str| {
            doc.get(name)
                .and_then(Value::as_str)
                .and_then(|u| Url::parse(u).ok())
                .map(|u| u.as_str().to_owned())
        };
        let names = |name: &str| {
            let list = doc.get(name)?.as_array()?;
            let names: Vec<String> = list
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| {
                    !n.is_empty()
                        && n.len() <= MAX_NAME_LEN
                        && n.bytes().all(|b| b.is_ascii_graphic())
                })
                .take(MAX_NAMES)
                .map(str::to_owned)
                .collect();
            (!names.is_empty()).then_some(names)
        };
        IssuerMetadata {
            issuer,
            jwks_uri: jwks_uri.as_str().to_owned(),
            authorization_endpoint: endpoint("authorization_endpoint"),
            token_endpoint: endpoint("token_endpoint"),
            grant_types_supported: names("grant_types_supported"),
            code_challenge_methods_supported: names("code_challenge_methods_supported"),
        }
    }
}

#[derive(Default)]
struct RefreshState {
    /// From the discovery document; forgotten after a failed refresh, so the next one
    /// discovers again.
    jwks_uri: Option<Url>,
    last_attempt: Option<Instant>,
    last_error: Option<OidcError>,
}

impl std::fmt::Debug for OidcIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcIssuer")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

impl OidcIssuer {
    /// An issuer for `authority` (e.g. `https://login.microsoftonline.com/<tenant>/v2.0`).
    /// Checks the URL only; nothing is fetched until a token needs keys or [`refresh`] is
    /// called, so a server starts while its identity provider is down.
    ///
    /// [`refresh`]: OidcIssuer::refresh
    pub fn new(authority: &str, config: OidcConfig) -> Result<OidcIssuer, OidcError> {
        let trimmed = authority.trim_end_matches('/');
        // OIDC Discovery §4: the issuer, its trailing slash removed, then the well-known path.
        let discovery = Url::parse(&format!("{trimmed}/.well-known/openid-configuration"))?;
        // OIDC Discovery §3 and RFC 8414 §2: an issuer has no query component.
        if discovery.has_query() {
            return Err(OidcError::BadUrl {
                url: printable(authority),
                reason: "an issuer has no query",
            });
        }
        Ok(OidcIssuer {
            authority: trimmed.to_string(),
            discovery,
            config,
            keys: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            jwks_fetches: Default::default(),
        })
    }

    /// The authority, without a trailing `/`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// How many times the JWKS has been fetched (or tried), for metrics and tests.
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks_fetches.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Fetches discovery document and JWKS now, whatever the rate limit says, and returns
    /// how many usable keys there are. For start-up and operators, not for request paths.
    pub async fn refresh(&self) -> Result<usize, OidcError> {
        let mut state = self.refresh.lock().await;
        let keys = self.fetch(&mut state).await?;
        Ok(keys.issuers.iter().map(|i| i.keys.len()).sum())
    }

    /// What the issuer's discovery document says about getting tokens, fetching it (and the
    /// keys) when nothing is cached, under the same rate limit as the keys.
    pub async fn metadata(&self) -> Result<Arc<IssuerMetadata>, OidcError> {
        Ok(self.keys().await?.metadata.clone())
    }

    /// The metadata of the last good fetch, if there was one; never fetches.
    pub fn cached_metadata(&self) -> Option<Arc<IssuerMetadata>> {
        self.current().map(|k| k.metadata.clone())
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch) for one of `audiences`,
    /// fetching keys when needed. A token that cannot be parsed never causes a fetch.
    pub async fn verify_for(
        &self,
        token: &str,
        now: i64,
        audiences: &[&str],
    ) -> Result<Identity, TokenError> {
        let jws = jwt::parse(token)?;
        let keys = self.keys().await.map_err(TokenError::IssuerUnreachable)?;
        match jwt::verify_jws(&jws, &keys.issuers, Some(audiences), now) {
            Err(TokenError::UnknownKey) => match self.refresh_for_unknown_kid(&keys).await? {
                Some(fresh) => jwt::verify_jws(&jws, &fresh.issuers, Some(audiences), now),
                None => Err(TokenError::UnknownKey),
            },
            other => other,
        }
    }

    fn current(&self) -> Option<Arc<KeySet>> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Keys to verify with: the cached ones while fresh; otherwise a refresh when the rate
    /// limit allows, falling back to cached keys younger than `max_key_age` when it fails.
    async fn keys(&self) -> Result<Arc<KeySet>, OidcError> {
        let fresh = |k: &Arc<KeySet>| k.fetched_at.elapsed() < self.config.refresh_after;
        let cached = self.current();
        if let Some(k) = cached.clone().filter(fresh) {
            return Ok(k);
        }
        let usable = cached.filter(|k| k.fetched_at.elapsed() < self.config.max_key_age);
        let mut state = match (usable, self.refresh.try_lock()) {
            (_, Ok(state)) => state,
            // Another request is refreshing: keys still within max_key_age serve meanwhile, so
            // only that one request waits for the issuer.
            (Some(k), Err(_)) => return Ok(k),
            (None, Err(_)) => self.refresh.lock().await,
        };
        // Someone else may have refreshed while we waited for the lock.
        let cached = self.current();
        if let Some(k) = cached.clone().filter(fresh) {
            return Ok(k);
        }
        if self.may_refresh(&state) {
            match self.fetch(&mut state).await {
                Ok(k) => return Ok(k),
                Err(e) => {
                    tracing::warn!(authority = %self.authority, error = %e, "OIDC issuer refresh failed");
                }
            }
        }
        match cached {
            Some(k) if k.fetched_at.elapsed() < self.config.max_key_age => Ok(k),
            _ => Err(state
                .last_error
                .clone()
                .unwrap_or_else(|| OidcError::Unreachable {
                    url: self.authority.clone(),
                    reason: "no keys fetched successfully recently".into(),
                })),
        }
    }

    /// After a token named a key not in `seen`: the keys someone else fetched meanwhile, or
    /// freshly fetched ones, or `None` when the rate limit says not yet (the token is then
    /// refused as signed by an unknown key).
    async fn refresh_for_unknown_kid(
        &self,
        seen: &Arc<KeySet>,
    ) -> Result<Option<Arc<KeySet>>, TokenError> {
        let mut state = self.refresh.lock().await;
        if let Some(current) = self.current() {
            if !Arc::ptr_eq(&current, seen) {
                return Ok(Some(current));
            }
        }
        if !self.may_refresh(&state) {
            return Ok(None);
        }
        self.fetch(&mut state)
            .await
            .map(Some)
            .map_err(TokenError::IssuerUnreachable)
    }

    fn may_refresh(&self, state: &RefreshState) -> bool {
        state
            .last_attempt
            .is_none_or(|t| t.elapsed() >= self.config.min_refresh_interval)
    }

    /// One refresh: discovery (unless its `jwks_uri` is known from a good refresh), then
    /// the JWKS; on success the new keys replace the cached ones.
    async fn fetch(&self, state: &mut RefreshState) -> Result<Arc<KeySet>, OidcError> {
        state.last_attempt = Some(Instant::now());
        match self.fetch_keys(state).await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Some(keys.clone());
                state.last_error = None;
                Ok(keys)
            }
            Err(e) => {
                state.jwks_uri = None;
                state.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<KeySet, OidcError> {
        let limits = Limits {
            timeout: self.config.fetch_timeout,
            max_bytes: self.config.max_document_bytes,
        };
        let tls = || self.tls_config();
        let known = state
            .jwks_uri
            .clone()
            .and_then(|uri| Some((uri, self.current()?.metadata.clone())));
        let (jwks_uri, metadata) = match known {
            Some(known) => known,
            None => {
                let doc = fetch::get_json(&self.discovery, &limits, tls).await?;
                let (issuer, jwks_uri) = self.read_discovery(&doc)?;
                let metadata = Arc::new(IssuerMetadata::read(issuer, &jwks_uri, &doc));
                (jwks_uri, metadata)
            }
        };
        self.jwks_fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let doc = fetch::get_json(&jwks_uri, &limits, tls).await?;
        let (keys, skipped) = jwk::parse_jwks(&doc).map_err(|e| OidcError::BadDocument {
            url: printable(jwks_uri.as_str()),
            reason: e.to_string(),
        })?;
        for why in &skipped {
            tracing::debug!(authority = %self.authority, reason = %why, "JWKS key skipped");
        }
        if keys.is_empty() {
            tracing::warn!(authority = %self.authority, skipped = skipped.len(), "the issuer's JWKS has no usable signing key");
        }
        state.jwks_uri = Some(jwks_uri);
        Ok(KeySet {
            issuers: vec![TrustedIssuer {
                issuer: metadata.issuer.clone(),
                keys,
                audiences: Vec::new(),
            }],
            metadata,
            fetched_at: Instant::now(),
        })
    }

    /// The `issuer` and `jwks_uri` of a discovery document (OIDC Discovery §3), the issuer
    /// checked against the authority (§4.3, with [`entra_v1_issuer`]'s one exception).
    fn read_discovery(&self, doc: &Value) -> Result<(String, Url), OidcError> {
        let bad = |reason: &str| OidcError::BadDocument {
            url: printable(self.discovery.as_str()),
            reason: reason.to_string(),
        };
        let issuer = doc
            .get("issuer")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no issuer"))?;
        if issuer.trim_end_matches('/') != self.authority {
            if entra_v1_issuer(&self.authority, issuer) {
                tracing::info!(authority = %self.authority, %issuer, "the authority is Microsoft Entra ID's v1 endpoint: its tokens name the tenant's sts issuer");
            } else {
                return Err(OidcError::IssuerMismatch {
                    expected: self.authority.clone(),
                    found: printable(issuer),
                });
            }
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no jwks_uri"))?;
        // The same rules as for the authority: https, or http to loopback only.
        Ok((issuer.to_string(), Url::parse(jwks_uri)?))
    }

    fn tls_config(&self) -> Result<Arc<rustls::ClientConfig>, OidcError> {
        match &self.config.tls {
            Some(config) => Ok(config.clone()),
            None => system_tls(),
        }
    }
}

/// The TLS client trusting the operating system's roots, made once per process (the trust
/// store is files on disk).
pub(crate) fn system_tls() -> Result<Arc<rustls::ClientConfig>, OidcError> {
    static SYSTEM: OnceLock<Result<Arc<rustls::ClientConfig>, OidcError>> = OnceLock::new();
    SYSTEM.get_or_init(system_roots_client).clone()
}

/// A TLS client for fetches (a SMART client's `jwks_url`) trusting the operating system's
/// root certificates and the PEM certificates of `extra` (an operator's private CA), HTTP/1.1
/// by ALPN.
pub fn tls_trusting(extra: &[u8]) -> Result<Arc<rustls::ClientConfig>, OidcError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    let mut added = 0;
    for cert in CertificateDer::pem_slice_iter(extra) {
        let cert = cert.map_err(|e| OidcError::NoRoots(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| OidcError::NoRoots(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(OidcError::NoRoots("no certificate in the PEM file".into()));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| OidcError::NoRoots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS client trusting the operating system's root certificates, HTTP/1.1 by ALPN.
fn system_roots_client() -> Result<Arc<rustls::ClientConfig>, OidcError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| e.to_string())
            .unwrap_or_else(|| "the system trust store is empty".into());
        return Err(OidcError::NoRoots(why));
    }
    let mut config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| OidcError::NoRoots(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Where a FHIR service's tokens come from: its `authenticationConfiguration.authority`.
#[derive(Debug, Clone)]
pub enum Authority {
    /// Issuers whose keys are in memory: fhirlink's own
    /// ([`LocalIssuer::verifier`](crate::identity::LocalIssuer::verifier)).
    Local(Arc<Verifier>),
    /// An OIDC issuer, its keys fetched and cached.
    Oidc(Arc<OidcIssuer>),
}

impl Authority {
    /// Verifies `token` at `now` for one of `audiences` (the service's
    /// `authenticationConfiguration.audience`, typically).
    pub async fn verify_for(
        &self,
        token: &str,
        now: i64,
        audiences: &[&str],
    ) -> Result<Identity, TokenError> {
        match self {
            Authority::Local(verifier) => verifier.verify_for(token, now, audiences),
            Authority::Oidc(issuer) => issuer.verify_for(token, now, audiences).await,
        }
    }
}

/// The hosts of Microsoft Entra ID's v1 issuers: the global cloud's, then the China cloud's.
const ENTRA_V1_ISSUERS: [&str; 2] = ["https://sts.windows.net/", "https://sts.chinacloudapi.cn/"];

/// Whether `issuer` is Microsoft Entra ID's v1 issuer of the tenant that `authority` names:
/// the one exception fhirlink makes to OIDC Discovery §4.3's rule that a discovery document's
/// issuer is the authority it was fetched from.
///
/// Azure API for FHIR services are configured with the authority
/// `https://login.microsoftonline.com/<tenant-id>` (as in the ARM examples), and Entra's
/// discovery document there names the issuer `https://sts.windows.net/<tenant-id>/`, which
/// its v1 access tokens (those of `az account get-access-token --resource <fhir-url>`) carry
/// as `iss`. Azure's FHIR server trusted that document's issuer, and teams moving over keep
/// their authority, so fhirlink takes it, but only in that exact shape: the authority's path
/// is one tenant id (a GUID) and the issuer is an Entra STS URL for that same tenant id. The
/// tenant matters because Entra signs every tenant's tokens with the same keys: only `iss`
/// tells one tenant's tokens from another's. `/common` and `/organizations` name no tenant
/// (their documents name `{tenantid}`), so they stay refused, as does an authority given by
/// domain name rather than id.
fn entra_v1_issuer(authority: &str, issuer: &str) -> bool {
    let Some((_, rest)) = authority.split_once("://") else {
        return false;
    };
    let Some((_, tenant)) = rest.trim_end_matches('/').split_once('/') else {
        return false;
    };
    let is_guid = tenant.len() == 36
        && tenant.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    is_guid
        && ENTRA_V1_ISSUERS.iter().any(|sts| {
            issuer
                .strip_prefix(sts)
                .map(|t| t.strip_suffix('/').unwrap_or(t))
                .is_some_and(|t| t.eq_ignore_ascii_case(tenant))
        })
}

/// The OIDC issuers in use, one [`OidcIssuer`] (and so one key cache) per authority however
/// many services name it.
#[derive(Debug, Default)]
pub struct OidcIssuers {
    config: OidcConfig,
    issuers: Mutex<HashMap<String, Arc<OidcIssuer>>>,
}

impl OidcIssuers {
    pub fn new(config: OidcConfig) -> OidcIssuers {
        OidcIssuers {
            config,
            issuers: Mutex::new(HashMap::new()),
        }
    }

    /// The issuer for `authority` (compared without a trailing `/`), made on first use.
    pub fn get(&self, authority: &str) -> Result<Arc<OidcIssuer>, OidcError> {
        let key = authority.trim_end_matches('/');
        let mut issuers = self.issuers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(issuer) = issuers.get(key) {
            return Ok(issuer.clone());
        }
        let issuer = Arc::new(OidcIssuer::new(authority, self.config.clone())?);
        issuers.insert(key.to_string(), issuer.clone());
        Ok(issuer)
    }

    /// Forgets authorities no service names any more.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        self.issuers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|authority, _| keep(authority));
    }
}

#[cfg(test)]
mod tests {
    use super::entra_v1_issuer;

    const TENANT: &str = "abfde7b2-df0f-47e6-aabf-2462b07508dc";

    #[test]
    fn entra_v1_issuer_is_taken_for_its_own_tenant_only() {
        let authority = format!("https://login.microsoftonline.com/{TENANT}");
        for issuer in [
            format!("https://sts.windows.net/{TENANT}/"),
            format!("https://sts.windows.net/{TENANT}"),
            format!("https://sts.chinacloudapi.cn/{TENANT}/"),
        ] {
            assert!(entra_v1_issuer(&authority, &issuer), "{issuer}");
            assert!(
                entra_v1_issuer(&format!("{authority}/"), &issuer),
                "{issuer}"
            );
        }
        let other = "0b7c3d2e-1f4a-4b5c-8d9e-0f1a2b3c4d5e";
        for (authority, issuer) in [
            // Another tenant's issuer.
            (
                authority.clone(),
                format!("https://sts.windows.net/{other}/"),
            ),
            // Not Entra's STS, or not only the tenant after it.
            (
                authority.clone(),
                format!("https://sts.example.net/{TENANT}/"),
            ),
            (
                authority.clone(),
                format!("http://sts.windows.net/{TENANT}/"),
            ),
            (
                authority.clone(),
                format!("https://sts.windows.net/{TENANT}/x"),
            ),
            (
                authority.clone(),
                format!("https://sts.windows.net/{TENANT}//"),
            ),
            (
                authority.clone(),
                format!("https://sts.windows.net.example/{TENANT}/"),
            ),
            // v2 authorities name their own issuer; they get no exception.
            (
                format!("{authority}/v2.0"),
                format!("https://sts.windows.net/{TENANT}/"),
            ),
            // No tenant: multi-tenant endpoints, domain names, no path.
            (
                "https://login.microsoftonline.com/common".into(),
                "https://sts.windows.net/{tenantid}/".into(),
            ),
            (
                "https://login.microsoftonline.com/common".into(),
                "https://sts.windows.net/common/".into(),
            ),
            (
                "https://login.microsoftonline.com/contoso.onmicrosoft.com".into(),
                "https://sts.windows.net/contoso.onmicrosoft.com/".into(),
            ),
            (
                "https://login.microsoftonline.com".into(),
                "https://sts.windows.net/".into(),
            ),
            (TENANT.into(), format!("https://sts.windows.net/{TENANT}/")),
        ] {
            assert!(
                !entra_v1_issuer(&authority, &issuer),
                "{authority} {issuer}"
            );
        }
    }
}
