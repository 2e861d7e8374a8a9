//! The plan every command that decides builds shares: which packages, read how, and the graph
//! over them with everything that changes a unit's build key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::graph::{BuildGraph, GraphOptions, Platform, PlatformFilter};
use crate::package::Loader;
use crate::schedule::BuildOptions;
use crate::tag::TagOptions;
use crate::workspace::Workspaces;

/// Which packages a command acts on, and how their tags are computed.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The current directory: discovery starts here, and names are shown relative to it.
    pub cwd: PathBuf,
    /// The package directories named; none means every package below `cwd`.
    pub dirs: Vec<PathBuf>,
    /// `--build-yml`: the name of each package's definition file.
    pub build_yml: String,
    /// `--org`, `--hash`, `--tag`, `--dev`, …
    pub tags: TagOptions,
    /// `--exclude` patterns (relative to `cwd`), beside the repository's `.lkpkgignore` files.
    pub exclude: Vec<String>,
}

/// The packages of a [`Selection`], found but not yet loaded.
pub struct Packages {
    loader: Loader,
    dirs: Vec<PathBuf>,
    cwd: PathBuf,
    /// No directory was named: the whole tree below `cwd`.
    whole_tree: bool,
}

impl Packages {
    /// Finds the packages: the directories named, or every package below the current one (at
    /// least one, or the selection is an error).
    #[tracing::instrument(name = "find_packages", level = "debug", skip_all, fields(cwd = %selection.cwd.display()))]
    pub fn find(selection: &Selection) -> Result<Packages, Error> {
        let loader = Loader::new(&selection.cwd, &selection.build_yml, selection.tags.clone())?;
        let whole_tree = selection.dirs.is_empty();
        let dirs = if whole_tree {
            let found = crate::discover::packages(
                &selection.cwd,
                &selection.build_yml,
                loader.workspaces(),
                &selection.exclude,
            )?;
            if found.is_empty() {
                return Err(Error::Usage(format!(
                    "no package (a directory with `{}`) below `{}`",
                    selection.build_yml,
                    selection.cwd.display()
                )));
            }
            found
        } else {
            selection.dirs.clone()
        };
        Ok(Packages {
            loader,
            dirs,
            cwd: selection.cwd.clone(),
            whole_tree,
        })
    }

    /// The canonical name (`docker.io/org/image:tag`) of the one package named.
    pub fn canonical_name_of_first(&self) -> Result<String, Error> {
        Ok(self.loader.load(&self.dirs[0])?.tag.full_tag())
    }
}

/// The tags of the packages (`org/image:tag`, or canonical names), one per package in
/// order. Over the whole tree every package that cannot be loaded is reported together (and
/// no tag returned); packages named on the command line stop at the first, as in linuxkit.
pub fn show_tags(packages: &Packages, canonical: bool) -> Result<Vec<String>, Error> {
    let mut tags = Vec::new();
    let mut failures = Vec::new();
    for dir in &packages.dirs {
        match packages.loader.load(dir) {
            Ok(package) => tags.push(if canonical {
                package.tag.full_tag()
            } else {
                package.tag.tag()
            }),
            Err(e) if packages.whole_tree => failures.push(e),
            Err(e) => return Err(e),
        }
    }
    if failures.is_empty() {
        Ok(tags)
    } else {
        Err(Error::Packages(failures))
    }
}

/// The command-line options that change a unit's build key beyond its package's files: every
/// command that decides or explains builds takes them through the [`Plan`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyOptions {
    /// `--network` / `--nonetwork` over build.yml's `network`.
    pub network: Option<bool>,
    /// `--disable-cache` / `--enable-cache` over build.yml's `disable-cache`.
    pub disable_cache: Option<bool>,
    /// `--ignore-cached`: base images from their registries, not the cache.
    pub ignore_cached: bool,
}

/// How the graph of a [`Plan`] is built.
#[derive(Debug, Clone, Default)]
pub struct PlanConfig {
    /// `--build-arg-file`s, in order (later files override earlier ones).
    pub arg_files: Vec<PathBuf>,
    /// `--platforms`: replaces the packages' arches.
    pub platforms: Option<Vec<Platform>>,
    /// `--skip-platforms` (Linux platforms only).
    pub skip_platforms: Vec<Platform>,
    /// `--dockerfile`, relative to each package.
    pub dockerfile: Option<String>,
    /// `--keep-going`: a package that cannot be loaded leaves the others in the graph.
    pub keep_going: bool,
    pub key: KeyOptions,
}

/// The packages, their graph and the options of their build keys.
pub struct Plan {
    packages: Packages,
    graph: Arc<BuildGraph>,
    key: KeyOptions,
    keep_going: bool,
}

impl Plan {
    /// Loads the packages and everything they reach, and builds the graph.
    #[tracing::instrument(name = "plan", level = "debug", skip_all, fields(packages = packages.dirs.len()))]
    pub fn new(packages: Packages, config: &PlanConfig) -> Result<Plan, Error> {
        if let Some(p) = config.skip_platforms.iter().find(|p| p.os != "linux") {
            return Err(Error::Usage(format!(
                "--skip-platforms accepts only linux/*, not `{p}`"
            )));
        }
        let mut arg_files = Vec::new();
        for file in &config.arg_files {
            arg_files.extend(crate::build_args::read_arg_file(file, &packages.loader)?);
        }
        let options = GraphOptions {
            platforms: PlatformFilter {
                platforms: config.platforms.clone(),
                skip: config.skip_platforms.clone(),
            },
            arg_files,
            dockerfile: config.dockerfile.clone(),
            keep_going: config.keep_going,
        };
        let graph = BuildGraph::build(&packages.loader, &packages.dirs, &options)?;
        Ok(Plan {
            packages,
            graph: Arc::new(graph),
            key: config.key,
            keep_going: config.keep_going,
        })
    }

    pub fn graph(&self) -> &BuildGraph {
        &self.graph
    }

    pub(crate) fn shared_graph(&self) -> Arc<BuildGraph> {
        self.graph.clone()
    }

    pub(crate) fn workspaces(&self) -> &Workspaces {
        self.packages.loader.workspaces()
    }

    /// The directory names are shown relative to (the current directory).
    pub fn base(&self) -> &Path {
        &self.packages.cwd
    }

    pub fn key(&self) -> KeyOptions {
        self.key
    }

    /// The scheduler's options for this plan: its key options, always, with what the run
    /// adds. The one place a plan becomes [`BuildOptions`], so that building, planning a
    /// build and explaining one see the same keys.
    pub(crate) fn build_options(&self, run: RunOptions) -> BuildOptions {
        BuildOptions {
            force: run.force,
            jobs: run.jobs.max(1),
            keep_going: self.keep_going,
            docker: run.docker,
            network: self.key.network,
            disable_cache: self.key.disable_cache,
            dry_run: run.dry_run,
            ignore_cached: self.key.ignore_cached,
            epoch: run.epoch,
            proxies: run.proxies,
        }
    }

    /// The first git tag on HEAD of the repository holding `dir` (linuxkit's default
    /// `--release` for a push), if there is one.
    pub fn head_tag(&self, dir: &Path) -> Result<Option<String>, Error> {
        Ok(self
            .workspaces()
            .for_path(dir)?
            .map(|w| w.tags_at_head())
            .unwrap_or_default()
            .into_iter()
            .next())
    }

    /// Messages for the user: stale pins, dependencies missing for a platform.
    pub fn warnings(&self) -> &[String] {
        &self.graph.warnings
    }

    /// With `keep_going`: the packages that could not be loaded.
    pub fn load_failures(&self) -> &[Error] {
        &self.graph.load_failures
    }
}

/// What a run adds to a plan's options (none of it changes a build key).
#[derive(Debug, Clone, Default)]
pub(crate) struct RunOptions {
    pub force: bool,
    pub jobs: usize,
    pub docker: bool,
    pub dry_run: bool,
    pub epoch: i64,
    pub proxies: std::collections::BTreeMap<String, String>,
}
