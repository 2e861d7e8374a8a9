//! `lkpkg graph`: nodes, edges and their reasons, order, warnings, formats.

use crate::support::{Repo, ok, run};

fn fixture() -> Repo {
    let repo = Repo::new();
    repo.write("base/build.yml", "image: base\narches: [amd64, arm64]\n")
        .write("base/Dockerfile", "FROM scratch\nCOPY build.yml /\n")
        .write("app/build.yml", "image: app\narches: [amd64, arm64]\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n")
        .write("app/Dockerfile", "ARG BASE\nFROM ${BASE}\nRUN true\n")
        .write("tool/build.yml", &format!(
            "image: tool\narches: [amd64]\nextra-sources:\n  - ../src:/src\ndepends:\n  docker-images:\n    target-dir: deps\n    list: [\"docker.io/library/alpine:3.20@sha256:{}\"]\n",
            "b".repeat(64)
        ))
        .write("tool/Dockerfile", "FROM scratch\nCOPY src /src\n")
        .write("src/file", "x\n");
    repo.commit_all("init");
    repo
}

#[test]
fn json_graph_has_units_inputs_and_reasons() {
    let repo = fixture();
    // The pinned FROM in `pinned` names base's image by its current tag: an edge.
    let base_tag = ok(repo.lkpkg().args(["pkg", "show-tag", "base"]))
        .trim()
        .to_owned();
    repo.write("pinned/build.yml", "image: pinned\narches: [amd64]\n")
        .write(
            "pinned/Dockerfile",
            &format!("FROM {base_tag} AS b\nFROM b\n"),
        );
    repo.commit_all("pinned");
    let out = ok(repo.lkpkg().args(["graph", "--format", "json"]));
    let graph = crate::support::json_output("graph", &out);
    assert_eq!(graph["format_version"], 1);
    let edges: Vec<(String, String, String)> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
                e["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("app/amd64", "base/amd64", "build-arg"),
        ("app/arm64", "base/arm64", "build-arg"),
        ("pinned/amd64", "base/amd64", "from"),
        ("tool/amd64", "source:src", "extra-source"),
    ] {
        let expected = (
            expected.0.to_owned(),
            expected.1.to_owned(),
            expected.2.to_owned(),
        );
        assert!(edges.contains(&expected), "{expected:?} not in {edges:?}");
    }
    assert!(edges.iter().any(|(f, t, r)| f == "tool/amd64"
        && t.starts_with("image:docker.io/library/alpine:3.20@")
        && r == "depends"));
    let order: Vec<&str> = graph["order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let pos = |n: &str| order.iter().position(|o| *o == n).unwrap();
    assert!(pos("base/amd64") < pos("app/amd64"));
    assert!(pos("base/amd64") < pos("pinned/amd64"));
    assert_eq!(graph["packages"].as_array().unwrap().len(), 4);
}

#[test]
fn explicit_dirs_pull_in_their_dependencies() {
    let repo = fixture();
    let out = ok(repo.lkpkg().args(["graph", "--format", "json", "app"]));
    let graph = crate::support::json_output("graph", &out);
    let packages: Vec<(&str, bool)> = graph["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["dir"].as_str().unwrap(),
                p["requested"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(packages, [("app", true), ("base", false)]);
}

#[test]
fn stale_pin_is_a_warning() {
    let repo = fixture();
    repo.write("old/build.yml", "image: old\narches: [amd64]\n")
        .write(
            "old/Dockerfile",
            "FROM linuxkit/base:0123456789abcdef0123456789abcdef01234567\n",
        );
    repo.commit_all("old");
    let (code, stdout, stderr) = run(repo.lkpkg().args(["graph"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("warning:")
            && stderr.contains("pins docker.io/linuxkit/base at tag `0123456789abcdef"),
        "{stderr}"
    );
    assert!(
        stdout.contains("old/amd64\n  <- image:linuxkit/base:0123"),
        "{stdout}"
    );
}

#[test]
fn text_and_dot_formats() {
    let repo = fixture();
    let text = ok(repo.lkpkg().args(["graph", "--platforms", "linux/amd64"]));
    assert!(
        text.contains("app/amd64\n  <- base/amd64 (build-arg BASE)\n"),
        "{text}"
    );
    assert!(!text.contains("arm64"), "{text}");
    let dot = ok(repo.lkpkg().args(["graph", "--format", "dot"]));
    assert!(
        dot.starts_with("digraph lkpkg {") && dot.contains("->"),
        "{dot}"
    );
}

/// File descriptors stay bounded with thousands of units (issue #11): 3,000 packages, every
/// fourth built `FROM` a base through `@lkt:pkg:`, are discovered, loaded, graphed and decided
/// (`--dry-run` on an empty cache) by an lkpkg allowed 64 open files. Nothing holds a file per
/// package open.
#[test]
fn three_thousand_packages_are_planned_within_64_open_files() {
    let repo = Repo::new();
    repo.write(
        "pkg/base/build.yml",
        "image: base\norg: lkpkgfd\narches: [amd64]\n",
    )
    .write("pkg/base/Dockerfile", "FROM scratch\nCOPY build.yml /\n");
    for i in 0..3000 {
        let dir = format!("pkg/p{i:04}");
        if i % 4 == 0 {
            repo.write(
                &format!("{dir}/build.yml"),
                &format!(
                    "image: p{i:04}\norg: lkpkgfd\narches: [amd64]\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n"
                ),
            )
            .write(&format!("{dir}/Dockerfile"), "ARG BASE\nFROM ${BASE}\nCOPY build.yml /\n");
        } else {
            repo.package(&dir, &format!("p{i:04}"), "org: lkpkgfd\narches: [amd64]\n");
        }
    }
    repo.commit_all("3,000 packages");
    let cache = tempfile::tempdir().unwrap();
    let limited = |args: &[&str]| {
        let mut cmd = std::process::Command::new("prlimit");
        cmd.arg("--nofile=64")
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_lkpkg"))
            .arg("--cache")
            .arg(cache.path())
            .args(args)
            .current_dir(repo.path())
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
        cmd
    };
    let (code, out, err) = run(&mut limited(&["graph", "--format", "json"]));
    assert_eq!(code, 0, "{err}");
    let graph = crate::support::json_output("graph", &out);
    assert_eq!(graph["packages"].as_array().unwrap().len(), 3001);
    let (code, out, err) = run(&mut limited(&[
        "--message-format",
        "json",
        "pkg",
        "build",
        "--dry-run",
    ]));
    assert_eq!(code, 0, "{err}");
    let planned = crate::support::json_lines("build-event", &out)
        .iter()
        .filter(|e| e["type"] == "would-build")
        .count();
    assert_eq!(planned, 3001, "{err}");
}

/// A Dockerfile saved by an editor with a UTF-8 byte order mark and CRLF line ends, its
/// `FROM` continued onto the next line: BuildKit reads it as any other, and so does the graph
/// (the mark hid `ARG BASE` and with it the dependency on the base; a continued `FROM base\`
/// then `  AS x` read as `baseAS`).
#[test]
fn a_dockerfile_with_a_byte_order_mark_and_crlf_keeps_its_dependency() {
    let repo = Repo::new();
    repo.package("base", "base", "arches: [amd64]\n")
        .write(
            "app/build.yml",
            "image: app\narches: [amd64]\nbuildArgs:\n  - BASE=@lkt:pkg:../base\n",
        )
        .write(
            "app/Dockerfile",
            "\u{feff}ARG BASE\r\nFROM ${BASE}\\\r\n  AS build\r\nCOPY build.yml /\r\n",
        );
    repo.commit_all("bom");
    let graph = crate::support::ok(repo.lkpkg().args(["graph", "app"]));
    assert!(graph.contains("<- base/amd64 (build-arg BASE)"), "{graph}");
}

/// A heredoc's body is content (here a Dockerfile written into the image): its `FROM` and
/// `COPY --from=` lines are no images the package builds from, and the graph lists none.
#[test]
fn lines_of_a_heredoc_are_not_instructions() {
    let repo = Repo::new();
    repo.write("p/build.yml", "image: p\narches: [amd64]\n")
        .write(
            "p/Dockerfile",
            "FROM scratch\nCOPY <<EOT /inner/Dockerfile\nFROM nosuch.invalid/some/image:1\n\
         COPY --from=other.invalid/x:2 / /\nEOT\n",
        );
    repo.commit_all("heredoc");
    let graph = ok(repo.lkpkg().args(["graph", "p"]));
    assert_eq!(graph.trim(), "p/amd64", "{graph}");
}
