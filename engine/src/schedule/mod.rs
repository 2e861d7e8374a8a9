//! Building the graph: decide which units must build and why, schedule them in parallel on
//! the builders, ingest each result into the cache, and record it.
//!
//! # Deciding (cargo-style)
//! A unit is decided when every unit it consumes is done, because its build key includes their
//! output digests (see [`crate::fingerprint`]). Then, in order:
//! 1. `--force`: build.
//! 2. A build record for the key whose image is still in the cache: **fresh**. If the unit's
//!    cache name points elsewhere (a revert), it is pointed back at the recorded image.
//! 3. The unit's cache entry exists but lkpkg did not build it (no record has its digest: it
//!    was imported, pulled, or built by linuxkit): fresh as linuxkit would judge it, unless a
//!    unit it consumes was rebuilt in this run, which makes it stale.
//! 4. Otherwise build, explained against the unit's last record (`rebuilt: dependency
//!    base/amd64 sha256:ab… → sha256:cd…`) or `built (no previous record)`.
//!
//! A rebuilt dependency that yields the same digest leaves its dependents' keys unchanged:
//! they stay fresh (early cutoff). Outputs are made reproducible ([`normalize`]) so that this
//! happens.
//!
//! # Scheduling
//! Ready units start at once, up to `--jobs` at a time and each builder's own limit, so
//! independent packages and the platforms of one package build concurrently. A failure stops
//! the scheduling of new units (with `--keep-going`, only of the failed unit's dependents);
//! running units finish; every unit that could not run is reported as skipped with the
//! reason. No builder is contacted when nothing builds.
//!
//! # Chained builds and results
//! Before a unit builds, every image its Dockerfile names that is in the lkpkg cache is loaded
//! into the builder's engine from the cache (the cache is the truth), so `FROM ${BASE}` with
//! `BASE=@lkt:pkg:../base` works with no registry. The engine's image is exported, normalized,
//! and ingested under `docker.io/org/image:tag-<arch>`; once all of a package's platforms are
//! done, its multi-arch index is written under `docker.io/org/image:tag`. `--docker` loads
//! the host-architecture image into the default engine from the cache. The engine never
//! prints: progress leaves as [`Event`]s.

mod backends;
mod decide;
mod explain;
mod index;
pub(crate) mod inputs;
mod reason;
mod run;
mod task;
#[cfg(test)]
mod tests;

pub(crate) use backends::{Backends, BoxFuture, ExecError, Executor, Job, Remote, RemoteAsk};
pub use explain::UnitReport;
pub(crate) use explain::explain;
pub use reason::{BuildReason, Freshness, Pulled, SkipReason};
pub(crate) use run::build;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use crate::executor::docker::EngineError;
use crate::graph::{BuildGraph, Node, Platform};
use crate::store::Store;
use crate::workspace::Workspaces;

/// What the user asked of a build.
#[derive(Debug, Clone, Default)]
pub(crate) struct BuildOptions {
    pub force: bool,
    pub jobs: usize,
    pub keep_going: bool,
    /// `--docker`: also load the host-arch image into the default engine as `org/image:tag`.
    pub docker: bool,
    /// `--network` / `--nonetwork` over build.yml's `network`.
    pub network: Option<bool>,
    /// `--disable-cache` / `--enable-cache` over build.yml's `disable-cache`.
    pub disable_cache: Option<bool>,
    pub dry_run: bool,
    /// `--ignore-cached`: base images that are not packages of the build are pulled by the
    /// builder from their registries, not read from the cache (in-repo dependencies still
    /// come from the cache: their build in this run is what a dependent must see).
    pub ignore_cached: bool,
    /// The time stamped into outputs (unix seconds): `SOURCE_DATE_EPOCH`, else 0.
    ///
    /// Not a commit time: the epoch is part of every output (the config's `created`, history,
    /// file times), so an epoch that moved with commits would change a package's image with
    /// every commit that touched it, even a comment, and its dependents would all rebuild:
    /// early cutoff could never happen. A constant epoch, as ko and Bazel's image rules use,
    /// makes an image a function of its inputs alone.
    pub epoch: i64,
    /// The proxy variables of the environment (`http_proxy`, …), passed to builds as
    /// build arguments where the package does not set them, as docker does; not hashed.
    pub proxies: BTreeMap<String, String>,
}

/// Progress of a build, in the order things happen.
#[derive(Debug, Clone)]
pub enum Event {
    /// A unit needs no build; `reason` says why (`fresh`, …).
    Fresh {
        unit: String,
        digest: String,
        reason: Freshness,
    },
    /// With `--dry-run`: the unit would build, for `reason`.
    WouldBuild {
        unit: String,
        reason: BuildReason,
    },
    Started {
        unit: String,
        reason: BuildReason,
        builder: String,
    },
    Log {
        unit: String,
        line: String,
    },
    Finished {
        unit: String,
        digest: String,
        duration: Duration,
    },
    Skipped {
        unit: String,
        reason: SkipReason,
    },
    Failed {
        unit: String,
        error: String,
        log_tail: Vec<String>,
    },
    /// A package's multi-arch index was written.
    Indexed {
        package: String,
        name: String,
        digest: String,
    },
    /// A package's multi-arch index was left as it was, because one of its platforms failed.
    IndexKept {
        package: String,
        name: String,
        reason: String,
    },
    /// The unit was found in a registry and pulled instead of built.
    Pulled {
        unit: String,
        digest: String,
        how: Pulled,
    },
    /// A build of recorded inputs (`--force`) gave another image than the record's: the
    /// package is not reproducible, and its record is not shared.
    Unreproducible {
        unit: String,
        recorded: String,
        built: String,
    },
    /// A registry could not be asked for units (it is not asked again in this run); they
    /// build.
    RegistryUnavailable {
        message: String,
    },
    /// Another lkpkg process sharing the cache is building the unit: this one waits for it
    /// instead of building it a second time.
    Waiting {
        unit: String,
        reason: String,
    },
}

/// How a build ended.
#[derive(Debug, Default)]
pub struct Summary {
    pub built: usize,
    pub fresh: usize,
    /// Found in a registry instead of built.
    pub pulled: usize,
    /// Every unit that ended with an image, in the order they ended.
    pub units: Vec<UnitOutcome>,
    pub failed: usize,
    pub skipped: usize,
}

/// A unit's image at the end of a build, and the build key a record for it exists under (what
/// `--push` publishes as a shared build record).
#[derive(Debug, Clone)]
pub struct UnitOutcome {
    pub package: usize,
    pub platform: Platform,
    pub descriptor: Descriptor,
    /// The key of the unit's build record (`None`: no record, as for a foreign image).
    pub recorded_key: Option<[u8; 32]>,
}

/// A failure of the build as a whole (not of one unit).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Package(#[from] crate::error::Error),
    /// lkpkg's own fault (a task that panicked, a value that cannot be encoded).
    #[error("internal error: {0}")]
    Internal(String),
    /// The user stopped the build (Ctrl-C); running builds were cancelled.
    #[error("interrupted; running builds were cancelled")]
    Interrupted,
}

impl crate::error::Classify for BuildError {
    fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            BuildError::Engine(e) => e.kind(),
            BuildError::Store(e) => e.kind(),
            BuildError::Package(e) => e.kind(),
            BuildError::Internal(_) => ErrorKind::Internal,
            BuildError::Interrupted => ErrorKind::Interrupted,
        }
    }
}

pub(crate) fn internal(e: impl std::fmt::Display) -> BuildError {
    BuildError::Internal(e.to_string())
}

/// A package's build arguments and labels, computed once per package.
type ArgsAndLabels = (BTreeMap<String, String>, BTreeMap<String, String>);

/// One (package, platform) of the graph, with what deciding it needs.
struct Unit {
    node: NodeIndex,
    package: usize,
    platform: Platform,
    /// Display name, relative to the current directory (`base/amd64`).
    name: String,
    /// Record name, relative to the repository (`pkg/base/amd64`).
    id: String,
    deps: Vec<NodeIndex>,
}

/// Everything the tasks share.
struct Shared {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    executor: Arc<dyn Executor>,
    args: HashMap<usize, ArgsAndLabels>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    options: BuildOptions,
    /// Index in the units list, by graph node.
    unit_index: HashMap<NodeIndex, usize>,
    /// Each package's multi-arch index annotations (source, revision).
    index_annotations: HashMap<usize, BTreeMap<String, String>>,
    remote: Option<Arc<dyn Remote>>,
}

/// The graph's units in build order, their index by node, and each package's build arguments
/// and labels (computed once per package).
fn plan_units(
    graph: &BuildGraph,
    workspaces: &Workspaces,
    base: &Path,
    proxies: &BTreeMap<String, String>,
) -> (
    Vec<Unit>,
    HashMap<NodeIndex, usize>,
    HashMap<usize, ArgsAndLabels>,
) {
    let units: Vec<Unit> = graph
        .build_order()
        .into_iter()
        .filter_map(|node| match &graph.graph[node] {
            Node::Unit { package, platform } => Some(Unit {
                node,
                package: *package,
                platform: platform.clone(),
                name: graph.node_name(node, base),
                id: unit_id(workspaces, &graph.packages[*package].package.dir, platform),
                deps: graph
                    .graph
                    .edges(node)
                    .map(|e| e.target())
                    .filter(|t| matches!(graph.graph[*t], Node::Unit { .. }))
                    .collect(),
            }),
            _ => None,
        })
        .collect();
    let by_node = units.iter().enumerate().map(|(i, u)| (u.node, i)).collect();
    let args = units
        .iter()
        .map(|u| u.package)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|p| {
            let gp = &graph.packages[p];
            let args = inputs::build_args(gp, workspaces, proxies);
            (p, (args, inputs::labels(gp, workspaces)))
        })
        .collect();
    (units, by_node, args)
}

/// The record name of a unit: package directory relative to the repository, and the arch.
///
/// Relative to the command's repository, so a clone elsewhere finds its records; a package of
/// another repository is named by its absolute path.
pub(crate) fn unit_id(workspaces: &Workspaces, dir: &Path, platform: &Platform) -> String {
    let dir = workspaces
        .primary()
        .and_then(|w| w.relative(dir))
        .unwrap_or_else(|| dir.display().to_string());
    if dir.is_empty() {
        platform.arch.clone()
    } else {
        format!("{dir}/{}", platform.arch)
    }
}
