//! The parser: actions classified (`if`, `else if`, `else`, `end`, `with`, comments, output)
//! and nested into the node tree, and pipelines of commands with `|` and parentheses. What a
//! tag template cannot use is refused here, naming it.

use super::functions::FUNCTIONS;
use super::lexer::{Token, actions, lex};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
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

pub(super) type Pipeline = Vec<Command>;
pub(super) type Command = Vec<Operand>;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Operand {
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

pub(super) fn parse(template: &str) -> Result<Vec<Node>, String> {
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
