//! Blob files: `blobs/sha256/<hex>`, written through a verified temporary file.
//!
//! A blob is streamed into a temporary file in `<cache>/lkpkg-tmp/` (same filesystem, so the
//! final rename is atomic) while its sha256 is computed; the file is `fsync`ed, then linked into
//! place with a no-clobber rename (`renameat2(RENAME_NOREPLACE)` or link+unlink): a blob that is
//! already present is never overwritten, and a half-written blob never has its final name. The
//! directory entry itself is made durable later, once per published name (see the store's
//! crash-safety argument), by [`sync_dir`].

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use lkpkg_cache_format::digest::{Digest, Hasher};
use lkpkg_cache_format::layout::BLOBS_DIR;

use super::StoreError;

/// The directory of temporary files, inside the cache.
pub(crate) const TMP_DIR: &str = "lkpkg-tmp";

/// `<root>/blobs/sha256/<hex>`.
pub(crate) fn blob_file(root: &Path, digest: &Digest) -> PathBuf {
    root.join(BLOBS_DIR).join(digest.hex())
}

/// `<kind><pid>-`: a temporary file's name says which process writes it, so that what a
/// killed writer left can be told from what a live one is writing ([`remove_dead_temps`]).
pub(crate) fn temp_prefix(kind: &str) -> String {
    format!("{kind}{}-", std::process::id())
}

/// Removes the temporary files (`<kind><pid>-…`) in `dir` whose writer is dead: what a killed
/// lkpkg left (a blob being streamed, an `index.json` being replaced). A live writer's files
/// are kept; so are names without a pid (older lkpkg: `gc` removes those after an hour).
pub(crate) fn remove_dead_temps(dir: &Path, kinds: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    if !Path::new("/proc/self").exists() {
        return;
    }
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(rest) = kinds.iter().find_map(|k| name.strip_prefix(k)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// A blob being written: a temporary file and the running hash of what went into it.
pub struct TempBlob {
    file: tempfile::NamedTempFile,
    hasher: Hasher,
    size: u64,
}

impl TempBlob {
    pub fn create(root: &Path) -> Result<TempBlob, StoreError> {
        let dir = root.join(TMP_DIR);
        let file = tempfile::Builder::new()
            .prefix(&temp_prefix("blob-"))
            .tempfile_in(&dir)
            .map_err(|e| StoreError::io(&dir, e))?;
        Ok(TempBlob {
            file,
            hasher: Hasher::new(),
            size: 0,
        })
    }

    /// Copies all of `reader` in, hashing as it goes.
    pub fn copy_from(&mut self, mut reader: impl Read) -> Result<(), StoreError> {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(StoreError::io(Path::new("<input stream>"), e)),
            };
            self.write_all(&buf[..n])
                .map_err(|e| StoreError::io(self.file.path(), e))?;
        }
    }

    /// Flushes and `fsync`s the data; returns the file and what it holds.
    pub fn finish(self) -> Result<(tempfile::NamedTempFile, Digest, u64), StoreError> {
        self.file
            .as_file()
            .sync_all()
            .map_err(|e| StoreError::io(self.file.path(), e))?;
        Ok((self.file, self.hasher.finish(), self.size))
    }
}

impl Write for TempBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Through the `File` itself: `NamedTempFile`'s own writes add the path to the error,
        // which `StoreError::io` already says.
        let n = self.file.as_file_mut().write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_file_mut().flush()
    }
}

/// Links a finished temporary file in as `digest` unless that blob is present.
/// Returns whether this call created the blob.
pub(crate) fn install(
    root: &Path,
    file: tempfile::NamedTempFile,
    digest: &Digest,
) -> Result<bool, StoreError> {
    let target = blob_file(root, digest);
    if target.exists() {
        return Ok(false);
    }
    match file.persist_noclobber(&target) {
        Ok(_) => Ok(true),
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(StoreError::io(&target, e.error)),
    }
}

/// `fsync` of a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(dir, e))
}

/// Hashes a blob file, returning its digest and size.
pub(crate) fn hash_file(path: &Path) -> Result<(Digest, u64), StoreError> {
    let mut file = File::open(path).map_err(|e| StoreError::io(path, e))?;
    let mut hasher = Hasher::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(|e| StoreError::io(path, e))?;
        if n == 0 {
            return Ok((hasher.finish(), size));
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
}

/// The blob files present, by digest (temporary and foreign names are skipped).
pub(crate) fn list(root: &Path) -> Result<Vec<(Digest, u64, std::time::SystemTime)>, StoreError> {
    let dir = root.join(BLOBS_DIR);
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::io(&dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(&dir, e))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let Ok(digest) = Digest::from_hex(&name) else {
            continue;
        };
        let meta = entry
            .metadata()
            .map_err(|e| StoreError::io(&entry.path(), e))?;
        if meta.is_file() {
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            out.push((digest, meta.len(), modified));
        }
    }
    out.sort_by_key(|(d, _, _)| *d);
    Ok(out)
}
