//! The lexer: a template split into text and actions (`{{-`/`-}}` trimming applied), and an
//! action's text into tokens (fields, identifiers, quoted and raw strings, Go integers).

/// Splits into text and actions, applying trim markers.
pub(super) fn actions(template: &str) -> Result<Vec<Result<String, String>>, String> {
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

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Token {
    Field(Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Pipe,
    Open,
    Close,
}

pub(super) fn lex(s: &str) -> Result<Vec<Token>, String> {
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
