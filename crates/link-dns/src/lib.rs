//! Split-horizon DNS for FHIR services behind private endpoints: each client is answered
//! according to the virtual network its source address lies in, the way Azure's DNS answers
//! a VM (the seed's nslookup section).
//!
//! - [`DnsView::answer`]: the answers as a pure function of (view of the plan, client
//!   address, question). No socket, no clock.
//! - [`DnsServer`]: the view behind an `ArcSwap`, swapped on each new plan, served over UDP
//!   and TCP by hickory-server, with optional forwarding of names that are not ours, and
//!   counts of the queries answered by view and response code ([`QueryCount`]).
//!
//! This crate knows DNS and the network plan; it knows nothing of HTTP, the store or the
//! control-plane state itself.

mod answer;
mod server;

pub use answer::{Answer, DnsConfig, DnsView, ViewName, TTL};
pub use server::{DnsServer, DnsSockets, QueryCount};
