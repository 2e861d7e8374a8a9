//! `verify` and `--repair`: planted faults (a corrupt or missing blob, names only one index
//! has) are each reported, and repair restores agreement without removing a name.

use super::*;

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

/// `verify` hashes the blobs without the cache lock (a writer is not held up for the long
/// part), then takes it for the agreement checks; a corrupt blob is still found.
#[test]
fn verify_hashes_blobs_while_another_holds_the_lock() {
    let (_dir, store) = store();
    let image = store
        .ingest_oci_archive(
            &oci_archive("amd64", &[layer_tar(&[("a", b"a")])])[..],
            "docker.io/org/img:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    let manifest = store.read_manifest(&image.digest).unwrap();
    let layer = store.blob_path(&manifest.layers[0].digest);
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&layer, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    // The same size, other bytes: only the hash can tell.
    let size = std::fs::metadata(&layer).unwrap().len() as usize;
    std::fs::write(&layer, vec![b'x'; size]).unwrap();
    let held = CacheLock::acquire(store.root()).unwrap();
    let (done, hashed) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| done.send(store.hash_blobs()).unwrap());
        let hashed = hashed
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("hashing waited for the lock");
        let hashed = hashed.unwrap();
        assert_eq!(hashed.corrupt.len(), 1, "{:?}", hashed.corrupt);
        drop(held);
    });
    let report = store.verify(false).unwrap();
    assert!(
        matches!(report.problems[..], [Problem::CorruptBlob { digest, .. }] if digest == manifest.layers[0].digest),
        "{:?}",
        report.problems
    );
    assert_eq!(report.blobs_checked, 3);
}
