//! The build graph: every unit of work and every input, one DAG (petgraph).
//!
//! Nodes:
//! - a **unit** per (package, target platform): the thing a builder builds;
//! - an **extra source** per `extra-sources` directory;
//! - an **external image** per image a package consumes that no package here builds
//!   (`depends.docker-images` entries, `FROM` / `COPY --from` of other images).
//!
//! Edges point from a unit to what it consumes (`app/amd64 → base/amd64`), labelled with why:
//! an `@lkt:pkg:`/`@lkt:pkgs:` build argument whose tag the Dockerfile uses as an image (one it
//! does not is only a tag, as in linuxkit: the target needs no Dockerfile and is not built, and
//! its content goes into the build key), a `FROM` that names another package's *current*
//! `org/image:tag` (after `ARG` substitution with the package's build arguments), a
//! `depends.docker-images` entry naming another package's image. A unit depends on the unit of
//! the same platform of the package it consumes.
//!
//! Construction works on packages first (cycle check there, so a cycle is reported once, by
//! package, with its path printed), then expands to units. A `FROM` naming an in-repo package's
//! image at another tag is a warning: it pins an old build and will not see changes.
//!
//! With explicit package directories, the graph holds those and every package they build from
//! through `@lkt:` arguments (transitively), tagged as the arguments name them (linuxkit's
//! defaults, whatever `--org` says); `FROM` and `depends` references are matched against the
//! packages loaded.

mod load;
mod platform;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use petgraph::graph::{DiGraph, NodeIndex};

use crate::build_args::BuildArg;
use crate::dockerfile::Dockerfile;
use crate::error::{Error, PackageError, Result};
use crate::package::{Loader, Package};
use load::{Loaded, load_all};
use platform::stage_platform;
pub use platform::{Platform, PlatformFilter};

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Unit { package: usize, platform: Platform },
    ExtraSource { path: PathBuf },
    ExternalImage { reference: String },
}

/// Why an edge exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    /// `KEY=@lkt:pkg:…` (or `pkgs`).
    BuildArg { key: String },
    /// A `FROM` / `COPY --from` at a line of the Dockerfile.
    Image {
        instruction: &'static str,
        line: usize,
    },
    /// A `depends.docker-images` entry.
    Depends,
    /// An `extra-sources` entry.
    ExtraSource { destination: String },
}

/// A package in the graph, with what the graph needed to read.
#[derive(Debug, Clone)]
pub struct GraphPackage {
    pub package: Package,
    /// Build arguments, `@lkt:` resolved, arg files merged.
    pub build_args: Vec<BuildArg>,
    pub dockerfile_path: PathBuf,
    pub dockerfile: Dockerfile,
    pub platforms: Vec<Platform>,
    /// Whether the user named it (or it was discovered), rather than reached as a dependency.
    pub requested: bool,
    /// `@lkt:pkg:` arguments whose target is only a tag here (the Dockerfile does not build
    /// from it): the argument's key and the target's directory, whose content is in the key.
    pub tag_sources: Vec<(String, PathBuf)>,
}

/// The graph of one invocation.
#[derive(Debug)]
pub struct BuildGraph {
    pub packages: Vec<GraphPackage>,
    pub graph: DiGraph<Node, Edge>,
    /// Messages for the user (stale pins, dependencies missing for a platform).
    pub warnings: Vec<String>,
    /// With `keep_going`: the packages that could not be loaded (they, and what depends on
    /// them, are not in the graph).
    pub load_failures: Vec<Error>,
    units: HashMap<(usize, Platform), NodeIndex>,
}

/// What builds the graph needs beyond the packages.
#[derive(Debug, Clone, Default)]
pub(crate) struct GraphOptions {
    pub platforms: PlatformFilter,
    /// `--build-arg-file` arguments, already read.
    pub arg_files: Vec<BuildArg>,
    /// `--dockerfile`.
    pub dockerfile: Option<String>,
    /// `--keep-going`: a package that cannot be loaded leaves the others in the graph.
    pub keep_going: bool,
}

impl BuildGraph {
    /// Loads `roots` and every package they reach, and builds the graph.
    ///
    /// Every package that cannot be loaded is reported, not just the first: with
    /// [`GraphOptions::keep_going`] the graph holds the others (and whatever does not depend
    /// on a failed one) and [`BuildGraph::load_failures`] the errors; without, the errors are
    /// the result.
    pub(crate) fn build(
        loader: &Loader,
        roots: &[PathBuf],
        options: &GraphOptions,
    ) -> Result<BuildGraph> {
        let Loaded {
            packages,
            by_dir,
            references,
            failures,
        } = load_all(loader, roots, options)?;
        if !failures.is_empty() && !options.keep_going {
            return Err(Error::Packages(failures));
        }
        let mut package_edges: Vec<(usize, usize, Edge)> = references
            .into_iter()
            .map(|(from, target, edge)| (from, by_dir[&target], edge))
            .collect();
        let mut warnings = Vec::new();
        // Images by canonical name, to match FROM and depends references.
        let by_full_tag: HashMap<String, usize> = packages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.package.tag.full_tag(), i))
            .collect();
        let by_repository: HashMap<String, usize> = packages
            .iter()
            .enumerate()
            .map(|(i, p)| {
                (
                    lkpkg_cache_format::reference::expand(&p.package.tag.image()),
                    i,
                )
            })
            .collect();
        let mut externals: Vec<(usize, String, Edge)> = Vec::new();
        // `FROM --platform=…` of another package: the edge goes to the unit of that platform.
        let mut platform_edges: Vec<(usize, usize, Edge, String)> = Vec::new();
        for (i, p) in packages.iter().enumerate() {
            for image in &p.dockerfile.images {
                let full = lkpkg_cache_format::reference::expand(&image.reference);
                let edge = Edge::Image {
                    instruction: image.instruction,
                    line: image.line,
                };
                if let Some(&to) = by_full_tag.get(&full) {
                    if let Some(platform) = &image.platform {
                        platform_edges.push((i, to, edge, platform.clone()));
                    } else if !package_edges.iter().any(|(f, t, _)| *f == i && *t == to) {
                        package_edges.push((i, to, edge));
                    }
                    continue;
                }
                let (repository, tag) = lkpkg_cache_format::reference::split_tag(&full);
                if let Some(&to) = by_repository.get(repository) {
                    warnings.push(format!(
                        "`{}` line {}: {} `{}` pins {} at tag `{}`, but the package `{}` is now at `{}`: it builds from an old image",
                        p.dockerfile_path.display(),
                        image.line,
                        image.instruction,
                        image.written,
                        repository,
                        tag.unwrap_or("latest"),
                        packages[to].package.dir.display(),
                        packages[to].package.tag.tag_text(),
                    ));
                }
                externals.push((i, image.reference.clone(), edge));
            }
            for pinned in &p.package.yml.depends.images {
                let repository = lkpkg_cache_format::reference::expand(&pinned.locator);
                match by_repository.get(&repository) {
                    Some(&to) => package_edges.push((i, to, Edge::Depends)),
                    None => externals.push((i, pinned.reference.clone(), Edge::Depends)),
                }
            }
        }

        let mut cycle_edges = package_edges.clone();
        cycle_edges.extend(
            platform_edges
                .iter()
                .map(|(f, t, e, _)| (*f, *t, e.clone())),
        );
        check_cycles(&packages, &cycle_edges)?;

        // Expand to units.
        let mut graph = DiGraph::new();
        let mut units = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            for platform in &p.platforms {
                let node = graph.add_node(Node::Unit {
                    package: i,
                    platform: platform.clone(),
                });
                units.insert((i, platform.clone()), node);
            }
        }
        for (from, to, edge) in &package_edges {
            for platform in &packages[*from].platforms {
                let source = units[&(*from, platform.clone())];
                match units.get(&(*to, platform.clone())) {
                    Some(&target) => {
                        graph.add_edge(source, target, edge.clone());
                    }
                    None => warnings.push(format!(
                        "`{}` for {platform} uses `{}`, which is not built for {platform}",
                        packages[*from].package.dir.display(),
                        packages[*to].package.dir.display(),
                    )),
                }
            }
        }
        for (from, to, edge, wanted) in &platform_edges {
            for platform in &packages[*from].platforms {
                let target_platform = stage_platform(wanted, platform);
                let source = units[&(*from, platform.clone())];
                match units.get(&(*to, target_platform.clone())) {
                    Some(&target) => {
                        graph.add_edge(source, target, edge.clone());
                    }
                    None => warnings.push(format!(
                        "`{}` for {platform} uses `{}` for {target_platform}, which is not built for {target_platform}",
                        packages[*from].package.dir.display(),
                        packages[*to].package.dir.display(),
                    )),
                }
            }
        }
        let mut external_nodes: HashMap<String, NodeIndex> = HashMap::new();
        let mut source_nodes: HashMap<PathBuf, NodeIndex> = HashMap::new();
        for (from, reference, edge) in externals {
            let target = *external_nodes
                .entry(reference.clone())
                .or_insert_with(|| graph.add_node(Node::ExternalImage { reference }));
            for platform in &packages[from].platforms {
                graph.add_edge(units[&(from, platform.clone())], target, edge.clone());
            }
        }
        for (i, p) in packages.iter().enumerate() {
            for source in &p.package.yml.extra_sources {
                let target = *source_nodes.entry(source.src.clone()).or_insert_with(|| {
                    graph.add_node(Node::ExtraSource {
                        path: source.src.clone(),
                    })
                });
                for platform in &p.platforms {
                    graph.add_edge(
                        units[&(i, platform.clone())],
                        target,
                        Edge::ExtraSource {
                            destination: source.dst.clone(),
                        },
                    );
                }
            }
        }
        Ok(BuildGraph {
            packages,
            graph,
            warnings,
            load_failures: failures,
            units,
        })
    }

    /// The unit node of a package for a platform.
    pub fn unit(&self, package: usize, platform: &Platform) -> Option<NodeIndex> {
        self.units.get(&(package, platform.clone())).copied()
    }

    /// Units in an order where every unit comes after the units it consumes.
    pub fn build_order(&self) -> Vec<NodeIndex> {
        // The graph is acyclic (checked at construction); edges point at dependencies.
        let mut order = petgraph::algo::toposort(&self.graph, None).unwrap_or_default();
        order.reverse();
        order
            .into_iter()
            .filter(|n| matches!(self.graph[*n], Node::Unit { .. }))
            .collect()
    }

    /// A short name for a node: `base/amd64`, `extra-source:…`, `image:…`.
    pub fn node_name(&self, node: NodeIndex, base: &Path) -> String {
        match &self.graph[node] {
            Node::Unit { package, platform } => format!(
                "{}/{}",
                self.packages[*package].package.display_dir(base),
                platform.arch
            ),
            Node::ExtraSource { path } => format!(
                "source:{}",
                path.strip_prefix(base).unwrap_or(path).display()
            ),
            Node::ExternalImage { reference } => format!("image:{reference}"),
        }
    }
}

/// Finds a cycle among packages and reports it as `a -> b -> a`.
fn check_cycles(packages: &[GraphPackage], edges: &[(usize, usize, Edge)]) -> Result<()> {
    let mut graph: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..packages.len()).map(|i| graph.add_node(i)).collect();
    for (from, to, _) in edges {
        graph.add_edge(nodes[*from], nodes[*to], ());
    }
    if petgraph::algo::toposort(&graph, None).is_ok() {
        return Ok(());
    }
    for component in petgraph::algo::tarjan_scc(&graph) {
        let cyclic = component.len() > 1 || graph.contains_edge(component[0], component[0]);
        if !cyclic {
            continue;
        }
        // Walk inside the component until a node repeats.
        let mut path = vec![component[0]];
        loop {
            let last = *path.last().unwrap_or(&component[0]);
            let Some(next) = graph.neighbors(last).find(|n| component.contains(n)) else {
                break;
            };
            if let Some(start) = path.iter().position(|n| *n == next) {
                let mut cycle: Vec<String> = path[start..]
                    .iter()
                    .map(|n| packages[graph[*n]].package.dir.display().to_string())
                    .collect();
                cycle.push(packages[graph[next]].package.dir.display().to_string());
                let first = &packages[graph[path[start]]].package;
                return Err(PackageError::new(
                    &first.build_yml_path,
                    None,
                    format!("dependency cycle: {}", cycle.join(" -> ")),
                )
                .into());
            }
            path.push(next);
        }
    }
    Err(Error::Cycle(vec!["(unknown)".into()]))
}
