//! The commands and steps that talk to registries: `cache pull`, `cache push`, `pkg push` and
//! `pkg build --push` (with `--release` and shared build records), `pkg manifest`,
//! `pkg remote-tag`. The protocol and the moves are the engine's (`registry`, `transfer`); this
//! module gathers the settings and prints linuxkit's messages.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use lkpkg_cache_format::build_record::shared_record_tag;
use lkpkg_cache_format::layout::{self, Descriptor, Platform};
use lkpkg_cache_format::reference;
use lkpkg_engine::ops::Plan;
use lkpkg_engine::ops::UnitOutcome;
use lkpkg_engine::ops::cache::Store;
use lkpkg_engine::ops::registry::{self, PullRequest, PushOptions, Registry, Settings};

use crate::args::GlobalArgs;
use crate::exit::bad_input;

/// The registry client the command line and the environment describe: `--registry-creds`,
/// the docker CLI config (`DOCKER_CONFIG`, else `~/.docker`), `--cert-file`,
/// `LINUXKIT_MIRROR` then `--mirror`, the engine's `insecure-registries`
/// (`/etc/docker/daemon.json`). Retries and mirror fallbacks are said on stderr (not with
/// `-q`); where credentials come from, with `-v 2`.
pub fn client(global: &GlobalArgs, registry_creds: &[String]) -> Result<Arc<Registry>> {
    let docker_config = std::env::var_os("DOCKER_CONFIG")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".docker"))
        });
    let mut mirrors: Vec<String> = std::env::var("LINUXKIT_MIRROR")
        .unwrap_or_default()
        .split([',', ' '])
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    mirrors.extend(global.mirror.iter().cloned());
    let insecure = std::fs::read("/etc/docker/daemon.json")
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| {
            v["insecure-registries"].as_array().map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        })
        .unwrap_or_default();
    let quiet = global.quiet;
    let debug = global.verbose >= 2;
    let log: registry::Log = Arc::new(move |level, message: String| {
        let shown = match level {
            registry::Level::Info => !quiet,
            registry::Level::Debug => debug,
        };
        if shown {
            crate::output::errln!("    Registry {message}");
        }
    });
    let settings = Settings {
        registry_creds: registry_creds.to_vec(),
        docker_config,
        cert_files: global.cert_file.clone(),
        mirrors,
        insecure,
        log: Some(log),
    };
    Ok(Arc::new(Registry::new(settings)?))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

/// `cache pull REF...`: every platform, under the name and its `-<arch>` names.
pub fn cache_pull(
    store: &Store,
    registry: &Registry,
    references: &[String],
    say: &dyn Fn(String),
) -> Result<()> {
    if references.is_empty() {
        return Err(bad_input("cache pull: name at least one image"));
    }
    let runtime = runtime()?;
    for given in references {
        let name = reference::expand(given);
        reference::validate(&name).map_err(|e| bad_input(format!("`{given}`: {e}")))?;
        say(format!("Pulling {name}"));
        let request = PullRequest {
            reference: &name,
            name: &name,
            platforms: None,
            root_name: true,
            arch_names: true,
        };
        match runtime.block_on(registry::pull(store, registry, &request))? {
            Some(pulled) => say(format!(
                "Pulled {name} {} ({} platform(s), {} blob(s) downloaded)",
                pulled.root.digest,
                pulled.images.len(),
                pulled.downloaded
            )),
            None => {
                return Err(registry::TransferError::NotFound {
                    reference: name.clone(),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// `cache push NAME... [--remote-name R] [--with-arch-tags] [--override]`, with linuxkit's
/// messages.
pub fn cache_push(
    store: &Store,
    registry: &Registry,
    names: &[String],
    remote_name: Option<&str>,
    options: PushOptions,
    say: &dyn Fn(String),
) -> Result<()> {
    if names.is_empty() {
        return Err(bad_input("cache push: name at least one image"));
    }
    if remote_name.is_some() && names.len() > 1 {
        return Err(bad_input("--remote-name applies to one image at a time"));
    }
    let runtime = runtime()?;
    for given in names {
        let (local, _) = store.resolve(given)?;
        let remote = remote_name.map_or_else(|| local.clone(), reference::expand);
        reference::validate(&remote).map_err(|e| bad_input(format!("`{remote}`: {e}")))?;
        say(format!("Pushing local {local} as {remote}"));
        let pushed = runtime.block_on(registry::push(store, registry, &local, &remote, options))?;
        if pushed.skipped_existing {
            say(format!(
                "image {remote} already available on remote registry, skipping push"
            ));
        } else {
            say(format!(
                "Pushed {remote} ({} blob(s) uploaded, {} already there)",
                pushed.uploaded, pushed.already_there
            ));
        }
    }
    Ok(())
}

/// What `pkg build --push` (and `pkg push`) publish after the build.
#[derive(Debug, Clone, Default)]
pub struct Publish {
    /// `--manifest`: also the `<tag>-<arch>` tags.
    pub arch_tags: bool,
    /// `--release`.
    pub release: Option<String>,
}

/// Pushes every requested package of the plan: its multi-arch index (merged with the
/// registry's) and per-arch tags, its shared build records, and its release tag (`--release`,
/// else the first git tag on HEAD, as linuxkit's default). A dirty package is refused, as
/// linuxkit refuses it.
pub fn publish(
    store: &Store,
    registry: &Registry,
    plan: &Plan,
    units: &[UnitOutcome],
    options: &Publish,
    say: &dyn Fn(String),
) -> Result<()> {
    let runtime = runtime()?;
    for (index, gp) in plan.graph().packages.iter().enumerate() {
        if !gp.requested {
            continue;
        }
        let full = gp.package.tag.full_tag();
        if gp.package.tag.dirty {
            return Err(bad_input(format!(
                "{}: build complete, refusing to push dirty package `{full}`",
                gp.package.dir.display()
            )));
        }
        if store.lookup(&full)?.is_none() {
            say(format!("{full}: No new platforms to push, skipping."));
            continue;
        }
        let pushed = runtime.block_on(registry::push(
            store,
            registry,
            &full,
            &full,
            PushOptions {
                arch_tags: options.arch_tags,
                override_existing: true,
            },
        ))?;
        say(format!(
            "Pushed {full} ({} blob(s) uploaded, {} already there)",
            pushed.uploaded, pushed.already_there
        ));
        // Shared build records: the key of each unit built (or recorded) here names its image.
        let (name, _) = reference::split_tag(&full);
        for unit in units.iter().filter(|u| u.package == index) {
            let Some(key) = unit.recorded_key else {
                continue;
            };
            let tag = format!("{name}:{}", shared_record_tag(&key));
            let target = registry::parse_reference(&tag)?;
            let bytes = store.read_blob(&unit.descriptor.digest)?;
            runtime.block_on(registry.put_manifest(
                &target,
                &bytes,
                &unit.descriptor.media_type,
            ))?;
        }
        // linuxkit's default release: the git tag on HEAD, when there is one.
        let auto_release = match &options.release {
            Some(_) => None,
            None => plan.head_tag(&gp.package.dir)?,
        };
        if let Some(release) = options.release.as_ref().or(auto_release.as_ref()) {
            let release_tag = format!("{name}:{release}");
            reference::validate(&release_tag)
                .map_err(|e| bad_input(format!("--release {release}: {e}")))?;
            let pushed = runtime.block_on(registry::push(
                store,
                registry,
                &full,
                &release_tag,
                PushOptions {
                    arch_tags: options.arch_tags,
                    override_existing: false,
                },
            ))?;
            if pushed.skipped_existing {
                say(format!(
                    "image {release_tag} already available on remote registry, skipping push"
                ));
            } else {
                say(format!("Released {full} as {release_tag}"));
            }
        }
    }
    Ok(())
}

/// `pkg manifest DIR`: the multi-arch index made of the registry's `<tag>-<arch>` images,
/// merged with the registry's index, pushed when it changed (also for `--release`).
pub fn manifest(
    registry: &Registry,
    full: &str,
    release: Option<&str>,
    say: &dyn Fn(String),
) -> Result<()> {
    let runtime = runtime()?;
    let (name, tag) = reference::split_tag(full);
    let tag = tag.unwrap_or("latest");
    let mut tags = vec![tag.to_owned()];
    tags.extend(release.map(str::to_owned));
    for tag in tags {
        let target = registry::parse_reference(&format!("{name}:{tag}"))?;
        let mut entries: Vec<Descriptor> = Vec::new();
        for arch in ["amd64", "arm64", "s390x", "riscv64", "ppc64le"] {
            let per_arch = registry::parse_reference(&format!("{name}:{tag}-{arch}"))?;
            let Some(found) = runtime.block_on(registry.manifest(&per_arch))? else {
                continue;
            };
            if !layout::is_manifest_media_type(&found.media_type) {
                continue;
            }
            let mut desc =
                Descriptor::new(&found.media_type, found.digest, found.bytes.len() as u64);
            desc.platform = Some(Platform::linux(arch));
            entries.push(desc);
        }
        if entries.is_empty() {
            return Err(bad_input(format!(
                "pkg manifest: the registry has no `{name}:{tag}-<arch>` image"
            )));
        }
        let changed = runtime.block_on(registry::push_index(registry, &target, None, &entries))?;
        say(if changed {
            format!("Pushed index {name}:{tag} ({} platform(s))", entries.len())
        } else {
            format!("Index {name}:{tag} is up to date")
        });
    }
    Ok(())
}

/// `pkg remote-tag FROM TO`.
pub fn remote_tag(registry: &Registry, from: &str, to: &str, say: &dyn Fn(String)) -> Result<()> {
    let from = reference::expand(from);
    let to = reference::expand(to);
    if reference::split_tag(&from).0 != reference::split_tag(&to).0 {
        return Err(bad_input(format!(
            "pkg remote-tag: `{to}` stays in the repository of `{from}` (a tag names a \
             manifest of its own repository)"
        )));
    }
    let changed = runtime()?.block_on(registry::retag(registry, &from, &to))?;
    say(if changed {
        format!("Tagged {from} as {to}")
    } else {
        format!("{to} already names {from}")
    });
    Ok(())
}
