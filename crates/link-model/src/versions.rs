//! The `api-version`s each resource type answers to, and ARM's refusals of the others.
//!
//! The table is written here, not read at run time. Its sources: the OpenAPI documents and
//! examples in `shared/contracts` (Microsoft.HealthcareApis 2024-03-31, Microsoft.Network
//! 2024-07-01 and the examples' 2024-05-01, private DNS 2024-06-01 and the examples'
//! 2020-06-01); the versions the pinned Azure SDKs send (sdk-tests/requirements.txt, read from
//! the installed packages' `api_version` defaults: azure-mgmt-resource 26.0.0 → 2025-04-01,
//! azure-mgmt-healthcareapis 2.1.0 → 2024-03-31, azure-mgmt-network 33.1.0 → 2026-03-01 (some
//! operations 2025-05-01 … 2026-01-01), azure-mgmt-privatedns 2.0.0 → 2024-06-01,
//! azure-mgmt-authorization 4.0.0 → 2022-04-01); the versions fhirlink's own CLI sends; and the
//! earlier versions each API was published under (the version folders of
//! Azure/azure-rest-api-specs, as ARM's own "supported api-versions" messages list them), so
//! that older scripts keep working. A type answers only from the version that introduced it
//! (`since`): private endpoints exist from Microsoft.Network 2019-04-01 on.

use serde_json::{json, Value};

use crate::error::{bad_request, ArmError};
use crate::kind::Kind;

/// Microsoft.Resources: subscriptions, resource groups, the generic resource list, providers.
const RESOURCES: &[&str] = &[
    "2025-04-01",
    "2025-03-01",
    "2025-01-01",
    "2024-11-01",
    "2024-07-01",
    "2024-03-01",
    "2023-07-01",
    "2022-12-01",
    "2022-09-01",
    "2021-04-01",
    "2021-01-01",
    "2020-10-01",
    "2020-08-01",
    "2020-06-01",
    "2020-01-01",
    "2019-11-01",
    "2019-10-01",
    "2019-08-01",
    "2019-07-01",
    "2019-06-01",
    "2019-05-10",
    "2019-05-01",
    "2019-03-01",
    "2018-05-01",
    "2018-02-01",
    "2017-05-10",
    "2016-09-01",
    "2016-07-01",
    "2016-06-01",
    "2016-02-01",
    "2015-11-01",
];

/// Microsoft.HealthcareApis (services, their private endpoint connections and private link
/// resources, checkNameAvailability).
const HEALTHCARE: &[&str] = &[
    "2025-04-01-preview",
    "2024-03-31",
    "2024-03-01",
    "2023-12-01",
    "2023-11-01",
    "2023-09-06",
    "2023-02-28",
    "2022-12-01",
    "2022-10-01-preview",
    "2022-06-01",
    "2022-05-15",
    "2022-01-31-preview",
    "2021-11-01",
    "2021-06-01-preview",
    "2021-03-31-preview",
    "2021-01-11",
    "2020-03-30",
    "2020-03-15",
    "2019-09-16",
    "2018-08-20-preview",
];

/// Microsoft.Network, but for private DNS.
const NETWORK: &[&str] = &[
    "2026-03-01",
    "2026-01-01",
    "2025-09-01",
    "2025-07-01",
    "2025-05-01",
    "2025-03-01",
    "2025-01-01",
    "2024-10-01",
    "2024-07-01",
    "2024-05-01",
    "2024-03-01",
    "2024-01-01",
    "2023-11-01",
    "2023-09-01",
    "2023-06-01",
    "2023-05-01",
    "2023-04-01",
    "2023-02-01",
    "2022-11-01",
    "2022-09-01",
    "2022-07-01",
    "2022-05-01",
    "2022-01-01",
    "2021-08-01",
    "2021-05-01",
    "2021-03-01",
    "2021-02-01",
    "2020-11-01",
    "2020-08-01",
    "2020-07-01",
    "2020-06-01",
    "2020-05-01",
    "2020-04-01",
    "2020-03-01",
    "2019-12-01",
    "2019-11-01",
    "2019-09-01",
    "2019-08-01",
    "2019-07-01",
    "2019-06-01",
    "2019-04-01",
    "2019-02-01",
    "2018-12-01",
    "2018-11-01",
    "2018-10-01",
    "2018-08-01",
    "2018-07-01",
    "2018-06-01",
    "2018-04-01",
    "2018-02-01",
    "2018-01-01",
    "2017-11-01",
    "2017-10-01",
    "2017-09-01",
    "2017-08-01",
    "2017-06-01",
    "2017-04-01",
    "2017-03-01",
    "2016-12-01",
    "2016-11-01",
    "2016-10-01",
    "2016-09-01",
    "2016-08-01",
    "2016-07-01",
    "2016-06-01",
    "2016-03-30",
    "2015-06-15",
    "2015-05-01-preview",
];

/// Microsoft.Network private DNS (zones, record sets, virtual network links).
const PRIVATE_DNS: &[&str] = &["2024-06-01", "2020-06-01", "2020-01-01", "2018-09-01"];

/// Microsoft.Compute virtual machines.
const COMPUTE: &[&str] = &[
    "2025-04-01",
    "2024-11-01",
    "2024-07-01",
    "2024-03-01",
    "2023-09-01",
    "2023-07-01",
    "2023-03-01",
    "2022-11-01",
    "2022-08-01",
    "2022-03-01",
    "2021-11-01",
    "2021-07-01",
    "2021-04-01",
    "2021-03-01",
    "2020-12-01",
    "2020-06-01",
    "2019-12-01",
    "2019-07-01",
    "2019-03-01",
    "2018-10-01",
    "2018-06-01",
    "2018-04-01",
    "2017-12-01",
    "2017-03-30",
    "2016-08-30",
    "2016-03-30",
    "2015-06-15",
];

/// Microsoft.Insights diagnostic settings.
const DIAGNOSTIC_SETTINGS: &[&str] = &["2021-05-01-preview", "2017-05-01-preview", "2016-09-01"];

/// Microsoft.Authorization role assignments.
const ROLE_ASSIGNMENTS: &[&str] = &[
    "2022-04-01",
    "2022-01-01-preview",
    "2020-10-01-preview",
    "2020-08-01-preview",
    "2020-04-01-preview",
    "2020-03-01-preview",
    "2018-09-01-preview",
    "2018-07-01",
    "2018-01-01-preview",
    "2017-10-01-preview",
    "2015-07-01",
];

/// Microsoft.Authorization role definitions.
const ROLE_DEFINITIONS: &[&str] = &[
    "2022-05-01-preview",
    "2022-04-01",
    "2018-01-01-preview",
    "2015-07-01",
];

/// The regions fhirlink accepts resources in, as ARM names them (`name`, `displayName`).
pub(crate) const LOCATIONS: &[(&str, &str)] = &[
    ("eastus", "East US"),
    ("eastus2", "East US 2"),
    ("westus", "West US"),
    ("westus2", "West US 2"),
    ("westus3", "West US 3"),
    ("centralus", "Central US"),
    ("northcentralus", "North Central US"),
    ("southcentralus", "South Central US"),
    ("westcentralus", "West Central US"),
    ("canadacentral", "Canada Central"),
    ("brazilsouth", "Brazil South"),
    ("northeurope", "North Europe"),
    ("westeurope", "West Europe"),
    ("uksouth", "UK South"),
    ("ukwest", "UK West"),
    ("francecentral", "France Central"),
    ("germanywestcentral", "Germany West Central"),
    ("switzerlandnorth", "Switzerland North"),
    ("swedencentral", "Sweden Central"),
    ("norwayeast", "Norway East"),
    ("southafricanorth", "South Africa North"),
    ("uaenorth", "UAE North"),
    ("qatarcentral", "Qatar Central"),
    ("centralindia", "Central India"),
    ("southeastasia", "Southeast Asia"),
    ("eastasia", "East Asia"),
    ("japaneast", "Japan East"),
    ("koreacentral", "Korea Central"),
    ("australiaeast", "Australia East"),
    ("australiasoutheast", "Australia Southeast"),
];

/// The versions of one resource type: those of its API from the one that introduced it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ApiVersions {
    all: &'static [&'static str],
    since: &'static str,
}

impl ApiVersions {
    const fn of(all: &'static [&'static str]) -> ApiVersions {
        ApiVersions { all, since: "" }
    }

    const fn since(all: &'static [&'static str], since: &'static str) -> ApiVersions {
        ApiVersions { all, since }
    }

    /// Newest first.
    pub(crate) fn iter(self) -> impl Iterator<Item = &'static str> {
        // Dates compare as strings; a preview sorts after its date's stable version.
        self.all.iter().copied().filter(move |v| *v >= self.since)
    }

    pub(crate) fn contains(self, version: &str) -> bool {
        self.iter().any(|v| v.eq_ignore_ascii_case(version))
    }
}

/// The api-versions of a kind.
pub(crate) fn of_kind(kind: Kind) -> ApiVersions {
    match kind {
        Kind::ResourceGroup => ApiVersions::of(RESOURCES),
        Kind::FhirService | Kind::PrivateLinkResource => ApiVersions::of(HEALTHCARE),
        // Private Link for Azure API for FHIR came with 2020-03-30.
        Kind::PrivateEndpointConnection => ApiVersions::since(HEALTHCARE, "2020-03-30"),
        Kind::VirtualNetwork | Kind::Subnet | Kind::NetworkSecurityGroup | Kind::SecurityRule => {
            ApiVersions::of(NETWORK)
        }
        Kind::NetworkInterface => ApiVersions::of(NETWORK),
        Kind::VirtualNetworkPeering => ApiVersions::since(NETWORK, "2016-06-01"),
        Kind::PrivateEndpoint => ApiVersions::since(NETWORK, "2019-04-01"),
        Kind::PrivateDnsZoneGroup => ApiVersions::since(NETWORK, "2020-03-01"),
        Kind::PrivateDnsZone
        | Kind::ARecordSet
        | Kind::AllRecordSets
        | Kind::VirtualNetworkLink => ApiVersions::of(PRIVATE_DNS),
        Kind::VirtualMachine => ApiVersions::of(COMPUTE),
        Kind::DiagnosticSetting => ApiVersions::of(DIAGNOSTIC_SETTINGS),
        Kind::RoleAssignment => ApiVersions::of(ROLE_ASSIGNMENTS),
        Kind::RoleDefinition => ApiVersions::of(ROLE_DEFINITIONS),
        // fhirlink's own type, served with the FHIR service's versions.
        Kind::SmartClient => ApiVersions::of(HEALTHCARE),
    }
}

/// The api-versions of Microsoft.Resources' own endpoints (subscriptions, resources, providers).
pub(crate) fn resources() -> ApiVersions {
    ApiVersions::of(RESOURCES)
}

/// `YYYY-MM-DD` with an optional `-suffix` (`-preview`, `-beta`).
pub(crate) fn well_formed(v: &str) -> bool {
    let b = v.as_bytes();
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        });
    date && (b.len() == 10
        || (b.len() > 11 && b[10] == b'-' && b[11..].iter().all(u8::is_ascii_alphanumeric)))
}

/// ARM's 400 for a version Microsoft.Resources does not have, or one that is no date.
pub(crate) fn invalid(version: &str, supported: ApiVersions) -> ArmError {
    let list: Vec<&str> = supported.iter().collect();
    bad_request(
        "InvalidApiVersionParameter",
        format!(
            "The api-version '{version}' is invalid. The supported versions are '{}'.",
            list.join(",")
        ),
    )
}

/// ARM's 400 for a version a resource provider's type does not have: the type as ARM names it
/// there (without its namespace), the location the request was routed by, and what would work.
pub(crate) fn no_registered_provider(kind: Kind, version: &str, location: &str) -> ArmError {
    let versions: Vec<&str> = of_kind(kind).iter().collect();
    let ty = kind
        .type_name()
        .split_once('/')
        .map_or(kind.type_name(), |(_, t)| t);
    let locations: Vec<&str> = locations_of(kind).iter().map(|(n, _)| *n).collect();
    bad_request(
        "NoRegisteredProviderFound",
        format!(
            "No registered resource provider found for location '{location}' and API version \
             '{version}' for type '{ty}'. The supported api-versions are '{}'. The supported \
             locations are '{}'.",
            versions.join(", "),
            locations.join(", ")
        ),
    )
}

/// Where resources of a kind can be: private DNS is global, the rest regional.
fn locations_of(kind: Kind) -> &'static [(&'static str, &'static str)] {
    match kind {
        Kind::PrivateDnsZone
        | Kind::ARecordSet
        | Kind::AllRecordSets
        | Kind::VirtualNetworkLink => &[("global", "global")],
        _ => LOCATIONS,
    }
}

/// The provider of a namespace as ARM's Providers_Get returns it, under subscription `sub_path`.
pub(crate) fn provider(sub_path: &str, namespace: &str) -> Value {
    let mut types: Vec<Value> = Vec::new();
    if namespace == "Microsoft.Resources" {
        for ty in ["subscriptions", "resourceGroups", "resources", "providers"] {
            types.push(json!({
                "resourceType": ty,
                "locations": [],
                "apiVersions": resources().iter().collect::<Vec<_>>(),
                "capabilities": "None"
            }));
        }
    }
    for kind in Kind::all()
        .iter()
        .filter(|k| k.namespace() == namespace && **k != Kind::ResourceGroup)
    {
        let ty = kind
            .type_name()
            .split_once('/')
            .map_or(kind.type_name(), |(_, t)| t);
        let locations: Vec<&str> = if kind.tracked() {
            locations_of(*kind).iter().map(|(_, d)| *d).collect()
        } else {
            Vec::new()
        };
        let capabilities = if kind.tracked() {
            "SupportsTags, SupportsLocation"
        } else {
            "None"
        };
        types.push(json!({
            "resourceType": ty,
            "locations": locations,
            "apiVersions": of_kind(*kind).iter().collect::<Vec<_>>(),
            "capabilities": capabilities
        }));
    }
    if namespace == "Microsoft.HealthcareApis" {
        types.push(json!({
            "resourceType": "checkNameAvailability",
            "locations": [],
            "apiVersions": HEALTHCARE,
            "capabilities": "None"
        }));
    }
    json!({
        "id": format!("{sub_path}/providers/{namespace}"),
        "namespace": namespace,
        "registrationState": "Registered",
        "registrationPolicy": "RegistrationRequired",
        "resourceTypes": types
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_sdks_versions_are_served() {
        // What sdk-tests/requirements.txt's SDKs send (their api_version defaults).
        for (kind, v) in [
            (Kind::ResourceGroup, "2025-04-01"),
            (Kind::FhirService, "2024-03-31"),
            (Kind::PrivateEndpointConnection, "2024-03-31"),
            (Kind::VirtualNetwork, "2026-03-01"),
            (Kind::PrivateEndpoint, "2026-03-01"),
            (Kind::PrivateDnsZoneGroup, "2026-03-01"),
            (Kind::NetworkInterface, "2026-03-01"),
            (Kind::PrivateDnsZone, "2024-06-01"),
            (Kind::VirtualNetworkLink, "2024-06-01"),
            (Kind::RoleAssignment, "2022-04-01"),
            (Kind::RoleDefinition, "2022-04-01"),
            (Kind::DiagnosticSetting, "2021-05-01-preview"),
            (Kind::VirtualMachine, "2024-07-01"),
        ] {
            assert!(of_kind(kind).contains(v), "{kind:?} {v}");
        }
        assert!(!of_kind(Kind::PrivateEndpoint).contains("2018-08-01"));
        assert!(of_kind(Kind::VirtualNetwork).contains("2018-08-01"));
        assert!(!of_kind(Kind::VirtualNetwork).contains("1999-01-01"));
    }

    #[test]
    fn versions_are_dates_newest_first() {
        for kind in Kind::all() {
            let v: Vec<&str> = of_kind(*kind).iter().collect();
            assert!(!v.is_empty(), "{kind:?}");
            assert!(v.iter().all(|x| well_formed(x)), "{v:?}");
            assert!(v.windows(2).all(|w| w[0] > w[1]), "{kind:?} {v:?}");
        }
        assert!(well_formed("2021-05-01-preview"));
        assert!(!well_formed("2021-05-01-"));
        assert!(!well_formed("2021-5-01"));
        assert!(!well_formed("latest"));
    }
}
