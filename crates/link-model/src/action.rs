//! What a management request *is*: the one ARM action it performs, decided once from its
//! method and path ([`classify`]). The same decision authorizes the request in `handle` and
//! names it in the audit record and the metrics, so a request is never audited under another
//! name than it was authorized with (STYLE.md, "One decision, one place").
//!
//! Action names are Azure's own (`Microsoft.Resources/subscriptions/resourceGroups/read`,
//! `Microsoft.Network/privateEndpoints/write`, `Microsoft.HealthcareApis/register/action`),
//! the strings role definitions grant. Every one is a `&'static str` from a fixed list
//! ([`ACTIONS`]), so a metric labelled by it cannot grow with what clients send.

use crate::handle::Method;
use crate::kind::{Kind, NAMESPACES};
use crate::path::{self, Target};

/// The verb of an ARM resource action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Read,
    Write,
    Delete,
}

/// Builds [`action`] and the list of resource actions from one table, so that the two can
/// never disagree. Each prefix is the kind's type name, except a resource group's: Azure names
/// its actions under `subscriptions/` (`Microsoft.Resources/subscriptions/resourceGroups/read`).
macro_rules! kind_actions {
    ($($kind:ident: $prefix:literal;)*) => {
        /// Azure's action for a verb on a kind (`Microsoft.Network/virtualNetworks/write`).
        pub(crate) fn action(kind: Kind, verb: Verb) -> &'static str {
            match (kind, verb) {
                $(
                    (Kind::$kind, Verb::Read) => concat!($prefix, "/read"),
                    (Kind::$kind, Verb::Write) => concat!($prefix, "/write"),
                    (Kind::$kind, Verb::Delete) => concat!($prefix, "/delete"),
                )*
            }
        }

        const KIND_ACTIONS: &[&str] = &[
            $(concat!($prefix, "/read"), concat!($prefix, "/write"), concat!($prefix, "/delete"),)*
        ];
    };
}

kind_actions! {
    ResourceGroup: "Microsoft.Resources/subscriptions/resourceGroups";
    FhirService: "Microsoft.HealthcareApis/services";
    PrivateEndpointConnection: "Microsoft.HealthcareApis/services/privateEndpointConnections";
    PrivateLinkResource: "Microsoft.HealthcareApis/services/privateLinkResources";
    VirtualNetwork: "Microsoft.Network/virtualNetworks";
    Subnet: "Microsoft.Network/virtualNetworks/subnets";
    VirtualNetworkPeering: "Microsoft.Network/virtualNetworks/virtualNetworkPeerings";
    NetworkSecurityGroup: "Microsoft.Network/networkSecurityGroups";
    SecurityRule: "Microsoft.Network/networkSecurityGroups/securityRules";
    NetworkInterface: "Microsoft.Network/networkInterfaces";
    PrivateEndpoint: "Microsoft.Network/privateEndpoints";
    PrivateDnsZoneGroup: "Microsoft.Network/privateEndpoints/privateDnsZoneGroups";
    PrivateDnsZone: "Microsoft.Network/privateDnsZones";
    ARecordSet: "Microsoft.Network/privateDnsZones/A";
    AllRecordSets: "Microsoft.Network/privateDnsZones/ALL";
    VirtualNetworkLink: "Microsoft.Network/privateDnsZones/virtualNetworkLinks";
    VirtualMachine: "Microsoft.Compute/virtualMachines";
    DiagnosticSetting: "Microsoft.Insights/diagnosticSettings";
    RoleAssignment: "Microsoft.Authorization/roleAssignments";
    RoleDefinition: "Microsoft.Authorization/roleDefinitions";
    SmartClient: "Microsoft.HealthcareApis/services/smartClients";
}

/// `GET /subscriptions` and `GET /subscriptions/{s}`.
pub const SUBSCRIPTIONS_READ: &str = "Microsoft.Resources/subscriptions/read";
/// `GET /subscriptions/{s}/resources`.
pub const SUBSCRIPTION_RESOURCES_READ: &str = "Microsoft.Resources/subscriptions/resources/read";
/// `GET /subscriptions/{s}/resourceGroups/{g}/resources`.
pub const GROUP_RESOURCES_READ: &str =
    "Microsoft.Resources/subscriptions/resourceGroups/resources/read";
/// `GET /subscriptions/{s}/providers[/{namespace}]`.
pub const PROVIDERS_READ: &str = "Microsoft.Resources/subscriptions/providers/read";
/// `POST /subscriptions/{s}/resourceGroups/{g}/moveResources`.
pub const MOVE_RESOURCES: &str =
    "Microsoft.Resources/subscriptions/resourceGroups/moveResources/action";
/// `POST …/providers/Microsoft.HealthcareApis/checkNameAvailability`.
pub const CHECK_NAME_AVAILABILITY: &str = "Microsoft.HealthcareApis/checkNameAvailability/read";
/// `GET /metrics`, the binary's Prometheus endpoint, granted at the root scope.
pub const METRICS_READ: &str = "Microsoft.Insights/metrics/read";
/// `POST /fhirlink/backup`, the binary's online backup. A backup holds the token signing key
/// and the CA's key, so it is granted only with the power to assign roles at the root scope
/// (the Owner at `/`, [`crate::may_back_up`]): a Contributor's `*` is not enough.
pub const BACKUP_ACTION: &str = "fhirlink/backup/action";

/// `POST /subscriptions/{s}/providers/{namespace}/register`: Azure's `<namespace>/register/action`,
/// one per namespace of [`NAMESPACES`].
const REGISTER: &[(&str, &str)] = &[
    ("Microsoft.Resources", "Microsoft.Resources/register/action"),
    (
        "Microsoft.HealthcareApis",
        "Microsoft.HealthcareApis/register/action",
    ),
    ("Microsoft.Network", "Microsoft.Network/register/action"),
    ("Microsoft.Compute", "Microsoft.Compute/register/action"),
    ("Microsoft.Insights", "Microsoft.Insights/register/action"),
    (
        "Microsoft.Authorization",
        "Microsoft.Authorization/register/action",
    ),
];

/// The names of requests that name nothing fhirlink serves (an unknown path or type, a verb
/// the target has not), by verb.
pub const UNKNOWN_READ: &str = "unknown/read";
pub const UNKNOWN_WRITE: &str = "unknown/write";
pub const UNKNOWN_DELETE: &str = "unknown/delete";
pub const UNKNOWN_ACTION: &str = "unknown/action";
pub const UNKNOWN_OTHER: &str = "unknown/other";

/// Path of the binary's diagnosis endpoint on the management listener.
pub const DIAGNOSE_PATH: &str = "/fhirlink/diagnose";
/// Path of the binary's metrics endpoint on the management listener.
pub const METRICS_PATH: &str = "/metrics";
/// Path of the binary's backup endpoint on the management listener.
pub const BACKUP_PATH: &str = "/fhirlink/backup";

/// Every action [`classify`] can name, the unknown ones last.
pub fn actions() -> impl Iterator<Item = &'static str> {
    // `…/privateDnsZones/{z}/ALL` is a list only: a name after it is no path.
    let unnamed = [
        action(Kind::AllRecordSets, Verb::Write),
        action(Kind::AllRecordSets, Verb::Delete),
    ];
    KIND_ACTIONS
        .iter()
        .copied()
        .filter(move |a| !unnamed.contains(a))
        .chain([
            SUBSCRIPTIONS_READ,
            SUBSCRIPTION_RESOURCES_READ,
            GROUP_RESOURCES_READ,
            PROVIDERS_READ,
            MOVE_RESOURCES,
            CHECK_NAME_AVAILABILITY,
            METRICS_READ,
            BACKUP_ACTION,
        ])
        .chain(REGISTER.iter().map(|(_, a)| *a))
        .chain([
            UNKNOWN_READ,
            UNKNOWN_WRITE,
            UNKNOWN_DELETE,
            UNKNOWN_ACTION,
            UNKNOWN_OTHER,
        ])
}

/// The one ARM action of a management request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmAction {
    /// Azure's action name, one of [`actions`]: what is authorized, audited and counted.
    pub name: &'static str,
    /// The canonical resource type the request is about, when fhirlink serves it.
    pub resource_type: Option<&'static str>,
    /// The id of the one resource the request names (for a POST action, the resource acted
    /// on), with the type segments in canonical casing and the names as spelled.
    pub resource_id: Option<String>,
    /// The FHIR service the request is about or under (lowercase name).
    pub service: Option<String>,
}

impl ArmAction {
    fn unknown(method: Method) -> ArmAction {
        ArmAction {
            name: unknown_name(method),
            resource_type: None,
            resource_id: None,
            service: None,
        }
    }

    fn on(
        name: &'static str,
        resource_type: &'static str,
        resource_id: Option<String>,
    ) -> ArmAction {
        let service = resource_id.as_deref().and_then(service_of);
        ArmAction {
            name,
            resource_type: Some(resource_type),
            resource_id,
            service,
        }
    }

    /// This action about one FHIR service (for `/fhirlink/diagnose`, whose service is named
    /// in the query).
    pub fn about_service(mut self, service_id: &str) -> ArmAction {
        self.service = service_of(service_id);
        self.resource_id = Some(service_id.to_owned());
        self
    }
}

fn unknown_name(method: Method) -> &'static str {
    match method {
        Method::Get => UNKNOWN_READ,
        Method::Put | Method::Patch => UNKNOWN_WRITE,
        Method::Delete => UNKNOWN_DELETE,
        Method::Post => UNKNOWN_ACTION,
        Method::Other => UNKNOWN_OTHER,
    }
}

/// The lowercase name of the FHIR service an id is (or is under).
fn service_of(id: &str) -> Option<String> {
    const MARK: &str = "/providers/microsoft.healthcareapis/services/";
    let lower = id.to_ascii_lowercase();
    let at = lower.find(MARK)? + MARK.len();
    let name = lower[at..].split('/').next().filter(|n| !n.is_empty())?;
    Some(name.to_owned())
}

/// The ARM action of a management request, from its method and raw (percent-encoded) path:
/// the pure function that both authorization and audit read. Requests refused before
/// `handle` runs (401 at the auth layer) get their action here too.
pub fn classify(method: Method, raw_path: &str) -> ArmAction {
    if method == Method::Get && raw_path == METRICS_PATH {
        return ArmAction {
            name: METRICS_READ,
            resource_type: Some("Microsoft.Insights/metrics"),
            resource_id: None,
            service: None,
        };
    }
    if method == Method::Post && raw_path == BACKUP_PATH {
        return ArmAction {
            name: BACKUP_ACTION,
            resource_type: None,
            resource_id: None,
            service: None,
        };
    }
    if method == Method::Get && raw_path == DIAGNOSE_PATH {
        // A diagnosis is authorized as a read of the service it explains.
        return ArmAction {
            name: action(Kind::FhirService, Verb::Read),
            resource_type: Some(Kind::FhirService.type_name()),
            resource_id: None,
            service: None,
        };
    }
    match path::resolve(raw_path, "") {
        Ok(target) => of_target(method, &target),
        Err(_) => ArmAction::unknown(method),
    }
}

/// The action of a resolved target: what `handle` checks.
pub(crate) fn of_target(method: Method, target: &Target) -> ArmAction {
    let verb = match method {
        Method::Get => Some(Verb::Read),
        Method::Put | Method::Patch => Some(Verb::Write),
        Method::Delete => Some(Verb::Delete),
        Method::Post | Method::Other => None,
    };
    match (target, verb) {
        (Target::Subscriptions, Some(Verb::Read)) => ArmAction {
            name: SUBSCRIPTIONS_READ,
            resource_type: Some("Microsoft.Resources/subscriptions"),
            resource_id: None,
            service: None,
        },
        (Target::Subscription(scope), Some(Verb::Read)) => ArmAction::on(
            SUBSCRIPTIONS_READ,
            "Microsoft.Resources/subscriptions",
            Some(scope.path.clone()),
        ),
        (Target::Item(addr), Some(v)) => ArmAction::on(
            action(addr.kind, v),
            addr.kind.type_name(),
            Some(addr.path.clone()),
        ),
        (Target::Collection { kind, parent }, Some(Verb::Read)) => {
            let mut a = ArmAction::on(action(*kind, Verb::Read), kind.type_name(), None);
            a.service = service_of(&parent.key);
            a
        }
        (Target::Resources(scope), Some(Verb::Read)) => {
            let name = if scope.rg.is_some() {
                GROUP_RESOURCES_READ
            } else {
                SUBSCRIPTION_RESOURCES_READ
            };
            ArmAction::on(name, "Microsoft.Resources/resources", None)
        }
        (Target::Providers { .. }, Some(Verb::Read)) => {
            ArmAction::on(PROVIDERS_READ, "Microsoft.Resources/providers", None)
        }
        (Target::Provider { sub, namespace }, Some(Verb::Read)) => ArmAction::on(
            PROVIDERS_READ,
            "Microsoft.Resources/providers",
            Some(format!("{}/providers/{namespace}", sub.path)),
        ),
        (Target::Register { sub, namespace }, None) if method == Method::Post => {
            match REGISTER
                .iter()
                .find(|(ns, _)| ns.eq_ignore_ascii_case(namespace))
            {
                Some((ns, name)) => ArmAction::on(
                    name,
                    "Microsoft.Resources/providers",
                    Some(format!("{}/providers/{ns}", sub.path)),
                ),
                None => ArmAction::unknown(method),
            }
        }
        (Target::Action { name, scope }, None) if method == Method::Post => match name.as_str() {
            "moveresources" if scope.kind == Some(Kind::ResourceGroup) => ArmAction::on(
                MOVE_RESOURCES,
                Kind::ResourceGroup.type_name(),
                Some(scope.path.clone()),
            ),
            "checknameavailability" => ArmAction::on(
                CHECK_NAME_AVAILABILITY,
                "Microsoft.HealthcareApis/checkNameAvailability",
                None,
            ),
            _ => ArmAction::unknown(method),
        },
        _ => ArmAction::unknown(method),
    }
}

/// The namespaces whose providers fhirlink answers for, in their canonical spelling.
pub(crate) fn namespace(name: &str) -> Option<&'static str> {
    NAMESPACES
        .iter()
        .copied()
        .find(|n| n.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_actions_are_named_after_the_type() {
        for kind in Kind::all() {
            for (verb, word) in [
                (Verb::Read, "read"),
                (Verb::Write, "write"),
                (Verb::Delete, "delete"),
            ] {
                let want = match kind {
                    Kind::ResourceGroup => {
                        format!("Microsoft.Resources/subscriptions/resourceGroups/{word}")
                    }
                    k => format!("{}/{word}", k.type_name()),
                };
                assert_eq!(action(*kind, verb), want);
            }
        }
        assert_eq!(REGISTER.len(), NAMESPACES.len());
        let all: Vec<&str> = actions().collect();
        let unique: std::collections::BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), unique.len(), "no action twice");
    }

    #[test]
    fn services_are_found_in_ids() {
        let svc =
            "/subscriptions/s/resourceGroups/g/providers/Microsoft.HealthcareApis/services/MyFhir";
        assert_eq!(service_of(svc).as_deref(), Some("myfhir"));
        assert_eq!(
            service_of(&format!("{svc}/privateEndpointConnections/x")).as_deref(),
            Some("myfhir")
        );
        assert_eq!(service_of("/subscriptions/s"), None);
        assert_eq!(
            service_of("/subscriptions/s/providers/Microsoft.HealthcareApis/services/"),
            None
        );
    }
}
