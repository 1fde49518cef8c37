//! The FHIRPath evaluator: walks the AST over collections of [`Item`]s, applying FHIR JSON
//! navigation rules (arrays flatten, `value` finds `valueQuantity`, `_x` siblings carry
//! primitive extensions) and the operator semantics of FHIRPath §6 (three-valued logic,
//! empty propagation, precision-aware equality). Functions live in `functions`.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::decimal::Decimal;
use crate::parser::{Ast, BinOp, Lit, TypeSpec};
use crate::temporal::Temporal;
use crate::value::{
    calendar_of_ucum, calendar_unit, choice_type, fhir_type_is, json_primitive, Item, Json,
    ModelRef, Node, PathSegment, Primitive, Quantity,
};
use crate::{EvalError, Options};

/// Bound on evaluation nesting (function arguments, `repeat`, `descendants`).
const MAX_DEPTH: usize = 256;

pub(crate) type Coll<'a> = Vec<Item<'a>>;
pub(crate) type R<'a> = Result<Coll<'a>, EvalError>;

/// `$this`, `$index` and `$total` for the expression being evaluated.
#[derive(Clone, Default)]
pub(crate) struct Scope<'a> {
    pub(crate) this: Option<Item<'a>>,
    pub(crate) index: Option<usize>,
    pub(crate) total: Option<Coll<'a>>,
}

pub(crate) struct Evaluator<'a> {
    pub(crate) root: Item<'a>,
    vars: Vec<(String, Coll<'a>)>,
    pub(crate) now: Temporal,
    depth: std::cell::Cell<usize>,
    /// What is left of the budget ([`Options::max_steps`]); every item a subexpression
    /// yields and every pair of items compared costs a step.
    steps_left: std::cell::Cell<usize>,
    max_steps: usize,
    /// What is left of [`Options::max_string_bytes`] for computed strings.
    bytes_left: std::cell::Cell<usize>,
    max_string_bytes: usize,
    /// Compiled `matches`/`replaceMatches` patterns, so a `where()` over many items compiles
    /// each pattern once.
    pub(crate) regexes: std::cell::RefCell<Vec<(String, regex::Regex)>>,
}

fn var_items<'a>(v: &Value) -> Coll<'a> {
    let mk = |j: &Value| {
        Item::Node(Node {
            value: Some(Json::Owned(Arc::new(j.clone()))),
            ext: None,
            path: Vec::new(),
            name: None,
            type_name: None,
            detached: true,
            model: None,
        })
    };
    match v {
        Value::Array(a) => a.iter().map(mk).collect(),
        Value::Null => Vec::new(),
        other => vec![mk(other)],
    }
}

impl<'a> Evaluator<'a> {
    pub(crate) fn new(resource: &'a Value, options: &Options<'a>) -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        Evaluator {
            root: Item::Node(Node::root(resource, options.model.map(ModelRef))),
            vars: options
                .vars
                .iter()
                .map(|(n, v)| (n.clone(), var_items(v)))
                .collect(),
            now: Temporal::from_unix_millis(ms),
            depth: std::cell::Cell::new(0),
            steps_left: std::cell::Cell::new(options.max_steps),
            max_steps: options.max_steps,
            bytes_left: std::cell::Cell::new(options.max_string_bytes),
            max_string_bytes: options.max_string_bytes,
            regexes: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The steps and string bytes of the budget not yet spent.
    pub(crate) fn budget_left(&self) -> (usize, usize) {
        (self.steps_left.get(), self.bytes_left.get())
    }

    /// Spends `n` steps of the budget, or fails when fewer are left.
    pub(crate) fn charge(&self, n: usize) -> Result<(), EvalError> {
        self.afford(n)?;
        self.steps_left.set(self.steps_left.get() - n);
        Ok(())
    }

    /// Fails, without spending, when `n` more steps would exceed the budget: checked while a
    /// collection is being built, so none grows far past the budget before it is charged.
    pub(crate) fn afford(&self, n: usize) -> Result<(), EvalError> {
        if n > self.steps_left.get() {
            return Err(EvalError::TooCostly(format!(
                "the expression needs more than {} steps (items produced or compared)",
                self.max_steps
            )));
        }
        Ok(())
    }

    /// Fails, without spending, when a string of `n` bytes is more than is left of the
    /// string budget: checked before a concatenation, `join` or `replace` allocates it.
    pub(crate) fn afford_string(&self, n: usize) -> Result<(), EvalError> {
        if n > self.bytes_left.get() {
            return Err(EvalError::TooCostly(format!(
                "the expression builds more than {} bytes of strings",
                self.max_string_bytes
            )));
        }
        Ok(())
    }

    /// Charges a result: one step per item and its computed strings' bytes.
    fn charge_result(&self, c: &[Item<'a>]) -> Result<(), EvalError> {
        self.charge(c.len())?;
        let bytes = c
            .iter()
            .map(|i| match i {
                Item::Value(Primitive::String(s)) => s.len(),
                _ => 0,
            })
            .fold(0usize, usize::saturating_add);
        self.afford_string(bytes)?;
        self.bytes_left.set(self.bytes_left.get() - bytes);
        Ok(())
    }

    pub(crate) fn run(&self, ast: &Ast) -> R<'a> {
        let input = vec![self.root.clone()];
        let scope = Scope {
            this: Some(self.root.clone()),
            ..Scope::default()
        };
        self.eval(ast, &input, &scope)
    }

    /// Like [`Evaluator::run`], from `focus` instead of the root.
    pub(crate) fn run_on(&self, ast: &Ast, focus: Item<'a>) -> R<'a> {
        let scope = Scope {
            this: Some(focus.clone()),
            ..Scope::default()
        };
        self.eval(ast, &[focus], &scope)
    }

    pub(crate) fn eval(&self, ast: &Ast, input: &[Item<'a>], scope: &Scope<'a>) -> R<'a> {
        let d = self.depth.get() + 1;
        if d > MAX_DEPTH {
            return Err(EvalError::TooDeep);
        }
        self.depth.set(d);
        let r = self.eval_inner(ast, input, scope);
        self.depth.set(d - 1);
        let r = r?;
        self.charge_result(&r)?;
        Ok(r)
    }

    fn eval_inner(&self, ast: &Ast, input: &[Item<'a>], scope: &Scope<'a>) -> R<'a> {
        match ast {
            Ast::Lit(l) => Ok(lit(l).into_iter().map(Item::Value).collect()),
            Ast::Ident(name) => {
                let mut out = Vec::new();
                for it in input {
                    navigate(it, name, &mut out);
                    self.afford(out.len())?;
                }
                Ok(out)
            }
            Ast::This => Ok(scope.this.clone().into_iter().collect()),
            Ast::Index => Ok(scope
                .index
                .map(|i| Item::Value(Primitive::Integer(i as i64)))
                .into_iter()
                .collect()),
            Ast::Total => Ok(scope.total.clone().unwrap_or_default()),
            Ast::Var(name) => self.var(name),
            Ast::Invoke(lhs, rhs) => {
                let l = self.eval(lhs, input, scope)?;
                self.eval(rhs, &l, scope)
            }
            Ast::Call(name, args) => crate::functions::call(self, name, args, input, scope),
            Ast::Indexer(lhs, idx) => {
                let l = self.eval(lhs, input, scope)?;
                let i = self.eval(idx, input, scope)?;
                match singleton_int(&i, "[]")? {
                    Some(i) if i >= 0 => Ok(l.into_iter().nth(i as usize).into_iter().collect()),
                    _ => Ok(Vec::new()),
                }
            }
            Ast::Neg(inner) => {
                let v = self.eval(inner, input, scope)?;
                let Some(p) = singleton_prim(&v, "-")? else {
                    return Ok(Vec::new());
                };
                let r = match p {
                    Primitive::Integer(i) => match i.checked_neg() {
                        Some(n) => Primitive::Integer(n),
                        None => return Ok(Vec::new()),
                    },
                    Primitive::Decimal(d) => Primitive::Decimal(d.neg()),
                    Primitive::Quantity(q) => Primitive::Quantity(Quantity {
                        value: q.value.neg(),
                        unit: q.unit,
                    }),
                    other => {
                        return Err(EvalError::InvalidOperand(
                            other.type_name().into(),
                            "unary -".into(),
                        ))
                    }
                };
                Ok(vec![Item::Value(r)])
            }
            Ast::Binary(op, l, r) => self.binary(*op, l, r, input, scope),
            Ast::Is(e, ts) => {
                let v = self.eval(e, input, scope)?;
                match v.as_slice() {
                    [] => Ok(Vec::new()),
                    [x] => Ok(vec![boolean(is_type(x, ts))]),
                    _ => Err(EvalError::NotSingleton(v.len(), "is".into())),
                }
            }
            Ast::As(e, ts) => {
                let v = self.eval(e, input, scope)?;
                Ok(v.into_iter().filter(|x| is_exactly(x, ts)).collect())
            }
        }
    }

    fn var(&self, name: &str) -> R<'a> {
        if let Some((_, v)) = self.vars.iter().find(|(n, _)| n == name) {
            return Ok(v.clone());
        }
        let s = |s: &str| Ok(vec![Item::Value(Primitive::String(s.to_string()))]);
        match name {
            "resource" | "context" | "rootResource" => Ok(vec![self.root.clone()]),
            "ucum" => s("http://unitsofmeasure.org"),
            "sct" => s("http://snomed.info/sct"),
            "loinc" => s("http://loinc.org"),
            _ if name.starts_with("vs-") => {
                s(&format!("http://hl7.org/fhir/ValueSet/{}", &name[3..]))
            }
            _ if name.starts_with("ext-") => s(&format!(
                "http://hl7.org/fhir/StructureDefinition/{}",
                &name[4..]
            )),
            _ => Err(EvalError::UnknownVariable(name.to_string())),
        }
    }

    fn binary(&self, op: BinOp, l: &Ast, r: &Ast, input: &[Item<'a>], scope: &Scope<'a>) -> R<'a> {
        let a = self.eval(l, input, scope)?;
        // `and`/`or`/`implies` short-circuit where the left side decides.
        match op {
            BinOp::And | BinOp::Or | BinOp::Implies => {
                let x = to_bool(&a, "and/or")?;
                match (op, x) {
                    (BinOp::And, Some(false)) => return Ok(vec![boolean(false)]),
                    (BinOp::Or, Some(true)) => return Ok(vec![boolean(true)]),
                    (BinOp::Implies, Some(false)) => return Ok(vec![boolean(true)]),
                    _ => {}
                }
                let b = self.eval(r, input, scope)?;
                let y = to_bool(&b, "and/or")?;
                let res = match op {
                    BinOp::And => match (x, y) {
                        (_, Some(false)) => Some(false),
                        (Some(true), Some(true)) => Some(true),
                        _ => None,
                    },
                    BinOp::Or => match (x, y) {
                        (_, Some(true)) => Some(true),
                        (Some(false), Some(false)) => Some(false),
                        _ => None,
                    },
                    _ => match (x, y) {
                        (_, Some(true)) => Some(true),
                        (Some(true), Some(false)) => Some(false),
                        _ => None,
                    },
                };
                return Ok(opt_bool(res));
            }
            _ => {}
        }
        let b = self.eval(r, input, scope)?;
        binary_values(self, op, a, b)
    }
}

pub(crate) fn binary_values<'a>(ev: &Evaluator<'a>, op: BinOp, a: Coll<'a>, b: Coll<'a>) -> R<'a> {
    match op {
        BinOp::Xor => {
            let (x, y) = (to_bool(&a, "xor")?, to_bool(&b, "xor")?);
            Ok(opt_bool(match (x, y) {
                (Some(x), Some(y)) => Some(x != y),
                _ => None,
            }))
        }
        BinOp::Union => union(ev, a, b),
        BinOp::Eq | BinOp::Ne => {
            if a.is_empty() || b.is_empty() {
                return Ok(Vec::new());
            }
            let eq = coll_equal(&a, &b);
            Ok(opt_bool(eq.map(|e| if op == BinOp::Eq { e } else { !e })))
        }
        BinOp::Equiv | BinOp::NotEquiv => {
            ev.charge(a.len().saturating_mul(b.len()).saturating_mul(2))?;
            let e = coll_equivalent(&a, &b);
            Ok(vec![boolean(if op == BinOp::Equiv { e } else { !e })])
        }
        BinOp::In | BinOp::Contains => {
            let (item, coll) = if op == BinOp::In { (a, b) } else { (b, a) };
            ev.charge(coll.len())?;
            match item.len() {
                0 => Ok(Vec::new()),
                1 => Ok(vec![boolean(
                    coll.iter().any(|c| items_equal(&item[0], c) == Some(true)),
                )]),
                n => Err(EvalError::NotSingleton(n, "in/contains".into())),
            }
        }
        BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
            let (Some(x), Some(y)) = (
                singleton_item(&a, "compare")?,
                singleton_item(&b, "compare")?,
            ) else {
                return Ok(Vec::new());
            };
            let ord = compare_items(x, y)?;
            Ok(opt_bool(ord.map(|o| match op {
                BinOp::Lt => o == Ordering::Less,
                BinOp::Gt => o == Ordering::Greater,
                BinOp::Le => o != Ordering::Greater,
                _ => o != Ordering::Less,
            })))
        }
        BinOp::Concat => {
            let s = |c: &Coll| -> Result<String, EvalError> {
                Ok(match singleton_prim(c, "&")? {
                    Some(p) => p.to_string(),
                    None => String::new(),
                })
            };
            let (x, y) = (s(&a)?, s(&b)?);
            ev.afford_string(x.len().saturating_add(y.len()))?;
            Ok(vec![Item::Value(Primitive::String(x + &y))])
        }
        _ => {
            let (Some(x), Some(y)) = (singleton_prim(&a, "arith")?, singleton_prim(&b, "arith")?)
            else {
                return Ok(Vec::new());
            };
            if let (Primitive::String(p), Primitive::String(q)) = (&x, &y) {
                ev.afford_string(p.len().saturating_add(q.len()))?;
            }
            Ok(arith(op, x, y)?.map(Item::Value).into_iter().collect())
        }
    }
}

fn arith(op: BinOp, x: Primitive, y: Primitive) -> Result<Option<Primitive>, EvalError> {
    use Primitive as P;
    let bad = |x: &P| EvalError::InvalidOperand(x.type_name().into(), format!("{op:?}"));
    Ok(match (op, x, y) {
        (BinOp::Add, P::String(a), P::String(b)) => Some(P::String(a + &b)),
        (
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Mod | BinOp::IntDiv,
            P::Integer(a),
            P::Integer(b),
        ) => match op {
            BinOp::Add => a.checked_add(b).map(P::Integer),
            BinOp::Sub => a.checked_sub(b).map(P::Integer),
            BinOp::Mul => a.checked_mul(b).map(P::Integer),
            BinOp::Mod => a.checked_rem(b).map(P::Integer),
            _ => a.checked_div(b).map(P::Integer),
        },
        (_, a @ (P::Integer(_) | P::Decimal(_)), b @ (P::Integer(_) | P::Decimal(_))) => {
            let (a, b) = (
                to_dec(&a).ok_or_else(|| bad(&a))?,
                to_dec(&b).ok_or_else(|| bad(&b))?,
            );
            match op {
                BinOp::Add => a.add(b),
                BinOp::Sub => a.sub(b),
                BinOp::Mul => a.mul(b),
                BinOp::Div => a.div(b),
                BinOp::Mod => a.rem(b),
                BinOp::IntDiv => return Ok(a.int_div(b).and_then(|d| d.to_i64()).map(P::Integer)),
                _ => None,
            }
            .map(P::Decimal)
        }
        (BinOp::Add | BinOp::Sub, P::Date(t) | P::DateTime(t) | P::Time(t), P::Quantity(q)) => {
            let unit = calendar_unit(&q.unit)
                .or_else(|| calendar_of_ucum(&q.unit))
                .ok_or_else(|| {
                    EvalError::InvalidOperand(q.unit.clone(), "date arithmetic".into())
                })?;
            let amount = if op == BinOp::Add {
                q.value.to_f64()
            } else {
                -q.value.to_f64()
            };
            t.add(amount, unit).map(|r| match r.kind {
                crate::TemporalKind::Date => P::Date(r),
                crate::TemporalKind::DateTime => P::DateTime(r),
                crate::TemporalKind::Time => P::Time(r),
            })
        }
        (BinOp::Add | BinOp::Sub, P::Quantity(a), P::Quantity(b)) => {
            let (av, bv, unit) = match convert_pair(&a, &b) {
                Some(x) => x,
                None => return Ok(None),
            };
            let v = if op == BinOp::Add {
                av.add(bv)
            } else {
                av.sub(bv)
            };
            v.map(|value| P::Quantity(Quantity { value, unit }))
        }
        (BinOp::Mul | BinOp::Div, P::Quantity(a), b @ (P::Integer(_) | P::Decimal(_))) => {
            let b = to_dec(&b).ok_or_else(|| bad(&b))?;
            let v = if op == BinOp::Mul {
                a.value.mul(b)
            } else {
                a.value.div(b)
            };
            v.map(|value| {
                P::Quantity(Quantity {
                    value,
                    unit: a.unit,
                })
            })
        }
        (BinOp::Mul, a @ (P::Integer(_) | P::Decimal(_)), P::Quantity(b)) => {
            let a = to_dec(&a).ok_or_else(|| bad(&a))?;
            a.mul(b.value).map(|value| {
                P::Quantity(Quantity {
                    value,
                    unit: b.unit,
                })
            })
        }
        (BinOp::Mul | BinOp::Div, P::Quantity(a), P::Quantity(b)) => {
            let v = if op == BinOp::Mul {
                a.value.mul(b.value)
            } else {
                a.value.div(b.value)
            };
            let unit = if op == BinOp::Mul {
                if a.unit == "1" {
                    b.unit
                } else if b.unit == "1" {
                    a.unit
                } else {
                    format!("{}.{}", a.unit, b.unit)
                }
            } else if a.unit == b.unit {
                "1".to_string()
            } else {
                format!("{}/{}", a.unit, b.unit)
            };
            v.map(|value| P::Quantity(Quantity { value, unit }))
        }
        (_, x, _) => return Err(bad(&x)),
    })
}

pub(crate) fn to_dec(p: &Primitive) -> Option<Decimal> {
    match p {
        Primitive::Integer(i) => Some(Decimal::from_i64(*i)),
        Primitive::Decimal(d) => Some(*d),
        _ => None,
    }
}

pub(crate) fn lit(l: &Lit) -> Option<Primitive> {
    Some(match l {
        Lit::Empty => return None,
        Lit::Bool(b) => Primitive::Boolean(*b),
        Lit::Str(s) => Primitive::String(s.clone()),
        Lit::Int(i) => Primitive::Integer(*i),
        Lit::Dec(d) => Primitive::Decimal(*d),
        Lit::Date(t) => Primitive::Date(*t),
        Lit::DateTime(t) => Primitive::DateTime(*t),
        Lit::Time(t) => Primitive::Time(*t),
        Lit::Quantity(v, u) => Primitive::Quantity(Quantity {
            value: *v,
            unit: calendar_unit(u)
                .map(str::to_string)
                .unwrap_or_else(|| u.clone()),
        }),
    })
}

pub(crate) fn boolean<'a>(b: bool) -> Item<'a> {
    Item::Value(Primitive::Boolean(b))
}

pub(crate) fn opt_bool<'a>(b: Option<bool>) -> Coll<'a> {
    b.map(boolean).into_iter().collect()
}

/// Singleton evaluation of a collection as Boolean (§ Singleton Evaluation of Collections).
pub(crate) fn to_bool(c: &[Item], what: &str) -> Result<Option<bool>, EvalError> {
    match c {
        [] => Ok(None),
        [x] => Ok(Some(match x.to_primitive() {
            Some(Primitive::Boolean(b)) => b,
            _ => true,
        })),
        _ => Err(EvalError::NotSingleton(c.len(), what.into())),
    }
}

pub(crate) fn singleton_item<'b, 'a>(
    c: &'b [Item<'a>],
    what: &str,
) -> Result<Option<&'b Item<'a>>, EvalError> {
    match c {
        [] => Ok(None),
        [x] => Ok(Some(x)),
        _ => Err(EvalError::NotSingleton(c.len(), what.into())),
    }
}

pub(crate) fn singleton_prim(c: &[Item], what: &str) -> Result<Option<Primitive>, EvalError> {
    Ok(singleton_item(c, what)?.and_then(Item::to_primitive))
}

pub(crate) fn singleton_int(c: &[Item], what: &str) -> Result<Option<i64>, EvalError> {
    match singleton_prim(c, what)? {
        None => Ok(None),
        Some(Primitive::Integer(i)) => Ok(Some(i)),
        Some(Primitive::Decimal(d)) if d.is_integer() => Ok(d.to_i64()),
        Some(p) => Err(EvalError::InvalidArgument(
            what.into(),
            format!("expected an integer, got {}", p.type_name()),
        )),
    }
}

pub(crate) fn singleton_str(c: &[Item], what: &str) -> Result<Option<String>, EvalError> {
    match singleton_prim(c, what)? {
        None => Ok(None),
        Some(Primitive::String(s)) => Ok(Some(s)),
        Some(p) => Err(EvalError::InvalidArgument(
            what.into(),
            format!("expected a string, got {}", p.type_name()),
        )),
    }
}

// ---------------------------------------------------------------------------------------------
// Navigation

fn child_nodes<'a>(
    parent: &Node<'a>,
    key: &str,
    name: &str,
    type_name: Option<&str>,
    out: &mut Coll<'a>,
) {
    let (val, ext) = match &parent.value {
        Some(Json::Borrowed(v)) => (
            v.get(key).map(Json::Borrowed),
            v.get(format!("_{key}")).map(Json::Borrowed),
        ),
        Some(Json::Owned(v)) => (
            v.get(key).map(|x| Json::Owned(Arc::new(x.clone()))),
            v.get(format!("_{key}"))
                .map(|x| Json::Owned(Arc::new(x.clone()))),
        ),
        None => (None, None),
    };
    // The declared type: a choice suffix, else what the model says.
    let type_name = type_name.map(str::to_string).or_else(|| {
        let model = parent.model?;
        let info = model.0.element(&parent.type_name()?, name)?;
        match info.types.as_slice() {
            [one] => Some(one.clone()),
            _ => None,
        }
    });
    let mk = |value: Option<Json<'a>>, ext: Option<Json<'a>>, path: Vec<PathSegment>| {
        Item::Node(Node {
            value,
            ext,
            path,
            name: Some(name.to_string()),
            type_name: type_name.clone(),
            detached: parent.detached,
            model: parent.model,
        })
    };
    let mut base = parent.path.clone();
    base.push(PathSegment::Key(key.to_string()));
    let idx = |j: &Option<Json<'a>>, i: usize| -> Option<Json<'a>> {
        match j {
            Some(Json::Borrowed(Value::Array(a))) => {
                a.get(i).filter(|x| !x.is_null()).map(Json::Borrowed)
            }
            Some(Json::Owned(v)) => match &**v {
                Value::Array(a) => a
                    .get(i)
                    .filter(|x| !x.is_null())
                    .map(|x| Json::Owned(Arc::new(x.clone()))),
                _ => None,
            },
            _ => None,
        }
    };
    let len = |j: &Option<Json<'a>>| j.as_ref().and_then(|j| j.get().as_array().map(Vec::len));
    match (len(&val), len(&ext)) {
        (None, None) => {
            let val = val.filter(|v| !v.get().is_null());
            if val.is_some() || ext.is_some() {
                out.push(mk(val, ext, base));
            }
        }
        (a, b) => {
            let n = a.unwrap_or(0).max(b.unwrap_or(0));
            for i in 0..n {
                let (v, e) = (idx(&val, i), idx(&ext, i));
                if v.is_none() && e.is_none() {
                    continue;
                }
                let mut p = base.clone();
                p.push(PathSegment::Index(i));
                out.push(mk(v, e, p));
            }
        }
    }
}

/// Member access `name` on one item (FHIR JSON representation rules, FHIR R4 §2.6.2).
pub(crate) fn navigate<'a>(item: &Item<'a>, name: &str, out: &mut Coll<'a>) {
    let Item::Node(n) = item else {
        return;
    };
    match n.json() {
        Value::Object(obj) => {
            if obj.contains_key(name) || obj.contains_key(&format!("_{name}")) {
                child_nodes(n, name, name, None, out);
                return;
            }
            // A type name at the head of a path filters by resource type.
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                if let Some(rt) = obj.get("resourceType").and_then(Value::as_str) {
                    if fhir_type_is(rt, name) {
                        out.push(item.clone());
                    }
                    return;
                }
            }
            // Choice element: `value` matches `valueQuantity`, `_valueString`...
            for k in obj.keys() {
                let k = k.strip_prefix('_').unwrap_or(k);
                if let Some(suffix) = k.strip_prefix(name) {
                    if let Some(t) = choice_type(suffix) {
                        let before = out.len();
                        child_nodes(n, k, name, Some(t), out);
                        if out.len() > before {
                            return;
                        }
                    }
                }
            }
        }
        _ => {
            // Primitive: `id` and `extension` live in the `_x` sibling.
            if let Some(ext) = &n.ext {
                // The `_x` sibling's location: `birthDate` → `_birthDate`, `given[1]` →
                // `_given[1]`.
                let mut path = n.path.clone();
                let key_at = match path.last() {
                    Some(PathSegment::Index(_)) => path.len().checked_sub(2),
                    _ => path.len().checked_sub(1),
                };
                let mut ok = false;
                if let Some(PathSegment::Key(k)) = key_at.and_then(|i| path.get_mut(i)) {
                    *k = format!("_{k}");
                    ok = true;
                }
                let holder = Node {
                    value: Some(ext.clone()),
                    ext: None,
                    path,
                    name: n.name.clone(),
                    type_name: Some("Element".into()),
                    detached: n.detached || !ok,
                    model: n.model,
                };
                child_nodes(&holder, name, name, None, out);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Types

/// `is`/`as`/`ofType` test (§ Types): System types by value kind, FHIR types by
/// `resourceType`, choice suffix or JSON kind.
/// `as`/`ofType` test: like [`is_type`], but a FHIR primitive must have exactly the named
/// type (the R4 suite: `Patient.gender.as(string)` is empty although `gender is string`).
pub(crate) fn is_exactly(item: &Item, ts: &TypeSpec) -> bool {
    if let Item::Node(n) = item {
        if let Some(t) = n.type_name() {
            if t.starts_with(|c: char| c.is_ascii_lowercase())
                && ts.namespace.as_deref() != Some("System")
            {
                return t == ts.name;
            }
        }
    }
    is_type(item, ts)
}

pub(crate) fn is_type(item: &Item, ts: &TypeSpec) -> bool {
    let ns = ts.namespace.as_deref();
    let name = ts.name.as_str();
    match item {
        Item::Value(p) => {
            if ns == Some("FHIR") {
                return false;
            }
            let t = p.type_name();
            t == name
        }
        Item::Node(n) => {
            if ns == Some("System") {
                // FHIR primitives are not System types, except when the value is computed.
                return false;
            }
            let json = n.json();
            match n.type_name() {
                Some(t) => {
                    if fhir_type_is(&t, name) {
                        return true;
                    }
                    // Lenient: `is String` on a FHIR string-like primitive.
                    if ns.is_none() && json.is_string() {
                        return system_name_of(&t).is_some_and(|s| s == name);
                    }
                    false
                }
                None => match json {
                    Value::String(s) => match name {
                        "string" => true,
                        "date" => Temporal::parse_fhir(s).is_some_and(|t| t.is_date()),
                        "dateTime" => Temporal::parse_fhir(s).is_some(),
                        "code" | "id" | "uri" => !s.contains(char::is_whitespace),
                        _ => false,
                    },
                    Value::Object(o) => {
                        name == "Element"
                            || (name == "Quantity"
                                && o.contains_key("value")
                                && (o.contains_key("unit") || o.contains_key("code")))
                    }
                    _ => false,
                },
            }
        }
    }
}

fn system_name_of(fhir: &str) -> Option<&'static str> {
    Some(match fhir {
        "boolean" => "Boolean",
        "integer" | "unsignedInt" | "positiveInt" => "Integer",
        "decimal" => "Decimal",
        "date" => "Date",
        "dateTime" | "instant" => "DateTime",
        "time" => "Time",
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "markdown" | "oid" | "uuid"
        | "base64Binary" => "String",
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Equality, equivalence, comparison

/// `|` and `union()` (§ 6.5): the items of both, without duplicates. Each new item is
/// compared with every item kept so far, so the work is charged per comparison.
pub(crate) fn union<'a>(ev: &Evaluator<'a>, a: Coll<'a>, b: Coll<'a>) -> R<'a> {
    let mut out: Coll<'a> = Vec::new();
    for x in a.into_iter().chain(b) {
        ev.charge(out.len().max(1))?;
        if !out.iter().any(|y| items_equal(&x, y) == Some(true)) {
            out.push(x);
        }
    }
    Ok(out)
}

fn coll_equal(a: &[Item], b: &[Item]) -> Option<bool> {
    if a.len() != b.len() {
        return Some(false);
    }
    let mut unknown = false;
    for (x, y) in a.iter().zip(b) {
        match items_equal(x, y) {
            Some(false) => return Some(false),
            None => unknown = true,
            Some(true) => {}
        }
    }
    if unknown {
        None
    } else {
        Some(true)
    }
}

fn coll_equivalent(a: &[Item], b: &[Item]) -> bool {
    a.len() == b.len()
        && a.iter().all(|x| b.iter().any(|y| items_equivalent(x, y)))
        && b.iter().all(|y| a.iter().any(|x| items_equivalent(x, y)))
}

fn is_complex(i: &Item) -> bool {
    matches!(i, Item::Node(n) if n.json().is_object() && !is_quantity_json(n.json()))
}

fn is_quantity_json(v: &Value) -> bool {
    v.get("value").is_some_and(Value::is_number)
        && (v.get("code").is_some() || v.get("unit").is_some())
}

/// Converts a node-derived string to a temporal value when compared with one.
fn coerce(p: Primitive, other: &Primitive, from_node: bool) -> Primitive {
    match (&p, other) {
        (Primitive::String(s), Primitive::Date(_) | Primitive::DateTime(_)) if from_node => {
            match Temporal::parse_fhir(s) {
                Some(t) if t.is_date() => Primitive::Date(t),
                Some(t) => Primitive::DateTime(t),
                None => p,
            }
        }
        (Primitive::String(s), Primitive::Time(_)) if from_node => {
            Temporal::parse_time(s).map(Primitive::Time).unwrap_or(p)
        }
        _ => p,
    }
}

fn prim_pair(x: &Item, y: &Item) -> Option<(Primitive, Primitive)> {
    let (a, b) = (x.to_primitive()?, y.to_primitive()?);
    let a2 = coerce(a.clone(), &b, matches!(x, Item::Node(_)));
    let b2 = coerce(b, &a, matches!(y, Item::Node(_)));
    Some((a2, b2))
}

/// Whether two nodes hold the very same JSON (not merely equal JSON).
fn same_json(a: &Node, b: &Node) -> bool {
    std::ptr::eq(a.json(), b.json())
        && match (a.ext_json(), b.ext_json()) {
            (None, None) => true,
            (Some(x), Some(y)) => std::ptr::eq(x, y),
            _ => false,
        }
}

/// `=` on single items: `None` when the result is unknown (date precision).
pub(crate) fn items_equal(x: &Item, y: &Item) -> Option<bool> {
    if is_complex(x) || is_complex(y) {
        return Some(match (x, y) {
            // The same node (as `Patient.combine(Patient)` yields it) is equal to itself
            // without comparing its JSON, which may be the whole resource.
            (Item::Node(a), Item::Node(b)) if same_json(a, b) => true,
            (Item::Node(a), Item::Node(b)) => a.json() == b.json() && a.ext_json() == b.ext_json(),
            _ => false,
        });
    }
    let Some((a, b)) = prim_pair(x, y) else {
        return Some(false);
    };
    prim_equal(&a, &b)
}

pub(crate) fn prim_equal(a: &Primitive, b: &Primitive) -> Option<bool> {
    use Primitive as P;
    match (a, b) {
        (P::Integer(_) | P::Decimal(_), P::Integer(_) | P::Decimal(_)) => {
            Some(to_dec(a)?.cmp_value(&to_dec(b)?) == Ordering::Equal)
        }
        (P::Date(x) | P::DateTime(x), P::Date(y) | P::DateTime(y)) | (P::Time(x), P::Time(y)) => {
            x.compare(y).map(|o| o == Ordering::Equal)
        }
        (P::Quantity(x), P::Quantity(y)) => {
            if is_calendar_nominal(&x.unit) != is_calendar_nominal(&y.unit) && x.unit != y.unit {
                return None;
            }
            convert_pair(x, y).map(|(a, b, _)| a.cmp_value(&b) == Ordering::Equal)
        }
        _ => Some(a == b),
    }
}

/// `year` and `month` durations are not equal to UCUM `a`/`mo` (§ Quantity Equality).
fn is_calendar_nominal(u: &str) -> bool {
    matches!(u, "year" | "month")
}

pub(crate) fn items_equivalent(x: &Item, y: &Item) -> bool {
    if is_complex(x) || is_complex(y) {
        return match (x, y) {
            (Item::Node(a), Item::Node(b)) => json_equivalent(a.json(), b.json()),
            _ => false,
        };
    }
    let Some((a, b)) = prim_pair(x, y) else {
        return false;
    };
    prim_equivalent(&a, &b)
}

fn json_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let keys = |o: &serde_json::Map<String, Value>| {
                o.keys()
                    .filter(|k| k.as_str() != "id" && !k.starts_with("extension"))
                    .count()
            };
            keys(x) == keys(y)
                && x.iter()
                    .filter(|(k, _)| k.as_str() != "id" && !k.starts_with("extension"))
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equivalent(v, w)))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| json_equivalent(v, w))
        }
        _ => match (json_primitive(a, None), json_primitive(b, None)) {
            (Some(p), Some(q)) => prim_equivalent(&p, &q),
            _ => a == b,
        },
    }
}

pub(crate) fn prim_equivalent(a: &Primitive, b: &Primitive) -> bool {
    use Primitive as P;
    match (a, b) {
        (P::String(x), P::String(y)) => normalize_ws(x) == normalize_ws(y),
        (P::Integer(_) | P::Decimal(_), P::Integer(_) | P::Decimal(_)) => {
            let (Some(x), Some(y)) = (to_dec(a), to_dec(b)) else {
                return false;
            };
            let s = x.scale().min(y.scale());
            x.round(s).cmp_value(&y.round(s)) == Ordering::Equal
        }
        (P::Date(x) | P::DateTime(x), P::Date(y) | P::DateTime(y)) | (P::Time(x), P::Time(y)) => {
            x.equivalent(y)
        }
        (P::Quantity(x), P::Quantity(y)) => {
            let norm = |q: &Quantity| Quantity {
                value: q.value,
                unit: match q.unit.as_str() {
                    "year" => "a".into(),
                    "month" => "mo".into(),
                    u => u.to_string(),
                },
            };
            let (x, y) = (norm(x), norm(y));
            convert_pair(&x, &y).is_some_and(|(a, b, _)| {
                let s = a.scale().min(b.scale());
                a.round(s).cmp_value(&b.round(s)) == Ordering::Equal
            })
        }
        _ => prim_equal(a, b) == Some(true),
    }
}

fn normalize_ws(s: &str) -> String {
    s.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Ordering for `<`, `>`, ...: `Ok(None)` when unknown, an error when not comparable.
pub(crate) fn compare_items(x: &Item, y: &Item) -> Result<Option<Ordering>, EvalError> {
    use Primitive as P;
    let Some((mut a, mut b)) = prim_pair(x, y) else {
        return Err(EvalError::InvalidOperand(
            "complex".into(),
            "comparison".into(),
        ));
    };
    // Without a model, two date-like strings from the resource compare as dates.
    if let (Item::Node(_), Item::Node(_), P::String(p), P::String(q)) = (x, y, &a, &b) {
        let looks = |s: &str| s.len() >= 4 && s.bytes().take(4).all(|c| c.is_ascii_digit());
        if looks(p) && looks(q) {
            if let (Some(tp), Some(tq)) = (Temporal::parse_fhir(p), Temporal::parse_fhir(q)) {
                a = P::DateTime(tp);
                b = P::DateTime(tq);
            }
        }
    }
    Ok(match (&a, &b) {
        (P::Integer(_) | P::Decimal(_), P::Integer(_) | P::Decimal(_)) => {
            match (to_dec(&a), to_dec(&b)) {
                (Some(p), Some(q)) => Some(p.cmp_value(&q)),
                _ => None,
            }
        }
        (P::String(p), P::String(q)) => Some(p.cmp(q)),
        (P::Date(p) | P::DateTime(p), P::Date(q) | P::DateTime(q)) | (P::Time(p), P::Time(q)) => {
            p.compare(q)
        }
        (P::Quantity(p), P::Quantity(q)) => convert_pair(p, q).map(|(a, b, _)| a.cmp_value(&b)),
        _ => {
            return Err(EvalError::InvalidOperand(
                format!("{} and {}", a.type_name(), b.type_name()),
                "comparison".into(),
            ))
        }
    })
}

/// UCUM units this crate can convert between: (unit, dimension, factor to the base unit).
const UNITS: &[(&str, &str, &str)] = &[
    ("g", "mass", "1"),
    ("kg", "mass", "1000"),
    ("mg", "mass", "0.001"),
    ("ug", "mass", "0.000001"),
    ("[lb_av]", "mass", "453.59237"),
    ("m", "length", "1"),
    ("km", "length", "1000"),
    ("cm", "length", "0.01"),
    ("mm", "length", "0.001"),
    ("[in_i]", "length", "0.0254"),
    ("L", "volume", "1"),
    ("l", "volume", "1"),
    ("dL", "volume", "0.1"),
    ("mL", "volume", "0.001"),
    ("ms", "time", "0.001"),
    ("s", "time", "1"),
    ("second", "time", "1"),
    ("millisecond", "time", "0.001"),
    ("min", "time", "60"),
    ("minute", "time", "60"),
    ("h", "time", "3600"),
    ("hour", "time", "3600"),
    ("d", "time", "86400"),
    ("day", "time", "86400"),
    ("wk", "time", "604800"),
    ("week", "time", "604800"),
    ("mo", "month", "1"),
    ("month", "month", "1"),
    ("a", "year", "1"),
    ("year", "year", "1"),
];

/// Brings two quantities to a common unit: (value a, value b, unit).
pub(crate) fn convert_pair(a: &Quantity, b: &Quantity) -> Option<(Decimal, Decimal, String)> {
    if a.unit == b.unit {
        return Some((a.value, b.value, a.unit.clone()));
    }
    let find = |u: &str| UNITS.iter().find(|(n, _, _)| *n == u);
    let (ua, ub) = (find(&a.unit)?, find(&b.unit)?);
    if ua.1 != ub.1 {
        return None;
    }
    let (fa, fb) = (Decimal::parse(ua.2)?, Decimal::parse(ub.2)?);
    // Express both in the larger unit, so equivalence rounds to the coarser precision.
    if fa.cmp_value(&fb) == Ordering::Greater {
        Some((a.value, b.value.mul(fb)?.div(fa)?, a.unit.clone()))
    } else {
        Some((a.value.mul(fa)?.div(fb)?, b.value, b.unit.clone()))
    }
}
