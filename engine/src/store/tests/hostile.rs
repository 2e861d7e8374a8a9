//! Hostile archives on `cache import` (issue #11): names that climb out of the archive or are
//! absolute, links pointing outside it, duplicate entries, digests that do not match,
//! truncated data, sizes declared far beyond the data, files that are not tars. Each is
//! refused as bad input, and leaves the names, their blobs and everything outside the cache as
//! they were.

use std::path::Path;

use super::*;

/// A raw tar entry: the name and link name are written into the header as given, bypassing the
/// `tar` crate's own checks (it refuses `..`, as a hostile writer would not).
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    /// The size the header declares (the data's own when `None`).
    declared: Option<u64>,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> Raw<'a> {
    Raw {
        name,
        kind: tar::EntryType::Regular,
        link: "",
        data,
        declared: None,
    }
}

fn link<'a>(kind: tar::EntryType, name: &'a str, target: &'a str) -> Raw<'a> {
    Raw {
        name,
        kind,
        link: target,
        data: b"",
        declared: None,
    }
}

fn raw_tar(entries: &[Raw<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        let mut header = tar::Header::new_old();
        let old = header.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
        old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        header.set_entry_type(e.kind);
        header.set_mode(0o644);
        header.set_size(e.declared.unwrap_or(e.data.len() as u64));
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(e.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// Every file under `dir` with its bytes.
fn files_under(dir: &Path) -> BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    found
}

/// A docker-save archive's manifest naming `layer` as its one layer, with the config beside.
fn manifest_json(config: &str, layer: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!([{
        "Config": config, "RepoTags": ["o/hostile:1"], "Layers": [layer],
    }]))
    .unwrap()
}

/// After a refused write: the names as they were, their blobs unchanged (a refused write may
/// leave verified blobs of its own unnamed, for gc, never change one), verify clean, no
/// temporary file left.
fn left_as_it_was(
    what: &str,
    root: &Path,
    store: &Store,
    names_before: &[(String, Descriptor)],
    blobs_before: &BTreeMap<std::path::PathBuf, Vec<u8>>,
) {
    assert_eq!(
        store.names().unwrap(),
        names_before,
        "{what}: names changed"
    );
    let blobs_now = files_under(&root.join("blobs"));
    for (path, bytes) in blobs_before {
        assert_eq!(blobs_now.get(path), Some(bytes), "{what}: {path:?} changed");
    }
    let report = store.verify(false).unwrap();
    assert!(report.problems.is_empty(), "{what}: {:?}", report.problems);
    let temporary = root.join("lkpkg-tmp");
    if temporary.exists() {
        assert_eq!(
            std::fs::read_dir(&temporary).unwrap().count(),
            0,
            "{what}: temporary files left"
        );
    }
}

#[test]
fn hostile_archives_are_refused_and_leave_the_cache_and_the_outside_as_they_were() {
    let (dir, store) = store();
    let good_layer = layer_tar(&[("f", b"good")]);
    store
        .import(&docker_save("amd64", &["o/good:1"], &[good_layer])[..])
        .unwrap();
    // What the links of the archives below point at: a directory beside the cache.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"outside content\n").unwrap();
    let outside_before = files_under(outside.path());
    let names_before = store.names().unwrap();
    let blobs_before = files_under(&dir.path().join("blobs"));

    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
    }))
    .unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let layer = layer_tar(&[("g", b"hostile")]);
    let secret_path = outside.path().join("secret");
    let secret = secret_path.to_str().unwrap();
    let climbing = format!("../../../../../..{secret}");
    let manifest = manifest_json(&config_name, "l/layer.tar");
    let wrong = b"not what the name says";
    let wrong_name = format!("blobs/sha256/{}", Digest::of(b"something else").hex());
    let full = docker_save("amd64", &["o/cut:1"], &[layer_tar(&[("h", &[7; 4096])])]);

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "an entry climbing out",
            raw_tar(&[
                file(&config_name, &config),
                file("../../l/layer.tar", &layer),
                file("manifest.json", &manifest),
            ]),
            "climbs out of the archive",
        ),
        (
            "an absolute entry",
            raw_tar(&[
                file(&config_name, &config),
                file("/l/layer.tar", &layer),
                file("manifest.json", &manifest),
            ]),
            "is an absolute path",
        ),
        (
            "a symlink to an absolute path outside",
            raw_tar(&[
                file(&config_name, &config),
                link(tar::EntryType::Symlink, "l/layer.tar", secret),
                file("manifest.json", &manifest),
            ]),
            "is an absolute path",
        ),
        (
            "a symlink climbing out",
            raw_tar(&[
                file(&config_name, &config),
                link(tar::EntryType::Symlink, "l/layer.tar", &climbing),
                file("manifest.json", &manifest),
            ]),
            "climbs out of the archive",
        ),
        (
            "a hard link to an absolute path outside",
            raw_tar(&[
                file(&config_name, &config),
                link(tar::EntryType::Link, "l/layer.tar", secret),
                file("manifest.json", &manifest),
            ]),
            "is an absolute path",
        ),
        (
            "a hard link climbing out",
            raw_tar(&[
                file(&config_name, &config),
                link(tar::EntryType::Link, "l/layer.tar", "../x"),
                file("manifest.json", &manifest),
            ]),
            "climbs out of the archive",
        ),
        (
            "a manifest.json that is a symlink outside",
            raw_tar(&[link(tar::EntryType::Symlink, "manifest.json", secret)]),
            "is an absolute path",
        ),
        (
            "duplicate entries",
            raw_tar(&[
                file(&config_name, &config),
                file("l/layer.tar", &layer),
                file("manifest.json", &manifest),
                file("manifest.json", &manifest_json(&config_name, "other")),
            ]),
            "appears twice",
        ),
        (
            "a blob that does not match its name",
            raw_tar(&[file(&wrong_name, wrong)]),
            "hashes to",
        ),
        (
            "truncated data",
            full[..full.len() - 3000].to_vec(),
            "unreadable tar",
        ),
        (
            "a layer declaring a terabyte",
            raw_tar(&[
                file(&config_name, &config),
                Raw {
                    declared: Some(1 << 40),
                    ..file("l/layer.tar", &layer)
                },
            ]),
            "unreadable tar",
        ),
        (
            "a manifest.json declaring a terabyte",
            raw_tar(&[Raw {
                declared: Some(1 << 40),
                ..file("manifest.json", &manifest)
            }]),
            "too large",
        ),
        ("an empty file", Vec::new(), "no image names"),
        ("only the end of a tar", vec![0; 1024], "no image names"),
        (
            "not a tar",
            b"PK\x03\x04 this is a zip, or anything".repeat(40),
            "unreadable tar",
        ),
    ];
    for (what, archive, says) in cases {
        let started = std::time::Instant::now();
        let e = store.import(&archive[..]).unwrap_err();
        assert!(e.is_user_error(), "{what}: not bad input: {e}");
        let message = e.to_string();
        assert!(message.contains(says), "{what}: {message}");
        assert!(
            !message.contains("outside content"),
            "{what}: the outside file was read: {message}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{what}: took {:?}",
            started.elapsed()
        );
        left_as_it_was(what, dir.path(), &store, &names_before, &blobs_before);
        assert_eq!(
            files_under(outside.path()),
            outside_before,
            "{what}: outside touched"
        );
    }
    // gc removes what the refused imports left unnamed; the good image stays whole.
    store.gc(&crate::store::GcOptions::default()).unwrap();
    let blobs_after = files_under(&dir.path().join("blobs"));
    assert_eq!(blobs_after, blobs_before);
}

/// How an entry of a good export is changed: its new bytes, or `None` to leave it out.
type Change<'a> = dyn Fn(&str, &[u8]) -> Option<Vec<u8>> + 'a;

/// A builder's `oci` export is ingested by the same reader as `cache import` (issue #11: "a
/// builder that answers with a manifest that does not match its digest, a never-ending
/// body"). Each hostile export fails the build's ingest with the reason, publishes no name,
/// changes no blob of the names there and leaves no temporary file.
#[test]
fn hostile_exports_of_a_builder_are_refused_and_publish_nothing() {
    let amd64 = Platform::linux("amd64");
    // Each case on a cache of its own (a refused export may leave verified blobs unnamed, for
    // gc: a later case would find them there).
    let fresh = || {
        let (dir, store) = store();
        store
            .ingest_oci_archive(
                &oci_archive("amd64", &[layer_tar(&[("f", b"good")])])[..],
                "docker.io/o/good:1",
                &amd64,
            )
            .unwrap();
        (dir, store)
    };

    let good = oci_archive("amd64", &[layer_tar(&[("g", &[7; 4096])])]);
    // The entries of a good export, to be recombined.
    let entries: Vec<(String, Vec<u8>)> = tar::Archive::new(&good[..])
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (path, data)
        })
        .collect();
    let index = &entries.iter().find(|(p, _)| p == "index.json").unwrap().1;
    let index: serde_json::Value = serde_json::from_slice(index).unwrap();
    let manifest_hex = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_owned();
    let with = |change: &Change<'_>| -> Vec<u8> {
        let owned: Vec<(String, Vec<u8>)> = entries
            .iter()
            .filter_map(|(p, d)| change(p, d).map(|d| (p.clone(), d)))
            .collect();
        let raws: Vec<Raw<'_>> = owned.iter().map(|(p, d)| file(p, d)).collect();
        raw_tar(&raws)
    };
    let arm64 = oci_archive("arm64", &[layer_tar(&[("a", b"arm")])]);
    let not_json = b"this is no manifest".to_vec();
    let not_json_name = format!("blobs/sha256/{}", Digest::of(&not_json).hex());
    let not_json_index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": layout::MEDIA_TYPE_OCI_MANIFEST,
            "digest": Digest::of(&not_json).to_string(), "size": not_json.len()}],
    }))
    .unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a manifest that does not match its digest",
            with(&|p, d| {
                Some(if p.ends_with(&manifest_hex) {
                    [d, b" "].concat()
                } else {
                    d.to_vec()
                })
            }),
            "hashes to",
        ),
        (
            "a manifest that is not JSON",
            raw_tar(&[
                file(&not_json_name, &not_json),
                file("index.json", &not_json_index),
            ]),
            "is not an image manifest",
        ),
        (
            "a layer the manifest names, missing",
            with(&|p, d| {
                (!p.starts_with("blobs/") || p.ends_with(&manifest_hex) || d.len() < 1000)
                    .then(|| d.to_vec())
            }),
            "lacks blob",
        ),
        (
            "an index.json that is not JSON",
            with(&|p, d| {
                Some(if p == "index.json" {
                    b"{{{".to_vec()
                } else {
                    d.to_vec()
                })
            }),
            "index.json",
        ),
        (
            "no index.json",
            with(&|p, d| (p != "index.json").then(|| d.to_vec())),
            "index.json",
        ),
        ("an image of another platform", arm64, "amd64"),
        (
            "a layer declaring a terabyte, the stream ending after its real data",
            {
                let (path, data) = entries.iter().find(|(_, d)| d.len() > 1000).unwrap();
                raw_tar(&[Raw {
                    declared: Some(1 << 40),
                    ..file(path, data)
                }])
            },
            "hashes to",
        ),
        (
            "an export cut short",
            good[..good.len() - 3000].to_vec(),
            "unreadable tar",
        ),
        (
            "a blob climbing out",
            raw_tar(&[file("blobs/sha256/../../../../x", b"out")]),
            "climbs out of the archive",
        ),
        ("not a tar", b"garbage ".repeat(200), "unreadable tar"),
    ];
    for (what, archive, says) in cases {
        let (dir, store) = fresh();
        let names_before = store.names().unwrap();
        let blobs_before = files_under(&dir.path().join("blobs"));
        let e = store
            .ingest_oci_archive(&archive[..], "docker.io/o/built:1", &amd64)
            .map(|d| panic!("{what}: ingested as {d:?}"))
            .unwrap_err();
        let message = e.to_string();
        assert!(message.contains(says), "{what}: {message}");
        left_as_it_was(what, dir.path(), &store, &names_before, &blobs_before);
        assert!(!dir.path().parent().unwrap().join("x").exists(), "{what}");
    }
}
