//! Reproducible images: removes from an engine's `docker save` output what differs between two
//! builds of the same inputs, so that the same inputs give the same manifest digest (which early
//! cutoff needs, and linuxkit lacks: its docs say package builds are not reproducible).
//!
//! What the classic builder stamps, and what lkpkg does with it:
//!
//! | in the image                          | varies with                | here                    |
//! |---------------------------------------|----------------------------|-------------------------|
//! | config `created`, `history[].created` | build time                 | set to the epoch        |
//! | file times in layers (`RUN` output)   | build time                 | clamped to the epoch    |
//! | config `container`, `container_config`| the build container's id   | removed                 |
//! | config `config.Image`                 | the parent's local image id| emptied                 |
//! | config `docker_version`               | the engine                 | removed                 |
//!
//! The epoch is `SOURCE_DATE_EPOCH` when set, else the commit time of HEAD. Clamping keeps file
//! times older than the epoch (files copied from the context carry fixed times already).
//!
//! What stays non-reproducible: the content `RUN` steps produce (random data, network
//! downloads, build ids embedded by compilers), file ownership or order that a `RUN` makes
//! non-deterministic, and anything in a base image that was itself not reproducible. Layer
//! bytes are rewritten block by block: only time fields (and the header checksum) change, so
//! extended attributes, links and long names are kept as the engine wrote them.

use std::collections::BTreeMap;
use std::io::Read;

use sha2::{Digest, Sha256};

/// A failure to understand the engine's export.
#[derive(Debug, thiserror::Error)]
#[error("cannot normalize the exported image: {0}")]
pub struct NormalizeError(String);

fn err(message: impl Into<String>) -> NormalizeError {
    NormalizeError(message.into())
}

/// Normalizes a `docker save` archive (one image) to `epoch` (unix seconds).
pub fn docker_save(archive: &[u8], epoch: i64) -> Result<Vec<u8>, NormalizeError> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry
            .path()
            .map_err(|e| err(e.to_string()))?
            .to_string_lossy()
            .into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| err(e.to_string()))?
                    .map(|t| t.to_string_lossy().into_owned())
                    .unwrap_or_default();
                symlinks.insert(path, target);
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut bytes = Vec::new();
                entry
                    .read_to_end(&mut bytes)
                    .map_err(|e| err(e.to_string()))?;
                order.push(path.clone());
                files.insert(path, bytes);
            }
            _ => {}
        }
    }
    let resolve = |name: &str| -> Option<&Vec<u8>> {
        if let Some(bytes) = files.get(name) {
            return Some(bytes);
        }
        // Identical layers may be symlinks to another layer's file (`../<id>/layer.tar`).
        let target = symlinks.get(name)?;
        let base = name.rsplit_once('/').map_or("", |(d, _)| d);
        let joined = crate::store::ingest::normalize(&format!("{base}/{target}"));
        files.get(&joined)
    };
    let manifest_bytes = files
        .get("manifest.json")
        .ok_or_else(|| err("no manifest.json"))?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(manifest_bytes).map_err(|e| err(format!("manifest.json: {e}")))?;
    let image = manifest
        .as_array_mut()
        .and_then(|a| (a.len() == 1).then(|| &mut a[0]))
        .ok_or_else(|| err("expected one image in manifest.json"))?;
    let config_name = image["Config"]
        .as_str()
        .ok_or_else(|| err("no Config"))?
        .to_owned();
    let layer_names: Vec<String> = image["Layers"]
        .as_array()
        .ok_or_else(|| err("no Layers"))?
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();

    let mut out_files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut diff_ids = Vec::new();
    let mut new_layer_names = Vec::new();
    for (i, name) in layer_names.iter().enumerate() {
        let layer = resolve(name).ok_or_else(|| err(format!("missing layer `{name}`")))?;
        let clamped = clamp_layer(layer, epoch)?;
        let digest = hex::encode(Sha256::digest(&clamped));
        diff_ids.push(serde_json::Value::String(format!("sha256:{digest}")));
        let new_name = format!("{i:03}-{}/layer.tar", &digest[..16]);
        new_layer_names.push(serde_json::Value::String(new_name.clone()));
        if !out_files.iter().any(|(n, _)| *n == new_name) {
            out_files.push((new_name, clamped));
        }
    }

    let config_bytes = files
        .get(&config_name)
        .ok_or_else(|| err(format!("missing `{config_name}`")))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(config_bytes).map_err(|e| err(format!("config: {e}")))?;
    let stamp = serde_json::Value::String(rfc3339(epoch));
    if let Some(object) = config.as_object_mut() {
        object.remove("container");
        object.remove("container_config");
        object.remove("docker_version");
        object.insert("created".into(), stamp.clone());
        if let Some(inner) = object.get_mut("config").and_then(|c| c.as_object_mut())
            && inner.contains_key("Image")
        {
            inner.insert("Image".into(), serde_json::Value::String(String::new()));
        }
        if let Some(history) = object.get_mut("history").and_then(|h| h.as_array_mut()) {
            for entry in history.iter_mut().filter_map(|h| h.as_object_mut()) {
                entry.insert("created".into(), stamp.clone());
            }
        }
        if let Some(rootfs) = object.get_mut("rootfs").and_then(|r| r.as_object_mut()) {
            rootfs.insert("diff_ids".into(), serde_json::Value::Array(diff_ids));
        }
    }
    let config_bytes = serde_json::to_vec(&config).map_err(|e| err(e.to_string()))?;
    let config_name = format!("{}.json", hex::encode(Sha256::digest(&config_bytes)));
    image["Config"] = serde_json::Value::String(config_name.clone());
    image["Layers"] = serde_json::Value::Array(new_layer_names);
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| err(e.to_string()))?;

    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    let mut append = |name: &str, bytes: &[u8]| -> Result<(), NormalizeError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(epoch.max(0) as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, name, bytes)
            .map_err(|e| err(e.to_string()))
    };
    append(&config_name, &config_bytes)?;
    for (name, bytes) in &out_files {
        append(name, bytes)?;
    }
    append("manifest.json", &manifest_bytes)?;
    let _ = order;
    builder.into_inner().map_err(|e| err(e.to_string()))
}

/// The `(os, architecture)` of the one image in a `docker save` archive.
pub fn platform_of(archive: &[u8]) -> Option<(String, String)> {
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut tar = tar::Archive::new(archive);
    for entry in tar.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path == "manifest.json" || path.ends_with(".json") {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).ok()?;
            files.insert(path, bytes);
        }
    }
    let manifest: serde_json::Value = serde_json::from_slice(files.get("manifest.json")?).ok()?;
    let config_name = manifest.get(0)?.get("Config")?.as_str()?;
    let config: serde_json::Value = serde_json::from_slice(files.get(config_name)?).ok()?;
    Some((
        config.get("os")?.as_str()?.to_owned(),
        config.get("architecture")?.as_str()?.to_owned(),
    ))
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a unix time.
fn rfc3339(epoch: i64) -> String {
    let compact = super::context::utc_compact(epoch);
    format!(
        "{}-{}-{}T{}:{}:{}Z",
        &compact[0..4],
        &compact[4..6],
        &compact[6..8],
        &compact[8..10],
        &compact[10..12],
        &compact[12..14]
    )
}

const BLOCK: usize = 512;

fn octal_field(header: &[u8], offset: usize, len: usize) -> Option<u64> {
    let field = &header[offset..offset + len];
    if field[0] & 0x80 != 0 {
        // base-256
        let mut value: u64 = 0;
        for &b in &field[1..] {
            value = (value << 8) | u64::from(b);
        }
        return Some(value);
    }
    let text: String = field
        .iter()
        .take_while(|b| **b != 0 && **b != b' ')
        .map(|b| *b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fn set_octal(header: &mut [u8], offset: usize, len: usize, value: u64) {
    let text = format!("{value:0width$o}\0", width = len - 1);
    header[offset..offset + len].copy_from_slice(text.as_bytes());
}

fn fix_checksum(header: &mut [u8]) {
    header[148..156].copy_from_slice(b"        ");
    let sum: u64 = header.iter().map(|b| u64::from(*b)).sum();
    let text = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(text.as_bytes());
}

/// Rewrites a layer tar with every time clamped to `epoch`.
pub fn clamp_layer(layer: &[u8], epoch: i64) -> Result<Vec<u8>, NormalizeError> {
    let epoch = epoch.max(0) as u64;
    let mut out = Vec::with_capacity(layer.len());
    let mut at = 0;
    while at + BLOCK <= layer.len() {
        let header = &layer[at..at + BLOCK];
        if header.iter().all(|b| *b == 0) {
            // End of archive: keep the rest (zero blocks) as it is.
            out.extend_from_slice(&layer[at..]);
            return Ok(out);
        }
        let size =
            octal_field(header, 124, 12).ok_or_else(|| err("bad size field in a layer"))? as usize;
        let data_blocks = size.div_ceil(BLOCK);
        let data_end = at + BLOCK + data_blocks * BLOCK;
        if data_end > layer.len() {
            return Err(err("truncated layer"));
        }
        let typeflag = header[156];
        let mut new_header = header.to_vec();
        if typeflag == b'x' || typeflag == b'g' {
            let records = &layer[at + BLOCK..at + BLOCK + size];
            let rewritten = clamp_pax(records, epoch);
            set_octal(&mut new_header, 124, 12, rewritten.len() as u64);
            if let Some(mtime) = octal_field(&new_header, 136, 12).filter(|m| *m > epoch) {
                let _ = mtime;
                set_octal(&mut new_header, 136, 12, epoch);
            }
            fix_checksum(&mut new_header);
            out.extend_from_slice(&new_header);
            out.extend_from_slice(&rewritten);
            out.resize(out.len() + (BLOCK - rewritten.len() % BLOCK) % BLOCK, 0);
        } else {
            if octal_field(&new_header, 136, 12).is_some_and(|m| m > epoch) {
                set_octal(&mut new_header, 136, 12, epoch);
                fix_checksum(&mut new_header);
            }
            out.extend_from_slice(&new_header);
            out.extend_from_slice(&layer[at + BLOCK..data_end]);
        }
        at = data_end;
    }
    out.extend_from_slice(&layer[at..]);
    Ok(out)
}

/// Clamps `mtime` and drops `atime`/`ctime` in PAX records (`"<len> key=value\n"`).
fn clamp_pax(records: &[u8], epoch: u64) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let Some(space) = rest.iter().position(|b| *b == b' ') else {
            break;
        };
        let Some(len) = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|l| l.parse::<usize>().ok())
        else {
            break;
        };
        if len == 0 || len > rest.len() {
            break;
        }
        let record = &rest[space + 1..len];
        rest = &rest[len..];
        let text = String::from_utf8_lossy(record);
        let (key, value) = text
            .trim_end_matches('\n')
            .split_once('=')
            .unwrap_or(("", ""));
        match key {
            "atime" | "ctime" => continue,
            "mtime" => {
                let seconds: f64 = value.parse().unwrap_or(0.0);
                let clamped = if seconds > epoch as f64 {
                    epoch.to_string()
                } else {
                    value.to_owned()
                };
                out.extend(pax_record("mtime", &clamped));
            }
            _ => out.extend_from_slice(
                &records[records.len() - rest.len() - len..records.len() - rest.len()],
            ),
        }
    }
    out
}

fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while format!("{len}{body}").len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(mtime: u64) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mtime(mtime);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "a/file", &b"abc"[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    #[test]
    fn clamps_new_times_and_keeps_old_ones() {
        let epoch = 1_000_000;
        assert_eq!(
            clamp_layer(&layer(2_000_000), epoch).unwrap(),
            clamp_layer(&layer(3_000_000), epoch).unwrap()
        );
        assert_eq!(clamp_layer(&layer(5), epoch).unwrap(), layer(5));
        let clamped = clamp_layer(&layer(2_000_000), epoch).unwrap();
        let mut archive = tar::Archive::new(&clamped[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(entry.header().mtime().unwrap(), epoch as u64);
        // The rewritten header's checksum is valid (the tar reader checks it).
        assert_eq!(entry.header().cksum().unwrap(), {
            let mut h = entry.header().clone();
            h.set_cksum();
            h.cksum().unwrap()
        });
    }

    #[test]
    fn pax_times() {
        let records = [
            pax_record("mtime", "2000000.5"),
            pax_record("atime", "1"),
            pax_record("path", "x"),
        ]
        .concat();
        let out = clamp_pax(&records, 1000);
        assert_eq!(
            out,
            [pax_record("mtime", "1000"), pax_record("path", "x")].concat()
        );
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }
}
