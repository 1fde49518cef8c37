//! Network security groups and their rules (`Microsoft.Network/networkSecurityGroups[/securityRules]`):
//! Azure's validation of a rule (priority, direction, access, protocol, prefixes, ports) and
//! unique priorities per direction.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Map, Value};

use super::{array, child_addr, props_of, store};
use crate::error::{bad_request, not_found, ArmError};
use crate::ipnet::{parse_ip, Prefix};
use crate::kind::Kind;
use crate::path::Addr;
use crate::state::{ref_key, s, Resource, State};
use crate::txn::{guid_from, Txn};

pub(super) fn valid_port_range(v: &str) -> bool {
    if v == "*" {
        return true;
    }
    let port = |p: &str| p.trim().parse::<u32>().is_ok_and(|n| n <= 65535);
    match v.split_once('-') {
        Some((a, b)) => {
            port(a) && port(b) && a.trim().parse::<u32>().ok() <= b.trim().parse::<u32>().ok()
        }
        None => port(v),
    }
}

pub(super) fn valid_address_prefix(v: &str) -> bool {
    v == "*"
        || parse_ip(v).is_some()
        || Prefix::parse(v).is_some()
        || (v.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'))
}

/// Validates one security rule (Azure's limits: priority 100–4096, direction, access,
/// protocol, prefixes and ports) and returns its properties with canonical casing.
pub(crate) fn validate_rule(
    name: &str,
    p: &Map<String, Value>,
) -> Result<Map<String, Value>, ArmError> {
    let mut out = p.clone();
    out.remove("provisioningState");
    let pick =
        |field: &str, allowed: &[&'static str], code: &str| -> Result<&'static str, ArmError> {
            let v = p.get(field).and_then(Value::as_str).unwrap_or("");
            allowed
                .iter()
                .find(|a| a.eq_ignore_ascii_case(v))
                .copied()
                .ok_or_else(|| {
                    bad_request(
                        code,
                        format!(
                        "Security rule {name} has invalid {field} '{v}'. Allowed values are {}.",
                        allowed.join(", ")
                    ),
                    )
                })
        };
    out.insert(
        "protocol".into(),
        json!(pick(
            "protocol",
            &["Tcp", "Udp", "Icmp", "Esp", "Ah", "*"],
            "SecurityRuleInvalidProtocol"
        )?),
    );
    out.insert(
        "access".into(),
        json!(pick(
            "access",
            &["Allow", "Deny"],
            "SecurityRuleInvalidAccess"
        )?),
    );
    out.insert(
        "direction".into(),
        json!(pick(
            "direction",
            &["Inbound", "Outbound"],
            "SecurityRuleInvalidDirection"
        )?),
    );
    let priority = p.get("priority").and_then(Value::as_i64);
    match priority {
        Some(n) if (100..=4096).contains(&n) => {
            out.insert("priority".into(), json!(n));
        }
        _ => {
            return Err(bad_request(
                "SecurityRuleInvalidPriority",
                format!(
                    "Security rule {name} has invalid Priority. Value provided: {}. Allowed values are from 100 to 4096.",
                    p.get("priority").map(ToString::to_string).unwrap_or_else(|| "none".into())
                ),
            ))
        }
    }
    for side in ["source", "destination"] {
        let single = p
            .get(&format!("{side}AddressPrefix"))
            .and_then(Value::as_str);
        let many: Vec<&str> = p
            .get(&format!("{side}AddressPrefixes"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all: Vec<&str> = single.into_iter().chain(many).collect();
        if all.is_empty() || all.iter().any(|v| !valid_address_prefix(v)) {
            return Err(bad_request(
                "SecurityRuleInvalidAddressPrefix",
                format!("Security rule {name} has invalid {side} address prefix {all:?}: use '*', a service tag such as Internet or VirtualNetwork, an IPv4 address or a CIDR prefix."),
            ));
        }
        let single = p.get(&format!("{side}PortRange")).and_then(Value::as_str);
        let many: Vec<&str> = p
            .get(&format!("{side}PortRanges"))
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let all: Vec<&str> = single.into_iter().chain(many).collect();
        if all.is_empty() || all.iter().any(|v| !valid_port_range(v)) {
            return Err(bad_request(
                "SecurityRuleInvalidPortRange",
                format!("Security rule {name} has invalid {side} port range {all:?}: use '*', a port or a range such as 80-88 within 0-65535."),
            ));
        }
    }
    Ok(out)
}

pub(super) fn check_rule_conflicts(rules: &[(String, Map<String, Value>)]) -> Result<(), ArmError> {
    // One pass with the (priority, direction) pairs seen so far, not every pair of rules.
    let mut seen: HashMap<(String, String), &str> = HashMap::new();
    for (name, p) in rules {
        let key = (
            p.get("priority")
                .map(ToString::to_string)
                .unwrap_or_default(),
            p.get("direction")
                .map(ToString::to_string)
                .unwrap_or_default(),
        );
        if let Some(first) = seen.insert(key, name) {
            return Err(bad_request(
                "SecurityRuleConflict",
                format!("Rules '{first}' and '{name}' have the same Priority and Direction. Priority and Direction must be unique for each rule in a security group."),
            ));
        }
    }
    Ok(())
}

/// Azure's limit of security rules in one network security group ("Networking limits",
/// learn.microsoft.com/azure/azure-resource-manager/management/azure-subscription-service-limits:
/// "Security rules per network security group: 1,000").
pub(crate) const MAX_SECURITY_RULES: usize = 1000;

fn too_many_rules(nsg: &str, count: usize) -> ArmError {
    bad_request(
        "QuotaExceeded",
        format!(
            "Operation results in exceeding quota limits of Security rules per network security \
             group. Maximum allowed: {MAX_SECURITY_RULES}, requested: {count}, network security \
             group: '{nsg}'. See aka.ms/azurelimits for the networking limits."
        ),
    )
}

pub(super) fn put_nsg(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let mut props = props_of(input);
    let given: Vec<Value> = array(&props, "securityRules")?
        .into_iter()
        .cloned()
        .collect();
    if given.len() > MAX_SECURITY_RULES {
        return Err(too_many_rules(&addr.name, given.len()));
    }
    let mut rules = Vec::new();
    for r in &given {
        let name = s(r, "name");
        crate::names::validate(Kind::SecurityRule, name)?;
        rules.push((name.to_owned(), validate_rule(name, &props_of(r))?));
    }
    let mut names = BTreeSet::new();
    for (n, _) in &rules {
        if !names.insert(n.to_lowercase()) {
            return Err(bad_request(
                "InvalidRequestFormat",
                format!("Security rule '{n}' is listed twice."),
            ));
        }
    }
    check_rule_conflicts(&rules)?;
    for k in [
        "securityRules",
        "defaultSecurityRules",
        "subnets",
        "networkInterfaces",
        "provisioningState",
    ] {
        props.remove(k);
    }
    props
        .entry("resourceGuid")
        .or_insert_with(|| json!(guid_from(&addr.key)));
    let nsg = store(tx, addr, input, existing, props, &[], None)?;
    let stale: Vec<String> = tx
        .st
        .children(&nsg.key(), Kind::SecurityRule)
        .filter(|r| !names.contains(&r.name().to_lowercase()))
        .map(Resource::key)
        .collect();
    for k in stale {
        tx.remove(&k);
    }
    for ((name, p), raw) in rules.into_iter().zip(&given) {
        let a = child_addr(&nsg, Kind::SecurityRule, &name);
        let ex = tx.get(&a.key).cloned();
        store(tx, &a, raw, ex.as_ref(), p, &[], None)?;
    }
    Ok(())
}

pub(super) fn nsg_in_use(state: &State, nsg: &Resource) -> Option<String> {
    let k = nsg.key();
    state
        .resources()
        .filter(|r| matches!(r.kind, Kind::Subnet | Kind::NetworkInterface))
        .find(|r| {
            ref_key(
                r.body.get("properties").unwrap_or(&Value::Null),
                "networkSecurityGroup",
            )
            .as_deref()
                == Some(k.as_str())
        })
        .map(|r| r.id.clone())
}

/// One rule PUT on its own: valid, and no sibling with its priority and direction.
pub(super) fn put_rule(
    tx: &mut Txn<'_>,
    addr: &Addr,
    input: &Value,
    existing: Option<&Resource>,
) -> Result<(), ArmError> {
    let nsg = tx
        .get(&addr.parent.key)
        .cloned()
        .ok_or_else(|| not_found(Kind::NetworkSecurityGroup.type_name(), "", None))?;
    let mut siblings: Vec<(String, Map<String, Value>)> = tx
        .st
        .children(&nsg.key(), Kind::SecurityRule)
        .filter(|r| r.key() != addr.key)
        .map(|r| (r.name().to_owned(), props_of(&r.body)))
        .collect();
    if existing.is_none() && siblings.len() >= MAX_SECURITY_RULES {
        return Err(too_many_rules(nsg.name(), siblings.len() + 1));
    }
    let props = validate_rule(&addr.name, &props_of(input))?;
    siblings.push((addr.name.clone(), props.clone()));
    check_rule_conflicts(&siblings)?;
    store(tx, addr, input, existing, props, &[], None).map(drop)
}
