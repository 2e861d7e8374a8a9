//! Archives made in memory: a layer, a `docker save` of one image, and the OCI layout tar
//! BuildKit's `oci` exporter streams (the scheduler's tests use them too).

use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout;

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
