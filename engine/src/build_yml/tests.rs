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
    // ... but leaves a string alone (yaml.v3's `null` sets only what can be nil), unless the
    // value is an explicit empty string.
    for null in ["", " ~", " null", " Null", " NULL"] {
        let y = parse_ok(&format!(
            "image: nul\norg:{null}\ndockerfile:{null}\ngitrepo:{null}\ntag:{null}\nnetwork:{null}\n"
        ));
        assert_eq!(y.org, DEFAULT_ORG, "{null:?}");
        assert_eq!(y.dockerfile, "Dockerfile", "{null:?}");
        assert_eq!(y.gitrepo, DEFAULT_GITREPO, "{null:?}");
        assert_eq!(y.tag, "{{.Hash}}", "{null:?}");
        assert!(!y.network);
    }
    assert_eq!(parse_ok("image: foo\norg: \"\"\n").org, "");
    assert_eq!(parse_ok("image: foo\norg: ''\n").org, "");
    // A null `image` is no image.
    assert_eq!(parse_err("image:\n").message, "Image field is required");
    // A null item of a list is dropped; a null `buildArgs` or `config` is nil.
    assert_eq!(
        parse_ok("image: f\narches: [amd64, ~, arm64]\n").arches,
        ["amd64", "arm64"]
    );
    assert_eq!(parse_ok("image: f\nbuildArgs: ~\n").build_args, None);
    assert_eq!(
        parse_ok("image: f\nbuildArgs: []\n").build_args,
        Some(vec![])
    );
    assert_eq!(parse_ok("image: f\nconfig:\n").config, None);
    // A null `depends` leaves the struct as it was.
    assert!(parse_ok("image: f\ndepends:\n").depends.images.is_empty());
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
    assert_eq!(e.field.as_deref(), Some("image"), "{e}");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.message.contains("already defined at line 1"), "{e}");
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    list: x\n");
    assert_eq!(
        e.field.as_deref(),
        Some("depends.docker-images.list"),
        "{e}"
    );
    assert_eq!(e.message, "cannot unmarshal !!str `x` into []string");
    let e =
        parse_err("image: f\narches: [a]\nconfig:\n  devices:\n    - path: x\n      major: one\n");
    assert_eq!(e.field.as_deref(), Some("config.devices[0].major"), "{e}");
    assert_eq!(e.line, Some(6), "{e}");
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
    assert_eq!(
        e.message,
        r#"parse "dummy://alpine:3.20": invalid port ":3.20" after host"#
    );
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    list: [docker.io/alpine:3.20]\n");
    assert!(e.message.contains("lacks a digest"), "{e}");
    // containerd's reference.Parse needs a host before the first `/`.
    for bad in ["alpine", "alpine:3.20"] {
        let e = parse_err(&format!(
            "image: f\ndepends:\n  docker-images:\n    list: [\"{bad}@{digest}\"]\n"
        ));
        assert!(e.message.contains("invalid port"), "{bad}: {e}");
    }
    for good in ["library/alpine", "localhost:5000/a/b:1"] {
        parse_ok(&format!(
            "image: f\ndepends:\n  docker-images:\n    list: [\"{good}@{digest}\"]\n"
        ));
    }
    let e = parse_err("image: f\ndepends:\n  docker-images:\n    list: [\"x/alpine@sha256:zz\"]\n");
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
    assert_eq!(e.field.as_deref(), Some("config.nonsense"), "{e}");
    assert_eq!(
        e.message,
        "field nonsense not found in type moby.ImageConfig"
    );
    let y = parse_ok("image: f\nconfig:\n  binds: [\"/a:/b\"]\n");
    assert_eq!(y.config.unwrap().label_json(), r#"{"binds":["/a:/b"]}"#);
}

/// `tests/compat/config-label/`: build.yml files with the label linuxkit's own decoder and
/// encoder give for them (`label.json`), or that linuxkit rejects (`error.txt`). See the README
/// there for how they were made.
#[test]
fn config_labels_match_linuxkit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/compat/config-label");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() > 30,
        "{} vectors in {}",
        cases.len(),
        dir.display()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(case.join("build.yml")).unwrap();
        let got = parse(&case.join("build.yml"), case, &text);
        // `no-label`: linuxkit decodes a nil config and sets no label.
        let expected = std::fs::read_to_string(case.join("label.json"))
            .ok()
            .or_else(|| case.join("no-label").exists().then(String::new));
        match (got, expected) {
            (Ok(y), Some(label)) => {
                let got = y
                    .config
                    .map(|c| c.label_json().to_owned())
                    .unwrap_or_default();
                if got != label {
                    failures.push(format!("{name}:\n  linuxkit: {label}\n  lkpkg:    {got}"));
                }
            }
            (Err(e), Some(label)) => {
                failures.push(format!("{name}: lkpkg fails ({e}), linuxkit: {label}"))
            }
            (Ok(y), None) => failures.push(format!(
                "{name}: linuxkit fails ({}), lkpkg accepts: {:?}",
                std::fs::read_to_string(case.join("error.txt"))
                    .unwrap_or_default()
                    .trim(),
                y.config.map(|c| c.label_json().to_owned())
            )),
            (Err(_), None) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} vectors differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Inputs the fuzzer (`fuzz/`, target `build_yml`) found crashing the decoder, each now an
/// error or a value, never a panic.
#[test]
fn fuzz_regressions() {
    // A plain scalar of four bytes or more whose fourth byte is inside a multi-byte character
    // (the timestamp check sliced `s[..4]`).
    for text in [
        "image: x\nconfig:\n  ipc: 1\"hé\n",
        "image: x\nconfig:\n  ipc: 1\"héllo wörldU日本 🎉\"\n",
        "image: é\n",
        "image: x\narches: [日本語-01]\n",
    ] {
        let _ = parse(Path::new("build.yml"), Path::new("."), text);
    }
}
