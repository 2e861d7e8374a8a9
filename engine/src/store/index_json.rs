//! `<cache>/index.json`: read with the [`IndexStamp`] of what was read, and replaced atomically.
//!
//! lkpkg never writes `index.json` in place: it writes `index.json.lkpkg-tmp-*` beside it,
//! `fsync`s it, renames it over `index.json` and `fsync`s the cache directory, all while holding
//! the cache lock. A reader (lkpkg, linuxkit, skopeo) sees the old or the new file, whole.
//! The format is linuxkit's: the index with keys sorted and three-space indentation.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::{Digest, Hasher};
use lkpkg_cache_format::index_db::IndexStamp;
use lkpkg_cache_format::layout::{INDEX_FILE, ImageIndex};

use super::{StoreError, blobs};

fn stamp_of(meta: &std::fs::Metadata, sha256: Option<Digest>) -> IndexStamp {
    IndexStamp {
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime_sec: meta.mtime(),
        mtime_nsec: meta.mtime_nsec(),
        ctime_sec: meta.ctime(),
        ctime_nsec: meta.ctime_nsec(),
        sha256,
    }
}

/// The `stat` of `index.json` (no hash), or `None` if it does not exist.
pub(crate) fn stat(root: &Path) -> Result<Option<IndexStamp>, StoreError> {
    let path = root.join(INDEX_FILE);
    match std::fs::metadata(&path) {
        Ok(meta) => Ok(Some(stamp_of(&meta, None))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

/// Reads `index.json`: its bytes and their full stamp (stat of the same open file + sha256).
pub(crate) fn read_raw(root: &Path) -> Result<(Vec<u8>, IndexStamp), StoreError> {
    let path = root.join(INDEX_FILE);
    let mut file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
    let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(&path, e))?;
    let stamp = stamp_of(&meta, Some(Digest::of(&bytes)));
    Ok((bytes, stamp))
}

/// Parses `index.json` bytes.
pub(crate) fn parse(root: &Path, bytes: &[u8]) -> Result<ImageIndex, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptIndexJson {
        path: root.join(INDEX_FILE),
        message: e.to_string(),
    })
}

/// The prefix of `index.json`'s temporary files (then the writer's pid).
pub(crate) const TEMP_KIND: &str = "index.json.lkpkg-tmp-";

/// Replaces `index.json` atomically and durably, under the cache lock; returns the stamp of
/// what was written. The text is streamed into the temporary file and hashed as it goes
/// ([`canonical_json::write_index_json`]): never whole in memory.
pub(crate) fn write(
    root: &Path,
    index: &ImageIndex,
    _lock: &super::CacheLock,
) -> Result<IndexStamp, StoreError> {
    let path = root.join(INDEX_FILE);
    let mut tmp = tempfile::Builder::new()
        .prefix(&super::blobs::temp_prefix(TEMP_KIND))
        .tempfile_in(root)
        .map_err(|e| StoreError::io(root, e))?;
    let sha256 = {
        let mut out = Hashing {
            inner: io::BufWriter::with_capacity(256 * 1024, tmp.as_file_mut()),
            hasher: Hasher::new(),
        };
        canonical_json::write_index_json(index, &mut out).map_err(|e| {
            if e.is_io() {
                // The file system's own error (a full disk says so), as serde_json kept it.
                StoreError::io(&path, io::Error::from(e))
            } else {
                StoreError::Json {
                    what: path.display().to_string(),
                    message: e.to_string(),
                }
            }
        })?;
        out.inner.flush().map_err(|e| StoreError::io(&path, e))?;
        out.hasher.finish()
    };
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io(tmp.path(), e))?;
    // linuxkit creates index.json with os.ModePerm (before umask); keep it world-readable.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
    }
    let file = tmp
        .persist(&path)
        .map_err(|e| StoreError::io(&path, e.error))?;
    let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
    blobs::sync_dir(root)?;
    Ok(stamp_of(&meta, Some(sha256)))
}

/// A writer that hashes what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(bytes)?;
        self.hasher.update(&bytes[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `index.json` as read under the lock: the index this process last wrote, when the file's
/// bytes are still those ([`LastWritten`]), else the bytes to parse.
pub(crate) enum Contents {
    Remembered(ImageIndex),
    Bytes(Vec<u8>),
}

/// Reads `index.json` with the stamp of what was read. The file is hashed first, streaming;
/// only when its bytes are not the ones this process wrote are they read into memory.
pub(crate) fn read_known(
    root: &Path,
    known: &LastWritten,
) -> Result<(Contents, IndexStamp), StoreError> {
    let path = root.join(INDEX_FILE);
    let mut file = File::open(&path).map_err(|e| StoreError::io(&path, e))?;
    let meta = file.metadata().map_err(|e| StoreError::io(&path, e))?;
    let mut hasher = Hasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::io(&path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sha256 = hasher.finish();
    if let Some(index) = known.take(&sha256) {
        return Ok((Contents::Remembered(index), stamp_of(&meta, Some(sha256))));
    }
    let (bytes, stamp) = read_raw(root)?;
    Ok((Contents::Bytes(bytes), stamp))
}

/// The index this process last wrote, by the sha256 of its bytes: a publication reads
/// `index.json` back (hashing it: another tool may have written it since), and when the bytes
/// are the ones written it takes this instead of parsing them again, which is most of a
/// publication's cost in a large cache. Keyed by content, so it is never stale.
#[derive(Debug, Default)]
pub(crate) struct LastWritten(std::sync::Mutex<Option<(Digest, ImageIndex)>>);

impl LastWritten {
    pub(crate) fn remember(&self, sha256: Digest, index: ImageIndex) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some((sha256, index));
        }
    }

    /// The index whose bytes hash to `sha256`, if it is the one remembered (taken: the caller
    /// changes it, and remembers what it writes).
    pub(crate) fn take(&self, sha256: &Digest) -> Option<ImageIndex> {
        let mut slot = self.0.lock().ok()?;
        match slot.take() {
            Some((remembered, index)) if remembered == *sha256 => Some(index),
            other => {
                *slot = other;
                None
            }
        }
    }
}
