//! The OCI image layout of the linuxkit cache: file names, media types, and the JSON documents
//! (descriptors, indexes, image manifests) as lkpkg reads and writes them.
//!
//! # Tolerant types, not oci-spec's
//!
//! A cache is written by linuxkit, skopeo, docker and lkpkg, and lkpkg rewrites its
//! `index.json` whole whenever a name changes: whatever another tool put there must survive. So
//! these types keep every member they do not interpret in an `extra` map (on indexes, manifests,
//! descriptors and platforms) and write it back unchanged, take Docker media types, attestation
//! manifests and `null` lists, and keep maps in `BTreeMap`s; serialize through
//! [`crate::canonical_json`] anyway, so keys are sorted at every level. Image configs get no
//! writable type at all: lkpkg stores them byte for byte and reads only [`ImageConfigSummary`].
//!
//! The decision rests on the corpus in `tests/corpus/` (real documents from linuxkit, docker's
//! BuildKit, classic builder, `commit` and `save`, and skopeo; its README says which), read and
//! written back in `tests/round_trip/` by these types and by oci-spec 0.10's:
//!
//! - these types give every index and manifest back as its canonical form, nothing lost or
//!   added; the one normalisation is a list Go wrote as `null` (a nil slice, as in `docker
//!   save`'s manifest of BuildKit's zero-layer image), which reads as empty and writes back as
//!   `[]`, and lkpkg never writes back a manifest it read;
//! - oci-spec gives the real indexes and manifests back, but refuses that zero-layer manifest
//!   (`"layers": null`) and its config (`"diff_ids": null`), drops the Docker fields BuildKit and
//!   the classic builder write in configs (`config.Healthcheck`, `OnBuild`, `Shell`,
//!   `ArgsEscaped`), and drops any member outside the spec wherever it is (a tool's own in
//!   `index.json`, a later spec's).
//!
//! oci-spec is the check instead: the engine's tests read everything lkpkg writes itself
//! (manifests of `docker save` images, multi-arch indexes, a named context's index, export and
//! cache `index.json`) with oci-spec's types, which must give it back exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// `<cache>/oci-layout`.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The exact bytes linuxkit (go-containerregistry) writes to `oci-layout`.
pub const OCI_LAYOUT_CONTENT: &str = "{\n    \"imageLayoutVersion\": \"1.0.0\"\n}";
/// `<cache>/index.json`.
pub const INDEX_FILE: &str = "index.json";
/// `<cache>/blobs/sha256/`.
pub const BLOBS_DIR: &str = "blobs/sha256";
/// `<cache>/.lock`: the file linuxkit takes an `fcntl` write lock on.
pub const LOCK_FILE: &str = ".lock";

/// The annotation naming an `index.json` entry: the canonical reference.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// containerd's (and `docker save`'s, since 25) full image name annotation.
pub const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
/// Marks an attestation manifest inside a buildkit index.
pub const DOCKER_REFERENCE_TYPE_ANNOTATION: &str = "vnd.docker.reference.type";

pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_DOCKER_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Whether a media type names an index (OCI or Docker manifest list).
pub fn is_index_media_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_INDEX || media_type == MEDIA_TYPE_DOCKER_LIST
}

/// Whether a media type names an image manifest (OCI or Docker schema 2).
pub fn is_manifest_media_type(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_OCI_MANIFEST || media_type == MEDIA_TYPE_DOCKER_MANIFEST
}

/// Whether a layer media type is gzip-compressed.
pub fn is_gzip_layer(media_type: &str) -> bool {
    media_type.ends_with("+gzip") || media_type.ends_with(".tar.gzip")
}

/// `blobs/sha256/<hex>` relative to the layout root.
pub fn blob_path(digest: &Digest) -> String {
    format!("{BLOBS_DIR}/{}", digest.hex())
}

/// An OCI platform.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_features: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Members lkpkg does not interpret (`features` of a Docker manifest list, a later spec's),
    /// kept as read: an `index.json` entry another tool wrote keeps them when lkpkg rewrites it.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Platform {
    /// `linux/<arch>`, without variant.
    pub fn linux(arch: &str) -> Platform {
        Platform {
            architecture: arch.to_owned(),
            os: "linux".to_owned(),
            ..Platform::default()
        }
    }

    /// Parses `os/arch[/variant]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let mut parts = s.split('/');
        let os = parts.next().filter(|p| !p.is_empty())?;
        let architecture = parts.next().filter(|p| !p.is_empty())?;
        let variant = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return None;
        }
        Some(Platform {
            architecture: architecture.to_owned(),
            os: os.to_owned(),
            variant,
            ..Platform::default()
        })
    }

    /// Whether two platforms are the same entry of an index: os, architecture and variant (a
    /// missing variant matches only a missing variant).
    pub fn same_slot(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && self.variant == other.variant
    }

    /// Whether `self` (a request, maybe without variant) selects `other`.
    pub fn selects(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }

    /// Whether this is buildkit's `unknown/unknown` placeholder of attestation manifests.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// A content descriptor.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Fields lkpkg does not interpret (`urls`, `artifactType`, `data`, …), kept as read.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// The `org.opencontainers.image.ref.name` annotation.
    pub fn ref_name(&self) -> Option<&str> {
        self.annotations
            .get(REF_NAME_ANNOTATION)
            .map(String::as_str)
    }

    /// Whether this entry is a buildkit attestation manifest.
    pub fn is_attestation(&self) -> bool {
        self.annotations
            .contains_key(DOCKER_REFERENCE_TYPE_ANNOTATION)
    }
}

/// An OCI image index (also the layout's `index.json`, and a Docker manifest list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageIndex {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl ImageIndex {
    /// An empty OCI index, as linuxkit initialises `index.json`.
    pub fn empty() -> ImageIndex {
        ImageIndex {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.to_owned()),
            manifests: Vec::new(),
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// linuxkit's index merge (`util.AppendIndex`): the entries of `old` whose os/arch/variant match
/// none of `new`'s manifests are kept, `new`'s are appended (without a `ref.name`), and
/// attestation manifests that refer to an image no longer in the result are dropped. Used for
/// the cache's multi-arch names and for the indexes pushed to registries alike.
pub fn merge_index_entries(old: Vec<Descriptor>, new: &[Descriptor]) -> Vec<Descriptor> {
    let mut entries = old;
    entries.retain(|e| {
        e.is_attestation()
            || !new.iter().any(|m| match (&e.platform, &m.platform) {
                (Some(a), Some(b)) => a.same_slot(b),
                _ => false,
            })
    });
    for m in new {
        if entries.iter().any(|e| e.digest == m.digest) {
            continue;
        }
        let mut m = m.clone();
        m.annotations.remove(REF_NAME_ANNOTATION);
        entries.push(m);
    }
    let present: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|e| !e.is_attestation())
        .map(|e| e.digest.to_string())
        .collect();
    entries.retain(|e| {
        !e.is_attestation()
            || e.annotations
                .get("vnd.docker.reference.digest")
                .is_none_or(|d| present.contains(d))
    });
    entries
}

/// An OCI image manifest (or Docker schema 2 manifest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageManifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// The parts of an image config lkpkg reads: the platform and the layers' diff ids.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImageConfigSummary {
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub rootfs: Option<RootFs>,
}

/// `rootfs` of an image config.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RootFs {
    #[serde(default, deserialize_with = "null_as_empty")]
    pub diff_ids: Vec<Digest>,
}

/// A list that Go tools write as `null` when empty (a nil slice): BuildKit's image of a
/// Dockerfile with no file-changing instruction has `"layers": null` and `"diff_ids": null`, and
/// `docker save`'s `manifest.json` of it `"Layers": null`. It reads as empty (and a manifest or
/// index holding it would be written back with `[]`).
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(deserializer)?.unwrap_or_default())
}

impl ImageConfigSummary {
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone().filter(|v| !v.is_empty()),
            ..Platform::default()
        }
    }
}

/// One entry of a `docker save` `manifest.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    #[serde(rename = "RepoTags", default)]
    pub repo_tags: Option<Vec<String>>,
    /// `null` for an image with no layer (`docker save` of BuildKit's zero-layer image).
    #[serde(rename = "Layers", default, deserialize_with = "null_as_empty")]
    pub layers: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_survive_a_round_trip() {
        let text = r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"urls":["x"],"platform":{"architecture":"amd64","os":"linux","features":["sse4"]},"annotations":{"org.opencontainers.image.ref.name":"docker.io/a/b:c"}}],"zz":1}"#;
        let index: ImageIndex = serde_json::from_str(text).unwrap();
        assert_eq!(index.manifests[0].ref_name(), Some("docker.io/a/b:c"));
        let back = crate::canonical_json::to_vec(&index).unwrap();
        let reparsed: serde_json::Value = serde_json::from_slice(&back).unwrap();
        assert_eq!(reparsed["zz"], 1);
        assert_eq!(reparsed["manifests"][0]["urls"][0], "x");
        assert_eq!(reparsed["manifests"][0]["platform"]["features"][0], "sse4");
        assert_eq!(
            reparsed,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    /// BuildKit's bytes for a `FROM scratch` + `LABEL` image (no layer at all).
    #[test]
    fn a_zero_layer_image_has_null_lists() {
        let manifest: ImageManifest = serde_json::from_str(
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:385b2ebf66f3bac4de4a5fc450c6dafcce0333cb4715466dd933640a18f6f678","size":484},"layers":null}"#,
        )
        .unwrap();
        assert!(manifest.layers.is_empty());
        let config: ImageConfigSummary = serde_json::from_str(
            r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#,
        )
        .unwrap();
        assert!(config.rootfs.unwrap().diff_ids.is_empty());
    }

    #[test]
    fn platforms_parse_and_match() {
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert!(Platform::parse("linux/arm64").unwrap().selects(&p));
        assert!(!Platform::parse("linux/arm64").unwrap().same_slot(&p));
        assert!(Platform::parse("linux").is_none());
        assert_eq!(p.to_string(), "linux/arm64/v8");
    }

    /// Found by fuzzing (`fuzz/`, target `oci_json`): an unknown field with a large number
    /// wrote back as another number (serde_json's fast float parsing is off by an ulp), so the
    /// canonical bytes of an index were not stable across a read and a write.
    #[test]
    fn unknown_fields_survive_a_round_trip_exactly() {
        let text = r#"{"schemaVersion":2,"manifests":[],"layers":[{"size":500000000000000000000935462134}],"x":0.1}"#;
        let index: ImageIndex = serde_json::from_str(text).unwrap();
        let bytes = crate::canonical_json::to_vec(&index).unwrap();
        let again: ImageIndex = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(index, again);
        assert_eq!(crate::canonical_json::to_vec(&again).unwrap(), bytes);
    }
}
