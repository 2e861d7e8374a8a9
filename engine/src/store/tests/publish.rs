//! Publishing and removing names: per-arch names and merged indexes, reference counts on
//! `rm`, an `index.json` another tool changed, and concurrent writers.

use super::*;

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

/// Waits until the store's publication queue says `ready`, or fails the test after 20 s.
fn wait_for_queue(store: &Store, ready: impl Fn(usize, bool) -> bool) {
    let started = std::time::Instant::now();
    loop {
        let (waiting, committing) = store.publications.waiting();
        if ready(waiting, committing) {
            return;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "queue stuck at {waiting} waiting (committing: {committing})"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[test]
fn publications_waiting_for_the_lock_commit_together_and_a_bad_one_fails_alone() {
    let (_dir, store) = store();
    let image = store
        .ingest_oci_archive(
            &oci_archive("amd64", &[layer_tar(&[("a", b"a")])])[..],
            "docker.io/org/base:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    let mut missing = image.clone();
    missing.digest = Digest::of(b"not in the cache");
    let held = CacheLock::acquire(store.root()).unwrap();
    let commits_before = store.publications.commits();
    let results = std::thread::scope(|scope| {
        // The first publisher leads, alone, and waits for the lock the test holds.
        let first = {
            let (store, image) = (&store, image.clone());
            scope.spawn(move || store.set_names(vec![("docker.io/org/first:t".into(), image)]))
        };
        wait_for_queue(&store, |waiting, committing| waiting == 0 && committing);
        let mut others = Vec::new();
        for i in 0..8 {
            let (store, image) = (&store, image.clone());
            others
                .push(scope.spawn(move || {
                    store.set_names(vec![(format!("docker.io/org/p{i}:t"), image)])
                }));
        }
        let bad = {
            let (store, missing) = (&store, missing.clone());
            scope.spawn(move || store.set_names(vec![("docker.io/org/bad:t".into(), missing)]))
        };
        wait_for_queue(&store, |waiting, _| waiting == 9);
        drop(held);
        let others: Vec<_> = others.into_iter().map(|t| t.join().unwrap()).collect();
        (first.join().unwrap(), others, bad.join().unwrap())
    });
    let (first, others, bad) = results;
    first.unwrap();
    for other in others {
        other.unwrap();
    }
    assert!(
        matches!(bad, Err(StoreError::MissingBlob { ref name, .. }) if name == "docker.io/org/bad:t"),
        "{bad:?}"
    );
    // The first alone, then the eight good ones of the batch queued behind it, together.
    assert_eq!(store.publications.commits() - commits_before, 2);
    let names: Vec<String> = store.names().unwrap().into_iter().map(|(n, _)| n).collect();
    for i in 0..8 {
        assert!(
            names.contains(&format!("docker.io/org/p{i}:t")),
            "{names:?}"
        );
    }
    assert!(names.contains(&"docker.io/org/first:t".to_owned()));
    assert!(!names.iter().any(|n| n.contains("bad")));
    let on_disk: Vec<String> = raw_index(&store)
        .manifests
        .iter()
        .filter_map(|m| m.ref_name().map(str::to_owned))
        .collect();
    assert_eq!(on_disk.len(), names.len(), "{on_disk:?}");
    assert!(store.verify(false).unwrap().problems.is_empty());
}

#[test]
fn index_merges_in_one_batch_build_on_each_other() {
    let (_dir, store) = store();
    let amd = store
        .ingest_oci_archive(
            &oci_archive("amd64", &[layer_tar(&[("a", b"amd64")])])[..],
            "docker.io/org/img:t",
            &Platform::linux("amd64"),
        )
        .unwrap();
    let arm = store
        .ingest_oci_archive(
            &oci_archive("arm64", &[layer_tar(&[("a", b"arm64")])])[..],
            "docker.io/org/img:t",
            &Platform::linux("arm64"),
        )
        .unwrap();
    let held = CacheLock::acquire(store.root()).unwrap();
    let commits_before = store.publications.commits();
    let (amd_index, arm_index) = std::thread::scope(|scope| {
        let leader = {
            let (store, amd) = (&store, amd.clone());
            scope.spawn(move || store.set_names(vec![("docker.io/org/other:t".into(), amd)]))
        };
        wait_for_queue(&store, |waiting, committing| waiting == 0 && committing);
        let merges: Vec<_> = [amd.clone(), arm.clone()]
            .into_iter()
            .map(|desc| {
                let store = &store;
                scope.spawn(move || store.merge_index("docker.io/org/img:t", &[desc]))
            })
            .collect();
        wait_for_queue(&store, |waiting, _| waiting == 2);
        drop(held);
        leader.join().unwrap().unwrap();
        let mut merges = merges.into_iter().map(|t| t.join().unwrap().unwrap());
        (merges.next().unwrap(), merges.next().unwrap())
    });
    assert_eq!(store.publications.commits() - commits_before, 2);
    // Whichever was staged second merged onto the first: the name holds both platforms.
    let named = store.lookup("docker.io/org/img:t").unwrap().unwrap();
    assert!(named.digest == amd_index.digest || named.digest == arm_index.digest);
    let index = store.read_index(&named.digest).unwrap();
    let mut arches: Vec<String> = index
        .manifests
        .iter()
        .filter_map(|m| m.platform.as_ref().map(|p| p.architecture.clone()))
        .collect();
    arches.sort();
    assert_eq!(arches, ["amd64", "arm64"]);
    assert!(store.verify(false).unwrap().problems.is_empty());
}
