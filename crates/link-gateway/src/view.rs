//! The gateway's view of the network plan: what an access decision looks up, indexed once
//! per plan so that a decision is a few hash and prefix lookups.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use link_model::{Plan, Prefix, SecurityRule};

/// The plan as the gateway reads it. Built by [`GatewayView::new`] whenever the control
/// plane publishes a new state; never changed afterwards.
#[derive(Debug, Clone, Default)]
pub struct GatewayView {
    pub(crate) dns_suffix: String,
    /// By data-plane name (lower case).
    pub(crate) services: HashMap<String, ServiceView>,
    /// By lowercase endpoint id.
    pub(crate) endpoints: HashMap<String, EndpointView>,
    pub(crate) networks: Vec<NetworkView>,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceView {
    pub(crate) public_access: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct EndpointView {
    pub(crate) name: String,
    pub(crate) service: String,
    pub(crate) ip: Ipv4Addr,
    /// The connection state: `Approved`, `Pending`, `Rejected`, `Disconnected`.
    pub(crate) status: String,
    /// Index into [`GatewayView::networks`], and of the subnet in it.
    pub(crate) network: Option<usize>,
    pub(crate) subnet: Option<usize>,
}

#[derive(Debug, Clone)]
pub(crate) struct NetworkView {
    pub(crate) name: String,
    pub(crate) prefixes: Vec<Prefix>,
    pub(crate) subnets: Vec<SubnetView>,
    /// Indexes of the networks peered with this one, `Connected`.
    pub(crate) peers: Vec<usize>,
    /// The `VirtualNetwork` service tag as seen from this network: its own address space
    /// and that of every connected peer (Azure's definition of the tag).
    pub(crate) virtual_network: Vec<Prefix>,
}

#[derive(Debug, Clone)]
pub(crate) struct SubnetView {
    pub(crate) name: String,
    pub(crate) prefix: Prefix,
    /// The subnet's security group rules by priority (defaults included), if it has one.
    pub(crate) rules: Option<Vec<SecurityRule>>,
}

impl EndpointView {
    pub(crate) fn carries_traffic(&self) -> bool {
        self.status == "Approved"
    }
}

impl GatewayView {
    /// Indexes `plan` for decisions about services under `dns_suffix`.
    pub fn new(plan: &Plan, dns_suffix: &str) -> GatewayView {
        let index: HashMap<String, usize> = plan
            .networks
            .iter()
            .enumerate()
            .map(|(i, n)| (n.id.to_lowercase(), i))
            .collect();
        let mut networks: Vec<NetworkView> = plan
            .networks
            .iter()
            .map(|n| NetworkView {
                name: n.name.clone(),
                prefixes: n.prefixes.clone(),
                subnets: n
                    .subnets
                    .iter()
                    .map(|s| SubnetView {
                        name: s.name.clone(),
                        prefix: s.prefix,
                        rules: s.security_rules.clone(),
                    })
                    .collect(),
                peers: n
                    .peers
                    .iter()
                    .filter_map(|p| index.get(&p.to_lowercase()).copied())
                    .collect(),
                virtual_network: Vec::new(),
            })
            .collect();
        for i in 0..networks.len() {
            let mut tag = networks[i].prefixes.clone();
            for &p in &networks[i].peers.clone() {
                tag.extend(networks[p].prefixes.iter().copied());
            }
            networks[i].virtual_network = tag;
        }
        let mut services = HashMap::new();
        let mut endpoints = HashMap::new();
        for s in &plan.services {
            let name = s.name.to_lowercase();
            services.insert(
                name.clone(),
                ServiceView {
                    public_access: s.public_access,
                },
            );
            for e in &s.endpoints {
                let network = index.get(&e.network_id.to_lowercase()).copied();
                let subnet = network.and_then(|n| {
                    let subnet_id = e.subnet_id.to_lowercase();
                    plan.networks[n]
                        .subnets
                        .iter()
                        .position(|s| s.id.to_lowercase() == subnet_id)
                });
                endpoints.insert(
                    e.id.to_lowercase(),
                    EndpointView {
                        name: e.name.clone(),
                        service: name.clone(),
                        ip: e.ip,
                        status: e.status.clone(),
                        network,
                        subnet,
                    },
                );
            }
        }
        GatewayView {
            dns_suffix: dns_suffix.to_owned(),
            services,
            endpoints,
            networks,
        }
    }

    /// The listeners the plan asks for: every private endpoint whose connection carries
    /// traffic, at its IP and `port` (the public listener's), by lowercase endpoint id.
    pub fn endpoint_listeners(&self, port: u16) -> Vec<(String, SocketAddr)> {
        let mut out: Vec<(String, SocketAddr)> = self
            .endpoints
            .iter()
            .filter(|(_, e)| e.carries_traffic())
            .map(|(id, e)| (id.clone(), SocketAddr::from((e.ip, port))))
            .collect();
        out.sort();
        out
    }

    /// The network whose address space holds `ip`, and the subnet of it that holds `ip`.
    pub(crate) fn locate(&self, ip: Ipv4Addr) -> Option<(usize, Option<usize>)> {
        let ip = u32::from(ip);
        let n = self
            .networks
            .iter()
            .position(|n| n.prefixes.iter().any(|p| p.contains_ip(ip)))?;
        let subnet = self.networks[n]
            .subnets
            .iter()
            .position(|s| s.prefix.contains_ip(ip));
        Some((n, subnet))
    }

    /// Whether `ip` lies in the address space of any virtual network (else it is, for the
    /// security rules, on the `Internet`).
    pub(crate) fn in_any_network(&self, ip: Ipv4Addr) -> bool {
        let ip = u32::from(ip);
        self.networks
            .iter()
            .any(|n| n.prefixes.iter().any(|p| p.contains_ip(ip)))
    }
}
