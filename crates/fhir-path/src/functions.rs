//! FHIRPath functions (§5 of the FHIRPath N1 specification, plus the FHIR additions
//! `extension()`, `resolve()`, `hasValue()`, `getValue()`): one dispatch over the function
//! name. Functions taking expressions (`where`, `select`, `all`, `repeat`, `aggregate`, `iif`)
//! evaluate them per item with `$this`/`$index` bound; others evaluate their arguments once
//! against the function's input.

use std::cmp::Ordering;
use std::sync::Arc;

use serde_json::Value;

use crate::decimal::Decimal;
use crate::eval::{
    boolean, is_exactly, is_type, items_equal, navigate, opt_bool, singleton_int, singleton_item,
    singleton_prim, singleton_str, to_bool, to_dec, union, Coll, Evaluator, Scope, R,
};
use crate::parser::{Ast, TypeSpec};
use crate::temporal::Temporal;
use crate::value::{calendar_unit, Item, Json, Node, Primitive, Quantity};
use crate::EvalError;

/// Bound on `repeat()`/`descendants()` result size, so cyclic-looking inputs stay finite.
const MAX_REPEAT: usize = 100_000;

fn arity(name: &str, args: &[Ast], min: usize, max: usize) -> Result<(), EvalError> {
    if args.len() < min || args.len() > max {
        return Err(EvalError::Arity {
            name: name.into(),
            expected: if min == max {
                min.to_string()
            } else {
                format!("{min}..{max}")
            },
            got: args.len(),
        });
    }
    Ok(())
}

fn s<'a>(v: String) -> Item<'a> {
    Item::Value(Primitive::String(v))
}

fn int<'a>(i: i64) -> Item<'a> {
    Item::Value(Primitive::Integer(i))
}

fn dec<'a>(d: Decimal) -> Item<'a> {
    Item::Value(Primitive::Decimal(d))
}

/// A type specifier written as a function argument (`ofType(FHIR.Patient)`).
fn type_arg(a: &Ast) -> Option<TypeSpec> {
    match a {
        Ast::Ident(n) => Some(TypeSpec {
            namespace: None,
            name: n.clone(),
        }),
        Ast::Invoke(l, r) => match (&**l, &**r) {
            (Ast::Ident(ns), Ast::Ident(n)) => Some(TypeSpec {
                namespace: Some(ns.clone()),
                name: n.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

/// The string of a single-item input, for string functions (empty input → `None`).
fn input_str(input: &[Item], name: &str) -> Result<Option<String>, EvalError> {
    let it = singleton_item(input, name)?;
    if it.is_some_and(|i| i.to_primitive().is_none()) {
        return Err(EvalError::InvalidArgument(
            name.into(),
            "input must be a string, got an element".into(),
        ));
    }
    match it.and_then(Item::to_primitive) {
        None => Ok(None),
        Some(Primitive::String(s)) => Ok(Some(s)),
        Some(p) => Err(EvalError::InvalidArgument(
            name.into(),
            format!("input must be a string, got {}", p.type_name()),
        )),
    }
}

/// Most distinct patterns remembered per evaluation.
const REGEX_CACHE: usize = 16;

fn regex(ev: &Evaluator, pat: &str, name: &str, whole: bool) -> Result<regex::Regex, EvalError> {
    let p = if whole {
        format!("^(?s:{pat})$")
    } else {
        format!("(?s){pat}")
    };
    if let Some((_, re)) = ev.regexes.borrow().iter().find(|(k, _)| *k == p) {
        return Ok(re.clone());
    }
    let re = regex::RegexBuilder::new(&p)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| EvalError::InvalidArgument(name.into(), e.to_string()))?;
    let mut cache = ev.regexes.borrow_mut();
    if cache.len() < REGEX_CACHE {
        cache.push((p, re.clone()));
    }
    Ok(re)
}

/// What a function implementation sees: the evaluator, its name and argument expressions,
/// its input collection and the enclosing `$this`/`$index`/`$total`.
struct Cx<'a, 'b> {
    ev: &'b Evaluator<'a>,
    name: &'b str,
    args: &'b [Ast],
    input: &'b [Item<'a>],
    scope: &'b Scope<'a>,
}

impl<'a> Cx<'a, '_> {
    /// Arguments are evaluated against `$this` of the enclosing expression (§ Functions), not
    /// against the function's input: in `name.select(use.union(given))`, `given` is the name's.
    fn arg(&self, i: usize) -> R<'a> {
        match self.args.get(i) {
            Some(a) => {
                let this: Coll<'a> = self.scope.this.clone().into_iter().collect();
                self.ev.eval(a, &this, self.scope)
            }
            None => Ok(Vec::new()),
        }
    }

    /// Evaluates a lambda argument for one item, with `$this`, `$index` and `$total` bound.
    fn per_item(&self, a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>) -> R<'a> {
        let sc = Scope {
            this: Some(it.clone()),
            index: Some(i),
            total,
        };
        self.ev.eval(a, std::slice::from_ref(it), &sc)
    }
}

/// Calls function `name`. Each function is its own small Rust function so that nested
/// calls use little stack per level.
pub(crate) fn call<'a>(
    ev: &Evaluator<'a>,
    name: &str,
    args: &[Ast],
    input: &[Item<'a>],
    scope: &Scope<'a>,
) -> R<'a> {
    let cx = Cx {
        ev,
        name,
        args,
        input,
        scope,
    };
    match name {
        // --- Existence (§5.1)
        "empty" => fn_empty(&cx),
        "exists" => fn_exists(&cx),
        "all" => fn_all(&cx),
        "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => fn_all_true(&cx),
        "subsetOf" | "supersetOf" => fn_subset_of(&cx),
        "isDistinct" => fn_is_distinct(&cx),
        "distinct" => fn_distinct(&cx),
        "count" => fn_count(&cx),
        // --- Filtering and projection (§5.2)
        "where" => fn_where(&cx),
        "select" => fn_select(&cx),
        "repeat" => fn_repeat(&cx),
        "ofType" => fn_of_type(&cx),
        "is" | "as" => fn_is(&cx),
        // --- Subsetting (§5.3)
        "single" => fn_single(&cx),
        "first" => fn_first(&cx),
        "last" => fn_last(&cx),
        "tail" => fn_tail(&cx),
        "skip" | "take" => fn_skip(&cx),
        "intersect" => fn_intersect(&cx),
        "exclude" => fn_exclude(&cx),
        // --- Combining (§5.4)
        "union" => fn_union(&cx),
        "combine" => fn_combine(&cx),
        // --- Conversion (§5.5)
        "iif" => fn_iif(&cx),
        "toBoolean" | "convertsToBoolean" => fn_to_boolean(&cx),
        "toInteger" | "convertsToInteger" => fn_to_integer(&cx),
        "toDecimal" | "convertsToDecimal" => fn_to_decimal(&cx),
        "toString" | "convertsToString" => fn_to_string(&cx),
        "toDate" | "convertsToDate" => fn_to_date(&cx),
        "toDateTime" | "convertsToDateTime" => fn_to_date_time(&cx),
        "toTime" | "convertsToTime" => fn_to_time(&cx),
        "toQuantity" | "convertsToQuantity" => fn_to_quantity(&cx),
        // --- String manipulation (§5.6)
        "indexOf" => fn_index_of(&cx),
        "substring" => fn_substring(&cx),
        "startsWith" | "endsWith" | "contains" => fn_starts_with(&cx),
        "upper" | "lower" | "trim" | "length" | "toChars" | "encode" | "decode" | "escape"
        | "unescape" => fn_upper(&cx),
        "replace" => fn_replace(&cx),
        "matches" | "matchesFull" => fn_matches(&cx),
        "replaceMatches" => fn_replace_matches(&cx),
        "split" => fn_split(&cx),
        "join" => fn_join(&cx),
        // --- Math (§5.7)
        "abs" | "ceiling" | "floor" | "truncate" | "sqrt" | "exp" | "ln" | "round" | "log"
        | "power" => fn_abs(&cx),
        // --- Tree navigation (§5.8)
        "children" => fn_children(&cx),
        "descendants" => fn_descendants(&cx),
        // --- Utility (§5.9)
        "trace" => fn_trace(&cx),
        "now" => fn_now(&cx),
        "timeOfDay" => fn_time_of_day(&cx),
        "today" => fn_today(&cx),
        "not" => fn_not(&cx),
        "aggregate" => fn_aggregate(&cx),
        "sum" | "min" | "max" | "avg" => fn_sum(&cx),
        "sort" => fn_sort(&cx),
        "type" => fn_type(&cx),
        "precision" => fn_precision(&cx),
        "lowBoundary" | "highBoundary" => fn_low_boundary(&cx),
        "comparable" => fn_comparable(&cx),
        // --- FHIR additions (FHIR R4 §2.1.9.2)
        "extension" => fn_extension(&cx),
        "hasValue" => fn_has_value(&cx),
        "getValue" => fn_get_value(&cx),
        "resolve" => fn_resolve(&cx),
        "htmlChecks" | "htmlchecks" => fn_html_checks(&cx),
        _ => Err(EvalError::UnknownFunction(name.into())),
    }
}

fn fn_empty<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 0, 0)?;
    one(input.is_empty())
}

fn fn_exists<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 0, 1)?;
    match args.first() {
        None => one(!input.is_empty()),
        Some(a) => {
            for (i, it) in input.iter().enumerate() {
                if to_bool(&per_item(a, it, i, None)?, "exists")? == Some(true) {
                    return one(true);
                }
            }
            one(false)
        }
    }
}

fn fn_all<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    for (i, it) in input.iter().enumerate() {
        if to_bool(&per_item(&args[0], it, i, None)?, "all")? != Some(true) {
            return one(false);
        }
    }
    one(true)
}

fn fn_all_true<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 0, 0)?;
    let bools = input
        .iter()
        .map(|i| match i.to_primitive() {
            Some(Primitive::Boolean(b)) => Ok(Some(b)),
            _ => Err(EvalError::InvalidArgument(
                name.into(),
                "input must contain only Booleans".into(),
            )),
        })
        .collect::<Result<Vec<Option<bool>>, EvalError>>()?;
    one(match name {
        "allTrue" => bools.iter().all(|b| *b == Some(true)),
        "anyTrue" => bools.contains(&Some(true)),
        "allFalse" => bools.iter().all(|b| *b == Some(false)),
        _ => bools.contains(&Some(false)),
    })
}

fn fn_subset_of<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    let other = arg(0)?;
    let (small, big) = if name == "subsetOf" {
        (input, other.as_slice())
    } else {
        (other.as_slice(), input)
    };
    cx.ev.charge(small.len().saturating_mul(big.len()))?;
    one(small
        .iter()
        .all(|x| big.iter().any(|y| items_equal(x, y) == Some(true))))
}

fn fn_is_distinct<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 0, 0)?;
    one(union(cx.ev, input.to_vec(), Vec::new())?.len() == input.len())
}

fn fn_distinct<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    union(cx.ev, input.to_vec(), Vec::new())
}

fn fn_count<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(vec![int(input.len() as i64)])
}

fn fn_where<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    arity(name, args, 1, 1)?;
    let mut out = Vec::new();
    for (i, it) in input.iter().enumerate() {
        if to_bool(&per_item(&args[0], it, i, None)?, "where")? == Some(true) {
            out.push(it.clone());
        }
    }
    Ok(out)
}

fn fn_select<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    arity(name, args, 1, 1)?;
    let mut out = Vec::new();
    for (i, it) in input.iter().enumerate() {
        out.extend(per_item(&args[0], it, i, None)?);
    }
    Ok(out)
}

fn fn_repeat<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    arity(name, args, 1, 1)?;
    let mut out: Coll<'a> = Vec::new();
    // Nodes are the same when they live at the same place; computed values when equal.
    let mut seen: std::collections::HashSet<Vec<crate::PathSegment>> = Default::default();
    let mut values: Coll<'a> = Vec::new();
    let mut frontier: Coll<'a> = input.to_vec();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for (i, it) in frontier.iter().enumerate() {
            for r in per_item(&args[0], it, i, None)? {
                let new = match &r {
                    Item::Node(n) if !n.detached => seen.insert(n.path.clone()),
                    _ => {
                        cx.ev.charge(values.len())?;
                        let dup = values.iter().any(|o| items_equal(o, &r) == Some(true));
                        if !dup {
                            values.push(r.clone());
                        }
                        !dup
                    }
                };
                if new {
                    out.push(r.clone());
                    next.push(r);
                }
            }
        }
        if out.len() > MAX_REPEAT {
            return Err(EvalError::TooDeep);
        }
        frontier = next;
    }
    Ok(out)
}

fn fn_of_type<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 1, 1)?;
    let ts = type_arg(&args[0])
        .ok_or_else(|| EvalError::InvalidArgument(name.into(), "expected a type".into()))?;
    check_type(&ts)?;
    Ok(input
        .iter()
        .filter(|i| is_exactly(i, &ts))
        .cloned()
        .collect())
}

fn fn_is<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    let ts = type_arg(&args[0])
        .ok_or_else(|| EvalError::InvalidArgument(name.into(), "expected a type".into()))?;
    check_type(&ts)?;
    match singleton_item(input, name)? {
        None => Ok(Vec::new()),
        Some(i) if name == "is" => one(is_type(i, &ts)),
        Some(i) => Ok(if is_exactly(i, &ts) {
            vec![i.clone()]
        } else {
            Vec::new()
        }),
    }
}

fn fn_single<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(singleton_item(input, name)?.cloned().into_iter().collect())
}

fn fn_first<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(input.first().cloned().into_iter().collect())
}

fn fn_last<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(input.last().cloned().into_iter().collect())
}

fn fn_tail<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(input.iter().skip(1).cloned().collect())
}

fn fn_skip<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let n = singleton_int(&arg(0)?, name)?.unwrap_or(0).max(0) as usize;
    Ok(if name == "skip" {
        input.iter().skip(n).cloned().collect()
    } else {
        input.iter().take(n).cloned().collect()
    })
}

fn fn_intersect<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let other = arg(0)?;
    let mut out: Coll<'a> = Vec::new();
    for x in input {
        cx.ev.charge(other.len().saturating_add(out.len()))?;
        if other.iter().any(|y| items_equal(x, y) == Some(true))
            && !out.iter().any(|y| items_equal(x, y) == Some(true))
        {
            out.push(x.clone());
        }
    }
    Ok(out)
}

fn fn_exclude<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let other = arg(0)?;
    cx.ev.charge(input.len().saturating_mul(other.len()))?;
    Ok(input
        .iter()
        .filter(|x| !other.iter().any(|y| items_equal(x, y) == Some(true)))
        .cloned()
        .collect())
}

fn fn_union<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    union(cx.ev, input.to_vec(), arg(0)?)
}

fn fn_combine<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let mut v = input.to_vec();
    v.extend(arg(0)?);
    Ok(v)
}

fn fn_iif<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let scope = cx.scope;
    arity(name, args, 2, 3)?;
    if input.len() > 1 {
        return Err(EvalError::NotSingleton(input.len(), "iif".into()));
    }
    // The criterion sees the input item as `$this`.
    let sc = Scope {
        this: input.first().cloned().or_else(|| scope.this.clone()),
        index: scope.index,
        total: scope.total.clone(),
    };
    let focus: Coll<'a> = sc.this.clone().into_iter().collect();
    let crit = ev.eval(&args[0], &focus, &sc)?;
    let c = match singleton_prim(&crit, name)? {
        None => None,
        Some(Primitive::Boolean(b)) => Some(b),
        Some(p) => {
            return Err(EvalError::InvalidArgument(
                name.into(),
                format!("criterion must be Boolean, got {}", p.type_name()),
            ))
        }
    };
    let pick = if c == Some(true) { 1 } else { 2 };
    match args.get(pick) {
        Some(a) => ev.eval(a, &focus, &sc),
        None => Ok(Vec::new()),
    }
}

fn fn_to_boolean<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, to_boolean)
}

fn fn_to_integer<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| match p {
        Primitive::Integer(i) => Some(Primitive::Integer(*i)),
        Primitive::Boolean(b) => Some(Primitive::Integer(i64::from(*b))),
        Primitive::String(s) => {
            let t = s.strip_prefix('+').unwrap_or(s);
            if t.strip_prefix('-')
                .unwrap_or(t)
                .bytes()
                .all(|b| b.is_ascii_digit())
            {
                t.parse().ok().map(Primitive::Integer)
            } else {
                None
            }
        }
        _ => None,
    })
}

fn fn_to_decimal<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| match p {
        Primitive::Integer(i) => Some(Primitive::Decimal(Decimal::from_i64(*i))),
        Primitive::Decimal(d) => Some(Primitive::Decimal(*d)),
        Primitive::Boolean(b) => Some(Primitive::Decimal(Decimal::from_i64(i64::from(*b)))),
        Primitive::String(s) if !s.contains(['e', 'E']) => {
            Decimal::parse(s).map(Primitive::Decimal)
        }
        _ => None,
    })
}

fn fn_to_string<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| Some(Primitive::String(p.to_string())))
}

fn fn_to_date<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| match p {
        Primitive::Date(t) => Some(Primitive::Date(*t)),
        Primitive::DateTime(t) => {
            let mut d = *t;
            d.kind = crate::TemporalKind::Date;
            d.precision = d.precision.min(3);
            d.tz = None;
            Some(Primitive::Date(d))
        }
        Primitive::String(s) => Temporal::parse_fhir(s).map(|t| {
            let mut d = t;
            d.kind = crate::TemporalKind::Date;
            d.precision = d.precision.min(3);
            Primitive::Date(d)
        }),
        _ => None,
    })
}

fn fn_to_date_time<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| match p {
        Primitive::Date(t) | Primitive::DateTime(t) => {
            let mut d = *t;
            d.kind = crate::TemporalKind::DateTime;
            Some(Primitive::DateTime(d))
        }
        Primitive::String(s) => Temporal::parse_fhir(s).map(|mut t| {
            t.kind = crate::TemporalKind::DateTime;
            Primitive::DateTime(t)
        }),
        _ => None,
    })
}

fn fn_to_time<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    convert(name, input, |p| match p {
        Primitive::Time(t) => Some(Primitive::Time(*t)),
        Primitive::String(s) => Temporal::parse_time(s).map(Primitive::Time),
        _ => None,
    })
}

fn fn_to_quantity<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 0, 1)?;
    let target = singleton_str(&arg(0)?, name)?;
    convert(name, input, |p| {
        let q = match p {
            Primitive::Integer(_) | Primitive::Decimal(_) => Some(Quantity {
                value: to_dec(p)?,
                unit: "1".into(),
            }),
            Primitive::Quantity(q) => Some(q.clone()),
            Primitive::String(s) => parse_quantity(s),
            Primitive::Boolean(b) => Some(Quantity {
                value: Decimal::from_i64(i64::from(*b)),
                unit: "1".into(),
            }),
            _ => None,
        }?;
        match &target {
            None => Some(Primitive::Quantity(q)),
            Some(u) => {
                if q.unit == *u {
                    return Some(Primitive::Quantity(q));
                }
                // Scale by how many target units one source unit is.
                let unit = |unit: &str| Quantity {
                    value: Decimal::from_i64(1),
                    unit: unit.to_string(),
                };
                let (a, b, common) = crate::eval::convert_pair(&unit(&q.unit), &unit(u))?;
                // Both are expressed in the larger unit: a = 1 source, b = 1 target.
                let factor = if common == *u { a } else { a.div(b)? };
                Some(Primitive::Quantity(Quantity {
                    value: q.value.mul(factor)?,
                    unit: u.clone(),
                }))
            }
        }
    })
}

fn fn_index_of<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let (Some(st), Some(sub)) = (input_str(input, name)?, singleton_str(&arg(0)?, name)?) else {
        return Ok(Vec::new());
    };
    Ok(vec![int(match st.find(&sub) {
        Some(b) => st[..b].chars().count() as i64,
        None => -1,
    })])
}

fn fn_substring<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 2)?;
    let Some(st) = input_str(input, name)? else {
        return Ok(Vec::new());
    };
    let Some(start) = singleton_int(&arg(0)?, name)? else {
        return Ok(Vec::new());
    };
    let chars: Vec<char> = st.chars().collect();
    if start < 0 || start as usize >= chars.len() {
        return Ok(Vec::new());
    }
    let len = if args.len() > 1 {
        match singleton_int(&arg(1)?, name)? {
            Some(l) => l.max(0) as usize,
            None => chars.len(),
        }
    } else {
        chars.len()
    };
    let start = start as usize;
    let end = start.saturating_add(len).min(chars.len());
    Ok(vec![s(chars[start..end].iter().collect())])
}

fn fn_starts_with<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    let (Some(st), Some(sub)) = (input_str(input, name)?, singleton_str(&arg(0)?, name)?) else {
        return Ok(Vec::new());
    };
    one(match name {
        "startsWith" => st.starts_with(&sub),
        "endsWith" => st.ends_with(&sub),
        _ => st.contains(&sub),
    })
}

fn fn_upper<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 0, 1)?;
    let Some(st) = input_str(input, name)? else {
        return Ok(Vec::new());
    };
    Ok(match name {
        "upper" => vec![s(st.to_uppercase())],
        "lower" => vec![s(st.to_lowercase())],
        "trim" => vec![s(st.trim().to_string())],
        "length" => vec![int(st.chars().count() as i64)],
        "toChars" => {
            cx.ev.afford(st.len())?;
            st.chars().map(|c| s(c.to_string())).collect()
        }
        _ => {
            let how = singleton_str(&arg(0)?, name)?.unwrap_or_default();
            codec(name, &how, &st).map(s).into_iter().collect()
        }
    })
}

fn fn_replace<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 2, 2)?;
    let (Some(st), Some(pat), Some(rep)) = (
        input_str(input, name)?,
        singleton_str(&arg(0)?, name)?,
        singleton_str(&arg(1)?, name)?,
    ) else {
        return Ok(Vec::new());
    };
    // The result's length, known before it is built: every match becomes `rep`.
    let matches = if pat.is_empty() {
        st.chars().count() + 1
    } else {
        st.matches(pat.as_str()).count()
    };
    cx.ev
        .afford_string(matches.saturating_mul(rep.len()).saturating_add(st.len()))?;
    if pat.is_empty() {
        // § replace: an empty pattern surrounds every character with the substitution.
        let mut out = rep.clone();
        for c in st.chars() {
            out.push(c);
            out.push_str(&rep);
        }
        return Ok(vec![s(out)]);
    }
    Ok(vec![s(st.replace(&pat, &rep))])
}

fn fn_matches<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    let (Some(st), Some(pat)) = (input_str(input, name)?, singleton_str(&arg(0)?, name)?) else {
        return Ok(Vec::new());
    };
    one(regex(cx.ev, &pat, name, name == "matchesFull")?.is_match(&st))
}

fn fn_replace_matches<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 2, 2)?;
    let (Some(st), Some(pat), Some(rep)) = (
        input_str(input, name)?,
        singleton_str(&arg(0)?, name)?,
        singleton_str(&arg(1)?, name)?,
    ) else {
        return Ok(Vec::new());
    };
    if pat.is_empty() {
        return Ok(vec![s(st)]);
    }
    let re = regex(cx.ev, &pat, name, false)?;
    // A replacement may repeat the match (`$0$0`), so the length is counted as it grows and
    // the rest is skipped once it is over the budget.
    let mut built = st.len();
    let mut over = false;
    let out = re.replace_all(&st, |caps: &regex::Captures| {
        let mut piece = String::new();
        if !over {
            caps.expand(&rep, &mut piece);
            built = built.saturating_add(piece.len());
            over = cx.ev.afford_string(built).is_err();
        }
        if over {
            piece.clear();
        }
        piece
    });
    if over {
        cx.ev.afford_string(built)?;
    }
    Ok(vec![s(out.into_owned())])
}

fn fn_split<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let (Some(st), Some(sep)) = (input_str(input, name)?, singleton_str(&arg(0)?, name)?) else {
        return Ok(Vec::new());
    };
    cx.ev.afford(st.len().saturating_add(1))?;
    Ok(st.split(sep.as_str()).map(|p| s(p.to_string())).collect())
}

fn fn_join<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 0, 1)?;
    let sep = singleton_str(&arg(0)?, name)?.unwrap_or_default();
    let parts: Vec<String> = input
        .iter()
        .filter_map(|i| i.to_primitive().map(|p| p.to_string()))
        .collect();
    let len = parts
        .iter()
        .map(|p| p.len().saturating_add(sep.len()))
        .fold(0usize, usize::saturating_add);
    cx.ev.afford_string(len)?;
    Ok(vec![s(parts.join(&sep))])
}

fn fn_abs<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    math(name, args, input, |i| cx.arg(i))
}

fn fn_children<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    let mut out = Vec::new();
    for it in input {
        children(it, &mut out);
        cx.ev.afford(out.len())?;
    }
    Ok(out)
}

fn fn_descendants<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    let mut out = Vec::new();
    let mut frontier = input.to_vec();
    while !frontier.is_empty() {
        let mut next = Vec::new();
        for it in &frontier {
            children(it, &mut next);
            cx.ev.afford(out.len().saturating_add(next.len()))?;
        }
        cx.ev.charge(next.len())?;
        out.extend(next.iter().cloned());
        if out.len() > MAX_REPEAT {
            return Err(EvalError::TooDeep);
        }
        frontier = next;
    }
    Ok(out)
}

fn fn_trace<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 1, 2)?;
    Ok(input.to_vec())
}

fn fn_now<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    arity(name, args, 0, 0)?;
    Ok(vec![Item::Value(Primitive::DateTime(ev.now))])
}

fn fn_time_of_day<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    arity(name, args, 0, 0)?;
    let mut t = ev.now;
    t.kind = crate::TemporalKind::Time;
    t.tz = None;
    Ok(vec![Item::Value(Primitive::Time(t))])
}

fn fn_today<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    arity(name, args, 0, 0)?;
    let mut t = ev.now;
    t.kind = crate::TemporalKind::Date;
    t.precision = 3;
    t.tz = None;
    Ok(vec![Item::Value(Primitive::Date(t))])
}

fn fn_not<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(opt_bool(to_bool(input, name)?.map(|b| !b)))
}

fn fn_aggregate<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let scope = cx.scope;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    arity(name, args, 1, 2)?;
    let mut total = match args.get(1) {
        Some(a) => ev.eval(a, input, scope)?,
        None => Vec::new(),
    };
    for (i, it) in input.iter().enumerate() {
        total = per_item(&args[0], it, i, Some(total))?;
    }
    Ok(total)
}

fn fn_sum<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let input = cx.input;
    aggregate_fn(cx.ev, name, input)
}

fn fn_sort<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let args = cx.args;
    let input = cx.input;
    let per_item =
        |a: &Ast, it: &Item<'a>, i: usize, total: Option<Coll<'a>>| cx.per_item(a, it, i, total);
    // Each criterion is evaluated per item; a leading `-` sorts descending.
    let mut keyed = Vec::new();
    for (i, it) in input.iter().enumerate() {
        let mut keys = Vec::new();
        for a in args {
            let (expr, desc) = match a {
                Ast::Neg(inner) => (&**inner, true),
                other => (other, false),
            };
            keys.push((per_item(expr, it, i, None)?, desc));
        }
        keyed.push((it.clone(), keys));
    }
    let mut err = None;
    let cmp =
        |a: &Item, b: &Item, err: &mut Option<EvalError>| match crate::eval::compare_items(a, b) {
            Ok(Some(o)) => o,
            Ok(None) => Ordering::Equal,
            Err(e) => {
                *err = Some(e);
                Ordering::Equal
            }
        };
    keyed.sort_by(|(a, ka), (b, kb)| {
        if args.is_empty() {
            return cmp(a, b, &mut err);
        }
        for ((x, desc), (y, _)) in ka.iter().zip(kb) {
            // Items without a key sort first in either direction.
            let o = match (x.first(), y.first()) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Less,
                (Some(_), None) => Ordering::Greater,
                (Some(p), Some(q)) => {
                    let o = cmp(p, q, &mut err);
                    if *desc {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
    if let Some(e) = err {
        return Err(e);
    }
    Ok(keyed.into_iter().map(|(i, _)| i).collect())
}

fn fn_type<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(input.iter().map(type_info).collect())
}

fn fn_precision<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(match singleton_prim(input, name)? {
        Some(Primitive::Decimal(d)) => vec![int(i64::from(d.scale()))],
        Some(Primitive::Integer(_)) => vec![int(0)],
        Some(Primitive::Date(t) | Primitive::DateTime(t) | Primitive::Time(t)) => {
            let digits = [0, 4, 6, 8, 10, 12, 14, 17];
            let p = usize::from(t.precision).min(7);
            let d = if t.kind == crate::TemporalKind::Time {
                digits[p] - 8
            } else {
                digits[p]
            };
            vec![int(d)]
        }
        _ => Vec::new(),
    })
}

fn fn_low_boundary<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 0, 1)?;
    let high = name == "highBoundary";
    let digits = if args.is_empty() {
        None
    } else {
        singleton_int(&arg(0)?, name)?
    };
    let Some(mut p) = singleton_prim(input, name)? else {
        return Ok(Vec::new());
    };
    // A date-like string of the resource is a date/dateTime without a model to say so.
    if let (Primitive::String(s), [Item::Node(_)]) = (&p, input) {
        if let Some(t) = Temporal::parse_fhir(s) {
            // Read as dateTime (e.g. Period.start), the commoner FHIR type.
            let mut t = t;
            t.kind = crate::TemporalKind::DateTime;
            p = Primitive::DateTime(t);
        }
    }
    let dec_bound = |d: Decimal| -> Option<Decimal> {
        let digits = digits.unwrap_or(8);
        if !(0..=28).contains(&digits) {
            return None;
        }
        let half = Decimal::parse(&format!("0.{}5", "0".repeat(d.scale() as usize)))?;
        let b = if high { d.add(half)? } else { d.sub(half)? };
        Some(b.floor_to(digits as u32, high))
    };
    Ok(match p {
        Primitive::Integer(i) => dec_bound(Decimal::from_i64(i))
            .map(dec)
            .into_iter()
            .collect(),
        Primitive::Decimal(d) => dec_bound(d).map(dec).into_iter().collect(),
        Primitive::Quantity(q) => dec_bound(q.value)
            .map(|value| {
                Item::Value(Primitive::Quantity(Quantity {
                    value,
                    unit: q.unit,
                }))
            })
            .into_iter()
            .collect(),
        Primitive::Date(t) | Primitive::DateTime(t) | Primitive::Time(t) => {
            let default = match t.kind {
                crate::TemporalKind::Date => 8,
                crate::TemporalKind::DateTime => 17,
                crate::TemporalKind::Time => 9,
            };
            t.boundary(digits.unwrap_or(default), high)
                .map(|b| {
                    Item::Value(match b.kind {
                        crate::TemporalKind::Date => Primitive::Date(b),
                        crate::TemporalKind::DateTime => Primitive::DateTime(b),
                        crate::TemporalKind::Time => Primitive::Time(b),
                    })
                })
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    })
}

fn fn_comparable<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 1, 1)?;
    match (
        singleton_prim(input, name)?,
        singleton_prim(&arg(0)?, name)?,
    ) {
        (Some(Primitive::Quantity(a)), Some(Primitive::Quantity(b))) => {
            one(crate::eval::convert_pair(&a, &b).is_some())
        }
        _ => Ok(Vec::new()),
    }
}

fn fn_extension<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let arg = |i: usize| cx.arg(i);
    arity(name, args, 1, 1)?;
    let Some(url) = singleton_str(&arg(0)?, name)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for it in input {
        let mut exts = Vec::new();
        navigate(it, "extension", &mut exts);
        out.extend(exts.into_iter().filter(|e| {
            e.as_node()
                .and_then(|n| n.json().get("url"))
                .and_then(Value::as_str)
                == Some(url.as_str())
        }));
    }
    Ok(out)
}

fn fn_has_value<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    let one = |b: bool| -> R<'a> { Ok(vec![boolean(b)]) };
    arity(name, args, 0, 0)?;
    one(match input {
        [Item::Node(n)] => n.value.is_some() && !n.json().is_object() && !n.json().is_array(),
        [Item::Value(_)] => true,
        _ => false,
    })
}

fn fn_get_value<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    Ok(match input {
        [Item::Node(n)] if n.value.is_some() && !n.json().is_object() => {
            vec![input[0].clone()]
        }
        [Item::Value(_)] => vec![input[0].clone()],
        _ => Vec::new(),
    })
}

fn fn_resolve<'a>(cx: &Cx<'a, '_>) -> R<'a> {
    let ev = cx.ev;
    let name = cx.name;
    let args = cx.args;
    let input = cx.input;
    arity(name, args, 0, 0)?;
    let mut out = Vec::new();
    for it in input {
        if let Some(r) = resolve(ev, it) {
            out.push(r);
        }
    }
    Ok(out)
}

fn fn_html_checks<'a>(_cx: &Cx<'a, '_>) -> R<'a> {
    Ok(vec![boolean(true)])
}

/// `type()`: a `{namespace, name}` TypeInfo (§ Reflection).
fn type_info<'a>(it: &Item<'a>) -> Item<'a> {
    let (ns, name) = match it {
        Item::Value(p) => ("System", p.type_name().to_string()),
        Item::Node(n) => (
            "FHIR",
            n.type_name()
                .map(|t| {
                    if t.contains('.') {
                        "BackboneElement".into()
                    } else {
                        t
                    }
                })
                .unwrap_or_else(|| match n.json() {
                    Value::String(_) => "string".into(),
                    _ => "Element".into(),
                }),
        ),
    };
    let mut m = serde_json::Map::new();
    m.insert("namespace".into(), Value::String(ns.into()));
    m.insert("name".into(), Value::String(name));
    Item::Node(Node {
        value: Some(Json::Owned(Arc::new(Value::Object(m)))),
        ext: None,
        path: Vec::new(),
        name: None,
        type_name: Some("TypeInfo".into()),
        detached: true,
        model: None,
    })
}

/// Rejects type names that are neither System types, FHIR data types nor resource-like names.
fn check_type(ts: &TypeSpec) -> Result<(), EvalError> {
    const SYSTEM: &[&str] = &[
        "Boolean", "Integer", "Decimal", "String", "Date", "DateTime", "Time", "Quantity",
    ];
    let ok = SYSTEM.contains(&ts.name.as_str())
        || crate::value::FHIR_TYPES.contains(&ts.name.as_str())
        || ts.name.starts_with(|c: char| c.is_ascii_uppercase());
    if ok {
        Ok(())
    } else {
        Err(EvalError::InvalidArgument(
            "type".into(),
            format!("unknown type '{}'", ts.name),
        ))
    }
}

fn convert<'a>(
    name: &str,
    input: &[Item<'a>],
    f: impl Fn(&Primitive) -> Option<Primitive>,
) -> R<'a> {
    let Some(it) = singleton_item(input, name)? else {
        return Ok(Vec::new());
    };
    let r = it.to_primitive().as_ref().and_then(f);
    if name.starts_with("convertsTo") {
        return Ok(vec![boolean(r.is_some())]);
    }
    Ok(r.map(Item::Value).into_iter().collect())
}

fn to_boolean(p: &Primitive) -> Option<Primitive> {
    let b = match p {
        Primitive::Boolean(b) => *b,
        Primitive::Integer(1) => true,
        Primitive::Integer(0) => false,
        Primitive::Decimal(d) if d.cmp_value(&Decimal::from_i64(1)) == Ordering::Equal => true,
        Primitive::Decimal(d) if d.is_zero() => false,
        Primitive::String(s) => match s.to_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "1" | "1.0" => true,
            "false" | "f" | "no" | "n" | "0" | "0.0" => false,
            _ => return None,
        },
        _ => return None,
    };
    Some(Primitive::Boolean(b))
}

/// Parses `5 'mg'`, `4 days` or `1.5` into a quantity.
fn parse_quantity(s: &str) -> Option<Quantity> {
    let s = s.trim();
    let (num, rest) = match s.find(' ') {
        Some(i) => (&s[..i], s[i..].trim()),
        None => (s, ""),
    };
    let value = Decimal::parse(num)?;
    if !num
        .bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-' || b == b'+')
    {
        return None;
    }
    let unit = if rest.is_empty() {
        "1".to_string()
    } else if let Some(u) = rest.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        u.to_string()
    } else {
        calendar_unit(rest)?.to_string()
    };
    Some(Quantity { value, unit })
}

fn codec(name: &str, how: &str, st: &str) -> Option<String> {
    match (name, how) {
        ("encode" | "escape", "html") => Some(
            st.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
                .replace('\'', "&#39;"),
        ),
        ("decode" | "unescape", "html") => Some(
            st.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&"),
        ),
        ("encode" | "escape", "json") => {
            let q = serde_json::to_string(st).ok()?;
            Some(q[1..q.len() - 1].to_string())
        }
        ("decode" | "unescape", "json") => {
            let mut out = String::new();
            let mut chars = st.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next()? {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'u' => {
                        let hex: String = chars.by_ref().take(4).collect();
                        out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                    }
                    other => out.push(other),
                }
            }
            Some(out)
        }
        ("encode", "hex") => Some(st.bytes().map(|b| format!("{b:02x}")).collect()),
        ("decode", "hex") => {
            let bytes: Option<Vec<u8>> = (0..st.len())
                .step_by(2)
                .map(|i| {
                    st.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            String::from_utf8(bytes?).ok()
        }
        ("encode", "base64" | "urlbase64") => {
            Some(base64_encode(st.as_bytes(), how == "urlbase64"))
        }
        ("decode", "base64" | "urlbase64") => String::from_utf8(base64_decode(st)?).ok(),
        _ => None,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8], url: bool) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let c = B64[((n >> (18 - 6 * i)) & 63) as usize] as char;
                out.push(match (url, c) {
                    (true, '+') => '-',
                    (true, '/') => '_',
                    _ => c,
                });
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.chars().filter(|c| *c != '=') {
        let v = match c {
            '-' => 62,
            '_' => 63,
            _ => B64.iter().position(|b| *b as char == c)? as u32,
        };
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    Some(out)
}

fn math<'a>(name: &str, args: &[Ast], input: &[Item<'a>], arg: impl Fn(usize) -> R<'a>) -> R<'a> {
    let max = if matches!(name, "round" | "log" | "power") {
        1
    } else {
        0
    };
    let min = if matches!(name, "log" | "power") {
        1
    } else {
        0
    };
    arity(name, args, min, max)?;
    let Some(p) = singleton_prim(input, name)? else {
        return Ok(Vec::new());
    };
    let bad = || EvalError::InvalidOperand(p.type_name().into(), name.into());
    if let Primitive::Quantity(q) = &p {
        if name == "abs" {
            return Ok(vec![Item::Value(Primitive::Quantity(Quantity {
                value: q.value.abs(),
                unit: q.unit.clone(),
            }))]);
        }
    }
    let d = to_dec(&p).ok_or_else(bad)?;
    let is_int = matches!(p, Primitive::Integer(_));
    let from_f = |f: f64| -> Coll<'a> { Decimal::from_f64(f).map(dec).into_iter().collect() };
    let to_int = |d: Decimal| -> Coll<'a> { d.to_i64().map(int).into_iter().collect() };
    Ok(match name {
        "abs" => {
            if is_int {
                to_int(d.abs())
            } else {
                vec![dec(d.abs())]
            }
        }
        "ceiling" => to_int(d.ceiling()),
        "floor" => to_int(d.floor()),
        "truncate" => to_int(d.truncate()),
        "round" => {
            let digits = singleton_int(&arg(0)?, name)?.unwrap_or(0);
            if digits < 0 {
                return Err(EvalError::InvalidArgument(
                    name.into(),
                    "negative precision".into(),
                ));
            }
            vec![dec(d.round(digits.min(28) as u32))]
        }
        "sqrt" => {
            let f = d.to_f64();
            if f < 0.0 {
                Vec::new()
            } else {
                from_f(f.sqrt())
            }
        }
        "exp" => from_f(d.to_f64().exp()),
        "ln" => from_f(d.to_f64().ln()),
        "log" => {
            let Some(base) = singleton_prim(&arg(0)?, name)?.as_ref().and_then(to_dec) else {
                return Ok(Vec::new());
            };
            from_f(d.to_f64().ln() / base.to_f64().ln())
        }
        _ => {
            let Some(e) = singleton_prim(&arg(0)?, name)? else {
                return Ok(Vec::new());
            };
            match (&p, &e) {
                (Primitive::Integer(b), Primitive::Integer(x)) if *x >= 0 => u32::try_from(*x)
                    .ok()
                    .and_then(|x| b.checked_pow(x))
                    .map(int)
                    .into_iter()
                    .collect(),
                _ => {
                    let x = to_dec(&e).ok_or_else(bad)?;
                    from_f(d.to_f64().powf(x.to_f64()))
                }
            }
        }
    })
}

fn aggregate_fn<'a>(ev: &Evaluator<'a>, name: &str, input: &[Item<'a>]) -> R<'a> {
    let prims: Vec<Primitive> = input.iter().filter_map(Item::to_primitive).collect();
    if prims.is_empty() {
        return Ok(if name == "sum" {
            vec![int(0)]
        } else {
            Vec::new()
        });
    }
    match name {
        "min" | "max" => {
            let mut best = input[0].clone();
            for it in &input[1..] {
                let o = crate::eval::compare_items(it, &best)?;
                if (name == "min" && o == Some(Ordering::Less))
                    || (name == "max" && o == Some(Ordering::Greater))
                {
                    best = it.clone();
                }
            }
            Ok(vec![best])
        }
        _ => {
            let mut acc = prims[0].clone();
            for p in &prims[1..] {
                acc = match crate::eval::binary_values(
                    ev,
                    crate::parser::BinOp::Add,
                    vec![Item::Value(acc)],
                    vec![Item::Value(p.clone())],
                )?
                .pop()
                .and_then(|i| i.to_primitive())
                {
                    Some(a) => a,
                    None => return Ok(Vec::new()),
                };
            }
            if name == "avg" {
                let total = to_dec(&acc).ok_or_else(|| {
                    EvalError::InvalidOperand(acc.type_name().into(), "avg".into())
                })?;
                return Ok(total
                    .div(Decimal::from_i64(prims.len() as i64))
                    .map(dec)
                    .into_iter()
                    .collect());
            }
            Ok(vec![Item::Value(acc)])
        }
    }
}

/// Children of a node: every member value, flattening arrays (§ children()).
fn children<'a>(it: &Item<'a>, out: &mut Coll<'a>) {
    let Item::Node(n) = it else {
        return;
    };
    match n.json() {
        Value::Object(o) => {
            let mut seen: Vec<&str> = Vec::new();
            for k in o.keys() {
                let key = k.strip_prefix('_').unwrap_or(k);
                if key == "resourceType" || seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                navigate(it, key, out);
            }
        }
        _ => {
            if let Some(Value::Object(o)) = n.ext_json() {
                for k in o.keys() {
                    navigate(it, k, out);
                }
            }
        }
    }
}

/// `resolve()`: a contained resource for `#id`, a Bundle entry with a matching `fullUrl`, or a
/// stand-in `{resourceType, id}` built from a relative `Type/id` reference so that
/// `resolve() is Patient` works without a store.
fn resolve<'a>(ev: &Evaluator<'a>, it: &Item<'a>) -> Option<Item<'a>> {
    let reference = match it {
        Item::Node(n) => match n.json() {
            Value::Object(o) => o.get("reference")?.as_str()?.to_string(),
            Value::String(s) => s.clone(),
            _ => return None,
        },
        Item::Value(Primitive::String(s)) => s.clone(),
        Item::Value(_) => return None,
    };
    let Item::Node(root) = &ev.root else {
        return None;
    };
    if let Some(id) = reference.strip_prefix('#') {
        let mut contained = Vec::new();
        navigate(&ev.root, "contained", &mut contained);
        return contained.into_iter().find(|c| {
            c.as_node()
                .and_then(|n| n.json().get("id"))
                .and_then(Value::as_str)
                == Some(id)
        });
    }
    if root.json().get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        let mut entries = Vec::new();
        navigate(&ev.root, "entry", &mut entries);
        for e in entries {
            let full = e
                .as_node()
                .and_then(|n| n.json().get("fullUrl"))
                .and_then(Value::as_str);
            let matches =
                full.is_some_and(|f| f == reference || f.ends_with(&format!("/{reference}")));
            if matches {
                let mut res = Vec::new();
                navigate(&e, "resource", &mut res);
                if let Some(r) = res.pop() {
                    return Some(r);
                }
            }
        }
    }
    let path = reference.split(['?', '#']).next().unwrap_or("");
    let segs: Vec<&str> = path.split('/').collect();
    // Find `Type/id` (possibly after a base URL, possibly followed by `_history/v`).
    let pos = segs.iter().rposition(|s| {
        s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            && s.chars().all(|c| c.is_ascii_alphanumeric())
    })?;
    let rt = segs[pos];
    let id = segs.get(pos + 1)?;
    let mut obj = serde_json::Map::new();
    obj.insert("resourceType".into(), Value::String(rt.to_string()));
    obj.insert("id".into(), Value::String(id.to_string()));
    Some(Item::Node(Node {
        value: Some(Json::Owned(Arc::new(Value::Object(obj)))),
        ext: None,
        path: Vec::new(),
        name: None,
        type_name: None,
        detached: true,
        model: None,
    }))
}
