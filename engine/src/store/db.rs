//! The redb index (`<cache>/lkpkg-index-v1.redb`): how processes share it, and typed access to
//! its tables (names and encodings are defined in `lkpkg_cache_format::index_db`).
//!
//! # Sharing between processes
//! The database is opened in redb's [`ConcurrencyMode::MultiWriter`]: any number of processes
//! keep it open at once, each reads from MVCC snapshots without any lock, and redb serialises
//! write transactions between processes with byte-range locks on the database file. lkpkg adds
//! one rule on top: **every write transaction runs while the cache lock (`<cache>/.lock`) is
//! held**, because a redb write always goes with an `index.json` change or a blob pin that must
//! be atomic with it. So redb's own writer lock is never contended across processes in practice;
//! it is the backstop.
//!
//! Inside a process the handle is shared: [`open_shared`] keeps a weak table of open databases
//! by path, so two `Store`s on one cache (threads, tests) use one `Database`.
//!
//! All openers must use the same mode, so the mode is part of the file's contract (FORMAT.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use lkpkg_cache_format::index_db as format;
use redb::{ConcurrencyMode, Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::StoreError;

pub(crate) const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new(format::TABLE_SCHEMA);
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new(format::TABLE_META);
pub(crate) const REFS: TableDefinition<&str, &[u8]> = TableDefinition::new(format::TABLE_REFS);
pub(crate) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new(format::TABLE_BLOBS);
pub(crate) const PENDING: TableDefinition<&str, u64> = TableDefinition::new(format::TABLE_PENDING);
pub(crate) const BUILD_RECORDS: TableDefinition<&[u8; 32], &[u8]> =
    TableDefinition::new(format::TABLE_BUILD_RECORDS);
/// Unit → the build key of its last build ([`super::records`]).
pub(crate) const UNIT_BUILDS: TableDefinition<&str, &[u8; 32]> =
    TableDefinition::new(format::TABLE_UNIT_BUILDS);

fn registry() -> &'static Mutex<HashMap<PathBuf, Weak<Database>>> {
    static OPEN: OnceLock<Mutex<HashMap<PathBuf, Weak<Database>>>> = OnceLock::new();
    OPEN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Opens (creating if needed) the database at `path`, sharing one handle per process.
/// The caller holds the cache lock when the file may not exist yet.
///
/// The database is derived data (FORMAT.md): one redb cannot read (it reports corruption, or
/// panics on pages it does not expect, as random bytes after the header make it) is moved aside
/// as `<name>.unreadable-<ms>` and a new one is created, which [`super::Store::open`] fills from
/// `index.json`. The second value says so, for the user. Any other failure (already open, no
/// permission, …) is an error, never a reason to start over.
pub(crate) fn open_shared(path: &Path) -> Result<(Arc<Database>, Option<String>), StoreError> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let mut open = registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(db) = open.get(&key).and_then(Weak::upgrade) {
        return Ok((db, None));
    }
    let create = || {
        Database::builder()
            .set_concurrency_mode(ConcurrencyMode::MultiWriter)
            .create(path)
    };
    let mut notice = None;
    let db = match create_catching_panics(create) {
        Ok(db) => db,
        Err(Unreadable::Error(e)) => return Err(StoreError::db(path, e)),
        Err(Unreadable::Corrupt(why)) => {
            let aside = path.with_file_name(format!(
                "{}.unreadable-{}",
                path.file_name().unwrap_or_default().to_string_lossy(),
                super::now_ms()
            ));
            std::fs::rename(path, &aside).map_err(|e| StoreError::io(path, e))?;
            notice = Some(format!(
                "the cache's index database `{}` was unreadable ({why}): moved to `{}` and \
                 rebuilt from index.json (build records are lost: the images stay, and are \
                 used as linuxkit would use them)",
                path.display(),
                aside.display()
            ));
            create().map_err(|e| StoreError::db(path, e))?
        }
    };
    let db = Arc::new(db);
    open.retain(|_, weak| weak.strong_count() > 0);
    open.insert(key, Arc::downgrade(&db));
    Ok((db, notice))
}

/// The database of a cache this process cannot write (a read-only mount, another user's
/// cache): the file's bytes copied into memory, since redb writes to a database it opens (its
/// repair after a writer was killed, its allocator state). Writes stay in memory and are lost
/// with the process; the cache's files are never touched. With no file, or a copy redb cannot
/// read (a writer was mid-commit on another mount), an empty database, which
/// [`super::Store::open`] fills from `index.json`: names and blobs stay exact, build records
/// are then missing (units are taken as linuxkit would take them).
pub(crate) fn open_in_memory(path: &Path) -> Result<Database, StoreError> {
    use redb::StorageBackend;
    use redb::backends::InMemoryBackend;
    let image = match std::fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(StoreError::io(path, e)),
    };
    let backend_err = |e: std::io::Error| StoreError::io(path, e);
    let load = |bytes: &[u8]| -> Result<InMemoryBackend, StoreError> {
        let backend = InMemoryBackend::new();
        backend.set_len(bytes.len() as u64).map_err(backend_err)?;
        backend.write(0, bytes).map_err(backend_err)?;
        Ok(backend)
    };
    if let Some(bytes) = image.filter(|b| !b.is_empty()) {
        let opened = create_catching_panics(|| {
            let backend = load(&bytes).map_err(|e| {
                redb::DatabaseError::Storage(redb::StorageError::Io(std::io::Error::other(
                    e.to_string(),
                )))
            })?;
            Database::builder().create_with_backend(backend)
        });
        if let Ok(db) = opened {
            return Ok(db);
        }
    }
    Database::builder()
        .create_with_backend(InMemoryBackend::new())
        .map_err(|e| StoreError::db(path, e))
}

/// Why a database could not be opened.
enum Unreadable {
    /// Its content is damaged: it may be replaced.
    Corrupt(String),
    /// Anything else.
    Error(redb::DatabaseError),
}

/// Runs redb's open, turning its corruption errors and its panics on damaged pages into
/// [`Unreadable::Corrupt`] (the panic message is not printed: the caller says what happened).
fn create_catching_panics(
    create: impl Fn() -> Result<Database, redb::DatabaseError>,
) -> Result<Database, Unreadable> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(create));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)))) => {
            Err(Unreadable::Corrupt(why))
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(Unreadable::Corrupt(e.to_string()))
        }
        Ok(Err(e)) => Err(Unreadable::Error(e)),
        Err(_) => Err(Unreadable::Corrupt("redb failed reading its pages".into())),
    }
}

/// Creates every table and records the schema version (idempotent). Returns whether the stored
/// schema was unknown and the tables were emptied (a re-index is then needed).
pub(crate) fn ensure_schema(db: &Database, path: &Path) -> Result<bool, StoreError> {
    let err = |e: redb::Error| StoreError::db(path, e);
    {
        let read = db.begin_read().map_err(|e| err(e.into()))?;
        if let Ok(table) = read.open_table(SCHEMA)
            && let Ok(Some(v)) = table.get(format::KEY_SCHEMA_VERSION)
            && v.value() == format::SCHEMA_VERSION
        {
            return Ok(false);
        }
    }
    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    let reset;
    {
        let mut schema = txn.open_table(SCHEMA).map_err(|e| err(e.into()))?;
        let stored = schema
            .get(format::KEY_SCHEMA_VERSION)
            .map_err(|e| err(e.into()))?
            .map(|v| v.value());
        reset = stored.is_some_and(|v| v != format::SCHEMA_VERSION);
        schema
            .insert(format::KEY_SCHEMA_VERSION, format::SCHEMA_VERSION)
            .map_err(|e| err(e.into()))?;
    }
    if reset {
        for name in [
            format::TABLE_META,
            format::TABLE_REFS,
            format::TABLE_BLOBS,
            format::TABLE_PENDING,
        ] {
            let def: TableDefinition<&str, &[u8]> = TableDefinition::new(name);
            let _ = txn.delete_table(def);
        }
        let _ = txn.delete_table(BUILD_RECORDS);
        // (Its last builds name keys whose records just went.)
        let _ = txn.delete_table(UNIT_BUILDS);
    }
    txn.open_table(META).map_err(|e| err(e.into()))?;
    txn.open_table(REFS).map_err(|e| err(e.into()))?;
    txn.open_table(BLOBS).map_err(|e| err(e.into()))?;
    txn.open_table(PENDING).map_err(|e| err(e.into()))?;
    txn.open_table(BUILD_RECORDS).map_err(|e| err(e.into()))?;
    txn.open_table(UNIT_BUILDS).map_err(|e| err(e.into()))?;
    txn.commit().map_err(|e| err(e.into()))?;
    Ok(reset)
}
