//! `build.yml`, read exactly as linuxkit reads it.
//!
//! linuxkit decodes build.yml with Go's yaml.v3 and `KnownFields(true)` into `pkgInfo`, a struct
//! that already holds the defaults (`NewPkgInfo`). lkpkg decodes into a description of that same
//! struct with yaml.v3's rules (`go_value`), so the quirks follow from the rules rather than
//! from a table of cases:
//!
//! | input                          | linuxkit's result                                     |
//! |--------------------------------|-------------------------------------------------------|
//! | key absent                     | the default (`org: linuxkit`, `arches: [amd64, arm64, riscv64]`, …) |
//! | a string key null or empty (`org:`, `org: ~`) | the default: yaml.v3 leaves a string alone on null |
//! | a string key `""`              | `""`                                                  |
//! | a list key null (`arches:`)    | no items: a nil slice                                 |
//! | `network:` null                | the default (`false`)                                 |
//! | `image: 0666` (any scalar in a string field) | the scalar's text, `"0666"`             |
//! | `network: yes` / `on` / `y`    | `true` (YAML 1.1 words in typed bools)                |
//! | a null item in a list (`arches: [a, ~]`) | dropped                                     |
//! | unknown key, duplicate key, wrong type | an error, with its line                       |
//! | empty file or only comments    | `EOF`                                                 |
//! | several documents              | the first one                                         |
//!
//! Validation that linuxkit does after decoding (`image` required, `extra-sources` format,
//! `depends.docker-images` rules) lives here too, so every package error is found before any
//! work starts. Each error names the file, the field and the line.
//!
//! The parser is granit-parser, the one under serde-saphyr: serde's data model cannot carry
//! what Go's decoding depends on (a scalar's source text and quoting, a null that is not a
//! reset), so the decoding is lkpkg's (`node`, `go_value`); ARCHITECTURE.md says why.

use std::path::{Component, Path, PathBuf};

use crate::error::PackageError;
use go_value::{DecodeError, Decoder, GoField as F, GoStruct, GoType as T, GoValue};

/// linuxkit's default architectures (`NewPkgInfo`).
pub(crate) const DEFAULT_ARCHES: [&str; 3] = ["amd64", "arm64", "riscv64"];
/// linuxkit's default `gitrepo`.
pub(crate) const DEFAULT_GITREPO: &str = "https://github.com/linuxkit/linuxkit";
/// linuxkit's default organisation.
pub(crate) const DEFAULT_ORG: &str = "linuxkit";

const STRINGS: T = T::Slice(&T::String);

/// `pkglib.pkgInfo`, the struct linuxkit decodes build.yml into.
static PKG_INFO: GoStruct = GoStruct {
    name: "pkglib.pkgInfo",
    fields: &[
        F::new("image", false, T::String),
        F::new("org", false, T::String),
        F::new("tag", true, T::String),
        F::new("dockerfile", false, T::String),
        F::new("arches", false, STRINGS),
        F::new("extra-sources", false, STRINGS),
        F::new("gitrepo", false, T::String),
        F::new("network", false, T::Bool),
        F::new("disable-cache", false, T::Bool),
        F::new("config", false, T::Ptr(&T::Struct(&config::IMAGE_CONFIG))),
        F::new("buildArgs", true, T::Ptr(&STRINGS)),
        F::new("depends", false, T::Struct(&DEPENDS)),
    ],
};
static PKG_INFO_TYPE: T = T::Struct(&PKG_INFO);

/// `pkgInfo.Depends` (an anonymous struct in Go).
static DEPENDS: GoStruct = GoStruct {
    name: "pkglib.pkgInfo.Depends",
    fields: &[F::new("docker-images", false, T::Struct(&DOCKER_IMAGES))],
};

/// `pkgInfo.Depends.DockerImages`.
static DOCKER_IMAGES: GoStruct = GoStruct {
    name: "pkglib.pkgInfo.Depends.DockerImages",
    fields: &[
        F::new("target-dir", false, T::String),
        F::new("target", false, T::String),
        F::new("from-file", false, T::String),
        F::new("list", false, STRINGS),
    ],
};

/// `NewPkgInfo()`: the value build.yml is decoded over.
fn defaults() -> GoValue {
    let strings = |items: &[&str]| {
        GoValue::Slice(
            items
                .iter()
                .map(|s| GoValue::String((*s).to_owned()))
                .collect(),
        )
    };
    let mut value = PKG_INFO_TYPE.zero();
    let GoValue::Struct(fields) = &mut value else {
        unreachable!("a struct's zero value is a struct")
    };
    for (field, slot) in PKG_INFO.fields.iter().zip(fields.iter_mut()) {
        match field.yaml {
            "org" => *slot = GoValue::String(DEFAULT_ORG.into()),
            "tag" => *slot = GoValue::String("{{.Hash}}".into()),
            "dockerfile" => *slot = GoValue::String("Dockerfile".into()),
            "gitrepo" => *slot = GoValue::String(DEFAULT_GITREPO.into()),
            "arches" => *slot = strings(&DEFAULT_ARCHES),
            _ => {}
        }
    }
    value
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
    let root = node::parse(text).map_err(|e| PackageError {
        file: file.to_owned(),
        field: None,
        line: e.line,
        message: e.message,
    })?;
    let Some(root) = root else {
        return Err(PackageError::new(
            file,
            None,
            "empty document (linuxkit: EOF)",
        ));
    };
    let mut value = defaults();
    let mut decoder = Decoder::default();
    decoder
        .decode(&root, &PKG_INFO_TYPE, &mut value)
        .map_err(|e| decode_error(file, e, 0))?;
    if let Some(first) = decoder.errors.first() {
        return Err(decode_error(file, first.clone(), decoder.errors.len() - 1));
    }
    let field = |name: &str| value.field(&PKG_INFO, name);
    let string = |name: &str| field(name).as_str().unwrap_or_default().to_owned();
    let image = string("image");
    if image.is_empty() {
        return Err(PackageError::new(
            file,
            Some("image"),
            "Image field is required",
        ));
    }
    let extra_sources = field("extra-sources")
        .as_strings()
        .unwrap_or_default()
        .into_iter()
        .map(|spec| extra_source(file, package_dir, spec))
        .collect::<Result<_, _>>()?;
    let docker_images = field("depends").field(&DEPENDS, "docker-images");
    let depends = docker_depends(file, package_dir, docker_images)?;
    let config = match field("config").deref() {
        None => None,
        Some(config) => Some(
            config::ImageConfig::from_value(config)
                .map_err(|m| PackageError::new(file, Some("config"), m))?,
        ),
    };
    Ok(BuildYml {
        image,
        org: string("org"),
        tag: string("tag"),
        dockerfile: string("dockerfile"),
        arches: field("arches").as_strings().unwrap_or_default(),
        extra_sources,
        gitrepo: string("gitrepo"),
        network: field("network").as_bool().unwrap_or_default(),
        disable_cache: field("disable-cache").as_bool().unwrap_or_default(),
        config,
        build_args: field("buildArgs").as_strings(),
        depends,
    })
}

/// A decoding error as a package error; `more` other errors were found too.
fn decode_error(file: &Path, e: DecodeError, more: usize) -> PackageError {
    let mut message = e.message;
    if more > 0 {
        message.push_str(&format!(" (and {more} more)"));
    }
    PackageError {
        file: file.to_owned(),
        field: (!e.path.is_empty()).then_some(e.path),
        line: Some(e.line),
        message,
    }
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
    raw: &GoValue,
) -> Result<DockerDepends, PackageError> {
    let field = |name: &str| Some(format!("depends.docker-images.{name}"));
    let err = |name: &str, message: String| PackageError {
        file: file.to_owned(),
        field: field(name),
        line: None,
        message,
    };
    let string = |name: &str| {
        raw.field(&DOCKER_IMAGES, name)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let target_dir = string("target-dir");
    let target = string("target");
    let from_file = string("from-file");
    let mut list = raw
        .field(&DOCKER_IMAGES, "list")
        .as_strings()
        .unwrap_or_default();
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
    // Where linuxkit deletes and writes the archives (`rm -rf target-dir`, then into it):
    // under a symlink out of the package that is outside. lkpkg writes nothing there (the
    // archives are placed in the build context), but the package is refused as linuxkit would
    // have damaged the outside. The target itself may be a link: linuxkit removes the link.
    if let Some(target) = &target {
        let (field, relative) = match target {
            DependsTarget::File(file) => ("target", file),
            DependsTarget::Dir(dir) => ("target-dir", dir),
        };
        if let Some(parent) = package_dir.join(relative).parent() {
            crate::confine::within(parent, package_dir).map_err(|m| err(field, m))?;
        }
    }
    if let Some(relative) = sub("from-file", &from_file)? {
        let path = package_dir.join(&relative);
        crate::confine::within(&path, package_dir).map_err(|m| err("from-file", m))?;
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

/// containerd's `reference.Parse`, which linuxkit uses for `depends.docker-images`: it reads
/// the reference as the URL `dummy://<reference>`, so the part before the first `/` must be a
/// host. `alpine@sha256:…` and `alpine:3.20@sha256:…` are refused (the `@` makes `alpine` a
/// user name and `sha256:…` a host with a bad port); `docker.io/library/alpine:3.20@sha256:…`
/// and `library/alpine@sha256:…` are fine.
fn containerd_parse(reference: &str) -> Result<(), String> {
    if reference.contains("://") {
        return Err(format!("invalid reference {reference:?}"));
    }
    let end = reference.find(['/', '?', '#']).unwrap_or(reference.len());
    let authority = &reference[..end];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() {
        return Err(format!("hostname required in {reference:?}"));
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !port.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "parse \"dummy://{reference}\": invalid port \":{port}\" after host"
        ));
    }
    Ok(())
}

/// Parses `locator[:tag]@sha256:<hex>` and requires the digest, as linuxkit does.
pub(crate) fn pinned_image(reference: &str) -> Result<PinnedImage, String> {
    containerd_parse(reference)?;
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
pub(crate) fn normalize(path: &Path) -> PathBuf {
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

pub(crate) mod config;
mod go_json;
mod go_value;
mod node;

#[cfg(test)]
mod tests;
