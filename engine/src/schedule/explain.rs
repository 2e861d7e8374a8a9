//! `lkpkg explain`: each unit's last build record against its current inputs, without
//! building.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use lkpkg_cache_format::build_record::BuildRecord;
use lkpkg_cache_format::layout::Descriptor;
use petgraph::graph::NodeIndex;

use super::decide::{current_files, unit_inputs};
use super::{
    BoxFuture, BuildError, BuildOptions, ExecError, Executor, Job, Shared, internal, plan_units,
};
use crate::fingerprint::{self, Inputs};
use crate::graph::BuildGraph;
use crate::store::Store;
use crate::workspace::Workspaces;

/// Stands in for the executor where nothing builds (`explain`).
struct NoExecutor;

impl Executor for NoExecutor {
    fn build<'a>(&'a self, _job: Job<'a>) -> BoxFuture<'a, Result<Descriptor, ExecError>> {
        Box::pin(async {
            Err(ExecError::Failed {
                message: "nothing builds here".into(),
                log_tail: Vec::new(),
            })
        })
    }

    fn load_into_engine(&self, _package: usize) -> BoxFuture<'_, Result<(), BuildError>> {
        Box::pin(async { Err(internal("nothing loads here")) })
    }
}

/// What `lkpkg explain` shows for one unit.
#[derive(Debug)]
pub struct UnitReport {
    pub unit: String,
    /// The unit's package (its index in the graph).
    pub package: usize,
    /// The unit's record name (`pkg/base/amd64`).
    pub id: String,
    /// The unit's per-arch cache name.
    pub cache_name: String,
    /// Its build key from the current inputs (what `pkg build` would look records up by).
    pub key: [u8; 32],
    /// The unit's last build, if lkpkg built it.
    pub last: Option<BuildRecord>,
    /// The inputs now, with dependencies at the digests the cache holds for them.
    pub current: Inputs,
    /// Why the current inputs differ from the last build's (empty: fresh).
    pub reasons: Vec<String>,
}

/// Compares each unit's last build record with its current inputs, without building. A
/// dependency stands at the digest its own record or cache entry gives now.
pub(crate) fn explain(
    graph: Arc<BuildGraph>,
    workspaces: &Workspaces,
    store: Arc<Store>,
    options: &BuildOptions,
    base: &Path,
) -> Result<Vec<UnitReport>, BuildError> {
    let (units, by_node, args) = plan_units(&graph, workspaces, base, &options.proxies);
    let shared = Shared {
        graph: graph.clone(),
        store: store.clone(),
        executor: Arc::new(NoExecutor),
        args,
        events: Arc::new(|_| {}),
        options: options.clone(),
        unit_index: by_node.clone(),
        index_annotations: HashMap::new(),
        remote: None,
    };
    let mut digests: HashMap<NodeIndex, String> = HashMap::new();
    let mut reports = Vec::new();
    for unit in &units {
        let dep_digests: Vec<(String, String)> = unit
            .deps
            .iter()
            .filter_map(|d| Some((units[by_node[d]].id.clone(), digests.get(d)?.clone())))
            .collect();
        let current = unit_inputs(&shared, workspaces, unit, &units, &by_node, &dep_digests)?;
        let key = fingerprint::key(&current);
        let last = store.last_build(&unit.id)?.map(|(_, r)| r);
        let name = lkpkg_cache_format::reference::per_arch(
            &graph.packages[unit.package].package.tag.full_tag(),
            &unit.platform.arch,
        );
        let digest = match store.build_record(&key)? {
            Some(record) => Some(record.manifest.digest.to_string()),
            None => store.lookup(&name)?.map(|d| d.digest.to_string()),
        };
        if let Some(digest) = digest {
            digests.insert(unit.node, digest);
        }
        let reasons = match &last {
            Some(record) => {
                let files = current_files(workspaces, &graph.packages[unit.package].package.dir);
                fingerprint::explain(&record.inputs, &current, &record.files, files.as_ref())
            }
            None => vec!["no build record".to_owned()],
        };
        reports.push(UnitReport {
            unit: unit.name.clone(),
            package: unit.package,
            id: unit.id.clone(),
            cache_name: name,
            key,
            last,
            current,
            reasons,
        });
    }
    Ok(reports)
}
