//! `cache ls|inspect|du|verify --json`.

use schemars::JsonSchema;
use serde::Serialize;

/// `cache ls --json`: every name in the cache with its root descriptor.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheList {
    pub images: Vec<NamedDescriptor>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct NamedDescriptor {
    pub name: String,
    #[serde(flatten)]
    pub descriptor: Descriptor,
}

/// An OCI descriptor: what a name or an index points at.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

/// `cache inspect --json`: a name and the tree of what it points at.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheInspect {
    pub name: String,
    pub root: Node,
}

/// One blob of an image's tree: an index (with `manifests`), a manifest (with `config` and
/// `layers`), a config or a layer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Node {
    #[serde(flatten)]
    pub descriptor: Descriptor,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
    /// An attestation manifest (BuildKit's provenance or SBOM), not an image.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attestation: bool,
    /// The blob is not in the cache.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub missing: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifests: Option<Vec<Node>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<Box<Node>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<Vec<Node>>,
}

/// `cache du --json`: bytes per name, and for the whole cache.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheUsage {
    pub images: Vec<ImageUsage>,
    /// Every blob in the cache.
    pub blob_bytes: u64,
    /// Blobs no name reaches (what `cache gc` frees).
    pub unreachable_bytes: u64,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ImageUsage {
    pub name: String,
    /// Every blob the name reaches.
    pub total: u64,
    /// Blobs no other name reaches.
    pub unique: u64,
    /// Blobs other names reach too.
    pub shared: u64,
}

/// `cache verify --json`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct CacheVerify {
    pub blobs_checked: usize,
    pub names_checked: usize,
    /// Every problem found.
    pub problems: Vec<String>,
    /// The problems left (after `--repair`, those it could not fix).
    pub remaining: Vec<String>,
    pub repaired: bool,
}
