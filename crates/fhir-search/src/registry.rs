//! The SearchParameter registry: every R4 search parameter of every resource type, built once
//! from the official SearchParameter Bundle embedded in `fhir-model`.
//!
//! Parameters based on `Resource` (`_id`, `_lastUpdated`, `_tag`, `_profile`, `_security`,
//! `_source`) apply to every type. A shared expression such as
//! `AllergyIntolerance.code | Condition.code | Observation.code` is cut down, per type, to the
//! branches that can match that type, and parsed once: extraction never re-parses FHIRPath.
//! Each (type, code) pair gets a small stable number, its position in the sorted list, which the
//! store uses as the key of its index rows.

use std::collections::HashMap;

use serde_json::Value;

/// The type of a search parameter (FHIR R4 §3.1.1.4 search.html#ptypes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    pub fn from_code(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
            ParamType::Special => "special",
        }
    }
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct SearchParam {
    /// Stable number of the (type, code) pair: the key of index rows.
    pub id: u32,
    pub rtype: String,
    pub code: String,
    pub kind: ParamType,
    pub url: String,
    pub description: String,
    /// The expression as it applies to `rtype` (other types' branches removed).
    pub expression: String,
    /// Target types of a reference parameter.
    pub targets: Vec<String>,
    /// For a composite, the codes of its component parameters on the same type.
    pub components: Vec<String>,
    /// For a composite, whether its expression selects the resource itself and nothing else
    /// (`Observation` for `code-value-quantity`): it then has one tuple per resource, and its
    /// components are matched on their own parameters' index rows. Any other composite (over
    /// `Observation.component`, `useContext`, …) is indexed tuple by tuple ([`component_param`]).
    pub whole_resource: bool,
    /// The expression as parsed; for a composite, the one that selects its tuples.
    pub(crate) compiled: Option<fhir_path::Expr>,
    /// For a composite, each component's expression, relative to a tuple
    /// (`SearchParameter.component.expression`).
    pub(crate) component_exprs: Vec<Option<fhir_path::Expr>>,
}

/// The index key of component `i` of composite parameter `composite` (a registry number):
/// tuple rows are kept under it, beside the rows of ordinary parameters, with the tuple's
/// number in their group (FHIR R4 §3.1.1.4.8: the components must match within one tuple).
pub fn component_param(composite: u32, i: usize) -> u32 {
    let i = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
    composite.saturating_add(i.saturating_mul(COMPONENT_STRIDE))
}

/// Registry numbers stay below this; component keys are above it.
const COMPONENT_STRIDE: u32 = 1 << 20;

/// Every search parameter, by type and code.
#[derive(Debug)]
pub struct Registry {
    params: Vec<SearchParam>,
    by_key: HashMap<(String, String), usize>,
    by_type: HashMap<String, Vec<usize>>,
}

/// The registry of the embedded R4 definitions, built on first use.
pub fn registry() -> &'static Registry {
    static REG: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REG.get_or_init(|| Registry::build(&fhir_model::search_parameters_bundle()))
}

impl Registry {
    /// Builds the registry from a SearchParameter Bundle. Entries that do not make sense
    /// (no code, unknown type) are skipped.
    pub fn build(bundle: &Value) -> Registry {
        let types: Vec<String> = fhir_model::r4().resource_types().to_vec();
        let type_set: std::collections::HashSet<&str> = types.iter().map(String::as_str).collect();
        let mut raw: Vec<SearchParam> = Vec::new();
        let mut url_code: HashMap<String, String> = HashMap::new();
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for e in &entries {
            let Some(sp) = e.get("resource") else {
                continue;
            };
            let code = sp.get("code").and_then(Value::as_str).unwrap_or_default();
            let Some(kind) = sp
                .get("type")
                .and_then(Value::as_str)
                .and_then(ParamType::from_code)
            else {
                continue;
            };
            if code.is_empty() {
                continue;
            }
            let url = str_of(sp, "url");
            url_code.insert(url.clone(), code.to_string());
            let expression = str_of(sp, "expression");
            let description = str_of(sp, "description");
            let targets: Vec<String> = strs_of(sp, "target");
            // (definition URL, relative expression) of each component.
            let parts: Vec<(String, String)> = sp
                .get("component")
                .and_then(Value::as_array)
                .map(|cs| {
                    cs.iter()
                        .map(|c| (str_of(c, "definition"), str_of(c, "expression")))
                        .collect()
                })
                .unwrap_or_default();
            let components: Vec<String> = parts.iter().map(|(d, _)| d.clone()).collect();
            let component_exprs: Vec<Option<fhir_path::Expr>> = parts
                .iter()
                .map(|(_, e)| fhir_path::parse(e).ok())
                .collect();
            for base in strs_of(sp, "base") {
                let applies: Vec<&String> = match base.as_str() {
                    "Resource" => types.iter().collect(),
                    "DomainResource" => types
                        .iter()
                        .filter(|t| !matches!(t.as_str(), "Bundle" | "Binary" | "Parameters"))
                        .collect(),
                    b if type_set.contains(b) => types.iter().filter(|t| *t == b).collect(),
                    _ => Vec::new(),
                };
                for t in applies {
                    let expr = narrow_expression(&expression, t, &type_set);
                    raw.push(SearchParam {
                        id: 0,
                        rtype: t.clone(),
                        code: code.to_string(),
                        kind,
                        url: url.clone(),
                        description: description.clone(),
                        expression: expr,
                        targets: targets.clone(),
                        components: components.clone(),
                        whole_resource: false,
                        compiled: None,
                        component_exprs: component_exprs.clone(),
                    });
                }
            }
        }
        raw.sort_by(|a, b| (&a.rtype, &a.code).cmp(&(&b.rtype, &b.code)));
        raw.dedup_by(|a, b| a.rtype == b.rtype && a.code == b.code);
        let mut by_key = HashMap::new();
        let mut by_type: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in raw.iter_mut().enumerate() {
            p.id = u32::try_from(i + 1).unwrap_or(u32::MAX);
            let codes: Option<Vec<String>> = p
                .components
                .iter()
                .map(|u| url_code.get(u).cloned())
                .collect();
            p.components = codes.unwrap_or_default();
            if !p.expression.is_empty() {
                p.compiled = fhir_path::parse(&p.expression).ok();
            }
            if p.kind == ParamType::Composite
                && (p.components.is_empty() || p.components.len() != p.component_exprs.len())
            {
                // A component that names no known parameter: the composite cannot be searched.
                p.compiled = None;
            }
            p.whole_resource = p.kind == ParamType::Composite && p.expression.trim() == p.rtype;
            by_key.insert((p.rtype.clone(), p.code.clone()), i);
            by_type.entry(p.rtype.clone()).or_default().push(i);
        }
        Registry {
            params: raw,
            by_key,
            by_type,
        }
    }

    /// The parameter `code` of `rtype`.
    pub fn get(&self, rtype: &str, code: &str) -> Option<&SearchParam> {
        self.by_key
            .get(&(rtype.to_string(), code.to_string()))
            .map(|&i| &self.params[i])
    }

    /// The parameter with this stable number.
    pub fn by_id(&self, id: u32) -> Option<&SearchParam> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        self.params.get(i)
    }

    /// Every parameter of `rtype`, sorted by code.
    pub fn for_type<'a>(&'a self, rtype: &str) -> impl Iterator<Item = &'a SearchParam> + 'a {
        self.by_type
            .get(rtype)
            .map(|v| v.as_slice())
            .unwrap_or_default()
            .iter()
            .map(|&i| &self.params[i])
    }

    /// Every parameter of every type.
    pub fn all(&self) -> &[SearchParam] {
        &self.params
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn strs_of(v: &Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Keeps the top-level `|` branches of `expr` that can apply to `rtype`: those that start with
/// `rtype` (or `Resource`, rewritten to `rtype`) or with no resource type at all.
fn narrow_expression(expr: &str, rtype: &str, types: &std::collections::HashSet<&str>) -> String {
    let branches = split_top_level(expr);
    let kept: Vec<String> = branches
        .into_iter()
        .filter_map(|b| {
            let b = b.trim();
            let inner = b.trim_start_matches('(');
            let head: String = inner
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            if head == "Resource" || head == "DomainResource" {
                let at = b.len() - inner.len();
                Some(format!("{}{}{}", &b[..at], rtype, &inner[head.len()..]))
            } else if head == rtype || !types.contains(head.as_str()) {
                Some(b.to_string())
            } else {
                None
            }
        })
        .collect();
    kept.join(" | ")
}

/// Splits on `|` outside parentheses and string literals.
fn split_top_level(expr: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0_i32;
    let mut in_str = false;
    let mut start = 0;
    for (i, c) in expr.char_indices() {
        match c {
            '\'' => in_str = !in_str,
            '(' if !in_str => depth += 1,
            ')' if !in_str => depth -= 1,
            '|' if !in_str && depth == 0 => {
                out.push(&expr[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&expr[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_expressions_are_narrowed_per_type() {
        let reg = registry();
        let code = reg.get("Observation", "code").unwrap();
        assert_eq!(code.expression, "Observation.code");
        assert_eq!(code.kind, ParamType::Token);
        let id = reg.get("Patient", "_id").unwrap();
        assert_eq!(id.expression, "Patient.id");
        assert!(reg.get("Bundle", "_text").is_none());
        let cvq = reg.get("Observation", "code-value-quantity").unwrap();
        assert_eq!(cvq.components, vec!["code", "value-quantity"]);
        assert!(cvq.whole_resource);
        let component = reg
            .get("Observation", "component-code-value-quantity")
            .unwrap();
        assert!(!component.whole_resource);
        assert_eq!(component.component_exprs.len(), 2);
        assert!(component.component_exprs.iter().all(Option::is_some));
        let combo = reg.get("Observation", "combo-code-value-quantity").unwrap();
        assert!(!combo.whole_resource);
        assert!(reg.all().len() < COMPONENT_STRIDE as usize);
    }

    #[test]
    fn every_expression_parses() {
        let reg = registry();
        let failed: Vec<_> = reg
            .all()
            .iter()
            .filter(|p| {
                (!p.expression.is_empty() && p.compiled.is_none())
                    || p.component_exprs.iter().any(Option::is_none)
            })
            .map(|p| format!("{}.{}: {}", p.rtype, p.code, p.expression))
            .collect();
        assert!(failed.is_empty(), "{failed:#?}");
    }
}
