//! The ARM resource types fhirlink knows: their canonical type names, where they live
//! (resource group, parent resource, any scope) and their ARM conventions.

/// An ARM resource type served by fhirlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    ResourceGroup,
    FhirService,
    PrivateEndpointConnection,
    PrivateLinkResource,
    VirtualNetwork,
    Subnet,
    VirtualNetworkPeering,
    NetworkSecurityGroup,
    SecurityRule,
    NetworkInterface,
    PrivateEndpoint,
    PrivateDnsZoneGroup,
    PrivateDnsZone,
    ARecordSet,
    AllRecordSets,
    VirtualNetworkLink,
    VirtualMachine,
    DiagnosticSetting,
    RoleAssignment,
    RoleDefinition,
    /// fhirlink's own: a SMART Backend Services client of a FHIR service (its public keys and
    /// the `system/` scopes it may be granted at the service's token endpoint).
    SmartClient,
}

/// Where a resource type hangs in the id tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    /// Directly under a resource group (list by subscription too).
    ResourceGroup,
    /// A child of a resource of this kind.
    Resource(Kind),
    /// An extension resource on any resource (`{id}/providers/...`).
    AnyResource,
    /// An extension at any scope: root, subscription, resource group or resource.
    AnyScope,
}

pub(crate) const ALL: &[Kind] = &[
    Kind::ResourceGroup,
    Kind::FhirService,
    Kind::PrivateEndpointConnection,
    Kind::PrivateLinkResource,
    Kind::VirtualNetwork,
    Kind::Subnet,
    Kind::VirtualNetworkPeering,
    Kind::NetworkSecurityGroup,
    Kind::SecurityRule,
    Kind::NetworkInterface,
    Kind::PrivateEndpoint,
    Kind::PrivateDnsZoneGroup,
    Kind::PrivateDnsZone,
    Kind::ARecordSet,
    Kind::AllRecordSets,
    Kind::VirtualNetworkLink,
    Kind::VirtualMachine,
    Kind::DiagnosticSetting,
    Kind::RoleAssignment,
    Kind::RoleDefinition,
    Kind::SmartClient,
];

/// Resource provider namespaces fhirlink serves.
pub(crate) const NAMESPACES: &[&str] = &[
    "Microsoft.Resources",
    "Microsoft.HealthcareApis",
    "Microsoft.Network",
    "Microsoft.Compute",
    "Microsoft.Insights",
    "Microsoft.Authorization",
];

impl Kind {
    /// Every resource type fhirlink serves.
    pub fn all() -> &'static [Kind] {
        ALL
    }

    /// The ARM `type`, e.g. `Microsoft.Network/virtualNetworks/subnets`.
    pub fn type_name(self) -> &'static str {
        match self {
            Kind::ResourceGroup => "Microsoft.Resources/resourceGroups",
            Kind::FhirService => "Microsoft.HealthcareApis/services",
            Kind::PrivateEndpointConnection => {
                "Microsoft.HealthcareApis/services/privateEndpointConnections"
            }
            Kind::PrivateLinkResource => "Microsoft.HealthcareApis/services/privateLinkResources",
            Kind::VirtualNetwork => "Microsoft.Network/virtualNetworks",
            Kind::Subnet => "Microsoft.Network/virtualNetworks/subnets",
            Kind::VirtualNetworkPeering => {
                "Microsoft.Network/virtualNetworks/virtualNetworkPeerings"
            }
            Kind::NetworkSecurityGroup => "Microsoft.Network/networkSecurityGroups",
            Kind::SecurityRule => "Microsoft.Network/networkSecurityGroups/securityRules",
            Kind::NetworkInterface => "Microsoft.Network/networkInterfaces",
            Kind::PrivateEndpoint => "Microsoft.Network/privateEndpoints",
            Kind::PrivateDnsZoneGroup => "Microsoft.Network/privateEndpoints/privateDnsZoneGroups",
            Kind::PrivateDnsZone => "Microsoft.Network/privateDnsZones",
            Kind::ARecordSet => "Microsoft.Network/privateDnsZones/A",
            Kind::AllRecordSets => "Microsoft.Network/privateDnsZones/ALL",
            Kind::VirtualNetworkLink => "Microsoft.Network/privateDnsZones/virtualNetworkLinks",
            Kind::VirtualMachine => "Microsoft.Compute/virtualMachines",
            Kind::DiagnosticSetting => "Microsoft.Insights/diagnosticSettings",
            Kind::RoleAssignment => "Microsoft.Authorization/roleAssignments",
            Kind::RoleDefinition => "Microsoft.Authorization/roleDefinitions",
            Kind::SmartClient => "Microsoft.HealthcareApis/services/smartClients",
        }
    }

    /// The namespace part of the type name.
    pub(crate) fn namespace(self) -> &'static str {
        self.type_name().split('/').next().unwrap_or_default()
    }

    /// The last segment of the type name, as it appears in ids.
    pub(crate) fn segment(self) -> &'static str {
        self.type_name().rsplit('/').next().unwrap_or_default()
    }

    pub(crate) fn parent(self) -> Parent {
        match self {
            Kind::ResourceGroup => Parent::AnyScope,
            Kind::FhirService
            | Kind::VirtualNetwork
            | Kind::NetworkSecurityGroup
            | Kind::NetworkInterface
            | Kind::PrivateEndpoint
            | Kind::PrivateDnsZone
            | Kind::VirtualMachine => Parent::ResourceGroup,
            Kind::PrivateEndpointConnection | Kind::PrivateLinkResource | Kind::SmartClient => {
                Parent::Resource(Kind::FhirService)
            }
            Kind::Subnet | Kind::VirtualNetworkPeering => Parent::Resource(Kind::VirtualNetwork),
            Kind::SecurityRule => Parent::Resource(Kind::NetworkSecurityGroup),
            Kind::PrivateDnsZoneGroup => Parent::Resource(Kind::PrivateEndpoint),
            Kind::ARecordSet | Kind::AllRecordSets | Kind::VirtualNetworkLink => {
                Parent::Resource(Kind::PrivateDnsZone)
            }
            Kind::DiagnosticSetting => Parent::AnyResource,
            Kind::RoleAssignment | Kind::RoleDefinition => Parent::AnyScope,
        }
    }

    /// Tracked resources carry a `location` (and tags).
    pub(crate) fn tracked(self) -> bool {
        matches!(
            self,
            Kind::ResourceGroup
                | Kind::FhirService
                | Kind::VirtualNetwork
                | Kind::NetworkSecurityGroup
                | Kind::NetworkInterface
                | Kind::PrivateEndpoint
                | Kind::PrivateDnsZone
                | Kind::VirtualNetworkLink
                | Kind::VirtualMachine
        )
    }

    /// Looks a type up by its lowercase key (`microsoft.network/virtualnetworks/subnets`).
    pub(crate) fn from_key(key: &str) -> Option<Kind> {
        ALL.iter()
            .copied()
            .find(|k| k.type_name().eq_ignore_ascii_case(key))
    }

    /// The stable name used in stored documents.
    pub(crate) fn key(self) -> String {
        self.type_name().to_ascii_lowercase()
    }
}
