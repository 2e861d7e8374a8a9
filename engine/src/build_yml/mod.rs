//! `build.yml`, read exactly as linuxkit reads it.
//!
//! linuxkit decodes build.yml with Go's yaml.v3 and `KnownFields(true)` over a struct that
//! already holds the defaults (`NewPkgInfo`). The quirks that follow from that, and that this
//! module reproduces:
//!
//! | input                        | linuxkit's result                         | here                 |
//! |------------------------------|-------------------------------------------|----------------------|
//! | key absent                   | the default (`org: linuxkit`, `arches: [amd64, arm64, riscv64]`, …) | [`Field::Absent`] → default |
//! | key with an empty/null value | the zero value: `arches:` → no arches, `org:` → `""` | [`Field::Null`] → zero |
//! | `mode: 0666` in a string field | the raw text `"0666"`                   | serde-saphyr keeps the scalar's text |
//! | `network: yes` / `on` / `y`  | `true` (YAML 1.1 booleans in typed bools) | non-strict booleans  |
//! | unknown key, duplicate key   | an error                                  | an error, with line  |
//! | empty file or only comments  | `EOF`                                     | an error             |
//!
//! Validation that linuxkit does after decoding (`image` required, `extra-sources` format,
//! `depends.docker-images` rules) lives here too, so every package error is found before any
//! work starts. Each error names the file, the field and, where the parser gives one, the line.
//!
//! The YAML crate is serde-saphyr: pure Rust, maintained, merge keys and alias-bomb limits
//! built in (see ARCHITECTURE.md for the choice; `tests::yaml_quirks` pins the behaviour).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Deserializer};

use crate::error::PackageError;

/// linuxkit's default architectures (`NewPkgInfo`).
pub const DEFAULT_ARCHES: [&str; 3] = ["amd64", "arm64", "riscv64"];
/// linuxkit's default `gitrepo`.
pub const DEFAULT_GITREPO: &str = "https://github.com/linuxkit/linuxkit";
/// linuxkit's default organisation.
pub const DEFAULT_ORG: &str = "linuxkit";

/// A key that may be absent, present with a null value, or present with a value: yaml.v3
/// treats the first as "keep the default" and the second as "reset to the zero value".
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Field<T> {
    #[default]
    Absent,
    Null,
    Value(T),
}

impl<T> Field<T> {
    /// The value linuxkit ends up with, given its default.
    fn resolve(self, default: T) -> T
    where
        T: Default,
    {
        match self {
            Field::Absent => default,
            Field::Null => T::default(),
            Field::Value(v) => v,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<T>::deserialize(deserializer)? {
            Some(v) => Field::Value(v),
            None => Field::Null,
        })
    }
}

/// The document as written; private, turned into [`BuildYml`] by [`parse`].
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    #[serde(default)]
    image: Field<String>,
    #[serde(default)]
    org: Field<String>,
    #[serde(default)]
    tag: Field<String>,
    #[serde(default)]
    dockerfile: Field<String>,
    #[serde(default)]
    arches: Field<Vec<String>>,
    #[serde(default, rename = "extra-sources")]
    extra_sources: Field<Vec<String>>,
    #[serde(default)]
    gitrepo: Field<String>,
    #[serde(default)]
    network: Field<bool>,
    #[serde(default, rename = "disable-cache")]
    disable_cache: Field<bool>,
    #[serde(default)]
    config: Field<crate::build_yml::config::ImageConfig>,
    #[serde(default, rename = "buildArgs")]
    build_args: Field<Vec<String>>,
    #[serde(default)]
    depends: Field<RawDepends>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDepends {
    #[serde(default, rename = "docker-images")]
    docker_images: Field<RawDockerImages>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDockerImages {
    #[serde(default, rename = "target-dir")]
    target_dir: Field<String>,
    #[serde(default)]
    target: Field<String>,
    #[serde(default, rename = "from-file")]
    from_file: Field<String>,
    #[serde(default)]
    list: Field<Vec<String>>,
}

/// One `extra-sources` entry: a source directory copied to `dst` in the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraSource {
    /// The source directory, absolute (relative sources resolve against the package dir).
    pub src: PathBuf,
    /// The destination inside the build context, cleaned as a Unix path.
    pub dst: String,
    /// The entry as written, for messages.
    pub spec: String,
}

/// An image pinned by digest in `depends.docker-images`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedImage {
    /// The reference as written (`alpine:3.20@sha256:…`).
    pub reference: String,
    /// The reference without tag or digest (containerd's "locator").
    pub locator: String,
    /// `sha256:<hex>`.
    pub digest: String,
}

/// Where `depends.docker-images` are saved in the build context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DependsTarget {
    /// `target`: one tar file holding every image.
    File(PathBuf),
    /// `target-dir`: one `<basename>@<digest>.tar` per image.
    Dir(PathBuf),
}

/// `depends.docker-images`, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DockerDepends {
    pub images: Vec<PinnedImage>,
    /// Relative to the package directory, inside it, never the directory itself.
    pub target: Option<DependsTarget>,
}

/// A parsed and validated build.yml, with linuxkit's defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildYml {
    pub image: String,
    pub org: String,
    /// The tag template (`{{.Hash}}` by default).
    pub tag: String,
    pub dockerfile: String,
    pub arches: Vec<String>,
    pub extra_sources: Vec<ExtraSource>,
    pub gitrepo: String,
    pub network: bool,
    pub disable_cache: bool,
    pub config: Option<config::ImageConfig>,
    /// `None` when absent or null (linuxkit's nil pointer), as written otherwise.
    pub build_args: Option<Vec<String>>,
    pub depends: DockerDepends,
}

/// Parses `text`, the content of `file`, for the package in `package_dir` (absolute).
pub fn parse(file: &Path, package_dir: &Path, text: &str) -> Result<BuildYml, PackageError> {
    if text.trim().is_empty() || text.lines().all(is_blank_or_comment) {
        return Err(PackageError::new(
            file,
            None,
            "empty document (linuxkit: EOF)",
        ));
    }
    let options = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::options::DuplicateKeyPolicy::Error,
        with_snippet: false,
    };
    let raw: Option<Raw> = serde_saphyr::from_str_with_options(text, options)
        .map_err(|e| yaml_error(file, text, &e))?;
    // A document that is only `~` decodes to the defaults, then fails on `image`.
    let raw = raw.unwrap_or_default();
    let image = raw.image.resolve(String::new());
    if image.is_empty() {
        return Err(PackageError::new(
            file,
            Some("image"),
            "Image field is required",
        ));
    }
    let extra_sources = raw
        .extra_sources
        .resolve(Vec::new())
        .into_iter()
        .map(|spec| extra_source(file, package_dir, spec))
        .collect::<Result<_, _>>()?;
    let depends = match raw.depends.resolve(RawDepends::default()).docker_images {
        Field::Value(images) => docker_depends(file, package_dir, images)?,
        Field::Absent | Field::Null => DockerDepends::default(),
    };
    Ok(BuildYml {
        image,
        org: raw.org.resolve(DEFAULT_ORG.to_owned()),
        tag: raw.tag.resolve("{{.Hash}}".to_owned()),
        dockerfile: raw.dockerfile.resolve("Dockerfile".to_owned()),
        arches: raw
            .arches
            .resolve(DEFAULT_ARCHES.iter().map(|a| a.to_string()).collect()),
        extra_sources,
        gitrepo: raw.gitrepo.resolve(DEFAULT_GITREPO.to_owned()),
        network: raw.network.resolve(false),
        disable_cache: raw.disable_cache.resolve(false),
        config: match raw.config {
            Field::Value(c) => Some(c),
            Field::Absent | Field::Null => None,
        },
        build_args: match raw.build_args {
            Field::Value(v) => Some(v),
            Field::Absent | Field::Null => None,
        },
        depends,
    })
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim();
    t.is_empty() || t.starts_with('#') || t == "---"
}

fn yaml_error(file: &Path, text: &str, e: &serde_saphyr::Error) -> PackageError {
    let line = e.location().map(|l| l.line() as usize);
    let mut message = e.to_string();
    // serde-saphyr appends its own "at line X column Y": the line is reported separately.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let field = field_named_in(&message).or_else(|| line.and_then(|l| key_at_line(text, l)));
    PackageError {
        file: file.to_owned(),
        field,
        line,
        message,
    }
}

/// The mapping key the value at 1-based `line` belongs to: the key on that line, or for a
/// list item or continuation, the nearest less-indented key above it.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut index = line.checked_sub(1)?.min(lines.len().checked_sub(1)?);
    let mut max_indent = usize::MAX;
    loop {
        let l = lines[index];
        let indent = l.len() - l.trim_start().len();
        let body = l.trim_start().trim_start_matches("- ");
        if indent < max_indent || (max_indent == usize::MAX) {
            if let Some((key, _)) = body.split_once(':') {
                let key = key.trim().trim_matches(['"', '\'']);
                if !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_alphanumeric() || "-_.".contains(c))
                {
                    return Some(key.to_owned());
                }
            }
            if !l.trim().is_empty() {
                max_indent = indent;
            }
        }
        index = index.checked_sub(1)?;
    }
}

/// The field an "unknown field `x`" / "duplicate key `x`" message names, if any.
fn field_named_in(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_owned())
}

fn extra_source(
    file: &Path,
    package_dir: &Path,
    spec: String,
) -> Result<ExtraSource, PackageError> {
    let parts: Vec<&str> = spec.split(':').collect();
    let [src, dst] = parts[..] else {
        return Err(PackageError::new(
            file,
            Some("extra-sources"),
            format!("bad source format in {spec}"),
        ));
    };
    if src.is_empty() || dst.is_empty() {
        return Err(PackageError::new(
            file,
            Some("extra-sources"),
            format!("bad source format in {spec}: empty source or destination"),
        ));
    }
    let src_path = Path::new(src);
    let src = normalize(&if src_path.is_absolute() {
        src_path.to_owned()
    } else {
        package_dir.join(src_path)
    });
    Ok(ExtraSource {
        src,
        dst: clean_unix(dst),
        spec,
    })
}

fn docker_depends(
    file: &Path,
    package_dir: &Path,
    raw: RawDockerImages,
) -> Result<DockerDepends, PackageError> {
    let field = |name: &str| Some(format!("depends.docker-images.{name}"));
    let err = |name: &str, message: String| PackageError {
        file: file.to_owned(),
        field: field(name),
        line: None,
        message,
    };
    let target_dir = raw.target_dir.resolve(String::new());
    let target = raw.target.resolve(String::new());
    let from_file = raw.from_file.resolve(String::new());
    let mut list = raw.list.resolve(Vec::new());
    if !target_dir.is_empty() && !target.is_empty() {
        return Err(err(
            "target",
            "\"depends.images.target\" and \"depends.images.target-dir\" are mutually exclusive"
                .into(),
        ));
    }
    if !from_file.is_empty() && !list.is_empty() {
        return Err(err(
            "list",
            "\"depends.images.list\" and \"depends.images.from-file\" are mutually exclusive"
                .into(),
        ));
    }
    let sub = |name: &str, value: &str| -> Result<Option<PathBuf>, PackageError> {
        subpath(package_dir, value).map_err(|reason| err(name, reason))
    };
    let target = match (sub("target", &target)?, sub("target-dir", &target_dir)?) {
        (Some(f), None) => Some(DependsTarget::File(f)),
        (None, Some(d)) => Some(DependsTarget::Dir(d)),
        _ => None,
    };
    if let Some(relative) = sub("from-file", &from_file)? {
        let path = package_dir.join(&relative);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            err(
                "from-file",
                format!("cannot read `{}`: {e}", path.display()),
            )
        })?;
        // linuxkit skips empty lines and lines starting with `#`; it does not trim.
        list.extend(
            text.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
    }
    let images = list
        .into_iter()
        .map(|reference| pinned_image(&reference).map_err(|m| err("list", m)))
        .collect::<Result<_, _>>()?;
    Ok(DockerDepends { images, target })
}

/// Validates `value` as a path relative to, inside and different from the package dir.
/// Returns it relative to the package dir (normalized), or `None` when empty.
///
/// linuxkit checks with a string prefix (`/pkg/ab` passes for `/pkg/a`); lkpkg checks by path
/// components, which is stricter and the only form that keeps writes inside the package.
fn subpath(package_dir: &Path, value: &str) -> Result<Option<PathBuf>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    let path = Path::new(value);
    if path.is_absolute() {
        return Err("must be relative to package directory".into());
    }
    let joined = normalize(&package_dir.join(path));
    if joined == package_dir {
        return Err("must not be exactly the package directory".into());
    }
    match joined.strip_prefix(package_dir) {
        Ok(relative) => Ok(Some(relative.to_owned())),
        Err(_) => Err("must be within package directory".into()),
    }
}

/// Parses `locator[:tag]@sha256:<hex>` and requires the digest, as linuxkit does.
pub fn pinned_image(reference: &str) -> Result<PinnedImage, String> {
    let Some((name, digest)) = reference.split_once('@') else {
        return Err(format!("image \"{reference}\" lacks a digest"));
    };
    let valid = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    });
    if !valid {
        return Err(format!(
            "unable to validate digest in \"{reference}\": invalid sha256 digest `{digest}`"
        ));
    }
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(format!("invalid image reference \"{reference}\""));
    }
    let (locator, _) = lkpkg_cache_format::reference::split_tag(name);
    Ok(PinnedImage {
        reference: reference.to_owned(),
        locator: locator.to_owned(),
        digest: digest.to_owned(),
    })
}

/// Lexically normalizes an absolute path (`.` and `..` resolved without touching the disk),
/// as Go's `filepath.Clean` does.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    out.push(component);
                }
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Go's `path.Clean` for a Unix path in the build context.
fn clean_unix(p: &str) -> String {
    let absolute = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (absolute, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

pub mod config;

#[cfg(test)]
mod tests;
