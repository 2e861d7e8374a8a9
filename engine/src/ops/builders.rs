//! Builders: which engine builds each platform (`pkg builder ls`), what lkpkg left in their
//! engines (`pkg builder prune`), and linuxkit's builder container.

use std::collections::{BTreeSet, HashSet};

pub use crate::executor::builders::{
    Builder, BuilderSpec, BuilderStatus, Builders, DockerConfig, Pruned, Selection,
};
pub use crate::executor::container::{BuilderMode, ContainerSpec};
pub use crate::executor::docker::{
    DEFAULT_BUILDER_TIMEOUT, Endpoint, Engine, EngineError, set_builder_timeout,
};

use super::OpError;
use crate::graph::Platform;

/// What `pkg builder prune` removed (or, in a dry run, would remove) from one engine.
#[derive(Debug)]
pub struct EnginePrune {
    pub endpoint: String,
    pub pruned: Vec<Pruned>,
}

/// Removes, from each distinct engine the platforms build on, the image names that are also
/// names in the lkpkg cache (`cache_names`): what lkpkg's `--docker` loads and older builds
/// left there (see `executor::builders::prune` for why that is exactly lkpkg's and safe).
/// With `dry_run`, only lists them.
pub async fn prune_engines(
    builders: &Builders,
    platforms: &[Platform],
    cache_names: &HashSet<String>,
    dry_run: bool,
) -> Result<Vec<EnginePrune>, OpError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for platform in platforms {
        let builder = builders.for_platform(platform).await?;
        let endpoint = builder.engine.endpoint().to_owned();
        if !seen.insert(endpoint.clone()) {
            continue;
        }
        let pruned =
            crate::executor::builders::prune(&builder.engine, cache_names, dry_run).await?;
        out.push(EnginePrune { endpoint, pruned });
    }
    Ok(out)
}
