//! One check for every path build.yml or the command line names (a Dockerfile, a `from-file`,
//! build.yml itself, an extra source): resolved through symlinks, it must stay inside where it
//! belongs. A lexical check alone (no `..`, a relative path) lets `pkg/Dockerfile -> /etc/passwd`
//! or `extra-sources: [link:/x]` with `link -> /elsewhere` read files outside into an image, an
//! engine's error message or the cache.

use std::path::{Path, PathBuf};

/// `path` (which must already be lexically inside `boundary`) resolved through symlinks, if it
/// stays inside `boundary` resolved the same way. A path that does not exist is judged by its
/// nearest ancestor that does (`link/new.tar` with `link -> /elsewhere` lands outside, though
/// nothing is there yet) and returned as given: whoever reads it reports it missing (a
/// dangling link cannot be read either).
pub(crate) fn within(path: &Path, boundary: &Path) -> Result<PathBuf, String> {
    let (resolved, exists) = match path.canonicalize() {
        Ok(resolved) => (resolved, true),
        Err(_) => match resolve_existing_ancestor(path) {
            Some(resolved) => (resolved, false),
            None => return Ok(path.to_owned()),
        },
    };
    let boundary_resolved = boundary
        .canonicalize()
        .unwrap_or_else(|_| boundary.to_owned());
    if resolved.starts_with(&boundary_resolved) {
        Ok(if exists { resolved } else { path.to_owned() })
    } else {
        Err(format!(
            "`{}` resolves (through a symlink) to `{}`, outside `{}`",
            path.display(),
            resolved.display(),
            boundary.display()
        ))
    }
}

/// The nearest ancestor of `path` that exists, resolved through symlinks, with the rest of
/// `path` (the components that do not exist yet) joined back on.
fn resolve_existing_ancestor(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut current = path;
    while let Some(parent) = current.parent() {
        rest.push(current.file_name()?);
        if let Ok(resolved) = parent.canonicalize() {
            return Some(rest.iter().rev().fold(resolved, |p, c| p.join(c)));
        }
        current = parent;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::within;

    #[test]
    fn symlinks_out_are_refused_and_in_are_fine() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("pkg");
        std::fs::create_dir_all(pkg.join("sub")).unwrap();
        std::fs::write(pkg.join("sub/Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(outside.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), pkg.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path(), pkg.join("outdir")).unwrap();
        std::os::unix::fs::symlink("sub/Dockerfile", pkg.join("in")).unwrap();
        assert!(
            within(&pkg.join("out"), &pkg)
                .unwrap_err()
                .contains("outside")
        );
        assert!(within(&pkg.join("outdir/secret"), &pkg).is_err());
        assert!(within(&pkg.join("in"), &pkg).is_ok());
        assert!(within(&pkg.join("sub/Dockerfile"), &pkg).is_ok());
        assert!(within(&pkg.join("missing"), &pkg).is_ok());
        // Not there yet, but under a link out: outside.
        assert!(within(&pkg.join("outdir/new/x.tar"), &pkg).is_err());
        assert_eq!(
            within(&pkg.join("sub/new/x.tar"), &pkg).unwrap(),
            pkg.join("sub/new/x.tar")
        );
    }
}
