//! `cache gc` and `cache du`: reclaiming space and accounting for it.
//!
//! `gc` runs under the cache lock:
//! 1. with `max_size`, names are removed least recently used first (last publish or
//!    [`Store::touch`]; names used within `keep_duration` are never trimmed) until the blobs
//!    still reachable fit in `max_size`;
//! 2. every blob file no `index.json` entry reaches, not pinned by a live ingest, and older than
//!    `keep_duration`, is deleted;
//! 3. temporary files older than an hour (writers keep theirs fresh) and dead pins are removed.
//!
//! `du` charges each name the blobs its closure reaches: `unique` bytes are reached by no other
//! `index.json` entry, `shared` bytes are reached by others too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use super::{Store, StoreError, blobs, db, ingest, now_ms};
use lkpkg_cache_format::digest::Digest;

/// What `gc` may remove.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    /// Protects names used, and unreachable blobs written, within this long.
    pub keep_duration: Option<Duration>,
    /// Trims least recently used names until reachable blobs fit.
    pub max_size: Option<u64>,
}

/// What `gc` removed.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    pub removed_names: Vec<String>,
    pub removed_blobs: Vec<(Digest, u64)>,
    pub freed_bytes: u64,
    pub remaining_bytes: u64,
    pub removed_temp_files: usize,
}

/// One name's share of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameUsage {
    pub name: String,
    pub total: u64,
    pub unique: u64,
    pub shared: u64,
}

/// `du`'s answer.
#[derive(Debug, Clone, Default)]
pub struct UsageReport {
    pub names: Vec<NameUsage>,
    /// Bytes of every blob file on disk.
    pub blob_bytes: u64,
    /// Bytes of blobs no entry reaches.
    pub unreachable_bytes: u64,
}

const TEMP_FILE_AGE: Duration = Duration::from_secs(3600);

impl Store {
    /// Space per name; see the module docs.
    pub fn usage(&self) -> Result<UsageReport, StoreError> {
        self.ensure_fresh()?;
        let (bytes, _) = super::index_json::read_raw(self.root())?;
        let index = super::index_json::parse(self.root(), &bytes)?;
        let closures: Vec<_> = index
            .manifests
            .iter()
            .map(|entry| (entry.ref_name().map(str::to_owned), self.closure(entry)))
            .collect();
        let mut counts: BTreeMap<Digest, u64> = BTreeMap::new();
        for (_, closure) in &closures {
            for digest in closure.blobs.keys() {
                *counts.entry(*digest).or_default() += 1;
            }
        }
        let mut report = UsageReport::default();
        for (name, closure) in closures {
            let Some(name) = name else { continue };
            let mut usage = NameUsage {
                name,
                total: 0,
                unique: 0,
                shared: 0,
            };
            for (digest, (_, size)) in &closure.blobs {
                usage.total += size;
                if counts.get(digest).copied().unwrap_or(0) <= 1 {
                    usage.unique += size;
                } else {
                    usage.shared += size;
                }
            }
            report.names.push(usage);
        }
        report.names.sort_by(|a, b| a.name.cmp(&b.name));
        for (digest, size, _) in blobs::list(self.root())? {
            report.blob_bytes += size;
            if !counts.contains_key(&digest) {
                report.unreachable_bytes += size;
            }
        }
        Ok(report)
    }

    /// Garbage collection; see the module docs.
    pub fn gc(&self, options: &GcOptions) -> Result<GcReport, StoreError> {
        let lock = self.lock()?;
        let mut index = self.sync_locked(&lock)?;
        let mut report = GcReport::default();
        let now = SystemTime::now();
        let keep = options.keep_duration.unwrap_or_default();
        let keep_ms = keep.as_millis() as u64;

        if let Some(max_size) = options.max_size {
            let mut closures: Vec<(Option<String>, BTreeMap<Digest, u64>)> = index
                .manifests
                .iter()
                .map(|e| {
                    let sizes = self
                        .closure(e)
                        .blobs
                        .into_iter()
                        .map(|(d, (_, s))| (d, s))
                        .collect();
                    (e.ref_name().map(str::to_owned), sizes)
                })
                .collect();
            let mut counts: BTreeMap<Digest, (u64, u64)> = BTreeMap::new();
            for (_, sizes) in &closures {
                for (d, s) in sizes {
                    counts.entry(*d).or_insert((0, *s)).0 += 1;
                }
            }
            let mut total: u64 = counts.values().map(|(_, s)| s).sum();
            let mut by_use: Vec<(u64, String)> = self
                .ref_records()?
                .into_iter()
                .map(|(n, r)| (r.last_use_ms, n))
                .collect();
            by_use.sort();
            let now_ms = now_ms();
            let mut doomed = Vec::new();
            for (last_use, name) in by_use {
                if total <= max_size {
                    break;
                }
                if now_ms.saturating_sub(last_use) < keep_ms {
                    continue;
                }
                for (entry_name, sizes) in closures.iter_mut() {
                    if entry_name.as_deref() != Some(name.as_str()) {
                        continue;
                    }
                    for d in std::mem::take(sizes).into_keys() {
                        if let Some((count, size)) = counts.get_mut(&d) {
                            *count -= 1;
                            if *count == 0 {
                                total -= *size;
                            }
                        }
                    }
                }
                doomed.push(name);
            }
            if !doomed.is_empty() {
                // Removing names deletes the blobs nothing else reaches: they are reported
                // as freed here (the sweep below finds them gone).
                let before = blobs::list(self.root())?;
                self.update_names_locked(&lock, index, Vec::new(), &doomed, None)?;
                for (digest, size, _) in before {
                    if !self.blob_path(&digest).exists() {
                        report.freed_bytes += size;
                        report.removed_blobs.push((digest, size));
                    }
                }
                report.removed_names = doomed;
                index = self.sync_locked(&lock)?;
            }
        }

        let mut reachable: BTreeSet<Digest> = BTreeSet::new();
        for entry in &index.manifests {
            reachable.extend(self.closure(entry).blobs.into_keys());
        }
        let pinned = self.pinned_digests()?;
        for (digest, size, modified) in blobs::list(self.root())? {
            if reachable.contains(&digest) || pinned.contains(&digest) {
                report.remaining_bytes += size;
                continue;
            }
            let age = now.duration_since(modified).unwrap_or_default();
            if age < keep {
                report.remaining_bytes += size;
                continue;
            }
            let path = self.blob_path(&digest);
            std::fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            report.freed_bytes += size;
            report.removed_blobs.push((digest, size));
        }

        let tmp_dir = self.root().join(blobs::TMP_DIR);
        if let Ok(entries) = std::fs::read_dir(&tmp_dir) {
            for entry in entries.flatten() {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .map(|m| now.duration_since(m).unwrap_or_default() > TEMP_FILE_AGE)
                    .unwrap_or(false);
                if old && std::fs::remove_file(entry.path()).is_ok() {
                    report.removed_temp_files += 1;
                }
            }
        }

        let txn = self.database().begin_write().map_err(|e| self.db_err(e))?;
        {
            let mut pending = txn.open_table(db::PENDING).map_err(|e| self.db_err(e))?;
            let now_ms = now_ms();
            pending
                .retain(|k, v| ingest::pin_is_live(k, v, now_ms))
                .map_err(|e| self.db_err(e))?;
            let mut table = txn.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
            for (digest, _) in &report.removed_blobs {
                table
                    .remove(digest.to_string().as_str())
                    .map_err(|e| self.db_err(e))?;
            }
        }
        txn.commit().map_err(|e| self.db_err(e))?;
        Ok(report)
    }
}
