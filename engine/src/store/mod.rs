//! The content-addressed cache store: linuxkit's OCI image layout, indexed by redb.
//!
//! # What is on disk
//! The cache directory is an OCI image layout exactly as linuxkit writes it (`oci-layout`,
//! `index.json`, `blobs/sha256/<hex>`, `.lock`), so linuxkit, skopeo and lkpkg read each
//! other's caches. A *name* is an `index.json` entry annotated `org.opencontainers.image.ref.name`
//! with the canonical reference (`docker.io/org/img:tag`, per-arch `…:tag-amd64`). Beside the
//! layout, `lkpkg-index-v1.redb` indexes it (names → root descriptor, blobs → size, media type,
//! reference count, last use); see `cache-format/FORMAT.md`. Temporary files live in
//! `lkpkg-tmp/`.
//!
//! # `index.json` is the truth, redb is an index of it
//! redb records the stamp (`stat` fields and sha256) of the `index.json` it last indexed. Every
//! operation first compares the current `stat` of `index.json` with the stamp (one `stat`, no
//! parse). If they differ, it takes the cache lock, hashes the file, and re-indexes when the
//! content changed (linuxkit, skopeo or an editor wrote it). After that, lookups by name or
//! digest are redb B-tree reads, never a parse of `index.json`.
//!
//! # Locking
//! Writers take the `fcntl` lock on `<cache>/.lock` that linuxkit takes ([`lock`]), for the
//! short critical sections only: installing a blob and pinning it, publishing or removing names
//! (which rewrites `index.json` and commits redb), gc, verify --repair. Streaming a layer into a
//! temporary file and hashing it happens outside the lock. Readers never take the lock (unless
//! `index.json` changed under them and they must re-index): they read a redb snapshot, which is
//! consistent because redb and `index.json` only change together under the lock, and a reader
//! that sees a stamp mismatch falls back to the locked path. See [`db`] for how processes share
//! the redb file.
//!
//! # Crash safety
//! Invariant: *every name in `index.json` reaches only blobs that are durable and complete.*
//! 1. A blob is written to a temporary file, its sha256 checked while streaming, `fsync`ed, and
//!    renamed into `blobs/sha256/` without clobbering: a blob file under its final name is always
//!    complete, and a crash leaves at most a temporary file (removed by `gc`).
//! 2. While it is being written by an ingest, a blob is *pinned* in redb (table `pending`, keyed
//!    by digest and ingest id, with the writer's pid and a deadline) in the same locked section
//!    as its rename: `rm` and `gc` never delete a pinned blob, so a concurrent `rm` of another
//!    name sharing the blob cannot delete it between "present" and "published".
//! 3. Publishing a name (under the lock) checks the whole closure is present, `fsync`s
//!    `blobs/sha256/` (making the renames durable), then replaces `index.json` by write-temp,
//!    `fsync`, rename, `fsync` of the directory, and only then commits redb. A crash before the
//!    rename leaves the old `index.json`; after it, the stamp in redb no longer matches and the
//!    next open re-indexes.
//!    Publications a process's threads make at once are committed together ([`publications`]):
//!    each closure is checked on its own, then one replacement and one commit carry them all,
//!    so a crash leaves the old index or the new one, never part of a batch.
//! 4. Blob files are deleted only after the redb commit that dropped their last reference, under
//!    the lock; a crash in between leaves unreferenced blobs, which `gc` removes.
//!
//! What each `fsync` guards, as a power loss that reorders writes would break it, and what is
//! then seen (each state is made by `tests::crash::each_write_reordered_around_its_fsync_is_caught_by_verify`):
//! - the blob's data (step 1) before its rename: a blob file under its name with lost data,
//!   which `verify` reports as corrupt (its content no longer hashes to its name);
//! - `blobs/sha256/` (step 3) before `index.json` names the image: a lost rename, a name
//!   reaching a missing blob, which `verify` reports;
//! - `index.json`'s data before its rename, and the cache directory after it: an empty or
//!   garbage `index.json` (or the old one), refused on its word while redb lists names
//!   ([`StoreError::IndexJsonUnreadable`]), repaired from redb by `verify --repair`;
//! - redb's commit (redb `fsync`s its own commits) after `index.json`'s rename: a database
//!   one publication behind, whose stamp no longer matches: the next open re-indexes.
//!
//! Kills at random points of every writer are the e2e test `kill` (tests/e2e/kill.rs).
//!
//! # Reference counting
//! A blob's count is the number of `index.json` entries whose closure (index → manifests →
//! config and layers) contains it; each entry counts once. Replacing or removing a name
//! decrements its old closure. Blobs reaching zero through `rm` (and not pinned) are deleted;
//! blobs reaching zero because a name was re-pointed (a rebuild) stay on disk, unrecorded,
//! until `gc`: a build record may still reuse them when a change is reverted, as cargo keeps
//! old artifacts. An old multi-arch index blob still named by a release tag is never deleted
//! (linuxkit's `IndexWrite` does delete it).

pub(crate) mod blobs;
mod content;
pub(crate) mod db;
pub(crate) mod export;
pub(crate) mod gc;
pub(crate) mod import;
pub(crate) mod index_json;
pub(crate) mod ingest;
pub(crate) mod lock;
mod names;
pub(crate) mod publications;
mod publish;
pub(crate) mod records;
mod reindex;
pub(crate) mod verify;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lkpkg_cache_format::digest::{Digest, DigestError};
use lkpkg_cache_format::index_db as format;
use lkpkg_cache_format::layout::{self, ImageIndex, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE};
use redb::Database;

pub use content::Closure;
pub use export::ExportFormat;
pub use gc::{GcOptions, GcReport, UsageReport};
pub use import::ImportedName;
pub use ingest::Ingest;
pub(crate) use lock::UnitClaim;
pub use lock::{CacheLock, interrupt_waits, report_waits_with, set_lock_timeout};
pub(crate) use lock::{Consistent, ReadGuard};
pub use verify::{Problem, VerifyReport};

/// Conditions a caller of the store acts on.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("`{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cache index database `{path}`: {message}")]
    Database { path: PathBuf, message: String },
    #[error("`{path}` is not a valid OCI index: {message}")]
    CorruptIndexJson { path: PathBuf, message: String },
    #[error("malformed JSON in `{what}`: {message}")]
    Json { what: String, message: String },
    #[error("no image named `{0}` in the cache")]
    UnknownReference(String),
    #[error("invalid reference `{0}`")]
    InvalidReference(String),
    #[error("no `{platform}` image in `{reference}`")]
    PlatformNotFound { reference: String, platform: String },
    #[error("bad archive: {0}")]
    BadArchive(String),
    #[error("content of `{expected}` hashes to `{actual}`")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob `{digest}` needed by `{name}` is missing from the cache")]
    MissingBlob { name: String, digest: Digest },
    #[error("blob `{digest}` of `{name}` is not what its descriptor says: {why}")]
    BadContent {
        name: String,
        digest: Digest,
        why: String,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("not supported yet: {0}")]
    Unsupported(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("cache verification found {problems} problem(s)")]
    VerifyFailed { problems: usize },
    /// `index.json` is gone while redb still lists names: nothing is changed on the word of
    /// one index when the other disagrees.
    #[error(
        "gave up waiting for the cache lock `{}` after {seconds} s: it is held by {holder}, \
         which may be stopped or hung (LKPKG_LOCK_TIMEOUT sets the wait in seconds, 0 for ever)",
        .path.display()
    )]
    LockTimeout {
        path: PathBuf,
        seconds: u64,
        holder: String,
    },
    #[error("interrupted while waiting for the cache lock")]
    Interrupted,
    /// A bug in lkpkg, said as such.
    #[error("internal error: {0}")]
    Internal(String),
    /// A write asked of a cache this process cannot write (see [`Store::open`]).
    #[error(
        "the cache at `{}` is read-only (a read-only mount, or not this user's): it can be \
         listed, inspected, verified and exported from, not written; pass `--cache` a \
         writable directory to build or import",
        .root.display()
    )]
    ReadOnly { root: PathBuf },
    #[error(
        "`{}` is missing, but the cache's index database still lists {names} name(s); nothing \
         was changed. `lkpkg cache verify --repair` writes index.json back from it \
         (`lkpkg cache clean` empties the cache instead)",
        .root.join(layout::INDEX_FILE).display()
    )]
    IndexJsonMissing { root: PathBuf, names: usize },
    /// `index.json` does not parse (garbage, or empty: what a lost write of its data leaves)
    /// while redb lists names: as for a missing one, nothing is changed on its word.
    #[error(
        "`{}` is not a valid OCI index ({message}), but the cache's index database still lists \
         {names} name(s); nothing was changed. `lkpkg cache verify --repair` sets it aside and \
         writes index.json back from the database",
        .root.join(layout::INDEX_FILE).display()
    )]
    IndexJsonUnreadable {
        root: PathBuf,
        names: usize,
        message: String,
    },
}

impl StoreError {
    pub(crate) fn io(path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn db(path: &Path, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: path.to_owned(),
            message: e.into().to_string(),
        }
    }

    /// Whether the failure comes from what the user asked (unknown name, bad file, unsupported
    /// option) rather than from the machine or the cache's state: exit code 2.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            StoreError::UnknownReference(_)
                | StoreError::InvalidReference(_)
                | StoreError::PlatformNotFound { .. }
                | StoreError::BadArchive(_)
                | StoreError::BadContent { .. }
                | StoreError::DigestMismatch { .. }
                | StoreError::Digest(_)
                | StoreError::Unsupported(_)
                | StoreError::InvalidArgument(_)
        )
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The linuxkit cache at one directory.
pub struct Store {
    root: PathBuf,
    db_path: PathBuf,
    db: Arc<Database>,
    /// What opening had to repair, for the user ([`Store::notice`]).
    notice: Option<String>,
    /// The cache cannot be written by this process (see [`Store::open`]).
    read_only: bool,
    /// Publications of this process's threads, committed in groups ([`publications`]).
    pub(crate) publications: publications::Publications,
    /// The `index.json` this process last wrote, parsed ([`index_json::LastWritten`]).
    last_written: index_json::LastWritten,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("root", &self.root).finish()
    }
}

impl Store {
    /// Opens the cache at `root`, creating an empty layout (and the redb index) if needed, and
    /// re-indexing if `index.json` changed since lkpkg last indexed it. A cache this process
    /// cannot write is opened read-only: its index database in memory, every write refused.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        if let Some(store) = Store::open_read_only(root)? {
            return Ok(store);
        }
        for dir in [
            root.to_owned(),
            root.join(layout::BLOBS_DIR),
            root.join(blobs::TMP_DIR),
        ] {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        }
        // What killed writers left: their temporary blobs and index.json replacements.
        blobs::remove_dead_temps(&root.join(blobs::TMP_DIR), &["blob-"]);
        blobs::remove_dead_temps(root, &[index_json::TEMP_KIND]);
        let db_path = root.join(format::DB_FILE);
        let needs_init = !root.join(OCI_LAYOUT_FILE).exists()
            || !root.join(layout::INDEX_FILE).exists()
            || !db_path.exists();
        let guard = if needs_init {
            Some(CacheLock::acquire(root)?)
        } else {
            None
        };
        if needs_init {
            let layout_file = root.join(OCI_LAYOUT_FILE);
            if !layout_file.exists() {
                std::fs::write(&layout_file, OCI_LAYOUT_CONTENT)
                    .map_err(|e| StoreError::io(&layout_file, e))?;
            }
        }
        let (db, notice) = db::open_shared(&db_path)?;
        let store = Store {
            root: root.to_owned(),
            db_path,
            db,
            notice,
            read_only: false,
            publications: Default::default(),
            last_written: Default::default(),
        };
        // A new cache gets an empty index.json. A missing one in a cache whose database still
        // names images is damage: left as it is for `cache verify` to report and repair, and
        // every other command refuses (see `sync_locked`).
        if !root.join(layout::INDEX_FILE).exists() {
            if store.names_in_db()? > 0 {
                return Ok(store);
            }
            let lock = guard
                .as_ref()
                .expect("a cache without index.json is initialised under the lock");
            index_json::write(root, &ImageIndex::empty(), lock)?;
        }
        if db::ensure_schema(&store.db, &store.db_path)? {
            let lock = match guard {
                Some(g) => g,
                None => CacheLock::acquire(root)?,
            };
            store.reindex_locked(&lock)?;
            return Ok(store);
        }
        drop(guard);
        match store.ensure_fresh() {
            // Left for `cache verify` to report and repair; every other command refuses when
            // it reads the index.
            Err(StoreError::IndexJsonUnreadable { .. }) => Ok(store),
            other => other.map(|()| store),
        }
    }

    /// A cache that exists but that this process cannot write (a read-only mount, a cache of
    /// another user: `access(2)` says so) is opened read-only: its index database is read into
    /// memory ([`db::open_in_memory`]), and brought up to date with `index.json` there; nothing
    /// on disk is written, no lock is taken (nobody writes through a read-only mount; a writer
    /// elsewhere replaces `index.json` by rename, so a read sees one whole version), and every
    /// command that would write fails with [`StoreError::ReadOnly`]. `None`: the cache is
    /// writable, or not there yet.
    fn open_read_only(root: &Path) -> Result<Option<Store>, StoreError> {
        use nix::errno::Errno;
        if !root.join(layout::INDEX_FILE).exists() {
            return Ok(None);
        }
        match nix::unistd::access(root, nix::unistd::AccessFlags::W_OK) {
            Err(Errno::EROFS | Errno::EACCES | Errno::EPERM) => {}
            _ => return Ok(None),
        }
        let db_path = root.join(format::DB_FILE);
        let db = db::open_in_memory(&db_path)?;
        let store = Store {
            root: root.to_owned(),
            db: Arc::new(db),
            db_path,
            notice: None,
            read_only: true,
            publications: Default::default(),
            last_written: Default::default(),
        };
        db::ensure_schema(&store.db, &store.db_path)?;
        store.sync_locked(&ReadGuard::ReadOnly)?;
        Ok(Some(store))
    }

    /// Whether the cache was opened read-only (see [`Store::open`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// [`StoreError::ReadOnly`] for a read-only cache: what is about to write asks first, so
    /// that it fails before any work, with that error rather than the file system's.
    pub fn ensure_writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly {
                root: self.root.clone(),
            });
        }
        Ok(())
    }

    /// What opening the cache repaired (an unreadable index database rebuilt), if anything:
    /// commands print it as a warning.
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }

    /// The cache directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Takes the cache write lock (blocking). A read-only cache has none to give: whoever
    /// asks for it means to write, and is told the cache is read-only.
    pub fn lock(&self) -> Result<CacheLock, StoreError> {
        self.ensure_writable()?;
        CacheLock::acquire(&self.root)
    }

    /// The lock for a consistent read (`verify`): none on a read-only cache, where nobody
    /// writes through this mount.
    pub(crate) fn lock_for_reading(&self) -> Result<ReadGuard, StoreError> {
        if self.read_only {
            return Ok(ReadGuard::ReadOnly);
        }
        self.lock().map(ReadGuard::Held)
    }

    pub(crate) fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::db(&self.db_path, e)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }
}

#[cfg(test)]
pub(crate) mod tests;
