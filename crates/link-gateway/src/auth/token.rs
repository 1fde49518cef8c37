//! The token endpoint of fhirlink's own issuer, one per FHIR service at `[base]/auth/token`:
//! SMART Backend Services (SMART App Launch 2.0, backend-services.html), the
//! `client_credentials` grant authenticated by a `private_key_jwt` client assertion (RFC 7523
//! §2.2). A client is registered with the service (`smartClients`: its public keys and the
//! `system/` scopes it may get); it signs an assertion with its private key, and gets an
//! access token of five minutes for the service's audience, with the scopes it asked for
//! that its registration allows. What the token then lets it do is its FHIR data roles on the
//! service, narrowed by those scopes, as for every caller.
//!
//! The endpoint is reached through the same network decision as the data (a service behind
//! its private endpoint hands out tokens there only). Each assertion's `jti` is spent once,
//! in a [`JtiLedger`] that the composition root keeps in the store, so that a replay is
//! refused by every node of a deployment. Errors are RFC 6749 §5.2's JSON, never a token.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use link_auth::assertion::{self, AssertionError};
use link_auth::identity::{unix_now, LocalIssuer, TokenRequest};
use link_auth::jwt::VerifyingKey;
use link_model::ClientPlan;
use serde_json::json;

use super::ServiceAuth;
use crate::Caller;

/// Where a service's token endpoint is, under its base URL.
pub const TOKEN_PATH: &str = "/auth/token";
/// How long the access tokens it issues live (SMART suggests five minutes).
pub const ACCESS_TOKEN_LIFETIME_SECS: i64 = 300;
/// The longest token request read.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// RFC 7523 §2.2.
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How long a client's keys fetched from its `jwks_url` are used before they are fetched
/// again, and the least time between two fetches when an assertion names an unknown key.
const JWKS_TTL: Duration = Duration::from_secs(300);
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(10);

/// Client assertion ids already used, kept until they expire: a second use of one is a
/// replay. Shared by every node of a deployment (the binary keeps it in the store).
#[async_trait::async_trait]
pub trait JtiLedger: Send + Sync {
    /// Records `jti` of `client` on `service` until `expires` (Unix seconds): `Ok(true)` the
    /// first time, `Ok(false)` when it was recorded before; `Err` when the ledger cannot say
    /// (the request is then refused, never waved through).
    async fn first_use(
        &self,
        service: &str,
        client: &str,
        jti: &str,
        expires: i64,
    ) -> Result<bool, String>;
}

/// What the token endpoints need: the signing key, the DNS suffix the services' canonical
/// URLs (and so their issuers' names) are under, the `jti` ledger, the scheme clients reach
/// the data plane by, and the TLS roots `jwks_url`s are fetched with (the system's if none).
pub struct TokenIssuing {
    pub issuer: Arc<LocalIssuer>,
    pub dns_suffix: String,
    pub ledger: Arc<dyn JtiLedger>,
    pub https: bool,
    pub jwks_tls: Option<Arc<rustls::ClientConfig>>,
}

/// A service's issuer as its SMART configuration names it and its tokens carry it in `iss`:
/// the service's canonical URL.
pub(crate) fn issuer_url(service: &str, dns_suffix: &str) -> String {
    format!("https://{service}.{}", dns_suffix.trim_matches('.'))
}

/// A registered client, as one plan has it.
pub(crate) struct Client {
    keys: Keys,
    scopes: Vec<String>,
}

enum Keys {
    /// Registered inline: parsed once per plan (or why none is usable).
    Inline(Result<Arc<Vec<VerifyingKey>>, String>),
    /// Registered by URL: fetched when needed, then cached.
    Url {
        url: String,
        cached: tokio::sync::Mutex<Option<(Instant, Arc<Vec<VerifyingKey>>)>>,
    },
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn from_plan(plan: &ClientPlan) -> Client {
        let keys = match (&plan.jwks, &plan.jwks_url) {
            (Some(jwks), _) => Keys::Inline(assertion::client_keys(jwks).map(Arc::new)),
            (None, Some(url)) => Keys::Url {
                url: url.clone(),
                cached: tokio::sync::Mutex::new(None),
            },
            (None, None) => Keys::Inline(Err("the registration has no keys".into())),
        };
        Client {
            keys,
            scopes: plan.scopes.clone(),
        }
    }

    /// The client's keys; `refresh` fetches a URL's again (an assertion named a key that the
    /// cached set does not have), at most every [`JWKS_MIN_REFETCH`].
    async fn keys(
        &self,
        tls: Option<Arc<rustls::ClientConfig>>,
        refresh: bool,
    ) -> Result<Arc<Vec<VerifyingKey>>, String> {
        match &self.keys {
            Keys::Inline(keys) => keys.clone(),
            Keys::Url { url, cached } => {
                let mut cached = cached.lock().await;
                if let Some((at, keys)) = &*cached {
                    let age = at.elapsed();
                    if age < JWKS_TTL && (!refresh || age < JWKS_MIN_REFETCH) {
                        return Ok(keys.clone());
                    }
                }
                let keys = Arc::new(
                    assertion::fetch_client_keys(url, tls)
                        .await
                        .map_err(|e| format!("the client's jwks_url could not be read: {e}"))?,
                );
                *cached = Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
        }
    }
}

/// An RFC 6749 §5.2 error response (no caching, as §5.1 asks of every token response).
fn oauth_error(status: StatusCode, code: &str, description: &str) -> Response {
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({"error": code, "error_description": description}).to_string(),
    )
        .into_response();
    no_store(&mut resp);
    resp
}

fn no_store(resp: &mut Response) {
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

fn invalid_client(description: &str) -> Response {
    oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", description)
}

fn invalid_request(description: &str) -> Response {
    oauth_error(StatusCode::BAD_REQUEST, "invalid_request", description)
}

/// A scope's permissions as SMART v2 letters: v1's `read` is `rs`, `write` is `cud`, `*` all.
fn permissions(scope: &str) -> Option<(&str, String)> {
    let (ty, perm) = scope.strip_prefix("system/")?.split_once('.')?;
    let letters = match perm {
        "read" => "rs".to_owned(),
        "write" => "cud".to_owned(),
        "*" => "cruds".to_owned(),
        p => p.to_owned(),
    };
    Some((ty, letters))
}

/// Whether the registered scope `allowed` covers the requested `wanted`: the same type or
/// `*`, and every permission asked for.
fn covers(allowed: &str, wanted: &str) -> bool {
    match (permissions(allowed), permissions(wanted)) {
        (Some((at, ap)), Some((wt, wp))) => {
            (at == "*" || at == wt) && wp.chars().all(|c| ap.contains(c))
        }
        _ => false,
    }
}

/// The form's one value of `name`; `Err` (the name) when it is given more than once
/// (RFC 6749 §3.2).
fn one<'a, 'n>(form: &'a [(String, String)], name: &'n str) -> Result<Option<&'a str>, &'n str> {
    let mut values = form
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str());
    match (values.next(), values.next()) {
        (v, None) => Ok(v),
        _ => Err(name),
    }
}

/// Serves `POST [base]/auth/token` for the service `settings` (the admitted one).
pub(super) async fn serve(
    issuing: Option<&TokenIssuing>,
    settings: Option<&ServiceAuth>,
    req: Request,
) -> Response {
    let (Some(issuing), Some(settings)) = (issuing, settings) else {
        fhir_api::drain(req.into_body()).await;
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "this service has no token endpoint",
        );
    };
    if !super::is_local(&settings.authority) {
        fhir_api::drain(req.into_body()).await;
        return oauth_error(
            StatusCode::NOT_FOUND,
            "invalid_request",
            "this service takes tokens from its authority (authenticationConfiguration.authority), which issues them; fhirlink's token endpoint serves services of fhirlink's own issuer",
        );
    }
    let (parts, body) = req.into_parts();
    let form_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| {
            v.trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        });
    if form_type != Some(true) {
        fhir_api::drain(body).await;
        return invalid_request("the token request must be application/x-www-form-urlencoded");
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return invalid_request("the token request is larger than 16 KiB or was cut off");
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(&bytes).into_owned().collect();
    let field = |name| one(&form, name);
    let (grant, assertion_type, assertion, scope, form_client) = match (
        field("grant_type"),
        field("client_assertion_type"),
        field("client_assertion"),
        field("scope"),
        field("client_id"),
    ) {
        (Ok(g), Ok(t), Ok(a), Ok(s), Ok(c)) => (g, t, a, s, c),
        (Err(name), ..)
        | (_, Err(name), ..)
        | (_, _, Err(name), ..)
        | (.., Err(name), _)
        | (.., Err(name)) => {
            return invalid_request(&format!("the parameter {name} is given more than once"))
        }
    };
    match grant {
        Some("client_credentials") => {}
        Some(_) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this token endpoint grants client_credentials only (SMART Backend Services)",
            )
        }
        None => return invalid_request("grant_type is missing"),
    }
    if assertion_type != Some(ASSERTION_TYPE) {
        return invalid_client(&format!(
            "clients authenticate with a signed JWT: client_assertion_type must be {ASSERTION_TYPE}"
        ));
    }
    let Some(assertion) = assertion else {
        return invalid_client("client_assertion is missing");
    };
    let Some(scope) = scope.filter(|s| !s.trim().is_empty()) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is missing: ask for system/ scopes, e.g. system/*.read",
        );
    };
    let Some(client_id) = assertion::claimed_client(assertion) else {
        return invalid_client("client_assertion is not a JWT naming its client in iss");
    };
    if form_client.is_some_and(|c| c != client_id) {
        return invalid_client("client_id is not the client the assertion is from");
    }
    let caller = Arc::new(Caller {
        principal: client_id.clone(),
        client_id: Some(client_id.clone()),
    });
    let with_caller = |mut resp: Response| {
        resp.extensions_mut().insert(caller.clone());
        resp
    };
    let Some(client) = settings.clients.get(&client_id) else {
        return with_caller(invalid_client(
            "the client is not registered with this service",
        ));
    };
    let host = fhir_api::service::request_host(&parts.headers, &parts.uri);
    let endpoints = endpoints(&settings.name, host, issuing);
    let endpoints: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let now = unix_now();
    let tls = issuing.jwks_tls.clone();
    let mut verified = Err(AssertionError::Replayed);
    for refresh in [false, true] {
        let keys = match client.keys(tls.clone(), refresh).await {
            Ok(k) => k,
            Err(why) => {
                tracing::warn!(service = %settings.name, client = %client_id, reason = %why, "no usable keys for a SMART client");
                return with_caller(invalid_client(
                    "the client's registered keys cannot be used",
                ));
            }
        };
        verified = assertion::verify(assertion, &client_id, &keys, &endpoints, now);
        let unknown_key = matches!(
            verified,
            Err(AssertionError::Token(
                link_auth::jwt::TokenError::UnknownKey
            ))
        );
        if !unknown_key || matches!(client.keys, Keys::Inline(_)) {
            break;
        }
    }
    let checked = match verified {
        Ok(a) => a,
        Err(e) => {
            tracing::info!(service = %settings.name, client = %client_id, reason = %e, "client assertion refused");
            return with_caller(invalid_client(&e.to_string()));
        }
    };
    match issuing
        .ledger
        .first_use(&settings.name, &client_id, &checked.jti, checked.expires)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return with_caller(invalid_client(&AssertionError::Replayed.to_string()));
        }
        Err(why) => {
            tracing::warn!(service = %settings.name, reason = %why, "the jti ledger cannot be consulted");
            let mut resp = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the token endpoint cannot check the assertion for replay; try again",
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return with_caller(resp);
        }
    }
    let mut granted: Vec<String> = Vec::new();
    for wanted in scope.split(' ').filter(|s| !s.is_empty()) {
        if client.scopes.iter().any(|a| covers(a, wanted)) && !granted.iter().any(|g| g == wanted) {
            granted.push(wanted.to_owned());
        }
    }
    if granted.is_empty() {
        return with_caller(oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            &format!(
                "none of the scopes asked for is allowed to this client (it may have: {})",
                client.scopes.join(" ")
            ),
        ));
    }
    let request = TokenRequest {
        subject: client_id.clone(),
        audience: settings.audience.clone(),
        scopes: granted.clone(),
        patient: None,
        fhir_user: None,
        client_id: Some(client_id.clone()),
        now,
        lifetime_secs: ACCESS_TOKEN_LIFETIME_SECS,
    };
    let token = match issuing
        .issuer
        .mint_as(&issuer_url(&settings.name, &issuing.dns_suffix), &request)
    {
        Ok(t) => t,
        Err(e) => {
            return with_caller(oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &e.to_string(),
            ))
        }
    };
    let mut resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        json!({
            "access_token": token,
            "token_type": "bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME_SECS,
            "scope": granted.join(" "),
        })
        .to_string(),
    )
        .into_response();
    no_store(&mut resp);
    with_caller(resp)
}

/// The URLs the token endpoint of `service` is known by, which an assertion's `aud` may
/// name: the canonical one (`https://<service>.<suffix>/auth/token`), and the one this request
/// reached it by when its host names this very service or is an address. The Host header only
/// picks among the service's own names: an assertion made for another server is never
/// accepted because a client sent that server's name.
fn endpoints(service: &str, host: Option<&str>, issuing: &TokenIssuing) -> Vec<String> {
    let mut out = vec![format!(
        "{}{TOKEN_PATH}",
        issuer_url(service, &issuing.dns_suffix)
    )];
    if let Some(host) = host {
        let names_it = fhir_api::service::service_named_by_host(Some(host), &issuing.dns_suffix)
            .is_some_and(|s| s.eq_ignore_ascii_case(service));
        let bare = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h);
        let address = bare
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        if names_it || address {
            let scheme = if issuing.https { "https" } else { "http" };
            out.push(format!("{scheme}://{host}{TOKEN_PATH}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_scopes_cover_what_they_allow() {
        assert!(covers("system/*.read", "system/Patient.read"));
        assert!(covers("system/*.read", "system/Patient.rs"));
        assert!(covers("system/*.read", "system/Patient.r"));
        assert!(!covers("system/*.read", "system/Patient.write"));
        assert!(!covers("system/*.read", "system/Patient.cruds"));
        assert!(covers("system/Patient.cruds", "system/Patient.read"));
        assert!(!covers("system/Patient.cruds", "system/Observation.read"));
        assert!(covers("system/*.*", "system/Observation.write"));
        assert!(!covers("system/*.read", "patient/*.read"));
        assert!(!covers("system/*.read", "launch"));
    }
}
