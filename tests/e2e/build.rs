//! `lkpkg pkg build` against the real Docker engine: chained builds through `@lkt:pkg:`,
//! results in the cache under linuxkit's names, failures and an unreachable engine.

use crate::support::{Repo, lkpkg_on, ok, run};

/// A repository with a busybox base (`FROM scratch`, `RUN`s something) and a dependent.
fn fixture(tag: &str) -> Repo {
    let repo = Repo::new();
    repo.busybox_bin("base", tag);
    repo.write("base/build.yml", &format!("image: base-{tag}\norg: lkpkgtest\narches: [amd64]\n"))
        .write("base/Dockerfile", "FROM scratch\nCOPY bin/ /bin/\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nRUN echo base-was-here > /base.txt\n")
        .write("app/build.yml", &format!("image: app-{tag}\norg: lkpkgtest\narches: [amd64]\nconfig:\n  binds: [\"/a:/b\"]\n  readonly: true\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n"))
        .write("app/Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN cat /base.txt > /app.txt && echo app >> /app.txt\n");
    repo.commit_all("init");
    repo
}

fn docker(args: &[&str]) -> (i32, String, String) {
    run(std::process::Command::new("docker").args(args))
}

#[test]
fn chained_build_lands_in_the_cache_and_runs() {
    let repo = fixture("chain");
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let (code, _, stderr) = run(repo
        .lkpkg()
        .args(["--cache", cache_arg, "pkg", "build", "--docker"]));
    assert_eq!(code, 0, "{stderr}");
    let base_tag =
        crate::support::ok(
            repo.lkpkg()
                .args(["pkg", "show-tag", "--canonical", "base"]),
        )
        .trim()
        .to_owned();
    let app_tag = crate::support::ok(repo.lkpkg().args(["pkg", "show-tag", "app"]))
        .trim()
        .to_owned();
    let ls = crate::support::ok(repo.lkpkg().args(["--cache", cache_arg, "cache", "ls"]));
    for name in [
        base_tag.clone(),
        format!("{base_tag}-amd64"),
        format!("docker.io/{app_tag}"),
        format!("docker.io/{app_tag}-amd64"),
    ] {
        assert!(
            ls.lines()
                .any(|l| l.split_whitespace().next() == Some(&name)),
            "{name} not in\n{ls}"
        );
    }
    // The dependent image holds the base's content, and its own.
    let (code, out, err) = docker(&[
        "run",
        "--rm",
        "--network",
        "none",
        &app_tag,
        "cat",
        "/app.txt",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "base-was-here\napp\n");
    let (_, labels, _) = docker(&[
        "image",
        "inspect",
        &app_tag,
        "--format",
        "{{json .Config.Labels}}",
    ]);
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(
        labels["org.opencontainers.image.source"],
        "https://github.com/linuxkit/linuxkit"
    );
    assert_eq!(
        labels["org.mobyproject.config"],
        r#"{"binds":["/a:/b"],"readonly":true}"#
    );
    // linuxkit's revision label is on the package's multi-arch index, not in the image.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(cache.path().join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"] == format!("docker.io/{app_tag}")
        })
        .expect("the app's index entry");
    let digest = entry["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache.path().join("blobs/sha256").join(digest)).unwrap(),
    )
    .unwrap();
    assert_eq!(
        blob["annotations"]["org.opencontainers.image.revision"],
        repo.git(&["rev-parse", "HEAD"])
    );
    assert_eq!(
        blob["annotations"]["org.opencontainers.image.source"],
        "https://github.com/linuxkit/linuxkit"
    );
    assert!(
        labels.get("org.opencontainers.image.revision").is_none(),
        "{labels}"
    );
    // A second build builds nothing and does not need the engine.
    let (code, _, stderr) = run(repo
        .lkpkg()
        .env("DOCKER_HOST", "tcp://127.0.0.1:1")
        .args(["--cache", cache_arg, "pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 built, 2 fresh"), "{stderr}");
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "cache", "verify"]));
    assert_eq!(code, 0, "{stderr}");
    docker(&["rmi", "-f", &app_tag]);
}

#[test]
fn failing_run_exits_1_with_log_tail_and_skips_dependents() {
    let repo = fixture("fail");
    repo.write("base/Dockerfile", "FROM scratch\nCOPY bin/ /bin/\nRUN [\"/bin/busybox\", \"sh\", \"-c\", \"echo about-to-fail; exit 7\"]\n")
        .write("solo/build.yml", "image: solo-fail\norg: lkpkgtest\narches: [amd64]\n")
        .write("solo/Dockerfile", "FROM scratch\nCOPY build.yml /\n");
    repo.commit_all("fail");
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let (code, stdout, stderr) = run(repo.lkpkg().args([
        "--cache",
        cache_arg,
        "pkg",
        "build",
        "--keep-going",
        "--message-format",
        "json",
    ]));
    assert_eq!(code, 1, "{stderr}");
    let events = crate::support::json_lines("build-event", &stdout);
    let failed = events
        .iter()
        .find(|e| e["type"] == "failed")
        .expect("a failed event");
    assert_eq!(failed["unit"], "base/amd64");
    assert!(
        failed["log_tail"].to_string().contains("about-to-fail"),
        "{failed}"
    );
    assert!(events.iter().any(|e| e["type"] == "skipped"
        && e["unit"] == "app/amd64"
        && e["reason"].as_str().unwrap().contains("base/amd64")));
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "finished" && e["unit"] == "solo/amd64")
    );
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "cache", "verify"]));
    assert_eq!(code, 0, "{stderr}");
    // No container is left behind by the failed build.
    let (_, containers, _) = docker(&[
        "ps",
        "-a",
        "--filter",
        "status=exited",
        "--format",
        "{{.Image}} {{.Command}}",
    ]);
    assert!(!containers.contains("about-to-fail"), "{containers}");
}

#[test]
fn tty_progress_shows_the_running_units_in_place() {
    let repo = fixture("tty");
    let cache = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(repo.lkpkg().args([
        "--cache",
        cache.path().to_str().unwrap(),
        "pkg",
        "build",
        "--progress",
        "tty",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("    Building [0 done, 1 running] base/amd64"),
        "{stderr:?}"
    );
    assert!(
        stderr.contains("\r\x1b[K       Built base/amd64"),
        "{stderr:?}"
    );
    // Plain progress has no escape sequences.
    let cache = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(repo.lkpkg().args([
        "--cache",
        cache.path().to_str().unwrap(),
        "pkg",
        "build",
        "--progress",
        "plain",
    ]));
    assert_eq!(code, 0, "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
}

#[test]
fn unreachable_engine_exits_3_naming_the_endpoint() {
    let repo = fixture("unreachable");
    let cache = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(repo.lkpkg().env("DOCKER_HOST", "tcp://127.0.0.1:1").args([
        "--cache",
        cache.path().to_str().unwrap(),
        "pkg",
        "build",
    ]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("tcp://127.0.0.1:1"), "{stderr}");
}

#[test]
fn five_packages_with_depends_and_extra_sources_build_from_an_empty_cache() {
    let repo = fixture("five");
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    repo.write("app2/build.yml", "image: app2-five\norg: lkpkgtest\narches: [amd64]\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n")
        .write("app2/Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN echo second > /app2.txt\n")
        .write("src/greeting", "hello from an extra source\n")
        .write("extras/build.yml", "image: extras-five\norg: lkpkgtest\narches: [amd64]\nextra-sources:\n  - ../src:/src\n")
        .write("extras/Dockerfile", "FROM scratch\nCOPY src/ /from-extra/\n");
    repo.commit_all("more packages");
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    // A package that depends on base's image, pinned by the digest lkpkg gave it.
    let base_tag = crate::support::ok(repo.lkpkg().args(["pkg", "show-tag", "base"]))
        .trim()
        .to_owned();
    let ls = crate::support::ok(
        repo.lkpkg()
            .args(["--cache", cache_arg, "cache", "ls", "--json"]),
    );
    let entries = crate::support::listed_images(&ls);
    let base_digest = entries
        .iter()
        .find(|e| e["name"] == format!("docker.io/{base_tag}"))
        .and_then(|e| e["digest"].as_str())
        .unwrap_or_else(|| panic!("no index for {base_tag} in {ls}"))
        .to_owned();
    let (locator, _) = base_tag.split_once(':').unwrap();
    repo.write("deps/build.yml", &format!(
        "image: deps-five\norg: lkpkgtest\narches: [amd64]\ndepends:\n  docker-images:\n    target-dir: images\n    list:\n      - {base_tag}@{base_digest}\n"
    ))
    .write("deps/Dockerfile", "FROM scratch\nCOPY images/ /images/\n")
    .write("deps/images/stale.tar", "a stale file that linuxkit would delete\n");
    repo.commit_all("deps");
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "pkg", "build"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("1 built, 4 fresh"), "{stderr}");

    // Files inside each image.
    let file = |package: &str, path: &str| {
        crate::support::file_in_image(&repo, cache.path(), package, path)
    };
    assert_eq!(file("app", "/app.txt"), "base-was-here\napp\n");
    assert_eq!(file("app2", "/app2.txt"), "second\n");
    assert_eq!(
        file("extras", "/from-extra/greeting"),
        "hello from an extra source\n"
    );
    let basename = locator.rsplit('/').next().unwrap();
    let saved = file("deps", &format!("/images/{basename}@{base_digest}.tar"));
    assert!(!saved.is_empty(), "the depends archive is in the image");
    assert!(
        file("deps", "/images/stale.tar").is_empty(),
        "target-dir starts empty, as in linuxkit"
    );
    // The package directory was not written to.
    assert!(
        !repo
            .join(&format!("deps/images/{basename}@{base_digest}.tar"))
            .exists()
    );
    // The cache holds the per-arch and index entries linuxkit would name.
    let ls = crate::support::ok(repo.lkpkg().args(["--cache", cache_arg, "cache", "ls"]));
    for package in ["base", "app", "app2", "extras", "deps"] {
        let tag =
            crate::support::ok(
                repo.lkpkg()
                    .args(["pkg", "show-tag", "--canonical", package]),
            )
            .trim()
            .to_owned();
        for name in [tag.clone(), format!("{tag}-amd64")] {
            assert!(
                ls.lines()
                    .any(|l| l.split_whitespace().next() == Some(name.as_str())),
                "{name} not in\n{ls}"
            );
        }
    }
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "cache", "verify"]));
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn ctrl_c_cancels_running_builds_and_leaves_the_cache_consistent() {
    let repo = Repo::new();
    std::fs::create_dir_all(repo.join("slow")).unwrap();
    std::fs::copy("/bin/busybox", repo.join("slow/busybox")).unwrap();
    repo.write(
        "slow/build.yml",
        "image: slow-ctrlc\norg: lkpkgtest\narches: [amd64]\n",
    )
    .write(
        "slow/Dockerfile",
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"sleep\", \"41\"]\n",
    );
    repo.commit_all("slow");
    let cache = tempfile::tempdir().unwrap();
    let cache_arg = cache.path().to_str().unwrap();
    let child = repo
        .lkpkg()
        .args(["--cache", cache_arg, "pkg", "build", "--disable-cache"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the build's step runs (BuildKit runs it as a process of this machine, in
    // a container of its own that `docker ps` does not list), then interrupt.
    let running = || {
        let (_, out, _) = run(std::process::Command::new("ps").args(["-eo", "args"]));
        out.lines().any(|l| l.contains("busybox sleep 41"))
    };
    let start = std::time::Instant::now();
    while !running() {
        assert!(start.elapsed().as_secs() < 60, "the build never started");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    run(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]));
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    // The builder cancels the solve and ends its step.
    let start = std::time::Instant::now();
    while running() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the build's step still runs after the interrupt"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let (code, _, stderr) = run(repo.lkpkg().args(["--cache", cache_arg, "cache", "verify"]));
    assert_eq!(code, 0, "{stderr}");
}

/// A build argument holding newlines (build.yml's `buildArgs`, YAML `\n`) reaches `RUN` steps
/// and labels intact, as with `docker buildx build --build-arg`; one holding a NUL, which no
/// process environment can hold, is refused before the build (see `malformed`).
#[test]
fn a_build_argument_with_newlines_reaches_run_steps_and_labels_intact() {
    let repo = Repo::new();
    repo.busybox_bin("nl", "newline-arg");
    repo.write(
        "nl/build.yml",
        "image: newline-arg\norg: lkpkgtest\narches: [amd64]\nbuildArgs:\n  \
         - \"MSG=line one\\n  line two\\n\\nlast \\\"quoted\\\" $HOME\"\n",
    );
    repo.write(
        "nl/Dockerfile",
        "FROM scratch\nCOPY bin/ /bin/\nARG MSG\nLABEL msg=\"${MSG}\"\n\
         RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox printf '%s' \\\"$MSG\\\" > /msg\"]\n",
    );
    repo.commit_all("newline arg");
    let cache = tempfile::tempdir().unwrap();
    ok(lkpkg_on(&repo, cache.path()).args(["pkg", "build", "nl"]));
    let expected = "line one\n  line two\n\nlast \"quoted\" $HOME";
    assert_eq!(
        crate::support::file_in_image(&repo, cache.path(), "nl", "/msg"),
        expected
    );
    let tag = ok(repo.lkpkg().args(["pkg", "show-tag", "nl"]))
        .trim()
        .to_owned();
    let inspected = ok(lkpkg_on(&repo, cache.path()).args([
        "cache",
        "inspect",
        &format!("{tag}-amd64"),
        "--json",
    ]));
    let inspected = crate::support::json_output("cache-inspect", &inspected);
    let config = inspected["root"]["config"]["digest"]
        .as_str()
        .and_then(|d| d.strip_prefix("sha256:"))
        .unwrap_or_else(|| panic!("no config in {inspected:#}"));
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(cache.path().join("blobs/sha256").join(config)).unwrap(),
    )
    .unwrap();
    assert_eq!(config["config"]["Labels"]["msg"], expected, "{config:#}");
}
