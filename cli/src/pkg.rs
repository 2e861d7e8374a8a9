//! `lkpkg pkg …`.

use std::path::PathBuf;

use anyhow::Result;
use lkpkg_engine::ops::TagOptions;
use lkpkg_engine::ops::graph::Platform;
use lkpkg_engine::ops::{KeyOptions, Packages, Plan, PlanConfig, Selection};

use crate::args::{GlobalArgs, PkgCommand, PkgOptions, PkgSubcommand, PlanArgs, ShowTagArgs};
use crate::exit::bad_input;

pub fn run(pkg: PkgCommand, global: &GlobalArgs) -> Result<()> {
    match pkg.command {
        PkgSubcommand::ShowTag(args) => show_tag(&pkg.options, args),
        PkgSubcommand::Build(args) => crate::build_cmd::run(&pkg.options, args, global),
        PkgSubcommand::Builder(command) => crate::builder_cmd::run(command, global),
        PkgSubcommand::Push(mut args) => {
            // linuxkit's deprecated alias of `pkg build --push`.
            args.publish.push = true;
            crate::build_cmd::run(&pkg.options, args, global)
        }
        PkgSubcommand::Manifest(args) => {
            let full = package_name(&pkg.options, &args.dir)?;
            let registry = crate::registry_cmd::client(global, &pkg.options.registry_creds)?;
            Ok(lkpkg_engine::ops::registry::push_manifest(
                &registry,
                &full,
                args.release.as_deref(),
                &|line| {
                    if !global.quiet {
                        crate::output::errln!("{line}");
                    }
                },
            )?)
        }
        PkgSubcommand::RemoteTag(args) => {
            let registry = crate::registry_cmd::client(global, &pkg.options.registry_creds)?;
            Ok(lkpkg_engine::ops::registry::remote_tag(
                &registry,
                &args.from,
                &args.to,
                &|line| {
                    if !global.quiet {
                        crate::output::errln!("{line}");
                    }
                },
            )?)
        }
    }
}

/// The canonical name (`docker.io/org/image:tag`) of the package in `dir`.
fn package_name(options: &PkgOptions, dir: &std::path::Path) -> Result<String> {
    Ok(packages(std::slice::from_ref(&dir.to_path_buf()), options)?.canonical_name_of_first()?)
}

/// The command line's key options: `--network`/`--nonetwork`, `--disable-cache`/
/// `--enable-cache` (with pflag values) and `--ignore-cached`, as every command that decides
/// builds must see them.
fn key_options(options: &PkgOptions, plan: &PlanArgs) -> KeyOptions {
    KeyOptions {
        network: options.network.or(options.nonetwork.map(|no| !no)),
        disable_cache: options
            .disable_cache
            .or(options.enable_cache.map(|enable| !enable)),
        ignore_cached: plan.ignore_cached,
    }
}

/// The tag options the `pkg` flags give (`--org` over `LINUXKIT_PKG_ORG`).
pub fn tag_options(options: &PkgOptions) -> TagOptions {
    TagOptions {
        org: options.org.clone().or_else(|| {
            std::env::var("LINUXKIT_PKG_ORG")
                .ok()
                .filter(|o| !o.is_empty())
        }),
        hash: options.hash.clone(),
        // linuxkit treats `--tag ''` as not given: build.yml's template stays.
        tag_template: options.tag.clone().filter(|t| !t.is_empty()),
        hash_commit: options.hash_commit.clone(),
        hash_path: options.hash_path.clone(),
        force_dirty: options.force_dirty,
        dev: options.dev,
        user: std::env::var("USER").ok(),
    }
}

/// The packages a command acts on: the ones given, or every package below the current
/// directory.
pub fn packages(dirs: &[PathBuf], options: &PkgOptions) -> Result<Packages> {
    Ok(Packages::find(&Selection {
        cwd: std::env::current_dir()?,
        dirs: dirs.to_vec(),
        build_yml: options.build_yml.clone(),
        tags: tag_options(options),
        exclude: options.exclude.clone(),
    })?)
}

/// The plan of `pkg build`, `explain` and `graph`: the same flags make the same plan.
pub fn plan(
    dirs: &[PathBuf],
    options: &PkgOptions,
    args: &PlanArgs,
    keep_going: bool,
) -> Result<Plan> {
    let packages = packages(dirs, options)?;
    let parse = |list: &[String]| -> Result<Vec<Platform>> {
        Ok(list
            .iter()
            .map(|p| Platform::parse(p))
            .collect::<Result<Vec<_>, _>>()?)
    };
    let config = PlanConfig {
        arg_files: args.build_arg_file.clone(),
        platforms: (!args.platforms.is_empty())
            .then(|| parse(&args.platforms))
            .transpose()?,
        skip_platforms: parse(&args.skip_platforms)?,
        dockerfile: args.dockerfile.clone(),
        keep_going,
        key: key_options(options, args),
    };
    Ok(Plan::new(packages, &config)?)
}

fn show_tag(options: &PkgOptions, args: ShowTagArgs) -> Result<()> {
    let packages = packages(&args.dirs, options)?;
    let mut out = String::new();
    for tag in lkpkg_engine::ops::show_tags(&packages, args.canonical)? {
        out.push_str(&tag);
        out.push('\n');
    }
    crate::output::out(&out);
    Ok(())
}

/// `--builder-mode` and the builder container, as the engine wants them.
pub fn builder_mode(
    args: &crate::args::BuilderContainerArgs,
) -> anyhow::Result<(
    lkpkg_engine::ops::builders::BuilderMode,
    lkpkg_engine::ops::builders::ContainerSpec,
)> {
    use crate::args::BuilderModeArg;
    use lkpkg_engine::ops::builders::{BuilderMode, ContainerSpec};
    if let Some(config) = &args.builder_config
        && !config.is_file()
    {
        return Err(bad_input(format!(
            "--builder-config `{}`: no such file",
            config.display()
        )));
    }
    let mode = match args.builder_mode {
        BuilderModeArg::Auto => BuilderMode::Auto,
        BuilderModeArg::Engine => BuilderMode::Engine,
        BuilderModeArg::Container => BuilderMode::Container,
    };
    Ok((
        mode,
        ContainerSpec {
            name: args.builder_name.clone(),
            image: args.builder_image.clone(),
            config: args.builder_config.clone(),
            restart: args.builder_restart,
        },
    ))
}
