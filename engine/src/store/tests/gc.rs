//! `gc` and `du`: unreachable blobs dropped, least recently used names trimmed to a size, and
//! bytes charged as unique or shared.

use super::*;

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
