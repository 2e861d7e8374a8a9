//! Exports: OCI and docker archives import back identically; a filesystem export applies
//! the layers' whiteouts.

use super::*;

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
