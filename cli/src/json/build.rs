//! `pkg build --message-format json` (and `--dry-run`): one [`BuildEvent`] per line; `pkg
//! builder ls --message-format json`: one [`BuilderLine`] per platform.

use lkpkg_engine::ops::Event;
use schemars::JsonSchema;
use serde::Serialize;

/// One step of a build, in the order things happen; `type` names the kind.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum BuildEvent {
    /// The unit needs no build; `reason` says why.
    Fresh {
        unit: String,
        digest: String,
        reason: String,
    },
    /// `--dry-run`: the unit would build, for `reason`.
    WouldBuild { unit: String, reason: String },
    /// The unit started building on `builder`.
    Started {
        unit: String,
        reason: String,
        builder: String,
    },
    /// A line of the unit's build output.
    Log { unit: String, line: String },
    /// Another lkpkg process sharing the cache builds the unit; this one waits for it.
    Waiting { unit: String, reason: String },
    /// Found in a registry and pulled instead of built.
    Pulled {
        unit: String,
        digest: String,
        reason: String,
    },
    /// A registry could not be asked for units; they build.
    RegistryUnavailable { message: String },
    /// A forced build of recorded inputs gave other bytes than the record's.
    Unreproducible {
        unit: String,
        recorded: String,
        built: String,
    },
    /// The unit was built and is in the cache.
    Finished {
        unit: String,
        digest: String,
        duration_ms: u64,
    },
    /// The unit did not run, for `reason` (a dependency failed, the build stopped).
    Skipped { unit: String, reason: String },
    /// The unit's build failed; `log_tail` is the end of its output.
    Failed {
        unit: String,
        error: String,
        log_tail: Vec<String>,
    },
    /// A package's multi-arch index was written.
    Indexed {
        package: String,
        name: String,
        digest: String,
    },
    /// A package's index was left as it was: one of its platforms failed.
    IndexKept {
        package: String,
        name: String,
        reason: String,
    },
}

impl From<&Event> for BuildEvent {
    fn from(event: &Event) -> Self {
        let event = event.clone();
        match event {
            Event::Fresh {
                unit,
                digest,
                reason,
            } => BuildEvent::Fresh {
                unit,
                digest,
                reason: reason.to_string(),
            },
            Event::WouldBuild { unit, reason } => BuildEvent::WouldBuild {
                unit,
                reason: reason.to_string(),
            },
            Event::Started {
                unit,
                reason,
                builder,
            } => BuildEvent::Started {
                unit,
                reason: reason.to_string(),
                builder,
            },
            Event::Log { unit, line } => BuildEvent::Log { unit, line },
            Event::Waiting { unit, reason } => BuildEvent::Waiting { unit, reason },
            Event::Pulled { unit, digest, how } => BuildEvent::Pulled {
                unit,
                digest,
                reason: how.to_string(),
            },
            Event::RegistryUnavailable { message } => BuildEvent::RegistryUnavailable { message },
            Event::Unreproducible {
                unit,
                recorded,
                built,
            } => BuildEvent::Unreproducible {
                unit,
                recorded,
                built,
            },
            Event::Finished {
                unit,
                digest,
                duration,
            } => BuildEvent::Finished {
                unit,
                digest,
                duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            },
            Event::Skipped { unit, reason } => BuildEvent::Skipped {
                unit,
                reason: reason.to_string(),
            },
            Event::Failed {
                unit,
                error,
                log_tail,
            } => BuildEvent::Failed {
                unit,
                error,
                log_tail,
            },
            Event::Indexed {
                package,
                name,
                digest,
            } => BuildEvent::Indexed {
                package,
                name,
                digest,
            },
            Event::IndexKept {
                package,
                name,
                reason,
            } => BuildEvent::IndexKept {
                package,
                name,
                reason,
            },
        }
    }
}

/// The builder chosen for one platform, and whether it answers.
#[derive(Debug, Serialize, JsonSchema)]
pub struct BuilderLine {
    /// Always `builder`.
    #[serde(rename = "type")]
    pub kind: BuilderLineType,
    pub platform: String,
    /// The docker context (or endpoint) chosen.
    pub context: String,
    pub endpoint: String,
    /// Why this builder was chosen.
    pub reason: String,
    pub answers: bool,
    /// When it answers: the engine's version, API version, architecture, and whether the
    /// platform builds natively there (else under emulation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub native: Option<bool>,
    /// When it does not answer: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BuilderLineType {
    Builder,
}
