//! Execution: the node tree run over linuxkit's data (`.Hash`), with Go's truth, printing and
//! missing-key rules for the values a tag template can hold.

use super::functions::call;
use super::parser::{Command, Node, Operand, Pipeline};

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Value {
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
    pub(super) fn truthy(&self) -> bool {
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
    pub(super) fn print(&self, hash: &str) -> String {
        match self {
            Value::Data => format!("map[Hash:{hash}]"),
            Value::Str(s) => s.clone(),
            Value::Int(n) => n.to_string(),
            Value::Byte(b) => b.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Missing => "<no value>".into(),
        }
    }

    pub(super) fn is_string(&self) -> bool {
        matches!(self, Value::Str(_))
    }
}

pub(super) fn exec(
    nodes: &[Node],
    dot: &Value,
    hash: &str,
    out: &mut String,
) -> Result<(), String> {
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

pub(super) fn go_type(value: &Value) -> &'static str {
    match value {
        Value::Data => "map[string]string",
        Value::Str(_) => "string",
        Value::Int(_) => "int",
        Value::Byte(_) => "uint8",
        Value::Bool(_) => "bool",
        Value::Missing => "<nil>",
    }
}
