//! A package's multi-arch index: written once all its platforms are done (and loaded into the
//! default engine with `--docker`), or kept as it was when one of them failed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;

use super::{BuildError, Event, Shared, Unit, internal};

/// Writes a package's multi-arch index once all its units are done, if one of them changed
/// or the index is missing.
pub(super) async fn finish_package(
    shared: &Arc<Shared>,
    units: &[Unit],
    done: &HashMap<NodeIndex, Option<Descriptor>>,
    changed: &HashSet<usize>,
    package: usize,
) -> Result<(), BuildError> {
    let mine: Vec<&Unit> = shared.graph.packages[package]
        .platforms
        .iter()
        .filter_map(|p| shared.graph.unit(package, p))
        .map(|node| &units[shared.unit_index[&node]])
        .collect();
    if !mine.iter().all(|u| done.contains_key(&u.node)) {
        return Ok(());
    }
    let gp = &shared.graph.packages[package];
    let name = gp.package.tag.full_tag();
    // A platform that failed (or was skipped) leaves the index as it was: merging the others
    // would give an index whose platforms come from different builds.
    let failed: Vec<&str> = mine
        .iter()
        .filter(|u| matches!(done.get(&u.node), Some(None)))
        .map(|u| u.name.as_str())
        .collect();
    if !failed.is_empty() {
        (shared.events)(Event::IndexKept {
            package: gp.package.tag.tag(),
            name: name.clone(),
            reason: format!(
                "{} did not build: the index keeps what it held, never a mix of builds",
                failed.join(", ")
            ),
        });
        return Ok(());
    }
    if !changed.contains(&package) && shared.store.lookup(&name)?.is_some() {
        return Ok(());
    }
    let mut manifests: Vec<Descriptor> = Vec::new();
    for descriptor in mine
        .iter()
        .filter_map(|u| done.get(&u.node).cloned().flatten())
    {
        manifests.push(shared.store.with_platform(descriptor)?);
    }
    if manifests.is_empty() {
        return Ok(());
    }
    let store = shared.store.clone();
    let index_name = name.clone();
    let annotations = shared
        .index_annotations
        .get(&package)
        .cloned()
        .unwrap_or_default();
    let descriptor = tokio::task::spawn_blocking(move || {
        store.merge_index_annotated(&index_name, &manifests, &annotations)
    })
    .await
    .map_err(internal)??;
    (shared.events)(Event::Indexed {
        package: gp.package.tag.tag(),
        name: name.clone(),
        digest: descriptor.digest.to_string(),
    });
    if shared.options.docker {
        shared.executor.load_into_engine(package).await?;
    }
    Ok(())
}
