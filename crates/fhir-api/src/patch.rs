//! The two patch formats (FHIR R4 http.html#patch): JSON Patch (RFC 6902,
//! `application/json-patch+json`) and FHIRPath Patch (a Parameters resource, fhirpatch.html).
//!
//! A patch is applied to the current version inside the store transaction, while the store's
//! single writer is held, so everything that can be known from the patch alone is checked
//! when it is parsed, before the transaction begins (operation count, paths, the nesting the
//! values would reach), and its application is bounded in work, in the size it may grow the
//! resource to and in the nesting it may build, failing at the first operation past a bound
//! (issue #15: 22 doubling `copy` operations took 3 GB and held the writer for seconds, and
//! a patch that nested the resource 25,000 levels deep overflowed the stack).

use axum::http::StatusCode;
use fhir_model::IssueCode;
use fhir_path::patch::{Limits, MAX_NESTING, MAX_OPERATIONS};
use json_patch::PatchOperation;
use serde_json::Value;

use crate::error::FhirError;

/// What a patch may add to the resource beyond its own contents and the resource's size, in
/// bytes: a `copy` duplicates what the resource already holds, so without a bound a few
/// operations double it again and again (2^22 times for 22 copies). A patch may copy (or
/// move) at most as much as the resource and the patch hold, plus this, so the result is at
/// most about twice the resource plus the patch: a real patch never comes close.
const GROWTH_SLACK_BYTES: usize = 64 * 1024;

/// The size estimate of a number, which with `arbitrary_precision` is kept as text that
/// need not be formatted to be counted closely enough.
const NUMBER_BYTES: usize = 8;

/// A parsed patch document, ready to apply to the current version of a resource.
pub(crate) struct Patch {
    kind: Kind,
    /// The estimated serialised size of the patch document, part of the growth allowance.
    doc_bytes: usize,
    /// The largest the patched resource may be: the largest request body accepted, since a
    /// patch may not build what could not have been sent whole.
    max_bytes: usize,
}

enum Kind {
    Json(Vec<PatchOperation>),
    FhirPath(fhir_path::patch::Patch),
}

/// The estimated serialised size and the nesting of `v` (a scalar is 0, `[]` is 1), walked
/// with an explicit stack: the value may be deeper than the call stack allows recursion.
fn measure(v: &Value) -> (usize, usize) {
    let mut bytes = 0usize;
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        // One byte for the separator before every value but the first: close enough.
        bytes = bytes.saturating_add(1);
        match v {
            Value::Null | Value::Bool(_) => bytes = bytes.saturating_add(5),
            Value::Number(_) => bytes = bytes.saturating_add(NUMBER_BYTES),
            Value::String(s) => bytes = bytes.saturating_add(s.len() + 2),
            Value::Array(a) => {
                bytes = bytes.saturating_add(2);
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                bytes = bytes.saturating_add(2);
                deepest = deepest.max(d + 1);
                for (k, c) in o {
                    bytes = bytes.saturating_add(k.len() + 3);
                    stack.push((c, d + 1));
                }
            }
        }
    }
    (bytes, deepest)
}

fn unprocessable(msg: impl Into<String>) -> FhirError {
    FhirError::new(StatusCode::UNPROCESSABLE_ENTITY, IssueCode::Processing, msg)
}

fn too_deep(i: usize, pointer: &str) -> FhirError {
    unprocessable(format!(
        "the JSON Patch cannot be applied: operation {i} at '{pointer}' would nest the \
         resource deeper than {MAX_NESTING} levels of objects and arrays"
    ))
}

fn too_many(n: usize) -> FhirError {
    unprocessable(format!(
        "the patch has {n} operations; at most {MAX_OPERATIONS} are accepted"
    ))
}

impl Patch {
    pub(crate) fn json(doc: Value) -> Result<Patch, FhirError> {
        let (doc_bytes, _) = measure(&doc);
        if let Some(n) = doc.as_array().map(Vec::len).filter(|n| *n > MAX_OPERATIONS) {
            // Counted before the operations are deserialised: 50,000 of them are refused
            // without building any.
            return Err(too_many(n));
        }
        let ops = serde_json::from_value::<json_patch::Patch>(doc)
            .map_err(|e| {
                FhirError::new(
                    StatusCode::BAD_REQUEST,
                    IssueCode::Structure,
                    format!("not a JSON Patch document: {e}"),
                )
            })?
            .0;
        // What the document alone says: no pointer may reach, and no value may be put,
        // deeper than a patched resource may nest.
        for (i, op) in ops.iter().enumerate() {
            let (path, value) = match op {
                PatchOperation::Add(o) => (&o.path, Some(&o.value)),
                PatchOperation::Replace(o) => (&o.path, Some(&o.value)),
                PatchOperation::Test(o) => (&o.path, Some(&o.value)),
                PatchOperation::Remove(o) => (&o.path, None),
                PatchOperation::Move(o) => (&o.path, None),
                PatchOperation::Copy(o) => (&o.path, None),
            };
            let levels = path.count() + value.map_or(0, |v| measure(v).1);
            if levels > MAX_NESTING {
                return Err(too_deep(i, path.as_str()));
            }
        }
        Ok(Patch {
            kind: Kind::Json(ops),
            doc_bytes,
            max_bytes: usize::MAX,
        })
    }

    pub(crate) fn fhirpath(doc: Value) -> Result<Patch, FhirError> {
        if doc.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                "a FHIRPath Patch is a Parameters resource; for JSON Patch send \
                 Content-Type application/json-patch+json",
            ));
        }
        if let Some(n) = doc
            .get("parameter")
            .and_then(Value::as_array)
            .map(Vec::len)
            .filter(|n| *n > MAX_OPERATIONS)
        {
            // Before validation, which would walk every one of them.
            return Err(too_many(n));
        }
        let issues = fhir_model::r4().validate(&doc);
        if issues.iter().any(|i| i.is_error()) {
            return Err(FhirError::invalid(issues));
        }
        let (doc_bytes, _) = measure(&doc);
        let parsed =
            fhir_path::patch::Patch::parse(&doc, Limits::default()).map_err(fhirpath_error)?;
        Ok(Patch {
            kind: Kind::FhirPath(parsed),
            doc_bytes,
            max_bytes: usize::MAX,
        })
    }

    /// Bounds the patched resource to `max_bytes` (the largest request body accepted).
    pub(crate) fn max_bytes(mut self, max_bytes: usize) -> Patch {
        self.max_bytes = max_bytes;
        self
    }

    pub(crate) fn apply(&self, resource: &mut Value) -> Result<(), FhirError> {
        match &self.kind {
            Kind::Json(ops) => self.apply_json(ops, resource),
            Kind::FhirPath(patch) => {
                let defs = fhir_model::r4();
                let repeats = |path: &str| defs.is_repeating(path).unwrap_or(false);
                patch.apply(resource, &repeats).map_err(fhirpath_error)?;
                // FHIRPath Patch has no `copy`: what it adds comes from the patch, so the
                // result can outgrow the limit only by what the patch carries; check once.
                let (bytes, _) = measure(resource);
                if bytes > self.max_bytes {
                    return Err(self.too_large());
                }
                Ok(())
            }
        }
    }

    fn too_large(&self) -> FhirError {
        unprocessable(format!(
            "the patched resource would be larger than {} bytes, the largest request body \
             accepted",
            self.max_bytes
        ))
    }

    /// Applies a JSON Patch one operation at a time, checking before each what it will copy,
    /// move or add and how deep it will nest it, so that the first operation past a bound
    /// fails before it allocates anything. On failure `resource` is left part-patched: the
    /// caller discards it (RFC 6902 §5: the patch as a whole fails).
    fn apply_json(&self, ops: &[PatchOperation], resource: &mut Value) -> Result<(), FhirError> {
        let (initial, _) = measure(resource);
        // What the operations may bring in or carry about in all (see GROWTH_SLACK_BYTES).
        let allowance = initial
            .saturating_add(self.doc_bytes)
            .saturating_add(GROWTH_SLACK_BYTES);
        // Bytes brought in (added, replaced with, copied), and those plus the bytes moved.
        let (mut grown, mut spent) = (0usize, 0usize);
        for (i, op) in ops.iter().enumerate() {
            // The value the operation puts somewhere and where: `add`/`replace` carry theirs,
            // `copy`/`move` take it from the resource (a missing source is left for
            // json-patch to report).
            let (bytes, path) = match op {
                PatchOperation::Add(o) => (measure(&o.value).0, None),
                PatchOperation::Replace(o) => (measure(&o.value).0, None),
                PatchOperation::Copy(o) => match resource.pointer(o.from.as_str()) {
                    Some(v) => {
                        let (bytes, nesting) = measure(v);
                        (bytes, Some((&o.path, nesting)))
                    }
                    None => (0, None),
                },
                PatchOperation::Move(o) => match resource.pointer(o.from.as_str()) {
                    Some(v) => {
                        let (bytes, nesting) = measure(v);
                        (bytes, Some((&o.path, nesting)))
                    }
                    None => (0, None),
                },
                PatchOperation::Remove(_) | PatchOperation::Test(_) => (0, None),
            };
            if let Some((path, nesting)) = path {
                if path.count() + nesting > MAX_NESTING {
                    return Err(too_deep(i, path.as_str()));
                }
            }
            if !matches!(op, PatchOperation::Move(_)) {
                grown = grown.saturating_add(bytes);
            }
            spent = spent.saturating_add(bytes);
            if spent > allowance {
                return Err(unprocessable(format!(
                    "the JSON Patch cannot be applied: by operation {i} it copies, moves or \
                     adds more than {allowance} bytes (the resource's size and the patch's, \
                     plus {GROWTH_SLACK_BYTES})"
                )));
            }
            if initial.saturating_add(grown) > self.max_bytes {
                return Err(self.too_large());
            }
            json_patch::patch_unsafe(resource, std::slice::from_ref(op)).map_err(|e| {
                unprocessable(format!(
                    "the JSON Patch cannot be applied: operation {i} at '{}': {}",
                    e.path, e.kind
                ))
            })?;
        }
        Ok(())
    }
}

fn fhirpath_error(e: fhir_path::patch::PatchError) -> FhirError {
    let status = if e.is_malformed() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let at = e.operation.map(|i| format!("Parameters.parameter[{i}]"));
    let err = FhirError::new(
        status,
        IssueCode::Processing,
        format!("the FHIRPath Patch cannot be applied: {e}"),
    );
    match at {
        Some(at) => err.at(at),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn measure_counts_nesting_and_size() {
        assert_eq!(measure(&json!("x")), (4, 0));
        assert_eq!(measure(&json!([])).1, 1);
        assert_eq!(measure(&json!({"a": [{"b": 1}]})).1, 3);
        let (bytes, _) = measure(&json!({"name": "Chalmers"}));
        let real = json!({"name": "Chalmers"}).to_string().len();
        assert!(bytes >= real && bytes < real * 2, "{bytes} vs {real}");
    }
}
