//! A build context as BuildKit's file sync sees it: a sorted list of entries with their
//! metadata, each backed by a file on disk or by bytes lkpkg made.
//!
//! A package's context is its directory mapped to `/`, then each `extra-sources` entry mapped
//! to its destination, then the files lkpkg generates (the `depends.docker-images` archives).
//! Nothing is copied or written anywhere: the tree records where each entry's bytes are, and
//! [`super::filesync`] streams them when the builder asks. Modes, owners' ids and times come
//! from the files as they are; owners are sent as root, as the docker CLI's file sync sends
//! them; symlinks stay links.
//!
//! Entries are kept in fsutil's walk order, which its receiver checks: paths compared
//! component by component, so a directory comes right before what it holds.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Go's `os.FileMode` bits, which fsutil's `Stat.mode` carries.
pub(crate) mod go_mode {
    pub(crate) const DIR: u32 = 1 << 31;
    pub(crate) const SYMLINK: u32 = 1 << 27;
    pub(crate) const SETUID: u32 = 1 << 23;
    pub(crate) const SETGID: u32 = 1 << 22;
    pub(crate) const STICKY: u32 = 1 << 20;
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
    Symlink(String),
}

/// Where a file's bytes are.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Disk(PathBuf),
    Bytes(Arc<Vec<u8>>),
    None,
}

/// One entry of the tree.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Relative, `/`-separated, no leading `/`.
    pub path: String,
    pub kind: Kind,
    /// Unix permission bits with setuid/setgid/sticky (`0o7777`).
    pub perm: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub source: Source,
}

impl Entry {
    /// The mode as fsutil sends it (Go's `os.FileMode`).
    pub(crate) fn go_mode(&self) -> u32 {
        let mut mode = self.perm & 0o777;
        if self.perm & 0o4000 != 0 {
            mode |= go_mode::SETUID;
        }
        if self.perm & 0o2000 != 0 {
            mode |= go_mode::SETGID;
        }
        if self.perm & 0o1000 != 0 {
            mode |= go_mode::STICKY;
        }
        match self.kind {
            Kind::Dir => mode | go_mode::DIR,
            Kind::Symlink(_) => mode | go_mode::SYMLINK,
            Kind::File => mode,
        }
    }
}

/// A failure to read what the tree is made of.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub(crate) struct TreeError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// A build context; see the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ContextTree {
    entries: BTreeMap<Vec<String>, Entry>,
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect()
}

impl ContextTree {
    pub(crate) fn new() -> ContextTree {
        ContextTree::default()
    }

    /// The entries in walk order.
    pub(crate) fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// Adds what is below `dir` on disk at `at` (relative; empty for the root), leaving out
    /// the paths in `skip`. Symlinks are not followed.
    pub(crate) fn add_dir(
        &mut self,
        dir: &Path,
        at: &str,
        skip: &[PathBuf],
    ) -> Result<(), TreeError> {
        let at = components(at);
        if !at.is_empty() {
            let meta = std::fs::symlink_metadata(dir).map_err(|source| TreeError {
                path: dir.to_owned(),
                source,
            })?;
            self.ensure_parents(&at, Some(&meta));
            self.insert(&at, Kind::Dir, &meta, Source::None);
        }
        self.walk(dir, &at, skip)
    }

    fn walk(&mut self, dir: &Path, at: &[String], skip: &[PathBuf]) -> Result<(), TreeError> {
        let err = |path: &Path| {
            let path = path.to_owned();
            move |source| TreeError { path, source }
        };
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
            .map_err(err(dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()
            .map_err(err(dir))?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if skip.contains(&path) {
                continue;
            }
            let Some(name) = name.to_str() else {
                return Err(TreeError {
                    path,
                    source: std::io::Error::other("the file name is not UTF-8"),
                });
            };
            let mut rel = at.to_vec();
            rel.push(name.to_owned());
            let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
            let file_type = meta.file_type();
            if file_type.is_dir() {
                self.insert(&rel, Kind::Dir, &meta, Source::None);
                self.walk(&path, &rel, skip)?;
            } else if file_type.is_symlink() {
                let target = std::fs::read_link(&path).map_err(err(&path))?;
                let target = target.to_string_lossy().into_owned();
                self.insert(&rel, Kind::Symlink(target), &meta, Source::None);
            } else if file_type.is_file() {
                self.insert(&rel, Kind::File, &meta, Source::Disk(path.clone()));
            }
            // Sockets, fifos and devices are not part of a build context.
        }
        Ok(())
    }

    fn insert(&mut self, rel: &[String], kind: Kind, meta: &std::fs::Metadata, source: Source) {
        let size = if kind == Kind::File { meta.len() } else { 0 };
        self.entries.insert(
            rel.to_vec(),
            Entry {
                path: rel.join("/"),
                kind,
                perm: meta.mode() & 0o7777,
                size,
                mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                source,
            },
        );
    }

    /// Directories on the way to `rel` that are not in the tree yet (0755, root's).
    fn ensure_parents(&mut self, rel: &[String], like: Option<&std::fs::Metadata>) {
        for n in 1..rel.len() {
            let parent = rel[..n].to_vec();
            self.entries.entry(parent.clone()).or_insert_with(|| Entry {
                path: parent.join("/"),
                kind: Kind::Dir,
                perm: 0o755,
                size: 0,
                mtime_ns: like.map_or(0, |m| m.mtime() * 1_000_000_000),
                source: Source::None,
            });
        }
    }

    /// Adds (or replaces) a file made of `bytes`, mode 0644, at `rel`.
    pub(crate) fn add_bytes(&mut self, rel: &str, bytes: Vec<u8>) {
        let rel = components(rel);
        self.ensure_parents(&rel, None);
        self.entries.insert(
            rel.clone(),
            Entry {
                path: rel.join("/"),
                kind: Kind::File,
                perm: 0o644,
                size: bytes.len() as u64,
                mtime_ns: 0,
                source: Source::Bytes(Arc::new(bytes)),
            },
        );
    }

    /// Adds one file from disk at `rel` (its own metadata), when it exists.
    pub(crate) fn add_file(&mut self, path: &Path, rel: &str) -> Result<bool, TreeError> {
        let meta = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(source) => {
                return Err(TreeError {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let rel = components(rel);
        self.ensure_parents(&rel, Some(&meta));
        self.insert(&rel, Kind::File, &meta, Source::Disk(path.to_owned()));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_order_puts_a_directory_right_before_what_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/z"), "z").unwrap();
        std::fs::write(dir.path().join("a.b"), "ab").unwrap();
        std::fs::write(dir.path().join("b"), "b").unwrap();
        let mut tree = ContextTree::new();
        tree.add_dir(dir.path(), "", &[]).unwrap();
        tree.add_bytes("gen/x.tar", vec![1, 2, 3]);
        let paths: Vec<&str> = tree.entries().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["a", "a/z", "a.b", "b", "gen", "gen/x.tar"]);
    }

    #[test]
    fn modes_are_go_file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        std::fs::set_permissions(
            &secret,
            std::os::unix::fs::PermissionsExt::from_mode(0o4600),
        )
        .unwrap();
        std::os::unix::fs::symlink("secret", dir.path().join("link")).unwrap();
        let mut tree = ContextTree::new();
        tree.add_dir(dir.path(), "sub", &[]).unwrap();
        let by_path: BTreeMap<&str, &Entry> =
            tree.entries().map(|e| (e.path.as_str(), e)).collect();
        assert_eq!(by_path["sub/secret"].go_mode(), 0o600 | go_mode::SETUID);
        assert_eq!(by_path["sub"].go_mode() & go_mode::DIR, go_mode::DIR);
        assert_eq!(by_path["sub/link"].kind, Kind::Symlink("secret".to_owned()));
    }
}
