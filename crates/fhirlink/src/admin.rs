//! The management listener: HTTPS with the data folder's certificate (or the operator's own),
//! bearer-token authentication in front of `link_api::router`, and ARM's 401 answers.
//!
//! Authentication ends here: a request that passes carries an `Extension<Principal>` naming
//! the token's subject and issuer, and `link-api` decides what that principal may do. No
//! request reaches the management router without a verified principal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use clap::Args;
use link_auth::identity::{unix_now, LocalIssuer};
use link_auth::jwt::{TokenError, Verifier};
use link_auth::tls::ServerIdentity;
use link_model::Principal;

use crate::diagnose::Diagnostics;
use crate::telemetry::{self, Telemetry};

#[derive(Args)]
pub(crate) struct AdminArgs {
    /// Address of the management API (ARM-shaped, HTTPS unless --admin-plain-http).
    #[arg(long, env = "FHIRLINK_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
    pub(crate) admin_listen: SocketAddr,
    /// PEM certificate chain of the management API; without it, a certificate signed by the
    /// data folder's own CA (`<data>/tls/ca.pem`) is made at start.
    #[arg(long, env = "FHIRLINK_ADMIN_TLS_CERT", requires = "admin_tls_key")]
    pub(crate) admin_tls_cert: Option<PathBuf>,
    /// PEM private key for --admin-tls-cert.
    #[arg(long, env = "FHIRLINK_ADMIN_TLS_KEY", requires = "admin_tls_cert")]
    pub(crate) admin_tls_key: Option<PathBuf>,
    /// More DNS names or IP addresses for the generated certificate (comma-separated), for
    /// clients that reach the management API by another name.
    #[arg(long, env = "FHIRLINK_ADMIN_TLS_NAMES", value_delimiter = ',')]
    pub(crate) admin_tls_names: Vec<String>,
    /// Serve the management API over plain HTTP. Tokens then cross the network in clear
    /// text, and Azure's SDKs refuse to send them.
    #[arg(long, env = "FHIRLINK_ADMIN_PLAIN_HTTP", conflicts_with_all = ["admin_tls_cert", "admin_tls_key"])]
    pub(crate) admin_plain_http: bool,
    /// The principal that is Owner at the root scope.
    #[arg(long, env = "FHIRLINK_OWNER", default_value = "admin")]
    pub(crate) owner: String,
}

/// A bound management listener, ready to serve.
pub(crate) struct AdminServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    ca_path: Option<PathBuf>,
    app: Router,
    limits: link_auth::conn::ConnectionLimits,
}

impl AdminServer {
    /// Sets up the token verifier and TLS, and binds the listener.
    pub(crate) async fn bind(
        args: &AdminArgs,
        data: &Path,
        control_plane: Arc<link_api::ControlPlane>,
        diagnostics: Arc<Diagnostics>,
        telemetry: Arc<Telemetry>,
        backups: Arc<crate::backup::Backups>,
        audit_file: PathBuf,
    ) -> anyhow::Result<AdminServer> {
        anyhow::ensure!(
            link_auth::jwt::valid_subject(&args.owner),
            "--owner must be 1-256 printable characters"
        );
        let issuer = LocalIssuer::load_or_create(data).context("the token signing key")?;
        let verifier = Arc::new(issuer.verifier());
        let changes = control_plane.subscribe();
        let listener = tokio::net::TcpListener::bind(args.admin_listen)
            .await
            .with_context(|| format!("binding the management API on {}", args.admin_listen))?;
        let addr = listener.local_addr()?;
        let (tls, ca_path) = if args.admin_plain_http {
            tracing::warn!(%addr, "management API on plain HTTP: tokens travel unencrypted");
            (None, None)
        } else {
            let identity = match (&args.admin_tls_cert, &args.admin_tls_key) {
                (Some(cert), Some(key)) => ServerIdentity::from_files(cert, key),
                _ => ServerIdentity::generated(data, addr.ip(), &args.admin_tls_names),
            }
            .context("the management API's TLS certificate")?;
            let ca_path = identity.ca_path.clone();
            (Some(identity.server_config()?), ca_path)
        };
        Ok(AdminServer {
            listener,
            addr,
            tls,
            ca_path,
            app: with_console(
                router(
                    control_plane.clone(),
                    verifier,
                    diagnostics,
                    telemetry,
                    backups,
                    audit_file,
                ),
                issuer,
                control_plane.store().clone(),
                changes,
            ),
            limits: link_auth::https::management_limits(),
        })
    }

    /// Serves under `limits` (the connection flags of `serve`) instead of
    /// [`link_auth::https::management_limits`], over TLS and plain HTTP alike.
    pub(crate) fn with_limits(mut self, limits: link_auth::conn::ConnectionLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The base URL clients use.
    pub(crate) fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// The CA certificate clients should trust, when fhirlink made the server certificate.
    pub(crate) fn ca_path(&self) -> Option<&Path> {
        self.ca_path.as_deref()
    }

    /// Serves until `shutdown` completes, then lets open requests finish.
    pub(crate) async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        tracing::info!(url = %self.url(), "management API listening");
        // One loop for TLS and plain HTTP: the same deadlines and connection caps.
        link_auth::https::serve_with(self.listener, self.tls, self.app, self.limits, shutdown)
            .await;
    }
}

/// The web console (`link_console`) beside the management API: its pages are outside the
/// token authentication (the console has its session cookie), and every call it makes goes
/// through `api` with a one-minute token of the session's principal, minted here with the
/// data folder's key and never sent to the browser.
fn with_console(
    api: Router,
    issuer: LocalIssuer,
    store: Arc<dyn fhir_store::Store>,
    changes: tokio::sync::watch::Receiver<Arc<link_model::State>>,
) -> Router {
    let issuer = Arc::new(issuer);
    let mint: link_console::Mint = Arc::new(move |principal: &str| {
        issuer
            .mint(principal, unix_now(), 60)
            .map_err(|e| e.to_string())
    });
    link_console::router(link_console::ConsoleConfig {
        api: api.clone(),
        mint,
        store,
        changes,
        subscription: link_api::HOME_SUBSCRIPTION.to_owned(),
    })
    .merge(api)
}

/// The management API behind token authentication, with fhirlink's own diagnosis route
/// (`GET /fhirlink/diagnose?service=NAME&from=IP`) and metrics (`GET /metrics`). Every
/// request, authenticated or not, leaves one audit record (the outermost layer).
pub(crate) fn router(
    control_plane: Arc<link_api::ControlPlane>,
    verifier: Arc<Verifier>,
    diagnostics: Arc<Diagnostics>,
    telemetry: Arc<Telemetry>,
    backups: Arc<crate::backup::Backups>,
    audit_file: PathBuf,
) -> Router {
    let dns = diagnostics.dns.clone();
    Router::new()
        .route("/fhirlink/diagnose", get(diagnose))
        .with_state((control_plane.clone(), diagnostics))
        .merge(
            Router::new()
                .route("/metrics", get(metrics_route))
                .with_state((control_plane.clone(), telemetry.clone(), dns)),
        )
        .merge(
            Router::new()
                .route(
                    crate::audit_query::AUDIT_PATH,
                    get(crate::audit_query::route),
                )
                .with_state((control_plane.clone(), audit_file)),
        )
        .merge(crate::backup::router(control_plane.clone(), backups))
        .merge(link_console::code_router(link_console::Sessions::new(
            control_plane.store().clone(),
        )))
        .merge(link_api::router(control_plane))
        .layer(axum::middleware::from_fn(telemetry::remember_principal))
        .layer(axum::middleware::from_fn_with_state(verifier, authenticate))
        .layer(axum::middleware::from_fn_with_state(
            telemetry,
            telemetry::management,
        ))
}

fn arm_error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

/// The path a client at `from` takes to `service`, for principals that may read the service
/// (for a service no ARM resource manages: Reader at the root scope).
async fn diagnose(
    State((control_plane, diagnostics)): State<(Arc<link_api::ControlPlane>, Arc<Diagnostics>)>,
    Extension(who): Extension<Principal>,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    let Some(service) = query.get("service").filter(|s| !s.is_empty()) else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "The query parameter 'service' (a FHIR service name) is required.".into(),
        );
    };
    let Some(from) = query
        .get("from")
        .and_then(|f| f.parse::<std::net::Ipv4Addr>().ok())
    else {
        return arm_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "The query parameter 'from' must be the client's IPv4 address.".into(),
        );
    };
    let state = control_plane.snapshot();
    let found = state
        .of_kind(link_model::Kind::FhirService)
        .find(|r| r.name().eq_ignore_ascii_case(service));
    let target = found.map(link_model::Resource::key).unwrap_or_default();
    // The one classification of management requests names this one (a read of the service
    // it explains); the audit record takes it, with the service, from the response.
    let mut decided = link_model::classify(link_model::Method::Get, link_model::DIAGNOSE_PATH);
    if let Some(r) = found {
        decided = decided.about_service(&r.id);
    }
    let action = decided.name;
    let mut resp = if link_model::allowed(&state, &who, action, &target) {
        let diagnosis = diagnostics.diagnose(&state, service, from);
        match serving_nodes(&control_plane).await {
            Some(nodes) => {
                let mut body = serde_json::to_value(&diagnosis).unwrap_or_default();
                body["nodes"] = nodes;
                Json(body).into_response()
            }
            None => Json(diagnosis).into_response(),
        }
    } else {
        arm_error(
            StatusCode::FORBIDDEN,
            "AuthorizationFailed",
            format!(
                "The client '{}' does not have authorization to perform action '{action}' on FHIR service '{service}'.",
                who.id
            ),
        )
    };
    resp.extensions_mut().insert(decided);
    resp
}

/// One of several nodes: every node the store registers. A live node serves the path just
/// diagnosed as this one does (every live node enforces each change before it is answered,
/// or stops serving); `position` is the change feed position its plan includes, beside
/// this node's. `None` for a single node.
async fn serving_nodes(control_plane: &link_api::ControlPlane) -> Option<serde_json::Value> {
    let this = control_plane.node_id()?.to_owned();
    let nodes = match control_plane.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return Some(serde_json::json!({"error": e.to_string()})),
    };
    Some(serde_json::Value::Array(
        nodes
            .into_iter()
            .map(|(n, live)| {
                serde_json::json!({
                    "id": n.id,
                    "addresses": n.addresses,
                    "live": live,
                    "position": n.position,
                    "thisNode": n.id == this,
                })
            })
            .collect(),
    ))
}

/// Verifies the bearer token and hands the request on with its [`Principal`], or answers 401.
async fn authenticate(
    State(verifier): State<Arc<Verifier>>,
    mut req: Request,
    next: Next,
) -> Response {
    let mut values = req.headers().get_all(header::AUTHORIZATION).iter();
    let token = match (values.next(), values.next()) {
        (None, _) => return unauthorized(AuthFailure::Missing),
        (Some(value), None) => match bearer_token(value) {
            Some(token) => token,
            None => return unauthorized(AuthFailure::BadHeader),
        },
        (Some(_), Some(_)) => return unauthorized(AuthFailure::BadHeader),
    };
    let identity = match verifier.verify(token, unix_now()) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(reason = %e, method = %req.method(), path = %req.uri().path(), "management call refused: bad token");
            return unauthorized(AuthFailure::Token(e));
        }
    };
    req.extensions_mut().insert(Principal {
        id: identity.subject,
        issuer: identity.issuer,
    });
    next.run(req).await
}

/// The token of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme is
/// case-insensitive).
fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

enum AuthFailure {
    Missing,
    BadHeader,
    Token(TokenError),
}

/// ARM's 401: an error body with Azure's codes and a `WWW-Authenticate: Bearer` challenge
/// (RFC 6750 §3: no error code when the request had no credentials at all).
fn unauthorized(failure: AuthFailure) -> Response {
    let (code, message, challenge) = match failure {
        AuthFailure::Missing => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is missing.".to_string(),
            r#"Bearer realm="fhirlink""#,
        ),
        AuthFailure::BadHeader => (
            "AuthenticationFailed",
            "Authentication failed. The 'Authorization' header is provided in an invalid format."
                .to_string(),
            r#"Bearer realm="fhirlink", error="invalid_request""#,
        ),
        AuthFailure::Token(TokenError::Expired { exp, now }) => (
            "ExpiredAuthenticationToken",
            format!(
                "The access token expiry UTC time '{}' is earlier than current UTC time '{}'.",
                utc(exp),
                utc(now)
            ),
            r#"Bearer realm="fhirlink", error="invalid_token", error_description="The access token has expired""#,
        ),
        AuthFailure::Token(e) => (
            "InvalidAuthenticationToken",
            format!("The access token is invalid: {e}."),
            r#"Bearer realm="fhirlink", error="invalid_token", error_description="The access token is invalid""#,
        ),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (
        StatusCode::UNAUTHORIZED,
        [
            (header::CONTENT_TYPE, "application/json; charset=utf-8"),
            (header::WWW_AUTHENTICATE, challenge),
        ],
        body.to_string(),
    )
        .into_response()
}

fn utc(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.format("%-m/%-d/%Y %-I:%M:%S %p").to_string())
        .unwrap_or_else(|| secs.to_string())
}

/// What `GET /metrics` needs.
type MetricsState = (
    Arc<link_api::ControlPlane>,
    Arc<Telemetry>,
    Arc<link_dns::DnsServer>,
);

/// `GET /metrics`, for principals that may read metrics at the root scope.
async fn metrics_route(
    State((control_plane, telemetry, dns)): State<MetricsState>,
    Extension(who): Extension<Principal>,
) -> Response {
    // The action the one classification of management requests gives `GET /metrics`.
    let action = link_model::METRICS_READ;
    if !link_model::allowed(&control_plane.snapshot(), &who, action, "") {
        let message = format!(
            "The client '{0}' with object id '{0}' does not have authorization to perform action '{action}' over scope '/' or the scope is invalid. If access was recently granted, please refresh your credentials.",
            who.id
        );
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({"error": {"code": "AuthorizationFailed", "message": message}})),
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry.render_metrics(&dns),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_header_forms() {
        let v = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(bearer_token(&v("Bearer abc.def.ghi")), Some("abc.def.ghi"));
        assert_eq!(bearer_token(&v("bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&v("Bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&v("Bearer")), None);
        assert_eq!(bearer_token(&v("Bearer ")), None);
        assert_eq!(bearer_token(&v("Basic YWxhZGRpbjpvcGVuc2VzYW1l")), None);
        assert_eq!(bearer_token(&v("Bearer a b")), None);
        assert_eq!(
            bearer_token(&HeaderValue::from_bytes(b"Bearer \xff").unwrap()),
            None
        );
    }

    #[test]
    fn expiry_message_uses_azure_time_format() {
        assert_eq!(utc(0), "1/1/1970 12:00:00 AM");
        assert_eq!(utc(i64::MAX), i64::MAX.to_string());
    }
}
