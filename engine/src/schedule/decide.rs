//! Deciding a unit whose dependencies are done, by the rules of the `schedule` docs: its
//! inputs and build key, then fresh (from a build record or a foreign cache entry) or a build
//! with its typed reason.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use lkpkg_cache_format::build_record::BuildRecord;
use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;
use petgraph::visit::EdgeRef;

use super::{BuildError, BuildReason, Freshness, Shared, Unit};
use crate::fingerprint::{self, Inputs, content};
use crate::graph::{Edge, Node, Platform};
use crate::store::Store;
use crate::workspace::Workspaces;

/// What was decided for a unit.
pub(super) enum Decision {
    Fresh {
        descriptor: Descriptor,
        freshness: Freshness,
        key: [u8; 32],
    },
    Build {
        reason: BuildReason,
        inputs: Inputs,
        key: [u8; 32],
        /// The package's files, recorded for later explanations.
        files: BTreeMap<String, String>,
        /// See [`RemoteAsk::by_tag`](super::RemoteAsk::by_tag).
        by_tag: bool,
    },
}

/// The per-arch entry of a unit, if it is in the cache with every blob present.
fn cached_entry(store: &Store, name: &str) -> Result<Option<Descriptor>, BuildError> {
    let Some(descriptor) = store.lookup(name)? else {
        return Ok(None);
    };
    Ok(present(store, &descriptor).then_some(descriptor))
}

/// The manifest for `platform` in the multi-arch index named `name`, if it is whole in the
/// cache: a cache filled by linuxkit pulling holds only the index under the tag, without the
/// `-<arch>` names, and linuxkit uses it for the platform it holds.
fn platform_in_index(
    store: &Store,
    name: &str,
    platform: &Platform,
) -> Result<Option<Descriptor>, BuildError> {
    let Some(root) = store.lookup(name)? else {
        return Ok(None);
    };
    if !lkpkg_cache_format::layout::is_index_media_type(&root.media_type)
        || !store.has_blob(&root.digest)
    {
        return Ok(None);
    }
    let wanted = lkpkg_cache_format::layout::Platform::linux(&platform.arch);
    match store.platform_manifest(name, &root, &wanted) {
        Ok(manifest) if present(store, &manifest) => Ok(Some(manifest)),
        Ok(_) | Err(crate::store::StoreError::PlatformNotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn present(store: &Store, descriptor: &Descriptor) -> bool {
    store.has_blob(&descriptor.digest) && store.closure(descriptor).missing.is_empty()
}

/// The inputs of a unit (see [`crate::fingerprint`]).
pub(super) fn unit_inputs(
    shared: &Shared,
    workspaces: &Workspaces,
    unit: &Unit,
    units: &[Unit],
    by_node: &HashMap<NodeIndex, usize>,
    dep_digests: &[(String, String)],
) -> Result<Inputs, BuildError> {
    let graph = &shared.graph;
    let gp = &graph.packages[unit.package];
    let package = &gp.package;
    let package_tree = content::content(workspaces, &package.dir)?.tree;
    let mut extra_sources = Vec::new();
    for source in &package.yml.extra_sources {
        extra_sources.push((
            source.dst.clone(),
            content::content(workspaces, &source.src)?.tree,
        ));
    }
    let mut tag_sources = Vec::new();
    for (key, dir) in &gp.tag_sources {
        tag_sources.push((key.clone(), content::content(workspaces, dir)?.tree));
    }
    // The unit each `@lkt:` argument names (same platform).
    let dep_unit_of = |dir: &Path| -> Option<String> {
        unit.deps
            .iter()
            .map(|d| &units[by_node[d]])
            .find(|u| graph.packages[u.package].package.dir == dir)
            .map(|u| u.id.clone())
    };
    let args: Vec<(&str, &str, Option<String>)> = gp
        .build_args
        .iter()
        .map(|a| {
            (
                a.key.as_str(),
                a.value.as_str(),
                a.package.as_deref().and_then(dep_unit_of),
            )
        })
        .collect();
    let (all_args, labels) = &shared.args[&unit.package];
    let presets: BTreeMap<String, String> = all_args
        .iter()
        .filter(|(k, _)| fingerprint::PRESETS.contains(&k.as_str()))
        .filter(|(k, _)| !gp.build_args.iter().any(|a| &a.key == *k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut external_images = Vec::new();
    let mut depends = Vec::new();
    for edge in graph.graph.edges(unit.node) {
        if let Node::ExternalImage { reference } = &graph.graph[edge.target()] {
            match edge.weight() {
                Edge::Depends => depends.push(reference.clone()),
                // Read from the registry instead of the cache, the image may be other bytes:
                // the key says which.
                _ if shared.options.ignore_cached => external_images
                    .push(format!("{reference} (from its registry: --ignore-cached)")),
                _ => external_images.push(reference.clone()),
            }
        }
    }
    let dockerfile = gp
        .dockerfile_path
        .strip_prefix(&package.dir)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| package.yml.dockerfile.clone());
    let description = fingerprint::UnitDescription {
        platform: unit.platform.to_string(),
        dockerfile,
        network: shared.options.network.unwrap_or(package.yml.network),
        no_cache: shared
            .options
            .disable_cache
            .unwrap_or(package.yml.disable_cache),
        package_tree,
        extra_sources,
        args,
        tag_sources,
        presets,
        args_used_outside_from: &gp.dockerfile.args_used_outside_from,
        labels,
        dependencies: dep_digests.to_vec(),
        external_images,
        depends,
    };
    Ok(fingerprint::inputs(&description))
}

/// Decides a unit whose dependencies are all done; see the module docs for the rules.
#[tracing::instrument(level = "debug", skip_all, fields(unit = %unit.name))]
pub(super) fn decide(
    shared: &Shared,
    workspaces: &Workspaces,
    unit: &Unit,
    units: &[Unit],
    by_node: &HashMap<NodeIndex, usize>,
    dep_digests: &[(String, String)],
    deps_rebuilt: &[&str],
) -> Result<Decision, BuildError> {
    let store = &shared.store;
    let inputs = unit_inputs(shared, workspaces, unit, units, by_node, dep_digests)?;
    let key = fingerprint::key(&inputs);
    tracing::trace!(key = %hex::encode(key), inputs = inputs.len(), "build key");
    let package_dir = &shared.graph.packages[unit.package].package.dir;
    let build_as = |reason: BuildReason, by_tag: bool| Decision::Build {
        reason,
        inputs: inputs.clone(),
        key,
        files: if shared.options.dry_run {
            BTreeMap::new()
        } else {
            current_files(workspaces, package_dir).unwrap_or_default()
        },
        by_tag,
    };
    let build = |reason: BuildReason| build_as(reason, false);
    if shared.options.force {
        return Ok(build(BuildReason::Forced));
    }
    let name = lkpkg_cache_format::reference::per_arch(
        &shared.graph.packages[unit.package].package.tag.full_tag(),
        &unit.platform.arch,
    );
    let state = store.unit_state(&key, &name, &unit.id)?;
    let named = |record: &BuildRecord| {
        state
            .current
            .as_ref()
            .is_some_and(|c| c.digest == record.manifest.digest)
    };
    // When the cache name points at the recorded image, the store published it whole and
    // reference counts keep it so: the manifest's presence is checked (against deletion behind
    // the store's back), not its whole closure. A record whose image is no longer named may
    // have lost blobs to `gc`: its closure is checked.
    if let Some(record) = state.record.as_ref().filter(|r| {
        if named(r) {
            store.has_blob(&r.manifest.digest)
        } else {
            present(store, &r.manifest)
        }
    }) {
        let record = record.clone();
        let freshness = if named(&record) {
            Freshness::UpToDate
        } else {
            store.point_name(&name, &record.manifest)?;
            Freshness::Reused
        };
        if state.last_key != Some(key) {
            store.set_last_build(&unit.id, &key)?;
        }
        return Ok(Decision::Fresh {
            descriptor: record.manifest,
            freshness,
            key,
        });
    }
    let last = store.last_build(&unit.id)?;
    let full_tag = shared.graph.packages[unit.package].package.tag.full_tag();
    let cached = match cached_entry(store, &name)? {
        Some(descriptor) => Some(descriptor),
        None => platform_in_index(store, &full_tag, &unit.platform)?,
    };
    let built_by_lkpkg = |descriptor: &Descriptor| {
        last.as_ref()
            .is_some_and(|(_, r)| r.manifest.digest == descriptor.digest)
    };
    let by_tag = cached.is_none() && deps_rebuilt.is_empty();
    if let Some(descriptor) = cached
        && !built_by_lkpkg(&descriptor)
    {
        if deps_rebuilt.is_empty() {
            return Ok(Decision::Fresh {
                descriptor,
                freshness: Freshness::Foreign,
                key,
            });
        }
        return Ok(build(BuildReason::DependencyRebuilt(
            deps_rebuilt.iter().map(|d| (*d).to_owned()).collect(),
        )));
    }
    // (`by_tag`: the tag may stand for the unit only where linuxkit's would: nothing under
    // the unit's name, and nothing it consumes changed in this run.)
    match last {
        Some((_, record)) => {
            let files = current_files(workspaces, package_dir);
            let reasons =
                fingerprint::explain(&record.inputs, &inputs, &record.files, files.as_ref());
            if reasons.is_empty() {
                Ok(build_as(BuildReason::RecordedImageGone, by_tag))
            } else {
                Ok(build_as(BuildReason::Changed(reasons), by_tag))
            }
        }
        None => Ok(build_as(BuildReason::FirstBuild, by_tag)),
    }
}

pub(super) fn current_files(
    workspaces: &Workspaces,
    dir: &Path,
) -> Option<BTreeMap<String, String>> {
    content::files(workspaces, dir).ok().map(|f| {
        f.iter()
            .map(|(k, v)| (k.clone(), content::describe(v)))
            .collect()
    })
}
