//! `lkpkg pkg build`: load the graph, build what needs it, print events.
//!
//! Human output is one line per event on stderr (`   Building base/amd64`, `      Cached …`,
//! `       Built … in 2.1s`), cargo-style; `--message-format json` prints JSON Lines on
//! stdout, one event per line, `{"format_version":1,"type":…,"unit":…}`.

use std::sync::Arc;

use anyhow::Result;
use lkpkg_engine::build::{self, BuildOptions, Event};
use lkpkg_engine::error::ErrorKind;
use lkpkg_engine::graph::{BuildGraph, GraphOptions, Platform, PlatformFilter};
use serde_json::json;

use crate::args::{BuildArgs, GlobalArgs, MessageFormat, PkgOptions};
use crate::exit::{Classified, bad_input};

pub fn run(options: &PkgOptions, args: BuildArgs, global: &GlobalArgs) -> Result<()> {
    if options.hash_commit != "HEAD" {
        return Err(bad_input("cannot build from commit hash != HEAD"));
    }
    let (loader, dirs) = crate::pkg::load_packages(&args.dirs, options)?;
    let parse = |list: &[String]| -> Result<Vec<Platform>> {
        Ok(list
            .iter()
            .map(|p| Platform::parse(p))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let skip = parse(&args.skip_platforms)?;
    if let Some(p) = skip.iter().find(|p| p.os != "linux") {
        return Err(bad_input(format!(
            "--skip-platforms accepts only linux/*, not `{p}`"
        )));
    }
    let mut arg_files = Vec::new();
    for file in &args.build_arg_file {
        arg_files.extend(lkpkg_engine::build_args::read_arg_file(file, &loader)?);
    }
    let graph_options = GraphOptions {
        platforms: PlatformFilter {
            platforms: (!args.platforms.is_empty())
                .then(|| parse(&args.platforms))
                .transpose()?,
            skip,
        },
        arg_files,
        dockerfile: args.dockerfile.clone(),
    };
    let graph = BuildGraph::build(&loader, &dirs, &graph_options)?;
    for warning in &graph.warnings {
        if !global.quiet {
            eprintln!("warning: {warning}");
        }
    }
    let store = Arc::new(lkpkg_engine::store::Store::open(&global.cache_dir())?);
    let build_options = BuildOptions {
        force: args.force,
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        }),
        keep_going: args.keep_going,
        docker: args.docker,
        network: if options.network {
            Some(true)
        } else if options.nonetwork {
            Some(false)
        } else {
            None
        },
        disable_cache: if options.disable_cache {
            Some(true)
        } else if options.enable_cache {
            Some(false)
        } else {
            None
        },
        dry_run: args.dry_run,
    };
    let base = std::env::current_dir()?;
    let json_output = global.message_format == MessageFormat::Json;
    let quiet = global.quiet;
    let verbose = global.verbose >= 2;
    let events: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(move |event| {
        if json_output {
            println!("{}", event_json(&event));
        } else if !quiet {
            print_human(&event, verbose);
        }
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let graph = Arc::new(graph);
    let summary = runtime.block_on(build::build(
        graph,
        loader.workspace(),
        store,
        &build_options,
        &base,
        events,
    ));
    let summary = match summary {
        Ok(s) => s,
        Err(build::BuildError::Engine(e)) => {
            return Err(Classified {
                kind: ErrorKind::Environment,
                message: e.to_string(),
            }
            .into());
        }
        Err(e) => return Err(e.into()),
    };
    if !quiet && !json_output {
        eprintln!(
            "    Finished {} built, {} cached, {} failed, {} skipped",
            summary.built, summary.cached, summary.failed, summary.skipped
        );
    }
    if summary.failed > 0 {
        return Err(Classified {
            kind: ErrorKind::BuildFailed,
            message: format!("{} unit(s) failed to build", summary.failed),
        }
        .into());
    }
    Ok(())
}

fn print_human(event: &Event, verbose: bool) {
    match event {
        Event::Planned { units } if !units.is_empty() => {
            eprintln!(
                "    Planning {} unit(s) to build: {}",
                units.len(),
                units.join(", ")
            )
        }
        Event::Planned { .. } => {}
        Event::Started { unit } => eprintln!("    Building {unit}"),
        Event::Log { unit, line } if verbose => eprintln!("    [{unit}] {line}"),
        Event::Log { .. } => {}
        Event::Finished {
            unit,
            digest,
            duration,
        } => {
            eprintln!(
                "       Built {unit} {digest} in {:.1}s",
                duration.as_secs_f64()
            )
        }
        Event::Skipped { unit, reason } => eprintln!("     Skipped {unit}: {reason}"),
        Event::Failed {
            unit,
            error,
            log_tail,
        } => {
            eprintln!("      Failed {unit}: {error}");
            for line in log_tail {
                eprintln!("      | {line}");
            }
        }
        Event::Indexed { name, digest, .. } => eprintln!("     Indexed {name} {digest}"),
    }
}

/// One JSON Lines event (format version 1).
fn event_json(event: &Event) -> serde_json::Value {
    let (kind, mut data) = match event {
        Event::Planned { units } => ("planned", json!({ "units": units })),
        Event::Started { unit } => ("started", json!({ "unit": unit })),
        Event::Log { unit, line } => ("log", json!({ "unit": unit, "line": line })),
        Event::Finished {
            unit,
            digest,
            duration,
        } => (
            "finished",
            json!({ "unit": unit, "digest": digest, "duration_ms": duration.as_millis() as u64 }),
        ),
        Event::Skipped { unit, reason } => (
            "skipped",
            json!({ "unit": unit, "reason": reason.to_string() }),
        ),
        Event::Failed {
            unit,
            error,
            log_tail,
        } => (
            "failed",
            json!({ "unit": unit, "error": error, "log_tail": log_tail }),
        ),
        Event::Indexed {
            package,
            name,
            digest,
        } => (
            "indexed",
            json!({ "package": package, "name": name, "digest": digest }),
        ),
    };
    data["format_version"] = json!(1);
    data["type"] = json!(kind);
    data
}
