//! The R4 primitive types and hand-written checks of their JSON form: the JSON kind
//! (FHIR R4 §2.6.2 json.html#primitive) and the lexical rules of each type
//! (FHIR R4 §2.24.0.1 datatypes.html#primitive, the `regex` extension of each `.value`).
//! Written without regexes so that a check costs a single pass over the bytes.

use serde_json::Value;

/// FHIR R4 §2.24.0.1: "strings SHALL NOT exceed 1MB (1024*1024 characters) in size".
/// It applies to string and its specializations (code, id, markdown), not to xhtml or uri.
const MAX_STRING_CHARS: usize = 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prim {
    Base64Binary,
    Boolean,
    Canonical,
    Code,
    Date,
    DateTime,
    Decimal,
    Id,
    Instant,
    Integer,
    Markdown,
    Oid,
    PositiveInt,
    String,
    Time,
    UnsignedInt,
    Uri,
    Url,
    Uuid,
    Xhtml,
}

impl Prim {
    pub(crate) fn from_code(code: &str) -> Option<Prim> {
        Some(match code {
            "base64Binary" => Prim::Base64Binary,
            "boolean" => Prim::Boolean,
            "canonical" => Prim::Canonical,
            "code" => Prim::Code,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "decimal" => Prim::Decimal,
            "id" => Prim::Id,
            "instant" => Prim::Instant,
            "integer" => Prim::Integer,
            "markdown" => Prim::Markdown,
            "oid" => Prim::Oid,
            "positiveInt" => Prim::PositiveInt,
            "string" => Prim::String,
            "time" => Prim::Time,
            "unsignedInt" => Prim::UnsignedInt,
            "uri" => Prim::Uri,
            "url" => Prim::Url,
            "uuid" => Prim::Uuid,
            "xhtml" => Prim::Xhtml,
            _ => return None,
        })
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Prim::Base64Binary => "base64Binary",
            Prim::Boolean => "boolean",
            Prim::Canonical => "canonical",
            Prim::Code => "code",
            Prim::Date => "date",
            Prim::DateTime => "dateTime",
            Prim::Decimal => "decimal",
            Prim::Id => "id",
            Prim::Instant => "instant",
            Prim::Integer => "integer",
            Prim::Markdown => "markdown",
            Prim::Oid => "oid",
            Prim::PositiveInt => "positiveInt",
            Prim::String => "string",
            Prim::Time => "time",
            Prim::UnsignedInt => "unsignedInt",
            Prim::Uri => "uri",
            Prim::Url => "url",
            Prim::Uuid => "uuid",
            Prim::Xhtml => "xhtml",
        }
    }
}

/// Why a primitive value is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    /// The JSON kind is wrong: `expected` is "a JSON boolean", "a JSON number" or "a JSON string".
    Kind { expected: &'static str },
    /// Right kind, wrong content; the text completes "the value ...".
    Format(&'static str),
}

/// Checks one primitive value (not null: the caller reports nulls).
pub(crate) fn check(prim: Prim, value: &Value) -> Result<(), Problem> {
    match prim {
        Prim::Boolean => match value {
            Value::Bool(_) => Ok(()),
            _ => Err(Problem::Kind {
                expected: "a JSON boolean (true or false)",
            }),
        },
        Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt | Prim::Decimal => match value {
            // serde_json's `arbitrary_precision` keeps the literal: no allocation, no rounding.
            Value::Number(n) => check_number(prim, n.as_str()).map_err(Problem::Format),
            _ => Err(Problem::Kind {
                expected: "a JSON number",
            }),
        },
        _ => match value {
            Value::String(s) => check_string(prim, s).map_err(Problem::Format),
            _ => Err(Problem::Kind {
                expected: "a JSON string",
            }),
        },
    }
}

fn check_number(prim: Prim, lexical: &str) -> Result<(), &'static str> {
    if prim == Prim::Decimal {
        // JSON's number grammar is the decimal regex `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
        return Ok(());
    }
    if lexical.bytes().any(|b| matches!(b, b'.' | b'e' | b'E')) {
        return Err("must be a whole number without fraction or exponent");
    }
    let n: i64 = lexical
        .parse()
        .map_err(|_| "is out of range for a 32-bit integer")?;
    if i32::try_from(n).is_err() {
        return Err("is out of range for a 32-bit integer");
    }
    // `-0` is an integer but neither an unsignedInt (`[0]|([1-9][0-9]*)`) nor a positiveInt.
    let negative = lexical.starts_with('-');
    match prim {
        Prim::PositiveInt if n < 1 || negative => Err("must be 1 or more"),
        Prim::UnsignedInt if n < 0 || negative => Err("must be 0 or more"),
        _ => Ok(()),
    }
}

/// Java's `\s`, which the R4 regexes use: space, tab, newline, vertical tab, form feed, return.
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn check_string(prim: Prim, s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be an empty string");
    }
    let b = s.as_bytes();
    match prim {
        Prim::String | Prim::Markdown | Prim::Code | Prim::Id
            if s.len() > MAX_STRING_CHARS && s.chars().count() > MAX_STRING_CHARS =>
        {
            Err("is longer than 1 MB (1024*1024 characters)")
        }
        Prim::String | Prim::Markdown => {
            // `[ \r\n\t\S]+`: the only whitespace allowed is space, tab, CR and LF.
            if b.iter().any(|&c| c == 0x0b || c == 0x0c) {
                return Err("must not contain vertical tab or form feed characters");
            }
            Ok(())
        }
        Prim::Xhtml => Ok(()),
        Prim::Code => {
            // `[^\s]+(\s[^\s]+)*`
            if is_ws(b[0]) || is_ws(b[b.len() - 1]) {
                return Err("must not start or end with whitespace");
            }
            if b.windows(2).any(|w| is_ws(w[0]) && is_ws(w[1])) {
                return Err("must not contain more than one whitespace character in a row");
            }
            Ok(())
        }
        Prim::Id => {
            // `[A-Za-z0-9\-\.]{1,64}`
            if b.len() > 64 {
                return Err("must be at most 64 characters long");
            }
            if !b
                .iter()
                .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
            {
                return Err("may only contain letters, digits, '-' and '.'");
            }
            Ok(())
        }
        Prim::Uri | Prim::Url | Prim::Canonical => {
            // `\S*`
            if b.iter().any(|&c| is_ws(c)) {
                return Err("must not contain whitespace");
            }
            Ok(())
        }
        Prim::Oid => check_oid(b),
        Prim::Uuid => check_uuid(b),
        Prim::Base64Binary => check_base64(b),
        Prim::Date => check_datetime(b, DateForm::Date),
        Prim::DateTime => check_datetime(b, DateForm::DateTime),
        Prim::Instant => check_datetime(b, DateForm::Instant),
        Prim::Time => {
            let mut i = 0;
            time_of_day(b, &mut i)?;
            if i != b.len() {
                return Err("must be a time hh:mm:ss with optional fraction");
            }
            Ok(())
        }
        Prim::Boolean | Prim::Integer | Prim::PositiveInt | Prim::UnsignedInt | Prim::Decimal => {
            Ok(())
        }
    }
}

/// `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`
fn check_oid(b: &[u8]) -> Result<(), &'static str> {
    const MSG: &str = "must be an OID URI like urn:oid:1.2.3";
    let rest = b.strip_prefix(b"urn:oid:").ok_or(MSG)?;
    let mut arcs = rest.split(|&c| c == b'.');
    match arcs.next() {
        Some([b'0'..=b'2']) => {}
        _ => return Err(MSG),
    }
    let mut count = 0;
    for arc in arcs {
        let ok = match arc {
            [b'0'] => true,
            [b'1'..=b'9', tail @ ..] => tail.iter().all(u8::is_ascii_digit),
            _ => false,
        };
        if !ok {
            return Err(MSG);
        }
        count += 1;
    }
    if count == 0 {
        return Err(MSG);
    }
    Ok(())
}

/// `urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`
fn check_uuid(b: &[u8]) -> Result<(), &'static str> {
    const MSG: &str =
        "must be a lowercase UUID URI like urn:uuid:c757873d-ec9a-4326-a141-556f43239520";
    let rest = b.strip_prefix(b"urn:uuid:").ok_or(MSG)?;
    if rest.len() != 36 {
        return Err(MSG);
    }
    for (i, &c) in rest.iter().enumerate() {
        let ok = if matches!(i, 8 | 13 | 18 | 23) {
            c == b'-'
        } else {
            c.is_ascii_digit() || (b'a'..=b'f').contains(&c)
        };
        if !ok {
            return Err(MSG);
        }
    }
    Ok(())
}

/// Base64 (RFC 4648 §4) with whitespace allowed between characters, as the R4 regex
/// `(\s*([0-9a-zA-Z\+\=]){4}\s*)+` intends ('/' is missing from it by an erratum).
fn check_base64(b: &[u8]) -> Result<(), &'static str> {
    let mut n = 0usize;
    let mut padding = 0usize;
    for &c in b {
        if is_ws(c) {
            continue;
        }
        if c == b'=' {
            padding += 1;
        } else if c.is_ascii_alphanumeric() || c == b'+' || c == b'/' {
            if padding > 0 {
                return Err("is not base64: '=' padding may only end the value");
            }
        } else {
            return Err("is not base64: it contains a character outside A-Z a-z 0-9 + / =");
        }
        n += 1;
    }
    if padding > 2 || !n.is_multiple_of(4) {
        return Err("is not base64: its length is not a multiple of 4");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DateForm {
    Date,
    DateTime,
    Instant,
}

fn digits(b: &[u8], i: &mut usize, n: usize) -> Option<u32> {
    let s = b.get(*i..*i + n)?;
    let mut v = 0u32;
    for &c in s {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v * 10 + u32::from(c - b'0');
    }
    *i += n;
    Some(v)
}

fn expect(b: &[u8], i: &mut usize, c: u8) -> bool {
    if b.get(*i) == Some(&c) {
        *i += 1;
        true
    } else {
        false
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `hh:mm:ss(.f+)?` with hh 00-23, mm 00-59, ss 00-60 (leap second).
fn time_of_day(b: &[u8], i: &mut usize) -> Result<(), &'static str> {
    const MSG: &str = "must have a time hh:mm:ss with optional fraction";
    let h = digits(b, i, 2).ok_or(MSG)?;
    if !expect(b, i, b':') {
        return Err(MSG);
    }
    let m = digits(b, i, 2).ok_or(MSG)?;
    if !expect(b, i, b':') {
        return Err("must have seconds in its time (hh:mm:ss)");
    }
    let s = digits(b, i, 2).ok_or(MSG)?;
    if h > 23 || m > 59 || s > 60 {
        return Err("has an hour, minute or second out of range");
    }
    if expect(b, i, b'.') {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        if *i == start {
            return Err("must have digits after the decimal point of its seconds");
        }
    }
    Ok(())
}

/// `Z` or `(+|-)hh:mm` with hh:mm from 00:00 to 14:00.
fn timezone(b: &[u8], i: &mut usize) -> Result<(), &'static str> {
    const MSG: &str = "must have a timezone (Z or +hh:mm or -hh:mm) when a time is given";
    if expect(b, i, b'Z') {
        return Ok(());
    }
    if !(expect(b, i, b'+') || expect(b, i, b'-')) {
        return Err(MSG);
    }
    let h = digits(b, i, 2).ok_or(MSG)?;
    if !expect(b, i, b':') {
        return Err(MSG);
    }
    let m = digits(b, i, 2).ok_or(MSG)?;
    if m > 59 || h > 14 || (h == 14 && m != 0) {
        return Err("has a timezone offset out of range");
    }
    Ok(())
}

/// date: `YYYY(-MM(-DD)?)?`; dateTime: the same, then optionally `Thh:mm:ss(.f)?TZ` after a
/// full date; instant: the full form. Calendar values are checked too (no 2019-02-30).
fn check_datetime(b: &[u8], form: DateForm) -> Result<(), &'static str> {
    let what = match form {
        DateForm::Date => "must be a date YYYY, YYYY-MM or YYYY-MM-DD",
        DateForm::DateTime => {
            "must be a dateTime YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss+zz:zz"
        }
        DateForm::Instant => "must be an instant YYYY-MM-DDThh:mm:ss(.sss)+zz:zz",
    };
    let mut i = 0;
    let year = digits(b, &mut i, 4).ok_or(what)?;
    if year == 0 {
        return Err("has year 0000, which does not exist");
    }
    if i == b.len() && form != DateForm::Instant {
        return Ok(());
    }
    if !expect(b, &mut i, b'-') {
        return Err(what);
    }
    let month = digits(b, &mut i, 2).ok_or(what)?;
    if !(1..=12).contains(&month) {
        return Err("has a month outside 01-12");
    }
    if i == b.len() && form != DateForm::Instant {
        return Ok(());
    }
    if !expect(b, &mut i, b'-') {
        return Err(what);
    }
    let day = digits(b, &mut i, 2).ok_or(what)?;
    if day < 1 || day > days_in_month(year, month) {
        return Err("has a day that does not exist in its month");
    }
    if i == b.len() && form != DateForm::Instant {
        return Ok(());
    }
    if form == DateForm::Date || !expect(b, &mut i, b'T') {
        return Err(what);
    }
    time_of_day(b, &mut i)?;
    timezone(b, &mut i)?;
    if i != b.len() {
        return Err(what);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(p: Prim, v: Value) -> bool {
        check(p, &v).is_ok()
    }

    #[test]
    fn dates_follow_the_r4_regexes_and_the_calendar() {
        for s in ["2019", "2019-02", "2019-02-28", "2020-02-29", "0001"] {
            assert!(ok(Prim::Date, json!(s)), "{s}");
            assert!(ok(Prim::DateTime, json!(s)), "{s}");
        }
        for s in [
            "2019-2",
            "2019-13",
            "2019-02-29",
            "2019-04-31",
            "0000",
            "19",
            "2019-01-01T10:00:00Z",
        ] {
            assert!(!ok(Prim::Date, json!(s)), "{s}");
        }
        for s in [
            "2019-01-01T10:00:00Z",
            "2019-01-01T23:59:60.123+14:00",
            "2019-01-01T10:00:00-05:00",
        ] {
            assert!(ok(Prim::DateTime, json!(s)), "{s}");
            assert!(ok(Prim::Instant, json!(s)), "{s}");
        }
        for s in [
            "2019-01-01T10:00Z",
            "2019-01-01T10:00:00",
            "2019-01-01T24:00:00Z",
            "2019-01-01T10:00:00+15:00",
            "2019-01T10:00:00Z",
            "2019-01-01T10:00:00.Z",
        ] {
            assert!(!ok(Prim::DateTime, json!(s)), "{s}");
        }
        assert!(!ok(Prim::Instant, json!("2019-01-01")));
        assert!(ok(Prim::Time, json!("10:00:00.5")));
        assert!(!ok(Prim::Time, json!("10:00")));
    }

    #[test]
    fn numbers_have_their_json_kind_and_range() {
        let n = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(ok(Prim::Integer, n("-2147483648")));
        assert!(!ok(Prim::Integer, n("2147483648")));
        assert!(!ok(Prim::Integer, n("1.0")));
        assert!(!ok(Prim::Integer, json!("1")));
        assert!(!ok(Prim::PositiveInt, n("0")));
        assert!(ok(Prim::UnsignedInt, n("0")));
        assert!(!ok(Prim::UnsignedInt, n("-1")));
        assert!(!ok(Prim::UnsignedInt, n("-0")));
        assert!(ok(Prim::Integer, n("-0")));
        assert!(ok(Prim::Decimal, n("1.50")));
        assert!(ok(Prim::Decimal, n("1e-5")));
        assert!(!ok(Prim::Decimal, json!("1.5")));
        assert!(!ok(Prim::Boolean, json!("true")));
    }

    #[test]
    fn strings_follow_the_r4_regexes() {
        assert!(ok(Prim::Id, json!("a-B.9")));
        assert!(!ok(Prim::Id, json!("a_b")));
        assert!(!ok(Prim::Id, json!("x".repeat(65))));
        assert!(ok(Prim::Code, json!("a b")));
        assert!(!ok(Prim::Code, json!(" a")));
        assert!(!ok(Prim::Code, json!("a  b")));
        assert!(!ok(Prim::Uri, json!("http://a b")));
        assert!(ok(Prim::Oid, json!("urn:oid:1.2.840.10008")));
        assert!(!ok(Prim::Oid, json!("urn:oid:1.02")));
        assert!(ok(
            Prim::Uuid,
            json!("urn:uuid:c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(!ok(
            Prim::Uuid,
            json!("c757873d-ec9a-4326-a141-556f43239520")
        ));
        assert!(ok(Prim::Base64Binary, json!("aGVsbG8=")));
        assert!(ok(Prim::Base64Binary, json!("aGVs\nbG8=")));
        assert!(!ok(Prim::Base64Binary, json!("aGVsbG8")));
        assert!(!ok(Prim::String, json!("")));
        assert!(ok(Prim::String, json!(" spaced\ttext\n")));
    }
}
