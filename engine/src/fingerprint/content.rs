//! The content of a directory as a build sees it, identified as git would identify it.
//!
//! A build context holds every file under the package directory (and each extra source):
//! tracked, untracked and ignored alike (linuxkit sends them all). Its identity here is the id
//! git would give a tree holding exactly those files, as they are on disk:
//!
//! - when git reports nothing changed, untracked or ignored under the directory, that is the
//!   committed tree's id, found without reading a file (the fast, usual path);
//! - otherwise the committed tree is overlaid with what is on disk for every changed,
//!   untracked and ignored path (each hashed as a git blob), and the tree id is computed in
//!   memory (nothing is written to the repository).
//!
//! So the same content gives the same id whether it is committed or not, and reverting an edit
//! gives back the old id. The per-file listing (`path` → `mode blob-id`) is kept for
//! explanations (`file Dockerfile changed`).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use git2::{ObjectType, Oid, TreeWalkMode, TreeWalkResult};

use crate::error::{Error, GitError, Result};
use crate::workspace::{Workspace, Workspaces};

/// What a directory holds, for the build key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    /// The git tree id of the content as it is on disk.
    pub tree: String,
    /// Whether the content differs from the commit (dirty, untracked or ignored files).
    pub dirty: bool,
}

const MODE_FILE: i32 = 0o100644;
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;
const MODE_TREE: i32 = 0o040000;

/// The content identity of `dir`; outside git (or in an ignored directory), from the disk.
pub(crate) fn content(workspaces: &Workspaces, dir: &Path) -> Result<Content> {
    let workspace = workspaces.for_path(dir)?;
    let Some(workspace) = workspace.as_deref().filter(|w| !w.is_ignored(dir)) else {
        let mut files = BTreeMap::new();
        add_walk(dir, "", &mut files)?;
        let files = files
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches('/').to_owned(), v))
            .collect();
        return Ok(Content {
            tree: tree_id(&files)?.to_string(),
            dirty: true,
        });
    };
    let changed = workspace.changed_files(dir)?;
    let ignored = workspace.ignored_under(dir)?;
    if changed.is_empty() && ignored.is_empty() {
        let tree = workspace.tree_hash(dir, "HEAD")?;
        return Ok(Content { tree, dirty: false });
    }
    let files = files_in(Some(workspace), dir)?;
    Ok(Content {
        tree: tree_id(&files)?.to_string(),
        dirty: true,
    })
}

/// Every file of `dir` as on disk: `path relative to dir` → `(mode, blob id)`.
pub(crate) fn files(workspaces: &Workspaces, dir: &Path) -> Result<BTreeMap<String, (i32, Oid)>> {
    files_in(workspaces.for_path(dir)?.as_deref(), dir)
}

fn files_in(workspace: Option<&Workspace>, dir: &Path) -> Result<BTreeMap<String, (i32, Oid)>> {
    let Some(workspace) = workspace.filter(|w| w.relative(dir).is_some() && !w.is_ignored(dir))
    else {
        let mut files = BTreeMap::new();
        add_walk(dir, "", &mut files)?;
        return Ok(files
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches('/').to_owned(), v))
            .collect());
    };
    let rel = workspace.relative(dir).unwrap_or_default();
    let prefix = if rel.is_empty() {
        String::new()
    } else {
        format!("{rel}/")
    };
    let mut files = committed_files(workspace, dir)?;
    let root = workspace.root().to_owned();
    for (path, _status) in workspace.changed_files(dir)? {
        let Some(inner) = path.strip_prefix(&prefix) else {
            continue;
        };
        match on_disk(&root.join(&path))? {
            Some(entry) => {
                files.insert(inner.to_owned(), entry);
            }
            None => {
                files.remove(inner);
            }
        }
    }
    for path in workspace.ignored_under(dir)? {
        let full = root.join(path.trim_end_matches('/'));
        let Some(inner) = path.trim_end_matches('/').strip_prefix(&prefix) else {
            continue;
        };
        add_walk(&full, inner, &mut files)?;
    }
    Ok(files)
}

fn committed_files(workspace: &Workspace, dir: &Path) -> Result<BTreeMap<String, (i32, Oid)>> {
    let mut files = BTreeMap::new();
    let Ok(tree) = workspace.tree_hash(dir, "HEAD") else {
        return Ok(files); // a new, uncommitted directory
    };
    let git = |source| {
        Error::Git(GitError {
            context: format!("reading the tree of `{}`", dir.display()),
            error: source,
        })
    };
    workspace.with_repo(|repo| -> Result<()> {
        let oid = Oid::from_str(&tree).map_err(git)?;
        let Ok(tree) = repo.find_tree(oid) else {
            return Ok(()); // the package path is a file, not a directory
        };
        tree.walk(TreeWalkMode::PreOrder, |parent, entry| {
            if entry.kind() == Some(ObjectType::Blob)
                && let Ok(name) = entry.name()
            {
                files.insert(format!("{parent}{name}"), (entry.filemode(), entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(git)
    })?;
    Ok(files)
}

/// The git mode and blob id of a file on disk, `None` if it is gone or a directory.
fn on_disk(path: &Path) -> Result<Option<(i32, Oid)>> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(None);
    };
    let git = |source| {
        Error::Git(GitError {
            context: format!("hashing `{}`", path.display()),
            error: source,
        })
    };
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
        let oid = Oid::hash_object(ObjectType::Blob, target.as_os_str().as_encoded_bytes())
            .map_err(git)?;
        return Ok(Some((MODE_LINK, oid)));
    }
    if meta.is_dir() {
        return Ok(None);
    }
    let mode = if meta.permissions().mode() & 0o111 != 0 {
        MODE_EXEC
    } else {
        MODE_FILE
    };
    let oid = Oid::hash_file(ObjectType::Blob, path).map_err(git)?;
    Ok(Some((mode, oid)))
}

/// Adds a file, or every file below a directory, at `inner`.
fn add_walk(full: &Path, inner: &str, files: &mut BTreeMap<String, (i32, Oid)>) -> Result<()> {
    let meta = match std::fs::symlink_metadata(full) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(full)
            .map_err(|e| Error::io(full, e))?
            .filter_map(std::result::Result::ok)
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            add_walk(&entry.path(), &format!("{inner}/{name}"), files)?;
        }
    } else if let Some(entry) = on_disk(full)? {
        files.insert(inner.to_owned(), entry);
    }
    Ok(())
}

/// The id git gives a tree holding `files` (paths with `/`), computed without writing.
pub(crate) fn tree_id(files: &BTreeMap<String, (i32, Oid)>) -> Result<Oid> {
    #[derive(Default)]
    struct Dir {
        files: BTreeMap<String, (i32, Oid)>,
        dirs: BTreeMap<String, Dir>,
    }
    let mut root = Dir::default();
    for (path, entry) in files {
        let mut dir = &mut root;
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().unwrap_or_default();
        for part in parts {
            dir = dir.dirs.entry(part.to_owned()).or_default();
        }
        dir.files.insert(name.to_owned(), *entry);
    }
    fn hash(dir: &Dir) -> Result<Oid> {
        // git orders entries by name, a directory's name compared as if it ended with `/`.
        let mut entries: Vec<(String, i32, Oid)> = Vec::new();
        for (name, sub) in &dir.dirs {
            entries.push((format!("{name}/"), MODE_TREE, hash(sub)?));
        }
        for (name, (mode, oid)) in &dir.files {
            entries.push((name.clone(), *mode, *oid));
        }
        entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let mut bytes = Vec::new();
        for (name, mode, oid) in entries {
            bytes
                .extend_from_slice(format!("{mode:o} {}\0", name.trim_end_matches('/')).as_bytes());
            bytes.extend_from_slice(oid.as_bytes());
        }
        Oid::hash_object(ObjectType::Tree, &bytes).map_err(|source| {
            Error::Git(GitError {
                context: "hashing a tree".into(),
                error: source,
            })
        })
    }
    hash(&root)
}

/// `mode blob-id` as recorded for explanations.
pub(crate) fn describe(entry: &(i32, Oid)) -> String {
    format!("{:o} {}", entry.0, entry.1)
}
