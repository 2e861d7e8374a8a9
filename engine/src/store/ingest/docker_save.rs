//! `docker save` → OCI: the images of a `docker save` archive written into the store as OCI
//! manifests (`cache import`).
//!
//! A `docker save` archive holds `manifest.json` (`Config`, `RepoTags`, `Layers`), the config
//! (`<id>.json`, whose sha256 is the image id) and uncompressed layers (`<id>/layer.tar`, whose
//! sha256 is the layer's diff id; identical layers may be symlinks). Docker 25+ archives put the
//! same things under `blobs/sha256/`; go-containerregistry's (linuxkit's `cache export --format
//! docker`) names them `sha256:<hex>` and `<hex>.tar.gz`, skopeo's `<hex>.json` and `<hex>.tar`:
//! the paths `manifest.json` gives are followed, whatever they look like. The store keeps the config bytes unchanged and **stores
//! layers as they come (uncompressed, `application/vnd.oci.image.layer.v1.tar`)**, so a layer's
//! digest is its diff id: see FORMAT.md for the measurement behind that choice (gzip, even at
//! level 1, ran ~5x slower than hashing). The image manifest is canonical JSON.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::layout::{
    Descriptor, DockerArchiveEntry, ImageConfigSummary, ImageManifest, MEDIA_TYPE_OCI_CONFIG,
    MEDIA_TYPE_OCI_LAYER_GZIP, MEDIA_TYPE_OCI_LAYER_TAR, MEDIA_TYPE_OCI_MANIFEST,
};

use super::{ArchiveContents, Ingest};
use crate::store::StoreError;

impl Ingest<'_> {
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
}

impl ArchiveContents {
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
