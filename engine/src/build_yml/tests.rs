//! build.yml against linuxkit's (yaml.v3) behaviour. `yaml_quirks` is the test that chose the
//! YAML crate: every quirk linuxkit users rely on, in one place.

use std::path::Path;

use super::*;

fn parse_ok(text: &str) -> BuildYml {
    parse(Path::new("/p/build.yml"), Path::new("/p"), text).unwrap()
}

fn parse_err(text: &str) -> PackageError {
    parse(Path::new("/p/build.yml"), Path::new("/p"), text).unwrap_err()
}

#[test]
fn defaults() {
    let y = parse_ok("image: foo\n");
    assert_eq!(y.org, "linuxkit");
    assert_eq!(y.arches, ["amd64", "arm64", "riscv64"]);
    assert_eq!(y.tag, "{{.Hash}}");
    assert_eq!(y.dockerfile, "Dockerfile");
    assert_eq!(y.gitrepo, DEFAULT_GITREPO);
    assert!(!y.network && !y.disable_cache);
    assert_eq!(y.build_args, None);
}

#[test]
fn yaml_quirks() {
    // An empty value resets a list (pkg/bpftrace has `arches:` empty).
    assert!(parse_ok("image: foo\narches:\n").arches.is_empty());
    // ... and a string to "".
    assert_eq!(parse_ok("image: foo\norg:\n").org, "");
    // YAML 1.1 booleans in typed bools.
    for t in ["yes", "on", "y", "true", "True", "Y"] {
        assert!(
            parse_ok(&format!("image: foo\nnetwork: {t}\n")).network,
            "{t}"
        );
    }
    for f in ["no", "off", "n", "false"] {
        assert!(
            !parse_ok(&format!("image: foo\nnetwork: {f}\n")).network,
            "{f}"
        );
    }
    // Scalars keep their raw text in string fields.
    let y = parse_ok("image: 0666\norg: 1.50\ntag: 007\narches: [1e3, 0x1F, yes]\n");
    assert_eq!(y.image, "0666");
    assert_eq!(y.org, "1.50");
    assert_eq!(y.tag, "007");
    assert_eq!(y.arches, ["1e3", "0x1F", "yes"]);
    // Merge keys (`<<:`) are applied, as yaml.v3 does.
    let y = parse_ok("image: foo\n<<: {org: merged, gitrepo: g}\n");
    assert_eq!((y.org.as_str(), y.gitrepo.as_str()), ("merged", "g"));
}

#[test]
fn merge_keys_resolve() {
    let y = parse_ok(
        "image: foo\ndepends:\n  docker-images: &d\n    target: x.tar\n    list: [\"a@sha256:0000000000000000000000000000000000000000000000000000000000000000\"]\n",
    );
    assert_eq!(y.depends.images.len(), 1);
    let y = parse_ok("image: foo\nbuildArgs: &a\n  - A=1\nconfig:\n  env: *a\n");
    assert_eq!(y.build_args.unwrap(), ["A=1"]);
}

#[test]
fn errors_name_file_field_line() {
    let e = parse_err("image: foo\nbogus: 1\n");
    assert_eq!(e.field.as_deref(), Some("bogus"));
    assert_eq!(e.line, Some(2));
    assert!(e.to_string().contains("/p/build.yml"), "{e}");
    let e = parse_err("org: x\n");
    assert_eq!(e.message, "Image field is required");
    let e = parse_err("image: foo\nnetwork: maybe\n");
    assert_eq!(e.line, Some(2), "{e}");
    let e = parse_err("image: foo\nimage: bar\n");
    assert!(e.message.contains("image"), "{e}");
    assert!(parse_err("").message.contains("EOF"));
    assert!(parse_err("# only a comment\n").message.contains("EOF"));
}

#[test]
fn depends_rules() {
    let digest = "sha256:".to_owned() + &"a".repeat(64);
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    target: a\n    target-dir: b\n");
    assert!(e.message.contains("mutually exclusive"), "{e}");
    let e = parse_err(&format!(
        "image: f\ndepends:\n  docker-images:\n    from-file: a\n    list: [\"x@{digest}\"]\n"
    ));
    assert!(e.message.contains("mutually exclusive"), "{e}");
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    list: [alpine:3.20]\n");
    assert!(e.message.contains("lacks a digest"), "{e}");
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    list: [\"alpine@sha256:zz\"]\n");
    assert!(e.message.contains("unable to validate digest"), "{e}");
    for (path, reason) in [
        ("/abs", "must be relative"),
        (".", "must not be exactly"),
        ("../x", "must be within"),
        ("a/../../x", "must be within"),
    ] {
        let e = parse_err(&format!(
            "image: f\ndepends:\n  docker-images:\n    target-dir: {path}\n"
        ));
        assert!(e.message.contains(reason), "{path}: {e}");
    }
    let y = parse_ok(&format!(
        "image: f\ndepends:\n  docker-images:\n    target-dir: deps\n    list: [\"docker.io/library/alpine:3.20@{digest}\"]\n"
    ));
    assert_eq!(y.depends.target, Some(DependsTarget::Dir("deps".into())));
    assert_eq!(y.depends.images[0].locator, "docker.io/library/alpine");
}

#[test]
fn extra_sources_format() {
    let e = parse_err("image: f\nextra-sources:\n  - a:b:c\n");
    assert!(e.message.contains("bad source format in a:b:c"), "{e}");
    let e = parse_err("image: f\nextra-sources:\n  - nodst\n");
    assert!(e.message.contains("bad source format"), "{e}");
    let y = parse_ok("image: f\nextra-sources:\n  - ../src:/dst/./x/\n");
    assert_eq!(y.extra_sources[0].src, Path::new("/src"));
    assert_eq!(y.extra_sources[0].dst, "/dst/x");
}

#[test]
fn config_is_strict() {
    let e = parse_err("image: f\nconfig:\n  nonsense: 1\n");
    assert_eq!(e.field.as_deref(), Some("nonsense"), "{e}");
    let y = parse_ok("image: f\nconfig:\n  binds: [\"/a:/b\"]\n");
    assert_eq!(y.config.unwrap().label_json(), r#"{"binds":["/a:/b"]}"#);
}
