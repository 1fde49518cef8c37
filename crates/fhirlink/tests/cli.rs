//! The `fhirlink` management CLI end to end against the real binary over HTTPS: the seed's
//! Private Link flows without hand-written JSON (service, VNet and subnet, private endpoint
//! auto and manual, approve/reject/remove, DNS zone with link and zone group record sets,
//! peering, public access off), tables for people, `arm` for anything else, ARM errors as
//! failing exit codes, and the state surviving a restart.

mod common;

use common::admin::{AdminServer, SUB};
use serde_json::Value;

const ZONE: &str = "privatelink.azurehealthcareapis.com";

fn status_of(pe: &Value) -> String {
    let props = &pe["properties"];
    let conn = props["privateLinkServiceConnections"]
        .get(0)
        .or_else(|| props["manualPrivateLinkServiceConnections"].get(0))
        .unwrap_or_else(|| panic!("no connection: {pe}"));
    conn["properties"]["privateLinkServiceConnectionState"]["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn records(s: &AdminServer, group: &str) -> Vec<(String, Vec<String>)> {
    let sets = s.cli_json(&[
        "network",
        "private-dns",
        "record-set",
        "list",
        "-g",
        group,
        "--zone-name",
        ZONE,
    ]);
    sets.as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["type"]
                .as_str()
                .unwrap_or_default()
                .to_ascii_lowercase()
                .ends_with("/a")
        })
        .map(|r| {
            let ips = r["properties"]["aRecords"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["ipv4Address"].as_str().unwrap().to_string())
                .collect();
            (r["name"].as_str().unwrap().to_string(), ips)
        })
        .collect()
}

#[test]
fn cli_runs_the_seed_flows() {
    let s = AdminServer::start();
    let g = ["-g", "rg1"];
    let cli = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(g);
        s.cli_json(&all)
    };

    let rg = cli(&["group", "create", "-n", "rg1", "-l", "westus2"]);
    assert_eq!(rg["properties"]["provisioningState"], "Succeeded", "{rg}");
    let svc = cli(&["fhir", "create", "-n", "clisvc", "-l", "westus2"]);
    assert_eq!(svc["kind"], "fhir-R4");
    assert_eq!(svc["properties"]["publicNetworkAccess"], "Enabled", "{svc}");
    let links = cli(&["fhir", "private-link-resource", "--service", "clisvc"]);
    assert_eq!(links[0]["properties"]["groupId"], "fhir", "{links}");

    let vnet = cli(&[
        "network",
        "vnet",
        "create",
        "-n",
        "vnet1",
        "--address-prefixes",
        "127.50.0.0/16",
        "--subnet-name",
        "pe-subnet",
        "--subnet-prefix",
        "127.50.1.0/24",
    ]);
    assert_eq!(
        vnet["properties"]["subnets"][0]["name"], "pe-subnet",
        "{vnet}"
    );
    let subnet = cli(&[
        "network",
        "vnet",
        "subnet",
        "create",
        "--vnet-name",
        "vnet1",
        "-n",
        "vm-subnet",
        "--address-prefixes",
        "127.50.2.0/24",
    ]);
    assert_eq!(subnet["properties"]["addressPrefix"], "127.50.2.0/24");

    // DNS first, as the walkthrough does: the zone, linked to the endpoint's network.
    cli(&["network", "private-dns", "zone", "create", "-n", ZONE]);
    let link = cli(&[
        "network",
        "private-dns",
        "link",
        "vnet",
        "create",
        "--zone-name",
        ZONE,
        "-n",
        "link1",
        "-v",
        "vnet1",
        "-e",
        "false",
    ]);
    assert_eq!(link["properties"]["registrationEnabled"], false, "{link}");

    // Auto approval for the Owner; the first approved connection closes the public endpoint.
    let pe = cli(&[
        "network",
        "private-endpoint",
        "create",
        "-n",
        "pe-auto",
        "--vnet-name",
        "vnet1",
        "--subnet",
        "pe-subnet",
        "--service",
        "clisvc",
    ]);
    assert_eq!(status_of(&pe), "Approved", "{pe}");
    assert_eq!(pe["location"], "westus2", "the network's region by default");
    let svc = cli(&["fhir", "show", "-n", "clisvc"]);
    assert_eq!(
        svc["properties"]["publicNetworkAccess"], "Disabled",
        "{svc}"
    );
    cli(&[
        "network",
        "private-endpoint",
        "dns-zone-group",
        "create",
        "--endpoint-name",
        "pe-auto",
        "--private-dns-zone",
        ZONE,
    ]);
    assert_eq!(
        records(&s, "rg1"),
        vec![("clisvc".to_string(), vec!["127.50.1.4".to_string()])]
    );

    // Manual approval: a Network Contributor of the group asks, the Owner decides.
    cli(&[
        "role",
        "assignment",
        "create",
        "--assignee",
        "bob",
        "--role",
        "Network Contributor",
    ]);
    let bob = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["-g", "rg1", "--principal", "bob"]);
        s.cli(&all)
    };
    let refused = bob(&[
        "network",
        "private-endpoint",
        "create",
        "-n",
        "pe-bob",
        "--vnet-name",
        "vnet1",
        "--subnet",
        "pe-subnet",
        "--service",
        "clisvc",
    ]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("403") && err.contains("LinkedAuthorizationFailed"),
        "{err}"
    );
    for name in ["pe-manual", "pe-reject", "pe-remove"] {
        let out = bob(&[
            "network",
            "private-endpoint",
            "create",
            "-n",
            name,
            "--vnet-name",
            "vnet1",
            "--subnet",
            "pe-subnet",
            "--service",
            "clisvc",
            "--manual-request",
            "--request-message",
            "Please approve my connection.",
            "--output",
            "json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pe: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(status_of(&pe), "Pending", "{pe}");
    }
    let conns = cli(&[
        "fhir",
        "private-endpoint-connection",
        "list",
        "--service",
        "clisvc",
    ]);
    assert_eq!(conns.as_array().unwrap().len(), 4, "{conns}");
    // Connections are named `<endpoint>.<id>`; the CLI takes the endpoint's name too.
    let approved = cli(&[
        "fhir",
        "pec",
        "approve",
        "--service",
        "clisvc",
        "-n",
        "pe-manual",
        "--description",
        "Approved by the owner",
    ]);
    assert_eq!(
        approved["properties"]["privateLinkServiceConnectionState"]["status"],
        "Approved"
    );
    let rejected = cli(&[
        "fhir",
        "pec",
        "reject",
        "--service",
        "clisvc",
        "-n",
        "pe-reject",
    ]);
    assert_eq!(
        rejected["properties"]["privateLinkServiceConnectionState"]["status"],
        "Rejected"
    );
    cli(&[
        "fhir",
        "pec",
        "delete",
        "--service",
        "clisvc",
        "-n",
        "pe-remove",
    ]);
    for (pe, status) in [
        ("pe-manual", "Approved"),
        ("pe-reject", "Rejected"),
        ("pe-remove", "Disconnected"),
    ] {
        let v = cli(&["network", "private-endpoint", "show", "-n", pe]);
        assert_eq!(status_of(&v), status, "{v}");
    }
    let conns = cli(&["fhir", "pec", "list", "--service", "clisvc"]);
    assert_eq!(conns.as_array().unwrap().len(), 3, "{conns}");

    // Peering: Initiated until both sides exist, then Connected.
    cli(&[
        "network",
        "vnet",
        "create",
        "-n",
        "vnet2",
        "--address-prefixes",
        "127.51.0.0/16",
    ]);
    let p = cli(&[
        "network",
        "vnet",
        "peering",
        "create",
        "--vnet-name",
        "vnet1",
        "-n",
        "to2",
        "--remote-vnet",
        "vnet2",
    ]);
    assert_eq!(p["properties"]["peeringState"], "Initiated", "{p}");
    let p = cli(&[
        "network",
        "vnet",
        "peering",
        "create",
        "--vnet-name",
        "vnet2",
        "-n",
        "to1",
        "--remote-vnet",
        "vnet1",
    ]);
    assert_eq!(p["properties"]["peeringState"], "Connected", "{p}");
    let ps = cli(&["network", "vnet", "peering", "list", "--vnet-name", "vnet1"]);
    assert_eq!(ps[0]["properties"]["peeringState"], "Connected", "{ps}");

    // Public access back on, and off again.
    let svc = cli(&[
        "fhir",
        "update",
        "-n",
        "clisvc",
        "--public-network-access",
        "Enabled",
    ]);
    assert_eq!(svc["properties"]["publicNetworkAccess"], "Enabled");
    let svc = cli(&[
        "fhir",
        "update",
        "-n",
        "clisvc",
        "--public-network-access",
        "disabled",
    ]);
    assert_eq!(svc["properties"]["publicNetworkAccess"], "Disabled");

    // Deleting the endpoint takes its A record out of the zone.
    cli(&["network", "private-endpoint", "delete", "-n", "pe-auto"]);
    assert!(records(&s, "rg1").is_empty());

    // A second service: listed, shown, deleted.
    cli(&["fhir", "create", "-n", "clisvc2"]);
    let names = |v: Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(cli(&["fhir", "list"])), ["clisvc", "clisvc2"]);
    // The subscription also holds `default`, which fhirlink made and adopted at start.
    assert_eq!(
        names(s.cli_json(&["fhir", "list", "--all"])),
        ["default", "clisvc", "clisvc2"]
    );
    cli(&["fhir", "delete", "-n", "clisvc2"]);
    assert_eq!(names(cli(&["fhir", "list"])), ["clisvc"]);
    let gone = s.cli(&["fhir", "show", "-n", "clisvc2", "-g", "rg1"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("404"));
}

#[test]
fn tables_for_people() {
    let s = AdminServer::start();
    s.cli_json(&["group", "create", "-n", "rg1"]);
    s.cli_json(&["fhir", "create", "-n", "tablesvc", "-g", "rg1"]);
    let out = s.cli(&["fhir", "list", "-g", "rg1"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("Name") && lines[0].contains("PublicNetworkAccess"),
        "{text}"
    );
    assert!(lines[1].starts_with("----"), "{text}");
    assert!(
        lines[2].starts_with("tablesvc") && lines[2].contains("Enabled"),
        "{text}"
    );
}

#[test]
fn arm_command_covers_everything_else() {
    let s = AdminServer::start();
    s.cli_json(&["group", "create", "-n", "rg1"]);
    let dir = tempfile::tempdir().unwrap();
    let nsg_id = format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups/nsg1");
    let body = dir.path().join("nsg.json");
    std::fs::write(
        &body,
        r#"{"location": "westus2", "properties": {"securityRules": [{"name": "deny-internet",
            "properties": {"priority": 100, "direction": "Outbound", "access": "Deny", "protocol": "*",
            "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "Internet",
            "destinationPortRange": "*"}}]}}"#,
    )
    .unwrap();
    let nsg = s.cli_json(&["arm", "put", &nsg_id, "--body", body.to_str().unwrap()]);
    assert_eq!(
        nsg["properties"]["securityRules"][0]["name"], "deny-internet",
        "{nsg}"
    );
    let got = s.cli_json(&["arm", "get", &nsg_id]);
    assert_eq!(
        got["id"].as_str().unwrap().to_lowercase(),
        nsg_id.to_lowercase()
    );
    // Lists come back as their items; an explicit api-version is passed through.
    let list = s.cli_json(&[
        "arm", "get",
        &format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/networkSecurityGroups"),
        "--api-version", "2026-03-01",
    ]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    s.cli_json(&["arm", "delete", &nsg_id]);
    let gone = s.cli(&["arm", "get", &nsg_id]);
    assert!(!gone.status.success());

    // ARM's errors become a failing exit code with the code and message on stderr.
    std::fs::write(&body, "{not json").unwrap();
    let out = s.cli(&["arm", "put", &nsg_id, "--body", body.to_str().unwrap()]);
    assert!(!out.status.success());
    s.cli_json(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg1",
        "-n",
        "v1",
        "--address-prefixes",
        "127.52.0.0/16",
    ]);
    let out = s.cli(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg1",
        "-n",
        "v2",
        "--address-prefixes",
        "127.52.3.0/24",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("400") && err.contains("VnetAddressSpacesOverlap"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn cli_authentication_and_trust() {
    let s = AdminServer::start();
    // A token given explicitly is used as it is.
    let out = s.cli(&["group", "list", "--token", "garbage"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("401") && err.contains("InvalidAuthenticationToken"),
        "{err}"
    );
    let token = s.token("admin");
    let out = s.cli(&["group", "list", "--token", &token]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the CLI does not talk to the server.
    let empty = tempfile::tempdir().unwrap();
    let out = s.cli(&[
        "group",
        "list",
        "--token",
        &token,
        "--data",
        empty.path().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ca.pem"));
    // Another server's CA does not verify this one.
    let other = AdminServer::start();
    let out = s.cli(&[
        "group",
        "list",
        "--token",
        &token,
        "--ca-cert",
        other.ca.as_ref().unwrap().to_str().unwrap(),
    ]);
    assert!(!out.status.success());
}

#[test]
fn state_survives_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let s = AdminServer::start_in(&data, &[]);
    s.cli_json(&["group", "create", "-n", "rg1"]);
    s.cli_json(&["fhir", "create", "-n", "keepsvc", "-g", "rg1"]);
    s.cli_json(&[
        "network",
        "vnet",
        "create",
        "-g",
        "rg1",
        "-n",
        "vnet1",
        "--address-prefixes",
        "127.53.0.0/16",
        "--subnet-name",
        "s1",
        "--subnet-prefix",
        "127.53.1.0/24",
    ]);
    s.cli_json(&[
        "network",
        "private-endpoint",
        "create",
        "-g",
        "rg1",
        "-n",
        "pe1",
        "--vnet-name",
        "vnet1",
        "--subnet",
        "s1",
        "--service",
        "keepsvc",
        "--manual-request",
    ]);
    s.cli_json(&[
        "fhir",
        "pec",
        "approve",
        "-g",
        "rg1",
        "--service",
        "keepsvc",
        "-n",
        "pe1",
    ]);
    // No shutdown at all: what was acknowledged must be in the store.
    s.kill();
    let s = AdminServer::start_in(&data, &[]);
    let svc = s.cli_json(&["fhir", "show", "-g", "rg1", "-n", "keepsvc"]);
    assert_eq!(
        svc["properties"]["publicNetworkAccess"], "Disabled",
        "{svc}"
    );
    let pe = s.cli_json(&[
        "network",
        "private-endpoint",
        "show",
        "-g",
        "rg1",
        "-n",
        "pe1",
    ]);
    assert_eq!(status_of(&pe), "Approved", "{pe}");
    assert_eq!(
        pe["properties"]["customDnsConfigs"][0]["ipAddresses"][0], "127.53.1.4",
        "{pe}"
    );
    // The next endpoint gets the next address: allocation state survived too.
    let pe2 = s.cli_json(&[
        "network",
        "private-endpoint",
        "create",
        "-g",
        "rg1",
        "-n",
        "pe2",
        "--vnet-name",
        "vnet1",
        "--subnet",
        "s1",
        "--service",
        "keepsvc",
    ]);
    assert_eq!(
        pe2["properties"]["customDnsConfigs"][0]["ipAddresses"][0], "127.53.1.5",
        "{pe2}"
    );
}
