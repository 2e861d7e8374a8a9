//! The scheduler's loop: decides units as their dependencies finish, hands a package's ready
//! units to the builders as one group under the `--jobs` permits, skips what cannot run, and
//! counts the outcomes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;
use tokio::sync::Semaphore;

use super::decide::{Decision, decide};
use super::index::finish_package;
use super::task::{Outcome, UnitFailure, UnitTask, run_group};
use super::{
    Backends, BuildError, BuildOptions, BuildReason, Event, Freshness, Shared, SkipReason, Summary,
    UnitOutcome, inputs, internal, plan_units,
};
use crate::graph::BuildGraph;
use crate::store::Store;
use crate::workspace::Workspaces;

/// Builds every unit of `graph` that needs it.
pub(crate) async fn build(
    graph: Arc<BuildGraph>,
    workspaces: &Workspaces,
    store: Arc<Store>,
    backends: Backends,
    options: &BuildOptions,
    base: &Path,
    events: Arc<dyn Fn(Event) + Send + Sync>,
) -> Result<Summary, BuildError> {
    let (units, by_node, args) = plan_units(&graph, workspaces, base, &options.proxies);
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
    // Groups decided to build, waiting for permits (see below).
    let mut queued: std::collections::VecDeque<Vec<(NodeIndex, UnitTask)>> = Default::default();
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
        queued.extend(ready.into_values());
        // `-j` bounds the units in flight, and so the tasks: a group starts when it gets a
        // permit per unit (at most all of them); the others wait here, not as tasks. After a
        // failure (without `--keep-going`) nothing new starts.
        if stopped {
            for group in queued.drain(..) {
                for (_, task) in group {
                    summary.skipped += 1;
                    events(Event::Skipped {
                        unit: task.name.clone(),
                        reason: SkipReason::Stopped,
                    });
                }
            }
        }
        while let Some(group) = queued.front() {
            let permits = group.len().min(jobs) as u32;
            let Ok(permits) = semaphore.clone().try_acquire_many_owned(permits) else {
                break;
            };
            let group = queued.pop_front().expect("a front");
            running.spawn(async move {
                let _permits = permits;
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
