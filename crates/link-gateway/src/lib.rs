//! The data plane's network front door: the public listener, a listener per private
//! endpoint whose connection is Approved, and the access decision made on every request
//! before the FHIR API sees it.
//!
//! - [`decide()`]: the pure decision of (view of the plan, listener, source address, Host).
//!   Public access, the endpoint's connection state, the endpoint's network and its peerings,
//!   and the security rules of the subnets on the way. Client-supplied headers
//!   (X-Forwarded-For, Forwarded) are never read; the Host chooses a service, never a path.
//! - [`GatewayView`]: the [`link_model::Plan`] indexed for decisions.
//! - [`Gateway`]: owns the listeners, reconciles them to each new plan before the
//!   management call that produced it answers, and serves the FHIR router behind the
//!   decision. Every connection runs under [`ConnectionLimits`] (link-auth's `conn`: a
//!   deadline on each phase, caps per source and in total), and what hyper lets through but
//!   the data plane refuses (a body declared over the limit, an oversized target or header
//!   section, a bad Host) is answered with an OperationOutcome before the router sees it.
//!
//! - [`auth`]: after the decision, the bearer token: [`auth::DataAuth`] verifies it against
//!   the admitted service's issuer and audience and hands fhir-api the caller's
//!   `fhir_api::Access` (or answers 401), and the service's `fhir_api::access::Security` for
//!   the CapabilityStatement and SMART configuration that fhir-api builds.
//!
//! This crate knows HTTP and sockets, and the FHIR API only by its router, its service
//! naming and the `Access` and `Security` it hands it; it never touches the store or the
//! control-plane state itself (it follows the plan it is given).

pub mod auth;
mod decide;
mod nsg;
mod serve;
mod view;

pub use decide::{decide, Connection, Decision, Denial, Listener, Verdict};
pub use link_auth::conn::ConnectionLimits;
pub use serve::{
    Admission, Caller, Exchange, Gateway, GatewayConfig, Observer, CLIENT_CLOSED_REQUEST,
};
pub use view::GatewayView;
