//! oci-spec's types (0.10) on the same corpus as [`crate::lkpkg_types`]: what a parse and a
//! canonical write through them lose or refuse. The outcome of every document is pinned, so this test is
//! the record of why the cache's documents are lkpkg's own types (see `src/layout.rs`), and it
//! fails, to be looked at again, the day oci-spec reads them all.

use crate::support::{
    CONFIGS, Document, INDEXES, LAYOUT_INDEXES, MANIFESTS, corpus, differences, value,
};
use lkpkg_cache_format::canonical_json;
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What oci-spec makes of a document: `Err` when it cannot read it, else the differences
/// between the original and what it writes back (empty: nothing lost).
fn through<T: DeserializeOwned + Serialize>(bytes: &[u8]) -> Result<Vec<String>, String> {
    let parsed: T = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let written = canonical_json::to_vec(&parsed).unwrap();
    let original: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    Ok(differences(
        &original,
        &serde_json::from_slice(&written).unwrap(),
    ))
}

/// The documents oci-spec does not give back as they were, and how.
const NOT_KEPT: &[(&str, &[&str])] = &[
    // BuildKit's image with no layer, as `docker save` writes it: Go's nil slice is `null`.
    (
        "manifest/docker-save-docker-v2-no-layers.json",
        &["refused: invalid type: null, expected a sequence at line 9 column 16"],
    ),
    // The same image's config: `"diff_ids": null` (and `"created": null`).
    (
        "config/buildkit-no-layers.json",
        &["refused: invalid type: null, expected a sequence at line 1 column 351"],
    ),
    // Docker's fields of the image config, which the OCI config does not have: dropped.
    (
        "config/buildkit-docker-fields.json",
        &[
            "- /config/ArgsEscaped",
            "- /config/Healthcheck",
            "- /config/OnBuild",
            "- /config/Shell",
        ],
    ),
    (
        "config/docker-classic-builder.json",
        &[
            "- /config/Healthcheck",
            "- /config/OnBuild",
            "- /config/Shell",
        ],
    ),
    ("config/skopeo-oci.json", &["- /config/ArgsEscaped"]),
];

fn outcome(doc: &Document, read: fn(&[u8]) -> Result<Vec<String>, String>) -> Vec<String> {
    read(&doc.bytes).unwrap_or_else(|e| vec![format!("refused: {e}")])
}

#[test]
fn what_oci_spec_loses_of_real_documents() {
    let mut seen = Vec::new();
    for kind in [LAYOUT_INDEXES, INDEXES] {
        for doc in corpus(kind) {
            seen.push((doc.name.clone(), outcome(&doc, through::<ImageIndex>)));
        }
    }
    for doc in corpus(MANIFESTS) {
        seen.push((doc.name.clone(), outcome(&doc, through::<ImageManifest>)));
    }
    for doc in corpus(CONFIGS) {
        seen.push((
            doc.name.clone(),
            outcome(&doc, through::<ImageConfiguration>),
        ));
    }
    let mut unexplained = Vec::new();
    for (name, differences) in &seen {
        let expected: Vec<String> = NOT_KEPT
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.iter().map(|s| (*s).to_owned()).collect())
            .unwrap_or_default();
        if *differences != expected {
            unexplained.push(format!("{name}: {differences:?}, expected {expected:?}"));
        }
    }
    assert!(unexplained.is_empty(), "{unexplained:#?}");
    for (name, _) in NOT_KEPT {
        assert!(
            seen.iter().any(|(n, _)| n == name),
            "{name} is not in the corpus"
        );
    }
}

/// Beyond the corpus: members no producer above writes, but another tool may put in the
/// cache's `index.json` (which lkpkg rewrites whole) or a later spec may add. oci-spec drops
/// them wherever they are; lkpkg's types keep them.
#[test]
fn oci_spec_drops_members_it_does_not_know() {
    let doc = value(&corpus(LAYOUT_INDEXES)[0]);
    let mut doc = doc;
    doc["org.example.tool"] = serde_json::json!({"written-by": "another tool"});
    doc["manifests"][0]["org.example.entry"] = serde_json::json!(1);
    doc["manifests"][0]["platform"] =
        serde_json::json!({"architecture": "amd64", "os": "linux", "org.example.cpu": "x"});
    let bytes = serde_json::to_vec(&doc).unwrap();
    assert_eq!(
        through::<ImageIndex>(&bytes).unwrap(),
        [
            "- /manifests/0/org.example.entry",
            "- /manifests/0/platform/org.example.cpu",
            "- /org.example.tool",
        ]
    );
    let ours: lkpkg_cache_format::layout::ImageIndex = serde_json::from_slice(&bytes).unwrap();
    let back: serde_json::Value =
        serde_json::from_slice(&canonical_json::to_vec(&ours).unwrap()).unwrap();
    assert_eq!(
        crate::support::differences(&doc, &back),
        Vec::<String>::new()
    );
}
