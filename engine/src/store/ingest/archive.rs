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

/// A name from an archive (an entry's, or a link's target, `base` the directory a symlink is
/// in), resolved inside the archive; refused when it is absolute or climbs above the archive's
/// root. Nothing of an archive is ever written under its own name (blobs are named by their
/// digest), so such a name could not escape; but no tool lkpkg reads writes one, and following
/// it inside the archive would give it a meaning it was not made with.
fn contained(base: &str, name: &str, what: &str) -> Result<String, StoreError> {
    let refuse = |why: &str| StoreError::BadArchive(format!("{what} `{name}` {why}"));
    if name.starts_with('/') {
        return Err(refuse("is an absolute path"));
    }
    let mut depth: usize = base
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .count();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| refuse("climbs out of the archive"))?
            }
            _ => depth += 1,
        }
    }
    Ok(normalize(&format!("{base}/{name}")))
}

impl ArchiveContents {
    pub(crate) fn read(ingest: &mut Ingest<'_>, reader: impl Read) -> Result<Self, StoreError> {
        let bad = |e: std::io::Error| StoreError::BadArchive(format!("unreadable tar: {e}"));
        let mut archive = tar::Archive::new(reader);
        let mut contents = ArchiveContents::default();
        let mut seen = std::collections::BTreeSet::new();
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let raw_path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let linked = kind.is_symlink() || kind.is_hard_link();
            if !linked && !kind.is_file() {
                continue;
            }
            let path = contained("", &raw_path, "entry")?;
            // Two entries of one name: which one a reader takes is a matter of convention (tar
            // extracts the last), so an archive holding both is ambiguous and refused.
            if !seen.insert(path.clone()) {
                return Err(StoreError::BadArchive(format!(
                    "`{raw_path}` appears twice in the archive"
                )));
            }
            if linked {
                if let Some(target) = entry.link_name().map_err(bad)? {
                    let target = target.to_string_lossy().into_owned();
                    // A symlink's target is relative to its directory, a hard link's to the
                    // archive's root.
                    let base = match kind.is_symlink() {
                        true => path.rsplit_once('/').map_or("", |(d, _)| d),
                        false => "",
                    };
                    let what = format!("the link `{raw_path}` ->");
                    let resolved = contained(base, &target, &what)?;
                    contents.symlinks.insert(path, resolved);
                }
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
