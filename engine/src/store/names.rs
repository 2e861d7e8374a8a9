//! Names: lookups by exact name, what a user typed resolved to a name, the list of names with
//! their redb records, and their last use. Reads take no lock (see the store's locking docs).

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::RefRecord;
use lkpkg_cache_format::layout::Descriptor;
use lkpkg_cache_format::reference;
use redb::{ReadableDatabase, ReadableTable};

use super::{Store, StoreError, db, now_ms};

impl Store {
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

    /// Marks names as used now (for `gc --max-size`'s least-recently-used order).
    pub fn touch(&self, names: &[String]) -> Result<(), StoreError> {
        let lock = self.lock()?;
        self.sync_locked(&lock)?;
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
}
