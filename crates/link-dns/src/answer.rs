//! The answers, as a pure function of (view, client address, question). The view is the
//! network plan seen as DNS: which network a source address is in, which private zones that
//! network is linked to, what those zones hold, and which FHIR services have a public name.
//!
//! For `<service>.<suffix>` (the seed's nslookup section):
//! - from a network linked to a private zone `privatelink.<suffix>` that holds an A record
//!   for the service: `CNAME <service>.privatelink.<suffix>`, then `A <endpoint IP>`;
//! - from anywhere else (peered but unlinked networks included): the public chain, `CNAME
//!   <service>.privatelink.<suffix>`, `CNAME <service>-public.<suffix>`, `A <public IP>`.
//!
//! Other names of private zones answer only to linked networks. Names under our zones that
//! do not exist get NXDOMAIN with the zone's SOA; names outside them are not ours (refused,
//! or forwarded when an upstream is configured).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use link_model::{Plan, Prefix};

/// Every answer's TTL, in seconds: short, so that a change is seen soon by caching clients.
pub const TTL: u32 = 10;
/// The label appended to a service name for its public endpoint's host name.
const PUBLIC_LABEL_SUFFIX: &str = "-public";
/// Most CNAMEs followed for one question (a guard; our chains have two).
const MAX_CHAIN: usize = 8;

/// What the DNS server needs to know of its deployment.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// The public DNS suffix of FHIR services (`azurehealthcareapis.com`).
    pub dns_suffix: String,
    /// The address of the public listener (the end of the public chain).
    pub public_ip: Ipv4Addr,
    /// Data-plane services that the control plane does not manage (`default`, `--services`):
    /// they have a public name too.
    pub extra_services: Vec<String>,
}

/// The plan, indexed for answers.
#[derive(Debug, Clone)]
pub struct DnsView {
    suffix: Name,
    privatelink: Name,
    public_ip: Ipv4Addr,
    serial: u32,
    services: HashSet<String>,
    networks: Vec<NetworkView>,
    zones: Vec<ZoneView>,
}

#[derive(Debug, Clone)]
struct NetworkView {
    name: String,
    prefixes: Vec<Prefix>,
    /// Indexes into `zones`.
    linked: Vec<usize>,
}

#[derive(Debug, Clone)]
struct ZoneView {
    name: Name,
    /// Relative name (lower case, `@` for the apex) → addresses.
    a: HashMap<String, Vec<Ipv4Addr>>,
}

/// Where a question was answered from: a network's view, or the public one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewName {
    Network(String),
    Public,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// We are authoritative: these records (answer section, and SOA for negative answers).
    Authoritative {
        code: ResponseCode,
        answers: Vec<Record>,
        soa: Vec<Record>,
    },
    /// Not one of our names: refuse, or ask the upstream.
    NotOurs,
}

/// One step of a lookup inside our zones.
enum Node {
    Addresses(Vec<Ipv4Addr>),
    Alias(Name),
    /// The name exists with no records of the asked type (a zone apex, or an empty
    /// non-terminal such as `privatelink.<suffix>` in the public view).
    Empty(Name),
    NxDomain(Name),
    Outside,
}

fn lower_fqdn(s: &str) -> Option<Name> {
    let mut n = Name::from_ascii(s.trim_end_matches('.'))
        .ok()?
        .to_lowercase();
    n.set_fqdn(true);
    Some(n)
}

impl DnsView {
    /// Indexes `plan`; `serial` is the SOA serial of this version of the zones.
    pub fn new(plan: &Plan, config: &DnsConfig, serial: u32) -> Option<DnsView> {
        let suffix = lower_fqdn(&config.dns_suffix)?;
        let privatelink = Name::from_ascii("privatelink")
            .ok()?
            .append_domain(&suffix)
            .ok()?;
        let zones: Vec<ZoneView> = plan
            .zones
            .iter()
            .filter_map(|z| {
                Some(ZoneView {
                    name: lower_fqdn(&z.name)?,
                    a: z.a_records
                        .iter()
                        .map(|(k, v)| (k.to_lowercase(), v.clone()))
                        .collect(),
                })
            })
            .collect();
        let networks = plan
            .networks
            .iter()
            .map(|n| NetworkView {
                name: n.name.clone(),
                prefixes: n.prefixes.clone(),
                linked: plan
                    .zones
                    .iter()
                    .enumerate()
                    .filter(|(_, z)| {
                        z.linked_networks
                            .iter()
                            .any(|l| l.eq_ignore_ascii_case(&n.id))
                    })
                    .map(|(i, _)| i)
                    .collect(),
            })
            .collect();
        let services = plan
            .services
            .iter()
            .map(|s| s.name.to_lowercase())
            .chain(config.extra_services.iter().map(|s| s.to_lowercase()))
            .collect();
        Some(DnsView {
            suffix,
            privatelink,
            public_ip: config.public_ip,
            serial,
            services,
            networks,
            zones,
        })
    }

    /// The index of the network `ip` is in (the first whose prefixes hold it).
    pub(crate) fn network_of(&self, ip: IpAddr) -> Option<usize> {
        let ip = match ip {
            IpAddr::V4(v4) => v4,
            IpAddr::V6(v6) => v6.to_ipv4_mapped()?,
        };
        let ip = u32::from(ip);
        self.networks
            .iter()
            .position(|n| n.prefixes.iter().any(|p| p.contains_ip(ip)))
    }

    /// The names of the networks, by index.
    pub(crate) fn network_names(&self) -> impl Iterator<Item = &str> {
        self.networks.iter().map(|n| n.name.as_str())
    }

    /// The view a client at `ip` gets.
    pub fn view_of(&self, ip: IpAddr) -> ViewName {
        match self.network_of(ip) {
            Some(n) => ViewName::Network(self.networks[n].name.clone()),
            None => ViewName::Public,
        }
    }

    /// The SOA record of a zone of ours.
    fn soa(&self, zone: &Name) -> Record {
        let mname = Name::from_ascii("ns")
            .ok()
            .and_then(|n| n.append_domain(&self.suffix).ok())
            .unwrap_or_else(|| self.suffix.clone());
        let rname = Name::from_ascii("hostmaster")
            .ok()
            .and_then(|n| n.append_domain(zone).ok())
            .unwrap_or_else(|| zone.clone());
        Record::from_rdata(
            zone.clone(),
            TTL,
            RData::SOA(SOA::new(mname, rname, self.serial, 3600, 600, 86400, TTL)),
        )
    }

    /// The single label of `name` below `zone`, if `name` is exactly one label deeper.
    fn label_under(name: &Name, zone: &Name) -> Option<String> {
        (zone.zone_of(name) && name.num_labels() == zone.num_labels() + 1).then(|| {
            name.iter()
                .next()
                .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                .unwrap_or_default()
        })
    }

    fn is_service(&self, label: &str) -> bool {
        self.services.contains(label)
    }

    fn privatelink_name(&self, service: &str) -> Option<Name> {
        Name::from_ascii(service)
            .ok()?
            .append_domain(&self.privatelink)
            .ok()
    }

    fn public_name(&self, service: &str) -> Option<Name> {
        Name::from_ascii(format!("{service}{PUBLIC_LABEL_SUFFIX}"))
            .ok()?
            .append_domain(&self.suffix)
            .ok()
    }

    /// One name, as network `net` sees it.
    fn lookup(&self, net: Option<usize>, name: &Name) -> Node {
        let name = name.to_lowercase();
        // The most specific private zone linked to the client's network that holds the name.
        let zone = net
            .map(|n| &self.networks[n].linked)
            .into_iter()
            .flatten()
            .map(|&z| &self.zones[z])
            .filter(|z| z.name.zone_of(&name))
            .max_by_key(|z| z.name.num_labels());
        if let Some(z) = zone {
            let relative = if name == z.name {
                "@".to_owned()
            } else {
                let depth = usize::from(name.num_labels() - z.name.num_labels());
                name.iter()
                    .take(depth)
                    .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(".")
            };
            if let Some(ips) = z.a.get(&relative) {
                return Node::Addresses(ips.clone());
            }
            if relative == "@" {
                return Node::Empty(z.name.clone());
            }
            // A service name missing from the private link zone falls back to the public
            // chain (the rule: only a linked zone that holds the service's record
            // answers privately).
            let fallback = z.name == self.privatelink && self.is_service(&relative);
            if !fallback {
                return Node::NxDomain(z.name.clone());
            }
        }
        if !self.suffix.zone_of(&name) {
            return Node::Outside;
        }
        if name == self.suffix {
            return Node::Empty(self.suffix.clone());
        }
        if let Some(label) = Self::label_under(&name, &self.suffix) {
            if self.is_service(&label) {
                return match self.privatelink_name(&label) {
                    Some(t) => Node::Alias(t),
                    None => Node::NxDomain(self.suffix.clone()),
                };
            }
            if let Some(svc) = label.strip_suffix(PUBLIC_LABEL_SUFFIX) {
                if self.is_service(svc) {
                    return Node::Addresses(vec![self.public_ip]);
                }
            }
            if label == "privatelink" {
                return Node::Empty(self.privatelink.clone());
            }
        }
        if let Some(label) = Self::label_under(&name, &self.privatelink) {
            if self.is_service(&label) {
                return match self.public_name(&label) {
                    Some(t) => Node::Alias(t),
                    None => Node::NxDomain(self.suffix.clone()),
                };
            }
        }
        Node::NxDomain(self.suffix.clone())
    }

    /// The answer to `qname`/`qtype` for a client at `source`.
    pub fn answer(&self, source: IpAddr, qname: &Name, qtype: RecordType) -> Answer {
        let net = self.network_of(source);
        let mut answers = Vec::new();
        let mut name = qname.clone();
        for _ in 0..MAX_CHAIN {
            match self.lookup(net, &name) {
                Node::Addresses(ips) => {
                    if matches!(qtype, RecordType::A | RecordType::ANY) {
                        answers.extend(
                            ips.iter()
                                .map(|ip| Record::from_rdata(name.clone(), TTL, RData::A(A(*ip)))),
                        );
                        return Answer::Authoritative {
                            code: ResponseCode::NoError,
                            answers,
                            soa: Vec::new(),
                        };
                    }
                    // The name exists, without records of this type: NODATA.
                    let zone = self.zone_holding(net, &name);
                    return Answer::Authoritative {
                        code: ResponseCode::NoError,
                        answers,
                        soa: vec![self.soa(&zone)],
                    };
                }
                Node::Alias(target) => {
                    answers.push(Record::from_rdata(
                        name.clone(),
                        TTL,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    if qtype == RecordType::CNAME {
                        return Answer::Authoritative {
                            code: ResponseCode::NoError,
                            answers,
                            soa: Vec::new(),
                        };
                    }
                    name = target;
                }
                Node::Empty(zone) => {
                    let mut answers = answers;
                    let soa = self.soa(&zone);
                    if qtype == RecordType::SOA && name == zone {
                        answers.push(soa);
                        return Answer::Authoritative {
                            code: ResponseCode::NoError,
                            answers,
                            soa: Vec::new(),
                        };
                    }
                    return Answer::Authoritative {
                        code: ResponseCode::NoError,
                        answers,
                        soa: vec![soa],
                    };
                }
                Node::NxDomain(zone) => {
                    // RFC 6604: the code is that of the last name in the chain.
                    return Answer::Authoritative {
                        code: ResponseCode::NXDomain,
                        answers,
                        soa: vec![self.soa(&zone)],
                    };
                }
                Node::Outside => {
                    if answers.is_empty() {
                        return Answer::NotOurs;
                    }
                    return Answer::Authoritative {
                        code: ResponseCode::NoError,
                        answers,
                        soa: Vec::new(),
                    };
                }
            }
        }
        Answer::Authoritative {
            code: ResponseCode::ServFail,
            answers: Vec::new(),
            soa: Vec::new(),
        }
    }

    /// The zone of ours that answers `name` for network `net` (for the SOA of a NODATA).
    fn zone_holding(&self, net: Option<usize>, name: &Name) -> Name {
        let name = name.to_lowercase();
        net.map(|n| &self.networks[n].linked)
            .into_iter()
            .flatten()
            .map(|&z| &self.zones[z])
            .filter(|z| z.name.zone_of(&name))
            .max_by_key(|z| z.name.num_labels())
            .map(|z| z.name.clone())
            .unwrap_or_else(|| self.suffix.clone())
    }
}
