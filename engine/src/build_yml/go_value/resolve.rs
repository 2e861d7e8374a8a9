//! What a plain scalar means, as yaml.v3's `resolve.go` decides it: null, bool, Go's integer
//! and float syntax, YAML timestamps, or the text itself, checked against an explicit tag.
//! Node tags and the decoder both ask it, so it stands apart from either.

use crate::build_yml::node;

/// A scalar as yaml.v3's `resolve` sees it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Resolved {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// The text itself (`!!str`, or an unresolvable tag such as `!custom`).
    Str(String),
    Timestamp(String),
    Merge,
}

impl Resolved {
    pub(crate) fn tag(&self) -> &str {
        match self {
            Resolved::Null => node::NULL,
            Resolved::Bool(_) => "!!bool",
            Resolved::Int(_) | Resolved::Uint(_) => "!!int",
            Resolved::Float(_) => "!!float",
            Resolved::Str(_) => node::STR,
            Resolved::Timestamp(_) => "!!timestamp",
            Resolved::Merge => node::MERGE,
        }
    }
}

/// yaml.v3's `resolve(tag, in)`: what a plain scalar means, checked against an explicit tag.
/// The error is yaml.v3's fatal "cannot decode !!str `x` as a !!int".
pub(crate) fn resolve(tag: Option<&str>, text: &str) -> Result<Resolved, String> {
    let tag = tag.unwrap_or("");
    if !matches!(
        tag,
        "" | "!!str" | "!!bool" | "!!int" | "!!float" | "!!null" | "!!timestamp"
    ) {
        // `!!binary`, `!custom`, …: the text, as is.
        return Ok(Resolved::Str(text.to_owned()));
    }
    let resolved = if tag == "!!str" {
        Resolved::Str(text.to_owned())
    } else {
        resolve_plain(text, tag.is_empty() || tag == "!!timestamp")
    };
    if tag.is_empty() || tag == resolved.tag() || tag == "!!str" {
        return Ok(resolved);
    }
    match (tag, &resolved) {
        ("!!float", Resolved::Int(i)) => Ok(Resolved::Float(*i as f64)),
        ("!!float", Resolved::Uint(u)) => Ok(Resolved::Float(*u as f64)),
        _ => Err(format!(
            "cannot decode {} `{text}` as a {tag}",
            resolved.tag()
        )),
    }
}

fn resolve_plain(text: &str, timestamps: bool) -> Resolved {
    let hint = text.bytes().next();
    match text {
        "true" | "True" | "TRUE" => return Resolved::Bool(true),
        "false" | "False" | "FALSE" => return Resolved::Bool(false),
        "" | "~" | "null" | "Null" | "NULL" => return Resolved::Null,
        ".nan" | ".NaN" | ".NAN" => return Resolved::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Resolved::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Resolved::Float(f64::NEG_INFINITY),
        "<<" => return Resolved::Merge,
        _ => {}
    }
    match hint {
        Some(b'.') => {
            if let Some(f) = parse_float(text) {
                return Resolved::Float(f);
            }
        }
        Some(b'0'..=b'9' | b'+' | b'-') => {
            if let Some(t) = timestamps.then(|| parse_timestamp(text)).flatten() {
                return Resolved::Timestamp(t);
            }
            let plain = text.replace('_', "");
            if let Some(i) = parse_int(&plain) {
                return Resolved::Int(i);
            }
            if let Some(u) = parse_uint(&plain) {
                return Resolved::Uint(u);
            }
            if let Some(f) = is_yaml_float(&plain).then(|| parse_float(&plain)).flatten() {
                return Resolved::Float(f);
            }
        }
        _ => {}
    }
    Resolved::Str(text.to_owned())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`, `0o`, `0b` or a leading `0` (octal).
fn parse_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let magnitude = parse_uint(digits)?;
    if negative {
        0i64.checked_sub_unsigned(magnitude)
    } else {
        i64::try_from(magnitude).ok()
    }
}

/// Go's `strconv.ParseUint(s, 0, 64)` (no sign allowed).
fn parse_uint(s: &str) -> Option<u64> {
    let lower = s.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) = match lower.as_deref() {
        Some("0x") => (16, &s[2..]),
        Some("0o") => (8, &s[2..]),
        Some("0b") => (2, &s[2..]),
        _ if s.len() > 1 && s.starts_with('0') => (8, &s[1..]),
        _ => (10, s),
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// yaml.v3's `yamlStyleFloat`: `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && frac.bytes().all(|b| b.is_ascii_digit()),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

/// Go's `strconv.ParseFloat(s, 64)` for the forms yaml.v3 hands it; out of range is an error.
fn parse_float(s: &str) -> Option<f64> {
    let lower = s.to_ascii_lowercase();
    if lower.contains("inf") || lower.contains("nan") || lower.contains('x') {
        return None;
    }
    s.parse::<f64>().ok().filter(|f| f.is_finite())
}

/// yaml.v3's `parseTimestamp`: `2006-1-2`, `2006-1-2T15:4:5.999999999Z07:00` (also `t`), and
/// `2006-1-2 15:4:5.999999999` (UTC), as `time.Time.MarshalJSON` would print it.
fn parse_timestamp(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    if bytes.len() < 5 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return None;
    }
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some((&s[i + 1..], s.as_bytes()[i] != b' '))),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let year: i32 = parts.next()?.parse().ok()?;
    let month = short_number(parts.next()?, 1, 12)?;
    let day = short_number(parts.next()?, 1, 31)?;
    if parts.next().is_some() || day > days_in_month(year, month) {
        return None;
    }
    let Some((time, zoned)) = time else {
        return Some(format!("{year:04}-{month:02}-{day:02}T00:00:00Z"));
    };
    let (clock, zone) = if zoned {
        if let Some(clock) = time.strip_suffix('Z') {
            (clock, "Z".to_owned())
        } else {
            let i = time.rfind(['+', '-'])?;
            let (h, m) = time[i + 1..].split_once(':')?;
            let (h, m) = (two_digits(h, 23)?, two_digits(m, 59)?);
            (&time[..i], format!("{}{h:02}:{m:02}", &time[i..=i]))
        }
    } else {
        (time, "Z".to_owned())
    };
    let (hms, fraction) = match clock.split_once('.') {
        Some((hms, f))
            if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (hms, f.trim_end_matches('0'))
        }
        Some(_) => return None,
        None => (clock, ""),
    };
    let mut hms = hms.split(':');
    let hour = short_number(hms.next()?, 0, 23)?;
    let minute = short_number(hms.next()?, 0, 59)?;
    let second = short_number(hms.next()?, 0, 59)?;
    if hms.next().is_some() {
        return None;
    }
    let fraction = if fraction.is_empty() {
        String::new()
    } else {
        format!(".{fraction}")
    };
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{zone}"
    ))
}

/// One or two digits in `min..=max` (Go layouts `1`, `2`, `15`, `4`, `5`).
fn short_number(s: &str, min: u32, max: u32) -> Option<u32> {
    if s.is_empty() || s.len() > 2 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|n| (min..=max).contains(n))
}

fn two_digits(s: &str, max: u32) -> Option<u32> {
    (s.len() == 2).then(|| short_number(s, 0, max)).flatten()
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}
