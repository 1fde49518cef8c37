//! Diagnostic settings (`Microsoft.Insights/diagnosticSettings`) of FHIR services: a
//! destination, and the categories a FHIR service exports (AuditLogs, AllMetrics).

use serde_json::Value;

use super::{array, props_of, store};
use crate::error::{bad_request, ArmError};
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{s, Resource};
use crate::txn::Txn;

pub(super) const DESTINATIONS: &[&str] = &[
    "storageAccountId",
    "workspaceId",
    "eventHubAuthorizationRuleId",
    "serviceBusRuleId",
    "marketplacePartnerId",
];

pub(super) fn put_diagnostic_setting(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    if addr.parent.kind != Some(Kind::FhirService) {
        return Err(bad_request(
            "ResourceTypeNotSupported",
            "fhirlink exports diagnostics of Microsoft.HealthcareApis/services only.",
        ));
    }
    let props = props_of(input);
    if !DESTINATIONS.iter().any(|d| {
        props
            .get(*d)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.is_empty())
    }) {
        return Err(bad_request(
            "BadRequest",
            "A diagnostic setting needs a destination: storageAccountId (exported to files), workspaceId, eventHubAuthorizationRuleId or marketplacePartnerId.",
        ));
    }
    for l in array(&props, "logs")? {
        let cat = s(l, "category");
        let group = s(l, "categoryGroup");
        let ok = cat.eq_ignore_ascii_case("AuditLogs")
            || (cat.is_empty()
                && (group.eq_ignore_ascii_case("allLogs") || group.eq_ignore_ascii_case("audit")));
        if !ok {
            return Err(bad_request(
                "BadRequest",
                format!("Category '{}' is not supported: a FHIR service exports the log category 'AuditLogs'.", if cat.is_empty() { group } else { cat }),
            ));
        }
    }
    for m in array(&props, "metrics")? {
        let cat = s(m, "category");
        if !cat.eq_ignore_ascii_case("AllMetrics") {
            return Err(bad_request(
                "BadRequest",
                format!("Category '{cat}' is not supported: a FHIR service exports the metric category 'AllMetrics'."),
            ));
        }
    }
    store(tx, addr, input, existing, props, &[], None).map(drop)
}
