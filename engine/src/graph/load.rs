//! Loading: the packages named and every package they build from through `@lkt:` arguments
//! (transitively), each failure collected rather than the first returned, and what builds
//! from a failed package left out with an error naming it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::{Edge, GraphOptions, GraphPackage};
use crate::build_args;
use crate::dockerfile;
use crate::error::{Error, PackageError, Result};
use crate::package::Loader;

/// A loaded package and the packages it builds from through `@lkt:` (directory, edge).
type LoadedPackage = (GraphPackage, Vec<(PathBuf, Edge)>);

/// What loading found: the packages (indexed), their `@lkt:` edges, and the failures.
pub(super) struct Loaded {
    pub(super) packages: Vec<GraphPackage>,
    pub(super) by_dir: HashMap<PathBuf, usize>,
    /// `(from, target dir, edge)`: every target is in `by_dir`.
    pub(super) references: Vec<(usize, PathBuf, Edge)>,
    pub(super) failures: Vec<Error>,
}

/// Loads `roots` and the packages they build from, collecting every failure. A package whose
/// dependency failed is left out too, with an error that names the dependency.
pub(super) fn load_all(
    loader: &Loader,
    roots: &[PathBuf],
    options: &GraphOptions,
) -> Result<Loaded> {
    let mut loaded: Vec<LoadedPackage> = Vec::new();
    let mut by_dir: HashMap<PathBuf, usize> = HashMap::new();
    let mut failed: HashSet<PathBuf> = HashSet::new();
    let mut failures = Vec::new();
    let mut queue: Vec<(PathBuf, bool)> = roots.iter().rev().map(|r| (r.clone(), true)).collect();
    while let Some((dir, requested)) = queue.pop() {
        let dir = crate::package::absolute(&dir)?;
        if failed.contains(&dir) {
            continue;
        }
        match load_one(loader, &dir, requested, options, &by_dir, &loaded) {
            Ok(None) => {
                let i = by_dir[&dir];
                loaded[i].0.requested |= requested;
            }
            Ok(Some((package, references))) => {
                for (target, _) in &references {
                    queue.push((target.clone(), false));
                }
                by_dir.insert(dir, loaded.len());
                loaded.push((package, references));
            }
            Err(e) => {
                failed.insert(dir);
                failures.push(e);
            }
        }
    }
    // Leave out what builds from a failed package, transitively.
    let mut dropped = vec![false; loaded.len()];
    loop {
        let mut more = false;
        for (i, (package, references)) in loaded.iter().enumerate() {
            if dropped[i] {
                continue;
            }
            let broken = references.iter().find(|(target, _)| {
                failed.contains(target) || by_dir.get(target).is_some_and(|&t| dropped[t])
            });
            if let Some((target, _)) = broken {
                dropped[i] = true;
                more = true;
                failures.push(Error::from(PackageError::new(
                    &package.package.build_yml_path,
                    Some("buildArgs"),
                    format!("builds from `{}`, which cannot be loaded", target.display()),
                )));
            }
        }
        if !more {
            break;
        }
    }
    let mut packages = Vec::new();
    let mut new_index = HashMap::new();
    let mut kept_refs = Vec::new();
    for (i, (package, references)) in loaded.into_iter().enumerate() {
        if dropped[i] {
            continue;
        }
        new_index.insert(i, packages.len());
        kept_refs.push((packages.len(), references));
        packages.push(package);
    }
    let by_dir: HashMap<PathBuf, usize> = by_dir
        .into_iter()
        .filter_map(|(dir, i)| new_index.get(&i).map(|&n| (dir, n)))
        .collect();
    let references = kept_refs
        .into_iter()
        .flat_map(|(from, refs)| refs.into_iter().map(move |(t, e)| (from, t, e)))
        .collect();
    Ok(Loaded {
        packages,
        by_dir,
        references,
        failures,
    })
}

/// Loads one package: `None` when the directory is loaded already (under the same name).
fn load_one(
    loader: &Loader,
    dir: &Path,
    requested: bool,
    options: &GraphOptions,
    by_dir: &HashMap<PathBuf, usize>,
    loaded: &[LoadedPackage],
) -> Result<Option<LoadedPackage>> {
    // A package the user named is tagged with the command line's options; one reached
    // through `@lkt:pkg:` with linuxkit's defaults, the name the argument expands to,
    // so the dependency is built under the name its dependents use.
    let package = if requested {
        loader.load(dir)?
    } else {
        (*loader.load_reference(dir)?).clone()
    };
    if let Some(&i) = by_dir.get(dir) {
        let existing = &loaded[i].0.package.tag;
        if existing.full_tag() != package.tag.full_tag() {
            return Err(Error::Usage(format!(
                "`{}` is named on the command line as {} and reached through `@lkt:pkg:` as {} \
                 (references use linuxkit's defaults, not --org, --hash, --tag or --dev): \
                 build it in a separate command",
                dir.display(),
                existing.tag(),
                package.tag.tag()
            )));
        }
        return Ok(None);
    }
    package.check_buildable()?;
    let yml_args = loader.build_args(&package)?;
    let args = build_args::merge(&yml_args, &options.arg_files);
    let override_name = options.dockerfile.as_deref().filter(|_| requested);
    let dockerfile_path = package.dockerfile(override_name)?;
    let text = package.read_dockerfile(&dockerfile_path, override_name.is_some())?;
    let values: BTreeMap<String, String> = args
        .iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    let dockerfile = dockerfile::read(&text, &values);
    if let Some((line, bytes)) = dockerfile.long_line {
        return Err(PackageError {
            line: Some(line),
            ..PackageError::new(
                &dockerfile_path,
                None,
                format!(
                    "the line is {bytes} bytes long: BuildKit's Dockerfile parser takes lines \
                     of at most {} bytes",
                    dockerfile::MAX_LINE
                ),
            )
        }
        .into());
    }
    if let Some(what) = &dockerfile.oversized {
        return Err(PackageError::new(
            &dockerfile_path,
            None,
            format!(
                "{what} expands to more than {} bytes",
                dockerfile::MAX_EXPANSION
            ),
        )
        .into());
    }
    let mut references = Vec::new();
    let mut tag_sources = Vec::new();
    for arg in &args {
        let Some(target) = &arg.package else {
            continue;
        };
        // linuxkit needs only the target's build.yml, for its tag. The target is built
        // first only when this Dockerfile uses that tag as an image.
        let value = lkpkg_cache_format::reference::expand(&arg.value);
        let used_as_image = dockerfile
            .images
            .iter()
            .any(|image| lkpkg_cache_format::reference::expand(&image.reference) == value);
        if used_as_image {
            references.push((
                crate::package::absolute(target)?,
                Edge::BuildArg {
                    key: arg.key.clone(),
                },
            ));
        } else {
            tag_sources.push((arg.key.clone(), target.clone()));
        }
    }
    let platforms = options.platforms.for_package(&package);
    Ok(Some((
        GraphPackage {
            package,
            build_args: args,
            dockerfile_path,
            dockerfile,
            platforms,
            requested,
            tag_sources,
        },
        references,
    )))
}
