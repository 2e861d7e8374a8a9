//! The engine's entry points: the only API the `lkpkg` binary calls for packages.
//!
//! Every command that decides builds starts from one [`Plan`]: the packages found or named
//! ([`Packages`]), read with the command line's tag options, and the graph built over them with
//! the build-argument files, platforms, Dockerfile override and the options that change a build
//! key ([`KeyOptions`]). `pkg build`, `pkg build --dry-run`, `explain` and `graph` all make
//! their plan with [`Plan::new`] from the same [`PlanConfig`], so they cannot disagree about
//! what a unit's inputs are: a flag that changes a build key is part of the plan, not of one
//! command.
//!
//! Operations take a typed configuration and report progress through a callback
//! ([`Reporter`]); they return typed results, and fail with an [`OpError`] whose
//! [`ErrorKind`] was decided where the failure was made (the binary turns kinds into exit
//! codes, once).

mod build;
pub mod builders;
mod environment;
mod explain;
mod plan;
pub mod registry;

pub use build::{BuildConfig, BuilderChoice, build};
pub use environment::{DockerConfig, Environment};
pub use explain::{UnitExplanation, explain};
pub use plan::{KeyOptions, Packages, Plan, PlanConfig, Selection, show_tags};

use std::sync::Arc;

pub use crate::error::{Classify, Error, ErrorKind, GitError, PackageError};
pub use crate::schedule::{
    BuildError, BuildReason, Event, Freshness, Pulled, SkipReason, Summary, UnitOutcome,
};
pub use crate::tag::{PackageTag, TagOptions};

/// The build graph a [`Plan`] holds, as `graph` prints it.
pub mod graph {
    pub use crate::graph::{BuildGraph, Edge, GraphPackage, Node, Platform, PlatformFilter};
    pub use crate::package::Package;
}

/// The linuxkit cache: the store the `cache` commands work on, and what its operations
/// return. Opening, reading, importing, exporting, removing, collecting and verifying are
/// the store's own methods; the binary calls them through this module.
pub mod cache {
    pub use crate::store::{
        CacheLock, Closure, ExportFormat, GcOptions, GcReport, ImportedName, Ingest, Problem,
        Store, StoreError, UsageReport, VerifyReport, interrupt_waits, report_waits_with,
        set_lock_timeout,
    };
}

/// What the fuzz targets (`fuzz/`) drive: the parsers and expanders that read untrusted
/// input, outside any command. Not an interface: hidden from the docs, and free to change.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::build_args::{ArgOrigin, resolve};
    pub use crate::build_yml::parse as parse_build_yml;
    pub use crate::dockerfile::{MAX_EXPANSION, read as read_dockerfile};
    pub use crate::package::Loader;
}

/// Where an operation's progress goes, event by event, in the order things happen.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

/// The async runtime of one operation: `workers` threads (a registry command's calls need
/// few), else one per core (a build).
fn runtime(workers: Option<usize>) -> Result<tokio::runtime::Runtime, OpError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build().map_err(|e| {
        crate::schedule::BuildError::Internal(format!("cannot start the async runtime: {e}")).into()
    })
}

/// A failed operation: the error as it was made (its [`std::error::Error::source`] chain
/// intact) and how it is to be reported.
#[derive(Debug)]
pub struct OpError {
    kind: ErrorKind,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl OpError {
    /// How the failure is reported (the binary's exit code).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The error as it was made, to downcast to the engine's own types.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.error
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for OpError {
    // Transparent: the wrapped error's own causes follow it, not the error itself a second
    // time.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

impl<E: Classify + std::error::Error + Send + Sync + 'static> From<E> for OpError {
    fn from(error: E) -> Self {
        OpError {
            kind: error.kind(),
            error: Box::new(error),
        }
    }
}
