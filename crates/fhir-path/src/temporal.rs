//! FHIRPath `Date`, `DateTime` and `Time` values with partial precision (§ Date/Time, §
//! Comparison): parsing from literals and FHIR JSON strings, comparison that yields "unknown"
//! when precisions differ, and calendar arithmetic. No clock access here; `now()` lives in
//! the evaluator.

use std::cmp::Ordering;
use std::fmt;

/// Which kind of temporal value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemporalKind {
    Date,
    DateTime,
    Time,
}

/// A date, date-time or time with the precision it was written with.
///
/// `precision` counts components: 1 year, 2 month, 3 day, 4 hour, 5 minute, 6 second,
/// 7 millisecond (times start at 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Temporal {
    pub(crate) kind: TemporalKind,
    pub(crate) year: i32,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
    pub(crate) milli: u32,
    pub(crate) precision: u8,
    /// Offset from UTC in minutes, when given.
    pub(crate) tz: Option<i32>,
}

fn num(s: &str, len: usize) -> Option<u32> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

pub(crate) fn days_in_month(y: i32, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Days since 1970-01-01 (proleptic Gregorian), after H. Hinnant's `days_from_civil`.
pub(crate) fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

pub(crate) fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

fn valid_year(y: &i32) -> bool {
    (1..=9999).contains(y)
}

impl Temporal {
    fn empty(kind: TemporalKind) -> Self {
        Temporal {
            kind,
            year: 0,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            milli: 0,
            precision: 0,
            tz: None,
        }
    }

    /// Date, DateTime or Time.
    pub fn kind(&self) -> TemporalKind {
        self.kind
    }

    /// Components given: 1 year … 7 millisecond (a Time starts at 4, hour).
    pub fn precision(&self) -> u8 {
        self.precision
    }

    pub(crate) fn is_date(&self) -> bool {
        self.kind == TemporalKind::Date
    }

    /// Parses the text of a `@...` literal: a date, or a date-time when it contains `T`.
    pub(crate) fn parse_literal(s: &str) -> Option<Self> {
        match s.split_once('T') {
            None => Self::parse_date(s),
            Some((d, t)) => {
                let mut v = Self::parse_date(d)?;
                v.kind = TemporalKind::DateTime;
                if t.is_empty() {
                    return Some(v);
                }
                if v.precision != 3 {
                    return None;
                }
                let tv = Self::parse_time_tz(t)?;
                v.hour = tv.hour;
                v.minute = tv.minute;
                v.second = tv.second;
                v.milli = tv.milli;
                v.precision = tv.precision;
                v.tz = tv.tz;
                Some(v)
            }
        }
    }

    /// Parses FHIR JSON `date`, `dateTime` or `instant` text.
    pub(crate) fn parse_fhir(s: &str) -> Option<Self> {
        let v = Self::parse_literal(s)?;
        if s.ends_with('T') {
            return None;
        }
        Some(v)
    }

    fn parse_date(s: &str) -> Option<Self> {
        let mut v = Self::empty(TemporalKind::Date);
        let mut parts = s.split('-');
        v.year = num(parts.next()?, 4)? as i32;
        v.precision = 1;
        if let Some(m) = parts.next() {
            v.month = num(m, 2).filter(|m| (1..=12).contains(m))?;
            v.precision = 2;
        }
        if let Some(d) = parts.next() {
            v.day = num(d, 2).filter(|d| *d >= 1 && *d <= days_in_month(v.year, v.month))?;
            v.precision = 3;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Parses a `Time` (no time zone allowed), as in `@T10:30`.
    pub(crate) fn parse_time(s: &str) -> Option<Self> {
        let v = Self::parse_time_tz(s)?;
        if v.tz.is_some() {
            return None;
        }
        Some(v)
    }

    fn parse_time_tz(s: &str) -> Option<Self> {
        let mut v = Self::empty(TemporalKind::Time);
        let (body, tz) = if let Some(b) = s.strip_suffix('Z') {
            (b, Some(0))
        } else if let Some(i) = s.rfind(['+', '-']) {
            let (b, z) = s.split_at(i);
            let sign = if z.starts_with('-') { -1 } else { 1 };
            let (h, m) = z[1..].split_once(':')?;
            (b, Some(sign * (num(h, 2)? as i32 * 60 + num(m, 2)? as i32)))
        } else {
            (s, None)
        };
        v.tz = tz;
        let mut parts = body.split(':');
        v.hour = num(parts.next()?, 2).filter(|h| *h < 24)?;
        v.precision = 4;
        if let Some(m) = parts.next() {
            v.minute = num(m, 2).filter(|m| *m < 60)?;
            v.precision = 5;
        }
        if let Some(sec) = parts.next() {
            let (whole, frac) = match sec.split_once('.') {
                Some((a, b)) => (a, Some(b)),
                None => (sec, None),
            };
            v.second = num(whole, 2).filter(|s| *s < 60)?;
            v.precision = 6;
            if let Some(f) = frac {
                if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let f3: String = f.chars().chain("00".chars()).take(3).collect();
                v.milli = f3.parse().ok()?;
                v.precision = 7;
            }
        }
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Builds a date-time from Unix milliseconds (UTC).
    pub(crate) fn from_unix_millis(ms: i64) -> Self {
        let days = ms.div_euclid(86_400_000);
        let rest = ms.rem_euclid(86_400_000) as u32;
        let (y, m, d) = civil_from_days(days);
        Temporal {
            kind: TemporalKind::DateTime,
            year: y,
            month: m,
            day: d,
            hour: rest / 3_600_000,
            minute: rest / 60_000 % 60,
            second: rest / 1000 % 60,
            milli: rest % 1000,
            precision: 7,
            tz: Some(0),
        }
    }

    /// Milliseconds since the epoch of the components (ignoring the time zone).
    fn local_millis(&self) -> i64 {
        let days = days_from_civil(self.year, self.month, self.day);
        days * 86_400_000
            + i64::from(self.hour) * 3_600_000
            + i64::from(self.minute) * 60_000
            + i64::from(self.second) * 1000
            + i64::from(self.milli)
    }

    fn with_millis(&self, ms: i64) -> Self {
        let mut t = Self::from_unix_millis(ms);
        t.kind = self.kind;
        t.precision = self.precision;
        t.tz = self.tz;
        t
    }

    /// Shifts a value with a time zone and hour precision or finer to UTC.
    fn to_utc(self) -> Self {
        match self.tz {
            Some(off) if self.precision >= 4 && self.kind != TemporalKind::Time => {
                let mut t = self.with_millis(self.local_millis() - i64::from(off) * 60_000);
                t.tz = Some(0);
                t
            }
            _ => self,
        }
    }

    fn components(&self) -> [i64; 6] {
        [
            i64::from(self.year),
            i64::from(self.month),
            i64::from(self.day),
            i64::from(self.hour),
            i64::from(self.minute),
            i64::from(self.second) * 1000 + i64::from(self.milli),
        ]
    }

    /// Precision with seconds and milliseconds treated as one (§ Comparison).
    fn cmp_precision(&self) -> u8 {
        self.precision.min(6)
    }

    /// Ordering of two values, `None` when it cannot be known (different precisions that agree
    /// as far as both go, or incomparable kinds).
    pub(crate) fn compare(&self, other: &Self) -> Option<Ordering> {
        let is_time = |t: &Self| t.kind == TemporalKind::Time;
        if is_time(self) != is_time(other) {
            return None;
        }
        if self.precision >= 4
            && other.precision >= 4
            && self.kind != TemporalKind::Time
            && self.tz.is_some() != other.tz.is_some()
        {
            // One side has a time zone and the other not: the ordering is unknown.
            return None;
        }
        let (a, b) = (self.to_utc(), other.to_utc());
        let (ca, cb) = (a.components(), b.components());
        let start = if is_time(self) { 3 } else { 0 };
        let (pa, pb) = (a.cmp_precision(), b.cmp_precision());
        let common = pa.min(pb) as usize;
        for i in start..common {
            match ca[i].cmp(&cb[i]) {
                Ordering::Equal => {}
                o => return Some(o),
            }
        }
        if pa == pb {
            Some(Ordering::Equal)
        } else {
            None
        }
    }

    /// Equivalence: same precision and same instant.
    pub(crate) fn equivalent(&self, other: &Self) -> bool {
        self.cmp_precision() == other.cmp_precision()
            && self.compare(other) == Some(Ordering::Equal)
    }

    /// Adds `amount` of a calendar unit (`year`, `month`, `week`, `day`, `hour`, `minute`,
    /// `second`, `millisecond`), per § Date/Time Arithmetic: partial units are truncated, and a
    /// unit finer than the value's precision is converted to the value's precision.
    pub(crate) fn add(&self, amount: f64, unit: &str) -> Option<Self> {
        let mut t = *self;
        // Partial calendar units are truncated (`+ 7.7 days` adds 7 days).
        let amount = amount.trunc();
        let whole = amount as i64;
        match unit {
            "year" | "month" => {
                if t.kind == TemporalKind::Time {
                    return None;
                }
                let months = if unit == "year" {
                    whole.checked_mul(12)?
                } else {
                    whole
                };
                if unit == "month" && t.precision < 2 {
                    let total = i64::from(t.year).checked_add(months / 12)?;
                    t.year = i32::try_from(total).ok().filter(valid_year)?;
                    return Some(t);
                }
                let total =
                    (i64::from(t.year) * 12 + i64::from(t.month) - 1).checked_add(months)?;
                t.year = i32::try_from(total.div_euclid(12))
                    .ok()
                    .filter(valid_year)?;
                t.month = total.rem_euclid(12) as u32 + 1;
                t.day = t.day.min(days_in_month(t.year, t.month));
                Some(t)
            }
            _ => {
                let unit_ms: f64 = match unit {
                    "week" => 7.0 * 86_400_000.0,
                    "day" => 86_400_000.0,
                    "hour" => 3_600_000.0,
                    "minute" => 60_000.0,
                    "second" => 1000.0,
                    "millisecond" => 1.0,
                    _ => return None,
                };
                if t.kind == TemporalKind::Time && unit_ms >= 86_400_000.0 {
                    return None;
                }
                let prec_ms: f64 = match t.precision {
                    1 => {
                        let years = (amount * unit_ms / (365.0 * 86_400_000.0)).trunc();
                        return t.add(years, "year");
                    }
                    2 => {
                        let months = (amount * unit_ms / (30.0 * 86_400_000.0)).trunc();
                        return t.add(months, "month");
                    }
                    3 => 86_400_000.0,
                    4 => 3_600_000.0,
                    5 => 60_000.0,
                    6 => 1000.0,
                    _ => 1.0,
                };
                let delta = ((amount * unit_ms) / prec_ms).trunc() * prec_ms;
                // Beyond ±10,000 years there is nothing to represent.
                if !delta.is_finite() || delta.abs() > 3.2e14 {
                    return None;
                }
                let ms = t.local_millis() + delta as i64;
                if t.kind == TemporalKind::Time {
                    let ms = ms.rem_euclid(86_400_000);
                    let mut r = t.with_millis(ms);
                    r.kind = TemporalKind::Time;
                    return Some(r);
                }
                let r = t.with_millis(ms);
                valid_year(&r.year).then_some(r)
            }
        }
    }

    /// `lowBoundary`/`highBoundary` (FHIRPath N2 §5.7): fills unknown components with their
    /// least or greatest value up to `digits` digits of precision; a date-time without a time
    /// zone takes the widest offsets (+14:00 low, -12:00 high).
    pub(crate) fn boundary(&self, digits: i64, high: bool) -> Option<Self> {
        let target: u8 = if self.kind == TemporalKind::Time {
            match digits {
                2 => 4,
                4 => 5,
                6 => 6,
                9 => 7,
                _ => return None,
            }
        } else {
            match digits {
                4 => 1,
                6 => 2,
                8 => 3,
                10 => 4,
                12 => 5,
                14 => 6,
                17 => 7,
                _ => return None,
            }
        };
        let mut t = *self;
        // Hour precision is not valid FHIR; it is read as `hh:00`.
        if t.precision == 4 {
            t.precision = 5;
            t.minute = 0;
        }
        for p in (t.precision + 1)..=target {
            match p {
                2 => t.month = if high { 12 } else { 1 },
                3 => {
                    t.day = if high {
                        days_in_month(t.year, t.month)
                    } else {
                        1
                    }
                }
                4 => t.hour = if high { 23 } else { 0 },
                5 => t.minute = if high { 59 } else { 0 },
                6 => t.second = if high { 59 } else { 0 },
                _ => t.milli = if high { 999 } else { 0 },
            }
        }
        t.precision = target;
        if t.kind == TemporalKind::DateTime {
            if target < 4 {
                t.tz = None;
            } else if t.tz.is_none() {
                t.tz = Some(if high { -12 * 60 } else { 14 * 60 });
            }
        }
        Some(t)
    }

    fn fmt_time(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}", self.hour)?;
        if self.precision >= 5 {
            write!(f, ":{:02}", self.minute)?;
        }
        if self.precision >= 6 {
            write!(f, ":{:02}", self.second)?;
        }
        if self.precision >= 7 {
            write!(f, ".{:03}", self.milli)?;
        }
        Ok(())
    }
}

impl fmt::Display for Temporal {
    /// The FHIR/ISO text form (no `@`), as produced by `toString()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == TemporalKind::Time {
            return self.fmt_time(f);
        }
        write!(f, "{:04}", self.year)?;
        if self.precision >= 2 {
            write!(f, "-{:02}", self.month)?;
        }
        if self.precision >= 3 {
            write!(f, "-{:02}", self.day)?;
        }
        if self.kind == TemporalKind::DateTime && self.precision >= 4 {
            f.write_str("T")?;
            self.fmt_time(f)?;
            match self.tz {
                Some(0) => f.write_str("Z")?,
                Some(off) => {
                    let sign = if off < 0 { '-' } else { '+' };
                    write!(f, "{sign}{:02}:{:02}", off.abs() / 60, off.abs() % 60)?;
                }
                None => {}
            }
        }
        Ok(())
    }
}
