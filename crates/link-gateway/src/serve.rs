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
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use link_model::Plan;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::decide::{decide, Connection, Listener};
use crate::view::GatewayView;

/// How long a client may take to send a request's headers (HTTP/1.1).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long open connections of a closed listener get to finish their requests.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway needs to know of its deployment.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// DNS suffix of service host names (`<service>.<suffix>`).
    pub dns_suffix: String,
    /// The port of the public listener; endpoint listeners use the same one.
    pub port: u16,
    /// TLS for every listener (`None`: plain HTTP).
    pub tls: Option<Arc<rustls::ServerConfig>>,
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
        Arc::new(Gateway {
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

    async fn accept_loop(
        self: Arc<Self>,
        socket: Arc<TcpListener>,
        listener: Arc<Listener>,
        stop: impl Future<Output = ()> + Send + 'static,
    ) {
        let graceful = GracefulShutdown::new();
        let mut builder = Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        tokio::pin!(stop);
        loop {
            let (tcp, source) = tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        if matches!(*listener, Listener::Endpoint(_)) && e.raw_os_error() == Some(22) {
                            // EINVAL: the socket was shut down by `Bound::close`.
                            break;
                        }
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = %listener, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let local = match tcp.local_addr() {
                Ok(a) => a,
                Err(_) => continue,
            };
            let _ = tcp.set_nodelay(true);
            let gateway = self.clone();
            let listener = listener.clone();
            let service = tower::service_fn(move |req: Request<Incoming>| {
                let gateway = gateway.clone();
                let listener = listener.clone();
                async move { Ok::<_, Infallible>(gateway.handle(listener, source, local, req).await) }
            });
            let builder = builder.clone();
            let watcher = graceful.watcher();
            match self.config.tls.clone() {
                None => {
                    let conn = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(tcp),
                            TowerToHyperService::new(service),
                        )
                        .into_owned();
                    tokio::spawn(async move {
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%source, error = %e, "connection ended with an error");
                        }
                    });
                }
                Some(tls) => {
                    // The handshake runs off the accept loop, bounded in time.
                    tokio::spawn(async move {
                        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                                .await
                            {
                                Ok(Ok(s)) => s,
                                Ok(Err(e)) => {
                                    tracing::debug!(%source, error = %e, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%source, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let conn = builder
                            .serve_connection_with_upgrades(
                                TokioIo::new(stream),
                                TowerToHyperService::new(service),
                            )
                            .into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%source, error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(socket);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(listener = %listener, "connections still open after the drain timeout");
        }
    }

    async fn handle(
        &self,
        listener: Arc<Listener>,
        source: SocketAddr,
        local: SocketAddr,
        req: Request<Incoming>,
    ) -> Response {
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
        req: &Request<Incoming>,
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
        mut req: Request<Incoming>,
    ) -> Response {
        if let Some(message) = decision.message() {
            // Let the client finish sending before it is refused, so that it reads the 403.
            fhir_api::drain(Body::new(req.into_body())).await;
            return FhirError::new(StatusCode::FORBIDDEN, IssueCode::Forbidden, message)
                .into_response();
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
