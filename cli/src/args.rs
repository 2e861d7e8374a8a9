//! The command line, with linuxkit's flag names.
//!
//! linuxkit's persistent flags (`--cache`, `-v`, `-q` at the root; `--org`, `--hash`, … on
//! `pkg`) are accepted before or after the subcommand, so they are `global` here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cache_cmd::CacheCommand;

/// A boolean flag's value as linuxkit's flag library (pflag, Go's `strconv.ParseBool`) reads
/// it: `--force`, `--force=true`, `--manifest=false`, `--x=1`, `--x=F`, …
pub fn go_bool(value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        other => Err(format!("invalid boolean `{other}` (true or false)")),
    }
}

/// The variables lkpkg reads, shown under `lkpkg --help` (those of one subcommand's flags are
/// shown with the flag, `[env: …]`). A test checks that every variable read is listed.
const ENVIRONMENT_HELP: &str = "\
Environment:
  LINUXKIT_CACHE          the cache directory (--cache wins)
  LINUXKIT_PKG_ORG        the org of the packages named, over build.yml's (--org wins)
  LINUXKIT_BUILDERS       builders per platform, as --builders (linux/arm64=CONTEXT,...)
  LINUXKIT_MIRROR         registry mirrors for pulls, as --mirror, comma-separated
  LKPKG_LOCK_TIMEOUT      seconds to wait for a cache lock held by another (600; 0: for ever)
  LKPKG_REGISTRY_TIMEOUT  seconds a registry may take to answer a request (120; 0: for ever)
  LKPKG_BUILDER_TIMEOUT   seconds a builder may take to answer lkpkg (30; 0: for ever)
  LKPKG_LOG               diagnostics filter, as tracing's (lkpkg_engine=debug)";

#[derive(Parser, Debug)]
#[command(
    name = "lkpkg",
    version,
    about = "Build LinuxKit packages: linuxkit-compatible tags and cache, parallel and incremental builds",
    propagate_version = true,
    after_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Args, Debug, Clone)]
pub struct GlobalArgs {
    /// The linuxkit cache directory [default: $LINUXKIT_CACHE, else ~/.linuxkit/cache]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Verbosity, 0 to 3 (linuxkit's -v)
    #[arg(short, long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u8).range(0..=3))]
    pub verbose: u8,
    /// Print nothing but errors and data
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// How to print events: human text, or JSON Lines
    #[arg(long, global = true, value_enum, default_value_t = MessageFormat::Human)]
    pub message_format: MessageFormat,
    /// Registry mirror for pulls, `<registry>=<url>` or `<url>` for every registry (repeatable;
    /// LINUXKIT_MIRROR is read first)
    #[arg(long, global = true, value_name = "MIRROR")]
    pub mirror: Vec<String>,
    /// Extra CA certificates (PEM) to trust for registries (repeatable)
    #[arg(long, global = true, value_name = "FILE")]
    pub cert_file: Vec<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageFormat {
    Human,
    Json,
}

impl GlobalArgs {
    /// `--cache`, then `LINUXKIT_CACHE`, then `$HOME/.linuxkit/cache`.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("LINUXKIT_CACHE").filter(|d| !d.is_empty()) {
            return dir.into();
        }
        let home = std::env::var_os("HOME").unwrap_or_default();
        PathBuf::from(home).join(".linuxkit").join("cache")
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Package commands: build, show-tag, push, …
    Pkg(Box<PkgCommand>),
    /// Inspect and manage the linuxkit cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print the build graph of packages
    Graph(GraphArgs),
    /// Show each unit's last build beside its current inputs, and why they differ
    Explain(ExplainArgs),
}

#[derive(Args, Debug)]
pub struct PkgCommand {
    #[command(flatten)]
    pub options: PkgOptions,
    #[command(subcommand)]
    pub command: PkgSubcommand,
}

/// linuxkit's `pkg` persistent flags.
#[derive(Args, Debug, Clone, Default)]
pub struct PkgOptions {
    /// Disable build cache
    #[arg(long, global = true, conflicts_with = "enable_cache", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub disable_cache: Option<bool>,
    /// Enable build cache
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub enable_cache: Option<bool>,
    /// Disallow network use during build
    #[arg(long, global = true, conflicts_with = "network", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub nonetwork: Option<bool>,
    /// Allow network use during build
    #[arg(long, global = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub network: Option<bool>,
    /// Override the hub org [env: LINUXKIT_PKG_ORG]
    #[arg(long, global = true)]
    pub org: Option<String>,
    /// Override the name of the yml file
    #[arg(long, global = true, default_value = "build.yml")]
    pub build_yml: String,
    /// Override the image hash (default is the git tree hash of the package)
    #[arg(long, global = true)]
    pub hash: Option<String>,
    /// Override the tag with a Go text/template over {{.Hash}}
    #[arg(long, global = true)]
    pub tag: Option<String>,
    /// Override the git commit to use for the hash
    #[arg(long, global = true, default_value = "HEAD")]
    pub hash_commit: String,
    /// Override the directory to use for the image hash (must be a prefix of the package path)
    #[arg(long, global = true)]
    pub hash_path: Option<PathBuf>,
    /// Force the package to be considered dirty
    #[arg(long, global = true, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub force_dirty: bool,
    /// Force org and hash to $USER and "dev" respectively
    #[arg(long, global = true, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub dev: bool,
    /// Leave directories matching this glob (relative to the current directory) out of
    /// package discovery; `.lkpkgignore` files in the repository do the same
    #[arg(long, global = true, value_name = "PATTERN")]
    pub exclude: Vec<String>,
    /// Registry credentials, `registry=user:pass` or `registry=token` (over the docker config)
    #[arg(long, global = true, value_delimiter = ',')]
    pub registry_creds: Vec<String>,
}

#[derive(Subcommand, Debug)]
pub enum PkgSubcommand {
    /// Build packages (all packages below the current directory when none is given)
    Build(BuildArgs),
    /// Show the tag of packages
    ShowTag(ShowTagArgs),
    /// Build and push packages (`pkg build --push`)
    Push(BuildArgs),
    /// Create and push the multi-arch index of a package from its `<tag>-<arch>` images in the
    /// registry
    #[command(alias = "index")]
    Manifest(ManifestArgs),
    /// Tag a remote image with another tag of its repository
    RemoteTag(RemoteTagArgs),
    /// Show and manage the builders
    #[command(subcommand)]
    Builder(BuilderCommand),
}

#[derive(Args, Debug)]
pub struct ShowTagArgs {
    /// Show the canonical name (`docker.io/org/image:tag`)
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub canonical: bool,
    /// Package directories; none means every package below the current directory
    pub dirs: Vec<PathBuf>,
}

#[derive(Args, Debug, Clone)]
pub struct BuildArgs {
    /// Force rebuild even if the image is in the cache
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub force: bool,
    /// Also load the host-architecture image into the Docker engine
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub docker: bool,
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Builders per platform, `platform=context,…` [env: LINUXKIT_BUILDERS]
    #[arg(long)]
    pub builders: Option<String>,
    #[command(flatten)]
    pub builder_container: BuilderContainerArgs,
    /// Progress output: auto, plain, tty
    #[arg(long, default_value = "auto")]
    pub progress: String,
    /// Forward an ssh agent to `RUN --mount=type=ssh`: `default` (SSH_AUTH_SOCK) or
    /// `ID=SOCKET` (repeatable)
    #[arg(long, value_name = "default|ID[=SOCKET]")]
    pub ssh: Vec<String>,
    /// Print what would be built, and why, without building
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub dry_run: bool,
    /// Number of units to build at once
    #[arg(short, long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Keep building what does not depend on a failed unit
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub keep_going: bool,
    #[command(flatten)]
    pub publish: PublishArgs,
    /// linuxkit's flags lkpkg has no counterpart for, refused (or accepted where they change
    /// nothing)
    #[command(flatten)]
    pub linuxkit_only: LinuxkitBuildFlags,
    /// Package directories; none means every package below the current directory
    pub dirs: Vec<PathBuf>,
}

/// What a command's plan is made of beyond the packages (`lkpkg_engine::ops::PlanConfig`):
/// the same flags, with the same meaning, on `pkg build`, `explain` and `graph`, so that
/// they see the same units with the same build keys.
#[derive(Args, Debug, Clone, Default)]
pub struct PlanArgs {
    /// Platforms to build, `os/arch,…` (replaces the package's arches)
    #[arg(long, value_delimiter = ',', conflicts_with = "skip_platforms")]
    pub platforms: Vec<String>,
    /// Platforms to skip, `linux/arch,…`
    #[arg(long, value_delimiter = ',')]
    pub skip_platforms: Vec<String>,
    /// Dockerfile to use, relative to the package (overrides build.yml)
    #[arg(long)]
    pub dockerfile: Option<String>,
    /// Files of build arguments, one KEY=VALUE per line; they override build.yml's
    #[arg(long)]
    pub build_arg_file: Vec<PathBuf>,
    /// Base images that are not packages of the build come from their registries, not from
    /// the cache (in-repo dependencies still come from the cache)
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub ignore_cached: bool,
}

/// The registry side of `pkg build`, with linuxkit's names.
#[derive(Args, Debug, Clone, Default)]
pub struct PublishArgs {
    /// Pull a unit missing from the cache from the registry rather than build it (what lkpkg
    /// does by default too)
    #[arg(long, conflicts_with = "force", action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub pull: bool,
    /// After building, push the images, the multi-arch index and the build records
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub push: bool,
    /// With --push: push what the cache holds, build nothing
    #[arg(long, conflicts_with = "force", action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub nobuild: bool,
    /// With --push: also push the image as `org/image:RELEASE`
    #[arg(long, value_name = "RELEASE")]
    pub release: Option<String>,
    /// With --push: also push the `<tag>-<arch>` tags
    #[arg(long, action = clap::ArgAction::Set, default_value_t = true, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub manifest: bool,
}

/// Flags of linuxkit's `pkg build` that lkpkg has no counterpart for. They are parsed so
/// that a linuxkit user's command line gets a reason and a way on, not "unexpected argument"
/// ([`LinuxkitBuildFlags::refusal`]).
#[derive(Args, Debug, Clone, Default)]
pub struct LinuxkitBuildFlags {
    #[arg(long, hide = true, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub precache_images: bool,
    #[arg(long, hide = true)]
    pub sbom_scanner: Option<String>,
}

impl LinuxkitBuildFlags {
    /// Why the flags given cannot be honoured, if one cannot.
    pub fn refusal(&self) -> Option<String> {
        if self.precache_images {
            return Some(
                "--precache-images: lkpkg already resolves in-repo images from the cache; \
                 other base images come through the builder (`lkpkg cache pull` fetches an \
                 image into the cache)"
                    .into(),
            );
        }
        match self.sbom_scanner.as_deref() {
            // lkpkg attaches no SBOM: asking for none is what it does.
            None | Some("false") => None,
            Some(scanner) => Some(format!(
                "--sbom-scanner={scanner}: lkpkg attaches no SBOM attestations; \
                 use --sbom-scanner=false (what lkpkg does), or build with linuxkit"
            )),
        }
    }
}

#[derive(Args, Debug)]
pub struct ManifestArgs {
    /// Release version to also index
    #[arg(long)]
    pub release: Option<String>,
    pub dir: PathBuf,
}

#[derive(Args, Debug)]
pub struct RemoteTagArgs {
    /// Release version to also tag
    #[arg(long)]
    pub release: Option<String>,
    pub from: String,
    pub to: String,
}

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Show the builder chosen for each platform, and whether it answers
    Ls(BuilderArgs),
    /// Remove what lkpkg left in the builders' engines
    Prune(BuilderArgs),
    /// linuxkit's builder disk usage (refused: see the message)
    Du(BuilderArgs),
}

/// Which BuildKit builds, and linuxkit's `linuxkit-builder` container.
#[derive(Args, Debug, Clone, Default)]
pub struct BuilderContainerArgs {
    /// Which BuildKit builds on each engine: the engine's own when it can export images, else
    /// an existing builder container (auto); the engine's own only (engine); the builder
    /// container, created privileged as linuxkit creates it (container)
    #[arg(long, value_enum, default_value_t = BuilderModeArg::Auto)]
    pub builder_mode: BuilderModeArg,
    /// The builder container's name
    #[arg(
        long,
        value_name = "NAME",
        env = "LINUXKIT_BUILDER_NAME",
        default_value = "linuxkit-builder"
    )]
    pub builder_name: String,
    /// The builder container's image
    #[arg(
        long,
        value_name = "IMAGE",
        env = "LINUXKIT_BUILDER_IMAGE",
        default_value = "moby/buildkit:v0.26.3"
    )]
    pub builder_image: String,
    /// A buildkitd.toml for the builder container
    #[arg(long, value_name = "FILE", env = "LINUXKIT_BUILDER_CONFIG")]
    pub builder_config: Option<PathBuf>,
    /// Recreate the builder container
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub builder_restart: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BuilderModeArg {
    #[default]
    Auto,
    Engine,
    Container,
}

#[derive(Args, Debug)]
pub struct BuilderArgs {
    /// Builders per platform, `platform=context,…` [env: LINUXKIT_BUILDERS]
    #[arg(long)]
    pub builders: Option<String>,
    /// Platforms whose builders to act on [default: linux/amd64,linux/arm64,linux/riscv64]
    #[arg(long, value_delimiter = ',')]
    pub platforms: Vec<String>,
    /// linuxkit's builder-container flags (refused with the reason: lkpkg's `builder` commands
    /// act on the engines' own BuildKit)
    #[arg(long, hide = true)]
    pub builder_name: Option<String>,
    #[arg(long, hide = true)]
    pub builder_image: Option<String>,
    #[arg(long, hide = true)]
    pub builder_config: Option<PathBuf>,
    /// prune: list what would be removed, remove nothing
    #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
    pub dry_run: bool,
}

#[derive(Args, Debug)]
pub struct GraphArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
    pub format: GraphFormat,
    /// The platforms, Dockerfile and build arguments, as for `pkg build`
    #[command(flatten)]
    pub plan: PlanArgs,
    /// linuxkit's `pkg` options that change tags
    #[command(flatten)]
    pub options: PkgOptions,
    /// Package directories; none means every package below the current directory
    pub dirs: Vec<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    Text,
    Dot,
    Json,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// linuxkit's `pkg` options that change tags
    #[command(flatten)]
    pub options: PkgOptions,
    /// The platforms, Dockerfile, build arguments and `--ignore-cached`, as for `pkg build`
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Package directories; none means every package below the current directory
    pub dirs: Vec<std::path::PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("lkpkg").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    /// linuxkit's flags are pflag's: `--flag=false` and `--flag=true` as well as `--flag`.
    #[test]
    fn boolean_flags_take_pflag_values() {
        let cli = parse(&[
            "pkg",
            "--dev=false",
            "build",
            "--force=false",
            "--docker",
            "--enable-cache=false",
            "--network=true",
            "pkg/a",
        ]);
        let Command::Pkg(pkg) = cli.command else {
            panic!("not pkg")
        };
        let PkgSubcommand::Build(build) = pkg.command else {
            panic!("not build")
        };
        assert!(!build.force && build.docker && !pkg.options.dev);
        assert_eq!(pkg.options.enable_cache, Some(false));
        assert_eq!(pkg.options.network, Some(true));
        assert_eq!(build.dirs, [PathBuf::from("pkg/a")]);
        // A value needs `=`: a bare word after the flag is an argument.
        let cli = parse(&["pkg", "show-tag", "--canonical", "pkg/a"]);
        let Command::Pkg(pkg) = cli.command else {
            panic!("not pkg")
        };
        let PkgSubcommand::ShowTag(show) = pkg.command else {
            panic!("not show-tag")
        };
        assert!(show.canonical);
        assert_eq!(show.dirs, [PathBuf::from("pkg/a")]);
        for bad in ["--force=maybe", "--force=yes"] {
            assert!(
                Cli::try_parse_from(["lkpkg", "pkg", "build", bad]).is_err(),
                "{bad}"
            );
        }
        assert!(
            parse(&["cache", "verify", "--repair=0"])
                .global
                .cache
                .is_none()
        );
    }

    /// `docs/linuxkit-compat.md` lists linuxkit's flags with lkpkg's status, per command: the
    /// list must agree with the parser both ways.
    #[test]
    fn the_flag_list_matches_the_parser() {
        use clap::CommandFactory;
        let doc = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/linuxkit-compat.md"),
        )
        .unwrap();
        let mut root = Cli::command();
        root.build();
        let mut sections = 0;
        let mut failures = Vec::new();
        for section in doc.split("\n### `lkpkg ").skip(1) {
            sections += 1;
            let (path, body) = section.split_once('`').unwrap();
            let mut command = &root;
            for name in path.split(' ') {
                command = command
                    .find_subcommand(name)
                    .unwrap_or_else(|| panic!("no command `{path}`"));
            }
            let parser: std::collections::BTreeSet<String> = command
                .get_arguments()
                .filter_map(|a| a.get_long())
                .filter(|l| !["help", "version"].contains(l))
                .map(|l| format!("--{l}"))
                .collect();
            let mut listed = std::collections::BTreeSet::new();
            for row in body.lines().take_while(|l| !l.starts_with("## ")) {
                let cells: Vec<&str> = row.split(" | ").collect();
                let Some(flag) = cells.first().and_then(|c| c.strip_prefix("| `")) else {
                    continue;
                };
                let flag = flag.trim_end_matches('`').to_owned();
                let missing = cells.last().is_some_and(|c| c.starts_with("missing"));
                if missing == parser.contains(&flag) {
                    failures.push(format!(
                        "`{path}` {flag}: the list says {}, the parser {}",
                        if missing { "missing" } else { "present" },
                        if missing { "has it" } else { "does not" }
                    ));
                }
                listed.insert(flag);
            }
            for flag in parser.difference(&listed) {
                failures.push(format!("`{path}` {flag}: not in docs/linuxkit-compat.md"));
            }
        }
        assert!(sections >= 5, "{sections} command sections");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }
}

#[cfg(test)]
mod environment_help_tests {
    /// Every `LKPKG_…` or `LINUXKIT_…` variable the binary or the engine's environment reads
    /// in a `var(…)`/`var_os(…)`/`wait(…)` call is listed in `lkpkg --help` (a variable of a
    /// flag, `env = …`, is shown with its flag instead).
    #[test]
    fn help_lists_every_variable_read() {
        let sources = [
            include_str!("args.rs"),
            include_str!("pkg.rs"),
            include_str!("registry_cmd.rs"),
            include_str!("waits.rs"),
            include_str!("diagnostics.rs"),
            include_str!("../../engine/src/ops/environment.rs"),
        ];
        let mut read = Vec::new();
        for source in sources {
            for call in ["var(\"", "var_os(\"", "wait(\""] {
                for (at, _) in source.match_indices(call) {
                    let name: String = source[at + call.len()..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    if name.starts_with("LKPKG_") || name.starts_with("LINUXKIT_") {
                        read.push(name);
                    }
                }
            }
        }
        assert!(read.len() >= 8, "{read:?}");
        for name in read {
            assert!(
                super::ENVIRONMENT_HELP.contains(&format!("  {name} ")),
                "{name} is read but not in --help"
            );
        }
    }
}
