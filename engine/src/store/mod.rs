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
//! 4. Blob files are deleted only after the redb commit that dropped their last reference, under
//!    the lock; a crash in between leaves unreferenced blobs, which `gc` removes.
//!
//! What each `fsync` guards, as a power loss that reorders writes would break it, and what is
//! then seen (each state is made by `tests::each_write_reordered_around_its_fsync_is_caught_by_verify`):
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

pub mod blobs;
pub mod db;
pub mod export;
pub mod gc;
pub mod import;
pub mod index_json;
pub mod ingest;
pub mod lock;
pub mod records;
pub mod verify;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use lkpkg_cache_format::digest::{Digest, DigestError};
use lkpkg_cache_format::index_db::{self as format, BlobRecord, IndexStamp, RefRecord};
use lkpkg_cache_format::layout::{
    self, Descriptor, ImageIndex, ImageManifest, OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, Platform,
    REF_NAME_ANNOTATION,
};
use lkpkg_cache_format::reference;
use redb::{Database, ReadableDatabase, ReadableTable};

pub use export::ExportFormat;
pub use gc::{GcOptions, GcReport, UsageReport};
pub use import::ImportedName;
pub use ingest::Ingest;
pub use lock::{CacheLock, UnitClaim, interrupt_waits, report_waits_with};
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

/// Every blob an entry reaches, with its media type and size, and the ones that are missing.
#[derive(Debug, Default, Clone)]
pub struct Closure {
    pub blobs: BTreeMap<Digest, (String, u64)>,
    pub missing: BTreeSet<Digest>,
    /// Blobs present but not what their descriptor says: another size, or a manifest or index
    /// that is not one (with why).
    pub invalid: BTreeMap<Digest, String>,
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
        };
        // A new cache gets an empty index.json. A missing one in a cache whose database still
        // names images is damage: left as it is for `cache verify` to report and repair, and
        // every other command refuses (see `sync_locked`).
        if !root.join(layout::INDEX_FILE).exists() {
            if store.names_in_db()? > 0 {
                return Ok(store);
            }
            index_json::write(root, &ImageIndex::empty())?;
        }
        if db::ensure_schema(&store.db, &store.db_path)? {
            let _lock = match guard {
                Some(g) => g,
                None => CacheLock::acquire(root)?,
            };
            store.reindex_locked()?;
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
        };
        db::ensure_schema(&store.db, &store.db_path)?;
        store.sync_locked()?;
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
    pub(crate) fn lock_for_reading(&self) -> Result<Option<CacheLock>, StoreError> {
        if self.read_only {
            return Ok(None);
        }
        self.lock().map(Some)
    }

    pub(crate) fn db_err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::db(&self.db_path, e)
    }

    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    fn recorded_stamp(&self) -> Result<Option<IndexStamp>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::META).map_err(|e| self.db_err(e))?;
        let value = table
            .get(format::KEY_INDEX_STAMP)
            .map_err(|e| self.db_err(e))?;
        Ok(value.and_then(|v| IndexStamp::decode(v.value()).ok()))
    }

    /// Makes redb agree with `index.json` (one `stat` when nothing changed).
    pub fn ensure_fresh(&self) -> Result<(), StoreError> {
        let current = index_json::stat(&self.root)?;
        let recorded = self.recorded_stamp()?;
        if let (Some(current), Some(recorded)) = (&current, &recorded)
            && current.same_stat(recorded)
        {
            return Ok(());
        }
        let _lock = self.lock_for_reading()?;
        self.sync_locked()?;
        Ok(())
    }

    /// Under the lock: reads `index.json`, re-indexing if its content differs from what redb
    /// indexed (or just refreshing the stamp if only its `stat` changed). Returns the index.
    fn sync_locked(&self) -> Result<ImageIndex, StoreError> {
        if index_json::stat(&self.root)?.is_none() {
            let names = self.names_in_db()?;
            if names > 0 {
                return Err(StoreError::IndexJsonMissing {
                    root: self.root.clone(),
                    names,
                });
            }
            index_json::write(&self.root, &ImageIndex::empty())?;
        }
        let (bytes, stamp) = index_json::read_raw(&self.root)?;
        let index = match index_json::parse(&self.root, &bytes) {
            Ok(index) => index,
            Err(StoreError::CorruptIndexJson { message, .. }) if self.names_in_db()? > 0 => {
                return Err(StoreError::IndexJsonUnreadable {
                    root: self.root.clone(),
                    names: self.names_in_db()?,
                    message,
                });
            }
            Err(e) => return Err(e),
        };
        let recorded = self.recorded_stamp()?;
        match recorded {
            Some(r) if r.same_stat(&stamp) => {}
            Some(r) if r.sha256 == stamp.sha256 => {
                let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
                {
                    let mut meta = txn.open_table(db::META).map_err(|e| self.db_err(e))?;
                    meta.insert(format::KEY_INDEX_STAMP, stamp.encode().as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
                txn.commit().map_err(|e| self.db_err(e))?;
            }
            _ => self.rebuild_locked(&index, &stamp)?,
        }
        Ok(index)
    }

    /// Under the lock: rebuilds redb from `index.json` unconditionally.
    pub fn reindex_locked(&self) -> Result<(), StoreError> {
        let (bytes, stamp) = index_json::read_raw(&self.root)?;
        let index = index_json::parse(&self.root, &bytes)?;
        self.rebuild_locked(&index, &stamp)
    }

    fn rebuild_locked(&self, index: &ImageIndex, stamp: &IndexStamp) -> Result<(), StoreError> {
        let now = now_ms();
        let mut old_use: BTreeMap<String, u64> = BTreeMap::new();
        let mut counts: BTreeMap<Digest, (String, u64, u64)> = BTreeMap::new();
        {
            let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
            let refs = read.open_table(db::REFS).map_err(|e| self.db_err(e))?;
            for item in refs.iter().map_err(|e| self.db_err(e))? {
                let (k, v) = item.map_err(|e| self.db_err(e))?;
                if let Ok(r) = RefRecord::decode(v.value()) {
                    old_use.insert(k.value().to_owned(), r.last_use_ms);
                }
            }
        }
        for entry in &index.manifests {
            for (digest, (media_type, size)) in self.closure(entry).blobs {
                counts.entry(digest).or_insert((media_type, size, 0)).2 += 1;
            }
        }
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut refs = txn.open_table(db::REFS).map_err(|e| self.db_err(e))?;
            refs.retain(|_, _| false).map_err(|e| self.db_err(e))?;
            for entry in &index.manifests {
                if let Some(name) = entry.ref_name() {
                    let record = RefRecord {
                        descriptor: entry.clone(),
                        last_use_ms: old_use.get(name).copied().unwrap_or(now),
                    };
                    refs.insert(name, record.encode().as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
            }
            let mut table = txn.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
            table.retain(|_, _| false).map_err(|e| self.db_err(e))?;
            for (digest, (media_type, size, refcount)) in counts {
                let record = BlobRecord {
                    size,
                    media_type,
                    refcount,
                    last_use_ms: now,
                };
                table
                    .insert(digest.to_string().as_str(), record.encode().as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            let mut meta = txn.open_table(db::META).map_err(|e| self.db_err(e))?;
            meta.insert(format::KEY_INDEX_STAMP, stamp.encode().as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    // ---------------------------------------------------------------- reads

    /// The root descriptor stored under exactly `name` (the `index.json` entry), if any.
    pub fn lookup(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        self.ensure_fresh()?;
        self.lookup_indexed(name)
    }

    /// [`Store::lookup`] without the freshness check (the caller just did it).
    pub fn lookup_indexed(&self, name: &str) -> Result<Option<Descriptor>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let refs = read.open_table(db::REFS).map_err(|e| self.db_err(e))?;
        let value = refs.get(name).map_err(|e| self.db_err(e))?;
        match value {
            Some(v) => RefRecord::decode(v.value())
                .map(|r| Some(r.descriptor))
                .map_err(|e| StoreError::Json {
                    what: format!("redb record of `{name}`"),
                    message: e.to_string(),
                }),
            None => Ok(None),
        }
    }

    /// Resolves what a user typed: an exact stored name, its canonical expansion, or
    /// `name@sha256:…` (the entry with that name and digest, or any entry with that digest).
    pub fn resolve(&self, reference: &str) -> Result<(String, Descriptor), StoreError> {
        self.ensure_fresh()?;
        if reference.is_empty() {
            return Err(StoreError::InvalidReference(reference.to_owned()));
        }
        if let Some(digest_text) = reference::digest_part(reference) {
            let digest: Digest = digest_text.parse()?;
            let base = reference.split('@').next().unwrap_or_default();
            let expanded = reference::expand(base);
            let mut any = None;
            for (name, desc) in self.names_indexed()? {
                if desc.digest == digest {
                    if name == base || name == expanded {
                        return Ok((name, desc));
                    }
                    any.get_or_insert((name, desc));
                }
            }
            return any.ok_or_else(|| StoreError::UnknownReference(reference.to_owned()));
        }
        for candidate in [reference.to_owned(), reference::expand(reference)] {
            if let Some(desc) = self.lookup_indexed(&candidate)? {
                return Ok((candidate, desc));
            }
        }
        Err(StoreError::UnknownReference(reference.to_owned()))
    }

    /// Every name with its root descriptor, sorted by name.
    pub fn names(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        self.ensure_fresh()?;
        self.names_indexed()
    }

    fn names_indexed(&self) -> Result<Vec<(String, Descriptor)>, StoreError> {
        Ok(self
            .ref_records()?
            .into_iter()
            .map(|(n, r)| (n, r.descriptor))
            .collect())
    }

    /// Every name's redb record, sorted by name (no freshness check).
    /// How many names redb lists (0 for a database that does not have the table yet).
    fn names_in_db(&self) -> Result<usize, StoreError> {
        use redb::ReadableTableMetadata;
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        match read.open_table(db::REFS) {
            Ok(refs) => Ok(refs.len().map_err(|e| self.db_err(e))? as usize),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.db_err(e)),
        }
    }

    pub fn ref_records(&self) -> Result<Vec<(String, RefRecord)>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let refs = read.open_table(db::REFS).map_err(|e| self.db_err(e))?;
        let mut out = Vec::new();
        for item in refs.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            let name = k.value().to_owned();
            let record = RefRecord::decode(v.value()).map_err(|e| StoreError::Json {
                what: format!("redb record of `{name}`"),
                message: e.to_string(),
            })?;
            out.push((name, record));
        }
        Ok(out)
    }

    /// The redb record of one blob (size, media type, reference count, last use).
    pub fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
        let value = table
            .get(digest.to_string().as_str())
            .map_err(|e| self.db_err(e))?;
        Ok(value.and_then(|v| BlobRecord::decode(v.value()).ok()))
    }

    /// Every blob record in redb.
    pub fn blob_records(&self) -> Result<BTreeMap<Digest, BlobRecord>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
        let mut out = BTreeMap::new();
        for item in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if let (Ok(d), Ok(r)) = (k.value().parse(), BlobRecord::decode(v.value())) {
                out.insert(d, r);
            }
        }
        Ok(out)
    }

    /// The path of a blob file (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blobs::blob_file(&self.root, digest)
    }

    /// Whether the blob file exists.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (for manifests, indexes and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| StoreError::io(&path, e))
    }

    /// Reads and parses an index blob.
    pub fn read_index(&self, digest: &Digest) -> Result<ImageIndex, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: self.blob_path(digest).display().to_string(),
            message: e.to_string(),
        })
    }

    /// Reads and parses an image manifest blob.
    pub fn read_manifest(&self, digest: &Digest) -> Result<ImageManifest, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: self.blob_path(digest).display().to_string(),
            message: e.to_string(),
        })
    }

    /// The image manifest for `platform` under a root: the root itself if it is a manifest
    /// (whatever its platform), or the index entry selecting the platform (attestations skipped).
    pub fn platform_manifest(
        &self,
        reference: &str,
        root: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        if layout::is_index_media_type(&root.media_type) {
            let index = self.read_index(&root.digest)?;
            let found = index.manifests.iter().find(|m| {
                layout::is_manifest_media_type(&m.media_type)
                    && !m.is_attestation()
                    && m.platform.as_ref().is_some_and(|p| platform.selects(p))
            });
            if let Some(m) = found {
                return Ok(m.clone());
            }
            // A nested index (rare): search one level further down.
            for m in &index.manifests {
                if layout::is_index_media_type(&m.media_type)
                    && let Ok(found) = self.platform_manifest(reference, m, platform)
                {
                    return Ok(found);
                }
            }
            return Err(StoreError::PlatformNotFound {
                reference: reference.to_owned(),
                platform: platform.to_string(),
            });
        }
        Ok(root.clone())
    }

    /// A manifest descriptor with its platform, read from its config when the descriptor
    /// lacks one (entries imported or written by other tools often do).
    pub fn with_platform(&self, mut desc: Descriptor) -> Result<Descriptor, StoreError> {
        if desc.platform.is_none() {
            let manifest = self.read_manifest(&desc.digest)?;
            let bytes = self.read_blob(&manifest.config.digest)?;
            let config: layout::ImageConfigSummary =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
                    what: format!("config `{}`", manifest.config.digest),
                    message: e.to_string(),
                })?;
            desc.platform = Some(config.platform());
        }
        Ok(desc)
    }

    /// Everything an entry reaches. Unreadable children are reported missing, never an error.
    pub fn closure(&self, root: &Descriptor) -> Closure {
        let mut closure = Closure::default();
        let mut stack = vec![root.clone()];
        while let Some(desc) = stack.pop() {
            if closure.blobs.contains_key(&desc.digest) {
                continue;
            }
            closure
                .blobs
                .insert(desc.digest, (desc.media_type.clone(), desc.size));
            let is_index = layout::is_index_media_type(&desc.media_type);
            let is_manifest = layout::is_manifest_media_type(&desc.media_type);
            match std::fs::metadata(self.blob_path(&desc.digest)) {
                Ok(meta) if meta.is_file() => {
                    if meta.len() != desc.size {
                        closure.invalid.insert(
                            desc.digest,
                            format!("{} bytes, its descriptor says {}", meta.len(), desc.size),
                        );
                    }
                }
                _ => {
                    closure.missing.insert(desc.digest);
                    continue;
                }
            }
            if !is_index && !is_manifest {
                continue;
            }
            let Ok(bytes) = self.read_blob(&desc.digest) else {
                closure.missing.insert(desc.digest);
                continue;
            };
            let what = if is_index {
                "an image index"
            } else {
                "an image manifest"
            };
            let parsed = if is_index {
                serde_json::from_slice::<ImageIndex>(&bytes).map(|index| {
                    stack.extend(index.manifests);
                })
            } else {
                serde_json::from_slice::<ImageManifest>(&bytes).map(|manifest| {
                    stack.push(manifest.config);
                    stack.extend(manifest.layers);
                })
            };
            if let Err(e) = parsed {
                closure
                    .invalid
                    .insert(desc.digest, format!("not {what}: {e}"));
            }
        }
        closure
    }

    // ---------------------------------------------------------------- writes

    /// Starts an ingest session: blobs written through it are pinned until it is dropped.
    pub fn ingest(&self) -> Ingest<'_> {
        Ingest::new(self)
    }

    /// Removes names (exact stored names). Blobs no other name reaches are deleted.
    /// Returns the names that were present.
    pub fn remove_names(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let _lock = self.lock()?;
        let index = self.sync_locked()?;
        let present: Vec<String> = names
            .iter()
            .filter(|n| index.manifests.iter().any(|m| m.ref_name() == Some(n)))
            .cloned()
            .collect();
        if present.is_empty() {
            return Ok(present);
        }
        self.update_names_locked(index, Vec::new(), &present, None)?;
        Ok(present)
    }

    /// Removes everything: every name and every blob (linuxkit's `cache clean` removes the
    /// directory; lkpkg empties it under the lock so concurrent users see an empty cache).
    pub fn clean(&self) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let stamp = index_json::write(&self.root, &ImageIndex::empty())?;
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut refs = txn.open_table(db::REFS).map_err(|e| self.db_err(e))?;
            refs.retain(|_, _| false).map_err(|e| self.db_err(e))?;
            let mut table = txn.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
            table.retain(|_, _| false).map_err(|e| self.db_err(e))?;
            let mut meta = txn.open_table(db::META).map_err(|e| self.db_err(e))?;
            meta.insert(format::KEY_INDEX_STAMP, stamp.encode().as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        let pinned = self.pinned_digests()?;
        for (digest, _, _) in blobs::list(&self.root)? {
            if !pinned.contains(&digest) {
                let path = self.blob_path(&digest);
                std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            }
        }
        Ok(())
    }

    /// Marks names as used now (for `gc --max-size`'s least-recently-used order).
    pub fn touch(&self, names: &[String]) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        self.sync_locked()?;
        let now = now_ms();
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut refs = txn.open_table(db::REFS).map_err(|e| self.db_err(e))?;
            for name in names {
                let record = refs
                    .get(name.as_str())
                    .map_err(|e| self.db_err(e))?
                    .and_then(|v| RefRecord::decode(v.value()).ok());
                if let Some(mut record) = record {
                    record.last_use_ms = now;
                    refs.insert(name.as_str(), record.encode().as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
            }
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Digests pinned by a live ingest (deadline not passed, process alive).
    pub(crate) fn pinned_digests(&self) -> Result<BTreeSet<Digest>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::PENDING).map_err(|e| self.db_err(e))?;
        let now = now_ms();
        let mut out = BTreeSet::new();
        for item in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if ingest::pin_is_live(k.value(), v.value(), now)
                && let Some(d) = k.value().split('/').next().and_then(|d| d.parse().ok())
            {
                out.insert(d);
            }
        }
        Ok(out)
    }

    /// Under the lock: sets `set` names (replacing every entry with each name, like linuxkit's
    /// `DescriptorWrite`) and removes `remove` names, with refcounts and blob deletion.
    pub(crate) fn update_names_locked(
        &self,
        mut index: ImageIndex,
        set: Vec<(String, Descriptor)>,
        remove: &[String],
        ingest_pins: Option<&BTreeSet<Digest>>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        // New closures must be whole before anything is published.
        let mut new_entries = Vec::new();
        let mut increments: BTreeMap<Digest, (String, u64, u64)> = BTreeMap::new();
        for (name, mut desc) in set {
            // Every name published is one a registry, the engine and linuxkit accept, and
            // reaches only content that is what its descriptors say.
            reference::validate(&name).map_err(StoreError::InvalidArgument)?;
            let closure = self.closure(&desc);
            if let Some(digest) = closure.missing.first() {
                return Err(StoreError::MissingBlob {
                    name,
                    digest: *digest,
                });
            }
            if let Some((digest, why)) = closure.invalid.first_key_value() {
                return Err(StoreError::BadContent {
                    name,
                    digest: *digest,
                    why: why.clone(),
                });
            }
            for (digest, (media_type, size)) in closure.blobs {
                increments.entry(digest).or_insert((media_type, size, 0)).2 += 1;
            }
            desc.annotations
                .insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
            new_entries.push((name, desc));
        }
        if !new_entries.is_empty() {
            blobs::sync_dir(&self.root.join(layout::BLOBS_DIR))?;
        }
        let touched: BTreeSet<&str> = new_entries
            .iter()
            .map(|(n, _)| n.as_str())
            .chain(remove.iter().map(String::as_str))
            .collect();
        let mut decrements: BTreeMap<Digest, u64> = BTreeMap::new();
        // Blobs of names being removed: deleted once nothing reaches them. Blobs a name
        // reached before it was re-pointed stay on disk until `gc`, so that a build record can
        // still reuse them (a revert) — cargo keeps old artifacts the same way.
        let mut removed_reach: BTreeSet<Digest> = BTreeSet::new();
        let mut kept = Vec::with_capacity(index.manifests.len());
        for entry in index.manifests.drain(..) {
            if entry.ref_name().is_some_and(|n| touched.contains(n)) {
                let removed = entry
                    .ref_name()
                    .is_some_and(|n| remove.iter().any(|r| r == n));
                for digest in self.closure(&entry).blobs.into_keys() {
                    *decrements.entry(digest).or_default() += 1;
                    if removed {
                        removed_reach.insert(digest);
                    }
                }
            } else {
                kept.push(entry);
            }
        }
        kept.extend(new_entries.iter().map(|(_, d)| d.clone()));
        index.manifests = kept;
        let stamp = index_json::write(&self.root, &index)?;

        let pinned = self.pinned_digests()?;
        let mut doomed = Vec::new();
        let txn = self.db.begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut refs = txn.open_table(db::REFS).map_err(|e| self.db_err(e))?;
            for name in remove {
                refs.remove(name.as_str()).map_err(|e| self.db_err(e))?;
            }
            for (name, desc) in &new_entries {
                let record = RefRecord {
                    descriptor: desc.clone(),
                    last_use_ms: now,
                };
                refs.insert(name.as_str(), record.encode().as_slice())
                    .map_err(|e| self.db_err(e))?;
            }
            let mut table = txn.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
            let digests: BTreeSet<Digest> = increments
                .keys()
                .chain(decrements.keys())
                .copied()
                .collect();
            for digest in digests {
                let key = digest.to_string();
                let old = table
                    .get(key.as_str())
                    .map_err(|e| self.db_err(e))?
                    .and_then(|v| BlobRecord::decode(v.value()).ok());
                let (media_type, size, plus) = increments
                    .get(&digest)
                    .cloned()
                    .or_else(|| old.as_ref().map(|o| (o.media_type.clone(), o.size, 0)))
                    .unwrap_or_default();
                let minus = decrements.get(&digest).copied().unwrap_or(0);
                let count = (old.as_ref().map_or(0, |o| o.refcount) + plus).saturating_sub(minus);
                if count == 0 {
                    table.remove(key.as_str()).map_err(|e| self.db_err(e))?;
                    let pinned_here = ingest_pins.is_some_and(|p| p.contains(&digest));
                    if !pinned.contains(&digest) && !pinned_here && removed_reach.contains(&digest)
                    {
                        doomed.push(digest);
                    }
                } else {
                    let record = BlobRecord {
                        size,
                        media_type,
                        refcount: count,
                        last_use_ms: if plus > 0 {
                            now
                        } else {
                            old.map_or(now, |o| o.last_use_ms)
                        },
                    };
                    table
                        .insert(key.as_str(), record.encode().as_slice())
                        .map_err(|e| self.db_err(e))?;
                }
            }
            let mut meta = txn.open_table(db::META).map_err(|e| self.db_err(e))?;
            meta.insert(format::KEY_INDEX_STAMP, stamp.encode().as_slice())
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        for digest in doomed {
            let path = self.blob_path(&digest);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(&path, e)),
            }
        }
        Ok(())
    }

    /// Publishes names under the lock (the ingest path goes through [`Ingest::publish`]).
    pub fn set_names(&self, set: Vec<(String, Descriptor)>) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let index = self.sync_locked()?;
        self.update_names_locked(index, set, &[], None)
    }

    pub(crate) fn sync_locked_for(&self) -> Result<ImageIndex, StoreError> {
        self.sync_locked()
    }
}

#[cfg(test)]
pub(crate) mod tests;
