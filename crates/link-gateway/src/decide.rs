//! The access decision: one pure function of (plan, listener, source address, Host). It
//! reads nothing else — no clock, no socket, no other header — so the same inputs always give
//! the same answer, and what a client sends can choose among services but never widen what
//! its network path allows.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use crate::nsg::{self, Direction, Flow};
use crate::view::GatewayView;

/// Which listener a connection arrived on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Listener {
    /// The public endpoint (`--listen`), shared by every service.
    Public,
    /// The listener of one private endpoint (its lowercase resource id).
    Endpoint(String),
}

/// The network path of a request, as audit records and logs name it.
impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listener::Public => f.write_str("public"),
            Listener::Endpoint(id) => f.write_str(id),
        }
    }
}

/// What is known of a request when it is decided.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    pub listener: &'a Listener,
    /// The client's address and port, as the socket reports it.
    pub source: SocketAddr,
    /// The address and port the client connected to.
    pub local: SocketAddr,
    /// The Host header (or HTTP/2 `:authority`).
    pub host: Option<&'a str>,
}

/// The outcome for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The FHIR service the request is for.
    pub service: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Denial),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The service's `publicNetworkAccess` is `Disabled` and the request came to the public
    /// endpoint.
    PublicAccessDisabled,
    /// The private endpoint's connection does not carry traffic.
    EndpointNotApproved { endpoint: String, status: String },
    /// The listener's private endpoint no longer exists.
    EndpointGone,
    /// The source is neither in the endpoint's network nor in a network peered with it.
    OutsideNetwork {
        source: Ipv4Addr,
        endpoint: String,
        network: String,
    },
    /// A network security group rule denies the flow.
    SecurityRule {
        subnet: String,
        rule: String,
        priority: i64,
        direction: &'static str,
    },
    /// The Host names another service than the one this private endpoint serves.
    OtherService { requested: String },
    /// The connection arrived over IPv6, which no virtual network here has.
    NotIpv4,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }

    /// The reason a client is given, as the seed documents word it ("Access to xxx was
    /// denied").
    pub fn message(&self) -> Option<String> {
        let Verdict::Deny(d) = &self.verdict else {
            return None;
        };
        let svc = &self.service;
        Some(match d {
            Denial::PublicAccessDisabled => {
                format!("Access to {svc} was denied: public network access is disabled")
            }
            Denial::EndpointNotApproved { endpoint, status } => format!(
                "Access to {svc} was denied: the connection of private endpoint {endpoint} is {status}, not Approved"
            ),
            Denial::EndpointGone => {
                format!("Access to {svc} was denied: this private endpoint no longer exists")
            }
            Denial::OutsideNetwork {
                source,
                endpoint,
                network,
            } => format!(
                "Access to {svc} was denied: {source} is not in virtual network {network} of private endpoint {endpoint} nor in a network peered with it"
            ),
            Denial::SecurityRule {
                subnet,
                rule,
                priority,
                direction,
            } => format!(
                "Access to {svc} was denied: security rule {rule} (priority {priority}, {direction}) of subnet {subnet} denies the connection"
            ),
            Denial::OtherService { requested } => format!(
                "Access to {requested} was denied: this private endpoint serves {svc} only"
            ),
            Denial::NotIpv4 => {
                format!("Access to {svc} was denied: only IPv4 sources are supported")
            }
        })
    }

    /// A short machine-readable reason for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match &self.verdict {
            Verdict::Allow => "allowed",
            Verdict::Deny(Denial::PublicAccessDisabled) => "public-access-disabled",
            Verdict::Deny(Denial::EndpointNotApproved { .. }) => "endpoint-not-approved",
            Verdict::Deny(Denial::EndpointGone) => "endpoint-gone",
            Verdict::Deny(Denial::OutsideNetwork { .. }) => "outside-network",
            Verdict::Deny(Denial::SecurityRule { .. }) => "security-rule",
            Verdict::Deny(Denial::OtherService { .. }) => "other-service",
            Verdict::Deny(Denial::NotIpv4) => "not-ipv4",
        }
    }
}

fn v4(addr: SocketAddr) -> Option<Ipv4Addr> {
    match addr {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
    }
}

/// Decides one request.
pub fn decide(view: &GatewayView, conn: &Connection<'_>) -> Decision {
    match conn.listener {
        Listener::Public => decide_public(view, conn),
        Listener::Endpoint(id) => decide_endpoint(view, conn, id),
    }
}

fn deny(service: String, d: Denial) -> Decision {
    Decision {
        service,
        verdict: Verdict::Deny(d),
    }
}

fn decide_public(view: &GatewayView, conn: &Connection<'_>) -> Decision {
    let service = fhir_api::service::service_for_host(conn.host, &view.dns_suffix);
    if view
        .services
        .get(&service)
        .is_some_and(|s| !s.public_access)
    {
        return deny(service, Denial::PublicAccessDisabled);
    }
    let (Some(src), Some(dst)) = (v4(conn.source), v4(conn.local)) else {
        // Over IPv6 only the source's network could restrict more, and no network has
        // IPv6 addresses here: nothing applies beyond public access.
        return Decision {
            service,
            verdict: Verdict::Allow,
        };
    };
    // The outbound rules of the client's own subnet: a subnet that denies `Internet`
    // cannot reach the public endpoint.
    if let Some((n, Some(s))) = view.locate(src) {
        let flow = Flow {
            src,
            src_port: conn.source.port(),
            dst,
            dst_port: conn.local.port(),
        };
        if let Some(d) = security_denial(view, n, s, Direction::Outbound, flow) {
            return deny(service, d);
        }
    }
    Decision {
        service,
        verdict: Verdict::Allow,
    }
}

fn decide_endpoint(view: &GatewayView, conn: &Connection<'_>, id: &str) -> Decision {
    let Some(ep) = view.endpoints.get(id) else {
        let service = fhir_api::service::service_for_host(conn.host, &view.dns_suffix);
        return deny(service, Denial::EndpointGone);
    };
    let service = ep.service.clone();
    if !ep.carries_traffic() {
        return deny(
            service,
            Denial::EndpointNotApproved {
                endpoint: ep.name.clone(),
                status: ep.status.clone(),
            },
        );
    }
    // The Host may name this service (or none, e.g. an IP); naming another one is refused
    // rather than served: an endpoint is a path to its own service only.
    if let Some(requested) = fhir_api::service::service_named_by_host(conn.host, &view.dns_suffix) {
        if requested != service {
            return deny(service, Denial::OtherService { requested });
        }
    }
    let Some(src) = v4(conn.source) else {
        return deny(service, Denial::NotIpv4);
    };
    let Some(ep_net) = ep.network else {
        return deny(service, Denial::EndpointGone);
    };
    let network = &view.networks[ep_net];
    let located = view.locate(src);
    let peered = located.is_some_and(|(n, _)| n == ep_net || network.peers.contains(&n));
    if !peered {
        return deny(
            service,
            Denial::OutsideNetwork {
                source: src,
                endpoint: ep.name.clone(),
                network: network.name.clone(),
            },
        );
    }
    let flow = Flow {
        src,
        src_port: conn.source.port(),
        dst: ep.ip,
        dst_port: conn.local.port(),
    };
    // The client subnet's outbound rules, then the endpoint subnet's inbound rules.
    let outbound = located.and_then(|(n, s)| Some((n, s?)));
    let inbound = ep.subnet.map(|s| (ep_net, s));
    for (place, direction) in [
        (outbound, Direction::Outbound),
        (inbound, Direction::Inbound),
    ] {
        if let Some(d) = place.and_then(|(n, s)| security_denial(view, n, s, direction, flow)) {
            return deny(service, d);
        }
    }
    Decision {
        service,
        verdict: Verdict::Allow,
    }
}

/// The denial of the security group of subnet `s` of network `n` for `flow`, if it denies.
fn security_denial(
    view: &GatewayView,
    n: usize,
    s: usize,
    direction: Direction,
    flow: Flow,
) -> Option<Denial> {
    let subnet = view.networks.get(n)?.subnets.get(s)?;
    let rules = subnet.rules.as_ref()?;
    let v = nsg::evaluate(rules, direction, flow, view, n);
    (!v.allowed).then(|| Denial::SecurityRule {
        subnet: subnet.name.clone(),
        rule: v.rule,
        priority: v.priority,
        direction: direction.as_str(),
    })
}
