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

/// Checks a full reference (`host/path:tag`, optionally `@algo:hex`) against the grammar of
/// `distribution/reference`, which registries, the engine and linuxkit enforce: lower-case path
/// components (`[a-z0-9]+` joined by `.`, `_`, `__` or dashes), a host with an optional port,
/// a tag of `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, and a name of at most 255 characters. A cache
/// name outside it (upper case, spaces, newlines, `..`) can be neither pulled nor pushed.
///
/// ```
/// use lkpkg_cache_format::reference::validate;
/// assert!(validate("docker.io/linuxkit/init:abc-amd64").is_ok());
/// assert!(validate("localhost:5000/a/b_c:1.0").is_ok());
/// assert!(validate("docker.io/UPPER/x:1").is_err());
/// assert!(validate("docker.io/a/../x:y").is_err());
/// assert!(validate("docker.io/a b:1").is_err());
/// ```
pub fn validate(reference: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("invalid image name {reference:?}: {why}"));
    let (name_and_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (name, tag) = split_tag(name_and_tag);
    if name.len() > 255 {
        return bad("longer than 255 characters");
    }
    let mut components = name.split('/').peekable();
    let first = components.next().unwrap_or_default();
    let has_domain =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_domain {
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        let host_ok = !host.is_empty()
            && host.split('.').all(|part| {
                !part.is_empty()
                    && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            });
        if !host_ok || port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()))
        {
            return bad("bad registry host");
        }
    } else if !path_component(first) {
        return bad("path components are lower-case letters, digits and single separators");
    }
    for component in components {
        if !path_component(component) {
            return bad("path components are lower-case letters, digits and single separators");
        }
    }
    if let Some(tag) = tag {
        let ok = (1..=128).contains(&tag.len())
            && tag
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
        if !ok {
            return bad("a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}");
        }
    }
    if let Some(digest) = digest {
        let ok = digest.split_once(':').is_some_and(|(algo, hex)| {
            !algo.is_empty()
                && algo
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
                && hex.len() >= 32
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !ok {
            return bad("bad digest");
        }
    }
    Ok(())
}

/// `[a-z0-9]+` joined by one of `.`, `_`, `__` or any run of `-`.
fn path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty()
        || !bytes[0].is_ascii_alphanumeric()
        || !bytes[bytes.len() - 1].is_ascii_alphanumeric()
    {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_lowercase() || b.is_ascii_digit() {
            i += 1;
            continue;
        }
        let run_end = bytes[i..]
            .iter()
            .position(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            .map_or(bytes.len(), |p| i + p);
        let separator = &component[i..run_end];
        let ok = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|c| c == b'-');
        if !ok {
            return false;
        }
        i = run_end;
    }
    true
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
