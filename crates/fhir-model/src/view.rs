//! The `_summary` and `_elements` views of a resource (FHIR R4 §3.1.1.5.10 and §3.1.1.5.11
//! search.html#summary, #elements): subsets chosen by the definitions, marked with the
//! `SUBSETTED` tag. Key order of the input is kept.
//!
//! Every subset keeps what a reader needs to read it safely: the mandatory elements
//! (`min >= 1`), so that it is still a valid resource, and the modifiers (`isModifier`), which
//! change the meaning of everything else ("servers ... SHOULD return all mandatory elements
//! and modifiers", search.html#elements). `_summary=text` is the exception R4 spells out:
//! `text`, `id`, `meta` and the top-level mandatory elements only.

use serde_json::{json, Map, Value};

use crate::model::{Elem, Model, Node, NodeKind, Ty};
use crate::Summary;

const SUBSETTED_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue";

pub(crate) fn summarize(model: &Model, resource: &Value, mode: Summary) -> Value {
    let (Value::Object(map), Some(node)) = (resource, root_node(model, resource)) else {
        return resource.clone();
    };
    let out = match mode {
        Summary::False | Summary::Count => return resource.clone(),
        Summary::True => summary_object(model, map, node, true),
        Summary::Text => filter(map, |name| {
            matches!(name, "resourceType" | "id" | "meta" | "text")
                || node.get(name).is_some_and(|(e, _)| e.min >= 1)
        }),
        Summary::Data => filter(map, |name| name != "text"),
    };
    subsetted(out)
}

pub(crate) fn select_elements(model: &Model, resource: &Value, elements: &[String]) -> Value {
    let (Value::Object(map), Some(node)) = (resource, root_node(model, resource)) else {
        return resource.clone();
    };
    let out = filter(map, |name| {
        if matches!(name, "resourceType" | "id" | "meta") {
            return true;
        }
        // `value` selects `valueQuantity`: compare element names, not property names.
        // `Patient.name` is accepted for `name`; paths below the top level are not supported.
        let Some((elem, _)) = node.get(name) else {
            return false;
        };
        if kept_always(elem) {
            return true;
        }
        let element = &*elem.name;
        elements.iter().any(|e| {
            let e = e.trim();
            let e = e
                .strip_prefix(&*node.label)
                .and_then(|rest| rest.strip_prefix('.'))
                .unwrap_or(e);
            e == element
        })
    });
    subsetted(out)
}

fn root_node<'m>(model: &'m Model, resource: &Value) -> Option<&'m Node> {
    model.resource(resource.get("resourceType")?.as_str()?)
}

/// Keeps the properties whose element name (without a leading `_`) passes `keep`.
fn filter(map: &Map<String, Value>, keep: impl Fn(&str) -> bool) -> Map<String, Value> {
    map.iter()
        .filter(|(k, _)| keep(k.strip_prefix('_').unwrap_or(k)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `_summary=true`: summary elements, recursing into backbone elements (whose children carry
/// their own `isSummary`); datatypes are kept whole.
fn summary_object(
    model: &Model,
    map: &Map<String, Value>,
    node: &Node,
    root: bool,
) -> Map<String, Value> {
    let mut out = Map::new();
    for (k, v) in map {
        let name = k.strip_prefix('_').unwrap_or(k);
        if root && matches!(name, "resourceType" | "id" | "meta") {
            out.insert(k.clone(), v.clone());
            continue;
        }
        let Some((elem, ty)) = node.get(name) else {
            continue;
        };
        if !(elem.summary || kept_always(elem)) {
            continue;
        }
        let backbone = match ty {
            Ty::Node(n) => model.node(n).filter(|b| b.kind == NodeKind::Backbone),
            _ => None,
        };
        let value = match (backbone, v) {
            (Some(b), Value::Object(m)) => {
                let inner = summary_object(model, m, b, false);
                if inner.is_empty() {
                    // FHIR JSON has no empty objects (json.html): nothing summary was in it.
                    continue;
                }
                Value::Object(inner)
            }
            (Some(b), Value::Array(items)) => {
                let kept: Vec<Value> = items
                    .iter()
                    .filter_map(|item| match item {
                        Value::Object(m) => {
                            let inner = summary_object(model, m, b, false);
                            (!inner.is_empty()).then_some(Value::Object(inner))
                        }
                        other => Some(other.clone()),
                    })
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                Value::Array(kept)
            }
            _ => v.clone(),
        };
        out.insert(k.clone(), value);
    }
    out
}

/// Mandatory elements and modifiers are in every subset but `_summary=text`.
fn kept_always(elem: &Elem) -> bool {
    elem.min >= 1 || elem.modifier
}

/// Adds the `SUBSETTED` tag to `meta.tag` (creating `meta` after `id` when absent).
fn subsetted(mut map: Map<String, Value>) -> Value {
    let tag = json!({"system": SUBSETTED_SYSTEM, "code": "SUBSETTED"});
    if let Some(Value::Object(meta)) = map.get_mut("meta") {
        match meta.get_mut("tag") {
            Some(Value::Array(tags)) => {
                let present = tags.iter().any(|t| {
                    t.get("system").and_then(Value::as_str) == Some(SUBSETTED_SYSTEM)
                        && t.get("code").and_then(Value::as_str) == Some("SUBSETTED")
                });
                if !present {
                    tags.push(tag);
                }
            }
            _ => {
                meta.insert("tag".into(), json!([tag]));
            }
        }
        return Value::Object(map);
    }
    let mut out = Map::new();
    let mut meta = Some(json!({ "tag": [tag] }));
    let anchor = if map.contains_key("id") {
        "id"
    } else {
        "resourceType"
    };
    for (k, v) in map {
        if k == "meta" {
            continue; // not an object: replaced
        }
        let after = k == anchor;
        out.insert(k, v);
        if after {
            if let Some(m) = meta.take() {
                out.insert("meta".into(), m);
            }
        }
    }
    if let Some(m) = meta {
        out.insert("meta".into(), m);
    }
    Value::Object(out)
}
