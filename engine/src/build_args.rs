//! Build arguments: build.yml's `buildArgs` and `--build-arg-file` lines, with linuxkit's
//! `@lkt:` values resolved (reference §4).
//!
//! - `K=@lkt:pkg:PATH` becomes `K=<org>/<image>:<tag>` of the package at PATH.
//! - `K%=@lkt:pkgs:GLOB` becomes one `K<IMAGE>=<tag>` per non-hidden directory matching GLOB,
//!   where `<IMAGE>` is `org/image` with `/` and `-` turned into `_`, upper-cased.
//! - Relative paths resolve against the directory of the file the argument came from.
//! - Referenced packages are tagged with linuxkit's *defaults* (`build.yml`, `HEAD`): the
//!   command line's `--org`, `--hash`, `--tag`, `--dev` do not apply to them (a linuxkit quirk
//!   kept for tag compatibility).
//! - Any other `@lkt:` value is an error; an argument without `=` is an error.
//! - A referenced package must be inside a git work tree (any repository, through symlinks):
//!   linuxkit would tag one outside every repository `latest`; lkpkg refuses it. For
//!   `@lkt:pkgs:`, the pattern's fixed part (up to its first wildcard) must be in one too, so
//!   that no glob walks the file system outside repositories.
//!
//! Arguments keep the package directories they reference, which become edges of the graph.

use std::path::{Path, PathBuf};

use crate::error::{Error, PackageError, Result};
use crate::package::Loader;

/// Where a build argument came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgOrigin {
    BuildYml(PathBuf),
    ArgFile(PathBuf),
}

impl ArgOrigin {
    pub fn file(&self) -> &Path {
        match self {
            ArgOrigin::BuildYml(p) | ArgOrigin::ArgFile(p) => p,
        }
    }
}

/// One resolved `KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArg {
    pub key: String,
    pub value: String,
    pub origin: ArgOrigin,
    /// The package directory an `@lkt:pkg:`/`@lkt:pkgs:` value named.
    pub package: Option<PathBuf>,
}

const PREFIX: &str = "@lkt:";

/// Resolves one `KEY=VALUE` line, read from `origin`.
pub fn resolve(line: &str, origin: &ArgOrigin, loader: &Loader) -> Result<Vec<BuildArg>> {
    let field = match origin {
        ArgOrigin::BuildYml(_) => Some("buildArgs"),
        ArgOrigin::ArgFile(_) => None,
    };
    let bad =
        |message: String| -> Error { PackageError::new(origin.file(), field, message).into() };
    let Some((key, value)) = line.split_once('=') else {
        return Err(bad(format!(
            "invalid build-arg, must be in format 'arg=value': {line}"
        )));
    };
    // BuildKit passes the argument on, and the build then fails at its first `RUN` (runc:
    // "environment variable value can't contain null"): refused here, before anything runs.
    // A newline is fine (an environment variable may hold one).
    if line.contains('\0') {
        return Err(bad(format!(
            "build argument `{}` contains a NUL byte, which no process environment can hold",
            key.escape_debug()
        )));
    }
    let Some(special) = value.strip_prefix(PREFIX) else {
        return Ok(vec![BuildArg {
            key: key.to_owned(),
            value: value.to_owned(),
            origin: origin.clone(),
            package: None,
        }]);
    };
    let anchor = origin
        .file()
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let anchor = std::path::absolute(&anchor).map_err(|e| Error::io(&anchor, e))?;
    let resolve_path = |p: &str| crate::build_yml::normalize(&anchor.join(p));
    // A target must lie in a git work tree, through symlinks (some repository: not only the
    // one of the referring package). linuxkit would tag a directory outside every repository
    // `latest`, a name whose content nothing pins; lkpkg refuses it, and so never reads a
    // package from arbitrary places (`@lkt:pkg:/etc`).
    let in_a_repository = |dir: &Path| -> Result<()> {
        let resolved = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
        match loader.workspaces().for_path(&resolved)? {
            Some(_) => Ok(()),
            None => Err(bad(format!(
                "error processing build arg \"{line}\": `{}` is outside every git \
                 repository (linuxkit would tag it `latest`); a package referenced with \
                 `@lkt:` must be in a git work tree",
                resolved.display()
            ))),
        }
    };
    if let Some(path) = special.strip_prefix("pkg:") {
        let dir = resolve_path(path);
        if dir.exists() {
            in_a_repository(&dir)?;
        }
        let package = loader
            .load_reference(&dir)
            .map_err(|e| bad(format!("error processing build arg \"{line}\": {e}")))?;
        Ok(vec![BuildArg {
            key: key.to_owned(),
            value: package.tag.tag(),
            origin: origin.clone(),
            package: Some(package.dir.clone()),
        }])
    } else if let Some(pattern) = special.strip_prefix("pkgs:") {
        if !key.contains('%') {
            return Err(bad(format!(
                "invalid build arg key \"{key}\", must contain a '%'"
            )));
        }
        let pattern_path = resolve_path(pattern);
        // The walk stays inside repositories: the pattern's fixed part (up to its first
        // wildcard) must be in one, so `@lkt:pkgs:/*/*/*` is refused before it reads the file
        // system, not after (a fuzz timeout).
        let fixed: PathBuf = pattern_path
            .components()
            .take_while(|c| !c.as_os_str().to_string_lossy().contains(['*', '?', '[']))
            .collect();
        if fixed.exists() {
            in_a_repository(&fixed)?;
        }
        let matches = expand_glob(&pattern_path, GLOB_BUDGET)
            .map_err(|e| bad(format!("error globbing package path \"{pattern}\": {e}")))?;
        let mut dirs: Vec<PathBuf> = matches
            .into_iter()
            .filter(|p| p.is_dir())
            .filter(|p| {
                !p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        dirs.sort();
        if dirs.is_empty() {
            return Err(bad(format!(
                "no packages found matching path \"{}\"",
                pattern_path.display()
            )));
        }
        dirs.iter()
            .map(|dir| {
                in_a_repository(dir)?;
                let package = loader.load_reference(dir).map_err(|e| {
                    bad(format!(
                        "error loading packages from paths \"{pattern}\": {e}"
                    ))
                })?;
                let stem = package.tag.image().replace(['/', '-'], "_").to_uppercase();
                Ok(BuildArg {
                    key: key.replace('%', &stem),
                    value: package.tag.tag(),
                    origin: origin.clone(),
                    package: Some(package.dir.clone()),
                })
            })
            .collect()
    } else {
        Err(bad(format!("unknown linuxkit build arg value \"{value}\"")))
    }
}

/// The most directory entries one `@lkt:pkgs:` pattern may read: a glob of 5,000 packages
/// reads about that many per wildcard level; a pattern of many levels through `.git` read
/// millions (found by fuzzing).
const GLOB_BUDGET: usize = 200_000;

/// `pattern` (absolute, normalized) expanded as Go's `filepath.Glob` expands it: one path
/// segment at a time, a segment's wildcards matching the names of one directory's entries
/// (never `**`'s walk), reading at most `budget` entries in all.
fn expand_glob(pattern: &Path, budget: usize) -> std::result::Result<Vec<PathBuf>, String> {
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut current: Vec<PathBuf> = vec![PathBuf::new()];
    let mut read = 0usize;
    for component in pattern.components() {
        let segment = component.as_os_str().to_string_lossy();
        let std::path::Component::Normal(_) = component else {
            current = current.into_iter().map(|d| d.join(component)).collect();
            continue;
        };
        if !segment.contains(['*', '?', '[']) {
            current = current
                .into_iter()
                .map(|d| d.join(&*segment))
                .filter(|p| p.symlink_metadata().is_ok())
                .collect();
            continue;
        }
        let matcher = glob::Pattern::new(&go_glob(&segment)).map_err(|e| e.to_string())?;
        let mut next = Vec::new();
        for dir in current {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                read += 1;
                if read > budget {
                    return Err(format!(
                        "it reads more than {budget} directory entries; name the packages' \
                         directory more exactly"
                    ));
                }
                let name = entry.file_name();
                if matcher.matches_with(&name.to_string_lossy(), options) {
                    next.push(dir.join(name));
                }
            }
        }
        next.sort();
        current = next;
    }
    Ok(current)
}

/// A pattern for the `glob` crate that matches what Go's `filepath.Glob` (linuxkit's) matches:
/// a run of `*` is one `*`, never `**`'s walk through every directory below (`@lkt:pkgs://**`
/// walked the whole file system; found by fuzzing).
fn go_glob(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if c == '*' && out.ends_with('*') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Reads a `--build-arg-file`: one `KEY=VALUE` per line, trimmed; a blank line is an error,
/// as in linuxkit.
pub(crate) fn read_arg_file(path: &Path, loader: &Loader) -> Result<Vec<BuildArg>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::from(PackageError::new(
            path,
            None,
            format!("error opening build args file: {e}"),
        ))
    })?;
    let origin = ArgOrigin::ArgFile(path.to_owned());
    let mut out = Vec::new();
    for line in text.lines() {
        out.extend(resolve(line.trim(), &origin, loader)?);
    }
    Ok(out)
}

/// linuxkit's merge: build.yml's arguments first, then each arg-file argument replaces the
/// one with the same key or is appended.
pub(crate) fn merge(yml: &[BuildArg], files: &[BuildArg]) -> Vec<BuildArg> {
    let mut out = yml.to_vec();
    for arg in files {
        match out.iter_mut().find(|a| a.key == arg.key) {
            Some(existing) => *existing = arg.clone(),
            None => out.push(arg.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{expand_glob, go_glob};

    #[test]
    fn globs_match_as_go_matches_them() {
        assert_eq!(go_glob("/repo/pkg/*"), "/repo/pkg/*");
        // `**` is not a walk through every level below (Go has none): one segment, as `*`.
        assert_eq!(go_glob("//**"), "//*");
        assert_eq!(go_glob("/a/***b/**/c"), "/a/*b/*/c");
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("x/y/z")).unwrap();
        let found = expand_glob(&dir.path().join("**"), 100).unwrap();
        assert_eq!(found, [dir.path().join("x")]);
        std::fs::create_dir_all(dir.path().join("x/.hidden")).unwrap();
        let found = expand_glob(&dir.path().join("*/*"), 100).unwrap();
        assert_eq!(
            found,
            [dir.path().join("x/.hidden"), dir.path().join("x/y")]
        );
        // A pattern that reads more than its budget of entries stops, saying so.
        for i in 0..20 {
            std::fs::create_dir_all(dir.path().join(format!("x/y/d{i}"))).unwrap();
        }
        let error = expand_glob(&dir.path().join("*/*/*"), 10).unwrap_err();
        assert!(error.contains("more than 10 directory entries"), "{error}");
    }
}
