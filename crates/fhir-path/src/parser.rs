//! Recursive-descent / precedence-climbing parser for FHIRPath N1 (§ Grammar, operator
//! precedence table in § Operations). Produces the AST the evaluator walks; it does not know
//! about FHIR resources or functions beyond their names.

use crate::decimal::Decimal;
use crate::lexer::{tokenize, Tok, Token};
use crate::temporal::Temporal;
use crate::ParseError;

/// The deepest expression accepted, counted two ways: the parser's own recursion (each
/// parenthesis, argument list or operand nests it) and the depth of the tree it builds (each
/// operator, `.` invocation and `[]` indexer adds a level, even in a long flat chain like
/// `1+1+…+1` or `a.b.c…`, which the parser reads in a loop). The evaluator, `Clone` and
/// `Drop` of the tree all recurse once per level, so an unbounded tree overflows the stack
/// (issue #15: 50,000 `+` terms aborted the server). 128 is far beyond any real expression
/// (the R4 search parameters and the official test suite stay under 20) and, at a few
/// hundred bytes of stack per level, well inside a 2 MiB tokio worker stack.
pub(crate) const MAX_DEPTH: usize = 128;

/// A parsed subexpression and the depth of its tree (a leaf is 1).
type Parsed = (Ast, usize);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lit {
    Empty,
    Bool(bool),
    Str(String),
    Int(i64),
    Dec(Decimal),
    Date(Temporal),
    DateTime(Temporal),
    Time(Temporal),
    Quantity(Decimal, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TypeSpec {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Ast {
    Lit(Lit),
    /// A member name (or type name at the head of a path), evaluated on the focus.
    Ident(String),
    This,
    Index,
    Total,
    Var(String),
    /// `lhs.rhs`: evaluate `rhs` with the result of `lhs` as its input.
    Invoke(Box<Ast>, Box<Ast>),
    /// A function call on the focus.
    Call(String, Vec<Ast>),
    Indexer(Box<Ast>, Box<Ast>),
    Neg(Box<Ast>),
    Binary(BinOp, Box<Ast>, Box<Ast>),
    Is(Box<Ast>, TypeSpec),
    As(Box<Ast>, TypeSpec),
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
    len: usize,
}

pub(crate) fn parse_ast(src: &str) -> Result<Ast, ParseError> {
    let toks = tokenize(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        len: src.len(),
    };
    if p.toks.is_empty() {
        return Err(ParseError::new(0, "empty expression"));
    }
    let (ast, _) = p.expr(0)?;
    if let Some(t) = p.toks.get(p.pos) {
        return Err(ParseError::new(
            t.pos,
            &format!("unexpected {}", describe(&t.tok)),
        ));
    }
    Ok(ast)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s, _) => format!("identifier '{s}'"),
        Tok::Str(s) => format!("string '{s}'"),
        Tok::Number(s) => format!("number {s}"),
        Tok::DateTime(s) => format!("date/time @{s}"),
        Tok::Time(s) => format!("time @T{s}"),
        Tok::Var(s) => format!("variable %{s}"),
        Tok::Dollar(s) => format!("${s}"),
        Tok::Punct(p) => format!("'{p}'"),
    }
}

/// Binding power of an infix operator (higher binds tighter), per the FHIRPath precedence table.
fn infix(t: &Tok) -> Option<(u8, Option<BinOp>)> {
    let op = match t {
        Tok::Punct(p) => match *p {
            "*" => (10, BinOp::Mul),
            "/" => (10, BinOp::Div),
            "+" => (9, BinOp::Add),
            "-" => (9, BinOp::Sub),
            "&" => (9, BinOp::Concat),
            "|" => (7, BinOp::Union),
            "<" => (6, BinOp::Lt),
            ">" => (6, BinOp::Gt),
            "<=" => (6, BinOp::Le),
            ">=" => (6, BinOp::Ge),
            "=" => (5, BinOp::Eq),
            "~" => (5, BinOp::Equiv),
            "!=" => (5, BinOp::Ne),
            "!~" => (5, BinOp::NotEquiv),
            _ => return None,
        },
        Tok::Ident(s, false) => match s.as_str() {
            "div" => (10, BinOp::IntDiv),
            "mod" => (10, BinOp::Mod),
            "is" | "as" => return Some((8, None)),
            "in" => (4, BinOp::In),
            "contains" => (4, BinOp::Contains),
            "and" => (3, BinOp::And),
            "or" => (2, BinOp::Or),
            "xor" => (2, BinOp::Xor),
            "implies" => (1, BinOp::Implies),
            _ => return None,
        },
        _ => return None,
    };
    Some((op.0, Some(op.1)))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn here(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.pos).unwrap_or(self.len)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.eat(p) {
            Ok(())
        } else {
            Err(ParseError::new(self.here(), &format!("expected '{p}'")))
        }
    }

    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(())
    }

    fn too_deep(&self) -> ParseError {
        ParseError::new(
            self.here(),
            &format!("expression nested too deeply (at most {MAX_DEPTH} levels)"),
        )
    }

    /// The depth of a node over children of depth `children`, refused past [`MAX_DEPTH`]
    /// before the node is built, so no tree deeper than the bound ever exists.
    fn level(&self, children: usize) -> Result<usize, ParseError> {
        let d = children + 1;
        if d > MAX_DEPTH {
            return Err(self.too_deep());
        }
        Ok(d)
    }

    fn expr(&mut self, min_bp: u8) -> Result<Parsed, ParseError> {
        self.enter()?;
        let (mut lhs, mut depth) = self.unary()?;
        while let Some((bp, op)) = self.peek().and_then(infix) {
            if bp < min_bp {
                break;
            }
            let kw = self.next();
            match op {
                Some(op) => {
                    // All binary operators are left-associative.
                    let (rhs, rd) = self.expr(bp + 1)?;
                    depth = self.level(depth.max(rd))?;
                    lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs));
                }
                None => {
                    let ts = self.type_spec()?;
                    depth = self.level(depth)?;
                    lhs = if matches!(kw, Some(Tok::Ident(ref s, _)) if s == "is") {
                        Ast::Is(Box::new(lhs), ts)
                    } else {
                        Ast::As(Box::new(lhs), ts)
                    };
                }
            }
        }
        self.depth -= 1;
        Ok((lhs, depth))
    }

    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let first = self.identifier()?;
        if self.eat(".") {
            let second = self.identifier()?;
            return Ok(TypeSpec {
                namespace: Some(first),
                name: second,
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn identifier(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Tok::Ident(s, _)) => Ok(s),
            _ => Err(ParseError::new(self.here(), "expected an identifier")),
        }
    }

    fn unary(&mut self) -> Result<Parsed, ParseError> {
        if self.eat("-") {
            self.enter()?;
            let (inner, d) = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Ast::Lit(Lit::Int(i)) => (Ast::Lit(Lit::Int(-i)), d),
                Ast::Lit(Lit::Dec(x)) => (Ast::Lit(Lit::Dec(x.neg())), d),
                Ast::Lit(Lit::Quantity(x, u)) => (Ast::Lit(Lit::Quantity(x.neg(), u)), d),
                other => (Ast::Neg(Box::new(other)), self.level(d)?),
            });
        }
        if self.eat("+") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(inner);
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Parsed, ParseError> {
        let (mut e, mut depth) = self.term()?;
        loop {
            if self.eat(".") {
                let (inv, id) = self.invocation()?;
                depth = self.level(depth.max(id))?;
                e = Ast::Invoke(Box::new(e), Box::new(inv));
            } else if self.eat("[") {
                let (idx, id) = self.expr(0)?;
                self.expect("]")?;
                depth = self.level(depth.max(id))?;
                e = Ast::Indexer(Box::new(e), Box::new(idx));
            } else {
                return Ok((e, depth));
            }
        }
    }

    /// An identifier or function call after `.` (or at the head of a path).
    fn invocation(&mut self) -> Result<Parsed, ParseError> {
        match self.next() {
            Some(Tok::Ident(name, delimited)) => {
                if !delimited && self.eat("(") {
                    let (args, d) = self.args()?;
                    return Ok((Ast::Call(name, args), self.level(d)?));
                }
                Ok((Ast::Ident(name), 1))
            }
            Some(Tok::Dollar(d)) => Ok((dollar(&d), 1)),
            _ => Err(ParseError::new(
                self.here(),
                "expected an identifier or function after '.'",
            )),
        }
    }

    /// A call's arguments and the depth of the deepest (0 without arguments).
    fn args(&mut self) -> Result<(Vec<Ast>, usize), ParseError> {
        let mut args = Vec::new();
        let mut depth = 0;
        if self.eat(")") {
            return Ok((args, depth));
        }
        loop {
            let (a, d) = self.expr(0)?;
            args.push(a);
            depth = depth.max(d);
            if self.eat(")") {
                return Ok((args, depth));
            }
            self.expect(",")?;
        }
    }

    fn term(&mut self) -> Result<Parsed, ParseError> {
        let pos = self.here();
        let Some(tok) = self.next() else {
            return Err(ParseError::new(pos, "unexpected end of expression"));
        };
        let leaf = match tok {
            Tok::Punct("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                return Ok(e);
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                Ast::Lit(Lit::Empty)
            }
            Tok::Str(s) => Ast::Lit(Lit::Str(s)),
            Tok::Number(n) => self.number(&n, pos)?,
            Tok::DateTime(s) => {
                let t = Temporal::parse_literal(&s)
                    .ok_or_else(|| ParseError::new(pos, &format!("invalid date/time @{s}")))?;
                if t.is_date() {
                    Ast::Lit(Lit::Date(t))
                } else {
                    Ast::Lit(Lit::DateTime(t))
                }
            }
            Tok::Time(s) => {
                Ast::Lit(Lit::Time(Temporal::parse_time(&s).ok_or_else(|| {
                    ParseError::new(pos, &format!("invalid time @T{s}"))
                })?))
            }
            Tok::Var(v) => Ast::Var(v),
            Tok::Dollar(d) => dollar(&d),
            Tok::Ident(s, false) if s == "true" => Ast::Lit(Lit::Bool(true)),
            Tok::Ident(s, false) if s == "false" => Ast::Lit(Lit::Bool(false)),
            Tok::Ident(..) => {
                self.pos -= 1;
                return self.invocation();
            }
            other => {
                return Err(ParseError::new(
                    pos,
                    &format!("unexpected {}", describe(&other)),
                ))
            }
        };
        Ok((leaf, 1))
    }

    fn number(&mut self, n: &str, pos: usize) -> Result<Ast, ParseError> {
        let dec = Decimal::parse(n).ok_or_else(|| ParseError::new(pos, "invalid number"))?;
        // A quantity: number followed by a unit string or a calendar duration keyword.
        match self.peek() {
            Some(Tok::Str(u)) => {
                let u = u.clone();
                self.pos += 1;
                return Ok(Ast::Lit(Lit::Quantity(dec, u)));
            }
            Some(Tok::Ident(u, false)) if crate::value::calendar_unit(u).is_some() => {
                let u = u.clone();
                self.pos += 1;
                return Ok(Ast::Lit(Lit::Quantity(dec, u)));
            }
            _ => {}
        }
        if n.contains('.') {
            Ok(Ast::Lit(Lit::Dec(dec)))
        } else {
            n.parse::<i64>()
                .map(|i| Ast::Lit(Lit::Int(i)))
                .map_err(|_| ParseError::new(pos, "integer literal out of range"))
        }
    }
}

fn dollar(d: &str) -> Ast {
    match d {
        "this" => Ast::This,
        "index" => Ast::Index,
        _ => Ast::Total,
    }
}
