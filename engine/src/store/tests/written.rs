//! What lkpkg writes itself is valid OCI by oci-spec's types, and canonical: the manifest it
//! makes of a `docker save` image, the multi-arch index of a name, the `index.json` of an export,
//! and the cache's own `index.json` (the index a build's named context reads is checked beside
//! its maker, `executor::solve`, with [`check_index`]). oci-spec reads
//! each and writes back exactly what lkpkg wrote (nothing outside the spec, nothing it refuses);
//! the blobs are the canonical bytes of what lkpkg's types read back, so hashing them is stable.
//! (Why the cache's types are not oci-spec's: `cache-format/tests/round_trip/`.)

use lkpkg_cache_format::canonical_json;
use oci_spec::image::{self as oci, MediaType};

use super::*;
use crate::store::export::ExportFormat;

/// The linuxkit export of `tests/compat/archives/` (its README): a real `docker save` form.
const LINUXKIT_DOCKER_EXPORT: &[u8] =
    include_bytes!("../../../../tests/compat/archives/linuxkit-cache-export-docker.tar");

/// `bytes` read by oci-spec as `T` and written back canonically: the same document.
fn valid_oci<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, bytes: &[u8]) -> T {
    let parsed: T = serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("{what}: not valid for oci-spec: {e}"));
    let ours: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    let theirs = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        theirs, ours,
        "{what}: oci-spec does not write back what lkpkg wrote"
    );
    parsed
}

/// A blob lkpkg hashes: canonical JSON, and what lkpkg's types read writes back byte for byte.
fn canonical<T: serde::de::DeserializeOwned + serde::Serialize>(what: &str, bytes: &[u8]) {
    let value: serde_json::Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(
        canonical_json::to_vec(&value).unwrap(),
        bytes,
        "{what}: not canonical"
    );
    let ours: T = serde_json::from_slice(bytes).unwrap();
    assert_eq!(canonical_json::to_vec(&ours).unwrap(), bytes, "{what}");
}

fn check_manifest(store: &Store, what: &str, digest: &Digest) {
    let bytes = store.read_blob(digest).unwrap();
    canonical::<layout::ImageManifest>(what, &bytes);
    let manifest: oci::ImageManifest = valid_oci(what, &bytes);
    assert_eq!(
        manifest.media_type(),
        &Some(MediaType::ImageManifest),
        "{what}"
    );
    assert_eq!(
        manifest.config().media_type(),
        &MediaType::ImageConfig,
        "{what}"
    );
    for layer in manifest.layers() {
        assert!(
            matches!(
                layer.media_type(),
                MediaType::ImageLayer | MediaType::ImageLayerGzip
            ),
            "{what}: {}",
            layer.media_type()
        );
    }
}

/// An index lkpkg makes of platform images: canonical, valid OCI, one platform per entry.
pub(crate) fn check_index(what: &str, bytes: &[u8]) -> oci::ImageIndex {
    canonical::<ImageIndex>(what, bytes);
    let index: oci::ImageIndex = valid_oci(what, bytes);
    assert_eq!(index.media_type(), &Some(MediaType::ImageIndex), "{what}");
    for entry in index.manifests() {
        assert_eq!(entry.media_type(), &MediaType::ImageManifest, "{what}");
        assert!(
            entry.platform().is_some(),
            "{what}: an entry without platform"
        );
    }
    index
}

#[test]
fn what_lkpkg_writes_is_valid_oci_and_canonical() {
    let (_dir, store) = store();

    // The manifests lkpkg makes of `docker save` images (its own test archive, linuxkit's).
    let layer = layer_tar(&[("hello", b"hi")]);
    store
        .import(&docker_save("amd64", &["org/saved:1"], std::slice::from_ref(&layer))[..])
        .unwrap();
    store.import(LINUXKIT_DOCKER_EXPORT).unwrap();
    for name in [
        "docker.io/org/saved:1",
        "docker.io/lkpkgcompat/tiny:c55cf2b119b317c3ca4d3711856c7c14c9581ca1",
    ] {
        let desc = store.lookup(name).unwrap().unwrap();
        assert_eq!(desc.media_type, layout::MEDIA_TYPE_OCI_MANIFEST);
        check_manifest(&store, name, &desc.digest);
    }

    // A multi-arch name: the index lkpkg merges.
    let mut arches = Vec::new();
    for arch in ["amd64", "arm64"] {
        let archive = oci_archive(arch, &[layer_tar(&[("hello", arch.as_bytes())])]);
        arches.push(
            store
                .ingest_oci_archive(
                    &archive[..],
                    "docker.io/org/multi:1",
                    &Platform::linux(arch),
                )
                .unwrap(),
        );
    }
    let merged = store.merge_index("docker.io/org/multi:1", &arches).unwrap();
    let index = check_index("merged index", &store.read_blob(&merged.digest).unwrap());
    assert_eq!(index.manifests().len(), 2);

    // The `index.json` of an export (one entry, the image's root: here the merged index).
    let mut archive = Vec::new();
    store
        .export(
            "docker.io/org/multi:1",
            ExportFormat::Oci,
            &Platform::linux("amd64"),
            None,
            &mut archive,
        )
        .unwrap();
    let mut archive = tar::Archive::new(&archive[..]);
    let mut exported = None;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str() == Some(layout::INDEX_FILE) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            exported = Some(bytes);
        }
    }
    let exported = exported.expect("an OCI export has an index.json");
    canonical::<ImageIndex>("exported index.json", &exported);
    let exported: oci::ImageIndex = valid_oci("exported index.json", &exported);
    assert_eq!(exported.manifests()[0].media_type(), &MediaType::ImageIndex);

    // The cache's own `index.json` (indented like linuxkit's; never hashed).
    let bytes = std::fs::read(store.root().join(layout::INDEX_FILE)).unwrap();
    let cache_index: oci::ImageIndex = valid_oci("the cache's index.json", &bytes);
    assert_eq!(
        bytes,
        canonical_json::to_vec_index_json(&raw_index(&store)).unwrap()
    );
    assert!(cache_index.manifests().len() >= 4);
    for entry in cache_index.manifests() {
        let annotations = entry.annotations().as_ref().unwrap();
        assert!(annotations.contains_key(layout::REF_NAME_ANNOTATION));
    }
}
