//! `lkpkg graph`: the build graph as text, Graphviz dot, or versioned JSON.
//!
//! The JSON form (`--format json`) is a stable interface, version 1:
//!
//! ```json
//! {
//!   "format_version": 1,
//!   "packages": [{"dir": "base", "image": "linuxkit/base", "tag": "linuxkit/base:<hash>",
//!                 "canonical": "docker.io/linuxkit/base:<hash>", "dirty": false,
//!                 "platforms": ["linux/amd64"], "requested": true,
//!                 "build_args": [{"key": "BASE", "value": "linuxkit/base:<hash>"}]}],
//!   "nodes": [{"id": "base/amd64", "kind": "unit", "package": "base", "platform": "linux/amd64"},
//!             {"id": "source:src", "kind": "extra-source", "path": "src"},
//!             {"id": "image:alpine@sha256:…", "kind": "external-image", "reference": "alpine@sha256:…"}],
//!   "edges": [{"from": "app/amd64", "to": "base/amd64", "reason": "build-arg", "detail": "BASE"}],
//!   "order": ["base/amd64", "app/amd64"],
//!   "warnings": ["…"]
//! }
//! ```
//!
//! Edges point from a unit to what it consumes. `reason` is one of `build-arg` (detail: the
//! key), `from` / `copy-from` (detail: the Dockerfile line), `depends`, `extra-source`
//! (detail: the destination). `order` lists units so that each follows what it consumes.
//! Paths are relative to the current directory. New fields may be added within a version;
//! a change of meaning bumps `format_version`.

use anyhow::Result;
use lkpkg_engine::graph::{BuildGraph, Edge, Node};
use petgraph::visit::EdgeRef;
use serde_json::json;

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
        GraphFormat::Json => serde_json::to_string_pretty(&to_json(graph, base))? + "\n",
    };
    crate::output::out(&text);
    Ok(())
}

fn edge_reason(edge: &Edge) -> (&'static str, String) {
    match edge {
        Edge::BuildArg { key } => ("build-arg", key.clone()),
        Edge::Image { instruction, line } => (
            if *instruction == "FROM" {
                "from"
            } else {
                "copy-from"
            },
            format!("line {line}"),
        ),
        Edge::Depends => ("depends", String::new()),
        Edge::ExtraSource { destination } => ("extra-source", destination.clone()),
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
            format!("{reason} {detail}").trim()
        ));
    }
    out.push_str("}\n");
    out
}

fn to_json(graph: &BuildGraph, base: &std::path::Path) -> serde_json::Value {
    let packages: Vec<_> = graph
        .packages
        .iter()
        .map(|p| {
            json!({
                "dir": p.package.display_dir(base),
                "image": p.package.tag.image(),
                "tag": p.package.tag.tag(),
                "canonical": p.package.tag.full_tag(),
                "dirty": p.package.tag.dirty,
                "platforms": p.platforms.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "requested": p.requested,
                "build_args": p.build_args.iter().map(|a| json!({"key": a.key, "value": a.value})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let nodes: Vec<_> = graph
        .graph
        .node_indices()
        .map(|n| {
            let id = graph.node_name(n, base);
            match &graph.graph[n] {
                Node::Unit { package, platform } => json!({
                    "id": id, "kind": "unit",
                    "package": graph.packages[*package].package.display_dir(base),
                    "platform": platform.to_string(),
                }),
                Node::ExtraSource { path } => json!({
                    "id": id, "kind": "extra-source",
                    "path": path.strip_prefix(base).unwrap_or(path).display().to_string(),
                }),
                Node::ExternalImage { reference } => json!({
                    "id": id, "kind": "external-image", "reference": reference,
                }),
            }
        })
        .collect();
    let edges: Vec<_> = graph
        .graph
        .edge_references()
        .map(|e| {
            let (reason, detail) = edge_reason(e.weight());
            json!({
                "from": graph.node_name(e.source(), base),
                "to": graph.node_name(e.target(), base),
                "reason": reason,
                "detail": detail,
            })
        })
        .collect();
    let order: Vec<_> = graph
        .build_order()
        .into_iter()
        .map(|n| graph.node_name(n, base))
        .collect();
    json!({
        "format_version": 1,
        "packages": packages,
        "nodes": nodes,
        "edges": edges,
        "order": order,
        "warnings": graph.warnings,
    })
}
