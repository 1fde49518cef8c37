//! Exact decimal arithmetic for FHIRPath `Decimal` (§ Decimal): a 128-bit mantissa with a
//! base-10 scale, so `0.1 + 0.2 = 0.3` holds and the precision of a literal (`1.0` vs `1`) is
//! kept for equivalence. Transcendental functions fall back to `f64`.

use std::cmp::Ordering;
use std::fmt;

/// Scale cap: results are rounded to at most this many fractional digits.
const MAX_SCALE: u32 = 28;
/// Fractional digits produced by division when the quotient does not terminate.
const DIV_SCALE: u32 = 8;

/// A FHIRPath decimal value.
#[derive(Debug, Clone, Copy)]
pub struct Decimal {
    m: i128,
    s: u32,
}

fn pow10(n: u32) -> Option<i128> {
    10i128.checked_pow(n)
}

impl PartialEq for Decimal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_value(other) == Ordering::Equal
    }
}

impl Decimal {
    pub(crate) fn from_i64(i: i64) -> Self {
        Decimal { m: i as i128, s: 0 }
    }

    /// Parses decimal text (`-12.50`, `1e3`); `None` if it is not a number.
    pub fn parse(text: &str) -> Option<Self> {
        Self::parse_digits(text, true)
    }

    /// [`Decimal::parse`]; more than 36 significant digits go through `f64` once when
    /// `via_float`, else they are no Decimal. The text `from_f64` makes is parsed with
    /// `via_float` off, so the two never call each other without end.
    fn parse_digits(text: &str, via_float: bool) -> Option<Self> {
        let t = text.trim();
        let (mant, exp) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
            None => (t, 0),
        };
        let (neg, digits) = match mant.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, mant.strip_prefix('+').unwrap_or(mant)),
        };
        let (int, frac) = match digits.split_once('.') {
            Some((a, b)) => (a, b),
            None => (digits, ""),
        };
        if int.is_empty() && frac.is_empty()
            || !int.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let all = format!("{int}{frac}");
        let all = all.trim_start_matches('0');
        if all.len() > 36 {
            return if via_float {
                Self::from_f64(t.parse::<f64>().ok()?)
            } else {
                None
            };
        }
        let mut m: i128 = if all.is_empty() { 0 } else { all.parse().ok()? };
        let mut s = frac.len() as i64 - exp as i64;
        if s < 0 {
            m = m.checked_mul(pow10(u32::try_from(-s).ok()?)?)?;
            s = 0;
        }
        let mut d = Decimal {
            m: if neg { -m } else { m },
            s: u32::try_from(s).ok()?,
        };
        if d.s > MAX_SCALE {
            d = d.round(MAX_SCALE);
        }
        Some(d)
    }

    pub(crate) fn from_f64(f: f64) -> Option<Self> {
        if !f.is_finite() {
            return None;
        }
        // Shortest round-trip text keeps the digits a person would expect.
        let text = format!("{f}");
        if text.contains('e') || text.len() > 36 {
            let text = format!("{f:.8}");
            return Self::parse_digits(&text, false).map(|d| d.trim());
        }
        Self::parse_digits(&text, false)
    }

    pub fn to_f64(self) -> f64 {
        self.m as f64 / 10f64.powi(self.s as i32)
    }

    /// The number of digits after the decimal point as written.
    pub fn scale(self) -> u32 {
        self.s
    }

    pub(crate) fn is_integer(self) -> bool {
        self.trim().s == 0
    }

    pub(crate) fn to_i64(self) -> Option<i64> {
        let t = self.trim();
        if t.s != 0 {
            return None;
        }
        i64::try_from(t.m).ok()
    }

    pub(crate) fn neg(self) -> Self {
        Decimal {
            m: self.m.checked_neg().unwrap_or(i128::MAX),
            s: self.s,
        }
    }

    pub(crate) fn abs(self) -> Self {
        Decimal {
            m: self.m.checked_abs().unwrap_or(i128::MAX),
            s: self.s,
        }
    }

    /// Removes trailing fractional zeros.
    pub(crate) fn trim(self) -> Self {
        let mut d = self;
        while d.s > 0 && d.m % 10 == 0 {
            d.m /= 10;
            d.s -= 1;
        }
        d
    }

    fn rescale(self, s: u32) -> Option<Self> {
        if s >= self.s {
            Some(Decimal {
                m: self.m.checked_mul(pow10(s - self.s)?)?,
                s,
            })
        } else {
            Some(self.round(s))
        }
    }

    fn align(a: Self, b: Self) -> Option<(i128, i128, u32)> {
        let s = a.s.max(b.s);
        Some((a.rescale(s)?.m, b.rescale(s)?.m, s))
    }

    pub(crate) fn cmp_value(&self, other: &Self) -> Ordering {
        match Self::align(*self, *other) {
            Some((a, b, _)) => a.cmp(&b),
            None => self
                .to_f64()
                .partial_cmp(&other.to_f64())
                .unwrap_or(Ordering::Equal),
        }
    }

    pub(crate) fn add(self, o: Self) -> Option<Self> {
        let (a, b, s) = Self::align(self, o)?;
        Some(Decimal {
            m: a.checked_add(b)?,
            s,
        })
    }

    pub(crate) fn sub(self, o: Self) -> Option<Self> {
        self.add(o.neg())
    }

    pub(crate) fn mul(self, o: Self) -> Option<Self> {
        let m = self.m.checked_mul(o.m)?;
        let d = Decimal { m, s: self.s + o.s };
        Some(if d.s > MAX_SCALE {
            d.round(MAX_SCALE)
        } else {
            d
        })
    }

    /// Division; `None` for division by zero (FHIRPath returns empty).
    pub(crate) fn div(self, o: Self) -> Option<Self> {
        if o.m == 0 {
            return None;
        }
        // Compute with extra digits, then round to DIV_SCALE and drop trailing zeros.
        let target = DIV_SCALE + 1;
        let (a, b, _) = Self::align(self, o)?;
        let num = a.checked_mul(pow10(target)?)?;
        let q = Decimal {
            m: num / b,
            s: target,
        };
        Some(q.round(DIV_SCALE).trim())
    }

    pub(crate) fn rem(self, o: Self) -> Option<Self> {
        if o.m == 0 {
            return None;
        }
        let (a, b, s) = Self::align(self, o)?;
        Some(Decimal { m: a % b, s })
    }

    /// Truncating integer division.
    pub(crate) fn int_div(self, o: Self) -> Option<Self> {
        if o.m == 0 {
            return None;
        }
        let (a, b, _) = Self::align(self, o)?;
        Some(Decimal { m: a / b, s: 0 })
    }

    /// Rounds half away from zero to `digits` fractional digits.
    pub(crate) fn round(self, digits: u32) -> Self {
        if digits >= self.s {
            return self;
        }
        let Some(f) = pow10(self.s - digits) else {
            return Decimal { m: 0, s: digits };
        };
        let q = self.m / f;
        let r = self.m % f;
        let q = if r.unsigned_abs() * 2 >= f.unsigned_abs() {
            q + self.m.signum()
        } else {
            q
        };
        Decimal { m: q, s: digits }
    }

    /// Rounds to `digits` fractional digits towards +∞ (`up`) or −∞, then pads with zeros to
    /// exactly `digits` (used by `lowBoundary`/`highBoundary`).
    pub(crate) fn floor_to(self, digits: u32, up: bool) -> Self {
        if digits >= self.s {
            return self.rescale(digits).unwrap_or(self);
        }
        let Some(f) = pow10(self.s - digits) else {
            return Decimal { m: 0, s: digits };
        };
        let q = self.m.div_euclid(f);
        let r = self.m.rem_euclid(f);
        let m = if up && r != 0 { q + 1 } else { q };
        Decimal { m, s: digits }
    }

    pub(crate) fn truncate(self) -> Self {
        match pow10(self.s) {
            Some(f) => Decimal {
                m: self.m / f,
                s: 0,
            },
            None => Decimal { m: 0, s: 0 },
        }
    }

    pub(crate) fn floor(self) -> Self {
        let t = self.truncate();
        if self.m < 0 && t.cmp_value(&self) != Ordering::Equal {
            Decimal { m: t.m - 1, s: 0 }
        } else {
            t
        }
    }

    pub(crate) fn ceiling(self) -> Self {
        let t = self.truncate();
        if self.m > 0 && t.cmp_value(&self) != Ordering::Equal {
            Decimal { m: t.m + 1, s: 0 }
        } else {
            t
        }
    }

    pub(crate) fn is_zero(self) -> bool {
        self.m == 0
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let neg = self.m < 0;
        let digits = self.m.unsigned_abs().to_string();
        let s = self.s as usize;
        let body = if s == 0 {
            digits
        } else if digits.len() > s {
            format!(
                "{}.{}",
                &digits[..digits.len() - s],
                &digits[digits.len() - s..]
            )
        } else {
            format!("0.{}{}", "0".repeat(s - digits.len()), digits)
        };
        if neg {
            write!(f, "-{body}")
        } else {
            f.write_str(&body)
        }
    }
}
