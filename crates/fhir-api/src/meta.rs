//! `$meta`, `$meta-add` and `$meta-delete` (FHIR R4 resource-operation-meta, -meta-add,
//! -meta-delete): the profiles, tags and security labels of a resource, of a version, of
//! every resource of a type or of the whole service, and adding and removing them.
//!
//! `$meta-add` and `$meta-delete` change the current version in place, without a new
//! version (R4: "executing this operation does not cause a new version of the resource to
//! be created. The meta is updated directly"): its `versionId` and `lastUpdated` stay, the
//! search index (`_tag`, `_profile`, `_security`) follows at once, and `_history` still
//! shows the same versions. Profiles are a set of URLs; a tag or a security label is
//! identified by its system and code (version and display are not compared). Only those
//! three are changed: anything else in the input `meta` is a 400 naming it. The resource
//! after the change is validated as a write would be.
//!
//! `$meta` at the type and system levels reads every current resource of the scope from one
//! [`fhir_store::Snapshot`], at most [`MAX_SCANNED`] of them (a 422 `too-costly` beyond).

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;
use fhir_model::IssueCode;
use fhir_store::{Prepared, ScanQuery, ScanVersions, StoredResource};
use serde_json::{json, Map, Value};

use crate::error::FhirError;
use crate::interaction::Level;
use crate::params::{returning, OpParams, Shape, Spec};
use crate::request::Ctx;
use crate::respond;

/// The canonical OperationDefinitions (FHIR R4).
pub(crate) const META: &str = "http://hl7.org/fhir/OperationDefinition/Resource-meta";
pub(crate) const META_ADD: &str = "http://hl7.org/fhir/OperationDefinition/Resource-meta-add";
pub(crate) const META_DELETE: &str = "http://hl7.org/fhir/OperationDefinition/Resource-meta-delete";

/// The most resources a type- or system-level `$meta` reads.
pub(crate) const MAX_SCANNED: usize = 200_000;

/// Resources read per store page.
const PAGE: usize = 1000;

/// The profiles, tags and security labels of one resource or of many, each once, in the
/// order first seen.
#[derive(Debug, Default)]
struct Labels {
    profile: Vec<Value>,
    tag: Vec<Value>,
    security: Vec<Value>,
}

/// A tag's or security label's identity: system and code (FHIR R4 resource-operation-meta-add).
fn identity(coding: &Value) -> (Option<&str>, Option<&str>) {
    (
        coding.get("system").and_then(Value::as_str),
        coding.get("code").and_then(Value::as_str),
    )
}

impl Labels {
    fn of(resource: &Value) -> Labels {
        let mut l = Labels::default();
        l.add_from(resource);
        l
    }

    fn add_from(&mut self, resource: &Value) {
        let Some(meta) = resource.get("meta") else {
            return;
        };
        let list = |k: &str| meta.get(k).and_then(Value::as_array).cloned();
        for p in list("profile").into_iter().flatten() {
            if !self.profile.contains(&p) {
                self.profile.push(p);
            }
        }
        for (into, key) in [(&mut self.tag, "tag"), (&mut self.security, "security")] {
            for c in list(key).into_iter().flatten() {
                if !into.iter().any(|x| identity(x) == identity(&c)) {
                    into.push(c);
                }
            }
        }
    }

    /// As a `Meta` datatype.
    fn to_meta(&self) -> Value {
        let mut m = Map::new();
        for (k, v) in [
            ("profile", &self.profile),
            ("security", &self.security),
            ("tag", &self.tag),
        ] {
            if !v.is_empty() {
                m.insert(k.into(), Value::Array(v.clone()));
            }
        }
        Value::Object(m)
    }
}

fn answer(ctx: &Ctx, labels: &Labels) -> Response {
    respond::json(
        ctx,
        StatusCode::OK,
        &returning("valueMeta", labels.to_meta()),
    )
}

fn parse_stored(r: &StoredResource) -> Result<Value, FhirError> {
    let body = r.body.as_ref().ok_or_else(|| gone(r))?;
    serde_json::from_slice(body).map_err(|e| {
        FhirError::from(fhir_store::StoreError::Backend(format!(
            "stored {}/{}: {e}",
            r.resource_type, r.id
        )))
    })
}

fn gone(r: &StoredResource) -> FhirError {
    FhirError::new(
        StatusCode::GONE,
        IssueCode::Deleted,
        format!(
            "{}/{} was deleted (version {})",
            r.resource_type, r.id, r.version
        ),
    )
}

/// `$meta` at any level.
pub(crate) async fn meta(
    ctx: &Ctx,
    level: Level<'_>,
    post: bool,
    body: Body,
) -> Result<Response, FhirError> {
    OpParams::read(ctx, "meta", post, body, &[]).await?;
    let store = &ctx.state.inner.store;
    let svc = &ctx.service;
    match level {
        Level::Instance(t, id) => {
            let r = store
                .read(svc, t, id)
                .await?
                .ok_or_else(|| FhirError::not_found(format!("{t}/{id} is not known")))?;
            Ok(answer(ctx, &Labels::of(&parse_stored(&r)?)))
        }
        Level::Version(t, id, vid) => {
            let missing = || FhirError::not_found(format!("{t}/{id} has no version '{vid}'"));
            let v: u64 = vid.parse().map_err(|_| missing())?;
            let r = store.vread(svc, t, id, v).await?.ok_or_else(missing)?;
            Ok(answer(ctx, &Labels::of(&parse_stored(&r)?)))
        }
        Level::Type(t) => Ok(answer(ctx, &collect(ctx, &[t]).await?)),
        Level::System => {
            let types = ctx.state.inner.defs.resource_types();
            let types: Vec<&str> = types.iter().map(String::as_str).collect();
            Ok(answer(ctx, &collect(ctx, &types).await?))
        }
    }
}

/// The labels of every current resource of `types`, read from one snapshot.
async fn collect(ctx: &Ctx, types: &[&str]) -> Result<Labels, FhirError> {
    let store = &ctx.state.inner.store;
    let snapshot = store.snapshot(&ctx.service).await?;
    let mut labels = Labels::default();
    let mut read = 0usize;
    for t in types {
        let mut after = None;
        loop {
            let q = ScanQuery {
                snapshot,
                versions: ScanVersions::Current,
                since: None,
                till: None,
                after: after.take(),
                limit: PAGE,
            };
            let page = store.scan(&ctx.service, t, &q).await?;
            read += page.len();
            if read > MAX_SCANNED {
                return Err(FhirError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    IssueCode::TooCostly,
                    format!(
                        "$meta would read more than {MAX_SCANNED} resources; ask for one type, or search with _tag, _profile or _security"
                    ),
                ));
            }
            for r in &page {
                if r.body.is_some() {
                    labels.add_from(&parse_stored(r)?);
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE => after = Some((last.id.clone(), last.version)),
                _ => break,
            }
        }
    }
    Ok(labels)
}

const CHANGE_PARAMS: &[Spec] = &[Spec {
    name: "meta",
    shape: Shape::Meta,
    repeats: false,
}];

/// `$meta-add` (`add`) or `$meta-delete` on the current version of `rtype/id`.
pub(crate) async fn change(
    ctx: &Ctx,
    level: Level<'_>,
    add: bool,
    body: Body,
) -> Result<Response, FhirError> {
    let op = if add { "meta-add" } else { "meta-delete" };
    let (rtype, id) = match level {
        Level::Instance(t, id) => (t, id),
        Level::Version(t, id, _) => {
            return Err(FhirError::new(
                StatusCode::NOT_FOUND,
                IssueCode::NotSupported,
                format!("${op} changes the current version only: invoke it at {t}/{id}/${op}"),
            ))
        }
        _ => return Err(crate::route::unsupported_operation(op)),
    };
    let params = OpParams::read(ctx, op, true, body, CHANGE_PARAMS).await?;
    params.require(op, "meta")?;
    let at = params.at("meta");
    let input = params
        .json("meta")
        .ok_or_else(|| FhirError::bad_request(format!("${op}: 'meta' must be a valueMeta")))?;
    let input = Input::parse(op, input, &at)?;

    let store = &ctx.state.inner.store;
    let mut bases = store.own_bases().await?;
    if !bases.contains(&ctx.base) {
        bases.push(ctx.base.clone());
    }
    let mut tx = store.begin(&ctx.service).await?;
    let current = tx
        .current(rtype, id)
        .await?
        .ok_or_else(|| FhirError::not_found(format!("{rtype}/{id} is not known")))?;
    let mut resource = parse_stored(&current)?;
    let changed = if add {
        input.add_to(&mut resource)
    } else {
        input.remove_from(&mut resource)
    };
    if changed {
        let issues = ctx.state.inner.defs.validate(&resource);
        if issues.iter().any(|i| i.is_error()) {
            let mut e = FhirError::invalid(issues);
            e.status = StatusCode::UNPROCESSABLE_ENTITY;
            return Err(e);
        }
        let prepared = Prepared::with_bases(id, resource.clone(), &bases);
        tx.rewrite_version(rtype, id, current.version, prepared)
            .await?
            .ok_or_else(|| {
                fhir_store::StoreError::Backend(format!(
                    "{rtype}/{id} version {} vanished inside its transaction",
                    current.version
                ))
            })?;
        tx.commit().await?;
    }
    Ok(answer(ctx, &Labels::of(&resource)))
}

/// The `meta` of a `$meta-add` or `$meta-delete`.
struct Input {
    profile: Vec<Value>,
    tag: Vec<Value>,
    security: Vec<Value>,
}

impl Input {
    fn parse(op: &str, meta: &Value, at: &str) -> Result<Input, FhirError> {
        let bad = |path: String, msg: String| {
            FhirError::bad_request(format!("${op}: {msg}")).at(format!("{at}.valueMeta{path}"))
        };
        let obj = meta
            .as_object()
            .ok_or_else(|| bad(String::new(), "meta must be a Meta object".into()))?;
        let mut input = Input {
            profile: Vec::new(),
            tag: Vec::new(),
            security: Vec::new(),
        };
        for (k, v) in obj {
            let path = format!(".{k}");
            let Some(list) = v.as_array() else {
                if matches!(k.as_str(), "profile" | "tag" | "security") {
                    return Err(bad(path, format!("meta.{k} must be an array")));
                }
                return Err(bad(
                    path,
                    format!("only profile, tag and security are changed by ${op}, not meta.{k}"),
                ));
            };
            match k.as_str() {
                "profile" => {
                    for (i, p) in list.iter().enumerate() {
                        if !p
                            .as_str()
                            .is_some_and(|s| !s.is_empty() && !s.contains(char::is_whitespace))
                        {
                            return Err(bad(
                                format!("{path}[{i}]"),
                                "a profile must be a canonical URL".into(),
                            ));
                        }
                    }
                    input.profile = list.clone();
                }
                "tag" | "security" => {
                    for (i, c) in list.iter().enumerate() {
                        if !c.is_object() || identity(c).1.is_none() {
                            return Err(bad(
                                format!("{path}[{i}]"),
                                format!("a {k} must be a Coding with a code"),
                            ));
                        }
                    }
                    if k == "tag" {
                        input.tag = list.clone();
                    } else {
                        input.security = list.clone();
                    }
                }
                _ => {
                    return Err(bad(
                        path,
                        format!(
                            "only profile, tag and security are changed by ${op}, not meta.{k}"
                        ),
                    ))
                }
            }
        }
        Ok(input)
    }

    /// Adds what is not there yet; whether anything changed.
    fn add_to(&self, resource: &mut Value) -> bool {
        let Some(obj) = resource.as_object_mut() else {
            return false;
        };
        let meta = obj.entry("meta").or_insert_with(|| json!({}));
        let Some(meta) = meta.as_object_mut() else {
            return false;
        };
        let mut changed = false;
        for (key, items, by_identity) in [
            ("profile", &self.profile, false),
            ("security", &self.security, true),
            ("tag", &self.tag, true),
        ] {
            if items.is_empty() {
                continue;
            }
            let list = meta.entry(key).or_insert_with(|| json!([]));
            let Some(list) = list.as_array_mut() else {
                continue;
            };
            for item in items {
                let there = list.iter().any(|x| {
                    if by_identity {
                        identity(x) == identity(item)
                    } else {
                        x == item
                    }
                });
                if !there {
                    list.push(item.clone());
                    changed = true;
                }
            }
        }
        changed
    }

    /// Removes what it names; whether anything changed. Emptied lists go.
    fn remove_from(&self, resource: &mut Value) -> bool {
        let Some(meta) = resource.get_mut("meta").and_then(Value::as_object_mut) else {
            return false;
        };
        let mut changed = false;
        for (key, items, by_identity) in [
            ("profile", &self.profile, false),
            ("security", &self.security, true),
            ("tag", &self.tag, true),
        ] {
            let Some(list) = meta.get_mut(key).and_then(Value::as_array_mut) else {
                continue;
            };
            let before = list.len();
            list.retain(|x| {
                !items.iter().any(|item| {
                    if by_identity {
                        identity(x) == identity(item)
                    } else {
                        x == item
                    }
                })
            });
            if list.len() != before {
                changed = true;
            }
            if list.is_empty() {
                meta.remove(key);
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(meta: Value) -> Input {
        Input::parse("meta-add", &meta, "Parameters.parameter[0]").expect("valid input")
    }

    #[test]
    fn tags_are_identified_by_system_and_code_and_profiles_by_url() {
        let mut r = json!({"resourceType": "Patient", "meta": {
            "profile": ["http://p/1"],
            "tag": [{"system": "s", "code": "a", "display": "A"}]
        }});
        let add = input(json!({
            "profile": ["http://p/1", "http://p/2"],
            "tag": [{"system": "s", "code": "a", "display": "other"}, {"code": "a"}],
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
        }));
        assert!(add.add_to(&mut r));
        assert_eq!(r["meta"]["profile"], json!(["http://p/1", "http://p/2"]));
        assert_eq!(
            r["meta"]["tag"],
            json!([{"system": "s", "code": "a", "display": "A"}, {"code": "a"}])
        );
        assert!(!add.add_to(&mut r), "adding again changes nothing");
        let del = input(
            json!({"tag": [{"system": "s", "code": "a"}], "profile": ["http://p/2"], "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R", "display": "x"}]}),
        );
        assert!(del.remove_from(&mut r));
        assert_eq!(
            r["meta"],
            json!({"profile": ["http://p/1"], "tag": [{"code": "a"}]})
        );
        assert!(!del.remove_from(&mut r));
    }

    #[test]
    fn anything_but_profile_tag_and_security_is_refused_with_its_path() {
        for (meta, at) in [
            (
                json!({"source": "x"}),
                "Parameters.parameter[0].valueMeta.source",
            ),
            (
                json!({"versionId": "3"}),
                "Parameters.parameter[0].valueMeta.versionId",
            ),
            (
                json!({"tag": [{"system": "s"}]}),
                "Parameters.parameter[0].valueMeta.tag[0]",
            ),
            (
                json!({"profile": ["has space"]}),
                "Parameters.parameter[0].valueMeta.profile[0]",
            ),
            (
                json!({"tag": {"code": "a"}}),
                "Parameters.parameter[0].valueMeta.tag",
            ),
        ] {
            let e = Input::parse("meta-add", &meta, "Parameters.parameter[0]")
                .err()
                .unwrap_or_else(|| panic!("{meta} is refused"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.issues[0].expression.as_deref(), Some(at), "{meta}");
        }
    }
}
