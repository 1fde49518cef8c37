//! One management request against the state: api-version, path resolution, authorization,
//! preconditions, and the generic ARM verbs (GET, list, PUT, PATCH, DELETE, POST actions).
//! The rules of each resource type live in `rules`; the embedding of children in `render`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::action::{self, Verb};
use crate::authz::{self, check};
use crate::error::{bad_request, invalid_content, not_found, rg_not_found, ArmError};
use crate::kind::{Kind, Parent};
use crate::path::{self, Addr, Scope, Target};
use crate::reconcile::reconcile;
use crate::render::render;
use crate::rules;
use crate::state::{s, Resource, State};
use crate::txn::{Changes, Txn};
use crate::Principal;
use crate::{generic, versions};

/// The HTTP verb of a management request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Put,
    Patch,
    Delete,
    Post,
    Other,
}

/// A management request, as the router hands it over.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    pub method: Method,
    /// The raw (percent-encoded) path.
    pub path: &'a str,
    pub api_version: Option<&'a str>,
    /// `$filter`, for role assignment and definition lists and the generic resource list.
    pub filter: Option<&'a str>,
    /// `$top` and `$skiptoken`, for the generic resource list.
    pub top: Option<&'a str>,
    pub skip_token: Option<&'a str>,
    pub if_match: Option<&'a str>,
    pub if_none_match: Option<&'a str>,
    pub body: &'a [u8],
    /// Lowercase names of data-plane services that exist in the store but belong to no
    /// ARM service here: they are taken.
    pub taken_service_names: &'a BTreeSet<String>,
}

/// The answer to a request: status and JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Option<Value>,
}

/// The result of [`handle`]: the response, and for a mutation the new state and what to
/// persist.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub response: Response,
    pub state: Option<State>,
    pub changes: Changes,
}

impl Method {
    pub fn is_mutation(self) -> bool {
        !matches!(self, Method::Get)
    }

    /// The verb of an HTTP method name (`HEAD` reads, as `GET` does).
    pub fn parse(name: &str) -> Method {
        match name {
            "GET" | "HEAD" => Method::Get,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "POST" => Method::Post,
            _ => Method::Other,
        }
    }
}

fn ok(status: u16, body: Option<Value>) -> Outcome {
    Outcome {
        response: Response { status, body },
        state: None,
        changes: Changes::default(),
    }
}

/// Parses a request body as a JSON object.
pub(crate) fn parse_body(body: &[u8]) -> Result<Value, ArmError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(invalid_content("the request body is empty"));
    }
    let v: Value = serde_json::from_slice(body).map_err(invalid_content)?;
    if !v.is_object() {
        return Err(invalid_content("the request body must be a JSON object"));
    }
    Ok(v)
}

/// Handles one management request.
pub fn handle(
    state: &State,
    req: &Request<'_>,
    who: &Principal,
    now: DateTime<Utc>,
) -> Result<Outcome, ArmError> {
    let Some(version) = req.api_version.filter(|v| !v.is_empty()) else {
        return Err(bad_request(
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    if !versions::well_formed(version) {
        return Err(versions::invalid(version, versions::resources()));
    }
    let target = path::resolve(req.path, version)?;
    check_api_version(state, &target, version, req)?;
    // The one action of this request: what is checked here is what the audit record and the
    // metrics name (`classify` gives the same for the same method and path).
    let decided = action::of_target(req.method, &target);
    let act = decided.name;
    match (req.method, target) {
        (Method::Get, Target::Subscriptions) => Ok(ok(200, Some(list_subscriptions(state, who)))),
        (Method::Get, Target::Subscription(scope)) => Ok(ok(200, Some(subscription(&scope)))),
        (Method::Get, Target::Item(addr)) => get(state, who, &addr, act).map(|b| ok(200, Some(b))),
        (Method::Get, Target::Collection { kind, parent }) => {
            list(state, who, kind, &parent, req.filter, act).map(|b| ok(200, Some(b)))
        }
        (Method::Get, Target::Resources(scope)) => {
            let paging = generic::Paging {
                top: req.top,
                skip_token: req.skip_token,
                api_version: version,
            };
            generic::list_resources(state, who, &scope, req.filter, &paging, &decided)
                .map(|b| ok(200, Some(b)))
        }
        (Method::Get, Target::Providers { sub }) => {
            generic::list_providers(state, who, &sub, &decided).map(|b| ok(200, Some(b)))
        }
        (Method::Get, Target::Provider { sub, namespace })
        | (Method::Post, Target::Register { sub, namespace }) => {
            generic::provider(state, who, &sub, &namespace, &decided).map(|b| ok(200, Some(b)))
        }
        (Method::Put, Target::Item(addr)) => {
            let mut tx = Txn::new(state, who, now);
            let status = put(&mut tx, &addr, req, act)?;
            finish(tx, &addr, status)
        }
        (Method::Patch, Target::Item(addr)) => {
            let mut tx = Txn::new(state, who, now);
            patch(&mut tx, &addr, req, act)?;
            finish(tx, &addr, 200)
        }
        (Method::Delete, Target::Item(addr)) => {
            let mut tx = Txn::new(state, who, now);
            let (status, body) = delete(&mut tx, &addr, req, act)?;
            reconcile(&mut tx);
            let (st, changes) = tx.finish();
            Ok(Outcome {
                response: Response { status, body },
                state: Some(st),
                changes,
            })
        }
        (Method::Post, Target::Action { name, scope }) => {
            let body = parse_body(req.body)?;
            match name.as_str() {
                "checknameavailability" => {
                    check(state, who, act, &scope.key, &scope.path)?;
                    Ok(ok(
                        200,
                        Some(rules::check_name_availability(
                            state,
                            &body,
                            req.taken_service_names,
                        )),
                    ))
                }
                "moveresources" if scope.kind == Some(Kind::ResourceGroup) => {
                    let mut tx = Txn::new(state, who, now);
                    rules::move_resources(&mut tx, &scope, &body, act)?;
                    reconcile(&mut tx);
                    let (st, changes) = tx.finish();
                    Ok(Outcome {
                        response: Response {
                            status: 204,
                            body: None,
                        },
                        state: Some(st),
                        changes,
                    })
                }
                _ => Err(ArmError::new(
                    404,
                    "NotFound",
                    format!("No action '{name}' at scope '{}'.", scope.path),
                )),
            }
        }
        (method, _) => Err(ArmError::new(
            405,
            "MethodNotAllowed",
            format!("The method {method:?} is not supported on '{}'.", req.path),
        )),
    }
}

fn finish(mut tx: Txn<'_>, addr: &Addr, status: u16) -> Result<Outcome, ArmError> {
    reconcile(&mut tx);
    let body = match tx.get(&addr.key) {
        Some(r) => render(&tx.st, r),
        None => Value::Null,
    };
    let (st, changes) = tx.finish();
    Ok(Outcome {
        response: Response {
            status,
            body: Some(body),
        },
        state: Some(st),
        changes,
    })
}

/// The subscriptions that hold resource groups the caller may read.
fn list_subscriptions(state: &State, who: &Principal) -> Value {
    let subs: BTreeSet<String> = state
        .of_kind(Kind::ResourceGroup)
        .filter(|r| {
            authz::allowed(
                state,
                who,
                action::action(Kind::ResourceGroup, Verb::Read),
                &r.key(),
            )
        })
        .filter_map(|r| r.id.split('/').nth(2).map(str::to_owned))
        .collect();
    let value: Vec<Value> = subs
        .iter()
        .map(|sub| {
            subscription(&Scope {
                key: format!("/subscriptions/{}", sub.to_lowercase()),
                path: format!("/subscriptions/{sub}"),
                sub: Some(sub.clone()),
                rg: None,
                kind: None,
            })
        })
        .collect();
    json!({ "value": value })
}

fn subscription(scope: &Scope) -> Value {
    let sub = scope.sub.clone().unwrap_or_default();
    json!({
        "id": scope.path,
        "subscriptionId": sub,
        "displayName": format!("fhirlink subscription {sub}"),
        "state": "Enabled",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "fhirlink", "spendingLimit": "Off"},
        "authorizationSource": "RoleBased"
    })
}

/// Makes sure the scope an address lives under exists: the resource group (404
/// `ResourceGroupNotFound`) and the parent resource (404 `ResourceNotFound`).
pub(crate) fn require_parent(state: &State, addr: &Addr) -> Result<(), ArmError> {
    require_scope(state, &addr.parent)
}

pub(crate) fn require_scope(state: &State, scope: &Scope) -> Result<(), ArmError> {
    if let Some(rg) = &scope.rg {
        let rg_key = scope
            .key
            .split("/providers/")
            .next()
            .unwrap_or_default()
            .to_owned();
        if !state.resources.contains_key(&rg_key) {
            return Err(rg_not_found(rg));
        }
    }
    if let Some(kind) = scope.kind.filter(|k| *k != Kind::ResourceGroup) {
        if !state.resources.contains_key(&scope.key) {
            let name = scope.path.rsplit('/').next().unwrap_or_default();
            return Err(not_found(kind.type_name(), name, scope.rg.as_deref()));
        }
    }
    Ok(())
}

fn missing(addr: &Addr) -> ArmError {
    match addr.kind {
        Kind::ResourceGroup => rg_not_found(&addr.name),
        Kind::RoleAssignment => ArmError::new(
            404,
            "RoleAssignmentNotFound",
            format!("The role assignment '{}' is not found.", addr.name),
        ),
        Kind::RoleDefinition => ArmError::new(
            404,
            "RoleDefinitionDoesNotExist",
            format!(
                "The specified role definition with ID '{}' does not exist.",
                addr.name
            ),
        ),
        _ => not_found(addr.kind.type_name(), &addr.name, addr.parent.rg.as_deref()),
    }
}

fn get(state: &State, who: &Principal, addr: &Addr, act: &str) -> Result<Value, ArmError> {
    match addr.kind {
        Kind::RoleDefinition => {
            // Built-in role definitions are public knowledge: any authenticated caller may
            // look them up.
            return authz::role(&addr.name)
                .map(|r| r.to_json(&addr.parent.path))
                .ok_or_else(|| missing(addr));
        }
        Kind::PrivateLinkResource => {
            check(state, who, act, &addr.key, &addr.path)?;
            require_parent(state, addr)?;
            if !addr.name.eq_ignore_ascii_case("fhir") {
                return Err(missing(addr));
            }
            let svc = state
                .resources
                .get(&addr.parent.key)
                .map(|r| r.id.clone())
                .unwrap_or_default();
            return Ok(rules::private_link_resource(&svc));
        }
        _ => {}
    }
    check(state, who, act, &addr.key, &addr.path)?;
    require_parent(state, addr)?;
    let r = state
        .resources
        .get(&addr.key)
        .ok_or_else(|| missing(addr))?;
    Ok(render(state, r))
}

fn list(
    state: &State,
    who: &Principal,
    kind: Kind,
    parent: &Scope,
    filter: Option<&str>,
    read: &str,
) -> Result<Value, ArmError> {
    match kind {
        Kind::RoleDefinition => {
            let wanted = filter
                .and_then(|f| f.split_once("roleName eq '"))
                .and_then(|(_, rest)| rest.split('\'').next());
            let value: Vec<Value> = authz::ROLES
                .iter()
                .filter(|r| wanted.is_none_or(|w| r.name.eq_ignore_ascii_case(w)))
                .map(|r| r.to_json(&parent.path))
                .collect();
            return Ok(json!({ "value": value }));
        }
        Kind::PrivateLinkResource => {
            check(state, who, read, &parent.key, &parent.path)?;
            require_scope(state, parent)?;
            let svc = state
                .resources
                .get(&parent.key)
                .map(|r| r.id.clone())
                .unwrap_or_default();
            return Ok(json!({ "value": [rules::private_link_resource(&svc)] }));
        }
        Kind::RoleAssignment => {
            require_scope(state, parent)?;
            let at_scope = filter.is_some_and(|f| f.contains("atScope()"));
            let principal = filter
                .and_then(|f| f.split_once("principalId eq '"))
                .and_then(|(_, rest)| rest.split('\'').next());
            let value: Vec<Value> = state
                .of_kind(Kind::RoleAssignment)
                .filter(|ra| {
                    let sk = path::key_of_scope(s(
                        ra.body.get("properties").unwrap_or(&Value::Null),
                        "scope",
                    ));
                    authz::covers(&sk, &parent.key)
                        || (!at_scope && authz::covers(&parent.key, &sk))
                })
                .filter(|ra| {
                    principal.is_none_or(|p| {
                        s(
                            ra.body.get("properties").unwrap_or(&Value::Null),
                            "principalId",
                        ) == p
                    })
                })
                .filter(|ra| authz::allowed(state, who, read, &ra.key()))
                .map(|ra| render(state, ra))
                .collect();
            return Ok(json!({ "value": value }));
        }
        _ => {}
    }
    let items: Vec<&Resource> = match (kind.parent(), &parent.kind) {
        // By subscription: every resource of the kind in it.
        (Parent::ResourceGroup, None) | (Parent::AnyScope, None) => {
            let prefix = format!("{}/", parent.key);
            state
                .of_kind(kind)
                .filter(|r| r.key().starts_with(&prefix))
                .filter(|r| authz::allowed(state, who, read, &r.key()))
                .collect()
        }
        _ => {
            check(state, who, read, &parent.key, &parent.path)?;
            require_scope(state, parent)?;
            match kind {
                Kind::AllRecordSets => state.children(&parent.key, Kind::ARecordSet).collect(),
                _ => state.children(&parent.key, kind).collect(),
            }
        }
    };
    let value: Vec<Value> = items.into_iter().map(|r| render(state, r)).collect();
    Ok(json!({ "value": value }))
}

/// If-Match / If-None-Match against the current etag (412 `PreconditionFailed`).
fn preconditions(existing: Option<&Resource>, req: &Request<'_>) -> Result<(), ArmError> {
    let etag = existing
        .and_then(|r| r.body.get("etag"))
        .and_then(Value::as_str);
    let failed = |what: &str| {
        ArmError::new(
            412,
            "PreconditionFailed",
            format!("The condition specified using HTTP conditional header(s) is not met: {what}."),
        )
    };
    if let Some(m) = req.if_match.map(str::trim).filter(|m| !m.is_empty()) {
        let ok = match (m, etag, existing) {
            ("*", _, Some(_)) => true,
            (_, Some(e), _) => m.split(',').any(|t| {
                let t = t.trim();
                t == e || t.trim_start_matches("W/") == e.trim_start_matches("W/")
            }),
            _ => false,
        };
        if !ok {
            return Err(failed("If-Match does not match the current etag"));
        }
    }
    if let Some(m) = req.if_none_match.map(str::trim).filter(|m| !m.is_empty()) {
        if existing.is_some() && (m == "*" || Some(m) == etag) {
            return Err(failed("the resource already exists (If-None-Match)"));
        }
    }
    Ok(())
}

fn put(tx: &mut Txn<'_>, addr: &Addr, req: &Request<'_>, act: &str) -> Result<u16, ArmError> {
    if matches!(addr.kind, Kind::PrivateLinkResource | Kind::RoleDefinition) {
        return Err(ArmError::new(
            405,
            "MethodNotAllowed",
            format!("{} cannot be written.", addr.kind.type_name()),
        ));
    }
    check(tx.old, tx.who, act, &addr.key, &addr.path)?;
    require_parent(tx.old, addr)?;
    let existing = tx.old.resources.get(&addr.key).cloned();
    if existing.is_none() {
        crate::names::validate(addr.kind, &addr.name)?;
    }
    preconditions(existing.as_ref(), req)?;
    let body = parse_body(req.body)?;
    rules::put(tx, addr, &body, existing.as_ref(), req)?;
    Ok(if existing.is_some() { 200 } else { 201 })
}

fn patch(tx: &mut Txn<'_>, addr: &Addr, req: &Request<'_>, act: &str) -> Result<(), ArmError> {
    check(tx.old, tx.who, act, &addr.key, &addr.path)?;
    require_parent(tx.old, addr)?;
    let existing = tx
        .old
        .resources
        .get(&addr.key)
        .cloned()
        .ok_or_else(|| missing(addr))?;
    preconditions(Some(&existing), req)?;
    let body = parse_body(req.body)?;
    rules::patch(tx, &existing, &body)
}

fn delete(
    tx: &mut Txn<'_>,
    addr: &Addr,
    req: &Request<'_>,
    act: &str,
) -> Result<(u16, Option<Value>), ArmError> {
    check(tx.old, tx.who, act, &addr.key, &addr.path)?;
    require_parent(tx.old, addr)?;
    let Some(existing) = tx.old.resources.get(&addr.key).cloned() else {
        return Ok((204, None));
    };
    preconditions(Some(&existing), req)?;
    let rendered = render(tx.old, &existing);
    rules::delete(tx, &existing)?;
    if addr.kind == Kind::RoleAssignment {
        return Ok((200, Some(rendered)));
    }
    Ok((200, None))
}

/// The api-version against the versions of the type the request is about: ARM's
/// `NoRegisteredProviderFound` for a resource provider's type, `InvalidApiVersionParameter`
/// for Microsoft.Resources' own endpoints (subscriptions, groups, resources, providers).
fn check_api_version(
    state: &State,
    target: &Target,
    version: &str,
    req: &Request<'_>,
) -> Result<(), ArmError> {
    let kind = match target {
        Target::Item(a) => Some(a.kind),
        Target::Collection { kind, .. } => Some(*kind),
        Target::Action { name, .. } if name == "checknameavailability" => Some(Kind::FhirService),
        _ => None,
    };
    match kind.filter(|k| *k != Kind::ResourceGroup) {
        Some(k) if versions::of_kind(k).contains(version) => Ok(()),
        Some(k) => Err(versions::no_registered_provider(
            k,
            version,
            &routing_location(state, target, req),
        )),
        None if versions::resources().contains(version) => Ok(()),
        None => Err(versions::invalid(version, versions::resources())),
    }
}

/// The location ARM routes a request by: the body's, else the resource group's, else global.
fn routing_location(state: &State, target: &Target, req: &Request<'_>) -> String {
    let from_body = serde_json::from_slice::<Value>(req.body)
        .ok()
        .and_then(|b| b.get("location").and_then(Value::as_str).map(str::to_owned));
    if let Some(l) = from_body.filter(|l| !l.is_empty()) {
        return crate::rules::normalize_location(&l);
    }
    let scope_key = match target {
        Target::Item(a) => a.key.as_str(),
        Target::Collection { parent, .. } | Target::Action { scope: parent, .. } => {
            parent.key.as_str()
        }
        _ => "",
    };
    let rg_key = scope_key.split("/providers/").next().unwrap_or_default();
    state
        .resources
        .get(rg_key)
        .filter(|r| r.kind == Kind::ResourceGroup)
        .map(|r| r.location().to_owned())
        .unwrap_or_else(|| "global".to_owned())
}
