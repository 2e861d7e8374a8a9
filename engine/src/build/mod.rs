//! Building the graph: plan which units need a build, schedule them in parallel on the Docker
//! engine, and ingest each result into the cache.
//!
//! # Scheduling
//! A unit (package, platform) is *ready* when every unit it consumes has finished. Ready units
//! start at once, up to `--jobs` at a time, so independent packages and the platforms of one
//! package build concurrently. A failure stops the scheduling of new units (with
//! `--keep-going`, only of the failed unit's dependents); running units finish; every unit
//! that could not run is reported as skipped with the reason. The engine is contacted only when
//! some unit has to build.
//!
//! # Freshness (for now)
//! A unit whose per-arch cache entry `docker.io/org/image:tag-<arch>` exists with all its blobs
//! is not rebuilt unless `--force`, as linuxkit decides. Build keys (dependency-aware rebuilds)
//! are the incremental issue's.
//!
//! # Chained builds
//! Before a unit builds, every image its Dockerfile names that is in the lkpkg cache but not in
//! the engine is loaded into the engine from the cache, so `FROM ${BASE}` with
//! `BASE=@lkt:pkg:../base` works with no registry at all.
//!
//! # Results
//! The engine's image is exported (`docker save`) and ingested under
//! `docker.io/org/image:tag-<arch>`; once all of a package's platforms are done, its multi-arch
//! index is written under `docker.io/org/image:tag`. The engine never prints: progress goes
//! out as [`Event`]s.

pub mod context;
pub mod docker;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lkpkg_cache_format::layout::{Descriptor, Platform as OciPlatform};
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;
use tokio::sync::{Mutex, Semaphore};

use crate::graph::{BuildGraph, Node, Platform};
use crate::store::Store;
use crate::workspace::Workspace;
use docker::{BuildRequest, Engine, EngineError};

/// What the user asked of a build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub force: bool,
    pub jobs: usize,
    pub keep_going: bool,
    /// `--docker`: also tag the host-arch image in the engine as `org/image:tag`.
    pub docker: bool,
    /// `--network` / `--nonetwork` over build.yml's `network`.
    pub network: Option<bool>,
    /// `--disable-cache` / `--enable-cache` over build.yml's `disable-cache`.
    pub disable_cache: Option<bool>,
    pub dry_run: bool,
}

/// Why a unit did not build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its image is in the cache.
    Cached,
    /// A unit it consumes failed or was skipped.
    DependencyFailed(String),
    /// The build stopped after a failure (no `--keep-going`).
    Stopped,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::Cached => f.write_str("cached"),
            SkipReason::DependencyFailed(d) => write!(f, "dependency {d} did not build"),
            SkipReason::Stopped => f.write_str("not started: an earlier unit failed"),
        }
    }
}

/// Progress of a build, in the order things happen.
#[derive(Debug, Clone)]
pub enum Event {
    /// The plan: units that will build, in a valid order.
    Planned {
        units: Vec<String>,
    },
    Started {
        unit: String,
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
}

/// How a build ended.
#[derive(Debug, Default)]
pub struct Summary {
    pub built: usize,
    pub cached: usize,
    pub failed: usize,
    pub skipped: usize,
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
}

/// A package's build arguments and labels, computed once per package.
type ArgsAndLabels = (BTreeMap<String, String>, BTreeMap<String, String>);

struct Unit {
    node: NodeIndex,
    package: usize,
    platform: Platform,
    name: String,
    deps: Vec<NodeIndex>,
}

fn oci_platform(p: &Platform) -> OciPlatform {
    OciPlatform {
        architecture: p.arch.clone(),
        os: p.os.clone(),
        ..Default::default()
    }
}

/// Builds every unit of `graph` that needs it.
pub async fn build(
    graph: Arc<BuildGraph>,
    workspace: Option<&Workspace>,
    store: Arc<Store>,
    options: &BuildOptions,
    base: &std::path::Path,
    events: Arc<dyn Fn(Event) + Send + Sync>,
) -> Result<Summary, BuildError> {
    let mut summary = Summary::default();
    let units: Vec<Unit> = graph
        .build_order()
        .into_iter()
        .filter_map(|node| match &graph.graph[node] {
            Node::Unit { package, platform } => Some(Unit {
                node,
                package: *package,
                platform: platform.clone(),
                name: graph.node_name(node, base),
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

    // Plan: what is cached is done; the rest builds.
    let mut done: HashMap<NodeIndex, Option<Descriptor>> = HashMap::new();
    let mut to_build = Vec::new();
    for unit in &units {
        let package = &graph.packages[unit.package].package;
        let name =
            lkpkg_cache_format::reference::per_arch(&package.tag.full_tag(), &unit.platform.arch);
        let cached = if options.force {
            None
        } else {
            cached_entry(&store, &name)?
        };
        match cached {
            Some(descriptor) => {
                summary.cached += 1;
                events(Event::Skipped {
                    unit: unit.name.clone(),
                    reason: SkipReason::Cached,
                });
                done.insert(unit.node, Some(descriptor));
            }
            None => to_build.push(unit),
        }
    }
    events(Event::Planned {
        units: to_build.iter().map(|u| u.name.clone()).collect(),
    });
    if options.dry_run || to_build.is_empty() {
        return Ok(summary);
    }

    let engine = Arc::new(Engine::connect_default().await?);
    let jobs = options.jobs.max(1);
    let semaphore = Arc::new(Semaphore::new(jobs));
    let loaded: Arc<Mutex<HashSet<String>>> = Arc::new(Mutex::new(HashSet::new()));
    let static_args: HashMap<usize, ArgsAndLabels> = to_build
        .iter()
        .map(|u| u.package)
        .collect::<HashSet<_>>()
        .into_iter()
        .map(|p| {
            let gp = &graph.packages[p];
            (
                p,
                (
                    context::build_args(gp, workspace),
                    context::labels(gp, workspace),
                ),
            )
        })
        .collect();
    let static_args = Arc::new(static_args);

    let mut pending: Vec<&Unit> = to_build;
    let mut running = tokio::task::JoinSet::new();
    let mut stopped = false;
    loop {
        // Start every ready unit; skip those whose dependencies failed.
        let mut i = 0;
        while i < pending.len() {
            let unit = pending[i];
            let failed_dep = unit.deps.iter().find(|d| matches!(done.get(d), Some(None)));
            if let Some(dep) = failed_dep {
                summary.skipped += 1;
                events(Event::Skipped {
                    unit: unit.name.clone(),
                    reason: SkipReason::DependencyFailed(graph.node_name(*dep, base)),
                });
                done.insert(unit.node, None);
                pending.remove(i);
                continue;
            }
            if stopped || !unit.deps.iter().all(|d| done.contains_key(d)) {
                i += 1;
                continue;
            }
            pending.remove(i);
            let task = UnitTask {
                graph: graph.clone(),
                store: store.clone(),
                engine: engine.clone(),
                loaded: loaded.clone(),
                args: static_args.clone(),
                events: events.clone(),
                options: options.clone(),
                package: unit.package,
                platform: unit.platform.clone(),
                name: unit.name.clone(),
            };
            let permit = semaphore.clone();
            let node = unit.node;
            running.spawn(async move {
                let _permit = permit.acquire_owned().await;
                (node, task.run().await)
            });
        }
        let Some(joined) = running.join_next().await else {
            break;
        };
        let (node, result) = joined.map_err(|e| {
            BuildError::Package(crate::error::Error::Usage(format!(
                "a build task panicked: {e}"
            )))
        })?;
        match result {
            Ok(descriptor) => {
                summary.built += 1;
                done.insert(node, Some(descriptor));
                write_index_if_complete(&graph, &units, &done, node, &store, &events).await?;
            }
            Err(_) => {
                summary.failed += 1;
                done.insert(node, None);
                if !options.keep_going {
                    stopped = true;
                }
            }
        }
    }
    for unit in pending {
        summary.skipped += 1;
        events(Event::Skipped {
            unit: unit.name.clone(),
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
    let closure = store.closure(&descriptor);
    Ok(closure.missing.is_empty().then_some(descriptor))
}

/// Writes a package's multi-arch index once none of its units is still to be built.
async fn write_index_if_complete(
    graph: &Arc<BuildGraph>,
    units: &[Unit],
    done: &HashMap<NodeIndex, Option<Descriptor>>,
    node: NodeIndex,
    store: &Arc<Store>,
    events: &Arc<dyn Fn(Event) + Send + Sync>,
) -> Result<(), BuildError> {
    let Some(package) = units.iter().find(|u| u.node == node).map(|u| u.package) else {
        return Ok(());
    };
    let mine: Vec<&Unit> = units.iter().filter(|u| u.package == package).collect();
    if !mine.iter().all(|u| done.contains_key(&u.node)) {
        return Ok(());
    }
    let manifests: Vec<Descriptor> = mine
        .iter()
        .filter_map(|u| done.get(&u.node).cloned().flatten())
        .collect();
    let name = graph.packages[package].package.tag.full_tag();
    let store = store.clone();
    let index_name = name.clone();
    let descriptor =
        tokio::task::spawn_blocking(move || store.merge_index(&index_name, &manifests))
            .await
            .map_err(|e| BuildError::Package(crate::error::Error::Usage(e.to_string())))??;
    events(Event::Indexed {
        package: graph.packages[package].package.tag.tag(),
        name,
        digest: descriptor.digest.to_string(),
    });
    Ok(())
}

struct UnitTask {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    engine: Arc<Engine>,
    loaded: Arc<Mutex<HashSet<String>>>,
    args: Arc<HashMap<usize, ArgsAndLabels>>,
    events: Arc<dyn Fn(Event) + Send + Sync>,
    options: BuildOptions,
    package: usize,
    platform: Platform,
    name: String,
}

impl UnitTask {
    async fn run(self) -> Result<Descriptor, ()> {
        let started = Instant::now();
        (self.events)(Event::Started {
            unit: self.name.clone(),
        });
        match self.build().await {
            Ok(descriptor) => {
                (self.events)(Event::Finished {
                    unit: self.name.clone(),
                    digest: descriptor.digest.to_string(),
                    duration: started.elapsed(),
                });
                Ok(descriptor)
            }
            Err((error, log_tail)) => {
                (self.events)(Event::Failed {
                    unit: self.name.clone(),
                    error,
                    log_tail,
                });
                Err(())
            }
        }
    }

    async fn build(&self) -> Result<Descriptor, (String, Vec<String>)> {
        let plain = |e: &dyn std::fmt::Display| (e.to_string(), Vec::new());
        let gp = &self.graph.packages[self.package];
        let package = &gp.package;
        let full = package.tag.full_tag();
        self.load_base_images().await.map_err(|e| plain(&e))?;

        let context = {
            let graph = self.graph.clone();
            let index = self.package;
            tokio::task::spawn_blocking(move || context::tar_context(&graph.packages[index]))
                .await
                .map_err(|e| plain(&e))?
                .map_err(|e| plain(&e))?
        };
        let dockerfile = gp
            .dockerfile_path
            .strip_prefix(&package.dir)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| package.yml.dockerfile.clone());
        let (args, labels) = self.args[&self.package].clone();
        let engine_name = format!("{}-{}", package.tag.tag(), self.platform.arch);
        let request = BuildRequest {
            context,
            dockerfile,
            tag: engine_name.clone(),
            platform: self.platform.to_string(),
            args,
            labels,
            network: self.options.network.unwrap_or(package.yml.network),
            no_cache: self
                .options
                .disable_cache
                .unwrap_or(package.yml.disable_cache),
        };
        let events = self.events.clone();
        let unit = self.name.clone();
        self.engine
            .build(request, |line| {
                events(Event::Log {
                    unit: unit.clone(),
                    line: line.to_owned(),
                })
            })
            .await
            .map_err(|e| match e {
                EngineError::BuildFailed { message, log_tail } => (
                    format!("build of {} failed: {message}", self.name),
                    log_tail,
                ),
                other => plain(&other),
            })?;
        let saved = self
            .engine
            .save(&engine_name)
            .await
            .map_err(|e| plain(&e))?;
        let store = self.store.clone();
        let platform = oci_platform(&self.platform);
        let name = full.clone();
        let descriptor = tokio::task::spawn_blocking(move || {
            store.ingest_docker_save(std::io::Cursor::new(saved), &name, Some(&platform))
        })
        .await
        .map_err(|e| plain(&e))?
        .map_err(|e| plain(&e))?;
        if self.options.docker && docker::goarch(&self.engine.arch) == self.platform.arch {
            self.engine
                .tag(&engine_name, &package.tag.tag())
                .await
                .map_err(|e| plain(&e))?;
        }
        Ok(descriptor)
    }

    /// Loads into the engine the images this unit builds from that are in the lkpkg cache but
    /// not in the engine.
    async fn load_base_images(&self) -> Result<(), BuildError> {
        let gp = &self.graph.packages[self.package];
        for image in &gp.dockerfile.images {
            let full = lkpkg_cache_format::reference::expand(&image.reference);
            let key = format!("{full}@{}", self.platform);
            let mut loaded = self.loaded.lock().await;
            if loaded.contains(&key) {
                continue;
            }
            let per_arch = lkpkg_cache_format::reference::per_arch(&full, &self.platform.arch);
            let in_cache =
                self.store.lookup(&full)?.is_some() || self.store.lookup(&per_arch)?.is_some();
            if !in_cache {
                continue; // the engine pulls it, or has it
            }
            // The cache is the truth: the engine's copy of that name may be an older build.
            let source = if self.store.lookup(&full)?.is_some() {
                full.clone()
            } else {
                per_arch
            };
            let store = self.store.clone();
            let platform = oci_platform(&self.platform);
            let written = image.reference.clone();
            let tar = tokio::task::spawn_blocking(move || {
                let mut out = Vec::new();
                store
                    .export(
                        &source,
                        crate::store::export::ExportFormat::Docker,
                        &platform,
                        Some(&written),
                        &mut out,
                    )
                    .map(|()| out)
            })
            .await
            .map_err(|e| BuildError::Package(crate::error::Error::Usage(e.to_string())))??;
            self.engine.load(tar).await?;
            loaded.insert(key);
        }
        Ok(())
    }
}
