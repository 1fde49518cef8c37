//! Network security group rules applied to one TCP flow, as Azure evaluates them: the
//! rules of one direction in priority order, the first that matches decides. Address
//! prefixes may be `*`, a service tag (`VirtualNetwork`, `Internet`, `AzureLoadBalancer`),
//! an address or a CIDR prefix; ports `*`, a number or a range `a-b`.

use std::net::Ipv4Addr;

use link_model::{Prefix, SecurityRule};

use crate::view::GatewayView;

/// The platform address of Azure's load balancer probes and DNS (the `AzureLoadBalancer`
/// service tag).
const AZURE_PLATFORM: Ipv4Addr = Ipv4Addr::new(168, 63, 129, 16);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "Inbound",
            Direction::Outbound => "Outbound",
        }
    }
}

/// One TCP connection, as a security group sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    pub(crate) src: Ipv4Addr,
    pub(crate) src_port: u16,
    pub(crate) dst: Ipv4Addr,
    pub(crate) dst_port: u16,
}

/// The rule that decided a flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleVerdict {
    pub(crate) allowed: bool,
    pub(crate) rule: String,
    pub(crate) priority: i64,
}

/// Evaluates `rules` (sorted by priority, Azure's defaults included) for `flow` in
/// `direction`, as seen from network `network` of `view` (which fixes what the
/// `VirtualNetwork` tag means). No matching rule means no permission: deny.
pub(crate) fn evaluate(
    rules: &[SecurityRule],
    direction: Direction,
    flow: Flow,
    view: &GatewayView,
    network: usize,
) -> RuleVerdict {
    let vnet = view
        .networks
        .get(network)
        .map(|n| n.virtual_network.as_slice())
        .unwrap_or(&[]);
    for r in rules {
        if !r.direction.eq_ignore_ascii_case(direction.as_str()) || !tcp(&r.protocol) {
            continue;
        }
        let matches = r
            .source_prefixes
            .iter()
            .any(|p| address_matches(p, flow.src, vnet, view))
            && r.source_ports
                .iter()
                .any(|p| port_matches(p, flow.src_port))
            && r.destination_prefixes
                .iter()
                .any(|p| address_matches(p, flow.dst, vnet, view))
            && r.destination_ports
                .iter()
                .any(|p| port_matches(p, flow.dst_port));
        if matches {
            return RuleVerdict {
                allowed: r.access.eq_ignore_ascii_case("Allow"),
                rule: r.name.clone(),
                priority: r.priority,
            };
        }
    }
    RuleVerdict {
        allowed: false,
        rule: "(no rule matched)".into(),
        priority: i64::MAX,
    }
}

fn tcp(protocol: &str) -> bool {
    ["*", "Any", "Tcp"]
        .iter()
        .any(|p| protocol.eq_ignore_ascii_case(p))
}

fn address_matches(pattern: &str, ip: Ipv4Addr, vnet: &[Prefix], view: &GatewayView) -> bool {
    let p = pattern.trim();
    if p == "*" || p.eq_ignore_ascii_case("Any") {
        return true;
    }
    if p.eq_ignore_ascii_case("VirtualNetwork") {
        return vnet.iter().any(|n| n.contains_ip(u32::from(ip)));
    }
    if p.eq_ignore_ascii_case("Internet") {
        return !view.in_any_network(ip);
    }
    if p.eq_ignore_ascii_case("AzureLoadBalancer") {
        return ip == AZURE_PLATFORM;
    }
    if let Some(prefix) = Prefix::parse(p) {
        return prefix.contains_ip(u32::from(ip));
    }
    if let Ok(addr) = p.parse::<Ipv4Addr>() {
        return addr == ip;
    }
    // Other service tags (Storage, AzureCloud, …) name Azure's public ranges; none of the
    // addresses fhirlink sees are in them.
    false
}

fn port_matches(pattern: &str, port: u16) -> bool {
    let p = pattern.trim();
    if p == "*" {
        return true;
    }
    match p.split_once('-') {
        Some((a, b)) => match (a.trim().parse::<u16>(), b.trim().parse::<u16>()) {
            (Ok(a), Ok(b)) => (a..=b).contains(&port),
            _ => false,
        },
        None => p.parse::<u16>() == Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        for (pattern, port, expected) in [
            ("*", 8080, true),
            ("8080", 8080, true),
            ("80", 8080, false),
            ("8000-8100", 8080, true),
            ("8000 - 8100", 8100, true),
            ("8081-9000", 8080, false),
            ("junk", 8080, false),
            ("9-x", 9, false),
        ] {
            assert_eq!(port_matches(pattern, port), expected, "{pattern} {port}");
        }
    }

    #[test]
    fn addresses_and_tags() {
        let view = GatewayView::default();
        let vnet = [Prefix::parse("127.10.0.0/16").expect("prefix")];
        let ip = |s: &str| s.parse::<Ipv4Addr>().expect("ip");
        for (pattern, addr, expected) in [
            ("*", "127.10.1.4", true),
            ("Any", "127.10.1.4", true),
            ("VirtualNetwork", "127.10.1.4", true),
            ("virtualnetwork", "127.20.1.4", false),
            ("Internet", "127.0.0.1", true),
            ("127.10.1.0/24", "127.10.1.4", true),
            ("127.10.1.0/24", "127.10.2.4", false),
            ("127.10.1.4", "127.10.1.4", true),
            ("AzureLoadBalancer", "168.63.129.16", true),
            ("AzureLoadBalancer", "127.10.1.4", false),
            ("Storage", "127.10.1.4", false),
        ] {
            assert_eq!(
                address_matches(pattern, ip(addr), &vnet, &view),
                expected,
                "{pattern} {addr}"
            );
        }
    }
}
