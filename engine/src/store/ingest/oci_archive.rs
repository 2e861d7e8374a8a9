//! A build's image: the OCI layout tar BuildKit's `oci` exporter streams, its blobs written as
//! they arrive, each platform's image checked whole and published under its per-arch name.

use std::io::Read;

use lkpkg_cache_format::layout::{self, Descriptor, ImageConfigSummary, ImageIndex, Platform};
use lkpkg_cache_format::reference;

use super::ArchiveContents;
use crate::store::{Store, StoreError};

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
            let manifest = self.read_manifest(&desc.digest).map_err(|e| match e {
                StoreError::Json { message, .. } => StoreError::BadArchive(format!(
                    "the exporter's manifest `{}` is not an image manifest: {message}",
                    desc.digest
                )),
                other => other,
            })?;
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
}
