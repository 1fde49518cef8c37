//! FHIRPath (N1, as profiled by FHIR R4) for fhirlink: a parser producing a reusable [`Expr`],
//! an evaluator over FHIR resource JSON that remembers where every result node lives, and
//! FHIRPath Patch ([`patch`]) built on those locations. The crate is pure: it reads no files,
//! opens no sockets and knows no HTTP; its only contact with the outside world is the clock
//! read by `now()`/`today()`.
//!
//! Without a FHIR model, types come from the JSON itself: `resourceType`, choice suffixes
//! (`valueQuantity` is a `Quantity`), JSON kinds, and date-like strings compared with dates.
//!
//! ```
//! let patient = serde_json::json!({
//!     "resourceType": "Patient",
//!     "name": [{"given": ["Peter", "James"]}],
//! });
//! let expr = fhir_path::parse("Patient.name.given.where($this.startsWith('J'))").unwrap();
//! let items = fhir_path::evaluate(&expr, &patient).unwrap();
//! assert_eq!(items[0].to_json(), "James");
//! // Every node knows where it lives, which is what FHIRPath Patch edits.
//! let path: Vec<String> = items[0].path().unwrap().iter().map(|s| s.to_string()).collect();
//! assert_eq!(path.concat(), ".name[0].given[1]");
//! ```

mod decimal;
mod eval;
mod functions;
mod lexer;
mod parser;
pub mod patch;
mod temporal;
mod value;

use std::fmt;

pub use decimal::Decimal;
pub use temporal::{Temporal, TemporalKind};
pub use value::{Item, Node, PathSegment, Primitive, Quantity};

/// A parsed FHIRPath expression, reusable across evaluations and threads.
#[derive(Debug, Clone)]
pub struct Expr {
    ast: parser::Ast,
    text: String,
}

impl Expr {
    /// The source text the expression was parsed from.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A syntax error, with the character offset where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FHIRPath syntax error at offset {position}: {message}")]
pub struct ParseError {
    pub position: usize,
    pub message: String,
}

impl ParseError {
    pub(crate) fn new(position: usize, message: &str) -> Self {
        ParseError {
            position,
            message: message.to_string(),
        }
    }
}

/// An error raised while evaluating (FHIRPath § Errors: "execution errors").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("expected at most one item, found {0} ({1})")]
    NotSingleton(usize, String),
    #[error("unknown function '{0}'")]
    UnknownFunction(String),
    #[error("function '{name}' expects {expected} argument(s), got {got}")]
    Arity {
        name: String,
        expected: String,
        got: usize,
    },
    #[error("invalid argument to '{0}': {1}")]
    InvalidArgument(String, String),
    #[error("operand of type {0} is not valid for '{1}'")]
    InvalidOperand(String, String),
    #[error("unknown variable %{0}")]
    UnknownVariable(String),
    #[error("evaluation nested too deeply")]
    TooDeep,
    /// The evaluation would exceed its budget (see [`Options::max_items`]): the expression
    /// multiplies its collections or strings far beyond the resource it reads.
    #[error("evaluation too costly: {0}")]
    TooCostly(String),
}

/// Parses a FHIRPath expression.
pub fn parse(expr: &str) -> Result<Expr, ParseError> {
    Ok(Expr {
        ast: parser::parse_ast(expr)?,
        text: expr.to_string(),
    })
}

/// Evaluates `expr` with `resource` as the input, `%resource`, `%rootResource` and `%context`.
pub fn evaluate<'a>(
    expr: &Expr,
    resource: &'a serde_json::Value,
) -> Result<Vec<Item<'a>>, EvalError> {
    evaluate_with(expr, resource, &Options::default())
}

/// Element type information a FHIR model can supply (fhir-model is expected to implement
/// it), so that evaluation knows `Patient.birthDate` is a `date` and `Patient.gender` a
/// `code` rather than guessing from the JSON.
pub trait Model: Send + Sync {
    /// The declared type of child `element` of `parent`, where `parent` is a resource or data
    /// type name (`Patient`, `HumanName`) or, for backbone elements, the element path
    /// (`Patient.contact`). A backbone child's type is its path. Choice elements (`value[x]`,
    /// asked for as `value`) list every allowed type. `None` if there is no such element.
    fn element(&self, parent: &str, element: &str) -> Option<ElementType>;
}

/// What a [`Model`] says about one element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementType {
    /// FHIR type names (`code`, `HumanName`) or backbone paths (`Patient.contact`).
    pub types: Vec<String>,
    /// Whether the element repeats (max cardinality > 1).
    pub is_array: bool,
}

/// The work one evaluation may do unless [`Options::max_steps`] says otherwise: a step is one
/// item yielded by a subexpression, or one pair of items compared by `union`, `distinct`,
/// `intersect` and their kin. Functions like `combine` and `select` can double a collection
/// per call, so a short expression can ask for billions of items (issue #15:
/// `.select($this.combine($this))` twenty times took 4.6 s and gigabytes). The default, about
/// four million (a third of a second, a hundred megabytes at most), is generous enough for the
/// trusted expressions of search parameters on any realistic resource (navigation costs two
/// steps per element it reaches); callers evaluating an expression from a request set a
/// tighter budget.
pub const DEFAULT_MAX_STEPS: usize = 1 << 22;

/// The bytes of computed strings one evaluation may produce unless
/// [`Options::max_string_bytes`] says otherwise (`&`, `+`, `replace`, `join`...). Strings
/// read from the resource cost nothing; doubling a computed string forty times would ask
/// for a terabyte.
pub const DEFAULT_MAX_STRING_BYTES: usize = 256 << 20;

/// Evaluation options: external `%name` variables, an optional [`Model`] and the budget.
#[derive(Clone)]
pub struct Options<'m> {
    vars: Vec<(String, serde_json::Value)>,
    model: Option<&'m dyn Model>,
    max_steps: usize,
    max_string_bytes: usize,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Options {
            vars: Vec::new(),
            model: None,
            max_steps: DEFAULT_MAX_STEPS,
            max_string_bytes: DEFAULT_MAX_STRING_BYTES,
        }
    }
}

impl<'m> Options<'m> {
    /// Binds `%name` to a JSON value (an array binds a collection).
    pub fn variable(mut self, name: &str, value: serde_json::Value) -> Self {
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_string(), value));
        self
    }

    /// Types element nodes with `model` during navigation.
    pub fn model(mut self, model: &'m dyn Model) -> Self {
        self.model = Some(model);
        self
    }

    /// Bounds the work of an evaluation (see [`DEFAULT_MAX_STEPS`]); past it, evaluation
    /// fails with [`EvalError::TooCostly`].
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = steps;
        self
    }

    /// Bounds the bytes of computed strings (see [`DEFAULT_MAX_STRING_BYTES`]); past it,
    /// evaluation fails with [`EvalError::TooCostly`].
    pub fn max_string_bytes(mut self, bytes: usize) -> Self {
        self.max_string_bytes = bytes;
        self
    }
}

impl fmt::Debug for Options<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("vars", &self.vars)
            .field("model", &self.model.is_some())
            .field("max_steps", &self.max_steps)
            .field("max_string_bytes", &self.max_string_bytes)
            .finish()
    }
}

/// Like [`evaluate`], with variables and a model.
pub fn evaluate_with<'a>(
    expr: &Expr,
    resource: &'a serde_json::Value,
    options: &Options<'a>,
) -> Result<Vec<Item<'a>>, EvalError> {
    eval::Evaluator::new(resource, options).run(&expr.ast)
}

/// Evaluates `expr` with `focus` as its input and `$this`, and `resource` (the resource `focus`
/// was reached in) as `%resource`: how a composite SearchParameter's component expressions are
/// evaluated, relative to each node its own expression selected (FHIR R4
/// searchparameter.html `SearchParameter.component.expression`).
pub fn evaluate_on<'a>(
    expr: &Expr,
    focus: &Item<'a>,
    resource: &'a serde_json::Value,
) -> Result<Vec<Item<'a>>, EvalError> {
    eval::Evaluator::new(resource, &Options::default()).run_on(&expr.ast, focus.clone())
}
