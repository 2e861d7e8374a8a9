//! What the scheduler asks of others: an [`Executor`] to build a unit's [`Job`], and a
//! [`Remote`] to fetch what others published; [`Backends`] holds both for a build.

use std::collections::BTreeMap;
use std::sync::Arc;

use lkpkg_cache_format::layout::Descriptor;

use super::{BuildError, Pulled};
use crate::executor::docker::EngineError;
use crate::graph::Platform;

/// A boxed future, as the [`Executor`]'s methods return (the trait is used as an object).
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What the scheduler asks of whoever builds images. The BuildKit implementation is
/// [`crate::executor::BuildkitExecutor`]; the scheduler's tests use a fake.
pub(crate) trait Executor: Send + Sync {
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
pub(crate) trait Remote: Send + Sync {
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
pub(crate) struct RemoteAsk<'a> {
    pub package: usize,
    pub platform: &'a Platform,
    pub key: &'a [u8; 32],
    /// Whether the tag may stand for the unit: its cache entry is missing and nothing it
    /// consumes changed in this run (a dependent keeps its tag when its base changes, so a
    /// published tag would be stale).
    pub by_tag: bool,
}

/// One unit to build.
pub(crate) struct Job<'a> {
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
    /// See [`BuildOptions::ignore_cached`](super::BuildOptions::ignore_cached).
    pub ignore_cached: bool,
    /// Called once the builder is chosen and free, with its name (the build starts).
    pub started: Box<dyn Fn(&str) + Send + Sync + 'a>,
    /// Each line of the build's progress.
    pub log: Arc<dyn Fn(String) + Send + Sync>,
}

/// How a unit's build failed.
#[derive(Debug)]
pub(crate) enum ExecError {
    /// The build failed; others may go on.
    Failed {
        message: String,
        log_tail: Vec<String>,
    },
    /// Its builder cannot be reached or chosen: the whole build stops.
    Environment(EngineError),
}

/// Who makes the images: the executor builds them; the remote, when there is one, is asked
/// first for what others published.
#[derive(Clone)]
pub(crate) struct Backends {
    pub executor: Arc<dyn Executor>,
    pub remote: Option<Arc<dyn Remote>>,
}
