//! `explain`: each unit's last build record beside the inputs the plan gives it now.

use std::sync::Arc;

use super::plan::RunOptions;
use super::{OpError, Plan};
use crate::store::Store;

pub use crate::schedule::UnitReport as UnitExplanation;

/// The units of the requested packages (not of the packages they only reach), each with its
/// last build and why its inputs differ now. Builds nothing and contacts no builder.
#[tracing::instrument(level = "debug", skip_all)]
pub fn explain(plan: &Plan, store: Arc<Store>) -> Result<Vec<UnitExplanation>, OpError> {
    // The plan's key options, as `pkg build` would use them; the run's own options change
    // no key.
    let options = plan.build_options(RunOptions {
        jobs: 1,
        dry_run: true,
        ..RunOptions::default()
    });
    let graph = plan.shared_graph();
    let reports = crate::schedule::explain(
        graph.clone(),
        plan.workspaces(),
        store,
        &options,
        plan.base(),
    )?;
    Ok(reports
        .into_iter()
        .filter(|r| graph.packages[r.package].requested)
        .collect())
}
