//! Workspace discovery: every package below a directory.
//!
//! With no package arguments, commands act on every directory below the current one that holds
//! the build.yml name (`build.yml`, or `--build-yml`), as cargo acts on every workspace member.
//! Hidden directories (`.git`, `.cache`, …), directories git ignores, and symlinks are skipped.
//! Packages may nest. The result is sorted, so every command lists packages in the same order.
//!
//! Some trees hold directories with a build.yml that are not packages as they stand (EVE's
//! `pkg/eve` ships a `Dockerfile.in` its Makefile expands). Two ways leave them out, as cargo's
//! `workspace.exclude` does:
//! - a `.lkpkgignore` file, kept in the repository in any directory: one glob pattern per line
//!   (`#` starts a comment), matched against the paths of the directories below it, relative
//!   to it (`eve`, `test/*`, `**/fixtures`); a matching directory is skipped with all below it
//!   (the files of the directories above the start, up to the repository root, count too);
//! - `--exclude PATTERN` on the command line, the same patterns relative to the directory
//!   discovery starts from.

use std::path::{Path, PathBuf};

use crate::error::{Error, PackageError, Result};
use crate::workspace::Workspaces;

/// The name of the file of exclusion patterns.
pub(crate) const IGNORE_FILE: &str = ".lkpkgignore";

/// Directory patterns, each relative to the directory it was given for.
#[derive(Debug, Default)]
struct Excludes(Vec<(PathBuf, glob::Pattern)>);

impl Excludes {
    fn add(&mut self, base: &Path, pattern: &str, source: &Path) -> Result<()> {
        let pattern = pattern.trim_end_matches('/');
        let parsed = glob::Pattern::new(pattern).map_err(|e| {
            Error::from(PackageError::new(
                source,
                None,
                format!("bad exclusion pattern `{pattern}`: {e}"),
            ))
        })?;
        self.0.push((base.to_owned(), parsed));
        Ok(())
    }

    fn read_file(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(IGNORE_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        for line in text.lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                self.add(dir, line, &path)?;
            }
        }
        Ok(())
    }

    fn excludes(&self, dir: &Path) -> bool {
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::default()
        };
        self.0.iter().any(|(base, pattern)| {
            dir.strip_prefix(base)
                .is_ok_and(|rel| pattern.matches_path_with(rel, options))
        })
    }
}

/// The package directories below `start` (absolute), sorted, leaving out directories that
/// `exclude` (patterns relative to `start`) or a `.lkpkgignore` matches.
pub(crate) fn packages(
    start: &Path,
    build_yml_name: &str,
    workspaces: &Workspaces,
    exclude: &[String],
) -> Result<Vec<PathBuf>> {
    let start = crate::package::absolute(start)?;
    let mut excludes = Excludes::default();
    for pattern in exclude {
        excludes.add(&start, pattern, Path::new("--exclude"))?;
    }
    // The files of the directories above, up to the repository's root, apply too (`cd pkg`
    // in a repository whose root `.lkpkgignore` names `pkg/eve`).
    if let Some(ws) = workspaces.for_path(&start)? {
        let root = ws.root().to_owned();
        let mut above: Vec<&Path> = start
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&root))
            .collect();
        above.reverse();
        for dir in above {
            excludes.read_file(dir)?;
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
        excludes.read_file(&dir)?;
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let file_type = entry.file_type().map_err(|e| Error::io(entry.path(), e))?;
            if name == build_yml_name && !file_type.is_dir() {
                found.push(dir.clone());
                continue;
            }
            if !file_type.is_dir() || name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Ignored by the repository it is in (a nested repository has its own rules).
            if excludes.excludes(&path)
                || workspaces
                    .for_path(&path)?
                    .is_some_and(|ws| ws.is_ignored(&path))
            {
                continue;
            }
            stack.push(path);
        }
    }
    found.sort();
    Ok(found)
}
