//! The management serving loop: accepts TCP connections under the connection caps, runs the
//! TLS handshake (bounded in time, off the accept loop; skipped for plain HTTP), and serves an
//! axum [`Router`] over HTTP/1.1 or HTTP/2 as ALPN chose, every phase of a connection under a
//! deadline ([`crate::conn`]), until a shutdown signal; then stops accepting and lets open
//! requests finish. Plain HTTP (`--admin-plain-http`) runs the same loop under the same
//! limits: only the handshake is missing.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tower::ServiceExt as _;

use crate::conn::{self, Accepted, Caps, ConnectionLimits, Tracked};

/// What HTTP/2 clients are told they may send as a request's header section.
const MAX_HEADER_LIST_SIZE: u32 = 64 * 1024;

/// The management listener's default limits: [`ConnectionLimits::default`], with an eighth
/// of the connection budget (the data plane has the rest).
pub fn management_limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: (conn::connection_budget() / 8).max(16),
        ..ConnectionLimits::default()
    }
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, with
/// [`management_limits`].
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    app: Router,
    shutdown: impl Future<Output = ()>,
) {
    serve_with(listener, Some(tls), app, management_limits(), shutdown).await;
}

/// Serves `app` on `listener` under `limits` until `shutdown` completes: over TLS with
/// `tls`, over plain HTTP (HTTP/1.1, or HTTP/2 with prior knowledge) without.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let caps = Caps::new(&limits);
    let body_timeout = limits.body_timeout;
    let make = move |accepted: Accepted| {
        let app = app.clone();
        let peer = accepted.peer;
        let activity = accepted.activity;
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let in_flight = activity.begin(req.version());
            let app = app.clone();
            async move {
                let version = req.version();
                let (mut req, stalled) = conn::timed_request(req, body_timeout);
                // The client's address, as axum's `ConnectInfo`, for the layers that record it.
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                let resp = match app.oneshot(req.map(Body::new)).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                let resp = match stalled {
                    Some(flag) if flag.stalled() => request_timeout(version),
                    _ => resp,
                };
                Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, in_flight)))
            }
        })
    };
    conn::serve(
        Arc::new(listener),
        tls,
        limits,
        caps,
        MAX_HEADER_LIST_SIZE,
        "management".into(),
        make,
        shutdown,
    )
    .await;
}

/// 408 for a request whose body stopped arriving, in the shape ARM errors take; over
/// HTTP/1 the connection is closed after it (RFC 9110 §15.5.9), its framing being lost.
fn request_timeout(version: hyper::Version) -> Response {
    let body = serde_json::json!({
        "error": {
            "code": "RequestTimeout",
            "message": "the request body stopped arriving for longer than the body timeout",
        }
    });
    let mut resp = (hyper::StatusCode::REQUEST_TIMEOUT, axum::Json(body)).into_response();
    if version < hyper::Version::HTTP_2 {
        resp.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
    }
    resp
}
