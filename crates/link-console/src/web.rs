//! The console's HTTP side: routes, the security headers of every answer, sign-in and
//! sign-out, the session cookie, CSRF checks, live updates and the embedded assets.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use maud::{html, Markup};
use tokio::sync::watch;

use crate::api::{Api, Caller};
use crate::blades::{self, Page};
use crate::forms::FormState;
use crate::session::{same_secret, Session, Sessions, SESSION_LIFETIME_SECS};

/// The session cookie. `__Host-`: the browser keeps it only if it is `Secure`, has
/// `Path=/` and no `Domain` — no other host or path can set or shadow it.
pub const COOKIE: &str = "__Host-fhirlink-console";
/// `POST` here (behind the management API's authentication) makes a sign-in code for the
/// caller: `fhirlink console` asks for it.
pub const CODE_PATH: &str = "/fhirlink/console/codes";
/// The largest form the console accepts.
const MAX_FORM_BYTES: usize = 64 * 1024;
/// How long one event stream stays open before the browser reconnects (so that a server
/// shutting down never waits long for one).
const EVENT_STREAM_SECS: u64 = 300;

/// The policy of every console page: only the console's own script and style, no inline
/// script or style, no framing, forms post only here.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; \
                   frame-ancestors 'none'";

pub(crate) struct Console {
    pub(crate) api: Api,
    pub(crate) sessions: Sessions,
    pub(crate) changes: watch::Receiver<Arc<link_model::State>>,
    pub(crate) subscription: String,
    /// Samples of the request and denial totals (time, requests, denials), for the charts.
    pub(crate) samples: std::sync::Mutex<Vec<(i64, f64, f64)>>,
}

/// The most samples the metrics charts keep (an hour at one per ten seconds).
const MAX_SAMPLES: usize = 360;

impl Console {
    /// Records a sample (at most one a second) and returns them all, oldest first.
    pub(crate) fn sample(&self, now: i64, requests: f64, denials: f64) -> Vec<(i64, f64, f64)> {
        let mut samples = self
            .samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A restarted server's counters start again: so do the samples.
        if samples.last().is_some_and(|l| l.1 > requests) {
            samples.clear();
        }
        if samples.last().is_none_or(|l| l.0 < now) {
            samples.push((now, requests, denials));
        }
        if samples.len() > MAX_SAMPLES {
            let extra = samples.len() - MAX_SAMPLES;
            samples.drain(..extra);
        }
        samples.clone()
    }
}

/// One signed-in request: the console, the session and the browser's address.
pub(crate) struct Ctx<'a> {
    pub(crate) console: &'a Console,
    pub(crate) session: &'a Session,
    pub(crate) source: Option<SocketAddr>,
}

impl Ctx<'_> {
    pub(crate) fn caller(&self) -> Caller<'_> {
        Caller {
            principal: &self.session.principal,
            source: self.source,
        }
    }

    pub(crate) fn api(&self) -> &Api {
        &self.console.api
    }

    pub(crate) fn csrf(&self) -> &str {
        &self.session.csrf
    }

    pub(crate) fn subscription(&self) -> String {
        format!("/subscriptions/{}", self.console.subscription)
    }
}

pub(crate) fn router(console: Arc<Console>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/console", get(page))
        .route("/console/r/{*id}", get(page))
        .route("/console/create-endpoint", get(page))
        .route("/console/diagnose", get(page))
        .route("/console/metrics", get(page))
        .route("/console/audit", get(page))
        .route("/console/subnets", get(subnets))
        .route("/console/signin", get(signin))
        .route("/console/signout", post(signout))
        .route("/console/events", get(events))
        .route("/console/assets/{file}", get(asset))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/console/do/{action}", post(action))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// The route that makes sign-in codes, for the management router (inside its
/// authentication: the request carries the verified `link_model::Principal`). A code signs
/// in as the principal that asked for it, never as another.
pub fn code_router(sessions: Sessions) -> Router {
    Router::new()
        .route(CODE_PATH, post(create_code))
        .with_state(sessions)
}

async fn create_code(
    State(sessions): State<Sessions>,
    Extension(who): Extension<link_model::Principal>,
) -> Response {
    match sessions.create_code(&who.id, now()).await {
        Ok(code) => Json(serde_json::json!({
            "path": format!("/console/signin?code={code}"),
            "expiresInSeconds": crate::session::CODE_LIFETIME_SECS,
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "console: no sign-in code");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({"error": {"code": "ServiceUnavailable", "message": "The sign-in code could not be stored; try again."}})),
            )
                .into_response()
        }
    }
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn security_headers(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    for (name, value) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The session cookie's value in a request, if exactly one is there.
fn cookie_value(headers: &HeaderMap) -> Option<String> {
    let mut found = None;
    for value in headers.get_all(header::COOKIE) {
        let Ok(value) = value.to_str() else { continue };
        for pair in value.split(';') {
            if let Some((name, v)) = pair.trim().split_once('=') {
                if name == COOKIE {
                    if found.is_some() {
                        return None;
                    }
                    found = Some(v.to_owned());
                }
            }
        }
    }
    found
}

/// The request's live session, or why there is none.
async fn session_of(console: &Console, headers: &HeaderMap) -> Result<Session, Response> {
    let Some(id) = cookie_value(headers) else {
        return Err(signed_out(StatusCode::UNAUTHORIZED, None));
    };
    match console.sessions.find(&id, now()).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(signed_out(
            StatusCode::UNAUTHORIZED,
            Some("Your session has ended or is not valid. Sign in again."),
        )),
        Err(e) => {
            tracing::warn!(error = %e, "console: session lookup failed");
            Err(bare_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                html! { p { "The session store cannot be read now; try again." } },
            ))
        }
    }
}

/// A page outside a session.
fn bare_page(status: StatusCode, title: &str, body: Markup) -> Response {
    let page = html! {
        (maud::DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " — fhirlink console" }
                link rel="stylesheet" href="/console/assets/console.css";
            }
            body {
                header.top { span.brand { "fhirlink console" } }
                main id="main" { h1 { (title) } (body) }
            }
        }
    };
    (status, page).into_response()
}

fn signed_out(status: StatusCode, note: Option<&str>) -> Response {
    bare_page(
        status,
        "Sign in",
        html! {
            @if let Some(n) = note { p.notice role="alert" { (n) } }
            p { "Run " code { "fhirlink console --principal NAME" } " on the server's host and open the one-time URL it prints (it is valid for two minutes and works once)." }
        },
    )
}

/// The browser's address, as the listener saw it (never a header).
fn source_of(req: &Request) -> Option<SocketAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// `GET /console/signin?code=…`: the code is exchanged (once) for a session cookie and the
/// browser goes on to `/`, so that the code does not stay in the address bar or history.
async fn signin(
    State(console): State<Arc<Console>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let code = query.get("code").map(String::as_str).unwrap_or("");
    match console.sessions.exchange(code, now()).await {
        Ok(Some((id, session))) => {
            tracing::info!(principal = %session.principal, "console: signed in");
            let cookie = format!(
                "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={SESSION_LIFETIME_SECS}"
            );
            let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Ok(None) => signed_out(
            StatusCode::UNAUTHORIZED,
            Some("This sign-in code is unknown, has expired or was used already."),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "console: sign-in failed");
            bare_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Unavailable",
                html! { p { "The session store cannot be written now; try again." } },
            )
        }
    }
}

/// Whether a form's CSRF token is the session's. The browser's `Sec-Fetch-Site`, when it
/// sends one, must not say the form came from another site either.
fn csrf_ok(session: &Session, headers: &HeaderMap, form: &HashMap<String, String>) -> bool {
    let cross_site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site");
    let token = form.get("csrf").map(String::as_str).unwrap_or("");
    !cross_site && !token.is_empty() && same_secret(token, &session.csrf)
}

fn csrf_refused() -> Response {
    bare_page(
        StatusCode::FORBIDDEN,
        "Refused",
        html! { p role="alert" { "This form did not come from your console session (its CSRF token is missing or wrong). Nothing was changed. Reload the page and try again." } },
    )
}

/// The fields of a urlencoded form; a repeated field keeps its first value.
fn parse_form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

async fn signout(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let session = match session_of(&console, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    if !csrf_ok(&session, &headers, &parse_form(&body)) {
        return csrf_refused();
    }
    if let Some(id) = cookie_value(&headers) {
        if let Err(e) = console.sessions.end(&id).await {
            tracing::warn!(error = %e, "console: sign-out not stored");
        }
    }
    let mut resp = signed_out(StatusCode::OK, Some("You are signed out."));
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0"
    )) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /console/events`: one `change` event each time the control plane's state changes.
async fn events(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    if let Err(resp) = session_of(&console, &headers).await {
        return resp;
    }
    let mut rx = console.changes.clone();
    rx.borrow_and_update();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(EVENT_STREAM_SECS);
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {
                rx.borrow_and_update();
                Some((
                    Ok::<_, Infallible>(Event::default().event("change").data("state")),
                    rx,
                ))
            }
            _ => None,
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// `GET /console/subnets?vnet=ID`: a virtual network's subnets as `[{id, label}]`, for the
/// subnet choice of Create a private endpoint (read as the session's principal).
async fn subnets(State(console): State<Arc<Console>>, req: Request) -> Response {
    let session = match session_of(&console, req.headers()).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let query: HashMap<String, String> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    let vnet = query.get("vnet").map(String::as_str).unwrap_or("");
    if !vnet.starts_with("/subscriptions/") || vnet.contains('?') || vnet.contains("..") {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let ctx = Ctx {
        console: &console,
        session: &session,
        source: source_of(&req),
    };
    let options = blades::subnet_options(&ctx, vnet).await;
    Json(
        options
            .into_iter()
            .map(|(id, label)| serde_json::json!({"id": id, "label": label}))
            .collect::<Vec<_>>(),
    )
    .into_response()
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.js" => (
            include_str!("../assets/console.js"),
            "text/javascript; charset=utf-8",
        ),
        "console.css" => (
            include_str!("../assets/console.css"),
            "text/css; charset=utf-8",
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Every blade: the page named by the request's path and query.
async fn page(State(console): State<Arc<Console>>, req: Request) -> Response {
    let source = source_of(&req);
    let session = match session_of(&console, req.headers()).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let target = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let ctx = Ctx {
        console: &console,
        session: &session,
        source,
    };
    render(&ctx, &target, None, StatusCode::OK).await
}

/// Renders the page at `target` (a console path with its query), with a submitted form.
async fn render(
    ctx: &Ctx<'_>,
    target: &str,
    form: Option<&FormState>,
    status: StatusCode,
) -> Response {
    let Some(page) = Page::parse(target) else {
        return (StatusCode::NOT_FOUND, blades::not_found(ctx, target)).into_response();
    };
    let (refused, markup) = blades::render(ctx, &page, form).await;
    let status = refused
        .and_then(|s| StatusCode::from_u16(s).ok())
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(status);
    (status, markup).into_response()
}

/// `POST /console/do/{action}`: one change, made by ARM calls as the session's principal;
/// on success the browser goes back to the page it came from, on failure that page is
/// shown again with what was typed and the ARM error beside its field.
async fn action(
    State(console): State<Arc<Console>>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    let source = source_of(&req);
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let Ok(body) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return bare_page(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Too large",
            html! { p { "The form is larger than the console accepts." } },
        );
    };
    let session = match session_of(&console, &headers).await {
        Ok(s) => s,
        Err(resp) => return resp,
    };
    let values = parse_form(&body);
    if !csrf_ok(&session, &headers, &values) {
        return csrf_refused();
    }
    let ctx = Ctx {
        console: &console,
        session: &session,
        source,
    };
    let back = values
        .get("back")
        .filter(|b| Page::parse(b).is_some())
        .cloned()
        .unwrap_or_else(|| "/".into());
    match blades::act(&ctx, &name, &values).await {
        Ok(next) => {
            let next = next.filter(|n| Page::parse(n).is_some()).unwrap_or(back);
            (StatusCode::SEE_OTHER, [(header::LOCATION, next)]).into_response()
        }
        Err((field, err)) => {
            let status = StatusCode::from_u16(err.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::BAD_REQUEST);
            let state = FormState {
                form: values.get("form").cloned().unwrap_or_default(),
                values,
                error: Some((field, err)),
            };
            render(&ctx, &back, Some(&state), status).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_session_cookie_or_none() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-fhirlink-console=xyz; b=2"),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("xyz"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("__Host-fhirlink-console=other"),
        );
        assert_eq!(
            cookie_value(&h),
            None,
            "two session cookies: neither is trusted"
        );
        assert_eq!(cookie_value(&HeaderMap::new()), None);
    }
}
