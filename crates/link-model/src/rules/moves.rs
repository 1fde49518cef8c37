//! `POST …/resourceGroups/{g}/moveResources`: top-level resources move to another group
//! with everything under them, and every reference to them is rewritten; nothing with a
//! Private Link moves, as in Azure.

use serde_json::Value;

use super::strings;
use crate::action::{action, Verb};
use crate::authz::check;
use crate::error::{bad_request, invalid_content, not_found, rg_not_found, ArmError};
use crate::kind::Kind;
use crate::path::{key_of, parent_key};
use crate::state::{s, Resource};
use crate::txn::Txn;

pub(super) fn rewrite(v: &mut Value, old: &str, new: &str) {
    match v {
        Value::String(s) => {
            let lower = s.to_lowercase();
            if lower.len() == s.len() && (lower == old || lower.starts_with(&format!("{old}/"))) {
                if let Some(rest) = s.get(old.len()..) {
                    *s = format!("{new}{rest}");
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite(x, old, new)),
        Value::Object(o) => o.values_mut().for_each(|x| rewrite(x, old, new)),
        _ => {}
    }
}

pub(crate) fn move_resources(
    tx: &mut Txn<'_>,
    source: &crate::path::Scope,
    body: &Value,
    act: &str,
) -> Result<(), ArmError> {
    check(tx.old, tx.who, act, &source.key, &source.path)?;
    let Some(src) = tx.get(&source.key).cloned() else {
        return Err(rg_not_found(source.rg.as_deref().unwrap_or_default()));
    };
    let target_id = s(body, "targetResourceGroup");
    let target_key = key_of(target_id);
    let Some(dst) = tx
        .get(&target_key)
        .filter(|r| r.kind == Kind::ResourceGroup)
        .cloned()
    else {
        return Err(rg_not_found(
            target_id.rsplit('/').next().unwrap_or(target_id),
        ));
    };
    check(
        tx.old,
        tx.who,
        action(Kind::ResourceGroup, Verb::Write),
        &dst.key(),
        &dst.id,
    )?;
    let ids = strings(body.get("resources"));
    if ids.is_empty() {
        return Err(invalid_content(
            "'resources' must list the ids of the resources to move",
        ));
    }
    let mut moves = Vec::new();
    for id in &ids {
        let k = key_of(id);
        let Some(r) = tx.get(&k).cloned() else {
            return Err(not_found("resource", id, source.rg.as_deref()));
        };
        if parent_key(&k) != src.key() {
            return Err(bad_request(
                "InvalidResourceMoveRequest",
                format!(
                    "Resource {id} is not a top-level resource of resource group {}.",
                    src.id
                ),
            ));
        }
        let has_link = r.kind == Kind::PrivateEndpoint
            || r.owner.is_some()
            || (r.kind == Kind::FhirService
                && tx
                    .st
                    .children(&k, Kind::PrivateEndpointConnection)
                    .next()
                    .is_some());
        if has_link {
            return Err(bad_request(
                "ResourceMoveNotSupported",
                format!("Resource {} cannot be moved while Private Link is enabled. To make a move, delete the Private Link first, then move the resource, and create a new Private Link once the move is complete.", r.id),
            ));
        }
        check(tx.old, tx.who, action(r.kind, Verb::Write), &k, &r.id)?;
        let new_id = format!("{}{}", dst.id, r.id.get(src.id.len()..).unwrap_or_default());
        if tx.get(&new_id.to_lowercase()).is_some() {
            return Err(ArmError::new(
                409,
                "ResourceExists",
                format!("Resource {new_id} already exists in the target resource group."),
            ));
        }
        moves.push((k, new_id));
    }
    for (old_key, new_id) in moves {
        let new_key = new_id.to_lowercase();
        let keys = tx.st.subtree(&old_key);
        let moved: Vec<Resource> = keys.iter().filter_map(|k| tx.remove(k)).collect();
        for mut r in moved {
            rewrite(&mut r.body, &old_key, &new_id);
            r.id = format!("{new_id}{}", r.id.get(old_key.len()..).unwrap_or_default());
            tx.put(r);
        }
        let others: Vec<Resource> = tx.st.resources().cloned().collect();
        for mut r in others {
            let before = r.clone();
            rewrite(&mut r.body, &old_key, &new_id);
            if let Some(o) = r.owner.as_mut() {
                if *o == old_key || o.starts_with(&format!("{old_key}/")) {
                    *o = format!("{new_key}{}", o.get(old_key.len()..).unwrap_or_default());
                }
            }
            if r != before {
                tx.put(r);
            }
        }
    }
    Ok(())
}
