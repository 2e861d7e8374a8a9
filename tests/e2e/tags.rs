//! `lkpkg pkg show-tag` against the plain-git computations of linuxkit-reference §3 and §8.
//! Every expected value here is computed with the git CLI, the way linuxkit computes it.

use crate::support::{Repo, ok, run};

/// linuxkit's dirty suffix, computed with git and coreutils (reference §8.6).
const DIRTY_HASH: &str = r#"(git ls-files; git ls-files --exclude-standard --others) | while read f; do [ -L "$f" ] || { [ -f "$f" ] && cat "$f"; }; done | sha256sum | cut -c1-7"#;

fn show_tag(repo: &Repo, args: &[&str]) -> String {
    let mut cmd = repo.lkpkg();
    cmd.args(["pkg", "show-tag"]).args(args);
    ok(&mut cmd).trim_end().to_owned()
}

fn fixture() -> Repo {
    let repo = Repo::new();
    repo.package("pkg/a", "a", "")
        .package("pkg/b", "bee", "org: myorg\n")
        .write("src/shared.txt", "shared\n")
        .package("pkg/c", "c", "extra-sources:\n  - ../../src:/src\n")
        .write(".gitignore", "ignored/\n*.log\n");
    repo.commit_all("init");
    repo
}

#[test]
fn clean_packages_use_the_tree_hash() {
    let repo = fixture();
    let a = repo.git(&["rev-parse", "HEAD:pkg/a"]);
    let b = repo.git(&["rev-parse", "HEAD:pkg/b"]);
    assert_eq!(show_tag(&repo, &["pkg/a"]), format!("linuxkit/a:{a}"));
    assert_eq!(show_tag(&repo, &["pkg/b"]), format!("myorg/bee:{b}"));
    assert_eq!(
        show_tag(&repo, &["--canonical", "pkg/a", "pkg/b"]),
        format!("docker.io/linuxkit/a:{a}\ndocker.io/myorg/bee:{b}")
    );
    // Absolute paths and paths with `..` name the same package.
    let abs = repo.join("pkg/a");
    assert_eq!(
        show_tag(&repo, &[abs.to_str().unwrap()]),
        format!("linuxkit/a:{a}")
    );
    assert_eq!(show_tag(&repo, &["pkg/b/../a"]), format!("linuxkit/a:{a}"));
}

#[test]
fn no_argument_means_every_package_below_the_current_directory() {
    let repo = fixture();
    repo.package("ignored/p", "ignoredpkg", "")
        .package(".hidden/p", "hidden", "");
    let out = show_tag(&repo, &[]);
    let images: Vec<&str> = out.lines().map(|l| l.split(':').next().unwrap()).collect();
    assert_eq!(images, ["linuxkit/a", "myorg/bee", "linuxkit/c"]);
    let mut cmd = crate::support::lkpkg(&repo.join("pkg/b"));
    cmd.args(["pkg", "show-tag"]);
    assert!(ok(&mut cmd).starts_with("myorg/bee:"));
}

#[test]
fn top_level_package_uses_the_commit_tree() {
    let repo = Repo::new();
    repo.package(".", "top", "");
    repo.commit_all("init");
    let tree = repo.git(&["show", "-s", "--format=%T", "HEAD"]);
    assert_eq!(show_tag(&repo, &["."]), format!("linuxkit/top:{tree}"));
}

#[test]
fn extra_sources_are_combined_by_sha1() {
    let repo = fixture();
    let expected = repo.sh(
        ".",
        "printf %s $(git rev-parse HEAD:pkg/c) $(git rev-parse HEAD:src) | sha1sum | cut -d' ' -f1",
    );
    assert_eq!(
        show_tag(&repo, &["pkg/c"]),
        format!("linuxkit/c:{expected}")
    );
    // Editing an extra source does not make the package dirty (linuxkit never checks).
    repo.write("src/shared.txt", "changed\n");
    assert_eq!(
        show_tag(&repo, &["pkg/c"]),
        format!("linuxkit/c:{expected}")
    );
}

fn dirty_expectation(repo: &Repo, dir: &str) -> String {
    let tree = repo.git(&["rev-parse", &format!("HEAD:{dir}")]);
    format!("{tree}-dirty-{}", repo.sh(dir, DIRTY_HASH))
}

#[test]
fn untracked_file_makes_a_package_dirty() {
    let repo = fixture();
    repo.write("pkg/a/new.txt", "new\n");
    let expected = dirty_expectation(&repo, "pkg/a");
    assert_eq!(
        show_tag(&repo, &["pkg/a"]),
        format!("linuxkit/a:{expected}")
    );
    // Ignored files do not count.
    let repo = fixture();
    repo.write("pkg/a/debug.log", "x\n");
    let tree = repo.git(&["rev-parse", "HEAD:pkg/a"]);
    assert_eq!(show_tag(&repo, &["pkg/a"]), format!("linuxkit/a:{tree}"));
}

#[test]
fn modified_file_makes_a_package_dirty() {
    let repo = fixture();
    repo.write("pkg/a/Dockerfile", "FROM scratch\n# edited\n");
    let expected = dirty_expectation(&repo, "pkg/a");
    assert!(expected.contains("-dirty-"));
    assert_eq!(
        show_tag(&repo, &["pkg/a"]),
        format!("linuxkit/a:{expected}")
    );
    // A file only touched, with the same content, stays clean.
    let repo = fixture();
    let path = repo.join("pkg/a/build.yml");
    let content = std::fs::read(&path).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&path, content).unwrap();
    let tree = repo.git(&["rev-parse", "HEAD:pkg/a"]);
    assert_eq!(show_tag(&repo, &["pkg/a"]), format!("linuxkit/a:{tree}"));
}

#[test]
fn staged_file_makes_a_package_dirty() {
    let repo = fixture();
    repo.write("pkg/a/staged.txt", "staged\n");
    repo.git(&["add", "pkg/a/staged.txt"]);
    let expected = dirty_expectation(&repo, "pkg/a");
    assert_eq!(
        show_tag(&repo, &["pkg/a"]),
        format!("linuxkit/a:{expected}")
    );
    // Other packages stay clean.
    let b = repo.git(&["rev-parse", "HEAD:pkg/b"]);
    assert_eq!(show_tag(&repo, &["pkg/b"]), format!("myorg/bee:{b}"));
}

#[test]
fn deleted_file_and_symlink_are_skipped_in_the_dirty_hash() {
    let repo = fixture();
    repo.write("pkg/a/extra.txt", "x\n");
    repo.commit_all("more");
    std::fs::remove_file(repo.join("pkg/a/extra.txt")).unwrap();
    std::os::unix::fs::symlink("build.yml", repo.join("pkg/a/link")).unwrap();
    repo.write("pkg/a/sub/deep.txt", "deep\n");
    let expected = dirty_expectation(&repo, "pkg/a");
    assert_eq!(
        show_tag(&repo, &["pkg/a"]),
        format!("linuxkit/a:{expected}")
    );
}

#[test]
fn force_dirty() {
    let repo = fixture();
    let expected = dirty_expectation(&repo, "pkg/a");
    assert_eq!(
        show_tag(&repo, &["--force-dirty", "pkg/a"]),
        format!("linuxkit/a:{expected}")
    );
}

#[test]
fn hash_tag_org_dev_flags() {
    let repo = fixture();
    let a = repo.git(&["rev-parse", "HEAD:pkg/a"]);
    assert_eq!(
        show_tag(&repo, &["--hash", "foo", "pkg/a"]),
        "linuxkit/a:foo"
    );
    assert_eq!(
        show_tag(&repo, &["pkg/a", "--tag", "v-{{.Hash}}"]),
        format!("linuxkit/a:v-{a}")
    );
    assert_eq!(
        show_tag(&repo, &["--org", "o", "pkg/a"]),
        format!("o/a:{a}")
    );
    assert_eq!(
        show_tag(&repo, &["pkg", "show-tag", "--dev", "pkg/a"][2..]),
        "tester/a:dev"
    );
    // Global flags may come before the subcommand.
    let mut cmd = repo.lkpkg();
    cmd.args(["pkg", "--org", "first", "show-tag", "pkg/a"]);
    assert_eq!(ok(&mut cmd).trim(), format!("first/a:{a}"));
    // LINUXKIT_PKG_ORG applies unless --org is given.
    let mut cmd = repo.lkpkg();
    cmd.env("LINUXKIT_PKG_ORG", "envorg")
        .args(["pkg", "show-tag", "pkg/a"]);
    assert_eq!(ok(&mut cmd).trim(), format!("envorg/a:{a}"));
    let mut cmd = repo.lkpkg();
    cmd.env("LINUXKIT_PKG_ORG", "envorg")
        .args(["pkg", "show-tag", "--org", "flag", "pkg/a"]);
    assert_eq!(ok(&mut cmd).trim(), format!("flag/a:{a}"));
    // --hash on a dirty package: no suffix.
    repo.write("pkg/a/new", "x");
    assert_eq!(
        show_tag(&repo, &["--hash", "foo", "pkg/a"]),
        "linuxkit/a:foo"
    );
    // A template in build.yml; an empty result becomes `latest`.
    repo.package("pkg/t", "t", "tag: \"release-{{.Hash}}\"\n");
    repo.package("pkg/e", "e", "tag: \"{{.Missing}}\"\n");
    repo.commit_all("templates");
    let t = repo.git(&["rev-parse", "HEAD:pkg/t"]);
    assert_eq!(
        show_tag(&repo, &["pkg/t"]),
        format!("linuxkit/t:release-{t}")
    );
    assert_eq!(
        show_tag(&repo, &["--hash", "", "pkg/e"]),
        "linuxkit/e:<no value>"
    );
}

#[test]
fn hash_commit_and_hash_path() {
    let repo = fixture();
    let first = repo.git(&["rev-parse", "HEAD"]);
    repo.write("pkg/a/more.txt", "more\n");
    repo.commit_all("second");
    let old = repo.git(&["rev-parse", &format!("{first}:pkg/a")]);
    assert_eq!(
        show_tag(&repo, &["--hash-commit", &first, "pkg/a"]),
        format!("linuxkit/a:{old}")
    );
    // Not HEAD: the dirty check does not run.
    repo.write("pkg/a/untracked", "u");
    assert_eq!(
        show_tag(&repo, &["--hash-commit", &first, "pkg/a"]),
        format!("linuxkit/a:{old}")
    );
    std::fs::remove_file(repo.join("pkg/a/untracked")).unwrap();
    // --hash-path: the tree of the hash path.
    let pkg_tree = repo.git(&["rev-parse", "HEAD:pkg"]);
    assert_eq!(
        show_tag(&repo, &["--hash-path", "pkg", "pkg/a"]),
        format!("linuxkit/a:{pkg_tree}")
    );
    let mut cmd = repo.lkpkg();
    cmd.args(["pkg", "show-tag", "--hash-path", "src", "pkg/a"]);
    let (code, _, stderr) = run(&mut cmd);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("Hash path is not a prefix of the package path"),
        "{stderr}"
    );
}

#[test]
fn build_yml_flag_and_outside_git() {
    let repo = fixture();
    repo.write("pkg/a/alt.yml", "image: alt\norg: x\n");
    repo.commit_all("alt");
    let a = repo.git(&["rev-parse", "HEAD:pkg/a"]);
    assert_eq!(
        show_tag(&repo, &["--build-yml", "alt.yml", "pkg/a"]),
        format!("x/alt:{a}")
    );
    let plain = tempfile::tempdir().unwrap();
    std::fs::write(plain.path().join("build.yml"), "image: nogit\n").unwrap();
    let mut cmd = crate::support::lkpkg(plain.path());
    cmd.args(["pkg", "show-tag", "."]);
    assert_eq!(ok(&mut cmd).trim(), "linuxkit/nogit:latest");
}

#[test]
fn lkt_build_args_resolve_to_show_tag_output() {
    let repo = fixture();
    repo.package(
        "pkg/user",
        "user",
        "buildArgs:\n  - BASE=@lkt:pkg:../a\n  - HASH_%=@lkt:pkgs:../[abc]\n  - PLAIN=x=y\n",
    );
    repo.write("pkg/.hiddenpkg/build.yml", "image: hidden\n");
    repo.commit_all("user");
    let graph = crate::support::json_output(
        "graph",
        &ok(repo.lkpkg().args(["graph", "--format", "json", "pkg/user"])),
    );
    let user = graph["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["dir"] == "pkg/user")
        .unwrap();
    let args: Vec<(String, String)> = user["build_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_owned(),
                a["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let tag = |dir: &str| show_tag(&repo, &[dir]);
    let expected = vec![
        ("BASE".to_owned(), tag("pkg/a")),
        ("HASH_LINUXKIT_A".to_owned(), tag("pkg/a")),
        ("HASH_MYORG_BEE".to_owned(), tag("pkg/b")),
        ("HASH_LINUXKIT_C".to_owned(), tag("pkg/c")),
        ("PLAIN".to_owned(), "x=y".to_owned()),
    ];
    assert_eq!(args, expected);
    // The CLI's --org does not apply to referenced packages (linuxkit's behaviour).
    let graph = crate::support::json_output(
        "graph",
        &ok(repo
            .lkpkg()
            .args(["graph", "--format", "json", "--org", "other", "pkg/user"])),
    );
    let base_value = graph["packages"][0]["build_args"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(base_value.starts_with("linuxkit/a:"), "{base_value}");
}

/// `@lkt:pkg:` and `@lkt:pkgs:` into another repository and into a nested one (a directory
/// with its own `.git` inside the work tree) resolve to the tags of those packages in their own
/// repositories: `linuxkit/<image>:<tree hash>`, the hash as plain git gives it there.
#[test]
fn lkt_arguments_into_other_and_nested_repositories_use_those_repositories() {
    let other = Repo::new();
    other.write("a/build.yml", "image: a\n");
    other.write("b/build.yml", "image: b\n");
    other.commit_all("other");
    let outer = Repo::new();
    let other_dir = other.path().display().to_string();
    outer.package(
        "app",
        "app",
        &format!(
            "buildArgs:\n  - OTHER=@lkt:pkg:{other_dir}/a\n  - NESTED=@lkt:pkg:../nested/n\n  - ALL%=@lkt:pkgs:{other_dir}/*\n"
        ),
    );
    outer.write("nested/n/build.yml", "image: n\n");
    outer.sh(
        "nested",
        "git init -q -b main && git -c user.name=t -c user.email=t@example.invalid add -A && git -c user.name=t -c user.email=t@example.invalid -c commit.gpgsign=false commit -q -m nested",
    );
    outer.commit_all("outer");
    let tree =
        |repo: &Repo, dir: &str, path: &str| repo.sh(dir, &format!("git rev-parse HEAD:{path}"));
    let expected = [
        ("OTHER", format!("linuxkit/a:{}", tree(&other, ".", "a"))),
        (
            "NESTED",
            format!("linuxkit/n:{}", tree(&outer, "nested", "n")),
        ),
        (
            "ALLLINUXKIT_A",
            format!("linuxkit/a:{}", tree(&other, ".", "a")),
        ),
        (
            "ALLLINUXKIT_B",
            format!("linuxkit/b:{}", tree(&other, ".", "b")),
        ),
    ];
    let graph = crate::support::json_output(
        "graph",
        &ok(outer.lkpkg().args(["graph", "--format", "json", "app"])),
    );
    let args: Vec<(String, String)> = graph["packages"][0]["build_args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["key"].as_str().unwrap().to_owned(),
                a["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (key, value) in expected {
        assert!(
            args.contains(&(key.to_owned(), value.clone())),
            "{key}={value} not in {args:?}"
        );
    }
    // The targets' own show-tag agrees, from anywhere.
    assert_eq!(
        ok(outer.lkpkg().args(["pkg", "show-tag", "nested/n"])).trim(),
        format!("linuxkit/n:{}", tree(&outer, "nested", "n"))
    );
}
