//! The git repositories the packages live in, each opened once per invocation.
//!
//! linuxkit asks git in each package's own directory, so a package belongs to the innermost
//! repository that contains it: one given on the command line from another clone, one in a
//! nested repository (a directory with its own `.git` inside the outer work tree), and the
//! targets of `@lkt:` arguments alike. [`Workspaces`] finds that repository for any path
//! (one `stat` per directory, memoized) and keeps one [`Workspace`] open per repository.
//!
//! linuxkit asks git about every package with subprocesses (`rev-parse`, `ls-tree`, `diff
//! --quiet`, `ls-files --others`, `ls-files` again for the dirty hash): about six per package
//! for `show-tag`. This module answers the same questions in process with libgit2 (git2): the
//! repository is opened once, `HEAD`'s tree is resolved once, and the working-tree status is
//! computed once for the whole repository and then queried by path prefix.
//!
//! What it answers, and the git command each answer must equal:
//!
//! | question                          | linuxkit's git command                               |
//! |-----------------------------------|------------------------------------------------------|
//! | [`Workspace::tree_hash`]          | `ls-tree --full-tree <commit> -- <path>` (or `show --format=%T` at the top level) |
//! | [`Workspace::is_dirty`]           | `diff --quiet HEAD -- <path>` or `ls-files --others --exclude-standard -- <path>` |
//! | [`Workspace::linuxkit_content_hash`] | sha256 over the content of `ls-files` then `ls-files --others` in the dir |
//!
//! Known differences with git's porcelain, all in corners linuxkit users do not reach: a file
//! changed in the index and changed back in the working tree counts as dirty here (git's
//! `diff HEAD` compares HEAD with the working tree only); `.gitattributes` filters are not run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use git2::{Oid, Repository, Status, StatusOptions};
use sha2::{Digest, Sha256};

use crate::error::{Error, GitError, Result};

/// One repository, with HEAD and the status computed lazily, once.
pub struct Workspace {
    repo: Mutex<Repository>,
    /// The work tree root, canonical.
    root: PathBuf,
    /// One status walk of the whole work tree, computed on first use.
    status: OnceLock<std::result::Result<StatusLists, String>>,
    /// Sorted index entries (tracked files) relative to root.
    index: OnceLock<std::result::Result<Vec<String>, String>>,
    /// Resolved commit trees, by the commit string given (`HEAD`, a hash, a ref).
    trees: Mutex<HashMap<String, Oid>>,
    /// Entries (name → id) of the trees read so far, by tree id: sibling packages share their
    /// parent's tree, which is read (inflated) once instead of once per package.
    tree_entries: Mutex<HashMap<Oid, Arc<HashMap<String, Oid>>>>,
    head: OnceLock<Option<(String, i64)>>,
    quote_path: bool,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace")
            .field("root", &self.root)
            .finish()
    }
}

/// What one status walk found.
struct StatusLists {
    /// Sorted `(path relative to root, status)` of every changed or untracked file.
    changed: Vec<(String, Status)>,
    /// Sorted ignored paths; an ignored directory is listed once, with a trailing `/`.
    ignored: Vec<String>,
}

fn git_err(context: impl Into<String>) -> impl FnOnce(git2::Error) -> Error {
    let context = context.into();
    move |error| Error::Git(GitError { context, error })
}

/// Every repository an invocation meets, each opened once, found by path.
#[derive(Debug, Default)]
pub struct Workspaces {
    /// The repository of the directory the command runs for (record names are relative to it).
    primary: Option<Arc<Workspace>>,
    /// The repository of each directory asked about (or of an ancestor), `None` outside any.
    by_dir: Mutex<HashMap<PathBuf, Option<Arc<Workspace>>>>,
    /// Open repositories by the directory holding their `.git`.
    by_root: Mutex<HashMap<PathBuf, Arc<Workspace>>>,
}

impl Workspaces {
    /// The repositories, starting with the one containing `start`.
    pub fn discover(start: &Path) -> Result<Workspaces> {
        let mut workspaces = Workspaces::default();
        let start = crate::package::absolute(start)?;
        workspaces.primary = workspaces.for_path(&start)?;
        Ok(workspaces)
    }

    /// The repository of the command's directory, if it is in one.
    pub fn primary(&self) -> Option<&Workspace> {
        self.primary.as_deref()
    }

    /// The innermost repository whose work tree contains `path` (absolute, normalized), or
    /// `None` outside any (linuxkit then hashes nothing: the tag is `latest`).
    pub fn for_path(&self, path: &Path) -> Result<Option<Arc<Workspace>>> {
        let mut visited = Vec::new();
        let mut dir = Some(path);
        let found = loop {
            let Some(d) = dir else { break None };
            if let Some(known) = self.by_dir().get(d) {
                break known.clone();
            }
            visited.push(d.to_owned());
            // A `.git` directory or file (worktrees, submodules) that opens as a repository
            // with a work tree; anything else named `.git` is not one, as for git.
            if d.join(".git").symlink_metadata().is_ok()
                && let Some(ws) = self.open(d)?
            {
                break Some(ws);
            }
            dir = d.parent();
        };
        let mut by_dir = self.by_dir();
        for d in visited {
            by_dir.insert(d, found.clone());
        }
        Ok(found)
    }

    fn by_dir(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Option<Arc<Workspace>>>> {
        self.by_dir.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn open(&self, root: &Path) -> Result<Option<Arc<Workspace>>> {
        let mut by_root = self.by_root.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(ws) = by_root.get(root) {
            return Ok(Some(ws.clone()));
        }
        let repo = match Repository::open(root) {
            Ok(repo) => repo,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(git_err(format!("opening `{}`", root.display()))(e)),
        };
        let Some(ws) = Workspace::from_repo(repo)? else {
            return Ok(None);
        };
        let ws = Arc::new(ws);
        by_root.insert(root.to_owned(), ws.clone());
        Ok(Some(ws))
    }
}

impl Workspace {
    fn from_repo(repo: Repository) -> Result<Option<Workspace>> {
        let Some(workdir) = repo.workdir() else {
            return Ok(None);
        };
        let root = workdir.canonicalize().map_err(|e| Error::io(workdir, e))?;
        let quote_path = repo
            .config()
            .and_then(|c| c.get_bool("core.quotepath"))
            .unwrap_or(true);
        Ok(Some(Workspace {
            repo: Mutex::new(repo),
            root,
            status: OnceLock::new(),
            index: OnceLock::new(),
            trees: Mutex::new(HashMap::new()),
            tree_entries: Mutex::new(HashMap::new()),
            head: OnceLock::new(),
            quote_path,
        }))
    }

    /// The work tree's root directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` relative to the work tree root, with `/` separators (`""` for the root itself),
    /// or `None` when it is outside the work tree.
    pub fn relative(&self, path: &Path) -> Option<String> {
        // Paths lkpkg builds are absolute and normalized already: when one lies under the
        // (canonical) root, only symlinks inside the repository could make canonicalizing
        // change it, and git does not follow those either. Skip the realpath walk then.
        let canonical;
        let rel = match path.strip_prefix(&self.root) {
            Ok(rel) if path.is_absolute() => rel,
            _ => {
                canonical = path.canonicalize().ok()?;
                canonical.strip_prefix(&self.root).ok()?
            }
        };
        Some(
            rel.components()
                .map(|c| c.as_os_str().to_string_lossy())
                .collect::<Vec<_>>()
                .join("/"),
        )
    }

    /// Runs `f` with the repository (libgit2 handles are not `Sync`).
    pub fn with_repo<T>(&self, f: impl FnOnce(&Repository) -> T) -> T {
        let repo = self.repo.lock().unwrap_or_else(|e| e.into_inner());
        f(&repo)
    }

    fn commit_tree(&self, commit: &str) -> Result<Oid> {
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(oid) = trees.get(commit) {
            return Ok(*oid);
        }
        let oid = self.with_repo(|repo| {
            repo.revparse_single(commit)
                .and_then(|o| o.peel_to_commit())
                .map(|c| c.tree_id())
                .map_err(|e| match e.code() {
                    // A commit that is not there is the user's (`--hash-commit nosuch`, or
                    // HEAD of a repository without commits), not a failure of git.
                    git2::ErrorCode::NotFound | git2::ErrorCode::UnbornBranch => {
                        Error::Usage(format!(
                            "commit `{commit}` not found in the repository at `{}` ({})",
                            self.root.display(),
                            e.message()
                        ))
                    }
                    _ => git_err(format!("resolving commit `{commit}`"))(e),
                })
        })?;
        trees.insert(commit.to_owned(), oid);
        Ok(oid)
    }

    /// The id of the tree (or blob) at `path` in `commit`: linuxkit's `treeHash`.
    /// At the top of the work tree it is the commit's own tree.
    pub fn tree_hash(&self, path: &Path, commit: &str) -> Result<String> {
        let rel = self
            .relative(path)
            .ok_or_else(|| Error::Usage(format!("package `{}` is not in git", path.display())))?;
        let tree = self.commit_tree(commit)?;
        if rel.is_empty() {
            return Ok(tree.to_string());
        }
        let mut id = tree;
        for component in rel.split('/') {
            let entries = self.tree_entries_of(id, commit)?;
            id = *entries.get(component).ok_or_else(|| {
                Error::Usage(format!(
                    "package `{}` is not in git (nothing at `{rel}` in `{commit}`)",
                    path.display()
                ))
            })?;
        }
        Ok(id.to_string())
    }

    /// The entries of a tree (or nothing, for a blob), read once per invocation.
    fn tree_entries_of(&self, tree: Oid, commit: &str) -> Result<Arc<HashMap<String, Oid>>> {
        let mut cache = self.tree_entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entries) = cache.get(&tree) {
            return Ok(entries.clone());
        }
        let entries = self.with_repo(|repo| match repo.find_tree(tree) {
            Ok(t) => Ok(t
                .iter()
                .filter_map(|e| Some((e.name().ok()?.to_owned(), e.id())))
                .collect::<HashMap<_, _>>()),
            Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(HashMap::new()),
            Err(e) => Err(git_err(format!("reading a tree of `{commit}`"))(e)),
        })?;
        let entries = Arc::new(entries);
        cache.insert(tree, entries.clone());
        Ok(entries)
    }

    fn status_lists(&self) -> Result<&StatusLists> {
        let computed = self.status.get_or_init(|| {
            self.with_repo(|repo| {
                let mut options = StatusOptions::new();
                options
                    .include_untracked(true)
                    .recurse_untracked_dirs(true)
                    .include_ignored(true)
                    .recurse_ignored_dirs(false)
                    .exclude_submodules(true)
                    .renames_head_to_index(false);
                let statuses = repo
                    .statuses(Some(&mut options))
                    .map_err(|e| e.to_string())?;
                let mut changed = Vec::new();
                let mut ignored = Vec::new();
                for entry in statuses.iter() {
                    let Ok(path) = entry.path() else { continue };
                    let status = entry.status();
                    if status.is_ignored() {
                        ignored.push(path.to_owned());
                    } else if !status.is_empty() {
                        changed.push((path.to_owned(), status));
                    }
                }
                changed.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
                ignored.sort();
                Ok(StatusLists { changed, ignored })
            })
        });
        computed
            .as_ref()
            .map_err(|e| Error::Usage(format!("git status failed: {e}")))
    }

    fn statuses(&self) -> Result<&[(String, Status)]> {
        Ok(&self.status_lists()?.changed)
    }

    /// Ignored paths under `dir` (relative to the work tree; directories end with `/`).
    pub fn ignored_under(&self, dir: &Path) -> Result<Vec<String>> {
        let Some(rel) = self.relative(dir) else {
            return Ok(Vec::new());
        };
        let ignored = &self.status_lists()?.ignored;
        if rel.is_empty() {
            return Ok(ignored.clone());
        }
        let prefix = format!("{rel}/");
        let start = ignored.partition_point(|p| p.as_str() < prefix.as_str());
        Ok(ignored[start..]
            .iter()
            .take_while(|p| p.starts_with(&prefix))
            .filter(|p| p.len() > prefix.len())
            .cloned()
            .collect())
    }

    /// Whether git ignores `path` (a directory or file in the work tree), from the one
    /// status walk: the path itself or one of its ancestors is listed as ignored.
    pub fn is_ignored(&self, path: &Path) -> bool {
        let Some(rel) = self.relative(path) else {
            return false;
        };
        let Ok(lists) = self.status_lists() else {
            return false;
        };
        let listed = |p: &str| {
            lists
                .ignored
                .binary_search_by(|i| i.as_str().cmp(p))
                .is_ok()
        };
        if listed(&rel) || listed(&format!("{rel}/")) {
            return true;
        }
        rel.match_indices('/')
            .any(|(i, _)| listed(&format!("{}/", &rel[..i])))
    }

    fn tracked(&self) -> Result<&[String]> {
        let computed = self.index.get_or_init(|| {
            self.with_repo(|repo| {
                let index = repo.index().map_err(|e| e.to_string())?;
                let mut out: Vec<String> = index
                    .iter()
                    .filter_map(|e| String::from_utf8(e.path).ok())
                    .collect();
                out.dedup(); // conflict stages repeat a path
                Ok(out)
            })
        });
        computed
            .as_deref()
            .map_err(|e| Error::Usage(format!("reading the git index failed: {e}")))
    }

    /// Entries of a sorted path list that lie under `rel` (a directory, `""` for the root).
    fn under<'a, T>(list: &'a [(String, T)], rel: &str) -> &'a [(String, T)] {
        if rel.is_empty() {
            return list;
        }
        let prefix = format!("{rel}/");
        let start = list.partition_point(|(p, _)| p.as_str() < rel);
        let end = start
            + list[start..]
                .iter()
                .take_while(|(p, _)| p == rel || p.starts_with(&prefix))
                .count();
        &list[start..end]
    }

    /// Whether `path` has changes against HEAD (staged or not) or untracked, non-ignored files:
    /// linuxkit's `isDirty` for commit `HEAD`.
    pub fn is_dirty(&self, path: &Path) -> Result<bool> {
        let Some(rel) = self.relative(path) else {
            return Ok(false);
        };
        Ok(!Self::under(self.statuses()?, &rel).is_empty())
    }

    /// The files under `dir` that differ from HEAD or are untracked: `(path relative to the
    /// work tree, status)`. The fingerprint of a dirty package is built from these.
    pub fn changed_files(&self, dir: &Path) -> Result<Vec<(String, Status)>> {
        let Some(rel) = self.relative(dir) else {
            return Ok(Vec::new());
        };
        Ok(Self::under(self.statuses()?, &rel).to_vec())
    }

    /// linuxkit's dirty-content hash of a package directory (hex sha256): the bytes of every
    /// regular file listed by `git ls-files` then `git ls-files --others --exclude-standard`,
    /// in that order, concatenated. No names, no modes. Directories, symlinks, missing files and
    /// names git would quote (`core.quotePath`) are skipped, because linuxkit cannot stat them.
    pub fn linuxkit_content_hash(&self, dir: &Path) -> Result<String> {
        let rel = self.relative(dir).unwrap_or_default();
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        let tracked: Vec<&String> = {
            let all = self.tracked()?;
            let start = all.partition_point(|p| p.as_str() < prefix.as_str());
            all[start..]
                .iter()
                .take_while(|p| p.starts_with(&prefix))
                .collect()
        };
        let untracked: Vec<&String> = Self::under(self.statuses()?, &rel)
            .iter()
            .filter(|(_, s)| s.contains(Status::WT_NEW))
            .map(|(p, _)| p)
            .collect();
        let mut hasher = Sha256::new();
        for path in tracked.into_iter().chain(untracked) {
            let shown = &path[prefix.len()..];
            if self.git_would_quote(shown) {
                continue;
            }
            let full = self.root.join(path);
            let Ok(meta) = std::fs::symlink_metadata(&full) else {
                continue;
            };
            if meta.is_dir() || meta.file_type().is_symlink() {
                continue;
            }
            let Ok(mut file) = std::fs::File::open(&full) else {
                continue;
            };
            std::io::copy(&mut file, &mut hasher).map_err(|e| Error::io(&full, e))?;
        }
        Ok(hex::encode(hasher.finalize()))
    }

    /// Whether `git ls-files` would print this path quoted (then linuxkit fails to stat it).
    fn git_would_quote(&self, path: &str) -> bool {
        path.bytes().any(|b| {
            b < 0x20 || b == b'"' || b == b'\\' || b == 0x7f || (self.quote_path && b >= 0x80)
        })
    }

    /// HEAD's commit id and committer time (unix seconds), if HEAD is a commit; read once.
    pub fn head(&self) -> Option<&(String, i64)> {
        self.head
            .get_or_init(|| {
                self.with_repo(|repo| {
                    let commit = repo.head().ok()?.peel_to_commit().ok()?;
                    Some((commit.id().to_string(), commit.committer().when().seconds()))
                })
            })
            .as_ref()
    }

    /// `git rev-parse HEAD`, if HEAD is a commit.
    pub fn head_commit(&self) -> Option<String> {
        self.head().map(|(id, _)| id.clone())
    }

    /// The tags that point at HEAD's commit (`git tag -l --points-at HEAD`: lightweight tags
    /// and annotated ones peeled to their commit), sorted.
    pub fn tags_at_head(&self) -> Vec<String> {
        let Some(head) = self.head_commit() else {
            return Vec::new();
        };
        self.with_repo(|repo| {
            let mut tags = Vec::new();
            let _ = repo.tag_foreach(|oid, name| {
                let points_at = repo
                    .find_object(oid, None)
                    .and_then(|o| o.peel_to_commit())
                    .is_ok_and(|c| c.id().to_string() == head);
                if points_at && let Ok(name) = std::str::from_utf8(name) {
                    tags.push(name.trim_start_matches("refs/tags/").to_owned());
                }
                true
            });
            tags.sort();
            tags
        })
    }
}
