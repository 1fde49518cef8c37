//! `diagnose`: the path a client at one address takes to a FHIR service, explained link by
//! link — its network, the DNS answer it gets (from the live DNS view), the listener that
//! address leads to, the access decision (from the live gateway view), and the HTTP status
//! that follows — with the fix for each broken link. Served on the management listener at
//! `GET /fhirlink/diagnose?service=NAME&from=IP`, for principals that may read the service.
//!
//! Everything here reads the same views the DNS server and the gateway decide on, so the
//! prediction is what the wire does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};
use link_dns::{Answer, DnsServer, ViewName};
use link_gateway::{decide, Connection, Denial, Gateway, Listener, Verdict};
use link_model::{NetworkPlan, Plan, ServicePlan, State};
use serde_json::{json, Value};

/// What diagnosing needs: the live planes and how they are deployed.
pub(crate) struct Diagnostics {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) dns: Arc<DnsServer>,
    pub(crate) dns_suffix: String,
    /// The public listener's address as DNS gives it, and its port.
    pub(crate) public: SocketAddr,
}

/// A source port for the simulated connection (security rules rarely name one).
const CLIENT_PORT: u16 = 49152;

fn network_name(plan: &Plan, id: &str) -> String {
    plan.networks
        .iter()
        .find(|n| n.id.eq_ignore_ascii_case(id))
        .map(|n| n.name.clone())
        .unwrap_or_else(|| id.rsplit('/').next().unwrap_or(id).to_owned())
}

fn peering_state(from: &NetworkPlan, to_id: &str) -> Option<String> {
    from.peerings
        .iter()
        .find(|p| p.remote_id.eq_ignore_ascii_case(to_id))
        .map(|p| p.state.clone())
}

impl Diagnostics {
    /// The diagnosis as JSON: `checks` (each link with `ok` and `detail`), the predicted
    /// `status`, and `fixes`.
    pub(crate) fn diagnose(&self, state: &State, service: &str, from: Ipv4Addr) -> Value {
        let service = service.to_lowercase();
        let plan = link_model::plan(state);
        let svc: Option<&ServicePlan> = plan
            .services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case(&service));
        let privatelink = format!("privatelink.{}", self.dns_suffix.trim_matches('.'));
        let mut checks = Vec::new();
        let mut fixes: Vec<String> = Vec::new();
        let mut check = |name: &str, ok: bool, detail: String| {
            checks.push(json!({"check": name, "ok": ok, "detail": detail}));
        };

        // 1. Where the client is.
        let client_net = plan.network_of(from);
        let client_subnet = client_net.and_then(|n| {
            n.subnets
                .iter()
                .find(|s| s.prefix.contains_ip(u32::from(from)))
        });
        match (client_net, client_subnet) {
            (Some(n), Some(s)) => check(
                "network",
                true,
                format!(
                    "{from} is in VNet {} (subnet {}, {})",
                    n.name, s.name, s.prefix
                ),
            ),
            (Some(n), None) => check(
                "network",
                true,
                format!("{from} is in VNet {} (in no subnet of it)", n.name),
            ),
            (None, _) => check(
                "network",
                true,
                format!("{from} is in no virtual network: it is on the public network"),
            ),
        }

        // 2. The service and its endpoints.
        let approved: Vec<_> = svc
            .map(|s| s.endpoints.iter().filter(|e| e.carries_traffic()).collect())
            .unwrap_or_default();
        match svc {
            Some(s) => {
                check(
                    "public network access",
                    true,
                    format!(
                        "{} for {}",
                        if s.public_access {
                            "Enabled"
                        } else {
                            "Disabled"
                        },
                        s.name
                    ),
                );
                for e in &s.endpoints {
                    let fault = state.endpoint_faults().get(&e.id.to_lowercase());
                    let ok = e.carries_traffic() && fault.is_none();
                    let mut detail = format!(
                        "private endpoint {} at {} in VNet {}: connection {}",
                        e.name,
                        e.ip,
                        network_name(&plan, &e.network_id),
                        e.status
                    );
                    if let Some(f) = fault {
                        detail.push_str(&format!("; its listener failed: {f}"));
                        fixes.push(format!(
                            "The listener of private endpoint {} failed ({f})",
                            e.name
                        ));
                    }
                    check("private endpoint", ok, detail);
                    if approved.is_empty() {
                        match e.status.as_str() {
                            "Pending" => fixes.push(format!(
                                "The connection of private endpoint {} is Pending: an owner of {} must approve it (fhirlink fhir private-endpoint-connection approve --service {} -n {})",
                                e.name, s.name, s.name, e.name
                            )),
                            "Rejected" => fixes.push(format!(
                                "The connection of private endpoint {} was Rejected: delete the endpoint and request a new connection",
                                e.name
                            )),
                            "Disconnected" => fixes.push(format!(
                                "The connection of private endpoint {} was removed (Disconnected): delete the endpoint and create it again",
                                e.name
                            )),
                            _ => {}
                        }
                    }
                }
                if s.endpoints.is_empty() {
                    check(
                        "private endpoint",
                        s.public_access,
                        format!("{} has no private endpoint", s.name),
                    );
                }
                if approved.is_empty() && !s.public_access {
                    fixes.push(format!(
                        "No path is left to {}: it has no approved private endpoint and public network access is Disabled. Create a private endpoint, or enable public network access",
                        s.name
                    ));
                }
            }
            None => check(
                "service",
                true,
                format!("{service} is not managed by the control plane: it is public"),
            ),
        }

        // 3. Reachability of each approved endpoint from the client's network.
        let mut reachable_endpoint = None;
        for e in &approved {
            let ep_net = network_name(&plan, &e.network_id);
            match client_net {
                Some(n) if n.id.eq_ignore_ascii_case(&e.network_id) => {
                    reachable_endpoint.get_or_insert(*e);
                }
                Some(n) => {
                    let there = peering_state(n, &e.network_id);
                    let back = plan
                        .networks
                        .iter()
                        .find(|m| m.id.eq_ignore_ascii_case(&e.network_id))
                        .and_then(|m| peering_state(m, &n.id));
                    match (there.as_deref(), back.as_deref()) {
                        (Some("Connected"), _) | (_, Some("Connected")) => {
                            check(
                                "peering",
                                true,
                                format!("VNet {} is peered with {ep_net} (Connected)", n.name),
                            );
                            reachable_endpoint.get_or_insert(*e);
                        }
                        (None, None) => {
                            check(
                                "peering",
                                false,
                                format!("VNet {} is not peered with {ep_net}, the network of private endpoint {}", n.name, e.name),
                            );
                            fixes.push(format!(
                                "VNet {} is not peered with {ep_net}: peer them, in both directions, to use private endpoint {}",
                                n.name, e.name
                            ));
                        }
                        (a, b) => {
                            let st = a.or(b).unwrap_or("Initiated");
                            check(
                                "peering",
                                false,
                                format!("the peering between VNet {} and {ep_net} is {st}", n.name),
                            );
                            let missing = if a.is_none() { &n.name } else { &ep_net };
                            let other = if a.is_none() { &ep_net } else { &n.name };
                            fixes.push(format!(
                                "The peering between VNet {} and {ep_net} is {st}: create the peering from {missing} to {other} as well",
                                n.name
                            ));
                        }
                    }
                }
                None => {}
            }
        }

        // 4. DNS, as the client's view answers it.
        let fqdn = format!("{service}.{}", self.dns_suffix.trim_matches('.'));
        let dns_view = self.dns.view();
        let view_name = match dns_view.view_of(IpAddr::V4(from)) {
            ViewName::Network(n) => format!("the view of VNet {n}"),
            ViewName::Public => "the public view".to_owned(),
        };
        let mut chain = Vec::new();
        let mut address = None;
        let mut dns_code = "REFUSED".to_owned();
        if let Ok(qname) = Name::from_ascii(format!("{fqdn}.")) {
            if let Answer::Authoritative { code, answers, .. } =
                dns_view.answer(IpAddr::V4(from), &qname, RecordType::A)
            {
                dns_code = code.to_string();
                for r in &answers {
                    match &r.data {
                        RData::CNAME(t) => {
                            chain.push(format!("CNAME {}", t.0.to_ascii().trim_end_matches('.')));
                        }
                        RData::A(a) => {
                            chain.push(format!("A {}", a.0));
                            address.get_or_insert(a.0);
                        }
                        _ => {}
                    }
                }
            }
        }
        let resolved_privately = address.is_some_and(|a| a != public_ip(self.public));
        let private_path_missed = reachable_endpoint.is_some() && !resolved_privately;
        check(
            "dns",
            address.is_some() && !private_path_missed,
            match address {
                Some(_) => format!("{fqdn} from {view_name}: {}", chain.join(" → ")),
                None => format!("{fqdn} from {view_name}: {dns_code}"),
            },
        );
        let links = client_net
            .map(|n| {
                n.linked_zones
                    .iter()
                    .any(|z| z.eq_ignore_ascii_case(&privatelink))
            })
            .unwrap_or(false);
        let zone = plan
            .zones
            .iter()
            .find(|z| z.name.eq_ignore_ascii_case(&privatelink));
        if let (Some(e), Some(n)) = (reachable_endpoint, client_net) {
            if !resolved_privately {
                let ep_net = network_name(&plan, &e.network_id);
                if zone.is_none() {
                    fixes.push(format!(
                        "There is no private DNS zone {privatelink}: create it, link VNet {} to it, and add a DNS zone group to private endpoint {}",
                        n.name, e.name
                    ));
                } else if !links {
                    let how = if n.id.eq_ignore_ascii_case(&e.network_id) {
                        format!("VNet {} is not linked to {privatelink}", n.name)
                    } else {
                        format!(
                            "VNet {} is peered with {ep_net} but not linked to {privatelink}",
                            n.name
                        )
                    };
                    fixes.push(format!("{how}: add a virtual network link"));
                } else if zone.is_some_and(|z| !z.a_records.contains_key(&service)) {
                    fixes.push(format!(
                        "{privatelink} has no A record for {service}: add a DNS zone group for the zone to private endpoint {}",
                        e.name
                    ));
                }
            }
        }

        // 5. Where that address leads, and what the gateway decides there.
        let port = self.public.port();
        let endpoints = self.gateway.endpoint_addresses();
        let listener = match address {
            Some(a) if a == public_ip(self.public) => Some(Listener::Public),
            Some(a) => endpoints
                .iter()
                .find(|(_, addr)| addr.ip() == IpAddr::V4(a) && addr.port() == port)
                .map(|(id, _)| Listener::Endpoint(id.clone())),
            None => None,
        };
        let (status, outcome) = match (&listener, address) {
            (Some(l), Some(a)) => {
                let decision = decide(
                    &self.gateway.view(),
                    &Connection {
                        listener: l,
                        source: SocketAddr::from((from, CLIENT_PORT)),
                        local: SocketAddr::from((a, port)),
                        host: Some(&fqdn),
                    },
                );
                let path = match l {
                    Listener::Public => format!("the public endpoint {a}:{port}"),
                    Listener::Endpoint(id) => format!(
                        "private endpoint {} at {a}:{port}",
                        id.rsplit('/').next().unwrap_or(id)
                    ),
                };
                check("path", true, format!("{fqdn} leads to {path}"));
                match &decision.verdict {
                    Verdict::Allow => {
                        check("access", true, "allowed".to_owned());
                        (Some(200), "200 OK".to_owned())
                    }
                    Verdict::Deny(d) => {
                        let msg = decision.message().unwrap_or_default();
                        check("access", false, msg.clone());
                        match d {
                            Denial::SecurityRule { subnet, rule, .. } => fixes.push(format!(
                                "Security rule {rule} of subnet {subnet} denies the connection: change the rule, or add an Allow rule with a lower priority number"
                            )),
                            Denial::OutsideNetwork { .. } => fixes.push(
                                "The client is not in the endpoint's VNet or a VNet peered with it: peer the networks".to_owned(),
                            ),
                            Denial::PublicAccessDisabled
                                if reachable_endpoint.is_none() && !approved.is_empty() =>
                            {
                                fixes.push(format!(
                                    "Public network access to {service} is disabled: reach it from a VNet with a private endpoint (or peered with one and linked to {privatelink})"
                                ));
                            }
                            _ => {}
                        }
                        (Some(403), format!("403 Forbidden: {msg}"))
                    }
                }
            }
            (None, Some(a)) => {
                check(
                    "path",
                    false,
                    format!("nothing listens at {a}:{port}: the connection is refused"),
                );
                fixes.push(format!(
                    "DNS gives {a}, but no approved private endpoint listens there: check the endpoint's connection and the zone's A record"
                ));
                (None, "connection refused".to_owned())
            }
            (_, None) => (None, format!("{fqdn} does not resolve ({dns_code})")),
        };
        fixes.dedup();
        json!({
            "service": service,
            "from": from.to_string(),
            "checks": checks,
            "resolvedAddress": address.map(|a| a.to_string()),
            "status": status,
            "outcome": outcome,
            "fixes": fixes,
        })
    }
}

fn public_ip(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
    }
}
