//! Publishing and removing names under the lock: closures checked whole, `index.json`
//! replaced, reference counts updated in the same redb commit, and blobs deleted only after it
//! (steps 3 and 4 of the store's crash-safety argument); `clean`, and the pins they respect.

use crate::store::CacheLock;
use std::collections::{BTreeMap, BTreeSet};
use std::io;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::{self as format, BlobRecord, RefRecord};
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, REF_NAME_ANNOTATION};
use lkpkg_cache_format::reference;
use redb::{ReadableDatabase, ReadableTable};

use super::publications::Publication;
use super::{Ingest, Store, StoreError, blobs, db, index_json, ingest, now_ms};

impl Store {
    /// Starts an ingest session: blobs written through it are pinned until it is dropped.
    pub fn ingest(&self) -> Ingest<'_> {
        Ingest::new(self)
    }

    /// Removes names (exact stored names). Blobs no other name reaches are deleted.
    /// Returns the names that were present.
    pub fn remove_names(&self, names: &[String]) -> Result<Vec<String>, StoreError> {
        let lock = self.lock()?;
        let index = self.sync_locked(&lock)?;
        let present: Vec<String> = names
            .iter()
            .filter(|n| index.manifests.iter().any(|m| m.ref_name() == Some(n)))
            .cloned()
            .collect();
        if present.is_empty() {
            return Ok(present);
        }
        self.update_names_locked(&lock, index, Vec::new(), &present, None)?;
        Ok(present)
    }

    /// Removes everything: every name and every blob (linuxkit's `cache clean` removes the
    /// directory; lkpkg empties it under the lock so concurrent users see an empty cache).
    pub fn clean(&self) -> Result<(), StoreError> {
        let lock = self.lock()?;
        let stamp = index_json::write(&self.root, &ImageIndex::empty(), &lock)?;
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

    /// Checks one name before it is published: the name is one a registry, the engine and
    /// linuxkit accept, and its closure is present and is what its descriptors say.
    pub(crate) fn check_entry(
        &self,
        name: String,
        mut desc: Descriptor,
    ) -> Result<CheckedEntry, StoreError> {
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
        desc.annotations
            .insert(REF_NAME_ANNOTATION.to_owned(), name.clone());
        Ok(CheckedEntry {
            name,
            desc,
            blobs: closure.blobs,
        })
    }

    /// Under the lock: sets `set` names (replacing every entry with each name, like linuxkit's
    /// `DescriptorWrite`) and removes `remove` names, with refcounts and blob deletion.
    pub(crate) fn update_names_locked(
        &self,
        lock: &CacheLock,
        index: ImageIndex,
        set: Vec<(String, Descriptor)>,
        remove: &[String],
        ingest_pins: Option<&BTreeSet<Digest>>,
    ) -> Result<(), StoreError> {
        // New closures must be whole before anything is published.
        let checked = set
            .into_iter()
            .map(|(name, desc)| self.check_entry(name, desc))
            .collect::<Result<Vec<_>, _>>()?;
        self.apply_locked(lock, index, checked, remove, ingest_pins)
    }

    /// [`Store::update_names_locked`] of entries already checked ([`Store::check_entry`]):
    /// one `index.json` replacement and one redb commit, however many names.
    pub(crate) fn apply_locked(
        &self,
        lock: &CacheLock,
        mut index: ImageIndex,
        set: Vec<CheckedEntry>,
        remove: &[String],
        ingest_pins: Option<&BTreeSet<Digest>>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut new_entries = Vec::new();
        let mut increments: BTreeMap<Digest, (String, u64, u64)> = BTreeMap::new();
        for entry in set {
            for (digest, (media_type, size)) in entry.blobs {
                increments.entry(digest).or_insert((media_type, size, 0)).2 += 1;
            }
            new_entries.push((entry.name, entry.desc));
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
        let stamp = index_json::write(&self.root, &index, lock)?;
        // The next publication reads these bytes back; it need not parse them again.
        if let Some(sha256) = stamp.sha256 {
            self.last_written.remember(sha256, index);
        }

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

    /// Publishes names under the lock (the ingest path goes through [`Ingest::publish`]),
    /// with whatever other threads publish meanwhile (a group commit; see the store's
    /// crash-safety step 3).
    pub fn set_names(&self, set: Vec<(String, Descriptor)>) -> Result<(), StoreError> {
        self.publish(Publication::Names(set)).map(drop)
    }
}

/// A name ready to publish: checked, annotated with its name, with the blobs it reaches.
#[derive(Debug)]
pub(crate) struct CheckedEntry {
    pub(crate) name: String,
    pub(crate) desc: Descriptor,
    pub(crate) blobs: BTreeMap<Digest, (String, u64)>,
}
