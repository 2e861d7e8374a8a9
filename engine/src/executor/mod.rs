//! The executor: builds units through BuildKit, for the scheduler
//! ([`crate::schedule::Executor`]).
//!
//! The scheduler hands over the units of one package that are ready at once; those whose
//! platforms share a builder are built in **one solve** of several platforms (BuildKit shares
//! the context transfer, `FROM --platform=$BUILDPLATFORM` stages and the export between them,
//! and each platform's manifest is byte for byte what a solve of that platform alone gives, so
//! build records do not depend on how units were grouped). Two kinds of package get a solve
//! per platform: one with `depends.docker-images` archives (its context differs per
//! platform), and one whose last stage has no `RUN`, `COPY` or `ADD`: such an image may have
//! no layer at all, and the `oci` exporter of BuildKit before 0.23 (Docker 26's, for one)
//! dereferences that empty result of a multi-platform solve and crashes, taking the engine's
//! dockerd with it (fixed upstream by "exporter: fix oci export of multi-platform nil result").
//!
//! For a unit it chooses the platform's builder ([`builders`]: `--builders` >
//! `LINUXKIT_BUILDERS` > context `linuxkit-<os>-<arch>` > default context), decides once per
//! engine which BuildKit builds there (the engine's own when it can export images,
//! [`docker::Engine::check_buildkit`]; else linuxkit's builder container, [`container`]), assembles the
//! context (`context`: the package, its extra sources, its `depends.docker-images`
//! archives), turns the unit into a solve (`solve`: attributes, named contexts from the cache,
//! reproducible outputs) and runs it with `buildkit::build_images`, which ingests the
//! result into the cache. `--docker` loads an image from the cache into the default engine.

pub(crate) mod builders;
pub(crate) mod container;
pub(crate) mod context;
pub(crate) mod docker;
pub(crate) mod solve;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use lkpkg_cache_format::layout::{Descriptor, Platform as OciPlatform};

use crate::build_yml::DependsTarget;
use crate::buildkit::Target;
use crate::graph::{BuildGraph, Platform};
use crate::schedule::{BoxFuture, BuildError, ExecError, Executor, Job};
use crate::store::Store;
use builders::{Builder, Builders};
use container::{BuilderMode, ContainerSpec};
use docker::EngineError;

/// Lines of a failed build's log kept for its error report.
const LOG_TAIL: usize = 20;

/// The BuildKit executor; see the module docs.
#[derive(Debug)]
pub(crate) struct BuildkitExecutor {
    graph: Arc<BuildGraph>,
    store: Arc<Store>,
    builders: Arc<Builders>,
    /// The time stamped into outputs (see [`crate::schedule::BuildOptions::epoch`]).
    epoch: i64,
    /// `--ssh`: agent sockets by id.
    ssh: BTreeMap<String, PathBuf>,
    /// Registry credentials the builder is given for its pulls of base images.
    credentials: Option<Arc<crate::registry::Credentials>>,
    /// `--builder-mode` and the builder container wanted.
    mode: BuilderMode,
    container: ContainerSpec,
    /// Which BuildKit each engine builds with, decided once per engine.
    targets: tokio::sync::Mutex<HashMap<String, Target>>,
}

impl BuildkitExecutor {
    pub(crate) fn new(
        graph: Arc<BuildGraph>,
        store: Arc<Store>,
        builders: Arc<Builders>,
        epoch: i64,
        ssh: BTreeMap<String, PathBuf>,
    ) -> BuildkitExecutor {
        BuildkitExecutor {
            graph,
            store,
            builders,
            epoch,
            ssh,
            credentials: None,
            mode: BuilderMode::Auto,
            container: ContainerSpec::default(),
            targets: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// With the registry credentials the builder asks for when it pulls base images.
    pub(crate) fn with_credentials(
        mut self,
        credentials: Arc<crate::registry::Credentials>,
    ) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// With `--builder-mode` and the builder container's settings.
    pub(crate) fn with_builder_mode(mut self, mode: BuilderMode, container: ContainerSpec) -> Self {
        self.mode = mode;
        self.container = container;
        self
    }

    /// Which BuildKit builds on `builder`'s engine (see [`container`]): decided once per
    /// engine, with the container made ready at most once.
    async fn target(&self, builder: &Builder) -> Result<Target, EngineError> {
        let engine = &builder.engine;
        let mut targets = self.targets.lock().await;
        if let Some(target) = targets.get(engine.endpoint()) {
            return Ok(target.clone());
        }
        let in_container = |name: String| async move {
            crate::buildkit::hijack::wait_ready(engine.client(), &name, engine.endpoint()).await?;
            Ok::<_, EngineError>(Target::Container {
                docker: engine.client().clone(),
                container: name,
                endpoint: engine.endpoint().to_owned(),
            })
        };
        let target = match self.mode {
            BuilderMode::Engine => {
                engine.check_buildkit().await?;
                Target::Engine(engine.target().clone())
            }
            BuilderMode::Container => {
                in_container(container::ensure(engine, &self.container).await?).await?
            }
            BuilderMode::Auto => match engine.check_buildkit().await {
                Ok(()) => Target::Engine(engine.target().clone()),
                Err(own) => match container::inspect(engine, &self.container).await? {
                    Some(None) => in_container(self.container.name.clone()).await?,
                    _ => {
                        return Err(EngineError::NoBuildKit {
                            endpoint: engine.endpoint().to_owned(),
                            message: format!(
                                "{}; or pass `--builder-mode container` to let lkpkg create \
                                 linuxkit's privileged `{}` container from `{}`",
                                own.message(),
                                self.container.name,
                                self.container.image
                            ),
                        });
                    }
                },
            },
        };
        targets.insert(engine.endpoint().to_owned(), target.clone());
        Ok(target)
    }

    /// Builds units of one package: those whose platforms share a builder in one solve
    /// (BuildKit builds the platforms side by side and shares what they have in common: the
    /// context, `FROM --platform=$BUILDPLATFORM` stages, the export). A package with
    /// `depends.docker-images` archives gets a solve per platform, since its context differs
    /// per platform, and so does one whose last stage writes no file (it may be a
    /// metadata-only image, which crashes the `oci` exporter of BuildKit before 0.23 in a
    /// multi-platform solve: see [`crate::dockerfile::Dockerfile::final_stage_writes`]).
    /// Results are in the order of `jobs`.
    async fn build_units(&self, jobs: Vec<Job<'_>>) -> Vec<Result<Descriptor, ExecError>> {
        let together = jobs.first().is_some_and(|job| {
            let gp = &self.graph.packages[job.package];
            gp.package.yml.depends.target.is_none() && gp.dockerfile.final_stage_writes
        });
        let mut results: Vec<Option<Result<Descriptor, ExecError>>> =
            jobs.iter().map(|_| None).collect();
        // Per builder, the jobs it builds in one solve (with their places in `jobs`).
        type Group<'j> = (Arc<Builder>, Vec<(usize, Job<'j>)>);
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (i, job) in jobs.into_iter().enumerate() {
            let builder = match self.builders.for_platform(job.platform).await {
                Ok(builder) => builder,
                Err(e) => {
                    results[i] = Some(Err(ExecError::Environment(e)));
                    continue;
                }
            };
            let endpoint = builder.engine.endpoint().to_owned();
            match groups
                .iter_mut()
                .find(|(b, _)| together && b.engine.endpoint() == endpoint)
            {
                Some((_, group)) => group.push((i, job)),
                None => groups.push((builder, vec![(i, job)])),
            }
        }
        let built =
            futures_util::future::join_all(groups.into_iter().map(|(builder, group)| async move {
                let (indexes, jobs): (Vec<usize>, Vec<Job<'_>>) = group.into_iter().unzip();
                indexes
                    .into_iter()
                    .zip(self.build_group(&builder, jobs).await)
                    .collect::<Vec<_>>()
            }))
            .await;
        for (i, result) in built.into_iter().flatten() {
            results[i] = Some(result);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ExecError::Environment(internal_error()))))
            .collect()
    }

    /// One solve for `jobs` (units of one package, platforms of one builder).
    #[tracing::instrument(level = "debug", skip_all, fields(
        endpoint = %builder.engine.endpoint(),
        units = ?jobs.iter().map(|j| j.unit).collect::<Vec<_>>(),
    ))]
    async fn build_group(
        &self,
        builder: &Builder,
        jobs: Vec<Job<'_>>,
    ) -> Vec<Result<Descriptor, ExecError>> {
        let _limit = builder.limit.clone().acquire_owned().await;
        // An engine with no BuildKit lkpkg can use fails every unit sent to it: the build
        // stops with what to enable.
        let target = match self.target(builder).await {
            Ok(target) => target,
            Err(e) => {
                return jobs
                    .iter()
                    .map(|_| Err(ExecError::Environment(e.clone())))
                    .collect();
            }
        };
        for job in &jobs {
            (job.started)(builder.engine.endpoint());
        }
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        match self
            .solve_group(&jobs, builder, &target, tail.clone())
            .await
        {
            Ok(descriptors) => descriptors.into_iter().map(Ok).collect(),
            Err(failure) => {
                let others = |unit: &str| -> String {
                    let others: Vec<&str> =
                        jobs.iter().map(|j| j.unit).filter(|u| *u != unit).collect();
                    if others.is_empty() {
                        String::new()
                    } else {
                        format!(" (in one solve with {})", others.join(", "))
                    }
                };
                let log_tail = tail.lock().map(|t| t.clone()).unwrap_or_default();
                jobs.iter()
                    .map(|job| {
                        Err(match &failure {
                            UnitFailure::Environment(e) => ExecError::Environment(e.clone()),
                            UnitFailure::Build(message) => ExecError::Failed {
                                message: format!(
                                    "build of {}{} failed: {message}",
                                    job.unit,
                                    others(job.unit)
                                ),
                                log_tail: log_tail.clone(),
                            },
                        })
                    })
                    .collect()
            }
        }
    }

    async fn solve_group(
        &self,
        jobs: &[Job<'_>],
        builder: &Builder,
        target: &Target,
        tail: Arc<Mutex<Vec<String>>>,
    ) -> Result<Vec<Descriptor>, UnitFailure> {
        let text = |e: &dyn std::fmt::Display| UnitFailure::Build(e.to_string());
        let job = &jobs[0];
        let platforms: Vec<Platform> = jobs.iter().map(|j| j.platform.clone()).collect();
        let gp = &self.graph.packages[job.package];
        let package = &gp.package;
        // (Only a package without `depends.docker-images` archives builds several platforms in
        // one solve, see `build_units`.)
        let generated = self
            .depends_archives(job.package, job.platform, builder)
            .await
            .map_err(|e| text(&e))?;
        let (context, (dockerfile, filename)) = {
            let graph = self.graph.clone();
            let index = job.package;
            tokio::task::spawn_blocking(move || {
                let gp = &graph.packages[index];
                Ok::<_, crate::error::Error>((
                    context::context_tree(gp, generated)?,
                    context::dockerfile_tree(&gp.dockerfile_path)?,
                ))
            })
            .await
            .map_err(|e| text(&e))?
            .map_err(|e| text(&e))?
        };
        // `--ignore-cached`: only the build's own packages come from the cache.
        let images: Vec<_> = if job.ignore_cached {
            gp.dockerfile
                .images
                .iter()
                .filter(|image| {
                    let full = lkpkg_cache_format::reference::expand(&image.reference);
                    self.graph
                        .packages
                        .iter()
                        .any(|p| p.package.tag.full_tag() == full)
                })
                .cloned()
                .collect()
        } else {
            gp.dockerfile.images.clone()
        };
        let mut named = solve::NamedContexts::of(&self.store, &images).map_err(|e| text(&e))?;
        // The base images' blobs stay in the cache while the builder may read them, whatever
        // `cache rm`, `gc` or `clean` do meanwhile (the pins go when `reading` is dropped).
        let mut reading = self.store.ingest();
        for (image, digests) in std::mem::take(&mut named.reads) {
            reading.pin_present(&image, digests).map_err(|e| {
                text(&format!(
                    "the cache lost `{image}` before the build could read it \
                     (`cache rm`, `gc` or `clean` ran meanwhile?): {e}"
                ))
            })?;
        }
        let units: Vec<&str> = jobs.iter().map(|j| j.unit).collect();
        let spec = solve::solve_for(solve::UnitSolve {
            unit: &units.join(", "),
            shared_key: &package.dir.display().to_string(),
            platforms: &platforms,
            context,
            dockerfile,
            filename,
            args: job.args,
            labels: job.labels,
            epoch: self.epoch,
            network: job.network,
            no_cache: job.no_cache,
            named,
            cache_root: self.store.root(),
            ssh: self.ssh.clone(),
            auth: crate::buildkit::auth::RegistryAuth(self.credentials.clone()),
        });
        // Each line goes to the unit of its step's platform; lines of no platform (the
        // context, the export) to the first unit.
        type UnitLog = (String, Arc<dyn Fn(String) + Send + Sync>);
        let logs: Vec<UnitLog> = jobs
            .iter()
            .map(|j| (j.platform.to_string(), j.log.clone()))
            .collect();
        let progress = Arc::new(move |line: crate::buildkit::ProgressLine| {
            if let Ok(mut tail) = tail.lock() {
                tail.push(line.text.clone());
                if tail.len() > LOG_TAIL {
                    tail.remove(0);
                }
            }
            let log = line
                .platform
                .as_deref()
                .and_then(|step| logs.iter().find(|(unit, _)| same_platform(step, unit)))
                .unwrap_or(&logs[0]);
            (log.1)(line.text)
        });
        let oci_platforms: Vec<OciPlatform> = platforms.iter().map(oci_platform).collect();
        let built = crate::buildkit::build_images(
            target,
            spec,
            self.store.clone(),
            &package.tag.full_tag(),
            &oci_platforms,
            progress,
        )
        .await
        .map_err(|e| match e {
            // The builder itself failed (its BuildKit, its session): not the package's fault.
            crate::buildkit::ImageBuildError::Solve(crate::buildkit::SolveError::Engine(e)) => {
                UnitFailure::Environment(e)
            }
            other => UnitFailure::Build(solve::explain_failure(&other, &gp.dockerfile.syntax)),
        });
        drop(reading);
        built
    }

    /// The `depends.docker-images` archives, at their paths in the context: each image from
    /// the lkpkg cache when it is there (by digest), else saved from the builder's engine.
    async fn depends_archives(
        &self,
        package: usize,
        platform: &Platform,
        builder: &Builder,
    ) -> Result<Vec<(String, Vec<u8>)>, BuildError> {
        let package = &self.graph.packages[package].package;
        let depends = &package.yml.depends;
        let Some(target) = &depends.target else {
            return Ok(Vec::new());
        };
        let mut archives = Vec::new();
        for image in &depends.images {
            let full = lkpkg_cache_format::reference::expand(&image.locator);
            let by_digest = format!("{full}@{}", image.digest);
            let (name, tag) = lkpkg_cache_format::reference::split_tag(
                image.reference.split('@').next().unwrap_or_default(),
            );
            let archive_name = match tag {
                Some(tag) => format!("{name}:{tag}"),
                None => name.to_owned(),
            };
            let archive = match self.store.resolve(&by_digest) {
                Ok((stored, _)) => {
                    export_docker(&self.store, &stored, platform, &archive_name).await?
                }
                Err(_) => builder.engine.save(&image.reference).await?,
            };
            let basename = image.locator.rsplit('/').next().unwrap_or(&image.locator);
            archives.push((format!("{basename}@{}.tar", image.digest), archive));
        }
        Ok(match target {
            DependsTarget::Dir(dir) => archives
                .into_iter()
                .map(|(file, bytes)| (dir.join(file).to_string_lossy().into_owned(), bytes))
                .collect(),
            DependsTarget::File(file) => {
                let all: Vec<Vec<u8>> = archives.into_iter().map(|(_, b)| b).collect();
                vec![(
                    file.to_string_lossy().into_owned(),
                    context::merge_docker_archives(&all)?,
                )]
            }
        })
    }

    /// `--docker`: loads the host-architecture image from the cache into the default engine as
    /// `org/image:tag`.
    async fn load_host_image(&self, package: usize) -> Result<(), BuildError> {
        let gp = &self.graph.packages[package];
        let host = Platform::linux(docker::goarch(std::env::consts::ARCH));
        if !gp.platforms.contains(&host) {
            return Ok(()); // linuxkit skips the host tag when the host arch was not built
        }
        let builder = self.builders.for_platform(&host).await?;
        let tar = export_docker(
            &self.store,
            &gp.package.tag.full_tag(),
            &host,
            &gp.package.tag.tag(),
        )
        .await?;
        builder.engine.load(tar).await?;
        Ok(())
    }
}

impl Executor for BuildkitExecutor {
    fn build<'a>(&'a self, job: Job<'a>) -> BoxFuture<'a, Result<Descriptor, ExecError>> {
        Box::pin(async move {
            self.build_units(vec![job])
                .await
                .pop()
                .unwrap_or_else(|| Err(ExecError::Environment(internal_error())))
        })
    }

    fn build_together<'a>(
        &'a self,
        jobs: Vec<Job<'a>>,
    ) -> BoxFuture<'a, Vec<Result<Descriptor, ExecError>>> {
        Box::pin(self.build_units(jobs))
    }

    fn load_into_engine(&self, package: usize) -> BoxFuture<'_, Result<(), BuildError>> {
        Box::pin(self.load_host_image(package))
    }
}

/// How one unit's solve failed.
enum UnitFailure {
    /// The builder (its BuildKit, the session) failed: the build stops.
    Environment(EngineError),
    /// The build failed, as BuildKit said.
    Build(String),
}

/// Whether a step's platform as BuildKit names it (`linux/arm64`, `linux/arm64/v8`) is the
/// unit's (`linux/arm64`).
fn same_platform(step: &str, unit: &str) -> bool {
    step.strip_prefix(unit)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A job left without a result: cannot happen (every job is given one), reported as an
/// environment failure rather than a panic.
fn internal_error() -> EngineError {
    EngineError::BadBuilder {
        message: "internal error: a unit was given no builder (please report this bug)".into(),
    }
}

/// A docker archive of `source`'s image for `platform`, named `name`, from the cache.
async fn export_docker(
    store: &Arc<Store>,
    source: &str,
    platform: &Platform,
    name: &str,
) -> Result<Vec<u8>, BuildError> {
    let store = store.clone();
    let source = source.to_owned();
    let name = name.to_owned();
    let platform = oci_platform(platform);
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        store
            .export(
                &source,
                crate::store::export::ExportFormat::Docker,
                &platform,
                Some(&name),
                &mut out,
            )
            .map(|()| out)
    })
    .await
    .map_err(|e| BuildError::Internal(e.to_string()))?
    .map_err(BuildError::from)
}

pub(crate) fn oci_platform(p: &Platform) -> OciPlatform {
    OciPlatform {
        architecture: p.arch.clone(),
        os: p.os.clone(),
        ..Default::default()
    }
}
