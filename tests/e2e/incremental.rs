//! Cargo-style incremental builds against the real engine: build keys decide, dependents
//! rebuild when what they consume changed (and say why), early cutoff, reverts reuse records,
//! foreign cache entries are treated as linuxkit would, and no result is ever stale.
//!
//! The fixture: `base` → `app1`, `app2` (through `@lkt:pkg:`) → `app3` (from `app1`); `app2`
//! has an extra source; `solo` is independent. Outputs are reproducible (SOURCE_DATE_EPOCH is
//! fixed), so a `--force` build from scratch must give byte-identical images.

use std::collections::BTreeMap;

use crate::support::{Repo, file_in_image, ok, run};

const EPOCH: &str = "1700000000";

fn fixture(tag: &str) -> Repo {
    let repo = Repo::new();
    repo.busybox_bin("base", tag);
    let yml = |name: &str, extra: &str| {
        format!("image: {name}-{tag}\norg: lkpkgtest\narches: [amd64]\n{extra}")
    };
    repo.write("base/build.yml", &yml("base", ""))
        .write("base/data.txt", "base v1\n")
        .write(
            "base/Dockerfile",
            "FROM scratch\nCOPY bin/ /bin/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY data.txt /base.txt\nRUN mkdir -p /var && echo built > /var/built\n",
        )
        .write("app1/build.yml", &yml("app1", "buildArgs:\n  - BASE=@lkt:pkg:../base\n"))
        .write("app1/Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN cat /base.txt > /app1.txt\n")
        .write(
            "app2/build.yml",
            &yml("app2", "buildArgs:\n  - BASE=@lkt:pkg:../base\nextra-sources:\n  - ../shared:/shared\n"),
        )
        .write("app2/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY shared/ /shared/\nRUN cat /base.txt /shared/value > /app2.txt\n")
        .write("shared/value", "shared v1\n")
        .write("app3/build.yml", &yml("app3", "buildArgs:\n  - FROM_APP1=@lkt:pkg:../app1\n"))
        .write("app3/Dockerfile", "ARG FROM_APP1\nFROM ${FROM_APP1}\nRUN cat /app1.txt > /app3.txt\n")
        .write("solo/build.yml", &yml("solo", ""))
        .write("solo/Dockerfile", "FROM scratch\nCOPY build.yml /\n");
    repo.commit_all("init");
    repo
}

/// One build's events by unit: (type, reason, digest).
struct Outcome {
    events: BTreeMap<String, (String, String, String)>,
    stderr: String,
}

impl Outcome {
    fn kind(&self, unit: &str) -> &str {
        self.events.get(unit).map_or("?", |e| e.0.as_str())
    }
    fn reason(&self, unit: &str) -> &str {
        self.events.get(unit).map_or("", |e| e.1.as_str())
    }
}

fn build(repo: &Repo, cache: &std::path::Path, extra: &[&str]) -> Outcome {
    let mut cmd = repo.lkpkg();
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "--cache",
            cache.to_str().unwrap(),
            "--message-format",
            "json",
            "pkg",
            "build",
        ])
        .args(extra);
    let (code, stdout, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "build failed:\n{stdout}\n{stderr}");
    let mut events = BTreeMap::new();
    for line in stdout.lines() {
        let event = crate::support::json_output("build-event", line);
        let kind = event["type"].as_str().unwrap().to_owned();
        let Some(unit) = event["unit"].as_str() else {
            continue;
        };
        let entry =
            events
                .entry(unit.to_owned())
                .or_insert((String::new(), String::new(), String::new()));
        match kind.as_str() {
            "started" => {
                *entry = (
                    "built".into(),
                    event["reason"].as_str().unwrap().into(),
                    String::new(),
                )
            }
            "finished" => entry.2 = event["digest"].as_str().unwrap().into(),
            "fresh" => {
                *entry = (
                    "fresh".into(),
                    event["reason"].as_str().unwrap().into(),
                    event["digest"].as_str().unwrap().into(),
                )
            }
            "would-build" => {
                *entry = (
                    "would-build".into(),
                    event["reason"].as_str().unwrap().into(),
                    String::new(),
                )
            }
            "log" | "indexed" => {}
            other => *entry = (other.into(), event.to_string(), String::new()),
        }
    }
    Outcome { events, stderr }
}

/// Per-arch manifest digests of every unit in a cache, by cache name.
fn manifests(repo: &Repo, cache: &std::path::Path) -> BTreeMap<String, String> {
    let out = ok(repo
        .lkpkg()
        .args(["--cache", cache.to_str().unwrap(), "cache", "ls"]));
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            let (name, digest) = (parts.next()?, parts.next()?);
            name.ends_with("-amd64")
                .then(|| (name.to_owned(), digest.to_owned()))
        })
        .collect()
}

/// Builds everything with `--force` into a fresh cache and checks that every image equals the
/// incremental cache's: no stale result.
fn assert_not_stale(repo: &Repo, cache: &std::path::Path) {
    let scratch = tempfile::tempdir().unwrap();
    // `--disable-cache`: the engine reruns every step, so file times really are new.
    build(repo, scratch.path(), &["--force", "--disable-cache"]);
    let fresh = manifests(repo, scratch.path());
    let incremental = manifests(repo, cache);
    for (name, digest) in &fresh {
        assert_eq!(
            incremental.get(name),
            Some(digest),
            "{name} is stale in the incremental cache"
        );
    }
}

#[test]
fn incremental_scenarios() {
    let repo = fixture("inc");
    let cache = tempfile::tempdir().unwrap();
    let cache = cache.path();

    let first = build(&repo, cache, &[]);
    for unit in [
        "base/amd64",
        "app1/amd64",
        "app2/amd64",
        "app3/amd64",
        "solo/amd64",
    ] {
        assert_eq!(first.kind(unit), "built", "{unit}: {}", first.stderr);
        assert_eq!(first.reason(unit), "built (no previous record)");
    }

    // (a) Nothing changed: every unit fresh, and no engine is contacted.
    let mut cmd = repo.lkpkg();
    cmd.env("SOURCE_DATE_EPOCH", EPOCH)
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["--cache", cache.to_str().unwrap(), "pkg", "build"]);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 built, 5 fresh"), "{stderr}");

    // (b) A committed change to base: base and its transitive dependents rebuild, with the
    // right cause; the independent package stays fresh; dependents hold the new content.
    let before = build(&repo, cache, &["--dry-run"]);
    assert_eq!(before.kind("solo/amd64"), "fresh");
    repo.write("base/data.txt", "base v2\n");
    repo.commit_all("base v2");
    let plan = build(&repo, cache, &["--dry-run"]);
    assert_eq!(plan.kind("base/amd64"), "would-build");
    assert_eq!(plan.reason("base/amd64"), "rebuilt: file data.txt changed");
    assert_eq!(plan.kind("app1/amd64"), "would-build");
    assert!(
        plan.reason("app3/amd64").contains("app1/amd64"),
        "{}",
        plan.reason("app3/amd64")
    );
    assert_eq!(plan.kind("solo/amd64"), "fresh");
    let b = build(&repo, cache, &[]);
    assert_eq!(b.kind("base/amd64"), "built");
    assert_eq!(b.reason("base/amd64"), "rebuilt: file data.txt changed");
    for (unit, dep) in [
        ("app1/amd64", "base/amd64"),
        ("app2/amd64", "base/amd64"),
        ("app3/amd64", "app1/amd64"),
    ] {
        assert_eq!(b.kind(unit), "built", "{unit}");
        let reason = b.reason(unit);
        assert!(
            reason.starts_with(&format!("rebuilt: dependency {dep} sha256:"))
                && reason.contains(" → sha256:"),
            "{unit}: {reason}"
        );
    }
    assert_eq!(b.kind("solo/amd64"), "fresh");
    assert_eq!(b.reason("solo/amd64"), "fresh");
    assert_eq!(
        file_in_image(&repo, cache, "app3", "/app3.txt"),
        "base v2\n"
    );
    assert_eq!(
        file_in_image(&repo, cache, "app2", "/app2.txt"),
        "base v2\nshared v1\n"
    );
    assert_not_stale(&repo, cache);

    // (c) A comment that does not change base's output: base rebuilds, its output is
    // byte-identical, so its dependents stay fresh (early cutoff).
    repo.write(
        "base/Dockerfile",
        "# a comment only\nFROM scratch\nCOPY bin/ /bin/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY data.txt /base.txt\nRUN mkdir -p /var && echo built > /var/built\n",
    );
    repo.commit_all("comment");
    let c = build(&repo, cache, &[]);
    assert_eq!(c.kind("base/amd64"), "built");
    assert_eq!(c.reason("base/amd64"), "rebuilt: file Dockerfile changed");
    assert_eq!(
        c.events["base/amd64"].2, b.events["base/amd64"].2,
        "base's output must be reproducible"
    );
    for unit in ["app1/amd64", "app2/amd64", "app3/amd64", "solo/amd64"] {
        assert_eq!(c.kind(unit), "fresh", "{unit}: {}", c.reason(unit));
    }
    assert_not_stale(&repo, cache);

    // (d) A dirty (uncommitted) edit in an extra source: its user rebuilds.
    repo.write("shared/value", "shared v2 (dirty)\n");
    let d = build(&repo, cache, &[]);
    assert_eq!(d.kind("app2/amd64"), "built");
    assert_eq!(
        d.reason("app2/amd64"),
        "rebuilt: extra source /shared changed"
    );
    assert_eq!(d.kind("app1/amd64"), "fresh");
    assert_eq!(
        file_in_image(&repo, cache, "app2", "/app2.txt"),
        "base v2\nshared v2 (dirty)\n"
    );
    assert_not_stale(&repo, cache);

    // (e) Revert: the old record's content is still cached, so it is reused, not rebuilt.
    repo.write("shared/value", "shared v1\n");
    let e = build(&repo, cache, &[]);
    assert_eq!(e.kind("app2/amd64"), "fresh", "{}", e.reason("app2/amd64"));
    assert_eq!(
        e.reason("app2/amd64"),
        "fresh (reused the recorded build of these inputs)"
    );
    assert_eq!(e.events["app2/amd64"].2, b.events["app2/amd64"].2);
    assert_eq!(
        file_in_image(&repo, cache, "app2", "/app2.txt"),
        "base v2\nshared v1\n"
    );
    assert_not_stale(&repo, cache);

    // `lkpkg explain` shows the last build's inputs beside the current ones.
    let explained = ok(repo
        .lkpkg()
        .args(["--cache", cache.to_str().unwrap(), "explain", "app2"]));
    assert!(explained.starts_with("app2/amd64: fresh\n"), "{explained}");
    assert!(explained.contains("dependency base/amd64"), "{explained}");
    repo.write("app2/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY shared/ /shared/\nRUN cat /shared/value /base.txt > /app2.txt\n");
    let explained = ok(repo
        .lkpkg()
        .args(["--cache", cache.to_str().unwrap(), "explain", "app2"]));
    assert!(
        explained.starts_with("app2/amd64: stale: file Dockerfile changed\n"),
        "{explained}"
    );
}

#[test]
fn foreign_cache_entries_are_used_as_linuxkit_would() {
    // (f) An image in the cache that lkpkg did not build (imported as linuxkit would have put
    // it there) has no build record: it is not rebuilt, and the reason says so.
    let repo = fixture("foreign");
    let cache = tempfile::tempdir().unwrap();
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "solo"]))
        .trim()
        .to_owned();
    let per_arch = format!("{tag}-amd64");
    let context = repo.join("solo");
    let (code, _, err) = run(std::process::Command::new("docker")
        .env("DOCKER_BUILDKIT", "0")
        .args([
            "build",
            "-q",
            "--no-cache",
            "--network",
            "none",
            "-t",
            &per_arch,
            context.to_str().unwrap(),
        ]));
    assert_eq!(code, 0, "{err}");
    let archive = cache.path().join("solo.tar");
    let (code, _, err) = run(std::process::Command::new("docker").args([
        "save",
        "-o",
        archive.to_str().unwrap(),
        &per_arch,
    ]));
    assert_eq!(code, 0, "{err}");
    ok(repo.lkpkg().args([
        "--cache",
        cache.path().to_str().unwrap(),
        "cache",
        "import",
        archive.to_str().unwrap(),
    ]));
    run(std::process::Command::new("docker").args(["rmi", "-f", &per_arch]));
    let outcome = build(&repo, cache.path(), &[]);
    assert_eq!(outcome.kind("solo/amd64"), "fresh", "{}", outcome.stderr);
    assert!(
        outcome.reason("solo/amd64").contains("no build record"),
        "{}",
        outcome.reason("solo/amd64")
    );
    assert_eq!(outcome.kind("base/amd64"), "built");
}
