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
mod explain;
mod plan;

pub use build::{BuildConfig, BuilderChoice, build};
pub use explain::{UnitExplanation, explain};
pub use plan::{KeyOptions, Packages, Plan, PlanConfig, Selection, show_tags};

use std::sync::Arc;

pub use crate::error::{Classify, ErrorKind};
use crate::schedule::Event;

/// Where an operation's progress goes, event by event, in the order things happen.
pub type Reporter = Arc<dyn Fn(Event) + Send + Sync>;

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
