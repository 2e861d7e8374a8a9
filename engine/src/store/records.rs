//! Build records in the redb index: `build_records` (build key → record) and `unit_builds`
//! (unit → key of its last build).
//!
//! Writes take the cache lock, as every redb write does (see the store's locking design);
//! reads use a snapshot and take no lock. A record is written only after its image is
//! published, so a record never points at content the cache does not have at that moment; a
//! later `rm` or `gc` may remove the content, which is why freshness always checks that the
//! record's manifest and its closure are still present.

use lkpkg_cache_format::build_record::BuildRecord;
use redb::ReadableDatabase;

use super::db::{BUILD_RECORDS, UNIT_BUILDS};
use super::{Store, StoreError};

/// What [`Store::unit_state`] read.
#[derive(Debug)]
pub struct UnitState {
    pub record: Option<BuildRecord>,
    pub current: Option<lkpkg_cache_format::layout::Descriptor>,
    pub last_key: Option<[u8; 32]>,
}

impl Store {
    /// The record of a build key, if any (an undecodable record counts as none).
    pub fn build_record(&self, key: &[u8; 32]) -> Result<Option<BuildRecord>, StoreError> {
        let read = self.database().begin_read().map_err(|e| self.db_err(e))?;
        let table = match read.open_table(BUILD_RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.db_err(e)),
        };
        let value = table.get(key).map_err(|e| self.db_err(e))?;
        Ok(value.and_then(|v| BuildRecord::decode(v.value()).ok()))
    }

    /// The last record of a unit, with its key.
    pub fn last_build(&self, unit: &str) -> Result<Option<([u8; 32], BuildRecord)>, StoreError> {
        let key = {
            let read = self.database().begin_read().map_err(|e| self.db_err(e))?;
            let table = match read.open_table(UNIT_BUILDS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(self.db_err(e)),
            };
            match table.get(unit).map_err(|e| self.db_err(e))? {
                Some(v) => *v.value(),
                None => return Ok(None),
            }
        };
        Ok(self.build_record(&key)?.map(|r| (key, r)))
    }

    /// Records a build (under the cache lock) and makes it the unit's last build.
    pub fn put_build_record(&self, key: &[u8; 32], record: &BuildRecord) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let txn = self.database().begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut records = txn.open_table(BUILD_RECORDS).map_err(|e| self.db_err(e))?;
            records
                .insert(key, record.encode().as_slice())
                .map_err(|e| self.db_err(e))?;
            let mut units = txn.open_table(UNIT_BUILDS).map_err(|e| self.db_err(e))?;
            units
                .insert(record.unit.as_str(), key)
                .map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// Makes an existing record the unit's last build (a revert reusing an older build).
    pub fn set_last_build(&self, unit: &str, key: &[u8; 32]) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let txn = self.database().begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut units = txn.open_table(UNIT_BUILDS).map_err(|e| self.db_err(e))?;
            units.insert(unit, key).map_err(|e| self.db_err(e))?;
        }
        txn.commit().map_err(|e| self.db_err(e))
    }

    /// What deciding a unit reads, in one snapshot: the record of `key`, the descriptor the
    /// unit's cache `name` points at, and the key of the unit's last build. The caller checks
    /// that the index is fresh ([`Store::ensure_fresh`]) once, before deciding many units.
    pub fn unit_state(
        &self,
        key: &[u8; 32],
        name: &str,
        unit: &str,
    ) -> Result<UnitState, StoreError> {
        let read = self.database().begin_read().map_err(|e| self.db_err(e))?;
        let record = match read.open_table(BUILD_RECORDS) {
            Ok(table) => table
                .get(key)
                .map_err(|e| self.db_err(e))?
                .and_then(|v| BuildRecord::decode(v.value()).ok()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.db_err(e)),
        };
        let refs = read
            .open_table(super::db::REFS)
            .map_err(|e| self.db_err(e))?;
        let current = refs
            .get(name)
            .map_err(|e| self.db_err(e))?
            .and_then(|v| lkpkg_cache_format::index_db::RefRecord::decode(v.value()).ok())
            .map(|r| r.descriptor);
        let last_key = match read.open_table(UNIT_BUILDS) {
            Ok(table) => table
                .get(unit)
                .map_err(|e| self.db_err(e))?
                .map(|v| *v.value()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.db_err(e)),
        };
        Ok(UnitState {
            record,
            current,
            last_key,
        })
    }

    /// Points `name` at `descriptor` (publishing it), as when a record's image is reused.
    pub fn point_name(
        &self,
        name: &str,
        descriptor: &lkpkg_cache_format::layout::Descriptor,
    ) -> Result<(), StoreError> {
        self.ingest()
            .publish(vec![(name.to_owned(), descriptor.clone())])
    }
}
