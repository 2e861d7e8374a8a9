//! The built-in functions a tag template can call (`printf`, `len`, `index`, `slice`, the
//! comparisons, `and`/`or`/`not`), with `fmt.Sprint` and the part of `fmt.Sprintf` a tag uses.

use std::fmt::Write as _;

use super::eval::{Value, go_type};

pub(super) const FUNCTIONS: [&str; 15] = [
    "printf", "print", "println", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge",
    "and", "or", "not",
];

pub(super) fn call(name: &str, args: Vec<Value>, hash: &str) -> Result<Value, String> {
    let err = |message: String| format!("error calling {name}: {message}");
    let int = |v: &Value| match v {
        Value::Int(n) => Ok(*n),
        Value::Byte(b) => Ok(i64::from(*b)),
        other => Err(err(format!(
            "cannot index slice/array with type {}",
            go_type(other)
        ))),
    };
    match (name, &args[..]) {
        ("len", [v]) => match v {
            Value::Str(s) => Ok(Value::Int(s.len() as i64)),
            Value::Data => Ok(Value::Int(1)),
            other => Err(err(format!("len of type {}", go_type(other)))),
        },
        ("index", [v, rest @ ..]) => {
            let mut value = v.clone();
            for key in rest {
                value = match (&value, key) {
                    (Value::Data, Value::Str(k)) if k == "Hash" => Value::Str(hash.to_owned()),
                    (Value::Data, Value::Str(_)) => Value::Str(String::new()),
                    (Value::Str(s), k) => {
                        let i = int(k)?;
                        let byte = usize::try_from(i)
                            .ok()
                            .and_then(|i| s.as_bytes().get(i))
                            .ok_or_else(|| err(format!("index out of range: {i}")))?;
                        Value::Byte(*byte)
                    }
                    (other, _) => {
                        return Err(err(format!("can't index item of type {}", go_type(other))));
                    }
                };
            }
            Ok(value)
        }
        ("slice", [Value::Str(s), bounds @ ..]) if bounds.len() <= 2 => {
            let low = bounds.first().map(int).transpose()?.unwrap_or(0);
            let high = bounds
                .get(1)
                .map(int)
                .transpose()?
                .unwrap_or(s.len() as i64);
            let in_range = |i: i64| (0..=s.len() as i64).contains(&i);
            if !in_range(low) {
                return Err(err(format!("index out of range: {low}")));
            }
            if !in_range(high) {
                return Err(err(format!("index out of range: {high}")));
            }
            if low > high {
                return Err(err(format!("invalid slice index: {low} > {high}")));
            }
            s.get(low as usize..high as usize)
                .map(|t| Value::Str(t.to_owned()))
                .ok_or_else(|| err("slice splits a character".into()))
        }
        ("printf", [Value::Str(format), rest @ ..]) => Ok(Value::Str(sprintf(format, rest, hash))),
        ("print", args) => Ok(Value::Str(sprint(args, hash))),
        ("println", args) => {
            let words: Vec<String> = args.iter().map(|a| a.print(hash)).collect();
            Ok(Value::Str(format!("{}\n", words.join(" "))))
        }
        ("not", [v]) => Ok(Value::Bool(!v.truthy())),
        ("and", [first, rest @ ..]) => Ok(std::iter::once(first)
            .chain(rest)
            .find(|v| !v.truthy())
            .unwrap_or_else(|| rest.last().unwrap_or(first))
            .clone()),
        ("or", [first, rest @ ..]) => Ok(std::iter::once(first)
            .chain(rest)
            .find(|v| v.truthy())
            .unwrap_or_else(|| rest.last().unwrap_or(first))
            .clone()),
        ("eq", [a, rest @ ..]) if !rest.is_empty() => Ok(Value::Bool(
            rest.iter()
                .any(|b| compare(a, b) == Some(std::cmp::Ordering::Equal)),
        )),
        ("ne" | "lt" | "le" | "gt" | "ge", [a, b]) => {
            use std::cmp::Ordering::*;
            let ordering =
                compare(a, b).ok_or_else(|| err("incompatible types for comparison".into()))?;
            Ok(Value::Bool(match name {
                "ne" => ordering != Equal,
                "lt" => ordering == Less,
                "le" => ordering != Greater,
                "gt" => ordering == Greater,
                _ => ordering != Less,
            }))
        }
        (name, args) => Err(format!(
            "wrong number or type of arguments for {name}: {}",
            args.len()
        )),
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Int(_) | Value::Byte(_), Value::Int(_) | Value::Byte(_)) => {
            let n = |v: &Value| match v {
                Value::Int(n) => *n,
                Value::Byte(b) => i64::from(*b),
                _ => 0,
            };
            Some(n(a).cmp(&n(b)))
        }
        _ => None,
    }
}

/// `fmt.Sprint`: a space between operands when neither side is a string.
fn sprint(args: &[Value], hash: &str) -> String {
    let mut out = String::new();
    for (i, arg) in args.iter().enumerate() {
        if i > 0 && !arg.is_string() && !args[i - 1].is_string() {
            out.push(' ');
        }
        out.push_str(&arg.print(hash));
    }
    out
}

/// A decimal number at the front of `chars`, if any.
fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        n = Some(n.unwrap_or(0) * 10 + d as usize);
        chars.next();
    }
    n
}

/// `fmt.Sprintf` for the verbs a tag can use: `%s %v %d %q %x %X %c %t %%`, with `-`, `0`,
/// width and precision.
fn sprintf(format: &str, args: &[Value], hash: &str) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut left, mut zero) = (false, false);
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => left = true,
                '0' => zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let width = digits(&mut chars);
        let precision = if chars.peek() == Some(&'.') {
            chars.next();
            Some(digits(&mut chars).unwrap_or(0))
        } else {
            None
        };
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let mut text = match (verb, arg) {
            ('s' | 'v', v) => v.print(hash),
            ('d', Value::Int(n)) => n.to_string(),
            ('d', Value::Byte(b)) => b.to_string(),
            ('t', Value::Bool(b)) => b.to_string(),
            ('q', Value::Str(s)) => format!("{s:?}"),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('X', Value::Str(s)) => s.bytes().map(|b| format!("{b:02X}")).collect(),
            ('x', Value::Int(n)) => format!("{n:x}"),
            ('X', Value::Int(n)) => format!("{n:X}"),
            ('c', Value::Int(n)) => char::from_u32(*n as u32)
                .map(String::from)
                .unwrap_or_default(),
            (verb, v) => format!("%!{verb}({}={})", go_type(v), v.print(hash)),
        };
        if let (Some(p), 's' | 'v' | 'q') = (precision, verb) {
            text = text.chars().take(p).collect();
        }
        if let Some(w) = width {
            let len = text.chars().count();
            if len < w {
                let pad = w - len;
                if left {
                    text.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'x' | 'X') {
                    text = format!("{}{text}", "0".repeat(pad));
                } else {
                    text = format!("{}{text}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&text);
    }
    for extra in args {
        let _ = write!(out, "%!(EXTRA {}={})", go_type(extra), extra.print(hash));
    }
    out
}
