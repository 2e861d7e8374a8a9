//! The executor: builds one unit at a time through BuildKit, for the scheduler
//! ([`crate::schedule::Executor`]).
//!
//! For a unit it chooses the platform's builder ([`builders`]: `--builders` >
//! `LINUXKIT_BUILDERS` > context `linuxkit-<os>-<arch>` > default context), decides once per
//! engine which BuildKit builds there (the engine's own when it can export images,
//! [`docker::Engine::check_buildkit`]; else linuxkit's builder container, [`container`]), assembles the
//! context ([`context`]: the package, its extra sources, its `depends.docker-images`
//! archives), turns the unit into a solve ([`solve`]: attributes, named contexts from the cache,
//! reproducible outputs) and runs it with [`crate::buildkit::build_image`], which ingests the
//! result into the cache. `--docker` loads an image from the cache into the default engine.

pub mod builders;
pub mod container;
pub(crate) mod context;
pub mod docker;
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
pub struct BuildkitExecutor {
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
    pub fn new(
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
    pub fn with_credentials(mut self, credentials: Arc<crate::registry::Credentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// With `--builder-mode` and the builder container's settings.
    pub fn with_builder_mode(mut self, mode: BuilderMode, container: ContainerSpec) -> Self {
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

    async fn build_unit(&self, job: Job<'_>) -> Result<Descriptor, ExecError> {
        let builder = self
            .builders
            .for_platform(job.platform)
            .await
            .map_err(ExecError::Environment)?;
        let _limit = builder.limit.clone().acquire_owned().await;
        // An engine with no BuildKit lkpkg can use fails every unit sent to it: the build
        // stops with what to enable.
        let target = self
            .target(&builder)
            .await
            .map_err(ExecError::Environment)?;
        (job.started)(builder.engine.endpoint());
        let tail = Arc::new(Mutex::new(Vec::<String>::new()));
        let result = self.solve_unit(&job, &builder, &target, tail.clone()).await;
        result.map_err(|failure| match failure {
            UnitFailure::Environment(e) => ExecError::Environment(e),
            UnitFailure::Build(message) => ExecError::Failed {
                message: format!("build of {} failed: {message}", job.unit),
                log_tail: tail.lock().map(|t| t.clone()).unwrap_or_default(),
            },
        })
    }

    async fn solve_unit(
        &self,
        job: &Job<'_>,
        builder: &Builder,
        target: &Target,
        tail: Arc<Mutex<Vec<String>>>,
    ) -> Result<Descriptor, UnitFailure> {
        let text = |e: &dyn std::fmt::Display| UnitFailure::Build(e.to_string());
        let gp = &self.graph.packages[job.package];
        let package = &gp.package;
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
        let named = solve::NamedContexts::of(&self.store, &images).map_err(|e| text(&e))?;
        let spec = solve::solve_for(solve::UnitSolve {
            unit: job.unit,
            shared_key: &package.dir.display().to_string(),
            platform: job.platform,
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
        let log = job.log.clone();
        let progress = Arc::new(move |line: crate::buildkit::ProgressLine| {
            if let Ok(mut tail) = tail.lock() {
                tail.push(line.text.clone());
                if tail.len() > LOG_TAIL {
                    tail.remove(0);
                }
            }
            log(line.text)
        });
        crate::buildkit::build_image(
            target,
            spec,
            self.store.clone(),
            &package.tag.full_tag(),
            &oci_platform(job.platform),
            progress,
        )
        .await
        .map_err(|e| match e {
            // The builder itself failed (its BuildKit, its session): not the package's fault.
            crate::buildkit::ImageBuildError::Solve(crate::buildkit::SolveError::Engine(e)) => {
                UnitFailure::Environment(e)
            }
            other => UnitFailure::Build(solve::explain_failure(&other, &gp.dockerfile.syntax)),
        })
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
        Box::pin(self.build_unit(job))
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
