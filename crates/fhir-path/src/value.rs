//! The items a FHIRPath collection holds: nodes of the input resource (with their location, so
//! FHIRPath Patch can edit them) and computed System values. Also the FHIR JSON conventions
//! the evaluator needs without a full model: choice-type suffixes, `_x` primitive extension
//! siblings, and the names of FHIR primitive types.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::decimal::Decimal;
use crate::temporal::{Temporal, TemporalKind};

/// One step from a parent JSON value to a child.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSegment {
    Key(String),
    Index(usize),
}

impl fmt::Display for PathSegment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathSegment::Key(k) => write!(f, ".{k}"),
            PathSegment::Index(i) => write!(f, "[{i}]"),
        }
    }
}

/// A JSON value either borrowed from the input or owned (stand-ins built by `resolve()`).
#[derive(Debug, Clone)]
pub(crate) enum Json<'a> {
    Borrowed(&'a Value),
    Owned(Arc<Value>),
}

impl Json<'_> {
    pub(crate) fn get(&self) -> &Value {
        match self {
            Json::Borrowed(v) => v,
            Json::Owned(v) => v,
        }
    }
}

/// A node of the input: an element, a resource or a primitive, with where it lives.
#[derive(Debug, Clone)]
pub struct Node<'a> {
    /// `None` for a primitive that only has a `_x` extension sibling (FHIR JSON §2.6.2.1).
    pub(crate) value: Option<Json<'a>>,
    /// The `_x` sibling object of a primitive.
    pub(crate) ext: Option<Json<'a>>,
    pub(crate) path: Vec<PathSegment>,
    /// Element name this node was reached by (without choice suffix).
    pub(crate) name: Option<String>,
    /// FHIR type, when known from a choice suffix or the element name.
    pub(crate) type_name: Option<String>,
    /// True when the node is not part of the input (e.g. a `resolve()` stand-in).
    pub(crate) detached: bool,
    /// The model typing this node's children, if evaluation was given one.
    pub(crate) model: Option<ModelRef<'a>>,
}

/// A [`crate::Model`] reference carried by nodes.
#[derive(Clone, Copy)]
pub(crate) struct ModelRef<'a>(pub(crate) &'a dyn crate::Model);

impl fmt::Debug for ModelRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Model")
    }
}

impl<'a> Node<'a> {
    pub(crate) fn root(v: &'a Value, model: Option<ModelRef<'a>>) -> Self {
        Node {
            value: Some(Json::Borrowed(v)),
            ext: None,
            path: Vec::new(),
            name: None,
            type_name: None,
            detached: false,
            model,
        }
    }

    /// The JSON value of the node (`Value::Null` for an extension-only primitive).
    pub fn json(&self) -> &Value {
        match &self.value {
            Some(j) => j.get(),
            None => &Value::Null,
        }
    }

    /// Location from the evaluated resource's root; `None` for nodes not in the input.
    pub fn path(&self) -> Option<&[PathSegment]> {
        if self.detached {
            None
        } else {
            Some(&self.path)
        }
    }

    /// The FHIR type name when known: `resourceType` for resources, the choice suffix for
    /// choice elements (`valueQuantity` → `Quantity`), or a guess from the element name.
    pub fn type_name(&self) -> Option<String> {
        // A resource's own type wins over the declared `Resource` of `contained` & co.
        let v = self.json();
        if let Some(rt) = v.get("resourceType").and_then(Value::as_str) {
            return Some(rt.to_string());
        }
        if let Some(t) = &self.type_name {
            return Some(t.clone());
        }
        match v {
            Value::Bool(_) => Some("boolean".into()),
            Value::Number(n) => Some(
                if n.to_string().contains(['.', 'e', 'E']) {
                    "decimal"
                } else {
                    "integer"
                }
                .into(),
            ),
            Value::Object(_) => self
                .name
                .as_deref()
                .and_then(element_type_guess)
                .map(str::to_string),
            _ => None,
        }
    }

    /// The `_x` extension sibling, if any.
    pub(crate) fn ext_json(&self) -> Option<&Value> {
        self.ext.as_ref().map(Json::get)
    }
}

/// A computed FHIRPath System value.
#[derive(Debug, Clone, PartialEq)]
pub enum Primitive {
    Boolean(bool),
    Integer(i64),
    Decimal(Decimal),
    String(String),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Quantity),
}

/// A quantity: decimal value and a unit (UCUM code or calendar duration word).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantity {
    pub value: Decimal,
    pub unit: String,
}

/// One member of a FHIRPath result collection.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Node(Node<'a>),
    Value(Primitive),
}

impl<'a> Item<'a> {
    /// The item as JSON: the node's JSON, or the FHIR JSON form of a computed value.
    pub fn to_json(&self) -> Value {
        match self {
            Item::Node(n) => n.json().clone(),
            Item::Value(p) => p.to_json(),
        }
    }

    /// Location in the input, for nodes.
    pub fn path(&self) -> Option<&[PathSegment]> {
        match self {
            Item::Node(n) => n.path(),
            Item::Value(_) => None,
        }
    }

    pub fn as_node(&self) -> Option<&Node<'a>> {
        match self {
            Item::Node(n) => Some(n),
            Item::Value(_) => None,
        }
    }

    /// The item as a System value where it is a primitive: JSON booleans, numbers and strings
    /// of nodes become Boolean, Integer/Decimal and String.
    pub fn to_primitive(&self) -> Option<Primitive> {
        match self {
            Item::Value(p) => Some(p.clone()),
            Item::Node(n) => json_primitive(n.json(), n.type_name.as_deref()),
        }
    }
}

pub(crate) fn json_primitive(v: &Value, type_name: Option<&str>) -> Option<Primitive> {
    match v {
        Value::Bool(b) => Some(Primitive::Boolean(*b)),
        Value::Number(n) => {
            let text = n.to_string();
            if !text.contains(['.', 'e', 'E']) {
                if let Ok(i) = text.parse::<i64>() {
                    return Some(Primitive::Integer(i));
                }
            }
            Decimal::parse(&text).map(Primitive::Decimal)
        }
        Value::String(s) => {
            match type_name {
                Some("date") | Some("dateTime") | Some("instant") => {
                    if let Some(t) = Temporal::parse_fhir(s) {
                        return Some(if t.kind == TemporalKind::Date {
                            Primitive::Date(t)
                        } else {
                            Primitive::DateTime(t)
                        });
                    }
                }
                Some("time") => {
                    if let Some(t) = Temporal::parse_time(s) {
                        return Some(Primitive::Time(t));
                    }
                }
                _ => {}
            }
            Some(Primitive::String(s.clone()))
        }
        Value::Object(o) => {
            // A FHIR Quantity (or subtype) takes part in quantity comparisons.
            let value = o.get("value")?;
            let Value::Number(n) = value else {
                return None;
            };
            let d = Decimal::parse(&n.to_string())?;
            let unit = o
                .get("code")
                .or_else(|| o.get("unit"))
                .and_then(Value::as_str)
                .unwrap_or("1");
            Some(Primitive::Quantity(Quantity {
                value: d,
                unit: unit.to_string(),
            }))
        }
        _ => None,
    }
}

impl Primitive {
    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            Primitive::Boolean(_) => "Boolean",
            Primitive::Integer(_) => "Integer",
            Primitive::Decimal(_) => "Decimal",
            Primitive::String(_) => "String",
            Primitive::Date(_) => "Date",
            Primitive::DateTime(_) => "DateTime",
            Primitive::Time(_) => "Time",
            Primitive::Quantity(_) => "Quantity",
        }
    }

    /// FHIR JSON form of the value.
    pub fn to_json(&self) -> Value {
        match self {
            Primitive::Boolean(b) => Value::Bool(*b),
            Primitive::Integer(i) => Value::from(*i),
            Primitive::Decimal(d) => serde_json::from_str(&d.to_string())
                .unwrap_or_else(|_| Value::String(d.to_string())),
            Primitive::String(s) => Value::String(s.clone()),
            Primitive::Date(t) | Primitive::DateTime(t) | Primitive::Time(t) => {
                Value::String(t.to_string())
            }
            Primitive::Quantity(q) => {
                let mut m = serde_json::Map::new();
                m.insert(
                    "value".into(),
                    serde_json::from_str(&q.value.to_string()).unwrap_or(Value::Null),
                );
                let code = calendar_unit(&q.unit)
                    .map(ucum_of_calendar)
                    .unwrap_or(&q.unit);
                m.insert("unit".into(), Value::String(q.unit.clone()));
                m.insert(
                    "system".into(),
                    Value::String("http://unitsofmeasure.org".into()),
                );
                m.insert("code".into(), Value::String(code.to_string()));
                Value::Object(m)
            }
        }
    }
}

impl fmt::Display for Primitive {
    /// The `toString()` form (§ toString).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Primitive::Boolean(b) => write!(f, "{b}"),
            Primitive::Integer(i) => write!(f, "{i}"),
            Primitive::Decimal(d) => write!(f, "{d}"),
            Primitive::String(s) => f.write_str(s),
            Primitive::Date(t) | Primitive::DateTime(t) | Primitive::Time(t) => write!(f, "{t}"),
            Primitive::Quantity(q) if calendar_unit(&q.unit).is_some() => {
                write!(f, "{} {}", q.value, q.unit)
            }
            Primitive::Quantity(q) => write!(f, "{} '{}'", q.value, q.unit),
        }
    }
}

/// Normalises a calendar duration keyword (`days` → `day`); `None` if not one.
pub(crate) fn calendar_unit(u: &str) -> Option<&'static str> {
    Some(match u {
        "year" | "years" => "year",
        "month" | "months" => "month",
        "week" | "weeks" => "week",
        "day" | "days" => "day",
        "hour" | "hours" => "hour",
        "minute" | "minutes" => "minute",
        "second" | "seconds" => "second",
        "millisecond" | "milliseconds" => "millisecond",
        _ => return None,
    })
}

pub(crate) fn ucum_of_calendar(u: &str) -> &'static str {
    match u {
        "year" => "a",
        "month" => "mo",
        "week" => "wk",
        "day" => "d",
        "hour" => "h",
        "minute" => "min",
        "second" => "s",
        _ => "ms",
    }
}

/// The calendar word for a UCUM time unit usable in date arithmetic; `a` and `mo` are not
/// definite durations and so are refused (§ Date/Time Arithmetic).
pub(crate) fn calendar_of_ucum(u: &str) -> Option<&'static str> {
    Some(match u {
        "wk" => "week",
        "d" => "day",
        "h" => "hour",
        "min" => "minute",
        "s" => "second",
        "ms" => "millisecond",
        _ => return None,
    })
}

/// FHIR types that may follow a choice element's name (`value[x]` → `valueQuantity`).
pub(crate) const FHIR_TYPES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "integer64",
    "xhtml",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "CodeableConcept",
    "Coding",
    "ContactPoint",
    "Count",
    "Distance",
    "Duration",
    "HumanName",
    "Identifier",
    "Money",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "Reference",
    "SampledData",
    "Signature",
    "Timing",
    "ContactDetail",
    "Contributor",
    "DataRequirement",
    "Expression",
    "ParameterDefinition",
    "RelatedArtifact",
    "TriggerDefinition",
    "UsageContext",
    "Dosage",
    "Meta",
    "Extension",
    "Narrative",
    "SimpleQuantity",
    "MoneyQuantity",
];

/// Maps a choice suffix (`DateTime`) to the FHIR type name (`dateTime`).
pub(crate) fn choice_type(suffix: &str) -> Option<&'static str> {
    let mut s = suffix.chars();
    let first = s.next()?;
    let rest = s.as_str();
    FHIR_TYPES.iter().copied().find(|t| {
        let mut c = t.chars();
        c.next().is_some_and(|f| f.to_ascii_uppercase() == first) && c.as_str() == rest
    })
}

/// A guess at the FHIR type of a complex element from its name, for `is`/`ofType` on elements
/// whose type a model would know.
fn element_type_guess(name: &str) -> Option<&'static str> {
    Some(match name {
        "extension" | "modifierExtension" => "Extension",
        "coding" => "Coding",
        "meta" => "Meta",
        "identifier" => "Identifier",
        "period" => "Period",
        "telecom" => "ContactPoint",
        "address" => "Address",
        "name" => "HumanName",
        "text" => "Narrative",
        "subject"
        | "patient"
        | "performer"
        | "author"
        | "managingOrganization"
        | "generalPractitioner"
        | "encounter"
        | "basedOn"
        | "partOf"
        | "requester" => "Reference",
        "code" | "category" | "maritalStatus" | "valueCodeableConcept" => "CodeableConcept",
        _ => return None,
    })
}

/// Is `actual` the type `wanted` or a specialisation of it (FHIR R4 type hierarchy)?
pub(crate) fn fhir_type_is(actual: &str, wanted: &str) -> bool {
    if actual == wanted {
        return true;
    }
    let parent = |t: &str| -> Option<&'static str> {
        Some(match t {
            "code" | "id" | "markdown" => "string",
            "url" | "canonical" | "oid" | "uuid" => "uri",
            "unsignedInt" | "positiveInt" => "integer",
            "Age" | "Count" | "Distance" | "Duration" | "SimpleQuantity" | "MoneyQuantity" => {
                "Quantity"
            }
            "Bundle" | "Binary" | "Parameters" => "Resource",
            t if t.contains('.') => "BackboneElement",
            "BackboneElement" => "Element",
            "Resource" | "Element" => return None,
            t if t.chars().next().is_some_and(char::is_uppercase)
                && !FHIR_TYPES.contains(&t)
                && t != "DomainResource"
                && t != "BackboneElement" =>
            {
                "DomainResource"
            }
            "DomainResource" => "Resource",
            _ => "Element",
        })
    };
    let mut cur = actual.to_string();
    for _ in 0..8 {
        match parent(&cur) {
            Some(p) if p == wanted => return true,
            Some(p) => cur = p.to_string(),
            None => return false,
        }
    }
    false
}
