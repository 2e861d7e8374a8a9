//! A tar archive read into the store: its own descriptions (`manifest.json`, `index.json`,
//! `oci-layout`) kept in memory, every other file streamed in as a blob, and its links
//! followed. `docker save` archives, OCI layouts and builds' exports are all read this way.

use std::collections::BTreeMap;
use std::io::Read;

use lkpkg_cache_format::digest::Digest;

use super::Ingest;
use crate::store::{Store, StoreError};

/// The files of an archive read into memory: the archive's own descriptions. Everything else
/// (configs, layers) is streamed into the store.
const SMALL_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];
/// The largest of them accepted.
const MAX_SMALL_FILE: u64 = 64 * 1024 * 1024;

/// What a tar archive held: small files in memory, everything else written as blobs.
#[derive(Debug, Default)]
pub(crate) struct ArchiveContents {
    pub small_files: BTreeMap<String, Vec<u8>>,
    pub blob_files: BTreeMap<String, (Digest, u64)>,
    pub symlinks: BTreeMap<String, String>,
}

/// A path inside an archive with `.`, `..` and empty segments resolved.
pub(crate) fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl ArchiveContents {
    pub(crate) fn read(ingest: &mut Ingest<'_>, reader: impl Read) -> Result<Self, StoreError> {
        let bad = |e: std::io::Error| StoreError::BadArchive(format!("unreadable tar: {e}"));
        let mut archive = tar::Archive::new(reader);
        let mut contents = ArchiveContents::default();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let raw_path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let path = normalize(&raw_path);
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                if let Some(target) = entry.link_name().map_err(bad)? {
                    let target = target.to_string_lossy().into_owned();
                    let resolved = if kind.is_symlink() {
                        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    } else {
                        normalize(&target)
                    };
                    contents.symlinks.insert(path, resolved);
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let expected = Digest::from_hex(hex)
                    .map_err(|_| StoreError::BadArchive(format!("bad blob name `{path}`")))?;
                let stored = ingest.put_blob(entry, Some(&expected))?;
                contents.blob_files.insert(path, stored);
            } else if path.ends_with("/VERSION") || path.ends_with("/json") {
                // docker's legacy per-layer metadata (`<id>/VERSION`, `<id>/json`): no image
                // uses it, so it stays out of the store.
                continue;
            } else if SMALL_FILES.contains(&path.as_str()) {
                if entry.size() > MAX_SMALL_FILE {
                    return Err(StoreError::BadArchive(format!("`{path}` is too large")));
                }
                let mut bytes = Vec::new();
                let mut entry = entry;
                entry.read_to_end(&mut bytes).map_err(bad)?;
                contents.small_files.insert(path, bytes);
            } else {
                // Configs and layers, whatever their names: `<id>.json` and `<id>/layer.tar`
                // (docker), `sha256:<hex>` and `<hex>.tar.gz` (go-containerregistry, so
                // linuxkit's `cache export --format docker`), `<hex>.tar` (skopeo). Streamed
                // into the store, never held in memory; what no image uses is left to `gc`.
                let stored = ingest.put_blob(entry, None)?;
                contents.blob_files.insert(path, stored);
            }
        }
        Ok(contents)
    }

    pub(super) fn resolve(&self, path: &str) -> String {
        let mut path = normalize(path);
        for _ in 0..16 {
            match self.symlinks.get(&path) {
                Some(target) => path = target.clone(),
                None => break,
            }
        }
        path
    }

    /// The bytes of a file of the archive, whether kept in memory or written as a blob.
    pub(super) fn file_bytes(&self, store: &Store, path: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.resolve(path);
        if let Some(bytes) = self.small_files.get(&path) {
            return Ok(bytes.clone());
        }
        if let Some((digest, _)) = self.blob_files.get(&path) {
            return store.read_blob(digest);
        }
        Err(StoreError::BadArchive(format!("`{path}` is missing")))
    }
}
