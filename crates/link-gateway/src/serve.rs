//! The listeners: the public one, and one per private endpoint whose connection carries
//! traffic, reconciled from the plan. Every request on any of them is decided by
//! [`decide`](crate::decide()) against the current view before the data plane sees it; a
//! refused request gets 403 with an OperationOutcome, an admitted one reaches the data plane
//! with the service it was admitted to ([`AdmittedService`]) and its [`Admission`].

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use fhir_api::service::AdmittedService;
use fhir_api::FhirError;
use fhir_model::IssueCode;
use http::{header, HeaderValue, Request, StatusCode, Version};
use hyper::body::{Body as _, Incoming};
use link_auth::conn::{self, Accepted, Caps, ConnectionLimits, TimedBody, Tracked};
use link_model::Plan;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::decide::{decide, Connection, Listener};
use crate::view::GatewayView;

/// What the gateway needs to know of its deployment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// DNS suffix of service host names (`<service>.<suffix>`).
    pub dns_suffix: String,
    /// The port of the public listener; endpoint listeners use the same one.
    pub port: u16,
    /// TLS for every listener (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Deadlines of every connection's phases, and the connection caps (shared by all
    /// listeners: the file descriptors are the process's).
    pub connections: ConnectionLimits,
    /// The largest request body the data plane accepts (fhir-api's `max_body_bytes`): a
    /// request that declares a longer one is answered 413 before its body is read.
    pub max_body_bytes: usize,
    /// The longest request target answered by the data plane; longer gets 414 with an
    /// OperationOutcome (hyper's own, bare 414 starts at 64 KiB).
    pub max_uri_bytes: usize,
    /// The largest request header section, counted as HTTP/2 counts it (name, value and
    /// 32 octets per field, RFC 9113 §6.5.2); larger gets 431 with an OperationOutcome.
    pub max_header_bytes: usize,
}

impl Default for GatewayConfig {
    /// Plain HTTP on an ephemeral port with the default limits: headers 32 KiB (as Azure's
    /// Kestrel-based service allowed), targets 16 KiB, bodies 64 MiB.
    fn default() -> Self {
        GatewayConfig {
            dns_suffix: "azurehealthcareapis.com".into(),
            port: 0,
            tls: None,
            connections: ConnectionLimits::default(),
            max_body_bytes: 64 * 1024 * 1024,
            max_uri_bytes: 16 * 1024,
            max_header_bytes: 32 * 1024,
        }
    }
}

/// Who the layers behind the gateway found the caller to be, as a response extension
/// (`Arc<Caller>`, set by the authentication layer, which prepares one per verified token),
/// for audit records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    pub principal: String,
    pub client_id: Option<String>,
}

/// One request as the gateway saw it through, for audit records and metrics.
#[derive(Debug)]
pub struct Exchange<'a> {
    pub service: &'a str,
    /// The network path: `public`, or the private endpoint's id.
    pub listener: &'a Listener,
    pub source: SocketAddr,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub status: StatusCode,
    /// Until the response head was ready.
    pub duration: Duration,
    /// The access decision: `allowed`, or why not (`public-access-disabled`, …).
    pub verdict: &'static str,
    /// This request's id, also sent back as `x-request-id`.
    pub correlation_id: &'a str,
    pub caller: Option<&'a Caller>,
}

/// Told of every request exactly once: when its response is ready, allowed or refused, or,
/// when the client goes away before that, as the request is dropped (status
/// [`CLIENT_CLOSED_REQUEST`]).
pub trait Observer: Send + Sync {
    fn observe(&self, exchange: &Exchange<'_>);
}

struct Nobody;

impl Observer for Nobody {
    fn observe(&self, _: &Exchange<'_>) {}
}

/// How a request got in, as a request extension for the layers behind the gateway (audit).
#[derive(Debug, Clone)]
pub struct Admission {
    /// The network path: public, or which private endpoint.
    pub listener: Arc<Listener>,
    /// The client's address, from the socket.
    pub source: SocketAddr,
}

/// The data plane's front door: owns the listeners and decides every request.
pub struct Gateway {
    config: GatewayConfig,
    app: Router,
    observer: Arc<dyn Observer>,
    view: ArcSwap<GatewayView>,
    endpoints: Mutex<HashMap<String, Bound>>,
    closing: AtomicBool,
    caps: Arc<Caps>,
}

/// A bound endpoint listener.
struct Bound {
    addr: SocketAddr,
    socket: Arc<TcpListener>,
    stop: watch::Sender<bool>,
}

impl Bound {
    /// Stops accepting at once: the socket stops listening before this returns (so a
    /// connection attempt after it is refused by the kernel), and the accept loop lets open
    /// connections finish.
    fn close(&self) {
        let _ = self.stop.send(true);
        if let Err(e) = socket2::SockRef::from(&*self.socket).shutdown(std::net::Shutdown::Read) {
            tracing::warn!(addr = %self.addr, error = %e, "closing an endpoint listener");
        }
    }
}

impl Gateway {
    /// A gateway in front of `app`, with an empty plan (no services restricted, no
    /// endpoints) until the first [`Gateway::apply`].
    pub fn new(app: Router, config: GatewayConfig) -> Arc<Gateway> {
        Gateway::observed(app, config, Arc::new(Nobody))
    }

    /// A gateway that tells `observer` of every request.
    pub fn observed(
        app: Router,
        config: GatewayConfig,
        observer: Arc<dyn Observer>,
    ) -> Arc<Gateway> {
        let view = GatewayView::new(&Plan::default(), &config.dns_suffix);
        let caps = Caps::new(&config.connections);
        Arc::new(Gateway {
            caps,
            config,
            app,
            observer,
            view: ArcSwap::from_pointee(view),
            endpoints: Mutex::new(HashMap::new()),
            closing: AtomicBool::new(false),
        })
    }

    /// The view decisions are made on now.
    pub fn view(&self) -> Arc<GatewayView> {
        self.view.load_full()
    }

    /// Makes the listeners and decisions match `plan`: from the moment this returns, every
    /// request is decided on the new plan, listeners of endpoints that no longer carry
    /// traffic no longer accept, and those of newly approved endpoints do. Returns the
    /// endpoints whose listener could not be bound (lowercase id → reason).
    ///
    /// Must be called within a Tokio runtime.
    pub fn apply(self: &Arc<Self>, plan: &Plan) -> BTreeMap<String, String> {
        let view = Arc::new(GatewayView::new(plan, &self.config.dns_suffix));
        let wanted = view.endpoint_listeners(self.config.port);
        self.view.store(view);
        let mut faults = BTreeMap::new();
        let Ok(mut endpoints) = self.endpoints.lock() else {
            return faults;
        };
        endpoints.retain(|id, bound| {
            let keep = wanted.iter().any(|(w, a)| w == id && *a == bound.addr);
            if !keep {
                bound.close();
                tracing::info!(endpoint = %id, addr = %bound.addr, "private endpoint listener closed");
            }
            keep
        });
        if self.closing.load(Ordering::SeqCst) {
            return faults;
        }
        for (id, addr) in wanted {
            if endpoints.contains_key(&id) {
                continue;
            }
            match bind(addr) {
                Ok(socket) => {
                    let socket = Arc::new(socket);
                    let (stop, stopped) = watch::channel(false);
                    let listener = Arc::new(Listener::Endpoint(id.clone()));
                    tokio::spawn(self.clone().accept_loop(
                        socket.clone(),
                        listener,
                        wait_for_stop(stopped),
                    ));
                    tracing::info!(endpoint = %id, %addr, "private endpoint listener open");
                    endpoints.insert(id, Bound { addr, socket, stop });
                }
                Err(e) => {
                    let reason = format!(
                        "cannot listen on {addr}: {e}; the host needs an interface with this address (or pin the endpoint to one it has with ipConfigurations[].privateIPAddress)"
                    );
                    tracing::error!(endpoint = %id, %addr, error = %e, "private endpoint listener failed");
                    faults.insert(id, reason);
                }
            }
        }
        faults
    }

    /// The addresses endpoint listeners are bound to now, by lowercase endpoint id.
    pub fn endpoint_addresses(&self) -> BTreeMap<String, SocketAddr> {
        self.endpoints
            .lock()
            .map(|e| e.iter().map(|(id, b)| (id.clone(), b.addr)).collect())
            .unwrap_or_default()
    }

    /// Closes every endpoint listener for good (process shutdown).
    pub fn close_endpoints(&self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Ok(mut endpoints) = self.endpoints.lock() {
            for (_, bound) in endpoints.drain() {
                bound.close();
            }
        }
    }

    /// Serves the public listener until `shutdown` completes, then lets open requests
    /// finish.
    pub async fn serve_public(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        self.accept_loop(Arc::new(listener), Arc::new(Listener::Public), shutdown)
            .await;
    }

    /// Connections open now on all listeners, and those refused so far at the caps (over
    /// the per-source cap, over the total cap).
    pub fn connection_counts(&self) -> (usize, (u64, u64)) {
        (self.caps.open(), self.caps.refused())
    }

    async fn accept_loop(
        self: Arc<Self>,
        socket: Arc<TcpListener>,
        listener: Arc<Listener>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let name = listener.to_string();
        let gateway = self.clone();
        let make = move |accepted: Accepted| {
            let gateway = gateway.clone();
            let listener = listener.clone();
            let Accepted {
                peer: source,
                local,
                activity,
            } = accepted;
            hyper::service::service_fn(move |req: Request<Incoming>| {
                let in_flight = activity.begin(req.version());
                let gateway = gateway.clone();
                let listener = listener.clone();
                async move {
                    let resp = gateway.handle(listener, source, local, req).await;
                    Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
                }
            })
        };
        conn::serve(
            socket,
            self.config.tls.clone(),
            self.config.connections.clone(),
            self.caps.clone(),
            u32::try_from(self.config.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            name,
            make,
            stop,
        )
        .await;
    }

    async fn handle(
        &self,
        listener: Arc<Listener>,
        source: SocketAddr,
        local: SocketAddr,
        req: Request<Incoming>,
    ) -> Response {
        let (req, stalled) = conn::timed_request(req, self.config.connections.body_timeout);
        let version = req.version();
        let decision = self.decide_request(&listener, source, local, &req);
        let mut seen = Seen {
            observer: &*self.observer,
            listener: &listener,
            source,
            started: std::time::Instant::now(),
            correlation_id: uuid::Uuid::new_v4().to_string(),
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            service: decision.service.clone(),
            verdict: decision.reason(),
            told: false,
        };
        let mut resp = self.serve(decision, &listener, source, req).await;
        if stalled.is_some_and(|flag| flag.stalled()) {
            // Whatever the data plane made of the failed read, the client is told why: 408,
            // and over HTTP/1 the connection closes, its framing being lost (RFC 9110
            // §15.5.9).
            resp = closing(
                FhirError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    IssueCode::Exception,
                    format!(
                        "the request body stopped arriving for more than {} ms",
                        self.config.connections.body_timeout.as_millis()
                    ),
                ),
                version,
            );
        }
        if let Ok(v) = http::HeaderValue::from_str(&seen.correlation_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        seen.tell(
            resp.status(),
            resp.extensions().get::<Arc<Caller>>().map(|c| &**c),
        );
        resp
    }

    /// The access decision for one request, logged.
    fn decide_request(
        &self,
        listener: &Listener,
        source: SocketAddr,
        local: SocketAddr,
        req: &Request<TimedBody<Incoming>>,
    ) -> crate::Decision {
        let view = self.view.load();
        // Read as fhir-api reads it, but it is this decision that counts.
        let host = fhir_api::service::request_host(req.headers(), req.uri());
        let decision = decide(
            &view,
            &Connection {
                listener,
                source,
                local,
                host,
            },
        );
        // Every decision is in the audit log (with the request's path and query, which
        // application logs never carry). Refusals are logged here too, for operators;
        // admissions only at debug, so that a busy server does not log each request twice.
        if decision.allowed() {
            tracing::debug!(
                target: "fhirlink::access",
                service = %decision.service,
                path = %listener,
                source = %source,
                method = %req.method(),
                verdict = decision.reason(),
                "access decision"
            );
        } else {
            tracing::info!(
                target: "fhirlink::access",
                service = %decision.service,
                path = %listener,
                source = %source,
                method = %req.method(),
                verdict = decision.reason(),
                "access refused"
            );
        }
        decision
    }

    /// A refusal, or the data plane's answer with the admitted service.
    async fn serve(
        &self,
        decision: crate::Decision,
        listener: &Arc<Listener>,
        source: SocketAddr,
        mut req: Request<TimedBody<Incoming>>,
    ) -> Response {
        if let Some(message) = decision.message() {
            let refusal = FhirError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, message);
            return refuse(req, refusal).await;
        }
        if let Err(malformed) = self.check_head(&req) {
            return refuse(req, malformed).await;
        }
        // RFC 9110 §15.5.14: refused on the declared length, before the body is polled —
        // hyper sends `100 Continue` only when it is, so an `Expect: 100-continue` client
        // is not invited to send what would be refused.
        let declared = req.body().size_hint().lower();
        if declared > self.config.max_body_bytes as u64 {
            let too_large = FhirError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                IssueCode::TooLong,
                format!(
                    "the request body of {declared} bytes exceeds the limit of {} bytes",
                    self.config.max_body_bytes
                ),
            );
            return closing(too_large, req.version());
        }
        let extensions = req.extensions_mut();
        extensions.insert(AdmittedService(decision.service));
        extensions.insert(Admission {
            listener: listener.clone(),
            source,
        });
        match self.app.clone().oneshot(req.map(Body::new)).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }

    /// What hyper lets through but the data plane refuses, each with an OperationOutcome:
    /// targets and header sections over the configured sizes, and the Host rules of RFC
    /// 9112 §3.2 and RFC 9113 §8.3.1. (The Host only chooses a service; access was decided
    /// on the socket's addresses before this.)
    fn check_head<B>(&self, req: &Request<B>) -> Result<(), FhirError> {
        let uri = req.uri();
        let target = uri.path_and_query().map_or(0, |p| p.as_str().len())
            + uri.authority().map_or(0, |a| a.as_str().len());
        if target > self.config.max_uri_bytes {
            return Err(FhirError::new(
                StatusCode::URI_TOO_LONG,
                IssueCode::TooLong,
                format!(
                    "the request target is longer than {} bytes; search with POST [base]/[type]/_search instead",
                    self.config.max_uri_bytes
                ),
            ));
        }
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        if header_bytes > self.config.max_header_bytes {
            return Err(FhirError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                IssueCode::TooLong,
                format!(
                    "the request's header fields are larger than {} bytes",
                    self.config.max_header_bytes
                ),
            ));
        }
        check_host(req.version(), req.headers(), uri).map_err(FhirError::bad_request)
    }
}

/// The Host rules. RFC 9112 §3.2: an HTTP/1.1 request without a Host, with more than one,
/// or with an invalid one is answered 400. RFC 9113 §8.3.1: an HTTP/2 request whose Host
/// names another authority than its `:authority` is malformed. RFC 9110 §4.2.4: a target
/// with userinfo is an error. (An absolute-form target wins over a differing Host, RFC 9112
/// §3.2.2: `fhir_api::service::request_host` reads it first.)
fn check_host(
    version: Version,
    headers: &http::HeaderMap,
    uri: &http::Uri,
) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err("the request carries more than one Host header (RFC 9112 §3.2)");
    }
    if host.is_none() && version == Version::HTTP_11 {
        return Err("an HTTP/1.1 request must carry a Host header (RFC 9112 §3.2)");
    }
    if host.is_some_and(|value| !valid_authority(value.as_bytes())) {
        return Err("the Host header is not a valid host[:port] (RFC 9110 §7.2)");
    }
    let Some(authority) = uri.authority() else {
        return Ok(());
    };
    if authority.as_str().contains('@') {
        return Err("the request target carries userinfo (RFC 9110 §4.2.4)");
    }
    if version == Version::HTTP_2 {
        // Valid above, so ASCII: `to_str` cannot fail.
        if let Some(host) = host.and_then(|value| value.to_str().ok()) {
            if !same_authority(authority.as_str(), host, uri.scheme_str()) {
                return Err(
                    "the Host header names another authority than :authority (RFC 9113 §8.3.1)",
                );
            }
        }
    }
    Ok(())
}

/// `uri-host [ ":" port ]` as RFC 9110 §7.2 has it, by its characters: a reg-name or IPv4
/// address (unreserved, pct-encoded, sub-delims), or an IP literal in brackets, then a port
/// of digits. Empty is allowed (a target without authority, §7.2). One table lookup a byte:
/// this runs on every request.
fn valid_authority(host: &[u8]) -> bool {
    let mut brackets = 0u32;
    for &b in host {
        if !AUTHORITY_BYTES[usize::from(b)] {
            return false;
        }
        brackets += u32::from(b == b'[');
    }
    brackets <= 1
}

/// The bytes [`valid_authority`] lets through (RFC 3986 §3.2.2, §3.2.3).
static AUTHORITY_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
                    | b':'
                    | b'['
                    | b']'
            );
        i += 1;
    }
    table
};

/// Whether two authorities name the same origin after RFC 3986 §6.2.3's normalisation:
/// the host compared without case, an empty or the scheme's default port as no port.
fn same_authority(a: &str, b: &str, scheme: Option<&str>) -> bool {
    let default_port = match scheme {
        Some(s) if s.eq_ignore_ascii_case("https") => "443",
        Some(s) if s.eq_ignore_ascii_case("http") => "80",
        _ => "",
    };
    let split = |s: &str| -> (String, String) {
        let (host, port) = match s.rfind(':') {
            Some(i) if !s[i..].contains(']') => (&s[..i], &s[i + 1..]),
            _ => (s, ""),
        };
        let port = if port == default_port { "" } else { port };
        (host.to_ascii_lowercase(), port.to_owned())
    };
    split(a) == split(b)
}

/// `refusal` as the answer to `req`, after reading what the client is still sending (at
/// most [`fhir_api::DRAIN_LIMIT`], so that it hears the answer instead of a reset); a body
/// declared longer than that is not read at all, and over HTTP/1 the connection closes.
async fn refuse(req: Request<TimedBody<Incoming>>, refusal: FhirError) -> Response {
    if req.body().size_hint().lower() > fhir_api::DRAIN_LIMIT as u64 {
        return closing(refusal, req.version());
    }
    fhir_api::drain(Body::new(req.into_body())).await;
    refusal.into_response()
}

/// `error` as a response after which an HTTP/1 connection closes (its body left unread);
/// HTTP/2 has no such header (RFC 9113 §8.2.2) and resets the stream instead.
fn closing(error: FhirError, version: Version) -> Response {
    let mut resp = error.into_response();
    if version < Version::HTTP_2 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// The status an exchange is reported with when the client went away before its response
/// was ready (nginx's "client closed request").
pub const CLIENT_CLOSED_REQUEST: u16 = 499;

/// One request on its way through, so that the observer is told of it exactly once: with
/// its response, or — when the client goes away first and hyper drops the request's future
/// — with [`CLIENT_CLOSED_REQUEST`] as it is dropped.
struct Seen<'a> {
    observer: &'a dyn Observer,
    listener: &'a Listener,
    source: SocketAddr,
    started: std::time::Instant,
    correlation_id: String,
    method: http::Method,
    path: String,
    query: Option<String>,
    service: String,
    verdict: &'static str,
    told: bool,
}

impl Seen<'_> {
    fn tell(&mut self, status: StatusCode, caller: Option<&Caller>) {
        self.told = true;
        self.observer.observe(&Exchange {
            service: &self.service,
            listener: self.listener,
            source: self.source,
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            status,
            duration: self.started.elapsed(),
            verdict: self.verdict,
            correlation_id: &self.correlation_id,
            caller,
        });
    }
}

impl Drop for Seen<'_> {
    fn drop(&mut self) {
        if !self.told {
            let status =
                StatusCode::from_u16(CLIENT_CLOSED_REQUEST).unwrap_or(StatusCode::BAD_REQUEST);
            self.tell(status, None);
        }
    }
}

/// A listening socket on `addr` that can be bound again at once after it is closed
/// (`SO_REUSEADDR`: connections of the old one may linger in TIME_WAIT).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn wait_for_stop(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}
