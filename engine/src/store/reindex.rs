//! redb kept an index of `index.json`: the stamp comparison every operation starts with, and
//! the re-index when another tool changed the file (see "`index.json` is the truth, redb is an
//! index of it" in the store's docs).

use crate::store::Consistent;
use std::collections::BTreeMap;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::{self as format, BlobRecord, IndexStamp, RefRecord};
use lkpkg_cache_format::layout::ImageIndex;
use redb::{ReadableDatabase, ReadableTable};

use super::{Store, StoreError, db, index_json, now_ms};

impl Store {
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
        let guard = self.lock_for_reading()?;
        self.sync_locked(&guard)?;
        Ok(())
    }

    /// Under the lock: reads `index.json`, re-indexing if its content differs from what redb
    /// indexed (or just refreshing the stamp if only its `stat` changed). Returns the index.
    pub(crate) fn sync_locked(&self, lock: &impl Consistent) -> Result<ImageIndex, StoreError> {
        if index_json::stat(&self.root)?.is_none() {
            let names = self.names_in_db()?;
            if names > 0 {
                return Err(StoreError::IndexJsonMissing {
                    root: self.root.clone(),
                    names,
                });
            }
            // An empty cache: a reader of a read-only one sees it empty, a writer creates it.
            let Some(writer) = lock.writer() else {
                return Ok(ImageIndex::empty());
            };
            index_json::write(&self.root, &ImageIndex::empty(), writer)?;
        }
        let (contents, stamp) = index_json::read_known(&self.root, &self.last_written)?;
        let parsed = match contents {
            index_json::Contents::Remembered(index) => Ok(index),
            index_json::Contents::Bytes(bytes) => index_json::parse(&self.root, &bytes),
        };
        let index = match parsed {
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
            _ => self.rebuild_locked(&index, &stamp, lock)?,
        }
        Ok(index)
    }

    /// Under the lock: rebuilds redb from `index.json` unconditionally.
    pub(crate) fn reindex_locked(&self, lock: &impl Consistent) -> Result<(), StoreError> {
        let (bytes, stamp) = index_json::read_raw(&self.root)?;
        let index = index_json::parse(&self.root, &bytes)?;
        self.rebuild_locked(&index, &stamp, lock)
    }

    fn rebuild_locked(
        &self,
        index: &ImageIndex,
        stamp: &IndexStamp,
        _lock: &impl Consistent,
    ) -> Result<(), StoreError> {
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

    /// How many names redb lists (0 for a database that does not have the table yet).
    pub(super) fn names_in_db(&self) -> Result<usize, StoreError> {
        use redb::ReadableTableMetadata;
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        match read.open_table(db::REFS) {
            Ok(refs) => Ok(refs.len().map_err(|e| self.db_err(e))? as usize),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(self.db_err(e)),
        }
    }
}
