//! Split-horizon answers, case by case, on a hand-built plan: hub 127.10.0.0/16 linked to
//! `privatelink.azurehealthcareapis.com` (which holds `myfhir` → 127.10.1.4 and a VM record),
//! spoke 127.20.0.0/16 (peered, unlinked unless a case links it), and a private zone
//! `corp.internal` linked to hub only. `check` renders an answer as `CODE name TYPE data;…`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::rr::{Name, RData, RecordType};
use link_dns::{Answer, DnsConfig, DnsView};
use link_model::{NetworkPlan, Plan, Prefix, ServicePlan, ZonePlan};

const HUB: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/hub";
const SPOKE: &str =
    "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/spoke";

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
        a_records
            .entry((*n).to_owned())
            .or_default()
            .push(ip.parse().expect("ip"));
    }
    ZonePlan {
        name: name.into(),
        id: format!("zones/{name}"),
        linked_networks: linked.iter().map(|l| (*l).to_owned()).collect(),
        a_records,
    }
}

fn plan(spoke_linked: bool) -> Plan {
    let mut links = vec![HUB];
    if spoke_linked {
        links.push(SPOKE);
    }
    Plan {
        services: vec![
            ServicePlan {
                name: "myfhir".into(),
                id: "svc".into(),
                public_access: false,
                endpoints: vec![],
                diagnostics: vec![],
                ..ServicePlan::default()
            },
            ServicePlan {
                name: "nolink".into(),
                id: "svc2".into(),
                public_access: true,
                endpoints: vec![],
                diagnostics: vec![],
                ..ServicePlan::default()
            },
        ],
        networks: vec![
            network(HUB, "127.10.0.0/16"),
            network(SPOKE, "127.20.0.0/16"),
        ],
        zones: vec![
            zone(
                "privatelink.azurehealthcareapis.com",
                &links,
                &[("myfhir", "127.10.1.4"), ("vm1", "127.10.2.5")],
            ),
            zone(
                "corp.internal",
                &[HUB],
                &[("@", "127.10.9.9"), ("db", "127.10.3.3")],
            ),
        ],
    }
}

fn view(p: &Plan) -> DnsView {
    DnsView::new(
        p,
        &DnsConfig {
            dns_suffix: "azurehealthcareapis.com".into(),
            public_ip: "127.0.0.1".parse().expect("ip"),
            extra_services: vec!["default".into()],
        },
        7,
    )
    .expect("view")
}

fn check(v: &DnsView, from: &str, name: &str, qtype: RecordType) -> String {
    let source: IpAddr = from.parse().expect("ip");
    let qname = Name::from_ascii(name).expect("name");
    match v.answer(source, &qname, qtype) {
        Answer::NotOurs => "NOT-OURS".into(),
        Answer::Authoritative { code, answers, soa } => {
            let mut parts = vec![code.to_string()];
            for r in answers.iter().chain(soa.iter()) {
                assert_eq!(r.ttl, 10, "TTL of {r}");
                let data = match &r.data {
                    RData::A(a) => format!("A {}", a.0),
                    RData::CNAME(c) => format!("CNAME {}", c.0),
                    RData::SOA(s) => format!("SOA {} serial {}", r.name, s.serial),
                    other => format!("{other:?}"),
                };
                parts.push(format!("{} {data}", r.name));
            }
            parts.join("; ")
        }
    }
}

const SVC: &str = "myfhir.azurehealthcareapis.com.";

#[test]
fn linked_network_gets_the_private_address() {
    let v = view(&plan(false));
    assert_eq!(
        check(&v, "127.10.2.5", SVC, RecordType::A),
        "No Error; myfhir.azurehealthcareapis.com. CNAME myfhir.privatelink.azurehealthcareapis.com.; \
         myfhir.privatelink.azurehealthcareapis.com. A 127.10.1.4"
    );
    // The privatelink name directly, any case.
    assert_eq!(
        check(
            &v,
            "127.10.2.5",
            "MyFhir.PrivateLink.AzureHealthcareApis.com.",
            RecordType::A
        ),
        "No Error; MyFhir.PrivateLink.AzureHealthcareApis.com. A 127.10.1.4"
    );
}

#[test]
fn everyone_else_gets_the_public_chain() {
    let v = view(&plan(false));
    let public = "No Error; myfhir.azurehealthcareapis.com. CNAME myfhir.privatelink.azurehealthcareapis.com.; \
         myfhir.privatelink.azurehealthcareapis.com. CNAME myfhir-public.azurehealthcareapis.com.; \
         myfhir-public.azurehealthcareapis.com. A 127.0.0.1";
    // The peered but unlinked spoke, and a client in no network.
    assert_eq!(check(&v, "127.20.1.5", SVC, RecordType::A), public);
    assert_eq!(check(&v, "127.0.0.1", SVC, RecordType::A), public);
    // Linking the spoke changes its answer, and only its answer.
    let linked = view(&plan(true));
    assert!(check(&linked, "127.20.1.5", SVC, RecordType::A).ends_with("A 127.10.1.4"));
    assert_eq!(check(&linked, "127.0.0.1", SVC, RecordType::A), public);
}

#[test]
fn a_linked_zone_without_the_service_record_falls_back_to_the_public_chain() {
    let v = view(&plan(false));
    // `nolink` has no A record in the zone hub is linked to.
    assert!(check(
        &v,
        "127.10.2.5",
        "nolink.azurehealthcareapis.com.",
        RecordType::A
    )
    .ends_with("nolink-public.azurehealthcareapis.com. A 127.0.0.1"));
    // Unmanaged services (`default`) have public names too.
    assert!(check(
        &v,
        "127.0.0.1",
        "default.azurehealthcareapis.com.",
        RecordType::A
    )
    .ends_with("A 127.0.0.1"));
}

#[test]
fn private_zone_names_answer_only_to_linked_networks() {
    let v = view(&plan(false));
    // VM records of the privatelink zone.
    assert_eq!(
        check(
            &v,
            "127.10.2.5",
            "vm1.privatelink.azurehealthcareapis.com.",
            RecordType::A
        ),
        "No Error; vm1.privatelink.azurehealthcareapis.com. A 127.10.2.5"
    );
    assert_eq!(
        check(
            &v,
            "127.20.1.5",
            "vm1.privatelink.azurehealthcareapis.com.",
            RecordType::A
        ),
        "Non-Existent Domain; azurehealthcareapis.com. SOA azurehealthcareapis.com. serial 7"
    );
    // A zone outside our suffix: hub sees it, others get it refused (or forwarded).
    assert_eq!(
        check(&v, "127.10.2.5", "db.corp.internal.", RecordType::A),
        "No Error; db.corp.internal. A 127.10.3.3"
    );
    assert_eq!(
        check(&v, "127.10.2.5", "corp.internal.", RecordType::A),
        "No Error; corp.internal. A 127.10.9.9"
    );
    assert_eq!(
        check(&v, "127.20.1.5", "db.corp.internal.", RecordType::A),
        "NOT-OURS"
    );
}

#[test]
fn missing_names_get_nxdomain_with_the_zone_soa() {
    let v = view(&plan(false));
    assert_eq!(
        check(&v, "127.10.2.5", "nothing.corp.internal.", RecordType::A),
        "Non-Existent Domain; corp.internal. SOA corp.internal. serial 7"
    );
    assert_eq!(
        check(&v, "127.10.2.5", "nothing.privatelink.azurehealthcareapis.com.", RecordType::A),
        "Non-Existent Domain; privatelink.azurehealthcareapis.com. SOA privatelink.azurehealthcareapis.com. serial 7"
    );
    assert_eq!(
        check(
            &v,
            "127.0.0.1",
            "nothing.azurehealthcareapis.com.",
            RecordType::A
        ),
        "Non-Existent Domain; azurehealthcareapis.com. SOA azurehealthcareapis.com. serial 7"
    );
    assert_eq!(
        check(
            &v,
            "127.0.0.1",
            "a.b.myfhir.azurehealthcareapis.com.",
            RecordType::A
        ),
        "Non-Existent Domain; azurehealthcareapis.com. SOA azurehealthcareapis.com. serial 7"
    );
}

#[test]
fn other_types_get_the_chain_then_nodata() {
    let v = view(&plan(false));
    // AAAA: the CNAME, then no data at the end (NOERROR with the SOA).
    assert_eq!(
        check(&v, "127.10.2.5", SVC, RecordType::AAAA),
        "No Error; myfhir.azurehealthcareapis.com. CNAME myfhir.privatelink.azurehealthcareapis.com.; \
         privatelink.azurehealthcareapis.com. SOA privatelink.azurehealthcareapis.com. serial 7"
    );
    // CNAME: just the alias.
    assert_eq!(
        check(&v, "127.0.0.1", SVC, RecordType::CNAME),
        "No Error; myfhir.azurehealthcareapis.com. CNAME myfhir.privatelink.azurehealthcareapis.com."
    );
    // The apex SOA.
    assert_eq!(
        check(&v, "127.0.0.1", "azurehealthcareapis.com.", RecordType::SOA),
        "No Error; azurehealthcareapis.com. SOA azurehealthcareapis.com. serial 7"
    );
}

#[test]
fn names_outside_our_zones_are_not_ours() {
    let v = view(&plan(false));
    for name in [
        "example.org.",
        "com.",
        ".",
        "azurehealthcareapis.com.evil.org.",
    ] {
        assert_eq!(
            check(&v, "127.10.2.5", name, RecordType::A),
            "NOT-OURS",
            "{name}"
        );
    }
}

#[test]
fn the_view_is_chosen_by_source_address() {
    let v = view(&plan(false));
    assert_eq!(
        v.view_of("127.20.9.9".parse().expect("ip")),
        link_dns::ViewName::Network("spoke".into())
    );
    assert_eq!(
        v.view_of("127.0.0.1".parse().expect("ip")),
        link_dns::ViewName::Public
    );
    assert_eq!(
        v.view_of("::1".parse().expect("ip")),
        link_dns::ViewName::Public
    );
}
