//! Imports refused: what is not a valid archive, name or content is a user error, and leaves
//! the cache as it was.

use super::*;

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
