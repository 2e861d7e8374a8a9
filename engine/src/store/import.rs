//! `cache import`: OCI layout tars and `docker save` tars into the store.
//!
//! - An archive with `index.json` is an OCI layout: each entry is named by its
//!   `io.containerd.image.name` annotation, else by `org.opencontainers.image.ref.name` when that
//!   is a full reference (it contains `/` or `:`, not a bare tag), expanded canonically. Indexes
//!   are kept whole: the name points at the index, with every platform the archive holds.
//! - Otherwise `manifest.json` makes it a `docker save` archive: each image is converted (see
//!   [`super::ingest`]) and named by each of its `RepoTags`, expanded (`org/img:tag` →
//!   `docker.io/org/img:tag`).
//!
//! Every blob is verified against its digest while streaming; names are published only after
//! the whole archive is in (one locked section, all names at once).

use std::io::Read;

use lkpkg_cache_format::layout::{CONTAINERD_NAME_ANNOTATION, ImageIndex, REF_NAME_ANNOTATION};
use lkpkg_cache_format::reference;

use super::ingest::ArchiveContents;
use super::{Store, StoreError};
use lkpkg_cache_format::layout::Descriptor;

/// One name an import published.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedName {
    pub name: String,
    pub descriptor: Descriptor,
}

impl Store {
    /// The descriptor with the media type its blob declares. linuxkit's `cache export --format
    /// oci` (3bf33c3a) labels an image manifest as an index in `index.json`; taken as written,
    /// the name would point at "an index" no platform can be found in.
    fn checked_media_type(&self, mut desc: Descriptor) -> Result<Descriptor, StoreError> {
        #[derive(serde::Deserialize)]
        struct Declared {
            #[serde(rename = "mediaType")]
            media_type: Option<String>,
        }
        let Ok(bytes) = self.read_blob(&desc.digest) else {
            // Missing blobs are found when the names are published.
            return Ok(desc);
        };
        let declared: Declared = serde_json::from_slice(&bytes).map_err(|e| {
            StoreError::BadArchive(format!("`{}` is not a manifest or index: {e}", desc.digest))
        })?;
        if let Some(media_type) = declared.media_type.filter(|t| {
            lkpkg_cache_format::layout::is_index_media_type(t)
                || lkpkg_cache_format::layout::is_manifest_media_type(t)
        }) {
            desc.media_type = media_type;
        }
        Ok(desc)
    }

    /// Imports an OCI layout tar or a `docker save` tar; returns the names published.
    pub fn import(&self, reader: impl Read) -> Result<Vec<ImportedName>, StoreError> {
        self.ensure_writable()?;
        let mut ingest = self.ingest();
        let contents = ArchiveContents::read(&mut ingest, reader)?;
        let mut names: Vec<(String, Descriptor)> = Vec::new();
        if let Some(bytes) = contents.small_files.get("index.json") {
            let index: ImageIndex = serde_json::from_slice(bytes)
                .map_err(|e| StoreError::BadArchive(format!("bad `index.json`: {e}")))?;
            for entry in index.manifests {
                let name = entry
                    .annotations
                    .get(CONTAINERD_NAME_ANNOTATION)
                    .cloned()
                    .or_else(|| {
                        entry
                            .annotations
                            .get(REF_NAME_ANNOTATION)
                            .filter(|n| n.contains('/') || n.contains(':'))
                            .cloned()
                    });
                if let Some(name) = name {
                    let mut desc = self.checked_media_type(entry.clone())?;
                    desc.annotations.remove(CONTAINERD_NAME_ANNOTATION);
                    desc.annotations.remove(REF_NAME_ANNOTATION);
                    names.push((reference::expand(&name), desc));
                }
            }
        }
        if names.is_empty() && contents.small_files.contains_key("manifest.json") {
            for (desc, tags) in ingest.docker_images_of(&contents)? {
                for tag in tags {
                    names.push((reference::expand(&tag), desc.clone()));
                }
            }
        }
        if names.is_empty() {
            return Err(StoreError::BadArchive(
                "no image names: expected an OCI layout with `io.containerd.image.name` or \
                 `org.opencontainers.image.ref.name` annotations, or a `docker save` archive \
                 with `RepoTags`"
                    .into(),
            ));
        }
        ingest.publish(names.clone()).map_err(|e| match e {
            // Within an import, a blob the archive's own index reaches is the archive's fault.
            StoreError::MissingBlob { name, digest } => StoreError::BadArchive(format!(
                "`{name}` needs blob `{digest}`, which the archive does not hold"
            )),
            other => other,
        })?;
        Ok(names
            .into_iter()
            .map(|(name, descriptor)| ImportedName { name, descriptor })
            .collect())
    }
}
