//! Resource name rules, per type, as Azure enforces them.

use crate::error::{bad_request, ArmError};
use crate::kind::Kind;

fn word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Network resources: 1–80 characters; begins with a word character, ends with a word
/// character or `_`; word characters, `.`, `-`, `_` in between.
fn network_name(name: &str, max: usize) -> bool {
    let n = name.chars().count();
    let first = name.chars().next();
    let last = name.chars().last();
    (1..=max).contains(&n)
        && first.is_some_and(word)
        && last.is_some_and(word)
        && name.chars().all(|c| word(c) || c == '.' || c == '-')
}

fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

fn rule(kind: Kind) -> &'static str {
    match kind {
        Kind::ResourceGroup => "Resource group names can be 1 to 90 characters: letters, digits, underscores, hyphens, periods and parentheses, and cannot end in a period.",
        Kind::FhirService => "Service names are 3 to 24 characters: lower-case letters, digits and hyphens, beginning and ending with a letter or digit.",
        Kind::PrivateDnsZone => "A private DNS zone name is a domain name of at least two labels, each 1 to 63 letters, digits, hyphens or underscores.",
        Kind::ARecordSet => "A record set name is '@' or relative domain labels of 1 to 63 letters, digits, hyphens or underscores.",
        Kind::VirtualMachine => "Virtual machine names are 1 to 64 characters, cannot contain \\/\"[]:|<>+=;,?*@& or spaces, cannot begin with '_' and cannot end with '.' or '-'.",
        Kind::RoleAssignment => "The role assignment name must be a GUID.",
        Kind::VirtualNetwork | Kind::PrivateEndpoint => "The name must be 2 to 64 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.",
        Kind::DiagnosticSetting => "Diagnostic setting names are 1 to 260 characters and cannot contain <>*%&:\\?+/.",
        _ => "The name can be up to 80 characters long. It must begin with a word character, and it must end with a word character or with '_'. The name may contain word characters or '.', '-', '_'.",
    }
}

/// Validates a new resource's name, or answers 400 with Azure's code for the type.
pub(crate) fn validate(kind: Kind, name: &str) -> Result<(), ArmError> {
    let ok = match kind {
        Kind::ResourceGroup => {
            let n = name.chars().count();
            (1..=90).contains(&n)
                && !name.ends_with('.')
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.()".contains(c))
        }
        Kind::FhirService => {
            let b = name.as_bytes();
            (3..=24).contains(&b.len())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b.first().is_some_and(|c| *c != b'-')
                && b.last().is_some_and(|c| *c != b'-')
        }
        Kind::VirtualNetwork | Kind::PrivateEndpoint => {
            network_name(name, 64) && name.chars().count() >= 2
        }
        Kind::PrivateDnsZone => {
            let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
            name.len() <= 253
                && labels.len() >= 2
                && labels.len() <= 34
                && labels.iter().all(|l| dns_label(l))
        }
        Kind::ARecordSet => {
            name == "@" || (name.len() <= 253 && name.split('.').all(|l| dns_label(l) || l == "*"))
        }
        Kind::VirtualMachine => {
            let n = name.chars().count();
            (1..=64).contains(&n)
                && !name.starts_with('_')
                && !name.ends_with('.')
                && !name.ends_with('-')
                && !name
                    .chars()
                    .any(|c| c.is_whitespace() || "\\/\"[]:|<>+=;,?*@&~!#$%^'(){}`".contains(c))
        }
        Kind::RoleAssignment => crate::path::valid_guid(name),
        Kind::DiagnosticSetting => {
            let n = name.chars().count();
            (1..=260).contains(&n) && !name.chars().any(|c| "<>*%&:\\?+/".contains(c))
        }
        _ => network_name(name, 80),
    };
    if ok {
        return Ok(());
    }
    let code = match kind {
        Kind::ResourceGroup => "InvalidResourceGroupName",
        Kind::RoleAssignment => "InvalidRoleAssignmentId",
        _ => "InvalidResourceName",
    };
    Err(bad_request(
        code,
        format!("Resource name '{name}' is invalid. {}", rule(kind)),
    ))
}
