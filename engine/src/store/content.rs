//! The content names reach: blob records, blobs read and parsed as manifests and indexes, the
//! manifest of a platform, and closures (every blob an entry reaches, and what is missing or
//! not what its descriptor says), which publishing and verify check.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::BlobRecord;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, ImageManifest, Platform};
use redb::{ReadableDatabase, ReadableTable};

use super::{Store, StoreError, blobs, db};

/// Every blob an entry reaches, with its media type and size, and the ones that are missing.
#[derive(Debug, Default, Clone)]
pub struct Closure {
    pub blobs: BTreeMap<Digest, (String, u64)>,
    pub missing: BTreeSet<Digest>,
    /// Blobs present but not what their descriptor says: another size, or a manifest or index
    /// that is not one (with why).
    pub invalid: BTreeMap<Digest, String>,
}

impl Store {
    /// The redb record of one blob (size, media type, reference count, last use).
    pub fn blob_record(&self, digest: &Digest) -> Result<Option<BlobRecord>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
        let value = table
            .get(digest.to_string().as_str())
            .map_err(|e| self.db_err(e))?;
        Ok(value.and_then(|v| BlobRecord::decode(v.value()).ok()))
    }

    /// Every blob record in redb.
    pub fn blob_records(&self) -> Result<BTreeMap<Digest, BlobRecord>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.db_err(e))?;
        let table = read.open_table(db::BLOBS).map_err(|e| self.db_err(e))?;
        let mut out = BTreeMap::new();
        for item in table.iter().map_err(|e| self.db_err(e))? {
            let (k, v) = item.map_err(|e| self.db_err(e))?;
            if let (Ok(d), Ok(r)) = (k.value().parse(), BlobRecord::decode(v.value())) {
                out.insert(d, r);
            }
        }
        Ok(out)
    }

    /// The path of a blob file (which may not exist).
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        blobs::blob_file(&self.root, digest)
    }

    /// Whether the blob file exists.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a whole blob (for manifests, indexes and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| StoreError::io(&path, e))
    }

    /// Reads and parses an index blob.
    pub fn read_index(&self, digest: &Digest) -> Result<ImageIndex, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: self.blob_path(digest).display().to_string(),
            message: e.to_string(),
        })
    }

    /// Reads and parses an image manifest blob.
    pub fn read_manifest(&self, digest: &Digest) -> Result<ImageManifest, StoreError> {
        let bytes = self.read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
            what: self.blob_path(digest).display().to_string(),
            message: e.to_string(),
        })
    }

    /// The image manifest for `platform` under a root: the root itself if it is a manifest
    /// (whatever its platform), or the index entry selecting the platform (attestations skipped).
    pub fn platform_manifest(
        &self,
        reference: &str,
        root: &Descriptor,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        if layout::is_index_media_type(&root.media_type) {
            let index = self.read_index(&root.digest)?;
            let found = index.manifests.iter().find(|m| {
                layout::is_manifest_media_type(&m.media_type)
                    && !m.is_attestation()
                    && m.platform.as_ref().is_some_and(|p| platform.selects(p))
            });
            if let Some(m) = found {
                return Ok(m.clone());
            }
            // A nested index (rare): search one level further down.
            for m in &index.manifests {
                if layout::is_index_media_type(&m.media_type)
                    && let Ok(found) = self.platform_manifest(reference, m, platform)
                {
                    return Ok(found);
                }
            }
            return Err(StoreError::PlatformNotFound {
                reference: reference.to_owned(),
                platform: platform.to_string(),
            });
        }
        Ok(root.clone())
    }

    /// A manifest descriptor with its platform, read from its config when the descriptor
    /// lacks one (entries imported or written by other tools often do).
    pub fn with_platform(&self, mut desc: Descriptor) -> Result<Descriptor, StoreError> {
        if desc.platform.is_none() {
            let manifest = self.read_manifest(&desc.digest)?;
            let bytes = self.read_blob(&manifest.config.digest)?;
            let config: layout::ImageConfigSummary =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Json {
                    what: format!("config `{}`", manifest.config.digest),
                    message: e.to_string(),
                })?;
            desc.platform = Some(config.platform());
        }
        Ok(desc)
    }

    /// Everything an entry reaches. Unreadable children are reported missing, never an error.
    pub fn closure(&self, root: &Descriptor) -> Closure {
        let mut closure = Closure::default();
        let mut stack = vec![root.clone()];
        while let Some(desc) = stack.pop() {
            if closure.blobs.contains_key(&desc.digest) {
                continue;
            }
            closure
                .blobs
                .insert(desc.digest, (desc.media_type.clone(), desc.size));
            let is_index = layout::is_index_media_type(&desc.media_type);
            let is_manifest = layout::is_manifest_media_type(&desc.media_type);
            match std::fs::metadata(self.blob_path(&desc.digest)) {
                Ok(meta) if meta.is_file() => {
                    if meta.len() != desc.size {
                        closure.invalid.insert(
                            desc.digest,
                            format!("{} bytes, its descriptor says {}", meta.len(), desc.size),
                        );
                    }
                }
                _ => {
                    closure.missing.insert(desc.digest);
                    continue;
                }
            }
            if !is_index && !is_manifest {
                continue;
            }
            let Ok(bytes) = self.read_blob(&desc.digest) else {
                closure.missing.insert(desc.digest);
                continue;
            };
            let what = if is_index {
                "an image index"
            } else {
                "an image manifest"
            };
            let parsed = if is_index {
                serde_json::from_slice::<ImageIndex>(&bytes).map(|index| {
                    stack.extend(index.manifests);
                })
            } else {
                serde_json::from_slice::<ImageManifest>(&bytes).map(|manifest| {
                    stack.push(manifest.config);
                    stack.extend(manifest.layers);
                })
            };
            if let Err(e) = parsed {
                closure
                    .invalid
                    .insert(desc.digest, format!("not {what}: {e}"));
            }
        }
        closure
    }
}
