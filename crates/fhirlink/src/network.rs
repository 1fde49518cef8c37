//! The network plane as the control plane sees it: each new state becomes a plan, which the
//! DNS server and the gateway apply before the management call that made it answers (and
//! the audit log, which learns where each service's records are exported).

use std::sync::Arc;

use link_api::{EndpointFaults, NetworkPlane};
use link_dns::DnsServer;
use link_gateway::Gateway;
use link_model::State;

use crate::telemetry::Telemetry;

/// The gateway and the DNS server, driven together.
pub(crate) struct Wire {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) dns: Arc<DnsServer>,
    pub(crate) telemetry: Arc<Telemetry>,
}

impl NetworkPlane for Wire {
    fn apply(&self, state: &State) -> EndpointFaults {
        let plan = link_model::plan(state);
        self.dns.apply(&plan);
        self.telemetry.apply(&plan);
        self.gateway.apply(&plan)
    }
}
