//! `lkpkg pkg builder ls|prune`: the builders chosen per platform, and cleaning up after lkpkg
//! in their engines.
//!
//! `ls` prints one block per platform on stdout: the platform, the context (or endpoint) chosen,
//! the endpoint, the engine's version, API version and architecture (and whether the platform
//! builds natively or under emulation there) or why it does not answer, then why that builder
//! was chosen. With `--message-format json`, one [`crate::json::BuilderLine`] per platform
//! per line (`docs/json.md`).
//!
//! `prune` removes, from each distinct engine of the platforms, the image names that are also
//! names in the lkpkg cache (`lkpkg_engine::ops::builders::prune_engines` says why that is exactly what
//! lkpkg left, and safe); it prints each removed name on stdout.

use std::collections::HashSet;

use crate::json::{self, Versioned};
use anyhow::Result;
use lkpkg_engine::ops::ErrorKind;
use lkpkg_engine::ops::builders::{self, BuilderSpec, Builders};
use lkpkg_engine::ops::graph::Platform;

use crate::args::{BuilderArgs, BuilderCommand, GlobalArgs, MessageFormat};
use crate::exit::Classified;

/// The platforms shown when `--platforms` is not given: build.yml's default arches.
const DEFAULT_ARCHES: [&str; 3] = ["amd64", "arm64", "riscv64"];

pub fn run(command: BuilderCommand, global: &GlobalArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let args = match &command {
        BuilderCommand::Ls(a) | BuilderCommand::Prune(a) | BuilderCommand::Du(a) => a,
    };
    if args.builder_name.is_some() || args.builder_image.is_some() || args.builder_config.is_some()
    {
        return Err(crate::exit::bad_input(
            "--builder-name, --builder-image and --builder-config: lkpkg's `pkg builder` \
             commands act on the engines' own BuildKit and what lkpkg left there; for the \
             linuxkit-builder container use `linuxkit pkg builder`",
        ));
    }
    match command {
        BuilderCommand::Ls(args) => runtime.block_on(ls(args, global)),
        BuilderCommand::Prune(args) => runtime.block_on(prune(args, global)),
        BuilderCommand::Du(_) => Err(crate::exit::bad_input(
            "pkg builder du: lkpkg builds with the engines' own BuildKit, whose cache \
             `docker buildx du` (or `docker system df`) shows; for the linuxkit-builder \
             container use `linuxkit pkg builder du`",
        )),
    }
}

/// `--builders` (over `LINUXKIT_BUILDERS`) and the platforms.
fn builders_and_platforms(args: &BuilderArgs) -> Result<(Builders, Vec<Platform>)> {
    let environment = lkpkg_engine::ops::Environment::from_process();
    let builders = Builders::new(
        BuilderSpec {
            builders: args.builders.clone(),
            per_builder_limit: 1,
        },
        environment.linuxkit_builders.as_deref(),
        environment.docker,
    );
    builders.check()?;
    let platforms = if args.platforms.is_empty() {
        DEFAULT_ARCHES.iter().map(|a| Platform::linux(a)).collect()
    } else {
        args.platforms
            .iter()
            .map(|p| Platform::parse(p))
            .collect::<Result<Vec<_>, _>>()?
    };
    Ok((builders, platforms))
}

async fn ls(args: BuilderArgs, global: &GlobalArgs) -> Result<()> {
    let (builders, platforms) = builders_and_platforms(&args)?;
    let statuses = builders.status(&platforms).await?;
    let json_output = global.message_format == MessageFormat::Json;
    let mut out = String::new();
    for status in &statuses {
        let selection = &status.selection;
        let native = status
            .engine
            .as_ref()
            .ok()
            .map(|e| e.arch == status.platform.arch);
        if json_output {
            let engine = status.engine.as_ref();
            let line = Versioned::new(json::BuilderLine {
                kind: json::BuilderLineType::Builder,
                platform: status.platform.to_string(),
                context: selection.context.clone(),
                endpoint: selection.endpoint.host.clone(),
                reason: selection.reason.to_string(),
                answers: engine.is_ok(),
                engine_version: engine.ok().map(|e| e.version.clone()),
                api_version: engine.ok().map(|e| e.api_version.clone()),
                arch: engine.ok().map(|e| e.arch.clone()),
                native,
                error: engine.err().map(ToString::to_string),
            });
            out.push_str(&line.line());
            out.push('\n');
            continue;
        }
        out.push_str(&format!(
            "{}\n    builder:  {}\n    endpoint: {}\n",
            status.platform, selection.context, selection.endpoint.host
        ));
        match &status.engine {
            Ok(engine) => out.push_str(&format!(
                "    engine:   {} (API {}), {}, {}\n",
                engine.version,
                engine.api_version,
                engine.arch,
                if native == Some(true) {
                    "native"
                } else {
                    "emulated (qemu)"
                }
            )),
            Err(e) => out.push_str(&format!("    engine:   does not answer: {e}\n")),
        }
        out.push_str(&format!("    chosen:   {}\n", selection.reason));
    }
    crate::output::out(&out);
    Ok(())
}

async fn prune(args: BuilderArgs, global: &GlobalArgs) -> Result<()> {
    let (builders, platforms) = builders_and_platforms(&args)?;
    let store = crate::output::open_store(&global.cache_dir())?;
    let cache_names: HashSet<String> = store.names()?.into_iter().map(|(n, _)| n).collect();
    let mut failed = 0usize;
    for engine in builders::prune_engines(&builders, &platforms, &cache_names, args.dry_run).await?
    {
        let endpoint = engine.endpoint;
        for item in engine.pruned {
            match item.result {
                Ok(()) => crate::output::outln!("{}\t{}", endpoint, item.name),
                Err(e) => {
                    failed += 1;
                    crate::output::errln!("warning: cannot remove `{}`: {e}", item.name);
                }
            }
        }
        if !global.quiet && args.dry_run {
            crate::output::errln!("(dry run: nothing was removed from `{endpoint}`)");
        }
    }
    if failed > 0 {
        return Err(Classified {
            kind: ErrorKind::Environment,
            message: format!("{failed} name(s) could not be removed"),
        }
        .into());
    }
    Ok(())
}
