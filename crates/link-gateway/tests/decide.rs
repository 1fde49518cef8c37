//! The access decision, case by case: one `check` per row of (listener, source, Host) →
//! expected verdict, on a hand-built plan of the seed's topology (`common`).

use std::net::SocketAddr;

mod common;

use common::{plan, rule, with_defaults, PE1, PE2, PORT};
use link_gateway::{decide, Connection, Denial, GatewayView, Listener, Verdict};
use link_model::Plan;

fn check(
    plan: &Plan,
    listener: &Listener,
    source: &str,
    local: &str,
    host: Option<&str>,
) -> (String, Result<(), String>) {
    let view = GatewayView::new(plan, "azurehealthcareapis.com");
    let source: SocketAddr = format!("{source}:50000").parse().expect("source");
    let local: SocketAddr = format!("{local}:{PORT}").parse().expect("local");
    let d = decide(
        &view,
        &Connection {
            listener,
            source,
            local,
            host,
        },
    );
    let outcome = match &d.verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny(_) => Err(d.message().unwrap_or_default()),
    };
    (d.service, outcome)
}

fn endpoint_listener(id: &str) -> Listener {
    Listener::Endpoint(id.to_owned())
}

const HOST: Option<&str> = Some("myfhir.azurehealthcareapis.com");

#[test]
fn public_listener_follows_public_network_access() {
    let open = plan(true, None, None);
    let closed = plan(false, None, None);
    for (source, expect_open) in [
        ("127.0.0.1", true),
        ("127.10.2.5", true),
        ("127.30.0.9", true),
    ] {
        assert_eq!(
            check(&open, &Listener::Public, source, "127.0.0.1", HOST)
                .1
                .is_ok(),
            expect_open
        );
        let (svc, denied) = check(&closed, &Listener::Public, source, "127.0.0.1", HOST);
        assert_eq!(svc, "myfhir");
        assert_eq!(
            denied,
            Err("Access to myfhir was denied: public network access is disabled".into()),
            "{source}"
        );
    }
    // `/metadata` is no exception (the path is not an input at all), and the privatelink
    // name is the same service.
    assert!(check(
        &closed,
        &Listener::Public,
        "127.0.0.1",
        "127.0.0.1",
        Some("myfhir.privatelink.azurehealthcareapis.com")
    )
    .1
    .is_err());
    // Other services keep their own setting; a Host naming none means `default`.
    assert!(check(
        &closed,
        &Listener::Public,
        "127.0.0.1",
        "127.0.0.1",
        Some("open.azurehealthcareapis.com")
    )
    .1
    .is_ok());
    let (svc, ok) = check(
        &closed,
        &Listener::Public,
        "127.0.0.1",
        "127.0.0.1",
        Some("127.0.0.1:8080"),
    );
    assert_eq!((svc.as_str(), ok.is_ok()), ("default", true));
}

#[test]
fn private_endpoint_takes_its_network_and_connected_peers_only() {
    let p = plan(false, None, None);
    let pe1 = endpoint_listener(PE1);
    for (source, allowed) in [
        ("127.10.2.5", true),   // a VM in hub
        ("127.10.1.9", true),   // the endpoint subnet itself
        ("127.10.200.1", true), // hub, in no subnet
        ("127.20.1.5", true),   // spoke, peered (Connected)
        ("127.30.0.9", false),  // lone: not peered
        ("127.0.0.1", false),   // no network at all
    ] {
        let (svc, r) = check(&p, &pe1, source, "127.10.1.4", HOST);
        assert_eq!(svc, "myfhir");
        assert_eq!(r.is_ok(), allowed, "{source}: {r:?}");
        if !allowed {
            assert!(
                r.unwrap_err().contains(&format!(
                    "{source} is not in virtual network hub of private endpoint pe1"
                )),
                "{source}"
            );
        }
    }
    // Without Host, or with the endpoint's IP as Host, it is still its own service.
    assert!(check(&p, &pe1, "127.10.2.5", "127.10.1.4", None).1.is_ok());
    assert!(check(
        &p,
        &pe1,
        "127.10.2.5",
        "127.10.1.4",
        Some("127.10.1.4:8080")
    )
    .1
    .is_ok());
}

#[test]
fn a_peering_that_is_not_connected_is_no_path() {
    let mut p = plan(false, None, None);
    // Only hub's side exists: Initiated, so neither side lists the other as a peer.
    p.networks[0].peers.clear();
    p.networks[1].peers.clear();
    p.networks[0].peerings[0].state = "Initiated".into();
    let (_, r) = check(
        &p,
        &endpoint_listener(PE1),
        "127.20.1.5",
        "127.10.1.4",
        HOST,
    );
    assert!(r.unwrap_err().contains("is not in virtual network hub"));
}

#[test]
fn only_approved_connections_carry_traffic() {
    let p = plan(false, None, None);
    let (_, r) = check(
        &p,
        &endpoint_listener(PE2),
        "127.10.2.5",
        "127.10.1.5",
        HOST,
    );
    assert_eq!(
        r,
        Err("Access to myfhir was denied: the connection of private endpoint pe2 is Pending, not Approved".into())
    );
    let gone =
        "/subscriptions/s/resourcegroups/rg/providers/microsoft.network/privateendpoints/gone";
    let (_, r) = check(
        &p,
        &endpoint_listener(gone),
        "127.10.2.5",
        "127.10.1.6",
        HOST,
    );
    assert!(r.unwrap_err().contains("no longer exists"));
}

#[test]
fn host_never_widens_an_endpoint() {
    let p = plan(false, None, None);
    let (svc, r) = check(
        &p,
        &endpoint_listener(PE1),
        "127.10.2.5",
        "127.10.1.4",
        Some("open.azurehealthcareapis.com"),
    );
    assert_eq!(svc, "myfhir");
    assert_eq!(
        r,
        Err("Access to open was denied: this private endpoint serves myfhir only".into())
    );
    // `default` by name is another service too.
    assert!(check(
        &p,
        &endpoint_listener(PE1),
        "127.10.2.5",
        "127.10.1.4",
        Some("default.azurehealthcareapis.com")
    )
    .1
    .is_err());
}

#[test]
fn outbound_rules_of_the_client_subnet_apply_to_the_public_endpoint() {
    let deny_internet = with_defaults(vec![rule(
        "no-internet",
        100,
        "Outbound",
        "Deny",
        "*",
        "Internet",
    )]);
    let p = plan(true, deny_internet, None);
    let (_, r) = check(
        &p,
        &Listener::Public,
        "127.10.2.5",
        "127.0.0.1",
        Some("open.azurehealthcareapis.com"),
    );
    assert_eq!(
        r,
        Err("Access to open was denied: security rule no-internet (priority 100, Outbound) of subnet vms denies the connection".into())
    );
    // The same VM still reaches the endpoint: that is VirtualNetwork traffic.
    assert!(check(
        &p,
        &endpoint_listener(PE1),
        "127.10.2.5",
        "127.10.1.4",
        HOST
    )
    .1
    .is_ok());
    // Clients in other subnets are not concerned.
    assert!(
        check(&p, &Listener::Public, "127.20.1.5", "127.0.0.1", HOST)
            .1
            .is_ok()
    );
}

#[test]
fn inbound_rules_of_the_endpoint_subnet_apply_to_the_endpoint() {
    let pe_rules = with_defaults(vec![
        rule("allow-spoke", 100, "Inbound", "Allow", "127.20.0.0/16", "*"),
        rule("deny-vms", 200, "Inbound", "Deny", "127.10.2.0/24", "*"),
    ]);
    let p = plan(false, None, pe_rules);
    let pe1 = endpoint_listener(PE1);
    let (_, r) = check(&p, &pe1, "127.10.2.5", "127.10.1.4", HOST);
    assert!(r
        .unwrap_err()
        .contains("security rule deny-vms (priority 200, Inbound) of subnet endpoints"));
    assert!(check(&p, &pe1, "127.20.1.5", "127.10.1.4", HOST).1.is_ok());
    // The default AllowVnetInBound covers the rest of hub (VirtualNetwork includes peers).
    assert!(check(&p, &pe1, "127.10.200.1", "127.10.1.4", HOST)
        .1
        .is_ok());
}

#[test]
fn default_rules_deny_what_is_not_virtual_network_inbound() {
    // A security group with nothing but Azure's defaults on the endpoint subnet: VirtualNetwork
    // traffic passes (hub and its connected peers), nothing else would.
    let p = plan(false, None, with_defaults(vec![]));
    assert!(check(
        &p,
        &endpoint_listener(PE1),
        "127.20.1.5",
        "127.10.1.4",
        HOST
    )
    .1
    .is_ok());
    let view = GatewayView::new(&p, "azurehealthcareapis.com");
    // The decision is a pure function: the same inputs give the same answer.
    let conn = Connection {
        listener: &endpoint_listener(PE1),
        source: "127.10.2.5:1".parse().expect("addr"),
        local: "127.10.1.4:8080".parse().expect("addr"),
        host: HOST,
    };
    assert_eq!(decide(&view, &conn), decide(&view, &conn));
}

#[test]
fn ipv6_sources_never_reach_an_endpoint() {
    let p = plan(false, None, None);
    let view = GatewayView::new(&p, "azurehealthcareapis.com");
    let d = decide(
        &view,
        &Connection {
            listener: &endpoint_listener(PE1),
            source: "[::1]:5000".parse().expect("addr"),
            local: "127.10.1.4:8080".parse().expect("addr"),
            host: HOST,
        },
    );
    assert_eq!(d.verdict, Verdict::Deny(Denial::NotIpv4));
}

#[test]
fn endpoint_listeners_are_the_approved_endpoints() {
    let view = GatewayView::new(&plan(false, None, None), "azurehealthcareapis.com");
    assert_eq!(
        view.endpoint_listeners(PORT),
        vec![(PE1.to_owned(), "127.10.1.4:8080".parse().expect("addr"))]
    );
}
