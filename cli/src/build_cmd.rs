//! `lkpkg pkg build`: load the graph, build what needs it, print events.
//!
//! Human output is one line per event on stderr, cargo-style:
//! `    Building base/amd64: rebuilt: file Dockerfile changed`, `       Fresh app/amd64: fresh`,
//! `       Built base/amd64 sha256:… in 2.1s`. `--dry-run` prints the plan (`Would build …`)
//! and builds nothing.
//!
//! `--message-format json` prints JSON Lines on stdout, one [`BuildEvent`] per line
//! (`docs/json.md`, with its schema).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use lkpkg_engine::ops::ErrorKind;
use lkpkg_engine::ops::Event;
use lkpkg_engine::ops::{BuildConfig, BuilderChoice};

use crate::args::{BuildArgs, GlobalArgs, MessageFormat, PkgOptions};
use crate::exit::{Classified, bad_input};
use crate::json::{BuildEvent, Versioned};

pub fn run(options: &PkgOptions, args: BuildArgs, global: &GlobalArgs) -> Result<()> {
    if let Some(refusal) = args.linuxkit_only.refusal() {
        return Err(bad_input(refusal));
    }
    let publish = &args.publish;
    if publish.nobuild && !publish.push {
        return Err(bad_input(
            "--nobuild skips the build before a push: use it with --push",
        ));
    }
    let (builder_mode, builder_container) = crate::pkg::builder_mode(&args.builder_container)?;
    if options.hash_commit != "HEAD" {
        return Err(bad_input("cannot build from commit hash != HEAD"));
    }
    let plan = crate::pkg::plan(&args.dirs, options, &args.plan, args.keep_going)?;
    // With --keep-going, what cannot be loaded is reported now and fails the run at the end.
    for failure in plan.load_failures() {
        crate::output::errln!("error: {failure}");
    }
    let load_failures = plan.load_failures().len();
    for warning in plan.warnings() {
        if !global.quiet {
            crate::output::errln!("warning: {warning}");
        }
    }
    let store = Arc::new(crate::output::open_store(&global.cache_dir())?);
    // The registry: asked before units build (by shared build record, then by tag), and
    // pushed to with --push. A client that cannot be made (a malformed docker config, a bad
    // certificate file) fails a push; a build goes on without registry lookups, and says so.
    let registry = match crate::registry_cmd::client(global, &options.registry_creds) {
        Ok(registry) => Some(registry),
        Err(e) if !publish.push => {
            if !global.quiet {
                crate::output::errln!(
                    "warning: not looking in registries for published images: {e}"
                );
            }
            None
        }
        Err(e) => return Err(e),
    };
    if publish.nobuild {
        let registry = registry.expect("a push has a registry client");
        return Ok(lkpkg_engine::ops::registry::publish(
            &store,
            &registry,
            &plan,
            &[],
            &publish_options(publish),
            &|line| say(global, line),
        )?);
    }
    let json_output = global.message_format == MessageFormat::Json;
    let quiet = global.quiet;
    let verbose = global.verbose >= 2;
    if !["auto", "plain", "tty"].contains(&args.progress.as_str()) {
        return Err(bad_input(format!(
            "--progress `{}`: expected auto, plain or tty",
            args.progress
        )));
    }
    // Diagnostics (`-v 2` and up) are lines among the events: no live view to redraw.
    let live =
        (!json_output && !quiet && global.verbose < 2 && crate::progress::live(&args.progress))
            .then(|| Arc::new(crate::progress::LiveView::default()));
    // Build steps and their output: with `--progress plain`, and with `auto` when stderr is
    // not a terminal (a CI log shows what ran), as linuxkit and buildx print them.
    let verbose = verbose || (live.is_none() && args.progress != "tty");
    let view = live.clone();
    let events: Arc<dyn Fn(Event) + Send + Sync> = Arc::new(move |event| {
        if json_output {
            crate::output::outln!("{}", Versioned::new(BuildEvent::from(&event)).line());
        } else if quiet {
        } else if let Some(view) = &view {
            let line = human_line(&event, verbose);
            let (started, ended) = match &event {
                Event::Started { unit, .. } => (Some(unit.as_str()), None),
                Event::Finished { unit, .. } | Event::Failed { unit, .. } => {
                    (None, Some(unit.as_str()))
                }
                _ => (None, None),
            };
            view.print(line.as_deref(), started, ended);
        } else if let Some(line) = human_line(&event, verbose) {
            crate::output::errln!("{line}");
        }
    });
    let config = BuildConfig {
        force: args.force,
        jobs: args.jobs.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .max(2)
        }),
        docker: args.docker,
        dry_run: args.dry_run,
        epoch: epoch()?,
        // `--builders` over `LINUXKIT_BUILDERS` (the engine reads the variable itself, to say
        // which one chose a builder).
        builders: BuilderChoice {
            builders: args.builders.clone(),
            mode: builder_mode,
            container: builder_container,
        },
        registry: registry.clone(),
        ssh_agents: ssh_agents(&args.ssh)?,
        environment: lkpkg_engine::ops::Environment::from_process(),
    };
    let summary = lkpkg_engine::ops::build(&plan, store.clone(), config, events);
    if let Some(view) = &live {
        view.finish();
    }
    let summary = summary?;
    if !quiet && !json_output {
        let pulled = if summary.pulled > 0 {
            format!("{} pulled, ", summary.pulled)
        } else {
            String::new()
        };
        crate::output::errln!(
            "    Finished {} {}, {pulled}{} fresh, {} failed, {} skipped",
            summary.built,
            if args.dry_run { "to build" } else { "built" },
            summary.fresh,
            summary.failed,
            summary.skipped
        );
    }
    if summary.failed > 0 {
        return Err(Classified {
            kind: ErrorKind::BuildFailed,
            message: format!("{} unit(s) failed to build", summary.failed),
        }
        .into());
    }
    if load_failures > 0 {
        return Err(bad_input(format!(
            "{load_failures} package(s) could not be loaded (above); the others were built"
        )));
    }
    if publish.push && !args.dry_run {
        let registry = registry.expect("a push has a registry client");
        lkpkg_engine::ops::registry::publish(
            &store,
            &registry,
            &plan,
            &summary.units,
            &publish_options(publish),
            &|line| say(global, line),
        )?;
    }
    Ok(())
}

fn publish_options(publish: &crate::args::PublishArgs) -> lkpkg_engine::ops::registry::Publish {
    lkpkg_engine::ops::registry::Publish {
        arch_tags: publish.manifest,
        release: publish.release.clone(),
    }
}

/// A line of the registry steps, on stderr unless `-q`.
fn say(global: &GlobalArgs, line: String) {
    if !global.quiet {
        crate::output::errln!("{line}");
    }
}

/// `--ssh` values as agents by id: `default` is `SSH_AUTH_SOCK`, `ID=SOCKET` a socket path
/// (a key file is refused: lkpkg forwards agents, never keys).
fn ssh_agents(values: &[String]) -> Result<std::collections::BTreeMap<String, PathBuf>> {
    let mut agents = std::collections::BTreeMap::new();
    for value in values {
        let (id, path) = match value.split_once('=') {
            Some((id, path)) => (id.trim(), PathBuf::from(path.trim())),
            None => {
                let socket = std::env::var_os("SSH_AUTH_SOCK")
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        bad_input(format!(
                            "--ssh {value}: SSH_AUTH_SOCK is not set (start an ssh agent, or \
                             give its socket: --ssh {value}=SOCKET)"
                        ))
                    })?;
                (value.trim(), PathBuf::from(socket))
            }
        };
        if id.is_empty() || id.contains(',') {
            return Err(bad_input(format!(
                "--ssh `{value}`: expected default or ID[=SOCKET]"
            )));
        }
        let is_socket = std::fs::metadata(&path)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false);
        if !is_socket {
            return Err(bad_input(format!(
                "--ssh {id}: `{}` is not an ssh agent socket (lkpkg forwards agents, not key \
                 files: `ssh-add` the key to an agent and pass its socket)",
                path.display()
            )));
        }
        agents.insert(id.to_owned(), path);
    }
    Ok(agents)
}

/// The time stamped into outputs: `SOURCE_DATE_EPOCH`, else 0 (see
/// `lkpkg_engine::schedule::BuildOptions::epoch` for why not a commit time).
fn epoch() -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.trim().is_empty() => text.trim().parse().map_err(|_| {
            bad_input(format!(
                "SOURCE_DATE_EPOCH `{text}` is not a number of seconds"
            ))
        }),
        _ => Ok(0),
    }
}

/// The line an event prints in human output, if any.
fn human_line(event: &Event, verbose: bool) -> Option<String> {
    Some(match event {
        Event::Fresh { unit, reason, .. } => format!("       Fresh {unit}: {reason}"),
        Event::WouldBuild { unit, reason } => format!(" Would build {unit}: {reason}"),
        Event::Started { unit, reason, .. } => format!("    Building {unit}: {reason}"),
        Event::Log { unit, line } if verbose => format!("    [{unit}] {line}"),
        Event::Log { .. } => return None,
        Event::Waiting { unit, reason } => format!("     Waiting {unit}: {reason}"),
        Event::Pulled { unit, digest, how } => format!("      Pulled {unit} {digest}: {how}"),
        Event::RegistryUnavailable { message } => format!("warning: {message}"),
        Event::Unreproducible {
            unit,
            recorded,
            built,
        } => format!(
            "warning: {unit} is not reproducible: its inputs built {recorded} before and \
             {built} now; its build record is not shared by --push"
        ),
        Event::Finished {
            unit,
            digest,
            duration,
        } => format!(
            "       Built {unit} {digest} in {:.1}s",
            duration.as_secs_f64()
        ),
        Event::Skipped { unit, reason } => format!("     Skipped {unit}: {reason}"),
        Event::Failed {
            unit,
            error,
            log_tail,
        } => {
            let mut text = format!("      Failed {unit}: {error}");
            for line in log_tail {
                text.push_str(&format!("\n      | {line}"));
            }
            text
        }
        Event::Indexed { name, digest, .. } => format!("     Indexed {name} {digest}"),
        Event::IndexKept { name, reason, .. } => format!("  Kept index {name}: {reason}"),
    })
}
