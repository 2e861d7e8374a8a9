//! `lkpkg graph`: the build graph as text, Graphviz dot, or versioned JSON.
//!
//! The JSON form (`--format json`) is [`crate::json::Graph`], described with its schema in
//! `docs/json.md`.

use anyhow::Result;
use lkpkg_engine::ops::graph::{BuildGraph, Edge, Node};
use petgraph::visit::EdgeRef;

use crate::json::{self, Versioned};

use crate::args::{GlobalArgs, GraphArgs, GraphFormat};

pub fn run(args: GraphArgs, global: &GlobalArgs) -> Result<()> {
    let plan = crate::pkg::plan(&args.dirs, &args.options, &args.plan, false)?;
    if !global.quiet {
        for warning in plan.warnings() {
            crate::output::errln!("warning: {warning}");
        }
    }
    let graph = plan.graph();
    let base = plan.base();
    let text = match args.format {
        GraphFormat::Text => text(graph, base),
        GraphFormat::Dot => dot(graph, base),
        GraphFormat::Json => to_json(graph, base).document(),
    };
    crate::output::out(&text);
    Ok(())
}

/// Why an edge exists, and its detail: the build argument's key, the Dockerfile line, the
/// destination of an extra source.
fn edge_reason(edge: &Edge) -> (json::EdgeReason, String) {
    match edge {
        Edge::BuildArg { key } => (json::EdgeReason::BuildArg, key.clone()),
        Edge::Image { instruction, line } => (
            if *instruction == "FROM" {
                json::EdgeReason::From
            } else {
                json::EdgeReason::CopyFrom
            },
            format!("line {line}"),
        ),
        Edge::Depends => (json::EdgeReason::Depends, String::new()),
        Edge::ExtraSource { destination } => (json::EdgeReason::ExtraSource, destination.clone()),
    }
}

fn text(graph: &BuildGraph, base: &std::path::Path) -> String {
    let mut out = String::new();
    for node in graph.build_order() {
        out.push_str(&graph.node_name(node, base));
        out.push('\n');
        for edge in graph.graph.edges(node) {
            let (reason, detail) = edge_reason(edge.weight());
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(" {detail}")
            };
            let reason = reason.as_str();
            out.push_str(&format!(
                "  <- {} ({reason}{detail})\n",
                graph.node_name(edge.target(), base)
            ));
        }
    }
    out
}

fn dot(graph: &BuildGraph, base: &std::path::Path) -> String {
    let mut out = String::from("digraph lkpkg {\n  rankdir=LR;\n");
    for node in graph.graph.node_indices() {
        let shape = match graph.graph[node] {
            Node::Unit { .. } => "box",
            Node::ExtraSource { .. } => "folder",
            Node::ExternalImage { .. } => "ellipse",
        };
        out.push_str(&format!(
            "  {} [label={:?}, shape={shape}];\n",
            node.index(),
            graph.node_name(node, base)
        ));
    }
    for edge in graph.graph.edge_references() {
        let (reason, detail) = edge_reason(edge.weight());
        out.push_str(&format!(
            "  {} -> {} [label={:?}];\n",
            edge.source().index(),
            edge.target().index(),
            format!("{} {detail}", reason.as_str()).trim()
        ));
    }
    out.push_str("}\n");
    out
}

fn to_json(graph: &BuildGraph, base: &std::path::Path) -> Versioned<json::Graph> {
    let packages = graph
        .packages
        .iter()
        .map(|p| json::GraphPackage {
            dir: p.package.display_dir(base),
            image: p.package.tag.image(),
            tag: p.package.tag.tag(),
            canonical: p.package.tag.full_tag(),
            dirty: p.package.tag.dirty,
            platforms: p.platforms.iter().map(ToString::to_string).collect(),
            requested: p.requested,
            build_args: p
                .build_args
                .iter()
                .map(|a| json::KeyValue {
                    key: a.key.clone(),
                    value: a.value.clone(),
                })
                .collect(),
        })
        .collect();
    let nodes = graph
        .graph
        .node_indices()
        .map(|n| {
            let id = graph.node_name(n, base);
            match &graph.graph[n] {
                Node::Unit { package, platform } => json::GraphNode::Unit {
                    id,
                    package: graph.packages[*package].package.display_dir(base),
                    platform: platform.to_string(),
                },
                Node::ExtraSource { path } => json::GraphNode::ExtraSource {
                    id,
                    path: path
                        .strip_prefix(base)
                        .unwrap_or(path)
                        .display()
                        .to_string(),
                },
                Node::ExternalImage { reference } => json::GraphNode::ExternalImage {
                    id,
                    reference: reference.clone(),
                },
            }
        })
        .collect();
    let edges = graph
        .graph
        .edge_references()
        .map(|e| {
            let (reason, detail) = edge_reason(e.weight());
            json::GraphEdge {
                from: graph.node_name(e.source(), base),
                to: graph.node_name(e.target(), base),
                reason,
                detail,
            }
        })
        .collect();
    let order = graph
        .build_order()
        .into_iter()
        .map(|n| graph.node_name(n, base))
        .collect();
    Versioned::new(json::Graph {
        packages,
        nodes,
        edges,
        order,
        warnings: graph.warnings.clone(),
    })
}
