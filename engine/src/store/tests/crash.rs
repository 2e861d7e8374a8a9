//! Crash safety: what a power loss that reorders a write around its `fsync`, or a lost
//! `index.json`, leaves is caught by `verify`, never acted on, and repaired.

use super::*;

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
    // it back from the database. The same for an index.json another tool (or a disk) left as
    // garbage: bytes that are not JSON, JSON cut short, JSON of another shape.
    for garbage in [
        &b""[..],
        b"\x00\xff\xfegarbage{{{",
        b"{\"schemaVersion\": 2, \"manifests\": [{\"mediaType\": \"applic",
        b"[1, 2, 3]",
        b"{\"schemaVersion\": 2, \"manifests\": 5}",
    ] {
        let what = String::from_utf8_lossy(garbage);
        let (dir, store, _) = setup();
        let blobs_before = blobs::list(store.root()).unwrap().len();
        drop(store);
        std::fs::write(dir.path().join("index.json"), garbage).unwrap();
        let store = Store::open(dir.path()).unwrap();
        let unreadable =
            |e: StoreError| matches!(e, StoreError::IndexJsonUnreadable { names: 2, .. });
        assert!(unreadable(store.names().unwrap_err()), "{what}");
        assert!(
            unreadable(store.gc(&GcOptions::default()).unwrap_err()),
            "{what}"
        );
        assert_eq!(
            blobs::list(store.root()).unwrap().len(),
            blobs_before,
            "{what}"
        );
        let report = store.verify(false).unwrap();
        assert!(
            matches!(
                &report.problems[..],
                [Problem::IndexJsonUnreadable { names: 2, .. }]
            ),
            "{what}: {report:?}"
        );
        let report = store.verify(true).unwrap();
        assert!(
            report.repaired && report.remaining.is_empty(),
            "{what}: {report:?}"
        );
        let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["docker.io/o/a:1", "docker.io/o/b:1"], "{what}");
        let aside: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("index.json.unreadable-")
            })
            .collect();
        assert_eq!(
            aside.len(),
            1,
            "{what}: the unreadable index.json is kept aside"
        );
        assert_eq!(std::fs::read(aside[0].path()).unwrap(), garbage, "{what}");
        assert!(store.verify(false).unwrap().problems.is_empty(), "{what}");
    }

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
