//! `graph --format json`: the packages, the nodes and edges of the build graph, and an order.

use schemars::JsonSchema;
use serde::Serialize;

/// The build graph. Edges point from a unit to what it consumes; `order` lists units so that
/// each follows what it consumes. Paths are relative to the current directory.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Graph {
    pub packages: Vec<GraphPackage>,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
    pub order: Vec<String>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GraphPackage {
    pub dir: String,
    /// `org/image`.
    pub image: String,
    /// `org/image:tag`.
    pub tag: String,
    /// `docker.io/org/image:tag`.
    pub canonical: String,
    pub dirty: bool,
    pub platforms: Vec<String>,
    /// Named on the command line (or found below it), not only reached.
    pub requested: bool,
    pub build_args: Vec<KeyValue>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// A node of the graph; `kind` names what it is.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum GraphNode {
    /// A package built for one platform.
    Unit {
        id: String,
        package: String,
        platform: String,
    },
    /// A directory an `extra-sources` entry copies into the context.
    ExtraSource { id: String, path: String },
    /// An image that is not a package of the build.
    ExternalImage { id: String, reference: String },
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    pub reason: EdgeReason,
    /// The build argument's key (`build-arg`), the Dockerfile line (`from`, `copy-from`), the
    /// destination (`extra-source`); empty for `depends`.
    pub detail: String,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum EdgeReason {
    BuildArg,
    From,
    CopyFrom,
    Depends,
    ExtraSource,
}

impl EdgeReason {
    /// The name JSON gives it (`build-arg`, …), for the text and dot forms.
    pub fn as_str(&self) -> &'static str {
        match self {
            EdgeReason::BuildArg => "build-arg",
            EdgeReason::From => "from",
            EdgeReason::CopyFrom => "copy-from",
            EdgeReason::Depends => "depends",
            EdgeReason::ExtraSource => "extra-source",
        }
    }
}
