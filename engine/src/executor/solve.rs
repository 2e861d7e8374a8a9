//! How a unit becomes a BuildKit solve: the frontend's attributes as linuxkit passes them, the
//! named contexts that give a build the images of the cache, reproducible outputs, and errors
//! that say what to do.
//!
//! # Attributes (BuildKit's dockerfile frontend)
//! - `filename`: the Dockerfile's name in the `dockerfile` directory of the session;
//! - `platform`: the units' platforms, comma-separated (several when one builder serves
//!   several platforms of a package); BuildKit then sets `TARGETPLATFORM`, `TARGETARCH`,
//!   `BUILDPLATFORM`, … itself, per platform;
//! - `build-arg:K`, `label:K`: the package's build arguments and labels in linuxkit's order;
//! - `force-network-mode=none` unless the package (or `--network`) asks for the network, then
//!   BuildKit's own sandbox network (never the host's), as linuxkit does;
//! - `no-cache` for `disable-cache`;
//! - `context:<image>` = `oci-layout://lkpkg-cache@<digest>` for each image the Dockerfile
//!   names that the cache holds.
//!
//! # Reproducible outputs
//! `SOURCE_DATE_EPOCH` goes to the frontend as a build argument and to the `oci` exporter with
//! `rewrite-timestamp=true`: the image's creation time, its history and every file time newer
//! than the epoch are set to it, so the same inputs give the same bytes. The epoch is
//! `SOURCE_DATE_EPOCH` from the environment, else 0 (see [`crate::schedule::BuildOptions::epoch`]).
//!
//! # Layers
//! The exporter writes layers uncompressed (`compression=uncompressed`), the form the cache
//! keeps (`cache-format/FORMAT.md`: hashing runs ~5x faster than gzip at level 1, and a
//! layer's digest is then its diff id). Layers that come from a base image stay as the base has
//! them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{self, Descriptor, ImageIndex};
use lkpkg_cache_format::reference;

use crate::buildkit::context_tree::ContextTree;
use crate::buildkit::{ImageBuildError, Solve, SolveError, content};
use crate::dockerfile::ImageUse;
use crate::graph::Platform;
use crate::schedule::{BuildError, internal};
use crate::store::Store;

/// The name of the cache as a session content store (a valid image name, as BuildKit needs).
pub(crate) const STORE_ID: &str = "lkpkg-cache";

/// Architectures whose per-arch names (`<image>:<tag>-<arch>`) are looked up for a named
/// context, beside those of the image's index.
const KNOWN_ARCHES: &[&str] = &[
    "amd64", "arm64", "riscv64", "s390x", "ppc64le", "386", "arm",
];

/// An image name as BuildKit keys named contexts: the familiar form (`docker.io/library/`
/// dropped, `docker.io/` dropped), without `:latest`.
pub(crate) fn familiar(full: &str) -> String {
    let short = full.strip_prefix("docker.io/").unwrap_or(full);
    let short = match short.strip_prefix("library/") {
        Some(rest) if !rest.split(['@', ':']).next().unwrap_or("").contains('/') => rest,
        _ => short,
    };
    match short.strip_suffix(":latest") {
        Some(rest) if !rest.contains('@') => rest.to_owned(),
        _ => short.to_owned(),
    }
}

/// An index of the platform images the cache holds for `full` (its multi-arch index's entries,
/// overridden by its per-arch names, which a dependency built in this run has just written),
/// each whole in the cache. `None` when the cache has no image for it.
pub(crate) fn platform_index(store: &Store, full: &str) -> Result<Option<ImageIndex>, BuildError> {
    let mut manifests: Vec<Descriptor> = Vec::new();
    let mut arches: Vec<String> = KNOWN_ARCHES.iter().map(|a| (*a).to_owned()).collect();
    if let Some(top) = store.lookup(full)? {
        if layout::is_index_media_type(&top.media_type) {
            if let Ok(index) = store.read_index(&top.digest) {
                for entry in index.manifests {
                    if entry.is_attestation() || !layout::is_manifest_media_type(&entry.media_type)
                    {
                        continue;
                    }
                    if let Some(p) = &entry.platform
                        && !arches.contains(&p.architecture)
                    {
                        arches.push(p.architecture.clone());
                    }
                    manifests.push(entry);
                }
            }
        } else if layout::is_manifest_media_type(&top.media_type) {
            manifests.push(store.with_platform(top)?);
        }
    }
    for arch in arches {
        let name = reference::per_arch(full, &arch);
        let Some(desc) = store.lookup(&name)? else {
            continue;
        };
        if !layout::is_manifest_media_type(&desc.media_type) {
            continue;
        }
        let desc = store.with_platform(desc)?;
        manifests.retain(|m| match (&m.platform, &desc.platform) {
            (Some(a), Some(b)) => !a.same_slot(b),
            _ => true,
        });
        manifests.push(desc);
    }
    manifests.retain(|m| m.platform.is_some() && store.closure(m).missing.is_empty());
    if manifests.is_empty() {
        return Ok(None);
    }
    for m in &mut manifests {
        m.annotations.clear();
    }
    manifests.sort_by(|a, b| {
        let key = |d: &Descriptor| d.platform.as_ref().map(|p| p.to_string());
        key(a).cmp(&key(b))
    });
    Ok(Some(ImageIndex {
        manifests,
        ..ImageIndex::empty()
    }))
}

/// The named contexts of a build: every image its Dockerfile names that the cache holds
/// (another package's output, an imported image) becomes `oci-layout://` of the session's
/// content store, with an index made for the build that lists exactly the platforms the cache
/// has for it: BuildKit picks the one each stage needs (`FROM --platform=…` included), and no
/// engine image store is involved.
#[derive(Debug, Default)]
pub(crate) struct NamedContexts {
    /// `context:` keys (familiar image names) → `oci-layout://lkpkg-cache@<index digest>`.
    pub contexts: BTreeMap<String, String>,
    /// The indexes made for them, by digest.
    pub blobs: HashMap<String, Arc<Vec<u8>>>,
    /// Per image, the cache's blobs the builder may read through them (every platform's
    /// closure): pinned for the solve ([`crate::store::Ingest::pin_present`]).
    pub reads: BTreeMap<String, BTreeSet<Digest>>,
}

impl NamedContexts {
    pub(crate) fn of(store: &Store, images: &[ImageUse]) -> Result<NamedContexts, BuildError> {
        let mut named = NamedContexts::default();
        for image in images {
            let full = reference::expand(&image.reference);
            let Some(index) = platform_index(store, &full)? else {
                continue; // not in the cache: the builder resolves it (a registry)
            };
            for manifest in &index.manifests {
                named
                    .reads
                    .entry(full.clone())
                    .or_default()
                    .extend(store.closure(manifest).blobs.into_keys());
            }
            let bytes = canonical_json::to_vec(&index).map_err(internal)?;
            let digest = Digest::of(&bytes);
            named
                .contexts
                .insert(familiar(&full), format!("oci-layout://{STORE_ID}@{digest}"));
            named.blobs.insert(digest.to_string(), Arc::new(bytes));
        }
        Ok(named)
    }
}

/// What a unit's solve is made of.
pub(crate) struct UnitSolve<'a> {
    pub unit: &'a str,
    pub shared_key: &'a str,
    /// The platforms built by this solve (one, or several that share a builder).
    pub platforms: &'a [Platform],
    pub context: ContextTree,
    pub dockerfile: ContextTree,
    pub filename: String,
    pub args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub epoch: i64,
    pub network: bool,
    pub no_cache: bool,
    pub named: NamedContexts,
    pub cache_root: &'a Path,
    /// `--ssh`: agent sockets by id.
    pub ssh: BTreeMap<String, std::path::PathBuf>,
    /// Registry credentials for the builder's pulls.
    pub auth: crate::buildkit::auth::RegistryAuth,
}

/// The solve of a unit; see the module docs.
pub(crate) fn solve_for(unit: UnitSolve<'_>) -> Solve {
    let mut attrs = BTreeMap::new();
    attrs.insert("filename".to_owned(), unit.filename);
    let platforms: Vec<String> = unit.platforms.iter().map(|p| p.to_string()).collect();
    attrs.insert("platform".to_owned(), platforms.join(","));
    for (key, value) in unit.args {
        attrs.insert(format!("build-arg:{key}"), value.clone());
    }
    attrs.insert(
        "build-arg:SOURCE_DATE_EPOCH".to_owned(),
        unit.epoch.to_string(),
    );
    for (key, value) in unit.labels {
        attrs.insert(format!("label:{key}"), value.clone());
    }
    if !unit.network {
        attrs.insert("force-network-mode".to_owned(), "none".to_owned());
    }
    if unit.no_cache {
        attrs.insert("no-cache".to_owned(), String::new());
    }
    for (name, layout) in unit.named.contexts {
        attrs.insert(format!("context:{name}"), layout);
    }
    let exporter_attrs = BTreeMap::from([
        ("rewrite-timestamp".to_owned(), "true".to_owned()),
        ("source-date-epoch".to_owned(), unit.epoch.to_string()),
        ("compression".to_owned(), "uncompressed".to_owned()),
        ("oci-mediatypes".to_owned(), "true".to_owned()),
    ]);
    Solve {
        name: format!("lkpkg {}", unit.unit),
        shared_key: blake3::hash(unit.shared_key.as_bytes()).to_hex()[..16].to_owned(),
        context: unit.context,
        dockerfile: unit.dockerfile,
        frontend_attrs: attrs,
        exporter: "oci".to_owned(),
        exporter_attrs,
        blobs: content::Blobs {
            cache: Some(unit.cache_root.to_owned()),
            made: unit.named.blobs,
        },
        ssh: unit.ssh,
        auth: unit.auth,
    }
}

/// A build failure as people should read it: BuildKit's message, and for a `# syntax=`
/// frontend that cannot be had, what to do about it.
pub(crate) fn explain_failure(error: &ImageBuildError, syntax: &Option<String>) -> String {
    let text = error.to_string();
    if let (ImageBuildError::Solve(SolveError::Failed { message }), Some(image)) = (error, syntax) {
        let bare = image.split(['@']).next().unwrap_or(image);
        if message.contains(bare) {
            return format!(
                "the Dockerfile's `# syntax={image}` directive asks BuildKit to run the frontend \
                 image `{image}`, which the builder cannot get ({message}); remove the directive \
                 to use the builder's built-in Dockerfile frontend, or make `{image}` available \
                 to the builder (a registry it can reach, or its image store)"
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit<'a>(
        args: &'a BTreeMap<String, String>,
        labels: &'a BTreeMap<String, String>,
        platforms: &'a [Platform],
        network: bool,
    ) -> UnitSolve<'a> {
        UnitSolve {
            unit: "pkg/arm64",
            shared_key: "/repo/pkg",
            platforms,
            context: ContextTree::new(),
            dockerfile: ContextTree::new(),
            filename: "Dockerfile.alt".into(),
            args,
            labels,
            epoch: 0,
            network,
            no_cache: true,
            named: NamedContexts {
                contexts: BTreeMap::from([(
                    "linuxkit/base:abc".to_owned(),
                    format!("oci-layout://{STORE_ID}@sha256:{}", "0".repeat(64)),
                )]),
                blobs: HashMap::new(),
                reads: BTreeMap::new(),
            },
            cache_root: Path::new("/cache"),
            ssh: BTreeMap::new(),
            auth: Default::default(),
        }
    }

    #[test]
    fn a_unit_becomes_the_frontend_attributes_linuxkit_passes() {
        let args = BTreeMap::from([("BASE".to_owned(), "linuxkit/base:abc".to_owned())]);
        let labels = BTreeMap::from([("org.mobyproject.config".to_owned(), "{}".to_owned())]);
        let platform = [Platform::linux("arm64")];
        let solve = solve_for(unit(&args, &labels, &platform, false));
        let attrs = &solve.frontend_attrs;
        assert_eq!(attrs["filename"], "Dockerfile.alt");
        assert_eq!(attrs["platform"], "linux/arm64");
        assert_eq!(attrs["build-arg:BASE"], "linuxkit/base:abc");
        assert_eq!(attrs["build-arg:SOURCE_DATE_EPOCH"], "0");
        assert_eq!(attrs["label:org.mobyproject.config"], "{}");
        assert_eq!(attrs["force-network-mode"], "none");
        assert_eq!(attrs["no-cache"], "");
        assert!(attrs["context:linuxkit/base:abc"].starts_with("oci-layout://lkpkg-cache@sha256:"));
        assert_eq!(solve.exporter, "oci");
        assert_eq!(solve.exporter_attrs["rewrite-timestamp"], "true");
        assert_eq!(solve.exporter_attrs["compression"], "uncompressed");
        // `network: true` is BuildKit's own sandbox network: no mode forced.
        let solve = solve_for(unit(&args, &labels, &platform, true));
        assert!(!solve.frontend_attrs.contains_key("force-network-mode"));
        // Several platforms of one builder: one solve, BuildKit's comma-separated list.
        let both = [Platform::linux("amd64"), Platform::linux("arm64")];
        let solve = solve_for(unit(&args, &labels, &both, false));
        assert_eq!(solve.frontend_attrs["platform"], "linux/amd64,linux/arm64");
    }

    /// The index a named context reads (a blob lkpkg makes for the build) is valid OCI.
    #[test]
    fn a_named_contexts_index_is_valid_oci() {
        use crate::store::tests::{layer_tar, oci_archive};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for arch in ["amd64", "arm64"] {
            let archive = oci_archive(arch, &[layer_tar(&[("f", arch.as_bytes())])]);
            let platform = layout::Platform::linux(arch);
            store
                .ingest_oci_archive(&archive[..], "docker.io/org/base:1", &platform)
                .unwrap();
        }
        let image = ImageUse {
            reference: "org/base:1".into(),
            written: "org/base:1".into(),
            line: 1,
            instruction: "FROM",
            platform: None,
        };
        let named = NamedContexts::of(&store, &[image]).unwrap();
        let context = &named.contexts["org/base:1"];
        let digest = context.rsplit('@').next().unwrap();
        let index =
            crate::store::tests::written::check_index("named context", &named.blobs[digest]);
        assert_eq!(index.manifests().len(), 2);
    }

    #[test]
    fn familiar_names_are_buildkits() {
        assert_eq!(familiar("docker.io/library/alpine:latest"), "alpine");
        assert_eq!(familiar("docker.io/library/alpine:3.20"), "alpine:3.20");
        assert_eq!(
            familiar("docker.io/linuxkit/base:abc123"),
            "linuxkit/base:abc123"
        );
        assert_eq!(familiar("ghcr.io/o/x:latest"), "ghcr.io/o/x");
        assert_eq!(familiar("docker.io/library/a/b:t"), "library/a/b:t");
    }
}
