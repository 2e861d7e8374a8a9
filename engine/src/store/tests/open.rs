//! Opening a cache: a new one gets linuxkit's layout, and what a killed writer, a damaged
//! database or another schema left is cleaned up, rebuilt or reset from `index.json`.

use super::*;

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
