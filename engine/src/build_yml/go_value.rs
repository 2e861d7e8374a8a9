//! Go values decoded from YAML exactly as linuxkit's yaml.v3 (`KnownFields(true)`) decodes them
//! into its Go structs.
//!
//! A Go struct is described by a static [`GoType`] (field names in YAML and JSON, kinds, pointer
//! or not), and [`Decoder`] follows yaml.v3's `decode.go` rule for rule over it, so what
//! linuxkit users write means the same here without a table of special cases:
//! - a null value resets a pointer, slice, map or interface and leaves a string, bool or struct
//!   alone (`org:` keeps `linuxkit`; `arches:` means no arches);
//! - a string field takes any scalar's source text (`mode: 0666` is `"0666"`);
//! - integers are parsed as Go's `ParseInt(s, 0, 64)` after `_` removal (`0666` is octal, `08`
//!   a float), floats truncate into integer fields, YAML 1.1 words (`yes`, `off`) fill bools;
//! - an interface (`uid`) takes the resolved scalar: int, float, bool, string, timestamp;
//! - struct keys are the `yaml` tag, or the lowercased Go field name where the struct has none
//!   (runtime-spec's: `uidMappings: [{containerid: 0}]`); unknown keys, duplicate keys and type
//!   mismatches are errors, all collected, each with its line;
//! - merge keys (`<<`) merge as yaml.v3 merges them, and alias expansion is bounded by
//!   yaml.v3's own ratio rule.
//!
//! [`super::go_json`] writes the values back out as Go's `encoding/json` would.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use super::node::{self, Kind, Node};

/// A Go type, as far as decoding and encoding need it.
#[derive(Debug)]
pub(crate) enum GoType {
    String,
    Bool,
    /// A signed integer of this many bits (Go's `int` is 64 here, as on linuxkit's platforms).
    Int(u32),
    Uint(u32),
    /// `interface{}`.
    Interface,
    Slice(&'static GoType),
    Ptr(&'static GoType),
    /// `map[string]T`.
    Map(&'static GoType),
    Struct(&'static GoStruct),
}

/// A Go struct: its name for messages (`specs.Mount`) and its fields in declaration order.
#[derive(Debug)]
pub(crate) struct GoStruct {
    pub name: &'static str,
    pub fields: &'static [GoField],
}

/// One field of a [`GoStruct`].
#[derive(Debug)]
pub(crate) struct GoField {
    /// The YAML key: the `yaml` tag's name, or the lowercased Go field name.
    pub yaml: &'static str,
    /// The JSON key (unused for an embedded field, whose fields are promoted).
    pub json: &'static str,
    /// `omitempty` in the `json` tag.
    pub omitempty: bool,
    /// An anonymous (embedded) struct field: one YAML key (yaml.v3 does not inline it without
    /// `,inline`), promoted fields in JSON.
    pub embedded: bool,
    pub ty: GoType,
}

impl GoField {
    /// A field whose YAML and JSON names agree.
    pub(crate) const fn new(name: &'static str, omitempty: bool, ty: GoType) -> Self {
        Self::named(name, name, omitempty, ty)
    }

    pub(crate) const fn named(
        yaml: &'static str,
        json: &'static str,
        omitempty: bool,
        ty: GoType,
    ) -> Self {
        GoField {
            yaml,
            json,
            omitempty,
            embedded: false,
            ty,
        }
    }

    pub(crate) const fn embedded(yaml: &'static str, ty: GoType) -> Self {
        GoField {
            yaml,
            json: "",
            omitempty: false,
            embedded: true,
            ty,
        }
    }
}

impl GoType {
    /// The zero value of this type.
    pub(crate) fn zero(&self) -> GoValue {
        match self {
            GoType::String => GoValue::String(String::new()),
            GoType::Bool => GoValue::Bool(false),
            GoType::Int(_) => GoValue::Int(0),
            GoType::Uint(_) => GoValue::Uint(0),
            GoType::Interface | GoType::Slice(_) | GoType::Ptr(_) | GoType::Map(_) => GoValue::Nil,
            GoType::Struct(s) => GoValue::Struct(s.fields.iter().map(|f| f.ty.zero()).collect()),
        }
    }

    /// The type as Go prints it (`[]specs.Mount`), for messages.
    pub(crate) fn go_name(&self) -> String {
        match self {
            GoType::String => "string".into(),
            GoType::Bool => "bool".into(),
            GoType::Int(64) => "int".into(),
            GoType::Int(bits) => format!("int{bits}"),
            GoType::Uint(bits) => format!("uint{bits}"),
            GoType::Interface => "interface {}".into(),
            GoType::Slice(t) => format!("[]{}", t.go_name()),
            GoType::Ptr(t) => format!("*{}", t.go_name()),
            GoType::Map(t) => format!("map[string]{}", t.go_name()),
            GoType::Struct(s) => s.name.into(),
        }
    }
}

/// A decoded Go value. Typed values follow their [`GoType`]; an interface holds what yaml.v3
/// resolves a node to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum GoValue {
    /// A nil pointer, slice, map or interface.
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    String(String),
    /// A `time.Time`, as its `MarshalJSON` writes it (RFC 3339 with nanoseconds).
    Time(String),
    Slice(Vec<GoValue>),
    Map(BTreeMap<String, GoValue>),
    /// `map[interface{}]interface{}` (a mapping with a non-string key): `encoding/json`
    /// cannot marshal it.
    GeneralMap,
    /// A struct's fields, in declaration order.
    Struct(Vec<GoValue>),
    Ptr(Box<GoValue>),
}

impl GoValue {
    /// The value behind a pointer, or the value itself.
    pub(crate) fn deref(&self) -> Option<&GoValue> {
        match self {
            GoValue::Nil => None,
            GoValue::Ptr(v) => Some(v),
            v => Some(v),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.deref()? {
            GoValue::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self.deref()? {
            GoValue::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// A `[]string` (or `*[]string`); `None` when nil.
    pub(crate) fn as_strings(&self) -> Option<Vec<String>> {
        match self.deref()? {
            GoValue::Slice(items) => Some(
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default().to_owned())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A struct's field by YAML key.
    pub(crate) fn field<'v>(&'v self, ty: &GoStruct, yaml: &str) -> &'v GoValue {
        const NIL: &GoValue = &GoValue::Nil;
        match self.deref() {
            Some(GoValue::Struct(values)) => ty
                .fields
                .iter()
                .position(|f| f.yaml == yaml)
                .map_or(NIL, |i| &values[i]),
            _ => NIL,
        }
    }
}

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

/// One problem found while decoding.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct DecodeError {
    pub line: usize,
    /// Where in the document: `config.devices[0].mode`.
    pub path: String,
    pub message: String,
}

/// A problem that stops decoding at once (yaml.v3's `failf`).
pub(crate) type Fatal = DecodeError;

/// Decodes nodes into Go values, collecting yaml.v3's type errors.
#[derive(Default)]
pub(crate) struct Decoder {
    pub errors: Vec<DecodeError>,
    path: Vec<String>,
    decode_count: usize,
    alias_count: usize,
    alias_depth: usize,
}

type Merged = HashSet<String>;

impl Decoder {
    /// Decodes `node` into `out`, a value of `ty` that may already hold defaults.
    pub(crate) fn decode(
        &mut self,
        node: &Node,
        ty: &'static GoType,
        out: &mut GoValue,
    ) -> Result<(), Fatal> {
        self.unmarshal(node, ty, out, None).map(|_| ())
    }

    fn path(&self) -> String {
        let mut path = String::new();
        for part in &self.path {
            if !part.starts_with('[') && !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
        path
    }

    fn error(&mut self, line: usize, message: String) {
        let path = self.path();
        self.errors.push(DecodeError {
            line,
            path,
            message,
        });
    }

    /// An error about the key `key` of the mapping being decoded.
    fn key_error(&mut self, line: usize, key: &str, message: String) {
        self.path.push(key.to_owned());
        self.error(line, message);
        self.path.pop();
    }

    fn fatal(&self, line: usize, message: impl Into<String>) -> Fatal {
        DecodeError {
            line,
            path: self.path(),
            message: message.into(),
        }
    }

    /// yaml.v3's `terror`: "cannot unmarshal !!str `abc` into int64".
    fn type_error(&mut self, node: &Node, tag: &str, ty: &GoType) {
        let tag = node.tag.as_deref().unwrap_or(tag);
        let value = node.value();
        let shown = if tag == node::SEQ || tag == node::MAP {
            String::new()
        } else if value.chars().count() > 10 {
            format!(" `{}...`", value.chars().take(7).collect::<String>())
        } else {
            format!(" `{value}`")
        };
        self.error(
            node.line,
            format!("cannot unmarshal {tag}{shown} into {}", ty.go_name()),
        );
    }

    fn unmarshal(
        &mut self,
        node: &Node,
        mut ty: &'static GoType,
        mut out: &mut GoValue,
        merged: Option<&mut Merged>,
    ) -> Result<bool, Fatal> {
        self.decode_count += 1;
        if self.alias_depth > 0 {
            self.alias_count += 1;
        }
        if self.alias_count > 100
            && self.decode_count > 1000
            && self.alias_count as f64 / self.decode_count as f64
                > allowed_alias_ratio(self.decode_count)
        {
            return Err(self.fatal(node.line, "document contains excessive aliasing"));
        }
        if let Kind::Alias(target) = &node.kind {
            self.alias_depth += 1;
            let good = self.unmarshal(target, ty, out, merged);
            self.alias_depth -= 1;
            return good;
        }
        // yaml.v3's `prepare`: a non-null node allocates through pointers.
        if node.short_tag() != node::NULL {
            while let GoType::Ptr(elem) = ty {
                if *out == GoValue::Nil {
                    *out = GoValue::Ptr(Box::new(elem.zero()));
                }
                let GoValue::Ptr(inner) = out else {
                    unreachable!("a pointer's value is Nil or Ptr")
                };
                out = inner;
                ty = elem;
            }
        }
        match &node.kind {
            Kind::Scalar { .. } => self.scalar(node, ty, out),
            Kind::Sequence(items) => self.sequence(node, items, ty, out),
            Kind::Mapping(pairs) => self.mapping(node, pairs, ty, out, merged),
            Kind::Alias(_) => unreachable!("handled above"),
        }
    }

    /// yaml.v3's `null`: nil for what can be nil; anything else is left as it was.
    fn null(ty: &GoType, out: &mut GoValue) -> bool {
        match ty {
            GoType::Interface | GoType::Ptr(_) | GoType::Map(_) | GoType::Slice(_) => {
                *out = GoValue::Nil;
                true
            }
            _ => false,
        }
    }

    fn scalar(&mut self, node: &Node, ty: &GoType, out: &mut GoValue) -> Result<bool, Fatal> {
        let Kind::Scalar { value, quoted } = &node.kind else {
            unreachable!("called on scalars")
        };
        let indicated_string =
            node.tag.as_deref() == Some(node::STR) || (*quoted && node.tag.is_none());
        let resolved = if indicated_string {
            Resolved::Str(value.clone())
        } else if node.tag.as_deref() == Some("!!binary") {
            // Go's `base64.StdEncoding`, which skips line breaks.
            use base64::Engine as _;
            let text: String = value
                .chars()
                .filter(|c| !matches!(c, '\r' | '\n'))
                .collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| {
                    self.fatal(node.line, "!!binary value contains invalid base64 data")
                })?;
            // A Go string holds any bytes; a label is JSON, where invalid UTF-8 becomes U+FFFD.
            Resolved::Str(String::from_utf8_lossy(&bytes).into_owned())
        } else {
            resolve(node.tag.as_deref(), value).map_err(|m| self.fatal(node.line, m))?
        };
        if resolved == Resolved::Null {
            return Ok(Self::null(ty, out));
        }
        let set = match (ty, &resolved) {
            (GoType::String, Resolved::Str(s)) if node.tag.as_deref() == Some("!!binary") => {
                Some(GoValue::String(s.clone()))
            }
            (GoType::String, _) => Some(GoValue::String(value.clone())),
            (GoType::Interface, r) => Some(match r {
                Resolved::Bool(b) => GoValue::Bool(*b),
                Resolved::Int(i) => GoValue::Int(*i),
                Resolved::Uint(u) => GoValue::Uint(*u),
                Resolved::Float(f) => GoValue::Float(*f),
                Resolved::Timestamp(t) => GoValue::Time(t.clone()),
                Resolved::Str(s) => GoValue::String(s.clone()),
                Resolved::Merge => GoValue::String(value.clone()),
                Resolved::Null => unreachable!("handled above"),
            }),
            (GoType::Int(bits), r) => {
                let wide: Option<i128> = match r {
                    Resolved::Int(i) => Some((*i).into()),
                    Resolved::Uint(u) => Some((*u).into()),
                    // Go converts with truncation toward zero.
                    Resolved::Float(f) if f.is_finite() => Some(f.trunc() as i128),
                    _ => None,
                };
                let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
                wide.filter(|v| (min..=max).contains(v))
                    .map(|v| GoValue::Int(v as i64))
            }
            (GoType::Uint(bits), r) => {
                let wide: Option<i128> = match r {
                    Resolved::Int(i) => Some((*i).into()),
                    Resolved::Uint(u) => Some((*u).into()),
                    // Go's conversion as linuxkit's amd64 builds do it: a negative float
                    // goes through int64, so `-1.0` becomes 2^64-1 (and overflows any
                    // narrower field).
                    Resolved::Float(f) if f.is_finite() && *f < 0.0 && *f > -9.2e18 => {
                        Some(((f.trunc() as i64) as u64).into())
                    }
                    Resolved::Float(f) if f.is_finite() && *f >= 0.0 => Some(f.trunc() as i128),
                    _ => None,
                };
                let max = (1i128 << bits) - 1;
                wide.filter(|v| (0..=max).contains(v))
                    .map(|v| GoValue::Uint(v as u64))
            }
            (GoType::Bool, Resolved::Bool(b)) => Some(GoValue::Bool(*b)),
            // YAML 1.1 booleans, only into a typed bool.
            (GoType::Bool, Resolved::Str(s)) => match s.as_str() {
                "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(GoValue::Bool(true)),
                "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
                    Some(GoValue::Bool(false))
                }
                _ => None,
            },
            _ => None,
        };
        match set {
            Some(v) => {
                *out = v;
                Ok(true)
            }
            None => {
                self.type_error(node, resolved.tag(), ty);
                Ok(false)
            }
        }
    }

    fn sequence(
        &mut self,
        node: &Node,
        items: &[Rc<Node>],
        ty: &'static GoType,
        out: &mut GoValue,
    ) -> Result<bool, Fatal> {
        let elem = match ty {
            GoType::Slice(elem) => *elem,
            GoType::Interface => &GoType::Interface,
            _ => {
                self.type_error(node, node::SEQ, ty);
                return Ok(false);
            }
        };
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            self.path.push(format!("[{i}]"));
            let mut value = elem.zero();
            // An element that fails (or is null where nil is impossible) is dropped.
            let good = self.unmarshal(item, elem, &mut value, None);
            self.path.pop();
            if good? {
                values.push(value);
            }
        }
        *out = GoValue::Slice(values);
        Ok(true)
    }

    fn mapping(
        &mut self,
        node: &Node,
        pairs: &[(Rc<Node>, Rc<Node>)],
        ty: &'static GoType,
        out: &mut GoValue,
        merged: Option<&mut Merged>,
    ) -> Result<bool, Fatal> {
        let errors_before = self.errors.len();
        for (i, (ki, _)) in pairs.iter().enumerate() {
            for (kj, _) in &pairs[i + 1..] {
                if same_key(ki, kj) {
                    self.key_error(
                        kj.line,
                        kj.value(),
                        format!(
                            "mapping key {:?} already defined at line {}",
                            kj.value(),
                            ki.line
                        ),
                    );
                }
            }
        }
        if self.errors.len() > errors_before {
            return Ok(false);
        }
        match ty {
            GoType::Struct(s) => self.mapping_struct(node, pairs, ty, s, out, merged),
            GoType::Map(_) => self.mapping_map(node, pairs, ty, out, merged),
            GoType::Interface => {
                let string_keys = pairs
                    .iter()
                    .all(|(k, _)| matches!(k.short_tag().as_str(), node::STR | node::MERGE));
                if !string_keys {
                    *out = GoValue::GeneralMap;
                    return Ok(true);
                }
                // yaml.v3 decodes into a fresh `map[string]interface{}`.
                *out = GoValue::Nil;
                self.mapping_map(node, pairs, &GoType::Map(&GoType::Interface), out, merged)
            }
            _ => {
                self.type_error(node, node::MAP, ty);
                Ok(false)
            }
        }
    }

    /// A key decoded into a Go string: a scalar's text; `None` for a null key (skipped, as
    /// yaml.v3 skips it) or a collection (a type error).
    fn key_name(&mut self, key: &Node) -> Option<String> {
        let key = resolve_alias(key);
        match &key.kind {
            Kind::Scalar { .. } if key.short_tag() == node::NULL => None,
            Kind::Scalar { value, .. } => Some(value.clone()),
            _ => {
                self.type_error(key, &key.short_tag(), &GoType::String);
                None
            }
        }
    }

    /// The name of a mapping's key to decode, or `None` to skip it: a null key (yaml.v3
    /// skips it), a collection (a type error), or, inside a merge, a key already set (it wins).
    fn own_key(&mut self, key: &Node, merged: Option<&mut Merged>) -> Option<String> {
        let name = self.key_name(key)?;
        let already_set = merged.is_some_and(|set| !set.insert(name.clone()));
        (!already_set).then_some(name)
    }

    fn mapping_map(
        &mut self,
        node: &Node,
        pairs: &[(Rc<Node>, Rc<Node>)],
        map_ty: &'static GoType,
        out: &mut GoValue,
        mut merged: Option<&mut Merged>,
    ) -> Result<bool, Fatal> {
        let GoType::Map(elem) = map_ty else {
            unreachable!("called with a map type")
        };
        let is_new = *out == GoValue::Nil;
        if is_new {
            *out = GoValue::Map(BTreeMap::new());
        }
        let mut merge = None;
        for (k, v) in pairs {
            if k.is_merge() {
                merge = Some(v);
                continue;
            }
            let Some(name) = self.own_key(k, merged.as_deref_mut()) else {
                continue;
            };
            self.path.push(name.clone());
            let mut value = elem.zero();
            let good = self.unmarshal(v, elem, &mut value, None);
            self.path.pop();
            let GoValue::Map(map) = out else {
                unreachable!("made a map above")
            };
            if good? || (v.short_tag() == node::NULL && (is_new || !map.contains_key(&name))) {
                map.insert(name, value);
            }
        }
        if let Some(m) = merge {
            self.merge(node, pairs, m, map_ty, out, merged)?;
        }
        Ok(true)
    }

    fn mapping_struct(
        &mut self,
        node: &Node,
        pairs: &[(Rc<Node>, Rc<Node>)],
        struct_ty: &'static GoType,
        ty: &'static GoStruct,
        out: &mut GoValue,
        mut merged: Option<&mut Merged>,
    ) -> Result<bool, Fatal> {
        let mut done = vec![false; ty.fields.len()];
        let mut merge = None;
        for (k, v) in pairs {
            if k.is_merge() {
                merge = Some(v);
                continue;
            }
            let Some(name) = self.own_key(k, merged.as_deref_mut()) else {
                continue;
            };
            let Some(index) = ty.fields.iter().position(|f| f.yaml == name) else {
                self.key_error(
                    k.line,
                    &name,
                    format!("field {name} not found in type {}", ty.name),
                );
                continue;
            };
            if std::mem::replace(&mut done[index], true) {
                let message = format!("field {name} already set in type {}", ty.name);
                self.key_error(k.line, &name, message);
                continue;
            }
            let GoValue::Struct(values) = out else {
                unreachable!("a struct's value is Struct")
            };
            self.path.push(name);
            let good = self.unmarshal(v, &ty.fields[index].ty, &mut values[index], None);
            self.path.pop();
            good?;
        }
        if let Some(m) = merge {
            self.merge(node, pairs, m, struct_ty, out, merged)?;
        }
        Ok(true)
    }

    /// yaml.v3's `merge`: the merged mappings fill only the keys not set already.
    fn merge(
        &mut self,
        node: &Node,
        pairs: &[(Rc<Node>, Rc<Node>)],
        merge: &Node,
        ty: &'static GoType,
        out: &mut GoValue,
        merged: Option<&mut Merged>,
    ) -> Result<(), Fatal> {
        let mut own;
        let set = match merged {
            Some(set) => set,
            None => {
                own = pairs
                    .iter()
                    .filter_map(|(k, _)| match &resolve_alias(k).kind {
                        Kind::Scalar { value, .. } => Some(value.clone()),
                        _ => None,
                    })
                    .collect::<Merged>();
                &mut own
            }
        };
        let is_mapping = |n: &Node| matches!(resolve_alias(n).kind, Kind::Mapping(_));
        let sources: Vec<&Node> = match &merge.kind {
            Kind::Mapping(_) | Kind::Alias(_) if is_mapping(merge) => vec![merge],
            Kind::Sequence(items) if items.iter().all(|i| is_mapping(i)) => {
                items.iter().map(|i| &**i).collect()
            }
            _ => {
                return Err(self.fatal(
                    node.line,
                    "map merge requires map or sequence of maps as the value",
                ));
            }
        };
        for source in sources {
            self.unmarshal(source, ty, out, Some(set))?;
        }
        Ok(())
    }
}

fn resolve_alias(node: &Node) -> &Node {
    match &node.kind {
        Kind::Alias(target) => resolve_alias(target),
        _ => node,
    }
}

/// yaml.v3's duplicate check: same kind and same `Value` (so two collection keys collide).
fn same_key(a: &Node, b: &Node) -> bool {
    std::mem::discriminant(&a.kind) == std::mem::discriminant(&b.kind) && a.value() == b.value()
}

/// yaml.v3's `allowedAliasRatio`.
fn allowed_alias_ratio(decode_count: usize) -> f64 {
    const LOW: usize = 400_000;
    const HIGH: usize = 4_000_000;
    match decode_count {
        n if n <= LOW => 0.99,
        n if n >= HIGH => 0.10,
        n => 0.99 - 0.89 * ((n - LOW) as f64 / (HIGH - LOW) as f64),
    }
}
