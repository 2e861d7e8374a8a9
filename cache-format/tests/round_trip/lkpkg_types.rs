//! lkpkg's types on the corpus: each index and manifest read and written back through
//! `canonical_json` must give the canonical form of the original (its generic JSON value with
//! sorted keys, [`canonical`]), so nothing is lost, added or changed but the key order; a
//! document that is already canonical comes back byte for byte.

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{
    DockerArchiveEntry, ImageConfigSummary, ImageIndex, ImageManifest, Platform,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::support::{
    CONFIGS, DOCKER_ARCHIVES, Document, INDEXES, LAYOUT_INDEXES, MANIFESTS, corpus, differences,
    value,
};

/// The canonical bytes of the original: its generic value written by
/// [`canonical_json::to_vec`] (sorted keys, serde_json's compact form).
fn canonical(doc: &Document) -> Vec<u8> {
    canonical_json::to_vec(&value(doc)).unwrap()
}

/// The one thing lkpkg's types do not keep: a list Go wrote as `null` (a nil slice) reads as
/// empty and writes back as `[]` (see `layout.rs`). lkpkg never writes back a manifest it read.
const NORMALISED: &[(&str, &str)] = &[(
    "manifest/docker-save-docker-v2-no-layers.json",
    "~ /layers: null → []",
)];

/// Reads `doc` as `T`, writes it back with `write`, and checks the bytes against `expected`.
fn round_trip<T: DeserializeOwned + Serialize>(
    doc: &Document,
    write: fn(&T) -> serde_json::Result<Vec<u8>>,
    expected: &[u8],
) {
    let parsed: T = serde_json::from_slice(&doc.bytes)
        .unwrap_or_else(|e| panic!("{}: lkpkg cannot read it: {e}", doc.name));
    let written = write(&parsed).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&written).unwrap();
    let changed = differences(&value(doc), &back);
    let allowed: Vec<&str> = NORMALISED
        .iter()
        .filter(|(name, _)| *name == doc.name)
        .map(|(_, d)| *d)
        .collect();
    assert_eq!(changed, allowed, "{}: lkpkg's types changed it", doc.name);
    if allowed.is_empty() {
        assert!(
            written == expected,
            "{}:\nwritten:  {}\nexpected: {}",
            doc.name,
            String::from_utf8_lossy(&written),
            String::from_utf8_lossy(expected),
        );
    }
    if doc.bytes == expected {
        assert_eq!(
            written, doc.bytes,
            "{}: canonical, so byte for byte",
            doc.name
        );
    }
}

#[test]
fn indexes_and_manifests_come_back_exactly() {
    for doc in corpus(INDEXES) {
        round_trip::<ImageIndex>(&doc, canonical_json::to_vec, &canonical(&doc));
    }
    for doc in corpus(MANIFESTS) {
        round_trip::<ImageManifest>(&doc, canonical_json::to_vec, &canonical(&doc));
    }
}

/// `index.json` is rewritten whole when a name changes: every entry another tool wrote must
/// survive, whatever it carries. lkpkg writes it indented like linuxkit.
#[test]
fn layout_index_json_comes_back_exactly() {
    for doc in corpus(LAYOUT_INDEXES) {
        let expected = canonical_json::to_vec_index_json(&value(&doc)).unwrap();
        round_trip::<ImageIndex>(&doc, canonical_json::to_vec_index_json, &expected);
        round_trip::<ImageIndex>(&doc, canonical_json::to_vec, &canonical(&doc));
    }
}

/// Written back canonically, a document lkpkg read comes back byte for byte only if it was
/// canonical: true of what lkpkg writes (the engine's store tests), of nothing the other
/// producers wrote (each has its own key order or indentation). So lkpkg stores every blob as
/// it came and hashes the stored bytes, never a rewrite.
#[test]
fn no_other_producer_writes_canonical_json() {
    for kind in [LAYOUT_INDEXES, INDEXES, MANIFESTS, CONFIGS] {
        for doc in corpus(kind) {
            assert_ne!(doc.bytes, canonical(&doc), "{}", doc.name);
        }
    }
}

/// Configs are never rewritten (their bytes are stored as they came); lkpkg reads the platform
/// and the layers' diff ids from them.
#[test]
fn configs_give_their_platform_and_diff_ids() {
    for doc in corpus(CONFIGS) {
        let config: ImageConfigSummary = serde_json::from_slice(&doc.bytes)
            .unwrap_or_else(|e| panic!("{}: lkpkg cannot read it: {e}", doc.name));
        let original = value(&doc);
        let platform = config.platform();
        assert_eq!(
            platform.architecture, original["architecture"],
            "{}",
            doc.name
        );
        assert_eq!(platform.os, original["os"], "{}", doc.name);
        assert_eq!(
            platform.variant.as_deref(),
            original["variant"].as_str(),
            "{}",
            doc.name
        );
        let diff_ids: Vec<Digest> = match &original["rootfs"]["diff_ids"] {
            serde_json::Value::Null => Vec::new(),
            ids => serde_json::from_value(ids.clone()).unwrap(),
        };
        assert_eq!(config.rootfs.unwrap().diff_ids, diff_ids, "{}", doc.name);
    }
    let arm = corpus(CONFIGS)
        .into_iter()
        .find(|d| d.name == "config/buildkit-arm-v7.json")
        .unwrap();
    let arm: ImageConfigSummary = serde_json::from_slice(&arm.bytes).unwrap();
    assert_eq!(arm.platform(), Platform::parse("linux/arm/v7").unwrap());
}

/// `docker save`'s `manifest.json` is read, never written back (an export writes its own).
#[test]
fn docker_archive_manifests_are_read() {
    for doc in corpus(DOCKER_ARCHIVES) {
        let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&doc.bytes)
            .unwrap_or_else(|e| panic!("{}: lkpkg cannot read it: {e}", doc.name));
        let original = value(&doc);
        let original = original.as_array().unwrap();
        assert_eq!(entries.len(), original.len(), "{}", doc.name);
        for (entry, original) in entries.iter().zip(original) {
            assert_eq!(entry.config, original["Config"], "{}", doc.name);
            let layers = original["Layers"].as_array().cloned().unwrap_or_default();
            assert_eq!(entry.layers, layers, "{}", doc.name);
        }
    }
}
