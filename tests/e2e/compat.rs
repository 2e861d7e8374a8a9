//! linuxkit compatibility, data-driven: every directory of `tests/compat/cases/` is a tree of
//! files, the git repositories to make of it, a command, and what the real linuxkit printed for
//! it (see the README there: the expectations come from linuxkit 3bf33c3a, never from lkpkg).
//! lkpkg must print the same on stdout, or fail where linuxkit fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Case {
    about: String,
    source: String,
    repos: Vec<String>,
    #[serde(default)]
    dirty: BTreeMap<String, Option<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: String,
    args: Vec<String>,
    stdout: Option<String>,
    #[serde(default)]
    fails: bool,
    linuxkit_stderr: Option<String>,
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `git` with the README's fixed identity and dates, and no user or system configuration.
fn git(dir: &Path, args: &[&str]) {
    let date = "2000-01-01T00:00:00+0000";
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "lkpkg")
        .env("GIT_AUTHOR_EMAIL", "lkpkg@example.invalid")
        .env("GIT_COMMITTER_NAME", "lkpkg")
        .env("GIT_COMMITTER_EMAIL", "lkpkg@example.invalid")
        .env("GIT_AUTHOR_DATE", date)
        .env("GIT_COMMITTER_DATE", date)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?} in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs one case; `Err` says how lkpkg differs from linuxkit.
fn run_case(dir: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("case.yml")).unwrap();
    let case: Case = serde_saphyr::from_str(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.join("case.yml").display()));
    let scratch = tempfile::tempdir().unwrap();
    // No symlinks in the path, as linuxkit was run (it compares paths as text).
    let root = scratch.path().canonicalize().unwrap().join("tree");
    copy_tree(&dir.join("tree"), &root);
    for repo in &case.repos {
        let repo = root.join(repo);
        git(&repo, &["init", "-q"]);
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "case"]);
    }
    for (path, content) in &case.dirty {
        let path = root.join(path);
        match content {
            Some(content) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, content).unwrap();
            }
            None => std::fs::remove_file(&path).unwrap(),
        }
    }
    let home = scratch.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_lkpkg"))
        .args(&case.args)
        .current_dir(root.join(&case.cwd))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", &home)
        .envs(&case.env)
        .output()
        .expect("lkpkg");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).replace(&*root.to_string_lossy(), "<tree>");
    let what = format!(
        "{} ({}; expected: {})",
        case.about,
        case.args.join(" "),
        case.source
    );
    match (&case.stdout, case.fails) {
        (Some(expected), false) if out.status.success() && stdout == *expected => Ok(()),
        (Some(expected), false) => Err(format!(
            "{what}\n    linuxkit: {expected:?}\n    lkpkg:    {stdout:?} (exit {:?}) {}",
            out.status.code(),
            stderr.trim()
        )),
        (None, true) if !out.status.success() => Ok(()),
        (None, true) => Err(format!(
            "{what}\n    linuxkit fails: {}\n    lkpkg:    {stdout:?}",
            case.linuxkit_stderr.as_deref().unwrap_or_default().trim()
        )),
        _ => panic!("{}: a case has `stdout` or `fails: true`", dir.display()),
    }
}

/// Cases where lkpkg differs on purpose; each is a decision in `docs/linuxkit-compat.md`.
const DELIBERATE: &[(&str, &str)] = &[(
    "no-arguments-error",
    "with no package argument, lkpkg acts on every package below the current directory",
)];

/// Cases lkpkg does not pass yet (each must still fail: a fixed one leaves this list).
const PENDING: &[(&str, &str)] = &[];

#[test]
fn show_tag_agrees_with_linuxkit_on_every_case() {
    let cases_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/cases");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&cases_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("case.yml").exists())
        .collect();
    cases.sort();
    assert!(
        cases.len() > 50,
        "{} cases in {}",
        cases.len(),
        cases_dir.display()
    );
    let compat_doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/linuxkit-compat.md"),
    )
    .unwrap();
    for (name, _) in DELIBERATE {
        assert!(
            compat_doc.contains(&format!("`{name}`")),
            "docs/linuxkit-compat.md does not explain the deliberate difference `{name}`"
        );
    }
    let excused = |name: &str| DELIBERATE.iter().chain(PENDING).any(|(n, _)| *n == name);
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        match (run_case(dir), excused(&name)) {
            (Ok(()), false) | (Err(_), true) => {}
            (Err(e), false) => failures.push(format!("{name}: {e}")),
            (Ok(()), true) => failures.push(format!(
                "{name}: now agrees with linuxkit: take it out of DELIBERATE/PENDING"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ from linuxkit:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// linuxkit's `pkg build` flags that lkpkg cannot honour are refused with the reason and a way
/// on (never "unexpected argument", never ignored); the ones that change nothing here are
/// accepted, in pflag's forms.
#[test]
fn linuxkit_build_flags_are_accepted_or_refused_with_a_reason() {
    let repo = crate::support::Repo::new();
    repo.package("pkg/a", "a", "").commit_all("a");
    let cache = tempfile::tempdir().unwrap();
    let build = |flags: &[&str]| {
        crate::support::run(
            repo.lkpkg()
                .arg("--cache")
                .arg(cache.path())
                .args(["pkg", "build", "--dry-run"])
                .args(flags)
                .arg("pkg/a"),
        )
    };
    for accepted in [
        &["--sbom-scanner=false"][..],
        &["--manifest=false"],
        &["--manifest"],
        &["--force=false", "--enable-cache=false"],
        // A dry run asks no registry and pushes nothing: the registry flags are accepted.
        &["--push", "--release", "v1"],
        &["--pull"],
        &["--mirror", "docker.io=http://m.invalid"],
        &["--registry-creds", "r=u:p"],
        &["--cert-file", "/dev/null"],
        &["--ignore-cached"],
    ] {
        let (code, _, stderr) = build(accepted);
        assert_eq!(code, 0, "{accepted:?}: {stderr}");
    }
    for (refused, reason) in [
        (&["--nobuild"][..], "use it with --push"),
        (&["--push", "--nobuild", "--force"], "cannot be used with"),
        (&["--pull", "--force"], "cannot be used with"),
        (&["--precache-images"], "lkpkg cache pull"),
        (&["--sbom-scanner", "syft"], "use --sbom-scanner=false"),
    ] {
        let (code, _, stderr) = build(refused);
        assert_eq!(code, 2, "{refused:?}: {stderr}");
        assert!(stderr.contains(reason), "{refused:?}: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "{stderr}"
        );
    }
    // linuxkit's commands lkpkg has no counterpart for say so; misused ones say why; both
    // before touching the cache or a registry.
    let cache = tempfile::tempdir().unwrap();
    for (command, reason) in [
        (&["pkg", "builder", "du"][..], "docker buildx du"),
        (
            &["pkg", "remote-tag", "a/b:1", "c/d:2"],
            "stays in the repository",
        ),
        (
            &["pkg", "builder", "prune", "--builder-name", "x"],
            "linuxkit pkg builder",
        ),
    ] {
        let (code, _, stderr) =
            crate::support::run(repo.lkpkg().arg("--cache").arg(cache.path()).args(command));
        assert_eq!(code, 2, "{command:?}: {stderr}");
        assert!(stderr.contains(reason), "{command:?}: {stderr}");
    }
    assert!(!cache.path().join("index.json").exists());
    // A push of a name the cache does not hold is bad input, before any registry is asked.
    let (code, _, stderr) =
        crate::support::run(repo.lkpkg().arg("--cache").arg(cache.path()).args([
            "cache",
            "push",
            "--remote-name",
            "x/y:1",
            "a/b:1",
        ]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("a/b:1"), "{stderr}");
}

/// An error names its real source, once: a bad `--tag` or `--dockerfile` is the command
/// line's (not build.yml's), the same in build.yml is build.yml's; `--hash-commit nosuch` is
/// one line and bad input. A leading `/` in `--dockerfile` stays in the package, as in
/// linuxkit (Go's `filepath.Join`).
#[test]
fn errors_blame_the_command_line_or_build_yml() {
    let repo = crate::support::Repo::new();
    repo.package("pkg/a", "a", "").commit_all("a");
    repo.write("pkg/a/Dockerfile.alt", "FROM scratch\n");
    repo.package("pkg/b", "b", "tag: '{{.Hash'\ndockerfile: ../Dockerfile\n");
    repo.commit_all("b");
    let cache = tempfile::tempdir().unwrap();
    let lkpkg = |args: &[&str]| {
        crate::support::run(repo.lkpkg().arg("--cache").arg(cache.path()).args(args))
    };
    let one_error = |args: &[&str], expect: &str, not: &str| {
        let (code, _, stderr) = lkpkg(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{args:?}: {stderr}");
        assert!(errors[0].contains(expect), "{args:?}: {stderr}");
        assert!(!stderr.contains(not), "{args:?}: {stderr}");
        assert!(!stderr.contains("class="), "{args:?}: {stderr}");
    };
    one_error(
        &["pkg", "show-tag", "--tag", "{{.Hash", "pkg/a"],
        "--tag `{{.Hash`",
        "build.yml",
    );
    one_error(
        &["pkg", "build", "--dry-run", "--dockerfile", "../x", "pkg/a"],
        "--dockerfile",
        "build.yml",
    );
    one_error(
        &[
            "pkg",
            "build",
            "--dry-run",
            "--dockerfile",
            "nosuch",
            "pkg/a",
        ],
        "--dockerfile: dockerfile",
        "build.yml",
    );
    one_error(
        &["pkg", "show-tag", "--hash-commit", "nosuch", "pkg/a"],
        "commit `nosuch` not found",
        "git:",
    );
    one_error(
        &["pkg", "show-tag", "pkg/b"],
        "pkg/b/build.yml`: field `tag`",
        "--tag",
    );
    one_error(
        &["pkg", "build", "--dry-run", "pkg/b", "--tag", "x"],
        "pkg/b/build.yml`: field `dockerfile`",
        "--dockerfile",
    );
    let (code, _, stderr) = lkpkg(&[
        "pkg",
        "build",
        "--dry-run",
        "--dockerfile",
        "/Dockerfile.alt",
        "pkg/a",
    ]);
    assert_eq!(code, 0, "{stderr}");
}
