//! Structural validation of resource JSON against the R4 definitions: property names,
//! cardinality, the JSON representation rules of FHIR R4 §2.6.2 json.html and the lexical
//! rules of the primitive types, and `required` bindings to the ValueSets whose complete
//! expansion is embedded (`terminology`). Invariants (FHIRPath constraints), bindings of
//! other strengths and reference resolution are deliberately absent.
//!
//! The walk keeps a stack of borrowed path segments and formats a FHIRPath-like expression
//! (`Bundle.entry[2].resource.status`) only when it reports an issue, so a valid resource
//! costs one hash lookup per property and no allocation beyond the stack.

use serde_json::{Map, Value};

use crate::model::{Elem, Model, Node, Ty, MAX_ELEMS};
use crate::outcome::{Issue, IssueCode};
use crate::primitive::{self, Problem};
use crate::terminology::terminology;

/// Nesting deeper than this is reported rather than followed (no stack overflow on any input).
const MAX_DEPTH: usize = 96;
/// A resource this broken gets this many issues, not one per property.
const MAX_ISSUES: usize = 100;

/// Diagnostics of the issue that says the root `resourceType` is not an R4 resource type.
pub(crate) const UNKNOWN_RESOURCE_TYPE: &str = "Unknown resource type";

pub(crate) fn validate(model: &Model, resource: &Value) -> Vec<Issue> {
    let mut w = Walker {
        model,
        path: Vec::with_capacity(16),
        issues: Vec::new(),
    };
    w.root(resource);
    w.issues
}

#[derive(Clone, Copy)]
enum Seg<'a> {
    Name(&'a str),
    Index(usize),
}

struct Walker<'m, 'a> {
    model: &'m Model,
    path: Vec<Seg<'a>>,
    issues: Vec<Issue>,
}

/// Which elements of a node an object has, by element index.
struct Seen([u64; MAX_ELEMS / 64]);

impl Seen {
    /// Marks element `i`; true if it was marked already.
    fn mark(&mut self, i: usize) -> bool {
        let (w, b) = (i / 64, 1u64 << (i % 64));
        match self.0.get_mut(w) {
            Some(word) => {
                let was = *word & b != 0;
                *word |= b;
                was
            }
            None => false,
        }
    }
    fn has(&self, i: usize) -> bool {
        self.0
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }
}

/// A short rendering of a JSON value for diagnostics.
fn show(v: &Value) -> String {
    let s = match v {
        Value::String(s) => format!("'{}'", s.escape_debug()),
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        let cut: String = s.chars().take(77).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl<'m, 'a> Walker<'m, 'a> {
    fn path_string(&self, extra: Option<&str>) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Seg::Name(n) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(n);
                }
                Seg::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if let Some(e) = extra {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(e);
        }
        s
    }

    fn report(&mut self, code: IssueCode, diagnostics: String) {
        self.report_at(None, code, diagnostics);
    }

    fn report_at(&mut self, extra: Option<&str>, code: IssueCode, diagnostics: String) {
        if self.issues.len() < MAX_ISSUES {
            let at = self.path_string(extra);
            self.issues.push(Issue::error(code, diagnostics).at(at));
        }
    }

    fn too_deep(&mut self) -> bool {
        if self.path.len() > MAX_DEPTH {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!("Content at {at} is nested too deeply"),
            );
            return true;
        }
        false
    }

    fn root(&mut self, resource: &'a Value) {
        let Value::Object(map) = resource else {
            self.issues.push(Issue::error(
                IssueCode::Invalid,
                format!(
                    "A resource must be a JSON object, not {}",
                    kind_of(resource)
                ),
            ));
            return;
        };
        match map.get("resourceType") {
            Some(Value::String(t)) => match self.model.resource(t) {
                Some(node) => {
                    self.path.push(Seg::Name(t));
                    self.object(map, node, true);
                    self.path.pop();
                }
                None => self.issues.push(
                    Issue::error(IssueCode::Invalid, format!("{UNKNOWN_RESOURCE_TYPE} '{t}'"))
                        .at("resourceType"),
                ),
            },
            Some(other) => self.issues.push(
                Issue::error(
                    IssueCode::Invalid,
                    format!("resourceType must be a string, not {}", kind_of(other)),
                )
                .at("resourceType"),
            ),
            None => self.issues.push(Issue::error(
                IssueCode::Required,
                "The resource has no resourceType",
            )),
        }
    }

    /// A resource nested in another (`contained`, `Bundle.entry.resource`): its paths
    /// continue the outer path.
    fn nested_resource(&mut self, value: &'a Value) {
        let Value::Object(map) = value else {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!(
                    "{at} must be a resource (a JSON object), not {}",
                    kind_of(value)
                ),
            );
            return;
        };
        match map.get("resourceType") {
            Some(Value::String(t)) => match self.model.resource(t) {
                Some(node) => self.object(map, node, true),
                None => {
                    let at = self.path_string(None);
                    self.report_at(
                        Some("resourceType"),
                        IssueCode::Invalid,
                        format!("{at} has an unknown resource type '{t}'"),
                    );
                }
            },
            Some(other) => {
                let at = self.path_string(None);
                self.report_at(
                    Some("resourceType"),
                    IssueCode::Invalid,
                    format!("{at}.resourceType must be a string, not {}", kind_of(other)),
                );
            }
            None => {
                let at = self.path_string(None);
                self.report(
                    IssueCode::Required,
                    format!("The resource at {at} has no resourceType"),
                );
            }
        }
    }

    fn object(&mut self, map: &'a Map<String, Value>, node: &'m Node, resource_root: bool) {
        if self.too_deep() {
            return;
        }
        if map.is_empty() {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!("{at} is an empty object; FHIR JSON does not allow empty objects"),
            );
            return;
        }
        let mut present = Seen([0; MAX_ELEMS / 64]);
        let mut valued = Seen([0; MAX_ELEMS / 64]);
        for (key, value) in map {
            // `resourceType` names the type at a resource root; elsewhere it is an ordinary
            // property name (ExampleScenario.instance has an element called resourceType).
            if key == "resourceType" && resource_root {
                continue;
            }
            let (extension, name) = match key.strip_prefix('_') {
                Some(name) => (true, name),
                None => (false, key.as_str()),
            };
            let Some(&(ei, ti)) = node.lookup.get(name) else {
                self.unknown(key, node);
                continue;
            };
            let ei = usize::from(ei);
            let Some(elem) = node.elems.get(ei) else {
                continue;
            };
            let Some(&ty) = elem.types.get(usize::from(ti)) else {
                continue;
            };
            present.mark(ei);
            if !extension && valued.mark(ei) {
                self.report_at(
                    Some(key),
                    IssueCode::Structure,
                    format!(
                        "Only one type of the choice element {}.{}[x] may be present",
                        node.label, elem.name
                    ),
                );
            }
            self.path.push(Seg::Name(key));
            if extension {
                match ty {
                    Ty::Prim(_) => self.primitive_extension(value, elem, map.get(name)),
                    _ => {
                        self.path.pop();
                        self.unknown(key, node);
                        continue;
                    }
                }
            } else {
                self.element(value, elem, ty, map, name);
            }
            self.path.pop();
        }
        for &ri in &node.required {
            let ri = usize::from(ri);
            if present.has(ri) {
                continue;
            }
            if let Some(elem) = node.elems.get(ri) {
                let suffix = if elem.choice { "[x]" } else { "" };
                self.report_at(
                    Some(&elem.name),
                    IssueCode::Required,
                    format!(
                        "Missing required element {}.{}{suffix} (minimum cardinality {})",
                        node.label, elem.name, elem.min
                    ),
                );
            }
        }
    }

    fn unknown(&mut self, key: &str, node: &Node) {
        let msg = if key == "resourceType" {
            "resourceType is only allowed at the root of a resource".to_string()
        } else if key
            .strip_prefix('_')
            .is_some_and(|n| node.lookup.contains_key(n))
        {
            format!(
                "{key} is not allowed: {} is not a primitive element, so it has no '_' extension sibling",
                &key[1..]
            )
        } else if let Some(choice) = node
            .elems
            .iter()
            .find(|e| e.choice && key.starts_with(&*e.name))
        {
            format!(
                "'{key}' is not one of the allowed types of the choice element {}.{}[x]",
                node.label, choice.name
            )
        } else {
            format!("Unknown element '{key}' in {}", node.label)
        };
        self.report_at(Some(key), IssueCode::Structure, msg);
    }

    /// The value of one property (`name` is the property without `_`).
    fn element(
        &mut self,
        value: &'a Value,
        elem: &'m Elem,
        ty: Ty,
        map: &'a Map<String, Value>,
        name: &str,
    ) {
        if elem.many {
            let Value::Array(items) = value else {
                let at = self.path_string(None);
                self.report(
                    IssueCode::Structure,
                    format!(
                        "{at} must be a JSON array (maximum cardinality *), not {}",
                        kind_of(value)
                    ),
                );
                return;
            };
            if items.is_empty() {
                let at = self.path_string(None);
                self.report(
                    IssueCode::Structure,
                    format!("{at} is an empty array; FHIR JSON does not allow empty arrays"),
                );
                return;
            }
            for (i, item) in items.iter().enumerate() {
                self.path.push(Seg::Index(i));
                if item.is_null() {
                    // json.html#primitive: a null keeps the arrays of a primitive and of its
                    // extensions aligned, so it needs an extension at the same index.
                    let ext = match ty {
                        Ty::Prim(_) => map
                            .get(&format!("_{name}"))
                            .and_then(|e| e.get(i))
                            .is_some_and(|e| !e.is_null()),
                        _ => false,
                    };
                    if !ext {
                        let at = self.path_string(None);
                        self.report(
                            IssueCode::Structure,
                            format!("{at} is null; null is only allowed in a primitive array whose '_{name}' array has an extension at the same index"),
                        );
                    }
                } else {
                    self.single(item, ty, elem.binding.as_deref());
                }
                self.path.pop();
            }
        } else if let Value::Array(_) = value {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!("{at} must not be an array (maximum cardinality 1)"),
            );
        } else {
            self.single(value, ty, elem.binding.as_deref());
        }
    }

    /// One value of an element; `binding` is the ValueSet of its `required` binding.
    fn single(&mut self, value: &'a Value, ty: Ty, binding: Option<&str>) {
        if value.is_null() {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!("{at} is null; FHIR JSON does not allow null values"),
            );
            return;
        }
        match ty {
            Ty::Prim(p) => {
                if let Err(problem) = primitive::check(p, value) {
                    let at = self.path_string(None);
                    let (code, msg) = match problem {
                        Problem::Kind { expected } => (
                            IssueCode::Structure,
                            format!(
                                "{at} is a FHIR {} and must be {expected}, not {}",
                                p.name(),
                                kind_of(value)
                            ),
                        ),
                        Problem::Format(why) => (
                            IssueCode::Value,
                            format!(
                                "Invalid {} {} at {at}: the value {why}",
                                p.name(),
                                show(value)
                            ),
                        ),
                    };
                    self.report(code, msg);
                } else if let (Some(vs), Value::String(code)) = (binding, value) {
                    self.bound_code(vs, code);
                }
            }
            Ty::Node(n) => match (value, self.model.node(n)) {
                (Value::Object(m), Some(node)) => {
                    self.object(m, node, false);
                    if let Some(vs) = binding.filter(|_| &*node.label == "CodeableConcept") {
                        self.bound_concept(vs, m);
                    }
                }
                (_, Some(node)) => {
                    let at = self.path_string(None);
                    let label = node.label.clone();
                    self.report(
                        IssueCode::Structure,
                        format!(
                            "{at} is a {label} and must be a JSON object, not {}",
                            kind_of(value)
                        ),
                    );
                }
                (_, None) => {}
            },
            Ty::Resource => self.nested_resource(value),
        }
    }

    /// A `code` under a `required` binding must be in the ValueSet (FHIR R4 §4.1.5
    /// terminologies.html#required). Only a ValueSet whose complete expansion this binary
    /// has is checked: what cannot be checked exactly is never refused.
    fn bound_code(&mut self, value_set: &str, code: &str) {
        if terminology().has_code(value_set, None, code) == Some(false) {
            let at = self.path_string(None);
            self.report(
                IssueCode::CodeInvalid,
                format!(
                    "The code '{}' at {at} is not in the value set {value_set}, which its required binding demands",
                    code.escape_debug()
                ),
            );
        }
    }

    /// A CodeableConcept under a `required` binding needs a coding from the ValueSet
    /// (terminologies.html#required). It is refused only when every coding names a system
    /// and a code, so that none can be from the value set; a text-only concept, or one with
    /// a coding that cannot be looked up, is left alone.
    fn bound_concept(&mut self, value_set: &str, concept: &Map<String, Value>) {
        let Some(Value::Array(codings)) = concept.get("coding") else {
            return;
        };
        let mut pairs = Vec::with_capacity(codings.len());
        for c in codings {
            match (
                c.get("system").and_then(Value::as_str),
                c.get("code").and_then(Value::as_str),
            ) {
                (Some(system), Some(code)) => pairs.push((system, code)),
                _ => return,
            }
        }
        let t = terminology();
        let mut known = false;
        for (system, code) in &pairs {
            match t.has_code(value_set, Some(system), code) {
                Some(true) => return,
                Some(false) => known = true,
                None => return,
            }
        }
        if known {
            let at = self.path_string(None);
            let shown: Vec<String> = pairs.iter().map(|(s, c)| format!("{s}|{c}")).collect();
            self.report(
                IssueCode::CodeInvalid,
                format!(
                    "No coding of {at} ({}) is in the value set {value_set}, which its required binding demands",
                    shown.join(", ")
                ),
            );
        }
    }

    /// `_name`: the id and extensions of a primitive (json.html#primitive).
    fn primitive_extension(&mut self, value: &'a Value, elem: &'m Elem, primitive: Option<&Value>) {
        let Some(element_node) = self.model.node(self.model.element_node) else {
            return;
        };
        if !elem.many {
            match value {
                Value::Object(m) => self.object(m, element_node, false),
                _ => {
                    let at = self.path_string(None);
                    self.report(
                        IssueCode::Structure,
                        format!("{at} must be a JSON object holding the id and extensions of the primitive, not {}", kind_of(value)),
                    );
                }
            }
            return;
        }
        let Value::Array(items) = value else {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!(
                    "{at} must be a JSON array aligned with the primitive array, not {}",
                    kind_of(value)
                ),
            );
            return;
        };
        let values = primitive.and_then(Value::as_array);
        if let Some(values) = values {
            if values.len() != items.len() {
                let at = self.path_string(None);
                self.report(
                    IssueCode::Structure,
                    format!(
                        "{at} has {} entries but the primitive array has {}; they must be aligned",
                        items.len(),
                        values.len()
                    ),
                );
            }
        }
        if items.iter().all(Value::is_null) {
            let at = self.path_string(None);
            self.report(
                IssueCode::Structure,
                format!("{at} holds only nulls; FHIR JSON does not allow it"),
            );
            return;
        }
        for (i, item) in items.iter().enumerate() {
            self.path.push(Seg::Index(i));
            match item {
                Value::Object(m) => self.object(m, element_node, false),
                Value::Null => {
                    // With a primitive array, a null at the same index there is reported there.
                    if values.is_none() {
                        let at = self.path_string(None);
                        self.report(
                            IssueCode::Structure,
                            format!("{at} is null and the primitive has no value at this index"),
                        );
                    }
                }
                _ => {
                    let at = self.path_string(None);
                    self.report(
                        IssueCode::Structure,
                        format!("{at} must be a JSON object or null, not {}", kind_of(item)),
                    );
                }
            }
            self.path.pop();
        }
    }
}
