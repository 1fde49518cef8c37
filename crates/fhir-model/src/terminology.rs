//! The terminology this binary knows without a terminology server: the complete expansions of
//! the R4 ValueSets (the official `hl7.fhir.r4.expansions` package) and the is-a hierarchies of
//! the CodeSystems defined in R4 itself, vendored compressed in `data/` and embedded. Token
//! searches with `:in`, `:not-in`, `:below` and `:above` (FHIR R4 §3.1.1.4.4) are answered
//! from it; a ValueSet whose published expansion is partial (SNOMED CT, LOINC, RxNorm ones) or
//! a code system without a known hierarchy is reported as unknown rather than guessed.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The embedded file in `data/`.
pub const TERMINOLOGY_FILE: &str = "r4-terminology.json.gz";

static TERMINOLOGY_GZ: &[u8] = include_bytes!("../data/r4-terminology.json.gz");

/// The vendored form: sorted maps, so that regenerating gives the same bytes.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CompactTerminology {
    /// ValueSet canonical URL → code system → codes, for complete expansions only.
    pub value_sets: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    /// CodeSystem URL → code → the codes it is directly below (is-a).
    pub hierarchies: BTreeMap<String, BTreeMap<String, Vec<String>>>,
}

/// The vendored terminology, indexed for lookups.
#[derive(Debug, Default)]
pub struct Terminology {
    value_sets: HashMap<String, Vec<(String, String)>>,
    /// ValueSet → code → the systems it is in, for membership checks on writes.
    members: HashMap<String, HashMap<String, Vec<String>>>,
    parents: HashMap<String, HashMap<String, Vec<String>>>,
    children: HashMap<String, HashMap<String, Vec<String>>>,
}

/// The embedded terminology, decoded once on first use. Empty only if the embedded copy were
/// corrupt, which `tests/vendored.rs` rules out.
pub fn terminology() -> &'static Terminology {
    static TERMINOLOGY: std::sync::OnceLock<Terminology> = std::sync::OnceLock::new();
    TERMINOLOGY.get_or_init(|| {
        crate::vendor::gunzip(TERMINOLOGY_GZ)
            .ok()
            .and_then(|json| serde_json::from_slice::<CompactTerminology>(&json).ok())
            .map(Terminology::from_compact)
            .unwrap_or_default()
    })
}

impl Terminology {
    pub fn from_compact(c: CompactTerminology) -> Terminology {
        let mut members: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        for (url, systems) in &c.value_sets {
            let codes = members.entry(url.clone()).or_default();
            for (system, list) in systems {
                for code in list {
                    codes.entry(code.clone()).or_default().push(system.clone());
                }
            }
        }
        let value_sets = c
            .value_sets
            .into_iter()
            .map(|(url, systems)| {
                let codes = systems
                    .into_iter()
                    .flat_map(|(system, codes)| codes.into_iter().map(move |c| (system.clone(), c)))
                    .collect();
                (url, codes)
            })
            .collect();
        let mut children: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        let mut parents: HashMap<String, HashMap<String, Vec<String>>> = HashMap::new();
        for (system, codes) in c.hierarchies {
            let down = children.entry(system.clone()).or_default();
            for (code, ups) in &codes {
                down.entry(code.clone()).or_default();
                for up in ups {
                    down.entry(up.clone()).or_default().push(code.clone());
                }
            }
            parents.insert(system, codes.into_iter().collect());
        }
        Terminology {
            value_sets,
            members,
            parents,
            children,
        }
    }

    /// Every (system, code) of a ValueSet's complete expansion; `None` when this binary has
    /// none. A `|version` suffix of the canonical is ignored (R4 4.0.1 has one version).
    pub fn expansion(&self, url: &str) -> Option<&[(String, String)]> {
        let url = url.split_once('|').map_or(url, |(u, _)| u);
        self.value_sets.get(url).map(Vec::as_slice)
    }

    /// Whether the complete expansion of the ValueSet `url` has `code` (in `system`, when
    /// given); `None` when this binary has no complete expansion of it.
    pub fn has_code(&self, url: &str, system: Option<&str>, code: &str) -> Option<bool> {
        let url = url.split_once('|').map_or(url, |(u, _)| u);
        let codes = self.members.get(url)?;
        Some(
            codes
                .get(code)
                .is_some_and(|systems| system.is_none_or(|s| systems.iter().any(|x| x == s))),
        )
    }

    /// `code` and every code below it in `system`; `None` when the hierarchy of `system` is
    /// not known or `code` is not in it.
    pub fn descendants_or_self(&self, system: &str, code: &str) -> Option<Vec<String>> {
        walk(self.children.get(system)?, code)
    }

    /// `code` and every code above it in `system`; `None` as for
    /// [`Terminology::descendants_or_self`].
    pub fn ancestors_or_self(&self, system: &str, code: &str) -> Option<Vec<String>> {
        walk(self.parents.get(system)?, code)
    }
}

fn walk(edges: &HashMap<String, Vec<String>>, code: &str) -> Option<Vec<String>> {
    edges.get(code)?;
    let mut out = vec![code.to_string()];
    let mut i = 0;
    while i < out.len() {
        for next in edges.get(&out[i]).into_iter().flatten() {
            if !out.contains(next) {
                out.push(next.clone());
            }
        }
        i += 1;
    }
    Some(out)
}

/// Builds the vendored form from the R4 `valuesets.json` Bundle (for CodeSystem hierarchies)
/// and the ValueSets of the expansions package.
pub fn build(valuesets_bundle: &Value, expansions: &[Value]) -> CompactTerminology {
    let mut out = CompactTerminology::default();
    for vs in expansions {
        if vs.get("resourceType").and_then(Value::as_str) != Some("ValueSet") {
            continue;
        }
        let (Some(url), Some(expansion)) =
            (vs.get("url").and_then(Value::as_str), vs.get("expansion"))
        else {
            continue;
        };
        let limited = expansion
            .get("parameter")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|p| p.get("name").and_then(Value::as_str) == Some("limitedExpansion"));
        let mut codes: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut n = 0;
        collect_contains(expansion, &mut codes, &mut n);
        let total = expansion.get("total").and_then(Value::as_u64);
        // A partial expansion would make `:in` miss members and `:not-in` find them.
        if limited || total.is_some_and(|t| t != n) || codes.is_empty() {
            continue;
        }
        for list in codes.values_mut() {
            list.sort();
            list.dedup();
        }
        out.value_sets.insert(url.to_string(), codes);
    }
    for e in valuesets_bundle
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(cs) = e.get("resource") else {
            continue;
        };
        if cs.get("resourceType").and_then(Value::as_str) != Some("CodeSystem") {
            continue;
        }
        // Nesting means is-a unless the code system says it groups or classifies.
        let meaning = cs.get("hierarchyMeaning").and_then(Value::as_str);
        if meaning.is_some_and(|m| m != "is-a") {
            continue;
        }
        let (Some(url), Some(concepts)) = (
            cs.get("url").and_then(Value::as_str),
            cs.get("concept").and_then(Value::as_array),
        ) else {
            continue;
        };
        if !concepts.iter().any(|c| c.get("concept").is_some()) {
            continue;
        }
        let mut edges = BTreeMap::new();
        collect_hierarchy(concepts, None, &mut edges);
        out.hierarchies.insert(url.to_string(), edges);
    }
    out
}

fn collect_contains(v: &Value, out: &mut BTreeMap<String, Vec<String>>, n: &mut u64) {
    for c in v
        .get("contains")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(system), Some(code)) = (
            c.get("system").and_then(Value::as_str),
            c.get("code").and_then(Value::as_str),
        ) {
            out.entry(system.to_string())
                .or_default()
                .push(code.to_string());
            *n += 1;
        }
        collect_contains(c, out, n);
    }
}

fn collect_hierarchy(
    concepts: &[Value],
    parent: Option<&str>,
    out: &mut BTreeMap<String, Vec<String>>,
) {
    for c in concepts {
        let Some(code) = c.get("code").and_then(Value::as_str) else {
            continue;
        };
        let ups: &mut Vec<String> = out.entry(code.to_string()).or_default();
        if let Some(p) = parent {
            if !ups.iter().any(|u| u == p) {
                ups.push(p.to_string());
            }
        }
        if let Some(children) = c.get("concept").and_then(Value::as_array) {
            collect_hierarchy(children, Some(code), out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_walks_both_ways() {
        let t = terminology();
        let cc = "http://terminology.hl7.org/CodeSystem/condition-clinical";
        let mut below = t.descendants_or_self(cc, "inactive").expect("known");
        below.sort();
        assert_eq!(below, ["inactive", "remission", "resolved"]);
        let mut above = t.ancestors_or_self(cc, "resolved").expect("known");
        above.sort();
        assert_eq!(above, ["inactive", "resolved"]);
        assert!(t.descendants_or_self(cc, "no-such-code").is_none());
        assert!(t
            .descendants_or_self("http://snomed.info/sct", "1")
            .is_none());
    }

    #[test]
    fn complete_expansions_only() {
        let t = terminology();
        let status = t
            .expansion("http://hl7.org/fhir/ValueSet/account-status|4.0.1")
            .expect("account-status is expanded");
        assert_eq!(status.len(), 5);
        assert!(status.contains(&(
            "http://hl7.org/fhir/account-status".into(),
            "on-hold".into()
        )));
        // Its published expansion stops at 2000 SNOMED CT codes: not usable for :in.
        assert!(t
            .expansion("http://hl7.org/fhir/ValueSet/substance-code")
            .is_none());
    }
}
