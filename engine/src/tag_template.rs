//! linuxkit's tag templates: Go's `text/template`, executed over `map[string]string{"Hash":
//! <hash>}` (`pkglib.NewFromConfig`).
//!
//! What a tag template can use is small, so this is the part of `text/template` that applies to
//! that data, with Go's semantics: text and actions with `{{-`/`-}}` trimming and `{{/* */}}`
//! comments; pipelines with `|` and parentheses; `.Hash` (a missing key prints `<no value>`),
//! `.`, string, raw-string, integer and boolean literals; `if`/`else if`/`else`/`end` and
//! `with`; the built-in functions `printf`, `print`, `println`, `len`, `index`, `slice`, `eq`,
//! `ne`, `lt`, `le`, `gt`, `ge`, `and`, `or`, `not`. Anything else (`range`, variables,
//! `define`/`template`, other functions) is refused with an error naming it. Parse errors say
//! `invalid tag template: …`, execution errors `failed to execute tag template: …`, as
//! linuxkit's do.

use std::fmt::Write as _;

/// Renders `template` for `hash`.
pub fn render(template: &str, hash: &str) -> Result<String, String> {
    let nodes =
        parse(template).map_err(|e| format!("invalid tag template: template: tag:1: {e}"))?;
    let mut out = String::new();
    exec(&nodes, &Value::Data, hash, &mut out)
        .map_err(|e| format!("failed to execute tag template: template: tag:1: {e}"))?;
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Output(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        value: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

type Pipeline = Vec<Command>;
type Command = Vec<Operand>;

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    /// `.`, `.Hash`, `.A.B`: the fields after the dot.
    Field(Vec<String>),
    Str(String),
    Int(i64),
    Bool(bool),
    Function(String),
    Sub(Pipeline),
}

/// An action's text, classified.
enum Action {
    Comment,
    If(Pipeline),
    ElseIf(Pipeline),
    Else,
    End,
    With(Pipeline),
    Output(Pipeline),
}

/// Splits into text and actions, applying trim markers.
fn actions(template: &str) -> Result<Vec<Result<String, String>>, String> {
    let mut parts: Vec<Result<String, String>> = Vec::new();
    let mut rest = template;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_owned();
        if trim_next {
            text = text.trim_start().to_owned();
        }
        let mut inner = &rest[start + 2..];
        // `{{- ` trims the text before; `{{-3}}` is a number.
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text = text.trim_end().to_owned();
            inner = &inner[1..];
        }
        parts.push(Ok(text));
        let end = find_close(inner).ok_or("unclosed action")?;
        let mut action = &inner[..end];
        trim_next = action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-");
        if trim_next {
            action = &action[..action.len() - 1];
        }
        parts.push(Err(action.to_owned()));
        rest = &inner[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    parts.push(Ok(text.to_owned()));
    Ok(parts)
}

/// The `}}` closing an action, outside string literals.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn parse(template: &str) -> Result<Vec<Node>, String> {
    let mut items = Vec::new();
    for part in actions(template)? {
        items.push(match part {
            Ok(text) => Item::Text(text),
            Err(action) => Item::Action(classify(&action)?),
        });
    }
    let mut items = items.into_iter().peekable();
    let (nodes, end) = parse_list(&mut items)?;
    match end {
        None => Ok(nodes),
        Some(_) => Err("unexpected {{end}} or {{else}}".into()),
    }
}

enum Item {
    Text(String),
    Action(Action),
}

/// How a list of nodes ended: the end of input, `{{else}}`, `{{else if …}}` or `{{end}}`.
enum ListEnd {
    Else,
    ElseIf(Pipeline),
    End,
}

fn parse_list(
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
) -> Result<(Vec<Node>, Option<ListEnd>), String> {
    let mut nodes = Vec::new();
    while let Some(item) = items.next() {
        match item {
            Item::Text(text) if text.is_empty() => {}
            Item::Text(text) => nodes.push(Node::Text(text)),
            Item::Action(Action::Comment) => {}
            Item::Action(Action::Output(p)) => nodes.push(Node::Output(p)),
            Item::Action(Action::Else) => return Ok((nodes, Some(ListEnd::Else))),
            Item::Action(Action::ElseIf(p)) => return Ok((nodes, Some(ListEnd::ElseIf(p)))),
            Item::Action(Action::End) => return Ok((nodes, Some(ListEnd::End))),
            Item::Action(Action::If(cond)) => {
                let (then, otherwise) = parse_branches(items, "if")?;
                nodes.push(Node::If {
                    cond,
                    then,
                    otherwise,
                });
            }
            Item::Action(Action::With(value)) => {
                let (then, otherwise) = parse_branches(items, "with")?;
                nodes.push(Node::With {
                    value,
                    then,
                    otherwise,
                });
            }
        }
    }
    Ok((nodes, None))
}

/// The branches of an `if`/`with`, after its action, through its `{{end}}`.
fn parse_branches(
    items: &mut std::iter::Peekable<std::vec::IntoIter<Item>>,
    what: &str,
) -> Result<(Vec<Node>, Vec<Node>), String> {
    let (then, end) = parse_list(items)?;
    let otherwise = match end {
        Some(ListEnd::End) => Vec::new(),
        Some(ListEnd::Else) => match parse_list(items)? {
            (otherwise, Some(ListEnd::End)) => otherwise,
            _ => return Err(format!("unexpected EOF in {what}")),
        },
        // `{{else if c}}` is an `if` nested in the else branch, sharing the `{{end}}`.
        Some(ListEnd::ElseIf(cond)) => {
            let (then, otherwise) = parse_branches(items, what)?;
            vec![Node::If {
                cond,
                then,
                otherwise,
            }]
        }
        None => return Err(format!("unexpected EOF in {what}")),
    };
    Ok((then, otherwise))
}

fn classify(action: &str) -> Result<Action, String> {
    let trimmed = action.trim();
    if trimmed.starts_with("/*") {
        return if trimmed.ends_with("*/") {
            Ok(Action::Comment)
        } else {
            Err("unclosed comment".into())
        };
    }
    let tokens = lex(trimmed)?;
    let keyword = match tokens.first() {
        Some(Token::Ident(word)) => word.as_str(),
        _ => "",
    };
    let rest = || -> Result<Pipeline, String> { pipeline(&tokens[1..]) };
    match keyword {
        "if" => Ok(Action::If(rest()?)),
        "with" => Ok(Action::With(rest()?)),
        "end" if tokens.len() == 1 => Ok(Action::End),
        "else" if tokens.len() == 1 => Ok(Action::Else),
        "else" if matches!(tokens.get(1), Some(Token::Ident(w)) if w == "if") => {
            Ok(Action::ElseIf(pipeline(&tokens[2..])?))
        }
        "range" | "define" | "template" | "block" | "break" | "continue" => Err(format!(
            "`{keyword}` is not supported in lkpkg's tag templates"
        )),
        _ => Ok(Action::Output(pipeline(&tokens)?)),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                tokens.push(Token::Pipe);
                i += 1;
            }
            '(' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' => {
                tokens.push(Token::Close);
                i += 1;
            }
            '"' => {
                let mut value = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated quoted string".into()),
                        Some('"') => break,
                        Some('\\') => {
                            i += 1;
                            value.push(match chars.get(i) {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                Some(other) => {
                                    return Err(format!("unsupported escape `\\{other}`"));
                                }
                                None => return Err("unterminated quoted string".into()),
                            });
                        }
                        Some(&ch) => value.push(ch),
                    }
                    i += 1;
                }
                i += 1;
                tokens.push(Token::Str(value));
            }
            '`' => {
                let start = i + 1;
                let end = chars[start..]
                    .iter()
                    .position(|&ch| ch == '`')
                    .ok_or("unterminated raw quoted string")?;
                tokens.push(Token::Str(chars[start..start + end].iter().collect()));
                i = start + end + 1;
            }
            '.' => {
                let mut fields = Vec::new();
                while chars.get(i) == Some(&'.') {
                    let start = i + 1;
                    let mut end = start;
                    while chars
                        .get(end)
                        .is_some_and(|ch| ch.is_alphanumeric() || *ch == '_')
                    {
                        end += 1;
                    }
                    if end > start {
                        fields.push(chars[start..end].iter().collect());
                    } else if !fields.is_empty() {
                        return Err("unexpected `.` after a field".into());
                    }
                    i = end;
                }
                tokens.push(Token::Field(fields));
            }
            '$' => return Err("variables are not supported in lkpkg's tag templates".into()),
            c if c.is_ascii_digit() || c == '-' || c == '+' => {
                let start = i;
                i += 1;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_ascii_alphanumeric() || *ch == '_')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                let number = parse_go_int(&text).ok_or(format!("bad number syntax: {text:?}"))?;
                tokens.push(Token::Int(number));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while chars
                    .get(i)
                    .is_some_and(|ch| ch.is_alphanumeric() || *ch == '_')
                {
                    i += 1;
                }
                tokens.push(Token::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(format!("unexpected {other:?} in command")),
        }
    }
    Ok(tokens)
}

/// An integer constant as Go writes it (`42`, `-3`, `0x1f`, `0o17`, `0b1`, `1_000`).
fn parse_go_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let digits = digits.replace('_', "");
    let lower = digits.to_ascii_lowercase();
    let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
        (16, b.to_owned())
    } else if let Some(b) = lower.strip_prefix("0o") {
        (8, b.to_owned())
    } else if let Some(b) = lower.strip_prefix("0b") {
        (2, b.to_owned())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned())
    } else {
        (10, lower)
    };
    let value = i64::from_str_radix(&body, radix).ok()?;
    Some(if negative { -value } else { value })
}

fn pipeline(tokens: &[Token]) -> Result<Pipeline, String> {
    if tokens.is_empty() {
        return Err("missing value for command".into());
    }
    let mut commands = Vec::new();
    let mut current = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Pipe => {
                if current.is_empty() {
                    return Err("missing command before `|`".into());
                }
                commands.push(std::mem::take(&mut current));
            }
            Token::Open => {
                let mut depth = 1;
                let start = i + 1;
                while depth > 0 {
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Open) => depth += 1,
                        Some(Token::Close) => depth -= 1,
                        Some(_) => {}
                        None => return Err("unclosed left paren".into()),
                    }
                }
                current.push(Operand::Sub(pipeline(&tokens[start..i])?));
            }
            Token::Close => return Err("unexpected right paren".into()),
            Token::Field(fields) => current.push(Operand::Field(fields.clone())),
            Token::Str(s) => current.push(Operand::Str(s.clone())),
            Token::Int(n) => current.push(Operand::Int(*n)),
            Token::Ident(word) => current.push(match word.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                name if FUNCTIONS.contains(&name) => Operand::Function(name.to_owned()),
                name => return Err(format!("function {name:?} not defined")),
            }),
        }
        i += 1;
    }
    if current.is_empty() {
        return Err("missing command after `|`".into());
    }
    commands.push(current);
    Ok(commands)
}

const FUNCTIONS: [&str; 15] = [
    "printf", "print", "println", "len", "index", "slice", "eq", "ne", "lt", "le", "gt", "ge",
    "and", "or", "not",
];

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    /// The data: `map[string]string{"Hash": …}`.
    Data,
    Str(String),
    Int(i64),
    /// A byte of a string (`index .Hash 0` is a `uint8`).
    Byte(u8),
    Bool(bool),
    /// A missing map key: prints `<no value>`.
    Missing,
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Data => true,
            Value::Str(s) => !s.is_empty(),
            Value::Int(n) => *n != 0,
            Value::Byte(b) => *b != 0,
            Value::Bool(b) => *b,
            Value::Missing => false,
        }
    }

    /// As `fmt.Sprint` prints it.
    fn print(&self, hash: &str) -> String {
        match self {
            Value::Data => format!("map[Hash:{hash}]"),
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Byte(b) => b.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Missing => "<no value>".into(),
        }
    }

    fn is_string(&self) -> bool {
        matches!(self, Value::Str(_))
    }
}

fn exec(nodes: &[Node], dot: &Value, hash: &str, out: &mut String) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Output(p) => out.push_str(&eval_pipeline(p, dot, hash)?.print(hash)),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if eval_pipeline(cond, dot, hash)?.truthy() {
                    then
                } else {
                    otherwise
                };
                exec(branch, dot, hash, out)?;
            }
            Node::With {
                value,
                then,
                otherwise,
            } => {
                let value = eval_pipeline(value, dot, hash)?;
                if value.truthy() {
                    exec(then, &value, hash, out)?;
                } else {
                    exec(otherwise, dot, hash, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(pipeline: &Pipeline, dot: &Value, hash: &str) -> Result<Value, String> {
    let mut piped = None;
    for command in pipeline {
        piped = Some(eval_command(command, dot, hash, piped)?);
    }
    piped.ok_or_else(|| "empty pipeline".into())
}

fn eval_operand(operand: &Operand, dot: &Value, hash: &str) -> Result<Value, String> {
    Ok(match operand {
        Operand::Field(fields) => {
            let mut value = dot.clone();
            for field in fields {
                value = match value {
                    Value::Data if field == "Hash" => Value::Str(hash.to_owned()),
                    Value::Data => Value::Missing,
                    Value::Missing => return Err(format!("nil pointer evaluating .{field}")),
                    other => {
                        return Err(format!(
                            "can't evaluate field {field} in type {}",
                            go_type(&other)
                        ));
                    }
                };
            }
            value
        }
        Operand::Str(s) => Value::Str(s.clone()),
        Operand::Int(n) => Value::Int(*n),
        Operand::Bool(b) => Value::Bool(*b),
        Operand::Sub(p) => eval_pipeline(p, dot, hash)?,
        Operand::Function(name) => call(name, Vec::new(), hash)?,
    })
}

fn eval_command(
    command: &Command,
    dot: &Value,
    hash: &str,
    piped: Option<Value>,
) -> Result<Value, String> {
    match &command[..] {
        [Operand::Function(name), args @ ..] => {
            let mut values = args
                .iter()
                .map(|a| eval_operand(a, dot, hash))
                .collect::<Result<Vec<_>, _>>()?;
            values.extend(piped);
            call(name, values, hash)
        }
        [single] if piped.is_none() => eval_operand(single, dot, hash),
        [_, ..] => Err("can't give argument to non-function".into()),
        [] => Err("empty command".into()),
    }
}

fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Data => "map[string]string",
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Byte(_) => "uint8",
        Value::Bool(_) => "bool",
        Value::Missing => "<nil>",
    }
}

fn call(name: &str, args: Vec<Value>, hash: &str) -> Result<Value, String> {
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

#[cfg(test)]
mod tests {
    use super::render;

    const HASH: &str = "5d529eb3f79a058cacd3033328aad7792e49b436";

    /// Expected values are what Go's text/template gives for the same template and data (the
    /// linuxkit-run cases in tests/compat/cases cover more).
    #[test]
    fn go_template_semantics() {
        let r = |t: &str| render(t, HASH).unwrap();
        assert_eq!(r("{{.Hash}}"), HASH);
        assert_eq!(r("v-{{ .Hash }}-x"), format!("v-{HASH}-x"));
        assert_eq!(r("plain"), "plain");
        assert_eq!(r("{{.Nope}}"), "<no value>");
        assert_eq!(r("{{slice .Hash 0 7}}"), "5d529eb");
        assert_eq!(r("{{printf \"%.12s\" .Hash}}"), "5d529eb3f79a");
        assert_eq!(r("len{{len .Hash}}"), "len40");
        assert_eq!(r("{{index . \"Hash\"}}"), HASH);
        assert_eq!(r("x-  {{- .Hash -}}  -y"), format!("x-{HASH}-y"));
        assert_eq!(r("{{if false}}x{{end}}"), "");
        assert_eq!(r("{{if .Hash}}a{{else}}b{{end}}"), "a");
        assert_eq!(
            r("{{if .Nope}}a{{else if eq .Hash \"x\"}}b{{else}}c{{end}}"),
            "c"
        );
        assert_eq!(r("{{with .Hash}}{{slice . 0 3}}{{end}}"), "5d5");
        assert_eq!(r("{{.Hash | printf \"%.3s\"}}"), "5d5");
        assert_eq!(r("{{printf \"%s-%d\" (slice .Hash 0 2) 7}}"), "5d-7");
        assert_eq!(r("{{/* a comment */}}ok"), "ok");
        assert_eq!(r("{{print 1 2 \"a\" 3}}"), "1 2a3");
        assert_eq!(r("{{index .Hash 0}}"), "53");
        assert_eq!(r("{{-3}}"), "-3");
        let e = render("{{.Hash", HASH).unwrap_err();
        assert!(
            e.starts_with("invalid tag template:") && e.contains("unclosed action"),
            "{e}"
        );
        let e = render("{{slice .Hash 0 99}}", HASH).unwrap_err();
        assert!(
            e.starts_with("failed to execute tag template:")
                && e.contains("index out of range: 99"),
            "{e}"
        );
        assert!(
            render("{{range .}}{{end}}", HASH)
                .unwrap_err()
                .contains("not supported")
        );
        assert!(
            render("{{nosuch 1}}", HASH)
                .unwrap_err()
                .contains("not defined")
        );
        assert!(
            render("{{if true}}x", HASH)
                .unwrap_err()
                .contains("unexpected EOF")
        );
    }
}
