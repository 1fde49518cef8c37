//! FHIRPath Patch (FHIR R4 §3.1.0.8, fhirpatch.html): applies the `operation` parameters of a
//! Parameters resource (`add`, `insert`, `delete`, `replace`, `move`) to a resource in place.
//! Locations come from the evaluator's node paths; this module knows nothing of HTTP, but
//! tells a malformed patch (400) from one that cannot be applied to this resource (422).

use serde_json::{Map, Value};

use crate::eval::Evaluator;
use crate::parser::Ast;
use crate::value::PathSegment;
use crate::{Expr, Item, Options};

/// Most operations one patch may carry. A FHIR client sends a handful; a thousand is far
/// beyond that and bounds the work of applying it (each operation evaluates its path over the
/// whole resource). Issue #15 sent 50,000.
pub const MAX_OPERATIONS: usize = 1000;

/// Deepest nesting of objects and arrays a patch may leave in the resource. serde_json, which
/// reads every stored resource back, refuses more than 127 levels, and a resource is read
/// again inside a Bundle (`entry[].resource`, three levels more), so a patch may not build
/// what the parser could not read back; 100 leaves that room. Without a bound, operations
/// that each add a deep value inside the previous one grow the resource without limit, and
/// serialising or even dropping it then recurses past the stack (issue #15).
pub const MAX_NESTING: usize = 100;

/// The work all the path evaluations of one patch may do together, in the evaluator's steps
/// (see [`crate::DEFAULT_MAX_STEPS`]). The patch is applied while the store's single writer
/// is held, so its cost must stay small whatever the paths ask for: a million steps take
/// well under a second, and a real patch path uses a few per element it reads.
pub const MAX_STEPS: usize = 1_000_000;

/// The bytes of computed strings all the path evaluations of one patch may build together
/// (see [`crate::DEFAULT_MAX_STRING_BYTES`]): a path compares a few short strings, and the
/// writer is held meanwhile.
pub const MAX_STRING_BYTES: usize = 4 << 20;

/// The bounds a patch is parsed and applied under; [`Limits::default`] uses the constants
/// of this module.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_operations: usize,
    pub max_nesting: usize,
    pub max_steps: usize,
    pub max_string_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: MAX_OPERATIONS,
            max_nesting: MAX_NESTING,
            max_steps: MAX_STEPS,
            max_string_bytes: MAX_STRING_BYTES,
        }
    }
}

/// Why a patch failed, naming the operation (0-based) and its path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath Patch operation {}{}{}: {message}",
    .operation.map(|i| i.to_string()).unwrap_or_else(|| "-".into()),
    .op_type.as_deref().map(|t| format!(" ({t})")).unwrap_or_default(),
    .path.as_deref().map(|p| format!(" at '{p}'")).unwrap_or_default())]
pub struct PatchError {
    /// Index of the failing `operation` parameter, if the failure is tied to one.
    pub operation: Option<usize>,
    pub op_type: Option<String>,
    pub path: Option<String>,
    pub message: String,
    malformed: bool,
}

impl PatchError {
    /// True when the Parameters resource itself is invalid (HTTP 400); false when the patch
    /// is well-formed but cannot be applied to this resource (HTTP 422).
    pub fn is_malformed(&self) -> bool {
        self.malformed
    }
}

/// Applies a FHIRPath Patch; an element is treated as repeating when it already holds an array.
pub fn apply(resource: &mut Value, parameters: &Value) -> Result<(), PatchError> {
    apply_with(resource, parameters, &|_| false)
}

/// Applies a FHIRPath Patch; `is_array("Patient.name")` says whether an element that does not
/// yet exist repeats (so `add` creates a list).
pub fn apply_with(
    resource: &mut Value,
    parameters: &Value,
    is_array: &dyn Fn(&str) -> bool,
) -> Result<(), PatchError> {
    Patch::parse(parameters, Limits::default())?.apply(resource, is_array)
}

/// A FHIRPath Patch parsed and checked (operation count, paths parsed within the
/// expression depth bound), so that it can be refused before the resource is read, and then
/// applied under its [`Limits`].
#[derive(Debug)]
pub struct Patch {
    ops: Vec<Operation>,
    limits: Limits,
}

impl Patch {
    /// Parses the operations of a Parameters resource. Everything wrong with the patch itself
    /// is found here (a malformed patch, HTTP 400).
    pub fn parse(parameters: &Value, limits: Limits) -> Result<Patch, PatchError> {
        Ok(Patch {
            ops: parse_operations(parameters, limits.max_operations)?,
            limits,
        })
    }

    /// Applies the operations in order; `is_array("Patient.name")` says whether an element
    /// that does not yet exist repeats. On failure the resource is left untouched.
    pub fn apply(
        &self,
        resource: &mut Value,
        is_array: &dyn Fn(&str) -> bool,
    ) -> Result<(), PatchError> {
        // Work on a copy so a failing operation leaves the resource untouched.
        let mut work = resource.clone();
        let mut budget = (self.limits.max_steps, self.limits.max_string_bytes);
        for op in &self.ops {
            let mut cx = Apply {
                is_array,
                budget: &mut budget,
                limits: &self.limits,
            };
            op.apply(&mut work, &mut cx)?;
        }
        *resource = work;
        Ok(())
    }
}

/// What applying one operation needs besides the resource: the model's answer to "does
/// this element repeat", and the budget left.
struct Apply<'c> {
    is_array: &'c dyn Fn(&str) -> bool,
    /// Evaluator steps and string bytes left for the rest of the patch.
    budget: &'c mut (usize, usize),
    limits: &'c Limits,
}

/// The nesting of objects and arrays in `v` (a scalar is 0, `[]` and `{}` are 1), walked
/// with an explicit stack so that no depth of input can overflow the call stack.
fn nesting(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        match v {
            Value::Array(a) => {
                deepest = deepest.max(d + 1);
                stack.extend(a.iter().map(|c| (c, d + 1)));
            }
            Value::Object(o) => {
                deepest = deepest.max(d + 1);
                stack.extend(o.values().map(|c| (c, d + 1)));
            }
            _ => {}
        }
    }
    deepest
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpType {
    Add,
    Insert,
    Delete,
    Replace,
    Move,
}

#[derive(Debug)]
struct Operation {
    index: usize,
    kind: OpType,
    type_text: String,
    path_text: String,
    path: Expr,
    name: Option<String>,
    /// The value and, for `value[x]`, its type suffix (`String`, `Quantity`...).
    value: Option<(Value, Option<String>)>,
    pos: Option<i64>,
    source: Option<i64>,
    destination: Option<i64>,
}

fn malformed(index: Option<usize>, message: impl Into<String>) -> PatchError {
    PatchError {
        operation: index,
        op_type: None,
        path: None,
        message: message.into(),
        malformed: true,
    }
}

fn parse_operations(parameters: &Value, max: usize) -> Result<Vec<Operation>, PatchError> {
    if parameters.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
        return Err(malformed(
            None,
            "the patch body must be a Parameters resource",
        ));
    }
    let params = match parameters.get("parameter") {
        None => return Ok(Vec::new()),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(malformed(None, "Parameters.parameter must be an array")),
    };
    if params.len() > max {
        // Well-formed but more than this server applies: unprocessable (422), not malformed.
        return Err(PatchError {
            operation: None,
            op_type: None,
            path: None,
            message: format!(
                "the patch has {} operations; at most {max} are accepted",
                params.len()
            ),
            malformed: false,
        });
    }
    let mut ops = Vec::new();
    for (i, p) in params.iter().enumerate() {
        if p.get("name").and_then(Value::as_str) != Some("operation") {
            return Err(malformed(
                Some(i),
                "every parameter of a FHIRPath Patch must be named 'operation'",
            ));
        }
        ops.push(parse_operation(i, p)?);
    }
    Ok(ops)
}

fn parse_operation(i: usize, p: &Value) -> Result<Operation, PatchError> {
    let parts = p
        .get("part")
        .and_then(Value::as_array)
        .ok_or_else(|| malformed(Some(i), "operation has no parts"))?;
    let find = |n: &str| {
        parts
            .iter()
            .find(|x| x.get("name").and_then(Value::as_str) == Some(n))
    };
    let text = |n: &str| -> Result<Option<String>, PatchError> {
        match find(n) {
            None => Ok(None),
            Some(part) => primitive_of(part)
                .and_then(|v| v.as_str().map(str::to_string))
                .map(Some)
                .ok_or_else(|| malformed(Some(i), format!("part '{n}' must have a string value"))),
        }
    };
    let integer = |n: &str| -> Result<Option<i64>, PatchError> {
        match find(n) {
            None => Ok(None),
            Some(part) => primitive_of(part)
                .and_then(|v| v.as_i64())
                .map(Some)
                .ok_or_else(|| {
                    malformed(Some(i), format!("part '{n}' must have an integer value"))
                }),
        }
    };
    let type_text = text("type")?.ok_or_else(|| malformed(Some(i), "operation has no 'type'"))?;
    let kind = match type_text.as_str() {
        "add" => OpType::Add,
        "insert" => OpType::Insert,
        "delete" => OpType::Delete,
        "replace" => OpType::Replace,
        "move" => OpType::Move,
        other => {
            return Err(malformed(
                Some(i),
                format!("unknown operation type '{other}'"),
            ))
        }
    };
    let with_ctx = |mut e: PatchError, path: Option<&str>| {
        e.op_type = Some(type_text.clone());
        e.path = path.map(str::to_string);
        e
    };
    let path_text = text("path")?
        .ok_or_else(|| with_ctx(malformed(Some(i), "operation has no 'path'"), None))?;
    let path = crate::parse(&path_text).map_err(|e| {
        with_ctx(
            malformed(Some(i), format!("invalid path: {e}")),
            Some(&path_text),
        )
    })?;
    let value = find("value")
        .map(value_of)
        .transpose()
        .map_err(|m| with_ctx(malformed(Some(i), m), Some(&path_text)))?;
    let op = Operation {
        index: i,
        kind,
        type_text: type_text.clone(),
        path_text: path_text.clone(),
        path,
        name: text("name")?,
        value,
        pos: integer("index")?,
        source: integer("source")?,
        destination: integer("destination")?,
    };
    let need = |ok: bool, what: &str| -> Result<(), PatchError> {
        if ok {
            Ok(())
        } else {
            Err(with_ctx(
                malformed(Some(i), format!("'{type_text}' requires '{what}'")),
                Some(&path_text),
            ))
        }
    };
    match kind {
        OpType::Add => {
            need(op.name.is_some(), "name")?;
            need(op.value.is_some(), "value")?;
        }
        OpType::Insert => {
            need(op.value.is_some(), "value")?;
            need(op.pos.is_some(), "index")?;
        }
        OpType::Replace => need(op.value.is_some(), "value")?,
        OpType::Move => {
            need(op.source.is_some(), "source")?;
            need(op.destination.is_some(), "destination")?;
        }
        OpType::Delete => {}
    }
    Ok(op)
}

/// The `value[x]` of a part, if it has one.
fn primitive_of(part: &Value) -> Option<&Value> {
    part.as_object()?
        .iter()
        .find(|(k, _)| k.starts_with("value") && k.len() > 5)
        .map(|(_, v)| v)
}

/// The value carried by a part: `value[x]`, a `resource`, or an object built from nested
/// `part`s (FHIRPath Patch: "complex values are given as parts").
fn value_of(part: &Value) -> Result<(Value, Option<String>), String> {
    let Some(obj) = part.as_object() else {
        return Err("a part must be an object".into());
    };
    for (k, v) in obj {
        if let Some(suffix) = k.strip_prefix("value").filter(|s| !s.is_empty()) {
            return Ok((v.clone(), Some(suffix.to_string())));
        }
    }
    if let Some(r) = obj.get("resource") {
        return Ok((r.clone(), None));
    }
    if let Some(Value::Array(parts)) = obj.get("part") {
        let mut out = Map::new();
        for sub in parts {
            let name = sub
                .get("name")
                .and_then(Value::as_str)
                .ok_or("a nested part has no name")?;
            let (v, _) = value_of(sub)?;
            // A part name that repeats becomes a list.
            let key = name.to_string();
            match out.get_mut(&key) {
                Some(Value::Array(a)) => a.push(v),
                Some(existing) => {
                    let prev = existing.take();
                    *existing = Value::Array(vec![prev, v]);
                }
                None => {
                    out.insert(key, v);
                }
            }
        }
        return Ok((Value::Object(out), None));
    }
    Err("part 'value' has no value[x], resource or parts".into())
}

/// The FHIRPath-ish element path of a location (`Patient.name.given`), for `is_array`.
fn element_path(resource: &Value, path: &[PathSegment]) -> String {
    let mut out = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("Resource")
        .to_string();
    for seg in path {
        if let PathSegment::Key(k) = seg {
            out.push('.');
            out.push_str(k);
        }
    }
    out
}

fn get<'v>(mut v: &'v Value, path: &[PathSegment]) -> Option<&'v Value> {
    for seg in path {
        v = match seg {
            PathSegment::Key(k) => v.as_object()?.get(k)?,
            PathSegment::Index(i) => v.as_array()?.get(*i)?,
        };
    }
    Some(v)
}

fn get_mut<'v>(mut v: &'v mut Value, path: &[PathSegment]) -> Option<&'v mut Value> {
    for seg in path {
        v = match seg {
            PathSegment::Key(k) => v.as_object_mut()?.get_mut(k)?,
            PathSegment::Index(i) => v.as_array_mut()?.get_mut(*i)?,
        };
    }
    Some(v)
}

impl Operation {
    fn fail(&self, message: impl Into<String>) -> PatchError {
        PatchError {
            operation: Some(self.index),
            op_type: Some(self.type_text.clone()),
            path: Some(self.path_text.clone()),
            message: message.into(),
            malformed: false,
        }
    }

    /// Evaluates the path within what is left of the patch's budget, returning the
    /// locations of the selected nodes.
    fn locate(
        &self,
        resource: &Value,
        expr: &Expr,
        cx: &mut Apply,
    ) -> Result<Vec<Vec<PathSegment>>, PatchError> {
        let (steps, bytes) = *cx.budget;
        let options = Options::default().max_steps(steps).max_string_bytes(bytes);
        let ev = Evaluator::new(resource, &options);
        let items = ev.run(&expr.ast);
        *cx.budget = ev.budget_left();
        let items = items.map_err(|e| self.fail(format!("path evaluation failed: {e}")))?;
        items
            .iter()
            .map(|it| match it {
                Item::Node(n) => n.path().map(<[PathSegment]>::to_vec).ok_or_else(|| {
                    self.fail("the path selects something that is not part of the resource")
                }),
                Item::Value(_) => {
                    Err(self.fail("the path selects a computed value, not an element"))
                }
            })
            .collect()
    }

    fn value(&self) -> Value {
        self.value
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or(Value::Null)
    }

    /// Refuses to put the value `levels` containers deep when the resource would then nest
    /// deeper than [`Limits::max_nesting`].
    fn check_nesting(&self, levels: usize, cx: &Apply) -> Result<(), PatchError> {
        let inner = self.value.as_ref().map(|(v, _)| nesting(v)).unwrap_or(0);
        let max = cx.limits.max_nesting;
        if levels.saturating_add(inner) > max {
            return Err(self.fail(format!(
                "the patched resource would nest objects and arrays deeper than {max} levels"
            )));
        }
        Ok(())
    }

    fn apply(&self, resource: &mut Value, cx: &mut Apply) -> Result<(), PatchError> {
        match self.kind {
            OpType::Add => self.add(resource, cx),
            OpType::Insert => {
                let (list, len) = self.list(resource, cx)?;
                // The list itself, then the item in it.
                self.check_nesting(list.len() + 1, cx)?;
                let at = self.pos.unwrap_or(-1);
                if at < 0 || at as usize > len {
                    return Err(self.fail(format!("index {at} is outside the list (length {len})")));
                }
                let value = self.value();
                match get_mut(resource, &list) {
                    Some(Value::Array(a)) => a.insert(at as usize, value),
                    _ => set_at(resource, &list, Value::Array(vec![value]))
                        .ok_or_else(|| self.fail("cannot create the list"))?,
                }
                Ok(())
            }
            OpType::Delete => {
                let locs = self.locate(resource, &self.path, cx)?;
                match locs.as_slice() {
                    [] => Ok(()),
                    [loc] => {
                        remove_at(resource, loc)
                            .ok_or_else(|| self.fail("cannot delete the root"))?;
                        prune(resource, loc);
                        Ok(())
                    }
                    _ => Err(self.fail(format!(
                        "the path selects {} elements; delete needs at most one",
                        locs.len()
                    ))),
                }
            }
            OpType::Replace => {
                let locs = self.locate(resource, &self.path, cx)?;
                let [loc] = locs.as_slice() else {
                    return Err(self.fail(format!(
                        "the path selects {} elements; replace needs exactly one",
                        locs.len()
                    )));
                };
                if loc.is_empty() {
                    return Err(self.fail("the resource itself cannot be replaced"));
                }
                self.check_nesting(loc.len(), cx)?;
                self.replace(resource, loc)
            }
            OpType::Move => {
                let (list, len) = self.list(resource, cx)?;
                let (src, dst) = (self.source.unwrap_or(-1), self.destination.unwrap_or(-1));
                if src < 0 || src as usize >= len || dst < 0 || dst as usize >= len {
                    return Err(self.fail(format!(
                        "source {src} or destination {dst} is outside the list (length {len})"
                    )));
                }
                if let Some(Value::Array(a)) = get_mut(resource, &list) {
                    let v = a.remove(src as usize);
                    a.insert(dst as usize, v);
                }
                Ok(())
            }
        }
    }

    fn add(&self, resource: &mut Value, cx: &mut Apply) -> Result<(), PatchError> {
        let locs = self.locate(resource, &self.path, cx)?;
        let [loc] = locs.as_slice() else {
            return Err(self.fail(format!(
                "the path selects {} elements; add needs exactly one",
                locs.len()
            )));
        };
        // The element's object, its member, and the list that member may be.
        self.check_nesting(loc.len() + 2, cx)?;
        let name = self.name.clone().unwrap_or_default();
        let repeats = (cx.is_array)(&format!("{}.{name}", element_path(resource, loc)));
        let value = self.value();
        let Some(Value::Object(target)) = get_mut(resource, loc) else {
            return Err(self.fail("the path does not select an element that can hold children"));
        };
        match target.get_mut(&name) {
            Some(Value::Array(a)) => a.push(value),
            Some(_) => {
                return Err(self.fail(format!("'{name}' already has a value and does not repeat")))
            }
            None => {
                target.insert(
                    name,
                    if repeats {
                        Value::Array(vec![value])
                    } else {
                        value
                    },
                );
            }
        }
        Ok(())
    }

    fn replace(&self, resource: &mut Value, loc: &[PathSegment]) -> Result<(), PatchError> {
        let value = self.value();
        // A choice element keeps its name but changes its type suffix (valueQuantity →
        // valueString) when the replacement has another type.
        if let (Some(PathSegment::Key(key)), Some((_, Some(suffix)))) = (loc.last(), &self.value) {
            if let Some(Ast::Ident(name)) = last_ident(&self.path.ast) {
                if key != name
                    && key.starts_with(name.as_str())
                    && crate::value::choice_type(&key[name.len()..]).is_some()
                {
                    let new_key = format!("{name}{suffix}");
                    let parent = &loc[..loc.len() - 1];
                    let Some(Value::Object(o)) = get_mut(resource, parent) else {
                        return Err(self.fail("cannot replace the element"));
                    };
                    let mut rebuilt = Map::new();
                    for (k, v) in std::mem::take(o) {
                        if &k == key {
                            rebuilt.insert(new_key.clone(), value.clone());
                        } else {
                            rebuilt.insert(k, v);
                        }
                    }
                    *o = rebuilt;
                    return Ok(());
                }
            }
        }
        match get_mut(resource, loc) {
            Some(slot) => {
                *slot = value;
                Ok(())
            }
            None => Err(self.fail("cannot replace the element")),
        }
    }

    /// The location and length of the list the path designates (insert/move). An empty
    /// result is allowed when the path is `container.name` and the container exists.
    fn list(
        &self,
        resource: &Value,
        cx: &mut Apply,
    ) -> Result<(Vec<PathSegment>, usize), PatchError> {
        let locs = self.locate(resource, &self.path, cx)?;
        if locs.is_empty() {
            if let Ast::Invoke(lhs, rhs) = &self.path.ast {
                if let Ast::Ident(name) = &**rhs {
                    let container = Expr {
                        ast: (**lhs).clone(),
                        text: self.path_text.clone(),
                    };
                    let c = self.locate(resource, &container, cx)?;
                    if let [loc] = c.as_slice() {
                        let mut l = loc.clone();
                        l.push(PathSegment::Key(name.clone()));
                        return Ok((l, 0));
                    }
                }
            }
            return Err(self.fail("the path selects no list"));
        }
        let mut parent: Option<Vec<PathSegment>> = None;
        for loc in &locs {
            let Some((PathSegment::Index(_), p)) = loc.split_last() else {
                return Err(self.fail("the path does not select a list"));
            };
            match &parent {
                Some(q) if q.as_slice() != p => {
                    return Err(self.fail("the path selects elements of more than one list"))
                }
                _ => parent = Some(p.to_vec()),
            }
        }
        let list = parent.unwrap_or_default();
        let len = match get(resource, &list) {
            Some(Value::Array(a)) => a.len(),
            _ => return Err(self.fail("the path does not select a list")),
        };
        Ok((list, len))
    }
}

/// The final identifier of a path expression (`Observation.value` → `value`).
fn last_ident(ast: &Ast) -> Option<&Ast> {
    match ast {
        Ast::Ident(_) => Some(ast),
        Ast::Invoke(_, r) if matches!(**r, Ast::Ident(_)) => Some(r),
        _ => None,
    }
}

fn set_at(resource: &mut Value, loc: &[PathSegment], v: Value) -> Option<()> {
    let (last, parent) = loc.split_last()?;
    match (get_mut(resource, parent)?, last) {
        (Value::Object(o), PathSegment::Key(k)) => {
            o.insert(k.clone(), v);
            Some(())
        }
        _ => None,
    }
}

/// Removes the value at `loc` (and the matching `_x` primitive-extension entry).
fn remove_at(resource: &mut Value, loc: &[PathSegment]) -> Option<()> {
    let (last, parent) = loc.split_last()?;
    match last {
        PathSegment::Key(k) => {
            let o = get_mut(resource, parent)?.as_object_mut()?;
            o.shift_remove(k);
            o.shift_remove(&format!("_{k}"));
        }
        PathSegment::Index(i) => {
            if let Some((PathSegment::Key(k), grand)) = parent.split_last() {
                let o = get_mut(resource, grand)?.as_object_mut()?;
                for key in [k.clone(), format!("_{k}")] {
                    if let Some(Value::Array(a)) = o.get_mut(&key) {
                        if *i < a.len() {
                            a.remove(*i);
                        }
                    }
                }
            } else {
                let a = get_mut(resource, parent)?.as_array_mut()?;
                if *i < a.len() {
                    a.remove(*i);
                }
            }
        }
    }
    Some(())
}

/// Drops objects and arrays left empty by a delete, walking up from `loc` (not the root).
fn prune(resource: &mut Value, loc: &[PathSegment]) {
    let mut depth = loc.len();
    while depth > 1 {
        let parent = &loc[..depth - 1];
        let empty = match get_mut(resource, parent) {
            Some(Value::Object(o)) => o.is_empty(),
            Some(Value::Array(a)) => a.is_empty() || a.iter().all(Value::is_null),
            _ => false,
        };
        if !empty {
            return;
        }
        if remove_at(resource, parent).is_none() {
            return;
        }
        depth -= 1;
    }
}
