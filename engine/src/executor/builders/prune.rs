//! `pkg builder prune`: the names lkpkg left in an engine removed again.
//!
//! lkpkg does not label what it creates (a label would change the image and its digests).
//! What it leaves in an engine are images under names that are also names in the lkpkg cache:
//! the per-arch build results (`org/image:tag-<arch>`), the dependency images it loaded from
//! the cache for chained builds, and the `--docker` tags (`org/image:tag`). [`prune`] removes
//! exactly the engine names whose canonical form (`docker.io/…`) is a cache name, without
//! force: each of them can be put back from the cache (`--docker`, or the next chained
//! build), an image another name or a container still uses stays, and nothing the cache does
//! not know is touched. Removing the last name of a classic-builder image also removes its
//! untagged step images (the engine's build cache of that package).

use crate::executor::docker::{Engine, EngineError};

/// What `pkg builder prune` did (or, in a dry run, would do) with one engine name.
#[derive(Debug)]
pub struct Pruned {
    pub name: String,
    /// `Ok` when removed (or, in a dry run, when it would be), else why the engine refused.
    pub result: Result<(), EngineError>,
}

/// Removes from `engine` every name whose canonical form is in `cache_names` (see the module
/// docs for why that is what lkpkg left and why it is safe); with `dry_run`, only lists them.
pub(crate) async fn prune(
    engine: &Engine,
    cache_names: &std::collections::HashSet<String>,
    dry_run: bool,
) -> Result<Vec<Pruned>, EngineError> {
    let mut out = Vec::new();
    for name in engine.image_names().await? {
        let canonical = lkpkg_cache_format::reference::expand(&name);
        if !cache_names.contains(&canonical) {
            continue;
        }
        let result = if dry_run {
            Ok(())
        } else {
            engine.remove_name(&name).await
        };
        out.push(Pruned { name, result });
    }
    Ok(out)
}
