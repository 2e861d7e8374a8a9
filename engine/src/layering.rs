//! The layering, as a test over `use crate::` edges: `cli → ops → (schedule, store, registry,
//! …) → cache-format`. The store and the registry client know nothing of packages, builds or
//! Docker; nothing below `ops` calls back into it; the binary reaches the engine only through
//! `ops`; the environment is read only by `ops::Environment`.

use std::path::{Path, PathBuf};

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The engine modules a file's code names as `crate::<module>` (comments left out).
fn crate_modules(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                out.push(name);
            }
            rest = after;
        }
    }
    out
}

#[test]
fn each_layer_uses_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    // A module and what it must never name.
    let packages_and_builds = [
        "ops",
        "schedule",
        "executor",
        "buildkit",
        "graph",
        "package",
        "build_yml",
        "build_args",
        "dockerfile",
        "discover",
        "workspace",
        "fingerprint",
        "remote",
        "tag",
        "tag_template",
    ];
    let rules: [(&str, &[&str]); 3] = [
        ("store", &packages_and_builds),
        (
            "registry",
            &[&packages_and_builds[..], &["store", "transfer"]].concat(),
        ),
        ("transfer", &packages_and_builds),
    ];
    let mut failures = Vec::new();
    for (module, forbidden) in rules {
        let dir = src.join(module);
        let files = if dir.is_dir() {
            sources(&dir)
        } else {
            vec![src.join(format!("{module}.rs"))]
        };
        assert!(!files.is_empty(), "no sources for {module}");
        for file in files {
            for used in crate_modules(&file) {
                if forbidden.contains(&used.as_str()) {
                    failures.push(format!("{}: uses crate::{used}", file.display()));
                }
            }
        }
    }
    // Below `ops`, nothing names it.
    for file in sources(&src) {
        if file.starts_with(src.join("ops"))
            || file.ends_with("lib.rs")
            || file.ends_with("layering.rs")
        {
            continue;
        }
        if crate_modules(&file).iter().any(|m| m == "ops") {
            failures.push(format!("{}: uses crate::ops", file.display()));
        }
    }
    // The environment is read in one place (`ops::Environment`, with the docker CLI's
    // configuration it holds): everything else takes it as configuration.
    let readers = [
        src.join("ops/environment.rs"),
        src.join("executor/builders/docker_config.rs"),
    ];
    for file in sources(&src) {
        if readers.contains(&file) || file.ends_with("layering.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        if code.contains("env::var") {
            failures.push(format!("{}: reads the environment", file.display()));
        }
    }
    // The binary names no engine module but `ops`.
    let cli = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/src");
    for file in sources(&cli) {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(at) = rest.find("lkpkg_engine::") {
                let after = &rest[at + "lkpkg_engine::".len()..];
                if !after.starts_with("ops") {
                    failures.push(format!("{}: {}", file.display(), line.trim()));
                }
                rest = after;
            }
        }
    }
    assert!(
        failures.is_empty(),
        "layering broken:\n{}",
        failures.join("\n")
    );
}
