//! What the scheduler hashes and the executor passes: build arguments and labels in
//! linuxkit's order, with its presets (reference §5.7–§5.8), and the annotations of a
//! package's multi-arch index.

use std::collections::BTreeMap;

use crate::graph::GraphPackage;
use crate::workspace::{Workspace, Workspaces};

/// The annotations of a package's multi-arch index: where linuxkit's source and revision
/// labels go in lkpkg (the index is a name for people and registries; per-platform images
/// stay reproducible). The revision is HEAD, and only for a clean package, as linuxkit labels.
pub(crate) fn index_annotations(
    package: &GraphPackage,
    workspaces: &Workspaces,
) -> BTreeMap<String, String> {
    let workspace = package_workspace(package, workspaces);
    let workspace = workspace.as_deref();
    let mut annotations = BTreeMap::new();
    if workspace.is_some() {
        annotations.insert(
            "org.opencontainers.image.source".to_owned(),
            package.package.yml.gitrepo.clone(),
        );
        if !package.package.tag.dirty
            && let Some(head) = workspace.and_then(Workspace::head_commit)
        {
            annotations.insert("org.opencontainers.image.revision".to_owned(), head);
        }
    }
    annotations
}

/// Build arguments in linuxkit's order: build.yml's (resolved), `--build-arg-file`'s
/// overriding them, then the presets where absent (`SOURCE`, `REVISION` when clean,
/// `GOPKGVERSION`, `PKG_HASH`, `PKG_IMAGE`), then the proxy variables of the environment.
pub(crate) fn build_args(
    package: &GraphPackage,
    workspaces: &Workspaces,
    proxies: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let workspace = package_workspace(package, workspaces);
    let workspace = workspace.as_deref();
    let mut args: BTreeMap<String, String> = package
        .build_args
        .iter()
        .map(|a| (a.key.clone(), a.value.clone()))
        .collect();
    let tag = &package.package.tag;
    let head = workspace.and_then(Workspace::head_commit);
    let mut preset = |k: &str, v: String| {
        args.entry(k.to_owned()).or_insert(v);
    };
    preset("SOURCE", package.package.yml.gitrepo.clone());
    if !tag.dirty
        && let Some(head) = &head
    {
        preset("REVISION", head.clone());
    }
    if let Some(version) = workspace.and_then(go_pkg_version) {
        preset("GOPKGVERSION", version);
    }
    preset("PKG_HASH", tag.hash.clone());
    preset("PKG_IMAGE", tag.image());
    for (proxy, value) in proxies {
        args.entry(proxy.clone()).or_insert_with(|| value.clone());
    }
    args
}

/// linuxkit's `GOPKGVERSION`: its `git describe` pattern never matches (literal quotes), so it
/// is always `v0.0.0-<committer date, UTC here, %Y%m%d%H%M%S>-<12 hex of HEAD>`. linuxkit
/// formats the date in the local time zone; lkpkg uses UTC so that the value does not depend on
/// the machine (what linuxkit gives with TZ=UTC).
/// The repository of the package (linuxkit asks git in the package's directory). Opening it
/// was done when the package's tag was computed, so it cannot fail here.
fn package_workspace(
    package: &GraphPackage,
    workspaces: &Workspaces,
) -> Option<std::sync::Arc<Workspace>> {
    workspaces.for_path(&package.package.dir).ok().flatten()
}

fn go_pkg_version(workspace: &Workspace) -> Option<String> {
    let (id, seconds) = workspace.head()?;
    Some(format!("v0.0.0-{}-{}", utc_compact(*seconds), &id[..12]))
}

/// `%Y%m%d%H%M%S` in UTC for a unix time.
pub(crate) fn utc_compact(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}{:02}{:02}{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The labels lkpkg puts on a package image: linuxkit's, except the revision.
///
/// linuxkit also labels clean builds with `org.opencontainers.image.revision` = HEAD. That
/// label changes with every commit, so no image would ever be byte-identical to an earlier
/// build of the same inputs, and early cutoff (and reproducibility) would be impossible. lkpkg
/// leaves it out of the image and puts it on the package's multi-arch index instead
/// ([`index_annotations`]).
pub(crate) fn labels(package: &GraphPackage, workspaces: &Workspaces) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    if package_workspace(package, workspaces).is_some() {
        labels.insert(
            "org.opencontainers.image.source".to_owned(),
            package.package.yml.gitrepo.clone(),
        );
    }
    if let Some(config) = &package.package.yml.config {
        labels.insert(
            "org.mobyproject.config".to_owned(),
            config.label_json().to_owned(),
        );
    }
    labels.insert(
        "org.mobyproject.linuxkit.version".to_owned(),
        format!("lkpkg {}", env!("CARGO_PKG_VERSION")),
    );
    labels
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc_compact(0), "19700101000000");
        // 2026-03-27 12:26:05 UTC, linuxkit's reference commit.
        assert_eq!(super::utc_compact(1_774_614_365), "20260327122605");
    }
}
