//! `explain` and `pkg build --dry-run` agree with `pkg build` on every flag that changes what
//! a unit is: after a build with the flag, `explain` with it reports every unit fresh and the
//! dry run plans nothing; without it, `explain` reports something stale (so the flag matters,
//! and the check could fail). All three make their plan in `lkpkg_engine::ops`.

use std::path::Path;

use crate::registry::TestRegistry;
use crate::support::{Repo, ok, run};

use crate::support::lkpkg_on as lkpkg;

/// The units `explain --message-format json` reports, with whether each is fresh.
fn explained(repo: &Repo, cache: &Path, flags: &[&str], dir: &str) -> Vec<(String, bool)> {
    let out = ok(lkpkg(repo, cache)
        .args(["--message-format", "json", "explain"])
        .args(flags)
        .arg(dir));
    out.lines()
        .map(|line| {
            let v = crate::support::json_output("explain", line);
            (
                v["unit"].as_str().unwrap().to_owned(),
                v["fresh"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn explain_and_dry_run_agree_with_build_on_every_key_flag() {
    let registry = TestRegistry::plain();
    let base = format!("{}/agree/base:1", registry.host());
    let repo = Repo::new();
    // `app` has everything a flag can change: a base that is not a package (--ignore-cached),
    // a build argument (--build-arg-file), a second Dockerfile (--dockerfile) and a RUN step
    // (--network, --disable-cache). `multi` has two platforms (--platforms, --skip-platforms).
    let test_id = format!("agree {}", std::process::id());
    repo.write(
        "base/build.yml",
        "image: base\norg: agree\narches: [amd64]\n",
    )
    .write(
        "base/Dockerfile",
        "FROM scratch\nCOPY bin/ /bin/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n",
    )
    .busybox_bin("base", &test_id)
    .write("app/build.yml", "image: app\norg: agree\narches: [amd64]\n")
    .write(
        "app/Dockerfile",
        &format!("FROM {base}\nARG WHO=nobody\nRUN echo \"$WHO\" > /who\n"),
    )
    .write(
        "app/Dockerfile.alt",
        &format!("FROM {base}\nRUN echo alt > /who\n"),
    )
    .write("app/args.txt", "WHO=somebody\n")
    .write(
        "multi/build.yml",
        "image: multi\norg: agree\narches: [amd64, arm64]\n",
    )
    .write("multi/Dockerfile", "FROM scratch\nCOPY build.yml /\n");
    repo.commit_all("packages");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    // The base is published, and imported into the cache under its name, as a machine that
    // built it before would hold it.
    ok(lkpkg(&repo, &cache).args(["pkg", "build", "base"]));
    let built = ok(repo
        .lkpkg()
        .args(["pkg", "show-tag", "--canonical", "base"]));
    ok(lkpkg(&repo, &cache).args([
        "cache",
        "push",
        &format!("{}-amd64", built.trim()),
        "--remote-name",
        &base,
    ]));
    ok(lkpkg(&repo, &cache).args(["cache", "pull", &base]));

    ok(lkpkg(&repo, &cache).args(["pkg", "build", "app"]));

    // Each flag, in turn: before the build with it, `explain` with it sees a unit to build
    // (the flag changes a key or the set of units); after, every unit fresh and nothing
    // planned. The earlier cases' builds stay in the cache, so each case's "before" is
    // stale for its own flag alone.
    let args_file = repo.join("app/args.txt");
    // (package, flags, the units explain must list when the flag changes the set)
    type Case<'a> = (&'a str, &'a [&'a str], Option<&'a [&'a str]>);
    let cases: &[Case] = &[
        ("app", &["--network"], None),
        ("app", &["--disable-cache"], None),
        (
            "app",
            &["--build-arg-file", args_file.to_str().unwrap()],
            None,
        ),
        ("app", &["--dockerfile", "Dockerfile.alt"], None),
        ("app", &["--ignore-cached"], None),
        (
            "multi",
            &["--platforms", "linux/arm64"],
            Some(&["multi/arm64"]),
        ),
        (
            "multi",
            &["--skip-platforms", "linux/arm64"],
            Some(&["multi/amd64"]),
        ),
    ];
    let mut failures = Vec::new();
    for (dir, flags, units_expected) in cases {
        let before = explained(&repo, &cache, flags, dir);
        if !before.iter().any(|(_, fresh)| !fresh) {
            failures.push(format!("{flags:?}: explain before the build: {before:?}"));
        }
        let (code, _, err) = run(lkpkg(&repo, &cache)
            .args(["pkg", "build"])
            .args(*flags)
            .arg(dir));
        assert_eq!(code, 0, "{flags:?}: {err}");
        let after = explained(&repo, &cache, flags, dir);
        if after.is_empty() || after.iter().any(|(_, fresh)| !fresh) {
            failures.push(format!("{flags:?}: explain after the build: {after:?}"));
        }
        if let Some(expected) = units_expected {
            let units: Vec<&str> = after.iter().map(|(u, _)| u.as_str()).collect();
            if units != *expected {
                failures.push(format!("{flags:?}: explain's units {units:?}"));
            }
        }
        let plan = ok(lkpkg(&repo, &cache)
            .args(["--message-format", "json", "pkg", "build", "--dry-run"])
            .args(*flags)
            .arg(dir));
        if plan.contains("\"would-build\"") || !plan.contains("\"fresh\"") {
            failures.push(format!("{flags:?}: the dry run after the build:\n{plan}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
