//! The input parameters of an operation (FHIR R4 operations.html#request): in the query of a
//! GET (and of a POST), and in the Parameters body of a POST. Each operation names the
//! parameters it takes; any other, a repeated one that may appear once, or a value of the
//! wrong kind is a 400 whose issue names the parameter.

use axum::body::Body;
use axum::http::StatusCode;
use fhir_model::IssueCode;
use serde_json::Value;

use crate::error::FhirError;
use crate::request::{read_body, Ctx};

/// What a parameter may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A primitive (`valueString`, `valueCode`, `valueUri`, …), or text in the query.
    Text,
    /// `valueMeta` (body only).
    Meta,
    /// `valueCoding` (body only).
    Coding,
    /// `resource` (body only).
    Resource,
}

/// One parameter an operation takes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) shape: Shape,
    /// May appear more than once.
    pub(crate) repeats: bool,
}

impl Spec {
    pub(crate) const fn text(name: &'static str) -> Spec {
        Spec {
            name,
            shape: Shape::Text,
            repeats: false,
        }
    }
}

/// A parameter as it came: its text, or its JSON value (`valueMeta`, `resource`).
#[derive(Debug, Clone)]
pub(crate) enum Given {
    Text(String),
    Json(Value),
}

/// The parameters of one invocation, checked against the operation's [`Spec`]s.
#[derive(Debug, Default)]
pub(crate) struct OpParams {
    items: Vec<(&'static str, Given, String)>,
}

/// Query parameters every interaction understands, which no operation names.
const GENERAL: &[&str] = &["_format", "_pretty"];

fn named(op: &str, name: &str, at: String, msg: String) -> FhirError {
    FhirError::new(
        StatusCode::BAD_REQUEST,
        IssueCode::Invalid,
        format!("${op}: parameter '{name}': {msg}"),
    )
    .at(at)
}

impl OpParams {
    /// Reads the parameters of `$op` from the query and, when `post`, the body (empty, or a
    /// Parameters resource).
    pub(crate) async fn read(
        ctx: &Ctx,
        op: &str,
        post: bool,
        body: Body,
        specs: &[Spec],
    ) -> Result<OpParams, FhirError> {
        let mut out = OpParams::from_query(ctx, op, specs)?;
        if post {
            if let Some(v) = read_json(ctx, body).await? {
                out.add_parameters(op, specs, &v)?;
            }
        }
        Ok(out)
    }

    /// The parameters in the query.
    pub(crate) fn from_query(ctx: &Ctx, op: &str, specs: &[Spec]) -> Result<OpParams, FhirError> {
        let mut out = OpParams::default();
        for (k, v) in &ctx.params {
            if GENERAL.contains(&k.as_str()) {
                continue;
            }
            let spec = find(op, specs, k, k.clone())?;
            if spec.shape != Shape::Text {
                return Err(named(
                    op,
                    k,
                    k.clone(),
                    "is a resource or complex value and goes in a Parameters body (POST)".into(),
                ));
            }
            out.push(op, spec, Given::Text(v.clone()), k.clone())?;
        }
        Ok(out)
    }

    /// A resource given as the whole body for the parameter `name` (FHIR R4
    /// operations.html#request: an operation whose one resource input may be the body).
    pub(crate) fn add_resource(
        &mut self,
        op: &str,
        specs: &[Spec],
        name: &str,
        resource: Value,
    ) -> Result<(), FhirError> {
        let spec = find(op, specs, name, name.to_owned())?;
        self.push(op, spec, Given::Json(resource), "resource".into())
    }

    fn push(&mut self, op: &str, spec: &Spec, given: Given, at: String) -> Result<(), FhirError> {
        if !spec.repeats && self.items.iter().any(|(n, _, _)| *n == spec.name) {
            return Err(named(op, spec.name, at, "may be given only once".into()));
        }
        self.items.push((spec.name, given, at));
        Ok(())
    }

    pub(crate) fn add_parameters(
        &mut self,
        op: &str,
        specs: &[Spec],
        v: &Value,
    ) -> Result<(), FhirError> {
        if v.get("resourceType").and_then(Value::as_str) != Some("Parameters") {
            return Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Structure,
                format!("the body of ${op} must be a Parameters resource"),
            )
            .at("resourceType"));
        }
        let list = match v.get("parameter") {
            None => return Ok(()),
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(
                    FhirError::bad_request("Parameters.parameter must be an array")
                        .at("Parameters.parameter"),
                )
            }
        };
        for (i, p) in list.iter().enumerate() {
            let at = format!("Parameters.parameter[{i}]");
            let obj = p.as_object().ok_or_else(|| {
                FhirError::bad_request("a parameter must be an object").at(at.clone())
            })?;
            let name = obj.get("name").and_then(Value::as_str).unwrap_or_default();
            let spec = find(op, specs, name, format!("{at}.name"))?;
            let value = obj.iter().find(|(k, _)| k.starts_with("value"));
            let given = match (spec.shape, value, obj.get("resource")) {
                (Shape::Text, Some((_, Value::String(s))), None) => Given::Text(s.clone()),
                (Shape::Text, Some((_, Value::Bool(b))), None) => Given::Text(b.to_string()),
                (Shape::Text, Some((_, Value::Number(n))), None) => Given::Text(n.to_string()),
                (Shape::Meta, Some((k, m)), None) if k == "valueMeta" => Given::Json(m.clone()),
                (Shape::Coding, Some((k, c)), None) if k == "valueCoding" => Given::Json(c.clone()),
                (Shape::Resource, None, Some(r)) => Given::Json(r.clone()),
                (shape, _, _) => {
                    let want = match shape {
                        Shape::Text => "a primitive value[x]",
                        Shape::Meta => "a valueMeta",
                        Shape::Coding => "a valueCoding",
                        Shape::Resource => "a resource",
                    };
                    return Err(named(op, name, at, format!("must carry {want}")));
                }
            };
            self.push(op, spec, given, at)?;
        }
        Ok(())
    }

    /// The text of `name`, when given.
    pub(crate) fn text(&self, name: &str) -> Option<&str> {
        self.items.iter().find_map(|(n, g, _)| match g {
            Given::Text(t) if *n == name => Some(t.as_str()),
            _ => None,
        })
    }

    /// The JSON value of `name` (`valueMeta`, `resource`), when given.
    pub(crate) fn json(&self, name: &str) -> Option<&Value> {
        self.items.iter().find_map(|(n, g, _)| match g {
            Given::Json(v) if *n == name => Some(v),
            _ => None,
        })
    }

    /// Where `name` was given (`Parameters.parameter[2]`, or its query name), for issues.
    pub(crate) fn at(&self, name: &str) -> String {
        self.items
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or_else(|| name.to_owned(), |(_, _, at)| at.clone())
    }

    /// A 400 unless `name` was given.
    pub(crate) fn require(&self, op: &str, name: &str) -> Result<(), FhirError> {
        if self.items.iter().any(|(n, _, _)| *n == name) {
            Ok(())
        } else {
            Err(FhirError::new(
                StatusCode::BAD_REQUEST,
                IssueCode::Required,
                format!("${op}: the parameter '{name}' is required"),
            )
            .at(name.to_owned()))
        }
    }
}

fn find<'s>(op: &str, specs: &'s [Spec], name: &str, at: String) -> Result<&'s Spec, FhirError> {
    specs.iter().find(|s| s.name == name).ok_or_else(|| {
        let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
        named(
            op,
            name,
            at,
            if known.is_empty() {
                "is not known: this operation takes no parameters".into()
            } else {
                format!("is not known: this operation takes {}", known.join(", "))
            },
        )
    })
}

/// A `Parameters` resource with one `return` parameter of `key` (`valueMeta`, …) or a
/// `resource`.
pub(crate) fn returning(key: &str, value: Value) -> Value {
    let mut p = serde_json::Map::new();
    p.insert("name".into(), Value::String("return".into()));
    p.insert(key.into(), value);
    serde_json::json!({"resourceType": "Parameters", "parameter": [Value::Object(p)]})
}

/// A request body as JSON; `None` when it is empty.
pub(crate) async fn read_json(ctx: &Ctx, body: Body) -> Result<Option<Value>, FhirError> {
    let bytes = read_body(body, ctx.state.inner.config.max_body_bytes).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    ctx.parse_json(&bytes).map(Some)
}
