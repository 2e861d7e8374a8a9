//! `pkg build`: the plan's units decided, built on the builders (or found in a registry), and
//! ingested into the cache.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::plan::RunOptions;
use super::{Environment, OpError, Plan, Reporter};
use crate::executor::BuildkitExecutor;
use crate::executor::builders::{BuilderSpec, Builders};
use crate::executor::container::{BuilderMode, ContainerSpec};
use crate::registry::Registry;
use crate::schedule::{self, BuildError, Summary};
use crate::store::Store;

/// Which BuildKit builds each platform.
#[derive(Debug, Clone, Default)]
pub struct BuilderChoice {
    /// `--builders` (`platform=context,…`); `LINUXKIT_BUILDERS` when not given.
    pub builders: Option<String>,
    /// `--builder-mode`: the engines' own BuildKit, or linuxkit's builder container.
    pub mode: BuilderMode,
    /// The builder container (`--builder-name`, `--builder-image`, …).
    pub container: ContainerSpec,
}

/// What a build run does beyond its [`Plan`]; nothing here changes a build key.
#[derive(Debug, Clone)]
pub struct BuildConfig {
    /// `--force`: build every unit of the plan.
    pub force: bool,
    /// `--jobs`: units built at once (and on one builder).
    pub jobs: usize,
    /// `--docker`: also load the host-architecture images into the default engine.
    pub docker: bool,
    /// `--dry-run`: decide, report what would build, build nothing.
    pub dry_run: bool,
    /// The time stamped into outputs: `SOURCE_DATE_EPOCH`, else 0; constant, not a commit
    /// time, so that an image is a function of its inputs (early cutoff can happen).
    pub epoch: i64,
    pub builders: BuilderChoice,
    /// Asked for units before they build (and the builder's pulls get its credentials).
    pub registry: Option<Arc<Registry>>,
    /// `--ssh`: agents by id, forwarded to `RUN --mount=type=ssh`.
    pub ssh_agents: BTreeMap<String, PathBuf>,
    /// `LINUXKIT_BUILDERS`, the docker CLI's configuration, the proxy variables.
    pub environment: Environment,
}

/// Builds what the plan needs, reporting each step; the summary counts every unit.
///
/// Named builders are checked before anything runs. Ctrl-C drops the build: running tasks
/// are aborted, which closes their connections to the engines, and BuildKit cancels those
/// solves; ingests already under way finish when the runtime shuts down, and the store is
/// crash-safe anyway. The result is then [`BuildError::Interrupted`].
#[tracing::instrument(level = "debug", skip_all, fields(jobs = config.jobs, dry_run = config.dry_run))]
pub fn build(
    plan: &Plan,
    store: Arc<Store>,
    config: BuildConfig,
    events: Reporter,
) -> Result<Summary, OpError> {
    let options = plan.build_options(RunOptions {
        force: config.force,
        jobs: config.jobs,
        docker: config.docker,
        dry_run: config.dry_run,
        epoch: config.epoch,
        proxies: config.environment.proxies.clone(),
    });
    let builders = Arc::new(Builders::new(
        BuilderSpec {
            builders: config.builders.builders,
            per_builder_limit: options.jobs,
        },
        config.environment.linuxkit_builders.as_deref(),
        config.environment.docker.clone(),
    ));
    builders.check()?;
    let graph = plan.shared_graph();
    let remote = config.registry.clone().map(|registry| {
        Arc::new(crate::remote::RegistryRemote::new(
            registry,
            store.clone(),
            graph.clone(),
        )) as Arc<dyn schedule::Remote>
    });
    let mut executor = BuildkitExecutor::new(
        graph.clone(),
        store.clone(),
        builders,
        options.epoch,
        config.ssh_agents,
    )
    .with_builder_mode(config.builders.mode, config.builders.container);
    // The builder's own pulls of base images get the same credentials (as linuxkit hands
    // `--registry-creds` and the docker config to its builder).
    if let Some(registry) = &config.registry {
        executor = executor.with_credentials(registry.credentials());
    }
    let executor = Arc::new(executor);
    let runtime = super::runtime(None)?;
    let summary = runtime.block_on(async {
        tokio::select! {
            summary = schedule::build(
                graph,
                plan.workspaces(),
                store,
                schedule::Backends { executor, remote },
                &options,
                plan.base(),
                events,
            ) => summary,
            _ = tokio::signal::ctrl_c() => {
                // A task waiting for the cache lock stops waiting.
                crate::store::interrupt_waits();
                Err(BuildError::Interrupted)
            }
        }
    });
    drop(runtime);
    Ok(summary?)
}
