//! Platforms: `os/arch` as linuxkit writes it, the `--platforms`/`--skip-platforms` filter
//! that gives a package its units, and the platform a `FROM --platform=…` stage asks for.

use crate::error::{Error, Result};
use crate::package::Package;

/// A `os/arch` platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub arch: String,
}

impl Platform {
    pub fn linux(arch: &str) -> Platform {
        Platform {
            os: "linux".into(),
            arch: arch.into(),
        }
    }

    /// Parses `os/arch` (linuxkit requires both parts).
    pub fn parse(s: &str) -> Result<Platform> {
        match s.split_once('/') {
            Some((os, arch)) if !os.is_empty() && !arch.is_empty() && !arch.contains('/') => {
                Ok(Platform {
                    os: os.into(),
                    arch: arch.into(),
                })
            }
            _ => Err(Error::Usage(format!(
                "invalid platform `{s}`: expected `os/arch`, e.g. `linux/amd64`"
            ))),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// Which platforms to build (`--platforms`, `--skip-platforms`).
#[derive(Debug, Clone, Default)]
pub struct PlatformFilter {
    pub platforms: Option<Vec<Platform>>,
    pub skip: Vec<Platform>,
}

impl PlatformFilter {
    /// The platforms of a package: `--platforms` replaces its arches, `--skip-platforms`
    /// filters them.
    pub fn for_package(&self, package: &Package) -> Vec<Platform> {
        let all = match &self.platforms {
            Some(p) => p.clone(),
            None => package
                .yml
                .arches
                .iter()
                .map(|a| Platform::linux(a))
                .collect(),
        };
        all.into_iter().filter(|p| !self.skip.contains(p)).collect()
    }
}

/// The platform of a `FROM --platform=VALUE` stage in the unit for `target`: `$TARGETPLATFORM`
/// is the unit's own; `$BUILDPLATFORM` is the builder's, taken as this machine's (the default
/// engine; a unit sent to a native builder of another architecture sees that one at build
/// time, and its named contexts still hold every platform the cache has); a literal platform
/// is itself.
pub(super) fn stage_platform(value: &str, target: &Platform) -> Platform {
    let value = value.trim_matches('"');
    match value {
        "$TARGETPLATFORM" | "${TARGETPLATFORM}" | "" => target.clone(),
        "$BUILDPLATFORM" | "${BUILDPLATFORM}" => {
            Platform::linux(crate::executor::docker::goarch(std::env::consts::ARCH))
        }
        literal => {
            let mut parts = literal.split('/');
            match (parts.next(), parts.next()) {
                (Some(os), Some(arch)) if !os.contains('$') && !arch.contains('$') => Platform {
                    os: os.to_owned(),
                    arch: arch.to_owned(),
                },
                _ => target.clone(),
            }
        }
    }
}
