//! Compartments (FHIR R4 compartmentdefinition.html): which reference parameters put a
//! resource in the compartment of a Patient, Encounter, RelatedPerson, Practitioner or Device.
//!
//! The five official CompartmentDefinitions are vendored in `data/compartments.json`, reduced
//! to `{compartment: {resource type: [parameter codes]}}` (generated from
//! `shared/data/fhir-r4-core/compartments`), and embedded.

use std::collections::HashMap;

type Table = HashMap<String, HashMap<String, Vec<String>>>;

fn table() -> &'static Table {
    static T: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        serde_json::from_str(include_str!("../data/compartments.json")).unwrap_or_default()
    })
}

/// Whether `code` names a compartment (`Patient`, `Encounter`, …).
pub fn is_compartment(code: &str) -> bool {
    table().contains_key(code)
}

/// The parameters of `rtype` that link it to a `compartment`; empty when `rtype` is not in it.
pub fn params(compartment: &str, rtype: &str) -> Vec<String> {
    table()
        .get(compartment)
        .and_then(|c| c.get(rtype))
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn patient_compartment() {
        assert!(super::is_compartment("Patient"));
        assert_eq!(
            super::params("Patient", "Observation"),
            ["subject", "performer"]
        );
        assert!(super::params("Patient", "Organization").is_empty());
    }
}
