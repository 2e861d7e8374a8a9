//! Snapshots of what the CLI prints, human and JSON, for one fixture repository taken through
//! the commands a user runs: tags, the graph, a dry run, a build, a no-op build, explain, the
//! cache commands, the builders, and a bad input. Digests, times, sizes, versions and
//! temporary paths are redacted; everything else (wording, columns, field order) is what a
//! change of output must show in review. Snapshots live in `tests/e2e/snapshots/`; after an
//! intended change, `INSTA_UPDATE=always cargo test -p lkpkg --test e2e -- snapshots` rewrites
//! them (or `cargo insta review`).

use std::path::Path;
use std::process::Command;

use crate::support::{Repo, run};

/// What a command printed, as the snapshot shows it: exit code, stdout, stderr (build steps'
/// own output left out: BuildKit's step numbering and timings are not lkpkg's).
fn shown(cmd: &mut Command) -> String {
    let (code, stdout, stderr) = run(cmd);
    let stderr: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim_start().starts_with('[') && !l.trim_start().starts_with("| #"))
        .collect();
    let stdout: Vec<&str> = stdout
        .lines()
        .filter(|l| !l.contains(r#""type":"log""#))
        .collect();
    format!(
        "exit: {code}\n--- stdout\n{}\n--- stderr\n{}\n",
        stdout.join("\n"),
        stderr.join("\n")
    )
}

fn lkpkg(repo: &Repo, cache: &Path) -> Command {
    let mut cmd = crate::support::lkpkg_on(repo, cache);
    cmd.env("NO_COLOR", "1");
    cmd
}

#[test]
fn cli_outputs() {
    let repo = Repo::new();
    repo.write(
        "pkg/base/build.yml",
        "image: snap-base\norg: lkpkgsnap\narches: [amd64]\n",
    )
    .write("pkg/base/Dockerfile", "FROM scratch\nCOPY base.txt /\n")
    .write("pkg/base/base.txt", "base\n")
    .write(
        "pkg/app/build.yml",
        "image: snap-app\norg: lkpkgsnap\narches: [amd64]\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n",
    )
    .write(
        "pkg/app/Dockerfile",
        "ARG BASE\nFROM ${BASE}\nCOPY app.txt /\n",
    )
    .write("pkg/app/app.txt", "app\n");
    repo.commit_all("packages");
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let tmp_path = tmp.path().display().to_string();
    let repo_path = repo.path().display().to_string();

    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(&regex_escape(&tmp_path), "[tmp]");
    settings.add_filter(&regex_escape(&repo_path), "[repo]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[digest]");
    // A digest `explain` clipped to its column.
    settings.add_filter(r"sha256:[0-9a-f]+…", "sha256:[clipped]…");
    settings.add_filter(r"lkpkg-key-[0-9a-f]{64}", "lkpkg-key-[key]");
    settings.add_filter(r"in \d+(\.\d+)?s\b", "in [time]");
    settings.add_filter(r"(?m), \d+(\.\d+)?s$", ", [time]");
    settings.add_filter(
        r#"("(?:duration_ms|started_unix_ms|size|blob_bytes|unreachable_bytes|total|unique|shared)": ?)\d+"#,
        "${1}[n]",
    );
    settings.add_filter(r"\b\d+(\.\d+)? ?(B|kB|KiB|MB|MiB|GB)\b", "[size]");
    settings.add_filter(
        r#"("(?:engine_version|api_version)": ?)"[^"]*""#,
        r#"${1}"[version]""#,
    );
    // The engine's version (`pkg builder ls`).
    settings.add_filter(
        r"engine:   \S+ \(API [0-9.]+\)",
        "engine:   [version] (API [version])",
    );
    // The loopback registry's address, and the repository unique to the run.
    let registry_host = crate::support::dev_env("LKPKG_TEST_REGISTRY");
    settings.add_filter(&regex_escape(&registry_host), "[registry]");
    settings.add_filter(r"snap\d+/", "snap[pid]/");
    // BuildKit's own step lines (their order and timings are BuildKit's).
    settings.add_filter(r#"(?m)("log_tail":)\[.*\]\}$"#, "${1}[steps]}");
    // BuildKit's ids of a build's context refs.
    settings.add_filter(r"ref [a-z0-9]+::[a-z0-9]+", "ref [ref]");
    // Whether a registry answers depends on the machine's network, not on lkpkg.
    settings.add_filter(
        r"warning: not looking in registry .*",
        "warning: not looking in registry [why]",
    );
    let _guard = settings.bind_to_scope();

    let snap = |name: &str, cmd: &mut Command| insta::assert_snapshot!(name, shown(cmd));

    snap("show-tag", repo.lkpkg().args(["pkg", "show-tag"]));
    snap(
        "show-tag-canonical",
        repo.lkpkg()
            .args(["pkg", "show-tag", "--canonical", "pkg/app"]),
    );
    snap("graph-text", repo.lkpkg().args(["graph"]));
    snap("graph-dot", repo.lkpkg().args(["graph", "--format", "dot"]));
    snap(
        "graph-json",
        repo.lkpkg().args(["graph", "--format", "json"]),
    );
    snap(
        "build-dry-run",
        lkpkg(&repo, &cache).args(["pkg", "build", "--dry-run", "--progress", "plain"]),
    );
    snap(
        "build-dry-run-json",
        lkpkg(&repo, &cache).args(["--message-format", "json", "pkg", "build", "--dry-run"]),
    );
    snap(
        "build",
        lkpkg(&repo, &cache).args(["pkg", "build", "--progress", "plain"]),
    );
    snap(
        "build-fresh-json",
        lkpkg(&repo, &cache).args(["--message-format", "json", "pkg", "build"]),
    );
    snap("explain", lkpkg(&repo, &cache).args(["explain", "pkg/app"]));
    snap(
        "explain-json",
        lkpkg(&repo, &cache).args(["--message-format", "json", "explain", "pkg/app"]),
    );
    let app = crate::support::ok(repo.lkpkg().args(["pkg", "show-tag", "pkg/app"]));
    let app = app.trim();
    let cache_commands: [(&str, &[&str]); 8] = [
        ("cache-ls", &["cache", "ls"]),
        ("cache-ls-json", &["cache", "ls", "--json"]),
        ("cache-inspect", &["cache", "inspect", app]),
        ("cache-inspect-json", &["cache", "inspect", "--json", app]),
        ("cache-du", &["cache", "du"]),
        ("cache-du-json", &["cache", "du", "--json"]),
        ("cache-verify", &["cache", "verify"]),
        ("cache-verify-json", &["cache", "verify", "--json"]),
    ];
    for (name, args) in cache_commands {
        snap(name, lkpkg(&repo, &cache).args(args));
    }
    snap(
        "builder-ls-json",
        lkpkg(&repo, &cache).args([
            "--message-format",
            "json",
            "pkg",
            "builder",
            "ls",
            "--platforms",
            "linux/amd64",
        ]),
    );
    snap(
        "bad-input",
        lkpkg(&repo, &cache).args([
            "pkg",
            "build",
            "--platforms",
            "linux/amd64,windows",
            "pkg/app",
        ]),
    );
    snap(
        "missing-package",
        lkpkg(&repo, &cache).args(["pkg", "show-tag", "pkg/nosuch"]),
    );
    // A change not committed: explain says what changed; a failing package with a dependent
    // (built with --keep-going beside a fresh one): failed, skipped, fresh.
    repo.write("pkg/base/base.txt", "base, changed\n");
    snap(
        "explain-stale",
        lkpkg(&repo, &cache).args(["explain", "pkg/base"]),
    );
    snap(
        "explain-stale-json",
        lkpkg(&repo, &cache).args(["--message-format", "json", "explain", "pkg/base"]),
    );
    repo.git(&["checkout", "--", "pkg/base/base.txt"]);
    repo.write(
        "pkg/bad/build.yml",
        "image: snap-bad\norg: lkpkgsnap\narches: [amd64]\n",
    )
    .write("pkg/bad/Dockerfile", "FROM scratch\nCOPY missing.txt /\n")
    .write(
        "pkg/bad-child/build.yml",
        "image: snap-bad-child\norg: lkpkgsnap\narches: [amd64]\nbuildArgs:\n  - BAD=@lkt:pkg:../bad\n",
    )
    .write(
        "pkg/bad-child/Dockerfile",
        "ARG BAD\nFROM ${BAD}\nCOPY build.yml /\n",
    );
    repo.commit_all("a package that cannot build, and its dependent");
    let failing = ["pkg", "build", "--keep-going", "pkg/bad-child", "pkg/app"];
    snap(
        "build-failure",
        lkpkg(&repo, &cache)
            .args(failing)
            .args(["--progress", "plain"]),
    );
    snap(
        "build-failure-json",
        lkpkg(&repo, &cache)
            .args(["--message-format", "json"])
            .args(failing),
    );
    // Moving images: export and import, push to and pull from the loopback registry, a
    // remote tag, and the builders as people read them.
    let archive = tmp.path().join("app.tar");
    snap(
        "cache-export",
        lkpkg(&repo, &cache)
            .args(["cache", "export", app, "--format", "oci", "-o"])
            .arg(&archive),
    );
    let other = tmp.path().join("other");
    snap(
        "cache-import",
        lkpkg(&repo, &other).args(["cache", "import"]).arg(&archive),
    );
    let registry = crate::support::dev_env("LKPKG_TEST_REGISTRY");
    let remote = format!("{registry}/snap{}/app:1", std::process::id());
    snap(
        "cache-push",
        lkpkg(&repo, &cache).args(["cache", "push", app, "--remote-name", &remote]),
    );
    let pulled = tmp.path().join("pulled");
    snap(
        "cache-pull",
        lkpkg(&repo, &pulled).args(["cache", "pull", &remote]),
    );
    snap(
        "remote-tag",
        lkpkg(&repo, &cache).args(["pkg", "remote-tag", &remote, &remote.replace(":1", ":2")]),
    );
    snap(
        "builder-ls",
        lkpkg(&repo, &cache).args(["pkg", "builder", "ls", "--platforms", "linux/amd64"]),
    );
    snap(
        "builder-prune-dry-run",
        lkpkg(&repo, &cache).args([
            "pkg",
            "builder",
            "prune",
            "--dry-run",
            "--platforms",
            "linux/amd64",
        ]),
    );
    snap("cache-rm", lkpkg(&repo, &cache).args(["cache", "rm", app]));
    snap("cache-gc", lkpkg(&repo, &cache).args(["cache", "gc"]));
    snap("cache-clean", lkpkg(&repo, &other).args(["cache", "clean"]));
}

/// `text` as a regular expression matching itself.
fn regex_escape(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
