//! linuxkit's canonical image references.
//!
//! linuxkit names everything in its cache and in registries by the *expanded* reference
//! (`util.ReferenceExpand`): one path segment gains `docker.io/library/`, two segments gain
//! `docker.io/` unless the first one looks like a registry host (contains `.` or `:`, or is
//! `localhost`), three or more are left alone. No `:latest` is added: a package tag always has
//! one. Per-architecture entries append `-<arch>` to the whole reference.

/// Expands `org/image:tag` the way linuxkit's `ReferenceExpand` does.
///
/// ```
/// use lkpkg_cache_format::reference::expand;
/// assert_eq!(expand("linuxkit/init:abc"), "docker.io/linuxkit/init:abc");
/// assert_eq!(expand("alpine:3.20"), "docker.io/library/alpine:3.20");
/// assert_eq!(expand("localhost:5000/x/y:1"), "localhost:5000/x/y:1");
/// assert_eq!(expand("reg.example:5000/y:1"), "reg.example:5000/y:1");
/// ```
pub fn expand(reference: &str) -> String {
    let mut parts = reference.split('/');
    let first = parts.next().unwrap_or_default();
    match reference.split('/').count() {
        1 => format!("docker.io/library/{reference}"),
        2 if !first.contains('.') && !first.contains(':') && first != "localhost" => {
            format!("docker.io/{reference}")
        }
        _ => reference.to_owned(),
    }
}

/// The per-architecture name linuxkit gives one platform's image: `<full>-<arch>`.
pub fn per_arch(full: &str, arch: &str) -> String {
    format!("{full}-{arch}")
}

/// Splits a reference into its repository (everything before the tag) and tag, if any.
/// A `:` inside the host part (`localhost:5000/x`) is not a tag separator.
pub fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let reference = reference.split('@').next().unwrap_or(reference);
    let last_segment_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_segment_start..].rfind(':') {
        Some(i) => {
            let at = last_segment_start + i;
            (&reference[..at], Some(&reference[at + 1..]))
        }
        None => (reference, None),
    }
}

/// The digest part of `name@sha256:...`, if any.
pub fn digest_part(reference: &str) -> Option<&str> {
    reference.split_once('@').map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_linuxkit() {
        for (input, want) in [
            ("redis", "docker.io/library/redis"),
            ("foo/bar:1", "docker.io/foo/bar:1"),
            ("localhost/bar:1", "localhost/bar:1"),
            ("a.b/bar:1", "a.b/bar:1"),
            ("a/b/c:1", "a/b/c:1"),
            ("docker.io/a/b:1", "docker.io/a/b:1"),
        ] {
            assert_eq!(expand(input), want, "{input}");
        }
    }

    #[test]
    fn splits_tags() {
        assert_eq!(split_tag("a/b:c"), ("a/b", Some("c")));
        assert_eq!(split_tag("localhost:5000/b"), ("localhost:5000/b", None));
        assert_eq!(
            split_tag("localhost:5000/b:t@sha256:00"),
            ("localhost:5000/b", Some("t"))
        );
        assert_eq!(digest_part("x@sha256:00"), Some("sha256:00"));
    }
}
