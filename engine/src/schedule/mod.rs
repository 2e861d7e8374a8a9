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

pub(crate) mod inputs;
mod reason;
#[cfg(test)]
mod tests;

pub use reason::{BuildReason, Freshness, Pulled, SkipReason};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lkpkg_cache_format::build_record::BuildRecord;
use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use tokio::sync::Semaphore;

use crate::executor::docker::EngineError;
use crate::fingerprint::{self, Inputs, content};
use crate::graph::{BuildGraph, Edge, Node, Platform};
use crate::store::{Store, UnitClaim};
use crate::workspace::Workspaces;

/// A boxed future, as the [`Executor`]'s methods return (the trait is used as an object).
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the scheduler asks of whoever builds images. The BuildKit implementation is
/// [`crate::executor::BuildkitExecutor`]; the scheduler's tests use a fake.
pub trait Executor: Send + Sync {
    /// Builds `job`'s unit into the cache (its per-arch name) and returns its manifest.
    fn build<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Descriptor, ExecError>>;
    /// Builds units of one package that became ready together (its platforms), results in
    /// the order of `jobs`. An executor may build several in one solve (BuildKit's
    /// multi-platform build on a builder that serves them all); by default each is built on
    /// its own, all at once.
    fn build_together<'a>(
        &'a self,
        jobs: Vec<Job<'a>>,
    ) -> BoxFuture<'a, Vec<Result<Descriptor, ExecError>>> {
        Box::pin(futures_util::future::join_all(
            jobs.into_iter().map(|job| self.build(job)),
        ))
    }
    /// `--docker`: loads a package's host-platform image into the default engine.
    fn load_into_engine(&self, package: usize) -> BoxFuture<'_, Result<(), BuildError>>;
}

/// Where units missing from the cache may be found before they are built: a registry
/// ([`crate::remote::RegistryRemote`]); the scheduler's tests use a fake.
pub trait Remote: Send + Sync {
    /// Fetches the unit's image into the cache, published under its per-arch name, if the
    /// registry has it: by `key` (a build record another machine published), else, when
    /// `by_tag`, by the package's tag. `Ok(None)`: not published. An error is a warning: the
    /// unit is built.
    fn fetch<'a>(
        &'a self,
        ask: RemoteAsk<'a>,
    ) -> BoxFuture<'a, Result<Option<(Descriptor, Pulled)>, String>>;
}

/// A unit the scheduler would build, asked of the [`Remote`].
#[derive(Debug, Clone, Copy)]
pub struct RemoteAsk<'a> {
    pub package: usize,
    pub platform: &'a Platform,
    pub key: &'a [u8; 32],
    /// Whether the tag may stand for the unit: its cache entry is missing and nothing it
    /// consumes changed in this run (a dependent keeps its tag when its base changes, so a
    /// published tag would be stale).
    pub by_tag: bool,
}

/// One unit to build.
pub struct Job<'a> {
    /// The package's index in the graph.
    pub package: usize,
    pub platform: &'a Platform,
    /// The unit's display name (`base/amd64`).
    pub unit: &'a str,
    /// Build arguments and labels, in linuxkit's order (hashed into the build key).
    pub args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub network: bool,
    pub no_cache: bool,
    /// See [`BuildOptions::ignore_cached`].
    pub ignore_cached: bool,
    /// Called once the builder is chosen and free, with its name (the build starts).
    pub started: Box<dyn Fn(&str) + Send + Sync + 'a>,
    /// Each line of the build's progress.
    pub log: Arc<dyn Fn(String) + Send + Sync>,
}

/// How a unit's build failed.
#[derive(Debug)]
pub enum ExecError {
    /// The build failed; others may go on.
    Failed {
        message: String,
        log_tail: Vec<String>,
    },
    /// Its builder cannot be reached or chosen: the whole build stops.
    Environment(EngineError),
}

/// What the user asked of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
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

/// How a unit task got its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Built,
    /// Built to other bytes than the recorded build of the same key.
    BuiltUnreproducible,
    /// Another process sharing the cache built the key meanwhile.
    TakenFromOtherProcess,
    PulledByKey,
    PulledByTag,
}

impl Outcome {
    /// Whether `--push` may publish the unit's build record.
    fn shares_record(self) -> bool {
        !matches!(self, Outcome::PulledByTag | Outcome::BuiltUnreproducible)
    }
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

/// What was decided for a unit.
enum Decision {
    Fresh {
        descriptor: Descriptor,
        freshness: Freshness,
        key: [u8; 32],
    },
    Build {
        reason: BuildReason,
        inputs: Inputs,
        key: [u8; 32],
        /// The package's files, recorded for later explanations.
        files: BTreeMap<String, String>,
        /// See [`RemoteAsk::by_tag`].
        by_tag: bool,
    },
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
            let args = inputs::build_args(gp, workspaces);
            (p, (args, inputs::labels(gp, workspaces)))
        })
        .collect();
    (units, by_node, args)
}

/// The record name of a unit: package directory relative to the repository, and the arch.
///
/// Relative to the command's repository, so a clone elsewhere finds its records; a package of
/// another repository is named by its absolute path.
pub fn unit_id(workspaces: &Workspaces, dir: &Path, platform: &Platform) -> String {
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

/// Who makes the images: the executor builds them; the remote, when there is one, is asked
/// first for what others published.
#[derive(Clone)]
pub struct Backends {
    pub executor: Arc<dyn Executor>,
    pub remote: Option<Arc<dyn Remote>>,
}

/// Builds every unit of `graph` that needs it.
pub async fn build(
    graph: Arc<BuildGraph>,
    workspaces: &Workspaces,
    store: Arc<Store>,
    backends: Backends,
    options: &BuildOptions,
    base: &Path,
    events: Arc<dyn Fn(Event) + Send + Sync>,
) -> Result<Summary, BuildError> {
    let (units, by_node, args) = plan_units(&graph, workspaces, base);
    let shared = Arc::new(Shared {
        graph: graph.clone(),
        store,
        executor: backends.executor,
        args,
        events: events.clone(),
        options: options.clone(),
        unit_index: by_node.clone(),
        index_annotations: graph
            .packages
            .iter()
            .enumerate()
            .map(|(i, p)| (i, inputs::index_annotations(p, workspaces)))
            .collect(),
        remote: backends
            .remote
            .filter(|_| !options.force && !options.dry_run),
    });

    shared.store.ensure_fresh()?;
    let mut summary = Summary::default();
    // Output digest of each finished unit (`None`: failed or skipped).
    let mut done: HashMap<NodeIndex, Option<Descriptor>> = HashMap::new();
    let mut rebuilt: HashSet<NodeIndex> = HashSet::new();
    // Whether any unit of a package built or was re-pointed (its index needs writing).
    let mut package_changed: HashSet<usize> = HashSet::new();
    let mut pending: Vec<usize> = (0..units.len()).collect();
    let mut running = tokio::task::JoinSet::new();
    let mut stopped = false;
    let jobs = options.jobs.max(1);
    let semaphore = Arc::new(Semaphore::new(jobs));
    loop {
        // Units to build found in this pass, by package: a package's platforms that are ready
        // at once go to the executor together (one solve where they share a builder).
        let mut ready: BTreeMap<usize, Vec<(NodeIndex, UnitTask)>> = BTreeMap::new();
        let mut progressed = true;
        while progressed {
            progressed = false;
            let mut i = 0;
            while i < pending.len() {
                let unit = &units[pending[i]];
                if let Some(dep) = unit.deps.iter().find(|d| matches!(done.get(d), Some(None))) {
                    summary.skipped += 1;
                    events(Event::Skipped {
                        unit: unit.name.clone(),
                        reason: SkipReason::DependencyFailed(units[by_node[dep]].name.clone()),
                    });
                    done.insert(unit.node, None);
                    pending.remove(i);
                    progressed = true;
                    continue;
                }
                if stopped || !unit.deps.iter().all(|d| done.contains_key(d)) {
                    i += 1;
                    continue;
                }
                let index = pending.remove(i);
                progressed = true;
                let unit = &units[index];
                let dep_digests: Vec<(String, String)> = unit
                    .deps
                    .iter()
                    .filter_map(|d| {
                        let descriptor = done.get(d)?.as_ref()?;
                        Some((units[by_node[d]].id.clone(), descriptor.digest.to_string()))
                    })
                    .collect();
                let deps_rebuilt: Vec<&str> = unit
                    .deps
                    .iter()
                    .filter(|d| rebuilt.contains(d))
                    .map(|d| units[by_node[d]].name.as_str())
                    .collect();
                let decision = decide(
                    &shared,
                    workspaces,
                    unit,
                    &units,
                    &by_node,
                    &dep_digests,
                    &deps_rebuilt,
                )?;
                match decision {
                    Decision::Fresh {
                        descriptor,
                        freshness,
                        key,
                    } => {
                        summary.fresh += 1;
                        summary.units.push(UnitOutcome {
                            package: unit.package,
                            platform: unit.platform.clone(),
                            descriptor: descriptor.clone(),
                            recorded_key: (freshness != Freshness::Foreign).then_some(key),
                        });
                        if freshness.repointed() {
                            package_changed.insert(unit.package);
                        }
                        events(Event::Fresh {
                            unit: unit.name.clone(),
                            digest: descriptor.digest.to_string(),
                            reason: freshness,
                        });
                        done.insert(unit.node, Some(descriptor));
                        finish_package(&shared, &units, &done, &package_changed, unit.package)
                            .await?;
                    }
                    Decision::Build { reason, .. } if options.dry_run => {
                        events(Event::WouldBuild {
                            unit: unit.name.clone(),
                            reason,
                        });
                        // Dependents cannot be decided without this unit's new digest: in a
                        // dry run they are reported as waiting for it.
                        rebuilt.insert(unit.node);
                        summary.built += 1;
                    }
                    Decision::Build {
                        reason,
                        inputs,
                        key,
                        files,
                        by_tag,
                    } => {
                        // A read-only cache serves a build whose units are all fresh; the
                        // first one to build stops it, saying why.
                        shared.store.ensure_writable()?;
                        let task = UnitTask {
                            by_tag,
                            shared: shared.clone(),
                            package: unit.package,
                            platform: unit.platform.clone(),
                            name: unit.name.clone(),
                            id: unit.id.clone(),
                            reason,
                            inputs,
                            key,
                            files,
                        };
                        ready
                            .entry(unit.package)
                            .or_default()
                            .push((unit.node, task));
                    }
                }
            }
        }
        for (_, group) in ready {
            // `-j` bounds the units in flight: a group takes a permit per unit (at most all).
            let permits = group.len().min(jobs) as u32;
            let semaphore = semaphore.clone();
            running.spawn(async move {
                let _permits = semaphore.acquire_many_owned(permits).await;
                run_group(group).await
            });
        }
        if options.dry_run {
            // Report dependents of would-build units instead of skipping them silently.
            for index in pending.drain(..) {
                let unit = &units[index];
                let waits: Vec<String> = unit
                    .deps
                    .iter()
                    .filter(|d| !done.contains_key(d))
                    .map(|d| units[by_node[d]].name.clone())
                    .collect();
                events(Event::WouldBuild {
                    unit: unit.name.clone(),
                    reason: BuildReason::AfterDependencies(waits),
                });
                summary.built += 1;
            }
            break;
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let finished = joined.map_err(|e| internal(format!("a build task panicked: {e}")))?;
        for (node, result) in finished {
            let package = units[by_node[&node]].package;
            match result {
                Ok((descriptor, outcome, key)) => {
                    // A unit another process built meanwhile counts as fresh here; its
                    // dependents still see it as new (its digest is not the one they were
                    // decided against).
                    match outcome {
                        Outcome::Built | Outcome::BuiltUnreproducible => summary.built += 1,
                        Outcome::TakenFromOtherProcess => summary.fresh += 1,
                        Outcome::PulledByKey | Outcome::PulledByTag => summary.pulled += 1,
                    }
                    summary.units.push(UnitOutcome {
                        package,
                        platform: units[by_node[&node]].platform.clone(),
                        descriptor: descriptor.clone(),
                        recorded_key: outcome.shares_record().then_some(key),
                    });
                    // A unit pulled by its tag is a foreign entry, as an imported one: it
                    // leaves its dependents' tags standing for them (see `RemoteAsk::by_tag`).
                    if outcome != Outcome::PulledByTag {
                        rebuilt.insert(node);
                    }
                    package_changed.insert(package);
                    done.insert(node, Some(descriptor));
                    finish_package(&shared, &units, &done, &package_changed, package).await?;
                }
                Err(UnitFailure::Environment(e)) => {
                    running.abort_all();
                    return Err(BuildError::Engine(e));
                }
                Err(UnitFailure::Failed) => {
                    summary.failed += 1;
                    done.insert(node, None);
                    finish_package(&shared, &units, &done, &package_changed, package).await?;
                    if !options.keep_going {
                        stopped = true;
                    }
                }
            }
        }
    }
    for index in pending {
        summary.skipped += 1;
        events(Event::Skipped {
            unit: units[index].name.clone(),
            reason: SkipReason::Stopped,
        });
    }
    Ok(summary)
}

/// The per-arch entry of a unit, if it is in the cache with every blob present.
fn cached_entry(store: &Store, name: &str) -> Result<Option<Descriptor>, BuildError> {
    let Some(descriptor) = store.lookup(name)? else {
        return Ok(None);
    };
    Ok(present(store, &descriptor).then_some(descriptor))
}

/// The manifest for `platform` in the multi-arch index named `name`, if it is whole in the
/// cache: a cache filled by linuxkit pulling holds only the index under the tag, without the
/// `-<arch>` names, and linuxkit uses it for the platform it holds.
fn platform_in_index(
    store: &Store,
    name: &str,
    platform: &Platform,
) -> Result<Option<Descriptor>, BuildError> {
    let Some(root) = store.lookup(name)? else {
        return Ok(None);
    };
    if !lkpkg_cache_format::layout::is_index_media_type(&root.media_type)
        || !store.has_blob(&root.digest)
    {
        return Ok(None);
    }
    let wanted = lkpkg_cache_format::layout::Platform::linux(&platform.arch);
    match store.platform_manifest(name, &root, &wanted) {
        Ok(manifest) if present(store, &manifest) => Ok(Some(manifest)),
        Ok(_) | Err(crate::store::StoreError::PlatformNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn present(store: &Store, descriptor: &Descriptor) -> bool {
    store.has_blob(&descriptor.digest) && store.closure(descriptor).missing.is_empty()
}

/// The inputs of a unit (see [`crate::fingerprint`]).
fn unit_inputs(
    shared: &Shared,
    workspaces: &Workspaces,
    unit: &Unit,
    units: &[Unit],
    by_node: &HashMap<NodeIndex, usize>,
    dep_digests: &[(String, String)],
) -> Result<Inputs, BuildError> {
    let graph = &shared.graph;
    let gp = &graph.packages[unit.package];
    let package = &gp.package;
    let package_tree = content::content(workspaces, &package.dir)?.tree;
    let mut extra_sources = Vec::new();
    for source in &package.yml.extra_sources {
        extra_sources.push((
            source.dst.clone(),
            content::content(workspaces, &source.src)?.tree,
        ));
    }
    let mut tag_sources = Vec::new();
    for (key, dir) in &gp.tag_sources {
        tag_sources.push((key.clone(), content::content(workspaces, dir)?.tree));
    }
    // The unit each `@lkt:` argument names (same platform).
    let dep_unit_of = |dir: &Path| -> Option<String> {
        unit.deps
            .iter()
            .map(|d| &units[by_node[d]])
            .find(|u| graph.packages[u.package].package.dir == dir)
            .map(|u| u.id.clone())
    };
    let args: Vec<(&str, &str, Option<String>)> = gp
        .build_args
        .iter()
        .map(|a| {
            (
                a.key.as_str(),
                a.value.as_str(),
                a.package.as_deref().and_then(dep_unit_of),
            )
        })
        .collect();
    let (all_args, labels) = &shared.args[&unit.package];
    let presets: BTreeMap<String, String> = all_args
        .iter()
        .filter(|(k, _)| fingerprint::PRESETS.contains(&k.as_str()))
        .filter(|(k, _)| !gp.build_args.iter().any(|a| &a.key == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut external_images = Vec::new();
    let mut depends = Vec::new();
    for edge in graph.graph.edges(unit.node) {
        if let Node::ExternalImage { reference } = &graph.graph[edge.target()] {
            match edge.weight() {
                Edge::Depends => depends.push(reference.clone()),
                // Read from the registry instead of the cache, the image may be other bytes:
                // the key says which.
                _ if shared.options.ignore_cached => external_images
                    .push(format!("{reference} (from its registry: --ignore-cached)")),
                _ => external_images.push(reference.clone()),
            }
        }
    }
    let dockerfile = gp
        .dockerfile_path
        .strip_prefix(&package.dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| package.yml.dockerfile.clone());
    let description = fingerprint::UnitDescription {
        platform: unit.platform.to_string(),
        dockerfile,
        network: shared.options.network.unwrap_or(package.yml.network),
        no_cache: shared
            .options
            .disable_cache
            .unwrap_or(package.yml.disable_cache),
        package_tree,
        extra_sources,
        args,
        tag_sources,
        presets,
        args_used_outside_from: &gp.dockerfile.args_used_outside_from,
        labels,
        dependencies: dep_digests.to_vec(),
        external_images,
        depends,
    };
    Ok(fingerprint::inputs(&description))
}

/// Decides a unit whose dependencies are all done; see the module docs for the rules.
fn decide(
    shared: &Shared,
    workspaces: &Workspaces,
    unit: &Unit,
    units: &[Unit],
    by_node: &HashMap<NodeIndex, usize>,
    dep_digests: &[(String, String)],
    deps_rebuilt: &[&str],
) -> Result<Decision, BuildError> {
    let store = &shared.store;
    let inputs = unit_inputs(shared, workspaces, unit, units, by_node, dep_digests)?;
    let key = fingerprint::key(&inputs);
    let package_dir = &shared.graph.packages[unit.package].package.dir;
    let build_as = |reason: BuildReason, by_tag: bool| Decision::Build {
        reason,
        inputs: inputs.clone(),
        key,
        files: if shared.options.dry_run {
            BTreeMap::new()
        } else {
            current_files(workspaces, package_dir).unwrap_or_default()
        },
        by_tag,
    };
    let build = |reason: BuildReason| build_as(reason, false);
    if shared.options.force {
        return Ok(build(BuildReason::Forced));
    }
    let name = lkpkg_cache_format::reference::per_arch(
        &shared.graph.packages[unit.package].package.tag.full_tag(),
        &unit.platform.arch,
    );
    let state = store.unit_state(&key, &name, &unit.id)?;
    let named = |record: &BuildRecord| {
        state
            .current
            .as_ref()
            .is_some_and(|c| c.digest == record.manifest.digest)
    };
    // When the cache name points at the recorded image, the store published it whole and
    // reference counts keep it so: the manifest's presence is checked (against deletion behind
    // the store's back), not its whole closure. A record whose image is no longer named may
    // have lost blobs to `gc`: its closure is checked.
    if let Some(record) = state.record.as_ref().filter(|r| {
        if named(r) {
            store.has_blob(&r.manifest.digest)
        } else {
            present(store, &r.manifest)
        }
    }) {
        let record = record.clone();
        let freshness = if named(&record) {
            Freshness::UpToDate
        } else {
            store.point_name(&name, &record.manifest)?;
            Freshness::Reused
        };
        if state.last_key != Some(key) {
            store.set_last_build(&unit.id, &key)?;
        }
        return Ok(Decision::Fresh {
            descriptor: record.manifest,
            freshness,
            key,
        });
    }
    let last = store.last_build(&unit.id)?;
    let full_tag = shared.graph.packages[unit.package].package.tag.full_tag();
    let cached = match cached_entry(store, &name)? {
        Some(descriptor) => Some(descriptor),
        None => platform_in_index(store, &full_tag, &unit.platform)?,
    };
    let built_by_lkpkg = |descriptor: &Descriptor| {
        last.as_ref()
            .is_some_and(|(_, r)| r.manifest.digest == descriptor.digest)
    };
    let by_tag = cached.is_none() && deps_rebuilt.is_empty();
    if let Some(descriptor) = cached
        && !built_by_lkpkg(&descriptor)
    {
        if deps_rebuilt.is_empty() {
            return Ok(Decision::Fresh {
                descriptor,
                freshness: Freshness::Foreign,
                key,
            });
        }
        return Ok(build(BuildReason::DependencyRebuilt(
            deps_rebuilt.iter().map(|d| (*d).to_owned()).collect(),
        )));
    }
    // (`by_tag`: the tag may stand for the unit only where linuxkit's would: nothing under
    // the unit's name, and nothing it consumes changed in this run.)
    match last {
        Some((_, record)) => {
            let files = current_files(workspaces, package_dir);
            let reasons =
                fingerprint::explain(&record.inputs, &inputs, &record.files, files.as_ref());
            if reasons.is_empty() {
                Ok(build_as(BuildReason::RecordedImageGone, by_tag))
            } else {
                Ok(build_as(BuildReason::Changed(reasons), by_tag))
            }
        }
        None => Ok(build_as(BuildReason::FirstBuild, by_tag)),
    }
}

fn current_files(workspaces: &Workspaces, dir: &Path) -> Option<BTreeMap<String, String>> {
    content::files(workspaces, dir).ok().map(|f| {
        f.iter()
            .map(|(k, v)| (k.clone(), content::describe(v)))
            .collect()
    })
}

/// Writes a package's multi-arch index once all its units are done, if one of them changed
/// or the index is missing.
async fn finish_package(
    shared: &Arc<Shared>,
    units: &[Unit],
    done: &HashMap<NodeIndex, Option<Descriptor>>,
    changed: &HashSet<usize>,
    package: usize,
) -> Result<(), BuildError> {
    let mine: Vec<&Unit> = shared.graph.packages[package]
        .platforms
        .iter()
        .filter_map(|p| shared.graph.unit(package, p))
        .map(|node| &units[shared.unit_index[&node]])
        .collect();
    if !mine.iter().all(|u| done.contains_key(&u.node)) {
        return Ok(());
    }
    let gp = &shared.graph.packages[package];
    let name = gp.package.tag.full_tag();
    // A platform that failed (or was skipped) leaves the index as it was: merging the others
    // would give an index whose platforms come from different builds.
    let failed: Vec<&str> = mine
        .iter()
        .filter(|u| matches!(done.get(&u.node), Some(None)))
        .map(|u| u.name.as_str())
        .collect();
    if !failed.is_empty() {
        (shared.events)(Event::IndexKept {
            package: gp.package.tag.tag(),
            name: name.clone(),
            reason: format!(
                "{} did not build: the index keeps what it held, never a mix of builds",
                failed.join(", ")
            ),
        });
        return Ok(());
    }
    if !changed.contains(&package) && shared.store.lookup(&name)?.is_some() {
        return Ok(());
    }
    let mut manifests: Vec<Descriptor> = Vec::new();
    for descriptor in mine
        .iter()
        .filter_map(|u| done.get(&u.node).cloned().flatten())
    {
        manifests.push(shared.store.with_platform(descriptor)?);
    }
    if manifests.is_empty() {
        return Ok(());
    }
    let store = shared.store.clone();
    let index_name = name.clone();
    let annotations = shared
        .index_annotations
        .get(&package)
        .cloned()
        .unwrap_or_default();
    let descriptor = tokio::task::spawn_blocking(move || {
        store.merge_index_annotated(&index_name, &manifests, &annotations)
    })
    .await
    .map_err(internal)??;
    (shared.events)(Event::Indexed {
        package: gp.package.tag.tag(),
        name: name.clone(),
        digest: descriptor.digest.to_string(),
    });
    if shared.options.docker {
        shared.executor.load_into_engine(package).await?;
    }
    Ok(())
}

struct UnitTask {
    by_tag: bool,
    shared: Arc<Shared>,
    package: usize,
    platform: Platform,
    name: String,
    id: String,
    reason: BuildReason,
    inputs: Inputs,
    key: [u8; 32],
    files: BTreeMap<String, String>,
}

/// How a unit task ended badly.
enum UnitFailure {
    /// The unit failed (reported as an event); others may go on.
    Failed,
    /// Its builder cannot be reached or chosen: the whole build stops (exit code 3 or 2).
    Environment(EngineError),
}

/// What a unit's result is once it is settled.
type UnitResult = Result<(Descriptor, Outcome, [u8; 32]), UnitFailure>;

/// When and where a unit's build started (set by [`Job::started`]).
type StartedAt = std::sync::Mutex<Option<(Instant, SystemTime, String)>>;

/// Builds the units of one package decided in one pass (see [`Executor::build_together`]):
/// each is claimed and looked up first (another process may have built it, a registry may
/// have it), in the order of the group, which every process shares, so that two processes
/// never wait on each other's claims; what is left is handed to the executor at once.
async fn run_group(group: Vec<(NodeIndex, UnitTask)>) -> Vec<(NodeIndex, UnitResult)> {
    let mut results: Vec<Option<UnitResult>> = group.iter().map(|_| None).collect();
    let mut to_build = Vec::new();
    for (i, (_, task)) in group.iter().enumerate() {
        match task.prepare().await {
            Prepared::Settled(result) => results[i] = Some(*result),
            Prepared::Build(claim) => to_build.push((i, claim)),
        }
    }
    if let Some(&(first, _)) = to_build.first() {
        let executor = group[first].1.shared.executor.clone();
        let started: Vec<StartedAt> = to_build
            .iter()
            .map(|_| std::sync::Mutex::new(None))
            .collect();
        let jobs = to_build
            .iter()
            .zip(&started)
            .map(|((i, _), started)| group[*i].1.job(started))
            .collect();
        let built = executor.build_together(jobs).await;
        for (((i, _claim), started), result) in to_build.iter().zip(&started).zip(built) {
            results[*i] = Some(group[*i].1.finish(result, started).await);
        }
    }
    group
        .iter()
        .zip(results)
        .map(|((node, _), result)| (*node, result.unwrap_or(Err(UnitFailure::Failed))))
        .collect()
}

/// A unit after its claim and lookups.
enum Prepared {
    /// Settled without building (taken from another process, pulled, or failed).
    Settled(Box<UnitResult>),
    /// To build, holding its claim in the cache.
    Build(UnitClaim),
}

impl UnitTask {
    /// Claims the unit in the cache (across processes sharing it, one build of a key at a
    /// time: whoever waited takes what the other built), then looks it up in the cache and the
    /// registry.
    async fn prepare(&self) -> Prepared {
        let shared = &self.shared;
        let events = &shared.events;
        let package = &shared.graph.packages[self.package].package;
        let store = shared.store.clone();
        let claim_root = store.root().to_owned();
        let mut waited = false;
        let claim = loop {
            let root = claim_root.clone();
            let key = self.key;
            let claimed = tokio::task::spawn_blocking(move || UnitClaim::try_claim(&root, &key))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
            let claim = match claimed {
                Ok(claim) => claim,
                Err(error) => {
                    events(Event::Failed {
                        unit: self.name.clone(),
                        error: format!("claiming the unit in the cache: {error}"),
                        log_tail: Vec::new(),
                    });
                    return Prepared::Settled(Box::new(Err(UnitFailure::Failed)));
                }
            };
            if let Some(claim) = claim {
                break claim;
            }
            if !waited {
                waited = true;
                events(Event::Waiting {
                    unit: self.name.clone(),
                    reason: "another lkpkg process sharing the cache is building it".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let name =
            lkpkg_cache_format::reference::per_arch(&package.tag.full_tag(), &self.platform.arch);
        // (`--force` builds whatever the records say.)
        if let Some(record) = (!shared.options.force)
            .then(|| store.build_record(&self.key).ok().flatten())
            .flatten()
            .filter(|r| present(&store, &r.manifest))
        {
            // Built by the other process meanwhile (or before this one decided).
            if store.point_name(&name, &record.manifest).is_ok() {
                events(Event::Fresh {
                    unit: self.name.clone(),
                    digest: record.manifest.digest.to_string(),
                    reason: Freshness::Reused,
                });
                return Prepared::Settled(Box::new(Ok((
                    record.manifest,
                    Outcome::TakenFromOtherProcess,
                    self.key,
                ))));
            }
        }
        match self.pull().await {
            Some(pulled) => Prepared::Settled(Box::new(pulled)),
            None => Prepared::Build(claim),
        }
    }

    /// The executor's job for the unit; `started` receives when and where it started.
    fn job<'a>(&'a self, started: &'a StartedAt) -> Job<'a> {
        let shared = &self.shared;
        let events = shared.events.clone();
        let package = &shared.graph.packages[self.package].package;
        let (args, labels) = &shared.args[&self.package];
        let log = {
            let events = events.clone();
            let unit = self.name.clone();
            Arc::new(move |line: String| {
                events(Event::Log {
                    unit: unit.clone(),
                    line,
                })
            })
        };
        Job {
            package: self.package,
            platform: &self.platform,
            unit: &self.name,
            args,
            labels,
            network: shared.options.network.unwrap_or(package.yml.network),
            no_cache: shared
                .options
                .disable_cache
                .unwrap_or(package.yml.disable_cache),
            ignore_cached: shared.options.ignore_cached,
            started: Box::new(move |builder: &str| {
                events(Event::Started {
                    unit: self.name.clone(),
                    reason: self.reason.clone(),
                    builder: builder.to_owned(),
                });
                if let Ok(mut started) = started.lock() {
                    *started = Some((Instant::now(), SystemTime::now(), builder.to_owned()));
                }
            }),
            log,
        }
    }

    /// Records what the executor built (or reports its failure).
    async fn finish(
        &self,
        result: Result<Descriptor, ExecError>,
        started: &StartedAt,
    ) -> UnitResult {
        let shared = &self.shared;
        let events = &shared.events;
        let (since, started_at, builder) = started
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_else(|| (Instant::now(), SystemTime::now(), String::new()));
        let descriptor = match result {
            Ok(descriptor) => descriptor,
            Err(ExecError::Environment(e)) => return Err(UnitFailure::Environment(e)),
            Err(ExecError::Failed { message, log_tail }) => {
                events(Event::Failed {
                    unit: self.name.clone(),
                    error: message,
                    log_tail,
                });
                return Err(UnitFailure::Failed);
            }
        };
        let duration = since.elapsed();
        // A build of inputs already recorded (`--force`) that gave other bytes shows the
        // package is not reproducible: said, and its record is never shared through a
        // registry, where it would stand for builds it does not match.
        let previous = shared.store.build_record(&self.key).ok().flatten();
        let unreproducible = previous
            .as_ref()
            .is_some_and(|p| p.manifest.digest != descriptor.digest);
        if let (true, Some(previous)) = (unreproducible, &previous) {
            events(Event::Unreproducible {
                unit: self.name.clone(),
                recorded: previous.manifest.digest.to_string(),
                built: descriptor.digest.to_string(),
            });
        }
        let record = BuildRecord {
            unit: self.id.clone(),
            manifest: descriptor.clone(),
            inputs: self.inputs.clone(),
            files: self.files.clone(),
            builder,
            started_unix_ms: started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            duration_ms: duration.as_millis() as u64,
        };
        let store = shared.store.clone();
        let key = self.key;
        let written =
            tokio::task::spawn_blocking(move || store.put_build_record(&key, &record)).await;
        if let Err(e) = written
            .map_err(internal)
            .and_then(|r| r.map_err(BuildError::from))
        {
            events(Event::Failed {
                unit: self.name.clone(),
                error: e.to_string(),
                log_tail: Vec::new(),
            });
            return Err(UnitFailure::Failed);
        }
        events(Event::Finished {
            unit: self.name.clone(),
            digest: descriptor.digest.to_string(),
            duration,
        });
        let outcome = if unreproducible {
            Outcome::BuiltUnreproducible
        } else {
            Outcome::Built
        };
        Ok((descriptor, outcome, self.key))
    }

    /// Asks the registry for the unit before it is built; `None`: build it.
    async fn pull(&self) -> Option<UnitResult> {
        let shared = &self.shared;
        let remote = shared.remote.as_ref()?;
        let ask = RemoteAsk {
            package: self.package,
            platform: &self.platform,
            key: &self.key,
            by_tag: self.by_tag,
        };
        let (descriptor, how) = match remote.fetch(ask).await {
            Ok(found) => found?,
            Err(message) => {
                (shared.events)(Event::RegistryUnavailable { message });
                return None;
            }
        };
        let outcome = match how {
            Pulled::ByKey { .. } => {
                // The record another machine published stands for this one's: recorded here
                // too, with this checkout's inputs, so that later runs find the unit fresh.
                let record = BuildRecord {
                    unit: self.id.clone(),
                    manifest: descriptor.clone(),
                    inputs: self.inputs.clone(),
                    files: self.files.clone(),
                    builder: format!("registry ({how})"),
                    started_unix_ms: SystemTime::now()
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64),
                    duration_ms: 0,
                };
                let store = shared.store.clone();
                let key = self.key;
                let written =
                    tokio::task::spawn_blocking(move || store.put_build_record(&key, &record))
                        .await;
                if let Err(e) = written
                    .map_err(internal)
                    .and_then(|r| r.map_err(BuildError::from))
                {
                    (shared.events)(Event::Failed {
                        unit: self.name.clone(),
                        error: e.to_string(),
                        log_tail: Vec::new(),
                    });
                    return Some(Err(UnitFailure::Failed));
                }
                Outcome::PulledByKey
            }
            Pulled::ByTag { .. } => Outcome::PulledByTag,
        };
        (shared.events)(Event::Pulled {
            unit: self.name.clone(),
            digest: descriptor.digest.to_string(),
            how,
        });
        Some(Ok((descriptor, outcome, self.key)))
    }
}

/// Stands in for the executor where nothing builds (`explain`).
struct NoExecutor;

impl Executor for NoExecutor {
    fn build<'a>(&'a self, _job: Job<'a>) -> BoxFuture<'a, Result<Descriptor, ExecError>> {
        Box::pin(async {
            Err(ExecError::Failed {
                message: "nothing builds here".into(),
                log_tail: Vec::new(),
            })
        })
    }

    fn load_into_engine(&self, _package: usize) -> BoxFuture<'_, Result<(), BuildError>> {
        Box::pin(async { Err(internal("nothing loads here")) })
    }
}

/// What `lkpkg explain` shows for one unit.
#[derive(Debug)]
pub struct UnitReport {
    pub unit: String,
    /// The unit's package (its index in the graph).
    pub package: usize,
    /// The unit's record name (`pkg/base/amd64`).
    pub id: String,
    /// The unit's per-arch cache name.
    pub cache_name: String,
    /// The unit's last build, if lkpkg built it.
    pub last: Option<BuildRecord>,
    /// The inputs now, with dependencies at the digests the cache holds for them.
    pub current: Inputs,
    /// Why the current inputs differ from the last build's (empty: fresh).
    pub reasons: Vec<String>,
}

/// Compares each unit's last build record with its current inputs, without building. A
/// dependency stands at the digest its own record or cache entry gives now.
pub fn explain(
    graph: Arc<BuildGraph>,
    workspaces: &Workspaces,
    store: Arc<Store>,
    options: &BuildOptions,
    base: &Path,
) -> Result<Vec<UnitReport>, BuildError> {
    let (units, by_node, args) = plan_units(&graph, workspaces, base);
    let shared = Shared {
        graph: graph.clone(),
        store: store.clone(),
        executor: Arc::new(NoExecutor),
        args,
        events: Arc::new(|_| {}),
        options: options.clone(),
        unit_index: by_node.clone(),
        index_annotations: HashMap::new(),
        remote: None,
    };
    let mut digests: HashMap<NodeIndex, String> = HashMap::new();
    let mut reports = Vec::new();
    for unit in &units {
        let dep_digests: Vec<(String, String)> = unit
            .deps
            .iter()
            .filter_map(|d| Some((units[by_node[d]].id.clone(), digests.get(d)?.clone())))
            .collect();
        let current = unit_inputs(&shared, workspaces, unit, &units, &by_node, &dep_digests)?;
        let key = fingerprint::key(&current);
        let last = store.last_build(&unit.id)?.map(|(_, r)| r);
        let name = lkpkg_cache_format::reference::per_arch(
            &graph.packages[unit.package].package.tag.full_tag(),
            &unit.platform.arch,
        );
        let digest = match store.build_record(&key)? {
            Some(record) => Some(record.manifest.digest.to_string()),
            None => store.lookup(&name)?.map(|d| d.digest.to_string()),
        };
        if let Some(digest) = digest {
            digests.insert(unit.node, digest);
        }
        let reasons = match &last {
            Some(record) => {
                let files = current_files(workspaces, &graph.packages[unit.package].package.dir);
                fingerprint::explain(&record.inputs, &current, &record.files, files.as_ref())
            }
            None => vec!["no build record".to_owned()],
        };
        reports.push(UnitReport {
            unit: unit.name.clone(),
            package: unit.package,
            id: unit.id.clone(),
            cache_name: name,
            last,
            current,
            reasons,
        });
    }
    Ok(reports)
}
