//! `diagnose`: the path a client at one address takes to a FHIR service, explained link by
//! link — its network, the DNS answer it gets (from the live DNS view), the listener that
//! address leads to, the access decision (from the live gateway view), and the HTTP status
//! that follows — with the fix for each broken link. Served on the management listener at
//! `GET /fhirlink/diagnose?service=NAME&from=IP`, for principals that may read the service.
//!
//! [`diagnose`] is a pure function of the views the DNS server and the gateway decide on
//! ([`Views`]: the plan, `DnsView`, `GatewayView`, the bound endpoint listeners), so the
//! prediction is what the wire does; [`Diagnostics`] only loads the live views and calls it.
//! Its result, [`Diagnosis`], serializes to the JSON the API serves and the CLI prints.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use hickory_proto::rr::{Name, RData, RecordType};
use link_dns::{Answer, DnsServer, DnsView, ViewName};
use link_gateway::{decide, Connection, Denial, Gateway, GatewayView, Listener, Verdict};
use link_model::{NetworkPlan, Plan, ServicePlan, State};
use serde::{Deserialize, Serialize};

/// The diagnosis of one client address and one service, as served (field order and names
/// are the API's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Diagnosis {
    /// The service, lower case.
    pub(crate) service: String,
    pub(crate) from: Ipv4Addr,
    /// Each link of the path, in the order a connection meets them.
    pub(crate) checks: Vec<Check>,
    /// The address the client's DNS view gives for the service, if any.
    pub(crate) resolved_address: Option<Ipv4Addr>,
    /// The predicted HTTP status; none when the name does not resolve or nothing listens.
    pub(crate) status: Option<u16>,
    pub(crate) outcome: String,
    pub(crate) fixes: Vec<String>,
}

/// One link of the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Check {
    pub(crate) check: CheckName,
    pub(crate) ok: bool,
    pub(crate) detail: String,
}

/// What a check looks at (serialized as the API names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum CheckName {
    /// Which VNet and subnet the client is in.
    #[serde(rename = "network")]
    Network,
    /// A service no ARM resource manages.
    #[serde(rename = "service")]
    Service,
    #[serde(rename = "public network access")]
    PublicNetworkAccess,
    /// One private endpoint of the service, its connection state and listener.
    #[serde(rename = "private endpoint")]
    PrivateEndpoint,
    /// The peering between the client's VNet and an approved endpoint's.
    #[serde(rename = "peering")]
    Peering,
    #[serde(rename = "dns")]
    Dns,
    /// The listener the resolved address leads to.
    #[serde(rename = "path")]
    Path,
    /// The gateway's decision there.
    #[serde(rename = "access")]
    Access,
}

impl CheckName {
    /// The name as served (the serde name), for the CLI's table.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckName::Network => "network",
            CheckName::Service => "service",
            CheckName::PublicNetworkAccess => "public network access",
            CheckName::PrivateEndpoint => "private endpoint",
            CheckName::Peering => "peering",
            CheckName::Dns => "dns",
            CheckName::Path => "path",
            CheckName::Access => "access",
        }
    }
}

/// Everything diagnosing reads, as plain values.
pub(crate) struct Views<'a> {
    pub(crate) plan: &'a Plan,
    /// Listener failures by lowercase endpoint id (`State::endpoint_faults`).
    pub(crate) faults: &'a BTreeMap<String, String>,
    pub(crate) dns: &'a DnsView,
    pub(crate) gateway: &'a GatewayView,
    /// The endpoint listeners the gateway has bound, by endpoint id.
    pub(crate) listening: &'a BTreeMap<String, SocketAddr>,
    pub(crate) dns_suffix: &'a str,
    /// The public listener's address as DNS gives it, and its port.
    pub(crate) public: SocketAddr,
}

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
    /// The diagnosis on the live views of the gateway and the DNS server.
    pub(crate) fn diagnose(&self, state: &State, service: &str, from: Ipv4Addr) -> Diagnosis {
        let plan = link_model::plan(state);
        let dns = self.dns.view();
        let gateway = self.gateway.view();
        let listening = self.gateway.endpoint_addresses();
        let views = Views {
            plan: &plan,
            faults: state.endpoint_faults(),
            dns: &dns,
            gateway: &gateway,
            listening: &listening,
            dns_suffix: &self.dns_suffix,
            public: self.public,
        };
        diagnose(&views, service, from)
    }
}

/// The diagnosis of `service` for a client at `from`: `checks` (each link with `ok` and
/// `detail`), the predicted `status`, and `fixes`.
pub(crate) fn diagnose(v: &Views<'_>, service: &str, from: Ipv4Addr) -> Diagnosis {
    let service = service.to_lowercase();
    let plan = v.plan;
    let svc: Option<&ServicePlan> = plan
        .services
        .iter()
        .find(|s| s.name.eq_ignore_ascii_case(&service));
    let privatelink = format!("privatelink.{}", v.dns_suffix.trim_matches('.'));
    let mut checks = Vec::new();
    let mut fixes: Vec<String> = Vec::new();
    let mut check = |check: CheckName, ok: bool, detail: String| {
        checks.push(Check { check, ok, detail });
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
            CheckName::Network,
            true,
            format!(
                "{from} is in VNet {} (subnet {}, {})",
                n.name, s.name, s.prefix
            ),
        ),
        (Some(n), None) => check(
            CheckName::Network,
            true,
            format!("{from} is in VNet {} (in no subnet of it)", n.name),
        ),
        (None, _) => check(
            CheckName::Network,
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
                CheckName::PublicNetworkAccess,
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
                let fault = v.faults.get(&e.id.to_lowercase());
                let ok = e.carries_traffic() && fault.is_none();
                let mut detail = format!(
                    "private endpoint {} at {} in VNet {}: connection {}",
                    e.name,
                    e.ip,
                    network_name(plan, &e.network_id),
                    e.status
                );
                if let Some(f) = fault {
                    detail.push_str(&format!("; its listener failed: {f}"));
                    fixes.push(format!(
                        "The listener of private endpoint {} failed ({f})",
                        e.name
                    ));
                }
                check(CheckName::PrivateEndpoint, ok, detail);
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
                    CheckName::PrivateEndpoint,
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
            CheckName::Service,
            true,
            format!("{service} is not managed by the control plane: it is public"),
        ),
    }

    // 3. Reachability of each approved endpoint from the client's network.
    let mut reachable_endpoint = None;
    for e in &approved {
        let ep_net = network_name(plan, &e.network_id);
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
                            CheckName::Peering,
                            true,
                            format!("VNet {} is peered with {ep_net} (Connected)", n.name),
                        );
                        reachable_endpoint.get_or_insert(*e);
                    }
                    (None, None) => {
                        check(CheckName::Peering,
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
                            CheckName::Peering,
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
    let fqdn = format!("{service}.{}", v.dns_suffix.trim_matches('.'));
    let dns_view = v.dns;
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
    let resolved_privately = address.is_some_and(|a| a != public_ip(v.public));
    let private_path_missed = reachable_endpoint.is_some() && !resolved_privately;
    check(
        CheckName::Dns,
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
            let ep_net = network_name(plan, &e.network_id);
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
    let port = v.public.port();
    let endpoints = v.listening;
    let listener = match address {
        Some(a) if a == public_ip(v.public) => Some(Listener::Public),
        Some(a) => endpoints
            .iter()
            .find(|(_, addr)| addr.ip() == IpAddr::V4(a) && addr.port() == port)
            .map(|(id, _)| Listener::Endpoint(id.clone())),
        None => None,
    };
    let (status, outcome) = match (&listener, address) {
        (Some(l), Some(a)) => {
            let decision = decide(
                v.gateway,
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
            check(CheckName::Path, true, format!("{fqdn} leads to {path}"));
            match &decision.verdict {
                Verdict::Allow => {
                    check(CheckName::Access, true, "allowed".to_owned());
                    (Some(200), "200 OK".to_owned())
                }
                Verdict::Deny(d) => {
                    let msg = decision.message().unwrap_or_default();
                    check(CheckName::Access, false, msg.clone());
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
                CheckName::Path,
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
    Diagnosis {
        service,
        from,
        checks,
        resolved_address: address,
        status,
        outcome,
        fixes,
    }
}

fn public_ip(addr: SocketAddr) -> Ipv4Addr {
    match addr.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(ip) => ip.to_ipv4_mapped().unwrap_or(Ipv4Addr::LOCALHOST),
    }
}

#[cfg(test)]
mod tests {
    //! The diagnosis as a table: one world per case (a plan built the way `link_model::plan`
    //! gives it, in the addresses of ../shared/DESIGN.md: hub 127.10.0.0/16 with the endpoint
    //! subnet 127.10.1.0/24 and a VM subnet 127.10.2.0/24, spoke 127.20.0.0/16), one `check`.

    use super::*;
    use link_dns::DnsConfig;
    use link_model::{
        EndpointPlan, NetworkPlan, PeeringPlan, Prefix, ServicePlan, SubnetPlan, ZonePlan,
    };

    const SUFFIX: &str = "azurehealthcareapis.com";
    const PRIVATELINK: &str = "privatelink.azurehealthcareapis.com";
    const SVC: &str = "myfhir";
    const PUBLIC: &str = "127.0.0.1:8443";
    const EP_IP: &str = "127.10.1.4";
    const HUB_VM: &str = "127.10.2.5";
    const SPOKE_VM: &str = "127.20.1.5";
    const OUTSIDER: &str = "127.30.1.5";
    const RG: &str = "/subscriptions/s/resourceGroups/rg1/providers";

    fn vnet(name: &str) -> String {
        format!("{RG}/Microsoft.Network/virtualNetworks/{name}")
    }

    fn network(name: &str, prefix: &str, subnets: &[(&str, &str)]) -> NetworkPlan {
        NetworkPlan {
            id: vnet(name),
            name: name.into(),
            location: "westeurope".into(),
            prefixes: vec![Prefix::parse(prefix).expect("prefix")],
            subnets: subnets
                .iter()
                .map(|(n, p)| SubnetPlan {
                    id: format!("{}/subnets/{n}", vnet(name)),
                    name: (*n).into(),
                    prefix: Prefix::parse(p).expect("prefix"),
                    security_rules: None,
                })
                .collect(),
            peers: vec![],
            peerings: vec![],
            linked_zones: vec![],
        }
    }

    /// A deployment: the plan, and the endpoint listeners that failed to bind.
    struct World {
        plan: Plan,
        faults: BTreeMap<String, String>,
    }

    impl World {
        /// Hub and spoke, unpeered, and the service `myfhir` with public access Enabled.
        fn new() -> World {
            World {
                plan: Plan {
                    services: vec![ServicePlan {
                        name: SVC.into(),
                        id: format!(
                            "{RG}/Microsoft.HealthcareApis/workspaces/ws/fhirservices/{SVC}"
                        ),
                        public_access: true,
                        ..ServicePlan::default()
                    }],
                    networks: vec![
                        network(
                            "hub",
                            "127.10.0.0/16",
                            &[("endpoints", "127.10.1.0/24"), ("vms", "127.10.2.0/24")],
                        ),
                        network("spoke", "127.20.0.0/16", &[("vms", "127.20.1.0/24")]),
                    ],
                    zones: vec![],
                },
                faults: BTreeMap::new(),
            }
        }

        fn public_access(mut self, enabled: bool) -> World {
            self.plan.services[0].public_access = enabled;
            self
        }

        /// The private endpoint `pe1` in the hub's endpoint subnet, its connection `status`.
        fn endpoint(mut self, status: &str) -> World {
            let id = format!("{RG}/Microsoft.Network/privateEndpoints/pe1");
            self.plan.services[0].endpoints.push(EndpointPlan {
                id,
                name: "pe1".into(),
                ip: EP_IP.parse().expect("ip"),
                subnet_id: format!("{}/subnets/endpoints", vnet("hub")),
                network_id: vnet("hub"),
                status: status.into(),
            });
            self
        }

        /// pe1's listener failed to bind.
        fn fault(mut self, fault: &str) -> World {
            let id = self.plan.services[0].endpoints[0].id.to_lowercase();
            self.faults.insert(id, fault.into());
            self
        }

        /// The zone `privatelink.…` with pe1's A record, linked to `networks`.
        fn zone(mut self, networks: &[&str]) -> World {
            let mut a_records = BTreeMap::new();
            a_records.insert(SVC.to_owned(), vec![EP_IP.parse().expect("ip")]);
            self.plan.zones.push(ZonePlan {
                name: PRIVATELINK.into(),
                id: format!("{RG}/Microsoft.Network/privateDnsZones/{PRIVATELINK}"),
                linked_networks: networks.iter().map(|n| vnet(n)).collect(),
                a_records,
            });
            for n in &mut self.plan.networks {
                if networks.contains(&n.name.as_str()) {
                    n.linked_zones.push(PRIVATELINK.into());
                }
            }
            self
        }

        /// A peering from `from` to `to` in `state`; Connected peerings make them peers.
        fn peering(mut self, from: &str, to: &str, state: &str) -> World {
            let (from_id, to_id) = (vnet(from), vnet(to));
            for n in &mut self.plan.networks {
                if n.id == from_id {
                    n.peerings.push(PeeringPlan {
                        name: format!("{from}-to-{to}"),
                        remote_id: to_id.clone(),
                        state: state.into(),
                    });
                }
            }
            if state == "Connected" {
                for (a, b) in [(&from_id, &to_id), (&to_id, &from_id)] {
                    if let Some(n) = self.plan.networks.iter_mut().find(|n| &n.id == a) {
                        n.peers.push(b.clone());
                    }
                }
            }
            self
        }

        fn peered(self) -> World {
            self.peering("spoke", "hub", "Connected")
                .peering("hub", "spoke", "Connected")
        }
    }

    struct Case {
        name: &'static str,
        world: World,
        service: &'static str,
        from: &'static str,
        status: Option<u16>,
        /// The checks that fail, in order.
        failing: &'static [CheckName],
        /// A fragment of each fix, in order (none: no fixes).
        fixes: &'static [&'static str],
    }

    fn diagnosis(w: &World, service: &str, from: &str) -> Diagnosis {
        let public: SocketAddr = PUBLIC.parse().expect("public");
        let config = DnsConfig {
            dns_suffix: SUFFIX.into(),
            public_ip: public_ip(public),
            extra_services: vec!["default".into()],
        };
        let dns = DnsView::new(&w.plan, &config, 1).expect("dns view");
        let gateway = GatewayView::new(&w.plan, SUFFIX);
        // What the gateway binds for this plan, less the listeners that failed.
        let listening: BTreeMap<String, SocketAddr> = gateway
            .endpoint_listeners(public.port())
            .into_iter()
            .filter(|(id, _)| !w.faults.contains_key(&id.to_lowercase()))
            .collect();
        let views = Views {
            plan: &w.plan,
            faults: &w.faults,
            dns: &dns,
            gateway: &gateway,
            listening: &listening,
            dns_suffix: SUFFIX,
            public,
        };
        diagnose(&views, service, from.parse().expect("from"))
    }

    /// Runs every case and reports all that differ at once.
    fn check(cases: Vec<Case>) {
        let mut wrong = Vec::new();
        for c in cases {
            let d = diagnosis(&c.world, c.service, c.from);
            let failing: Vec<CheckName> =
                d.checks.iter().filter(|k| !k.ok).map(|k| k.check).collect();
            let fixes_match = d.fixes.len() == c.fixes.len()
                && d.fixes
                    .iter()
                    .zip(c.fixes)
                    .all(|(f, want)| f.contains(want));
            if d.status != c.status || failing != c.failing || !fixes_match {
                wrong.push(format!(
                    "{}: status {:?} (want {:?}), failing {failing:?} (want {:?}), fixes {:#?} (want {:?})\n{}",
                    c.name,
                    d.status,
                    c.status,
                    c.failing,
                    d.fixes,
                    c.fixes,
                    serde_json::to_string_pretty(&d).unwrap_or_default()
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }

    use CheckName::*;

    #[test]
    fn diagnoses() {
        check(vec![
            Case {
                name: "hub VM, Approved endpoint, zone linked: the private path, 200",
                world: World::new().public_access(false).endpoint("Approved").zone(&["hub"]),
                service: SVC,
                from: HUB_VM,
                status: Some(200),
                failing: &[],
                fixes: &[],
            },
            Case {
                name: "public access Enabled, no endpoint, from outside: 200 on the public endpoint",
                world: World::new(),
                service: SVC,
                from: OUTSIDER,
                status: Some(200),
                failing: &[],
                fixes: &[],
            },
            Case {
                name: "peered spoke not linked to the zone: DNS gives the public address, 403",
                world: World::new()
                    .public_access(false)
                    .endpoint("Approved")
                    .zone(&["hub"])
                    .peered(),
                service: SVC,
                from: SPOKE_VM,
                status: Some(403),
                failing: &[Dns, Access],
                fixes: &["VNet spoke is peered with hub but not linked to privatelink.azurehealthcareapis.com: add a virtual network link"],
            },
            Case {
                name: "hub VM, no zone: DNS fails with the fix to create it",
                world: World::new().public_access(false).endpoint("Approved"),
                service: SVC,
                from: HUB_VM,
                status: Some(403),
                failing: &[Dns, Access],
                fixes: &["There is no private DNS zone privatelink.azurehealthcareapis.com: create it, link VNet hub"],
            },
            Case {
                name: "unpeered spoke linked to the zone: peering fails, the gateway refuses",
                world: World::new()
                    .public_access(false)
                    .endpoint("Approved")
                    .zone(&["hub", "spoke"]),
                service: SVC,
                from: SPOKE_VM,
                status: Some(403),
                failing: &[Peering, Access],
                fixes: &[
                    "VNet spoke is not peered with hub: peer them, in both directions",
                    "peer the networks",
                ],
            },
            Case {
                name: "a peering one way only: Initiated, with the fix to create the other",
                world: World::new()
                    .public_access(false)
                    .endpoint("Approved")
                    .zone(&["hub", "spoke"])
                    .peering("spoke", "hub", "Initiated"),
                service: SVC,
                from: SPOKE_VM,
                status: Some(403),
                failing: &[Peering, Access],
                fixes: &[
                    "The peering between VNet spoke and hub is Initiated: create the peering from hub to spoke as well",
                    "peer the networks",
                ],
            },
            Case {
                name: "a Pending connection: nothing listens, approve it",
                world: World::new().public_access(false).endpoint("Pending").zone(&["hub"]),
                service: SVC,
                from: HUB_VM,
                status: None,
                failing: &[PrivateEndpoint, Path],
                fixes: &[
                    "The connection of private endpoint pe1 is Pending: an owner of myfhir must approve it (fhirlink fhir private-endpoint-connection approve --service myfhir -n pe1)",
                    "No path is left to myfhir",
                    "DNS gives 127.10.1.4, but no approved private endpoint listens there",
                ],
            },
            Case {
                name: "a Rejected connection: delete the endpoint and ask again",
                world: World::new().endpoint("Rejected"),
                service: SVC,
                from: OUTSIDER,
                status: Some(200),
                failing: &[PrivateEndpoint],
                fixes: &["The connection of private endpoint pe1 was Rejected: delete the endpoint"],
            },
            Case {
                name: "an Approved endpoint whose listener failed",
                world: World::new()
                    .public_access(false)
                    .endpoint("Approved")
                    .zone(&["hub"])
                    .fault("address not available"),
                service: SVC,
                from: HUB_VM,
                status: None,
                failing: &[PrivateEndpoint, Path],
                fixes: &[
                    "The listener of private endpoint pe1 failed (address not available)",
                    "DNS gives 127.10.1.4, but no approved private endpoint listens there",
                ],
            },
            Case {
                name: "public access Disabled, client from outside: 403 with the fix",
                world: World::new().public_access(false).endpoint("Approved").zone(&["hub"]),
                service: SVC,
                from: OUTSIDER,
                status: Some(403),
                failing: &[Access],
                fixes: &["Public network access to myfhir is disabled: reach it from a VNet with a private endpoint"],
            },
            Case {
                name: "a service the control plane does not manage: public, 200",
                world: World::new(),
                service: "default",
                from: HUB_VM,
                status: Some(200),
                failing: &[],
                fixes: &[],
            },
            Case {
                name: "an unknown service: its name does not resolve, no status",
                world: World::new(),
                service: "nosuch",
                from: OUTSIDER,
                status: None,
                failing: &[Dns],
                fixes: &[],
            },
        ]);
    }

    /// The JSON the API serves and the CLI reads: its names and order.
    #[test]
    fn serializes_as_served() {
        let w = World::new().public_access(false).endpoint("Pending");
        let d = diagnosis(&w, "MyFhir", OUTSIDER);
        let v = serde_json::to_value(&d).expect("json");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "service",
                "from",
                "checks",
                "resolvedAddress",
                "status",
                "outcome",
                "fixes"
            ]
        );
        assert_eq!(v["service"], "myfhir");
        assert_eq!(v["from"], OUTSIDER);
        assert_eq!(v["resolvedAddress"], "127.0.0.1");
        assert_eq!(
            v["checks"][0],
            serde_json::json!({"check": "network", "ok": true,
                "detail": "127.30.1.5 is in no virtual network: it is on the public network"})
        );
        let names: Vec<&str> = v["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .filter_map(|c| c["check"].as_str())
            .collect();
        assert_eq!(
            names,
            [
                "network",
                "public network access",
                "private endpoint",
                "dns",
                "path",
                "access"
            ]
        );
        for c in &d.checks {
            assert_eq!(serde_json::json!(c.check), c.check.as_str());
        }
        assert_eq!(v["status"], 403);
        let back: Diagnosis = serde_json::from_value(v).expect("round trip");
        assert_eq!(back, d);
    }
}
