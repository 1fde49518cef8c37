//! Normal forms of search values, shared by index extraction and query parsing so that both
//! sides of a comparison agree: folded strings, date ranges at their precision, and the
//! implicit range of a decimal literal (FHIR R4 §3.1.1.4.2 number, §3.1.1.4.3 date).

use chrono::{Datelike, NaiveDate};
use unicode_normalization::UnicodeNormalization;

/// Lowercase with accents removed: the form that string search compares
/// (FHIR R4 §3.1.1.4.6 "case- and accent-insensitive").
pub fn fold(s: &str) -> String {
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Microseconds since 1970-01-01T00:00Z of the first and the last instant of a FHIR date,
/// dateTime or instant at the precision written (`2013` covers the whole year). A value
/// without a time zone is read as UTC. `None` if the text is not a valid date.
pub fn date_range(text: &str) -> Option<(i64, i64)> {
    let t = text.trim();
    let (date_part, time_part) = match t.find('T') {
        Some(i) => (&t[..i], Some(&t[i + 1..])),
        None => (t, None),
    };
    let mut it = date_part.split('-');
    let year: i32 = parse_digits(it.next()?, 4)?;
    let month: Option<u32> = match it.next() {
        Some(m) => Some(parse_digits(m, 2)?),
        None => None,
    };
    let day: Option<u32> = match it.next() {
        Some(d) => Some(parse_digits(d, 2)?),
        None => None,
    };
    if it.next().is_some() {
        return None;
    }
    let start = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
    let Some(time) = time_part else {
        if time_part.is_none() && t.contains('T') {
            return None;
        }
        let end = match (month, day) {
            (None, _) => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            (Some(_), None) => {
                if start.month() == 12 {
                    NaiveDate::from_ymd_opt(year + 1, 1, 1)?
                } else {
                    NaiveDate::from_ymd_opt(year, start.month() + 1, 1)?
                }
            }
            (Some(_), Some(_)) => start.succ_opt()?,
        };
        let lo = start.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros();
        let hi = end.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros() - 1;
        return Some((lo, hi));
    };
    day?;
    // Time zone: Z, +hh:mm or -hh:mm at the end.
    let (clock, offset_secs) = if let Some(c) = time.strip_suffix('Z') {
        (c, 0_i64)
    } else if let Some(i) = time.rfind(['+', '-']) {
        let tz = &time[i + 1..];
        let (h, m) = tz.split_once(':')?;
        let secs = i64::from(parse_digits::<u32>(h, 2)?) * 3600
            + i64::from(parse_digits::<u32>(m, 2)?) * 60;
        (
            &time[..i],
            if time.as_bytes()[i] == b'-' {
                -secs
            } else {
                secs
            },
        )
    } else {
        (time, 0)
    };
    let mut parts = clock.split(':');
    let h: u32 = parse_digits(parts.next()?, 2)?;
    let m: u32 = parse_digits(parts.next()?, 2)?;
    let (s, frac, width): (u32, i64, i64) = match parts.next() {
        None => (0, 0, 60_000_000),
        Some(sec) => {
            let (whole, frac) = match sec.split_once('.') {
                Some((w, f)) => (w, Some(f)),
                None => (sec, None),
            };
            let s: u32 = parse_digits(whole, 2)?;
            match frac {
                None => (s, 0, 1_000_000),
                Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
                    let digits = f.len().min(6);
                    let v: i64 = f[..digits].parse().ok()?;
                    let scale = 10_i64.pow(u32::try_from(6 - digits).ok()?);
                    (s, v * scale, scale)
                }
                Some(_) => return None,
            }
        }
    };
    if parts.next().is_some() {
        return None;
    }
    let lo = start
        .and_hms_opt(h, m, s.min(59))?
        .and_utc()
        .timestamp_micros()
        + frac
        - offset_secs * 1_000_000;
    Some((lo, lo + width - 1))
}

fn parse_digits<T: std::str::FromStr>(s: &str, len: usize) -> Option<T> {
    if s.len() == len && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// The value of a decimal literal and the implicit range of its precision: `100` is
/// [99.5, 100.5], `100.00` is [99.995, 100.005] (FHIR R4 §3.1.1.4.2).
pub fn number_range(text: &str) -> Option<(f64, f64, f64)> {
    let t = text.trim();
    if t.is_empty()
        || !t
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
    {
        return None;
    }
    let v: f64 = t.parse().ok()?;
    if !v.is_finite() {
        return None;
    }
    let (mantissa, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i32>().ok()?),
        None => (t, 0),
    };
    let decimals = mantissa
        .split_once('.')
        .map_or(0, |(_, f)| i32::try_from(f.len()).unwrap_or(0));
    let half = 0.5 * 10_f64.powi(exp.saturating_sub(decimals));
    Some((v, v - half, v + half))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(micros: i64) -> String {
        chrono::DateTime::from_timestamp_micros(micros)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%S%.6f")
            .to_string()
    }

    #[test]
    fn dates_cover_their_precision() {
        let r = |s| {
            let (a, b) = date_range(s).unwrap();
            (iso(a), iso(b))
        };
        assert_eq!(
            r("2013"),
            (
                "2013-01-01T00:00:00.000000".into(),
                "2013-12-31T23:59:59.999999".into()
            )
        );
        assert_eq!(r("2013-02").1, "2013-02-28T23:59:59.999999");
        assert_eq!(r("2013-12").1, "2013-12-31T23:59:59.999999");
        assert_eq!(
            r("2013-01-14T10:00"),
            (
                "2013-01-14T10:00:00.000000".into(),
                "2013-01-14T10:00:59.999999".into()
            )
        );
        assert_eq!(
            r("2013-01-14T10:00:00+02:00").0,
            "2013-01-14T08:00:00.000000"
        );
        assert_eq!(r("2013-01-14T10:00:00.5Z").1, "2013-01-14T10:00:00.599999");
        assert!(date_range("2013-13").is_none());
        assert!(date_range("13-01").is_none());
        assert!(date_range("2013-01-01T").is_none());
    }

    #[test]
    fn numbers_carry_implicit_precision() {
        assert_eq!(number_range("100"), Some((100.0, 99.5, 100.5)));
        let (_, lo, hi) = number_range("100.00").unwrap();
        assert!((lo - 99.995).abs() < 1e-9 && (hi - 100.005).abs() < 1e-9);
        assert!(number_range("abc").is_none());
    }

    #[test]
    fn folding_removes_case_and_accents() {
        assert_eq!(fold("Ándrés"), "andres");
    }
}
