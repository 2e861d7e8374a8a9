//! `lkpkg cache …`: the linuxkit cache commands, with linuxkit's flag names, over
//! [`lkpkg_engine::ops::cache::Store`].
//!
//! stdout carries data (`ls` lines, JSON, export streams); stderr carries messages for people
//! (silenced by `-q`). `--json` output is one JSON document of [`crate::json`]'s types, with
//! its `format_version` (`docs/json.md`).

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use lkpkg_cache_format::digest::Digest;
use lkpkg_cache_format::layout::{self, Descriptor, Platform};
use lkpkg_engine::ops::cache::{ExportFormat, GcOptions, Store, StoreError};

use crate::json::{self, Versioned};

#[derive(clap::Subcommand, Debug)]
pub enum CacheCommand {
    /// List images in the linuxkit cache
    Ls {
        /// Print a JSON array instead of linuxkit's columns
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        json: bool,
    },
    /// Show an image: index → per-platform manifests → config and layers
    Inspect {
        /// The image name (as stored, or expanded like `org/img:tag`)
        reference: String,
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        json: bool,
    },
    /// Remove images from the cache (blobs only when no other name reaches them)
    Rm {
        /// Image names
        #[arg(required = true)]
        names: Vec<String>,
        /// Only remove the names a registry serves with the same digest (asked anonymously)
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        published_only: bool,
    },
    /// Empty the cache
    Clean {
        /// Only remove the names a registry serves with the same digest (asked anonymously)
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        published_only: bool,
    },
    /// Remove blobs no name reaches; optionally trim least recently used names to a size
    Gc {
        /// Keep names used, and unreachable blobs written, within this long (e.g. `24h`)
        #[arg(long, value_name = "DURATION")]
        keep_duration: Option<String>,
        /// Trim least recently used names until the cache fits (e.g. `10GB`, `512MiB`)
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
    },
    /// Space used per image, unique and shared with other images
    Du {
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        json: bool,
    },
    /// Check every blob's digest, every image's blobs, and the index against index.json
    Verify {
        /// Restore agreement (quarantine corrupt blobs, rebuild the index) without removing names
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        repair: bool,
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        json: bool,
    },
    /// Export an image from the cache
    Export {
        /// The image name
        reference: String,
        /// Output format: oci, docker or filesystem
        #[arg(long, default_value = "oci")]
        format: String,
        /// Platform (os/arch[/variant]) for docker and filesystem formats
        #[arg(long, default_value_t = default_platform())]
        platform: String,
        /// Output file, `-` for stdout
        #[arg(short = 'o', long = "outfile", required = true)]
        outfile: String,
        /// Name to give the image in the exported archive
        #[arg(long)]
        name: Option<String>,
    },
    /// Import an OCI layout tar or a `docker save` tar (`-` for stdin)
    Import {
        /// The tar file, or `-`
        file: String,
    },
    /// Pull images (every platform) from their registries into the cache
    Pull { references: Vec<String> },
    /// Push images from the cache to their registries
    Push {
        references: Vec<String>,
        /// The name to push to (one image only)
        #[arg(long)]
        remote_name: Option<String>,
        /// Push even if the registry has the tag (an index is merged with the registry's)
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        r#override: bool,
        /// Also tag each platform's image `<tag>-<arch>`
        #[arg(long, action = clap::ArgAction::Set, default_value_t = false, num_args = 0..=1, require_equals = true, default_missing_value = "true", value_parser = crate::args::go_bool)]
        with_arch_tags: bool,
    },
}

/// `linux/<arch>` of this machine, in Go's architecture names.
fn default_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("linux/{arch}")
}

/// Parses `10GB`, `512MiB`, `1.5G`, `123` (bytes). Decimal and binary suffixes.
pub fn parse_size(text: &str) -> Result<u64, StoreError> {
    let bad = || StoreError::InvalidArgument(format!("size `{text}` (expected e.g. 10GB, 512MiB)"));
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "ki" | "kib" => 1024.0,
        "mi" | "mib" => 1024.0 * 1024.0,
        "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "ti" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    Ok((number * factor) as u64)
}

fn parse_duration(text: &str) -> Result<Duration, StoreError> {
    humantime::parse_duration(text)
        .map_err(|e| StoreError::InvalidArgument(format!("duration `{text}`: {e}")))
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn short_type(media_type: &str) -> &str {
    media_type
        .strip_prefix("application/vnd.oci.image.")
        .or_else(|| media_type.strip_prefix("application/vnd.docker."))
        .unwrap_or(media_type)
}

/// Runs one `cache` subcommand against the cache at `cache_dir`.
pub fn run(cmd: CacheCommand, global: &crate::args::GlobalArgs) -> anyhow::Result<()> {
    let cache_dir = &global.cache_dir();
    let quiet = global.quiet;
    let say = |message: String| {
        if !quiet {
            crate::output::errln!("{message}");
        }
    };
    // Refuse unsupported flags before touching the cache.
    let store = crate::output::open_store(cache_dir)?;
    let mut out = crate::output::data();
    match cmd {
        CacheCommand::Ls { json } => {
            let names = store.names()?;
            if json {
                let images = names
                    .iter()
                    .map(|(name, d)| json::NamedDescriptor {
                        name: name.clone(),
                        descriptor: descriptor_json(d),
                    })
                    .collect();
                out.write_all(
                    Versioned::new(json::CacheList { images })
                        .document()
                        .as_bytes(),
                )?;
            } else {
                if !quiet {
                    writeln!(out, "{:<80} root manifest hash", "image name")?;
                }
                for (name, desc) in &names {
                    writeln!(out, "{:<80} {}", name, desc.digest)?;
                }
            }
        }
        CacheCommand::Inspect { reference, json } => {
            let (name, root) = store.resolve(&reference)?;
            let tree = inspect_node(&store, &root);
            if json {
                let doc = Versioned::new(json::CacheInspect { name, root: tree });
                out.write_all(doc.document().as_bytes())?;
            } else {
                writeln!(out, "{name}")?;
                print_node(&mut out, &tree, 1)?;
            }
        }
        CacheCommand::Rm {
            names,
            published_only,
        } => {
            let mut wanted = Vec::new();
            for name in &names {
                let (stored, root) = store.resolve(name)?;
                wanted.push((stored, root));
            }
            if published_only {
                wanted = published(wanted, global, &say)?;
            }
            let wanted: Vec<String> = wanted.into_iter().map(|(n, _)| n).collect();
            for name in store.remove_names(&wanted)? {
                say(format!("removed image `{name}` from the cache"));
            }
        }
        CacheCommand::Clean {
            published_only: false,
        } => {
            store.clean()?;
            say(format!("Cache emptied: {}", cache_dir.display()));
        }
        CacheCommand::Clean {
            published_only: true,
        } => {
            let wanted: Vec<String> = published(store.names()?, global, &say)?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            for name in store.remove_names(&wanted)? {
                say(format!("removed published image `{name}` from the cache"));
            }
        }
        CacheCommand::Gc {
            keep_duration,
            max_size,
        } => {
            let options = GcOptions {
                keep_duration: keep_duration.as_deref().map(parse_duration).transpose()?,
                max_size: max_size.as_deref().map(parse_size).transpose()?,
            };
            let report = store.gc(&options)?;
            for name in &report.removed_names {
                say(format!("removed image `{name}` (least recently used)"));
            }
            say(format!(
                "removed {} blob(s), freed {}, {} remain",
                report.removed_blobs.len(),
                human_size(report.freed_bytes),
                human_size(report.remaining_bytes)
            ));
        }
        CacheCommand::Du { json } => {
            let usage = store.usage()?;
            if json {
                let images = usage
                    .names
                    .iter()
                    .map(|u| json::ImageUsage {
                        name: u.name.clone(),
                        total: u.total,
                        unique: u.unique,
                        shared: u.shared,
                    })
                    .collect();
                let doc = Versioned::new(json::CacheUsage {
                    images,
                    blob_bytes: usage.blob_bytes,
                    unreachable_bytes: usage.unreachable_bytes,
                });
                out.write_all(doc.document().as_bytes())?;
            } else {
                writeln!(
                    out,
                    "{:<80} {:>10} {:>10} {:>10}",
                    "image name", "total", "unique", "shared"
                )?;
                for u in &usage.names {
                    writeln!(
                        out,
                        "{:<80} {:>10} {:>10} {:>10}",
                        u.name,
                        human_size(u.total),
                        human_size(u.unique),
                        human_size(u.shared)
                    )?;
                }
                writeln!(
                    out,
                    "{:<80} {:>10}   (unreachable: {})",
                    "all blobs",
                    human_size(usage.blob_bytes),
                    human_size(usage.unreachable_bytes)
                )?;
            }
        }
        CacheCommand::Verify { repair, json } => {
            let report = store.verify(repair)?;
            if json {
                let doc = Versioned::new(json::CacheVerify {
                    blobs_checked: report.blobs_checked,
                    names_checked: report.names_checked,
                    problems: report.problems.iter().map(ToString::to_string).collect(),
                    remaining: report.remaining.iter().map(ToString::to_string).collect(),
                    repaired: report.repaired,
                });
                out.write_all(doc.document().as_bytes())?;
            }
            out.flush()?;
            for problem in &report.problems {
                say(format!("problem: {problem}"));
            }
            if report.repaired {
                say(format!(
                    "repaired: {} problem(s) fixed, {} remain",
                    report.problems.len() - report.remaining.len(),
                    report.remaining.len()
                ));
            }
            if !report.remaining.is_empty() {
                return Err(StoreError::VerifyFailed {
                    problems: report.remaining.len(),
                }
                .into());
            }
            say(format!(
                "cache ok: {} blob(s), {} name(s)",
                report.blobs_checked, report.names_checked
            ));
        }
        CacheCommand::Export {
            reference,
            format,
            platform,
            outfile,
            name,
        } => {
            let format: ExportFormat = format.parse()?;
            let platform = Platform::parse(&platform).ok_or_else(|| {
                StoreError::InvalidArgument(format!("platform `{platform}` (expected os/arch)"))
            })?;
            if outfile == "-" {
                store.export(&reference, format, &platform, name.as_deref(), &mut out)?;
            } else {
                let path = Path::new(&outfile);
                // A regular file (or none yet) is replaced atomically; anything else (a pipe,
                // a device, a link such as /dev/stdout) is written where it points.
                let regular = match std::fs::symlink_metadata(path) {
                    Ok(meta) => meta.is_file(),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                    Err(e) => {
                        return Err(e).with_context(|| format!("cannot write `{outfile}`"));
                    }
                };
                if regular {
                    // A file appears whole or not at all: written beside it, synced, renamed.
                    let dir = path
                        .parent()
                        .filter(|d| !d.as_os_str().is_empty())
                        .unwrap_or(Path::new("."));
                    let tmp = tempfile::Builder::new()
                        .prefix(".lkpkg-export-")
                        .tempfile_in(dir)
                        .with_context(|| format!("cannot create a file beside `{outfile}`"))?;
                    let mut writer = io::BufWriter::new(tmp);
                    store.export(&reference, format, &platform, name.as_deref(), &mut writer)?;
                    let tmp = writer
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .with_context(|| format!("cannot write `{outfile}`"))?;
                    tmp.as_file()
                        .sync_all()
                        .with_context(|| format!("cannot write `{outfile}`"))?;
                    tmp.persist(path)
                        .map_err(|e| e.error)
                        .with_context(|| format!("cannot write `{outfile}`"))?;
                } else {
                    // Written as it goes; nothing to sync on a pipe or a terminal.
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(path)
                        .with_context(|| format!("cannot open `{outfile}`"))?;
                    let mut writer = io::BufWriter::new(file);
                    store.export(&reference, format, &platform, name.as_deref(), &mut writer)?;
                    writer
                        .flush()
                        .with_context(|| format!("cannot write `{outfile}`"))?;
                }
            }
        }
        CacheCommand::Pull { references } => {
            let registry = crate::registry_cmd::client(global, &[])?;
            lkpkg_engine::ops::registry::pull_images(&store, &registry, &references, &say)?;
        }
        CacheCommand::Push {
            references,
            remote_name,
            r#override,
            with_arch_tags,
        } => {
            let registry = crate::registry_cmd::client(global, &[])?;
            lkpkg_engine::ops::registry::push_images(
                &store,
                &registry,
                &references,
                remote_name.as_deref(),
                lkpkg_engine::ops::registry::PushOptions {
                    arch_tags: with_arch_tags,
                    override_existing: r#override,
                },
                &say,
            )?;
        }
        CacheCommand::Import { file } => {
            let imported = if file == "-" {
                store.import(io::stdin().lock())?
            } else {
                let reader = std::fs::File::open(&file).map_err(|e| {
                    StoreError::InvalidArgument(format!("cannot open `{file}`: {e}"))
                })?;
                store.import(io::BufReader::new(reader))?
            };
            for item in imported {
                say(format!(
                    "imported `{}` ({})",
                    item.name, item.descriptor.digest
                ));
            }
        }
    }
    out.flush()?;
    Ok(())
}

fn descriptor_json(d: &Descriptor) -> json::Descriptor {
    json::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
    }
}

/// A blob of the inspect tree with nothing below it.
fn leaf(store: &Store, desc: &Descriptor) -> json::Node {
    json::Node {
        descriptor: descriptor_json(desc),
        platform: desc.platform.as_ref().map(ToString::to_string),
        attestation: desc.is_attestation(),
        missing: !store.has_blob(&desc.digest),
        manifests: None,
        config: None,
        layers: None,
    }
}

/// The inspect tree of one descriptor (printed as JSON, or as text by [`print_node`]).
fn inspect_node(store: &Store, desc: &Descriptor) -> json::Node {
    let mut node = leaf(store, desc);
    if node.missing {
        return node;
    }
    if layout::is_index_media_type(&desc.media_type) {
        if let Ok(index) = store.read_index(&desc.digest) {
            node.manifests = Some(
                index
                    .manifests
                    .iter()
                    .map(|m| inspect_node(store, m))
                    .collect(),
            );
        }
    } else if layout::is_manifest_media_type(&desc.media_type)
        && let Ok(manifest) = store.read_manifest(&desc.digest)
    {
        node.config = Some(Box::new(leaf(store, &manifest.config)));
        node.layers = Some(manifest.layers.iter().map(|l| leaf(store, l)).collect());
    }
    node
}

fn print_node(out: &mut impl Write, node: &json::Node, depth: usize) -> io::Result<()> {
    let indent = "  ".repeat(depth);
    let label = |n: &json::Node| -> String {
        let digest = &n.descriptor.digest;
        let digest = digest
            .parse::<Digest>()
            .map_or(digest.to_owned(), |d| d.to_string());
        let mut text = format!(
            "{} {} {}",
            short_type(&n.descriptor.media_type),
            digest,
            human_size(n.descriptor.size)
        );
        if n.missing {
            text.push_str(" (missing)");
        }
        text
    };
    let prefix = match (&node.platform, node.attestation) {
        (_, true) => "attestation ".to_owned(),
        (Some(p), false) => format!("{p} "),
        _ => String::new(),
    };
    writeln!(out, "{indent}{prefix}{}", label(node))?;
    for child in node.manifests.iter().flatten() {
        print_node(out, child, depth + 1)?;
    }
    if let Some(config) = &node.config {
        writeln!(out, "{indent}  config {}", label(config))?;
    }
    for layer in node.layers.iter().flatten() {
        writeln!(out, "{indent}  layer {}", label(layer))?;
    }
    Ok(())
}

/// The names `--published-only` may remove: those their registry serves with the same digest
/// (`lkpkg_engine::ops::registry::published`).
fn published(
    names: Vec<(String, Descriptor)>,
    global: &crate::args::GlobalArgs,
    say: &dyn Fn(String),
) -> anyhow::Result<Vec<(String, Descriptor)>> {
    let registry = crate::registry_cmd::client(global, &[])?;
    Ok(lkpkg_engine::ops::registry::published(
        &registry, names, say,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("512MiB").unwrap(), 512 * 1024 * 1024);
        assert_eq!(parse_size("1.5k").unwrap(), 1500);
        assert!(parse_size("ten").unwrap_err().is_user_error());
    }
}
