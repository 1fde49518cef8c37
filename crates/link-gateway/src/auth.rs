//! Authentication on the data plane, after the network decision: the bearer token of every
//! admitted request is verified against the issuer and audience of the FHIR service it was
//! admitted to (`authenticationConfiguration.authority` and `.audience`; an empty authority
//! means fhirlink's own issuer, `fhirlink token`), and turned into the [`Access`] that
//! fhir-api enforces: the principal's FHIR data roles on the service (role assignments, or an
//! `accessPolicies` entry) and the token's SMART scopes and `patient` context.
//!
//! - [`DataAuth`]: the services' settings and grants of the current plan ([`DataAuth::apply`])
//!   and the tokens verified for each since.
//! - [`authenticate`]: the axum middleware in front of `fhir_api::router`.
//!
//! `/metadata` and `/.well-known/smart-configuration` need no token (the network rules still
//! apply: the gateway decided before this layer runs); for them this layer only hands
//! fhir-api the service's [`Security`], from which fhir-api builds both documents. A missing
//! or bad token gets 401 with a `WWW-Authenticate: Bearer` challenge (RFC 6750 §3) naming
//! where to get one; a good token that is not enough gets fhir-api's 403. [`AuthMode::None`]
//! (`--auth none`) replaces all of this with full access for everyone, for local experiments
//! only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fhir_api::access::{Rights, Scopes, Security};
use fhir_api::service::AdmittedService;
use fhir_api::{Access, FhirError};
use fhir_model::IssueCode;
use link_auth::identity::{unix_now, LOCAL_ISSUER};
use link_auth::jwt::{TokenError, Verifier};
use link_auth::oidc::{Authority, IssuerMetadata, OidcConfig, OidcIssuers};
use link_model::{DataRights, Plan};

use crate::Caller;

pub mod token;

pub use token::{JtiLedger, TokenIssuing};

/// Whether data-plane requests need a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request but the CapabilityStatement carries a verified bearer token.
    Tokens,
    /// No tokens: everyone may do everything. For local experiments only.
    None,
}

/// One service's authentication settings and grants, from the plan, and the tokens verified
/// for it since.
#[derive(Debug)]
struct ServiceAuth {
    /// The service's name, lower case (the key it is found by).
    name: String,
    authority: String,
    audience: String,
    data_access: BTreeMap<String, DataRights>,
    verified: TokenCache,
    /// For fhirlink's own issuer: the verifier of this service's tokens (the local key, under
    /// [`LOCAL_ISSUER`] and under the service's issuer URL, which its token endpoint's tokens
    /// carry), and the name its SMART configuration gives the issuer.
    local: Arc<Verifier>,
    issuer_name: String,
    /// The SMART Backend Services clients registered with the service, by client id.
    clients: HashMap<String, token::Client>,
}

impl ServiceAuth {
    /// The issuer clients are told to get tokens from: the authority, or fhirlink's own.
    fn issuer(&self) -> &str {
        if is_local(&self.authority) {
            &self.issuer_name
        } else {
            &self.authority
        }
    }
}

/// The data plane's authentication layer: build it with [`DataAuth::new`], give it each new
/// plan with [`DataAuth::apply`], and put [`authenticate`] in front of the FHIR router.
pub struct DataAuth {
    mode: AuthMode,
    local: Arc<Verifier>,
    oidc: OidcIssuers,
    services: ArcSwap<HashMap<String, Arc<ServiceAuth>, foldhash::fast::RandomState>>,
    /// `--auth none`: everyone may do everything.
    everyone: Arc<Access>,
    /// The open paths without a token: no rights at all.
    nobody: Arc<Access>,
    /// The services' token endpoints, when this data plane has them.
    issuing: Option<TokenIssuing>,
}

/// How long a verified token is taken again without checking its signature (never past its
/// own `exp`). Short, so that a key withdrawn from an issuer's JWKS stops being trusted soon.
const VERIFIED_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// Most tokens remembered per service; when full, the cache starts over.
const VERIFIED_MAX: usize = 10_000;

/// What a verified token lets its caller do on one service under one plan, and whom audit
/// records name, prepared once for every request the token comes on.
#[derive(Debug)]
struct Verified {
    access: Arc<Access>,
    caller: Arc<Caller>,
    /// Taken again until then (Unix seconds): [`VERIFIED_TTL`] after the check, never past
    /// the token's `exp`. On the wall clock, as `exp` is: a clock set back stretches the
    /// minute as it stretches the token's own life.
    until: i64,
    not_before: Option<i64>,
}

impl Verified {
    /// `now`: when the signature was checked. The principal is `oid`, else `sub`; its rights
    /// are those `grants` give it under that name, else under its subject.
    fn new(
        identity: link_auth::jwt::Identity,
        grants: &BTreeMap<String, DataRights>,
        now: i64,
    ) -> Verified {
        let principal = identity
            .object_id
            .clone()
            .unwrap_or_else(|| identity.subject.clone());
        let granted = grants
            .get(&principal)
            .or_else(|| grants.get(&identity.subject))
            .copied()
            .unwrap_or_default();
        Verified {
            access: Arc::new(Access {
                principal: principal.clone(),
                rights: rights(granted),
                scopes: Scopes::parse(identity.scopes.iter().map(String::as_str)),
                patient: identity.patient,
            }),
            caller: Arc::new(Caller {
                principal,
                client_id: identity.client_id,
            }),
            until: identity
                .expires
                .min(now.saturating_add(VERIFIED_TTL.as_secs() as i64)),
            not_before: identity.not_before,
        }
    }

    fn current(&self, now: i64) -> bool {
        now <= self.until && self.not_before.is_none_or(|nbf| nbf <= now)
    }
}

/// The tokens whose signature was verified for one service (its authority and audience, as
/// one plan set them: a new plan starts a new cache), by the token itself: a client sends the
/// same token on every request, and an ES256 or RS256 check costs tens of microseconds —
/// more than serving a read. What the principal may do is remembered with it: the cache
/// belongs to one plan's settings of the service, so those are the current grants.
///
/// A token is hundreds of bytes to a few kilobytes, looked up on every request: it is hashed
/// by its last [`TOKEN_TAIL`] bytes only (with foldhash rather than SipHash), and found by
/// comparing all of them. A JWT ends in its signature, which differs between any two tokens
/// and which no client can choose for a token that verifies; only such tokens are ever
/// inserted, so no client can crowd a bucket.
#[derive(Debug, Default)]
struct TokenCache {
    entries: std::sync::RwLock<hashbrown::HashTable<Remembered>>,
    hasher: foldhash::fast::RandomState,
}

/// A token's bytes and what its verification found.
type Remembered = (Box<[u8]>, Arc<Verified>);

/// How many of a token's last bytes its hash covers (a base64url ES256 signature is 86).
const TOKEN_TAIL: usize = 32;

impl TokenCache {
    fn hash(&self, token: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher
            .hash_one(&token[token.len().saturating_sub(TOKEN_TAIL)..])
    }

    fn get(&self, token: &[u8], now: i64) -> Option<Arc<Verified>> {
        let entries = self.entries.read().ok()?;
        entries
            .find(self.hash(token), |(k, _)| **k == *token)
            .map(|(_, v)| v)
            .filter(|v| v.current(now))
            .cloned()
    }

    fn put(&self, token: &[u8], verified: Arc<Verified>) {
        if let Ok(mut entries) = self.entries.write() {
            if entries.len() >= VERIFIED_MAX {
                entries.clear();
            }
            let entry = entries.entry(
                self.hash(token),
                |(k, _)| **k == *token,
                |(k, _)| self.hash(k),
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(mut e) => e.get_mut().1 = verified,
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert((token.into(), verified));
                }
            }
        }
    }
}

fn rights(r: DataRights) -> Rights {
    Rights {
        read: r.read,
        write: r.write,
        delete: r.delete,
        export: r.export,
        import: r.import,
    }
}

impl DataAuth {
    /// `oidc_refresh`: at most one fetch of an OIDC issuer's keys per this interval.
    pub fn new(
        mode: AuthMode,
        local: Verifier,
        oidc_refresh: std::time::Duration,
    ) -> Arc<DataAuth> {
        DataAuth::with_token_endpoints(mode, local, oidc_refresh, None)
    }

    /// [`DataAuth::new`] with a token endpoint for every service of fhirlink's own issuer
    /// (SMART Backend Services, [`token`]) when `issuing` is given.
    pub fn with_token_endpoints(
        mode: AuthMode,
        local: Verifier,
        oidc_refresh: std::time::Duration,
        issuing: Option<TokenIssuing>,
    ) -> Arc<DataAuth> {
        Arc::new(DataAuth {
            issuing,
            mode,
            local: Arc::new(local),
            oidc: OidcIssuers::new(OidcConfig {
                min_refresh_interval: oidc_refresh,
                ..OidcConfig::default()
            }),
            services: ArcSwap::from_pointee(HashMap::default()),
            everyone: Arc::new(Access::unrestricted("anonymous")),
            nobody: Arc::new(Access {
                principal: "anonymous".into(),
                rights: Rights::default(),
                scopes: None,
                patient: None,
            }),
        })
    }

    /// Takes the services' settings and grants of a new plan. Each service starts a new
    /// token cache: a changed authority or audience must not find tokens verified under the
    /// old one.
    pub fn apply(&self, plan: &Plan) {
        let services: HashMap<String, Arc<ServiceAuth>, _> = plan
            .services
            .iter()
            .map(|s| {
                let name = s.name.to_lowercase();
                let (local, issuer_name) = match &self.issuing {
                    Some(issuing) => {
                        let url = token::issuer_url(&name, &issuing.dns_suffix);
                        let mut trusted = self.local.issuers().to_vec();
                        trusted.push(issuing.issuer.trusted_as(&url));
                        (Arc::new(Verifier::new(trusted)), url)
                    }
                    None => (self.local.clone(), LOCAL_ISSUER.to_owned()),
                };
                let clients = s
                    .clients
                    .iter()
                    .map(|c| (c.client_id.clone(), token::Client::from_plan(c)))
                    .collect();
                (
                    name.clone(),
                    Arc::new(ServiceAuth {
                        name,
                        authority: s.authority.trim().to_owned(),
                        audience: s.audience.clone(),
                        data_access: s.data_access.clone(),
                        verified: TokenCache::default(),
                        local,
                        issuer_name,
                        clients,
                    }),
                )
            })
            .collect();
        let authorities: Vec<String> = services
            .values()
            .map(|s| s.authority.clone())
            .filter(|a| !is_local(a))
            .collect();
        self.oidc.retain(|a| authorities.iter().any(|k| k == a));
        self.services.store(Arc::new(services));
    }

    fn authority(&self, settings: &ServiceAuth) -> Result<Authority, TokenError> {
        let configured = settings.authority.as_str();
        if is_local(configured) {
            return Ok(Authority::Local(settings.local.clone()));
        }
        self.oidc
            .get(configured)
            .map(Authority::Oidc)
            .map_err(TokenError::IssuerUnreachable)
    }
}

fn is_local(authority: &str) -> bool {
    authority.is_empty() || authority == LOCAL_ISSUER
}

/// What follows `Bearer ` (any case; surrounding spaces trimmed) in a request's one
/// Authorization header: `Ok(None)` without one, `Err` for several or another scheme. Not
/// checked further: enough to find a token verified before, byte for byte.
fn bearer_bytes(req: &Request) -> Result<Option<&[u8]>, ()> {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => {
            let (scheme, rest) = v.as_bytes().split_at_checked(7).ok_or(())?;
            if scheme.eq_ignore_ascii_case(b"bearer ") {
                Ok(Some(rest.trim_ascii()))
            } else {
                Err(())
            }
        }
        _ => Err(()),
    }
}

/// The RFC 6750 bearer token of a request, if it carries exactly one well-formed one: the
/// scheme `Bearer` (any case), then the token, printable ASCII without spaces (§2.1's
/// b64token is narrower; the verifier refuses anything that is not a JWT).
fn bearer(req: &Request) -> Result<Option<&str>, ()> {
    let Some(token) = bearer_bytes(req)? else {
        return Ok(None);
    };
    // Without short-circuiting, so that the check is vectorised.
    let printable = token
        .iter()
        .fold(true, |ok, &b| ok & (b.wrapping_sub(0x21) < 0x5e));
    if token.is_empty() || !printable {
        return Err(());
    }
    std::str::from_utf8(token).map(Some).map_err(|_| ())
}

/// 401 with an OperationOutcome and the challenge (RFC 6750 §3: no error code when the
/// request carried no credentials). For an external authority the challenge also names it as
/// `authorization_uri`, as Azure API for FHIR's did, which clients use to find where to get a
/// token.
fn unauthorized(service: &str, auth: Option<&ServiceAuth>, error: Option<&str>) -> Response {
    let mut challenge = format!("Bearer realm=\"{service}\"");
    let (authority, audience) = auth.map_or(("", ""), |a| (&*a.authority, &*a.audience));
    if !is_local(authority) && !authority.contains(['"', '\\']) {
        challenge.push_str(&format!(", authorization_uri=\"{authority}\""));
    }
    if !audience.is_empty() {
        challenge.push_str(&format!(", resource_id=\"{audience}\""));
    }
    if let Some(description) = error {
        challenge.push_str(&format!(
            ", error=\"invalid_token\", error_description=\"{description}\""
        ));
    }
    let message = match error {
        None => format!("A bearer token is required to use FHIR service {service}"),
        Some(d) => format!("The bearer token was refused: {d}"),
    };
    let mut resp =
        FhirError::new(StatusCode::UNAUTHORIZED, IssueCode::Security, message).into_response();
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

/// What an external authority's discovery document says about getting tokens (fetched when
/// not cached, with its keys); `None` for fhirlink's own issuer, and for an authority that
/// cannot be had, whose endpoints are then left out of what clients are told.
async fn issuer_metadata(auth: &DataAuth, settings: &ServiceAuth) -> Option<Arc<IssuerMetadata>> {
    let Ok(Authority::Oidc(issuer)) = auth.authority(settings) else {
        return None;
    };
    issuer
        .metadata()
        .await
        .inspect_err(|e| {
            tracing::warn!(service = %settings.name, error = %e, "the authority's token endpoints are not known");
        })
        .ok()
}

/// The service's [`Security`] for fhir-api's CapabilityStatement and SMART configuration:
/// its issuer and audience, and what the issuer's discovery document says, as far as
/// `metadata` knows it.
fn security(settings: &ServiceAuth, metadata: Option<&IssuerMetadata>) -> Security {
    Security {
        issuer: settings.issuer().to_owned(),
        audience: settings.audience.clone(),
        authorize_endpoint: metadata.and_then(|m| m.authorization_endpoint.clone()),
        token_endpoint: metadata.and_then(|m| m.token_endpoint.clone()),
        discovered_issuer: metadata.map(|m| m.issuer.clone()),
        jwks_uri: metadata.map(|m| m.jwks_uri.clone()),
        grant_types_supported: metadata.and_then(|m| m.grant_types_supported.clone()),
        code_challenge_methods_supported: metadata
            .and_then(|m| m.code_challenge_methods_supported.clone()),
        backend_services: false,
    }
}

/// The middleware: verifies the token and hands fhir-api the caller's [`Access`].
pub async fn authenticate(
    State(auth): State<Arc<DataAuth>>,
    mut req: Request,
    next: Next,
) -> Response {
    if auth.mode == AuthMode::None {
        req.extensions_mut().insert(auth.everyone.clone());
        return next.run(req).await;
    }
    let settings = auth.services.load().get(admitted(&req)).cloned();
    if fhir_api::interaction::is_token_request(req.method(), req.uri().path()) {
        return token::serve(auth.issuing.as_ref(), settings.as_deref(), req).await;
    }
    if fhir_api::interaction::needs_no_token(req.method(), req.uri().path()) {
        if let Some(s) = &settings {
            let metadata =
                if req.uri().path().trim_end_matches('/') == "/.well-known/smart-configuration" {
                    // The SMART configuration names the issuer's endpoints: worth the wait for
                    // its discovery document (fetched once, then cached with its keys).
                    issuer_metadata(&auth, s).await
                } else {
                    // Only what is known already: the CapabilityStatement never waits for the
                    // authority, so it answers while the identity provider is down.
                    match auth.authority(s) {
                        Ok(Authority::Oidc(issuer)) => issuer.cached_metadata(),
                        _ => None,
                    }
                };
            let mut sec = security(s, metadata.as_deref());
            sec.backend_services = is_local(&s.authority) && auth.issuing.is_some();
            req.extensions_mut().insert(sec);
        }
        // No rights at all: fhir-api serves the two documents and nothing else.
        req.extensions_mut().insert(auth.nobody.clone());
        return next.run(req).await;
    }
    let Some(settings) = settings else {
        // A service the control plane does not know: nothing to authenticate against.
        let service = admitted(&req).to_owned();
        fhir_api::drain(req.into_body()).await;
        return unauthorized(&service, None, None);
    };
    let now = unix_now();
    // A token verified before is found by its bytes before any parsing: a client sends the
    // same header on every request, and a byte-for-byte match is the token that passed.
    let remembered = bearer_bytes(&req)
        .ok()
        .flatten()
        .and_then(|t| settings.verified.get(t, now));
    let verified = match remembered {
        Some(verified) => Ok(verified),
        None => {
            let token = match bearer(&req) {
                Ok(Some(t)) => t.to_owned(),
                Ok(None) => {
                    fhir_api::drain(req.into_body()).await;
                    return unauthorized(&settings.name, Some(&*settings), None);
                }
                Err(()) => {
                    fhir_api::drain(req.into_body()).await;
                    return unauthorized(
                        &settings.name,
                        Some(&*settings),
                        Some("The Authorization header is not one Bearer token"),
                    );
                }
            };
            let checked = match auth.authority(&settings) {
                Ok(authority) => {
                    authority
                        .verify_for(&token, now, &[settings.audience.as_str()])
                        .await
                }
                Err(e) => Err(e),
            };
            checked.map(|identity| {
                let verified = Arc::new(Verified::new(identity, &settings.data_access, now));
                settings.verified.put(token.as_bytes(), verified.clone());
                verified
            })
        }
    };
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(service = %settings.name, reason = %e, "data-plane request refused: bad token");
            fhir_api::drain(req.into_body()).await;
            return unauthorized(&settings.name, Some(&*settings), Some(e.description()));
        }
    };
    req.extensions_mut().insert(verified.access.clone());
    let mut resp = next.run(req).await;
    resp.extensions_mut().insert(verified.caller.clone());
    resp
}

/// The service the gateway admitted the request to (`default` without a gateway).
fn admitted(req: &Request) -> &str {
    req.extensions()
        .get::<AdmittedService>()
        .map_or(fhir_api::DEFAULT_SERVICE, |s| s.0.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&[u8]]) -> Request {
        let mut req = Request::new(axum::body::Body::empty());
        for v in values {
            req.headers_mut().append(
                header::AUTHORIZATION,
                HeaderValue::from_bytes(v).expect("header value"),
            );
        }
        req
    }

    #[test]
    fn bearer_takes_exactly_one_well_formed_token() {
        assert_eq!(bearer(&with(&[])), Ok(None));
        assert_eq!(
            bearer(&with(&[b"Bearer abc.def.ghi"])),
            Ok(Some("abc.def.ghi"))
        );
        assert_eq!(bearer(&with(&[b"bEaReR   abc  "])), Ok(Some("abc")));
        for bad in [
            &b"Bearer"[..],
            b"Bearer ",
            b"Bearer    ",
            b"Basic dXNlcjpwYXNz",
            b"Bearer a b",
            b"Bearer a\tb",
            b"Bearer\tabc",
            b"Bearerabc",
            b"Bearer abc\x80",
        ] {
            assert_eq!(
                bearer(&with(&[bad])),
                Err(()),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(
            bearer(&with(&[b"Bearer a", b"Bearer a"])),
            Err(()),
            "two Authorization headers"
        );
    }

    #[test]
    fn a_verified_token_is_prepared_with_its_plans_grants_and_lapses_in_time() {
        let reader = DataRights {
            read: true,
            ..DataRights::default()
        };
        let grants: BTreeMap<String, DataRights> = [
            ("oid-1".to_owned(), DataRights::ALL),
            ("sub-2".to_owned(), reader),
        ]
        .into();
        let identity = |oid: Option<&str>, sub: &str, exp: i64| link_auth::jwt::Identity {
            subject: sub.into(),
            object_id: oid.map(str::to_owned),
            client_id: Some("app".into()),
            scopes: vec!["patient/Observation.rs".into()],
            patient: Some("p1".into()),
            expires: exp,
            not_before: Some(990),
            ..Default::default()
        };
        let now = 1_000;
        // The object id names the principal, and its grants win over the subject's.
        let v = Verified::new(identity(Some("oid-1"), "sub-2", 5_000), &grants, now);
        assert_eq!(v.access.principal, "oid-1");
        assert_eq!(v.access.rights, rights(DataRights::ALL));
        assert!(v.access.scopes.is_some());
        assert_eq!(v.access.patient.as_deref(), Some("p1"));
        assert_eq!(
            *v.caller,
            Caller {
                principal: "oid-1".into(),
                client_id: Some("app".into())
            }
        );
        // Taken again for VERIFIED_TTL at most...
        assert_eq!(v.until, now + VERIFIED_TTL.as_secs() as i64);
        assert!(v.current(v.until) && !v.current(v.until + 1));
        assert!(!v.current(989), "before nbf");
        // ...and never past the token's exp.
        let short = Verified::new(identity(None, "sub-2", 1_010), &grants, now);
        assert_eq!(short.until, 1_010);
        assert!(!short.current(1_011));
        // Without an oid, the subject is the principal and its grants apply.
        assert_eq!(short.access.principal, "sub-2");
        assert_eq!(short.access.rights, rights(reader));
        // A principal the plan grants nothing gets no rights.
        let none = Verified::new(identity(None, "stranger", 5_000), &grants, now);
        assert_eq!(none.access.rights, Rights::default());
    }

    #[test]
    fn security_names_what_the_discovery_document_said_as_far_as_it_is_known() {
        let settings = |authority: &str| ServiceAuth {
            name: "default".into(),
            authority: authority.into(),
            audience: "https://default.fhir.example".into(),
            data_access: BTreeMap::new(),
            verified: TokenCache::default(),
            local: Arc::new(Verifier::new(Vec::new())),
            issuer_name: LOCAL_ISSUER.into(),
            clients: HashMap::new(),
        };
        // fhirlink's own issuer: its name, and nothing discovered.
        assert_eq!(
            security(&settings(""), None),
            Security {
                issuer: LOCAL_ISSUER.into(),
                audience: "https://default.fhir.example".into(),
                ..Security::default()
            }
        );
        let metadata = IssuerMetadata {
            issuer: "https://sts.example/t/".into(),
            jwks_uri: "https://login.example/t/keys".into(),
            authorization_endpoint: None,
            token_endpoint: Some("https://login.example/t/token".into()),
            grant_types_supported: Some(vec!["client_credentials".into()]),
            code_challenge_methods_supported: None,
        };
        let external = settings("https://login.example/t");
        let s = security(&external, Some(&metadata));
        assert_eq!(
            s.issuer, "https://login.example/t",
            "the authority as configured"
        );
        assert_eq!(
            s.discovered_issuer.as_deref(),
            Some("https://sts.example/t/")
        );
        assert_eq!(s.jwks_uri.as_deref(), Some("https://login.example/t/keys"));
        assert_eq!(s.token_endpoint, metadata.token_endpoint);
        assert_eq!(s.authorize_endpoint, None);
        assert_eq!(s.grant_types_supported, metadata.grant_types_supported);
        // An authority not reached (yet): only what the plan says.
        assert_eq!(security(&external, None).jwks_uri, None);
    }

    #[test]
    fn a_remembered_token_is_found_by_its_exact_bytes_only() {
        let cache = TokenCache::default();
        let verified = Arc::new(Verified {
            access: Arc::new(Access::unrestricted("p")),
            caller: Arc::default(),
            until: 2_000,
            not_before: Some(1_000),
        });
        cache.put(b"abc.def.ghi", verified);
        let found = |values: &[&[u8]], now| {
            bearer_bytes(&with(values))
                .ok()
                .flatten()
                .and_then(|t| cache.get(t, now))
        };
        assert!(found(&[b"Bearer abc.def.ghi"], 1_500).is_some());
        assert!(found(&[b"bearer  abc.def.ghi "], 1_500).is_some());
        assert!(
            found(&[b"Bearer abc.def.gh"], 1_500).is_none(),
            "another token"
        );
        assert!(
            found(&[b"Bearer abc.def.ghiX"], 1_500).is_none(),
            "another token"
        );
        assert!(
            found(&[b"Bearer abc.def.ghi", b"Bearer abc.def.ghi"], 1_500).is_none(),
            "two headers are never taken from the cache"
        );
        assert!(found(&[b"Bearer abc.def.ghi"], 2_001).is_none(), "past exp");
        assert!(found(&[b"Bearer abc.def.ghi"], 999).is_none(), "before nbf");

        // Longer than the hashed tail: a token that ends the same but starts otherwise
        // shares the bucket and is still not taken.
        let long = format!("eyJ.{}.{}", "a".repeat(200), "s".repeat(86));
        let other = format!("eyX.{}.{}", "a".repeat(200), "s".repeat(86));
        let fresh = |principal: &str| {
            Arc::new(Verified {
                access: Arc::new(Access::unrestricted(principal)),
                caller: Arc::default(),
                until: 2_000,
                not_before: None,
            })
        };
        cache.put(long.as_bytes(), fresh("first"));
        assert!(cache.get(other.as_bytes(), 1_500).is_none());
        assert!(cache.get(&long.as_bytes()[1..], 1_500).is_none());
        // Verified again (after its minute), the token's entry is replaced, not doubled.
        cache.put(long.as_bytes(), fresh("again"));
        assert_eq!(
            cache.get(long.as_bytes(), 1_500).unwrap().access.principal,
            "again"
        );
        assert_eq!(cache.entries.read().unwrap().len(), 2);
    }
}
