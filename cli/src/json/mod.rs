//! Every JSON document lkpkg prints, as types: the one place their shapes are defined.
//!
//! Each output is a [`Versioned`] value: its fields beside one `format_version` key (today 1).
//! New fields may be added within a version; a field that changes meaning or goes away bumps
//! it. The schemas published in `docs/json/` are generated from these types (`schemas`);
//! a test checks the published files are current, and the end-to-end tests validate what the
//! binary prints against them. `docs/json.md` describes each output.

mod build;
mod cache;
mod explain;
mod graph;

pub use build::{BuildEvent, BuilderLine, BuilderLineType};
pub use cache::{
    CacheInspect, CacheList, CacheUsage, CacheVerify, Descriptor, ImageUsage, NamedDescriptor, Node,
};
pub use explain::{Explanation, LastBuild};
pub use graph::{EdgeReason, Graph, GraphEdge, GraphNode, GraphPackage, KeyValue};

use schemars::JsonSchema;
use serde::Serialize;

/// The version of every JSON output's shape.
pub const FORMAT_VERSION: u32 = 1;

/// A JSON output: `format_version` beside the value's own fields.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Versioned<T> {
    /// The version of the output's shape (see `docs/json.md`).
    pub format_version: u32,
    #[serde(flatten)]
    pub value: T,
}

impl<T: Serialize> Versioned<T> {
    pub fn new(value: T) -> Self {
        Versioned {
            format_version: FORMAT_VERSION,
            value,
        }
    }

    /// One line of JSON Lines.
    pub fn line(&self) -> String {
        serde_json::to_string(self).expect("a JSON output serializes")
    }

    /// A pretty-printed document, ending with a newline.
    pub fn document(&self) -> String {
        serde_json::to_string_pretty(self).expect("a JSON output serializes") + "\n"
    }
}

/// The outputs and their schemas, by the file name each is published under in `docs/json/`.
#[cfg(test)]
pub fn schemas() -> Vec<(&'static str, schemars::Schema)> {
    fn schema<T: JsonSchema>() -> schemars::Schema {
        schemars::schema_for!(Versioned<T>)
    }
    vec![
        ("build-event", schema::<BuildEvent>()),
        ("builder", schema::<BuilderLine>()),
        ("graph", schema::<Graph>()),
        ("explain", schema::<Explanation>()),
        ("cache-ls", schema::<CacheList>()),
        ("cache-inspect", schema::<CacheInspect>()),
        ("cache-du", schema::<CacheUsage>()),
        ("cache-verify", schema::<CacheVerify>()),
    ]
}

#[cfg(test)]
mod tests {
    /// `docs/json/*.schema.json` are the types' schemas; `LKPKG_UPDATE_SCHEMAS=1` rewrites
    /// them after a change of the types.
    #[test]
    fn the_published_schemas_are_the_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/json");
        let update = std::env::var_os("LKPKG_UPDATE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, schema) in super::schemas() {
            let path = dir.join(format!("{name}.schema.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if update {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(path.display().to_string());
            }
        }
        assert!(
            stale.is_empty(),
            "stale schemas (run `LKPKG_UPDATE_SCHEMAS=1 cargo test -p lkpkg --bin lkpkg json`): {}",
            stale.join(", ")
        );
    }
}
