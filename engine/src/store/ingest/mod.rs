//! Writing images into the store: ingest sessions, the OCI archives builds export, `docker
//! save` archives (for `cache import`), multi-arch indexes.
//!
//! A build's image arrives as the OCI layout tar BuildKit's `oci` exporter streams
//! ([`Store::ingest_oci_archive`]): every blob is written as it comes, verified against its
//! name, then the manifest of the unit's platform is checked whole and published under the
//! per-arch name.
//!
//! An [`Ingest`] is one writer's session. Each blob it writes is streamed into a temporary file
//! (hashed and `fsync`ed outside the lock), then, under the cache lock, *pinned* in redb's
//! `pending` table (key `sha256:<hex>/<pid>-<nonce>`, value a deadline in unix ms) and renamed
//! into place. `rm` and `gc` never delete a pinned blob, so content the session relies on
//! cannot vanish between its write and the publication of the name. Pins are removed when the
//! session is dropped; a crashed writer's pins die with its pid (checked in `/proc`) or at the
//! deadline.

mod archive;
mod docker_save;
mod oci_archive;

use crate::store::CacheLock;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::Descriptor;

pub(crate) use archive::{ArchiveContents, normalize};

use super::blobs::{self, TempBlob};
use super::publications::Publication;
use super::{Store, StoreError, db, now_ms};

/// How long a pin protects a blob if its writer is still alive: one day.
const PIN_LIFETIME_MS: u64 = 24 * 3600 * 1000;

/// Whether a `pending` entry still protects its blob.
pub(crate) fn pin_is_live(key: &str, deadline_ms: u64, now: u64) -> bool {
    if deadline_ms <= now {
        return false;
    }
    let pid = key
        .split('/')
        .nth(1)
        .and_then(|id| id.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) if Path::new("/proc/self").exists() => {
            Path::new(&format!("/proc/{pid}")).exists()
        }
        _ => true,
    }
}

/// One writer's session; see the module docs.
pub struct Ingest<'s> {
    store: &'s Store,
    id: String,
    pins: BTreeSet<Digest>,
}

impl std::fmt::Debug for Ingest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest").field("id", &self.id).finish()
    }
}

impl<'s> Ingest<'s> {
    pub(crate) fn new(store: &'s Store) -> Ingest<'s> {
        static NONCE: AtomicU64 = AtomicU64::new(0);
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{}{}", std::process::id(), now_ms(), nonce);
        Ingest {
            store,
            id,
            pins: BTreeSet::new(),
        }
    }

    /// Streams a blob in. With `expected`, the content must hash to it.
    pub fn put_blob(
        &mut self,
        reader: impl Read,
        expected: Option<&Digest>,
    ) -> Result<(Digest, u64), StoreError> {
        let mut tmp = TempBlob::create(self.store.root())?;
        tmp.copy_from(reader)?;
        let (file, digest, size) = tmp.finish()?;
        if let Some(expected) = expected
            && *expected != digest
        {
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        let lock = self.store.lock()?;
        self.pin_and_install_locked(&lock, file, &digest)?;
        Ok((digest, size))
    }

    /// A temporary blob file for a writer that streams the content itself (a download);
    /// hand it back with [`Ingest::put_temp`].
    pub fn temp_blob(&self) -> Result<TempBlob, StoreError> {
        TempBlob::create(self.store.root())
    }

    /// Installs a blob streamed into `tmp`, which must hash to `expected`.
    pub fn put_temp(&mut self, tmp: TempBlob, expected: &Digest) -> Result<u64, StoreError> {
        let (file, digest, size) = tmp.finish()?;
        if *expected != digest {
            return Err(StoreError::DigestMismatch {
                expected: *expected,
                actual: digest,
            });
        }
        let lock = self.store.lock()?;
        self.pin_and_install_locked(&lock, file, &digest)?;
        Ok(size)
    }

    /// Writes a small blob from memory.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_blob(bytes, None)
    }

    /// Pins blobs already in the cache that this session reads (a build's named contexts:
    /// the base images the builder fetches from the session's content store while it
    /// solves), so that `rm`, `gc` and `clean` running meanwhile leave them. Under the lock,
    /// each must be present: a blob another process removed before the pin is
    /// [`StoreError::MissingBlob`] of `what`.
    pub fn pin_present(
        &mut self,
        what: &str,
        digests: impl IntoIterator<Item = Digest>,
    ) -> Result<(), StoreError> {
        let wanted: BTreeSet<Digest> = digests
            .into_iter()
            .filter(|d| !self.pins.contains(d))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let store = self.store;
        let _lock = store.lock()?;
        if let Some(missing) = wanted.iter().find(|d| !store.blob_path(d).exists()) {
            return Err(StoreError::MissingBlob {
                name: what.to_owned(),
                digest: *missing,
            });
        }
        let txn = store
            .database()
            .begin_write()
            .map_err(|e| store.db_err(e))?;
        {
            let mut pending = txn.open_table(db::PENDING).map_err(|e| store.db_err(e))?;
            let deadline = now_ms() + PIN_LIFETIME_MS;
            for digest in &wanted {
                let key = format!("{digest}/{}", self.id);
                pending
                    .insert(key.as_str(), deadline)
                    .map_err(|e| store.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| store.db_err(e))?;
        self.pins.extend(wanted);
        Ok(())
    }

    fn pin_and_install_locked(
        &mut self,
        _lock: &CacheLock,
        file: tempfile::NamedTempFile,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let store = self.store;
        if !self.pins.contains(digest) {
            let txn = store
                .database()
                .begin_write()
                .map_err(|e| store.db_err(e))?;
            {
                let mut pending = txn.open_table(db::PENDING).map_err(|e| store.db_err(e))?;
                let key = format!("{digest}/{}", self.id);
                pending
                    .insert(key.as_str(), now_ms() + PIN_LIFETIME_MS)
                    .map_err(|e| store.db_err(e))?;
            }
            txn.commit().map_err(|e| store.db_err(e))?;
            self.pins.insert(*digest);
        }
        blobs::install(store.root(), file, digest)?;
        Ok(())
    }

    /// Publishes names (each replaces every entry with that name), once all their blobs are
    /// present and durable; committed with what other threads publish meanwhile (a group
    /// commit; see the store's crash-safety step 3).
    pub fn publish(&mut self, names: Vec<(String, Descriptor)>) -> Result<(), StoreError> {
        self.store.publish(Publication::Names(names)).map(drop)
    }

    /// Writes (or extends) the multi-arch index under `full_name`: entries of the current
    /// index whose os/arch/variant match a new manifest are replaced, others kept, attestation
    /// manifests pointing at a replaced image dropped. The old index blob stays if another name
    /// still reaches it. Returns the new index descriptor.
    pub fn merge_index(
        &mut self,
        full_name: &str,
        manifests: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        for m in manifests {
            if m.platform.is_none() {
                return Err(StoreError::BadArchive(format!(
                    "manifest `{}` for `{full_name}` has no platform",
                    m.digest
                )));
            }
        }
        let written = self.store.publish(Publication::Index {
            name: full_name.to_owned(),
            manifests: manifests.to_vec(),
            annotations: annotations.clone(),
        })?;
        written.ok_or_else(|| StoreError::Internal("an index publication wrote no index".into()))
    }
}

impl Drop for Ingest<'_> {
    fn drop(&mut self) {
        if self.pins.is_empty() {
            return;
        }
        // Best effort: a pin left behind expires with this process.
        let Ok(_lock) = self.store.lock() else { return };
        let store = self.store;
        let Ok(txn) = store.database().begin_write() else {
            return;
        };
        if let Ok(mut pending) = txn.open_table(db::PENDING) {
            for digest in &self.pins {
                let key = format!("{digest}/{}", self.id);
                let _ = pending.remove(key.as_str());
            }
        }
        let _ = txn.commit();
    }
}

impl Store {
    /// Writes or merges the multi-arch index under `full_name`; see [`Ingest::merge_index`].
    pub fn merge_index(
        &self,
        full_name: &str,
        manifests: &[Descriptor],
    ) -> Result<Descriptor, StoreError> {
        self.ingest()
            .merge_index(full_name, manifests, &BTreeMap::new())
    }

    /// [`Store::merge_index`], with annotations on the index itself (the index's, not its
    /// entries': a package build records its source and revision there).
    pub fn merge_index_annotated(
        &self,
        full_name: &str,
        manifests: &[Descriptor],
        annotations: &BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        self.ingest().merge_index(full_name, manifests, annotations)
    }
}

/// How many pins are recorded (live or not).
#[cfg(test)]
pub(crate) fn pinned_count(store: &Store) -> usize {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let read = store.database().begin_read().unwrap();
    let table = read.open_table(db::PENDING).unwrap();
    table.len().unwrap() as usize
}
