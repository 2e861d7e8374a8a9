//! A package: a directory with a build.yml, its parsed definition and its tag.
//!
//! The [`Loader`] reads packages for one invocation. It owns the [`Workspaces`] (each package's
//! own repository, opened once) and memoizes packages loaded as `@lkt:` references, which
//! linuxkit re-reads (with six git processes each) every time one is named.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::build_args::{self, ArgOrigin, BuildArg};
use crate::build_yml::{self, BuildYml};
use crate::error::{Error, PackageError, Result};
use crate::tag::{self, PackageTag, TagOptions};
use crate::workspace::Workspaces;

/// linuxkit's default build.yml name (`DefaultPkgBuildYML`).
pub(crate) const DEFAULT_BUILD_YML: &str = "build.yml";

/// One package, loaded.
#[derive(Debug, Clone)]
pub struct Package {
    /// The package directory, absolute and lexically normalized.
    pub dir: PathBuf,
    pub build_yml_path: PathBuf,
    pub yml: BuildYml,
    pub tag: PackageTag,
}

impl Package {
    /// The Dockerfile's path, checked as linuxkit's build does: no `..`, inside the package.
    /// Whether it exists is found when it is read ([`Package::read_dockerfile`]).
    ///
    /// As linuxkit (Go's `filepath.Join`), a leading `/` does not leave the package:
    /// `--dockerfile /Dockerfile.alt` is the package's `Dockerfile.alt`. A bad `--dockerfile`
    /// is the command line's error, a bad `dockerfile:` build.yml's.
    pub fn dockerfile(&self, override_name: Option<&str>) -> Result<PathBuf> {
        let name = override_name.unwrap_or(&self.yml.dockerfile);
        let bad = |m: String| -> Error {
            match override_name {
                Some(_) => Error::Usage(format!("--dockerfile: {m}")),
                None => PackageError::new(&self.build_yml_path, Some("dockerfile"), m).into(),
            }
        };
        if name.contains("..") {
            return Err(bad(format!("dockerfile `{name}` must not contain `..`")));
        }
        let path = build_yml::normalize(&self.dir.join(name.trim_start_matches('/')));
        if !path.starts_with(&self.dir) {
            return Err(bad(format!("dockerfile `{name}` is outside the package")));
        }
        crate::confine::within(&path, &self.dir)
            .map_err(|m| bad(format!("dockerfile `{name}`: {m}")))?;
        Ok(path)
    }

    /// Reads the Dockerfile at `path` (from [`Package::dockerfile`]); a missing one is the
    /// package's error.
    /// `from_command_line`: the path came from `--dockerfile` (which a missing file blames).
    pub fn read_dockerfile(&self, path: &Path, from_command_line: bool) -> Result<String> {
        std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => PackageError::new(
                &self.build_yml_path,
                Some("dockerfile"),
                format!("dockerfile `{}` is not UTF-8 text", path.display()),
            )
            .into(),
            std::io::ErrorKind::NotFound | std::io::ErrorKind::IsADirectory => {
                let message = format!("dockerfile `{}` not found", path.display());
                if from_command_line {
                    Error::Usage(format!("--dockerfile: {message}"))
                } else {
                    PackageError::new(&self.build_yml_path, Some("dockerfile"), message).into()
                }
            }
            _ => Error::io(path, e),
        })
    }

    /// What a build needs of the package beyond what computing its tag does (so `show-tag`
    /// stays as lenient as linuxkit's, and `build --dry-run` and `graph` refuse what the
    /// engine would): an image name registries take, lower-case arches, extra-source
    /// destinations inside the build context.
    pub fn check_buildable(&self) -> Result<()> {
        let bad = |field: &str, m: String| -> Error {
            PackageError::new(&self.build_yml_path, Some(field), m).into()
        };
        lkpkg_cache_format::reference::validate(&self.tag.full_tag())
            .map_err(|why| bad("image", format!("{why} (image, org and tag make the name)")))?;
        for arch in &self.yml.arches {
            let ok = !arch.is_empty()
                && arch
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !ok {
                return Err(bad(
                    "arches",
                    format!(
                        "arch `{arch}`: arches are lower-case Go names (amd64, arm64, riscv64, …)"
                    ),
                ));
            }
        }
        for source in &self.yml.extra_sources {
            if source.dst == ".." || source.dst.starts_with("../") {
                return Err(bad(
                    "extra-sources",
                    format!(
                        "`{}`: the destination `{}` leaves the build context",
                        source.spec, source.dst
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Package directory relative to `base`, for display (`pkg/init`).
    pub fn display_dir(&self, base: &Path) -> String {
        match self.dir.strip_prefix(base) {
            Ok(p) if p.as_os_str().is_empty() => ".".into(),
            Ok(p) => p.display().to_string(),
            Err(_) => self.dir.display().to_string(),
        }
    }
}

/// Loads packages for one invocation.
#[derive(Debug)]
pub struct Loader {
    workspaces: Workspaces,
    build_yml_name: String,
    options: TagOptions,
    references: Mutex<HashMap<PathBuf, Arc<Package>>>,
}

impl Loader {
    /// A loader for packages under `start` (the repository is discovered from there).
    pub fn new(start: &Path, build_yml_name: &str, options: TagOptions) -> Result<Loader> {
        Ok(Loader {
            workspaces: Workspaces::discover(start)?,
            build_yml_name: build_yml_name.to_owned(),
            options,
            references: Mutex::new(HashMap::new()),
        })
    }

    pub fn workspaces(&self) -> &Workspaces {
        &self.workspaces
    }

    pub fn build_yml_name(&self) -> &str {
        &self.build_yml_name
    }

    pub fn options(&self) -> &TagOptions {
        &self.options
    }

    /// Loads the package in `dir` with the command line's options.
    pub fn load(&self, dir: &Path) -> Result<Package> {
        self.load_with(dir, &self.build_yml_name, &self.options)
    }

    /// Loads a package named by an `@lkt:` argument: linuxkit's defaults, memoized.
    pub fn load_reference(&self, dir: &Path) -> Result<Arc<Package>> {
        let dir = absolute(dir)?;
        if let Some(p) = self.lock().get(&dir) {
            return Ok(p.clone());
        }
        let package = Arc::new(self.load_with(&dir, DEFAULT_BUILD_YML, &TagOptions::default())?);
        self.lock().insert(dir, package.clone());
        Ok(package)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<Package>>> {
        self.references.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load_with(&self, dir: &Path, build_yml_name: &str, options: &TagOptions) -> Result<Package> {
        let dir = absolute(dir)?;
        let build_yml_path = dir.join(build_yml_name);
        crate::confine::within(&build_yml_path, &dir)
            .map_err(|m| Error::from(PackageError::new(&build_yml_path, None, m)))?;
        let text = std::fs::read_to_string(&build_yml_path).map_err(|e| {
            Error::from(PackageError::new(
                &build_yml_path,
                None,
                match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file: not a package".to_owned(),
                    _ => format!("cannot read: {e}"),
                },
            ))
        })?;
        let yml = build_yml::parse(&build_yml_path, &dir, &text)?;
        let tag = tag::compute(&self.workspaces, &dir, &build_yml_path, &yml, options)?;
        Ok(Package {
            dir,
            build_yml_path,
            yml,
            tag,
        })
    }

    /// The package's `buildArgs` with `@lkt:` values resolved.
    pub fn build_args(&self, package: &Package) -> Result<Vec<BuildArg>> {
        let origin = ArgOrigin::BuildYml(package.build_yml_path.clone());
        let mut out = Vec::new();
        for line in package.yml.build_args.iter().flatten() {
            out.extend(build_args::resolve(line, &origin, self)?);
        }
        Ok(out)
    }
}

/// An absolute, lexically normalized path (as Go's `filepath.Abs`).
pub(crate) fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path)
        .map(|p| build_yml::normalize(&p))
        .map_err(|e| Error::io(path, e))
}
