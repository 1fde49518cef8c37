//! FHIR R4 (4.0.1) definitions, vendored and embedded, and what can be computed from them alone:
//! validation of resource JSON, `_summary` and `_elements` views, OperationOutcome.
//! No IO beyond decompressing the embedded definitions; no HTTP, no storage.

mod model;
pub mod outcome;
mod primitive;
mod validate;
pub mod vendor;
mod view;

pub use outcome::{operation_outcome, Issue, IssueCode, Severity};
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

/// The embedded R4 definitions, decoded once on first use (about 6 ms in a release build:
/// gunzip 0.4 ms, JSON 2.3 ms, lookup tables 3 ms; see the ignored `decode_time` test).
pub fn r4() -> &'static Definitions {
    static DEFS: std::sync::OnceLock<Definitions> = std::sync::OnceLock::new();
    DEFS.get_or_init(|| {
        // The embedded model is checked against the official bundles by tests/vendored.rs
        // and decoded by every test, so a failure here is a build defect, not an input error.
        let json = vendor::embedded_model_json()
            .unwrap_or_else(|e| panic!("embedded R4 model is corrupt: {e}"));
        let compact = vendor::parse_model(&json)
            .unwrap_or_else(|e| panic!("embedded R4 model is corrupt: {e}"));
        let model = model::build(&compact)
            .unwrap_or_else(|e| panic!("embedded R4 model is inconsistent: {e}"));
        Definitions { model }
    })
}

impl Definitions {
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

    /// The `_summary` view of a resource. `True`, `Text` and `Data` are subsets and carry the
    /// `SUBSETTED` tag in `meta.tag`; `False` and `Count` return the resource as is.
    pub fn summarize(&self, resource: &Value, mode: Summary) -> Value {
        view::summarize(&self.model, resource, mode)
    }

    /// The `_elements` view of a resource: `resourceType`, `id`, `meta` and the listed
    /// top-level elements (`value` selects `valueQuantity`), tagged `SUBSETTED`.
    pub fn select_elements(&self, resource: &Value, elements: &[String]) -> Value {
        view::select_elements(&self.model, resource, elements)
    }
}

#[cfg(test)]
mod tests {
    /// Prints the startup cost of `r4()` (best of 20): `cargo test --release -p fhir-model
    /// -- --ignored --nocapture decode_time`. Not an assertion: timings vary by machine.
    #[test]
    #[ignore]
    fn decode_time() {
        let mut best = [std::time::Duration::MAX; 3];
        for _ in 0..20 {
            let t = std::time::Instant::now();
            let json = crate::vendor::embedded_model_json().unwrap();
            let a = t.elapsed();
            let compact = crate::vendor::parse_model(&json).unwrap();
            let b = t.elapsed();
            let model = crate::model::build(&compact).unwrap();
            let c = t.elapsed();
            std::mem::forget(model);
            for (best, d) in best.iter_mut().zip([a, b - a, c - b]) {
                *best = (*best).min(d);
            }
        }
        println!(
            "gunzip {:?}, parse {:?}, build {:?}",
            best[0], best[1], best[2]
        );
    }
}
