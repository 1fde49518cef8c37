//! The network plane as the control plane sees it: each new state becomes a plan, which the
//! DNS server, the data plane's authentication and certificates, the gateway, and the audit
//! log (which learns where each service's records are exported) apply before the management
//! call that made it answers.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;

use link_api::{EndpointFaults, NetworkPlane};
use link_auth::service_tls::{DataPlaneCertificates, DataPlaneNames};
use link_dns::DnsServer;
use link_gateway::auth::DataAuth;
use link_gateway::Gateway;
use link_model::State;

use crate::telemetry::Telemetry;

/// Everything that follows the plan, driven together.
pub(crate) struct Wire {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) dns: Arc<DnsServer>,
    pub(crate) auth: Arc<DataAuth>,
    pub(crate) certs: Option<Arc<DataPlaneCertificates>>,
    pub(crate) public_ip: Ipv4Addr,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The data plane's set of existing services, from the plan.
    pub(crate) services: Arc<fhir_api::KnownServices>,
}

impl NetworkPlane for Wire {
    fn apply(&self, state: &State) -> EndpointFaults {
        let plan = link_model::plan(state);
        self.services
            .replace(plan.services.iter().map(|s| s.name.to_lowercase()));
        self.dns.apply(&plan);
        self.auth.apply(&plan);
        if let Some(certs) = &self.certs {
            let names = DataPlaneNames {
                services: plan
                    .services
                    .iter()
                    .map(|s| s.name.to_lowercase())
                    .collect(),
                addresses: plan
                    .services
                    .iter()
                    .flat_map(|s| s.endpoints.iter().map(|e| e.ip.into()))
                    .chain([self.public_ip.into()])
                    .collect::<BTreeSet<_>>(),
            };
            // Certificates first: a listener bound below must have one for its address.
            if let Err(e) = certs.update(&names) {
                tracing::error!(error = %e, "making the data plane's certificates");
            }
        }
        self.telemetry.apply(&plan);
        self.gateway.apply(&plan)
    }
}

/// The data plane of a node that has lost the change feed answers 503 rather than serve a
/// plan that may be old (one node of several; a single node always serves).
pub(crate) async fn fence(
    axum::extract::State(cp): axum::extract::State<Arc<link_api::ControlPlane>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if cp.serving() {
        return next.run(request).await;
    }
    let outcome = fhir_model::operation_outcome(&[fhir_model::Issue::error(
        fhir_model::IssueCode::Transient,
        "This node cannot read the deployment's current network policy; retry, or use another node.",
    )]);
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        [
            (axum::http::header::CONTENT_TYPE, "application/fhir+json"),
            (axum::http::header::RETRY_AFTER, "1"),
        ],
        outcome.to_string(),
    )
        .into_response()
}
