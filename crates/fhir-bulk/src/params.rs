//! The parameters of an `$export` kick-off (Bulk Data Access IG 2.0.0 §export, and what
//! Azure API for FHIR's clients and migration tool send), checked before a job is made: a
//! kick-off that cannot be run as asked is refused with the parameter it is about.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::BulkError;

/// Which data an export reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "level", content = "group", rename_all = "lowercase")]
pub enum ExportLevel {
    /// `[base]/$export`: every resource of the service.
    System,
    /// `[base]/Patient/$export`: the Patient compartments of every patient (or of `patient`).
    Patient,
    /// `[base]/Group/[id]/$export`: the Patient compartments of the group's members.
    Group(String),
}

/// One `_typeFilter` entry: a search on one type, as `(name, value)` pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeFilter {
    pub rtype: String,
    pub query: Vec<(String, String)>,
}

/// A checked export request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportParams {
    pub level: ExportLevel,
    /// `_type`: the types to export, in the order asked; empty for every type.
    pub types: Vec<String>,
    /// `_since`: only resources changed at or after it.
    pub since: Option<DateTime<Utc>>,
    /// `_till` (Azure): only versions changed at or before it.
    pub till: Option<DateTime<Utc>>,
    /// `_typeFilter`, ORed per type.
    pub type_filters: Vec<TypeFilter>,
    /// `_elements`: the elements kept (besides the mandatory ones); the output is `SUBSETTED`.
    pub elements: Option<Vec<String>>,
    /// `patient` (POST, not system level): the patients whose compartments are exported.
    pub patients: Vec<String>,
    /// `includeAssociatedData=_history`: every version, not only the current one.
    pub history: bool,
    /// `includeAssociatedData=_deleted`: deleted resources too, marked as Azure marked them.
    pub deleted: bool,
    /// `_container` (Azure): the name of the output folder.
    pub container: Option<String>,
}

/// The `_outputFormat` values the IG requires a server to take (all meaning NDJSON).
const OUTPUT_FORMATS: &[&str] = &["application/fhir+ndjson", "application/ndjson", "ndjson"];

/// Parameters every export level takes.
const KNOWN: &[&str] = &[
    "_outputFormat",
    "_since",
    "_till",
    "_type",
    "_typeFilter",
    "_elements",
    "_container",
    "_isParallel",
    "includeAssociatedData",
    "patient",
];

impl ExportParams {
    /// The parameters of a GET kick-off, or of a POST one with them in the query and no body
    /// (as Medplum's client sends it). `lenient`: `Prefer: handling=lenient`, under which
    /// unknown parameters and values are ignored instead of refused.
    pub fn from_query(
        level: ExportLevel,
        pairs: &[(String, String)],
        lenient: bool,
    ) -> Result<ExportParams, BulkError> {
        let mut p = Builder::new(level, lenient);
        for (name, value) in pairs {
            if name == "patient" {
                // IG 2.0.0: `patient` is a POST parameter (Parameters.parameter.valueReference).
                p.refuse_or_skip(
                    "patient",
                    "the patient parameter is taken in a POST Parameters body only",
                )?;
                continue;
            }
            p.take(name, value)?;
        }
        p.finish()
    }

    /// The parameters of a POST kick-off: a `Parameters` resource, plus any in the query.
    pub fn from_parameters(
        level: ExportLevel,
        body: &Value,
        query: &[(String, String)],
        lenient: bool,
    ) -> Result<ExportParams, BulkError> {
        if body.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(BulkError::invalid(
                "Parameters",
                "the body of a POST $export must be a Parameters resource",
            ));
        }
        let mut p = Builder::new(level, lenient);
        for (name, value) in query {
            p.take(name, value)?;
        }
        let params = body
            .get("parameter")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, param) in params.iter().enumerate() {
            let name = param
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let path = format!("Parameters.parameter[{i}]");
            if name == "patient" {
                let reference = param
                    .get("valueReference")
                    .and_then(|r| r.get("reference"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        BulkError::invalid(
                            &path,
                            "patient must be a valueReference to Patient/[id]",
                        )
                    })?;
                p.patient(reference, &path)?;
                continue;
            }
            let value = param
                .as_object()
                .and_then(|o| {
                    o.iter()
                        .find(|(k, _)| k.starts_with("value"))
                        .map(|(_, v)| v)
                })
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                })
                .ok_or_else(|| {
                    BulkError::invalid(&path, format!("parameter {name:?} has no usable value"))
                })?;
            p.take(name, &value)?;
        }
        p.finish()
    }

    /// Whether the output is a subset of each resource (`_elements`).
    pub fn subsetted(&self) -> bool {
        self.elements.is_some()
    }
}

struct Builder {
    out: ExportParams,
    lenient: bool,
    types_given: bool,
}

impl Builder {
    fn new(level: ExportLevel, lenient: bool) -> Builder {
        Builder {
            out: ExportParams {
                level,
                types: Vec::new(),
                since: None,
                till: None,
                type_filters: Vec::new(),
                elements: None,
                patients: Vec::new(),
                history: false,
                deleted: false,
                container: None,
            },
            lenient,
            types_given: false,
        }
    }

    fn refuse_or_skip(&self, name: &str, why: &str) -> Result<(), BulkError> {
        if self.lenient {
            Ok(())
        } else {
            Err(BulkError::invalid(name, why))
        }
    }

    fn take(&mut self, name: &str, value: &str) -> Result<(), BulkError> {
        match name {
            "_outputFormat" => {
                if !OUTPUT_FORMATS.contains(&value) {
                    self.refuse_or_skip(
                        name,
                        &format!(
                            "_outputFormat {value:?} is not supported: use application/fhir+ndjson, application/ndjson or ndjson"
                        ),
                    )?;
                }
            }
            "_since" => self.out.since = Some(instant(name, value)?),
            "_till" => {
                if self.out.level != ExportLevel::System {
                    return Err(BulkError::invalid(
                        name,
                        "_till is taken at system level only",
                    ));
                }
                self.out.till = Some(instant(name, value)?);
            }
            "_type" => {
                self.types_given = true;
                for t in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                    if !fhir_model::r4().is_resource_type(t) {
                        self.refuse_or_skip(name, &format!("{t:?} is not an R4 resource type"))?;
                        continue;
                    }
                    if !self.out.types.iter().any(|x| x == t) {
                        self.out.types.push(t.to_owned());
                    }
                }
            }
            "_typeFilter" => {
                for item in split_type_filters(value) {
                    self.type_filter(&item)?;
                }
            }
            "_elements" => {
                let elements: Vec<String> = value
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned)
                    .collect();
                if let Some(bad) = elements.iter().find(|e| !valid_element(e)) {
                    return Err(BulkError::invalid(
                        name,
                        format!("{bad:?} is not an element name (Type.element or element)"),
                    ));
                }
                self.out
                    .elements
                    .get_or_insert_with(Vec::new)
                    .extend(elements);
            }
            "_container" => {
                if !valid_container(value) {
                    return Err(BulkError::invalid(
                        name,
                        "_container must be 3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit",
                    ));
                }
                self.out.container = Some(value.to_owned());
            }
            "_isParallel" => {
                if value != "true" && value != "false" {
                    self.refuse_or_skip(name, "_isParallel must be true or false")?;
                }
            }
            "includeAssociatedData" => {
                for v in value.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                    match v {
                        "_history" => self.out.history = true,
                        "_deleted" => self.out.deleted = true,
                        other => self.refuse_or_skip(
                            name,
                            &format!(
                                "includeAssociatedData {other:?} is not supported (supported: _history, _deleted)"
                            ),
                        )?,
                    }
                }
            }
            "_anonymizationConfig"
            | "_anonymizationConfigEtag"
            | "_anonymizationConfigCollectionReference" => {
                return Err(BulkError::invalid(
                    name,
                    "de-identified export (_anonymizationConfig) is not supported",
                ));
            }
            other => {
                debug_assert!(!KNOWN.contains(&other) || other == "patient");
                self.refuse_or_skip(
                    other,
                    &format!("{other:?} is not a parameter of $export (send Prefer: handling=lenient to ignore it)"),
                )?;
            }
        }
        Ok(())
    }

    fn type_filter(&mut self, item: &str) -> Result<(), BulkError> {
        let Some((rtype, query)) = item.split_once('?') else {
            return Err(BulkError::invalid(
                "_typeFilter",
                format!("{item:?} is not a search (Type?name=value)"),
            ));
        };
        if !fhir_model::r4().is_resource_type(rtype) {
            return Err(BulkError::invalid(
                "_typeFilter",
                format!("{rtype:?} is not an R4 resource type"),
            ));
        }
        let pairs: Vec<(String, String)> = form_pairs(query);
        for (name, _) in &pairs {
            let base = name.split([':', '.']).next().unwrap_or_default();
            if matches!(
                base,
                "_include" | "_revinclude" | "_sort" | "_count" | "_elements" | "_summary"
            ) {
                return Err(BulkError::invalid(
                    "_typeFilter",
                    format!(
                        "{name} is not allowed in a _typeFilter (IG 2.0.0: no _include or _sort)"
                    ),
                ));
            }
        }
        // The search engine's own check: every parameter must be known for the type.
        let parsed = fhir_search::parse(Some(rtype), &pairs, &fhir_search::ParseOptions::default())
            .map_err(|e| BulkError::invalid("_typeFilter", format!("{item}: {e}")))?;
        if let Some((name, why)) = parsed.unknown.first() {
            return Err(BulkError::invalid(
                "_typeFilter",
                format!("{item}: {name}: {why}"),
            ));
        }
        self.out.type_filters.push(TypeFilter {
            rtype: rtype.to_owned(),
            query: pairs,
        });
        Ok(())
    }

    fn patient(&mut self, reference: &str, path: &str) -> Result<(), BulkError> {
        if self.out.level == ExportLevel::System {
            return Err(BulkError::invalid(
                path,
                "patient is not taken by a system-level export (use Patient/$export)",
            ));
        }
        let id = reference
            .strip_prefix("Patient/")
            .filter(|id| crate::valid_id(id))
            .ok_or_else(|| {
                BulkError::invalid(
                    path,
                    format!("{reference:?} is not a reference to Patient/[id]"),
                )
            })?;
        if !self.out.patients.iter().any(|p| p == id) {
            self.out.patients.push(id.to_owned());
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ExportParams, BulkError> {
        if !self.out.type_filters.is_empty() && (self.out.history || self.out.deleted) {
            return Err(BulkError::invalid(
                "_typeFilter",
                "_typeFilter cannot be combined with includeAssociatedData (_history, _deleted)",
            ));
        }
        if self.types_given {
            if let Some(f) = self
                .out
                .type_filters
                .iter()
                .find(|f| !self.out.types.contains(&f.rtype))
            {
                return Err(BulkError::invalid(
                    "_typeFilter",
                    format!("_typeFilter names {}, which is not in _type", f.rtype),
                ));
            }
        }
        if let (Some(since), Some(till)) = (self.out.since, self.out.till) {
            if till < since {
                return Err(BulkError::invalid("_till", "_till is before _since"));
            }
        }
        if let Some(e) = &mut self.out.elements {
            e.dedup();
        }
        Ok(self.out)
    }
}

/// The items of a `_typeFilter` value: separated by commas, where a comma inside one search
/// (`status=final,amended`) is part of it, since the next item starts with `Type?`.
fn split_type_filters(value: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for piece in value.split(',') {
        let starts_search = piece.split_once('?').is_some_and(|(t, _)| {
            !t.is_empty()
                && t.chars().all(|c| c.is_ascii_alphabetic())
                && t.starts_with(|c: char| c.is_ascii_uppercase())
        });
        match out.last_mut() {
            Some(last) if !starts_search => {
                last.push(',');
                last.push_str(piece);
            }
            _ => out.push(piece.to_owned()),
        }
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

/// `a=1&b=2`, percent-decoded.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(n, v)| (n.into_owned(), v.into_owned()))
        .collect()
}

/// A FHIR instant (RFC 3339 with a zone), or a date or dateTime without one, read as UTC
/// (Azure took partial dates: `_since=2024-01-01`).
fn instant(name: &str, value: &str) -> Result<DateTime<Utc>, BulkError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(value) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = chrono::NaiveDateTime::parse_from_str(value, "%Y-%m-%dT%H:%M:%S%.f") {
        return Ok(t.and_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    Err(BulkError::invalid(
        name,
        format!("{value:?} is not an instant (such as 2026-01-31T12:00:00Z) or a date"),
    ))
}

fn valid_element(e: &str) -> bool {
    let name = e.split_once('.').map_or(e, |(t, n)| {
        if fhir_model::r4().is_resource_type(t) {
            n
        } else {
            "!"
        }
    });
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Azure Storage's container names: 3–63 characters, lower-case letters, digits and
/// hyphens, starting and ending with a letter or digit, no two hyphens in a row.
fn valid_container(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect()
    }

    #[test]
    fn output_formats_and_unknown_parameters() {
        for f in OUTPUT_FORMATS {
            ExportParams::from_query(ExportLevel::System, &q(&[("_outputFormat", f)]), false)
                .expect(f);
        }
        let e =
            ExportParams::from_query(ExportLevel::System, &q(&[("_outputFormat", "csv")]), false)
                .unwrap_err();
        assert_eq!(e.param(), Some("_outputFormat"));
        let e =
            ExportParams::from_query(ExportLevel::System, &q(&[("_foo", "1")]), false).unwrap_err();
        assert_eq!(e.param(), Some("_foo"));
        ExportParams::from_query(ExportLevel::System, &q(&[("_foo", "1")]), true).expect("lenient");
    }

    #[test]
    fn types_since_and_associated_data() {
        let p = ExportParams::from_query(
            ExportLevel::System,
            &q(&[
                ("_type", "Patient,Observation"),
                ("_type", "Patient"),
                ("_since", "2024-01-01T00:00:00Z"),
                ("_till", "2025-01-01"),
                ("includeAssociatedData", "_history,_deleted"),
                ("_isParallel", "true"),
                ("_container", "migration-1"),
            ]),
            false,
        )
        .expect("valid");
        assert_eq!(p.types, ["Patient", "Observation"]);
        assert!(p.history && p.deleted);
        assert_eq!(p.container.as_deref(), Some("migration-1"));
        assert_eq!(p.since.unwrap().to_rfc3339(), "2024-01-01T00:00:00+00:00");
        for bad in [
            ("_type", "Nope"),
            ("_since", "yesterday"),
            ("_container", "../etc"),
            ("includeAssociatedData", "LatestProvenanceResources"),
        ] {
            assert!(
                ExportParams::from_query(ExportLevel::System, &q(&[bad]), false).is_err(),
                "{bad:?}"
            );
        }
        let e =
            ExportParams::from_query(ExportLevel::Patient, &q(&[("_till", "2025-01-01")]), false)
                .unwrap_err();
        assert_eq!(e.param(), Some("_till"));
    }

    #[test]
    fn type_filters_are_split_and_checked_by_the_search_engine() {
        let p = ExportParams::from_query(
            ExportLevel::System,
            &q(&[(
                "_typeFilter",
                "Observation?status=final,amended&code=http://loinc.org|8302-2,Patient?gender=female",
            )]),
            false,
        )
        .expect("valid");
        assert_eq!(p.type_filters.len(), 2);
        assert_eq!(p.type_filters[0].rtype, "Observation");
        assert_eq!(
            p.type_filters[0].query,
            q(&[
                ("status", "final,amended"),
                ("code", "http://loinc.org|8302-2")
            ])
        );
        for bad in [
            "Observation?nope=1",
            "Observation?_include=Observation:subject",
            "Nope?x=1",
            "status=final",
        ] {
            assert!(
                ExportParams::from_query(ExportLevel::System, &q(&[("_typeFilter", bad)]), false)
                    .is_err(),
                "{bad}"
            );
        }
        assert!(ExportParams::from_query(
            ExportLevel::System,
            &q(&[
                ("_type", "Patient"),
                ("_typeFilter", "Observation?status=final")
            ]),
            false
        )
        .is_err());
        assert!(ExportParams::from_query(
            ExportLevel::System,
            &q(&[
                ("_typeFilter", "Observation?status=final"),
                ("includeAssociatedData", "_history")
            ]),
            false
        )
        .is_err());
    }

    #[test]
    fn parameters_bodies() {
        let body = serde_json::json!({
            "resourceType": "Parameters",
            "parameter": [
                {"name": "_type", "valueString": "Observation"},
                {"name": "_outputFormat", "valueString": "ndjson"},
                {"name": "patient", "valueReference": {"reference": "Patient/p1"}},
                {"name": "patient", "valueReference": {"reference": "Patient/p2"}}
            ]
        });
        let p = ExportParams::from_parameters(ExportLevel::Patient, &body, &[], false).expect("ok");
        assert_eq!(p.patients, ["p1", "p2"]);
        assert_eq!(p.types, ["Observation"]);
        assert!(ExportParams::from_parameters(ExportLevel::System, &body, &[], false).is_err());
        assert!(ExportParams::from_query(
            ExportLevel::Patient,
            &q(&[("patient", "Patient/p1")]),
            false
        )
        .is_err());
    }
}
