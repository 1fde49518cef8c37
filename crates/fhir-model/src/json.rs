//! Parsing resource JSON as serde_json's [`Value`], refusing an object that names a property
//! twice. FHIR R4 json.html gives each element one JSON property; RFC 8259 §4 says names
//! SHOULD be unique and leaves a repeated one to the parser, so `{"gender": "male", "gender":
//! "female"}` means whatever the reader's parser picks (serde_json keeps the last). A server
//! that stores it passes that ambiguity on, so it is refused with the element's path.
//!
//! The check costs nothing extra: this is serde_json's own `Value` visitor, whose map insert
//! already finds the key it replaces. Key order and number literals are kept as the workspace
//! features make `Value` keep them (`preserve_order`, `arbitrary_precision`).

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// The key under which serde_json's `arbitrary_precision` feature hands a number to a visitor
/// (a one-entry map, `serde_json::number::TOKEN`); `Value`'s own visitor matches it the same
/// way. `tests::numbers_keep_their_literal` fails if serde_json ever changes it.
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// Why a body is not one JSON value.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// An object names `key` twice; `expression` is the path of the property, FHIRPath-like
    /// (`Patient.name[0].family`), as validation issues give it.
    #[error("the property '{key}' appears twice in one JSON object (at {expression}); FHIR JSON names each property once")]
    DuplicateKey { key: String, expression: String },
}

impl JsonError {
    /// Where the problem is, for an OperationOutcome's `expression`: the duplicate's path.
    pub fn expression(&self) -> Option<&str> {
        match self {
            JsonError::DuplicateKey { expression, .. } => Some(expression),
            JsonError::Syntax(_) => None,
        }
    }
}

/// Parses one JSON value, refusing duplicate keys in any object.
pub fn parse(bytes: &[u8]) -> Result<Value, JsonError> {
    let dup = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = ValueSeed {
        dup: &dup,
        root: true,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    match (parsed, dup.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(d)) => Err(d.into_error()),
        (Err(e), None) => Err(JsonError::Syntax(e)),
    }
}

enum Seg {
    Key(String),
    Index(usize),
}

/// The duplicate found, with its path collected innermost first as the error unwinds (so the
/// happy path tracks nothing).
struct Duplicate {
    key: String,
    path: Vec<Seg>,
    resource_type: Option<String>,
}

impl Duplicate {
    fn into_error(self) -> JsonError {
        let mut expression = self.resource_type.unwrap_or_default();
        for seg in self.path.iter().rev() {
            match seg {
                Seg::Key(k) => {
                    if !expression.is_empty() {
                        expression.push('.');
                    }
                    expression.push_str(k);
                }
                Seg::Index(i) => {
                    expression.push('[');
                    expression.push_str(&i.to_string());
                    expression.push(']');
                }
            }
        }
        JsonError::DuplicateKey {
            key: self.key,
            expression,
        }
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'c> {
    dup: &'c RefCell<Option<Duplicate>>,
    /// The document's root: its `resourceType` starts the path.
    root: bool,
}

impl ValueSeed<'_> {
    fn nested(self) -> Self {
        ValueSeed {
            dup: self.dup,
            root: false,
        }
    }

    /// Adds one segment to the path of a duplicate found below it, if that is why it failed.
    fn unwinding(&self, seg: impl FnOnce() -> Seg) {
        if let Some(d) = self.dup.borrow_mut().as_mut() {
            d.path.push(seg());
        }
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        loop {
            match seq.next_element_seed(self.nested()) {
                Ok(Some(v)) => items.push(v),
                Ok(None) => return Ok(Value::Array(items)),
                Err(e) => {
                    self.unwinding(|| Seg::Index(items.len()));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(mut key) = map.next_key::<String>()? else {
            return Ok(Value::Object(Map::new()));
        };
        if key == NUMBER_TOKEN {
            return map.next_value_seed(NumberSeed).map(Value::Number);
        }
        let mut values = Map::new();
        loop {
            let value = match map.next_value_seed(self.nested()) {
                Ok(v) => v,
                Err(e) => {
                    self.unwinding(|| Seg::Key(key));
                    self.name_root(&values);
                    return Err(e);
                }
            };
            match values.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) => {
                    let key = slot.key().clone();
                    *self.dup.borrow_mut() = Some(Duplicate {
                        path: vec![Seg::Key(key.clone())],
                        key,
                        resource_type: None,
                    });
                    self.name_root(&values);
                    return Err(de::Error::custom("duplicate key"));
                }
            }
            match map.next_key::<String>()? {
                Some(k) => key = k,
                None => return Ok(Value::Object(values)),
            }
        }
    }
}

impl ValueSeed<'_> {
    /// At the root, the resource type read so far starts the duplicate's path.
    fn name_root(&self, values: &Map<String, Value>) {
        if !self.root {
            return;
        }
        if let Some(d) = self.dup.borrow_mut().as_mut() {
            d.resource_type = values
                .get("resourceType")
                .and_then(Value::as_str)
                .map(str::to_owned);
        }
    }
}

/// The literal of an `arbitrary_precision` number, parsed as serde_json's own visitor does.
struct NumberSeed;

impl<'de> DeserializeSeed<'de> for NumberSeed {
    type Value = Number;
    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Number, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl Visitor<'_> for NumberSeed {
    type Value = Number;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number literal")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Number, E> {
        s.parse().map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(text: &str) -> (String, String) {
        match parse(text.as_bytes()) {
            Err(JsonError::DuplicateKey { key, expression }) => (key, expression),
            other => panic!("expected a duplicate key, got {other:?}"),
        }
    }

    #[test]
    fn parses_as_serde_json_does() {
        for text in [
            r#"{"resourceType":"Patient","a":[1,2.50,{"b":null}],"c":true,"d":"\u00e9x"}"#,
            r#"[]"#,
            r#"{}"#,
            r#""s""#,
            r#"-0.0"#,
            r#"{"z":1,"a":2,"m":{"y":[[],{}]}}"#,
        ] {
            let ours = parse(text.as_bytes()).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours, theirs, "{text}");
            assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
        }
    }

    #[test]
    fn numbers_keep_their_literal() {
        let v = parse(br#"{"a":1.50,"b":12345678901234567890123,"d":-0}"#).unwrap();
        assert_eq!(
            v.to_string(),
            r#"{"a":1.50,"b":12345678901234567890123,"d":-0}"#
        );
        // serde_json writes an exponent with its sign, whichever visitor parsed it.
        let text = r#"{"c":1e3}"#;
        assert_eq!(
            parse(text.as_bytes()).unwrap().to_string(),
            serde_json::from_str::<Value>(text).unwrap().to_string()
        );
        assert!(v["a"].is_number());
    }

    #[test]
    fn syntax_errors_are_syntax_errors() {
        for text in [r#"{"a":}"#, r#"{"a":1} x"#, "", r#"{"a":1,"a""#] {
            assert!(
                matches!(parse(text.as_bytes()), Err(JsonError::Syntax(_))),
                "{text}"
            );
        }
    }

    // Regression (issue #15, defect 8): duplicate keys were accepted, the last one winning.
    #[test]
    fn regression_15_8_duplicate_keys_are_found_with_their_path() {
        assert_eq!(
            dup(r#"{"resourceType":"Patient","gender":"male","gender":"female"}"#),
            ("gender".into(), "Patient.gender".into())
        );
        assert_eq!(
            dup(
                r#"{"resourceType":"Patient","name":[{"given":["a"]},{"family":"x","family":"y"}]}"#
            ),
            ("family".into(), "Patient.name[1].family".into())
        );
        assert_eq!(
            dup(
                r#"{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"1","id":"2"}}]}"#
            ),
            ("id".into(), "Bundle.entry[0].resource.id".into())
        );
        // Without a resourceType read first, the path starts at the root's properties.
        assert_eq!(dup(r#"{"a":{"b":1,"b":1}}"#), ("b".into(), "a.b".into()));
        // `_gender` and `gender` are different properties.
        assert!(parse(br#"{"gender":"male","_gender":{"id":"x"}}"#).is_ok());
    }
}
