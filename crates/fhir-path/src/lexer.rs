//! Tokeniser for FHIRPath N1 text: turns an expression into tokens, skipping whitespace and
//! `//` / `/* */` comments. It knows nothing about precedence or meaning; the parser does.

use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// A plain identifier or keyword (`and`, `div`, `true`...); `delimited` for `` `x` ``.
    Ident(String, bool),
    Str(String),
    Number(String),
    /// `@2020-01-01T10:00` without the `@`.
    DateTime(String),
    /// `@T10:00` without the `@T`.
    Time(String),
    /// `%name`, `` %`name` `` or `%'name'`.
    Var(String),
    /// `$this`, `$index`, `$total`.
    Dollar(String),
    Punct(&'static str),
}

#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: usize,
}

const PUNCTS: [&str; 21] = [
    "!=", "!~", "<=", ">=", ".", ",", "(", ")", "[", "]", "{", "}", "+", "-", "*", "/", "&", "|",
    "=", "~", "<",
];

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, msg: &str| ParseError::new(pos, msg);
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            let start = i;
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(err(start, "unterminated comment"));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
            continue;
        }
        let pos = i;
        if c.is_ascii_alphabetic() || c == '_' {
            // Identifiers: [A-Za-z_][A-Za-z0-9_]*
            let s = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(chars[s..i].iter().collect(), false),
                pos,
            });
            continue;
        }
        if c.is_ascii_digit() {
            let s = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Number(chars[s..i].iter().collect()),
                pos,
            });
            continue;
        }
        match c {
            '\'' | '`' => {
                let (s, next) = quoted(&chars, i, c)?;
                i = next;
                let tok = if c == '\'' {
                    Tok::Str(s)
                } else {
                    Tok::Ident(s, true)
                };
                out.push(Token { tok, pos });
            }
            '%' => {
                i += 1;
                match chars.get(i) {
                    Some(&q) if q == '`' || q == '\'' => {
                        let (s, next) = quoted(&chars, i, q)?;
                        i = next;
                        out.push(Token {
                            tok: Tok::Var(s),
                            pos,
                        });
                    }
                    Some(c2) if c2.is_ascii_alphabetic() || *c2 == '_' => {
                        let s = i;
                        while i < chars.len()
                            && (chars[i].is_ascii_alphanumeric()
                                || chars[i] == '_'
                                || chars[i] == '-')
                        {
                            i += 1;
                        }
                        out.push(Token {
                            tok: Tok::Var(chars[s..i].iter().collect()),
                            pos,
                        });
                    }
                    _ => return Err(err(pos, "expected a variable name after '%'")),
                }
            }
            '$' => {
                i += 1;
                let s = i;
                while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let name: String = chars[s..i].iter().collect();
                if !matches!(name.as_str(), "this" | "index" | "total") {
                    return Err(err(pos, "unknown $ variable"));
                }
                out.push(Token {
                    tok: Tok::Dollar(name),
                    pos,
                });
            }
            '@' => {
                i += 1;
                let is_time = chars.get(i) == Some(&'T');
                if is_time {
                    i += 1;
                }
                let body_start = i;
                while i < chars.len() {
                    let c = chars[i];
                    let next_digit = chars.get(i + 1).is_some_and(char::is_ascii_digit);
                    // '.', '-', '+' and ':' continue the literal only before a digit, so
                    // `@2015.is(Date)` and `@2015 - 1 year` lex as expected.
                    let ok = c.is_ascii_digit()
                        || matches!(c, 'T' | 'Z')
                        || (matches!(c, '-' | ':' | '.' | '+') && next_digit);
                    if !ok {
                        break;
                    }
                    i += 1;
                }
                let text: String = chars[body_start..i].iter().collect();
                if text.is_empty() {
                    return Err(err(pos, "empty date/time literal"));
                }
                out.push(Token {
                    tok: if is_time {
                        Tok::Time(text)
                    } else {
                        Tok::DateTime(text)
                    },
                    pos,
                });
            }
            _ => {
                let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
                let p = PUNCTS
                    .iter()
                    .chain([">"].iter())
                    .find(|p| rest.starts_with(**p))
                    .ok_or_else(|| err(pos, &format!("unexpected character '{c}'")))?;
                i += p.chars().count();
                out.push(Token {
                    tok: Tok::Punct(p),
                    pos,
                });
            }
        }
    }
    Ok(out)
}

/// Reads a quoted string or delimited identifier starting at `start` (the opening quote),
/// decoding FHIRPath escapes (§ String: `\'`, `\"`, `` \` ``, `\r`, `\n`, `\t`, `\f`, `\\`,
/// `\/`, `\uXXXX`).
fn quoted(chars: &[char], start: usize, q: char) -> Result<(String, usize), ParseError> {
    let mut i = start + 1;
    let mut s = String::new();
    loop {
        let Some(&c) = chars.get(i) else {
            return Err(ParseError::new(start, "unterminated string"));
        };
        i += 1;
        if c == q {
            return Ok((s, i));
        }
        if c != '\\' {
            s.push(c);
            continue;
        }
        let Some(&e) = chars.get(i) else {
            return Err(ParseError::new(start, "unterminated string"));
        };
        i += 1;
        match e {
            'n' => s.push('\n'),
            'r' => s.push('\r'),
            't' => s.push('\t'),
            'f' => s.push('\u{c}'),
            'u' => {
                let hex: String = chars.get(i..i + 4).unwrap_or(&[]).iter().collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| ParseError::new(i, "invalid \\u escape"))?;
                s.push(code);
                i += 4;
            }
            other => s.push(other),
        }
    }
}
