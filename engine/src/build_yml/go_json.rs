//! [`GoValue`]s written as Go's `encoding/json` `Marshal` writes them (Go 1.22 and later, as
//! linuxkit is built): struct fields in declaration order, `omitempty` dropping `false`, `0`,
//! `""` and nil or empty collections, map keys sorted, embedded structs' fields promoted,
//! compact, HTML-safe escaping (`<` is `\u003c`), `\b` and `\f` short escapes, floats in the
//! shortest form with Go's switch to exponents, NaN, infinities and non-string map keys
//! refused.

use super::go_value::{GoStruct, GoType, GoValue};

/// The JSON `json.Marshal` gives for `value` of type `ty`, or its error text.
pub(crate) fn marshal(value: &GoValue, ty: &GoType) -> Result<String, String> {
    let mut out = String::new();
    encode(&mut out, value, ty)?;
    Ok(out)
}

fn encode(out: &mut String, value: &GoValue, ty: &GoType) -> Result<(), String> {
    match (ty, value) {
        (GoType::Interface, v) => encode_dynamic(out, v)?,
        (GoType::Ptr(_) | GoType::Slice(_) | GoType::Map(_), GoValue::Nil) => out.push_str("null"),
        (GoType::Ptr(elem), GoValue::Ptr(v)) => encode(out, v, elem)?,
        (GoType::Slice(elem), GoValue::Slice(items)) => {
            array(out, items, |out, item| encode(out, item, elem))?
        }
        (GoType::Map(elem), GoValue::Map(map)) => object(out, map, |out, v| encode(out, v, elem))?,
        (GoType::Struct(s), GoValue::Struct(values)) => {
            out.push('{');
            let mut first = true;
            encode_fields(out, s, values, &mut first)?;
            out.push('}');
        }
        (GoType::String, GoValue::String(s)) => string(out, s),
        (GoType::Bool, GoValue::Bool(b)) => out.push_str(if *b { "true" } else { "false" }),
        (GoType::Int(_), GoValue::Int(i)) => out.push_str(&i.to_string()),
        (GoType::Uint(_), GoValue::Uint(u)) => out.push_str(&u.to_string()),
        (ty, v) => {
            return Err(format!(
                "internal error: a {v:?} where a {} belongs",
                ty.go_name()
            ));
        }
    }
    Ok(())
}

fn encode_fields(
    out: &mut String,
    s: &GoStruct,
    values: &[GoValue],
    first: &mut bool,
) -> Result<(), String> {
    for (field, value) in s.fields.iter().zip(values) {
        if field.embedded {
            match (&field.ty, value) {
                (GoType::Struct(inner), GoValue::Struct(inner_values)) => {
                    encode_fields(out, inner, inner_values, first)?
                }
                _ => return Err("internal error: an embedded field that is not a struct".into()),
            }
            continue;
        }
        if field.omitempty && is_empty(value) {
            continue;
        }
        if !std::mem::replace(first, false) {
            out.push(',');
        }
        string(out, field.json);
        out.push(':');
        encode(out, value, &field.ty)?;
    }
    Ok(())
}

/// `[a,b,…]`, each item written by `item`.
fn array(
    out: &mut String,
    items: &[GoValue],
    mut item: impl FnMut(&mut String, &GoValue) -> Result<(), String>,
) -> Result<(), String> {
    out.push('[');
    for (i, value) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, value)?;
    }
    out.push(']');
    Ok(())
}

/// `{"k":v,…}` in key order (Go sorts map keys), each value written by `value`.
fn object(
    out: &mut String,
    map: &std::collections::BTreeMap<String, GoValue>,
    mut value: impl FnMut(&mut String, &GoValue) -> Result<(), String>,
) -> Result<(), String> {
    out.push('{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        string(out, k);
        out.push(':');
        value(out, v)?;
    }
    out.push('}');
    Ok(())
}

/// `encoding/json`'s `isEmptyValue`.
fn is_empty(value: &GoValue) -> bool {
    match value {
        GoValue::Nil => true,
        GoValue::Bool(b) => !b,
        GoValue::Int(i) => *i == 0,
        GoValue::Uint(u) => *u == 0,
        GoValue::Float(f) => *f == 0.0,
        GoValue::String(s) => s.is_empty(),
        GoValue::Slice(v) => v.is_empty(),
        GoValue::Map(m) => m.is_empty(),
        GoValue::Time(_) | GoValue::GeneralMap | GoValue::Struct(_) | GoValue::Ptr(_) => false,
    }
}

/// An interface's dynamic value.
fn encode_dynamic(out: &mut String, value: &GoValue) -> Result<(), String> {
    match value {
        GoValue::Nil => out.push_str("null"),
        GoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        GoValue::Int(i) => out.push_str(&i.to_string()),
        GoValue::Uint(u) => out.push_str(&u.to_string()),
        GoValue::Float(f) => float(out, *f)?,
        GoValue::String(s) | GoValue::Time(s) => string(out, s),
        GoValue::Slice(items) => array(out, items, encode_dynamic)?,
        GoValue::Map(map) => object(out, map, encode_dynamic)?,
        GoValue::GeneralMap => {
            return Err("json: unsupported type: map[interface {}]interface {}".into());
        }
        GoValue::Struct(_) | GoValue::Ptr(_) => {
            return Err("internal error: a typed value in an interface".into());
        }
    }
    Ok(())
}

/// `encoding/json`'s `floatEncoder` for float64: `'f'` format, or `'e'` below 1e-6 and from
/// 1e21 on, with a two-digit negative exponent shortened (`1e-07` is `1e-7`).
fn float(out: &mut String, f: f64) -> Result<(), String> {
    if !f.is_finite() {
        let shown = if f.is_nan() {
            "NaN"
        } else if f > 0.0 {
            "+Inf"
        } else {
            "-Inf"
        };
        return Err(format!("json: unsupported value: {shown}"));
    }
    let abs = f.abs();
    if abs != 0.0 && !(1e-6..1e21).contains(&abs) {
        // Rust's `{:e}` is the shortest round-trip mantissa, as Go's precision -1.
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let exponent: i32 = exponent.parse().unwrap_or(0);
        if exponent < 0 {
            out.push_str(&format!("{mantissa}e-{}", -exponent));
        } else {
            out.push_str(&format!("{mantissa}e+{exponent:02}"));
        }
    } else {
        // Rust's `Display` for f64 is the shortest round-trip digits in plain notation.
        out.push_str(&f.to_string());
    }
    Ok(())
}

/// A JSON string as `encoding/json` escapes it with `SetEscapeHTML(true)` (Marshal's default).
fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32))
            }
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut out = String::new();
        float(&mut out, v).unwrap();
        out
    }

    #[test]
    fn floats_as_go_writes_them() {
        // Expected values: Go's strconv.AppendFloat with encoding/json's format switch.
        assert_eq!(f(1.5), "1.5");
        assert_eq!(f(1.0), "1");
        assert_eq!(f(100.0), "100");
        assert_eq!(f(1e20), "100000000000000000000");
        assert_eq!(f(1e21), "1e+21");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(0.000001), "0.000001");
        assert_eq!(f(1e-7), "1e-7");
        assert_eq!(f(-2.5e-10), "-2.5e-10");
        assert_eq!(f(0.1), "0.1");
        let mut out = String::new();
        assert!(float(&mut out, f64::NAN).is_err());
    }

    #[test]
    fn strings_as_go_escapes_them() {
        let mut out = String::new();
        string(&mut out, "a<b>&\"\\\n\u{8}\u{c}\u{1}\u{2028}é\u{7f}");
        let expected = concat!(
            r#""a\u003cb\u003e\u0026\"\\\n\b\f\u0001\u2028é"#,
            "\u{7f}\""
        );
        assert_eq!(out, expected);
    }
}
