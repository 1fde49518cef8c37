//! The network plane end to end, with the tools the seed documents use: `dig` (Debian's
//! bind9-dnsutils) from a client's source address, `nslookup`, and `curl --interface` to the
//! address DNS gave. Networks live in 127.0.0.0/8 (../shared/DESIGN.md): hub 127.10.0.0/16
//! holds the endpoint subnet 127.10.1.0/24 and a VM subnet 127.10.2.0/24; spoke
//! 127.20.0.0/16 is peered with hub. Nothing here opens a connection outside 127.0.0.0/8.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::process::Command;

use common::admin::{AdminServer, SUB};
use common::seed::ZONE;
use serde_json::{json, Value};
const SVC: &str = "myfhir";
const FQDN: &str = "myfhir.azurehealthcareapis.com";
const HUB_VM: &str = "127.10.2.5";
const SPOKE_VM: &str = "127.20.1.5";
/// In no virtual network: the public internet, as far as fhirlink can tell.
const OUTSIDER: &str = "127.30.1.5";

fn rg() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1")
}

fn net(path: &str) -> String {
    format!("{}/providers/Microsoft.Network/{path}", rg())
}

/// The port of the data plane's public listener (endpoint listeners use the same).
fn port(s: &AdminServer) -> u16 {
    s.base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// `dig` from `from`, the answer section as (type, data) pairs, and the status.
fn dig(s: &AdminServer, from: &str, name: &str) -> (String, Vec<(String, String)>) {
    let (ip, dns_port) = s.dns.split_once(':').expect("dns addr");
    let out = Command::new("dig")
        .args([
            "-b",
            from,
            "-p",
            dns_port,
            &format!("@{ip}"),
            name,
            "A",
            "+time=2",
            "+tries=2",
            "+noall",
            "+comments",
            "+answer",
        ])
        .output()
        .expect("dig (Debian's bind9-dnsutils; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "dig failed: {text}");
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or_else(|| panic!("no status in dig output: {text}"))
        .to_owned();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| (f[3].to_owned(), f[4].trim_end_matches('.').to_owned()))
        })
        .collect();
    (status, answers)
}

/// The address `dig` from `from` ends on.
fn resolve(s: &AdminServer, from: &str, name: &str) -> String {
    let (status, answers) = dig(s, from, name);
    assert_eq!(status, "NOERROR", "{name} from {from}: {answers:?}");
    answers
        .iter()
        .rev()
        .find(|(t, _)| t == "A")
        .map(|(_, a)| a.clone())
        .unwrap_or_else(|| panic!("no A record for {name} from {from}: {answers:?}"))
}

/// The data folder's CA, which every listener's certificate chains to.
fn ca(s: &AdminServer) -> String {
    s.ca.as_ref()
        .expect("the generated CA")
        .to_string_lossy()
        .into_owned()
}

/// What a client at `from` gets for `GET /metadata` at `addr` over HTTPS (the Host and SNI
/// are the service's name): Ok((status, body)) or Err(curl's exit code, 7 for a refused
/// connection).
fn curl(s: &AdminServer, from: &str, addr: &str, headers: &[&str]) -> Result<(u16, Value), i32> {
    curl_path(s, from, addr, "metadata", headers)
}

/// The same for any path.
fn curl_path(
    s: &AdminServer,
    from: &str,
    addr: &str,
    path: &str,
    headers: &[&str],
) -> Result<(u16, Value), i32> {
    let port = port(s);
    let mut cmd = Command::new("curl");
    cmd.args([
        "-s",
        "--max-time",
        "10",
        "--cacert",
        &ca(s),
        "--interface",
        from,
        "--resolve",
        &format!("{FQDN}:{port}:{addr}"),
        "-w",
        "\n%{http_code}",
    ]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg(format!("https://{FQDN}:{port}/{path}"));
    let out = cmd.output().expect("curl");
    if !out.status.success() {
        return Err(out.status.code().unwrap_or(-1));
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_owned()));
    Ok((code.trim().parse().expect("status"), body))
}

fn assert_capability_statement(r: Result<(u16, Value), i32>, what: &str) {
    let (status, body) = r.unwrap_or_else(|code| panic!("{what}: curl failed ({code})"));
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(body["resourceType"], "CapabilityStatement", "{what}");
}

fn assert_denied(r: Result<(u16, Value), i32>, what: &str, reason: &str) {
    let (status, body) = r.unwrap_or_else(|code| panic!("{what}: curl failed ({code})"));
    assert_eq!(status, 403, "{what}: {body}");
    assert_eq!(body["resourceType"], "OperationOutcome", "{what}: {body}");
    let text = body["issue"][0]["diagnostics"].as_str().unwrap_or_default();
    assert!(text.contains(reason), "{what}: {text:?} lacks {reason:?}");
}

fn diagnose(s: &AdminServer, from: &str) -> Value {
    s.cli_json(&["diagnose", SVC, "--from", from])
}

fn fixes(d: &Value) -> String {
    d["fixes"]
        .as_array()
        .map(|f| {
            f.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The seed's setup: service, hub with endpoint and VM subnets, the private zone linked to
/// hub. `auto`: an approved endpoint pe1 with its zone group.
fn seed(s: &AdminServer, auto: bool) {
    s.cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", SVC]);
    common::seed::hub(s);
    if auto {
        common::seed::endpoint(s, "pe1", SVC);
    }
}

/// The spoke network and hub's side of the peering (Initiated until [`peer_back`]).
fn spoke(s: &AdminServer) {
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-g", "rg1"]);
        s.cli_json(&all)
    };
    cli(&[
        "network",
        "vnet",
        "create",
        "-n",
        "spoke",
        "--address-prefixes",
        "127.20.0.0/16",
        "--subnet-name",
        "vms",
        "--subnet-prefix",
        "127.20.1.0/24",
    ]);
    cli(&[
        "network",
        "vnet",
        "peering",
        "create",
        "--vnet-name",
        "hub",
        "-n",
        "hub-to-spoke",
        "--remote-vnet",
        "spoke",
    ]);
}

/// Spoke's side of the peering: both `Connected`.
fn peer_back(s: &AdminServer) {
    s.cli_json(&[
        "network",
        "vnet",
        "peering",
        "create",
        "-g",
        "rg1",
        "--vnet-name",
        "spoke",
        "-n",
        "spoke-to-hub",
        "--remote-vnet",
        "hub",
    ]);
}

// The seed: "Test private endpoint" and "VNet Peering", with nslookup's two outcomes.
#[test]
fn seed_hub_and_spoke_with_dig_nslookup_and_curl() {
    let s = AdminServer::start();
    seed(&s, false);
    // Before any endpoint the service is public, for everyone.
    assert_capability_statement(
        curl(&s, OUTSIDER, "127.0.0.1", &[]),
        "public before the endpoint",
    );
    seed_endpoint(&s);

    // A VM in hub resolves the private IP and gets the CapabilityStatement through it.
    let (status, answers) = dig(&s, HUB_VM, FQDN);
    assert_eq!(status, "NOERROR");
    assert_eq!(
        answers,
        [
            ("CNAME".to_owned(), format!("{SVC}.{ZONE}")),
            ("A".to_owned(), "127.10.1.4".to_owned())
        ]
    );
    let addr = resolve(&s, HUB_VM, FQDN);
    assert_capability_statement(curl(&s, HUB_VM, &addr, &[]), "hub VM via the endpoint");
    // Data needs a token on the private path too, and a data role on the service.
    let service_id = format!("{}/providers/Microsoft.HealthcareApis/services/{SVC}", rg());
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "vm-app",
        "--role",
        "FHIR Data Reader",
        "--scope",
        &service_id,
    ]);
    let token = common::admin::data_token(&s.data, "vm-app", SVC, &[]);
    let bearer = format!("Authorization: Bearer {token}");
    let (status, body) = curl_path(&s, HUB_VM, &addr, "Patient", &[&bearer]).expect("curl");
    assert_eq!(
        (status, body["type"].as_str()),
        (200, Some("searchset")),
        "{body}"
    );
    let (status, _) = curl_path(&s, HUB_VM, &addr, "Patient", &[]).expect("curl");
    assert_eq!(status, 401, "no token, even on the private path");
    // `fhirlink nslookup` prints what the seed's nslookup shows when the link is right.
    let out = s.cli(&["nslookup", FQDN, "--from", HUB_VM, "--server", &s.dns]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("Name:    {SVC}.{ZONE}"))
            && text.contains("Address:  127.10.1.4")
            && text.contains(&format!("Aliases:  {FQDN}")),
        "{text}"
    );

    // The public endpoint answers 403 once the endpoint is approved (public access went
    // Disabled by itself), and the outside world resolves the public chain.
    let (_, public_chain) = dig(&s, OUTSIDER, FQDN);
    assert_eq!(
        public_chain,
        [
            ("CNAME".to_owned(), format!("{SVC}.{ZONE}")),
            (
                "CNAME".to_owned(),
                format!("{SVC}-public.azurehealthcareapis.com")
            ),
            ("A".to_owned(), "127.0.0.1".to_owned())
        ]
    );
    let public = resolve(&s, OUTSIDER, FQDN);
    assert_denied(
        curl(&s, OUTSIDER, &public, &[]),
        "the public endpoint",
        &format!("Access to {SVC} was denied: public network access is disabled"),
    );
    // Debian's nslookup (from 127.0.0.1, the public view) shows the public chain's aliases.
    let (ip, dns_port) = s.dns.split_once(':').expect("dns");
    let out = Command::new("nslookup")
        .args([&format!("-port={dns_port}"), FQDN, ip])
        .output()
        .expect("nslookup (bind9-dnsutils)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("{FQDN}\tcanonical name = {SVC}.{ZONE}."))
            && text.contains(&format!(
                "{SVC}.{ZONE}\tcanonical name = {SVC}-public.azurehealthcareapis.com."
            ))
            && text.contains("Address: 127.0.0.1"),
        "{text}"
    );

    // A spoke whose peering with hub is only half made has no path to the endpoint.
    spoke(&s);
    assert_eq!(curl(&s, SPOKE_VM, "127.10.1.4", &[]).map(|r| r.0), Ok(403));
    let d = diagnose(&s, SPOKE_VM);
    assert!(
        fixes(&d).contains(
            "The peering between VNet spoke and hub is Initiated: create the peering from spoke to hub as well"
        ),
        "{d}"
    );
    // A spoke peered with hub but not linked resolves the public chain and gets 403.
    peer_back(&s);
    let addr = resolve(&s, SPOKE_VM, FQDN);
    assert_eq!(addr, "127.0.0.1", "unlinked spoke gets the public chain");
    assert_denied(
        curl(&s, SPOKE_VM, &addr, &[]),
        "unlinked spoke",
        "public network access is disabled",
    );
    let d = diagnose(&s, SPOKE_VM);
    assert_eq!(d["status"], 403, "{d}");
    assert!(
        fixes(&d).contains(&format!(
            "VNet spoke is peered with hub but not linked to {ZONE}: add a virtual network link"
        )),
        "{d}"
    );
    // ... while the endpoint itself would take it: peering is enough for the network path.
    assert_capability_statement(
        curl(&s, SPOKE_VM, "127.10.1.4", &[]),
        "spoke straight to the endpoint IP",
    );

    // After linking it resolves the private IP and gets 200.
    s.cli_json(&[
        "network",
        "private-dns",
        "link",
        "vnet",
        "create",
        "-g",
        "rg1",
        "--zone-name",
        ZONE,
        "-n",
        "spoke-link",
        "-v",
        "spoke",
        "-e",
        "false",
    ]);
    let addr = resolve(&s, SPOKE_VM, FQDN);
    assert_eq!(addr, "127.10.1.4");
    assert_capability_statement(curl(&s, SPOKE_VM, &addr, &[]), "linked spoke");
    let d = diagnose(&s, SPOKE_VM);
    assert_eq!(d["status"], 200, "{d}");
    assert_eq!(d["fixes"], json!([]), "{d}");
    let out = s.cli(&["diagnose", SVC, "--from", SPOKE_VM]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Result: 200 OK"), "{text}");

    // Names of the zone that do not exist: NXDOMAIN with the zone's SOA; names that are not
    // ours: REFUSED (no upstream configured).
    let (status, _) = dig(&s, HUB_VM, &format!("nothing.{ZONE}"));
    assert_eq!(status, "NXDOMAIN");
    let (status, _) = dig(&s, OUTSIDER, "nothing.azurehealthcareapis.com");
    assert_eq!(status, "NXDOMAIN");
    let (status, _) = dig(&s, OUTSIDER, "example.org");
    assert_eq!(status, "REFUSED");
}

fn seed_endpoint(s: &AdminServer) {
    common::seed::endpoint(s, "pe1", SVC);
}

// Client-supplied headers never widen access; neither does a source outside the networks.
#[test]
fn spoofed_headers_and_outside_sources_are_refused() {
    let s = AdminServer::start();
    seed(&s, true);
    let spoof = [
        "X-Forwarded-For: 127.10.2.5",
        "Forwarded: for=127.10.2.5;host=myfhir.privatelink.azurehealthcareapis.com",
        "X-Real-IP: 127.10.2.5",
    ];
    // On the public endpoint, claiming to be the hub VM changes nothing.
    assert_denied(
        curl(&s, OUTSIDER, "127.0.0.1", &spoof),
        "spoofed public request",
        "public network access is disabled",
    );
    // Nor does naming the private link host.
    assert_denied(
        curl(
            &s,
            OUTSIDER,
            "127.0.0.1",
            &["Host: myfhir.privatelink.azurehealthcareapis.com"],
        ),
        "privatelink Host on the public endpoint",
        "public network access is disabled",
    );
    // On the endpoint, a source in no peered network is refused, headers or not.
    assert_denied(
        curl(&s, OUTSIDER, "127.10.1.4", &spoof),
        "outsider at the endpoint",
        "is not in virtual network hub",
    );
    // The endpoint serves its own service only: a Host naming another one is refused, and
    // the other service (public) stays reachable on the public endpoint.
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", "other"]);
    assert_denied(
        curl(
            &s,
            HUB_VM,
            "127.10.1.4",
            &["Host: other.azurehealthcareapis.com"],
        ),
        "another service through the endpoint",
        "this private endpoint serves myfhir only",
    );
    let port = port(&s);
    let out = Command::new("curl")
        .args([
            "-s",
            "--interface",
            OUTSIDER,
            "-H",
            "Host: other.azurehealthcareapis.com",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--cacert",
            &ca(&s),
            &format!("https://127.0.0.1:{port}/metadata"),
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200");
    // The hub VM itself, for contrast.
    assert_capability_statement(curl(&s, HUB_VM, "127.10.1.4", &spoof), "hub VM");
}

fn put(s: &AdminServer, path: &str, body: Value) -> Value {
    let token = s.token("admin");
    let url = if path.contains('?') {
        path.to_owned()
    } else {
        format!("{path}?api-version=2024-07-01")
    };
    let (status, v, _) = s.call("PUT", &url, Some(&token), Some(&body));
    assert!(status == 200 || status == 201, "PUT {path}: {status} {v}");
    v
}

fn nsg_rule(
    name: &str,
    priority: u32,
    direction: &str,
    access: &str,
    src: &str,
    dst: &str,
) -> Value {
    json!({"name": name, "properties": {
        "priority": priority, "direction": direction, "access": access, "protocol": "Tcp",
        "sourceAddressPrefix": src, "sourcePortRange": "*",
        "destinationAddressPrefix": dst, "destinationPortRange": "*"
    }})
}

// The seed's VM: "disable the outbound internet traffic using the NSG rule" — then only the
// private path works; and an inbound rule on the endpoint subnet is enforced at the endpoint.
#[test]
fn security_rules_are_enforced_at_the_listeners() {
    let s = AdminServer::start();
    seed(&s, true);
    // A second, public service to see the outbound rule on its own.
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", "open"]);
    let open = |from: &str| {
        let port = port(&s);
        let out = Command::new("curl")
            .args([
                "-s",
                "--interface",
                from,
                "-H",
                "Host: open.azurehealthcareapis.com",
                "--cacert",
                &ca(&s),
                &format!("https://127.0.0.1:{port}/metadata"),
            ])
            .output()
            .expect("curl");
        serde_json::from_slice::<Value>(&out.stdout).unwrap_or(Value::Null)
    };
    assert_eq!(open(HUB_VM)["resourceType"], "CapabilityStatement");

    let nsg = net("networkSecurityGroups/vm-nsg");
    put(
        &s,
        &nsg,
        json!({"location": "westus2", "properties": {"securityRules": [
            nsg_rule("deny-internet-out", 100, "Outbound", "Deny", "*", "Internet")
        ]}}),
    );
    put(
        &s,
        &net("virtualNetworks/hub/subnets/vms"),
        json!({"properties": {"addressPrefix": "127.10.2.0/24", "networkSecurityGroup": {"id": nsg}}}),
    );
    let v = open(HUB_VM);
    assert_eq!(v["resourceType"], "OperationOutcome", "{v}");
    assert!(
        v["issue"][0]["diagnostics"]
            .as_str()
            .unwrap_or_default()
            .contains("security rule deny-internet-out (priority 100, Outbound) of subnet vms"),
        "{v}"
    );
    // The private path is VirtualNetwork traffic: still open.
    assert_capability_statement(curl(&s, HUB_VM, "127.10.1.4", &[]), "hub VM, private");

    // Inbound on the endpoint subnet: deny the VM subnet, allow the rest of the network.
    let pe_nsg = net("networkSecurityGroups/pe-nsg");
    put(
        &s,
        &pe_nsg,
        json!({"location": "westus2", "properties": {"securityRules": [
            nsg_rule("deny-vms", 200, "Inbound", "Deny", "127.10.2.0/24", "*")
        ]}}),
    );
    put(
        &s,
        &net("virtualNetworks/hub/subnets/endpoints"),
        json!({"properties": {"addressPrefix": "127.10.1.0/24", "networkSecurityGroup": {"id": pe_nsg}}}),
    );
    assert_denied(
        curl(&s, HUB_VM, "127.10.1.4", &["X-Forwarded-For: 127.10.3.9"]),
        "inbound rule",
        "security rule deny-vms (priority 200, Inbound) of subnet endpoints",
    );
    assert_capability_statement(
        curl(&s, "127.10.3.9", "127.10.1.4", &[]),
        "another hub address (in no subnet: no rules of its own)",
    );
    let d = diagnose(&s, HUB_VM);
    assert_eq!(d["status"], 403, "{d}");
    assert!(
        fixes(&d).contains("Security rule deny-vms of subnet endpoints"),
        "{d}"
    );
}

fn connection_status(s: &AdminServer, name: &str) -> String {
    let c = s.cli_json(&[
        "fhir",
        "private-endpoint-connection",
        "show",
        "-g",
        "rg1",
        "--service",
        SVC,
        "-n",
        name,
    ]);
    c["properties"]["privateLinkServiceConnectionState"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

// Manual approval: Pending and Rejected carry no traffic, Approved does; with every endpoint
// deleted and public access disabled nothing gets through.
#[test]
fn manual_approval_and_no_path_left() {
    let s = AdminServer::start();
    seed(&s, false);
    s.cli_json(&[
        "role",
        "assignment",
        "create",
        "-g",
        "rg1",
        "--assignee",
        "bob",
        "--role",
        "Network Contributor",
    ]);
    let pe = s.cli_json(&[
        "network",
        "private-endpoint",
        "create",
        "-g",
        "rg1",
        "-n",
        "pe2",
        "--vnet-name",
        "hub",
        "--subnet",
        "endpoints",
        "--service",
        SVC,
        "--manual-request",
        "--request-message",
        "For the hub VMs",
        "--principal",
        "bob",
    ]);
    let ip = pe
        .pointer("/properties/customDnsConfigs/0/ipAddresses/0")
        .and_then(Value::as_str)
        .unwrap_or("127.10.1.4")
        .to_owned();
    assert_eq!(connection_status(&s, "pe2"), "Pending");
    // Pending: nothing listens at the endpoint's address.
    assert_eq!(
        curl(&s, HUB_VM, &ip, &[]),
        Err(7),
        "Pending carries no traffic"
    );
    let d = diagnose(&s, HUB_VM);
    assert!(
        fixes(&d).contains("is Pending: an owner of myfhir must approve it"),
        "{d}"
    );
    // The service is still public while nothing is approved.
    assert_capability_statement(curl(&s, OUTSIDER, "127.0.0.1", &[]), "public while Pending");

    s.cli_json(&[
        "fhir",
        "private-endpoint-connection",
        "approve",
        "-g",
        "rg1",
        "--service",
        SVC,
        "-n",
        "pe2",
    ]);
    assert_eq!(connection_status(&s, "pe2"), "Approved");
    assert_capability_statement(curl(&s, HUB_VM, &ip, &[]), "Approved carries traffic");
    assert_denied(
        curl(&s, OUTSIDER, "127.0.0.1", &[]),
        "public after the first approval",
        "public network access is disabled",
    );

    s.cli_json(&[
        "fhir",
        "private-endpoint-connection",
        "reject",
        "-g",
        "rg1",
        "--service",
        SVC,
        "-n",
        "pe2",
    ]);
    assert_eq!(connection_status(&s, "pe2"), "Rejected");
    assert_eq!(
        curl(&s, HUB_VM, &ip, &[]),
        Err(7),
        "Rejected carries no traffic"
    );

    // No path left: every endpoint deleted, public access disabled.
    s.cli_json(&[
        "network",
        "private-endpoint",
        "delete",
        "-g",
        "rg1",
        "-n",
        "pe2",
    ]);
    for (from, addr) in [
        (HUB_VM, ip.as_str()),
        (OUTSIDER, "127.0.0.1"),
        (HUB_VM, "127.0.0.1"),
    ] {
        match curl(&s, from, addr, &[]) {
            Err(7) => {}
            Ok((403, _)) => {}
            other => panic!("{from} → {addr}: {other:?} got through"),
        }
    }
    let d = diagnose(&s, HUB_VM);
    assert!(fixes(&d).contains("No path is left to myfhir"), "{d}");
}

// An endpoint whose address cannot be bound says so in its resource, and recovers on the
// next change once the address is free.
#[test]
fn an_endpoint_that_cannot_listen_is_failed_with_the_reason() {
    let s = AdminServer::start();
    seed(&s, false);
    let port = port(&s);
    let squatter = TcpListener::bind(("127.10.1.4", port)).expect("occupy the endpoint's address");
    let pe = s.cli_json(&[
        "network",
        "private-endpoint",
        "create",
        "-g",
        "rg1",
        "-n",
        "pe1",
        "--vnet-name",
        "hub",
        "--subnet",
        "endpoints",
        "--service",
        SVC,
    ]);
    assert_eq!(pe["properties"]["provisioningState"], "Failed", "{pe}");
    let reason = pe["properties"]["provisioningError"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains(&format!("cannot listen on 127.10.1.4:{port}")),
        "{pe}"
    );
    let shown = s.cli_json(&[
        "network",
        "private-endpoint",
        "show",
        "-g",
        "rg1",
        "-n",
        "pe1",
    ]);
    assert_eq!(
        shown["properties"]["provisioningState"], "Failed",
        "{shown}"
    );
    let d = diagnose(&s, HUB_VM);
    assert!(
        fixes(&d).contains("The listener of private endpoint pe1 failed"),
        "{d}"
    );

    drop(squatter);
    // Any change applies the plan again.
    s.cli_json(&[
        "network",
        "private-endpoint",
        "dns-zone-group",
        "create",
        "-g",
        "rg1",
        "--endpoint-name",
        "pe1",
        "--private-dns-zone",
        ZONE,
    ]);
    let shown = s.cli_json(&[
        "network",
        "private-endpoint",
        "show",
        "-g",
        "rg1",
        "-n",
        "pe1",
    ]);
    assert_eq!(
        shown["properties"]["provisioningState"], "Succeeded",
        "{shown}"
    );
    assert_capability_statement(
        curl(&s, HUB_VM, "127.10.1.4", &[]),
        "after the address is free",
    );
}

// Listeners come back from stored state at start-up.
#[test]
fn endpoint_listeners_are_restored_at_start() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let data = tmp.path().join("data");
    let s = AdminServer::start_in(&data, &[]);
    seed(&s, true);
    assert_capability_statement(curl(&s, HUB_VM, "127.10.1.4", &[]), "before the restart");
    drop(s);
    let s = AdminServer::start_in(&data, &[]);
    assert_capability_statement(curl(&s, HUB_VM, "127.10.1.4", &[]), "after the restart");
    assert_denied(
        curl(&s, OUTSIDER, "127.0.0.1", &[]),
        "public after the restart",
        "public network access is disabled",
    );
    assert_eq!(resolve(&s, HUB_VM, FQDN), "127.10.1.4");
}

// Toggling public network access: the call's answer means the new rule is in force.
#[test]
fn public_access_toggles_take_effect_before_the_call_returns() {
    let s = AdminServer::start();
    s.cli_json(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    s.cli_json(&["fhir", "create", "-g", "rg1", "-n", SVC]);
    let client = common::admin::client_trusting(s.ca.as_deref());
    let port = port(&s);
    for round in 0..25 {
        for (access, expected) in [("Disabled", 403), ("Enabled", 200)] {
            s.cli_json(&[
                "fhir",
                "update",
                "-g",
                "rg1",
                "-n",
                SVC,
                "--public-network-access",
                access,
            ]);
            // Keep-alive on the same client: a kept connection is decided again too.
            let got = client
                .get(format!("https://127.0.0.1:{port}/metadata"))
                .header("host", FQDN)
                .send()
                .expect("request")
                .status()
                .as_u16();
            assert_eq!(got, expected, "round {round}: {access}");
        }
    }
}

// Malformed packets are dropped without harm; the server keeps answering.
#[test]
fn malformed_dns_packets_leave_the_server_answering() {
    let s = AdminServer::start();
    let dns: std::net::SocketAddr = s.dns.parse().expect("dns");
    let sock = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let mut junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 11],
        vec![0xff; 12],
        vec![0xff; 512],
        vec![0; 4000],
        // A header claiming 65535 questions and nothing else.
        vec![0x12, 0x34, 0x01, 0x00, 0xff, 0xff, 0, 0, 0, 0, 0, 0],
        // A name that points at itself (compression loop).
        vec![
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1,
        ],
        // A label longer than the packet.
        vec![
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 63, b'a', b'b',
        ],
        // A response, not a query.
        vec![0x12, 0x34, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
    ];
    // Pseudo-random bytes, reproducibly.
    let mut x: u32 = 0x1234_5678;
    for len in [13usize, 29, 64, 300, 1500] {
        junk.push(
            (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x & 0xff) as u8
                })
                .collect(),
        );
    }
    for p in &junk {
        sock.send_to(p, dns).expect("send junk");
    }
    // TCP: a length prefix with no message, then garbage, then a hang-up.
    {
        use std::io::Write as _;
        let mut t = std::net::TcpStream::connect(dns).expect("tcp");
        let _ = t.write_all(&[0x00, 0x40, 1, 2, 3]);
        let _ = t.write_all(&[0xff; 70]);
    }
    let (status, answers) = dig(&s, OUTSIDER, "default.azurehealthcareapis.com");
    assert_eq!(status, "NOERROR", "{answers:?}");
    assert_eq!(answers.last().map(|a| a.1.as_str()), Some("127.0.0.1"));
    // And over TCP.
    let (ip, dns_port) = s.dns.split_once(':').expect("dns");
    let out = Command::new("dig")
        .args([
            "+tcp",
            "-p",
            dns_port,
            &format!("@{ip}"),
            "default.azurehealthcareapis.com",
            "+short",
        ])
        .output()
        .expect("dig");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("127.0.0.1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

// Names that are not ours go to --dns-upstream when one is set.
#[test]
fn other_names_are_forwarded_to_the_upstream() {
    let upstream = AdminServer::start_with(&["--dns-suffix", "upstream.test"]);
    let s = AdminServer::start_with(&["--dns-upstream", &upstream.dns]);
    let (status, answers) = dig(&s, OUTSIDER, "default.upstream.test");
    assert_eq!(status, "NOERROR", "{answers:?}");
    assert_eq!(
        answers.last(),
        Some(&("A".to_owned(), "127.0.0.1".to_owned())),
        "{answers:?}"
    );
    // Ours stay ours.
    let (status, _) = dig(&s, OUTSIDER, "nothing.azurehealthcareapis.com");
    assert_eq!(status, "NXDOMAIN");
    // The upstream's own NXDOMAIN comes through.
    let (status, _) = dig(&s, OUTSIDER, "nothing.upstream.test");
    assert_eq!(status, "NXDOMAIN");
}

/// A client at source address `from` that reaches the service's name at `addr` (as a VM
/// whose DNS answered `addr`), trusting the data folder's CA.
fn client_at(s: &AdminServer, from: &str, addr: &str) -> reqwest::blocking::Client {
    common::admin::init_tls();
    let ca = std::fs::read(ca(s)).expect("CA");
    reqwest::blocking::Client::builder()
        .local_address(from.parse::<std::net::IpAddr>().expect("source"))
        .resolve(
            FQDN,
            std::net::SocketAddr::new(addr.parse().expect("addr"), port(s)),
        )
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("PEM"))
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

// Bulk export's status URL and files get the same network decision as every request: a
// service reachable only through its private endpoint exports there and serves its files
// there; the public endpoint refuses them, with a token and all (issue #16).
#[test]
fn export_files_are_served_only_where_the_service_is_reachable() {
    let s = AdminServer::start();
    seed(&s, true);
    let service_id = format!("{}/providers/Microsoft.HealthcareApis/services/{SVC}", rg());
    for role in ["FHIR Data Writer", "FHIR Data Exporter"] {
        s.cli_json(&[
            "role",
            "assignment",
            "create",
            "--assignee",
            "etl",
            "--role",
            role,
            "--scope",
            &service_id,
        ]);
    }
    let token =
        common::admin::data_token(&s.data, "etl", SVC, &["system/*.read", "system/*.write"]);
    let addr = resolve(&s, HUB_VM, FQDN);
    assert_eq!(addr, "127.10.1.4");
    let base = format!("https://{FQDN}:{}", port(&s));
    let vm = client_at(&s, HUB_VM, &addr);
    let r = vm
        .put(format!("{base}/Patient/p1"))
        .bearer_auth(&token)
        .header("content-type", "application/fhir+json")
        .body(json!({"resourceType": "Patient", "id": "p1"}).to_string())
        .send()
        .expect("PUT");
    assert_eq!(r.status(), 201);
    let r = vm
        .get(format!("{base}/$export"))
        .bearer_auth(&token)
        .header("prefer", "respond-async")
        .send()
        .expect("kick-off");
    assert_eq!(r.status(), 202);
    let status_url = r.headers()["content-location"].to_str().unwrap().to_owned();
    assert!(
        status_url.starts_with(&format!("{base}/_operations/export/")),
        "{status_url}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let manifest: Value = loop {
        let r = vm
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .expect("poll");
        match r.status().as_u16() {
            200 => break r.json().expect("manifest"),
            202 | 429 => {}
            other => panic!("poll: {other} {}", r.text().unwrap_or_default()),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the export did not finish"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    let file = manifest["output"][0]["url"]
        .as_str()
        .expect("a file")
        .to_owned();
    assert!(
        file.starts_with(&format!("{base}/_operations/export/")),
        "{file}"
    );
    let r = vm.get(&file).bearer_auth(&token).send().expect("download");
    assert_eq!(r.status(), 200);
    let text = r.text().unwrap();
    assert!(text.contains("\"id\":\"p1\""), "{text}");

    // From outside, at the public address: refused by the network decision, token or not.
    let outside = client_at(&s, OUTSIDER, "127.0.0.1");
    for url in [&status_url, &file] {
        let r = outside.get(url).bearer_auth(&token).send().expect("GET");
        assert_eq!(r.status(), 403, "{url}");
        let body: Value = r.json().expect("OperationOutcome");
        assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    }
    let r = outside
        .get(format!("{base}/$export"))
        .bearer_auth(&token)
        .send()
        .expect("GET");
    assert_eq!(r.status(), 403);
}
