//! Build keys: what decides whether a unit (package, platform) must build.
//!
//! linuxkit decides "up to date" by the tag alone, and a tag hashes only the package's own
//! tree: a package whose base image changed keeps its tag and is served stale. lkpkg keeps the
//! tag for names, and decides with a **build key**: blake3 over every input that determines the
//! unit's output, including the *output digests* of the units it consumes. A change anywhere
//! upstream changes the key, so dependents rebuild; an upstream rebuild that yields the same
//! bytes leaves the key unchanged, so they stay fresh (early cutoff).
//!
//! # Inputs
//!
//! Each input is a named string; the key hashes the names and values in order, each
//! length-prefixed, after a version tag. The names appear in explanations.
//!
//! | input                    | value                                                        |
//! |--------------------------|--------------------------------------------------------------|
//! | `schema`                 | [`KEY_SCHEMA_VERSION`]                                       |
//! | `platform`               | `linux/amd64`                                                |
//! | `dockerfile`             | the Dockerfile's path in the package                         |
//! | `network`, `no-cache`    | the effective flags (build.yml, overridden by the command line) |
//! | `package`                | the content of the package directory: the git tree id of the files as on disk, tracked, untracked and ignored alike (everything the build context holds; [`content`]) |
//! | `extra-source <dst>`     | the content of each extra source, the same way (dirty edits count, unlike linuxkit's tag) |
//! | `arg <KEY>`              | each build argument from build.yml or `--build-arg-file`, resolved; an `@lkt:pkg:` argument the Dockerfile uses only to name a `FROM` image is `@output of <unit>` instead of its tag text, because the dependency's output digest stands for it |
//! | `tag-source <KEY>`       | the content of the package an `@lkt:pkg:` argument names when the Dockerfile does not build from it (the argument is then only that package's tag, and a fixed tag template would hide a change) |
//! | `arg <PRESET>`           | `SOURCE`, `REVISION`, `GOPKGVERSION`, `PKG_HASH`, `PKG_IMAGE`: only when the Dockerfile uses them outside `FROM` |
//! | `label <KEY>`            | every label lkpkg sets (`org.mobyproject.config`, …)         |
//! | `dependency <unit>`      | the output manifest digest of each in-repo unit consumed      |
//! | `image <ref>`            | each external `FROM` / `COPY --from` image, as written        |
//! | `depends <ref>`          | each `depends.docker-images` entry (pinned by digest)         |
//!
//! # Deliberately not hashed
//!
//! - The tag, the org and the hash template: names, not content.
//! - Absolute paths and file times: moving a checkout or touching a file changes nothing.
//! - Presets the Dockerfile does not use (`REVISION` changes with every commit; hashing it
//!   would rebuild everything on every commit).
//! - Proxy variables (`http_proxy`, …): Docker treats them as not affecting the output.
//! - The output epoch (`SOURCE_DATE_EPOCH`, else 0): an image reused from a record keeps the
//!   time it was built with.
//! - External images named by tag only (`FROM alpine:3.20`): their content is what the engine
//!   has under that name; pin them by digest for a key that follows them.

pub(crate) mod content;

use std::collections::{BTreeMap, BTreeSet};

/// The version of the key's definition; bump it when the inputs change meaning.
pub(crate) const KEY_SCHEMA_VERSION: &str = "1";

/// Build arguments lkpkg adds when the package does not set them.
pub(crate) const PRESETS: [&str; 5] = [
    "SOURCE",
    "REVISION",
    "GOPKGVERSION",
    "PKG_HASH",
    "PKG_IMAGE",
];

/// Named inputs, in key order.
pub(crate) type Inputs = Vec<(String, String)>;

/// The build key of a list of inputs.
pub(crate) fn key(inputs: &Inputs) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"lkpkg build key\0");
    for (name, value) in inputs {
        hasher.update(&(name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    }
    *hasher.finalize().as_bytes()
}

/// What a unit's inputs are made of; the scheduler gathers these.
#[derive(Debug)]
pub(crate) struct UnitDescription<'a> {
    pub platform: String,
    pub dockerfile: String,
    pub network: bool,
    pub no_cache: bool,
    pub package_tree: String,
    /// `(destination, content tree)` per extra source.
    pub extra_sources: Vec<(String, String)>,
    /// User build arguments (build.yml and arg files): key, value, and the unit the value
    /// names when it is an `@lkt:` reference.
    pub args: Vec<(&'a str, &'a str, Option<String>)>,
    /// `(key, content tree)` of each `@lkt:pkg:` target that is only a tag here.
    pub tag_sources: Vec<(String, String)>,
    /// Preset build arguments lkpkg adds.
    pub presets: BTreeMap<String, String>,
    /// Arguments the Dockerfile uses outside `FROM`.
    pub args_used_outside_from: &'a BTreeSet<String>,
    pub labels: &'a BTreeMap<String, String>,
    /// `(unit name, output digest)` of each dependency.
    pub dependencies: Vec<(String, String)>,
    pub external_images: Vec<String>,
    pub depends: Vec<String>,
}

/// The inputs of a unit, in key order.
pub(crate) fn inputs(unit: &UnitDescription) -> Inputs {
    let mut out: Inputs = vec![
        ("schema".into(), KEY_SCHEMA_VERSION.into()),
        ("platform".into(), unit.platform.clone()),
        ("dockerfile".into(), unit.dockerfile.clone()),
        ("network".into(), unit.network.to_string()),
        ("no-cache".into(), unit.no_cache.to_string()),
        ("package".into(), unit.package_tree.clone()),
    ];
    for (dst, tree) in &unit.extra_sources {
        out.push((format!("extra-source {dst}"), tree.clone()));
    }
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    for (key, value, dependency) in &unit.args {
        let value = match dependency {
            Some(unit_name) if !unit.args_used_outside_from.contains(*key) => {
                format!("@output of {unit_name}")
            }
            _ => value.to_string(),
        };
        args.insert(key.to_string(), value);
    }
    for (key, value) in &unit.presets {
        if !args.contains_key(key) && unit.args_used_outside_from.contains(key) {
            args.insert(key.clone(), value.clone());
        }
    }
    out.extend(args.into_iter().map(|(k, v)| (format!("arg {k}"), v)));
    out.extend(
        unit.tag_sources
            .iter()
            .map(|(k, tree)| (format!("tag-source {k}"), tree.clone())),
    );
    out.extend(
        unit.labels
            .iter()
            .map(|(k, v)| (format!("label {k}"), v.clone())),
    );
    let mut dependencies = unit.dependencies.clone();
    dependencies.sort();
    dependencies.dedup();
    out.extend(
        dependencies
            .into_iter()
            .map(|(n, d)| (format!("dependency {n}"), d)),
    );
    let images: BTreeSet<&String> = unit.external_images.iter().collect();
    out.extend(
        images
            .into_iter()
            .map(|i| (format!("image {i}"), String::new())),
    );
    let depends: BTreeSet<&String> = unit.depends.iter().collect();
    out.extend(
        depends
            .into_iter()
            .map(|d| (format!("depends {d}"), String::new())),
    );
    out
}

fn short(value: &str) -> String {
    match value.strip_prefix("sha256:") {
        Some(hex) if hex.len() > 12 => format!("sha256:{}…", &hex[..12]),
        _ if value.len() > 40 => format!("{}…", &value[..40]),
        _ => value.to_owned(),
    }
}

/// Why `new` differs from `old`, one reason per changed input, in the words users read:
/// `dependency base/amd64 sha256:ab… → sha256:cd…`, `file Dockerfile changed`,
/// `build arg FOO "1" → "2"`. Files are compared when the package content changed and both
/// file listings are known.
pub(crate) fn explain(
    old: &Inputs,
    new: &Inputs,
    old_files: &BTreeMap<String, String>,
    new_files: Option<&BTreeMap<String, String>>,
) -> Vec<String> {
    let old_map: BTreeMap<&str, &str> = old.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let new_map: BTreeMap<&str, &str> = new.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut reasons = Vec::new();
    for (name, new_value) in &new_map {
        match old_map.get(name) {
            Some(old_value) if old_value == new_value => {}
            Some(old_value) => {
                reasons.push(changed(name, old_value, new_value, old_files, new_files))
            }
            None => reasons.push(added(name, new_value)),
        }
    }
    for name in old_map.keys().filter(|n| !new_map.contains_key(*n)) {
        reasons.push(match name.split_once(' ') {
            Some(("arg", key)) => format!("build arg {key} removed"),
            Some((kind, what)) => format!("{kind} {what} removed"),
            None => format!("{name} removed"),
        });
    }
    reasons
}

fn added(name: &str, value: &str) -> String {
    match name.split_once(' ') {
        Some(("arg", key)) => format!("build arg {key} added: {value:?}"),
        Some(("dependency", unit)) => format!("new dependency {unit} {}", short(value)),
        Some((kind, what)) => format!("{kind} {what} added"),
        None => format!("{name} added"),
    }
}

fn changed(
    name: &str,
    old: &str,
    new: &str,
    old_files: &BTreeMap<String, String>,
    new_files: Option<&BTreeMap<String, String>>,
) -> String {
    match name.split_once(' ') {
        Some(("arg", key)) => format!("build arg {key} {old:?} → {new:?}"),
        Some(("dependency", unit)) => format!("dependency {unit} {} → {}", short(old), short(new)),
        Some(("label", key)) => format!("label {key} {:?} → {:?}", short(old), short(new)),
        Some(("extra-source", dst)) => format!("extra source {dst} changed"),
        _ if name == "package" => match new_files.filter(|_| !old_files.is_empty()) {
            Some(new_files) => {
                let mut files: Vec<String> = Vec::new();
                for (path, entry) in new_files {
                    match old_files.get(path) {
                        Some(o) if o == entry => {}
                        Some(_) => files.push(format!("file {path} changed")),
                        None => files.push(format!("file {path} added")),
                    }
                }
                for path in old_files.keys().filter(|p| !new_files.contains_key(*p)) {
                    files.push(format!("file {path} removed"));
                }
                if files.is_empty() {
                    format!("package content {} → {}", short(old), short(new))
                } else {
                    files.join(", ")
                }
            }
            None => format!("package content {} → {}", short(old), short(new)),
        },
        _ => format!("{name} {old:?} → {new:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs_of(pairs: &[(&str, &str)]) -> Inputs {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn key_depends_on_names_and_values() {
        let a = inputs_of(&[("arg A", "1")]);
        let b = inputs_of(&[("arg A", "2")]);
        let c = inputs_of(&[("arg A1", "")]);
        assert_ne!(key(&a), key(&b));
        assert_ne!(key(&a), key(&c));
        assert_eq!(key(&a), key(&a.clone()));
    }

    #[test]
    fn explanations_name_the_input() {
        let old = inputs_of(&[
            ("arg FOO", "1"),
            ("dependency base/amd64", "sha256:aaaaaaaaaaaaaaaa"),
            ("package", "t1"),
        ]);
        let new = inputs_of(&[
            ("arg FOO", "2"),
            ("dependency base/amd64", "sha256:bbbbbbbbbbbbbbbb"),
            ("package", "t2"),
        ]);
        let old_files = BTreeMap::from([("Dockerfile".to_owned(), "100644 a".to_owned())]);
        let new_files = BTreeMap::from([("Dockerfile".to_owned(), "100644 b".to_owned())]);
        assert_eq!(
            explain(&old, &new, &old_files, Some(&new_files)),
            [
                "build arg FOO \"1\" → \"2\"",
                "dependency base/amd64 sha256:aaaaaaaaaaaa… → sha256:bbbbbbbbbbbb…",
                "file Dockerfile changed",
            ]
        );
    }

    #[test]
    fn lkt_argument_used_only_in_from_stands_for_the_output() {
        let used = BTreeSet::new();
        let labels = BTreeMap::new();
        let unit = |tag: &'static str| UnitDescription {
            platform: "linux/amd64".into(),
            dockerfile: "Dockerfile".into(),
            network: false,
            no_cache: false,
            package_tree: "t".into(),
            extra_sources: vec![],
            args: vec![("BASE", tag, Some("base/amd64".into()))],
            tag_sources: vec![],
            presets: BTreeMap::from([("REVISION".to_owned(), "abc".to_owned())]),
            args_used_outside_from: &used,
            labels: &labels,
            dependencies: vec![("base/amd64".into(), "sha256:1".into())],
            external_images: vec![],
            depends: vec![],
        };
        // The base's tag changed (its tree did) but not its output: same key.
        assert_eq!(
            key(&inputs(&unit("linuxkit/base:1"))),
            key(&inputs(&unit("linuxkit/base:2")))
        );
        // REVISION is not used by the Dockerfile: not an input.
        assert!(!inputs(&unit("x")).iter().any(|(k, _)| k == "arg REVISION"));
    }
}
