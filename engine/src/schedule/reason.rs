//! Why a unit is fresh, or why it builds: typed, so that the scheduler decides on values and
//! only people (and JSON readers) see the words.

use std::fmt;

/// Why a unit needs no build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// A build record for these inputs names the image the cache holds under the unit's name.
    UpToDate,
    /// A build record for these inputs exists and its image is whole in the cache, but the
    /// unit's name pointed elsewhere (a revert): the name was pointed back at it.
    Reused,
    /// The cache holds an image under the unit's name that lkpkg did not build (imported,
    /// pulled, or built by linuxkit), and nothing it consumes was rebuilt: used as linuxkit
    /// would use it.
    Foreign,
}

impl Freshness {
    /// Whether deciding it changed a cache name (the package's index then needs writing).
    pub fn repointed(&self) -> bool {
        matches!(self, Freshness::Reused)
    }
}

impl fmt::Display for Freshness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Freshness::UpToDate => "fresh",
            Freshness::Reused => "fresh (reused the recorded build of these inputs)",
            Freshness::Foreign => {
                "cached (no build record: imported or built by another tool), used as linuxkit would"
            }
        })
    }
}

/// How a unit missing from the cache was found in a registry instead of built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// A build record another machine published for exactly these inputs (its build key).
    ByKey { reference: String },
    /// The package's tag, as linuxkit looks it up (the image is a foreign entry: no record).
    ByTag { reference: String },
}

impl fmt::Display for Pulled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pulled::ByKey { reference } => {
                write!(f, "pulled {reference} (published build of these inputs)")
            }
            Pulled::ByTag { reference } => write!(f, "pulled {reference} (published tag)"),
        }
    }
}

/// Why a unit builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildReason {
    /// `--force`.
    Forced,
    /// No build record of the unit at all.
    FirstBuild,
    /// Inputs differ from the last build's; each entry says how (`dependency base/amd64
    /// sha256:ab… → sha256:cd…`).
    Changed(Vec<String>),
    /// The inputs are the last build's, but its image is gone from the cache.
    RecordedImageGone,
    /// The cached image has no build record and these dependencies were rebuilt in this run.
    DependencyRebuilt(Vec<String>),
    /// In a dry run: decided once these dependencies have built.
    AfterDependencies(Vec<String>),
}

impl fmt::Display for BuildReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildReason::Forced => f.write_str("forced (--force)"),
            BuildReason::FirstBuild => f.write_str("built (no previous record)"),
            BuildReason::Changed(reasons) => write!(f, "rebuilt: {}", reasons.join("; ")),
            BuildReason::RecordedImageGone => {
                f.write_str("rebuilt: the recorded image is no longer in the cache")
            }
            BuildReason::DependencyRebuilt(deps) => write!(
                f,
                "rebuilt: dependency {} was rebuilt, and the cached image has no build record",
                deps.join(", ")
            ),
            BuildReason::AfterDependencies(deps) => write!(
                f,
                "if {} changes its output (decided after it builds)",
                deps.join(", ")
            ),
        }
    }
}

/// Why a unit did not build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// A unit it consumes failed or was skipped.
    DependencyFailed(String),
    /// The build stopped after a failure (no `--keep-going`).
    Stopped,
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::DependencyFailed(d) => write!(f, "dependency {d} did not build"),
            SkipReason::Stopped => f.write_str("not started: an earlier unit failed"),
        }
    }
}
