//! A unit to build as a task: claimed in the cache, looked up in the registry, handed to the
//! executor with its package's other ready units, and recorded; and how it got its image.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use lkpkg_cache_format::build_record::BuildRecord;
use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;

use super::decide::present;
use super::{
    BuildError, BuildReason, Event, ExecError, Freshness, Job, Pulled, RemoteAsk, Shared, internal,
};
use crate::executor::docker::EngineError;
use crate::fingerprint::Inputs;
use crate::graph::Platform;
use crate::store::UnitClaim;

/// How a unit task got its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
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
    pub(super) fn shares_record(self) -> bool {
        !matches!(self, Outcome::PulledByTag | Outcome::BuiltUnreproducible)
    }
}

pub(super) struct UnitTask {
    pub(super) by_tag: bool,
    pub(super) shared: Arc<Shared>,
    pub(super) package: usize,
    pub(super) platform: Platform,
    pub(super) name: String,
    pub(super) id: String,
    pub(super) reason: BuildReason,
    pub(super) inputs: Inputs,
    pub(super) key: [u8; 32],
    pub(super) files: BTreeMap<String, String>,
}

/// How a unit task ended badly.
pub(super) enum UnitFailure {
    /// The unit failed (reported as an event); others may go on.
    Failed,
    /// Its builder cannot be reached or chosen: the whole build stops (exit code 3 or 2).
    Environment(EngineError),
}

/// What a unit's result is once it is settled.
pub(super) type UnitResult = Result<(Descriptor, Outcome, [u8; 32]), UnitFailure>;

/// When and where a unit's build started (set by [`Job::started`]).
type StartedAt = std::sync::Mutex<Option<(Instant, SystemTime, String)>>;

/// Builds the units of one package decided in one pass (see [`Executor::build_together`]):
/// each is claimed and looked up first (another process may have built it, a registry may
/// have it), in the order of the group, which every process shares, so that two processes
/// never wait on each other's claims; what is left is handed to the executor at once.
///
/// [`Executor::build_together`]: super::Executor::build_together
pub(super) async fn run_group(group: Vec<(NodeIndex, UnitTask)>) -> Vec<(NodeIndex, UnitResult)> {
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
