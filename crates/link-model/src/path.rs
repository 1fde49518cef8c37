//! ARM request paths: `/subscriptions/{sub}/resourceGroups/{rg}/providers/{ns}/{type}/{name}/…`
//! resolved into a [`Target`], case-insensitively (SDKs send `resourcegroups` as well as
//! `resourceGroups`, and `aLL` for record sets).
//!
//! Keys are the lowercase ids that the state is indexed by; the `path` kept beside each key
//! is the id as the caller spelled it, for messages and for ids of new resources.

use percent_encoding::percent_decode_str;

use crate::error::{bad_request, ArmError};
use crate::kind::{Kind, Parent, NAMESPACES};

/// A scope: root (`""`), subscription, resource group or resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Lowercase id; `""` for the root scope `/`.
    pub key: String,
    /// The id as spelled in the request.
    pub path: String,
    pub sub: Option<String>,
    pub rg: Option<String>,
    /// The kind of the resource this scope is, when it is one.
    pub kind: Option<Kind>,
}

/// One addressed resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addr {
    pub kind: Kind,
    pub key: String,
    pub path: String,
    pub name: String,
    pub parent: Scope,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Subscriptions,
    Subscription(Scope),
    Item(Addr),
    Collection {
        kind: Kind,
        parent: Scope,
    },
    /// A POST action: lowercase name (`moveresources`, `checknameavailability`) at a scope.
    Action {
        name: String,
        scope: Scope,
    },
    /// ARM's generic list of the resources in a subscription or resource group
    /// (`{scope}/resources`).
    Resources(Scope),
    /// `/subscriptions/{s}/providers`: the resource providers.
    Providers {
        sub: Scope,
    },
    /// `/subscriptions/{s}/providers/{namespace}`: one provider, as spelled.
    Provider {
        sub: Scope,
        namespace: String,
    },
    /// `/subscriptions/{s}/providers/{namespace}/register`.
    Register {
        sub: Scope,
        namespace: String,
    },
}

fn unknown_type(ns: &str, ty: &str, api_version: &str) -> ArmError {
    if !NAMESPACES.iter().any(|n| n.eq_ignore_ascii_case(ns)) {
        return bad_request(
            "InvalidResourceNamespace",
            format!("The resource namespace '{ns}' is invalid."),
        );
    }
    bad_request(
        "InvalidResourceType",
        format!(
            "The resource type '{ty}' could not be found in the namespace '{ns}' for api version '{api_version}'."
        ),
    )
}

fn no_route(path: &str) -> ArmError {
    ArmError::new(
        404,
        "NotFound",
        format!("The requested path '{path}' does not name an ARM resource or collection."),
    )
}

/// Checks that a subscription id is well formed (a GUID).
pub(crate) fn valid_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Resolves a raw (percent-encoded) request path.
pub(crate) fn resolve(raw: &str, api_version: &str) -> Result<Target, ArmError> {
    let segs: Vec<String> = raw
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let mut i = 0;
    let mut scope = Scope {
        key: String::new(),
        path: String::new(),
        sub: None,
        rg: None,
        kind: None,
    };
    if segs.is_empty() {
        return Err(no_route(raw));
    }
    if segs[0].eq_ignore_ascii_case("subscriptions") {
        let Some(sub) = segs.get(1) else {
            return Ok(Target::Subscriptions);
        };
        if !valid_guid(sub) {
            return Err(bad_request(
                "InvalidSubscriptionId",
                format!("The provided subscription identifier '{sub}' is malformed or invalid."),
            ));
        }
        scope.key = format!("/subscriptions/{}", sub.to_lowercase());
        scope.path = format!("/subscriptions/{sub}");
        scope.sub = Some(sub.clone());
        i = 2;
        if segs.len() == 2 {
            return Ok(Target::Subscription(scope));
        }
        if segs.len() == 3 && segs[2].eq_ignore_ascii_case("resources") {
            return Ok(Target::Resources(scope));
        }
        if segs[2].eq_ignore_ascii_case("providers") {
            match (segs.get(3), segs.get(4), segs.len()) {
                (None, _, _) => return Ok(Target::Providers { sub: scope }),
                (Some(ns), None, _) => {
                    return Ok(Target::Provider {
                        sub: scope,
                        namespace: ns.clone(),
                    })
                }
                (Some(ns), Some(verb), 5) if verb.eq_ignore_ascii_case("register") => {
                    return Ok(Target::Register {
                        sub: scope,
                        namespace: ns.clone(),
                    })
                }
                _ => {}
            }
        }
        if segs[2].eq_ignore_ascii_case("resourcegroups") {
            let Some(rg) = segs.get(3) else {
                return Ok(Target::Collection {
                    kind: Kind::ResourceGroup,
                    parent: scope,
                });
            };
            let addr = Addr {
                kind: Kind::ResourceGroup,
                key: format!("{}/resourcegroups/{}", scope.key, rg.to_lowercase()),
                path: format!("{}/resourceGroups/{rg}", scope.path),
                name: rg.clone(),
                parent: scope.clone(),
            };
            scope = Scope {
                key: addr.key.clone(),
                path: addr.path.clone(),
                sub: scope.sub.clone(),
                rg: Some(rg.clone()),
                kind: Some(Kind::ResourceGroup),
            };
            i = 4;
            if segs.len() == 4 {
                return Ok(Target::Item(addr));
            }
            if !segs[4].eq_ignore_ascii_case("providers") {
                if segs.len() == 5 && segs[4].eq_ignore_ascii_case("resources") {
                    return Ok(Target::Resources(scope));
                }
                if segs.len() == 5 {
                    return Ok(Target::Action {
                        name: segs[4].to_ascii_lowercase(),
                        scope,
                    });
                }
                return Err(no_route(raw));
            }
        }
    }
    // Provider sections.
    let mut section = 0;
    while i < segs.len() {
        if !segs[i].eq_ignore_ascii_case("providers") {
            return Err(no_route(raw));
        }
        let Some(ns) = segs.get(i + 1) else {
            return Err(no_route(raw));
        };
        i += 2;
        let mut types: Vec<&str> = Vec::new();
        let mut prev: Option<Kind> = None;
        if i >= segs.len() {
            return Err(no_route(raw));
        }
        while i < segs.len() && !segs[i].eq_ignore_ascii_case("providers") {
            let ty = segs[i].as_str();
            types.push(ty);
            let name = segs.get(i + 1);
            i += 2;
            let type_key = format!("{ns}/{}", types.join("/"));
            let Some(kind) = Kind::from_key(&type_key) else {
                if types.len() == 1
                    && name.is_none()
                    && ty.eq_ignore_ascii_case("checkNameAvailability")
                    && ns.eq_ignore_ascii_case("Microsoft.HealthcareApis")
                {
                    return Ok(Target::Action {
                        name: "checknameavailability".into(),
                        scope,
                    });
                }
                return Err(unknown_type(ns, &type_key, api_version));
            };
            let fits = match kind.parent() {
                Parent::ResourceGroup => {
                    section == 0 && prev.is_none() && (scope.rg.is_some() || name.is_none())
                }
                Parent::Resource(p) => prev == Some(p),
                Parent::AnyResource => prev.is_none() && section > 0,
                Parent::AnyScope => prev.is_none() && kind != Kind::ResourceGroup,
            };
            if !fits {
                return Err(unknown_type(ns, &type_key, api_version));
            }
            let Some(name) = name else {
                return Ok(Target::Collection {
                    kind,
                    parent: scope,
                });
            };
            if kind == Kind::AllRecordSets {
                return Err(unknown_type(ns, &type_key, api_version));
            }
            let (pk, pp) = if prev.is_none() {
                (
                    format!(
                        "{}/providers/{}",
                        scope.key,
                        kind.namespace().to_ascii_lowercase()
                    ),
                    format!("{}/providers/{}", scope.path, kind.namespace()),
                )
            } else {
                (scope.key.clone(), scope.path.clone())
            };
            // Record set names are kept lower-case, as Azure DNS does.
            let name = if kind == Kind::ARecordSet {
                name.to_lowercase()
            } else {
                name.clone()
            };
            let addr = Addr {
                kind,
                key: format!(
                    "{pk}/{}/{}",
                    kind.segment().to_ascii_lowercase(),
                    name.to_lowercase()
                ),
                path: format!("{pp}/{}/{name}", kind.segment()),
                name,
                parent: scope.clone(),
            };
            if i >= segs.len() {
                return Ok(Target::Item(addr));
            }
            scope = Scope {
                key: addr.key.clone(),
                path: addr.path.clone(),
                sub: scope.sub.clone(),
                rg: scope.rg.clone(),
                kind: Some(kind),
            };
            prev = Some(kind);
        }
        section += 1;
    }
    Err(no_route(raw))
}

/// The lowercase key of an id found in a request body (`"/subscriptions/…"`).
pub(crate) fn key_of(id: &str) -> String {
    let trimmed = id.trim_end_matches('/');
    let lower = trimmed.to_lowercase();
    if lower.starts_with('/') {
        lower
    } else {
        format!("/{lower}")
    }
}

/// The key of the parent scope of a stored resource key: the key without its last
/// `type/name` pair, and without a dangling `/providers/{ns}`.
pub(crate) fn parent_key(key: &str) -> String {
    let mut parts: Vec<&str> = key.split('/').collect();
    parts.truncate(parts.len().saturating_sub(2));
    if parts.len() >= 2 && parts[parts.len() - 2] == "providers" {
        parts.truncate(parts.len() - 2);
    }
    parts.join("/")
}

/// The key of a scope string (`/`, `/subscriptions/…`): `""` for the root.
pub(crate) fn key_of_scope(scope: &str) -> String {
    let k = key_of(scope);
    if k == "/" {
        String::new()
    } else {
        k
    }
}
