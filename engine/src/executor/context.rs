//! The build context a package sends to the engine, and the build arguments and labels that go
//! with it, in linuxkit's order and with its presets (reference §5.6–§5.8).
//!
//! The context is the package directory mapped to `/`, then each extra source mapped to its
//! destination ([`ContextTree`]: a list of where each file is, streamed by the file sync when
//! the builder asks, so a context of any size costs memory only for its listing; the limit of
//! 2 GiB the classic builder's in-memory tar needed went with it).
//! Symlinks are kept as links, as linuxkit keeps them; nothing outside the package and its
//! declared sources is read, and nothing is ever written into the package directory.

use std::path::Path;

use crate::build_yml::DependsTarget;
use crate::buildkit::context_tree::{ContextTree, TreeError};
use crate::error::{Error, Result};
use crate::graph::GraphPackage;

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

/// Merges `docker save` archives into one (what `docker save A B` gives): every file once,
/// `manifest.json` listing every image. linuxkit's `depends.docker-images.target`.
pub(crate) fn merge_docker_archives(archives: &[Vec<u8>]) -> Result<Vec<u8>> {
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
