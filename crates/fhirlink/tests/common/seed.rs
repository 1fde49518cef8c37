//! The seed's private link setup, made with the CLI in resource group rg1 (which must
//! exist): hub 127.10.0.0/16 with an endpoint subnet 127.10.1.0/24 and a VM subnet
//! 127.10.2.0/24, the zone `privatelink.azurehealthcareapis.com` linked to hub, and
//! auto-approved endpoints with their zone group.

use super::admin::AdminServer;

pub const ZONE: &str = "privatelink.azurehealthcareapis.com";

fn cli(s: &AdminServer, args: &[&str]) -> serde_json::Value {
    let mut all = args.to_vec();
    all.extend(["-g", "rg1"]);
    s.cli_json(&all)
}

/// Hub, its two subnets, the private zone and hub's link to it.
pub fn hub(s: &AdminServer) {
    cli(
        s,
        &[
            "network",
            "vnet",
            "create",
            "-n",
            "hub",
            "--address-prefixes",
            "127.10.0.0/16",
            "--subnet-name",
            "endpoints",
            "--subnet-prefix",
            "127.10.1.0/24",
        ],
    );
    cli(
        s,
        &[
            "network",
            "vnet",
            "subnet",
            "create",
            "--vnet-name",
            "hub",
            "-n",
            "vms",
            "--address-prefixes",
            "127.10.2.0/24",
        ],
    );
    cli(s, &["network", "private-dns", "zone", "create", "-n", ZONE]);
    cli(
        s,
        &[
            "network",
            "private-dns",
            "link",
            "vnet",
            "create",
            "--zone-name",
            ZONE,
            "-n",
            "hub-link",
            "-v",
            "hub",
            "-e",
            "false",
        ],
    );
}

/// An auto-approved endpoint `name` for `service` in hub's endpoint subnet, with a zone
/// group for the private zone.
pub fn endpoint(s: &AdminServer, name: &str, service: &str) {
    let pe = cli(
        s,
        &[
            "network",
            "private-endpoint",
            "create",
            "-n",
            name,
            "--vnet-name",
            "hub",
            "--subnet",
            "endpoints",
            "--service",
            service,
        ],
    );
    assert_eq!(pe["properties"]["provisioningState"], "Succeeded", "{pe}");
    cli(
        s,
        &[
            "network",
            "private-endpoint",
            "dns-zone-group",
            "create",
            "--endpoint-name",
            name,
            "--private-dns-zone",
            ZONE,
        ],
    );
}
