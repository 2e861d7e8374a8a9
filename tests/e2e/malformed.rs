//! Bad input: each case gives one clear error naming the file (and field where there is one),
//! exit code 2, and no panic.

use crate::support::{Repo, ok, run};

const DIGEST: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

struct Case {
    name: &'static str,
    build_yml: String,
    /// Extra files to write in the package dir.
    files: Vec<(&'static str, String)>,
    /// Extra arguments to `lkpkg graph`.
    args: Vec<&'static str>,
    /// What the error must say.
    expect: &'static str,
}

fn case(name: &'static str, build_yml: &str, expect: &'static str) -> Case {
    Case {
        name,
        build_yml: build_yml.to_owned(),
        files: Vec::new(),
        args: Vec::new(),
        expect,
    }
}

fn cases() -> Vec<Case> {
    let depends = |body: &str| format!("image: p\ndepends:\n  docker-images:\n{body}");
    let mut cases = vec![
        case("empty file", "", "EOF"),
        case("only comments", "# nothing\n", "EOF"),
        case("bad yaml: unclosed flow", "image: [p\n", "build.yml"),
        case(
            "bad yaml: tab indentation",
            "image: p\n\torg: x\n",
            "build.yml",
        ),
        case("bad yaml: unclosed quote", "image: \"p\n", "build.yml"),
        case("top level is a list", "- image: p\n", "build.yml"),
        case("top level is a scalar", "just text\n", "build.yml"),
        case(
            "unknown key",
            "image: p\nimages: q\n",
            "field images not found in type pkglib.pkgInfo",
        ),
        case(
            "unknown nested key",
            "image: p\ndepends:\n  docker-image: {}\n",
            "field docker-image not found",
        ),
        case("duplicate key", "image: p\nimage: q\n", "image"),
        case("missing image", "org: x\n", "Image field is required"),
        case("null image", "image:\n", "Image field is required"),
        case("image is a list", "image: [a, b]\n", "build.yml"),
        case("arches is a string", "image: p\narches: amd64\n", "arches"),
        case(
            "network is not a bool",
            "image: p\nnetwork: sometimes\n",
            "build.yml",
        ),
        case(
            "disable-cache is a map",
            "image: p\ndisable-cache: {a: 1}\n",
            "build.yml",
        ),
        case(
            "buildArgs is a map",
            "image: p\nbuildArgs: {A: 1}\n",
            "build.yml",
        ),
        case(
            "config unknown key",
            "image: p\nconfig:\n  capabilitiez: [all]\n",
            "capabilitiez",
        ),
        case(
            "config wrong type",
            "image: p\nconfig:\n  readonly: [x]\n",
            "build.yml",
        ),
        case(
            "extra-sources three parts",
            "image: p\nextra-sources:\n  - a:b:c\n",
            "bad source format in a:b:c",
        ),
        case(
            "extra-sources no colon",
            "image: p\nextra-sources:\n  - abc\n",
            "bad source format in abc",
        ),
        case(
            "extra-sources missing dir",
            "image: p\nextra-sources:\n  - ../nope:/x\n",
            "extra-sources",
        ),
        case(
            "depends target and target-dir",
            &depends("    target: a.tar\n    target-dir: d\n"),
            "mutually exclusive",
        ),
        case(
            "depends from-file and list",
            &depends(&format!("    from-file: f\n    list: [\"x@{DIGEST}\"]\n")),
            "mutually exclusive",
        ),
        case(
            "depends image without digest",
            &depends("    list: [docker.io/library/alpine:3.20]\n"),
            "lacks a digest",
        ),
        case(
            "image name in upper case",
            "image: UPPER\n",
            "invalid image name",
        ),
        case(
            "arch in upper case",
            "image: p\narches: [AMD64]\n",
            "arches are lower-case",
        ),
        case(
            "extra-source destination out of the context",
            "image: p\nextra-sources:\n  - .:../../x\n",
            "leaves the build context",
        ),
        case(
            "depends image without a registry path",
            &depends("    list: [alpine:3.20]\n"),
            "invalid port",
        ),
        case(
            "depends bad digest",
            &depends("    list: [\"library/alpine@sha256:1234\"]\n"),
            "unable to validate digest",
        ),
        case(
            "depends absolute target",
            &depends("    target: /tmp/x.tar\n"),
            "must be relative",
        ),
        case(
            "depends target escapes",
            &depends("    target-dir: ../elsewhere\n"),
            "must be within package directory",
        ),
        case(
            "depends target is the package",
            &depends("    target-dir: .\n"),
            "must not be exactly the package directory",
        ),
        case(
            "depends from-file missing",
            &depends("    from-file: images.txt\n"),
            "from-file",
        ),
        case(
            "dangling @lkt:pkg",
            "image: p\nbuildArgs:\n  - BASE=@lkt:pkg:../nowhere\n",
            "nowhere",
        ),
        case(
            "unknown @lkt kind",
            "image: p\nbuildArgs:\n  - BASE=@lkt:thing:x\n",
            "unknown linuxkit build arg value",
        ),
        case(
            "@lkt:pkgs key without %",
            "image: p\nbuildArgs:\n  - BASE=@lkt:pkgs:../*\n",
            "must contain a '%'",
        ),
        case(
            "@lkt:pkgs matches nothing",
            "image: p\nbuildArgs:\n  - B_%=@lkt:pkgs:../zz*\n",
            "no packages found",
        ),
        case(
            "build arg without =",
            "image: p\nbuildArgs:\n  - JUSTKEY\n",
            "must be in format 'arg=value'",
        ),
        case(
            "bad tag template",
            "image: p\ntag: \"{{.Hash\"\n",
            "invalid tag template",
        ),
        case(
            "dockerfile escapes",
            "image: p\ndockerfile: ../Dockerfile\n",
            "must not contain `..`",
        ),
        case(
            "dockerfile missing",
            "image: p\ndockerfile: Nope\n",
            "not found",
        ),
        case(
            "self cycle",
            "image: p\nbuildArgs:\n  - SELF=@lkt:pkg:.\n",
            "dependency cycle",
        ),
    ];
    // A reference is an edge only when the Dockerfile builds from it (else it is a tag).
    cases
        .last_mut()
        .unwrap()
        .files
        .push(("Dockerfile", "ARG SELF\nFROM ${SELF}\n".into()));
    let mut doubling = String::from("ARG A0=xx\n");
    for i in 1..=40 {
        doubling.push_str(&format!("ARG A{i}=${{A{}}}${{A{}}}\n", i - 1, i - 1));
    }
    doubling.push_str("FROM scratch\n");
    let mut c = case(
        "ARGs doubling to 2^41 bytes",
        "image: p\n",
        "expands to more than",
    );
    c.files.push(("Dockerfile", doubling));
    cases.push(c);
    let mut c = case(
        "a Dockerfile line of 10 MB",
        "image: p\n",
        "BuildKit's Dockerfile parser takes lines of at most 65535 bytes",
    );
    c.files.push((
        "Dockerfile",
        format!("FROM scratch\nLABEL x=\"{}\"\n", "a".repeat(10 << 20)),
    ));
    cases.push(c);
    let mut c = case(
        "cycle through two packages",
        "image: p\nbuildArgs:\n  - O=@lkt:pkg:../other\n",
        "dependency cycle",
    );
    c.files.push((
        "../other/build.yml",
        "image: other\nbuildArgs:\n  - P=@lkt:pkg:../p\n".into(),
    ));
    c.files.push(("Dockerfile", "ARG O\nFROM ${O}\n".into()));
    c.files
        .push(("../other/Dockerfile", "ARG P\nFROM ${P}\n".into()));
    cases.push(c);
    let mut c = case(
        "bad arg file line",
        "image: p\n",
        "must be in format 'arg=value'",
    );
    c.files.push(("args.txt", "NOEQUALS\n".into()));
    c.args.extend(["--build-arg-file", "pkg/p/args.txt"]);
    cases.push(c);
    let mut c = case(
        "blank arg file line",
        "image: p\n",
        "must be in format 'arg=value'",
    );
    c.files.push(("args.txt", "A=1\n\nB=2\n".into()));
    c.args.extend(["--build-arg-file", "pkg/p/args.txt"]);
    cases.push(c);
    cases.push(case(
        "NUL in a build argument",
        "image: p\nbuildArgs:\n  - \"ZERO=a\\0b\"\n",
        "contains a NUL byte",
    ));
    let mut c = case(
        "NUL in an arg file line",
        "image: p\n",
        "contains a NUL byte",
    );
    c.files.push(("args.txt", "Z=a\0b\n".into()));
    c.args.extend(["--build-arg-file", "pkg/p/args.txt"]);
    cases.push(c);
    let mut c = case("missing arg file", "image: p\n", "nope.txt");
    c.args.extend(["--build-arg-file", "nope.txt"]);
    cases.push(c);
    let mut c = case("bad platform", "image: p\n", "invalid platform");
    c.args.extend(["--platforms", "amd64"]);
    cases.push(c);
    // Hostile build.yml shapes: nesting 10,000 deep (flow and block), and a billion-laugh
    // alias bomb in fields that exist: each one clear error, at once.
    cases.push(case(
        "nested 10,000 deep",
        &format!(
            "image: p\nconfig:\n  env: {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
        "recursion limit exceeded",
    ));
    let mut block = String::from("image: p\n");
    for i in 0..3_000 {
        block.push_str(&format!("{}k{i}:\n", "  ".repeat(i)));
    }
    cases.push(case(
        "block nesting 3,000 deep",
        &block,
        "recursion limit exceeded",
    ));
    let mut bomb = String::from(
        "image: p\nconfig:\n  env: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let fields = [
        "capabilities",
        "ambient",
        "mounts",
        "binds",
        "tmpfs",
        "devices",
        "sysctl",
    ];
    for (i, field) in fields.iter().enumerate() {
        let (prev, this) = ((b'a' + i as u8) as char, (b'b' + i as u8) as char);
        bomb.push_str(&format!(
            "  {field}: &{this} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    cases.push(case("alias bomb", &bomb, "cannot unmarshal"));
    // A package outside every git repository (linuxkit would tag it `latest`).
    let outside = outside_dir();
    std::fs::create_dir_all(outside.join("pkg")).unwrap();
    std::fs::write(outside.join("pkg/build.yml"), "image: stray\n").unwrap();
    std::fs::write(outside.join("pkg/Dockerfile"), "FROM scratch\n").unwrap();
    cases.push(case(
        "@lkt:pkg outside every repository",
        &format!(
            "image: p\nbuildArgs:\n  - B=@lkt:pkg:{}\n",
            outside.join("pkg").display()
        ),
        "outside every git repository",
    ));
    cases.push(case(
        "@lkt:pkgs walking the file system",
        "image: p\nbuildArgs:\n  - B_%=@lkt:pkgs:/*/*/*/*\n",
        "outside every git repository",
    ));
    cases.push(case(
        "@lkt:pkgs outside every repository",
        &format!(
            "image: p\nbuildArgs:\n  - B_%=@lkt:pkgs:{}/*\n",
            outside.display()
        ),
        "outside every git repository",
    ));
    let mut c = case("not a package", "image: p\n", "not a package");
    c.args.push("pkg/missing");
    cases.push(c);
    cases
}

/// A directory outside every git repository, for this test process.
fn outside_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("lkpkg-malformed-outside-{}", std::process::id()))
}

#[test]
fn every_malformed_input_gives_one_clear_error_and_exit_2() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut failures = Vec::new();
    for case in cases {
        let repo = Repo::new();
        repo.write("pkg/p/build.yml", &case.build_yml);
        repo.write("pkg/p/Dockerfile", "FROM scratch\n");
        for (path, content) in &case.files {
            repo.write(&format!("pkg/p/{path}"), content);
        }
        repo.commit_all("case");
        let mut cmd = repo.lkpkg();
        cmd.args(["graph"]).args(&case.args);
        if !case.args.iter().any(|a| a.starts_with("pkg/"))
            || case.args.contains(&"--build-arg-file")
        {
            cmd.arg("pkg/p");
        }
        let (code, _stdout, stderr) = run(&mut cmd);
        let errors = stderr.lines().filter(|l| l.starts_with("error:")).count();
        if code != 2 || !stderr.contains(case.expect) || errors != 1 || stderr.contains("panicked")
        {
            failures.push(format!("{}: exit {code}, stderr:\n{stderr}", case.name));
        }
        // The file is always named.
        if code == 2
            && case.expect != "nope.txt"
            && case.name != "bad platform"
            && !stderr.contains("pkg/")
            && !stderr.contains(".yml")
        {
            failures.push(format!(
                "{}: error does not name a file:\n{stderr}",
                case.name
            ));
        }
    }
    let _ = std::fs::remove_dir_all(outside_dir());
    assert!(failures.is_empty(), "{}", failures.join("\n---\n"));
}

/// Paths from build.yml that leave the package through a symlink are refused before anything
/// reads them (issue #11's escapes): a Dockerfile that is a link to a file outside, a
/// `dockerfile:` under a linked directory, a linked extra source, a linked build.yml, a linked
/// `from-file`. The outside file's content appears nowhere.
#[test]
fn symlinks_out_of_the_package_are_refused_before_anything_reads_them() {
    let outside = tempfile::tempdir().unwrap();
    let secret = "TOP SECRET first line";
    std::fs::write(outside.path().join("secret"), format!("{secret}\n")).unwrap();
    std::fs::write(outside.path().join("Dockerfile"), format!("{secret}\n")).unwrap();
    std::fs::write(outside.path().join("build.yml"), "image: stolen\n").unwrap();
    let repo = Repo::new();
    let link = |target: &std::path::Path, at: &str| {
        let at = repo.join(at);
        std::fs::create_dir_all(at.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, at).unwrap();
    };
    repo.write("pkg/a/build.yml", "image: a\n");
    link(&outside.path().join("secret"), "pkg/a/Dockerfile");
    repo.write("pkg/b/build.yml", "image: b\ndockerfile: sub/Dockerfile\n");
    link(outside.path(), "pkg/b/sub");
    repo.package("pkg/c", "c", "extra-sources:\n  - link:/x\n");
    link(outside.path(), "pkg/c/link");
    repo.write("pkg/d/Dockerfile", "FROM scratch\n");
    link(&outside.path().join("build.yml"), "pkg/d/build.yml");
    repo.package(
        "pkg/e",
        "e",
        "depends:\n  docker-images:\n    from-file: images.txt\n",
    );
    link(&outside.path().join("secret"), "pkg/e/images.txt");
    // `depends` targets under a link out of the package: linuxkit would `rm -rf` and write
    // there (`outdir/sub` is a directory outside, with a file in it).
    std::fs::create_dir(outside.path().join("sub")).unwrap();
    std::fs::write(outside.path().join("sub/kept"), "kept\n").unwrap();
    let depends = |key: &str, value: &str| {
        format!(
            "depends:\n  docker-images:\n    {key}: {value}\n    list:\n      - \
             docker.io/library/alpine:3.20@sha256:{}\n",
            "0".repeat(64)
        )
    };
    repo.package("pkg/f", "f", &depends("target-dir", "outdir/sub"));
    link(outside.path(), "pkg/f/outdir");
    repo.package("pkg/g", "g", &depends("target", "outdir/new.tar"));
    link(outside.path(), "pkg/g/outdir");
    // The target itself a link (linuxkit removes the link, not what it points at): fine.
    repo.package("pkg/h", "h", &depends("target-dir", "images"));
    link(outside.path(), "pkg/h/images");
    repo.commit_all("escapes");
    ok(repo.lkpkg().args(["graph", "pkg/h"]));
    for (dir, field) in [
        ("pkg/a", "dockerfile"),
        ("pkg/b", "dockerfile"),
        ("pkg/c", "extra-sources"),
        ("pkg/d", "build.yml"),
        ("pkg/e", "from-file"),
        ("pkg/f", "target-dir"),
        ("pkg/g", "target"),
    ] {
        let (code, stdout, stderr) = run(repo.lkpkg().args(["graph", dir]));
        assert_eq!(code, 2, "{dir}: {stdout}{stderr}");
        assert!(
            stderr.contains("outside") && stderr.contains(field),
            "{dir}: {stderr}"
        );
        assert!(
            !stderr.contains(secret) && !stdout.contains(secret),
            "{dir}: {stderr}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(outside.path().join("sub/kept")).unwrap(),
        "kept\n"
    );
    assert!(!outside.path().join("new.tar").exists());
}

/// A Dockerfile that is not UTF-8 text is the package's error (exit 2), not the machine's.
#[test]
fn a_dockerfile_that_is_not_utf8_is_bad_input() {
    let repo = Repo::new();
    repo.write("pkg/p/build.yml", "image: p\n");
    std::fs::write(repo.join("pkg/p/Dockerfile"), b"FROM scratch\n\xff\xfe\n").unwrap();
    repo.commit_all("p");
    let (code, _, stderr) = run(repo.lkpkg().args(["graph", "pkg/p"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("not UTF-8"), "{stderr}");
}

/// A 50 MB build.yml (hostile input, issue #11): read and refused at once, in bounded time.
#[test]
fn a_fifty_megabyte_build_yml_is_refused_quickly() {
    let repo = Repo::new();
    let mut text = String::from("image: p\nlabels:\n");
    while text.len() < 50 * 1024 * 1024 {
        text.push_str(&format!("  k{}: {}\n", text.len(), "v".repeat(1000)));
    }
    repo.write("pkg/p/build.yml", &text);
    repo.write("pkg/p/Dockerfile", "FROM scratch\n");
    let started = std::time::Instant::now();
    let (code, _stdout, stderr) = run(repo.lkpkg().args(["graph", "pkg/p"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("build.yml") && stderr.lines().count() <= 2,
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}
