//! `cache verify [--repair]`: checks the store against its invariants.
//!
//! Checked:
//! - every blob file hashes to its name. Blob files are immutable under their names (installed
//!   by a rename that never clobbers, removed only by deletion), so this, the long part on a
//!   large cache, runs without the cache lock: builds and imports publish meanwhile, a blob
//!   deleted meanwhile (`rm`, `gc`) is skipped, and `--repair` hashes a corrupt one again under
//!   the lock before it moves it;
//!
//! and under the cache lock, so that the picture is consistent:
//! - every `index.json` entry's closure is present;
//! - `index.json` and redb agree: the same names with the same root descriptors, and every blob
//!   record's reference count equals the number of entries reaching the blob.
//!
//! `--repair` restores agreement without deleting named content: a corrupt blob is moved to
//! `<cache>/lkpkg-quarantine/` (so re-importing or rebuilding the image writes it afresh; a
//! corrupt blob was not content anyway), then redb is rebuilt from `index.json`, which is the
//! truth. Missing blobs cannot be repaired here; names are never removed.

use crate::store::{Consistent, ReadGuard};
use std::collections::BTreeMap;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex};

use super::{Store, StoreError, blobs, index_json};

/// The quarantine directory for corrupt blobs, inside the cache.
pub(crate) const QUARANTINE_DIR: &str = "lkpkg-quarantine";

/// What hashing the blob files found.
#[derive(Debug, Default)]
pub(crate) struct HashedBlobs {
    pub(crate) checked: usize,
    /// [`Problem::CorruptBlob`]s.
    pub(crate) corrupt: Vec<Problem>,
}

/// One violated invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    CorruptBlob {
        digest: Digest,
        actual: Digest,
    },
    MissingBlob {
        name: String,
        digest: Digest,
    },
    NameUnknownToIndexDb {
        name: String,
    },
    NameUnknownToIndexJson {
        name: String,
    },
    NameDiffers {
        name: String,
    },
    RefcountDiffers {
        digest: Digest,
        expected: u64,
        recorded: u64,
    },
    /// `index.json` is missing while the database lists names (repair writes it back from
    /// them).
    IndexJsonMissing {
        names: usize,
    },
    /// `index.json` does not parse while the database lists names (repair sets it aside as
    /// `index.json.unreadable-<ms>` and writes it back from them).
    IndexJsonUnreadable {
        names: usize,
        why: String,
    },
    /// A blob an entry reaches is not what its descriptor says (size, or not a manifest).
    BadContent {
        name: String,
        digest: Digest,
        why: String,
    },
    /// A name outside the reference grammar (no registry or engine would take it).
    InvalidName {
        name: String,
        why: String,
    },
}

impl Problem {
    /// Whether `--repair` fixes it.
    pub fn is_repairable(&self) -> bool {
        !matches!(
            self,
            Problem::MissingBlob { .. } | Problem::BadContent { .. } | Problem::InvalidName { .. }
        )
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::CorruptBlob { digest, actual } => {
                write!(f, "corrupt blob `{digest}`: content hashes to `{actual}`")
            }
            Problem::MissingBlob { name, digest } => {
                write!(f, "missing blob `{digest}` needed by `{name}`")
            }
            Problem::NameUnknownToIndexDb { name } => {
                write!(f, "`{name}` is in index.json but not in the redb index")
            }
            Problem::NameUnknownToIndexJson { name } => {
                write!(f, "`{name}` is in the redb index but not in index.json")
            }
            Problem::NameDiffers { name } => {
                write!(
                    f,
                    "`{name}` points elsewhere in index.json than in the redb index"
                )
            }
            Problem::RefcountDiffers {
                digest,
                expected,
                recorded,
            } => write!(
                f,
                "blob `{digest}` is reached by {expected} entries, the redb index says {recorded}"
            ),
            Problem::BadContent { name, digest, why } => {
                write!(f, "blob `{digest}` of `{name}`: {why}")
            }
            Problem::InvalidName { name, why } => write!(f, "{why} (entry {name:?})"),
            Problem::IndexJsonMissing { names } => write!(
                f,
                "index.json is missing; the redb index lists {names} name(s) \
                 (--repair writes index.json back from them)"
            ),
            Problem::IndexJsonUnreadable { names, why } => write!(
                f,
                "index.json is not a valid OCI index ({why}); the redb index lists {names} \
                 name(s) (--repair sets it aside and writes index.json back from them)"
            ),
        }
    }
}

/// What `verify` found (and, with repair, what is left).
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    pub blobs_checked: usize,
    pub names_checked: usize,
    pub problems: Vec<Problem>,
    /// After `--repair`: the problems that remain.
    pub remaining: Vec<Problem>,
    pub repaired: bool,
}

impl Store {
    /// Verifies the cache; with `repair`, fixes what can be fixed. See the module docs.
    pub fn verify(&self, repair: bool) -> Result<VerifyReport, StoreError> {
        let hashed = self.hash_blobs()?;
        let guard = if repair {
            ReadGuard::Held(self.lock()?)
        } else {
            self.lock_for_reading()?
        };
        let index_file = self.root().join(layout::INDEX_FILE);
        let unreadable = match index_json::read_raw(self.root()) {
            Ok((bytes, _)) => match index_json::parse(self.root(), &bytes) {
                Err(StoreError::CorruptIndexJson { message, .. }) if self.names_in_db()? > 0 => {
                    Some(message)
                }
                _ => None,
            },
            Err(_) => None,
        };
        if !index_file.exists() || unreadable.is_some() {
            let records = self.ref_records()?;
            let mut report = VerifyReport {
                blobs_checked: hashed.checked,
                problems: hashed.corrupt.clone(),
                ..VerifyReport::default()
            };
            report.problems.push(match &unreadable {
                None => Problem::IndexJsonMissing {
                    names: records.len(),
                },
                Some(why) => Problem::IndexJsonUnreadable {
                    names: records.len(),
                    why: why.clone(),
                },
            });
            if !repair {
                report.remaining = report.problems.clone();
                return Ok(report);
            }
            if unreadable.is_some() {
                let aside = self
                    .root()
                    .join(format!("index.json.unreadable-{}", super::now_ms()));
                std::fs::rename(&index_file, &aside).map_err(|e| StoreError::io(&index_file, e))?;
            }
            // The database's names are what index.json held when lkpkg last indexed it.
            let mut index = ImageIndex::empty();
            index.manifests = records.into_iter().map(|(_, r)| r.descriptor).collect();
            index
                .manifests
                .sort_by(|a, b| a.ref_name().cmp(&b.ref_name()));
            let lock = guard.writer().expect("--repair holds the cache lock");
            index_json::write(self.root(), &index, lock)?;
            self.reindex_locked(&guard)?;
            let after = self.check_locked(&guard)?;
            report.names_checked = after.names_checked;
            report.remaining = hashed.corrupt.into_iter().chain(after.problems).collect();
            report.repaired = true;
            return Ok(report);
        }
        let mut report = self.check_locked(&guard)?;
        report.blobs_checked = hashed.checked;
        report.problems.splice(0..0, hashed.corrupt);
        if repair && !report.problems.is_empty() {
            let quarantine = self.root().join(QUARANTINE_DIR);
            for problem in &report.problems {
                if let Problem::CorruptBlob { digest, .. } = problem {
                    // Hashed again under the lock: what is moved aside is corrupt now.
                    let from = self.blob_path(digest);
                    match blobs::hash_file(&from) {
                        Ok((actual, _)) if actual != *digest => {}
                        _ => continue,
                    }
                    std::fs::create_dir_all(&quarantine)
                        .map_err(|e| StoreError::io(&quarantine, e))?;
                    let to = quarantine.join(digest.hex());
                    std::fs::rename(&from, &to).map_err(|e| StoreError::io(&from, e))?;
                }
            }
            self.reindex_locked(&guard)?;
            report.remaining = self.check_locked(&guard)?.problems;
            report.repaired = true;
        } else {
            report.remaining = report.problems.clone();
        }
        Ok(report)
    }

    /// Hashes every blob file, without the lock (see the module docs).
    pub(crate) fn hash_blobs(&self) -> Result<HashedBlobs, StoreError> {
        let mut hashed = HashedBlobs::default();
        for (digest, _, _) in blobs::list(self.root())? {
            let path = self.blob_path(&digest);
            let actual = match blobs::hash_file(&path) {
                Ok((actual, _)) => actual,
                // Removed since the listing (`rm`, `gc`): nothing to check.
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            hashed.checked += 1;
            if actual != digest {
                hashed.corrupt.push(Problem::CorruptBlob { digest, actual });
            }
        }
        Ok(hashed)
    }

    /// The checks of agreement and closures, under the lock (blob hashes are not checked).
    fn check_locked(&self, _lock: &impl Consistent) -> Result<VerifyReport, StoreError> {
        let mut report = VerifyReport::default();
        let (bytes, _) = index_json::read_raw(self.root())?;
        let index = index_json::parse(self.root(), &bytes)?;
        let mut in_json: BTreeMap<String, Descriptor> = BTreeMap::new();
        let mut counts: BTreeMap<Digest, u64> = BTreeMap::new();
        for entry in &index.manifests {
            let closure = self.closure(entry);
            let label = entry
                .ref_name()
                .map_or_else(|| format!("unnamed entry {}", entry.digest), str::to_owned);
            for digest in &closure.missing {
                report.problems.push(Problem::MissingBlob {
                    name: label.clone(),
                    digest: *digest,
                });
            }
            for (digest, why) in &closure.invalid {
                report.problems.push(Problem::BadContent {
                    name: label.clone(),
                    digest: *digest,
                    why: why.clone(),
                });
            }
            if let Some(name) = entry.ref_name()
                && let Err(why) = lkpkg_cache_format::reference::validate(name)
            {
                report.problems.push(Problem::InvalidName {
                    name: name.to_owned(),
                    why,
                });
            }
            for digest in closure.blobs.keys() {
                *counts.entry(*digest).or_default() += 1;
            }
            if let Some(name) = entry.ref_name() {
                in_json.insert(name.to_owned(), entry.clone());
            }
        }
        let in_db: BTreeMap<String, Descriptor> = self
            .ref_records()?
            .into_iter()
            .map(|(n, r)| (n, r.descriptor))
            .collect();
        report.names_checked = in_json.len();
        for (name, desc) in &in_json {
            match in_db.get(name) {
                None => report
                    .problems
                    .push(Problem::NameUnknownToIndexDb { name: name.clone() }),
                Some(d) if d != desc => report
                    .problems
                    .push(Problem::NameDiffers { name: name.clone() }),
                Some(_) => {}
            }
        }
        for name in in_db.keys() {
            if !in_json.contains_key(name) {
                report
                    .problems
                    .push(Problem::NameUnknownToIndexJson { name: name.clone() });
            }
        }
        let records = self.blob_records()?;
        for (digest, expected) in &counts {
            let recorded = records.get(digest).map_or(0, |r| r.refcount);
            if recorded != *expected {
                report.problems.push(Problem::RefcountDiffers {
                    digest: *digest,
                    expected: *expected,
                    recorded,
                });
            }
        }
        for (digest, record) in &records {
            if !counts.contains_key(digest) {
                report.problems.push(Problem::RefcountDiffers {
                    digest: *digest,
                    expected: 0,
                    recorded: record.refcount,
                });
            }
        }
        Ok(report)
    }
}
