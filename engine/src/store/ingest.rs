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
//!
//! # `docker save` → OCI
//! A `docker save` archive holds `manifest.json` (`Config`, `RepoTags`, `Layers`), the config
//! (`<id>.json`, whose sha256 is the image id) and uncompressed layers (`<id>/layer.tar`, whose
//! sha256 is the layer's diff id; identical layers may be symlinks). Docker 25+ archives put the
//! same things under `blobs/sha256/`; go-containerregistry's (linuxkit's `cache export --format
//! docker`) names them `sha256:<hex>` and `<hex>.tar.gz`, skopeo's `<hex>.json` and `<hex>.tar`:
//! the paths `manifest.json` gives are followed, whatever they look like. The store keeps the config bytes unchanged and **stores
//! layers as they come (uncompressed, `application/vnd.oci.image.layer.v1.tar`)**, so a layer's
//! digest is its diff id: see FORMAT.md for the measurement behind that choice (gzip, even at
//! level 1, ran ~5x slower than hashing). The image manifest is canonical JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{
    self, Descriptor, DockerArchiveEntry, ImageConfigSummary, ImageIndex, ImageManifest,
    MEDIA_TYPE_OCI_CONFIG, MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_OCI_LAYER_GZIP,
    MEDIA_TYPE_OCI_LAYER_TAR, MEDIA_TYPE_OCI_MANIFEST, Platform,
};
use lkpkg_cache_format::reference;

use super::blobs::{self, TempBlob};
use super::{Store, StoreError, db, now_ms};

/// How long a pin protects a blob if its writer is still alive: one day.
const PIN_LIFETIME_MS: u64 = 24 * 3600 * 1000;
/// The files of an archive read into memory: the archive's own descriptions. Everything else
/// (configs, layers) is streamed into the store.
const SMALL_FILES: [&str; 4] = ["manifest.json", "index.json", "oci-layout", "repositories"];
/// The largest of them accepted.
const MAX_SMALL_FILE: u64 = 64 * 1024 * 1024;

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
        let _lock = self.store.lock()?;
        self.pin_and_install_locked(file, &digest)?;
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
        let _lock = self.store.lock()?;
        self.pin_and_install_locked(file, &digest)?;
        Ok(size)
    }

    /// Writes a small blob from memory.
    pub fn put_bytes(&mut self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        self.put_blob(bytes, None)
    }

    fn put_bytes_locked(&mut self, bytes: &[u8]) -> Result<(Digest, u64), StoreError> {
        let mut tmp = TempBlob::create(self.store.root())?;
        tmp.copy_from(bytes)?;
        let (file, digest, size) = tmp.finish()?;
        self.pin_and_install_locked(file, &digest)?;
        Ok((digest, size))
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
    /// present and durable.
    pub fn publish(&mut self, names: Vec<(String, Descriptor)>) -> Result<(), StoreError> {
        let _lock = self.store.lock()?;
        let index = self.store.sync_locked_for()?;
        self.store
            .update_names_locked(index, names, &[], Some(&self.pins))
    }

    /// Reads a `docker save` stream into the store (layers, configs, manifests), without
    /// publishing names. Returns each image's manifest descriptor (with its platform) and its
    /// `RepoTags` as written in the archive.
    pub fn read_docker_save(
        &mut self,
        reader: impl Read,
    ) -> Result<Vec<(Descriptor, Vec<String>)>, StoreError> {
        let contents = ArchiveContents::read(self, reader)?;
        contents.docker_images(self)
    }

    /// Turns a parsed archive's `manifest.json` into OCI manifests in the store.
    pub(crate) fn docker_images_of(
        &mut self,
        contents: &ArchiveContents,
    ) -> Result<Vec<(Descriptor, Vec<String>)>, StoreError> {
        contents.docker_images(self)
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
        let _lock = self.store.lock()?;
        let index = self.store.sync_locked_for()?;
        let mut entries: Vec<Descriptor> = Vec::new();
        if let Some(current) = index
            .manifests
            .iter()
            .rev()
            .find(|m| m.ref_name() == Some(full_name))
        {
            if layout::is_index_media_type(&current.media_type) {
                if let Ok(old) = self.store.read_index(&current.digest) {
                    entries = old.manifests;
                }
            } else if current.platform.is_some() {
                let mut single = current.clone();
                single.annotations.clear();
                entries.push(single);
            }
        }
        let entries = layout::merge_index_entries(entries, manifests);
        let new_index = ImageIndex {
            manifests: entries,
            annotations: annotations.clone(),
            ..ImageIndex::empty()
        };
        let bytes = canonical_json::to_vec(&new_index).map_err(|e| StoreError::Json {
            what: format!("index of `{full_name}`"),
            message: e.to_string(),
        })?;
        let (digest, size) = self.put_bytes_locked(&bytes)?;
        let desc = Descriptor::new(MEDIA_TYPE_OCI_INDEX, digest, size);
        self.store.update_names_locked(
            index,
            vec![(full_name.to_owned(), desc.clone())],
            &[],
            Some(&self.pins),
        )?;
        Ok(desc)
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
    /// Ingests the image of one platform from an OCI layout tar (what BuildKit's `oci`
    /// exporter streams); see [`Store::ingest_oci_archive_platforms`].
    pub fn ingest_oci_archive(
        &self,
        reader: impl Read,
        full_name: &str,
        platform: &Platform,
    ) -> Result<Descriptor, StoreError> {
        let mut descriptors =
            self.ingest_oci_archive_platforms(reader, full_name, std::slice::from_ref(platform))?;
        Ok(descriptors.remove(0))
    }

    /// Ingests the images of `platforms` from an OCI layout tar (what BuildKit's `oci`
    /// exporter streams for a solve of one or several platforms), as a build does: writes its
    /// blobs as they arrive (each verified against its name), checks that each image is whole
    /// and for its platform, and publishes the per-arch names `<full_name>-<arch>` → manifest
    /// in one commit (all or none). Returns the manifest descriptors (with platform), in the
    /// order of `platforms`; pass them to [`Store::merge_index`] to update `<full_name>`.
    pub fn ingest_oci_archive_platforms(
        &self,
        reader: impl Read,
        full_name: &str,
        platforms: &[Platform],
    ) -> Result<Vec<Descriptor>, StoreError> {
        let mut ingest = self.ingest();
        let contents = ArchiveContents::read(&mut ingest, reader)?;
        let index_bytes = contents.small_files.get("index.json").ok_or_else(|| {
            StoreError::BadArchive("the exporter's archive has no `index.json`".into())
        })?;
        let index: ImageIndex = serde_json::from_slice(index_bytes)
            .map_err(|e| StoreError::BadArchive(format!("bad `index.json`: {e}")))?;
        let mut candidates: Vec<Descriptor> = Vec::new();
        for entry in index.manifests {
            if layout::is_index_media_type(&entry.media_type) {
                candidates.extend(self.read_index(&entry.digest)?.manifests);
            } else {
                candidates.push(entry);
            }
        }
        // Each image with the platform its config declares (the exporter's descriptors may
        // carry none, or a less exact one).
        let mut images: Vec<Descriptor> = Vec::new();
        for mut desc in candidates
            .into_iter()
            .filter(|d| !d.is_attestation() && layout::is_manifest_media_type(&d.media_type))
        {
            let manifest = self.read_manifest(&desc.digest)?;
            let config: ImageConfigSummary =
                serde_json::from_slice(&self.read_blob(&manifest.config.digest)?)
                    .map_err(|e| StoreError::BadArchive(format!("bad image config: {e}")))?;
            desc.platform = Some(config.platform());
            desc.annotations.clear();
            images.push(desc);
        }
        let mut names = Vec::with_capacity(platforms.len());
        let mut chosen = Vec::with_capacity(platforms.len());
        for platform in platforms {
            let desc = images
                .iter()
                .find(|d| d.platform.as_ref().is_some_and(|p| platform.selects(p)))
                .cloned()
                .ok_or_else(|| {
                    StoreError::BadArchive(format!(
                        "the exporter's archive for `{full_name}` holds no image for `{platform}`"
                    ))
                })?;
            if let Some(digest) = self.closure(&desc).missing.first() {
                return Err(StoreError::BadArchive(format!(
                    "the image for `{full_name}` ({platform}) lacks blob `{digest}`"
                )));
            }
            names.push((
                reference::per_arch(full_name, &platform.architecture),
                desc.clone(),
            ));
            chosen.push(desc);
        }
        ingest.publish(names)?;
        Ok(chosen)
    }

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

    fn resolve(&self, path: &str) -> String {
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
    fn file_bytes(&self, store: &Store, path: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.resolve(path);
        if let Some(bytes) = self.small_files.get(&path) {
            return Ok(bytes.clone());
        }
        if let Some((digest, _)) = self.blob_files.get(&path) {
            return store.read_blob(digest);
        }
        Err(StoreError::BadArchive(format!("`{path}` is missing")))
    }

    fn docker_images(
        &self,
        ingest: &mut Ingest<'_>,
    ) -> Result<Vec<(Descriptor, Vec<String>)>, StoreError> {
        let store = ingest.store;
        let manifest_json = self.small_files.get("manifest.json").ok_or_else(|| {
            StoreError::BadArchive("no `manifest.json`: not a `docker save` archive".into())
        })?;
        let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(manifest_json)
            .map_err(|e| StoreError::BadArchive(format!("bad `manifest.json`: {e}")))?;
        let mut out = Vec::new();
        for entry in entries {
            let config_bytes = self.file_bytes(store, &entry.config)?;
            let config: ImageConfigSummary = serde_json::from_slice(&config_bytes)
                .map_err(|e| StoreError::BadArchive(format!("bad `{}`: {e}", entry.config)))?;
            let (config_digest, config_size) = ingest.put_bytes(&config_bytes)?;
            let diff_ids = config.rootfs.clone().unwrap_or_default().diff_ids;
            if diff_ids.len() != entry.layers.len() {
                return Err(StoreError::BadArchive(format!(
                    "`{}` lists {} diff ids for {} layers",
                    entry.config,
                    diff_ids.len(),
                    entry.layers.len()
                )));
            }
            let mut layers = Vec::new();
            for (layer_path, diff_id) in entry.layers.iter().zip(&diff_ids) {
                let resolved = self.resolve(layer_path);
                let (digest, size) = *self.blob_files.get(&resolved).ok_or_else(|| {
                    StoreError::BadArchive(format!("layer `{layer_path}` is missing"))
                })?;
                let gzip = is_gzip_file(&store.blob_path(&digest));
                if !gzip && digest != *diff_id {
                    return Err(StoreError::BadArchive(format!(
                        "layer `{layer_path}` hashes to `{digest}`, its diff id is `{diff_id}`"
                    )));
                }
                let media_type = if gzip {
                    MEDIA_TYPE_OCI_LAYER_GZIP
                } else {
                    MEDIA_TYPE_OCI_LAYER_TAR
                };
                layers.push(Descriptor::new(media_type, digest, size));
            }
            let manifest = ImageManifest {
                schema_version: 2,
                media_type: Some(MEDIA_TYPE_OCI_MANIFEST.to_owned()),
                config: Descriptor::new(MEDIA_TYPE_OCI_CONFIG, config_digest, config_size),
                layers,
                annotations: BTreeMap::new(),
                extra: BTreeMap::new(),
            };
            let bytes = canonical_json::to_vec(&manifest).map_err(|e| StoreError::Json {
                what: "image manifest".into(),
                message: e.to_string(),
            })?;
            let (digest, size) = ingest.put_bytes(&bytes)?;
            let mut desc = Descriptor::new(MEDIA_TYPE_OCI_MANIFEST, digest, size);
            desc.platform = Some(config.platform());
            out.push((desc, entry.repo_tags.unwrap_or_default()));
        }
        Ok(out)
    }
}

fn is_gzip_file(path: &Path) -> bool {
    let mut magic = [0u8; 2];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == [0x1f, 0x8b]
}

/// How many pins are recorded (live or not).
#[cfg(test)]
pub(crate) fn pinned_count(store: &Store) -> usize {
    use redb::{ReadableDatabase, ReadableTableMetadata};
    let read = store.database().begin_read().unwrap();
    let table = read.open_table(db::PENDING).unwrap();
    table.len().unwrap() as usize
}
