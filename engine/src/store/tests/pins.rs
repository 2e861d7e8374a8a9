//! Pins: the blobs an ingest writes or a reader relies on survive a concurrent `rm`, `clean`
//! and `gc`, until the session ends.

use super::*;

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
