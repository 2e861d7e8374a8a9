//! The build context a package sends to the engine, and the build arguments and labels that go
//! with it, in linuxkit's order and with its presets (reference §5.6–§5.8).
//!
//! The context is the package directory mapped to `/`, then each extra source mapped to its
//! destination ([`ContextTree`]: a list of where each file is, streamed by the file sync when
//! the builder asks; a context over [`MAX_CONTEXT_BYTES`] is refused with a clear error).
//! Symlinks are kept as links, as linuxkit keeps them; nothing outside the package and its
//! declared sources is read, and nothing is ever written into the package directory.

use std::collections::BTreeMap;
use std::path::Path;

use crate::build_yml::DependsTarget;
use crate::buildkit::context_tree::{ContextTree, TreeError};
use crate::error::{Error, Result};
use crate::graph::GraphPackage;
use crate::workspace::Workspace;

/// The largest build context lkpkg assembles in memory.
pub const MAX_CONTEXT_BYTES: u64 = 2 << 30;

/// The package directory, its extra sources, and `generated` files (the
/// `depends.docker-images` archives, at their target paths), as the context BuildKit's file
/// sync sends. What is on disk at a `depends` target is left out: linuxkit deletes and
/// recreates it, lkpkg never writes into the package directory and builds the context as if it
/// had.
pub(crate) fn context_tree(
    package: &GraphPackage,
    generated: Vec<(String, Vec<u8>)>,
) -> Result<ContextTree> {
    let mut skip: Vec<std::path::PathBuf> = match &package.package.yml.depends.target {
        Some(DependsTarget::Dir(d) | DependsTarget::File(d))
            if !package.package.yml.depends.images.is_empty() =>
        {
            vec![package.package.dir.join(d)]
        }
        _ => Vec::new(),
    };
    skip.extend(
        generated
            .iter()
            .map(|(path, _)| package.package.dir.join(path)),
    );
    let tree_error = |e: TreeError| Error::io(&e.path, e.source);
    let mut tree = ContextTree::new();
    tree.add_dir(&package.package.dir, "", &skip)
        .map_err(tree_error)?;
    for source in &package.package.yml.extra_sources {
        let dst = source.dst.trim_start_matches('/');
        tree.add_dir(&source.src, dst, &[]).map_err(tree_error)?;
    }
    for (path, bytes) in generated {
        tree.add_bytes(&path, bytes);
    }
    if tree.bytes() > MAX_CONTEXT_BYTES {
        return Err(Error::Usage(format!(
            "the build context of `{}` is {} bytes, more than lkpkg's limit of {MAX_CONTEXT_BYTES}",
            package.package.dir.display(),
            tree.bytes()
        )));
    }
    Ok(tree)
}

/// The Dockerfile as the frontend's `dockerfile` directory: the file under its own name, with
/// its `<name>.dockerignore` beside it when there is one.
pub(crate) fn dockerfile_tree(path: &Path) -> Result<(ContextTree, String)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".to_owned());
    let mut tree = ContextTree::new();
    let tree_error = |e: TreeError| Error::io(&e.path, e.source);
    if !tree.add_file(path, &name).map_err(tree_error)? {
        return Err(Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such Dockerfile"),
        ));
    }
    let ignore = format!("{name}.dockerignore");
    tree.add_file(&path.with_file_name(&ignore), &ignore)
        .map_err(tree_error)?;
    Ok((tree, name))
}

/// The annotations of a package's multi-arch index: where linuxkit's source and revision
/// labels go in lkpkg (the index is a name for people and registries; per-platform images
/// stay reproducible). The revision is HEAD, and only for a clean package, as linuxkit labels.
pub fn index_annotations(
    package: &GraphPackage,
    workspace: Option<&Workspace>,
) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    if workspace.is_some() {
        annotations.insert(
            "org.opencontainers.image.source".to_owned(),
            package.package.yml.gitrepo.clone(),
        );
        if !package.package.tag.dirty
            && let Some(head) = workspace.and_then(Workspace::head_commit)
        {
            annotations.insert("org.opencontainers.image.revision".to_owned(), head);
        }
    }
    annotations
}

/// Merges `docker save` archives into one (what `docker save A B` gives): every file once,
/// `manifest.json` listing every image. linuxkit's `depends.docker-images.target`.
pub fn merge_docker_archives(archives: &[Vec<u8>]) -> Result<Vec<u8>> {
    let bad = |e: std::io::Error| Error::Usage(format!("cannot merge image archives: {e}"));
    let mut files: std::collections::BTreeMap<String, Vec<u8>> = std::collections::BTreeMap::new();
    let mut images: Vec<serde_json::Value> = Vec::new();
    for archive in archives {
        let mut tar = tar::Archive::new(&archive[..]);
        for entry in tar.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).map_err(bad)?;
            if path == "manifest.json" {
                let list: Vec<serde_json::Value> = serde_json::from_slice(&bytes).map_err(|e| {
                    Error::Usage(format!("bad manifest.json in an image archive: {e}"))
                })?;
                images.extend(list);
            } else if path != "repositories" {
                files.entry(path).or_insert(bytes);
            }
        }
    }
    files.insert(
        "manifest.json".into(),
        serde_json::to_vec(&images).map_err(|e| Error::Usage(e.to_string()))?,
    );
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(bytes.len() as u64);
        header.set_mtime(1_153_704_088);
        builder
            .append_data(&mut header, &path, &bytes[..])
            .map_err(bad)?;
    }
    builder.into_inner().map_err(bad)
}

/// Build arguments in linuxkit's order: build.yml's (resolved), `--build-arg-file`'s
/// overriding them, then the presets where absent (`SOURCE`, `REVISION` when clean,
/// `GOPKGVERSION`, `PKG_HASH`, `PKG_IMAGE`), then the proxy variables from the environment.
pub fn build_args(
    package: &GraphPackage,
    workspace: Option<&Workspace>,
) -> BTreeMap<String, String> {
    let mut args: BTreeMap<String, String> = package
        .build_args
        .iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    let tag = &package.package.tag;
    let head = workspace.and_then(Workspace::head_commit);
    let mut preset = |k: &str, v: String| {
        args.entry(k.to_owned()).or_insert(v);
    };
    preset("SOURCE", package.package.yml.gitrepo.clone());
    if !tag.dirty
        && let Some(head) = &head
    {
        preset("REVISION", head.clone());
    }
    if let Some(version) = workspace.and_then(go_pkg_version) {
        preset("GOPKGVERSION", version);
    }
    preset("PKG_HASH", tag.hash.clone());
    preset("PKG_IMAGE", tag.image());
    for proxy in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ftp_proxy",
        "FTP_PROXY",
        "no_proxy",
        "NO_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        if let Ok(value) = std::env::var(proxy) {
            args.entry(proxy.to_owned()).or_insert(value);
        }
    }
    args
}

/// linuxkit's `GOPKGVERSION`: its `git describe` pattern never matches (literal quotes), so it
/// is always `v0.0.0-<committer date, UTC here, %Y%m%d%H%M%S>-<12 hex of HEAD>`. linuxkit
/// formats the date in the local time zone; lkpkg uses UTC so that the value does not depend on
/// the machine (what linuxkit gives with TZ=UTC).
fn go_pkg_version(workspace: &Workspace) -> Option<String> {
    let (id, seconds) = workspace.head()?;
    Some(format!("v0.0.0-{}-{}", utc_compact(*seconds), &id[..12]))
}

/// `%Y%m%d%H%M%S` in UTC for a unix time.
pub fn utc_compact(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The labels lkpkg puts on a package image: linuxkit's, except the revision.
///
/// linuxkit also labels clean builds with `org.opencontainers.image.revision` = HEAD. That
/// label changes with every commit, so no image would ever be byte-identical to an earlier
/// build of the same inputs, and early cutoff (and reproducibility) would be impossible. lkpkg
/// leaves it out of the image and puts it on the package's multi-arch index instead
/// ([`index_annotations`]).
pub fn labels(package: &GraphPackage, workspace: Option<&Workspace>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if workspace.is_some() {
        labels.insert(
            "org.opencontainers.image.source".to_owned(),
            package.package.yml.gitrepo.clone(),
        );
    }
    if let Some(config) = &package.package.yml.config {
        labels.insert("org.mobyproject.config".to_owned(), config.label_json());
    }
    labels.insert(
        "org.mobyproject.linuxkit.version".to_owned(),
        format!("lkpkg {}", env!("CARGO_PKG_VERSION")),
    );
    labels
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_compact(0), "19700101000000");
        // 2026-03-27 12:26:05 UTC, linuxkit's reference commit.
        assert_eq!(super::utc_compact(1_774_614_365), "20260327122605");
    }
}
