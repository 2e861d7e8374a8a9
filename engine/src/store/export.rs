//! `cache export`: an image out of the store as an OCI layout tar, a tar `docker load` takes,
//! or the flattened root filesystem.
//!
//! - `oci`: `oci-layout`, `index.json` (one entry: the root, annotated with the name as
//!   `org.opencontainers.image.ref.name` and `io.containerd.image.name`, so `cache import` and
//!   containerd read it back) and every blob the root reaches (indexes whole).
//! - `docker`: the same OCI layout for the chosen platform's manifest, **plus** a Docker
//!   `manifest.json` (`Config`, `RepoTags`, `Layers` pointing at `blobs/sha256/<hex>`). Docker
//!   20.10 cannot load a pure OCI layout; with `manifest.json` the same tar loads everywhere.
//! - `filesystem`: the platform image's layers applied bottom to top with whiteouts
//!   (`.wh.<name>` deletes, `.wh..wh..opq` hides the lower content of a directory), written top
//!   layer first, each path once. Hard links to files of a lower layer are a known limitation.
//!
//! Tar headers are deterministic (mode 0644, uid/gid 0, mtime 0) for the layout formats.

use std::collections::BTreeSet;
use std::io::{Read, Write};

use flate2::read::GzDecoder;
use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{
    self, CONTAINERD_NAME_ANNOTATION, Descriptor, DockerArchiveEntry, ImageIndex,
    OCI_LAYOUT_CONTENT, OCI_LAYOUT_FILE, Platform, REF_NAME_ANNOTATION,
};
use lkpkg_cache_format::reference;

use super::{Store, StoreError};

/// What `cache export --format` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Oci,
    Docker,
    Filesystem,
}

impl std::str::FromStr for ExportFormat {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<ExportFormat, StoreError> {
        match s {
            "oci" => Ok(ExportFormat::Oci),
            "docker" => Ok(ExportFormat::Docker),
            "filesystem" => Ok(ExportFormat::Filesystem),
            other => Err(StoreError::InvalidArgument(format!(
                "export format `{other}` (expected oci, docker or filesystem)"
            ))),
        }
    }
}

fn out_err(e: std::io::Error) -> StoreError {
    StoreError::io(std::path::Path::new("<output>"), e)
}

fn file_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append_bytes<W: Write>(
    builder: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<(), StoreError> {
    let mut header = file_header(bytes.len() as u64);
    builder
        .append_data(&mut header, path, bytes)
        .map_err(out_err)
}

impl Store {
    fn append_blob<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        digest: &Digest,
    ) -> Result<(), StoreError> {
        let path = self.blob_path(digest);
        let file = std::fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
        let size = file.metadata().map_err(|e| StoreError::io(&path, e))?.len();
        let mut header = file_header(size);
        builder
            .append_data(&mut header, layout::blob_path(digest), file)
            .map_err(out_err)
    }

    fn write_layout<W: Write>(
        &self,
        builder: &mut tar::Builder<W>,
        name: &str,
        root: &Descriptor,
    ) -> Result<(), StoreError> {
        let closure = self.closure(root);
        if let Some(digest) = closure.missing.first() {
            return Err(StoreError::MissingBlob {
                name: name.to_owned(),
                digest: *digest,
            });
        }
        append_bytes(builder, OCI_LAYOUT_FILE, OCI_LAYOUT_CONTENT.as_bytes())?;
        let mut entry = root.clone();
        entry
            .annotations
            .insert(REF_NAME_ANNOTATION.to_owned(), name.to_owned());
        entry
            .annotations
            .insert(CONTAINERD_NAME_ANNOTATION.to_owned(), name.to_owned());
        let index = ImageIndex {
            manifests: vec![entry],
            ..ImageIndex::empty()
        };
        let bytes = canonical_json::to_vec(&index).map_err(|e| StoreError::Json {
            what: "index.json".into(),
            message: e.to_string(),
        })?;
        append_bytes(builder, layout::INDEX_FILE, &bytes)?;
        for digest in closure.blobs.keys() {
            self.append_blob(builder, digest)?;
        }
        Ok(())
    }

    /// Exports `reference_text` (a stored name or what expands to one) to `out`, named
    /// `name_override` (expanded) in the archive if given.
    pub fn export(
        &self,
        reference_text: &str,
        format: ExportFormat,
        platform: &Platform,
        name_override: Option<&str>,
        out: impl Write,
    ) -> Result<(), StoreError> {
        let (stored_name, root) = self.resolve(reference_text)?;
        let name = name_override.map_or(stored_name, reference::expand);
        let mut builder = tar::Builder::new(out);
        match format {
            ExportFormat::Oci => self.write_layout(&mut builder, &name, &root)?,
            ExportFormat::Docker => {
                let manifest_desc = self.platform_manifest(&name, &root, platform)?;
                let manifest = self.read_manifest(&manifest_desc.digest)?;
                self.write_layout(&mut builder, &name, &manifest_desc)?;
                let repo_tag = match reference::split_tag(&name) {
                    (_, Some(_)) => name.clone(),
                    (repo, None) => format!("{repo}:latest"),
                };
                let docker_manifest = vec![DockerArchiveEntry {
                    config: layout::blob_path(&manifest.config.digest),
                    repo_tags: Some(vec![repo_tag]),
                    layers: manifest
                        .layers
                        .iter()
                        .map(|l| layout::blob_path(&l.digest))
                        .collect(),
                }];
                let bytes = serde_json::to_vec(&docker_manifest).map_err(|e| StoreError::Json {
                    what: "manifest.json".into(),
                    message: e.to_string(),
                })?;
                append_bytes(&mut builder, "manifest.json", &bytes)?;
            }
            ExportFormat::Filesystem => {
                let manifest_desc = self.platform_manifest(&name, &root, platform)?;
                let manifest = self.read_manifest(&manifest_desc.digest)?;
                self.flatten(&manifest.layers, &mut builder)?;
            }
        }
        builder
            .into_inner()
            .map_err(out_err)?
            .flush()
            .map_err(out_err)
    }

    fn flatten<W: Write>(
        &self,
        layers: &[Descriptor],
        builder: &mut tar::Builder<W>,
    ) -> Result<(), StoreError> {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut deleted: BTreeSet<String> = BTreeSet::new();
        let mut opaque: BTreeSet<String> = BTreeSet::new();
        for layer in layers.iter().rev() {
            let path = self.blob_path(&layer.digest);
            let file = std::fs::File::open(&path).map_err(|e| StoreError::io(&path, e))?;
            let reader: Box<dyn Read> = if layout::is_gzip_layer(&layer.media_type) {
                Box::new(GzDecoder::new(file))
            } else {
                Box::new(file)
            };
            let bad = |e: std::io::Error| StoreError::io(&path, e);
            let mut archive = tar::Archive::new(reader);
            let mut layer_deleted = Vec::new();
            let mut layer_opaque = Vec::new();
            for entry in archive.entries().map_err(bad)? {
                let entry = entry.map_err(bad)?;
                let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
                let entry_path = raw
                    .trim_start_matches("./")
                    .trim_end_matches('/')
                    .to_owned();
                if entry_path.is_empty() || entry_path == "." {
                    continue;
                }
                let (dir, base) = match entry_path.rsplit_once('/') {
                    Some((d, b)) => (d.to_owned(), b.to_owned()),
                    None => (String::new(), entry_path.clone()),
                };
                if base == ".wh..wh..opq" {
                    layer_opaque.push(dir);
                    continue;
                }
                if let Some(hidden) = base.strip_prefix(".wh.") {
                    let target = if dir.is_empty() {
                        hidden.to_owned()
                    } else {
                        format!("{dir}/{hidden}")
                    };
                    layer_deleted.push(target);
                    continue;
                }
                if seen.contains(&entry_path) || hidden_by_upper(&entry_path, &deleted, &opaque) {
                    continue;
                }
                seen.insert(entry_path.clone());
                let mut header = entry.header().clone();
                let kind = header.entry_type();
                if kind.is_symlink() || kind.is_hard_link() {
                    let target = entry
                        .link_name()
                        .map_err(bad)?
                        .map(|t| t.into_owned())
                        .unwrap_or_default();
                    builder
                        .append_link(&mut header, &entry_path, target)
                        .map_err(out_err)?;
                } else {
                    builder
                        .append_data(&mut header, &entry_path, entry)
                        .map_err(out_err)?;
                }
            }
            deleted.extend(layer_deleted);
            opaque.extend(layer_opaque);
        }
        Ok(())
    }
}

/// Whether an upper layer deleted `path` (or an ancestor), or made an ancestor opaque.
fn hidden_by_upper(path: &str, deleted: &BTreeSet<String>, opaque: &BTreeSet<String>) -> bool {
    if deleted.contains(path) {
        return true;
    }
    let mut ancestor = path;
    while let Some((parent, _)) = ancestor.rsplit_once('/') {
        if deleted.contains(parent) || opaque.contains(parent) {
            return true;
        }
        ancestor = parent;
    }
    opaque.contains("")
}
