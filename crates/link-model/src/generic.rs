//! ARM's generic endpoints, which tools call before anything else: the resources of a
//! subscription or resource group (Resources_List, Resources_ListByResourceGroup, with
//! `$filter`, `$top` and `nextLink`), and the resource providers with their types,
//! api-versions and locations (Providers_List, Providers_Get, Providers_Register).

use serde_json::{json, Map, Value};

use crate::action::{self, ArmAction};
use crate::authz::{self, check};
use crate::error::{bad_request, ArmError};
use crate::handle::require_scope;
use crate::kind::{Kind, NAMESPACES};
use crate::path::Scope;
use crate::state::State;
use crate::versions;
use crate::Principal;

/// The most resources one page holds, ARM's own page size.
const MAX_PAGE: usize = 1000;

/// One clause of a `$filter`: a field compared with `eq` to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    ResourceType(String),
    Name(String),
    Location(String),
}

/// A `$filter` as ARM's resource lists take it: clauses joined by `and`, each one term or
/// terms joined by `or` (`resourceType eq 'Microsoft.Network/virtualNetworks' or
/// resourceType eq 'Microsoft.Network/privateEndpoints'`). Anything else is refused, as ARM
/// refuses what it cannot parse, rather than answered unfiltered.
fn parse_filter(filter: &str) -> Result<Vec<Vec<Term>>, ArmError> {
    let invalid = || {
        bad_request(
            "InvalidFilterInQueryString",
            format!("Invalid $filter '{filter}' specified in the query string."),
        )
    };
    let mut clauses = Vec::new();
    for clause in split_words(filter, "and") {
        let mut any = Vec::new();
        for atom in split_words(clause, "or") {
            let (field, rest) = atom.trim().split_once(' ').ok_or_else(invalid)?;
            let (op, value) = rest.trim().split_once(' ').ok_or_else(invalid)?;
            let value = value
                .trim()
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .ok_or_else(invalid)?;
            if !op.eq_ignore_ascii_case("eq") || value.contains('\'') {
                return Err(invalid());
            }
            let term = match field.to_ascii_lowercase().as_str() {
                "resourcetype" => Term::ResourceType(value.to_owned()),
                "name" => Term::Name(value.to_owned()),
                "location" => Term::Location(value.to_owned()),
                _ => return Err(invalid()),
            };
            any.push(term);
        }
        clauses.push(any);
    }
    Ok(clauses)
}

/// Splits on a keyword surrounded by spaces, case-insensitively, outside quotes.
fn split_words<'a>(s: &'a str, word: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut quoted = false;
    let mut start = 0;
    let mut i = 0;
    let needle = word.len() + 2;
    while i < bytes.len() {
        if bytes[i] == b'\'' {
            quoted = !quoted;
        } else if !quoted
            && bytes[i] == b' '
            && i + needle <= bytes.len()
            && bytes[i + needle - 1] == b' '
            && s.get(i + 1..i + needle - 1)
                .is_some_and(|w| w.eq_ignore_ascii_case(word))
        {
            out.push(&s[start..i]);
            i += needle;
            start = i;
            continue;
        }
        i += 1;
    }
    out.push(&s[start..]);
    out
}

fn matches(term: &Term, body: &Value, kind: Kind) -> bool {
    let field = |f: &str| body.get(f).and_then(Value::as_str).unwrap_or("");
    match term {
        Term::ResourceType(t) => kind.type_name().eq_ignore_ascii_case(t),
        Term::Name(n) => field("name").eq_ignore_ascii_case(n),
        Term::Location(l) => {
            crate::rules::normalize_location(field("location"))
                == crate::rules::normalize_location(l)
        }
    }
}

/// A query's paging: `$top` (1 to [`MAX_PAGE`]) and ARM's opaque `$skiptoken` (here: how many
/// were listed before).
pub(crate) struct Paging<'a> {
    pub top: Option<&'a str>,
    pub skip_token: Option<&'a str>,
    pub api_version: &'a str,
}

/// `GET {scope}/resources`: the top-level resources under a subscription or resource group
/// that the caller may read, each as ARM's GenericResource (`id`, `name`, `type`, `location`,
/// `tags`, and `kind` where the type has one). Listing needs read on the scope.
pub(crate) fn list_resources(
    state: &State,
    who: &Principal,
    scope: &Scope,
    filter: Option<&str>,
    paging: &Paging<'_>,
    decided: &ArmAction,
) -> Result<Value, ArmError> {
    check(state, who, decided.name, &scope.key, &scope.path)?;
    require_scope(state, scope)?;
    let clauses = match filter.map(str::trim).filter(|f| !f.is_empty()) {
        Some(f) => parse_filter(f)?,
        None => Vec::new(),
    };
    let top = match paging.top {
        None => MAX_PAGE,
        Some(t) => match t.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(bad_request(
                    "InvalidTopValue",
                    format!("The value '{t}' of the $top query parameter is not valid: use an integer from 1 to {MAX_PAGE}."),
                ))
            }
        },
    };
    let skip = match paging.skip_token {
        None => 0,
        Some(t) => t.trim().parse::<usize>().map_err(|_| {
            bad_request(
                "InvalidSkipToken",
                format!("The $skiptoken '{t}' is not one this server handed out."),
            )
        })?,
    };
    let prefix = format!("{}/", scope.key);
    let mut matched = state
        .resources
        .range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .map(|(_, r)| r)
        // Child resources (subnets, rules, connections) are listed by their parents; private
        // DNS links are tracked resources of their own, as in Azure.
        .filter(|r| r.kind.tracked() && r.kind != Kind::ResourceGroup)
        .filter(|r| {
            clauses
                .iter()
                .all(|any| any.iter().any(|t| matches(t, &r.body, r.kind)))
        })
        .filter(|r| {
            authz::allowed(
                state,
                who,
                action::action(r.kind, action::Verb::Read),
                &r.key(),
            )
        })
        .skip(skip);
    let mut value = Vec::new();
    for r in matched.by_ref().take(top) {
        value.push(generic(&r.body));
    }
    let mut out = json!({ "value": value });
    if matched.next().is_some() {
        // A relative link: the router knows the host the client called, the model does not.
        let mut link = format!(
            "{}/resources?api-version={}&%24top={top}&%24skiptoken={}",
            scope.path,
            paging.api_version,
            skip + top
        );
        if let Some(f) = filter {
            link.push_str("&%24filter=");
            link.extend(percent_encoding::utf8_percent_encode(
                f,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        out["nextLink"] = json!(link);
    }
    Ok(out)
}

/// A resource as the generic list shows it.
fn generic(body: &Value) -> Value {
    let mut out = Map::new();
    for k in ["id", "name", "type", "kind", "location", "tags"] {
        if let Some(v) = body.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    Value::Object(out)
}

/// `GET /subscriptions/{s}/providers`: every namespace fhirlink serves, registered.
pub(crate) fn list_providers(
    state: &State,
    who: &Principal,
    sub: &Scope,
    decided: &ArmAction,
) -> Result<Value, ArmError> {
    check(state, who, decided.name, &sub.key, &sub.path)?;
    let value: Vec<Value> = NAMESPACES
        .iter()
        .map(|ns| versions::provider(&sub.path, ns))
        .collect();
    Ok(json!({ "value": value }))
}

/// `GET /subscriptions/{s}/providers/{namespace}` and its `register` action (fhirlink's
/// providers are always registered, so registering answers the provider as it is).
pub(crate) fn provider(
    state: &State,
    who: &Principal,
    sub: &Scope,
    namespace: &str,
    decided: &ArmAction,
) -> Result<Value, ArmError> {
    let Some(ns) = action::namespace(namespace) else {
        return Err(ArmError::new(
            404,
            "InvalidResourceNamespace",
            format!("The resource namespace '{namespace}' is invalid."),
        ));
    };
    check(state, who, decided.name, &sub.key, &sub.path)?;
    Ok(versions::provider(&sub.path, ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_as_arm_takes_them() {
        use Term::*;
        let t = |s: &str| ResourceType(s.into());
        assert_eq!(
            parse_filter("resourceType eq 'Microsoft.Network/virtualNetworks'").ok(),
            Some(vec![vec![t("Microsoft.Network/virtualNetworks")]])
        );
        assert_eq!(
            parse_filter("resourceType eq 'a/b' or resourceType eq 'c/d' and name eq 'x y'").ok(),
            Some(vec![vec![t("a/b"), t("c/d")], vec![Name("x y".into())]])
        );
        assert_eq!(
            parse_filter("location EQ 'West US 2'").ok(),
            Some(vec![vec![Location("West US 2".into())]])
        );
        for bad in [
            "resourceType ne 'a'",
            "tagName eq 'x'",
            "resourceType eq a",
            "substringof('x', name)",
            "resourceType eq 'a'b'",
        ] {
            let e = parse_filter(bad).expect_err(bad);
            assert_eq!(e.code, "InvalidFilterInQueryString");
        }
    }
}
