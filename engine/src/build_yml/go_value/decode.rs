//! The decoder: yaml.v3's `decode.go` rule for rule over a [`GoType`], from the node tree into
//! a [`GoValue`], collecting type errors with their line and path, bounding alias expansion,
//! and merging `<<` keys as yaml.v3 does.

use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;

use super::resolve::{Resolved, resolve};
use super::{GoStruct, GoType, GoValue};
use crate::build_yml::node::{self, Kind, Node};

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
