//! The seed's topology as a hand-built plan, shared by the decision tests and the
//! benchmark: hub 127.10.0.0/16 with the endpoint subnet 127.10.1.0/24 (pe1 Approved at .4,
//! pe2 Pending at .5) and a VM subnet 127.10.2.0/24; spoke 127.20.0.0/16 peered with hub;
//! lone 127.30.0.0/16 peered with no one.
#![allow(dead_code)]

use link_model::{
    EndpointPlan, NetworkPlan, PeeringPlan, Plan, Prefix, SecurityRule, ServicePlan, SubnetPlan,
};

pub const PORT: u16 = 8080;
pub const HUB: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/hub";
pub const SPOKE: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/spoke";
pub const LONE: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/lone";
pub const PE1: &str =
    "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/pe1";
pub const PE2: &str =
    "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/pe2";

fn prefix(s: &str) -> Prefix {
    Prefix::parse(s).expect("prefix")
}

pub fn rule(
    name: &str,
    priority: i64,
    direction: &str,
    access: &str,
    src: &str,
    dst: &str,
) -> SecurityRule {
    SecurityRule {
        name: name.into(),
        priority,
        direction: direction.into(),
        access: access.into(),
        protocol: "Tcp".into(),
        source_prefixes: vec![src.into()],
        destination_prefixes: vec![dst.into()],
        source_ports: vec!["*".into()],
        destination_ports: vec!["*".into()],
    }
}

/// Azure's default rules (link-model adds them to every security group).
pub fn defaults() -> Vec<SecurityRule> {
    vec![
        rule(
            "AllowVnetInBound",
            65000,
            "Inbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowAzureLoadBalancerInBound",
            65001,
            "Inbound",
            "Allow",
            "AzureLoadBalancer",
            "*",
        ),
        rule("DenyAllInBound", 65500, "Inbound", "Deny", "*", "*"),
        rule(
            "AllowVnetOutBound",
            65000,
            "Outbound",
            "Allow",
            "VirtualNetwork",
            "VirtualNetwork",
        ),
        rule(
            "AllowInternetOutBound",
            65001,
            "Outbound",
            "Allow",
            "*",
            "Internet",
        ),
        rule("DenyAllOutBound", 65500, "Outbound", "Deny", "*", "*"),
    ]
}

pub fn with_defaults(mut rules: Vec<SecurityRule>) -> Option<Vec<SecurityRule>> {
    rules.extend(defaults());
    rules.sort_by_key(|r| r.priority);
    Some(rules)
}

fn subnet(net: &str, name: &str, p: &str, rules: Option<Vec<SecurityRule>>) -> SubnetPlan {
    SubnetPlan {
        id: format!("{net}/subnets/{name}"),
        name: name.into(),
        prefix: prefix(p),
        security_rules: rules,
    }
}

fn network(id: &str, p: &str, subnets: Vec<SubnetPlan>, peers: &[&str]) -> NetworkPlan {
    NetworkPlan {
        id: id.into(),
        name: id.rsplit('/').next().unwrap_or_default().into(),
        location: "westus2".into(),
        prefixes: vec![prefix(p)],
        subnets,
        peers: peers.iter().map(|p| (*p).to_owned()).collect(),
        peerings: peers
            .iter()
            .map(|p| PeeringPlan {
                name: "p".into(),
                remote_id: (*p).to_owned(),
                state: "Connected".into(),
            })
            .collect(),
        linked_zones: vec![],
    }
}

fn endpoint(id: &str, ip: &str, status: &str) -> EndpointPlan {
    EndpointPlan {
        id: id.into(),
        name: id.rsplit('/').next().unwrap_or_default().into(),
        ip: ip.parse().expect("ip"),
        subnet_id: format!("{HUB}/subnets/endpoints"),
        network_id: HUB.into(),
        status: status.into(),
    }
}

/// The topology; `vm_rules` and `pe_rules` are the VM and endpoint subnets' own rules
/// (None: no security group).
pub fn plan(
    public: bool,
    vm_rules: Option<Vec<SecurityRule>>,
    pe_rules: Option<Vec<SecurityRule>>,
) -> Plan {
    Plan {
        services: vec![
            ServicePlan {
                name: "myfhir".into(),
                id: "svc".into(),
                public_access: public,
                endpoints: vec![
                    endpoint(PE1, "127.10.1.4", "Approved"),
                    endpoint(PE2, "127.10.1.5", "Pending"),
                ],
                diagnostics: vec![],
                ..ServicePlan::default()
            },
            ServicePlan {
                name: "open".into(),
                id: "svc2".into(),
                public_access: true,
                endpoints: vec![],
                diagnostics: vec![],
                ..ServicePlan::default()
            },
        ],
        networks: vec![
            network(
                HUB,
                "127.10.0.0/16",
                vec![
                    subnet(HUB, "endpoints", "127.10.1.0/24", pe_rules),
                    subnet(HUB, "vms", "127.10.2.0/24", vm_rules),
                ],
                &[SPOKE],
            ),
            network(
                SPOKE,
                "127.20.0.0/16",
                vec![subnet(SPOKE, "vms", "127.20.1.0/24", None)],
                &[HUB],
            ),
            network(LONE, "127.30.0.0/16", vec![], &[]),
        ],
        zones: vec![],
    }
}
