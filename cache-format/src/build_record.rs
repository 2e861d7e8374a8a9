//! Build records: what lkpkg remembers of each build, keyed by build key.
//!
//! Stored in the redb index (`build_records`: 32-byte blake3 build key → record bytes;
//! `unit_builds`: unit name → the key of the unit's last build). The bytes are one version
//! byte ([`RECORD_VERSION`]) followed by JSON. A record names its inputs so that a rebuild can
//! be explained by comparing the last record's inputs with the current ones.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::layout::Descriptor;

/// The tag under which a build record is shared through a registry: in the repository of the
/// unit's image, `lkpkg-key-<the build key in hex>` names the unit's per-platform image
/// manifest (see FORMAT.md, "Shared build records").
pub fn shared_record_tag(key: &[u8; 32]) -> String {
    let mut tag = String::with_capacity(10 + 64);
    tag.push_str("lkpkg-key-");
    for byte in key {
        tag.push_str(&format!("{byte:02x}"));
    }
    tag
}

/// The encoding version of a build record.
pub const RECORD_VERSION: u8 = 1;

/// One build of one unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// `<package dir relative to the repository>/<arch>`, e.g. `pkg/init/amd64`.
    pub unit: String,
    /// The per-platform image manifest the build produced.
    pub manifest: Descriptor,
    /// The named inputs the build key was computed from, in key order.
    pub inputs: Vec<(String, String)>,
    /// Package and extra-source files (`path` → `mode blob-id`), for explanations.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// The builder's endpoint.
    pub builder: String,
    pub started_unix_ms: u64,
    pub duration_ms: u64,
}

/// A record that cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum RecordDecodeError {
    #[error("empty build record")]
    Empty,
    #[error("build record version {0} is not known to this lkpkg")]
    UnknownVersion(u8),
    #[error("corrupt build record: {0}")]
    Corrupt(#[from] serde_json::Error),
}

impl BuildRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        // Serializing plain strings, maps and a descriptor cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<BuildRecord, RecordDecodeError> {
        match bytes.split_first() {
            None => Err(RecordDecodeError::Empty),
            Some((&RECORD_VERSION, json)) => Ok(serde_json::from_slice(json)?),
            Some((&v, _)) => Err(RecordDecodeError::UnknownVersion(v)),
        }
    }
}
