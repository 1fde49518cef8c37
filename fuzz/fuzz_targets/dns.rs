//! DNS requests: bytes decoded as a DNS message with hickory-proto, each question answered by
//! `DnsView::answer` for a fixed plan (the hub/spoke plan of link-dns's tests) from a source
//! in the hub, the spoke and outside.
#![no_main]
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use link_dns::{DnsConfig, DnsView};
use link_model::{NetworkPlan, Plan, Prefix, ServicePlan, ZonePlan};

const HUB: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/hub";
const SPOKE: &str = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/spoke";

fn network(id: &str, p: &str) -> NetworkPlan {
    NetworkPlan {
        id: id.into(),
        name: id.rsplit('/').next().unwrap_or_default().into(),
        location: "westus2".into(),
        prefixes: vec![Prefix::parse(p).expect("prefix")],
        subnets: vec![],
        peers: vec![],
        peerings: vec![],
        linked_zones: vec![],
    }
}

fn zone(name: &str, linked: &[&str], records: &[(&str, &str)]) -> ZonePlan {
    let mut a_records: BTreeMap<String, Vec<std::net::Ipv4Addr>> = BTreeMap::new();
    for (n, ip) in records {
        a_records.entry((*n).to_owned()).or_default().push(ip.parse().expect("ip"));
    }
    ZonePlan {
        name: name.into(),
        id: format!("zones/{name}"),
        linked_networks: linked.iter().map(|l| (*l).to_owned()).collect(),
        a_records,
    }
}

fn view() -> &'static DnsView {
    static V: OnceLock<DnsView> = OnceLock::new();
    V.get_or_init(|| {
        let plan = Plan {
            services: vec![
                ServicePlan { name: "myfhir".into(), id: "svc".into(), public_access: false, ..ServicePlan::default() },
                ServicePlan { name: "nolink".into(), id: "svc2".into(), public_access: true, ..ServicePlan::default() },
            ],
            networks: vec![network(HUB, "127.10.0.0/16"), network(SPOKE, "127.20.0.0/16")],
            zones: vec![
                zone("privatelink.azurehealthcareapis.com", &[HUB], &[("myfhir", "127.10.1.4"), ("vm1", "127.10.2.5")]),
                zone("corp.internal", &[HUB], &[("@", "127.10.9.9"), ("db", "127.10.3.3")]),
            ],
        };
        let config = DnsConfig {
            dns_suffix: "azurehealthcareapis.com".into(),
            public_ip: "127.0.0.1".parse().expect("ip"),
            extra_services: vec!["default".into()],
        };
        DnsView::new(&plan, &config, 7).expect("view")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::from_vec(data) else { return };
    let sources: [IpAddr; 3] = [
        "127.10.0.9".parse().expect("ip"),
        "127.20.0.9".parse().expect("ip"),
        "192.0.2.1".parse().expect("ip"),
    ];
    for q in msg.queries.iter().take(4) {
        for s in sources {
            let _ = view().answer(s, q.name(), q.query_type());
        }
    }
});
