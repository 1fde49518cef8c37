//! Constraint profiles: a `StructureDefinition` with `derivation: constraint` read into the
//! rules `$validate?profile=…` checks on top of the base R4 validation (FHIR R4
//! profiling.html, elementdefinition.html). What is checked, element by element of the
//! differential (or, without one, the snapshot):
//! - cardinality (`min`, `max`), counted within each instance of the parent element;
//! - `fixed[x]` (the value must be exactly it) and `pattern[x]` (the value must contain it:
//!   every property of the pattern, arrays item by item in any order);
//! - `binding` to a ValueSet whose complete expansion is embedded ([`crate::terminology`]):
//!   `required` is an error, `extensible` a warning for a code outside it; a ValueSet this
//!   binary cannot expand is a warning that the binding was not checked.
//!
//! `mustSupport` is ignored (it binds systems, not instances). Slices (`sliceName`, `:` in an
//! element id), type profiles, invariants (`constraint`) and references are not checked: each
//! slice is reported once as a warning, so that a caller is never told a resource conforms to
//! rules that were skipped. Pure: no IO.

use serde_json::{Map, Value};

use crate::outcome::{Issue, IssueCode, Severity};
use crate::terminology::terminology;

/// A binding's strength (FHIR R4 valueset-binding-strength).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strength {
    Required,
    Extensible,
    Other,
}

/// The rules of one element of a profile.
#[derive(Debug, Clone)]
struct Rule {
    /// `Patient.identifier.system`, as the element's `path` says it.
    path: Vec<String>,
    min: Option<u64>,
    /// `None`: unbounded (`*`) or not said.
    max: Option<u64>,
    fixed: Option<(String, Value)>,
    pattern: Option<(String, Value)>,
    binding: Option<(Strength, String)>,
}

/// A constraint profile, ready to check resources with.
#[derive(Debug, Clone)]
pub struct Profile {
    pub url: String,
    /// The resource type it constrains.
    pub resource_type: String,
    rules: Vec<Rule>,
    /// Element ids of slices, reported as not checked.
    skipped: Vec<String>,
}

impl Profile {
    /// Reads a StructureDefinition; why not, when it is no constraint profile of a resource.
    pub fn parse(sd: &Value) -> Result<Profile, String> {
        let text = |k: &str| sd.get(k).and_then(Value::as_str);
        if text("resourceType") != Some("StructureDefinition") {
            return Err("a profile must be a StructureDefinition".into());
        }
        let url = text("url").ok_or("the StructureDefinition has no url")?;
        let rtype = text("type").ok_or("the StructureDefinition has no type")?;
        if text("kind") != Some("resource") {
            return Err(format!(
                "{url} does not profile a resource (kind is not 'resource')"
            ));
        }
        if text("derivation") != Some("constraint") {
            return Err(format!(
                "{url} is not a constraint profile (derivation is not 'constraint')"
            ));
        }
        let elements = sd
            .pointer("/differential/element")
            .or_else(|| sd.pointer("/snapshot/element"))
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{url} has no differential or snapshot elements"))?;
        let mut rules = Vec::new();
        let mut skipped = Vec::new();
        for e in elements {
            let Some(path) = e.get("path").and_then(Value::as_str) else {
                return Err(format!("{url}: an element has no path"));
            };
            let id = e.get("id").and_then(Value::as_str).unwrap_or(path);
            if e.get("sliceName").is_some() || id.contains(':') {
                skipped.push(id.to_owned());
                continue;
            }
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            if path.first().map(String::as_str) != Some(rtype) {
                return Err(format!("{url}: element {id} is not on {rtype}"));
            }
            let max = match e.get("max").and_then(Value::as_str) {
                None | Some("*") => None,
                Some(m) => Some(
                    m.parse()
                        .map_err(|_| format!("{url}: element {id} has max '{m}'"))?,
                ),
            };
            let prefixed = |prefix: &str| {
                e.as_object().and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.starts_with(prefix) && k.len() > prefix.len())
                        .map(|(k, v)| (k.clone(), v.clone()))
                })
            };
            let binding = e.get("binding").and_then(|b| {
                let vs = b.get("valueSet").and_then(Value::as_str)?;
                let strength = match b.get("strength").and_then(Value::as_str) {
                    Some("required") => Strength::Required,
                    Some("extensible") => Strength::Extensible,
                    _ => Strength::Other,
                };
                Some((strength, vs.to_owned()))
            });
            rules.push(Rule {
                path,
                min: e.get("min").and_then(Value::as_u64),
                max,
                fixed: prefixed("fixed"),
                pattern: prefixed("pattern"),
                binding,
            });
        }
        Ok(Profile {
            url: url.to_owned(),
            resource_type: rtype.to_owned(),
            rules,
            skipped,
        })
    }

    /// The issues of `resource` against this profile, each with its element's path
    /// (`Patient.identifier[0].system`).
    pub fn check(&self, resource: &Value) -> Vec<Issue> {
        let mut issues = Vec::new();
        let rtype = resource.get("resourceType").and_then(Value::as_str);
        if rtype != Some(self.resource_type.as_str()) {
            issues.push(issue(
                Severity::Error,
                IssueCode::Invalid,
                format!(
                    "the profile {} is for {}, not {}",
                    self.url,
                    self.resource_type,
                    rtype.unwrap_or("a resource without resourceType")
                ),
                None,
            ));
            return issues;
        }
        for rule in &self.rules {
            self.check_rule(rule, resource, &mut issues);
        }
        for id in &self.skipped {
            issues.push(issue(
                Severity::Warning,
                IssueCode::NotSupported,
                format!(
                    "the slice {id} of {} was not checked: slicing is not supported here",
                    self.url
                ),
                None,
            ));
        }
        issues
    }

    fn check_rule(&self, rule: &Rule, resource: &Value, issues: &mut Vec<Issue>) {
        let (parent, last) = rule.path.split_at(rule.path.len().saturating_sub(1));
        let Some(last) = last.first() else { return };
        if parent.is_empty() {
            // The root element: nothing to count.
            return;
        }
        for (at, node) in nodes(resource, &parent[0], &parent[1..]) {
            let found = children(node, &at, last);
            let n = found.len() as u64;
            let here = rule.path.join(".");
            if let Some(min) = rule.min.filter(|m| n < *m) {
                issues.push(issue(
                    Severity::Error,
                    IssueCode::Required,
                    format!(
                        "{here}: at least {min} required by the profile {}, found {n}",
                        self.url
                    ),
                    Some(format!("{at}.{}", plain(last))),
                ));
            }
            if let Some(max) = rule.max.filter(|m| n > *m) {
                issues.push(issue(
                    Severity::Error,
                    IssueCode::Structure,
                    format!(
                        "{here}: at most {max} allowed by the profile {}, found {n}",
                        self.url
                    ),
                    Some(format!("{at}.{}", plain(last))),
                ));
            }
            for (path, value) in &found {
                if let Some((key, fixed)) = &rule.fixed {
                    if *value != fixed {
                        issues.push(issue(
                            Severity::Error,
                            IssueCode::Value,
                            format!(
                                "{here} must be exactly {} ({key} of the profile {}), not {}",
                                fixed, self.url, value
                            ),
                            Some(path.clone()),
                        ));
                    }
                }
                if let Some((key, pattern)) = &rule.pattern {
                    if !contains(value, pattern) {
                        issues.push(issue(
                            Severity::Error,
                            IssueCode::Value,
                            format!(
                                "{here} must match {} ({key} of the profile {})",
                                pattern, self.url
                            ),
                            Some(path.clone()),
                        ));
                    }
                }
                if let Some((strength, vs)) = &rule.binding {
                    self.check_binding(*strength, vs, &here, path, value, issues);
                }
            }
        }
    }

    fn check_binding(
        &self,
        strength: Strength,
        vs: &str,
        here: &str,
        path: &str,
        value: &Value,
        issues: &mut Vec<Issue>,
    ) {
        let severity = match strength {
            Strength::Required => Severity::Error,
            Strength::Extensible => Severity::Warning,
            Strength::Other => return,
        };
        let codes = codings(value);
        if codes.is_empty() {
            return;
        }
        let t = terminology();
        let mut known = None;
        for (system, code) in &codes {
            match t.has_code(vs, system.as_deref(), code) {
                Some(true) => return,
                Some(false) => known = Some(false),
                None => {}
            }
        }
        if known.is_none() {
            issues.push(issue(
                Severity::Warning,
                IssueCode::NotSupported,
                format!("{here}: the binding to {vs} was not checked: this server has no complete expansion of it"),
                Some(path.to_owned()),
            ));
            return;
        }
        let shown: Vec<String> = codes
            .iter()
            .map(|(s, c)| match s {
                Some(s) => format!("{s}|{c}"),
                None => c.clone(),
            })
            .collect();
        issues.push(issue(
            severity,
            IssueCode::CodeInvalid,
            format!(
                "{here}: {} is not in the value set {vs} (a {} binding of the profile {})",
                shown.join(", "),
                if strength == Strength::Required {
                    "required"
                } else {
                    "extensible"
                },
                self.url
            ),
            Some(path.to_owned()),
        ));
    }
}

fn issue(
    severity: Severity,
    code: IssueCode,
    diagnostics: String,
    expression: Option<String>,
) -> Issue {
    Issue {
        severity,
        code,
        diagnostics,
        expression,
    }
}

/// `value[x]` → `value`.
fn plain(name: &str) -> &str {
    name.strip_suffix("[x]").unwrap_or(name)
}

/// The instances of `root.rest…` in `resource`, with their paths.
fn nodes<'v>(resource: &'v Value, root: &str, rest: &[String]) -> Vec<(String, &'v Value)> {
    let mut current = vec![(root.to_owned(), resource)];
    for seg in rest {
        let mut next = Vec::new();
        for (at, node) in &current {
            next.extend(children(node, at, seg));
        }
        current = next;
    }
    current
}

/// The values of element `name` of `node` (at `at`), each with its path; `name[x]` matches
/// every choice (`valueQuantity`, `valueString`, …).
fn children<'v>(node: &'v Value, at: &str, name: &str) -> Vec<(String, &'v Value)> {
    let Some(obj) = node.as_object() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |key: &str, v: &'v Value| match v {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                out.push((format!("{at}.{key}[{i}]"), item));
            }
        }
        other => out.push((format!("{at}.{key}"), other)),
    };
    match name.strip_suffix("[x]") {
        Some(stem) => {
            for (k, v) in obj {
                let choice = k
                    .strip_prefix(stem)
                    .is_some_and(|t| t.starts_with(|c: char| c.is_ascii_uppercase()));
                if choice {
                    push(k, v);
                }
            }
        }
        None => {
            if let Some(v) = obj.get(name) {
                push(name, v);
            }
        }
    }
    out
}

/// Whether `value` has everything `pattern` has (FHIR R4 elementdefinition pattern[x]).
fn contains(value: &Value, pattern: &Value) -> bool {
    match (value, pattern) {
        (Value::Object(v), Value::Object(p)) => p
            .iter()
            .all(|(k, pv)| v.get(k).is_some_and(|vv| contains(vv, pv))),
        (Value::Array(v), Value::Array(p)) => {
            p.iter().all(|pi| v.iter().any(|vi| contains(vi, pi)))
        }
        // A repeating element's item against a pattern of one item.
        (Value::Array(v), p) => v.iter().any(|vi| contains(vi, p)),
        (v, p) => v == p,
    }
}

/// The (system, code) pairs of a `code`, `Coding` or `CodeableConcept`.
fn codings(value: &Value) -> Vec<(Option<String>, String)> {
    let one = |c: &Map<String, Value>| {
        c.get("code").and_then(Value::as_str).map(|code| {
            (
                c.get("system").and_then(Value::as_str).map(str::to_owned),
                code.to_owned(),
            )
        })
    };
    match value {
        Value::String(code) => vec![(None, code.clone())],
        Value::Object(o) => match o.get("coding").and_then(Value::as_array) {
            Some(list) => list
                .iter()
                .filter_map(Value::as_object)
                .filter_map(one)
                .collect(),
            None => one(o).into_iter().collect(),
        },
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile() -> Profile {
        Profile::parse(&json!({
            "resourceType": "StructureDefinition",
            "url": "http://example.org/StructureDefinition/mrn-patient",
            "kind": "resource",
            "derivation": "constraint",
            "type": "Patient",
            "differential": {"element": [
                {"id": "Patient", "path": "Patient"},
                {"id": "Patient.identifier", "path": "Patient.identifier", "min": 1, "mustSupport": true},
                {"id": "Patient.identifier.system", "path": "Patient.identifier.system", "min": 1,
                 "fixedUri": "http://hospital.example.org/mrn"},
                {"id": "Patient.gender", "path": "Patient.gender", "min": 1,
                 "binding": {"strength": "required", "valueSet": "http://hl7.org/fhir/ValueSet/administrative-gender|4.0.1"}},
                {"id": "Patient.maritalStatus", "path": "Patient.maritalStatus",
                 "patternCodeableConcept": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"}]}},
                {"id": "Patient.name", "path": "Patient.name", "max": "1"},
                {"id": "Patient.deceased[x]", "path": "Patient.deceased[x]", "max": "0"},
                {"id": "Patient.identifier:mrn", "path": "Patient.identifier", "sliceName": "mrn"}
            ]}
        }))
        .expect("a constraint profile")
    }

    fn errors(issues: &[Issue]) -> Vec<(String, String)> {
        issues
            .iter()
            .filter(|i| i.severity == Severity::Error)
            .map(|i| {
                (
                    i.code.as_str().to_owned(),
                    i.expression.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    #[test]
    fn a_conforming_patient_has_no_errors_and_the_slice_is_named_as_unchecked() {
        let issues = profile().check(&json!({"resourceType": "Patient",
            "identifier": [{"system": "http://hospital.example.org/mrn", "value": "1"}],
            "gender": "female", "name": [{"family": "A"}],
            "maritalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus", "code": "M"}]}}));
        assert!(errors(&issues).is_empty(), "{issues:?}");
        assert!(issues
            .iter()
            .any(|i| i.severity == Severity::Warning
                && i.diagnostics.contains("Patient.identifier:mrn")));
    }

    #[test]
    fn each_rule_is_reported_at_its_path() {
        let p = profile();
        let e = errors(&p.check(&json!({"resourceType": "Patient", "gender": "female"})));
        assert_eq!(
            e,
            [("required".to_owned(), "Patient.identifier".to_owned())]
        );
        let e = errors(&p.check(&json!({"resourceType": "Patient",
            "identifier": [{"system": "http://hospital.example.org/mrn"}, {"value": "x"}, {"system": "urn:other"}],
            "gender": "unknown-gender", "name": [{}, {}], "deceasedBoolean": false,
            "maritalStatus": {"coding": [{"system": "urn:other", "code": "M"}]}})));
        assert_eq!(
            e,
            [
                (
                    "required".to_owned(),
                    "Patient.identifier[1].system".to_owned()
                ),
                (
                    "value".to_owned(),
                    "Patient.identifier[2].system".to_owned()
                ),
                ("code-invalid".to_owned(), "Patient.gender".to_owned()),
                ("value".to_owned(), "Patient.maritalStatus".to_owned()),
                ("structure".to_owned(), "Patient.name".to_owned()),
                ("structure".to_owned(), "Patient.deceased".to_owned()),
            ]
        );
        let e = errors(&p.check(&json!({"resourceType": "Observation"})));
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn what_is_no_constraint_profile_is_refused() {
        for sd in [
            json!({"resourceType": "Patient"}),
            json!({"resourceType": "StructureDefinition", "url": "u", "type": "Patient", "kind": "resource", "derivation": "specialization", "differential": {"element": []}}),
            json!({"resourceType": "StructureDefinition", "url": "u", "type": "HumanName", "kind": "complex-type", "derivation": "constraint", "differential": {"element": []}}),
            json!({"resourceType": "StructureDefinition", "url": "u", "type": "Patient", "kind": "resource", "derivation": "constraint"}),
            json!({"resourceType": "StructureDefinition", "url": "u", "type": "Patient", "kind": "resource", "derivation": "constraint", "differential": {"element": [{"path": "Observation.code"}]}}),
        ] {
            assert!(Profile::parse(&sd).is_err(), "{sd}");
        }
    }
}
