//! Registries: the client and the operations of the registry commands (`cache pull`,
//! `cache push`, `pkg build --push` and `pkg push` with `--release` and shared build records,
//! `pkg manifest`, `pkg remote-tag`). The protocol is `crate::registry`'s and the moves of
//! images `crate::transfer`'s; these functions sequence them as linuxkit's commands do and
//! say each step through `say`, in linuxkit's words.

use lkpkg_cache_format::build_record::shared_record_tag;
use lkpkg_cache_format::layout::{self, Descriptor, Platform};
use lkpkg_cache_format::reference;

pub use crate::registry::{
    Credential, Credentials, DEFAULT_TIMEOUT, Level, Log, Registry, RegistryError, RemoteManifest,
    Secret, Settings, parse_reference,
};
use crate::transfer::PullRequest;
pub use crate::transfer::{PushOptions, TransferError};

use super::{OpError, Plan, UnitOutcome};
use crate::error::Error;
use crate::store::Store;
use crate::transfer;

/// A bad-input failure of a registry command.
fn usage(message: impl Into<String>) -> OpError {
    Error::Usage(message.into()).into()
}

/// `cache pull REF...`: every platform, under the name and its `-<arch>` names.
pub fn pull_images(
    store: &Store,
    client: &Registry,
    references: &[String],
    say: &dyn Fn(String),
) -> Result<(), OpError> {
    if references.is_empty() {
        return Err(usage("cache pull: name at least one image"));
    }
    let runtime = super::runtime(Some(2))?;
    for given in references {
        let name = reference::expand(given);
        reference::validate(&name).map_err(|e| usage(format!("`{given}`: {e}")))?;
        say(format!("Pulling {name}"));
        let request = PullRequest {
            reference: &name,
            name: &name,
            platforms: None,
            root_name: true,
            arch_names: true,
        };
        match runtime.block_on(transfer::pull(store, client, &request))? {
            Some(pulled) => say(format!(
                "Pulled {name} {} ({} platform(s), {} blob(s) downloaded)",
                pulled.root.digest,
                pulled.images.len(),
                pulled.downloaded
            )),
            None => {
                return Err(TransferError::NotFound {
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
pub fn push_images(
    store: &Store,
    client: &Registry,
    names: &[String],
    remote_name: Option<&str>,
    options: PushOptions,
    say: &dyn Fn(String),
) -> Result<(), OpError> {
    if names.is_empty() {
        return Err(usage("cache push: name at least one image"));
    }
    if remote_name.is_some() && names.len() > 1 {
        return Err(usage("--remote-name applies to one image at a time"));
    }
    let runtime = super::runtime(Some(2))?;
    for given in names {
        let (local, _) = store.resolve(given)?;
        let remote = remote_name.map_or_else(|| local.clone(), reference::expand);
        reference::validate(&remote).map_err(|e| usage(format!("`{remote}`: {e}")))?;
        say(format!("Pushing local {local} as {remote}"));
        let pushed = runtime.block_on(transfer::push(store, client, &local, &remote, options))?;
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
    client: &Registry,
    plan: &Plan,
    units: &[UnitOutcome],
    options: &Publish,
    say: &dyn Fn(String),
) -> Result<(), OpError> {
    let runtime = super::runtime(Some(2))?;
    for (index, gp) in plan.graph().packages.iter().enumerate() {
        if !gp.requested {
            continue;
        }
        let full = gp.package.tag.full_tag();
        if gp.package.tag.dirty {
            return Err(usage(format!(
                "{}: build complete, refusing to push dirty package `{full}`",
                gp.package.dir.display()
            )));
        }
        if store.lookup(&full)?.is_none() {
            say(format!("{full}: No new platforms to push, skipping."));
            continue;
        }
        let pushed = runtime.block_on(transfer::push(
            store,
            client,
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
            let target = parse_reference(&tag)?;
            let bytes = store.read_blob(&unit.descriptor.digest)?;
            runtime.block_on(client.put_manifest(&target, &bytes, &unit.descriptor.media_type))?;
        }
        // linuxkit's default release: the git tag on HEAD, when there is one.
        let auto_release = match &options.release {
            Some(_) => None,
            None => plan.head_tag(&gp.package.dir)?,
        };
        if let Some(release) = options.release.as_ref().or(auto_release.as_ref()) {
            let release_tag = format!("{name}:{release}");
            reference::validate(&release_tag)
                .map_err(|e| usage(format!("--release {release}: {e}")))?;
            let pushed = runtime.block_on(transfer::push(
                store,
                client,
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
pub fn push_manifest(
    client: &Registry,
    full: &str,
    release: Option<&str>,
    say: &dyn Fn(String),
) -> Result<(), OpError> {
    let runtime = super::runtime(Some(2))?;
    let (name, tag) = reference::split_tag(full);
    let tag = tag.unwrap_or("latest");
    let mut tags = vec![tag.to_owned()];
    tags.extend(release.map(str::to_owned));
    for tag in tags {
        let target = parse_reference(&format!("{name}:{tag}"))?;
        let mut entries: Vec<Descriptor> = Vec::new();
        for arch in ["amd64", "arm64", "s390x", "riscv64", "ppc64le"] {
            let per_arch = parse_reference(&format!("{name}:{tag}-{arch}"))?;
            let Some(found) = runtime.block_on(client.manifest(&per_arch))? else {
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
            return Err(usage(format!(
                "pkg manifest: the registry has no `{name}:{tag}-<arch>` image"
            )));
        }
        let changed = runtime.block_on(transfer::push_index(client, &target, None, &entries))?;
        say(if changed {
            format!("Pushed index {name}:{tag} ({} platform(s))", entries.len())
        } else {
            format!("Index {name}:{tag} is up to date")
        });
    }
    Ok(())
}

/// `pkg remote-tag FROM TO`.
pub fn remote_tag(
    client: &Registry,
    from: &str,
    to: &str,
    say: &dyn Fn(String),
) -> Result<(), OpError> {
    let from = reference::expand(from);
    let to = reference::expand(to);
    if reference::split_tag(&from).0 != reference::split_tag(&to).0 {
        return Err(usage(format!(
            "pkg remote-tag: `{to}` stays in the repository of `{from}` (a tag names a \
             manifest of its own repository)"
        )));
    }
    let changed = super::runtime(Some(2))?.block_on(transfer::retag(client, &from, &to))?;
    say(if changed {
        format!("Tagged {from} as {to}")
    } else {
        format!("{to} already names {from}")
    });
    Ok(())
}

/// The names whose registry serves the same digest as the cache: those `cache rm
/// --published-only` and `cache clean --published-only` may remove, since they can be pulled
/// back. A name the registry does not have, or serves with another digest, is kept; a
/// registry that cannot be reached keeps the name too, and says so. (linuxkit asks
/// anonymously; lkpkg with the credentials the docker config gives, so that private images
/// count as published too.)
pub fn published(
    client: &Registry,
    names: Vec<(String, Descriptor)>,
    say: &dyn Fn(String),
) -> Result<Vec<(String, Descriptor)>, OpError> {
    let runtime = super::runtime(Some(2))?;
    let mut out = Vec::new();
    for (name, root) in names {
        let digest = match parse_reference(&name) {
            Ok(reference) => runtime.block_on(client.manifest_digest(&reference)),
            Err(e) => Err(e),
        };
        match digest {
            Ok(Some(remote)) if remote == root.digest => out.push((name, root)),
            Ok(Some(_)) => say(format!("keeping `{name}`: the registry has another digest")),
            Ok(None) => say(format!("keeping `{name}`: not published")),
            Err(e) => say(format!("keeping `{name}`: {e}")),
        }
    }
    Ok(out)
}
