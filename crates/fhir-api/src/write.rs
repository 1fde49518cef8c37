//! create, update, patch and delete (FHIR R4 http.html#create, #update, #patch, #delete).
//!
//! Each interaction has a `*_in` core that works inside a store transaction, shared with
//! batch and transaction Bundles, and a thin HTTP wrapper that begins and commits.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use fhir_model::{Definitions, IssueCode};
use fhir_store::{Method, Prepared, StoredResource, WriteTx};
use serde_json::Value;

use crate::error::FhirError;
use crate::negotiate::{request_body_kind, BodyKind};
use crate::patch;
use crate::read::parse_etag;
use crate::request::{read_body, Ctx};
use crate::respond;
use crate::search;

/// Checks a resource body against the R4 definitions and the URL it was sent to.
pub(crate) fn check_resource(
    defs: &Definitions,
    resource: &Value,
    rtype: &str,
    url_id: Option<&str>,
) -> Result<(), FhirError> {
    check_identity(resource, rtype, url_id)?;
    let issues = defs.validate(resource);
    if issues.iter().any(|i| i.is_error()) {
        return Err(FhirError::invalid(issues));
    }
    Ok(())
}

/// What a body must be before its content is validated: a JSON object of the URL's type,
/// with the URL's id when there is one (FHIR R4 http.html#update).
pub(crate) fn check_identity(
    resource: &Value,
    rtype: &str,
    url_id: Option<&str>,
) -> Result<(), FhirError> {
    let Some(obj) = resource.as_object() else {
        return Err(FhirError::new(
            StatusCode::BAD_REQUEST,
            IssueCode::Structure,
            "a resource must be a JSON object",
        ));
    };
    match obj.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == rtype => {}
        Some(t) => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Invalid,
                format!("the resource is a {t}, but the URL is for {rtype}"),
            )
            .at(format!("{t}.resourceType")))
        }
        None => {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Required,
                "the resource has no resourceType",
            )
            .at("resourceType"))
        }
    }
    if let Some(url_id) = url_id {
        // FHIR R4 http.html#update: the body SHALL carry the id of the URL.
        match obj.get("id") {
            Some(Value::String(id)) if id == url_id => {}
            Some(Value::String(id)) => {
                return Err(FhirError::bad_request(format!(
                    "the id in the body ('{id}') differs from the id in the URL ('{url_id}')"
                ))
                .at(format!("{rtype}.id")))
            }
            _ => {
                return Err(FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::Required,
                    format!("an update must carry the id of the URL ('{url_id}') in the body"),
                )
                .at(format!("{rtype}.id")))
            }
        }
    }
    Ok(())
}

/// Parses `If-Match` (`W/"3"`); 400 when it is not an entity tag.
pub(crate) fn if_match(value: Option<&str>) -> Result<Option<u64>, FhirError> {
    match value {
        None => Ok(None),
        Some(v) => parse_etag(v).map(Some).ok_or_else(|| {
            FhirError::bad_request(format!(
                "If-Match '{v}' is not a version entity tag like W/\"3\""
            ))
        }),
    }
}

fn precondition_failed(msg: String) -> FhirError {
    FhirError::new(StatusCode::PRECONDITION_FAILED, IssueCode::Conflict, msg)
}

fn check_version(
    current: Option<&StoredResource>,
    expected: Option<u64>,
    what: &str,
) -> Result<(), FhirError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match current {
        Some(c) if c.version == expected && !c.is_deleted() => Ok(()),
        Some(c) => Err(precondition_failed(format!(
            "{what} is at version {}{}, not {expected}",
            c.version,
            if c.is_deleted() { " (deleted)" } else { "" }
        ))),
        None => Err(precondition_failed(format!(
            "{what} does not exist, so it is not at version {expected}"
        ))),
    }
}

/// A new server-assigned logical id: a version-7 UUID (RFC 9562 §5.7), 48 bits of Unix
/// milliseconds and then random bits. Ids made one after another share their first digits, so
/// the store's indexes keyed by id (and by references to new resources) grow at a few hot
/// places instead of at random ones, which halves what a commit writes. The time is already
/// public in `meta.lastUpdated`.
pub(crate) fn new_id() -> String {
    let mut bytes = *uuid::Uuid::new_v4().as_bytes();
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    bytes[..6].copy_from_slice(&millis.to_be_bytes()[2..]);
    // Version 7; the variant bits stay those new_v4 set.
    bytes[6] = (bytes[6] & 0x0f) | 0x70;
    uuid::Uuid::from_bytes(bytes).to_string()
}

pub(crate) async fn create_in(
    tx: &mut dyn WriteTx,
    rtype: &str,
    id: &str,
    resource: Prepared,
) -> Result<StoredResource, FhirError> {
    Ok(tx.put_prepared(rtype, id, resource, Method::Post).await?)
}

/// Update (or update-as-create); returns the new version and whether it was created.
pub(crate) async fn update_in(
    tx: &mut dyn WriteTx,
    rtype: &str,
    id: &str,
    resource: Prepared,
    expected: Option<u64>,
) -> Result<(StoredResource, bool), FhirError> {
    let current = tx.current(rtype, id).await?;
    check_version(current.as_ref(), expected, &format!("{rtype}/{id}"))?;
    let created = current.as_ref().is_none_or(StoredResource::is_deleted);
    let stored = tx.put_prepared(rtype, id, resource, Method::Put).await?;
    Ok((stored, created))
}

pub(crate) async fn delete_in(
    tx: &mut dyn WriteTx,
    rtype: &str,
    id: &str,
    expected: Option<u64>,
) -> Result<Option<StoredResource>, FhirError> {
    if expected.is_some() {
        let current = tx.current(rtype, id).await?;
        check_version(current.as_ref(), expected, &format!("{rtype}/{id}"))?;
    }
    Ok(tx.delete(rtype, id).await?)
}

pub(crate) async fn patch_in(
    tx: &mut dyn WriteTx,
    defs: &Definitions,
    base: &str,
    rtype: &str,
    id: &str,
    patch: &patch::Patch,
    expected: Option<u64>,
) -> Result<StoredResource, FhirError> {
    let current = tx.current(rtype, id).await?;
    check_version(current.as_ref(), expected, &format!("{rtype}/{id}"))?;
    let body = match current.as_ref().and_then(|c| c.body.as_ref()) {
        Some(b) => b,
        None if current.is_some() => {
            return Err(FhirError::new(
                StatusCode::GONE,
                IssueCode::Deleted,
                format!("{rtype}/{id} was deleted; there is nothing to patch"),
            ))
        }
        None => return Err(FhirError::not_found(format!("{rtype}/{id} is not known"))),
    };
    let mut resource: Value = serde_json::from_slice(body)
        .map_err(|e| fhir_store::StoreError::Backend(format!("stored {rtype}/{id}: {e}")))?;
    patch.apply(&mut resource)?;
    check_patched(defs, &resource, rtype, id)?;
    let prepared = Prepared::with_base(id, resource, base);
    Ok(tx.put_prepared(rtype, id, prepared, Method::Patch).await?)
}

/// A patch may change anything but what the resource is: its type and id.
fn check_patched(defs: &Definitions, v: &Value, rtype: &str, id: &str) -> Result<(), FhirError> {
    let same_type = v.get("resourceType").and_then(Value::as_str) == Some(rtype);
    let same_id = v.get("id").and_then(Value::as_str) == Some(id);
    if !same_type || !same_id {
        return Err(FhirError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            IssueCode::BusinessRule,
            "a patch may not change the resourceType or id of a resource",
        ));
    }
    let issues = defs.validate(v);
    if issues.iter().any(|i| i.is_error()) {
        // The patch applied but produced an invalid resource: a business rule (422).
        let mut e = FhirError::invalid(issues);
        e.status = StatusCode::UNPROCESSABLE_ENTITY;
        return Err(e);
    }
    Ok(())
}

pub(crate) async fn create(
    ctx: &Ctx,
    rtype: &str,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    request_body_kind(&ctx.headers, false)?;
    let condition = match ctx.header("if-none-exist") {
        Some(c) => Some((
            c.to_string(),
            search::criteria(ctx, rtype, c, "conditional create (If-None-Exist)")?,
        )),
        None => None,
    };
    let bytes = read_body(body, limit).await?;
    let resource = ctx.parse_json(&bytes)?;
    check_resource(ctx.state.inner.defs, &resource, rtype, None)?;
    let id = new_id();
    // The index is extracted before the writer is taken (see fhir_store::Prepared).
    let prepared = Prepared::with_base(&id, resource, &ctx.base);
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    if let Some((text, query)) = &condition {
        // FHIR R4 http.html#ccreate: one match → 200 with it, nothing created; many → 412.
        match search::matches_in(tx.as_mut(), query).await?.as_slice() {
            [] => {}
            [id] => {
                let existing = tx.current(rtype, id).await?.ok_or_else(|| {
                    fhir_store::StoreError::Backend(format!("{rtype}/{id} vanished"))
                })?;
                drop(tx);
                return respond::write_response(
                    ctx,
                    StatusCode::OK,
                    &existing,
                    &format!("{rtype}/{id} matches If-None-Exist; nothing was created"),
                );
            }
            _ => return Err(search::too_many("conditional create", text)),
        }
    }
    let stored = create_in(tx.as_mut(), rtype, &id, prepared).await?;
    tx.commit().await?;
    respond::write_response(
        ctx,
        StatusCode::CREATED,
        &stored,
        &format!("created {rtype}/{}", stored.id),
    )
}

pub(crate) async fn update(
    ctx: &Ctx,
    rtype: &str,
    id: &str,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    request_body_kind(&ctx.headers, false)?;
    let expected = if_match(ctx.header("if-match"))?;
    let bytes = read_body(body, limit).await?;
    let resource = ctx.parse_json(&bytes)?;
    check_resource(ctx.state.inner.defs, &resource, rtype, Some(id))?;
    let prepared = Prepared::with_base(id, resource, &ctx.base);
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let (stored, created) = update_in(tx.as_mut(), rtype, id, prepared, expected).await?;
    tx.commit().await?;
    let (status, msg) = if created {
        (StatusCode::CREATED, format!("created {rtype}/{id}"))
    } else {
        (
            StatusCode::OK,
            format!("updated {rtype}/{id} to version {}", stored.version),
        )
    };
    respond::write_response(ctx, status, &stored, &msg)
}

pub(crate) async fn patch(
    ctx: &Ctx,
    rtype: &str,
    id: &str,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    let kind = request_body_kind(&ctx.headers, true)?;
    let expected = if_match(ctx.header("if-match"))?;
    let bytes = read_body(body, limit).await?;
    let doc = ctx.parse_json(&bytes)?;
    // Parsed and checked before the transaction takes the writer; the patched resource may
    // be no larger than a body this server accepts.
    let patch = match kind {
        BodyKind::JsonPatch => patch::Patch::json(doc)?,
        BodyKind::FhirJson => patch::Patch::fhirpath(doc)?,
    }
    .max_bytes(limit);
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let stored = patch_in(
        tx.as_mut(),
        ctx.state.inner.defs,
        &ctx.base,
        rtype,
        id,
        &patch,
        expected,
    )
    .await?;
    tx.commit().await?;
    respond::write_response(
        ctx,
        StatusCode::OK,
        &stored,
        &format!("patched {rtype}/{id} to version {}", stored.version),
    )
}

pub(crate) async fn delete(ctx: &Ctx, rtype: &str, id: &str) -> Result<Response, FhirError> {
    let expected = if_match(ctx.header("if-match"))?;
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let deleted = delete_in(tx.as_mut(), rtype, id, expected).await?;
    tx.commit().await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(d) = deleted {
        if let Ok(v) = HeaderValue::from_str(&respond::etag(d.version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
    }
    Ok(resp)
}

/// The criteria of a type-level conditional interaction: the URL's query, minus `_format`.
fn url_criteria(ctx: &Ctx) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in &ctx.params {
        ser.append_pair(k, v);
    }
    ser.finish()
}

/// Conditional update, `PUT [type]?criteria` (FHIR R4 http.html#cond-update): no match
/// creates (with the body's id if it has one), one match updates it, several are a 412.
pub(crate) async fn conditional_update(
    ctx: &Ctx,
    rtype: &str,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    request_body_kind(&ctx.headers, false)?;
    let text = url_criteria(ctx);
    let query = search::criteria(ctx, rtype, &text, "conditional update")?;
    let expected = if_match(ctx.header("if-match"))?;
    let bytes = read_body(body, limit).await?;
    let resource = ctx.parse_json(&bytes)?;
    check_resource(ctx.state.inner.defs, &resource, rtype, None)?;
    let body_id = resource
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let Some(id) = &body_id {
        if !crate::interaction::valid_id(id) {
            return Err(
                FhirError::bad_request(format!("'{id}' is not a valid resource id"))
                    .at(format!("{rtype}.id")),
            );
        }
    }
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let id = match search::matches_in(tx.as_mut(), &query).await?.as_slice() {
        [] => body_id.unwrap_or_else(new_id),
        [found] => {
            if let Some(id) = &body_id {
                if id != found {
                    return Err(FhirError::bad_request(format!(
                        "the criteria match {rtype}/{found}, but the body has id '{id}'"
                    ))
                    .at(format!("{rtype}.id")));
                }
            }
            found.clone()
        }
        _ => return Err(search::too_many("conditional update", &text)),
    };
    let prepared = Prepared::with_base(&id, resource, &ctx.base);
    let (stored, created) = update_in(tx.as_mut(), rtype, &id, prepared, expected).await?;
    tx.commit().await?;
    let (status, msg) = if created {
        (StatusCode::CREATED, format!("created {rtype}/{id}"))
    } else {
        (
            StatusCode::OK,
            format!("updated {rtype}/{id} to version {}", stored.version),
        )
    };
    respond::write_response(ctx, status, &stored, &msg)
}

/// Conditional patch, `PATCH [type]?criteria` (FHIR R4 http.html#patch): one match is
/// patched like `PATCH [type]/[id]` (If-Match included), none is a 404, several are a 412. The
/// search and the patch run in one transaction, so the match cannot change in between.
pub(crate) async fn conditional_patch(
    ctx: &Ctx,
    rtype: &str,
    body: Body,
    limit: usize,
) -> Result<Response, FhirError> {
    let kind = request_body_kind(&ctx.headers, true)?;
    let text = url_criteria(ctx);
    let query = search::criteria(ctx, rtype, &text, "conditional patch")?;
    let expected = if_match(ctx.header("if-match"))?;
    let bytes = read_body(body, limit).await?;
    let doc = ctx.parse_json(&bytes)?;
    // Parsed and checked before the transaction takes the writer; the patched resource may
    // be no larger than a body this server accepts.
    let patch = match kind {
        BodyKind::JsonPatch => patch::Patch::json(doc)?,
        BodyKind::FhirJson => patch::Patch::fhirpath(doc)?,
    }
    .max_bytes(limit);
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let id = match search::matches_in(tx.as_mut(), &query).await?.as_slice() {
        [] => {
            return Err(FhirError::not_found(format!(
                "no {rtype} matches the conditional patch criteria '{text}'"
            )))
        }
        [id] => id.clone(),
        _ => return Err(search::too_many("conditional patch", &text)),
    };
    let stored = patch_in(
        tx.as_mut(),
        ctx.state.inner.defs,
        &ctx.base,
        rtype,
        &id,
        &patch,
        expected,
    )
    .await?;
    tx.commit().await?;
    respond::write_response(
        ctx,
        StatusCode::OK,
        &stored,
        &format!("patched {rtype}/{id} to version {}", stored.version),
    )
}

/// Conditional delete, `DELETE [type]?criteria` (FHIR R4 http.html#cdelete), in `single`
/// mode: one match is deleted, several are a 412, none is a 204 with nothing done.
pub(crate) async fn conditional_delete(ctx: &Ctx, rtype: &str) -> Result<Response, FhirError> {
    let text = url_criteria(ctx);
    let query = search::criteria(ctx, rtype, &text, "conditional delete")?;
    let mut tx = ctx.state.inner.store.begin(&ctx.service).await?;
    let deleted = match search::matches_in(tx.as_mut(), &query).await?.as_slice() {
        [] => None,
        [id] => delete_in(tx.as_mut(), rtype, id, None).await?,
        _ => return Err(search::too_many("conditional delete", &text)),
    };
    tx.commit().await?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    if let Some(d) = deleted {
        if let Ok(v) = HeaderValue::from_str(&respond::etag(d.version)) {
            resp.headers_mut().insert(header::ETAG, v);
        }
    }
    Ok(resp)
}
