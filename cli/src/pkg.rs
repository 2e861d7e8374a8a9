//! `lkpkg pkg …`.

use std::path::PathBuf;

use anyhow::Result;
use lkpkg_engine::package::Loader;
use lkpkg_engine::tag::TagOptions;

use crate::args::{GlobalArgs, PkgCommand, PkgOptions, PkgSubcommand, ShowTagArgs};
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
            crate::registry_cmd::manifest(&registry, &full, args.release.as_deref(), &|line| {
                if !global.quiet {
                    crate::output::errln!("{line}");
                }
            })
        }
        PkgSubcommand::RemoteTag(args) => {
            let registry = crate::registry_cmd::client(global, &pkg.options.registry_creds)?;
            crate::registry_cmd::remote_tag(&registry, &args.from, &args.to, &|line| {
                if !global.quiet {
                    crate::output::errln!("{line}");
                }
            })
        }
    }
}

/// The canonical name (`docker.io/org/image:tag`) of the package in `dir`.
fn package_name(options: &PkgOptions, dir: &std::path::Path) -> Result<String> {
    let (loader, dirs) = load_packages(std::slice::from_ref(&dir.to_path_buf()), options)?;
    let package = loader.load(&dirs[0])?;
    Ok(package.tag.full_tag())
}

/// The command line's network and cache overrides (`--network`/`--nonetwork`,
/// `--disable-cache`/`--enable-cache`, with pflag values), as every command that decides
/// builds must see them: `pkg build`, `--dry-run` and `explain` alike.
pub fn network_and_cache(options: &PkgOptions) -> (Option<bool>, Option<bool>) {
    (
        options.network.or(options.nonetwork.map(|no| !no)),
        options
            .disable_cache
            .or(options.enable_cache.map(|enable| !enable)),
    )
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
    }
}

/// The loader and the package directories a command acts on: the ones given, or every
/// package below the current directory.
pub fn load_packages(dirs: &[PathBuf], options: &PkgOptions) -> Result<(Loader, Vec<PathBuf>)> {
    let cwd = std::env::current_dir()?;
    // Each package is read in its own repository; the current directory's names the records.
    let loader = Loader::new(&cwd, &options.build_yml, tag_options(options))?;
    let dirs = if dirs.is_empty() {
        let found = lkpkg_engine::discover::packages(
            &cwd,
            &options.build_yml,
            loader.workspaces(),
            &options.exclude,
        )?;
        if found.is_empty() {
            return Err(bad_input(format!(
                "no package (a directory with `{}`) below `{}`",
                options.build_yml,
                cwd.display()
            )));
        }
        found
    } else {
        dirs.to_vec()
    };
    Ok((loader, dirs))
}

fn show_tag(options: &PkgOptions, args: ShowTagArgs) -> Result<()> {
    let (loader, dirs) = load_packages(&args.dirs, options)?;
    let mut out = String::new();
    // Over the whole tree, every package that cannot be loaded is reported (and no tag
    // printed); packages named on the command line stop at the first, as in linuxkit.
    let whole_tree = args.dirs.is_empty();
    let mut failures = Vec::new();
    for dir in &dirs {
        let package = match loader.load(dir) {
            Ok(package) => package,
            Err(e) if whole_tree => {
                failures.push(e);
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let tag = if args.canonical {
            package.tag.full_tag()
        } else {
            package.tag.tag()
        };
        out.push_str(&tag);
        out.push('\n');
    }
    if !failures.is_empty() {
        return Err(lkpkg_engine::error::Error::Packages(failures).into());
    }
    use std::io::Write;
    std::io::stdout().lock().write_all(out.as_bytes())?;
    Ok(())
}

/// `--builder-mode` and the builder container, as the engine wants them.
pub fn builder_mode(
    args: &crate::args::BuilderContainerArgs,
) -> anyhow::Result<(
    lkpkg_engine::executor::container::BuilderMode,
    lkpkg_engine::executor::container::ContainerSpec,
)> {
    use crate::args::BuilderModeArg;
    use lkpkg_engine::executor::container::{BuilderMode, ContainerSpec};
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
