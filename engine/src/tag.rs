//! Package tags, computed exactly as `linuxkit pkg show-tag` computes them.
//!
//! A tag is `org/image:<template(hash)>`, where the hash is:
//!
//! 1. `--hash X` (or `--dev`: `dev`), taken as is; otherwise
//! 2. the git tree id of the package directory (or of `--hash-path`) at `--hash-commit`;
//! 3. with `extra-sources`: `sha1(tree(pkg) ‖ tree(src1) ‖ …)` over the ASCII hex ids;
//! 4. when the package (the hash path) is dirty against HEAD and the commit is literally
//!    `HEAD`, or with `--force-dirty`: `-dirty-` and the first 7 hex digits of linuxkit's
//!    content hash ([`crate::workspace::Workspace::linuxkit_content_hash`]). Extra sources are never checked.
//!
//! Outside git the hash is empty, the template yields `""` and the tag becomes `latest`.
//! The tag is a name for humans and registries; whether a build is fresh is decided by the
//! build key (see the fingerprint module), never by the tag.

use std::path::{Path, PathBuf};

use sha1::{Digest, Sha1};

use crate::build_yml::BuildYml;
use crate::error::{Error, Result};
use crate::workspace::Workspaces;

/// linuxkit's `pkg` flags that change tags (`PkglibConfig`).
#[derive(Debug, Clone)]
pub struct TagOptions {
    /// `--org`, or `LINUXKIT_PKG_ORG` when the flag is unset.
    pub org: Option<String>,
    /// `--hash`.
    pub hash: Option<String>,
    /// `--tag` (a template over `{{.Hash}}`), only when given.
    pub tag_template: Option<String>,
    /// `--hash-commit`.
    pub hash_commit: String,
    /// `--hash-path`.
    pub hash_path: Option<PathBuf>,
    /// `--force-dirty`.
    pub force_dirty: bool,
    /// `--dev`: org `$USER`, hash `dev`.
    pub dev: bool,
    /// `$USER` (the org `--dev` gives), from the binary's [`crate::ops::Environment`].
    pub user: Option<String>,
}

impl Default for TagOptions {
    /// The configuration `@lkt:` references are resolved with: linuxkit ignores the command
    /// line's tag options there (`PkglibConfig{BuildYML, HEAD}`).
    fn default() -> Self {
        TagOptions {
            org: None,
            hash: None,
            tag_template: None,
            hash_commit: "HEAD".into(),
            hash_path: None,
            force_dirty: false,
            dev: false,
            user: None,
        }
    }
}

/// A package's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageTag {
    pub org: String,
    pub image: String,
    /// The hash (`<tree>`, `<sha1>`, `<…>-dirty-<7 hex>`, `--hash`), `""` outside git.
    pub hash: String,
    /// The template's output; `""` means `latest`.
    pub tag: String,
    /// Whether git says the package is dirty (also with `--hash`).
    pub dirty: bool,
}

impl PackageTag {
    /// `org/image:tag` (linuxkit's `Tag()`).
    pub fn tag(&self) -> String {
        let tag = if self.tag.is_empty() {
            "latest"
        } else {
            &self.tag
        };
        format!("{}/{}:{tag}", self.org, self.image)
    }

    /// `org/image` (linuxkit's `Image()`).
    pub fn image(&self) -> String {
        format!("{}/{}", self.org, self.image)
    }

    /// The canonical reference, `docker.io/org/image:tag` (linuxkit's `FullTag()`).
    pub fn full_tag(&self) -> String {
        lkpkg_cache_format::reference::expand(&self.tag())
    }

    /// The tag part alone (`latest` when empty).
    pub fn tag_text(&self) -> &str {
        if self.tag.is_empty() {
            "latest"
        } else {
            &self.tag
        }
    }
}

/// Computes the tag of the package in `dir` (absolute) described by `yml`.
pub(crate) fn compute(
    workspaces: &Workspaces,
    dir: &Path,
    build_yml_path: &Path,
    yml: &BuildYml,
    options: &TagOptions,
) -> Result<PackageTag> {
    let hash_path = match &options.hash_path {
        None => dir.to_owned(),
        Some(p) => {
            let p =
                crate::build_yml::normalize(&std::path::absolute(p).map_err(|e| Error::io(p, e))?);
            if !dir.to_string_lossy().starts_with(&*p.to_string_lossy()) {
                return Err(Error::Usage(
                    "Hash path is not a prefix of the package path".into(),
                ));
            }
            p
        }
    };
    let mut org = yml.org.clone();
    let mut hash = options.hash.clone().unwrap_or_default();
    if options.dev {
        org = options.user.clone().unwrap_or_default();
        if hash.is_empty() {
            hash = "dev".into();
        }
    }
    if let Some(o) = &options.org {
        org = o.clone();
    }

    let mut source_hashes = String::new();
    for source in &yml.extra_sources {
        let ws = match workspaces.for_path(&source.src)? {
            // Through a symlink, it must still be in that repository.
            Some(ws) => {
                crate::confine::within(&source.src, ws.root()).map_err(|m| {
                    crate::error::PackageError::new(build_yml_path, Some("extra-sources"), m)
                })?;
                ws
            }
            None => {
                return Err(crate::error::PackageError::new(
                    build_yml_path,
                    Some("extra-sources"),
                    format!("source {} not in a git repository", source.src.display()),
                )
                .into());
            }
        };
        if !source.src.is_dir() {
            return Err(crate::error::PackageError::new(
                build_yml_path,
                Some("extra-sources"),
                format!("source {} is not a directory", source.src.display()),
            )
            .into());
        }
        source_hashes.push_str(&ws.tree_hash(&source.src, &options.hash_commit)?);
    }

    let mut dirty = false;
    if let Some(ws) = workspaces.for_path(dir)? {
        let git_dirty = options.hash_commit == "HEAD" && ws.is_dirty(&hash_path)?;
        dirty = options.force_dirty || git_dirty;
        if hash.is_empty() {
            hash = ws.tree_hash(&hash_path, &options.hash_commit)?;
            if !source_hashes.is_empty() {
                hash.push_str(&source_hashes);
                hash = hex::encode(Sha1::digest(hash.as_bytes()));
            }
            if dirty {
                let content = ws.linuxkit_content_hash(dir)?;
                hash.push_str("-dirty-");
                hash.push_str(&content[..7]);
            }
        }
    }

    let template = options.tag_template.as_deref().unwrap_or(&yml.tag);
    let template = if template.is_empty() {
        "{{.Hash}}"
    } else {
        template
    };
    let tag =
        crate::tag_template::render(template, &hash).map_err(|e| match options.tag_template {
            // The template came from the command line: blame it, not build.yml.
            Some(_) => Error::Usage(format!("--tag `{template}`: {e}")),
            None => crate::error::PackageError::new(build_yml_path, Some("tag"), e).into(),
        })?;
    Ok(PackageTag {
        org,
        image: yml.image.clone(),
        hash,
        tag,
        dirty,
    })
}
