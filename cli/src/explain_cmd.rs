//! `lkpkg explain [DIR…]`: each unit's last build record beside its current inputs, and why
//! they differ. With no directory, every package below the current directory.

use std::sync::Arc;

use anyhow::Result;

use crate::args::{ExplainArgs, GlobalArgs, MessageFormat};
use crate::json::{self, Versioned};

pub fn run(args: ExplainArgs, global: &GlobalArgs) -> Result<()> {
    // The plan `pkg build` would make from the same flags, or the reasons would not be the
    // build's.
    let plan = crate::pkg::plan(&args.dirs, &args.options, &args.plan, false)?;
    let store = Arc::new(crate::output::open_store(&global.cache_dir())?);
    let reports = lkpkg_engine::ops::explain(&plan, store)?;
    let mut out = String::new();
    for report in reports {
        if global.message_format == MessageFormat::Json {
            let line = Versioned::new(json::Explanation {
                unit: report.unit.clone(),
                fresh: report.reasons.is_empty(),
                reasons: report.reasons.clone(),
                current: report.current.clone(),
                last: report.last.as_ref().map(|r| json::LastBuild {
                    manifest: r.manifest.digest.to_string(),
                    inputs: r.inputs.clone(),
                    builder: r.builder.clone(),
                    started_unix_ms: r.started_unix_ms,
                    duration_ms: r.duration_ms,
                }),
            });
            out.push_str(&line.line());
            out.push('\n');
            continue;
        }
        let state = if report.reasons.is_empty() {
            "fresh".to_owned()
        } else {
            format!("stale: {}", report.reasons.join("; "))
        };
        out.push_str(&format!("{}: {state}\n", report.unit));
        let last: std::collections::BTreeMap<&str, &str> = report
            .last
            .as_ref()
            .map(|r| {
                r.inputs
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(record) = &report.last {
            out.push_str(&format!(
                "  last build: {} on {}, {:.1}s\n",
                record.manifest.digest,
                record.builder,
                record.duration_ms as f64 / 1000.0
            ));
        }
        out.push_str(&format!(
            "  {:<40} {:<44} {}\n",
            "input", "last build", "now"
        ));
        let mut names: Vec<&str> = report.current.iter().map(|(k, _)| k.as_str()).collect();
        names.extend(
            last.keys()
                .filter(|k| !report.current.iter().any(|(c, _)| c == *k)),
        );
        for name in names {
            let now = report
                .current
                .iter()
                .find(|(k, _)| k == name)
                .map_or("-", |(_, v)| v.as_str());
            let then = last.get(name).copied().unwrap_or("-");
            let mark = if now == then { " " } else { "*" };
            out.push_str(&format!(
                "{mark} {name:<40} {:<44} {}\n",
                clip(then),
                clip(now)
            ));
        }
    }
    crate::output::out(&out);
    Ok(())
}

fn clip(value: &str) -> String {
    if value.chars().count() > 44 {
        format!("{}…", value.chars().take(43).collect::<String>())
    } else {
        value.to_owned()
    }
}
