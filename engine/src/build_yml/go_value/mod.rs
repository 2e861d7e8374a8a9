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

mod decode;
mod resolve;

use std::collections::BTreeMap;

pub(crate) use decode::{DecodeError, Decoder};
pub(crate) use resolve::resolve;

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
