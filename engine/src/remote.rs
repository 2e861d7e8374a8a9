//! The scheduler's [`Remote`] on a registry: before a unit is built, its image is looked for
//! in the registry of its name, by the build record another machine shared (its build key,
//! under the tag [`shared_record_tag`]) and then, where the tag may stand for the unit, by the
//! package's tag, as linuxkit looks (`pkg build` pulls "the image whose tag matches the tree
//! hash or, failing that", builds it).
//!
//! A registry that cannot be asked (unreachable, refusing the credentials) is said once and
//! not asked again in the run: its units build, as they would offline.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use lkpkg_cache_format::build_record::shared_record_tag;
use lkpkg_cache_format::layout::Platform as OciPlatform;
use lkpkg_cache_format::reference;

use crate::graph::BuildGraph;
use crate::registry::{Registry, parse_reference};
use crate::schedule::{BoxFuture, Pulled, Remote, RemoteAsk};
use crate::store::Store;
use crate::transfer::{self, PullRequest, TransferError};

/// See the module docs.
pub(crate) struct RegistryRemote {
    registry: Arc<Registry>,
    store: Arc<Store>,
    graph: Arc<BuildGraph>,
    /// Registries that failed once in this run.
    down: Mutex<BTreeSet<String>>,
}

impl RegistryRemote {
    pub(crate) fn new(registry: Arc<Registry>, store: Arc<Store>, graph: Arc<BuildGraph>) -> Self {
        RegistryRemote {
            registry,
            store,
            graph,
            down: Mutex::new(BTreeSet::new()),
        }
    }

    async fn lookup(
        &self,
        ask: RemoteAsk<'_>,
    ) -> Result<Option<(lkpkg_cache_format::layout::Descriptor, Pulled)>, TransferError> {
        let full = self.graph.packages[ask.package].package.tag.full_tag();
        let platform = OciPlatform::linux(&ask.platform.arch);
        let platforms = [platform];
        let (name, _) = reference::split_tag(&full);
        let by_key = format!("{name}:{}", shared_record_tag(ask.key));
        let mut tries = vec![(by_key, true)];
        if ask.by_tag {
            tries.push((full.clone(), false));
        }
        for (wanted, is_key) in tries {
            let request = PullRequest {
                reference: &wanted,
                name: &full,
                platforms: Some(&platforms),
                root_name: false,
                arch_names: true,
            };
            if let Some(pulled) = transfer::pull(&self.store, &self.registry, &request).await?
                && let Some(image) = pulled.images.into_iter().next()
            {
                let how = if is_key {
                    Pulled::ByKey { reference: wanted }
                } else {
                    Pulled::ByTag { reference: wanted }
                };
                return Ok(Some((image, how)));
            }
        }
        Ok(None)
    }
}

impl Remote for RegistryRemote {
    fn fetch<'a>(
        &'a self,
        ask: RemoteAsk<'a>,
    ) -> BoxFuture<'a, Result<Option<(lkpkg_cache_format::layout::Descriptor, Pulled)>, String>>
    {
        Box::pin(async move {
            let full = self.graph.packages[ask.package].package.tag.full_tag();
            let Ok(parsed) = parse_reference(&full) else {
                return Ok(None);
            };
            let registry = parsed.registry().to_owned();
            if self.down.lock().expect("down lock").contains(&registry) {
                return Ok(None);
            }
            match self.lookup(ask).await {
                Ok(found) => Ok(found),
                Err(e) => {
                    // Said once, by whichever lookup failed first.
                    if !self
                        .down
                        .lock()
                        .expect("down lock")
                        .insert(registry.clone())
                    {
                        return Ok(None);
                    }
                    Err(format!(
                        "not looking in registry `{registry}` for published images in this run \
                         (building instead): {e}"
                    ))
                }
            }
        })
    }
}
