//! FHIR R4 (4.0.1) definitions, vendored and embedded, and what can be computed from them alone:
//! parsing (duplicate keys refused) and validation of resource JSON, constraint profiles
//! (`profile`: a stored StructureDefinition's cardinality, fixed and pattern values and
//! bindings), `_summary` and `_elements` views, OperationOutcome.
//! No IO beyond decompressing the embedded definitions; no HTTP, no storage.

pub mod json;
mod model;
pub mod outcome;
mod primitive;
pub mod profile;
pub mod terminology;
mod validate;
pub mod vendor;
mod view;

pub use outcome::{operation_outcome, Issue, IssueCode, Severity};
pub use terminology::terminology;
pub use vendor::search_parameters_bundle;

use serde_json::Value;

/// `_summary` modes (FHIR R4 §3.1.1.5.10 search.html#summary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    True,
    Text,
    Data,
    Count,
    False,
}

/// The R4 definitions known to this binary.
pub struct Definitions {
    model: model::Model,
}

/// The embedded R4 definitions, decoded once on first use (a few ms; `cargo bench -p
/// fhir-model` measures it).
pub fn r4() -> &'static Definitions {
    static DEFS: std::sync::OnceLock<Definitions> = std::sync::OnceLock::new();
    DEFS.get_or_init(|| {
        // The embedded model is checked against the official bundles by tests/vendored.rs
        // and decoded by every test, so a failure here is a build defect, not an input error.
        Definitions::decode().unwrap_or_else(|e| panic!("embedded R4 model is unusable: {e}"))
    })
}

impl Definitions {
    /// Decodes the embedded definitions (what [`r4`] does once).
    pub fn decode() -> Result<Definitions, String> {
        let json = vendor::embedded_model_json().map_err(|e| e.to_string())?;
        let compact = vendor::parse_model(&json).map_err(|e| e.to_string())?;
        let model = model::build(&compact).map_err(|e| e.to_string())?;
        Ok(Definitions { model })
    }

    /// The 146 concrete resource type names, sorted.
    pub fn resource_types(&self) -> &[String] {
        &self.model.resource_types
    }

    pub fn is_resource_type(&self, name: &str) -> bool {
        self.model.resources.contains_key(name)
    }

    /// Validates a resource against its StructureDefinition; empty when valid.
    ///
    /// Every issue has severity error and an `expression` locating the problem
    /// (`Patient.name[1].given[0]`). An unknown root `resourceType` gives exactly one issue,
    /// recognised by [`Issue::is_unknown_resource_type`].
    pub fn validate(&self, resource: &Value) -> Vec<Issue> {
        validate::validate(&self.model, resource)
    }

    /// Whether the element at a dotted property path (`Patient.name.given`,
    /// `Observation.component.valueQuantity`) repeats (`max = "*"`); `None` when the path names
    /// no element. FHIRPath Patch asks this to know whether `add` makes a list.
    pub fn is_repeating(&self, path: &str) -> Option<bool> {
        let mut parts = path.split('.');
        let mut node = self.model.resource(parts.next()?)?;
        let mut parts = parts.peekable();
        while let Some(property) = parts.next() {
            let (elem, ty) = node.get(property)?;
            if parts.peek().is_none() {
                return Some(elem.many);
            }
            node = match ty {
                model::Ty::Node(n) => self.model.node(n)?,
                _ => return None,
            };
        }
        None
    }

    /// The `_summary` view of a resource. `True` (summary elements, mandatory elements and
    /// modifiers, at every level of backbone elements), `Text` (`text`, `id`, `meta` and the
    /// top-level mandatory elements) and `Data` (all but `text`) are subsets and carry the
    /// `SUBSETTED` tag in `meta.tag`; `False` and `Count` return the resource as is.
    pub fn summarize(&self, resource: &Value, mode: Summary) -> Value {
        view::summarize(&self.model, resource, mode)
    }

    /// The `_elements` view of a resource: `resourceType`, `id`, `meta`, the listed
    /// top-level elements (`value` selects `valueQuantity`) and the top-level mandatory
    /// elements and modifiers (`Observation?_elements=code` keeps `status`), tagged
    /// `SUBSETTED`.
    pub fn select_elements(&self, resource: &Value, elements: &[String]) -> Value {
        view::select_elements(&self.model, resource, elements)
    }
}
