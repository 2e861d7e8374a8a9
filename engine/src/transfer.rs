//! Moving images between the cache and registries: pulls (`cache pull`, pulls before a build)
//! and pushes (`cache push`, `pkg push`, `pkg build --push`), as linuxkit moves them.
//!
//! # Pulls
//! The root (an index or a manifest) is read first, then the image manifests asked for (all
//! platforms, or those of a build's units) and the attestation manifests that refer to them,
//! then every config and layer the cache lacks, four at a time, each streamed into a temporary
//! file of the cache and checked against its digest and size before it gets its name. Names are
//! published last, once everything they reach is in place: a pull that fails half way leaves
//! blobs (which `gc` collects) and no name.
//!
//! # Pushes
//! Blobs first (four at a time; a `HEAD` skips what the registry has, a cross-repository mount
//! what another repository of the registry was seen to hold), then each image manifest by
//! digest, then the tags. A multi-arch index is merged with the one already in the registry as
//! linuxkit merges it (`util.AppendIndex`: the pushed platforms replace theirs, the others stay
//! with their attestations), and read back after the upload, at once and three more times over
//! about a second: when another job's push replaced it (CI jobs pushing platforms of one
//! package at once: the other read the index before this upload and wrote after it), the merge
//! is done again over what is there now, so no job's platform is lost. The registry has no
//! conditional upload, so this is a narrowing, not a lock: a push that lands more than a second
//! after another's last read-back can still drop it (the other push's `<tag>-<arch>` tags stay,
//! and `pkg manifest` rebuilds the index from them). Each retry waits a random, growing pause
//! so that two jobs do not keep colliding.

use std::collections::BTreeSet;
use std::time::Duration;

use futures_util::StreamExt;
use lkpkg_cache_format::canonical_json;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{
    self, Descriptor, ImageConfigSummary, ImageIndex, ImageManifest, MEDIA_TYPE_OCI_INDEX, Platform,
};
use lkpkg_cache_format::reference as names;
use oci_client::Reference;

use crate::registry::{BlobSink, Registry, RegistryError, parse_reference};
use crate::store::blobs::TempBlob;
use crate::store::{Store, StoreError};

/// How many blobs move at once.
const PARALLEL_BLOBS: usize = 4;
/// How many times an index push is merged again after another push replaced it.
const INDEX_ATTEMPTS: u32 = 6;
/// How many more times a pushed index is read back, to see a later push that dropped it.
const SETTLE_READS: u32 = 3;

/// A failed pull or push.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("`{reference}` is not in the registry")]
    NotFound { reference: String },
    #[error("`{reference}`: {message}")]
    Invalid { reference: String, message: String },
    #[error("`{name}` is not in the cache")]
    NotInCache { name: String },
    #[error(
        "the index of `{reference}` kept changing while it was pushed ({INDEX_ATTEMPTS} tries); \
         other pushes to it are running: try again"
    )]
    IndexContended { reference: String },
}

impl TransferError {
    pub fn is_user_error(&self) -> bool {
        match self {
            TransferError::Registry(e) => e.is_user_error(),
            TransferError::Store(e) => e.is_user_error(),
            TransferError::NotInCache { .. } | TransferError::NotFound { .. } => true,
            _ => false,
        }
    }
}

/// What to pull and which names it gets in the cache.
#[derive(Debug, Clone)]
pub(crate) struct PullRequest<'a> {
    /// The canonical reference in the registry.
    pub reference: &'a str,
    /// The cache name (usually the same reference).
    pub name: &'a str,
    /// The platforms wanted; `None`: every platform of an index.
    pub platforms: Option<&'a [Platform]>,
    /// Publish `name` → the root (only sensible when every platform is pulled).
    pub root_name: bool,
    /// Publish `<name>-<arch>` → each image manifest pulled.
    pub arch_names: bool,
}

/// What a pull brought.
#[derive(Debug, Clone)]
pub(crate) struct Pulled {
    /// The root descriptor (index or manifest).
    pub root: Descriptor,
    /// The image manifests pulled, with their platforms.
    pub images: Vec<Descriptor>,
    /// Blobs downloaded (the others were in the cache).
    pub downloaded: usize,
}

/// What a push did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Pushed {
    /// Blobs uploaded; those the registry had are not counted.
    pub uploaded: usize,
    pub already_there: usize,
    /// The tags written.
    pub tags: Vec<String>,
    /// Without override: the registry had the tag, nothing was pushed.
    pub skipped_existing: bool,
}

/// How a push treats what the registry has.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushOptions {
    /// Also tag each platform's image `<tag>-<arch>`.
    pub arch_tags: bool,
    /// Push even when the registry has the tag (an index is merged, a manifest replaced).
    pub override_existing: bool,
}

fn invalid(reference: &str, message: impl Into<String>) -> TransferError {
    TransferError::Invalid {
        reference: reference.to_owned(),
        message: message.into(),
    }
}

fn by_digest(base: &Reference, digest: &Digest) -> Reference {
    Reference::with_digest(
        base.registry().to_owned(),
        base.repository().to_owned(),
        digest.to_string(),
    )
}

fn with_tag(base: &Reference, tag: &str) -> Reference {
    Reference::with_tag(
        base.registry().to_owned(),
        base.repository().to_owned(),
        tag.to_owned(),
    )
}

/// A download into a temporary blob of the cache.
struct TempSink<'s> {
    store: &'s Store,
    blob: Option<TempBlob>,
}

impl BlobSink for TempSink<'_> {
    fn restart(&mut self) -> std::io::Result<()> {
        self.blob = Some(
            crate::store::blobs::TempBlob::create(self.store.root())
                .map_err(|e| std::io::Error::other(e.to_string()))?,
        );
        Ok(())
    }

    fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        match &mut self.blob {
            Some(blob) => blob.write_all(chunk),
            None => Err(std::io::Error::other("no temporary blob")),
        }
    }
}

/// Pulls `request.reference` into the cache; `None` when the registry has no such name, or
/// none of the platforms asked for.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn pull(
    store: &Store,
    registry: &Registry,
    request: &PullRequest<'_>,
) -> Result<Option<Pulled>, TransferError> {
    store.ensure_writable()?;
    let shown = request.reference;
    let reference = parse_reference(shown)?;
    let Some(root) = registry.manifest(&reference).await? else {
        return Ok(None);
    };
    let mut ingest = store.ingest();
    let root_desc = Descriptor::new(
        if root.media_type.is_empty() {
            layout::MEDIA_TYPE_OCI_MANIFEST
        } else {
            &root.media_type
        },
        root.digest,
        root.bytes.len() as u64,
    );
    let is_index = layout::is_index_media_type(&root.media_type)
        || serde_json::from_slice::<serde_json::Value>(&root.bytes)
            .is_ok_and(|v| v.get("manifests").is_some());
    // (descriptor, bytes, is an image) of every manifest pulled.
    let mut manifests: Vec<(Descriptor, bytes::Bytes, bool)> = Vec::new();
    if is_index {
        let index: ImageIndex = serde_json::from_slice(&root.bytes)
            .map_err(|e| invalid(shown, format!("the index is not valid: {e}")))?;
        let images: Vec<&Descriptor> = index
            .manifests
            .iter()
            .filter(|d| !d.is_attestation() && layout::is_manifest_media_type(&d.media_type))
            .filter(|d| match (&d.platform, request.platforms) {
                (_, None) => true,
                (Some(p), Some(wanted)) => wanted.iter().any(|w| w.selects(p)),
                (None, Some(_)) => false,
            })
            .collect();
        if images.is_empty() {
            return Ok(None);
        }
        let chosen: BTreeSet<String> = images.iter().map(|d| d.digest.to_string()).collect();
        let attestations = index.manifests.iter().filter(|d| {
            d.is_attestation()
                && d.annotations
                    .get("vnd.docker.reference.digest")
                    .is_some_and(|r| chosen.contains(r))
        });
        for desc in images.iter().copied().chain(attestations) {
            let child = registry
                .manifest(&by_digest(&reference, &desc.digest))
                .await?
                .ok_or_else(|| invalid(shown, format!("manifest {} is missing", desc.digest)))?;
            manifests.push((desc.clone(), child.bytes, !desc.is_attestation()));
        }
    } else {
        manifests.push((root_desc.clone(), root.bytes.clone(), true));
    }
    // Every config and layer, once.
    let mut wanted: Vec<Descriptor> = Vec::new();
    let mut parsed = Vec::new();
    for (desc, bytes, _) in &manifests {
        let manifest: ImageManifest = serde_json::from_slice(bytes)
            .map_err(|e| invalid(shown, format!("manifest {} is not valid: {e}", desc.digest)))?;
        for blob in std::iter::once(&manifest.config).chain(&manifest.layers) {
            if !wanted.iter().any(|w| w.digest == blob.digest) && !store.has_blob(&blob.digest) {
                wanted.push(blob.clone());
            }
        }
        parsed.push(manifest);
    }
    let downloaded = wanted.len();
    // Boxed one by one: a stream of closures' futures over borrowed data would not be `Send`
    // for every lifetime (rustc's higher-ranked closure limitation).
    type Download = Result<(Digest, Option<TempBlob>), TransferError>;
    let downloads: Vec<futures_util::future::BoxFuture<'_, Download>> = wanted
        .iter()
        .map(|blob| {
            let reference = &reference;
            Box::pin(async move {
                let mut sink = TempSink { store, blob: None };
                registry
                    .pull_blob(reference, &blob.digest, blob.size, &mut sink)
                    .await?;
                Ok((blob.digest, sink.blob))
            }) as futures_util::future::BoxFuture<'_, _>
        })
        .collect();
    let mut downloads = futures_util::stream::iter(downloads).buffer_unordered(PARALLEL_BLOBS);
    while let Some(done) = downloads.next().await {
        let (digest, blob) = done?;
        let blob = blob.ok_or_else(|| invalid(shown, format!("blob {digest} was not written")))?;
        ingest.put_temp(blob, &digest)?;
    }
    drop(downloads);
    let mut images = Vec::new();
    for ((desc, bytes, is_image), manifest) in manifests.iter().zip(&parsed) {
        let (digest, _) = ingest.put_bytes(bytes)?;
        if digest != desc.digest {
            return Err(invalid(shown, format!("manifest {} changed", desc.digest)));
        }
        if *is_image {
            let mut desc = desc.clone();
            desc.annotations.remove(layout::REF_NAME_ANNOTATION);
            if desc.platform.is_none() {
                let config = store.read_blob(&manifest.config.digest)?;
                let summary: ImageConfigSummary = serde_json::from_slice(&config)
                    .map_err(|e| invalid(shown, format!("the image config is not valid: {e}")))?;
                desc.platform = Some(summary.platform());
            }
            images.push(desc);
        }
    }
    if is_index {
        ingest.put_bytes(&root.bytes)?;
    }
    let mut published = Vec::new();
    if request.root_name {
        let mut root = root_desc.clone();
        if !is_index {
            root.platform = images.first().and_then(|d| d.platform.clone());
        }
        published.push((request.name.to_owned(), root));
    }
    if request.arch_names {
        for image in &images {
            if let Some(platform) = &image.platform {
                published.push((
                    names::per_arch(request.name, &platform.architecture),
                    image.clone(),
                ));
            }
        }
    }
    for (name, _) in &published {
        names::validate(name).map_err(|e| invalid(name, e.to_string()))?;
    }
    ingest.publish(published)?;
    Ok(Some(Pulled {
        root: root_desc,
        images,
        downloaded,
    }))
}

/// Pushes the blobs and the manifest of one image (by digest).
async fn push_image(
    store: &Store,
    registry: &Registry,
    remote: &Reference,
    desc: &Descriptor,
    pushed: &mut Pushed,
) -> Result<(), TransferError> {
    let bytes = store.read_blob(&desc.digest)?;
    let manifest: ImageManifest = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            &remote.whole(),
            format!("cached manifest {} is not valid: {e}", desc.digest),
        )
    })?;
    let blobs: Vec<Descriptor> = std::iter::once(manifest.config.clone())
        .chain(manifest.layers.iter().cloned())
        .collect();
    // A registry accepts a manifest only once it holds its blobs: a manifest already in the
    // repository means the whole image is, and one request replaces one per blob.
    if registry
        .manifest_digest(&by_digest(remote, &desc.digest))
        .await?
        == Some(desc.digest)
    {
        pushed.already_there += blobs.len();
        return Ok(());
    }
    for blob in &blobs {
        if !store.has_blob(&blob.digest) {
            return Err(StoreError::MissingBlob {
                name: remote.whole(),
                digest: blob.digest,
            }
            .into());
        }
    }
    let uploads: Vec<futures_util::future::BoxFuture<'_, Result<bool, RegistryError>>> = blobs
        .iter()
        .map(|blob| {
            Box::pin(async move {
                let path = store.blob_path(&blob.digest);
                registry
                    .push_blob(remote, &blob.digest, blob.size, &path)
                    .await
            }) as futures_util::future::BoxFuture<'_, _>
        })
        .collect();
    let mut uploads = futures_util::stream::iter(uploads).buffer_unordered(PARALLEL_BLOBS);
    while let Some(done) = uploads.next().await {
        if done? {
            pushed.uploaded += 1;
        } else {
            pushed.already_there += 1;
        }
    }
    drop(uploads);
    let media_type = manifest
        .media_type
        .clone()
        .unwrap_or_else(|| desc.media_type.clone());
    registry
        .put_manifest(&by_digest(remote, &desc.digest), &bytes, &media_type)
        .await?;
    Ok(())
}

/// Pushes the cache's `local` name to the registry as `remote` (both canonical), as
/// `linuxkit cache push` does; see the module docs for the index merge.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn push(
    store: &Store,
    registry: &Registry,
    local: &str,
    remote: &str,
    options: PushOptions,
) -> Result<Pushed, TransferError> {
    let root = store
        .lookup(local)?
        .ok_or_else(|| TransferError::NotInCache {
            name: local.to_owned(),
        })?;
    let reference = parse_reference(remote)?;
    if reference.tag().is_none() {
        return Err(invalid(remote, "a push needs a tag to push to"));
    }
    let mut pushed = Pushed::default();
    if !options.override_existing && registry.manifest_digest(&reference).await?.is_some() {
        pushed.skipped_existing = true;
        return Ok(pushed);
    }
    if !layout::is_index_media_type(&root.media_type) {
        push_image(store, registry, &reference, &root, &mut pushed).await?;
        let bytes = store.read_blob(&root.digest)?;
        registry
            .put_manifest(&reference, &bytes, &root.media_type)
            .await?;
        pushed.tags.push(remote.to_owned());
        return Ok(pushed);
    }
    let local_index = store.read_index(&root.digest)?;
    // Entries whose manifests are in the cache; an index may name platforms never pulled.
    let entries: Vec<Descriptor> = local_index
        .manifests
        .iter()
        .filter(|d| store.has_blob(&d.digest))
        .cloned()
        .collect();
    if entries.iter().all(Descriptor::is_attestation) {
        return Err(invalid(local, "no image of this index is in the cache"));
    }
    for entry in &entries {
        push_image(store, registry, &reference, entry, &mut pushed).await?;
    }
    push_index(
        registry,
        &reference,
        Some(&local_index.annotations),
        &entries,
    )
    .await?;
    pushed.tags.push(remote.to_owned());
    if options.arch_tags {
        for entry in entries.iter().filter(|e| !e.is_attestation()) {
            let Some(platform) = &entry.platform else {
                continue;
            };
            let tag = format!(
                "{}-{}",
                reference.tag().unwrap_or("latest"),
                platform.architecture
            );
            let bytes = store.read_blob(&entry.digest)?;
            registry
                .put_manifest(&with_tag(&reference, &tag), &bytes, &entry.media_type)
                .await?;
            pushed
                .tags
                .push(names::per_arch(remote, &platform.architecture));
        }
    }
    Ok(pushed)
}

/// Merges `entries` into the registry's index at `reference` and uploads the result (with
/// `annotations`; `None` keeps the registry's), again while another push replaced it in
/// between. Returns whether the registry's index changed.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn push_index(
    registry: &Registry,
    reference: &Reference,
    annotations: Option<&std::collections::BTreeMap<String, String>>,
    entries: &[Descriptor],
) -> Result<bool, TransferError> {
    let shown = reference.whole();
    let ours: BTreeSet<Digest> = entries.iter().map(|e| e.digest).collect();
    let mut pause = Duration::from_millis(50);
    for _ in 0..INDEX_ATTEMPTS {
        let current = registry.manifest(reference).await?;
        let remote = match &current {
            Some(m) if layout::is_index_media_type(&m.media_type) => {
                serde_json::from_slice::<ImageIndex>(&m.bytes).ok()
            }
            _ => None,
        };
        let remote_annotations = remote
            .as_ref()
            .map(|i| i.annotations.clone())
            .unwrap_or_default();
        let remote_entries = remote.map(|i| i.manifests).unwrap_or_default();
        let merged = layout::merge_index_entries(remote_entries, entries);
        let index = ImageIndex {
            manifests: merged,
            annotations: annotations.cloned().unwrap_or(remote_annotations),
            ..ImageIndex::empty()
        };
        let bytes = canonical_json::to_vec(&index)
            .map_err(|e| invalid(&shown, format!("cannot encode the index: {e}")))?;
        if current.as_ref().map(|m| m.digest) == Some(Digest::of(&bytes)) {
            return Ok(false);
        }
        registry
            .put_manifest(reference, &bytes, MEDIA_TYPE_OCI_INDEX)
            .await?;
        // Read it back, now and a few times over the next second: another push that read the
        // index before this one's upload may replace it after, and would drop this push's
        // platforms. Seen missing, they are merged in again.
        if still_held(registry, reference, &ours).await? {
            return Ok(true);
        }
        let jitter = u64::from(std::process::id() % 97) + u64::from(now_nanos() % 113);
        tokio::time::sleep(pause + Duration::from_millis(jitter)).await;
        pause *= 2;
    }
    Err(TransferError::IndexContended { reference: shown })
}

/// Whether the registry's index at `reference` holds every digest of `ours`, read right away
/// and then [`SETTLE_READS`] times more, a random 100–350 ms apart.
async fn still_held(
    registry: &Registry,
    reference: &Reference,
    ours: &BTreeSet<Digest>,
) -> Result<bool, TransferError> {
    for read in 0..=SETTLE_READS {
        if read > 0 {
            let pause = 100 + u64::from(now_nanos() % 250);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let Some(now) = registry.manifest(reference).await? else {
            return Ok(false);
        };
        let held: BTreeSet<Digest> = serde_json::from_slice::<ImageIndex>(&now.bytes)
            .map(|i| i.manifests.iter().map(|e| e.digest).collect())
            .unwrap_or_default();
        if !ours.is_subset(&held) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn now_nanos() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// Points `to` at what `from` names, in the same repository (`pkg remote-tag`, release tags).
/// Returns `false` when `to` already names it.
#[tracing::instrument(level = "debug", skip_all)]
pub(crate) async fn retag(
    registry: &Registry,
    from: &str,
    to: &str,
) -> Result<bool, TransferError> {
    let source = parse_reference(from)?;
    let target = parse_reference(to)?;
    if source.registry() != target.registry() || source.repository() != target.repository() {
        return Err(invalid(
            to,
            format!("a remote tag stays in the repository of `{from}`"),
        ));
    }
    let manifest = registry
        .manifest(&source)
        .await?
        .ok_or_else(|| TransferError::NotFound {
            reference: from.to_owned(),
        })?;
    if registry.manifest_digest(&target).await? == Some(manifest.digest) {
        return Ok(false);
    }
    registry
        .put_manifest(&target, &manifest.bytes, &manifest.media_type)
        .await?;
    Ok(true)
}
