//! A YAML document as yaml.v3 sees it before decoding: a tree of nodes that keep what serde's
//! data model loses and Go's decoding depends on — each scalar's source text, whether it was
//! quoted, its explicit tag, and its line.
//!
//! The events come from `granit-parser` (the parser under serde-saphyr), set to read as libyaml
//! does. Aliases stay shared (`Rc`), so an alias bomb costs no memory here; the decoder bounds
//! the work of expanding them with yaml.v3's own rule ([`super::go_value`]).

use std::collections::HashMap;
use std::rc::Rc;

use granit_parser::{Event, Options, Parser, ScalarStyle};

/// yaml.v3's short tags.
pub(crate) const STR: &str = "!!str";
pub(crate) const NULL: &str = "!!null";
pub(crate) const MERGE: &str = "!!merge";
pub(crate) const SEQ: &str = "!!seq";
pub(crate) const MAP: &str = "!!map";

/// One node of the document.
#[derive(Debug)]
pub(crate) struct Node {
    pub kind: Kind,
    /// The explicit tag, in yaml.v3's short form (`!!str`, `!foo`); `None` when untagged.
    pub tag: Option<String>,
    /// 1-based line of the node's start.
    pub line: usize,
}

#[derive(Debug)]
pub(crate) enum Kind {
    Scalar {
        /// The text after escape processing, as yaml.v3's `Node.Value`.
        value: String,
        /// Quoted, literal or folded: yaml.v3's "indicated string".
        quoted: bool,
    },
    Sequence(Vec<Rc<Node>>),
    /// Key, value pairs in document order (duplicates kept: the decoder reports them).
    Mapping(Vec<(Rc<Node>, Rc<Node>)>),
    /// `*name`: the anchored node.
    Alias(Rc<Node>),
}

impl Node {
    /// yaml.v3's `Node.ShortTag()`: the explicit tag, or the tag the content resolves to.
    pub(crate) fn short_tag(&self) -> String {
        match (&self.kind, &self.tag) {
            (Kind::Scalar { quoted: true, .. }, None) => STR.to_owned(),
            (_, Some(tag)) => tag.clone(),
            (Kind::Scalar { value, .. }, None) => super::go_value::resolve(None, value)
                .map(|r| r.tag().to_owned())
                .unwrap_or_else(|_| STR.to_owned()),
            (Kind::Sequence(_), None) => SEQ.to_owned(),
            (Kind::Mapping(_), None) => MAP.to_owned(),
            (Kind::Alias(target), None) => target.short_tag(),
        }
    }

    /// A scalar's text (yaml.v3's `Node.Value`; empty for collections).
    pub(crate) fn value(&self) -> &str {
        match &self.kind {
            Kind::Scalar { value, .. } => value,
            _ => "",
        }
    }

    /// yaml.v3's `isMerge`: a plain `<<` key, untagged or tagged `!!merge`.
    pub(crate) fn is_merge(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { value, quoted: false } if value == "<<")
            && self.tag.as_deref().is_none_or(|t| t == MERGE)
    }
}

/// Why a document could not be read at all.
#[derive(Debug)]
pub(crate) struct SyntaxError {
    pub line: Option<usize>,
    pub message: String,
}

/// Parses the first document of `text` (a yaml.v3 `Decoder` reads one document per
/// `Decode`, and linuxkit calls it once). `Ok(None)` is an empty stream: yaml.v3's `EOF`.
pub(crate) fn parse(text: &str) -> Result<Option<Rc<Node>>, SyntaxError> {
    let mut options = Options::default();
    // As libyaml: `key: |\n  text` at the end of input is "text", not "text\n".
    options.block_scalar_eof_without_line_feed = true;
    let mut builder = Builder::default();
    for next in Parser::new_from_str_with_options(text, options) {
        let (event, span) = next.map_err(|e| SyntaxError {
            line: Some(e.marker().line()),
            message: e.info(),
        })?;
        let line = span.start.line();
        match event {
            Event::DocumentEnd => {
                if let Some(root) = builder.root.take() {
                    return Ok(Some(root));
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = Node {
                    kind: Kind::Scalar {
                        value: value.into_owned(),
                        quoted: style != ScalarStyle::Plain,
                    },
                    // `!` alone is yaml.v3's "no tag".
                    tag: tag.map(|t| short_tag(&t)).filter(|t| t != "!"),
                    line,
                };
                builder.complete(Rc::new(node), anchor);
            }
            Event::SequenceStart(_, anchor, tag) => builder.open(Open {
                tag: tag.map(|t| short_tag(&t)),
                line,
                anchor,
                items: Vec::new(),
                mapping: false,
            }),
            Event::MappingStart(_, anchor, tag) => builder.open(Open {
                tag: tag.map(|t| short_tag(&t)),
                line,
                anchor,
                items: Vec::new(),
                mapping: true,
            }),
            Event::SequenceEnd | Event::MappingEnd => builder.close()?,
            Event::Alias(id) => {
                let target = builder
                    .anchors
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| SyntaxError {
                        line: Some(line),
                        message: "anchor value contains itself".into(),
                    })?;
                builder.complete(
                    Rc::new(Node {
                        kind: Kind::Alias(target),
                        tag: None,
                        line,
                    }),
                    0,
                );
            }
            _ => {}
        }
    }
    Ok(builder.root)
}

/// yaml.v3's `shortTag`: `tag:yaml.org,2002:x` is `!!x`; other tags as written (resolved).
fn short_tag(tag: &granit_parser::Tag) -> String {
    let (handle, suffix) = tag.parts();
    if handle == "tag:yaml.org,2002:" {
        format!("!!{suffix}")
    } else {
        format!("{handle}{suffix}")
    }
}

/// A collection whose end has not been seen yet.
struct Open {
    tag: Option<String>,
    line: usize,
    anchor: usize,
    items: Vec<Rc<Node>>,
    mapping: bool,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    anchors: HashMap<usize, Rc<Node>>,
    root: Option<Rc<Node>>,
}

impl Builder {
    fn open(&mut self, open: Open) {
        self.stack.push(open);
    }

    fn close(&mut self) -> Result<(), SyntaxError> {
        let open = self.stack.pop().ok_or_else(|| SyntaxError {
            line: None,
            message: "unbalanced collection end".into(),
        })?;
        let kind = if open.mapping {
            let mut items = open.items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (items.next(), items.next()) {
                pairs.push((k, v));
            }
            Kind::Mapping(pairs)
        } else {
            Kind::Sequence(open.items)
        };
        // `!` alone is yaml.v3's "no tag".
        let tag = open.tag.filter(|t| t != "!");
        let node = Node {
            kind,
            tag,
            line: open.line,
        };
        self.complete(Rc::new(node), open.anchor);
        Ok(())
    }

    fn complete(&mut self, node: Rc<Node>, anchor: usize) {
        if anchor != 0 {
            self.anchors.insert(anchor, Rc::clone(&node));
        }
        match self.stack.last_mut() {
            Some(parent) => parent.items.push(node),
            None => self.root = Some(node),
        }
    }
}
