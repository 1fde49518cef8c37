//! The control plane of fhirlink as a pure model: ARM resources, the rules the source
//! documents define, authorization by role assignments, and the state machine that turns one
//! management request into a new state.
//!
//! This crate knows nothing of HTTP, sockets, the store or the clock: callers pass the time in
//! and persist the [`Changes`] that [`handle`] returns. `link-api` puts it behind an
//! ARM-shaped router; the network plane reads the same [`State`].

mod action;
mod authz;
mod error;
mod generic;
mod handle;
mod ipnet;
mod kind;
mod names;
mod path;
mod plan;
mod reconcile;
mod render;
mod rules;
mod state;
mod txn;
mod versions;

pub use action::{
    actions, classify, ArmAction, BACKUP_ACTION, BACKUP_PATH, CHECK_NAME_AVAILABILITY,
    DIAGNOSE_PATH, GROUP_RESOURCES_READ, METRICS_PATH, METRICS_READ, MOVE_RESOURCES,
    PROVIDERS_READ, SUBSCRIPTIONS_READ, SUBSCRIPTION_RESOURCES_READ, UNKNOWN_ACTION,
    UNKNOWN_DELETE, UNKNOWN_OTHER, UNKNOWN_READ, UNKNOWN_WRITE,
};
pub use authz::{
    allowed, may_back_up, role, Role, CONTRIBUTOR, DATA_DELETE, DATA_EXPORT, DATA_HARD_DELETE,
    DATA_IMPORT, DATA_READ, DATA_WRITE, FHIR_DATA_CONTRIBUTOR, FHIR_DATA_EXPORTER,
    FHIR_DATA_IMPORTER, FHIR_DATA_READER, FHIR_DATA_WRITER, NETWORK_CONTRIBUTOR, OWNER, READER,
    ROLES,
};
pub use error::ArmError;
pub use handle::{handle, Method, Outcome, Request, Response};
pub use ipnet::Prefix;
pub use kind::Kind;
pub use plan::{
    plan, ClientPlan, DataRights, DiagnosticExport, EndpointPlan, NetworkPlan, PeeringPlan, Plan,
    SecurityRule, ServicePlan, SubnetPlan, ZonePlan,
};
pub use render::{default_security_rules, render};
pub use rules::ensure_owner;
pub use state::{Resource, State};
pub use txn::Changes;

/// The private DNS zone of the FHIR service's private link resource (`requiredZoneNames`).
pub const PRIVATELINK_ZONE: &str = "privatelink.azurehealthcareapis.com";
/// The public DNS suffix of FHIR services in ARM JSON (`<service>.azurehealthcareapis.com`).
pub const SERVICE_DNS_SUFFIX: &str = "azurehealthcareapis.com";
/// The collection of the store's control-plane documents that holds ARM resources.
pub const DOCUMENT_COLLECTION: &str = "arm";

/// Who is calling: from a verified token. `id` is the principal id that role assignments name
/// (the token's `sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub id: String,
    pub issuer: String,
}

impl State {
    /// The private IP of a private endpoint, from its network interface.
    pub fn endpoint_ip(&self, private_endpoint: &Resource) -> Option<String> {
        reconcile::endpoint_ip(self, private_endpoint)
    }
}
