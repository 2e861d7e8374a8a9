//! Store tests on temporary caches, with `docker save` archives made in memory.

use std::collections::BTreeMap;

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::index_db::RefRecord;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex, Platform};
use redb::ReadableDatabase;

use super::*;

/// A one-file layer tar.
pub(crate) fn layer_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// A `docker save` archive (docker 20.10 layout) of one image.
pub(crate) fn docker_save(arch: &str, tags: &[&str], layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", Digest::of(&config_bytes).hex());
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data).unwrap();
    };
    let mut layer_paths = Vec::new();
    for (i, layer) in layers.iter().enumerate() {
        let path = format!("{i:064}/layer.tar");
        add(&path, layer);
        add(&format!("{i:064}/VERSION"), b"1.0");
        layer_paths.push(path);
    }
    add(&config_name, &config_bytes);
    let manifest = serde_json::json!([{
        "Config": config_name, "RepoTags": tags, "Layers": layer_paths,
    }]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    builder.into_inner().unwrap()
}

/// An OCI layout tar of one image (what BuildKit's `oci` exporter streams).
pub(crate) fn oci_archive(arch: &str, layers: &[Vec<u8>]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let descriptor = |media_type: &str, bytes: &[u8]| serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(), "size": bytes.len()});
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": layout::MEDIA_TYPE_OCI_MANIFEST,
        "config": descriptor(layout::MEDIA_TYPE_OCI_CONFIG, &config),
        "layers": layers.iter().map(|l| descriptor(layout::MEDIA_TYPE_OCI_LAYER_TAR, l)).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [descriptor(layout::MEDIA_TYPE_OCI_MANIFEST, &manifest)],
    }))
    .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in layers
        .iter()
        .map(Vec::as_slice)
        .chain([&config[..], &manifest[..]])
    {
        add(&format!("blobs/sha256/{}", Digest::of(blob).hex()), blob);
    }
    add("index.json", &index);
    builder.into_inner().unwrap()
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    (dir, store)
}

fn raw_index(store: &Store) -> ImageIndex {
    let bytes = std::fs::read(store.root().join("index.json")).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn open_creates_a_linuxkit_layout() {
    let (dir, _store) = store();
    assert_eq!(
        std::fs::read_to_string(dir.path().join("oci-layout")).unwrap(),
        "{\n    \"imageLayoutVersion\": \"1.0.0\"\n}"
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["manifests"], serde_json::json!([]));
    assert!(dir.path().join(format::DB_FILE).exists());
    // A second handle in the same process shares the database.
    let again = Store::open(dir.path()).unwrap();
    assert!(again.names().unwrap().is_empty());
}

#[test]
fn ingest_writes_per_arch_name_and_merges_the_index() {
    let (_dir, store) = store();
    let layer = layer_tar(&[("hello", b"hi amd64")]);
    let amd = store
        .ingest_oci_archive(
            &oci_archive("amd64", std::slice::from_ref(&layer))[..],
            "docker.io/org/img:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    assert_eq!(amd.platform.as_ref().unwrap().architecture, "amd64");
    // The layer is stored as-is: its digest is the diff id.
    let manifest = store.read_manifest(&amd.digest).unwrap();
    assert_eq!(manifest.layers[0].digest, Digest::of(&layer));
    assert_eq!(
        manifest.layers[0].media_type,
        layout::MEDIA_TYPE_OCI_LAYER_TAR
    );
    // The manifest is canonical JSON, hashed over the bytes written.
    let bytes = store.read_blob(&amd.digest).unwrap();
    assert_eq!(Digest::of(&bytes), amd.digest);
    assert_eq!(
        lkpkg_cache_format::canonical_json::to_vec(&manifest).unwrap(),
        bytes
    );
    let per_arch = store.lookup("docker.io/org/img:t-amd64").unwrap().unwrap();
    assert_eq!(per_arch.digest, amd.digest);

    let arm = store
        .ingest_oci_archive(
            &oci_archive("arm64", &[layer_tar(&[("hello", b"hi arm64")])])[..],
            "docker.io/org/img:t",
            &Platform::linux("arm64"),
        )
        .unwrap();
    let first = store
        .merge_index("docker.io/org/img:t", std::slice::from_ref(&amd))
        .unwrap();
    // A release name references the first index: merging must keep that blob.
    store
        .set_names(vec![("docker.io/org/img:release".into(), first.clone())])
        .unwrap();
    let second = store
        .merge_index("docker.io/org/img:t", std::slice::from_ref(&arm))
        .unwrap();
    let index = store.read_index(&second.digest).unwrap();
    assert_eq!(index.manifests.len(), 2);
    let amd2 = store
        .ingest_oci_archive(
            &oci_archive("amd64", &[layer_tar(&[("hello", b"v2")])])[..],
            "docker.io/org/img:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    let third = store
        .merge_index("docker.io/org/img:t", std::slice::from_ref(&amd2))
        .unwrap();
    let index = store.read_index(&third.digest).unwrap();
    assert_eq!(index.manifests.len(), 2, "amd64 replaced, arm64 kept");
    assert!(index.manifests.iter().any(|m| m.digest == amd2.digest));
    assert!(store.has_blob(&first.digest));
    // A re-pointed name's old content stays until gc, so that a build record can reuse it.
    assert!(store.has_blob(&second.digest), "kept for reuse until gc");
    store.gc(&crate::store::gc::GcOptions::default()).unwrap();
    assert!(
        !store.has_blob(&second.digest),
        "gc removes what no name reaches"
    );
    assert!(store.verify(false).unwrap().problems.is_empty());
    // Every index.json entry carries linuxkit's name annotation.
    for entry in raw_index(&store).manifests {
        assert!(entry.ref_name().is_some());
    }
}

#[test]
fn rm_keeps_blobs_other_names_reach() {
    let (_dir, store) = store();
    let shared = layer_tar(&[("shared", b"same")]);
    let own = layer_tar(&[("own", b"mine")]);
    let archive = docker_save("amd64", &["org/a:1"], &[shared.clone(), own.clone()]);
    store.import(&archive[..]).unwrap();
    let archive = docker_save("amd64", &["org/b:1"], std::slice::from_ref(&shared));
    store.import(&archive[..]).unwrap();
    let removed = store.remove_names(&["docker.io/org/a:1".into()]).unwrap();
    assert_eq!(removed, vec!["docker.io/org/a:1".to_owned()]);
    assert!(store.has_blob(&Digest::of(&shared)));
    assert!(!store.has_blob(&Digest::of(&own)));
    assert_eq!(
        store
            .blob_record(&Digest::of(&shared))
            .unwrap()
            .unwrap()
            .refcount,
        1
    );
    assert!(store.verify(false).unwrap().problems.is_empty());
    assert!(store.lookup("docker.io/org/a:1").unwrap().is_none());
}

#[test]
fn pinned_blobs_survive_a_concurrent_rm() {
    let (_dir, store) = store();
    let shared = layer_tar(&[("shared", b"same")]);
    store
        .import(&docker_save("amd64", &["org/a:1"], std::slice::from_ref(&shared))[..])
        .unwrap();
    let mut ingest = store.ingest();
    let images = ingest
        .read_docker_save(&docker_save("amd64", &[], std::slice::from_ref(&shared))[..])
        .unwrap();
    // Another writer removes the only name reaching the shared layer before we publish.
    store.remove_names(&["docker.io/org/a:1".into()]).unwrap();
    assert!(store.has_blob(&Digest::of(&shared)));
    ingest
        .publish(vec![("docker.io/org/b:1".into(), images[0].0.clone())])
        .unwrap();
    drop(ingest);
    assert_eq!(ingest::pinned_count(&store), 0);
    assert!(store.verify(false).unwrap().problems.is_empty());
}

#[test]
fn a_changed_index_json_is_reindexed() {
    let (_dir, store) = store();
    store
        .import(&docker_save("amd64", &["org/a:1"], &[layer_tar(&[("f", b"1")])])[..])
        .unwrap();
    let desc = store.lookup("docker.io/org/a:1").unwrap().unwrap();
    // Another tool (linuxkit) adds a name by rewriting index.json in place.
    let mut index = raw_index(&store);
    let mut other = desc.clone();
    other.annotations.insert(
        layout::REF_NAME_ANNOTATION.into(),
        "docker.io/org/alias:2".into(),
    );
    index.manifests.push(other);
    std::fs::write(
        store.root().join("index.json"),
        serde_json::to_vec_pretty(&index).unwrap(),
    )
    .unwrap();
    let found = store.lookup("docker.io/org/alias:2").unwrap().unwrap();
    assert_eq!(found.digest, desc.digest);
    assert!(store.verify(false).unwrap().problems.is_empty());
}

fn remove_ref_from_db(store: &Store, name: &str) {
    let txn = store.database().begin_write().unwrap();
    txn.open_table(db::REFS).unwrap().remove(name).unwrap();
    txn.commit().unwrap();
}

#[test]
fn verify_catches_planted_faults_and_repair_fixes_them() {
    let (_dir, store) = store();
    let l1 = layer_tar(&[("a", b"a")]);
    let l2 = layer_tar(&[("b", b"b")]);
    store
        .import(&docker_save("amd64", &["org/a:1"], std::slice::from_ref(&l1))[..])
        .unwrap();
    store
        .import(&docker_save("amd64", &["org/b:1"], std::slice::from_ref(&l2))[..])
        .unwrap();
    assert!(store.verify(false).unwrap().problems.is_empty());

    // 1. A flipped byte in a blob.
    let path = store.blob_path(&Digest::of(&l1));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let report = store.verify(false).unwrap();
    assert!(
        report.problems.iter().any(
            |p| matches!(p, Problem::CorruptBlob { digest, .. } if *digest == Digest::of(&l1))
        )
    );
    // 2. A missing blob.
    std::fs::remove_file(store.blob_path(&Digest::of(&l2))).unwrap();
    let report = store.verify(false).unwrap();
    assert!(report.problems.iter().any(|p| matches!(p,
        Problem::MissingBlob { name, .. } if name == "docker.io/org/b:1")));
    // 3. An index.json entry unknown to redb.
    remove_ref_from_db(&store, "docker.io/org/a:1");
    // 4. A redb entry unknown to index.json.
    let record = RefRecord {
        descriptor: Descriptor::new(layout::MEDIA_TYPE_OCI_MANIFEST, Digest::of(b"x"), 1),
        last_use_ms: 0,
    };
    let txn = store.database().begin_write().unwrap();
    txn.open_table(db::REFS)
        .unwrap()
        .insert("docker.io/org/ghost:1", record.encode().as_slice())
        .unwrap();
    txn.commit().unwrap();
    let report = store.verify(false).unwrap();
    assert!(report.problems.contains(&Problem::NameUnknownToIndexDb {
        name: "docker.io/org/a:1".into()
    }));
    assert!(report.problems.contains(&Problem::NameUnknownToIndexJson {
        name: "docker.io/org/ghost:1".into()
    }));

    let repaired = store.verify(true).unwrap();
    assert!(repaired.repaired);
    // Only the missing blobs remain (the quarantined corrupt one is now missing too): no name
    // was removed, redb agrees with index.json again.
    assert!(
        repaired
            .remaining
            .iter()
            .all(|p| matches!(p, Problem::MissingBlob { .. }))
    );
    assert!(store.lookup("docker.io/org/a:1").unwrap().is_some());
    assert!(store.lookup("docker.io/org/b:1").unwrap().is_some());
    assert!(store.lookup("docker.io/org/ghost:1").unwrap().is_none());
    assert!(
        store
            .root()
            .join(verify::QUARANTINE_DIR)
            .join(Digest::of(&l1).hex())
            .exists()
    );
    // Re-importing the images heals the cache completely.
    store
        .import(&docker_save("amd64", &["org/a:1"], std::slice::from_ref(&l1))[..])
        .unwrap();
    store
        .import(&docker_save("amd64", &["org/b:1"], std::slice::from_ref(&l2))[..])
        .unwrap();
    assert!(store.verify(false).unwrap().problems.is_empty());
}

#[test]
fn export_oci_imports_back_identically() {
    let (_dir, store) = store();
    let layer = layer_tar(&[("hello", b"x")]);
    let amd = store
        .ingest_oci_archive(
            &oci_archive("amd64", &[layer])[..],
            "docker.io/o/i:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    let index = store.merge_index("docker.io/o/i:t", &[amd]).unwrap();
    let mut tar_bytes = Vec::new();
    store
        .export(
            "o/i:t",
            ExportFormat::Oci,
            &Platform::linux("amd64"),
            None,
            &mut tar_bytes,
        )
        .unwrap();
    let (_dir2, other) = store_pair();
    let names = other.import(&tar_bytes[..]).unwrap();
    assert_eq!(names.len(), 1);
    assert_eq!(names[0].name, "docker.io/o/i:t");
    assert_eq!(names[0].descriptor.digest, index.digest);
    assert!(other.verify(false).unwrap().problems.is_empty());

    let mut docker_tar = Vec::new();
    store
        .export(
            "docker.io/o/i:t",
            ExportFormat::Docker,
            &Platform::linux("amd64"),
            None,
            &mut docker_tar,
        )
        .unwrap();
    let mut archive = tar::Archive::new(&docker_tar[..]);
    let paths: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(paths.contains(&"manifest.json".to_owned()));
    assert!(paths.contains(&"oci-layout".to_owned()));

    let mut fs_tar = Vec::new();
    store
        .export(
            "docker.io/o/i:t",
            ExportFormat::Filesystem,
            &Platform::linux("amd64"),
            None,
            &mut fs_tar,
        )
        .unwrap();
    let mut archive = tar::Archive::new(&fs_tar[..]);
    let files: BTreeMap<String, u64> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), e.size())
        })
        .collect();
    assert_eq!(files.get("hello"), Some(&1));
    let err = store
        .export(
            "docker.io/o/i:t",
            ExportFormat::Docker,
            &Platform::linux("s390x"),
            None,
            &mut Vec::new(),
        )
        .unwrap_err();
    assert!(err.is_user_error(), "{err}");
}

fn store_pair() -> (tempfile::TempDir, Store) {
    store()
}

#[test]
fn filesystem_export_applies_whiteouts() {
    let (_dir, store) = store();
    let lower = layer_tar(&[
        ("keep", b"k"),
        ("gone", b"g"),
        ("dir/old", b"o"),
        ("shadow", b"lower"),
    ]);
    let upper = layer_tar(&[
        (".wh.gone", b""),
        ("dir/.wh..wh..opq", b""),
        ("dir/new", b"n"),
        ("shadow", b"upper!"),
    ]);
    store
        .import(&docker_save("amd64", &["o/w:1"], &[lower, upper])[..])
        .unwrap();
    let mut out = Vec::new();
    store
        .export(
            "o/w:1",
            ExportFormat::Filesystem,
            &Platform::linux("amd64"),
            None,
            &mut out,
        )
        .unwrap();
    let mut archive = tar::Archive::new(&out[..]);
    let files: BTreeMap<String, u64> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), e.size())
        })
        .collect();
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["dir/new", "keep", "shadow"]);
    assert_eq!(files["shadow"], 6);
}

#[test]
fn gc_drops_unreachable_blobs_and_trims_lru_names() {
    let (_dir, store) = store();
    let mut ingest = store.ingest();
    let (orphan, _) = ingest.put_bytes(b"nobody names me").unwrap();
    drop(ingest);
    for (i, tag) in ["o/a:1", "o/b:1", "o/c:1"].iter().enumerate() {
        let layer = layer_tar(&[("f", &vec![i as u8; 10_000])]);
        store
            .import(&docker_save("amd64", &[tag], &[layer])[..])
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    store.touch(&["docker.io/o/a:1".into()]).unwrap();
    let report = store.gc(&GcOptions::default()).unwrap();
    assert_eq!(report.removed_blobs.len(), 1);
    assert_eq!(report.removed_blobs[0].0, orphan);
    assert!(report.removed_names.is_empty());

    let usage = store.usage().unwrap();
    assert_eq!(usage.names.len(), 3);
    let one = usage.names[0].total;
    let report = store
        .gc(&GcOptions {
            max_size: Some(one * 2),
            keep_duration: None,
        })
        .unwrap();
    // b was used least recently (a was touched), so it goes first, and alone: the two left
    // fit. Its blobs are reported freed.
    assert_eq!(report.removed_names, vec!["docker.io/o/b:1".to_owned()]);
    assert_eq!(report.freed_bytes, one, "{report:?}");
    assert!(report.remaining_bytes <= one * 2, "{report:?}");
    assert_eq!(store.usage().unwrap().blob_bytes, report.remaining_bytes);
    assert!(store.lookup("docker.io/o/a:1").unwrap().is_some());
    assert!(store.verify(false).unwrap().problems.is_empty());
}

#[test]
fn du_splits_shared_and_unique() {
    let (_dir, store) = store();
    let shared = layer_tar(&[("s", &[7u8; 5000])]);
    store
        .import(&docker_save("amd64", &["o/a:1"], std::slice::from_ref(&shared))[..])
        .unwrap();
    store
        .import(
            &docker_save(
                "amd64",
                &["o/b:1"],
                &[shared.clone(), layer_tar(&[("x", b"x")])],
            )[..],
        )
        .unwrap();
    let usage = store.usage().unwrap();
    for u in &usage.names {
        assert_eq!(u.total, u.unique + u.shared);
        assert_eq!(u.shared, shared.len() as u64);
    }
}

#[test]
fn bad_input_is_a_user_error() {
    let (_dir, store) = store();
    assert!(store.resolve("nope:1").unwrap_err().is_user_error());
    assert!(
        store
            .import(&b"not a tar at all"[..])
            .unwrap_err()
            .is_user_error()
    );
    let mut bad = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_size(3);
    let name = format!("blobs/sha256/{}", Digest::of(b"abc").hex());
    bad.append_data(&mut header, name, &b"abd"[..]).unwrap();
    let bad = bad.into_inner().unwrap();
    assert!(matches!(
        store.import(&bad[..]).unwrap_err(),
        StoreError::DigestMismatch { .. }
    ));
}

#[test]
fn concurrent_threads_publish_without_losing_names() {
    let (_dir, store) = store();
    let store = std::sync::Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..5 {
                    let tag = format!("o/t{t}:{i}");
                    let layer = layer_tar(&[("shared", b"same"), ("f", tag.as_bytes())]);
                    store
                        .import(&docker_save("amd64", &[&tag], &[layer])[..])
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(store.names().unwrap().len(), 20);
    assert!(store.verify(false).unwrap().problems.is_empty());
}

/// With `index.json` gone, the cache's database still lists every name: nothing is deleted on
/// the word of the missing index (gc used to empty the cache), every command says what is
/// wrong, verify reports it and `--repair` writes index.json back from the database.
#[test]
fn a_missing_index_json_is_reported_and_repaired_never_taken_for_empty() {
    let (dir, store) = store();
    let layer = layer_tar(&[("f", b"kept")]);
    store
        .import(&docker_save("amd64", &["o/a:1"], std::slice::from_ref(&layer))[..])
        .unwrap();
    let blobs_before = blobs::list(store.root()).unwrap().len();
    drop(store);
    std::fs::remove_file(dir.path().join("index.json")).unwrap();

    let store = Store::open(dir.path()).unwrap();
    let missing = |e: StoreError| matches!(e, StoreError::IndexJsonMissing { names: 1, .. });
    assert!(missing(store.names().unwrap_err()));
    assert!(missing(store.gc(&GcOptions::default()).unwrap_err()));
    assert!(missing(store.lookup("docker.io/o/a:1").unwrap_err()));
    assert_eq!(blobs::list(store.root()).unwrap().len(), blobs_before);
    assert!(!dir.path().join("index.json").exists());

    let report = store.verify(false).unwrap();
    assert_eq!(
        report.problems,
        vec![Problem::IndexJsonMissing { names: 1 }]
    );
    assert!(!dir.path().join("index.json").exists());
    let report = store.verify(true).unwrap();
    assert!(report.repaired && report.remaining.is_empty(), "{report:?}");
    let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["docker.io/o/a:1"]);
    assert!(store.verify(false).unwrap().problems.is_empty());
}

/// An index database redb cannot read (random bytes after its header made every command
/// panic) is set aside and rebuilt from index.json, and the store says so.
#[test]
fn an_unreadable_index_database_is_rebuilt_from_index_json() {
    let (dir, store) = store();
    let layer = layer_tar(&[("f", b"kept")]);
    store
        .import(&docker_save("amd64", &["o/a:1"], std::slice::from_ref(&layer))[..])
        .unwrap();
    drop(store);
    let db_path = dir.path().join(lkpkg_cache_format::index_db::DB_FILE);
    let mut bytes = std::fs::read(&db_path).unwrap();
    let mut x: u32 = 12345;
    for b in bytes.iter_mut().skip(4096) {
        // A small deterministic generator: the same damage on every run.
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(&db_path, bytes).unwrap();

    let store = Store::open(dir.path()).unwrap();
    let notice = store.notice().expect("a notice").to_owned();
    assert!(notice.contains("rebuilt from index.json"), "{notice}");
    let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["docker.io/o/a:1"]);
    assert!(store.verify(false).unwrap().problems.is_empty());
    let aside = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .contains(".unreadable-")
        })
        .count();
    assert_eq!(aside, 1);
}

/// An OCI layout tar of the given blobs and `index.json` entries (`(media type, bytes, size
/// declared, name)`).
fn layout_tar(blobs: &[&[u8]], entries: &[(&str, &[u8], usize, &str)]) -> Vec<u8> {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(media_type, bytes, size, name)| {
            serde_json::json!({"mediaType": media_type, "digest": Digest::of(bytes).to_string(),
                "size": size, "annotations": {"org.opencontainers.image.ref.name": name}})
        })
        .collect();
    let index =
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .unwrap();
    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    for blob in blobs {
        add(&format!("blobs/sha256/{}", Digest::of(blob).hex()), blob);
    }
    add("index.json", &index);
    builder.into_inner().unwrap()
}

/// Imports of names no registry takes, of descriptors whose size is wrong and of "manifests"
/// that are not JSON are refused, leaving the cache as it was; entries planted in index.json
/// by another tool are reported by verify (they used to pass it).
#[test]
fn bad_names_and_bad_content_are_refused_and_verify_reports_them() {
    let (dir, store) = store();
    let layer = layer_tar(&[("f", b"1")]);
    let long = format!("o/{}:1", "a".repeat(5000));
    for bad in ["UPPER CASE/../x:y", "o/a b:1", "o/x\ny:1", long.as_str()] {
        let e = store
            .import(&docker_save("amd64", &[bad], std::slice::from_ref(&layer))[..])
            .unwrap_err();
        assert!(matches!(e, StoreError::InvalidArgument(_)), "{bad:?}: {e}");
    }
    assert!(store.names().unwrap().is_empty());

    let not_json = b"this is not a manifest";
    let e = store
        .import(
            &layout_tar(
                &[not_json],
                &[(
                    layout::MEDIA_TYPE_OCI_MANIFEST,
                    not_json,
                    not_json.len(),
                    "docker.io/o/n:1",
                )],
            )[..],
        )
        .unwrap_err();
    assert!(
        e.to_string().contains("not a manifest") || e.to_string().contains("not an image manifest"),
        "{e}"
    );
    store
        .import(&docker_save("amd64", &["o/good:1"], std::slice::from_ref(&layer))[..])
        .unwrap();
    let good = store.lookup("docker.io/o/good:1").unwrap().unwrap();
    let manifest = store.read_blob(&good.digest).unwrap();
    let e = store
        .import(
            &layout_tar(
                &[],
                &[(
                    layout::MEDIA_TYPE_OCI_MANIFEST,
                    &manifest,
                    manifest.len() + 1,
                    "docker.io/o/s:1",
                )],
            )[..],
        )
        .unwrap_err();
    assert!(matches!(e, StoreError::BadContent { .. }), "{e}");
    let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["docker.io/o/good:1"]);
    // An index entry whose blob the archive does not hold: the archive's fault.
    let absent = b"{\"schemaVersion\":2}";
    let e = store
        .import(
            &layout_tar(
                &[],
                &[(
                    layout::MEDIA_TYPE_OCI_MANIFEST,
                    absent,
                    absent.len(),
                    "docker.io/o/m:1",
                )],
            )[..],
        )
        .unwrap_err();
    assert!(
        matches!(e, StoreError::BadArchive(_)) && e.is_user_error(),
        "{e}"
    );

    // Planted by another tool: verify reports both.
    let mut index = raw_index(&store);
    let mut bad_name = good.clone();
    bad_name.annotations.insert(
        layout::REF_NAME_ANNOTATION.into(),
        "docker.io/UPPER/x:1".into(),
    );
    let mut bad_size = good.clone();
    bad_size.size += 1;
    bad_size.annotations.insert(
        layout::REF_NAME_ANNOTATION.into(),
        "docker.io/o/size:1".into(),
    );
    index.manifests.push(bad_name);
    index.manifests.push(bad_size);
    std::fs::write(
        dir.path().join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    let problems = store.verify(false).unwrap().problems;
    assert!(
        problems.iter().any(
            |p| matches!(p, Problem::InvalidName { name, .. } if name == "docker.io/UPPER/x:1")
        ),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| matches!(p, Problem::BadContent { name, .. } if name == "docker.io/o/size:1")),
        "{problems:?}"
    );
}

/// Temporary files a killed writer left (a blob being streamed, an index.json replacement) are
/// removed by the next open; a live writer's are kept.
#[test]
fn temporary_files_of_dead_writers_are_removed_on_open() {
    let (dir, store) = store();
    drop(store);
    let dead = (4_000_000..4_100_000)
        .find(|pid| !std::path::Path::new(&format!("/proc/{pid}")).exists())
        .unwrap();
    let tmp = dir.path().join(blobs::TMP_DIR);
    let files = [
        tmp.join(format!("blob-{dead}-abc")),
        dir.path().join(format!("index.json.lkpkg-tmp-{dead}-abc")),
        tmp.join("blob-1-live"),
        dir.path().join("index.json.lkpkg-tmp-1-live"),
    ];
    for f in &files {
        std::fs::write(f, b"partial").unwrap();
    }
    let _store = Store::open(dir.path()).unwrap();
    assert!(!files[0].exists() && !files[1].exists());
    assert!(files[2].exists() && files[3].exists());
}

#[test]
fn blobs_a_session_reads_survive_a_clean_until_it_ends() {
    let (_dir, store) = store();
    let layer = layer_tar(&[("f", b"base")]);
    store
        .import(&docker_save("amd64", &["o/base:1"], &[layer])[..])
        .unwrap();
    let entry = store.lookup("docker.io/o/base:1").unwrap().unwrap();
    let blobs: Vec<Digest> = store.closure(&entry).blobs.into_keys().collect();
    let mut reading = store.ingest();
    reading
        .pin_present("docker.io/o/base:1", blobs.clone())
        .unwrap();
    store.clean().unwrap();
    for digest in &blobs {
        assert!(store.blob_path(digest).exists(), "{digest} went while read");
    }
    drop(reading);
    store.gc(&GcOptions::default()).unwrap();
    for digest in &blobs {
        assert!(
            !store.blob_path(digest).exists(),
            "{digest} outlived its reader"
        );
    }
    // A blob already gone cannot be pinned: the reader is told, naming what it wanted.
    let error = store
        .ingest()
        .pin_present("docker.io/o/base:1", blobs.clone())
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::MissingBlob { name, .. } if name == "docker.io/o/base:1"),
        "{error}"
    );
}

/// What each `fsync` of a publication guards (the store's docs, "Crash safety"), and what a
/// power loss that reorders a write around it leaves: each such state is caught by `verify`,
/// no command deletes anything on its word, and `verify --repair` gets back every name whose
/// content survived.
#[test]
fn each_write_reordered_around_its_fsync_is_caught_by_verify() {
    let setup = || {
        let (dir, store) = store();
        for (tag, bytes) in [("o/a:1", b"aaaa"), ("o/b:1", b"bbbb")] {
            let layer = layer_tar(&[("f", bytes)]);
            store
                .import(&docker_save("amd64", &[tag], std::slice::from_ref(&layer))[..])
                .unwrap();
        }
        assert!(store.verify(false).unwrap().problems.is_empty());
        let layer = Digest::of(&layer_tar(&[("f", b"aaaa")]));
        (dir, store, layer)
    };

    // Step 1 (the blob's data `fsync` before its rename): the file is there under its name,
    // its data lost (zero length after the power loss).
    let (_dir, store, layer) = setup();
    std::fs::File::create(store.blob_path(&layer)).unwrap();
    let report = store.verify(false).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| matches!(p, Problem::CorruptBlob { digest, .. } if *digest == layer)),
        "{report:?}"
    );

    // Step 3a (`blobs/sha256/` `fsync` before index.json names the image): the rename of the
    // blob is lost, index.json names it.
    let (_dir, store, layer) = setup();
    std::fs::remove_file(store.blob_path(&layer)).unwrap();
    let report = store.verify(false).unwrap();
    assert!(
        report.problems.iter().any(|p| matches!(p,
            Problem::MissingBlob { name, digest } if name == "docker.io/o/a:1" && *digest == layer)),
        "{report:?}"
    );

    // Step 3b (index.json's data `fsync` before its rename): the new index.json is there,
    // empty. Nothing is removed on its word; verify says so; repair sets it aside and writes
    // it back from the database.
    let (dir, store, _) = setup();
    let blobs_before = blobs::list(store.root()).unwrap().len();
    drop(store);
    std::fs::write(dir.path().join("index.json"), b"").unwrap();
    let store = Store::open(dir.path()).unwrap();
    let unreadable = |e: StoreError| matches!(e, StoreError::IndexJsonUnreadable { names: 2, .. });
    assert!(unreadable(store.names().unwrap_err()));
    assert!(unreadable(store.gc(&GcOptions::default()).unwrap_err()));
    assert_eq!(blobs::list(store.root()).unwrap().len(), blobs_before);
    let report = store.verify(false).unwrap();
    assert!(
        matches!(
            &report.problems[..],
            [Problem::IndexJsonUnreadable { names: 2, .. }]
        ),
        "{report:?}"
    );
    let report = store.verify(true).unwrap();
    assert!(report.repaired && report.remaining.is_empty(), "{report:?}");
    let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["docker.io/o/a:1", "docker.io/o/b:1"]);
    let aside: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("index.json.unreadable-")
        })
        .collect();
    assert_eq!(aside.len(), 1, "the unreadable index.json is kept aside");

    // Step 3c (redb's commit after index.json's rename): the database is one publication
    // behind index.json (a copy of it from before `b` was published stands for the lost
    // commit); the next open sees the stamp differ and re-indexes from index.json.
    drop(store);
    let (dir, store) = self::store();
    let db_path = dir.path().join(lkpkg_cache_format::index_db::DB_FILE);
    store
        .import(&docker_save("amd64", &["o/a:1"], &[layer_tar(&[("f", b"aaaa")])])[..])
        .unwrap();
    drop(store);
    let before_b = std::fs::read(&db_path).unwrap();
    let store = Store::open(dir.path()).unwrap();
    store
        .import(&docker_save("amd64", &["o/b:1"], &[layer_tar(&[("f", b"bbbb")])])[..])
        .unwrap();
    drop(store);
    std::fs::write(&db_path, before_b).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.verify(false).unwrap().problems.is_empty());
    assert!(store.lookup("docker.io/o/b:1").unwrap().is_some());
}

/// A cache whose database another schema wrote (an older or newer lkpkg): every table is reset
/// and the names come back from index.json; the build records go, and so do the units' last
/// builds, which would name keys whose records are gone.
#[test]
fn a_database_of_another_schema_is_reset_and_reindexed_whole() {
    let (dir, store) = store();
    store
        .import(&docker_save("amd64", &["o/a:1"], &[layer_tar(&[("f", b"a")])])[..])
        .unwrap();
    let manifest = store.lookup("docker.io/o/a:1").unwrap().unwrap();
    let record = lkpkg_cache_format::build_record::BuildRecord {
        unit: "pkg/a/amd64".into(),
        manifest,
        inputs: Default::default(),
        files: Default::default(),
        builder: "test".into(),
        started_unix_ms: 0,
        duration_ms: 0,
    };
    store.put_build_record(&[7; 32], &record).unwrap();
    assert!(store.build_record(&[7; 32]).unwrap().is_some());
    let txn = store.database().begin_write().unwrap();
    txn.open_table(db::SCHEMA)
        .unwrap()
        .insert(lkpkg_cache_format::index_db::KEY_SCHEMA_VERSION, 0)
        .unwrap();
    txn.commit().unwrap();
    drop(store);

    let store = Store::open(dir.path()).unwrap();
    assert!(store.lookup("docker.io/o/a:1").unwrap().is_some());
    assert!(store.verify(false).unwrap().problems.is_empty());
    assert!(store.build_record(&[7; 32]).unwrap().is_none());
    let read = store.database().begin_read().unwrap();
    let units = read.open_table(db::UNIT_BUILDS).unwrap();
    assert!(
        units.get("pkg/a/amd64").unwrap().is_none(),
        "a last build outlived its record"
    );
}
