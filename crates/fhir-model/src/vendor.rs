//! The vendored R4 definitions: the compact model extracted from the official
//! StructureDefinition bundles, and the SearchParameter bundle, both embedded gzip'ed.
//! This module owns the compact format (written by `examples/vendor.rs`, checked against
//! the source bundles by `tests/vendored.rs`) and its decoding; it knows nothing of validation.

use std::borrow::Cow;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The compact model, gzip'ed JSON; see [`CompactModel`].
pub(crate) const MODEL_GZ: &[u8] = include_bytes!("../data/r4-model.json.gz");
/// The official R4 SearchParameter bundle (`search-parameters.json`), gzip'ed whole.
pub(crate) const SEARCH_PARAMETERS_GZ: &[u8] = include_bytes!("../data/search-parameters.json.gz");

/// File names inside `crates/fhir-model/data/`.
pub const MODEL_FILE: &str = "r4-model.json.gz";
pub const SEARCH_PARAMETERS_FILE: &str = "search-parameters.json.gz";

/// Why the compact model could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum VendorError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("unexpected content: {0}")]
    Content(String),
}

/// Everything validation and the `_summary`/`_elements` views need from the R4
/// StructureDefinitions, and nothing else. Strings borrow from the JSON text when
/// decoding the embedded copy, so that decoding allocates little.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactModel<'a> {
    #[serde(borrow)]
    pub fhir_version: Cow<'a, str>,
    /// The concrete resource types, sorted (`resource-types.txt`).
    #[serde(borrow)]
    pub resource_types: Vec<Cow<'a, str>>,
    /// Every resource, complex and primitive type defined by specialization
    /// (constraint profiles such as SimpleQuantity and logical models are left out).
    #[serde(borrow)]
    pub types: Vec<CompactType<'a>>,
}

/// One StructureDefinition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactType<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// `resource`, `complex-type` or `primitive-type`.
    #[serde(borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub r#abstract: bool,
    /// The snapshot elements below the root, in snapshot order (none for primitive types,
    /// whose JSON representation is the bare value).
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub elements: Vec<CompactElement<'a>>,
}

/// One snapshot element.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CompactElement<'a> {
    /// The path without the type name: `contact.name`, `value[x]`.
    #[serde(borrow)]
    pub path: Cow<'a, str>,
    pub min: u32,
    /// `1` or `*`.
    #[serde(borrow)]
    pub max: Cow<'a, str>,
    /// FHIR type codes; FHIRPath system types are replaced by the FHIR type they stand for.
    #[serde(borrow, default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<Cow<'a, str>>,
    /// `#Questionnaire.item`: this element has the definition of another one.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub content_reference: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub summary: bool,
    /// A choice element (`value[x]`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub choice: bool,
    /// `isModifier`: an element that changes the meaning of the one containing it, which a
    /// subset must keep (FHIR R4 §3.1.1.5.11 search.html#elements).
    #[serde(default, skip_serializing_if = "is_false")]
    pub modifier: bool,
    /// The ValueSet of a `required` binding (its canonical without `|version`); bindings of
    /// other strengths never refuse a value and are left out.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub required_binding: Option<Cow<'a, str>>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Reads the definitions in `core_dir` (the `fhir-r4-core` data folder: `profiles-types.json`,
/// `profiles-resources.json.gz`, `resource-types.txt`) and extracts the compact model.
pub fn build_compact_model(core_dir: &Path) -> Result<CompactModel<'static>, VendorError> {
    let types_bundle = read_json(&core_dir.join("profiles-types.json"))?;
    let resources_bundle = read_json(&core_dir.join("profiles-resources.json.gz"))?;
    let list_path = core_dir.join("resource-types.txt");
    let list = std::fs::read_to_string(&list_path).map_err(|source| VendorError::Io {
        path: list_path,
        source,
    })?;
    let mut resource_types: Vec<Cow<'static, str>> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| Cow::Owned(l.to_string()))
        .collect();
    resource_types.sort();

    let mut types = Vec::new();
    for bundle in [&types_bundle, &resources_bundle] {
        let entries = bundle
            .get("entry")
            .and_then(Value::as_array)
            .ok_or_else(|| VendorError::Content("bundle without entry".into()))?;
        for entry in entries {
            let Some(sd) = entry.get("resource") else {
                continue;
            };
            if sd.get("resourceType").and_then(Value::as_str) != Some("StructureDefinition") {
                continue;
            }
            if let Some(t) = compact_type(sd)? {
                types.push(t);
            }
        }
    }
    types.sort_by(|a, b| a.name.cmp(&b.name));
    for rt in &resource_types {
        if !types.iter().any(|t| t.name == *rt && t.kind == "resource") {
            return Err(VendorError::Content(format!(
                "resource type {rt} has no StructureDefinition"
            )));
        }
    }
    Ok(CompactModel {
        fhir_version: Cow::Borrowed("4.0.1"),
        resource_types,
        types,
    })
}

fn compact_type(sd: &Value) -> Result<Option<CompactType<'static>>, VendorError> {
    let str_of = |k: &str| sd.get(k).and_then(Value::as_str).unwrap_or_default();
    let kind = str_of("kind");
    if !matches!(kind, "resource" | "complex-type" | "primitive-type")
        || str_of("derivation") == "constraint"
    {
        return Ok(None);
    }
    let name = str_of("type").to_string();
    let is_resource = kind == "resource";
    let mut elements = Vec::new();
    if kind != "primitive-type" {
        let snapshot = sd
            .pointer("/snapshot/element")
            .and_then(Value::as_array)
            .ok_or_else(|| VendorError::Content(format!("{name} has no snapshot")))?;
        for el in snapshot {
            let full = el.get("path").and_then(Value::as_str).unwrap_or_default();
            let Some(path) = full.strip_prefix(&name).and_then(|p| p.strip_prefix('.')) else {
                continue; // the root element
            };
            let mut types = Vec::new();
            for t in el
                .get("type")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let code = t.get("code").and_then(Value::as_str).unwrap_or_default();
                types.push(Cow::Owned(fhir_type_code(
                    t,
                    code,
                    is_resource && path == "id",
                )));
            }
            let min = el.get("min").and_then(Value::as_u64).unwrap_or(0);
            elements.push(CompactElement {
                path: Cow::Owned(path.to_string()),
                min: u32::try_from(min)
                    .map_err(|_| VendorError::Content(format!("{full}: min {min}")))?,
                max: Cow::Owned(
                    el.get("max")
                        .and_then(Value::as_str)
                        .unwrap_or("*")
                        .to_string(),
                ),
                types,
                content_reference: el
                    .get("contentReference")
                    .and_then(Value::as_str)
                    .map(|r| Cow::Owned(r.to_string())),
                summary: el
                    .get("isSummary")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                choice: path.ends_with("[x]"),
                modifier: el
                    .get("isModifier")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                required_binding: el
                    .get("binding")
                    .filter(|b| b.get("strength").and_then(Value::as_str) == Some("required"))
                    .and_then(|b| b.get("valueSet"))
                    .and_then(Value::as_str)
                    .map(|vs| Cow::Owned(vs.split_once('|').map_or(vs, |(u, _)| u).to_string())),
            });
        }
    }
    Ok(Some(CompactType {
        name: Cow::Owned(name),
        kind: Cow::Owned(kind.to_string()),
        r#abstract: sd.get("abstract").and_then(Value::as_bool).unwrap_or(false),
        elements,
    }))
}

/// The FHIR type of one `ElementDefinition.type`. Snapshots give the FHIRPath system type
/// (`http://hl7.org/fhirpath/System.String`) for `id`, `Extension.url` and primitive values,
/// with the FHIR type in the `structuredefinition-fhir-type` extension.
/// `Resource.id` is `id` (FHIR R4 §2.1.3 resource.html#id) though its snapshot says `string`.
fn fhir_type_code(t: &Value, code: &str, resource_id: bool) -> String {
    if resource_id {
        return "id".into();
    }
    let Some(system) = code.strip_prefix("http://hl7.org/fhirpath/System.") else {
        return code.to_string();
    };
    let declared = t
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|e| {
            e.get("url").and_then(Value::as_str)
                == Some("http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type")
        })
        .and_then(|e| e.get("valueUrl").and_then(Value::as_str));
    match (declared, system) {
        (Some(d), _) => d.to_string(),
        (None, "Boolean") => "boolean".into(),
        (None, "Integer") => "integer".into(),
        (None, "Decimal") => "decimal".into(),
        (None, "Date") => "date".into(),
        (None, "DateTime") => "dateTime".into(),
        (None, "Time") => "time".into(),
        (None, _) => "string".into(),
    }
}

/// Reads a JSON file, gunzipping it when its name ends in `.gz`.
pub fn read_json(path: &Path) -> Result<Value, VendorError> {
    let bytes = std::fs::read(path).map_err(|source| VendorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = if path.extension().is_some_and(|e| e == "gz") {
        gunzip(&bytes).map_err(|source| VendorError::Io {
            path: path.to_path_buf(),
            source,
        })?
    } else {
        bytes
    };
    serde_json::from_slice(&bytes).map_err(|source| VendorError::Json {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn gunzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(bytes.len() * 8);
    GzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// Gzip with maximum compression and a zero mtime, so regenerating gives the same bytes.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes)?;
    enc.finish()
}

/// The JSON text of the compact model embedded in this binary.
pub fn embedded_model_json() -> Result<Vec<u8>, VendorError> {
    gunzip(MODEL_GZ).map_err(|source| VendorError::Io {
        path: MODEL_FILE.into(),
        source,
    })
}

/// Decodes a compact model, borrowing its strings from `json`.
pub fn parse_model(json: &[u8]) -> Result<CompactModel<'_>, VendorError> {
    serde_json::from_slice(json).map_err(|source| VendorError::Json {
        path: MODEL_FILE.into(),
        source,
    })
}

/// The SearchParameter bundle embedded in this binary, as published in R4 4.0.1 (1,375
/// entries). Decoded on each call (about 10 ms): keep the result. `Null` only if the embedded
/// copy were corrupt, which `tests/vendored.rs` rules out.
pub fn search_parameters_bundle() -> Value {
    gunzip(SEARCH_PARAMETERS_GZ)
        .ok()
        .and_then(|json| serde_json::from_slice(&json).ok())
        .unwrap_or(Value::Null)
}
