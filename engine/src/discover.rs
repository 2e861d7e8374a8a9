//! Workspace discovery: every package below a directory.
//!
//! With no package arguments, commands act on every directory below the current one that holds
//! the build.yml name (`build.yml`, or `--build-yml`), as cargo acts on every workspace member.
//! Hidden directories (`.git`, `.cache`, …), directories git ignores, and symlinks are skipped.
//! Packages may nest. The result is sorted, so every command lists packages in the same order.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::workspace::Workspaces;

/// The package directories below `start` (absolute), sorted.
pub fn packages(
    start: &Path,
    build_yml_name: &str,
    workspaces: &Workspaces,
) -> Result<Vec<PathBuf>> {
    let start = crate::package::absolute(start)?;
    let mut found = Vec::new();
    let mut stack = vec![start];
    while let Some(dir) = stack.pop() {
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
            if workspaces
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
