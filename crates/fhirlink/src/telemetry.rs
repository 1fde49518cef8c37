//! What each request leaves behind: exactly one audit record ([`crate::audit`]) and its
//! metrics ([`crate::metrics`]), for the data plane through the gateway's
//! [`Observer`], for the management plane through [`management`], a layer around
//! authentication (so that refused tokens are recorded too).
//!
//! The plan says where a service's audit records are exported (its diagnostic settings with
//! AuditLogs) and which names are services and endpoints; [`Telemetry::apply`] is handed
//! each new plan with the gateway's and DNS's, and swaps a [`Directory`] in whole. Nothing
//! here decides access: it only writes down what was decided.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use link_dns::DnsServer;
use link_gateway::{Exchange, Listener, Observer};
use link_model::{ArmAction, Plan, Principal};

use crate::audit::{self, AuditLog, Record};
use crate::metrics::{InteractionLabel, Labels, Metrics, Sample};

/// The network path of management requests, in records and metrics.
const MANAGEMENT: &str = "management";
/// The label of a service or endpoint the plan does not know.
const UNKNOWN: &str = "unknown";

/// The plan, as records and metrics need it.
#[derive(Debug, Default)]
struct Directory {
    /// Lowercase service name → its metric label id and its export files.
    services: HashMap<String, Service>,
    /// Lowercase private endpoint id → the label id of its name.
    endpoints: HashMap<String, u32>,
}

#[derive(Debug)]
struct Service {
    label: u32,
    /// Relative to the audit folder; None without AuditLogs exports.
    exports: Option<Arc<[PathBuf]>>,
}

/// Label ids that exist from the start.
#[derive(Debug, Clone, Copy)]
struct Fixed {
    none: u32,
    unknown: u32,
    public: u32,
    management: u32,
}

/// The audit log and the metrics, fed by both planes.
pub(crate) struct Telemetry {
    audit: AuditLog,
    metrics: Metrics,
    labels: Mutex<Labels>,
    fixed: Fixed,
    directory: ArcSwap<Directory>,
}

impl Telemetry {
    /// Starts the audit writer on `audit_dir`.
    pub(crate) fn start(audit_dir: &Path) -> std::io::Result<Arc<Telemetry>> {
        let mut labels = Labels::default();
        let fixed = Fixed {
            none: labels.id(""),
            unknown: labels.id(UNKNOWN),
            public: labels.id("public"),
            management: labels.id(MANAGEMENT),
        };
        Ok(Arc::new(Telemetry {
            audit: AuditLog::start(audit_dir)?,
            metrics: Metrics::default(),
            labels: Mutex::new(labels),
            fixed,
            directory: ArcSwap::from_pointee(Directory::default()),
        }))
    }

    /// Exports and labels from `plan` from now on.
    pub(crate) fn apply(&self, plan: &Plan) {
        let mut labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let mut directory = Directory::default();
        for svc in &plan.services {
            let name = svc.name.to_ascii_lowercase();
            let files: Vec<PathBuf> = svc
                .diagnostics
                .iter()
                .filter(|d| d.audit_logs)
                .map(|d| audit::export_file(&name, &d.name, &d.destination))
                .collect();
            for e in &svc.endpoints {
                directory
                    .endpoints
                    .insert(e.id.to_ascii_lowercase(), labels.id(&e.name));
            }
            directory.services.insert(
                name.clone(),
                Service {
                    label: labels.id(&name),
                    exports: (!files.is_empty()).then(|| files.into()),
                },
            );
        }
        self.directory.store(Arc::new(directory));
    }

    /// The `/metrics` text.
    pub(crate) fn render_metrics(&self, dns: &DnsServer) -> String {
        let labels = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        self.metrics.render(
            &labels,
            dns,
            self.audit.dropped(),
            self.audit.write_errors(),
        )
    }

    /// Writes what is queued and syncs the audit files (at shutdown).
    pub(crate) fn close(&self) {
        self.audit.close();
    }

    fn management_request(&self, m: &ManagementExchange<'_>) {
        let action = audit::arm_action(m.method, m.path, m.decided);
        let status = m.status.as_u16();
        let verdict = match status {
            401 => "unauthenticated",
            403 => "forbidden",
            _ => "allowed",
        };
        let (source_address, source_port) = Record::source(m.source);
        let record = Record {
            time: Record::arrival(m.duration),
            service: action.service.as_deref().map(Into::into),
            action: action.name.into(),
            resource_type: action.resource_type.map(Into::into),
            resource_id: action.resource_id.as_deref(),
            method: m.method.as_str(),
            path: m.path,
            query: m.query,
            network_path: MANAGEMENT,
            source_address,
            source_port,
            status,
            duration_ms: Record::millis(m.duration),
            correlation_id: m.correlation_id,
            principal: m.principal.map(|p| p.id.as_str()),
            client_id: None,
            verdict,
        };
        self.audit.write(&record, None);
        self.metrics.record(&Sample {
            service: self.fixed.none,
            path: self.fixed.management,
            kind: InteractionLabel::Arm(action.name),
            status,
            denial: (verdict != "allowed").then_some(verdict),
            duration: m.duration,
        });
    }
}

impl Observer for Telemetry {
    fn observe(&self, e: &Exchange<'_>) {
        let directory = self.directory.load();
        let action = fhir_api::interaction::classify(e.method, e.path);
        let status = e.status.as_u16();
        let network_path = match e.listener {
            Listener::Public => "public",
            Listener::Endpoint(id) => id.as_str(),
        };
        let service = directory.services.get(e.service);
        // Refused by the network rules, else by the identity layers behind the gateway.
        let denial = match (e.verdict, status) {
            ("allowed", 401) => Some("unauthenticated"),
            ("allowed", 403) => Some("forbidden"),
            ("allowed", _) => None,
            (reason, _) => Some(reason),
        };
        let record = Record {
            time: Record::arrival(e.duration),
            service: Some(e.service.into()),
            action: action.kind.as_str().into(),
            resource_type: action.resource_type.clone(),
            resource_id: action.resource_id.as_deref(),
            method: e.method.as_str(),
            path: e.path,
            query: e.query,
            network_path,
            source_address: Some(e.source.ip()),
            source_port: Some(e.source.port()),
            status,
            duration_ms: Record::millis(e.duration),
            correlation_id: e.correlation_id,
            principal: e.caller.map(|c| c.principal.as_str()),
            client_id: e.caller.and_then(|c| c.client_id.as_deref()),
            verdict: denial.unwrap_or("allowed"),
        };
        self.audit
            .write(&record, service.and_then(|s| s.exports.clone()));
        let path = match e.listener {
            Listener::Public => self.fixed.public,
            Listener::Endpoint(id) => directory
                .endpoints
                .get(id)
                .copied()
                .unwrap_or(self.fixed.unknown),
        };
        self.metrics.record(&Sample {
            service: service.map_or(self.fixed.unknown, |s| s.label),
            path,
            kind: InteractionLabel::Fhir(action.kind),
            status,
            denial,
            duration: e.duration,
        });
    }
}

/// One management request as [`management`] saw it through.
struct ManagementExchange<'a> {
    method: &'a axum::http::Method,
    path: &'a str,
    query: Option<&'a str>,
    source: Option<SocketAddr>,
    status: StatusCode,
    duration: std::time::Duration,
    correlation_id: &'a str,
    principal: Option<&'a Principal>,
    /// The action `link-api` decided, from the response's extensions (None: refused before).
    decided: Option<&'a ArmAction>,
}

/// Where [`remember_principal`], inside authentication, leaves the verified principal for
/// [`management`] outside it (a request extension both see).
#[derive(Debug, Clone, Default)]
struct PrincipalSlot(Arc<Mutex<Option<Principal>>>);

/// One management request on its way through, so that it is recorded exactly once: with
/// its response, or — when the client goes away first and the request's future is dropped —
/// with status 499 as it is dropped.
struct Seen<'a> {
    telemetry: &'a Telemetry,
    started: Instant,
    correlation_id: String,
    method: axum::http::Method,
    path: String,
    query: Option<String>,
    source: Option<SocketAddr>,
    principal: PrincipalSlot,
    told: bool,
}

impl Seen<'_> {
    fn tell(&mut self, status: StatusCode, decided: Option<&ArmAction>) {
        self.told = true;
        let principal = self
            .principal
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.telemetry.management_request(&ManagementExchange {
            method: &self.method,
            path: &self.path,
            query: self.query.as_deref(),
            source: self.source,
            status,
            duration: self.started.elapsed(),
            correlation_id: &self.correlation_id,
            principal: principal.as_ref(),
            decided,
        });
    }
}

impl Drop for Seen<'_> {
    fn drop(&mut self) {
        if !self.told {
            let status = StatusCode::from_u16(link_gateway::CLIENT_CLOSED_REQUEST)
                .unwrap_or(StatusCode::BAD_REQUEST);
            self.tell(status, None);
        }
    }
}

/// The management plane's layer, outside authentication: a correlation id for the request
/// (`x-request-id`, and ARM's `x-ms-request-id` and `x-ms-correlation-request-id`, so that
/// one id names the request everywhere), then one audit record and its metrics once the
/// response is ready — whether authentication let the request through or not.
pub(crate) async fn management(
    State(telemetry): State<Arc<Telemetry>>,
    mut req: Request,
    next: Next,
) -> Response {
    let principal = PrincipalSlot::default();
    req.extensions_mut().insert(principal.clone());
    let mut seen = Seen {
        telemetry: &telemetry,
        started: Instant::now(),
        correlation_id: uuid::Uuid::new_v4().to_string(),
        method: req.method().clone(),
        path: req.uri().path().to_owned(),
        query: req.uri().query().map(str::to_owned),
        source: req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0),
        principal,
        told: false,
    };
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&seen.correlation_id) {
        let h = resp.headers_mut();
        h.insert("x-request-id", v.clone());
        h.insert("x-ms-request-id", v.clone());
        h.insert("x-ms-correlation-request-id", v);
    }
    seen.tell(resp.status(), resp.extensions().get::<ArmAction>());
    resp
}

/// Inside authentication: hands the verified [`Principal`] out to [`management`]'s record.
pub(crate) async fn remember_principal(req: Request, next: Next) -> Response {
    if let (Some(who), Some(slot)) = (
        req.extensions().get::<Principal>(),
        req.extensions().get::<PrincipalSlot>(),
    ) {
        *slot.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(who.clone());
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use tower::ServiceExt as _;

    // Regression: a management request whose client goes away before the answer (its
    // future dropped) still leaves its one record.
    #[test]
    fn an_abandoned_management_request_is_recorded_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let telemetry = Telemetry::start(dir.path()).expect("start");
        let app = Router::new()
            .route("/slow", get(std::future::pending::<&'static str>))
            .route("/fast", get(|| async { "ok" }))
            .layer(axum::middleware::from_fn(remember_principal))
            .layer(axum::middleware::from_fn(
                |mut req: Request, next: Next| async move {
                    req.extensions_mut().insert(Principal {
                        id: "alice".into(),
                        issuer: "test".into(),
                    });
                    next.run(req).await
                },
            ))
            .layer(axum::middleware::from_fn_with_state(
                telemetry.clone(),
                management,
            ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let slow = Request::get("/slow").body(Body::empty()).expect("request");
            let dropped =
                tokio::time::timeout(Duration::from_millis(50), app.clone().oneshot(slow)).await;
            assert!(dropped.is_err(), "the slow route never answers");
            let fast = Request::get("/fast").body(Body::empty()).expect("request");
            let resp = app.oneshot(fast).await.expect("infallible");
            assert_eq!(resp.status(), StatusCode::OK);
        });
        telemetry.close();
        let text = std::fs::read_to_string(dir.path().join("audit.ndjson")).expect("audit");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(records.len(), 2, "{text}");
        let slow = &records[0];
        assert_eq!(slow["path"], "/slow");
        assert_eq!(slow["status"], 499);
        assert_eq!(slow["principal"], "alice");
        assert_eq!(records[1]["status"], 200);
    }

    // Issue #14: the management record names the action the router handed on in the
    // response's extensions (what link-model authorized), not a parse of the path; a request
    // answered without one (a 401 of the auth layer) is classified by link-model.
    #[test]
    fn a_management_record_takes_the_decided_action() {
        let dir = tempfile::tempdir().expect("tempdir");
        let telemetry = Telemetry::start(dir.path()).expect("start");
        let svc =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.HealthcareApis/services/MyFhir";
        let decided = ArmAction {
            name: "Microsoft.HealthcareApis/services/privateEndpointConnections/write",
            resource_type: Some("Microsoft.HealthcareApis/services/privateEndpointConnections"),
            resource_id: Some(format!("{svc}/privateEndpointConnections/c1")),
            service: Some("myfhir".into()),
        };
        let handed = decided.clone();
        let app = Router::new()
            .route(
                "/decided",
                get(move || {
                    let handed = handed.clone();
                    async move {
                        let mut resp = axum::response::IntoResponse::into_response("ok");
                        resp.extensions_mut().insert(handed);
                        resp
                    }
                }),
            )
            .route(
                "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups/g",
                get(|| async { StatusCode::UNAUTHORIZED }),
            )
            .layer(axum::middleware::from_fn_with_state(
                telemetry.clone(),
                management,
            ));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            for path in [
                "/decided",
                "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups/g",
            ] {
                let req = Request::get(path).body(Body::empty()).expect("request");
                app.clone().oneshot(req).await.expect("infallible");
            }
        });
        telemetry.close();
        let text = std::fs::read_to_string(dir.path().join("audit.ndjson")).expect("audit");
        let records: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(records.len(), 2, "{text}");
        let r = &records[0];
        assert_eq!(r["action"], decided.name);
        assert_eq!(
            r["resourceType"],
            "Microsoft.HealthcareApis/services/privateEndpointConnections"
        );
        assert_eq!(
            r["resourceId"],
            format!("{svc}/privateEndpointConnections/c1")
        );
        assert_eq!(r["service"], "myfhir");
        assert_eq!(r["path"], "/decided");
        let r = &records[1];
        assert_eq!(
            r["action"],
            "Microsoft.Resources/subscriptions/resourceGroups/read"
        );
        assert_eq!(r["verdict"], "unauthenticated");
        assert_eq!(
            r["resourceId"],
            "/subscriptions/6d1c0f2a-8b1e-4d4b-9c57-2f3a4b5c6d7e/resourceGroups/g"
        );
    }
}
