//! Recursive-descent / precedence-climbing parser for FHIRPath N1 (§ Grammar, operator
//! precedence table in § Operations). Produces the AST the evaluator walks; it does not know
//! about FHIR resources or functions beyond their names.

use crate::decimal::Decimal;
use crate::lexer::{tokenize, Tok, Token};
use crate::temporal::Temporal;
use crate::ParseError;

/// Nesting bound: deeper expressions are rejected instead of overflowing the stack.
const MAX_DEPTH: usize = 200;

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
    let ast = p.expr(0)?;
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
            return Err(ParseError::new(self.here(), "expression nested too deeply"));
        }
        Ok(())
    }

    fn expr(&mut self, min_bp: u8) -> Result<Ast, ParseError> {
        self.enter()?;
        let mut lhs = self.unary()?;
        while let Some((bp, op)) = self.peek().and_then(infix) {
            if bp < min_bp {
                break;
            }
            let kw = self.next();
            match op {
                Some(op) => {
                    // All binary operators are left-associative.
                    let rhs = self.expr(bp + 1)?;
                    lhs = Ast::Binary(op, Box::new(lhs), Box::new(rhs));
                }
                None => {
                    let ts = self.type_spec()?;
                    lhs = if matches!(kw, Some(Tok::Ident(ref s, _)) if s == "is") {
                        Ast::Is(Box::new(lhs), ts)
                    } else {
                        Ast::As(Box::new(lhs), ts)
                    };
                }
            }
        }
        self.depth -= 1;
        Ok(lhs)
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

    fn unary(&mut self) -> Result<Ast, ParseError> {
        if self.eat("-") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(match inner {
                Ast::Lit(Lit::Int(i)) => Ast::Lit(Lit::Int(-i)),
                Ast::Lit(Lit::Dec(d)) => Ast::Lit(Lit::Dec(d.neg())),
                Ast::Lit(Lit::Quantity(d, u)) => Ast::Lit(Lit::Quantity(d.neg(), u)),
                other => Ast::Neg(Box::new(other)),
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

    fn postfix(&mut self) -> Result<Ast, ParseError> {
        let mut e = self.term()?;
        loop {
            if self.eat(".") {
                let inv = self.invocation()?;
                e = Ast::Invoke(Box::new(e), Box::new(inv));
            } else if self.eat("[") {
                let idx = self.expr(0)?;
                self.expect("]")?;
                e = Ast::Indexer(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    /// An identifier or function call after `.` (or at the head of a path).
    fn invocation(&mut self) -> Result<Ast, ParseError> {
        match self.next() {
            Some(Tok::Ident(name, delimited)) => {
                if !delimited && self.eat("(") {
                    let args = self.args()?;
                    return Ok(Ast::Call(name, args));
                }
                Ok(Ast::Ident(name))
            }
            Some(Tok::Dollar(d)) => Ok(dollar(&d)),
            _ => Err(ParseError::new(
                self.here(),
                "expected an identifier or function after '.'",
            )),
        }
    }

    fn args(&mut self) -> Result<Vec<Ast>, ParseError> {
        let mut args = Vec::new();
        if self.eat(")") {
            return Ok(args);
        }
        loop {
            args.push(self.expr(0)?);
            if self.eat(")") {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn term(&mut self) -> Result<Ast, ParseError> {
        let pos = self.here();
        let Some(tok) = self.next() else {
            return Err(ParseError::new(pos, "unexpected end of expression"));
        };
        Ok(match tok {
            Tok::Punct("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                e
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
                self.invocation()?
            }
            other => {
                return Err(ParseError::new(
                    pos,
                    &format!("unexpected {}", describe(&other)),
                ))
            }
        })
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
